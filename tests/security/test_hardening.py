"""Issue 11, the store, CLI and core half: what a hostile neighbour (another user of the machine) and a bad day
(a full disk, a read-only folder, a FIFO, a link) do to dpsctl; secrets kept out of argv; terminal-safe text;
one limit for JSON from outside. The refusals with one-line errors are rows of docs/hostile-inputs.md too."""

from __future__ import annotations

import errno
import json
import os
import pwd
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpsctl.core.keys import derive_device_key
from dpsctl.core.sas import build_sas_token, device_resource_uri
from tests.helpers.cli import Dps
from tests.helpers.waiting import wait_for
from tests.security.hostile_cases import ID_SCOPE, KEY1, KEY2

ROOT = Path(__file__).resolve().parents[2]
INTRUDER = "dpsctl-intruder"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --------------------------------------------------------------------------- a second user of the machine


@pytest.fixture(scope="session")
def intruder() -> tuple[int, int]:
    """Another user of this machine (uid, gid): made with useradd when the tests run as root, as CI does."""
    if os.geteuid() != 0:
        pytest.skip("a second user can only be created by root (CI runs the tests as root)")
    try:
        entry = pwd.getpwnam(INTRUDER)
    except KeyError:
        if shutil.which("useradd") is None:
            pytest.skip("useradd is not installed")
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", INTRUDER], check=True, capture_output=True)
        entry = pwd.getpwnam(INTRUDER)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder every user may write to, without the sticky bit: the shared-group-folder setup of the report."""
    folder = Path(tempfile.mkdtemp(prefix="dpsctl-shared-", dir="/tmp"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def as_intruder(intruder: tuple[int, int], code: str, *args: str) -> None:
    """Run Python `code` as the other user (a real process of theirs, as in the report)."""
    uid, gid = intruder
    # The system's Python: the intruder may not be allowed into the folder of this test run's virtual environment.
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else shutil.which("python3") or sys.executable
    subprocess.run([python, "-c", code, *args], check=True, user=uid, group=gid, extra_groups=[], capture_output=True, timeout=60)


PLANT = "import os, sys\nfor p in sys.argv[1:]:\n    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o666); os.fchmod(fd, 0o666); os.close(fd)"


def test_a_planted_temporary_file_hands_nothing_to_its_owner(intruder, shared_folder, open_umask):
    store = shared_folder / "dps.json"
    dps = Dps(store)
    # The intruder plants what the old code opened (O_CREAT|O_TRUNC, then renamed over the store): our pid's name.
    planted = shared_folder / f".dps.json.{os.getpid()}.tmp"
    as_intruder(intruder, PLANT, str(planted))
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1)
    info = os.stat(store)
    assert (info.st_uid, mode(store)) == (os.geteuid(), 0o600), "the store must stay ours and 0600"
    assert os.stat(planted).st_uid == intruder[0] and planted.read_bytes() == b"", "the planted file was never used"
    assert KEY1 in store.read_text()
    # Whatever is in the folder, every temporary name is new and unpredictable: none is left, none is theirs.
    assert sorted(p.name for p in shared_folder.iterdir()) == sorted([planted.name, "dps.json", "dps.json.lock"])


def test_a_planted_wal_is_refused_before_sqlite_writes_a_key_into_it(intruder, shared_folder, open_umask):
    store = shared_folder / "dps.sqlite"
    dps = Dps(store)
    wal = shared_folder / "dps.sqlite-wal"
    as_intruder(intruder, PLANT, str(wal))
    run = dps("init", "--id-scope", ID_SCOPE)
    assert run.exit_code == 1 and "another user" in run.stderr and str(wal) in run.stderr, run
    assert not store.exists(), "refused before the store was made"
    # Planted later, between two commands of a store that exists: refused as well, and nothing written into it.
    wal.unlink()
    dps.ok("init", "--id-scope", ID_SCOPE)
    as_intruder(intruder, PLANT, str(wal), str(shared_folder / "dps.sqlite-shm"))
    run = dps("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1)
    assert run.exit_code == 1 and "belongs to another user" in run.stderr, run
    assert wal.read_bytes() == b""
    # Once the user removes them (as the hint says), the store works and its side files are ours and 0600.
    wal.unlink()
    (shared_folder / "dps.sqlite-shm").unlink()
    reader = sqlite3.connect(store)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM records").fetchone()
    try:
        dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1)
        for side in ("-wal", "-shm"):
            part = shared_folder / f"dps.sqlite{side}"
            assert (os.stat(part).st_uid, mode(part)) == (os.geteuid(), 0o600)
    finally:
        reader.close()


def test_our_own_side_file_with_a_wide_mode_is_narrowed(tmp_path, open_umask):
    from dpsctl.store.files import secure_side_files

    store = tmp_path / "dps.sqlite"
    store.write_bytes(b"x")
    wal = tmp_path / "dps.sqlite-wal"
    wal.write_bytes(b"")
    wal.chmod(0o644)
    created = secure_side_files(store, store, os.geteuid())
    assert mode(wal) == 0o600
    assert created == [tmp_path / "dps.sqlite-shm"] and mode(tmp_path / "dps.sqlite-shm") == 0o600


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder; as root the same error is made by the next test")
def test_the_store_cannot_be_created_in_a_folder_we_may_not_write(tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o555)
    try:
        for name in ("dps.json", "dps.sqlite"):
            run = Dps(folder / name)("hub", "add", "hub-a")
            lines = run.stderr.splitlines()
            assert run.exit_code == 1 and len(lines) == 2 and "permission denied" in lines[0] and str(folder) in lines[0], run
            assert lines[1].startswith("hint: ") and "bug" not in run.stderr
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only"), (errno.ENAMETOOLONG, "too long")])
def test_a_temporary_file_that_cannot_be_created_is_one_line_with_the_path_and_a_hint(tmp_path, monkeypatch, code, words):
    dps = Dps(tmp_path / "dps.json")
    dps.ok("init", "--id-scope", ID_SCOPE)
    import dpsctl.core.safefiles as safefiles

    real_open = os.open

    def refusing(path, flags, *args):  # noqa: ANN001, ANN202 - what the kernel says in a read-only or foreign folder
        if str(path).endswith(".tmp"):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(safefiles.os, "open", refusing)
    run = dps("hub", "add", "hub-a")
    monkeypatch.undo()
    lines = run.stderr.splitlines()
    assert run.exit_code == 1 and len(lines) == 2 and words in lines[0] and str(tmp_path) in lines[0] and "bug" not in run.stderr, run


# --------------------------------------------------------------------------- links, FIFOs, read-only stores


def test_a_symlinked_store_is_written_and_locked_at_its_target(dps, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    target = real / dps.store.name
    Dps(target).ok("init", "--id-scope", ID_SCOPE)
    dps.store.symlink_to(target)
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1)
    assert dps.store.is_symlink() and os.readlink(dps.store) == str(target), "the link stays a link"
    assert [doc["registrationId"] for doc in Dps(target).snapshot()["enrollments"]] == ["dev-01"], "the target has the write"
    if dps.store.suffix == ".json":
        assert (real / "dps.json.lock").exists() and not (tmp_path / "dps.json.lock").exists(), "locked at the target"
    # Two commands, one through the link and one through the target, exclude each other (same lock, same file).
    dps.ok("enrollment", "add", "dev-02", "--attestation", "symmetricKey")
    Dps(target).ok("enrollment", "add", "dev-03", "--attestation", "symmetricKey")
    assert len(dps.snapshot()["enrollments"]) == 3


def test_a_store_with_two_hard_links_is_refused_and_left_alone(dps, tmp_path):
    dps.ok("init", "--id-scope", ID_SCOPE)
    other = tmp_path / ("other" + dps.store.suffix)
    os.link(dps.store, other)
    before = dps.store.read_bytes()
    for db in (dps.store, other):
        for args in (("hub", "add", "hub-a"), ("hub", "list")):
            run = Dps(db)(*args)
            assert run.exit_code == 1 and "has 2 hard links" in run.stderr and "hint: keep one name" in run.stderr, run
    assert dps.store.read_bytes() == before
    other.unlink()
    dps.ok("hub", "add", "hub-a")


def test_a_fifo_store_batch_or_tpm_file_answers_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for db in ("fifo.json", "fifo.sqlite"):
        os.mkfifo(tmp_path / db)
    commands = [
        ("--db", str(tmp_path / "fifo.json"), "enrollment", "list"),
        ("--db", str(tmp_path / "fifo.json"), "hub", "add", "hub-a"),
        ("--db", str(tmp_path / "fifo.sqlite"), "enrollment", "list"),
        ("--db", str(tmp_path / "fifo.sqlite"), "hub", "add", "hub-a"),
        ("--db", str(tmp_path / "s.json"), "provision", "--batch", str(fifo)),
        ("tpm", "show", str(fifo)),
        ("--db", str(tmp_path / "s.json"), "provision", "--registration-id", "dev", "--symmetric-key", f"@{fifo}"),
    ]
    for args in commands:
        # A command that opened the FIFO would block on it for good: the timeout, not a wall-clock assert, catches that.
        run = subprocess.run([sys.executable, "-m", "dpsctl", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert run.returncode in (1, 2) and "FIFO (named pipe), not a regular file" in run.stderr, (args, run)


def test_a_store_linked_to_dev_zero_is_refused_without_reading(dps, tmp_path):
    dps.store.symlink_to("/dev/zero")
    for args in (("enrollment", "list"), ("export",), ("hub", "add", "hub-a")):
        run = dps(*args)
        assert run.exit_code == 1 and "character device, not a regular file" in run.stderr, run


def test_a_read_only_store_is_read_but_never_replaced(dps):
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1)
    dps.store.chmod(0o400)
    before = dps.store.read_bytes()
    run = dps("enrollment", "add", "dev-02", "--attestation", "symmetricKey")
    assert run.exit_code == 1 and "read-only (mode 0400)" in run.stderr and "chmod u+w" in run.stderr, run
    assert dps.store.read_bytes() == before and mode(dps.store) == 0o400
    assert [d["registrationId"] for d in dps.json("enrollment", "list")] == ["dev-01"]


def test_lock_files_are_never_followed(tmp_path):
    dps = Dps(tmp_path / "dps.json")
    dps.ok("init", "--id-scope", ID_SCOPE)
    lock = tmp_path / "dps.json.lock"
    lock.unlink()
    victim = tmp_path / "victim"
    lock.symlink_to(victim)  # dangling: following it would create the victim
    run = dps("hub", "add", "hub-a")
    assert run.exit_code == 1 and "is a symbolic link; dpsctl never follows one" in run.stderr, run
    assert not victim.exists()
    victim.write_text("precious\n")  # and an existing target is neither opened for writing nor locked
    run = dps("hub", "add", "hub-a")
    assert run.exit_code == 1 and victim.read_text() == "precious\n"


def test_tpm_create_force_replaces_a_planted_link_instead_of_writing_through_it(dps, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    planted = tmp_path / "device.tpm"
    planted.symlink_to(victim)
    dps.ok("tpm", "create", str(planted), "--force")
    assert victim.read_text() == "precious\n"
    assert not planted.is_symlink() and mode(planted) == 0o600 and "endorsementPrivateKey" in planted.read_text()
    # and without --force a link at the path is an existing file, never followed
    link = tmp_path / "again.tpm"
    link.symlink_to(tmp_path / "nowhere.tpm")
    assert dps("tpm", "create", str(link)).exit_code == 4 and not (tmp_path / "nowhere.tpm").exists()


# --------------------------------------------------------------------------- operating-system failures


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"), (errno.EDQUOT, "quota"), (errno.EIO, "input/output")])
def test_a_failing_write_is_one_line_with_the_path_and_a_hint(tmp_path, monkeypatch, code, words):
    dps = Dps(tmp_path / "dps.json")
    dps.ok("init", "--id-scope", ID_SCOPE)
    before = dps.snapshot()
    import dpsctl.core.safefiles as safefiles

    real_write = os.write

    def failing(fd: int, data: bytes) -> int:
        if len(data) > 100:  # the store's content, not a small marker
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(safefiles.os, "write", failing)
    run = dps("enrollment", "add", "dev-01", "--attestation", "symmetricKey")
    monkeypatch.undo()
    lines = run.stderr.splitlines()
    assert run.exit_code == 1 and len(lines) == 2, run
    assert words in lines[0] and str(dps.store) in lines[0] and lines[1].startswith("hint: ") and "bug" not in run.stderr, run
    assert dps.snapshot() == before
    assert [p.name for p in dps.store.parent.iterdir() if p.name.endswith(".tmp")] == [], "no temporary file is left"


def test_a_full_sqlite_database_is_one_line_with_the_path_and_a_hint(tmp_path, monkeypatch):
    from dpsctl.store.sqlite_store import SqliteStore

    dps = Dps(tmp_path / "dps.sqlite")
    dps.ok("init", "--id-scope", ID_SCOPE)
    before = dps.snapshot()
    real_connect = SqliteStore._connect

    def full(self, writable, target):  # noqa: ANN001, ANN202 - SQLite's own SQLITE_FULL: no page may be added
        conn = real_connect(self, writable, target)
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(SqliteStore, "_connect", full)
    big = json.dumps({"tags": {"blob": "x" * 30000}})
    run = dps("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--initial-twin", big)
    monkeypatch.undo()
    lines = run.stderr.splitlines()
    assert run.exit_code == 1 and len(lines) == 2 and "full" in lines[0] and str(dps.store) in lines[0] and "bug" not in run.stderr, run
    assert dps.snapshot() == before


def test_os_errors_outside_the_store_are_not_called_bugs(dps, tmp_path):
    # --out into a file where a folder should be: the certificate writer's own path, one line, a hint, exit 2.
    (tmp_path / "plain-file").write_text("")
    run = dps("cert", "create-root", "root", "--out", str(tmp_path / "plain-file"))
    assert run.exit_code in (1, 2) and len(run.stderr.splitlines()) <= 2 and "bug" not in run.stderr, run
    # A name too long for the file system.
    run = dps("tpm", "create", str(tmp_path / ("t" * 300 + ".tpm")))
    assert run.exit_code == 2 and "file name is too long" in run.stderr and "bug" not in run.stderr, run


# --------------------------------------------------------------------------- secrets stay out of argv


def test_every_secret_option_takes_a_file_stdin_and_where_useful_a_variable(dps, tmp_path):
    key_file = tmp_path / "dev.key"
    key_file.write_text(KEY1 + "\n")
    group_file = tmp_path / "group.key"
    group_file.write_text(KEY2 + "\n")
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", f"@{key_file}", "--secondary-key", "-", input=KEY2 + "\n")
    stdin_json = lambda *args, text: dps.ok(*args, "-o", "json", input=text).json()  # noqa: E731
    keys = dps.json("enrollment", "show", "dev-01", "--show-keys")["attestation"]["symmetricKey"]
    assert keys == {"primaryKey": KEY1, "secondaryKey": KEY2}
    dps.ok("enrollment-group", "add", "grp", "--attestation", "symmetricKey", "--primary-key", f"@{group_file}")
    assert dps.json("provision", "--registration-id", "dev-01", "--symmetric-key", f"@{key_file}")["status"] == "assigned"
    assert stdin_json("provision", "--registration-id", "dev-01", "--symmetric-key", "-", text=KEY2)["status"] == "assigned"
    token = dps.ok("keys", "sas", "--registration-id", "dev-01", "--key", f"@{key_file}").stdout.strip()
    (tmp_path / "token.txt").write_text(token + "\n")
    assert dps.json("provision", "--sas-token", f"@{tmp_path / 'token.txt'}")["status"] == "assigned"
    derived = dps.ok("keys", "derive", "--group-key", f"@{group_file}", "--registration-id", "grp-7").stdout.strip()
    assert derived == derive_device_key(KEY2, "grp-7")
    assert stdin_json("keys", "check", "--registration-id", "grp-7", "--key", "-", text=derived)["accepted"] is True
    cs = f"HostName=hub-b.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY1}"
    dps.ok("hub", "add", "hub-b", "--connection-string", "-", input=cs)
    assert dps.json("hub", "show", "hub-b", "--show-keys")["connectionString"] == cs
    # Two options cannot both read stdin.
    run = dps("enrollment", "add", "dev-02", "--attestation", "symmetricKey", "--primary-key", "-", "--secondary-key", "-", input=KEY1)
    assert run.exit_code == 2 and "both read stdin" in run.stderr, run


def test_secret_variables(dps, monkeypatch):
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1)
    monkeypatch.setenv("DPSCTL_SYMMETRIC_KEY", KEY1)
    assert dps.json("provision", "--registration-id", "dev-01")["status"] == "assigned"
    token = dps.ok("keys", "sas", "--registration-id", "dev-01").stdout.strip()
    monkeypatch.delenv("DPSCTL_SYMMETRIC_KEY")
    monkeypatch.setenv("DPSCTL_SAS_TOKEN", token)
    assert dps.json("provision")["status"] == "assigned"
    monkeypatch.delenv("DPSCTL_SAS_TOKEN")
    monkeypatch.setenv("DPSCTL_GROUP_KEY", KEY2)
    assert dps.ok("keys", "derive", "--registration-id", "grp-7").stdout.strip() == derive_device_key(KEY2, "grp-7")


def _has_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (its /proc fd links)."""
    folder = Path(f"/proc/{pid}/fd")
    try:
        return any(Path(os.readlink(fd)) == path for fd in folder.iterdir())
    except OSError:  # the process or one of its descriptors went away meanwhile
        return False


