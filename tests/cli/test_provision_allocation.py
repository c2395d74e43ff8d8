"""Allocation as devices see it: hashed, geoLatency, static, applyAllocationPolicy, no hub, custom webhook and command."""

from __future__ import annotations

import json
import shlex
import sys
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest

from dpsctl.core.attestation import SasCredential
from dpsctl.core.keys import derive_device_key
from dpsctl.core.provisioning import RegistrationRequest
from dpsctl.core.provisioning import provision as run_engine
from dpsctl.core.sas import build_sas_token, device_resource_uri
from dpsctl.store import open_store
from tests.cli.provision_helpers import (
    HUB_A,
    HUB_B,
    HUB_C,
    ID_SCOPE,
    GROUP_KEY,
    SECONDARY_KEY,
    add_group,
    devices,
    failed_checks,
    group_key,
    history,
    init,
    provision,
    register,
    registration,
)

# --------------------------------------------------------------------------- hashed


def test_hashed_is_stable_for_a_device(dps):
    init(dps, "hub-a", "hub-b", "hub-c")
    add_group(dps)
    first = {reg_id: register(dps, reg_id)["registrationState"]["assignedHub"] for reg_id in ("dev-1", "dev-2", "dev-3", "dev-4")}
    again = {reg_id: register(dps, reg_id)["registrationState"]["assignedHub"] for reg_id in first}
    assert again == first
    assert devices(dps) == sorted((hub, reg_id) for reg_id, hub in first.items())


@pytest.mark.rule("§8/hashed-spreads-by-weight")
def test_hashed_spreads_devices_by_weight(dps):
    init(dps)
    dps.ok("hub", "add", "hub-a", "--weight", "1")
    dps.ok("hub", "add", "hub-b", "--weight", "1")
    dps.ok("hub", "add", "hub-c", "--weight", "2")
    add_group(dps)

    # 300 devices through the engine in one transaction (300 CLI runs would be slow); then read back with the CLI.
    now = datetime.now(timezone.utc)
    expiry = int(now.timestamp()) + 3600
    with open_store(dps.store).transaction(write=True) as tx:
        for n in range(300):
            reg_id = f"sensor-{n:04d}"
            token = build_sas_token(device_resource_uri(ID_SCOPE, reg_id), derive_device_key(GROUP_KEY, reg_id), expiry)
            assert run_engine(tx, RegistrationRequest(SasCredential(token), reg_id), now).assigned

    per_hub = dps.json("stats")["devicesPerHub"]
    assert sum(per_hub.values()) == 300
    # Expected 75 / 75 / 150; a binomial's standard deviation is about 8 here, so 4 of them is a sane tolerance.
    assert abs(per_hub[HUB_A] - 75) <= 30, per_hub
    assert abs(per_hub[HUB_B] - 75) <= 30, per_hub
    assert abs(per_hub[HUB_C] - 150) <= 35, per_hub
    records = dps.json("registration", "list", "--enrollment-group", "fleet")
    assert Counter(r["assignedHub"] for r in records) == Counter(per_hub)


# --------------------------------------------------------------------------- geoLatency


@pytest.mark.parametrize(
    ("region", "hub"),
    [("northeurope", HUB_A), ("East US 2", HUB_B), ("japanwest", HUB_C), ("westus", HUB_B)],
)
@pytest.mark.rule("§8/geolatency-nearest-hub", differs="the great-circle distance between the region datacentres stands in for network latency")
def test_geolatency_picks_the_nearest_hub(dps, region, hub):
    init(dps)
    dps.ok("hub", "add", "hub-a", "--location", "westeurope")
    dps.ok("hub", "add", "hub-b", "--location", "eastus")
    dps.ok("hub", "add", "hub-c", "--location", "japaneast")
    add_group(dps, "fleet", "--allocation-policy", "geoLatency")

    doc = register(dps, "roamer-1", "--region", region)

    assert doc["registrationState"]["assignedHub"] == hub
    assert any("geoLatency" in step["message"] for step in doc["explain"])


