"""`dpsctl provision` with symmetric keys: individual enrollments, groups with derived keys, SAS tokens made elsewhere."""

from __future__ import annotations

import base64
import json
import re
import time
from urllib.parse import quote, unquote

import pytest

from dpsctl.core.sas import build_sas_token, sign
from tests.cli.provision_helpers import (
    HUB_A,
    HUB_B,
    ID_SCOPE,
    REGISTRATION_STATE_FIELDS,
    connection_string_fields,
    devices,
    failed_checks,
    group_key,
    history,
    init,
    operations,
    provision,
    refused,
    registration,
)
from tests.helpers.cli import dpsctl_process

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
GROUP_KEY = base64.b64encode(b"g" * 64).decode()
OTHER_KEY = base64.b64encode(b"x" * 32).decode()
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def in_an_hour() -> int:
    return int(time.time()) + 3600


def resource(registration_id: str, scope: str = ID_SCOPE) -> str:
    return f"{scope}/registrations/{registration_id}"


# --------------------------------------------------------------------------- individual enrollments and groups


def test_individual_enrollment_provisions_with_its_keys(dps):
    init(dps, "hub-a")
    dps.ok("enrollment", "add", "thermostat-01", "--attestation", "symmetricKey", "--primary-key", KEY_A, "--secondary-key", KEY_B)

    doc = provision(dps, "--registration-id", "thermostat-01", "--symmetric-key", KEY_A)

    assert doc["status"] == "assigned"
    assert doc["operationId"]
    state = doc["registrationState"]
    assert REGISTRATION_STATE_FIELDS | {"symmetricKey"} == set(state), state
    assert state["registrationId"] == "thermostat-01"
    assert state["deviceId"] == "thermostat-01"
    assert state["assignedHub"] == HUB_A
    assert (state["status"], state["substatus"]) == ("assigned", "initialAssignment")
    assert TIMESTAMP.match(state["createdDateTimeUtc"]) and TIMESTAMP.match(state["lastUpdatedDateTimeUtc"]), state
    assert state["etag"]
    assert state["symmetricKey"] == {}  # an individual enrollment: no enrollmentGroupId
    assert connection_string_fields(doc) == {"HostName": HUB_A, "DeviceId": "thermostat-01", "SharedAccessKey": KEY_A}
    assert not failed_checks(doc)

    # The hub got a SAS identity with the enrollment's keys, and the registration record matches the answer.
    device = dps.json("device", "show", "thermostat-01", "--show-keys")
    assert device["hub"] == HUB_A
    assert device["authentication"] == {"type": "sas", "symmetricKey": {"primaryKey": KEY_A, "secondaryKey": KEY_B}}
    assert registration(dps, "thermostat-01") == state

    # The secondary key works too, and the device is told to use it.
    again = provision(dps, "--registration-id", "thermostat-01", "--symmetric-key", KEY_B)
    assert connection_string_fields(again)["SharedAccessKey"] == KEY_B
    assert again["registrationState"]["createdDateTimeUtc"] == state["createdDateTimeUtc"]
    assert again["registrationState"]["etag"] != state["etag"]


@pytest.mark.rule("§8.9/device-id")
def test_enrollment_device_id_names_the_hub_device(dps):
    init(dps, "hub-a")
    dps.ok("enrollment", "add", "sn-4711", "--attestation", "symmetricKey", "--primary-key", KEY_A, "--device-id", "boiler-basement")
    doc = provision(dps, "--registration-id", "sn-4711", "--symmetric-key", KEY_A)
    assert doc["registrationState"]["deviceId"] == "boiler-basement"
    assert connection_string_fields(doc)["DeviceId"] == "boiler-basement"
    assert devices(dps) == [(HUB_A, "boiler-basement")]


