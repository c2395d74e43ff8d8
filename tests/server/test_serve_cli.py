"""`dpsctl serve` as a process: the banner, one log line per request, a clean stop, and clear refusals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from tests.helpers.cli import dpsctl_process
from tests.helpers.server import Client, start_serve


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_logs_each_request_and_stops_cleanly(tmp_path, signum):
    proc, port, banner, log = start_serve(tmp_path / "dps.json")
    ca = tmp_path / "dpsctl-serve" / "ca.pem"
    assert f"NODE_EXTRA_CA_CERTS={ca}" in banner and "new: trust it once" in banner
    assert "connection-string --port" in banner
    client = Client(port, ca)
    assert client.call("GET", "/enrollments/x").status == 401
    assert client.call("GET", "/nowhere").status == 404
    proc.send_signal(signum)
    proc.communicate(timeout=30)
    err = log.read_text()
    assert proc.returncode == 0, err
    lines = err.strip().splitlines()
    assert re.search(r"^\S+Z 127\.0\.0\.1 GET /enrollments/x 401 [\d.]+ms ", lines[0]), lines
    assert re.search(r" GET /nowhere 404 ", lines[1]), lines
    assert lines[-1].endswith("dpsctl serve stopped after 2 requests"), lines
    assert "Traceback" not in err


def test_the_development_ca_is_made_once(tmp_path):
    from cryptography import x509

    store = tmp_path / "dps.sqlite"
    proc, _, banner, _ = start_serve(store, "--quiet")
    proc.terminate()
    proc.communicate(timeout=30)
    folder = tmp_path / "dpsctl-serve"
    ca_pem = (folder / "ca.pem").read_bytes()
    assert oct((folder / "ca.key.pem").stat().st_mode & 0o777) == "0o600"
    server = x509.load_pem_x509_certificate((folder / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost"} <= set(san.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "::1"} <= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}

    proc, _, banner, _ = start_serve(store)
    proc.terminate()
    proc.communicate(timeout=30)
    assert "new: trust it once" not in banner
    assert (folder / "ca.pem").read_bytes() == ca_pem  # clients keep trusting it


def test_a_taken_port_is_refused_clearly(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = dpsctl_process("--db", str(tmp_path / "dps.json"), "serve", "--port", str(port), timeout=60)
    assert run.returncode == 4, run
    assert run.stderr.startswith(f"error: port {port} on 127.0.0.1 is already in use\nhint: "), run.stderr
    assert not (tmp_path / "dps.json").exists() and not (tmp_path / "dpsctl-serve").exists()  # nothing written


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tls-cert", "x.pem"], "--tls-cert and --tls-key go together"),
        (["--inject", "429"], "is not STATUS:RATE"),
        (["--inject", "404:0.5"], "is not one devices retry on"),
        (["--inject", "429:1.5"], "is not between 0 and 1"),
        (["--tls-cert", "missing.pem", "--tls-key", "missing.key"], "does not exist"),
        (["--host", "256.1.1.1"], "cannot listen on"),
    ],
)
def test_bad_options_exit_2(tmp_path, args, message):
    run = dpsctl_process("--db", str(tmp_path / "dps.json"), "serve", "--port", "0", *args, cwd=tmp_path, timeout=60)
    assert run.returncode == 2, run
    assert message in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_serve_help_loads_no_server_module():
    probe = """
import json, sys
sys.argv = ["dpsctl", "serve", "--help"]
from dpsctl.cli.app import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ})
    modules = set(json.loads(run.stderr.strip().splitlines()[-1]))
    assert "--assigning-delay" in run.stdout
    assert not {m for m in modules if m.startswith("dpsctl.server")}, sorted(m for m in modules if m.startswith("dpsctl"))
    assert not modules & {"cryptography", "ssl", "http.server", "sqlite3", "tinydb"}
