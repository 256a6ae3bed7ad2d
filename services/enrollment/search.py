"""Contact search, `q=` anywhere in a contact's name, company or email, ignoring case.

pg_trgm is not in the embedded PostgreSQL (pgserver 0.1.4 ships plpgsql and vector only), so
the contacts read model keeps its own bigrams: `search_grams`, every two-character piece of the
three fields lowercased, in a GIN index (migration 0005). A query of two characters or more
asks for the rows holding all of its bigrams (the index), and then for those whose `search`
text (the three fields lowercased by PostgreSQL, joined by line feeds) contains it (LIKE): the
bigrams only narrow the rows down, LIKE decides, so the answer is what ILIKE on each field gave.

The bigrams are made here, in Python, as contacts are projected: made by a SQL function in the
row's INSERT they cost 55 us a contact, five times the rest of a 100,000-row import. For the
index never to hide a row LIKE would find, Python's lowercase must be PostgreSQL's for the
characters of the query: a character is lowered alone (no final-sigma rule) and to its first
character (İ to i, as PostgreSQL does), and a query with a cased letter outside ASCII (Ü, Σ, Д:
where the two could disagree) skips the index and scans, still correct, slower."""

from __future__ import annotations

FIELDS = ("name", "company", "email")  # what `q=` searches


class _Lowered(dict):
    """Code point -> code point of its lowercase's first character, filled as characters come
    (for `str.translate`: a table lookup a character instead of a `lower()` call each)."""

    def __missing__(self, code: int) -> int:
        self[code] = lowered = ord(chr(code).lower()[0])
        return lowered


_LOWERED = _Lowered()


def _fold(text: str) -> str:
    # ASCII lowercases one character to one, as PostgreSQL does: str.lower is the same fold
    return text.lower() if text.isascii() else text.translate(_LOWERED)


def grams(*fields: str) -> list[str]:
    """The bigrams of each field (none spanning two fields), lowercased, each once."""
    found: set[str] = set()
    for field in fields:
        folded = _fold(field)
        found.update([folded[i:i + 2] for i in range(len(folded) - 1)])
    return sorted(found)


def query_grams(q: str) -> list[str] | None:
    """The bigrams a match must hold, or None when the index cannot answer for `q` (one
    character, or a cased letter outside ASCII)."""
    if len(q) < 2 or any(not c.isascii() and c.lower() != c.upper() for c in q):
        return None
    return grams(q)
