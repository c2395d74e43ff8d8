"""`dpsctl serve`: the DPS device and service REST APIs over HTTPS, on the same engine and store as the CLI.

Nothing is imported here: `dpsctl --help` must not pay for the server (tests/test_startup.py).

- `tls`: the local development CA and server certificate, and the per-connection trust store for X.509 devices.
- `api`: the emulator itself, HTTP-free: a request in, a response out (device API, service API, faults).
- `httpd`: the standard library's threading HTTP server wrapped in TLS, one log line per request, clean stop.
"""