def test_geolatency_defaults_to_the_service_location(dps):
    init(dps)
    dps.ok("hub", "add", "hub-a", "--location", "westeurope")
    dps.ok("hub", "add", "hub-c", "--location", "japaneast")
    add_group(dps, "fleet", "--allocation-policy", "geoLatency")
    dps.ok("service", "update", "--location", "koreacentral")
    assert register(dps, "roamer-2")["registrationState"]["assignedHub"] == HUB_C


@pytest.mark.parametrize("policy", ["geoLatency", "hashed"])
def test_unknown_region_is_an_input_error(dps, policy):
    init(dps)
    dps.ok("hub", "add", "hub-a", "--location", "westeurope")
    add_group(dps, "fleet", "--allocation-policy", policy)
    key = group_key(dps, "fleet", "roamer-3")

    run = dps("provision", "--registration-id", "roamer-3", "--symmetric-key", key, "--region", "atlantis", "-o", "json")

    assert run.exit_code == 2, run
    assert run.stdout == ""
    assert "unknown Azure region 'atlantis'" in run.stderr
    assert "known regions:" in run.stderr and "westeurope" in run.stderr
    assert dps("registration", "show", "roamer-3").exit_code == 3 and history(dps) == []


# --------------------------------------------------------------------------- static, applyAllocationPolicy, no hub


def test_static_uses_the_named_hub(dps):
    init(dps, "hub-a", "hub-b", "hub-c")
    add_group(dps, "fleet", "--allocation-policy", "static", "--hub", "hub-b")
    hubs = {register(dps, f"dev-{n}")["registrationState"]["assignedHub"] for n in range(8)}
    assert hubs == {HUB_B}
    assert any("allocation policy: static" in step["message"] for step in register(dps, "dev-0")["explain"])


def test_service_default_static_policy(dps):
    init(dps, "hub-a", "hub-b")
    dps.ok("service", "update", "--allocation-policy", "static")
    add_group(dps, "fleet", "--hub", "hub-a")
    doc = register(dps, "dev-1")
    assert doc["registrationState"]["assignedHub"] == HUB_A
    assert any("static (the service default)" in step["message"] for step in doc["explain"])


@pytest.mark.rule("§8/candidates-are-named-or-all-linked-hubs")
def test_hubs_that_do_not_apply_allocation_policy_are_used_only_when_named(dps):
    init(dps, "hub-a", "hub-b")
    dps.ok("hub", "add", "hub-c", "--no-apply-allocation-policy", "--weight", "1000")
    add_group(dps, "fleet")
    dps.ok("enrollment-group", "add", "lab", "--attestation", "symmetricKey", "--hub", "hub-c")

    assigned = {register(dps, f"dev-{n}")["registrationState"]["assignedHub"] for n in range(20)}
    assert assigned == {HUB_A, HUB_B}  # hub-c's weight would have taken nearly all of them

    lab_key = group_key(dps, "lab", "lab-1")
    doc = provision(dps, "--registration-id", "lab-1", "--symmetric-key", lab_key)
    assert doc["registrationState"]["assignedHub"] == HUB_C


@pytest.mark.rule("§2.5/no-hub-status-failed")
def test_no_linked_hub_fails_with_a_failed_record(dps):
    init(dps)
    add_group(dps)

    doc = register(dps, "orphan-1", code=7)

    assert doc["status"] == "failed"
    assert "no linked IoT hub" in failed_checks(doc)[-1]
    record = registration(dps, "orphan-1")
    assert record["status"] == "failed" and record["errorCode"] == 400208 and record["errorMessage"]
    assert record["symmetricKey"] == {"enrollmentGroupId": "fleet"}
    assert "assignedHub" not in record
    assert history(dps, "orphan-1") == [("failed", None)]
    assert dps.json("stats")["registrationsByStatus"] == {"failed": 1}

    # Link a hub and the device gets in; its first assignment is an initial one.
    dps.ok("hub", "add", "hub-a")
    assert register(dps, "orphan-1")["registrationState"]["substatus"] == "initialAssignment"


