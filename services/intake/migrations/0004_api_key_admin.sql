-- Key admin API: a key may expire (the old key of a rotation keeps working for a grace
-- period) and carry a human label. NULL expires_at means the key never expires.
ALTER TABLE api_keys
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN label text CHECK (char_length(label) <= 200);
