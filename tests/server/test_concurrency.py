"""Many devices at once, the CLI writing alongside the server, and the memory store behind the HTTP-free emulator."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from dpsctl.core.hubs import add_hub
from dpsctl.core.keys import derive_device_key, generate_key
from dpsctl.core.sas import build_sas_token, device_resource_uri
from dpsctl.server.device_service import DeviceService
from dpsctl.server.faults import Options
from dpsctl.server.http_api import HttpApi
from dpsctl.server.http_types import HttpRequest
from dpsctl.server.runtime import prepare
from dpsctl.server.service_api import ServiceApi
from dpsctl.server.store_access import StoreAccess
from dpsctl.store.memory import MemoryStore


def test_concurrent_devices_and_cli_writes_share_the_store(dps, serve):
    served = serve(fast=True)
    group_key = generate_key(32)
    dps.ok("enrollment-group", "add", "crowd", "--attestation", "symmetricKey", "--primary-key", group_key)
    ids = [f"crowd-{n:03d}" for n in range(120)]
    failures: list[str] = []

    def device(slice_: list[str]) -> None:
        client = served.client()
        for registration_id in slice_:
            reply = served.register(registration_id, derive_device_key(group_key, registration_id), client=client)
            if reply.status != 200 or reply.body["status"] != "assigned":
                failures.append(f"{registration_id}: {reply}")

    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(device, ids[i::12]) for i in range(12)]
        for n in range(5):  # the CLI writes while the devices register
            dps.ok("enrollment", "add", f"cli-{n}", "--attestation", "symmetricKey")
        for future in futures:
            future.result()
    assert failures == []
    records = {r["registrationId"]: r for r in dps.json("registration", "list", "--enrollment-group", "crowd")}
    assert sorted(records) == ids and all(r["status"] == "assigned" for r in records.values())
    assert len(dps.json("enrollment", "list")) == 5
    assert len([line for line in served.log_lines() if "/register 200 " in line]) == len(ids)


def _register_request(id_scope: str, registration_id: str, key: str) -> HttpRequest:
    token = build_sas_token(device_resource_uri(id_scope, registration_id), key, int(time.time()) + 3600, encode_sr=False)
    body = json.dumps({"registrationId": registration_id}).encode()
    return HttpRequest("PUT", f"/{id_scope}/registrations/{registration_id}/register?api-version=2019-03-31", {"authorization": token}, body)


def test_memory_store_is_serialised_between_request_threads():
    """The HTTP API without any transport: request objects in, responses out, from 16 threads at once."""
    store = MemoryStore()
    settings = prepare(store)
    access = StoreAccess(store)
    app = HttpApi(DeviceService(access, Options(fast=True)), ServiceApi(access, Options(fast=True)))
    service_token = build_sas_token("localhost", settings.service_key, int(time.time()) + 3600, key_name="provisioningserviceowner", encode_sr=False)
    group_key = generate_key(32)
    group = {"enrollmentGroupId": "mem", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": group_key, "secondaryKey": generate_key(32)}}}
    with access.write() as tx:
        add_hub(tx, "hub-a")
    created = app.handle(HttpRequest("PUT", "/enrollmentGroups/mem?api-version=2021-10-01", {"authorization": service_token}, json.dumps(group).encode()))
    assert created.status == 200, created.body
    ids = [f"mem-{n:03d}" for n in range(200)]
    statuses: list[int] = []
    lock = threading.Lock()

    def run(registration_id: str) -> None:
        reply = app.handle(_register_request(settings.id_scope, registration_id, derive_device_key(group_key, registration_id)))
        with lock:
            statuses.append(reply.status)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(run, ids))
    assert statuses == [200] * len(ids)
    with access.read() as tx:
        assert sorted(d["registrationId"] for d in tx.scan("registrations")) == ids
        assert tx.count("devices") == len(ids)

