"""CSV import parsing: rows validated as they are read, a chunk at a time."""

from __future__ import annotations

import pytest

from services.enrollment.contact_import import ImportFileError, decode, parse


def csv_of(rows: list[str]) -> str:
    return "고객명,이메일,태그\n" + "\n".join(rows) + "\n"


def test_rows_come_in_chunks_and_failures_name_their_line():
    rows = [f"김{i},kim{i}@x.example,a;b" for i in range(5)]
    rows.insert(2, "bad,not-an-email,x")
    rows.append("again,KIM0@x.example,")
    rows.append("short")
    parsed = parse(csv_of(rows))
    chunks = list(parsed.chunks(size=2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert chunks[0][0].name == "김0" and chunks[0][0].tags == ["a", "b"]
    assert [(f.row, f.field) for f in parsed.failed] == [(4, "email"), (8, "email"), (9, None)]
    assert "same email as line 2" in parsed.failed[1].message
    assert (parsed.lines_read, parsed.lines) == (9, 8)


def test_a_header_that_maps_no_email_or_an_empty_file_is_refused_before_any_row():
    with pytest.raises(ImportFileError) as no_email:
        parse("name,company\nKim,Acme\n")
    assert no_email.value.field == "mapping"
    with pytest.raises(ImportFileError):
        parse("")


def test_cp949_and_bom_files_decode():
    text = csv_of(["김민수,kim@x.example,"])
    assert decode(text.encode("cp949")) == text
    assert decode(b"\xef\xbb\xbf" + text.encode()) == text


def test_a_binary_file_is_not_a_csv_and_its_message_is_in_the_catalog():
    with pytest.raises(ImportFileError) as binary:
        decode(b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)))
    assert binary.value.field == "file" and "binary" in str(binary.value)
    with pytest.raises(ImportFileError) as mapping:
        parse("name,mail\nKim,k@x.example\n", {"mail": "e-mail"})
    assert str(mapping.value).startswith("unknown field 'e-mail'")
    assert mapping.value.message.startswith("unknown field %(target)r")


def test_a_column_mapped_to_nothing_is_not_imported():
    parsed = parse("이메일,회사명\nk@x.example,Acme\n", {"회사명": ""})
    [[contact]] = list(parsed.chunks())
    assert (contact.email, contact.company) == ("k@x.example", "")


def test_a_timezone_column_is_recognised_and_a_name_that_is_not_iana_fails_its_row():
    parsed = parse("Email,Time zone\n"
                   "a@x.example,Asia/Seoul\n"
                   "b@x.example,Seoul\n"
                   "c@x.example,../../etc/passwd\n"
                   "d@x.example,\n")
    [rows] = list(parsed.chunks())
    assert [(r.email, r.timezone) for r in rows] == [("a@x.example", "Asia/Seoul"),
                                                     ("d@x.example", None)]
    assert [(f.row, f.field) for f in parsed.failed] == [(3, "timezone"), (4, "timezone")]
    assert "unknown timezone 'Seoul'" in parsed.failed[0].message


def test_an_empty_timezone_is_inferred_from_country_state_or_phone_and_a_given_one_wins():
    parsed = parse("이메일,국가,State,휴대폰,시간대\n"
                   "a@x.example,대한민국,,,\n"
                   "b@x.example,US,CA,,\n"
                   "c@x.example,US,TX,,\n"
                   "d@x.example,,,+81 3-1234-5678,\n"
                   "e@x.example,KR,,,Europe/Berlin\n"
                   "f@x.example,,,010-1234-5678,\n")
    [rows] = list(parsed.chunks())
    assert [r.timezone for r in rows] == ["Asia/Seoul", "America/Los_Angeles", None,
                                          "Asia/Tokyo", "Europe/Berlin", None]
    assert not parsed.failed
    # the hint columns are not stored, and an inferred zone is set (an upsert writes it)
    assert "timezone" in rows[0].model_fields_set and "timezone" not in rows[2].model_fields_set


def test_country_and_region_may_be_mapped_like_fields():
    parsed = parse("mail,land,bundesstaat\nk@x.example,Germany,\n",
                   {"mail": "email", "land": "country", "bundesstaat": "region"})
    [[contact]] = list(parsed.chunks())
    assert contact.timezone == "Europe/Berlin"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_lines_end_in_any_way_and_a_quoted_field_may_span_lines(newline):
    """The file is decoded as it is read (its text is never held whole): the rows are those
    `csv` reads from a file opened with newline="", in UTF-8 with a BOM and in CP949 too."""
    text = newline.join(["name,email,company", '"Kim",kim@x.example,"Hanbit', 'Sales"',
                         "", "Lee,lee@x.example,Bada"])  # the last line has no ending
    for data in (text.encode("utf-8-sig"), text.replace("Bada", "바다").encode("cp949")):
        parsed = parse(data)
        rows = [contact for chunk in parsed.chunks() for contact in chunk]
        assert [(c.name, c.email) for c in rows] == [("Lee", "lee@x.example")]
        assert rows[0].company in ("Bada", "바다") 
        # the quoted field is one value, with its line break: refused (a single line is wanted)
        assert [(f.row, f.field) for f in parsed.failed] == [(2, "company")]
