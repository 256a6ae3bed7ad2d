-- The footer of a sequence's emails (and the unsubscribe page its links lead to) is written in
-- the sequence's language: 'ko' or 'en'. Sequences from before it was a setting are English.
ALTER TABLE mailer.sequences ADD COLUMN language text NOT NULL DEFAULT 'en';