def test_ps_shows_no_key_while_a_command_waits_for_the_lock(tmp_path):
    """/proc/PID/cmdline (what `ps` shows every user) of a command blocked on the store lock holds no key."""
    from dpsctl.store.locking import FileLock

    store = tmp_path / "dps.json"
    Dps(store).ok("init", "--id-scope", ID_SCOPE)
    key_file = tmp_path / "dev.key"
    key_file.write_text(KEY1)
    lock = FileLock(store, timeout=5)
    lock.acquire()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "dpsctl", "--db", str(store), "enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", f"@{key_file}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "DPSCTL_LOCK_TIMEOUT": "60"},
        )
        try:
            # The command is another process: poll until it holds the lock file open, i.e. waits for the lock.
            assert wait_for(lambda: _has_open(process.pid, lock.path), 30), "the command never reached the store lock"
            cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
            assert process.poll() is None, "the command should still be waiting for the lock"
            assert b"enrollment" in cmdline and KEY1.encode() not in cmdline
        finally:
            lock.release()
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    assert KEY1 in store.read_text()


def _documented_commands() -> list[str]:
    """The tutorial (run as written by tests/test_docs.py) and the how-to's short version: the documented workflows."""
    from tests.helpers.docs import parse

    commands = []
    for name in ("tutorial.md", "howto-symmetric-key-group.md"):
        for block in parse((ROOT / "docs" / name).read_text(encoding="utf-8")):
            if block.lang == "file":
                continue  # a file the doc writes (`file=NAME`), not commands
            commands += [command.text for command in block.commands]
    return commands


