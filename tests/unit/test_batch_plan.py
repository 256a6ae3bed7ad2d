"""The mailer's plan of a batch of due steps (`services.mailer.batch_plan`), pure: what each
step comes to, from what was fetched for the batch, with nothing sent or written."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from contracts.base import EventEnvelope
from contracts.events import EmailDeferred, EmailHeld, StepDue, TaskDue, VariantAssigned
from contracts.values import Channel
from sequences.signing import Signer
from services.mailer.adapters import Mailboxes
from contracts.values import MailboxLimits
from sequences.mailboxes import ConnectedMailbox
from services.mailer.batch_plan import (PAUSED_RECHECK, UNHEALTHY_WAIT, Facts, LinkSigner,
                                        Outcome, due_steps, plan)
from services.mailer.pools import Pools

NOW = datetime(2026, 12, 3, 0, 30, tzinfo=UTC)
WORKSPACE = uuid.UUID("00000000-0000-4000-8000-000000000001")
SENDER = "sales@example.com"


def due(channel: Channel = Channel.email, enrollment_id: uuid.UUID | None = None,
        step_id: uuid.UUID | None = None) -> tuple[EventEnvelope, StepDue]:
    event = StepDue(enrollment_id=enrollment_id or uuid.uuid4(), sequence_id=uuid.uuid4(),
                    contact_id=uuid.uuid4(), step_id=step_id or uuid.uuid4(), step_index=0,
                    channel=channel, due_at=NOW)
    envelope = EventEnvelope(event_id=uuid.uuid4(), workspace_id=WORKSPACE,
                             stream_id=event.stream_id(), version=1, type="StepDue",
                             schema_version=1, occurred_at=NOW, correlation_id=uuid.uuid4(),
                             data=event.model_dump(mode="json"))
    return envelope, event


def situation(event: StepDue, **changes) -> SimpleNamespace:
    """A row of what the mailer fetches for a step (`sending._SITUATIONS`)."""
    row = dict(
        sender_name="Kim", sender_email=SENDER, timezone="Asia/Seoul", language="ko",
        steps=[{"step_id": str(event.step_id), "subject": "Hello {{customer_name}}",
                "body": "Dear {{customer_name}}, see https://example.com/offer"}],
        workspace_id=WORKSPACE, mailbox_pool=[], kept_mailbox=None, track_opens=True,
        track_clicks=True, variant_winner=None, variant_letter=None, email="lee@example.org",
        merge_values={"name": "Lee"}, opted_out=False, sent=False, halted=False,
        suppressed=False, intent_state=None, intent_slot=None, previous_message_id=None,
        previous_subject=None, previous_references=[])
    row.update(changes)
    return SimpleNamespace(**row)


def facts(rows: dict, paused: dict[str, str] | None = None,
          connected: list[ConnectedMailbox] = ()) -> Facts:
    pools = Pools({(m.workspace_id, m.address): m for m in connected}, {}, NOW)
    return Facts(situations={(e.enrollment_id, e.step_id): row for e, row in rows.items()},
                 pools=pools, paused=paused or {}, now=NOW,
                 mailboxes=Mailboxes("smtp://localhost:2525"),
                 links=LinkSigner(Signer(b"0123456789abcdef"), "https://app.example.com"))


def planned(steps, rows: dict, paused: dict[str, str] | None = None,
            connected: list[ConnectedMailbox] = ()):
    outcome = Outcome()
    sends = plan(steps, facts(rows, paused, connected), outcome)
    return sends, outcome


def connected_mailbox(address: str, healthy: bool = True,
                      problem: str | None = None) -> ConnectedMailbox:
    return ConnectedMailbox(
        mailbox_id=uuid.uuid4(), workspace_id=WORKSPACE, address=address, display_name="",
        owner_user_id=None, auth="password", oauth_provider=None,
        smtp={"host": "127.0.0.1", "port": 2525, "security": "none"}, imap=None,
        limits=MailboxLimits(), connected_at=NOW, healthy=healthy, problem=problem,
        checked_at=NOW, secrets={"smtp_password": "revoked"})


def events_of(outcome: Outcome) -> list:
    return [event for append in outcome.appends for event in append.events]


def test_a_second_step_of_one_enrollment_waits_for_the_first():
    first = due()
    second = due(enrollment_id=first[1].enrollment_id)
    other = due()
    steps, handed_back = due_steps([first[0], second[0], other[0]])
    assert [event for _, event in steps] == [first[1], other[1]]
    assert [h.event_id for h in handed_back] == [second[0].event_id]


def test_an_email_step_is_rendered_from_the_sequences_sender_to_the_contact():
    envelope, event = due()
    sends, outcome = planned([(envelope, event)], {event: situation(event)})
    [send] = sends
    assert send.email.recipient == "lee@example.org"
    assert send.email.sender_email == SENDER and send.mailbox.address == SENDER
    assert send.email.thread.subject == "Hello Lee"
    assert "Dear Lee" in send.email.text_body
    assert send.email.unsubscribe_url.startswith("https://app.example.com/unsubscribe/")
    assert send.email.date == NOW  # in the sequence's zone
    assert str(send.email.date.tzinfo) == "Asia/Seoul"
    assert not send.unrecorded and outcome.appends == [] and outcome.handed_back == []


def test_a_step_without_subject_continues_the_thread_of_the_last_email():
    envelope, event = due()
    row = situation(event, previous_message_id="<first@example.com>",
                    previous_subject="Hello Lee", previous_references=["<first@example.com>"])
    row.steps[0]["subject"] = None
    [send], _ = planned([(envelope, event)], {event: row})
    assert send.email.thread.subject == "Re: Hello Lee"
    assert send.email.thread.in_reply_to == "<first@example.com>"


def test_a_step_whose_sequence_or_contact_is_not_known_yet_is_handed_back():
    envelope, event = due()
    sends, outcome = planned([(envelope, event)], {})
    assert sends == [] and [h.event_id for h in outcome.handed_back] == [envelope.event_id]


def test_an_sms_step_becomes_a_task_for_the_owner_and_nothing_is_sent():
    envelope, event = due(Channel.sms)
    row = situation(event, merge_values={"name": "Lee", "owner_name": "Park"})
    sends, outcome = planned([(envelope, event)], {event: row})
    [task] = events_of(outcome)
    assert sends == [] and isinstance(task, TaskDue)
    assert task.owner_name == "Park" and task.instructions.startswith("Dear Lee")


def test_a_step_sent_already_or_of_an_ended_enrollment_or_opted_out_contact_comes_to_nothing():
    for changes in ({"sent": True}, {"halted": True}, {"opted_out": True}):
        envelope, event = due()
        sends, outcome = planned([(envelope, event)], {event: situation(event, **changes)})
        assert (sends, outcome.appends, outcome.handed_back) == ([], [], []), changes


def test_a_suppressed_address_is_held_unless_a_crash_may_have_sent_it_already():
    envelope, event = due()
    sends, outcome = planned([(envelope, event)], {event: situation(event, suppressed=True)})
    assert sends == [] and [type(e) for e in events_of(outcome)] == [EmailHeld]
    sends, outcome = planned([(envelope, event)], {event: situation(
        event, suppressed=True, intent_state="sending")})
    assert [s.unrecorded for s in sends] == [True] and outcome.appends == []


def test_a_paused_sender_mailbox_defers_the_step():
    envelope, event = due()
    sends, outcome = planned([(envelope, event)], {event: situation(event)},
                             paused={SENDER: "550 sender rejected"})
    [deferred] = events_of(outcome)
    assert sends == [] and isinstance(deferred, EmailDeferred)
    assert deferred.until == NOW + PAUSED_RECHECK and "550 sender rejected" in deferred.reason


def test_a_merge_value_missing_without_fallback_holds_the_step():
    envelope, event = due()
    sends, outcome = planned([(envelope, event)], {event: situation(event, merge_values={})})
    [held] = events_of(outcome)
    assert sends == [] and isinstance(held, EmailHeld) and "customer_name" in held.reason


def test_a_pool_with_no_connected_mailbox_holds_the_step():
    envelope, event = due()
    row = situation(event, mailbox_pool=["a@example.com", "b@example.com"])
    sends, outcome = planned([(envelope, event)], {event: row})
    [held] = events_of(outcome)
    assert sends == [] and "a@example.com, b@example.com" in held.reason


def test_a_new_enrollment_of_a_pool_whose_mailboxes_cannot_send_is_deferred_not_held():
    # its batch came after the one whose refused login marked the pool's mailbox unhealthy
    envelope, event = due()
    row = situation(event, mailbox_pool=["held@example.com", "gone@example.com"])
    refused = connected_mailbox("held@example.com", healthy=False,
                                problem="SMTP: 535 5.7.8 Authentication credentials invalid")
    sends, outcome = planned([(envelope, event)], {event: row}, connected=[refused])
    [deferred] = events_of(outcome)
    assert sends == [] and isinstance(deferred, EmailDeferred), deferred
    assert deferred.until == NOW + UNHEALTHY_WAIT
    assert "held@example.com cannot send: SMTP: 535" in deferred.reason
    assert outcome.assigned == []  # it gets its mailbox when it is tried again

    healthy = connected_mailbox("gone@example.com")  # one that can send takes it
    [send], outcome = planned([(envelope, event)], {event: row}, connected=[refused, healthy])
    assert send.mailbox.address == "gone@example.com" and outcome.appends == []


def test_a_variant_step_assigns_a_letter_once_and_sends_its_text():
    envelope, event = due()
    row = situation(event)
    row.steps[0]["variants"] = [{"weight": 1, "subject": "A {{customer_name}}", "body": "a"},
                                {"weight": 0, "subject": "B", "body": "b"}]
    [send], outcome = planned([(envelope, event)], {event: row})
    [assigned] = events_of(outcome)
    assert isinstance(assigned, VariantAssigned) and assigned.letter == "A"
    assert outcome.letters == [(event.enrollment_id, "A")]
    assert send.email.thread.subject == "A Lee" and send.email.variant == "A"
    row.variant_letter = "A"  # known: not assigned again
    [_], outcome = planned([(envelope, event)], {event: row})
    assert outcome.appends == []


def test_events_of_one_stream_go_in_one_append_in_order():
    envelope, event = due()
    outcome = Outcome()
    outcome.append(envelope, VariantAssigned(enrollment_id=event.enrollment_id,
                                             sequence_id=event.sequence_id, letter="A",
                                             assigned_at=NOW))
    outcome.append(envelope, EmailDeferred(enrollment_id=event.enrollment_id,
                                           step_id=event.step_id, until=NOW + timedelta(hours=1),
                                           reason="later"))
    assert len({a.stream_id for a in outcome.appends}) == len(outcome.appends)
    assert [type(e) for e in events_of(outcome)] == [VariantAssigned, EmailDeferred]
