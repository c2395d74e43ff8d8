"""Parallel CI jobs on one store: 8 dpsctl processes writing at once lose nothing and corrupt nothing.

Each worker is one Python process that calls dpsctl's real entry point in-process once per command (so every
command takes the store lock and commits on its own, as a separate `dpsctl` run would); all workers are
released at the same moment. Both file backends: TinyDB (flock + atomic rename) and SQLite (BEGIN IMMEDIATE); and PostgreSQL
(an advisory lock per writing transaction).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.backends import BACKENDS, store_for
from tests.helpers.cli import Dps, dpsctl_process
from tests.reliability.support import (
    BUSY_MESSAGE,
    add_enrollment,
    assert_store_whole,
    label,
    make_base,
    provision_one,
    run_workers,
    operations_of,
    storm,
    stray_files,
)

WORKERS = 8
DEVICES = 50  # per worker: SINGLES single-device `provision` runs, the rest in one storm
SINGLES = 20
ENROLLMENTS = 10  # per worker
CHUNK = 5
GENEROUS = {"DPSCTL_LOCK_TIMEOUT": "120"}
READERS = ("enrollment", "registration", "device")

pytestmark = pytest.mark.slow  # eight real processes at once, per backend: seconds each


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    folder = tmp_path / "store"
    folder.mkdir()
    return store_for(request, folder, request.param)


def device_ids(worker: int) -> tuple[list[str], str, list[str]]:
    """(single-device IDs, storm pattern, storm IDs) of one worker: 50 distinct devices."""
    singles = [f"w{worker}-d{i:02d}" for i in range(SINGLES)]
    pattern = f"w{worker}-s{{n:02d}}"
    storm_ids = [pattern.format(n=n) for n in range(1, DEVICES - SINGLES + 1)]
    return singles, pattern, storm_ids


def assert_provisioned(dps: Dps, expected: set[str]) -> dict[str, object]:
    """Registrations, the hubs' device registries and the history all hold exactly `expected`, each once."""
    registrations = dps.json("registration", "list")
    assert Counter(r["registrationId"] for r in registrations) == Counter(expected)
    assert all(r["status"] == "assigned" for r in registrations)
    devices = dps.json("device", "list")
    assert sorted((d["hub"], d["deviceId"]) for d in devices) == sorted((r["assignedHub"], r["deviceId"]) for r in registrations)
    history = dps.json("registration", "history")
    sequences = [h["sequence"] for h in history]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(expected)  # one history record per attempt, none shared
    assert Counter(h["registrationId"] for h in history) == Counter(expected)
    return {"registrations": len(registrations), "devices": len(devices), "history": len(history)}


def assert_store_info(store: Path, counts: dict[str, int]) -> None:
    """`dpsctl store info` (a separate process, the real entry point) opens the store and agrees on counts."""
    run = dpsctl_process("--db", str(store), "store", "info", "-o", "json")
    assert run.returncode == 0, run.stderr
    records = json.loads(run.stdout)["records"]
    assert {kind: records[kind] for kind in counts} == counts


def test_eight_processes_provisioning_and_enrolling_lose_nothing(store: Path) -> None:
    dps = make_base(store)
    plans, devices, enrollments = [], set(), set()
    for w in range(WORKERS):
        singles, pattern, storm_ids = device_ids(w)
        names = [f"w{w}-e{i:02d}" for i in range(ENROLLMENTS)]
        plan = []
        for i in range(ENROLLMENTS):
            plan.append(add_enrollment(store, names[i]))
            plan += [provision_one(store, reg_id) for reg_id in singles[2 * i : 2 * i + 2]]
            if i == ENROLLMENTS // 2:
                plan.append(storm(store, pattern, len(storm_ids), CHUNK))  # several transactions of 5 devices
        plans.append(plan)
        devices |= {*singles, *storm_ids}
        enrollments |= set(names)
    assert len(devices) == WORKERS * DEVICES and len(enrollments) == WORKERS * ENROLLMENTS

    outcomes = run_workers(plans, GENEROUS)

    failures = [(code, err) for o in outcomes for code, err in o.results or [] if code != 0]
    assert failures == []  # with a generous lock wait, not even a StoreBusy
    snapshot = assert_store_whole(store)
    assert stray_files(store) == []
    counted = assert_provisioned(dps, devices)
    assert {e["registrationId"] for e in dps.json("enrollment", "list")} == enrollments
    operations = 1 + len(enrollments) + len(devices)  # the group, each enrollment, each assigned device
    assert dps.json("service", "show")["properties"]["operationsCount"] == operations
    assert operations_of(snapshot) == dps.json("service", "show")["properties"]["operationsCount"]
    assert_store_info(store, {"registrations": 400, "devices": 400, "history": 400, "enrollments": 80, "groups": 1, "hubs": 2})
    assert counted == {"registrations": 400, "devices": 400, "history": 400}


