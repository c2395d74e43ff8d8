"""Crash safety: dpsctl killed with SIGKILL at random moments never leaves a half-written store.

A warmed-up child process runs the command through dpsctl's real entry point and is killed a seeded random
time after it says it has started (calibrated against a full run, half of the kills aimed at the commit
itself). After every kill the store must open (store API and `dpsctl store info`), pass the backend's own
checks, hold the state before or after each committed unit (an import: none or all of its records; a storm
with chunk size C: exactly the first k*C devices, hubs and history agreeing), and take a new command at
once (the kernel released the lock), with no temporary file left behind.

Set DPSCTL_CRASH_SEED to replay other moments; DPSCTL_CRASH_KILLS to kill more often.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.backends import BACKENDS, store_for
from tests.helpers.cli import Dps, dpsctl_process
from tests.helpers.constants import ID_SCOPE
from tests.helpers.webhook import Webhook
from tests.reliability.support import (
    HUBS,
    Child,
    Outcome,
    assert_store_whole,
    contents,
    drop_pg_store,
    exists,
    frozen_base,
    label,
    make_base,
    operations_of,
    reset_store,
    service_of,
    storm,
    stray_files,
)

SEED = int(os.environ.get("DPSCTL_CRASH_SEED", "20240607"))
KILLS = int(os.environ.get("DPSCTL_CRASH_KILLS", "20"))  # per backend and scenario, the minimum
IMPORT_RECORDS = 10_000  # a 6 MB store: a run of ~0.5 s, the commit ~0.1 s of it (measured); kills land inside
STORM_DEVICES, STORM_CHUNK = 400, 5

pytestmark = pytest.mark.slow  # dozens of real processes killed at real moments, per backend: minutes


@dataclass
class Tally:
    """What the kills hit, for the test's printed summary."""

    kills: int = 0
    finished_first: int = 0  # the delay was longer than the run: not a kill
    states: Counter[str] = field(default_factory=Counter)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path | str:
    # Commands run after a kill must not wait: the dead process's lock has to be gone already.
    monkeypatch.setenv("DPSCTL_LOCK_TIMEOUT", "2")
    folder = tmp_path / "store"
    folder.mkdir()
    return store_for(request, folder, request.param)


def where(outcome: Outcome) -> str:
    """Where in the commits the kill landed (from the child's markers)."""
    begun, done = len(outcome.commits_begun), len(outcome.commits_done)
    if not begun:
        return "before any commit"
    return "inside a commit" if begun > done else "between commits"


def kill_at_random_moments(
    store: Path,
    base: bytes | None,
    commands: list[list[str]],
    delays: Callable[[random.Random, Outcome], float],
    check: Callable[[Outcome], str],
    label: str,
) -> Tally:
    """Time a full run, then kill runs at random moments until KILLS kills have been checked."""
    rng = random.Random(f"{SEED}-{label}")

    def fresh() -> None:
        if base is None and not isinstance(store, Path):
            drop_pg_store(store)
        elif base is None:
            for path in store.parent.iterdir():
                path.unlink()
        else:
            reset_store(store, base)

    for _ in range(2):  # the first run warms the caches up and is slower than the rest: time the second
        fresh()
        child = Child(markers=True)
        child.wait_ready()
        child.go(commands)
        child.wait_started()
        calibration = child.finish()
        assert calibration.returncode == 0 and calibration.results is not None, calibration.stderr[-3000:]
        assert [code for code, _ in calibration.results] == [0] * len(commands), calibration.results
        check(calibration)

    tally = Tally()
    following: Child | None = Child(markers=True)
    try:
        for attempt in range(KILLS * 4):
            if tally.kills >= KILLS:
                break
            fresh()
            assert following
            child, following = following, None
            child.wait_ready()
            delay = max(0.0, delays(rng, calibration))
            child.go(commands)
            child.wait_started()
            time.sleep(delay)  # the experiment itself: SIGKILL lands `delay` s into the real run (no clock to move)
            outcome = child.finish(kill=True)
            following = Child(markers=True)  # warms up while this kill is checked
            moment = f"killed {delay * 1000:.1f} ms in, {where(outcome)}" if outcome.killed else "finished before the kill"
            context = f"{label} attempt {attempt} (seed {SEED}): {moment}"
            if outcome.killed:
                tally.kills += 1
            else:
                assert outcome.returncode == 0, f"{context}: {outcome.stderr[-3000:]}"
                tally.finished_first += 1
                if outcome.duration < calibration.duration:  # runs got faster (less load): aim by this one
                    calibration = outcome
            try:
                state = check(outcome)
            except AssertionError as exc:
                raise AssertionError(f"{context}: {exc}") from exc
            tally.states[f"{state} ({where(outcome)})" if outcome.killed else f"{state} (finished)"] += 1
            after_the_kill(store, context)
    finally:
        if following:
            following.finish(kill=True)
    assert tally.kills >= KILLS, f"{label}: only {tally.kills} of the runs were still going when killed"
    run_ms = calibration.duration * 1000
    commit_ms = sum(done - begun for begun, done in zip(calibration.commits_begun, calibration.commits_done)) * 1000
    print(
        f"\n{label}: a full run {run_ms:.0f} ms ({len(calibration.commits_done)} commits, {commit_ms:.0f} ms in them); "
        f"{tally.kills} kills survived, {tally.finished_first} runs finished first; {dict(tally.states)}"
    )
    return tally


