-- Who may call the API: workspaces (a customer of the system; every resource belongs to one),
-- their users, and the users' API keys. Only a key's SHA-256 is kept.
CREATE SCHEMA IF NOT EXISTS gateway;

CREATE TABLE gateway.workspaces (
    workspace_id  uuid PRIMARY KEY,
    name          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gateway.users (
    user_id       uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES gateway.workspaces,
    email         text NOT NULL,
    name          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON gateway.users (workspace_id, lower(email));

CREATE TABLE gateway.api_keys (
    key_id        uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES gateway.workspaces,
    user_id       uuid NOT NULL REFERENCES gateway.users,
    name          text NOT NULL,
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_workspace ON gateway.api_keys (workspace_id, created_at, key_id);