@pytest.mark.skipif(shutil.which("bash") is None, reason="the documented workflows need bash")
def test_no_documented_workflow_puts_a_key_in_argv(tmp_path):
    """Every dpsctl process of the tutorial and the how-to logs its argv (what `ps` shows); none holds a key or a token."""
    log = tmp_path / "argv.log"
    script = ["set -o pipefail", f'dpsctl() {{ printf "%s\\0" "$@" >> {log}; printf "\\n" >> {log}; "{sys.executable}" -m dpsctl "$@"; }}', "export -f dpsctl"]
    script += ["{ " + command + "\n} >/dev/null 2>&1 || true" for command in _documented_commands()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPSCTL_")}
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, timeout=600, check=True)
    argvs = log.read_text().split("\n")
    assert len(argvs) > 30
    # Every secret the workflows made or used: the stores' keys, the key files, the token file.
    secrets: set[str] = set()
    for store in tmp_path.glob("dps.*"):
        if store.suffix not in (".json", ".sqlite"):
            continue
        snapshot = Dps(store).snapshot()
        for kind in ("enrollments", "groups"):
            for doc in snapshot.get(kind, []):
                secrets.update(v for k, v in (doc["attestation"].get("symmetricKey") or {}).items() if v)
        for hub in snapshot.get("hubs", []):
            secrets.add(hub["connectionString"].rsplit("=", 1)[-1])
    for path in list(tmp_path.glob("*.key")) + list(tmp_path.glob("token.txt")):
        secrets.add(path.read_text().strip())
    secrets = {secret for secret in secrets if len(secret) >= 16}  # keys and tokens, not an empty file
    assert len(secrets) >= 5, secrets
    for argv in argvs:
        for secret in secrets:
            assert secret not in argv, f"a secret is in the argv of: dpsctl {argv.replace(chr(0), ' ')}"


