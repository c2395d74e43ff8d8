"""Parallel dpsctl processes on one store lose nothing (CI runs dpsctl with xargs -P)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.helpers.cli import dpsctl_process

pytestmark = pytest.mark.slow  # real processes racing, and a real lock wait: 5 to 15 s each

WORKER = textwrap.dedent(
    """
    import sys
    import typer
    from dpsctl.cli.app import app
    from dpsctl.cli.errors import run_guarded

    store, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    command = typer.main.get_command(app)
    for i in range(count):
        code = run_guarded(command, ["--db", store, "enrollment", "add", f"w{worker}-{i:03d}", "--attestation", "symmetricKey", "-o", "json"], "dpsctl")
        if code != 0:
            sys.exit(code)
    """
)


def test_parallel_processes_adding_enrollments_lose_nothing(tmp_path):
    store = tmp_path / "dps.json"
    workers, each = 6, 15
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(store), str(w), str(each)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for w in range(workers)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, errors
    listed = dpsctl_process("--db", str(store), "enrollment", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    ids = {e["registrationId"] for e in json.loads(listed.stdout)}
    assert ids == {f"w{w}-{i:03d}" for w in range(workers) for i in range(each)}
    service = json.loads(dpsctl_process("--db", str(store), "service", "show", "-o", "json").stdout)
    assert service["properties"]["operationsCount"] == workers * each


def test_a_held_lock_gives_a_clear_store_busy_error(tmp_path):
    import fcntl
    import os

    store = tmp_path / "dps.json"
    assert dpsctl_process("--db", str(store), "init").returncode == 0  # create the store
    fd = os.open(str(store) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        env = {**os.environ, "DPSCTL_LOCK_TIMEOUT": "0.3"}
        busy = dpsctl_process("--db", str(store), "enrollment", "add", "x", "--attestation", "symmetricKey", env=env)
        assert busy.returncode == 8, busy.stderr
        assert busy.stderr.startswith("error: ") and "locked" in busy.stderr and "DPSCTL_LOCK_TIMEOUT" in busy.stderr
        # Readers never need the lock: the file is only ever replaced whole.
        assert dpsctl_process("--db", str(store), "enrollment", "list", env=env).returncode == 0
    finally:
        os.close(fd)
