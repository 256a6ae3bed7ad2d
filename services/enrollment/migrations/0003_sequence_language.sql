-- The language recipients read (email footer, unsubscribe page): 'ko' or 'en'. Sequences
-- created before it was a setting are English, as their events say by default.
ALTER TABLE enrollment.sequences ADD COLUMN language text NOT NULL DEFAULT 'en';
