"""What the services say to people (why a step is held, why a send moved, why a CSV row was not
imported), in a form any language can show: a message of the catalogs and the values that fill
it. The services write it into events and answers next to the English text the JSON API has
always shown; the web app translates it when it renders the page (`Texts.say`).

`message` is the English msgid with `%(name)s` placeholders (marked with `N_` where it is
defined, so `make messages` collects it); a value may itself be a `Text` (a reason inside a
reason), translated in turn."""

from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from sequences.i18n import N_


class Text(BaseModel):
    model_config = ConfigDict(frozen=True)

    message: str
    values: dict[str, "str | int | float | Text"] = {}

    def render(self, gettext: Callable[[str], str]) -> str:
        """The text through `gettext` (a language's catalog), its values too; a message
        the catalog does not have (an old event's, a server's reply) stays as written."""
        # plain text (not Markup): the template escapes all of it, values and message alike
        # ("" is not looked up: a catalog's "" is its header)
        message = str(gettext(self.message)) if self.message else ""
        if not self.values:
            return message
        values = {k: v.render(gettext) if isinstance(v, Text) else v
                  for k, v in self.values.items()}
        try:
            return message % values
        except (KeyError, TypeError, ValueError):  # a translation that lost a placeholder
            return self.message % values

    def english(self) -> str:
        return self.render(lambda message: message)


def said(message: str, **values: Any) -> Text:
    return Text(message=message, values=values)


class TextError(ValueError):
    """A refusal that carries its text: a validator raising it is shown translated."""

    def __init__(self, text: Text):
        super().__init__(text.english())
        self.text = text


# the mailer's reason when a merge variable is empty and has no fallback (the timeline and the
# enrollee table tell it in words of their own)
MISSING_MERGE_VALUE = N_("%(variable)s has no value for this contact and no fallback")


def missing_variable(text: Text | None) -> str | None:
    """`{{직함}}` when `text` (or a reason inside it) is MISSING_MERGE_VALUE."""
    if text is None:
        return None
    if text.message == MISSING_MERGE_VALUE:
        return str(text.values.get("variable"))
    return next((found for value in text.values.values() if isinstance(value, Text)
                 and (found := missing_variable(value))), None)


# why an enrollment ended, next to the English `reason` its event has always had (the same words)
STOPPED_BY_HAND = N_("stopped by hand")
CONTACT_DELETED = N_("contact deleted")
CONTACT_OPTED_OUT = N_("opted out")
REPLIED = N_("replied")
COLLEAGUE_REPLIED = N_("%(email)s at the same company replied")
HARD_BOUNCE = N_("%(reason)s: %(words)s")
SOFT_BOUNCES = N_("%(limit)s soft bounces; last: %(words)s")

# the bounce classifier's reasons (sequences/bounce_reasons.py), in words
BOUNCE_REASON_WORDS = {
    "user-unknown": N_("the address does not exist"),
    "host-unknown": N_("the domain does not exist"),
    "moved": N_("the person has moved"),
    "not-accepted": N_("the domain accepts no mail"),
    "mailbox-full": N_("the mailbox is full"),
    "mailbox-suspended": N_("the mailbox is disabled or suspended"),
    "expired-in-queue": N_("delivery was delayed or timed out"),
    "system-full": N_("the receiving server is out of space"),
    "over-quota": N_("the mailbox is receiving too much mail"),
    "sender-auth": N_("the sender failed authentication (SPF, DKIM or DMARC)"),
    "sender-blocked": N_("the sending server is blocked or has a poor reputation"),
    "sender-policy": N_("the receiver's policy refuses this sender"),
    "ptr-required": N_("the sending server has no reverse DNS (PTR) record"),
    "relay-denied": N_("relaying was denied"),
    "rate-limited": N_("too many messages or connections"),
    "tls-required": N_("the receiver requires an encrypted (TLS) connection"),
    "spam-content": N_("rejected as spam"),
    "virus": N_("a virus was found"),
    "message-too-big": N_("the message is too big"),
    "content-rejected": N_("the content or format was rejected"),
    "unclassified": N_("no known reason"),
}


# Pydantic's error types in words of our catalog (for any other type: pydantic's English).
VALIDATION_MESSAGES = {
    "missing": N_("This field is required."),
    "string_too_short": N_("Too short: at least %(min_length)s characters."),
    "string_too_long": N_("Too long: at most %(max_length)s characters."),
    "too_short": N_("Add at least %(min_length)s."),
    "too_long": N_("At most %(max_length)s."),
    "greater_than_equal": N_("Must be %(ge)s or more."),
    "less_than_equal": N_("Must be %(le)s or less."),
    "int_parsing": N_("Enter a whole number."),
    "literal_error": N_("Choose one of: %(expected)s."),
    "enum": N_("Choose one of: %(expected)s."),
    "uuid_parsing": N_("Not a valid id."),
    "datetime_from_date_parsing": N_("Enter a date and time."),
}
NOT_AN_EMAIL = N_("Enter an email address, like name@example.com.")
UNKNOWN_TIMEZONE = N_("Unknown timezone: use an IANA name such as Asia/Seoul.")


def validation_text(detail: dict) -> Text:
    """One error of a pydantic `ValidationError.errors()` as a Text."""
    ctx = detail.get("ctx") or {}
    if isinstance(ctx.get("error"), TextError):
        return ctx["error"].text
    message = VALIDATION_MESSAGES.get(detail["type"])
    if message is not None:
        values = {k: str(v) for k, v in ctx.items()}
        try:
            message % values
        except (KeyError, ValueError):
            pass
        else:
            return Text(message=message, values=values)
    if detail["type"] == "value_error" and "reason" in ctx:  # an email address, refused
        return Text(message=NOT_AN_EMAIL)
    if str(detail["msg"]).startswith("Value error, unknown timezone"):
        return Text(message=UNKNOWN_TIMEZONE)
    return Text(message=str(detail["msg"]).removeprefix("Value error, "))
