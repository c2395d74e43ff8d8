"""The provisioning engine\x27s phases and records, one module per job; `dpsctl.core.provisioning` runs them."""
