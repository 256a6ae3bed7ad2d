"""Why a message bounced: the RFC 3463 enhanced status code *and* the diagnostic text, read
against one table of rules. Pure, no I/O; used by the mailer (an SMTP reply at send time) and
the thread-watcher (a delivery report found in a mailbox), which do not import each other.

Many servers answer a bare `550` for everything, and many an enhanced code is wrong for what its
text says (`550 5.1.1 ... blocked using Spamhaus`), so the text is read first and the code
decides only when no text rule matched. The table (`RULES`), its order and what each row means
are documented in docs/bounce-reasons.md; tests/unit/test_bounce_reasons.py has a test per row.

A temporary failure (4.x.x, a 4xx reply, `Action: delayed`) never blames the address: a
recipient-permanent reason found in one becomes class recipient-temporary. A failure nothing in
the table explains is `unclassified`, class recipient-temporary: a soft bounce, counted like one,
and never a reason to suppress an address.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from contracts.values import BounceClass, BounceReason

Kind = Literal["hard", "soft"]

RECIPIENT_PERMANENT: BounceClass = "recipient-permanent"
RECIPIENT_TEMPORARY: BounceClass = "recipient-temporary"
SENDER_SIDE: BounceClass = "sender-side"
CONTENT_SIDE: BounceClass = "content-side"

# The class each reason belongs to (the taxonomy in contracts.values, grouped as it is there).
REASON_CLASS: dict[str, BounceClass] = {
    **dict.fromkeys(("user-unknown", "host-unknown", "moved", "not-accepted"),
                    RECIPIENT_PERMANENT),
    **dict.fromkeys(("mailbox-full", "mailbox-suspended", "expired-in-queue", "system-full",
                     "over-quota", "unclassified"), RECIPIENT_TEMPORARY),
    **dict.fromkeys(("sender-auth", "sender-blocked", "sender-policy", "ptr-required",
                     "relay-denied", "rate-limited", "tls-required"), SENDER_SIDE),
    **dict.fromkeys(("spam-content", "virus", "message-too-big", "content-rejected"),
                    CONTENT_SIDE),
}

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_CONTINUATION = re.compile(r"(?<=\s)[245]\d\d[- ](?:[245]\.\d{1,3}\.\d{1,3}(?=\s))?")
_REPLY_CODE = re.compile(r"(?<![\d.])([45]\d\d)(?=[ \-:;,.)\]]|$)")


@dataclass(frozen=True)
class Rule:
    """One row: the code pattern (an enhanced code such as `5.1.1`, `x.2.2`, `5.7.*`, or a
    basic reply code such as `552`; `x` is 4 or 5), the text pattern (a regular expression in
    lower case, on the diagnostic case folded, its whitespace and width folded), and the verdict.
    A row with both matches only when both do."""

    id: str
    code: str | None
    text: str | None
    bounce_class: BounceClass
    reason: BounceReason

    def matches(self, codes: "_Codes", text: str) -> bool:
        if self.code is not None and not codes.match(self.code):
            return False
        return self.text is None or _compiled(self.text).search(text) is not None


@dataclass(frozen=True)
class Verdict:
    bounce_class: BounceClass
    reason: BounceReason
    rule: str  # the id of the row that decided, "temporary:<id>" when a 4xx softened it
    temporary: bool

    @property
    def kind(self) -> Kind:
        """`hard` only when the address itself is at fault (what today's consumers act on)."""
        return "hard" if self.bounce_class == RECIPIENT_PERMANENT else "soft"


def _r(rule_id: str, code: str | None, text: str | None, reason: BounceReason) -> Rule:
    return Rule(rule_id, code, text, REASON_CLASS[reason], reason)


# Read top to bottom; the first row that matches decides. Text rows come first, most specific
# first: the signals that clear the address (authentication, block lists, relaying, TLS, rate)
# before content, content before the recipient's mailbox, and the vague words ("policy",
# "denied", "blocked") last. Code rows follow, for a diagnostic whose words say nothing.
RULES: tuple[Rule, ...] = (
    # --- sender-side, by what the text names --------------------------------------------------
    _r("group-restricted", None,
       r"authrequired|restricted to (internal|authorized|certain)|only accepts? (mail|messages) from"
       r"|not (allowed|authori[sz]ed) to send (to|mail to) this (group|recipient|list)"
       r"|受信拒否|수신 ?거부 ?설정|refused by the recipient'?s? (setting|filter)",
       "sender-policy"),
    _r("dmarc", None, r"\bdmarc\b", "sender-auth"),
    _r("spf-dkim", None, r"\b(spf|dkim)\b|sender policy framework|domainkeys", "sender-auth"),
    _r("relay", None,
       r"relay(ing)? (access )?(denied|not permitted|prohibited|refused)|not permitted to relay"
       r"|unable to relay|we do not relay|relay not (allowed|permitted)|not allowed to relay"
       r"|no relaying|relay access|open relay", "relay-denied"),
    _r("not-authenticated", None,
       r"(does not|doesn't|did not|didn't) pass (the )?authentication|unauthenticated (e-?mail|mail|sender)"
       r"|authentication (check|checks) (failed|did not pass)|authentication required|must (be )?authenticate"
       r"|authentication credentials invalid|sender (is )?not authenticated|발신자 인증|送信ドメイン認証",
       "sender-auth"),
    _r("ptr", None,
       r"reverse (dns|lookup|hostname|name)|\bptr\b|\brdns\b|cannot find your (reverse )?hostname"
       r"|client host .{0,40}(not found|unknown)|no reverse|역방향|逆引き", "ptr-required"),
    _r("tls", None,
       r"starttls|\btls\b|encryption (is )?(required|needed)|requiretls|must use (an )?encrypted"
       r"|ssl required|certificate (verification|validation) failed", "tls-required"),
    _r("sender-address", None,
       r"sender address rejected|sender (domain|address) .{0,20}(not found|unknown|does not exist)"
       r"|sender verify failed|mail from .{0,30}(rejected|refused)|domain of sender address",
       "sender-policy"),
    _r("over-quota", None,
       r"receiving (mail at a rate|limit)|too many messages for (this )?(recipient|user|mailbox|address)"
       r"|recipient'?s? (daily|hourly|receiving) .{0,20}(limit|quota)|exceeded.{0,20}receiving"
       r"|수신 ?(한도|제한)",
       "over-quota"),
    _r("rate", None,
       r"too many (connections|messages|recipients|concurrent|emails|mails)|rate limit|ratelimit"
       r"|throttl|unusual rate|exceeded (the )?(sending|connection|message) (rate|limit)"
       r"|sending (rate|limit)|connection (rate|limit)|unexpected volume|\[tss0\d\]"
       r"|too fast|slow down|try again later.{0,40}(volume|rate)|(daily|hourly) (sending )?limit"
       r"|sending quota"
       r"|送信数.{0,10}(制限|超過)|발송량|전송량", "rate-limited"),
    _r("block-list", None,
       r"block ?list|black ?list|blocklisted|deny ?list|\bdnsbls?\b|\brbls?\b|spamhaus|spamcop"
       r"|barracuda|sorbs|uceprotect|\bsurbl\b|listed (at|on|in|by) |poor reputation"
       r"|bad reputation|reputation|banned sending ip|banned sender|from your ip|your ip (address )?"
       r"|ip address .{0,40}(blocked|rejected|denied|banned|not allowed)|not accepted from this ip"
       r"|(client|sending) (host|ip) .{0,60}(blocked|rejected|refused)"
       r"|dynamic(ally)?[- ](assigned )?ip|dial-?up|residential|s3150|\bsc-00\d\b|\bdyn:t1\b"
       r"|\bcon:b1\b|\brp-00\d\b|수신 ?차단|발신 ?(ip|아이피).{0,10}차단|차단된 ip|ブロック",
       "sender-blocked"),
    # --- content-side -----------------------------------------------------------------------
    _r("virus", None, r"virus|malware|infected|trojan|phishing|worm\b|ウイルス|바이러스|악성",
       "virus"),
    _r("spam", None,
       r"spam(?!haus|cop)|unsolicited|junk mail|bulk mail|looks like (spam|junk)|content filter"
       r"|scored as|spam score|迷惑メール|スパム|스팸|광고성", "spam-content"),
    _r("mailbox-full", None,
       r"mailbox (is )?full|mailbox (size )?limit|full mailbox|inbox (is )?full|over ?quota"
       r"|quota (exceeded|exceeds|full)|exceeded (the |their |his |her )?(storage|quota)"
       r"|storage (allocation|space|quota)|insufficient storage|out of storage|(disk|mail) ?quota"
       r"|user is over|mailfolder is full|mailsize limit|postfach (ist )?voll|speicherplatz|boîte .{0,40}pleine"
       r"|buzón (está )?lleno|caixa (postal )?(está )?(cheia|lotada)|casella piena"
       r"|メールボックスが(一杯|いっぱい|満杯)|容量(を|が)?(超|オーバー|不足)|メール容量"
       r"|메일함.{0,10}(가득|용량|초과|꽉)|용량(을|이)? ?초과|사서함이 가득|邮箱(已满|空间不足)",
       "mailbox-full"),
    _r("too-big", None,
       r"message (size )?(is )?too (big|large)|too large|exceeds? (the )?(maximum|max|size|message)"
       r"|size (limit|exceeds)|message size|maximum (message )?size|mesg too big"
       r"|メールサイズ|サイズ(が|を)?(超|大き)|메일 ?크기|크기(가|를)? ?(초과|너무)",
       "message-too-big"),
    _r("content", None,
       r"content (rejected|not accepted|refused|policy)|message content|(prohibited|forbidden"
       r"|blocked|not allowed|unacceptable|dangerous) (file |attachment)|attachment (type )?(is )?"
       r"(not allowed|rejected|blocked|prohibited)|(header|message) (syntax|format|error)"
       r"|syntax error|invalid (header|message|mime)|malformed|rfc ?(5322|2822|822)|not rfc"
       r"|bare lf|line (too )?long|potential security issue|message-id header|본문|内容",
       "content-rejected"),
    # --- recipient: the mailbox exists, but not now ----------------------------------------
    _r("suspended", None,
       r"(account|mailbox|user|address)( that you tried to reach)? (is |has been )?(temporarily )?"
       r"(disabled|suspended|inactive"
       r"|locked|frozen|deactivated|blocked|closed|expired)|inactive (account|mailbox|user)"
       r"|disabled (account|mailbox|user)|this mailbox is disabled|휴면|이용 ?(정지|중지)|사용 ?중지"
       r"|정지된 (계정|메일)|利用停止|停止中|休止|gesperrt|désactivé|desactivada|desativad",
       "mailbox-suspended"),
    _r("system-full", None,
       r"(system|server|disk) (is )?full|insufficient system (storage|resources)|out of (disk|memory)"
       r"|no space left|system (storage|resources)", "system-full"),
    _r("expired", None,
       r"expired|retry time(out)? (exceeded|reached)|not (been )?delivered (within|for)|giving up"
       r"|too long in (the )?queue|maximum (queue|delivery) time|delivery time|greylist|graylist"
       r"|timed? ?out|time-?out|delayed|deferred|will (keep )?(retry|trying)|still trying"
       r"|보류|지연|配送遅延|遅延", "expired-in-queue"),
    # --- recipient: the address is wrong ---------------------------------------------------
    _r("moved", None,
       r"has moved|moved (to|permanently)|no longer (with|at|works|employed|in use at)|left the company"
       r"|changed (his|her|their|the)? ?(e-?mail )?address|forwarding address|user not local"
       r"|더 이상 근무|퇴사|退職|異動", "moved"),
    _r("host-unknown", None,
       r"host (or domain name )?(not found|unknown)|unknown (host|domain)|no such (host|domain)"
       r"|domain (name )?(not found|does not exist|doesn't exist|unknown|not exist)|nxdomain"
       r"|unrouteable|unroutable|no mx|mx (record|lookup)|name service error|dns (error|lookup)"
       r"|host not found|could not resolve|no route to host|도메인.{0,10}(존재하지|없|찾을 수)"
       r"|ドメイン.{0,10}(存在しません|見つかりません)|ホスト.{0,10}(不明|見つかりません)", "host-unknown"),
    _r("not-accepted", None,
       r"(does not|doesn't|do not) accept (e-?mail|mail|messages)|not accepting (mail|messages)"
       r"|accepts no mail|null mx|no mail service", "not-accepted"),
    _r("directory-access-denied", "x.4.1", r"access denied", "user-unknown"),
    _r("user-unknown", None,
       r"user unknown|unknown user|no such (user|recipient|mailbox|address|account|person|local user)"
       r"|(user|recipient|address|mailbox|account|e-?mail address)( that you tried to reach)? "
       r"(does not|doesn't|did not|not) exist|recipient not found|recipnotfound|not found"
       r"|invalid (recipient|mailbox|address|user)|unknown (recipient|address|mailbox|local[- ]part)"
       r"|not a valid (mailbox|recipient|user|address)|mailbox unavailable|bad destination mailbox"
       r"|not (a )?known user|no mailbox|unknown or illegal|undeliverable address|unrecognized"
       r"|no account|account (does not|doesn't) exist|doesn't have a .{1,30} account"
       r"|addressee unknown|unknown addressee|\binvalid rcpt\b"
       r"|존재하지 않(는|습니다|음)|없는 (사용자|계정|주소|아이디|메일)|주소가 올바르지 않"
       r"|アドレス.{0,10}(存在しません|見つかりません)|찾을 수 없|수신자.{0,10}(없|잘못)"
       r"|宛先(不明|が(見つかり|存在し))|ユーザ.{0,6}(存在しません|見つかりません|不明|いません)|該当(する)?ユーザ"
       r"|benutzer.{0,20}unbekannt|unbekannt|existiert nicht|utilisateur inconnu|adresse (inexistante"
       r"|introuvable|invalide)|destinataire inconnu|n'existe pas|usuario (desconocido|no existe|inexistente)"
       r"|no existe|destinat[aá]rio (desconhecido|inexistente)|não existe|utente sconosciuto"
       r"|用户不存在|收件人不存在|用戶不存在|不存在", "user-unknown"),
    # --- the vague words, last ------------------------------------------------------------
    _r("blocked", None, r"\bblocked\b|\bbanned\b|차단|拒否", "sender-blocked"),
    _r("policy", None,
       r"policy|not authori[sz]ed|administrative(ly)? prohibit|prohibited|access denied|denied"
       r"|refused|rejected by|not allowed|정책|ポリシー|受信拒否|수신 ?거부", "sender-policy"),
    # --- by the enhanced code (RFC 3463 and its IANA registry) --------------------------------
    _r("code-x.1.1", "x.1.1", None, "user-unknown"),
    _r("code-x.1.0", "x.1.0", None, "user-unknown"),
    _r("code-x.1.2", "x.1.2", None, "host-unknown"),
    _r("code-x.1.3", "x.1.3", None, "user-unknown"),
    _r("code-x.1.4", "x.1.4", None, "not-accepted"),
    _r("code-x.1.6", "x.1.6", None, "moved"),
    _r("code-x.1.7", "x.1.7", None, "sender-policy"),
    _r("code-x.1.8", "x.1.8", None, "sender-policy"),
    _r("code-x.1.10", "x.1.10", None, "not-accepted"),
    _r("code-x.2.1", "x.2.1", None, "mailbox-suspended"),
    _r("code-x.2.2", "x.2.2", None, "mailbox-full"),
    _r("code-x.2.3", "x.2.3", None, "message-too-big"),
    _r("code-x.2.4", "x.2.4", None, "not-accepted"),
    _r("code-x.3.1", "x.3.1", None, "system-full"),
    _r("code-x.3.2", "x.3.2", None, "not-accepted"),
    _r("code-x.3.4", "x.3.4", None, "message-too-big"),
    _r("code-x.4.1", "x.4.1", None, "expired-in-queue"),
    _r("code-x.4.2", "x.4.2", None, "expired-in-queue"),
    _r("code-x.4.4", "x.4.4", None, "host-unknown"),
    _r("code-x.4.6", "x.4.6", None, "not-accepted"),
    _r("code-x.4.7", "x.4.7", None, "expired-in-queue"),
    _r("code-x.5.3", "x.5.3", None, "rate-limited"),
    _r("code-x.5", "x.5.*", None, "content-rejected"),
    _r("code-x.6", "x.6.*", None, "content-rejected"),
    _r("code-x.7.1", "x.7.1", None, "sender-policy"),
    _r("code-x.7.7", "x.7.7", None, "content-rejected"),
    _r("code-x.7.8", "x.7.8", None, "sender-auth"),
    _r("code-x.7.9", "x.7.9", None, "sender-auth"),
    _r("code-x.7.10", "x.7.10", None, "tls-required"),
    _r("code-x.7.11", "x.7.11", None, "tls-required"),
    _r("code-x.7.13", "x.7.13", None, "mailbox-suspended"),
    _r("code-x.7.2x", "x.7.2[0-46]", None, "sender-auth"),
    _r("code-x.7.25", "x.7.25", None, "ptr-required"),
    _r("code-x.7.28", "x.7.28", None, "rate-limited"),
    _r("code-x.7", "x.7.*", None, "sender-policy"),
    # --- by the basic reply code (RFC 5321), when there is no enhanced one ---------------------
    _r("code-551", "551", None, "moved"),
    _r("code-552", "552", None, "mailbox-full"),
    _r("code-553", "553", None, "user-unknown"),
    _r("code-452", "452", None, "system-full"),
    _r("code-421", "421", None, "rate-limited"),
    _r("code-530-535", "53[05]", None, "sender-auth"),
)

@dataclass(frozen=True)
class _Codes:
    enhanced: str | None  # "5.1.1"
    reply: str | None  # "550"

    def match(self, pattern: str) -> bool:
        value = self.enhanced if "." in pattern else self.reply
        return value is not None and _compiled_code(pattern).fullmatch(value) is not None

    @property
    def temporary(self) -> bool:
        first = (self.enhanced or self.reply or "5")[0]
        return first == "4"


def classify(status: str | None, diagnostic: str = "", *, temporary: bool = False,
             context: str = "") -> Verdict:
    """The verdict on one failed delivery. `status` is the enhanced code (`5.1.1`) or the reply
    code (`550`) when known; both are also read from `diagnostic` (`550 5.1.1 <x>: User
    unknown`). `temporary` says the report itself calls the failure a delay (`Action:
    delayed`). `context` is more of the report's own text, read when the diagnostic says
    nothing (a provider's notice that explains in its prose, not in an SMTP line)."""
    text = fold(diagnostic)
    codes = _codes(status, text)
    temporary = temporary or codes.temporary
    rule = (_first(codes, _words(text), texts=True)
            or (_first(codes, _words(fold(context)), texts=True) if context else None)
            or _first(codes, text, texts=False))
    if rule is None:
        return Verdict(RECIPIENT_TEMPORARY, "unclassified", "unclassified", temporary)
    if temporary and rule.bounce_class == RECIPIENT_PERMANENT:
        # a 4xx never blames the address: the same words on a retry may be a directory hiccup
        return Verdict(RECIPIENT_TEMPORARY, rule.reason, f"temporary:{rule.id}", True)
    return Verdict(rule.bounce_class, rule.reason, rule.id, temporary)


def status_code(text: str) -> str | None:
    """The first enhanced status code in a text (`5.1.1`), else its first SMTP reply code."""
    codes = _codes(None, text)
    return codes.enhanced or codes.reply


def fold(text: str) -> str:
    """Width and case folded, whitespace collapsed: `ＵＳＥＲ　unknown` reads as `user unknown`."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _words(text: str) -> str:
    """The folded text without its reply codes: a multi-line reply (`552-5.7.0 ... potential
    552-5.7.0 security issue`) reads as the sentence it is."""
    return " ".join(_CONTINUATION.sub(" ", f" {text} ").split())


def _first(codes: _Codes, text: str, texts: bool) -> Rule | None:
    for rule in RULES:
        if (rule.text is not None) == texts and rule.matches(codes, text):
            return rule
    return None


def _codes(status: str | None, text: str) -> _Codes:
    enhanced = _ENHANCED.search(status or "") or _ENHANCED.search(text)
    reply = _REPLY_CODE.match((status or "").strip()) or _REPLY_CODE.search(text)
    return _Codes(".".join(enhanced.groups()) if enhanced else None,
                  reply.group(1) if reply else None)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # the text is case folded already: an IGNORECASE pattern would be three times slower
    return re.compile(pattern)


@functools.cache
def _compiled_code(pattern: str) -> re.Pattern[str]:
    # x.2.2 -> [45]\.2\.2 ; 5.7.* -> 5\.7\.\d+ ; 5.7.2[0-46] keeps its character class
    regex = pattern.replace(".", r"\.").replace("*", r"\d+")
    return re.compile("[45]" + regex[1:] if regex.startswith("x") else regex)


def markdown_table() -> str:
    """The table as docs/bounce-reasons.md shows it (`python -m sequences.bounce_reasons`)."""
    lines = ["| # | rule | code | text (regular expression, abridged) | class | reason |",
             "|---|---|---|---|---|---|"]
    for number, rule in enumerate(RULES, 1):
        text = rule.text or ""
        text = (text[:87] + "…" if len(text) > 90 else text).replace("|", "\\|")
        lines.append(f"| {number} | `{rule.id}` | {f'`{rule.code}`' if rule.code else '-'} | "
                     f"{f'`{text}`' if text else '-'} | {rule.bounce_class} | {rule.reason} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
