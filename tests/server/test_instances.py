"""Several `dpsctl serve` instances on one store: operations, devices and CLI writers shared, nothing lost.

Operations live in the store, so a device may register on one instance and poll another (as behind a load
balancer). Each instance keeps its own quota and pool; the store's transactions keep them consistent.
"""

from __future__ import annotations

import signal
from pathlib import Path
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dpsctl.core.keys import derive_device_key, generate_key
from tests.helpers.backends import BACKENDS, store_for
from tests.helpers.cli import Dps
from tests.helpers.constants import ID_SCOPE
from tests.helpers.server import Client, device_token, start_serve


@pytest.fixture(params=BACKENDS)
def dps(request: pytest.FixtureRequest, tmp_path) -> Dps:
    """Instances share a store of every backend, PostgreSQL included (the shared database of several machines)."""
    return Dps(store_for(request, tmp_path, request.param))


def test_register_on_one_instance_and_poll_the_other_with_cli_writers_alongside(dps, serve):
    a = serve()
    b = serve(init=False)
    group_key = generate_key(32)
    dps.ok("enrollment-group", "add", "shared", "--attestation", "symmetricKey", "--primary-key", group_key)
    ids = [f"shared-{n:03d}" for n in range(40)]
    failures: list[str] = []

    def device(n: int, registration_id: str) -> None:
        key = derive_device_key(group_key, registration_id)
        first, second = (a, b) if n % 2 == 0 else (b, a)
        if n % 4 < 2:
            started = first.register(registration_id, key).body
        else:
            started = first.mqtt_register(registration_id, key)
        if started.get("status") != "assigning":
            failures.append(f"{registration_id}: {started}")
            return
        first.settle()
        done = second.poll(registration_id, started["operationId"], key)
        if done.status != 200 or done.body["status"] != "assigned":
            failures.append(f"{registration_id} polled on the other instance: {done}")

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(device, n, rid) for n, rid in enumerate(ids)]
        for n in range(5):  # the CLI writes while both instances serve
            dps.ok("enrollment", "add", f"cli-{n}", "--attestation", "symmetricKey")
        for future in futures:
            future.result()
    assert failures == []
    records = {r["registrationId"]: r for r in dps.json("registration", "list")}
    assert all(records[i]["status"] == "assigned" for i in ids)
    assert len(dps.json("enrollment", "list")) == 5


@pytest.mark.slow
def test_a_killed_instance_loses_nothing_it_confirmed(dps, tmp_path):
    """SIGKILL one of two instances in the middle of a load: every registration it answered 200 is in the store."""
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-a")
    group_key = generate_key(32)
    dps.ok("enrollment-group", "add", "herd", "--attestation", "symmetricKey", "--primary-key", group_key)
    (tmp_path / "a").mkdir()
    victim, victim_port, _, _ = start_serve(dps.store, "--fast", "--quiet", folder=tmp_path / "a")
    survivor, survivor_port, _, _ = start_serve(dps.store, "--fast", "--quiet", folder=tmp_path / "a", log_name="survivor.log")
    # Both made or reused the development CA in the same folder (a file store's, or the working folder for a URL).
    ca = (Path(dps.store).parent if dps.is_file else tmp_path / "a") / "dpsctl-serve" / "ca.pem"
    confirmed: dict[str, str] = {}
    lock = threading.Lock()
    killed = threading.Event()

    def client(port: int, ids: list[str]) -> None:
        conn = Client(port, ca)
        for registration_id in ids:
            key = derive_device_key(group_key, registration_id)
            try:
                reply = conn.call("PUT", f"/{ID_SCOPE}/registrations/{registration_id}/register", {"registrationId": registration_id}, {"Authorization": device_token(registration_id, key)}, api="2019-03-31")
            except OSError:
                continue  # the instance died under this request: not confirmed
            if reply.status == 200 and reply.body["status"] == "assigned":
                with lock:
                    confirmed[registration_id] = reply.body["registrationState"]["assignedHub"]
                    if len(confirmed) == 60 and not killed.is_set():
                        killed.set()
                        victim.send_signal(signal.SIGKILL)

    ids = [f"herd-{n:03d}" for n in range(200)]
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda part: client(*part), [(victim_port if n % 2 else survivor_port, ids[n::8]) for n in range(8)]))
    finally:
        victim.kill()
        victim.communicate(timeout=30)
        survivor.send_signal(signal.SIGTERM)
        survivor.communicate(timeout=30)
    assert killed.is_set() and victim.returncode == -signal.SIGKILL
    records = {r["registrationId"]: r for r in dps.json("registration", "list")}
    lost = [rid for rid in confirmed if records.get(rid, {}).get("status") != "assigned"]
    assert lost == [], lost
    assert len(confirmed) > 60
    assert dps.json("stats") is not None
