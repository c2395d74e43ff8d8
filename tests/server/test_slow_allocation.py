"""One slow custom allocation must not stall the fleet (issue 12, over `dpsctl serve`).

Device A's enrollment allocates through a webhook (or a command) that the test holds open. While it is held,
other devices register over HTTPS and MQTT and `dpsctl hub list` runs: each takes about what it takes with no
webhook held, measured in the same test, because the allocation runs with no store lock held.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from dpsctl.core.keys import derive_device_key, generate_key
from tests.helpers.cli import dpsctl_process
from tests.helpers.waiting import wait_for
from tests.helpers.webhook import Webhook
from tests.helpers.constants import HUB_A as HUB



@pytest.fixture
def held_webhook() -> Iterator[tuple[Webhook, threading.Event, threading.Event]]:
    """A webhook that holds device A's request until `release` is set; `arrived` tells it is being held."""
    hook = Webhook()
    arrived, release = threading.Event(), threading.Event()

    def respond(request: dict[str, Any]) -> tuple[int, Any]:
        if request["deviceRuntimeContext"]["registrationId"] == "slow-a":
            arrived.set()
            release.wait(60)
        return 200, {"iotHubHostName": HUB}

    hook.respond = respond
    hook.start()
    yield hook, arrived, release
    release.set()
    hook.stop()


def _fleet(dps) -> str:
    group_key = generate_key(32)
    dps.ok("enrollment-group", "add", "crowd", "--attestation", "symmetricKey", "--primary-key", group_key)
    return group_key


def _round(served, dps, group_key: str, tag: str) -> dict[str, float]:
    """Ten devices over HTTPS, ten over MQTT, and `hub list` in a process: the seconds each phase took."""
    times: dict[str, float] = {}
    started = time.perf_counter()
    for n in range(10):
        rid = f"{tag}-https-{n}"
        reply = served.register(rid, derive_device_key(group_key, rid))
        assert reply.status == 200 and reply.body["status"] == "assigned", reply
    times["https"] = time.perf_counter() - started
    started = time.perf_counter()
    for n in range(10):
        rid = f"{tag}-mqtt-{n}"
        body = served.mqtt_register(rid, derive_device_key(group_key, rid))
        assert body["status"] == "assigned", body
    times["mqtt"] = time.perf_counter() - started
    started = time.perf_counter()
    done = dpsctl_process("--db", str(dps.store), "hub", "list", "-o", "json")
    assert done.returncode == 0, done.stderr
    times["hub list"] = time.perf_counter() - started
    return times


def _while_held(served, dps, group_key: str, start_slow: Callable[[], Any], arrived: threading.Event) -> tuple[dict[str, float], dict[str, float]]:
    baseline = _round(served, dps, group_key, "before")
    slow = threading.Thread(target=start_slow, daemon=True)
    slow.start()
    assert arrived.wait(30), "device A's allocation never started"
    held = _round(served, dps, group_key, "during")
    for phase, seconds in held.items():
        if seconds >= 1.5 * baseline[phase]:  # one more measurement of both, in case the machine was busy then
            tag = phase.replace(" ", "-")
            again, base = _round(served, dps, group_key, f"again-{tag}"), _round(served, dps, group_key, f"base-{tag}")
            held[phase], baseline[phase] = again[phase], base[phase]
    return baseline, held


@pytest.mark.slow
def test_a_held_webhook_stalls_no_other_device_nor_the_cli(dps, serve, held_webhook):
    hook, arrived, release = held_webhook
    served = serve(fast=True)  # each registration answers when committed: its time is the whole of its work
    group_key = _fleet(dps)
    dps.ok("enrollment", "add", "slow-a", "--attestation", "symmetricKey", "--webhook-url", hook.url)
    key_a = dps.json("enrollment", "show", "slow-a", "--show-keys")["attestation"]["symmetricKey"]["primaryKey"]
    outcome: dict[str, Any] = {}
    baseline, held = _while_held(served, dps, group_key, lambda: outcome.update(reply=served.register("slow-a", key_a)), arrived)
    assert "reply" not in outcome  # A is still being allocated
    for phase in baseline:
        assert held[phase] < 1.5 * baseline[phase], (phase, baseline, held)
    release.set()
    assert wait_for(lambda: "reply" in outcome, 30)  # the registration's thread answers once the webhook has
    assert outcome["reply"].status == 200 and outcome["reply"].body["status"] == "assigned", outcome


@pytest.mark.slow
def test_a_held_allocation_command_stalls_no_other_device(dps, serve, tmp_path):
    gate = tmp_path / "gate"
    os.mkfifo(gate)  # the command blocks opening it until the test opens its other end: no polling
    started = tmp_path / "started"
    script = tmp_path / "allocate.py"
    script.write_text(
        "import json, sys\n"
        "request = json.load(sys.stdin)\n"
        f"open({str(started)!r}, 'w').close()\n"
        f"open({str(gate)!r}).close()\n"
        f"print(json.dumps({{'iotHubHostName': {HUB!r}}}))\n"
    )
    served = serve(fast=True)
    group_key = _fleet(dps)
    dps.ok("enrollment", "add", "slow-a", "--attestation", "symmetricKey", "--allocation-command", f"{sys.executable} {script}")
    key_a = dps.json("enrollment", "show", "slow-a", "--show-keys")["attestation"]["symmetricKey"]["primaryKey"]

    # The command is another process: the test sees it start by the file it writes.
    command_started = SimpleNamespace(wait=lambda timeout: wait_for(started.exists, timeout))
    outcome: dict[str, Any] = {}
    baseline, held = _while_held(served, dps, group_key, lambda: outcome.update(reply=served.register("slow-a", key_a)), command_started)  # type: ignore[arg-type]
    for phase in baseline:
        assert held[phase] < 1.5 * baseline[phase], (phase, baseline, held)
    os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))  # lets the command answer (fails at once if it is gone)


def test_a_registration_is_assigning_while_its_webhook_runs_and_follows_an_enrollment_changed_meanwhile(dps, serve, held_webhook):
    hook, arrived, release = held_webhook
    served = serve()
    dps.ok("enrollment", "add", "slow-a", "--attestation", "symmetricKey", "--webhook-url", hook.url)
    key_a = dps.json("enrollment", "show", "slow-a", "--show-keys")["attestation"]["symmetricKey"]["primaryKey"]
    first = served.register("slow-a", key_a)
    assert first.status == 202 and first.body["status"] == "assigning"  # answered before the webhook
    assert arrived.wait(30)
    early = served.poll("slow-a", first.body["operationId"], key_a, settle=False)
    assert early.status == 202 and early.body["status"] == "assigning"
    dps.ok("enrollment", "update", "slow-a", "--disabled")  # not blocked by the allocation in flight
    release.set()
    done = served.poll("slow-a", first.body["operationId"], key_a)
    assert done.status == 200 and done.body["status"] == "disabled", done  # the updated enrollment, not the stale decision
    assert dps.json("device", "list") == []
