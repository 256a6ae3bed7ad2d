-- The A/B variant of each email sent (EmailSent.variant), so its opens, clicks and bounces
-- count for the variant that went; an enrollment's `variant` is that of its last email.
ALTER TABLE enrollment.analytics_emails ADD COLUMN variant text NOT NULL DEFAULT '';
