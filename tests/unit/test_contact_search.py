"""The bigrams contact search narrows rows down by (services/enrollment/search.py): every
query the index answers has its bigrams in every contact that contains it, ignoring case."""

from __future__ import annotations

import pytest

from services.enrollment.search import grams, query_grams


@pytest.mark.parametrize("field, q", [
    ("홍길동", "길동"), ("홍길동", "홍길"), ("Kim.MinSu@Customer.example", "minsu@cust"),
    ("ACME Widgets", "me wi"), ("İstanbul Ltd", "ista"), ("50%_off", "%_o"), ("ab", "AB"),
])
def test_a_contained_query_has_all_its_bigrams_in_the_field(field, q):
    assert q.lower() in field.lower() or q.lower() in "".join(c.lower()[0] for c in field)
    wanted = query_grams(q)
    assert wanted is not None and set(wanted) <= set(grams(field, "", ""))


def test_no_bigram_spans_two_fields():
    assert "나다" not in grams("가나", "다라", "x@y.example")


@pytest.mark.parametrize("q", ["a", "길", "Ünicode", "ΟΔΥΣ", "Дом"])
def test_one_character_or_a_cased_letter_outside_ascii_leaves_the_index_out(q):
    assert query_grams(q) is None


def test_each_character_is_lowered_alone():
    # Python lowers a final capital sigma to ς in a word; PostgreSQL lowers each character
    assert "σσ" in grams("ΟΔΥΣΣ") and "σ" in "".join(grams("ΑΣ"))
