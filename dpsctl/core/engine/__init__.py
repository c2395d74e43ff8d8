"""The provisioning engine's jobs, one module each, in the order a registration goes through them.

`request` (the credential and the registration ID, parsed once) -> `plan` (match and attest on a snapshot, choose
the allocation inputs) -> `allocate` (a built-in policy, or the webhook or command) -> `settle` (commit in a short
write, or decide again), which writes through `record` (hub device, typed `Registration`), `history` and `outcome`
(what the device is told). Each module imports only those before it (tests/test_layering.py);
`dpsctl.core.provisioning` runs them.
"""
