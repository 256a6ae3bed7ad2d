-- Clicks come batched from the gateway, each with the gateway's id for it: a batch sent again
-- (its reply lost) records each click once. Clicks of older gateways have no id.
ALTER TABLE mailer.clicks ADD COLUMN click_id uuid;
CREATE UNIQUE INDEX clicks_by_id ON mailer.clicks (click_id) WHERE click_id IS NOT NULL;
