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
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Dps, dpsctl_process
from tests.reliability.support import (
    BACKENDS,
    HUBS,
    ID_SCOPE,
    Child,
    Outcome,
    assert_store_whole,
    contents,
    frozen_base,
    make_base,
    reset_store,
    service_of,
    storm,
    stray_files,
)

SEED = int(os.environ.get("DPSCTL_CRASH_SEED", "20240607"))
KILLS = int(os.environ.get("DPSCTL_CRASH_KILLS", "20"))  # per backend and scenario, the minimum
IMPORT_RECORDS = 10_000  # a 6 MB store: a run of ~0.5 s, the commit ~0.1 s of it (measured); kills land inside
STORM_DEVICES, STORM_CHUNK = 400, 5


@dataclass
class Tally:
    """What the kills hit, for the test's printed summary."""

    kills: int = 0
    finished_first: int = 0  # the delay was longer than the run: not a kill
    states: Counter[str] = field(default_factory=Counter)


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    # Commands run after a kill must not wait: the dead process's lock has to be gone already.
    monkeypatch.setenv("DPSCTL_LOCK_TIMEOUT", "2")
    return folder / BACKENDS[request.param]


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
        if base is None:
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
            time.sleep(delay)
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
    if not store.exists():  # killed before the store was made: a reading command says so (exit 3), creating nothing
        assert info.exit_code == 3 and not store.exists(), f"{context}: {info}"
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
    base_ops = service_of(base_snapshot)["operations"]
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
        assert without(snapshot, "enrollments", "service") == without(base_snapshot, "enrollments", "service")
        assert service_of(snapshot)["operations"] == base_ops + IMPORT_RECORDS
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
    kill_at_random_moments(store, base, [command], delays, check, f"import of {IMPORT_RECORDS} records [{store.suffix}]")
    # and the real entry point, in its own process, opens the last store too
    assert dpsctl_process("--db", str(store), "store", "info").returncode == 0


def test_a_killed_storm_keeps_exactly_its_committed_chunks(store: Path) -> None:
    make_base(store)
    base = frozen_base(store)
    base_snapshot = contents(store)
    base_ops = service_of(base_snapshot)["operations"]
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
        assert [(h["sequence"], h["registrationId"]) for h in history] == [(i + 1, reg) for i, reg in enumerate(expected[:k])]
        service = service_of(snapshot)
        assert (service["operations"], service["historySequence"]) == (base_ops + k, k)
        assert without(snapshot, "registrations", "devices", "history", "service") == without(base_snapshot, "registrations", "devices", "history", "service")
        return "all" if k == STORM_DEVICES else ("none" if k == 0 else "some chunks")

    def delays(rng: random.Random, calibration: Outcome) -> float:
        assert calibration.finished_at
        return rng.uniform(0.002, 0.95 * (calibration.commits_done[-1] - calibration.started_at))

    command = storm(store, pattern, STORM_DEVICES, STORM_CHUNK)
    kill_at_random_moments(store, base, [command], delays, check, f"storm of {STORM_DEVICES} in chunks of {STORM_CHUNK} [{store.suffix}]")
    assert dpsctl_process("--db", str(store), "store", "info").returncode == 0


def test_a_first_command_killed_while_creating_the_store(store: Path) -> None:
    """Killed while making a new store: afterwards there is no store, or a whole one; never one that is stuck."""
    commands = [["--db", str(store), "init", "--id-scope", ID_SCOPE], ["--db", str(store), "enrollment", "add", "e1", "--attestation", "symmetricKey"]]

    def check(outcome: Outcome) -> str:
        if not store.exists():
            assert not outcome.commits_done, "a commit returned, yet there is no store"
            return "no store"
        snapshot = assert_store_whole(store)
        return f"{len(snapshot['enrollments'])} enrollments"

    def delays(rng: random.Random, calibration: Outcome) -> float:
        assert calibration.finished_at
        return rng.uniform(0.0, calibration.commits_done[-1] - calibration.started_at)

    kill_at_random_moments(store, None, commands, delays, check, f"store creation [{store.suffix}]")
