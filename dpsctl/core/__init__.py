"""The DPS domain: models, attestation, allocation and the provisioning engine (no CLI imports)."""