@pytest.mark.rule("§8.9/device-id")
def test_group_devices_provision_with_derived_keys(dps):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "toasters", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY, "--secondary-key", KEY_B)
    key = group_key(dps, "toasters", "toaster-001")
    secondary = group_key(dps, "toasters", "toaster-001", secondary=True)
    assert key != secondary and len(base64.b64decode(key)) == 32

    doc = provision(dps, "--registration-id", "toaster-001", "--symmetric-key", key)

    state = doc["registrationState"]
    assert REGISTRATION_STATE_FIELDS | {"symmetricKey"} == set(state), state
    assert state["symmetricKey"] == {"enrollmentGroupId": "toasters"}
    assert (state["status"], state["deviceId"], state["assignedHub"]) == ("assigned", "toaster-001", HUB_A)
    assert connection_string_fields(doc) == {"HostName": HUB_A, "DeviceId": "toaster-001", "SharedAccessKey": key}
    # The hub identity holds the keys derived from the group's primary and secondary keys, never the group keys.
    auth = dps.json("device", "show", "toaster-001", "--show-keys")["authentication"]
    assert auth == {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": secondary}}
    assert dps.json("registration", "list", "--enrollment-group", "toasters")[0]["registrationId"] == "toaster-001"

    # A key derived from the group's secondary key is accepted as well (the az CLI tests do this).
    again = provision(dps, "--registration-id", "toaster-001", "--symmetric-key", secondary)
    assert connection_string_fields(again)["SharedAccessKey"] == secondary


def test_group_settings_reach_the_hub_device(dps):
    init(dps, "hub-a")
    twin = {"tags": {"fleet": "north"}, "properties": {"desired": {"telemetryInterval": 60}}}
    dps.ok("enrollment-group", "add", "gateways", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY, "--edge", "--initial-twin", json.dumps(twin))
    provision(dps, "--registration-id", "gw-1", "--symmetric-key", group_key(dps, "gateways", "gw-1"))
    device = dps.json("device", "show", "gw-1")
    assert device["capabilities"] == {"iotEdge": True}
    assert (device["tags"], device["properties"]) == (twin["tags"], twin["properties"])
    assert device["registrationId"] == "gw-1" and device["status"] == "enabled"


@pytest.mark.parametrize(
    ("group_key_b64", "registration_id", "derived"),
    [
        # Reference 4.2: published by Microsoft in the DPS docs.
        ("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==", "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="),
        ("oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==", "breakroom499-contoso-tstrsd-007", "JC8F96eayuQwwz+PkE7IzjH2lIAjCUnAa61tDigBnSs="),
        ("oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==", "mainbuilding167-contoso-hpsd-088", "6uejA9PfkQgmYylj8Zerp3kcbeVrGZ172YLa7VSnJzg="),
    ],
)
@pytest.mark.rule("§4.2/derived-device-keys")
def test_published_derived_key_vectors_then_provision(dps, group_key_b64, registration_id, derived):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "contoso", "--attestation", "symmetricKey", "--primary-key", group_key_b64)
    assert group_key(dps, "contoso", registration_id) == derived
    assert dps.ok("enrollment-group", "compute-device-key", "contoso", "--registration-id", registration_id).stdout.strip() == derived

    doc = provision(dps, "--registration-id", registration_id, "--symmetric-key", derived)
    assert doc["registrationState"]["symmetricKey"] == {"enrollmentGroupId": "contoso"}
    assert connection_string_fields(doc)["SharedAccessKey"] == derived


# --------------------------------------------------------------------------- SAS tokens made elsewhere


def python_sdk_token(registration_id: str, key: str, expiry: int) -> str:
    # Python device SDK v2: sr = quote(uri, safe=""), no skn.
    return build_sas_token(resource(registration_id), key, expiry, key_name=None)


def node_sdk_token(registration_id: str, key: str, expiry: int) -> str:
    # Node SDK: the raw resource URI in sr, signed raw, skn=registration.
    return build_sas_token(resource(registration_id), key, expiry, encode_sr=False)


