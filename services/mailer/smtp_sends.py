"""The sends of a batch's plan: each email handed to its mailbox's SMTP server, concurrently
over the pools, and what the server said put into the batch's `Outcome` (sent, a bounce, a
retry later, a mailbox that cannot send)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from time import perf_counter

import aiosmtplib

from contracts.events import BounceDetected
from sequences import logs, metrics
from sequences.bounce_reasons import classify, status_code
from sequences.clock import Clock
from sequences.faults import crash_point
from sequences.messaging.consumer import HandBack, delivery_attempt, retry_delay
from sequences.oauth import AccessTokens
from sequences.tracing import TRACEPARENT, TRACESTATE, context_from, current_trace_headers, tracer
from services.mailer.adapters import Mailbox, Mailboxes, describe_failure, is_mailbox_failure
from services.mailer.batch_plan import Outcome, Send, cannot_send, email_sent, failed

log = logging.getLogger(__name__)
_tracer = tracer(__name__)


class SmtpSends:
    def __init__(self, mailboxes: Mailboxes, clock: Clock, retry_limit: int = 5,
                 tokens: AccessTokens | None = None):
        self.mailboxes = mailboxes
        self.clock = clock
        self.retry_limit = retry_limit
        self.tokens = tokens

    async def send_all(self, sends: list[Send], outcome: Outcome) -> None:
        await asyncio.gather(*(self._send(send, outcome) for send in sends))

    async def _send(self, send: Send, outcome: Outcome) -> None:
        """Hand the message to the SMTP server. A 5xx for the recipient is a bounce (hard only
        when the address is at fault: `sequences.bounce_reasons`), a 4xx is retried with
        backoff up to a bound, anything else (connection lost) is retried."""
        event, email, envelope = send.event, send.email, send.envelope
        outcome.senders[event.enrollment_id] = send.mailbox.address
        started = perf_counter()
        # a batch of StepDue mixes workspaces and traces: this send's log lines name its own
        with logs.about(envelope.workspace_id, envelope.traceparent), \
                _tracer.start_as_current_span("smtp.send", context=context_from(
                {TRACEPARENT: envelope.traceparent, TRACESTATE: envelope.tracestate}),
                attributes={"enrollment_id": str(event.enrollment_id),
                            "sequence_id": str(event.sequence_id),
                            "step_index": event.step_index, "smtp.host": send.mailbox.smtp.host}):
            try:
                await self._deliver(send)
            except Exception as error:
                failure = error
                metrics.smtp_duration.record(perf_counter() - started, {
                    "smtp.operation": "send", "error.type": type(error).__name__})
            else:
                metrics.smtp_duration.record(perf_counter() - started,
                                             {"smtp.operation": "send"})
                log.debug("sent %s (enrollment %s, step %d)", email.message_id,
                          event.enrollment_id, event.step_index)
                metrics.emails.add(1, {"outcome": "sent", "mailbox": send.mailbox.address,
                                       "reason": ""})
                metrics.step_due_to_sent.record(max(0.0, (
                    self.clock.now() - envelope.occurred_at).total_seconds()))
                crash_point("mailer.after_smtp")
                outcome.sent.append((event, email))
                outcome.append(envelope, email_sent(event, email), current_trace_headers())
                return
        if is_mailbox_failure(failure):  # the mailbox, not the recipient: hold it, mark it
            self._mailbox_failed(send, describe_failure(failure), outcome)
        elif isinstance(failure, (aiosmtplib.SMTPRecipientsRefused,
                                  aiosmtplib.SMTPResponseException)):
            self._refused(send, *_refusal(failure), outcome)
        else:  # connection lost: the intent stays, the next attempt asks before sending again
            log.error("sending %s failed; will retry: %s", email.message_id, failure)
            outcome.handed_back.append(
                HandBack(envelope.event_id, retry_delay(delivery_attempt(envelope))))

    async def _deliver(self, send: Send) -> None:
        """Over the mailbox's SMTP server. An OAuth2 mailbox logs in with its access token
        (refreshed first when it is near its expiry); a login the server refuses is tried once
        more with a new token (it expired early; a revoked consent makes the refresh fail
        instead, which is a mailbox failure)."""
        mailbox, connected = send.mailbox, send.mailbox.connected
        if connected is None or connected.auth != "oauth2" or self.tokens is None:
            await self.mailboxes.sender(mailbox).send(send.message)
            return
        token = await self.tokens.token(connected)
        try:
            await self.mailboxes.sender(_with_token(mailbox, token)).send(send.message)
        except aiosmtplib.SMTPAuthenticationError:
            token = await self.tokens.token(connected, refused=token)
            await self.mailboxes.sender(_with_token(mailbox, token)).send(send.message)

    def _mailbox_failed(self, send: Send, problem: str, outcome: Outcome) -> None:
        """The mailbox's server refused the login (a wrong or revoked credential, no such AUTH
        mechanism): nothing went out. The email waits, visibly, and so do the mailbox's next
        ones until the mailbox is fixed; a connected mailbox is marked unhealthy."""
        mailbox = send.mailbox
        if mailbox.connected is not None:
            problem = mailbox.connected.redact(problem)
            outcome.unhealthy.append((mailbox.connected.mailbox_id, f"SMTP: {problem}"))
        log.warning("mailbox %s cannot send: %s", mailbox.address, problem)
        outcome.refused.append(send.event)
        outcome.append(send.envelope, cannot_send(send.event, mailbox.address, problem,
                                                  self.clock.now()))

    def _refused(self, send: Send, code: int | None, reason: str, outcome: Outcome) -> None:
        event, envelope, attempt = send.event, send.envelope, delivery_attempt(send.envelope)
        if code is None:
            log.error("SMTP refused %s without a code: %s", send.email.message_id, reason)
            outcome.handed_back.append(HandBack(envelope.event_id, retry_delay(attempt)))
            return
        outcome.refused.append(event)  # nothing went out
        if code >= 500:
            # why it was refused decides who is blamed: only a bad address is a hard bounce;
            # the enrollment service holds a sender-side or content-side refusal itself
            verdict = classify(str(code), reason)
            outcome.append(envelope, BounceDetected(
                enrollment_id=event.enrollment_id, recipient=send.email.recipient,
                kind=verdict.kind, status=status_code(reason) or str(code),
                diagnostic=f"{code} {reason}"[:1000], original_message_id=send.email.message_id,
                detected_by="smtp", detected_at=self.clock.now(),
                bounce_class=verdict.bounce_class, reason=verdict.reason, rule=verdict.rule))
            if verdict.bounce_class == "recipient-temporary":  # counted soft; this step did not go
                outcome.append(envelope, failed(
                    event, f"{verdict.bounce_class} ({verdict.reason}): {reason}", code, attempt))
        elif attempt >= self.retry_limit:
            outcome.append(envelope, failed(event, reason, code, attempt))
        else:  # "try later": the step comes back with a growing delay
            log.info("SMTP said later for %s: %s %s", send.email.message_id, code, reason)
            outcome.handed_back.append(HandBack(envelope.event_id, retry_delay(attempt)))


def _with_token(mailbox: Mailbox, token: str) -> Mailbox:
    return replace(mailbox, smtp=replace(mailbox.smtp, oauth_token=token))


def _refusal(error: Exception) -> tuple[int | None, str]:
    """The SMTP code and text of a refusal (for several recipients, the first one's)."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        error = error.recipients[0]
    return getattr(error, "code", None), getattr(error, "message", str(error))
