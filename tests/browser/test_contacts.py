"""Contacts in a real browser: from the empty list, import a CSV through the file picker (the
columns found, progress while it runs, the report), search as you type, open a card; axe on
every page and a screenshot of each."""

from __future__ import annotations

from tests.browser.helpers import assert_accessible, screenshot

ROWS = 5000  # a few chunks: the progress page polls a while before the report


def contacts_csv(path) -> None:
    lines = ["고객명,회사명,직함,이메일,태그,국가"]
    lines += [f"고객{i},한빛상사{i % 7},팀장,customer{i}@hanbit.example,{'vip' if i % 2 else ''},"
              f"{'일본' if i % 2 else '대한민국'}" for i in range(ROWS)]
    lines.insert(3, "잘못된 행,회사,직함,not-an-email,,")
    path.write_text("\n".join(lines) + "\n", encoding="cp949")


async def test_import_a_csv_search_and_open_a_card(stack, signed_in_page, tmp_path):
    page, app = signed_in_page, stack.gateway_url
    await page.goto(f"{app}/contacts")
    await page.get_by_role("heading", name="No contacts yet: import a CSV or add one").wait_for()
    await assert_accessible(page, "contacts (empty)")
    await screenshot(page, "contacts-empty")

    await page.get_by_role("link", name="Import CSV").first.click()
    await page.get_by_role("heading", name="Import contacts").wait_for()
    await assert_accessible(page, "import: choose a file")
    file = tmp_path / "고객목록.csv"
    contacts_csv(file)
    await page.get_by_label("CSV file").set_input_files(file)
    await screenshot(page, "contacts-import")
    await page.get_by_role("button", name="Upload and check the columns").click()

    await page.get_by_role("heading", name="We found these columns").wait_for()
    assert await page.get_by_label("이메일").input_value() == "이메일:email"
    assert await page.get_by_label("국가").input_value() == "국가:country"  # for the timezone
    await page.get_by_label("직함").select_option("직함:")  # leave the job title out
    await assert_accessible(page, "import: the columns found")
    await screenshot(page, "contacts-import-mapping")
    await page.get_by_role("button", name="Import", exact=True).click()

    await page.get_by_role("heading", name="Importing 고객목록.csv").wait_for()
    await assert_accessible(page, "import: progress")
    # the report arrives by polling, without a reload
    await page.get_by_role("heading", name="Import done").wait_for(timeout=90_000)
    report = page.get_by_role("table", name="Rows not imported, and why")
    assert "not-an-email" not in await report.inner_text()  # the message, not the value
    assert "4" in await report.locator("td.num").first.inner_text()
    await assert_accessible(page, "import: report")
    await screenshot(page, "contacts-import-report")

    await page.get_by_role("link", name="See the contacts").click()
    search = page.get_by_role("searchbox", name="Search")
    await search.press_sequentially("고객4999", delay=30)
    rows = page.locator("#contact-rows tr")
    await page.wait_for_function(
        "() => document.querySelectorAll('#contact-rows tr').length === 1")
    assert "고객4999" in await rows.first.inner_text()
    assert await search.evaluate("el => el === document.activeElement")  # focus stayed
    await assert_accessible(page, "contacts (searched)")
    await screenshot(page, "contacts-list")

    await rows.first.get_by_role("link", name="고객4999").click()
    await page.get_by_role("heading", name="고객4999", exact=True).wait_for()
    assert "vip" in await page.locator("dl.fields").inner_text()
    assert await page.locator("dl.fields").get_by_text("팀장").count() == 0
    # the zone inferred from the country, and the time there
    assert "Asia/Tokyo" in await page.locator("dl.fields").inner_text()
    assert "there" in await page.locator(".local-time").inner_text()
    await assert_accessible(page, "contact card")
    await screenshot(page, "contact-card")
