-- Per sequence: whether its emails carry the open pixel and click redirects (both on before
-- it was a setting: opens were tracked; clicks are tracked from now on).
ALTER TABLE mailer.sequences ADD COLUMN track_opens boolean NOT NULL DEFAULT true;
ALTER TABLE mailer.sequences ADD COLUMN track_clicks boolean NOT NULL DEFAULT true;

-- The clicks of each email, for the rule "several links followed within a second"
-- (sequences/machine_rules.py): only the last moments matter, so old rows may be pruned.
CREATE TABLE mailer.clicks (
    enrollment_id uuid NOT NULL,
    step_id uuid NOT NULL,
    link_index integer NOT NULL,
    clicked_at timestamptz NOT NULL
);
CREATE INDEX clicks_by_email ON mailer.clicks (enrollment_id, step_id, clicked_at);
