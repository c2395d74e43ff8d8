"""Individual enrollments and groups, as a user manages them from the command line."""

from __future__ import annotations

import base64

import pytest

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()


def test_add_list_show_update_delete_session(dps):
    added = dps.json("enrollment", "add", "thermostat-01", "--attestation", "symmetricKey", "--primary-key", KEY_A, "--secondary-key", KEY_B)
    assert added["registrationId"] == "thermostat-01"
    assert added["attestation"] == {"type": "symmetricKey", "symmetricKey": {}}  # keys are not shown unless asked
    assert added["provisioningStatus"] == "enabled"
    assert added["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": True}
    assert added["etag"] and added["createdDateTimeUtc"].endswith("Z")

    listed = dps.json("enrollment", "list")
    assert [e["registrationId"] for e in listed] == ["thermostat-01"]

    shown = dps.json("enrollment", "show", "THERMOSTAT-01", "--show-keys")  # IDs are case-insensitive
    assert shown["attestation"]["symmetricKey"] == {"primaryKey": KEY_A, "secondaryKey": KEY_B}

    updated = dps.json("enrollment", "update", "thermostat-01", "--disabled", "--etag", added["etag"])
    assert updated["provisioningStatus"] == "disabled"
    assert updated["etag"] != added["etag"]
    assert updated["createdDateTimeUtc"] == added["createdDateTimeUtc"]

    stale = dps("enrollment", "update", "thermostat-01", "--enabled", "--etag", added["etag"])
    assert stale.exit_code == 4, stale
    assert stale.stderr.startswith("error: ") and "etag" in stale.stderr
    assert dps.json("enrollment", "show", "thermostat-01")["provisioningStatus"] == "disabled"

    deleted = dps("enrollment", "delete", "thermostat-01", "--etag", updated["etag"])
    assert deleted.exit_code == 0, deleted
    missing = dps("enrollment", "show", "thermostat-01")
    assert missing.exit_code == 3, missing
    assert missing.stdout == ""


@pytest.mark.rule("§4.3/generated-keys")
def test_generated_keys_are_64_random_bytes(dps):
    shown = dps.json("enrollment", "add", "dev", "--attestation", "symmetricKey", "--show-keys")
    keys = shown["attestation"]["symmetricKey"]
    assert len(base64.b64decode(keys["primaryKey"])) == 64
    assert keys["primaryKey"] != keys["secondaryKey"]


def test_keys_never_appear_in_tables_unless_asked(dps):
    dps.ok("enrollment", "add", "dev", "--attestation", "symmetricKey", "--primary-key", KEY_A)
    assert KEY_A not in dps.ok("enrollment", "list").stdout
    assert KEY_A not in dps.ok("enrollment", "show", "dev").stdout
    assert KEY_A not in dps.ok("export").stdout
    assert KEY_A in dps.ok("enrollment", "show", "dev", "--show-keys").stdout


def test_duplicate_ids_conflict_case_insensitively(dps):
    dps.ok("enrollment", "add", "Dev-A", "--attestation", "symmetricKey")
    run = dps("enrollment", "add", "dev-a", "--attestation", "symmetricKey")
    assert run.exit_code == 4, run


@pytest.mark.parametrize(
    "reg_id",
    ["", "-leading-dash", "trailing.", "has space", "x" * 129, "dev/1", "dеv"],  # the last has a Cyrillic 'е'
)
@pytest.mark.rule("§12/registration-id-format")
def test_invalid_registration_ids_are_refused_and_nothing_is_written(dps, reg_id):
    run = dps("enrollment", "add", reg_id, "--attestation", "symmetricKey")
    assert run.exit_code == 2, run
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) <= 2
    assert not dps.exists() or dps.json("enrollment", "list") == []


def test_bad_keys_are_refused_without_echoing_them(dps):
    run = dps("enrollment", "add", "dev", "--attestation", "symmetricKey", "--primary-key", "c2VjcmV0")  # 6 bytes
    assert run.exit_code == 2, run
    assert "c2VjcmV0" not in run.stderr


@pytest.mark.rule("§8/static-names-one-hub")
def test_allocation_settings_are_checked_against_linked_hubs(dps):
    dps.ok("hub", "add", "hub-a", "--location", "westeurope")
    dps.ok("hub", "add", "hub-b.azure-devices.net")
    not_linked = dps("enrollment", "add", "d1", "--attestation", "symmetricKey", "--hub", "hub-z")
    assert not_linked.exit_code == 2 and "not linked" in not_linked.stderr
    two_static = dps("enrollment", "add", "d1", "--attestation", "symmetricKey", "--allocation-policy", "static", "--hub", "hub-a", "--hub", "hub-b")
    assert two_static.exit_code == 2 and "exactly one hub" in two_static.stderr
    no_webhook = dps("enrollment", "add", "d1", "--attestation", "symmetricKey", "--allocation-policy", "custom")
    assert no_webhook.exit_code == 2
    ok = dps.json("enrollment", "add", "d1", "--attestation", "symmetricKey", "--allocation-policy", "static", "--hub", "HUB-A")
    assert ok["allocationPolicy"] == "static" and ok["iotHubs"] == ["hub-a.azure-devices.net"]
    webhook = dps.json("enrollment", "add", "d2", "--attestation", "symmetricKey", "--webhook-url", "https://example.com/api/alloc?code=x")
    assert webhook["allocationPolicy"] == "custom"
    assert webhook["customAllocationDefinition"]["webhookUrl"] == "https://example.com/api/alloc?code=x"
    assert dps("enrollment", "add", "d3", "--attestation", "symmetricKey", "--webhook-url", "ftp://x/y").exit_code == 2
    in_use = dps("hub", "delete", "hub-a")
    assert in_use.exit_code == 4, in_use