def test_the_demo_shows_and_runs_no_key_in_argv(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dpsctl", "demo", "--dir", "creds"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    keys = {p.read_text().strip() for p in (tmp_path / "creds").glob("sensor-*.key")}
    assert len(keys) == 3 and all(mode(p) == 0o600 for p in (tmp_path / "creds").glob("sensor-*.key"))
    shown = [line for line in run.stderr.splitlines() if line.lstrip().startswith(("$ dpsctl", "dpsctl "))]
    assert shown and not any(key in line for line in shown for key in keys)
    assert "--symmetric-key @" in run.stderr


# --------------------------------------------------------------------------- terminal-safe text


def test_safe_text_escapes_controls_and_bidi_and_nothing_else():
    from dpsctl.cli.safetext import safe_json, safe_text

    assert safe_text("plain ü 日本 ok") == "plain ü 日本 ok"
    assert safe_text("a\x1b[2Jb\x07c\x9bd\u202ee\u2066f\x00\x7f\n\t") == "a\\x1b[2Jb\\x07c\\x9bd\\u202ee\\u2066f\\x00\\x7f\\n\\t"
    text = json.dumps({"x": "\u202e\x85"}, ensure_ascii=False)
    assert json.loads(safe_json(text)) == {"x": "\u202e\x85"} and "\u202e" not in safe_json(text)


RAW = ("\x1b", "\x07", "\u202e", "\x9b")


def test_untrusted_text_in_every_output_reaches_the_terminal_escaped(dps, tmp_path):
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-a")
    hostile = "\x1b]0;pwned\x07\x1b[2J\u202eexe.txt\x9b31m"
    # An allocator whose answer carries the hostile text in the payload (kept in the registration record).
    allocator = tmp_path / "allocator.py"
    allocator.write_text("import json\nprint(json.dumps({'iotHubHostName': 'hub-a.azure-devices.net', 'payload': {'note': %r}}))\n" % hostile)
    twin = json.dumps({"tags": {"note": hostile}})
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1, "--initial-twin", twin,
           "--allocation-command", f"{sys.executable} {allocator}")
    dps.ok("provision", "--registration-id", "dev-01", "--symmetric-key", KEY1)
    dps.ok("device", "update-twin", "dev-01", "--desired", json.dumps({"note": hostile}))
    shown = [
        dps.ok("enrollment", "show", "dev-01"),
        dps.ok("enrollment", "list"),
        dps.ok("registration", "show", "dev-01"),
        dps.ok("registration", "list"),
        dps.ok("device", "show", "dev-01"),
        dps.ok("device", "list"),
        dps.ok("registration", "show", "dev-01", "-o", "json"),
        dps.ok("registration", "show", "dev-01", "-o", "yaml"),
        dps.ok("device", "show", "dev-01", "-o", "yaml"),
        dps.ok("export", "-o", "json"),
        dps.ok("export", "-o", "yaml"),
        dps.ok("provision", "--registration-id", "dev-01", "--symmetric-key", KEY1, "--explain"),
        dps("enrollment", "show", hostile),
        dps("provision", "--registration-id", "dev-01", "--symmetric-key", KEY1, "--payload", "{" + hostile),
    ]
    for run in shown:
        for ch in RAW:
            assert ch not in run.stdout and ch not in run.stderr, (ch, run)
    assert "\\x1b]0;pwned" in shown[2].stdout or "\\u001b]0;pwned" in shown[2].stdout, shown[2].stdout
    # The data itself is intact: JSON and YAML hold exactly what was sent.
    import yaml

    assert dps.json("registration", "show", "dev-01")["payload"]["note"] == hostile
    assert yaml.safe_load(dps.ok("registration", "show", "dev-01", "-o", "yaml").stdout)["payload"]["note"] == hostile
    assert dps.json("device", "show", "dev-01")["tags"]["note"] == hostile


