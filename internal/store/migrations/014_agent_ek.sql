-- The TPM an agent's key must live in: "sha256:HEX" of its endorsement
-- key, "ek-ca" for any TPM whose EK certificate chains to a trusted maker
-- (pinned at first enrollment), or '' for an agent without a TPM.
ALTER TABLE agents ADD COLUMN ek_pin TEXT NOT NULL DEFAULT '';
