"""The installed entry point in real processes: exit codes, stderr, no tracebacks, damaged stores."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from tests.conftest import dpsctl_process


def test_version_and_help(tmp_path):
    from dpsctl import __version__

    version = dpsctl_process("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"dpsctl {__version__}"
    helped = dpsctl_process("--help")
    assert helped.returncode == 0
    for noun in ("service", "hub", "enrollment", "enrollment-group", "registration", "device", "provision", "import", "export"):
        assert noun in helped.stdout


def test_a_user_session_in_processes(tmp_path):
    env = {**os.environ, "DPSCTL_DB": str(tmp_path / "ci.json")}
    assert dpsctl_process("hub", "add", "hub1", env=env).returncode == 0
    added = dpsctl_process("enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--show-keys", "-o", "json", env=env)
    assert added.returncode == 0, added.stderr
    key = json.loads(added.stdout)["attestation"]["symmetricKey"]["primaryKey"]
    assert stat.S_IMODE((tmp_path / "ci.json").stat().st_mode) == 0o600
    provisioned = dpsctl_process("provision", "--registration-id", "dev-1", "--symmetric-key", key, "-o", "json", env=env)
    assert provisioned.returncode == 0, provisioned.stderr
    assert json.loads(provisioned.stdout)["registrationState"]["assignedHub"] == "hub1.azure-devices.net"
    missing = dpsctl_process("enrollment", "show", "nope", env=env)
    assert missing.returncode == 3 and missing.stdout == "" and missing.stderr.startswith("error: ")


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b'{"_default": {}}', b'{"_dpsctl": {"1": {"app": "dpsctl", "schemaVersion": 7}}}'],
    ids=["empty", "not-json", "foreign", "newer"],
)
def test_damaged_store_exit_1_and_untouched(tmp_path, content):
    store = tmp_path / "dps.json"
    store.write_bytes(content)
    run = dpsctl_process("--db", str(store), "enrollment", "add", "x", "--attestation", "symmetricKey")
    assert run.returncode == 1, run
    assert str(store) in run.stderr and "Traceback" not in run.stderr
    assert store.read_bytes() == content


def test_python_dash_m_works():
    run = subprocess.run([sys.executable, "-m", "dpsctl", "--version"], capture_output=True, text=True)
    assert run.returncode == 0