def test_all_hubs_opted_out_fails(dps):
    init(dps)
    dps.ok("hub", "add", "hub-a", "--no-apply-allocation-policy")
    add_group(dps)
    register(dps, "orphan-2", code=7)
    assert registration(dps, "orphan-2")["status"] == "failed"


# --------------------------------------------------------------------------- custom allocation: a real webhook


@pytest.mark.rule("§9/webhook-request-shape")
def test_custom_allocation_webhook(dps, webhook):
    init(dps, "hub-a", "hub-b")
    twin = {"tags": {"deviceType": "toaster"}, "properties": {"desired": {"state": "ready", "darknessSetting": "medium"}}}

    def respond(request: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"iotHubHostName": HUB_B, "initialTwin": twin, "payload": {"echo": request["deviceRuntimeContext"].get("payload")}}

    webhook.respond = respond
    add_group(dps, "toasters", "--webhook-url", webhook.url, "--initial-twin", '{"tags": {"from": "enrollment"}}')

    doc = register(dps, "toaster-1", "--payload", '{"modelId": "dtmi:contoso:toaster;1"}')

    state = doc["registrationState"]
    assert (state["assignedHub"], state["substatus"]) == (HUB_B, "initialAssignment")
    assert state["payload"] == {"echo": {"modelId": "dtmi:contoso:toaster;1"}}
    # The webhook's initial twin (not the enrollment's) is on the hub device.
    device = dps.json("device", "show", "toaster-1")
    assert (device["hub"], device["tags"], device["properties"]["desired"]) == (HUB_B, twin["tags"], twin["properties"]["desired"])
    assert registration(dps, "toaster-1")["payload"] == state["payload"]

    [call] = webhook.requests
    assert call["path"] == "/api/allocate?code=s3cret"
    assert call["contentType"].startswith("application/json")
    request = call["body"]
    assert set(request) == {"enrollmentGroup", "deviceRuntimeContext", "linkedHubs"}
    assert request["enrollmentGroup"]["enrollmentGroupId"] == "toasters"
    assert request["enrollmentGroup"]["attestation"]["type"] == "symmetricKey"
    assert GROUP_KEY not in json.dumps(request) and SECONDARY_KEY not in json.dumps(request)  # keys are stripped
    assert "primaryKey" not in json.dumps(request)
    assert request["deviceRuntimeContext"] == {"registrationId": "toaster-1", "symmetricKey": {}, "payload": {"modelId": "dtmi:contoso:toaster;1"}}
    assert sorted(request["linkedHubs"]) == [HUB_A, HUB_B]
    # The function key in the URL never shows up in the trace.
    assert "s3cret" not in json.dumps(doc["explain"])


