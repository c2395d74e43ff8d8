"""The installed entry point in real processes: exit codes, stderr, no tracebacks, damaged stores."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from tests.helpers.cli import dpsctl_process


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


# --------------------------------------------------------------------------- damaged stores, through the CLI, both backends

DAMAGE = ["empty", "truncated", "not-a-store-file", "the-other-backend", "another-programs-file", "newer-schema"]


def _damaged(kind: str, store, tmp_path) -> bytes:  # noqa: ANN001 - a pathlib.Path
    """Bytes of a damaged store of the same backend as `store` (made from a real store of that backend)."""
    import random
    import sqlite3

    from tests.helpers.cli import Dps

    def real(path):  # noqa: ANN001, ANN202
        Dps(path).ok("enrollment", "add", "a", "--attestation", "symmetricKey")
        return path.read_bytes()

    sqlite = store.suffix == ".sqlite"
    good = real(tmp_path / ("good.sqlite" if sqlite else "good.json"))
    if kind == "empty":
        return b""
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "not-a-store-file":
        return random.Random(3).randbytes(4096)
    if kind == "the-other-backend":
        return real(tmp_path / ("other.json" if sqlite else "other.sqlite"))
    if kind == "another-programs-file":
        if not sqlite:
            return b'{"_default": {"1": {"name": "not dpsctl"}}}'
        conn = sqlite3.connect(tmp_path / "photos.sqlite")
        conn.execute("CREATE TABLE photos (id INTEGER)")
        conn.commit()
        conn.close()
        return (tmp_path / "photos.sqlite").read_bytes()
    # newer-schema: a store whose schemaVersion is above what this dpsctl reads
    if not sqlite:
        doc = json.loads(good)
        doc["_dpsctl"]["1"]["schemaVersion"] = 99
        return json.dumps(doc).encode()
    conn = sqlite3.connect(tmp_path / "good.sqlite", isolation_level=None)
    conn.execute("UPDATE meta SET value = '99' WHERE name = 'schemaVersion'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return (tmp_path / "good.sqlite").read_bytes()


@pytest.mark.parametrize("kind", DAMAGE)
def test_every_command_refuses_a_damaged_store_and_leaves_it_byte_for_byte(dps, tmp_path, kind):
    content = _damaged(kind, dps.store, tmp_path)
    dps.store.write_bytes(content)
    doc = tmp_path / "doc.yaml"
    doc.write_text("enrollments:\n  - registrationId: b\n    attestation: {type: symmetricKey}\n")
    key = "Cn4WLBwypDmqeJnK273m7DPBN5AGaGXAEf832r4+UOg="
    commands = [
        ("enrollment", "list"),
        ("enrollment", "add", "x", "--attestation", "symmetricKey"),
        ("hub", "add", "hub-a"),
        ("provision", "--registration-id", "a", "--symmetric-key", key, "-o", "json"),
        ("import", str(doc)),
        ("export",),
        ("service", "show"),
        ("stats",),
        ("store", "info"),
        ("store", "migrate", "--to", str(tmp_path / "copy.json")),
    ]
    before = sorted(p.name for p in dps.store.parent.iterdir())
    for args in commands:
        run = dps(*args)
        assert run.exit_code == 1, (args, run)
        lines = run.stderr.splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), (args, run)
        assert str(dps.store) in lines[0] and "left untouched" in lines[0], (args, run)  # names the file, says it is safe
        assert run.stdout == "" and "Traceback" not in run.stderr, (args, run)
        assert dps.store.read_bytes() == content, args
    # Nothing was created beside it: no -wal, -shm or journal, no migrated copy (a TinyDB lock file may appear).
    # SQLite creates -wal and -shm while a WAL database is open and removes them when the last connection
    # closes; the store does not close its connection when it refuses a file, so collect it first.
    import gc

    gc.collect()
    after = sorted(p.name for p in dps.store.parent.iterdir())
    assert set(after) - set(before) <= {dps.store.name + ".lock"}, after
