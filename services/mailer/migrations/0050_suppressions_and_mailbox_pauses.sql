-- The workspaces' suppression lists (from AddressSuppressed / SuppressionRemoved): checked
-- again at send time, so an address suppressed after its enrollment began is never mailed.
CREATE TABLE mailer.suppressions (
    workspace_id uuid NOT NULL,
    value        text NOT NULL,  -- lowercased address, or domain
    PRIMARY KEY (workspace_id, value)
);

-- Sender-side rejections of each sender mailbox (from BounceDetected of class sender-side):
-- the deliverability alert, and the count that pauses the mailbox.
CREATE TABLE mailer.sender_rejections (
    event_id      uuid        PRIMARY KEY,
    address       text        NOT NULL,
    bounce_reason text        NOT NULL,
    detail        text        NOT NULL,
    at            timestamptz NOT NULL
);
CREATE INDEX sender_rejections_by_address ON mailer.sender_rejections (address, at);

-- Each sender mailbox's pause (MailboxPaused / MailboxResumed), written with its event.
CREATE TABLE mailer.mailbox_states (
    address       text        PRIMARY KEY,
    paused        boolean     NOT NULL,
    paused_at     timestamptz,
    reason        text,
    bounce_reason text,
    resumed_at    timestamptz
);
