"""What a reply wants: interested, not now, not interested, someone else (referral), unsubscribe,
or other. Rules, not a model: one table (`RULES`), tried in order on the reply's own words
(quoted history and signature already removed, `services/thread_watcher/mail.own_text`), the
first match decides. docs/reply-intent.md says what they catch and what they miss.

The order matters and is the table's order: an unsubscribe request wins over everything ("not
interested, remove me" opts out), a referral over a refusal ("I'm not the right person"), a
refusal over "not now", and both over "interested" (whose words they often contain: "관심
없습니다", "not interested").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import get_args

from contracts.values import ReplyIntent

INTENTS: tuple[str, ...] = get_args(ReplyIntent)


@dataclass(frozen=True)
class Rule:
    rule: str  # its id, shown with the verdict: "<intent>.<language>"
    intent: ReplyIntent
    pattern: re.Pattern[str]
    example: str  # a reply it must catch (tests/unit/test_reply_intent.py runs every one)


def _rule(rule: str, intent: ReplyIntent, pattern: str, example: str) -> Rule:
    return Rule(rule, intent, re.compile(pattern, re.IGNORECASE), example)


RULES: tuple[Rule, ...] = (
    # --- unsubscribe: opts the contact out, as the link does --------------------------------
    _rule("unsubscribe.en", "unsubscribe",
          r"\bunsubscribe\b|\bremove me\b|\btake me off\b|\bopt (me )?out\b"
          r"|\bstop (e-?mailing|sending|contacting|messaging)( me| us)?\b"
          r"|\b(do not|don'?t) (e-?mail|contact|message) (me|us)\b",
          "Please remove me from your mailing list."),
    _rule("unsubscribe.ko", "unsubscribe",
          r"수신\s*거부|구독\s*(취소|해지)|(메일|이메일|연락)[^.!?\n]{0,20}(보내지|하지)\s*(말아|마세요|마십시오)"
          r"|(명단|목록|리스트|주소록)에서\s*(삭제|빼|제외)",
          "앞으로 이런 메일은 보내지 말아 주세요."),
    _rule("unsubscribe.ja", "unsubscribe",
          r"配信(停止|不要|を停止)|(送らないで|送信しないで)|(リスト|名簿)から(削除|外して)",
          "今後のメール配信停止をお願いします。"),
    _rule("unsubscribe.de", "unsubscribe",
          r"\babmelden\b|\baustragen\b|(aus|von) (ihrem|dem|ihrer) (verteiler|liste)"
          r"|keine (weiteren )?(e-?mails|nachrichten) mehr",
          "Bitte tragen Sie mich aus Ihrem Verteiler aus: keine E-Mails mehr."),
    _rule("unsubscribe.fr", "unsubscribe",
          r"désabonn|désinscri|me retirer de|retirez-moi|ne plus (m'|me )(envoyer|contacter)",
          "Merci de me retirer de votre liste de diffusion."),
    _rule("unsubscribe.es", "unsubscribe",
          r"darme de baja|dar de baja|elimin(e|a)me de|no (me )?(envíe|envíen|manden) más",
          "Por favor, darme de baja de esta lista."),
    _rule("unsubscribe.pt", "unsubscribe",
          r"descadastr|remov(a|e)[- ]me|remover da lista|não (me )?(envie|enviem) mais",
          "Por favor, remova-me da sua lista."),
    _rule("unsubscribe.zh", "unsubscribe",
          r"退订|取消订阅|退訂|不要再(发|發|寄)",
          "请退订，谢谢。"),
    # --- referral / wrong person ------------------------------------------------------------
    _rule("referral.en", "referral",
          r"\b(not|no longer) the (right|best|correct) (person|contact)\b|\bwrong person\b"
          r"|\b(left|no longer (with|at)) (the|our) (company|firm|team)\b"
          r"|\bno longer works? (here|at|for)\b|\b(his|her|their) replacement\b"
          r"|\bi'?m not (responsible|in charge)\b|\b(better|right) person (to|would be)\b"
          r"|\b(contact|reach out to|talk to|speak (to|with)) my colleague\b",
          "I'm not the right person for this. Please contact our procurement lead."),
    _rule("referral.ko", "referral",
          r"담당(자)?(가|는|이)?\s*아닙니다|담당(자)?(가|이)?\s*아니|퇴사|담당자(는|분은|께)"
          r"|(에게|께|쪽으로)\s*(연락|문의|메일)(해|하셔|을|\s)\s*(주|보내|주세요|주시)",
          "저는 담당자가 아닙니다. 구매팀에 연락해 주세요."),
    _rule("referral.ja", "referral",
          r"担当(者)?ではありません|担当外|退職(いた)?しました|担当者(は|に)",
          "私は担当者ではありません。営業部の佐藤にご連絡ください。"),
    _rule("referral.de", "referral",
          r"nicht (der|die) (richtige|zuständige) (person|ansprechpartner(in)?)|nicht zuständig"
          r"|nicht mehr (bei uns|im unternehmen)",
          "Ich bin dafür nicht zuständig, bitte wenden Sie sich an Frau Weber."),
    _rule("referral.fr", "referral",
          r"pas la bonne personne|pas le bon interlocuteur|n'est plus (dans|chez)"
          r"|a quitté (l'|la )",
          "Je ne suis pas la bonne personne, contactez plutôt notre acheteur."),
    _rule("referral.es", "referral",
          r"no soy la persona (adecuada|indicada|correcta)|ya no trabaja"
          r"|no soy (el|la) responsable",
          "No soy la persona adecuada; escriba a Ana."),
    _rule("referral.pt", "referral",
          r"não sou a pessoa (certa|indicada|correta)|não trabalha mais|não sou (o|a) responsável",
          "Não sou a pessoa certa. Por favor, fale com a Maria."),
    _rule("referral.zh", "referral",
          r"不是(负责人|負責人|这方面的负责|這方面的負責)|不负责|不負責|已(经)?离职|已(經)?離職",
          "我不是负责人，请联系采购部。"),
    # --- not interested ---------------------------------------------------------------------
    _rule("not_interested.en", "not_interested",
          r"\bnot interested\b|\bno interest\b|\bno,? thanks?( you)?\b|\bwe('ll| will) pass\b"
          r"|\bnot a (good )?fit\b|\b(do not|don'?t) need\b|\bnot looking for\b",
          "We're not interested, thanks."),
    _rule("not_interested.ko", "not_interested",
          r"관심\s*(이|은|도)?\s*없|필요\s*(하지\s*않|없)|생각\s*(이|은)?\s*없|사양하겠",
          "관심 없습니다."),
    _rule("not_interested.ja", "not_interested",
          r"興味(が|は)?(ありません|ない)|必要(が|は)?(ありません|ない)|不要です|結構です|見送ら",
          "申し訳ありませんが、興味がありません。"),
    _rule("not_interested.de", "not_interested",
          r"kein(en)? (interesse|bedarf)|nicht interessiert",
          "Vielen Dank, aber wir haben kein Interesse."),
    _rule("not_interested.fr", "not_interested",
          r"pas intéressé|aucun intérêt|pas besoin|pas d'intérêt",
          "Merci, mais nous ne sommes pas intéressés."),
    _rule("not_interested.es", "not_interested",
          r"no (me|nos) interesa|no estamos interesados|no necesitamos",
          "Gracias, pero no nos interesa."),
    _rule("not_interested.pt", "not_interested",
          r"não (tenho|temos) interesse|não estamos interessados|não precisamos",
          "Obrigado, mas não temos interesse."),
    _rule("not_interested.zh", "not_interested",
          r"不需要|不感兴趣|不感興趣|没有兴趣|沒有興趣|没兴趣",
          "谢谢，我们不需要。"),
    # --- not now ----------------------------------------------------------------------------
    _rule("not_now.en", "not_now",
          r"\bnot (right )?now\b|\bnot at (this|the) (moment|time)\b|\bnext (quarter|year|month)\b"
          r"|\bno budget\b|\bmaybe later\b|\b(in|after) q[1-4]\b|\btoo busy\b"
          r"|\b(reach|circle|check) (out |back )?(again|back) (in|later|next)\b",
          "We have no budget this quarter. Please reach out again in Q2 next year."),
    _rule("not_now.ko", "not_now",
          r"다음\s*(분기|달|해|기회)|내년|나중에|추후|지금은[^.!?\n]{0,15}(어렵|힘들|곤란)"
          r"|예산(이|은)?\s*없|당분간",
          "지금은 검토가 어렵습니다. 다음 분기에 연락 주세요."),
    _rule("not_now.ja", "not_now",
          r"来期|来年|来月|今は[^。\n]{0,10}(難しい|忙しい)|予算がありません|時期を改めて",
          "今期は予算がありませんので、来期にまたご連絡ください。"),
    _rule("not_now.de", "not_now",
          r"nicht jetzt|später|nächste(s|n)? (jahr|quartal|monat)|im moment nicht|derzeit nicht",
          "Im Moment nicht, melden Sie sich nächstes Jahr."),
    _rule("not_now.fr", "not_now",
          r"pas pour le moment|pas maintenant|plus tard|l'année prochaine|le trimestre prochain",
          "Pas pour le moment, recontactez-moi l'année prochaine."),
    _rule("not_now.es", "not_now",
          r"ahora no|más adelante|el próximo (año|trimestre|mes)|en este momento no",
          "Ahora no, escríbame el próximo trimestre."),
    _rule("not_now.pt", "not_now",
          r"agora não|mais tarde|próximo (ano|trimestre|mês)|no momento não",
          "Agora não, fale comigo no próximo trimestre."),
    _rule("not_now.zh", "not_now",
          r"以后再说|以後再說|下个(月|季度)|下個(月|季度)|明年|暂时不|暫時不",
          "暂时不考虑，明年再联系。"),
    # --- interested -------------------------------------------------------------------------
    _rule("interested.en", "interested",
          r"\binterested\b|\bsounds (good|great|interesting)\b|\blooks (good|great)\b"
          r"|\b(set up|schedule|book|get|have|arrange) a (quick )?(call|meeting|demo)\b"
          r"|\bsend (me |us )?(over )?(the )?(pricing|price list|quote|contract|proposal|details)"
          r"|\blet'?s (talk|meet|chat)\b|\bwe'?d like (pricing|a quote|a demo)\b"
          r"|^\s*yes\b|\byes[,!]",
          "Thanks, this looks good. Can we set up a call on Thursday?"),
    _rule("interested.ko", "interested",
          r"관심\s*(이|은)?\s*있|미팅|전화\s*(주세요|주시|부탁)|(견적|가격|단가|수량|자료|제안서)[^.!?\n]{0,30}"
          r"(보내|부탁|요청)|만나\s*뵙|데모",
          "네, 관심 있습니다. 다음 주에 미팅 가능하신 시간 알려주세요."),
    _rule("interested.ja", "interested",
          r"ぜひ|是非|打ち合わせ|お電話で|ご相談させて|興味があります|お見積りをお願い",
          "ぜひ一度お打ち合わせをお願いします。"),
    _rule("interested.de", "interested",
          r"interessant|interessiert|preisliste|angebot (zu|schicken|senden)|gerne (einen )?termin",
          "Klingt interessant, schicken Sie mir bitte die Preisliste."),
    _rule("interested.fr", "interested",
          r"intéress|volontiers|envoyez-moi (le|la|les) (devis|tarif|proposition)",
          "Cela m'intéresse, envoyez-moi le devis."),
    _rule("interested.es", "interested",
          r"me interesa|nos interesa|podemos hablar|envíe(me|nos)? (la )?(cotización|propuesta)",
          "Me interesa, ¿podemos hablar el lunes?"),
    _rule("interested.pt", "interested",
          r"tenho interesse|temos interesse|podemos conversar|envie (a )?(proposta|cotação)",
          "Temos interesse, podemos conversar amanhã?"),
    _rule("interested.zh", "interested",
          r"感兴趣|感興趣|报价|報價|请发送|請發送|约个时间|約個時間",
          "我们很感兴趣，请发送详细的报价单。"),
)


@dataclass(frozen=True)
class IntentVerdict:
    intent: ReplyIntent
    rule: str | None  # the rule that decided it; None for "other"


def classify_intent(own_text: str) -> IntentVerdict:
    """The reply's intent from its own words: the first rule of `RULES` that matches, else
    "other". Width and case folded first (full-width Latin letters, compatibility forms)."""
    folded = unicodedata.normalize("NFKC", own_text).replace("\u2019", "'")
    for rule in RULES:
        if rule.pattern.search(folded):
            return IntentVerdict(rule.intent, rule.rule)
    return IntentVerdict("other", None)