def c_sdk_token(registration_id: str, key: str, expiry: int) -> str:
    # C SDK: URL_EncodeString, lower-case hex (%2f), and the signature covers that exact text.
    sr = quote(resource(registration_id), safe="").replace("%2F", "%2f")
    assert "%2f" in sr
    sig = quote(sign(base64.b64decode(key), sr, expiry), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn=registration"


@pytest.mark.rule("§4.1/sas-signature-over-literal-sr")
@pytest.mark.parametrize("make_token", [python_sdk_token, node_sdk_token, c_sdk_token])
def test_sas_tokens_from_device_sdks_are_accepted(dps, make_token):
    init(dps, "hub-a")
    dps.ok("enrollment", "add", "sdk-device", "--attestation", "symmetricKey", "--primary-key", KEY_A)
    dps.ok("enrollment-group", "add", "sdk-group", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)

    individual = provision(dps, "--sas-token", make_token("sdk-device", KEY_A, in_an_hour()))
    assert individual["registrationState"]["registrationId"] == "sdk-device"  # taken from the token's sr
    member_key = group_key(dps, "sdk-group", "sdk-member")
    member = provision(dps, "--registration-id", "sdk-member", "--sas-token", make_token("sdk-member", member_key, in_an_hour()))
    assert member["registrationState"]["symmetricKey"] == {"enrollmentGroupId": "sdk-group"}
    assert connection_string_fields(member)["SharedAccessKey"] == member_key


def tampered(token: str) -> str:
    """The same token with one bit of its signature flipped."""
    head, _, rest = token.partition("sig=")
    sig, amp, tail = rest.partition("&")
    raw = bytearray(base64.b64decode(unquote(sig)))
    raw[0] ^= 1
    return f"{head}sig={quote(base64.b64encode(bytes(raw)).decode(), safe='')}{amp}{tail}"


@pytest.mark.parametrize(
    ("case", "token", "failed_check"),
    [
        ("tampered", tampered(python_sdk_token("dev-1", KEY_A, int(time.time()) + 3600)), "matches neither the primary nor the secondary key"),
        ("expired", python_sdk_token("dev-1", KEY_A, int(time.time()) - 60), "expired"),
        ("other ID scope", build_sas_token(resource("dev-1", "0ne00000B0B"), KEY_A, int(time.time()) + 3600), "0ne00000B0B/registrations/dev-1"),
        ("other registration ID", build_sas_token(resource("dev-2"), KEY_A, int(time.time()) + 3600), "/registrations/dev-2"),
        ("wrong key", python_sdk_token("dev-1", OTHER_KEY, int(time.time()) + 3600), "matches neither the primary nor the secondary key"),
        ("malformed", "SharedAccessSignature sr=whatever&sig=abc", "malformed"),
        ("not a SAS token", "Bearer abc.def.ghi", "malformed"),
    ],
)
@pytest.mark.rule("§2.5/bad-credential-401")
def test_bad_sas_tokens_are_unauthorized(dps, case, token, failed_check):
    init(dps, "hub-a")
    dps.ok("enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--primary-key", KEY_A, "--secondary-key", KEY_B)

    doc, stderr = refused(dps, "--registration-id", "dev-1", "--sas-token", token, code=5)

    assert doc["errorCode"] == 401002 and doc["trackingId"] and doc["message"], doc
    fails = failed_checks(doc)
    assert len(fails) == 1 and failed_check in fails[0], (case, doc["explain"])
    assert stderr.splitlines()[0] == "error: " + doc["message"]
    # A device that never proved itself leaves no registration record and no hub identity, but it is in the history.
    assert dps("registration", "show", "dev-1").exit_code == 3
    assert devices(dps) == []
    assert history(dps, "dev-1") == [("unauthorized", None)]


@pytest.mark.rule("§2.5/group-key-itself-refused")
def test_group_key_used_directly_is_refused_with_a_hint(dps):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "toasters", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)

    doc, stderr = refused(dps, "--registration-id", "toaster-002", "--symmetric-key", GROUP_KEY, code=5)

    assert "group key" in failed_checks(doc)[0]
    assert "hint: " in stderr and "dpsctl enrollment-group compute-device-key toasters --registration-id toaster-002" in stderr
    # Following the hint works.
    provision(dps, "--registration-id", "toaster-002", "--symmetric-key", group_key(dps, "toasters", "toaster-002"))


def test_key_derived_for_another_device_is_refused(dps):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "toasters", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)
    doc, stderr = refused(dps, "--registration-id", "toaster-002", "--symmetric-key", group_key(dps, "toasters", "toaster-001"), code=5)
    assert "matches no key derived" in failed_checks(doc)[0]
    assert "compute-device-key" in stderr


# --------------------------------------------------------------------------- precedence


@pytest.mark.rule("§11/individual-enrollment-before-groups")
def test_individual_enrollment_beats_a_group(dps):
    init(dps, "hub-a", "hub-b")
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY, "--hub", "hub-a", "--allocation-policy", "static")
    dps.ok("enrollment", "add", "vip-1", "--attestation", "symmetricKey", "--primary-key", KEY_A, "--hub", "hub-b", "--allocation-policy", "static")

    # The individual enrollment is found first: its key works, and its hub is used.
    doc = provision(dps, "--registration-id", "vip-1", "--symmetric-key", KEY_A)
    assert doc["registrationState"]["assignedHub"] == HUB_B
    assert doc["registrationState"]["symmetricKey"] == {}
    # The group's derived key no longer opens the door for this registration ID.
    denied, _ = refused(dps, "--registration-id", "vip-1", "--symmetric-key", group_key(dps, "fleet", "vip-1"), code=5)
    assert "enrollment 'vip-1'" in failed_checks(denied)[0]