def after_the_kill(store: Path, context: str) -> None:
    """`dpsctl store info` reads the store, and a new write goes through at once and leaves no stray file."""
    dps = Dps(store)
    info = dps("store", "info", "-o", "json")
    if not exists(store):  # killed before the store was made: a reading command says so (exit 3), creating nothing
        assert info.exit_code == 3 and not exists(store), f"{context}: {info}"
        before = {"service": 0, "hubs": 0}
    else:
        assert info.exit_code == 0, f"{context}: {info}"
        before = info.json()["records"]
    assert before["service"] in (0, 1) and before["hubs"] in (0, len(HUBS)), f"{context}: {before}"
    probe = dps("hub", "add", "probe-hub")
    assert probe.exit_code == 0, f"{context}: {probe}"
    leftovers = [name for name in stray_files(store) if not name.endswith((".new", ".new-wal", ".new-shm", ".new-journal"))]
    assert leftovers == [], f"{context}: {leftovers}"


def without(snapshot: dict[str, list[dict[str, Any]]], *kinds: str) -> dict[str, list[dict[str, Any]]]:
    return {kind: docs for kind, docs in snapshot.items() if kind not in kinds}


def test_a_killed_import_writes_all_or_nothing(store: Path, tmp_path: Path) -> None:
    dps = make_base(store)
    dps.ok("enrollment", "add", "existing-1", "--attestation", "symmetricKey")
    base = frozen_base(store)
    base_snapshot = contents(store)
    base_ops = operations_of(base_snapshot)
    imported = {f"imp-{i:06d}" for i in range(IMPORT_RECORDS)}
    document = tmp_path / "import.json"
    document.write_text(json.dumps({"enrollments": [{"registrationId": i, "attestation": {"type": "symmetricKey"}} for i in sorted(imported)]}))

    def check(outcome: Outcome) -> str:
        snapshot = assert_store_whole(store)
        ids = {doc["registrationId"] for doc in snapshot["enrollments"]}
        if ids == {"existing-1"}:
            assert snapshot == base_snapshot, "before the import, yet the store changed"
            assert not outcome.commits_done, "the commit had returned, yet the import is missing"
            return "before"
        assert ids == {"existing-1"} | imported, f"half an import: {len(ids) - 1} of {IMPORT_RECORDS} records"
        assert without(snapshot, "enrollments", "counters") == without(base_snapshot, "enrollments", "counters")
        assert operations_of(snapshot) == base_ops + IMPORT_RECORDS
        assert outcome.commits_begun, "the import is there, yet it never began its commit"
        return "after"

    def delays(rng: random.Random, calibration: Outcome) -> float:
        assert calibration.finished_at
        begin = calibration.commits_begun[0] - calibration.started_at
        end = calibration.commits_done[0] - calibration.started_at
        aim = rng.random()
        if aim < 1 / 3:  # anywhere in the run (mostly reading and checking the document)
            return rng.uniform(0.002, 0.95 * end)
        if aim < 2 / 3:  # inside the commit
            return rng.uniform(begin, end)
        return rng.uniform(end - 0.3 * (end - begin), end)  # the end of it: the rename, the SQL COMMIT

    command = ["--db", str(store), "import", str(document), "-o", "json"]
    kill_at_random_moments(store, base, [command], delays, check, f"import of {IMPORT_RECORDS} records [{label(store)}]")
    # and the real entry point, in its own process, opens the last store too
    assert dpsctl_process("--db", str(store), "store", "info").returncode == 0


