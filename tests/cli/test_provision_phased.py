"""Custom allocation outside the store lock (issue 12): while a device's webhook or allocation command runs, the
store is free for other commands, and what the device gets follows the enrollment as it is when it is committed.

Deterministic: the webhook (or command) itself runs the other commands, in their own processes, before it answers;
with the store lock held across the allocation, they would wait (and, with a short DPSCTL_LOCK_TIMEOUT, fail with
exit 8). No sleeps: held allocations wait on events and barriers.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dpsctl.core.keys import derive_device_key
from tests.cli.provision_helpers import GROUP_KEY, HUB_A, HUB_B, add_group, devices, failed_checks, init, register, registration

OTHER_KEY = "b3RoZXItZ3JvdXAta2V5LW90aGVyLWdyb3VwLWtleS1vdGhlci1ncm91cC1rZXk="
# Another process waiting for the store fails fast (exit 8) instead of passing late.
BUSY_ENV = {**os.environ, "DPSCTL_LOCK_TIMEOUT": "3"}


def cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """dpsctl in its own process, as another terminal (or script) would run it while the allocation is in flight."""
    return subprocess.run([sys.executable, "-m", "dpsctl", "--db", str(store), *args], capture_output=True, text=True, timeout=60, env=BUSY_ENV)


def other_device(store: Path, registration_id: str) -> subprocess.CompletedProcess[str]:
    key = derive_device_key(OTHER_KEY, registration_id)
    return cli(store, "provision", "--registration-id", registration_id, "--symmetric-key", key, "-o", "json")


# --------------------------------------------------------------------------- the store is free while allocating


def test_other_devices_and_commands_run_while_a_webhook_is_in_flight(dps, webhook):
    init(dps, "hub-a", "hub-b")
    add_group(dps, "fleet", "--webhook-url", webhook.url)
    dps.ok("enrollment-group", "add", "others", "--attestation", "symmetricKey", "--primary-key", OTHER_KEY)
    seen: list[subprocess.CompletedProcess[str]] = []

    def respond(request: dict[str, Any]) -> tuple[int, Any]:
        seen.append(other_device(dps.store, "other-1"))
        seen.append(cli(dps.store, "hub", "list", "-o", "json"))
        seen.append(cli(dps.store, "enrollment", "add", "late-1", "--attestation", "symmetricKey"))
        return 200, {"iotHubHostName": request["linkedHubs"][0]}

    webhook.respond = respond
    doc = register(dps, "slow-1")

    assert [run.returncode for run in seen] == [0, 0, 0], [run.stderr for run in seen]
    assert json.loads(seen[0].stdout)["status"] == "assigned"
    assert {h["name"] for h in json.loads(seen[1].stdout)} == {HUB_A, HUB_B}
    assert doc["registrationState"]["assignedHub"] == HUB_A
    assert {r["registrationId"] for r in dps.json("registration", "list")} == {"slow-1", "other-1"}
    # An unrelated enrollment added meanwhile changes nothing the decision relied on: one webhook call.
    assert len(webhook.requests) == 1


def test_the_same_with_an_allocation_command(dps, tmp_path):
    init(dps, "hub-a", "hub-b")
    dps.ok("enrollment-group", "add", "others", "--attestation", "symmetricKey", "--primary-key", OTHER_KEY)
    report = tmp_path / "report.json"
    script = tmp_path / "allocate.py"
    script.write_text(
        f"""
import json, os, subprocess, sys
request = json.load(sys.stdin)
env = {{**os.environ, "DPSCTL_LOCK_TIMEOUT": "3"}}
dpsctl = [sys.executable, "-m", "dpsctl", "--db", {str(dps.store)!r}]
runs = [
    subprocess.run(dpsctl + ["provision", "--registration-id", "other-1", "--symmetric-key", {derive_device_key(OTHER_KEY, "other-1")!r}], capture_output=True, text=True, env=env),
    subprocess.run(dpsctl + ["hub", "list"], capture_output=True, text=True, env=env),
]
with open({str(report)!r}, "w") as out:
    json.dump([[r.returncode, r.stderr] for r in runs], out)
