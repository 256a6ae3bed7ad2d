"""Machine opens and clicks: the one table of rules that tells a person's open or click from a
proxy's or a link scanner's. Documented row by row in docs/machine-rules.md; each row has its
test in tests/unit/test_machine_rules.py. Machine opens and clicks are kept (flagged, never
deleted) and counted apart.

The rules are tried in order; the first that matches decides, and one that matches none is a
person's. Pure: the caller gathers the facts (`Facts`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Literal

Kind = Literal["open", "click"]

# A request this soon after the email was sent is the receiving side's machinery (a gateway's
# scan on arrival, a proxy's prefetch), not a person who read it.
TOO_SOON_SECONDS = 5.0
# Gmail's image proxy fetches images on arrival too (prefetch); later fetches are a reader's.
GOOGLE_PREFETCH_SECONDS = 60.0
# Link scanners follow every link of an email at once; a person does not click two in a second.
BURST_SECONDS = 1.0

# Networks, each from a published source (docs/machine-rules.md says which and when read):
# Apple's 17.0.0.0/8 (ARIN registration NET-17-0-0-0-1, Apple Inc.) for Mail Privacy
# Protection; Barracuda Email Security Service's published IP ranges (Barracuda Campus,
# "Barracuda Email Security Service IP Ranges", US instance).
APPLE_NETWORKS = ("17.0.0.0/8",)
SCANNER_NETWORKS = {
    "barracuda": ("64.235.144.0/20", "209.222.80.0/21"),
}


@dataclass(frozen=True)
class Facts:
    kind: Kind
    method: str  # GET or HEAD
    user_agent: str
    client_ip: str
    seconds_since_sent: float | None  # None: the delivery time is unknown
    other_link_clicked_within: float | None = None  # seconds to the nearest click of another
    # link of the same email, None: none


@dataclass(frozen=True)
class Rule:
    name: str
    kinds: tuple[Kind, ...]
    machine: bool  # False: a row that keeps a person's request a person's (an exception)
    says: str  # what it catches, for docs/machine-rules.md
    matches: Callable[[Facts], bool]


def _in_networks(ip: str, networks: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in _networks(networks))


@lru_cache(maxsize=None)
def _networks(networks: tuple[str, ...]):
    return tuple(ipaddress.ip_network(n) for n in networks)


@lru_cache(maxsize=4096)
def is_scanner_agent(user_agent: str) -> bool:
    """A user agent in the maintained list of the `crawler-user-agents` package (PyPI; the
    same JSON as the npm package), or one of the mail scanners it does not name."""
    from crawleruseragents import is_crawler  # 1,500 patterns: compiled on first use only

    lowered = user_agent.lower()
    return (is_crawler(user_agent) or not user_agent.strip()
            or any(name in lowered for name in _MAIL_SCANNER_AGENTS))


# scanners that announce themselves but are not in the crawler list (seen in their own docs
# and in published request logs); matched as lower-case substrings
_MAIL_SCANNER_AGENTS = ("barracuda", "mimecast", "proofpoint", "safelinks", "symantec",
                        "trendmicro", "forcepoint", "sophos", "fortiguard")


def _google_proxy(facts: Facts) -> bool:
    return "googleimageproxy" in facts.user_agent.lower()


def _soon(facts: Facts, seconds: float) -> bool:
    return facts.seconds_since_sent is not None and facts.seconds_since_sent < seconds


RULES: tuple[Rule, ...] = (
    Rule("head-request", ("open", "click"), True,
         "A HEAD request: a scanner checking what is behind the link; a browser sends GET.",
         lambda f: f.method.upper() == "HEAD"),
    Rule("google-image-prefetch", ("open",), True,
         "Gmail's image proxy (user agent with GoogleImageProxy) fetching the pixel within a"
         f" minute ({GOOGLE_PREFETCH_SECONDS:.0f} s) of sending: a prefetch on arrival.",
         lambda f: _google_proxy(f) and _soon(f, GOOGLE_PREFETCH_SECONDS)),
    Rule("google-image-proxy-open", ("open",), False,
         "Gmail's image proxy later on: it fetches when the reader opens the email, so it is"
         " the reader's open (the proxy is in the crawler list; this row keeps it a person's).",
         _google_proxy),
    Rule("apple-mail-privacy", ("open",), True,
         "Apple Mail Privacy Protection: the pixel fetched from Apple's network 17.0.0.0/8"
         " (ARIN NET-17-0-0-0-1) with the bare user agent `Mozilla/5.0` it sends.",
         lambda f: f.user_agent.strip() == "Mozilla/5.0"
         and _in_networks(f.client_ip, APPLE_NETWORKS)),
    Rule("too-soon-after-sending", ("open", "click"), True,
         f"Within {TOO_SOON_SECONDS:.0f} s of sending: the receiving server's scan on arrival.",
         lambda f: _soon(f, TOO_SOON_SECONDS)),
    Rule("link-burst", ("click",), True,
         f"Another link of the same email followed within {BURST_SECONDS:.0f} s: a scanner"
         " follows every link at once.",
         lambda f: f.other_link_clicked_within is not None
         and f.other_link_clicked_within <= BURST_SECONDS),
    Rule("scanner-user-agent", ("open", "click"), True,
         "A user agent of a known bot, crawler or mail scanner (the `crawler-user-agents`"
         " list, plus Barracuda, Mimecast, Proofpoint, Safe Links, ...), or none at all.",
         lambda f: is_scanner_agent(f.user_agent)),
    Rule("scanner-network", ("open", "click"), True,
         "From a mail-security vendor's published network (Barracuda Email Security Service).",
         lambda f: any(_in_networks(f.client_ip, n) for n in SCANNER_NETWORKS.values())),
)


@dataclass(frozen=True)
class Verdict:
    machine: bool
    rule: str | None  # the rule that decided; None: no rule matched (a person)


def classify(facts: Facts) -> Verdict:
    """Person or machine, and by which rule."""
    for rule in RULES:
        if facts.kind in rule.kinds and rule.matches(facts):
            return Verdict(rule.machine, rule.name)
    return Verdict(False, None)