def test_a_killed_storm_keeps_exactly_its_committed_chunks(store: Path) -> None:
    make_base(store)
    base = frozen_base(store)
    base_snapshot = contents(store)
    base_ops = operations_of(base_snapshot)
    pattern = "storm-{n:05d}"
    expected = [pattern.format(n=n) for n in range(1, STORM_DEVICES + 1)]

    def check(outcome: Outcome) -> str:
        snapshot = assert_store_whole(store)
        registrations = snapshot["registrations"]
        ids = [r["registrationId"] for r in registrations]
        k = len(ids)
        assert ids == expected[:k], "the registrations are not a prefix of the storm"
        assert k % STORM_CHUNK == 0, f"{k} registrations: a chunk of {STORM_CHUNK} was half written"
        chunks = k // STORM_CHUNK
        begun, done = len(outcome.commits_begun), len(outcome.commits_done)
        assert done <= chunks <= begun, f"{chunks} chunks stored, {done} commits returned, {begun} begun"
        # the hubs' registries and the history agree with the registrations
        assert sorted((d["hub"], d["deviceId"]) for d in snapshot["devices"]) == sorted((r["assignedHub"], r["deviceId"]) for r in registrations)
        history = sorted(snapshot["history"], key=lambda h: h["sequence"])
        assert [h["registrationId"] for h in history] == expected[:k]
        assert operations_of(snapshot) == base_ops + k
        # the service record itself is no longer rewritten by registrations (issue 12)
        assert without(snapshot, "registrations", "devices", "history", "counters") == without(base_snapshot, "registrations", "devices", "history", "counters")
        return "all" if k == STORM_DEVICES else ("none" if k == 0 else "some chunks")

    def delays(rng: random.Random, calibration: Outcome) -> float:
        assert calibration.finished_at
        return rng.uniform(0.002, 0.95 * (calibration.commits_done[-1] - calibration.started_at))

    command = storm(store, pattern, STORM_DEVICES, STORM_CHUNK)
    kill_at_random_moments(store, base, [command], delays, check, f"storm of {STORM_DEVICES} in chunks of {STORM_CHUNK} [{label(store)}]")
    assert dpsctl_process("--db", str(store), "store", "info").returncode == 0


def test_a_first_command_killed_while_creating_the_store(store: Path) -> None:
    """Killed while making a new store: afterwards there is no store, or a whole one; never one that is stuck."""
    commands = [["--db", str(store), "init", "--id-scope", ID_SCOPE], ["--db", str(store), "enrollment", "add", "e1", "--attestation", "symmetricKey"]]

    def check(outcome: Outcome) -> str:
        if not exists(store):
            assert not outcome.commits_done, "a commit returned, yet there is no store"
            return "no store"
        snapshot = assert_store_whole(store)
        return f"{len(snapshot['enrollments'])} enrollments"

    def delays(rng: random.Random, calibration: Outcome) -> float:
        assert calibration.finished_at
        return rng.uniform(0.0, calibration.commits_done[-1] - calibration.started_at)

    kill_at_random_moments(store, None, commands, delays, check, f"store creation [{label(store)}]")


# --------------------------------------------------------------------------- killed while allocations are in flight (issue 12)

CUSTOM_GROUP, CUSTOM_KEY = "custom", "Y3VzdG9tLWdyb3VwLWtleS1jdXN0b20tZ3JvdXAta2V5LWN1c3RvbS1ncm91cA=="
CUSTOM_DEVICES, CUSTOM_CHUNK = 12, 4