def test_individual_enrollment_of_another_type_beats_a_group(dps, tmp_path):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)
    tpm = dps.json("tpm", "create", str(tmp_path / "tpm.json"))
    dps.ok("enrollment", "add", "dev-9", "--attestation", "tpm", "--endorsement-key", tpm["endorsementKey"])

    doc, _ = refused(dps, "--registration-id", "dev-9", "--symmetric-key", group_key(dps, "fleet", "dev-9"), code=5)
    assert "expects tpm attestation" in failed_checks(doc)[0]


@pytest.mark.rule("§11/disabled-individual-enrollment-blocks-group-device")
def test_disabled_individual_enrollment_blocks_a_group_device(dps):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)
    key = group_key(dps, "fleet", "stolen-7")
    provision(dps, "--registration-id", "stolen-7", "--symmetric-key", key)

    # The docs' recipe to block one device of a group: a disabled individual enrollment with its registration ID.
    dps.ok("enrollment", "add", "stolen-7", "--attestation", "symmetricKey", "--disabled")
    doc, stderr = refused(dps, "--registration-id", "stolen-7", "--symmetric-key", key, code=6)

    assert doc["status"] == "disabled"
    assert "disabled" in failed_checks(doc)[-1] and "disabled" in stderr
    record = registration(dps, "stolen-7")
    assert record["status"] == "disabled" and record["errorMessage"]
    assert history(dps, "stolen-7") == [("assigned", "initialAssignment"), ("disabled", None)]

    # Enabling the entry does not re-open the group path: now the device must use the enrollment's own key.
    dps.ok("enrollment", "update", "stolen-7", "--enabled")
    refused(dps, "--registration-id", "stolen-7", "--symmetric-key", key, code=5)
    # Deleting it does.
    dps.ok("enrollment", "delete", "stolen-7")
    assert provision(dps, "--registration-id", "stolen-7", "--symmetric-key", key)["status"] == "assigned"


def test_disabled_individual_enrollment_refuses_its_own_key(dps):
    init(dps, "hub-a")
    dps.ok("enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--primary-key", KEY_A, "--disabled")
    doc, _ = refused(dps, "--registration-id", "dev-1", "--symmetric-key", KEY_A, code=6)
    assert doc["registrationState"]["status"] == "disabled"
    assert doc["registrationState"]["errorCode"] == 401003
    assert devices(dps) == []


def test_disabled_group_refuses_its_devices(dps):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY, "--disabled")
    doc, stderr = refused(dps, "--registration-id", "dev-1", "--symmetric-key", group_key(dps, "fleet", "dev-1"), code=6)
    assert "enrollment group 'fleet' is disabled" in failed_checks(doc)[-1]
    assert "enrollment group 'fleet' is disabled" in stderr
    assert registration(dps, "dev-1")["status"] == "disabled"
    assert registration(dps, "dev-1")["symmetricKey"] == {"enrollmentGroupId": "fleet"}
    assert devices(dps) == []


# --------------------------------------------------------------------------- bookkeeping: dry run, history, stats, operations


def test_dry_run_writes_nothing(dps):
    init(dps, "hub-a")
    dps.ok("enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--primary-key", KEY_A)
    before = dps.fingerprint()

    doc = provision(dps, "--registration-id", "dev-1", "--symmetric-key", KEY_A, "--dry-run")
    assert doc["status"] == "assigned" and doc["registrationState"]["assignedHub"] == HUB_A
    refused(dps, "--registration-id", "dev-1", "--symmetric-key", KEY_B, "--dry-run", code=5)
    table = dps.ok("provision", "--registration-id", "dev-1", "--symmetric-key", KEY_A, "--dry-run")
    assert "dry run: nothing was written" in table.stdout

    assert dps.fingerprint() == before
    assert dps("registration", "show", "dev-1").exit_code == 3
    assert devices(dps) == [] and history(dps) == []


