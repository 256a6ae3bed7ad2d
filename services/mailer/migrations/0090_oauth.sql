-- Each workspace's own OAuth clients (issue 15): the provider's endpoints and scopes as
-- configuration, the client secret sealed in `secrets` (a Fernet token, like mailbox secrets).
CREATE TABLE mailer.oauth_clients (
    workspace_id   uuid        NOT NULL,
    provider       text        NOT NULL,  -- google | microsoft
    client_id      text        NOT NULL,
    authorize_url  text        NOT NULL,
    token_url      text        NOT NULL,
    scopes         text        NOT NULL,  -- a JSON list
    secrets        text        NOT NULL,  -- {"client_secret": ...}, sealed
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, provider)
);

-- A consent flow under way: the PKCE verifier (sealed) until the provider calls back.
CREATE TABLE mailer.oauth_consents (
    consent_id     uuid PRIMARY KEY,
    workspace_id   uuid        NOT NULL,
    mailbox_id     uuid        NOT NULL REFERENCES mailer.mailboxes ON DELETE CASCADE,
    redirect_uri   text        NOT NULL,
    secrets        text        NOT NULL,  -- {"code_verifier": ...}, sealed
    started_at     timestamptz NOT NULL
);
