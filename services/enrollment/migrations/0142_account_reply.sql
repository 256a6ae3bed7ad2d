-- What a colleague's reply does to a sequence's enrollments (contracts.values.AccountReply).
ALTER TABLE enrollment.sequences
    ADD COLUMN on_account_reply jsonb NOT NULL DEFAULT '{"action": "stop", "pause_days": 14}';
