"""Links in email bodies: found in the rendered plain text (bodies are written as text; the HTML
part makes each link clickable) and, when click tracking is on, pointed at signed redirects on
the gateway (`/c/<token>`). Pure functions, no I/O.

Only `http://` and `https://` URLs with a host are links: `javascript:`, `data:`, `mailto:`
and malformed URLs (no host, a bad port or IPv6 literal, control characters) stay as the
writer typed them, as text, never rewritten and never made a redirect target."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

# a URL runs to whitespace or a character that cannot be in one unquoted (RFC 3986 appendix C)
_URL = re.compile(r"""https?://[^\s<>"'`{}|\\^\[\]]*(?:\[[0-9A-Fa-f:.]+\][^\s<>"'`{}|\\^]*)?""",
                  re.IGNORECASE)
_TRAILING = ".,;:!?"  # sentence punctuation after a URL is not part of it
MAX_URL_LENGTH = 2000  # longer ones stay text: no mail client keeps them whole anyway


@dataclass(frozen=True)
class Link:
    index: int  # 0, 1, ... in the order the links stand in the body
    url: str
    start: int
    end: int


def _trimmed(url: str) -> str:
    while url and url[-1] in _TRAILING:
        url = url[:-1]
    # "(see https://x.example/a)": a closing parenthesis the URL did not open is the text's
    while url.endswith(")") and url.count(")") > url.count("("):
        url = url[:-1]
    return url


def is_trackable(url: str) -> bool:
    """An absolute http(s) URL with a host that urllib can take apart."""
    if len(url) > MAX_URL_LENGTH or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def links_in(text: str) -> list[Link]:
    """Every trackable link of a rendered plain-text body, in order."""
    found: list[Link] = []
    for match in _URL.finditer(text):
        url = _trimmed(match.group())
        if is_trackable(url):
            found.append(Link(len(found), url, match.start(), match.start() + len(url)))
    return found


Redirect = Callable[[Link], str]  # the tracked URL for a link (None: links stay as written)


def text_with_links(text: str, redirect: Redirect | None) -> str:
    """The plain text with each link replaced by its redirect."""
    if redirect is None:
        return text
    out, last = [], 0
    for link in links_in(text):
        out += [text[last:link.start], redirect(link)]
        last = link.end
    out.append(text[last:])
    return "".join(out)


def html_with_links(text: str, redirect: Redirect | None) -> str:
    """The plain text escaped for HTML, each link an `<a href>` (to its redirect when given)
    showing the original URL, so the reader sees where it goes."""
    out, last = [], 0
    for link in links_in(text):
        href = redirect(link) if redirect is not None else link.url
        out += [html.escape(text[last:link.start]),
                f'<a href="{html.escape(href)}">{html.escape(link.url)}</a>']
        last = link.end
    out.append(html.escape(text[last:]))
    return "".join(out)