def test_history_stats_and_operations_count_every_attempt(dps):
    init(dps, "hub-a")
    dps.ok("enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--primary-key", KEY_A)
    dps.ok("enrollment", "add", "dev-2", "--attestation", "symmetricKey", "--primary-key", KEY_A, "--disabled")
    start = operations(dps)

    provision(dps, "--registration-id", "dev-1", "--symmetric-key", KEY_A)
    refused(dps, "--registration-id", "dev-1", "--symmetric-key", OTHER_KEY, code=5)
    provision(dps, "--registration-id", "dev-1", "--symmetric-key", KEY_A)
    refused(dps, "--registration-id", "dev-2", "--symmetric-key", KEY_A, code=6)
    refused(dps, "--registration-id", "nobody", "--symmetric-key", KEY_A, code=5)

    attempts = dps.json("registration", "history")
    assert [(h["registrationId"], h["status"], h["enrollment"]) for h in attempts] == [
        ("dev-1", "assigned", "individual:dev-1"),
        ("dev-1", "unauthorized", None),
        ("dev-1", "assigned", "individual:dev-1"),
        ("dev-2", "disabled", "individual:dev-2"),
        ("nobody", "unauthorized", None),
    ]
    # Each attempt has its own time-ordered ID (no shared counter that every registration rewrites), oldest first.
    sequences = [h["sequence"] for h in attempts]
    assert sequences == sorted(sequences) and len(set(sequences)) == 5
    assert all(h["attestation"] == "symmetricKey" and TIMESTAMP.match(h["timestampUtc"]) for h in attempts)
    assert attempts[1]["errorMessage"] and attempts[0]["errorMessage"] is None
    assert history(dps, "dev-1") == [("assigned", "initialAssignment"), ("unauthorized", None), ("assigned", "initialAssignment")]

    stats = dps.json("stats")
    assert stats["registrations"] == 2
    assert stats["registrationsByStatus"] == {"assigned": 1, "disabled": 1}
    assert stats["devicesPerHub"] == {HUB_A: 1}
    # Only the two successful registrations are billable operations.
    assert operations(dps) == start + 2 == stats["operations"]


def test_connection_string_key_is_masked_in_tables(dps):
    init(dps, "hub-a")
    dps.ok("enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--primary-key", KEY_A)
    table = dps.ok("provision", "--registration-id", "dev-1", "--symmetric-key", KEY_A)
    assert "dev-1" in table.stdout and HUB_A in table.stdout and KEY_A not in table.stdout
    shown = dps.ok("provision", "--registration-id", "dev-1", "--symmetric-key", KEY_A, "--show-keys")
    assert KEY_A in shown.stdout


def test_explain_in_a_table_marks_the_failed_check(dps):
    init(dps, "hub-a")
    dps.ok("enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--primary-key", KEY_A)
    run = dps("provision", "--registration-id", "dev-1", "--symmetric-key", KEY_B, "--explain")
    assert run.exit_code == 5, run
    fails = [line for line in run.stdout.splitlines() if line.startswith("[fail]")]
    assert len(fails) == 1 and "matches neither the primary nor the secondary key" in fails[0], run.stdout
    assert any(line.startswith("[ok]") for line in run.stdout.splitlines())
    # Without --explain, an error that has no better hint says how to see the checks.
    dps.ok("enrollment", "update", "dev-1", "--disabled")
    quiet = dps("provision", "--registration-id", "dev-1", "--symmetric-key", KEY_B)
    assert quiet.exit_code == 6, quiet
    assert quiet.stderr.splitlines()[1] == "hint: rerun with --explain to see every check"


def test_credential_options_are_checked(dps):
    init(dps, "hub-a")
    for args in ([], ["--symmetric-key", KEY_A, "--sas-token", "x"], ["--symmetric-key", KEY_A], ["--registration-id", "d", "--symmetric-key", "bm90IGEga2V5"]):
        run = dps("provision", *args)
        assert run.exit_code == 2, (args, run)
        assert run.stdout == "" and run.stderr.startswith("error: ")
    assert history(dps) == []


def test_provision_through_the_installed_entry_point(tmp_path):
    store = str(tmp_path / "dps.json")
    for args in (("init", "--id-scope", ID_SCOPE), ("hub", "add", "hub-a"), ("enrollment", "add", "dev-1", "--attestation", "symmetricKey", "--primary-key", KEY_A)):
        done = dpsctl_process("--db", store, *args)
        assert done.returncode == 0, done

    ok = dpsctl_process("--db", store, "provision", "--registration-id", "dev-1", "--symmetric-key", KEY_A, "-o", "json")
    assert ok.returncode == 0, ok
    assert json.loads(ok.stdout)["registrationState"]["assignedHub"] == HUB_A

    bad = dpsctl_process("--db", store, "provision", "--registration-id", "dev-1", "--symmetric-key", KEY_B, "-o", "json")
    assert bad.returncode == 5, bad
    assert json.loads(bad.stdout)["errorCode"] == 401002
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
