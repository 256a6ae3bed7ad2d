-- A send about to happen, written and committed (on its own connection) before the SMTP
-- conversation and removed in the transaction that records the send. One left behind means
-- the mailer died in between: the next attempt asks whether the message arrived (if it can)
-- before sending again. `reserved` rows hold a slot of a mailbox with a minimum gap.
CREATE TABLE mailer.send_intents (
    enrollment_id uuid        NOT NULL,
    step_id       uuid        NOT NULL,
    message_id    text        NOT NULL,
    state         text        NOT NULL,  -- reserved | sending
    slot          timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (enrollment_id, step_id)
);

-- Sends per sender mailbox and day, for daily caps and minimum gaps.
CREATE TABLE mailer.mailbox_usage (
    address   text        NOT NULL,
    day       date        NOT NULL,
    sent      integer     NOT NULL,
    last_slot timestamptz NOT NULL,
    PRIMARY KEY (address, day)
);
