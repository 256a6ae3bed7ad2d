"""The builder's pieces without a running system: the form's buttons applied to the steps, the
contract's refusals in the reader's words next to the field they are about, and the Settings tab
partial the sequence detail page includes."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from contracts import commands as c
from contracts.views import SequenceView
from services.gateway.web.routes import builder
from services.gateway.web.templating import Texts, environment


def steps(*channels):
    return [{**builder._blank_step(i == 0), "channel": ch, "body": f"b{i}"}
            for i, ch in enumerate(channels)]


@pytest.mark.parametrize("action, order, focus", [
    ("add_step", ["email", "sms", "call", "email"], "f-steps-3-channel"),
    ("remove:1", ["email", "call"], "step-1-title"),
    ("remove:2", ["email", "sms"], "step-1-title"),
    ("up:2", ["email", "call", "sms"], "step-1-title"),
    ("up:0", ["email", "sms", "call"], "step-0-title"),  # already first: nothing moves
    ("down:0", ["sms", "email", "call"], "step-1-title"),
    ("remove:7", ["email", "sms", "call"], None),  # no such step
    ("drop table", ["email", "sms", "call"], None),
])
def test_each_button_of_the_form_applies_to_the_steps(action, order, focus):
    draft = steps("email", "sms", "call")
    assert builder._apply(action, draft) == focus
    assert [s["channel"] for s in draft] == order


def test_removing_the_last_step_leaves_the_focus_on_add_step():
    draft = steps("email")
    assert builder._apply("remove:0", draft) == "add-step" and draft == []
    assert builder._apply("add_step", draft) == "f-steps-0-channel"
    assert draft[0]["wait_days"] == "0"  # the first step waits nothing by default


def test_the_posted_fields_come_back_as_typed_and_an_sms_subject_is_not_sent():
    draft = builder._draft([
        ("csrf_token", "t"), ("action", "save"), ("name", "N"), ("send_policy.mode", "send_time"),
        ("send_policy.send_time", "09:30"), ("steps[3].channel", "sms"),
        ("steps[3].subject", "hidden"), ("steps[3].body", "b"), ("steps[3].wait_days", " 2 "),
        ("steps[0].channel", "email"), ("steps[0].body", "a"), ("steps[0].subject", "S")])
    assert [s["channel"] for s in draft["steps"]] == ["email", "sms"]  # the gap closes up
    assert draft["steps"][1]["subject"] == "hidden"  # shown again if switched back to email
    body = builder._definition_body(draft)
    assert body["steps"][1] == {"channel": "sms", "body": "b", "wait_days": "2",
                                 "wait_unit": "days"}
    assert body["send_policy"] == {"mode": "send_time", "send_time": "09:30"}
    assert body["purpose"] is None


def errors_of(body: dict, model=c.SequenceDefinition, language="en") -> dict:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    return builder.builder_errors(refused.value, body, Texts(language, "UTC").gettext)


GOOD = {"name": "N", "sender_name": "S", "sender_email": "s@sales.example",
        "timezone": "Asia/Seoul", "send_policy": {"mode": "as_soon_as_due"},
        "steps": [{"channel": "sms", "body": "call first", "wait_days": "0"},
                  {"channel": "email", "subject": "Hi", "body": "x", "wait_days": "1"}]}


def test_a_rule_about_the_whole_list_is_shown_at_the_field_to_fix():
    no_subject = {**GOOD, "steps": [GOOD["steps"][0], {**GOOD["steps"][1], "subject": None}]}
    assert errors_of(no_subject) == {
        "steps[1].subject": "The first email step needs a subject: it starts the email thread."}
    no_time = {**GOOD, "send_policy": {"mode": "send_time", "send_time": None}}
    assert errors_of(no_time) == {
        "send_policy.send_time": "Enter a send time, or choose “As soon as due”."}


def test_refusals_are_in_the_readers_language_with_their_values():
    bad = {**GOOD, "name": "", "timezone": "../../etc/passwd", "steps": [
        {"channel": "email", "subject": "Hi\r\nBcc: x", "body": "Hi {{foo}}", "wait_days": "x"}]}
    assert errors_of(bad) == {
        "name": "This field is required.",
        "timezone": "Unknown timezone: choose one from the list, e.g. Asia/Seoul.",
        "steps[0].subject": "One line only, without line breaks.",
        "steps[0].body": "Unknown variable {{foo}} at position 3: use {{고객명}}, {{회사명}},"
                         " {{직함}} or {{담당자명}}.",
        "steps[0].wait_days": "Enter a whole number.",
    }
    korean = errors_of(bad, language="ko")
    assert korean["steps[0].body"].startswith("위치 3에 알 수 없는 변수 {{foo}}")
    assert errors_of({"steps": []}, c.StepsRequest) == {"steps": "Add at least one step."}


def test_a_service_refusal_we_know_is_ours_and_one_we_do_not_comes_as_it_is():
    from contracts.base import FieldError, Problem

    archived = Problem(status=409, title="Conflict", errors=[
        FieldError(field="sequence_id", message="the sequence is archived")])
    assert builder.service_errors(archived, {}, Texts("en", "UTC").gettext) == {
        "": "This sequence is archived: its steps can no longer be changed."}
    strange = Problem(status=422, title="Invalid", errors=[
        FieldError(field="steps[0].body", message="something new")])
    assert builder.service_errors(strange, {}, Texts("en", "UTC").gettext) == {
        "steps[0].body": "something new"}


def sequence(state: str, name: str = "<b>Quote</b>") -> SequenceView:
    return SequenceView(
        sequence_id=uuid.uuid4(), name=name, purpose=None, sender_name="이영희",
        sender_email="younghee@sales.example", timezone="Asia/Seoul",
        send_policy={"mode": "send_time", "send_time": "09:30"},
        steps=[{"channel": "email", "subject": "Hi", "body": "x", "wait_days": 0}],
        language="ko", state=state, enrolled=3, counts={}, headline="3 enrolled · live",
        created_at=datetime(2026, 3, 1, tzinfo=timezone.utc))


def settings_tab(view: SequenceView, language: str = "en") -> str:
    texts = Texts(language, "Asia/Seoul")
    request = SimpleNamespace(url=SimpleNamespace(path=f"/sequences/{view.sequence_id}",
                                                  query="tab=settings"))
    return environment.get_template("builder/_settings.html").render(
        request=request, user=SimpleNamespace(csrf_token="tok"), sequence=view, t=texts,
        _=texts.gettext, gettext=texts.gettext, ngettext=texts.ngettext)


def test_the_settings_tab_shows_the_settings_with_edit_and_the_actions_that_apply():
    live = sequence("live")
    page = settings_tab(live)
    assert "&lt;b&gt;Quote&lt;/b&gt;" in page and "<b>Quote" not in page
    assert f'href="/sequences/{live.sequence_id}/edit"' in page
    assert "At 09:30 local time on the due day" in page and "Asia/Seoul" in page
    assert f'action="/sequences/{live.sequence_id}/pause"' in page
    assert f'name="back" value="/sequences/{live.sequence_id}?tab=settings"' in page
    assert f'href="/sequences/{live.sequence_id}/archive"' in page
    assert "/resume" not in page

    paused = settings_tab(sequence("paused"), "ko")
    assert "/resume" in paused and "/pause" not in paused and "수정" in paused
    archived = settings_tab(sequence("archived"))
    assert "/edit" not in archived and "/archive" not in archived
    assert "nothing more goes out" in archived


def test_the_window_holidays_and_zone_mode_fields_become_the_contract_body():
    draft = builder._draft([
        ("name", "N"), ("send_policy.mode", "window"), ("send_policy.window.days", "mon"),
        ("send_policy.window.days", "fri"), ("send_policy.window.days", "nope"),
        ("send_policy.window.blocks[0].start", "09:00"), ("send_policy.window.blocks[0].end", "11:30"),
        ("send_policy.window.blocks[1].start", ""), ("send_policy.window.blocks[1].end", ""),
        ("holidays.choice", "calendar"), ("holidays.country", "us"), ("holidays.subdivision", "ca"),
        ("zone_mode", "contact"), ("steps[0].channel", "call"), ("steps[0].body", "b"),
        ("steps[0].wait_days", "1"), ("steps[0].wait_unit", "business_days")])
    body = builder._definition_body(draft)
    assert body["send_policy"] == {"mode": "window", "window": {
        "days": ["mon", "fri"], "blocks": [{"start": "09:00", "end": "11:30"}]}}
    assert body["holidays"] == {"country": "US", "subdivision": "CA"}
    assert body["zone_mode"] == "contact" and body["steps"][0]["wait_unit"] == "business_days"


def test_window_and_holiday_refusals_are_next_to_their_fields_in_the_readers_language():
    window = {"mode": "window", "window": {"days": ["mon"], "blocks": [
        {"start": "09:00", "end": "12:00"}, {"start": "11:00", "end": "13:00"}]}}
    assert errors_of({**GOOD, "send_policy": window}) == {
        "send_policy.window.blocks": "Time blocks may not overlap."}
    midnight = {"mode": "window", "window": {"days": ["mon"], "blocks": [
        {"start": "09:00", "end": "24:00"}]}}
    assert errors_of({**GOOD, "send_policy": midnight}, language="ko") == {
        "send_policy.window.blocks": "시각은 00:00부터 23:59까지 HH:MM 형식으로 입력하세요"
                                     " (24:00은 쓸 수 없습니다)."}
    no_days = {"mode": "window", "window": {"days": [], "blocks": [
        {"start": "09:00", "end": "10:00"}]}}
    assert errors_of({**GOOD, "send_policy": no_days}) == {
        "send_policy.window.days": "Choose at least one sending day."}
    assert errors_of({**GOOD, "holidays": {"country": "US", "subdivision": "ZZ"}}) == {
        "holidays": "Unknown subdivision of this country (e.g. CA for US, BY for DE); leave it"
                    " empty for the whole country."}


# --- A/B variants in the builder ----------------------------------------------------------------

def test_adding_and_removing_variants_keeps_two_or_three_with_even_weights():
    draft = steps("email", "sms")
    draft[0]["subject"] = "Hi"
    assert builder._apply("add_variant:0", draft) == "f-steps-0-variants-1-subject"
    assert [v["weight"] for v in draft[0]["variants"]] == ["50", "50"]
    assert builder._apply("add_variant:0", draft) == "f-steps-0-variants-2-subject"
    assert [v["weight"] for v in draft[0]["variants"]] == ["34", "33", "33"]
    assert builder._apply("add_variant:0", draft) == "f-steps-0-variants"  # C is the last
    assert len(draft[0]["variants"]) == 3
    assert builder._apply("add_variant:1", draft) == "f-steps-1-variants"  # SMS: none
    assert draft[1]["variants"] == []
    assert builder._apply("remove_variant:0.0", draft) is None  # A is the step's own text
    assert builder._apply("remove_variant:0.2", draft) == "f-steps-0-variants"
    assert [v["weight"] for v in draft[0]["variants"]] == ["50", "50"]
    assert builder._apply("remove_variant:0.1", draft) == "f-steps-0-variants"
    assert draft[0]["variants"] == []  # one left is no A/B test


def test_posted_variants_become_the_contracts_with_a_from_the_steps_own_fields():
    draft = builder._draft([
        ("name", "N"), ("steps[0].channel", "email"), ("steps[0].subject", "Quote"),
        ("steps[0].body", "A body"), ("steps[0].wait_days", "0"),
        ("steps[0].variants[0].weight", "60"), ("steps[0].variants[1].subject", "Your quote"),
        ("steps[0].variants[1].body", "B body"), ("steps[0].variants[1].weight", " 40 ")])
    body = builder._steps_body(draft["steps"])[0]
    assert body["variants"] == [{"subject": "Quote", "body": "A body", "weight": "60"},
                                {"subject": "Your quote", "body": "B body", "weight": "40"}]
    step = c.StepsRequest.model_validate({"steps": [body]}).steps[0]
    assert [(v.subject, v.weight) for v in step.variants] == [("Quote", 60), ("Your quote", 40)]
    view = SequenceView.model_validate({**sequence("live").model_dump(), "steps": [step]})
    assert builder._draft_of(view)["steps"][0]["variants"] == [
        {"subject": "", "body": "", "weight": "60"},
        {"subject": "Your quote", "body": "B body", "weight": "40"}]


def variant_step(weights, subjects=("Hi", "Hello")) -> dict:
    return {"channel": "email", "subject": subjects[0], "body": "x", "wait_days": "0",
            "variants": [{"body": f"v{i}", "weight": str(w),
                          **({"subject": subjects[i]} if subjects[i] else {})}
                         for i, w in enumerate(weights)]}


def test_variant_refusals_are_next_to_the_field_to_fix_in_the_readers_language():
    assert errors_of({**GOOD, "steps": [variant_step((50, 40))]}) == {
        "steps[0].variants": "The weights of the variants must add up to 100."}
    assert errors_of({**GOOD, "steps": [variant_step((50, 50), ("Hi", None))]}) == {
        "steps[0].variants[1].subject":
            "Enter a subject: this step starts an email thread, so every variant needs one."}
    no_weight = variant_step((50, 50))
    no_weight["variants"][1]["weight"] = ""
    assert errors_of({**GOOD, "steps": [no_weight]}) == {
        "steps[0].variants[1].weight": "Enter a whole number from 1 to 100."}
    blank_b = variant_step((50, 50))
    blank_b["variants"][1]["body"] = ""
    assert errors_of({**GOOD, "steps": [blank_b]}) == {
        "steps[0].variants[1].body": "This field is required."}
    korean = errors_of({**GOOD, "steps": [variant_step((50, 40))]}, language="ko")
    assert korean["steps[0].variants"] != "The weights of the variants must add up to 100."