# --------------------------------------------------------------------------- one limit for JSON from outside


def _deep(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def test_400_levels_are_refused_at_every_entrance(dps, tmp_path):
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1)
    deep = _deep(400)
    (tmp_path / "deep.json").write_text(json.dumps(deep))
    (tmp_path / "doc.json").write_text(json.dumps({"enrollments": [{"registrationId": "x", "attestation": {"type": "symmetricKey"}, "optionalDeviceInformation": deep}]}))
    (tmp_path / "doc.yaml").write_text("enrollments:\n  - registrationId: x\n    attestation: {type: symmetricKey}\n    optionalDeviceInformation: " + "[" * 400 + "]" * 400 + "\n")
    (tmp_path / "batch.jsonl").write_text(json.dumps({"registrationId": "dev-01", "symmetricKey": KEY1, "payload": json.dumps(deep)}) + "\n")
    before = dps.snapshot()
    for args in (
        ("import", str(tmp_path / "doc.json")),
        ("import", str(tmp_path / "doc.yaml")),
        ("enrollment", "add", "t1", "--attestation", "symmetricKey", "--initial-twin", f"@{tmp_path / 'deep.json'}"),
        ("device", "update-twin", "dev-01", "--desired", f"@{tmp_path / 'deep.json'}"),
        ("provision", "--registration-id", "dev-01", "--symmetric-key", KEY1, "--payload", f"@{tmp_path / 'deep.json'}"),
    ):
        run = dps(*args)
        assert run.exit_code in (2, 3) and "deep" in run.stderr and "bug" not in run.stderr, (args, run)
    assert dps.snapshot() == before
    run = dps("provision", "--batch", str(tmp_path / "batch.jsonl"), "-o", "json")
    assert run.exit_code == 2 and "bug" not in run.stderr


