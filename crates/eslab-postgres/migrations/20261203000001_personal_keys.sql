-- Keys of data subjects, for crypto-shredding of personal data (eslab_core::personal).
-- One row per subject, created with its first personal value. Forgetting
-- deletes the key and records when and by whom; the row stays, so a forgotten
-- subject is never given a new key. No personal data is kept here.
CREATE TABLE personal_keys (
    subject      text        PRIMARY KEY,
    key          bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    forgotten_at timestamptz,
    forgotten_by text,
    CONSTRAINT personal_keys_key_or_forgotten CHECK ((key IS NULL) = (forgotten_at IS NOT NULL))
);