def test_initial_twin_edge_and_reprovision_options(dps, tmp_path):
    twin_file = tmp_path / "twin.json"
    twin_file.write_text('{"tags": {"site": "[lab] 7"}, "properties": {"desired": {"interval": 30}}}')
    doc = dps.json(
        "enrollment", "add", "gw-1", "--attestation", "symmetricKey", "--initial-twin", str(twin_file), "--edge",
        "--reprovision-policy", "reset", "--device-id", "gateway-one",
    )
    assert doc["initialTwin"] == {"tags": {"site": "[lab] 7"}, "properties": {"desired": {"interval": 30}}}
    assert doc["capabilities"] == {"iotEdge": True}
    assert doc["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": False}
    assert doc["deviceId"] == "gateway-one"
    assert "[lab] 7" in dps.ok("enrollment", "show", "gw-1").stdout  # Rich markup is off: brackets survive
    assert dps("enrollment", "add", "x", "--attestation", "symmetricKey", "--initial-twin", "[1,2]").exit_code == 2
    assert dps("enrollment", "add", "x", "--attestation", "symmetricKey", "--reprovision-policy", "sometimes").exit_code == 2


def test_list_filters(dps):
    dps.ok("enrollment", "add", "a", "--attestation", "symmetricKey")
    dps.ok("enrollment", "add", "b", "--attestation", "symmetricKey", "--disabled")
    assert [e["registrationId"] for e in dps.json("enrollment", "list", "--status", "disabled")] == ["b"]
    assert [e["registrationId"] for e in dps.json("enrollment", "list", "--attestation", "symmetricKey")] == ["a", "b"]
    assert dps.json("enrollment", "list", "--attestation", "tpm") == []


def test_operations_count_creates_and_updates(dps):
    dps.ok("enrollment", "add", "a", "--attestation", "symmetricKey")
    dps.ok("enrollment-group", "add", "g", "--attestation", "symmetricKey")
    dps.ok("enrollment", "update", "a", "--disabled")
    assert dps.json("service", "show")["properties"]["operationsCount"] == 3


@pytest.mark.rule("§7.5/groups-are-not-tpm")
def test_group_session_and_compute_device_key(dps):
    group_key = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
    dps.ok("enrollment-group", "add", "contoso", "--attestation", "symmetricKey", "--primary-key", group_key)
    run = dps.ok("enrollment-group", "compute-device-key", "contoso", "--registration-id", "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6")
    assert run.stdout.strip() == "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="  # Microsoft's published vector
    assert dps("enrollment-group", "add", "g2", "--attestation", "tpm").exit_code == 2  # no TPM groups in DPS
    assert dps("enrollment-group", "add", "g2", "--attestation", "symmetricKey", "--device-id", "x").exit_code == 2
    group = dps.json("enrollment-group", "show", "contoso")
    assert group["enrollmentGroupId"] == "contoso" and group["attestation"]["symmetricKey"] == {}
    dps.ok("enrollment-group", "delete", "contoso")
    assert dps("enrollment-group", "show", "contoso").exit_code == 3


@pytest.mark.rule("§12/quotas")
def test_group_limit_is_enforced(dps, monkeypatch):
    import dpsctl.core.enrollments as enrollments

    monkeypatch.setattr(enrollments, "MAX_GROUPS_PER_TYPE", 2)
    dps.ok("enrollment-group", "add", "g1", "--attestation", "symmetricKey")
    dps.ok("enrollment-group", "add", "g2", "--attestation", "symmetricKey")
    run = dps("enrollment-group", "add", "g3", "--attestation", "symmetricKey")
    assert run.exit_code == 4 and "limit" in run.stderr


@pytest.mark.rule("§12/quotas")
def test_individual_enrollment_limit_is_enforced(dps, monkeypatch):
    import dpsctl.core.enrollments as enrollments

    monkeypatch.setattr(enrollments, "MAX_INDIVIDUAL_ENROLLMENTS", 1)
    dps.ok("enrollment", "add", "a", "--attestation", "symmetricKey")
    assert dps("enrollment", "add", "b", "--attestation", "symmetricKey").exit_code == 4


def test_output_env_default(dps, monkeypatch):
    dps.ok("enrollment", "add", "a", "--attestation", "symmetricKey")
    monkeypatch.setenv("DPSCTL_OUTPUT", "json")
    assert dps.ok("enrollment", "list").json()[0]["registrationId"] == "a"
    import yaml

    assert yaml.safe_load(dps.ok("enrollment", "list", "-o", "yaml").stdout)[0]["registrationId"] == "a"


def test_an_empty_key_is_refused_not_replaced_by_a_generated_one(dps):
    run = dps("enrollment", "add", "dev", "--attestation", "symmetricKey", "--primary-key", "")
    assert run.exit_code == 2, run
    assert dps("enrollment", "show", "dev").exit_code == 3


def test_a_key_typed_in_the_wrong_place_is_not_echoed(dps):
    run = dps("enrollment", "add", "dev", "--attestation", "symmetricKey", KEY_A)  # option name forgotten
    assert run.exit_code == 2, run
    assert KEY_A not in run.stderr and "<redacted>" in run.stderr