def test_custom_allocation_webhook_sees_the_current_hub_on_reprovisioning(dps, webhook):
    init(dps, "hub-a", "hub-b")
    dps.ok("enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY, "--webhook-url", webhook.url)
    provision(dps, "--registration-id", "dev-1", "--symmetric-key", GROUP_KEY)
    first_hub = registration(dps, "dev-1")["assignedHub"]
    provision(dps, "--registration-id", "dev-1", "--symmetric-key", GROUP_KEY)

    first, second = (call["body"] for call in webhook.requests)
    assert "individualEnrollment" in first and "enrollmentGroup" not in first
    assert first["individualEnrollment"]["attestation"] == {"type": "symmetricKey", "symmetricKey": {}}
    assert "currentIotHubHostName" not in first["deviceRuntimeContext"]
    assert second["deviceRuntimeContext"]["currentIotHubHostName"] == first_hub
    assert second["deviceRuntimeContext"]["currentDeviceId"] == "dev-1"


@pytest.mark.rule("§9/never-offers-only-the-current-hub")
def test_custom_allocation_with_never_reprovision_offers_only_the_current_hub(dps, webhook):
    init(dps, "hub-a", "hub-b")
    webhook.respond = lambda request: (200, {"iotHubHostName": request["linkedHubs"][-1]})
    add_group(dps, "fleet", "--webhook-url", webhook.url, "--reprovision-policy", "never")
    hub = register(dps, "dev-1")["registrationState"]["assignedHub"]
    assert register(dps, "dev-1")["registrationState"]["assignedHub"] == hub
    assert webhook.requests[-1]["body"]["linkedHubs"] == [hub]


@pytest.mark.parametrize(
    ("case", "answer", "failed_check"),
    [
        ("HTTP 500", (500, {"error": "boom"}), "answered HTTP 500"),
        ("unknown hub", (200, {"iotHubHostName": "elsewhere.azure-devices.net"}), "not one of the linked hubs"),
        ("no hub", (200, {"payload": {}}), "without iotHubHostName"),
        ("twin not an object", (200, {"iotHubHostName": HUB_A, "initialTwin": [1]}), "initialTwin an array"),
    ],
)
@pytest.mark.rule("§9/webhook-hub-must-be-linked")
def test_custom_allocation_webhook_failures(dps, webhook, case, answer, failed_check):
    init(dps, "hub-a", "hub-b")
    webhook.respond = lambda request: answer
    add_group(dps, "fleet", "--webhook-url", webhook.url)

    doc = register(dps, "dev-1", code=7)

    assert doc["status"] == "failed"
    assert failed_check in failed_checks(doc)[-1], (case, doc["explain"])
    assert "s3cret" not in json.dumps(doc)  # the function key in the URL is never echoed
    assert registration(dps, "dev-1")["status"] == "failed"
    assert devices(dps) == []
    assert history(dps, "dev-1") == [("failed", None)]


def test_custom_allocation_webhook_timeout(dps, webhook):
    init(dps, "hub-a")
    webhook.delay = 60.0  # held until the test ends: only the --webhook-timeout deadline gives this outcome
    add_group(dps, "fleet", "--webhook-url", webhook.url)
    doc = register(dps, "dev-1", "--webhook-timeout", "0.3", code=7)
    assert "did not answer within 0.3 s" in failed_checks(doc)[-1]
    assert registration(dps, "dev-1")["status"] == "failed"


def test_custom_allocation_webhook_not_running(dps, webhook):
    init(dps, "hub-a")
    url = webhook.url
    webhook.stop()
    add_group(dps, "fleet", "--webhook-url", url)
    doc = register(dps, "dev-1", code=7)
    assert "refused the connection" in failed_checks(doc)[-1]


# --------------------------------------------------------------------------- custom allocation: a local command

ALLOCATOR = """
import json, sys
request = json.load(sys.stdin)
if request["deviceRuntimeContext"]["registrationId"].startswith("bad"):
    print("no hub for you", file=sys.stderr)
    sys.exit(3)
hub = sorted(request["linkedHubs"])[-1]
print(json.dumps({
    "iotHubHostName": hub,
    "initialTwin": {"tags": {"allocatedBy": "command"}},
    "payload": {"seen": sorted(request), "keys": "primaryKey" in json.dumps(request)},
}))
"""


def test_custom_allocation_command(dps, tmp_path):
    init(dps, "hub-a", "hub-b")
    script = tmp_path / "allocate.py"
    script.write_text(ALLOCATOR)
    add_group(dps, "fleet", "--allocation-command", f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}")

    doc = register(dps, "good-1")

    state = doc["registrationState"]
    assert state["assignedHub"] == HUB_B
    assert state["payload"] == {"seen": ["deviceRuntimeContext", "enrollmentGroup", "linkedHubs"], "keys": False}
    assert dps.json("device", "show", "good-1")["tags"] == {"allocatedBy": "command"}

    failed = register(dps, "bad-1", code=7)
    assert "exited with status 3: no hub for you" in failed_checks(failed)[-1]
    assert registration(dps, "bad-1")["status"] == "failed"
