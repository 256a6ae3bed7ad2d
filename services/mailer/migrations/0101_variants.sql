-- A/B variants: each enrollment's letter (kept for every step with variants) and a sequence's
-- chosen winner (new sends use it).
CREATE TABLE mailer.enrollment_variants (
    enrollment_id uuid PRIMARY KEY,
    letter text NOT NULL
);
ALTER TABLE mailer.sequences ADD COLUMN variant_winner text;
