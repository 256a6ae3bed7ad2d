-- Standard Webhooks: secrets in the `whsec_<base64>` form (the HMAC key is the decoded bytes),
-- a secret rotation (the previous secret signs too until its grace period ends), and the
-- deprecated `Sequences-*` headers behind a per-webhook setting.

-- A secret from before was the key itself (the string's bytes): the same key in whsec form,
-- so the deprecated signature of a webhook registered before does not change.
UPDATE webhooks.webhooks
   SET secret = 'whsec_' || replace(encode(convert_to(secret, 'UTF8'), 'base64'), E'\n', '');

-- on for webhooks registered before (their receivers verify those headers), off for new ones
ALTER TABLE webhooks.webhooks ADD COLUMN legacy_headers boolean NOT NULL DEFAULT true;
ALTER TABLE webhooks.webhooks ALTER COLUMN legacy_headers SET DEFAULT false;

ALTER TABLE webhooks.webhooks ADD COLUMN previous_secret text;
ALTER TABLE webhooks.webhooks ADD COLUMN previous_secret_expires_at timestamptz;
