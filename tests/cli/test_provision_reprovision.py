"""Reprovisioning: what happens in the hub registries when a provisioned device registers again."""

from __future__ import annotations

import base64
import json

import pytest

from tests.cli.provision_helpers import HUB_A, HUB_B, devices, history, init, operations, provision, refused, registration
from tests.helpers.cli import dpsctl_process

KEY = base64.b64encode(b"k" * 32).decode()
INITIAL_TWIN = {"tags": {"site": "plant-1"}, "properties": {"desired": {"interval": 30}}}


def enroll(dps, *options: str) -> None:
    """dev-1, a symmetric-key device statically placed on hub-a, with an initial twin."""
    dps.ok(
        "enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--primary-key", KEY,
        "--allocation-policy", "static", "--hub", "hub-a", "--initial-twin", json.dumps(INITIAL_TWIN), *options,
    )


def register(dps) -> dict:
    """dev-1 registers; its registration state."""
    return provision(dps, "--registration-id", "dev-1", "--symmetric-key", KEY)["registrationState"]


def move_to(dps, hub: str) -> None:
    """Change the enrollment so that the device's next registration lands on `hub`."""
    dps.ok("enrollment", "update", "dev-1", "--allocation-policy", "static", "--hub", hub)


def twin(dps) -> dict:
    device = dps.json("device", "show", "dev-1")
    return {"tags": device["tags"], "properties": {"desired": device["properties"]["desired"]}}


def back_end_changes_the_twin(dps) -> None:
    dps.ok("device", "update-twin", "dev-1", "--desired", '{"interval": 5, "firmware": "2.1"}', "--tags", '{"room": "12"}')


CHANGED_TWIN = {"tags": {"site": "plant-1", "room": "12"}, "properties": {"desired": {"interval": 5, "firmware": "2.1"}}}


@pytest.mark.rule("§10/migrate-moves-device-and-twin")
@pytest.mark.rule("§10/repeat-on-same-hub-keeps-initial-assignment")
def test_migrate_moves_the_device_and_its_twin(dps):
    init(dps, "hub-a", "hub-b")
    enroll(dps)  # the default policy: reprovision and migrate data

    first = register(dps)
    assert (first["assignedHub"], first["substatus"]) == (HUB_A, "initialAssignment")
    assert twin(dps) == INITIAL_TWIN
    back_end_changes_the_twin(dps)
    assert twin(dps) == CHANGED_TWIN

    # Same hub again: nothing moves, the twin stays, and DPS keeps saying initialAssignment.
    same = register(dps)
    assert (same["assignedHub"], same["substatus"]) == (HUB_A, "initialAssignment")
    assert twin(dps) == CHANGED_TWIN
    assert same["createdDateTimeUtc"] == first["createdDateTimeUtc"]

    move_to(dps, "hub-b")
    moved = register(dps)
    assert (moved["assignedHub"], moved["substatus"]) == (HUB_B, "deviceDataMigrated")
    assert devices(dps) == [(HUB_B, "dev-1")]  # the old hub's device is gone
    assert twin(dps) == CHANGED_TWIN  # ... and its twin came along
    assert dps("device", "show", "dev-1", "--hub", "hub-a").exit_code == 3
    assert register(dps)["substatus"] == "deviceDataMigrated"  # same hub: the last assignment's substatus stays

    move_to(dps, "hub-a")
    back = register(dps)
    assert (back["assignedHub"], back["substatus"]) == (HUB_A, "reprovisionedToInitialAssignment")
    assert devices(dps) == [(HUB_A, "dev-1")]
    assert twin(dps) == CHANGED_TWIN

    assert history(dps, "dev-1") == [
        ("assigned", "initialAssignment"),
        ("assigned", "initialAssignment"),
        ("assigned", "deviceDataMigrated"),
        ("assigned", "deviceDataMigrated"),
        ("assigned", "reprovisionedToInitialAssignment"),
    ]
    assert [h["assignedHub"] for h in dps.json("registration", "history", "dev-1")] == [HUB_A, HUB_A, HUB_B, HUB_B, HUB_A]


@pytest.mark.rule("§10/reset-applies-initial-config")
def test_reset_moves_the_device_with_the_initial_twin(dps):
    init(dps, "hub-a", "hub-b")
    enroll(dps, "--reprovision-policy", "reprovisionandresetdata")
    register(dps)
    back_end_changes_the_twin(dps)

    move_to(dps, "hub-b")
    moved = register(dps)

    assert (moved["assignedHub"], moved["substatus"]) == (HUB_B, "deviceDataReset")
    assert devices(dps) == [(HUB_B, "dev-1")]
    assert twin(dps) == INITIAL_TWIN


def test_reset_on_the_same_hub_is_a_factory_reset(dps):
    # Documented dpsctl choice (decide_reprovision): a reset policy re-applies the initial twin even without a move.
    init(dps, "hub-a", "hub-b")
    enroll(dps, "--reprovision-policy", "reset")
    register(dps)
    back_end_changes_the_twin(dps)

    again = register(dps)

    assert (again["assignedHub"], again["substatus"]) == (HUB_A, "deviceDataReset")
    assert twin(dps) == INITIAL_TWIN
    assert devices(dps) == [(HUB_A, "dev-1")]


@pytest.mark.rule("§10/never-keeps-the-hub")
def test_never_keeps_the_device_where_it_is(dps):
    init(dps, "hub-a", "hub-b")
    enroll(dps, "--reprovision-policy", "never")
    register(dps)
    back_end_changes_the_twin(dps)

    move_to(dps, "hub-b")
    again = provision(dps, "--registration-id", "dev-1", "--symmetric-key", KEY)

    state = again["registrationState"]
    assert (state["assignedHub"], state["substatus"]) == (HUB_A, "initialAssignment")
    assert any("reprovision policy 'never'" in step["message"] for step in again["explain"])
    assert devices(dps) == [(HUB_A, "dev-1")]
    assert twin(dps) == CHANGED_TWIN


