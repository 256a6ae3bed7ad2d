-- What a replied enrollment's reply wanted (contracts.values.ReplyIntent; NULL: not replied).
ALTER TABLE enrollment.enrollments ADD COLUMN IF NOT EXISTS reply_intent text;