def test_the_service_api_body_uses_the_one_parser_and_its_limit():
    from dpsctl.server.errors import Refusal
    from dpsctl.server.http_types import HttpRequest
    from dpsctl.server.service_api import _json_body

    def body(data: bytes) -> HttpRequest:
        return HttpRequest("PUT", "/enrollments/x", {}, data)

    with pytest.raises(Refusal) as refused:
        _json_body(body(json.dumps({"registrationId": "x", "optionalDeviceInformation": _deep(400)}).encode()))
    assert "40 levels" in refused.value.message
    with pytest.raises(Refusal):
        _json_body(body(b"\xff\xfe{"))
    assert _json_body(body(b'{"registrationId": "x"}')) == {"registrationId": "x"}


def test_export_and_show_never_crash_on_what_an_old_store_holds(dps):
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1)
    dps.ok("provision", "--registration-id", "dev-01", "--symmetric-key", KEY1)
    # What an older dpsctl let in: 400 levels in a registration's payload and an enrollment's device information.
    from dpsctl.store import open_store

    with open_store(dps.store) as store, store.transaction(write=True) as tx:
        registration = tx.get("registrations", "dev-01")
        registration["payload"] = _deep(400)
        tx.put("registrations", registration)
        enrollment = tx.get("enrollments", "dev-01")
        enrollment["optionalDeviceInformation"] = _deep(400)
        tx.put("enrollments", enrollment)
    refused = []
    for args in (("export",), ("export", "-o", "yaml"), ("enrollment", "show", "dev-01", "-o", "yaml"), ("registration", "show", "dev-01", "-o", "yaml"),
                 ("registration", "show", "dev-01", "-o", "json"), ("registration", "show", "dev-01"), ("registration", "list")):
        run = dps(*args)
        if run.exit_code == 0:  # printed whole (JSON's writer goes 400 levels deep)...
            assert run.stderr == "" and run.stdout, (args, run)
            if "json" in args:
                json.loads(run.stdout)
            continue
        lines = run.stderr.splitlines()  # ...or refused in one line, never a crash
        assert run.exit_code in (1, 2) and len(lines) <= 2 and "deep" in lines[0] and "bug" not in run.stderr and "Recursion" not in run.stderr, (args, run)
        refused.append(args)
    assert ("export", "-o", "yaml") in refused  # the case of the report: YAML's writer cannot go that deep
    # and the records can still be deleted, which is what the hint says
    dps.ok("registration", "delete", "dev-01")
    dps.ok("enrollment", "delete", "dev-01")
    dps.ok("export")