print(json.dumps({{"iotHubHostName": request["linkedHubs"][-1]}}))
"""
    )
    add_group(dps, "fleet", "--allocation-command", f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}")

    doc = register(dps, "slow-1")

    assert json.loads(report.read_text()) == [[0, ""], [0, ""]]
    assert doc["registrationState"]["assignedHub"] == HUB_B
    assert registration(dps, "other-1")["status"] == "assigned"


# --------------------------------------------------------------------------- never the stale decision


def test_enrollment_moved_to_another_hub_while_its_webhook_runs_is_followed(dps, webhook):
    init(dps, "hub-a", "hub-b")
    add_group(dps, "fleet", "--webhook-url", webhook.url)
    updates: list[subprocess.CompletedProcess[str]] = []

    def respond(request: dict[str, Any]) -> tuple[int, Any]:
        if len(webhook.requests) == 1:  # the first call: the group moves to hub-b before the webhook answers hub-a
            updates.append(cli(dps.store, "enrollment-group", "update", "fleet", "--hub", HUB_B))
        return 200, {"iotHubHostName": request["linkedHubs"][0]}

    webhook.respond = respond
    doc = register(dps, "dev-1")

    assert [u.returncode for u in updates] == [0], [u.stderr for u in updates]
    first, second = (call["body"]["linkedHubs"] for call in webhook.requests)
    assert (first, second) == ([HUB_A, HUB_B], [HUB_B])
    assert doc["registrationState"]["assignedHub"] == HUB_B
    assert devices(dps) == [(HUB_B, "dev-1")]
    assert any("enrollment group 'fleet' changed while the device was being allocated" in step["message"] for step in doc["explain"])


def test_enrollment_disabled_while_its_webhook_runs_refuses_the_device(dps, webhook):
    init(dps, "hub-a")
    add_group(dps, "fleet", "--webhook-url", webhook.url)

    def respond(request: dict[str, Any]) -> tuple[int, Any]:
        assert cli(dps.store, "enrollment-group", "update", "fleet", "--disabled").returncode == 0
        return 200, {"iotHubHostName": request["linkedHubs"][0]}

    webhook.respond = respond
    doc = register(dps, "dev-1", code=6)

    assert doc["status"] == "disabled" and len(webhook.requests) == 1
    assert devices(dps) == []
    assert registration(dps, "dev-1")["status"] == "disabled"
    assert "enrollment group 'fleet' is disabled" in failed_checks(doc)[-1]


def test_enrollment_changing_during_every_allocation_is_a_conflict(dps, webhook):
    init(dps, "hub-a", "hub-b")
    dps.ok("enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY, "--webhook-url", webhook.url)
    hubs = iter([HUB_B, HUB_A])

    def respond(request: dict[str, Any]) -> tuple[int, Any]:
        assert cli(dps.store, "enrollment", "update", "dev-1", "--hub", next(hubs)).returncode == 0
        return 200, {"iotHubHostName": request["linkedHubs"][0]}

    webhook.respond = respond
    run = dps("provision", "--registration-id", "dev-1", "--symmetric-key", GROUP_KEY, "-o", "json", "--explain")

    assert run.exit_code == 4, run
    assert run.stderr.startswith("error: individual enrollment 'dev-1' changed while custom allocation ran, twice; nothing was assigned")
    doc = run.json()
    assert doc["status"] == "failed" and doc["registrationState"]["errorCode"] == 409203
    assert len(webhook.requests) == 2
    # Nothing half done: no registration record, no hub device; the attempt is in the history.
    assert dps("registration", "show", "dev-1").exit_code == 3 and devices(dps) == []
    [attempt] = dps.json("registration", "history")
    assert attempt["status"] == "failed" and "changed while custom allocation ran" in attempt["errorMessage"]


def test_dry_run_with_a_webhook_writes_nothing_and_takes_no_write_lock(dps, webhook):
    init(dps, "hub-a")
    add_group(dps, "fleet", "--webhook-url", webhook.url)
    busy: list[int] = []

    def respond(request: dict[str, Any]) -> tuple[int, Any]:
        busy.append(cli(dps.store, "hub", "add", "hub-z").returncode)
        return 200, {"iotHubHostName": request["linkedHubs"][0]}

    webhook.respond = respond
    before = dps.snapshot()
    doc = register(dps, "dev-1", "--dry-run")
    assert doc["status"] == "assigned" and busy == [0]
    after = dps.snapshot()
    assert {k: v for k, v in after.items() if k != "hubs"} == {k: v for k, v in before.items() if k != "hubs"}


# --------------------------------------------------------------------------- batches and storms


def test_storm_runs_custom_allocations_concurrently_and_commits_in_chunks(dps, webhook):
    init(dps, "hub-a", "hub-b")
    # Eight at once or none: with allocations one at a time, the first would wait at the barrier in vain.
    barrier = threading.Barrier(8, timeout=30)

    def respond(request: dict[str, Any]) -> tuple[int, Any]:
        barrier.wait()
        return 200, {"iotHubHostName": request["linkedHubs"][-1]}

    webhook.respond = respond
    add_group(dps, "fleet", "--webhook-url", webhook.url)
    summary = dps.json("provision", "--count", "16", "--group", "fleet", "--id-pattern", "dev-{n:02d}", "--chunk-size", "8")

    assert summary["assigned"] == 16 and summary["devicesPerHub"] == {HUB_B: 16}
    assert len(webhook.requests) == 16 and not barrier.broken
    assert len(devices(dps)) == 16 and len(dps.json("registration", "history")) == 16


def test_batch_mixes_fast_and_custom_policies(dps, webhook, tmp_path):
    init(dps, "hub-a", "hub-b")
    add_group(dps, "fleet", "--webhook-url", webhook.url)
    dps.ok("enrollment-group", "add", "others", "--attestation", "symmetricKey", "--primary-key", OTHER_KEY, "--allocation-policy", "static", "--hub", HUB_A)
    lines = []
    for n in range(6):
        rid = f"dev-{n}"
        lines.append({"registrationId": rid, "symmetricKey": derive_device_key(GROUP_KEY if n % 2 else OTHER_KEY, rid)})
    lines.append({"registrationId": "nobody", "symmetricKey": OTHER_KEY})
    batch = tmp_path / "devices.jsonl"
    batch.write_text("\n".join(json.dumps(line) for line in lines))
    webhook.respond = lambda request: (200, {"iotHubHostName": HUB_B})

    run = dps("provision", "--batch", str(batch), "--chunk-size", "4", "-o", "json")

    assert run.exit_code == 5, run
    summary = run.json()
    assert summary["assigned"] == 6 and summary["byStatus"] == {"assigned": 6, "unauthorized": 1}
    assert summary["devicesPerHub"] == {HUB_A: 3, HUB_B: 3}
    assert sorted(call["body"]["deviceRuntimeContext"]["registrationId"] for call in webhook.requests) == ["dev-1", "dev-3", "dev-5"]


# --------------------------------------------------------------------------- the measurement


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=BUSY_ENV)
    assert run.returncode == 0, run.stderr
    return time.perf_counter() - t0


def _pair(before: list[str], held: list[str], after: list[str]) -> tuple[float, float]:
    """(baseline, held): a command on the twin store just before and just after the same command on the held store."""
    t_before = _timed(before)
    t_held = _timed(held)
    return (t_before + _timed(after)) / 2, t_held


def _commands(store: Path, prefix: str) -> list[list[str]]:
    """20 devices of another group, each `dpsctl provision` in its own process, then `hub list`."""
    base = [sys.executable, "-m", "dpsctl", "--db", str(store)]
    rids = [f"{prefix}-{n:02d}" for n in range(20)]
    return [base + ["provision", "--registration-id", rid, "--symmetric-key", derive_device_key(OTHER_KEY, rid)] for rid in rids] + [base + ["hub", "list"]]


@pytest.mark.slow
@pytest.mark.parametrize("allocator", ["webhook", "command"])
def test_a_held_allocation_slows_no_other_command(dps, webhook, tmp_path, allocator):
    """The issue's proof: while device A's allocation is held, 20 other devices and `hub list` each take under 1.5x
    their time without it, measured in the same test (a held allocation stands for the issue's 5 s sleep)."""
    init(dps, "hub-a", "hub-b")
    dps.ok("enrollment-group", "add", "others", "--attestation", "symmetricKey", "--primary-key", OTHER_KEY)
    started, release = threading.Event(), threading.Event()
    if allocator == "webhook":

        def respond(request: dict[str, Any]) -> tuple[int, Any]:
            started.set()
            release.wait(120)
            return 200, {"iotHubHostName": request["linkedHubs"][0]}

        webhook.respond = respond
        add_group(dps, "fleet", "--webhook-url", webhook.url)
    else:
        # The command tells the test it runs by opening one FIFO, and waits for the test on another.
        began, go = tmp_path / "began", tmp_path / "go"
        os.mkfifo(began)
        os.mkfifo(go)
        script = tmp_path / "allocate.py"
        script.write_text(f"import json, sys\nr = json.load(sys.stdin)\nopen({str(began)!r}, 'w').close()\nopen({str(go)!r}).read()\nprint(json.dumps({{'iotHubHostName': r['linkedHubs'][0]}}))\n")
        add_group(dps, "fleet", "--allocation-command", f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}")
        threading.Thread(target=lambda: (open(began).read(), started.set()), daemon=True).start()

    # The baseline runs on a twin of the store (same records, no allocation in flight), each command just before
    # and just after its held run: the two measurements of a pair see the same load of the machine.
    twin = dps.sibling("twin").store
    assert cli(dps.store, "store", "migrate", "--to", str(twin)).returncode == 0
    key = derive_device_key(GROUP_KEY, "device-a")
    slow = subprocess.Popen(
        [sys.executable, "-m", "dpsctl", "--db", str(dps.store), "provision", "--registration-id", "device-a", "--symmetric-key", key, "--webhook-timeout", "120", "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=BUSY_ENV,
    )
    try:
        assert started.wait(60), "device A's allocation never started"
        baseline, held, again = [], [], 0
        for n, runs in enumerate(zip(_commands(twin, "before"), _commands(dps.store, "held"), _commands(twin, "after"))):
            base_time, held_time = _pair(*runs)
            if held_time >= 1.5 * base_time:
                # One process start-up slowed by the other work of a shared machine is not a stall: a command that
                # waited for the store would wait again. Measure that pair once more (new IDs: the same kind of run).
                again += 1
                base_time, held_time = _pair(*(_commands(store, f"{label}{n}")[n] for store, label in ((twin, "b"), (dps.store, "h"), (twin, "a"))))
            baseline.append(base_time)
            held.append(held_time)
        assert slow.poll() is None, "device A finished while its allocation was held"
    finally:
        if allocator == "webhook":
            release.set()
        elif started.is_set():
            with open(go, "w") as fifo:
                fifo.write("go")
        else:
            slow.kill()
    out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err
    assert json.loads(out)["registrationState"]["assignedHub"] == HUB_A

    ratios = [h / b for h, b in zip(held, baseline)]
    print(
        f"\n{allocator} held [{dps.store.suffix if dps.is_file else 'postgresql'}]: baseline median {statistics.median(baseline) * 1000:.0f} ms, "
        f"held median {statistics.median(held) * 1000:.0f} ms; held/baseline min {min(ratios):.2f} median {statistics.median(ratios):.2f} "
        f"max {max(ratios):.2f}; {again} of {len(ratios)} pairs measured again"
    )
    assert all(r < 1.5 for r in ratios), [f"{h:.3f}/{b:.3f}" for h, b in zip(held, baseline)]
