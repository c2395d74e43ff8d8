"""`dpsctl serve`: DPS for the official SDK clients over HTTPS, MQTT and MQTT over WebSockets, on the same
engine and store as the CLI.

Nothing is imported here: `dpsctl --help` must not pay for the server (tests/test_startup.py).

- `device_service`: the device API (register, operation status, status lookup), knowing no transport.
- `service_api`: the service REST API (enrollments, groups, registrations, bulk, queries).
- `http_api`: the HTTP routing table over both; `errors`: refusals and the core-error table.
- `https`, `mqtt`, `websocket`: the front ends (h11, amqtt's packets, wsproto), thin adapters.
- `listener`: the asyncio loop, TLS per connection, deadlines and caps; `runtime`: bind, launch, stop.
- `operations`: operations and TPM challenges kept in the store; `faults`: options, injected faults, quota.
- `tls`: the local development CA and server certificate, and the per-connection trust store for X.509 devices.
"""
