-- Flows registered with "sensitive": true have their documents, snapshots and custom event
-- payloads sealed (AEAD envelopes, see security/envelope.rs) in both tiers.
ALTER TABLE flows ADD COLUMN sensitive INTEGER NOT NULL DEFAULT 0;
