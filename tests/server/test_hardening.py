"""`dpsctl serve` on a bad day: a store held by someone else, clients that fail authentication in bulk, a client
that knows a TPM's public key, a spoofed Host header, and a process that must not dump its keys."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dpsctl.core.sas import build_sas_token, device_resource_uri
from dpsctl.store import open_store
from tests.helpers.constants import DEVICE_API, ID_SCOPE
from tests.helpers.server import start_serve


def _key(dps, registration_id: str) -> str:
    dps.ok("enrollment", "add", registration_id, "--attestation", "symmetricKey")
    return dps.json("enrollment", "show", registration_id, "--show-keys")["attestation"]["symmetricKey"]["primaryKey"]


def test_authentication_failures_write_nothing_and_are_counted(dps, serve):
    served = serve(fast=True)
    _key(dps, "target")
    before = dps.snapshot()
    size = dps.store.stat().st_size
    wrong = base64.b64encode(b"w" * 32).decode()
    for _ in range(50):
        assert served.register("target", wrong).status == 401
    assert dps.snapshot() == before
    assert dps.store.stat().st_size == size
    assert served.running.devices.refused == 50
    assert sum("register 401" in line for line in served.log_lines()) == 50


@pytest.mark.slow
def test_under_lock_contention_every_request_gets_503_within_the_lock_timeout(dps, serve, monkeypatch):
    """Another process holds the store: requests are refused with Retry-After, not queued behind each other."""
    monkeypatch.setenv("DPSCTL_LOCK_TIMEOUT", "0.5")
    served = serve(fast=True)
    key = _key(dps, "waiting")
    holder = open_store(dps.store)
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with holder.transaction(write=True) as tx:
            tx.put("hubs", {"name": "hub-held", "connectionString": "HostName=hub-held.azure-devices.net;SharedAccessKeyName=x;SharedAccessKey=" + key})
            held.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            replies = list(pool.map(lambda _: served.register("waiting", key), range(20)))
        elapsed = time.monotonic() - started
        assert {r.status for r in replies} == {503}, replies
        assert all(r.headers.get("retry-after") for r in replies)
        # Twenty requests, each waiting at most the 0.5 s lock timeout at once: not 20 x 0.5 s in a queue.
        assert elapsed < 20 * 0.5 / 2, elapsed
    finally:
        release.set()
        thread.join()
    assert served.register("waiting", key).status == 200


def test_an_unauthenticated_request_cannot_replace_a_pending_tpm_challenge(dps, serve, tmp_path):
    from dpsctl.core.tpm import load_tpm

    path = tmp_path / "device.tpm"
    created = dps.json("tpm", "create", str(path))
    tpm = load_tpm(path)
    served = serve(fast=True)
    dps.ok("enrollment", "add", "boiler", "--attestation", "tpm", "--endorsement-key", created["endorsementKey"])
    body = {"registrationId": "boiler", "tpm": {"endorsementKey": created["endorsementKey"], "storageRootKey": created["storageRootKey"]}}
    url = f"/{ID_SCOPE}/registrations/boiler/register"
    client = served.client()
    challenge = client.call("PUT", url, body, api=DEVICE_API)
    assert challenge.status == 401
    # Someone who knows the public EK asks for a challenge too: the pending one must survive.
    meddler = client.call("PUT", url, body, api=DEVICE_API)
    assert meddler.status == 401 and meddler.body["authenticationKey"] != challenge.body["authenticationKey"]  # sealed afresh
    secret = base64.b64encode(tpm.activate_credential(challenge.body["authenticationKey"])).decode()
    assert base64.b64encode(tpm.activate_credential(meddler.body["authenticationKey"])).decode() == secret  # the same key
    token = build_sas_token(device_resource_uri(ID_SCOPE, "boiler"), secret, int(time.time()) + 3600)
    done = client.call("PUT", url, body, {"Authorization": token}, api=DEVICE_API)
    assert done.status == 200 and done.body["status"] == "assigned", done


def test_a_service_token_for_another_host_is_refused_whatever_the_host_header(dps, serve):
    served = serve(fast=True)
    token = build_sas_token("evil.example", served.service_key, int(time.time()) + 3600, key_name="provisioningserviceowner", encode_sr=False)
    reply = served.client().call("GET", "/enrollments/none", headers={"Authorization": token, "Host": "evil.example"})
    assert reply.status == 401 and "evil.example" in reply.body["message"], reply


def test_serve_cannot_dump_core(tmp_path):
    from tests.helpers.cli import Dps

    store = tmp_path / "dps.json"
    Dps(store).ok("init", "--id-scope", ID_SCOPE)
    proc, _port, _banner, _log = start_serve(store)
    try:
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        assert core.split()[4:6] == ["0", "0"], core
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "\nUid:" in status  # readable: and the process is not dumpable (PR_SET_DUMPABLE 0)
        assert Path(f"/proc/{proc.pid}/stat").exists()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
