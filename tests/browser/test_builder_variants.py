"""A/B variants in the builder, in a real browser: an email step gets a second variant (htmx
swaps the form in place), a save with weights that do not add up and a variant without a
subject is refused with its message next to the field, the fixed step is saved with both
variants (seen through the API and again on the edit page), and once an enrollee's email went
out the Stats tab shows the step's numbers per variant. Screenshot: docs/screenshots/
builder-variants.png."""

from __future__ import annotations

import re
import uuid

import pytest_asyncio
from playwright.async_api import expect

from tests.browser.helpers import assert_accessible, screenshot
from tests.e2e.test_flow import mail_to, new_contact
from tests.support import eventually


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack):
    async with stack.api_client() as client:
        yield client


async def test_a_step_with_two_variants_is_built_saved_and_counted_per_variant(
        stack, api, signed_in_page):
    page = signed_in_page
    name = f"Variants {uuid.uuid4().hex[:6]}"
    await page.goto(f"{stack.gateway_url}/sequences/new")
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_label("Timezone", exact=True).fill("Asia/Seoul")
    await page.get_by_label("As soon as due").check()
    step = page.locator("#step-0")
    await step.get_by_label("Subject", exact=True).fill("Your quote (A)")
    await step.get_by_label("Message", exact=True).fill("Hello {{고객명}}, version A.")

    # a second variant: the form comes back in place with B's subject focused, A as typed
    await step.get_by_role("button", name="Add an A/B variant to step 1").click()
    b_subject = step.get_by_label("Subject of variant B", exact=True)
    await expect(b_subject).to_be_focused()
    assert await step.get_by_label("Subject", exact=True).input_value() == "Your quote (A)"
    weight_a = step.get_by_label("Weight of variant A, in percent")
    weight_b = step.get_by_label("Weight of variant B, in percent")
    assert (await weight_a.input_value(), await weight_b.input_value()) == ("50", "50")

    # refused: 50 + 40 is not 100 (the message at the variants); then, the weights fixed,
    # B has no subject although the first step starts the thread (the message at B's subject)
    await step.get_by_label("Message of variant B", exact=True).fill("Hi {{고객명}}, version B.")
    await weight_b.fill("40")
    await page.get_by_role("button", name="Save and go live").click()
    await expect(page.locator("#builder-errors")).to_be_focused()
    assert await page.locator("#f-steps-0-variants-error").inner_text() == \
        "The weights of the variants must add up to 100."
    await weight_b.fill("50")
    await page.get_by_role("button", name="Save and go live").click()
    subject_error = page.locator("#f-steps-0-variants-1-subject-error")
    await expect(subject_error).to_have_text(
        "Enter a subject: this step starts an email thread, so every variant needs one.")
    assert await page.locator("#f-steps-0-variants-error").is_hidden()
    assert await b_subject.get_attribute("aria-invalid") == "true"
    assert await step.get_by_label("Message of variant B", exact=True).input_value() == \
        "Hi {{고객명}}, version B."  # as typed

    await b_subject.fill("Your quote (B)")
    await assert_accessible(page, "builder (A/B variants)")
    await screenshot(page, "builder-variants")
    await page.get_by_role("button", name="Save and go live").click()
    await page.wait_for_url(re.compile(r"/sequences/[0-9a-f-]{36}$"))
    sequence_id = page.url.rsplit("/", 1)[1]
    [saved] = (await api.get(f"/v1/sequences/{sequence_id}")).json()["steps"]
    assert [(v["subject"], v["body"], v["weight"]) for v in saved["variants"]] == [
        ("Your quote (A)", "Hello {{고객명}}, version A.", 50),
        ("Your quote (B)", "Hi {{고객명}}, version B.", 50)]

    # the edit page shows them again (a save from it keeps them)
    await page.goto(f"{stack.gateway_url}/sequences/{sequence_id}/edit")
    again = page.locator("#step-0")
    assert await again.get_by_label("Subject of variant B", exact=True).input_value() == \
        "Your quote (B)"
    assert await again.get_by_label("Weight of variant A, in percent").input_value() == "50"

    # an enrollee's email goes out with its letter; the Stats tab counts it under that letter
    contact_id, email = await new_contact(api, company=f"Variant Co {uuid.uuid4().hex[:4]}")
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    assert enrolled.status_code == 201, enrolled.text

    async def sent():
        return mail_to(stack, email)

    [mail] = await eventually(sent, timeout=30)
    letter = "A" if mail["Subject"] == "Your quote (A)" else "B"
    assert mail["Subject"] == f"Your quote ({letter})"

    async def counted():
        await page.goto(f"{stack.gateway_url}/sequences/{sequence_id}?tab=stats")
        row = page.locator("tr.variant", has=page.get_by_role(
            "rowheader", name=f"Variant {letter}", exact=True))
        return await row.count() == 1 and await row.locator("td").first.inner_text() == "1"

    await eventually(counted, timeout=30, interval=0.5)
    other = "B" if letter == "A" else "A"
    others = page.locator("tr.variant", has=page.get_by_role(
        "rowheader", name=f"Variant {other}", exact=True))
    assert await others.count() == 0 or await others.locator("td").first.inner_text() == "0"
    await assert_accessible(page, "sequence stats (variants)")
