"""What inferring a contact's timezone costs the CSV import, per row.

The same generated files are parsed and validated by the import (`contact_import.parse`, every
chunk, as `POST /v1/contacts/import` does before sending them) twice in one run: as they are,
and with the inference switched off (the baseline). Three shapes of file: a country column (with
US states), international phone numbers and no country (the worst case: every row goes through
`phonenumbers`), and Korean national numbers without a country (a Korean Excel export: nothing
to infer from). The figure is rows/s (of CPU time) against the baseline's rows/s, and the cost
per row.
"""

from __future__ import annotations

import random
import time

from bench.common import Result, progress
from services.enrollment import contact_import

_COUNTRIES = [("대한민국", ""), ("KR", ""), ("US", "CA"), ("US", "TX"), ("US", "New York"),
              ("Japan", ""), ("DE", ""), ("United Kingdom", ""), ("Brazil", ""), ("", "")]
_PHONES = ["+82 10-{a:04d}-{b:04d}", "+1 212 555 {b:04d}", "+1 650 253 {b:04d}",
           "+81 3-{a:04d}-{b:04d}", "+49 30 {a:04d}{b:02d}", "+44 20 7946 {b:04d}"]


def _file(shape: str, rows: int) -> str:
    rng = random.Random(7)
    lines = ["고객명,이메일,회사명,국가,State,전화번호"]
    for i in range(rows):
        a, b = rng.randrange(10000), rng.randrange(10000)
        country, state, phone = "", "", ""
        if shape == "country":
            country, state = rng.choice(_COUNTRIES)
        elif shape == "international phone":
            phone = rng.choice(_PHONES).format(a=a, b=b)
        else:
            phone = f"010-{a:04d}-{b:04d}"
        lines.append(f"김{i},kim{i}@c{i % 500}.example,한빛{i % 100},{country},{state},{phone}")
    return "\n".join(lines) + "\n"


def _parse_seconds(text: str) -> tuple[float, int]:
    """CPU seconds of this process (the other processes of a busy machine count less)."""
    started = time.process_time()
    parsed = contact_import.parse(text)
    zoned = sum(1 for chunk in parsed.chunks() for row in chunk if row.timezone)
    return time.process_time() - started, zoned


def _without_inference(text: str) -> float:
    real = contact_import.infer_timezone
    contact_import.infer_timezone = lambda *_: None
    try:
        return _parse_seconds(text)[0]
    finally:
        contact_import.infer_timezone = real


async def run(quick: bool) -> list[Result]:
    rows = 20_000 if quick else 100_000
    _parse_seconds(_file("country", 2000))  # warm caches and imports (as a running gateway is)
    _parse_seconds(_file("international phone", 2000))
    results = []
    for shape in ("country", "international phone", "national phone, no country"):
        text = _file(shape, rows)
        # alternated, best of three each: this machine is noisy
        with_, without = [], []
        for _ in range(3):
            without.append(_without_inference(text))
            seconds, zoned = _parse_seconds(text)
            with_.append(seconds)
        best, base = min(with_), min(without)
        per_row_us = (best - base) / rows * 1e6
        progress(f"  {shape}: {rows / best:,.0f} rows/s with inference, {rows / base:,.0f}"
                 f" without; {per_row_us:.1f} us a row; {zoned:,} rows got a zone")
        results.append(Result.compare(
            f"CSV parse of {rows:,} rows with timezone inference: {shape}", rows / best,
            "rows/s", rows / base, "the same parse without inference",
            details={"us_per_row": round(per_row_us, 2), "rows_with_zone": zoned}))
        # a whole import costs about 100 us a row (100,000 in 10 s): 5 us is 5 %
        cheap = shape != "international phone"  # the worst case: reported, no target
        results.append(Result(f"  inference cost per row: {shape}", per_row_us, "us",
                              target="< 5 us" if cheap else None,
                              passed=per_row_us < 5 if cheap else None))
    return results
