-- People sign in to the web app: a password (Argon2id hash) and their settings on the user;
-- sessions (only the SHA-256 of the cookie is kept, with the session's CSRF token); invites
-- (only the SHA-256 of the link's token); failed sign-ins, counted per address and per client
-- address for the rate limit (shared by every gateway replica).
ALTER TABLE gateway.users
    ADD COLUMN password_hash text,
    ADD COLUMN role          text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    ADD COLUMN language      text CHECK (language IN ('en', 'ko')),
    ADD COLUMN timezone      text NOT NULL DEFAULT 'UTC';
-- the first user of every workspace made so far made it: an admin
UPDATE gateway.users u SET role = 'admin'
WHERE user_id = (SELECT user_id FROM gateway.users f WHERE f.workspace_id = u.workspace_id
                 ORDER BY created_at, user_id LIMIT 1);

CREATE TABLE gateway.sessions (
    session_hash  bytea PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES gateway.users ON DELETE CASCADE,
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX sessions_user ON gateway.sessions (user_id);

CREATE TABLE gateway.invites (
    invite_hash   bytea PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES gateway.workspaces,
    email         text NOT NULL,
    name          text NOT NULL DEFAULT '',
    role          text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    invited_by    uuid NOT NULL REFERENCES gateway.users,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    accepted_at   timestamptz
);
CREATE INDEX invites_workspace ON gateway.invites (workspace_id, created_at);

CREATE TABLE gateway.sign_in_failures (
    scope  text NOT NULL,   -- 'email' or 'client'
    key    text NOT NULL,   -- the lowercased address, or the client's IP address
    at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sign_in_failures_key ON gateway.sign_in_failures (scope, key, at);