def test_initial_twin_changes_apply_only_to_new_assignments(dps):
    init(dps, "hub-a")
    enroll(dps)
    register(dps)
    dps.ok("enrollment", "update", "dev-1", "--initial-twin", '{"tags": {"site": "plant-2"}}')
    register(dps)
    assert twin(dps) == INITIAL_TWIN


def test_deleting_the_registration_record_makes_the_next_one_initial(dps):
    init(dps, "hub-a", "hub-b")
    enroll(dps)
    register(dps)
    move_to(dps, "hub-b")
    assert register(dps)["substatus"] == "deviceDataMigrated"

    dps.ok("registration", "delete", "dev-1")
    assert dps("registration", "show", "dev-1").exit_code == 3

    fresh = register(dps)
    assert (fresh["assignedHub"], fresh["substatus"]) == (HUB_B, "initialAssignment")
    assert twin(dps) == INITIAL_TWIN
    # Moving afterwards counts from the new initial assignment: hub-a is not "back to initial" any more.
    move_to(dps, "hub-a")
    assert register(dps)["substatus"] == "deviceDataMigrated"


def test_device_whose_hub_was_unlinked_is_provisioned_afresh(dps):
    init(dps, "hub-a", "hub-b")
    enroll(dps)
    register(dps)
    back_end_changes_the_twin(dps)
    dps.ok("hub", "delete", "hub-a", "--force")  # unlinked from DPS: the hub and its devices live on, out of DPS's reach
    dps.ok("enrollment", "update", "dev-1", "--allocation-policy", "static", "--hub", "hub-b")

    state = register(dps)

    assert (state["assignedHub"], state["substatus"]) == (HUB_B, "initialAssignment")
    assert devices(dps) == [(HUB_A, "dev-1"), (HUB_B, "dev-1")]
    moved = dps.json("device", "show", "dev-1", "--hub", "hub-b")
    assert (moved["tags"], moved["properties"]["desired"]) == (INITIAL_TWIN["tags"], INITIAL_TWIN["properties"]["desired"])
    assert dps.json("device", "show", "dev-1", "--hub", "hub-a")["tags"] == CHANGED_TWIN["tags"]


def test_refusal_after_assignment_keeps_the_device_on_its_hub(dps):
    init(dps, "hub-a", "hub-b")
    enroll(dps)
    register(dps)
    back_end_changes_the_twin(dps)

    dps.ok("enrollment", "update", "dev-1", "--disabled")
    refused(dps, "--registration-id", "dev-1", "--symmetric-key", KEY, code=6)
    assert registration(dps, "dev-1")["status"] == "disabled"
    assert devices(dps) == [(HUB_A, "dev-1")]  # DPS does not touch the hub when it refuses

    dps.ok("enrollment", "update", "dev-1", "--enabled", "--hub", "hub-b")
    state = register(dps)
    assert (state["assignedHub"], state["substatus"]) == (HUB_B, "deviceDataMigrated")
    assert twin(dps) == CHANGED_TWIN
    assert devices(dps) == [(HUB_B, "dev-1")]

    # A refusal in between does not make the device forget how it got to its hub.
    dps.ok("enrollment", "update", "dev-1", "--disabled")
    refused(dps, "--registration-id", "dev-1", "--symmetric-key", KEY, code=6)
    dps.ok("enrollment", "update", "dev-1", "--enabled")
    assert register(dps)["substatus"] == "deviceDataMigrated"
    move_to(dps, "hub-a")
    assert register(dps)["substatus"] == "reprovisionedToInitialAssignment"


def test_every_successful_registration_is_one_operation(dps):
    init(dps, "hub-a", "hub-b")
    enroll(dps)
    start = operations(dps)
    register(dps)
    register(dps)
    refused(dps, "--registration-id", "dev-1", "--symmetric-key", base64.b64encode(b"w" * 32).decode(), code=5)
    assert operations(dps) == start + 2
    move_to(dps, "hub-b")  # an enrollment update is an operation too
    register(dps)
    assert operations(dps) == start + 4
    stats = dps.json("stats")
    assert stats["operations"] == start + 4
    assert stats["devicesPerHub"] == {HUB_A: 0, HUB_B: 1}
    assert stats["registrationsByStatus"] == {"assigned": 1}


def test_reprovisioning_through_the_installed_entry_point(tmp_path):
    store = str(tmp_path / "dps.json")

    def dpsctl(*args: str, code: int = 0):
        done = dpsctl_process("--db", store, *args)
        assert done.returncode == code, done
        return done

    dpsctl("hub", "add", "hub-a")
    dpsctl("hub", "add", "hub-b")
    dpsctl("enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--primary-key", KEY, "--allocation-policy", "static", "--hub", "hub-a")
    dpsctl("provision", "--registration-id", "dev-1", "--symmetric-key", KEY)
    dpsctl("enrollment", "update", "dev-1", "--hub", "hub-b")
    moved = json.loads(dpsctl("provision", "--registration-id", "dev-1", "--symmetric-key", KEY, "-o", "json").stdout)
    assert moved["registrationState"]["substatus"] == "deviceDataMigrated"
    listed = json.loads(dpsctl("device", "list", "-o", "json").stdout)
    assert [(d["hub"], d["deviceId"]) for d in listed] == [(HUB_B, "dev-1")]