# --------------------------------------------------------------------------- tokens, redaction, names


def test_a_token_valid_for_more_than_a_year_is_refused_and_one_within_a_year_accepted(dps):
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1)
    now = int(time.time())
    uri = device_resource_uri(ID_SCOPE, "dev-01")
    run = dps("provision", "--sas-token", build_sas_token(uri, KEY1, now + 366 * 86400))
    assert run.exit_code == 5 and "more than 365 days from now" in run.stderr, run
    assert dps.json("provision", "--sas-token", build_sas_token(uri, KEY1, now + 364 * 86400))["status"] == "assigned"
    assert dps("keys", "sas", "--registration-id", "dev-01", "--key", KEY1, "--ttl", str(366 * 86400)).exit_code == 2
    assert dps.ok("keys", "sas", "--registration-id", "dev-01", "--key", KEY1, "--ttl", str(364 * 86400)).stdout.startswith("SharedAccessSignature ")


def test_usage_errors_redact_url_encoded_signatures_and_keys(dps):
    from dpsctl.cli.errors import _redact

    token = build_sas_token(device_resource_uri(ID_SCOPE, "dev-01"), KEY1, 4102444800)
    sig = token.split("sig=")[1].split("&")[0]
    assert "%2B" in sig or "%2F" in sig or "%3D" in sig
    for text in (token, f"'{sig}'", f"SharedAccessKey={KEY1[:10]}", KEY1):
        redacted = _redact(text)
        assert sig not in redacted and KEY1[:10] not in redacted
        for piece in sig.replace("%2B", " ").replace("%2F", " ").replace("%3D", " ").split():
            assert len(piece) < 8 or piece not in redacted, (text, redacted)
    run = dps("keys", "sas", "--registration-id", "dev-01", "--key", KEY1, "--expiry", sig)  # a signature where a number goes
    assert run.exit_code == 2 and sig not in run.stderr, run
    for piece in sig.replace("%2B", " ").replace("%2F", " ").replace("%3D", " ").split():
        assert len(piece) < 8 or piece not in run.stderr, run.stderr


def test_import_refuses_a_hub_with_an_invalid_key_or_a_folded_name(dps, tmp_path):
    for hub in ({"name": "hub-b", "connectionString": "HostName=hub-b.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=nope"},
                {"name": "hub-\u212a"}):
        (tmp_path / "doc.json").write_text(json.dumps({"linkedHubs": [hub]}))
        run = dps("import", str(tmp_path / "doc.json"))
        assert run.exit_code == 2, run
    assert dps.snapshot() == {} or dps.snapshot().get("hubs", []) == []
    assert KEY2  # (both keys of the suite are valid: used elsewhere)