def test_concurrent_imports_and_provisioning_lose_nothing(store: Path, tmp_path: Path) -> None:
    dps = make_base(store)
    rounds, per_import = 5, 20
    plans, devices, imported = [], set(), set()
    for w in range(WORKERS):
        singles, pattern, storm_ids = device_ids(w)
        docs = []
        for r in range(rounds):
            ids = [f"w{w}-i{r}-{j:02d}" for j in range(per_import)]
            doc = tmp_path / f"import-{w}-{r}.json"
            doc.write_text(json.dumps({"enrollments": [{"registrationId": i, "attestation": {"type": "symmetricKey"}} for i in ids]}))
            docs.append(doc)
            imported |= set(ids)
        plan = []
        for r in range(rounds):
            plan.append(["--db", str(store), "import", str(docs[r]), "-o", "json"])
            plan += [provision_one(store, reg_id) for reg_id in singles[4 * r : 4 * r + 4]]
            if r == 2:
                plan.append(storm(store, pattern, len(storm_ids), CHUNK))
        plan.append(["--db", str(store), "import", str(docs[0]), "-o", "json"])  # again: all unchanged, no write
        assert sum(1 for argv in plan if "--registration-id" in argv) == SINGLES
        plans.append(plan)
        devices |= {*singles, *storm_ids}

    outcomes = run_workers(plans, GENEROUS)

    failures = [(code, err) for o in outcomes for code, err in o.results or [] if code != 0]
    assert failures == []
    snapshot = assert_store_whole(store)
    assert stray_files(store) == []
    assert_provisioned(dps, devices)
    assert {e["registrationId"] for e in dps.json("enrollment", "list")} == imported
    assert dps.json("service", "show")["properties"]["operationsCount"] == 1 + len(imported) + len(devices)
    assert operations_of(snapshot) == dps.json("service", "show")["properties"]["operationsCount"]
    assert_store_info(store, {"registrations": 400, "devices": 400, "enrollments": WORKERS * rounds * per_import})


def test_with_no_lock_wait_the_only_error_is_store_busy(store: Path) -> None:
    """DPSCTL_LOCK_TIMEOUT=0: many commands find the store busy; each fails cleanly (exit 8, the documented
    message, nothing written) or succeeds completely, and the store holds exactly the ones that succeeded."""
    dps = make_base(store)
    plans, attempted = [], []
    for w in range(WORKERS):
        plan = []
        for i in range(5):
            plan.append(add_enrollment(store, f"w{w}-e{i}"))
            plan += [provision_one(store, f"w{w}-d{i}-{j}") for j in range(3)]
            plan.append(["--db", str(store), READERS[(w + i) % len(READERS)], "list", "-o", "json"])  # readers too
        plans.append(plan)
        attempted.append(plan)

    outcomes = run_workers(plans, {"DPSCTL_LOCK_TIMEOUT": "0"})

    busy_text = (
        f"error: store {store} {BUSY_MESSAGE} (waited 0 s)\n"
        "hint: retry, or raise the wait with DPSCTL_LOCK_TIMEOUT=SECONDS\n"
    )
    ok_enrollments, ok_devices, busy, busy_readers = set(), set(), 0, 0
    for plan, outcome in zip(attempted, outcomes):
        for argv, (code, err) in zip(plan, outcome.results or []):
            assert (code, err) == (0, "") or (code, err) == (8, busy_text), (argv, code, err)
            if code == 8:
                busy += 1
                busy_readers += argv[3] == "list"
                continue
            if argv[3] == "list":
                continue
            (ok_devices if argv[2] == "provision" else ok_enrollments).add(argv[4])
    assert_store_whole(store)
    assert stray_files(store) == []
    assert_provisioned(dps, ok_devices)
    assert {e["registrationId"] for e in dps.json("enrollment", "list")} == ok_enrollments
    assert dps.json("service", "show")["properties"]["operationsCount"] == 1 + len(ok_enrollments) + len(ok_devices)
    print(f"[{label(store)}] no-wait run: {busy} of {WORKERS * 25} commands got StoreBusy ({busy_readers} of them readers)")


def test_eight_processes_creating_the_same_new_store(store: Path) -> None:
    """The first command of several parallel jobs creates the store: one of them does, the others use it."""
    plans = [[add_enrollment(store, f"first-{w}-{i}") for i in range(5)] for w in range(WORKERS)]
    outcomes = run_workers(plans, GENEROUS)
    failures = [(code, err) for o in outcomes for code, err in o.results or [] if code != 0]
    assert failures == []
    assert_store_whole(store)
    assert stray_files(store) == []
    listed = Dps(store).json("enrollment", "list")
    assert {e["registrationId"] for e in listed} == {f"first-{w}-{i}" for w in range(WORKERS) for i in range(5)}