class HeldWebhook(Webhook):
    """An allocation webhook in the test process; it can hold the request number `hold_at` (1-based) until released."""

    def __init__(self) -> None:
        super().__init__(path="/allocate", key=None)
        self.count = 0
        self.hold_at: int | None = None
        self.arrived, self.release = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        self.respond = self._hold_or_answer

    def _hold_or_answer(self, request: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            self.count += 1
            held = self.count == self.hold_at
        if held:
            self.arrived.set()
            self.release.wait(60)
        return 200, {"iotHubHostName": request["linkedHubs"][-1]}

    def reset(self, hold_at: int | None) -> None:
        with self.lock:
            self.count, self.hold_at = 0, hold_at
        self.arrived.clear()
        self.release.clear()

    def close(self) -> None:
        self.release.set()
        self.stop()


@pytest.fixture
def held_webhook() -> Any:
    hook = HeldWebhook().start()
    yield hook
    hook.close()


def check_whole_registrations(store: Path, base_snapshot: dict[str, list[dict[str, Any]]], expected: list[str], base_ops: int) -> int:
    """No half registration: registrations, hub devices, history and operations agree, in whole chunks; returns k."""
    snapshot = assert_store_whole(store)
    registrations = snapshot["registrations"]
    ids = [r["registrationId"] for r in registrations]
    k = len(ids)
    assert ids == expected[:k], "the registrations are not a prefix of the storm"
    assert all(r["status"] == "assigned" for r in registrations), registrations
    assert k % CUSTOM_CHUNK == 0, f"{k} registrations: a chunk's allocations were half committed"
    assert sorted((d["hub"], d["deviceId"]) for d in snapshot["devices"]) == sorted((r["assignedHub"], r["deviceId"]) for r in registrations)
    assert sorted(h["registrationId"] for h in snapshot["history"]) == sorted(ids)
    assert operations_of(snapshot) == base_ops + k
    assert without(snapshot, "registrations", "devices", "history", "counters") == without(base_snapshot, "registrations", "devices", "history", "counters")
    return k


def test_a_storm_killed_while_its_allocations_are_in_flight_keeps_whole_chunks(store: Path, held_webhook: HeldWebhook) -> None:
    dps = make_base(store)
    dps.ok("enrollment-group", "add", CUSTOM_GROUP, "--attestation", "symmetricKey", "--primary-key", CUSTOM_KEY, "--webhook-url", held_webhook.url)
    base = frozen_base(store)
    base_snapshot = contents(store)
    base_ops = operations_of(base_snapshot)
    pattern = "alloc-{n:03d}"
    expected = [pattern.format(n=n) for n in range(1, CUSTOM_DEVICES + 1)]
    command = ["--db", str(store), "provision", "--count", str(CUSTOM_DEVICES), "--id-pattern", pattern, "--group", CUSTOM_GROUP, "--chunk-size", str(CUSTOM_CHUNK), "-o", "json"]

    # Deterministic: killed while the allocation of the first device of chunk n+1 is held, n chunks are stored,
    # whole (that chunk's allocations are in flight, and its own write has not begun).
    for chunks in range(CUSTOM_DEVICES // CUSTOM_CHUNK):
        reset_store(store, base)
        held_webhook.reset(hold_at=chunks * CUSTOM_CHUNK + 1)
        child = Child(markers=True)
        child.wait_ready()
        child.go([command])
        child.wait_started()
        assert held_webhook.arrived.wait(60), "the held allocation never arrived"
        outcome = child.finish(kill=True)
        held_webhook.release.set()
        assert outcome.killed
        assert check_whole_registrations(store, base_snapshot, expected, base_ops) == chunks * CUSTOM_CHUNK
        after_the_kill(store, f"killed while allocation {chunks * CUSTOM_CHUNK + 1} was held")

    # And at random moments of a run whose allocations answer at once (many kills land in a settling commit).
    held_webhook.reset(hold_at=None)

    def check(outcome: Outcome) -> str:
        k = check_whole_registrations(store, base_snapshot, expected, base_ops)
        return "all" if k == CUSTOM_DEVICES else ("none" if k == 0 else "some chunks")

    def delays(rng: random.Random, calibration: Outcome) -> float:
        assert calibration.finished_at
        first, last = (calibration.commits_begun[0] - calibration.started_at, calibration.commits_done[-1] - calibration.started_at)
        # Half anywhere in the run (mostly allocations in flight), half among the settling commits.
        return rng.uniform(0.002, 0.95 * last) if rng.random() < 0.5 else rng.uniform(first, last)

    kill_at_random_moments(store, base, [command], delays, check, f"custom-allocated storm of {CUSTOM_DEVICES} in chunks of {CUSTOM_CHUNK} [{label(store)}]")


def test_a_provision_killed_while_its_webhook_is_held_writes_nothing(store: Path, held_webhook: HeldWebhook) -> None:
    dps = make_base(store)
    dps.ok("enrollment-group", "add", CUSTOM_GROUP, "--attestation", "symmetricKey", "--primary-key", CUSTOM_KEY, "--webhook-url", held_webhook.url)
    before = contents(store)
    held_webhook.reset(hold_at=1)
    from dpsctl.core.keys import derive_device_key

    child = Child(markers=True)
    child.wait_ready()
    child.go([["--db", str(store), "provision", "--registration-id", "alloc-1", "--symmetric-key", derive_device_key(CUSTOM_KEY, "alloc-1")]])
    child.wait_started()
    assert held_webhook.arrived.wait(60)
    # While it is held, the store is free: another process writes at once.
    assert dpsctl_process("--db", str(store), "hub", "add", "hub-c", env={**os.environ, "DPSCTL_LOCK_TIMEOUT": "2"}).returncode == 0
    outcome = child.finish(kill=True)
    held_webhook.release.set()
    assert outcome.killed and outcome.commits_begun == []
    after = assert_store_whole(store)
    assert without(after, "hubs") == without(before, "hubs")
