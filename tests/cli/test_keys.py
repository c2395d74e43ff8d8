"""`dpsctl keys ...`: generate, derive, SAS tokens checked by the engine, and every diagnosis of `keys check`."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.cli import Dps
from tests.helpers.constants import ID_SCOPE as SCOPE

# Published vectors (reference §4.2) and a self-computed SAS vector (§4.1).
GROUP_KEY = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
VECTOR_ID = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
VECTOR_KEY = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
CUSTOM_GROUP_KEY = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
KEY_C = base64.b64encode(b"c" * 64).decode()
KEY_D = base64.b64encode(b"d" * 64).decode()

REGISTRATION_IDS = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9._:-]{0,126}[A-Za-z0-9-])?", fullmatch=True)
KEYS = st.binary(min_size=16, max_size=64).map(lambda raw: base64.b64encode(raw).decode())


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Dps:
    """A runner for the commands that never open the store (given an ID scope)."""
    return Dps(tmp_path_factory.mktemp("keys") / "unused.json")


def _derive(dps, key: str, reg_id: str) -> str:  # noqa: ANN001
    return dps.ok("keys", "derive", "--group-key", key, "--registration-id", reg_id).stdout.strip()


# --------------------------------------------------------------------------- generate and derive


def test_generate(cli):
    keys = {cli.ok("keys", "generate").stdout.strip() for _ in range(3)}
    assert len(keys) == 3 and all(len(base64.b64decode(k, validate=True)) == 64 for k in keys)
    assert len(base64.b64decode(cli.json("keys", "generate", "--bytes", "32"))) == 32
    for size in ("8", "65"):
        run = cli("keys", "generate", "--bytes", size)
        assert run.exit_code == 2 and "16" in run.stderr and run.stdout == ""


def test_derive_matches_published_vectors_and_compute_device_key(dps):
    assert _derive(dps, GROUP_KEY, VECTOR_ID) == VECTOR_KEY
    assert _derive(dps, CUSTOM_GROUP_KEY, "breakroom499-contoso-tstrsd-007") == "JC8F96eayuQwwz+PkE7IzjH2lIAjCUnAa61tDigBnSs="
    assert _derive(dps, CUSTOM_GROUP_KEY, "mainbuilding167-contoso-hpsd-088") == "6uejA9PfkQgmYylj8Zerp3kcbeVrGZ172YLa7VSnJzg="
    dps.ok("enrollment-group", "add", "g", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY, "--secondary-key", KEY_C)
    assert dps.ok("enrollment-group", "compute-device-key", "g", "--registration-id", VECTOR_ID).stdout.strip() == VECTOR_KEY
    secondary = dps.ok("enrollment-group", "compute-device-key", "g", "--registration-id", "dev", "--secondary").stdout.strip()
    assert _derive(dps, KEY_C, "dev") == secondary


def test_derive_refuses_bad_input_without_echoing_keys(cli):
    run = cli("keys", "derive", "--group-key", "c2VjcmV0", "--registration-id", "dev")  # 6 bytes
    assert run.exit_code == 2 and "c2VjcmV0" not in run.stderr
    run = cli("keys", "derive", "--group-key", "not base64!!", "--registration-id", "dev")
    assert run.exit_code == 2 and "not base64" not in run.stderr
    assert cli("keys", "derive", "--group-key", GROUP_KEY, "--registration-id", "bad id").exit_code == 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(group_key=KEYS, reg_id=REGISTRATION_IDS)
def test_property_derived_keys_are_32_bytes(cli, group_key, reg_id):
    derived = _derive(cli, group_key, reg_id)
    assert len(base64.b64decode(derived, validate=True)) == 32


# --------------------------------------------------------------------------- SAS tokens


def test_sas_matches_the_reference_vector(cli):
    token = cli.ok("keys", "sas", "--registration-id", VECTOR_ID, "--key", VECTOR_KEY, "--id-scope", SCOPE, "--expiry", "1700000000").stdout.strip()
    assert token == (
        f"SharedAccessSignature sr={SCOPE}%2Fregistrations%2F{VECTOR_ID}"
        f"&sig={quote('t6/8JHWQuQgM9mXdYf/uIqa3dKECOEk9Rr4WrFV19q0=', safe='')}&se=1700000000&skn=registration"
    )
    doc = cli.json("keys", "sas", "--registration-id", VECTOR_ID, "--key", VECTOR_KEY, "--id-scope", SCOPE.lower(), "--expiry", "1700000000")
    assert doc["sasToken"] == token and doc["idScope"] == SCOPE and doc["expiryUtc"] == "2023-11-14T22:13:20Z"
    assert doc["resourceUri"] == f"{SCOPE}/registrations/{VECTOR_ID}"


def test_sas_options(dps):
    dps.ok("init")
    before = int(time.time())
    doc = dps.json("keys", "sas", "--registration-id", "dev", "--key", KEY_A, "--ttl", "60")
    assert before + 60 <= doc["expiry"] <= int(time.time()) + 60
    scope = dps.json("service", "show")["properties"]["idScope"]
    assert doc["idScope"] == scope  # from the store when not given
    assert abs(dps.json("keys", "sas", "--registration-id", "dev", "--key", KEY_A)["expiry"] - (before + 3600)) <= 5
    for bad in (("--ttl", "60", "--expiry", "1"), ("--ttl", "0"), ("--expiry", "-5"), ("--id-scope", "nope")):
        assert dps("keys", "sas", "--registration-id", "dev", "--key", KEY_A, *bad).exit_code == 2
    assert dps("keys", "sas", "--registration-id", "bad id", "--key", KEY_A).exit_code == 2
    run = dps("keys", "sas", "--registration-id", "dev", "--key", "c2VjcmV0")
    assert run.exit_code == 2 and "c2VjcmV0" not in run.stderr


def test_sas_token_provisions_and_an_expired_one_is_refused(dps):
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment-group", "add", "g", "--attestation", "symmetricKey", "--primary-key", KEY_C, "--secondary-key", KEY_D)
    device_key = _derive(dps, KEY_D, "sensor-7")
    token = dps.ok("keys", "sas", "--registration-id", "sensor-7", "--key", device_key).stdout.strip()
    assert dps.json("provision", "--sas-token", token)["status"] == "assigned"
    expired = dps.ok("keys", "sas", "--registration-id", "sensor-7", "--key", device_key, "--expiry", "1000").stdout.strip()
    run = dps("provision", "--sas-token", expired, "--explain")
    assert run.exit_code == 5 and "expired" in run.stdout


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reg_id=REGISTRATION_IDS, key=KEYS, ttl=st.integers(min_value=60, max_value=10**6))  # 1 s could pass before the check on a busy machine
def test_property_keys_sas_verifies_in_the_engine(cli, reg_id, key, ttl):
    from dpsctl.core.attestation import SasCredential, check_token_scope, match_key, parse_token
    from dpsctl.core.checks import Trace
    from dpsctl.core.sas import resource_matches

    token = cli.ok("keys", "sas", "--registration-id", reg_id, "--key", key, "--id-scope", SCOPE, "--ttl", str(ttl)).stdout.strip()
    trace = Trace()
    parsed = parse_token(SasCredential(token), trace)
    assert parsed is not None, trace.steps
    assert resource_matches(parsed, SCOPE, reg_id) and resource_matches(parsed, SCOPE.lower(), reg_id.upper())
    assert check_token_scope(parsed, SCOPE, reg_id, datetime.now(timezone.utc), trace), trace.steps
    assert match_key(parsed, [("other", KEY_B if key != KEY_B else KEY_A), ("device", key)]) == "device"


# --------------------------------------------------------------------------- keys check


@pytest.fixture
def keyed(dps):
    """A store with an individual enrollment `solo`, groups `fleet` (enabled) and `parked` (disabled)."""
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment", "add", "solo", "--attestation", "symmetricKey", "--primary-key", KEY_A, "--secondary-key", KEY_B)
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey", "--primary-key", KEY_C, "--secondary-key", KEY_D)
    dps.ok("enrollment-group", "add", "parked", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY, "--disabled")
    return dps


def _check(dps, reg_id: str, key: str, exit_code: int) -> dict:  # noqa: ANN001
    run = dps("keys", "check", "--registration-id", reg_id, "--key", key, "-o", "json")
    assert run.exit_code == exit_code, run
    report = run.json()
    # No key, of any kind, ever appears in what keys check prints.
    for secret in filter(None, (KEY_A, KEY_B, KEY_C, KEY_D, GROUP_KEY, key.strip())):
        assert secret not in run.stdout and secret not in run.stderr
    return report


def test_check_individual_keys(keyed):
    for key, diagnosis in ((KEY_A, "enrollmentPrimaryKey"), (KEY_B, "enrollmentSecondaryKey")):
        report = _check(keyed, "solo", key, 0)
        assert report["diagnosis"] == diagnosis and report["accepted"] is True
        assert report["match"]["individualEnrollment"] == "solo"
    table = keyed("keys", "check", "--registration-id", "solo", "--key", KEY_A)
    assert table.exit_code == 0 and "the primary key of individual enrollment 'solo'" in table.stdout and "[ok]" in table.stdout


def test_check_keys_derived_from_group_keys(keyed):
    for group_key, slot in ((KEY_C, "primary"), (KEY_D, "secondary")):
        report = _check(keyed, "dev-9", _derive(keyed, group_key, "dev-9"), 0)
        assert report["diagnosis"] == "derivedFromGroupKey" and report["match"] == {"enrollmentGroup": "fleet", "key": slot}
        assert f"from the {slot} key of enrollment group 'fleet'" in report["message"]


def test_check_the_group_key_itself(keyed):
    report = _check(keyed, "dev-9", KEY_C, 5)
    assert report["diagnosis"] == "groupKey" and report["match"] == {"enrollmentGroup": "fleet", "key": "primary"}
    assert "compute-device-key fleet --registration-id dev-9" in report["hint"]


@pytest.mark.parametrize(
    ("derived_for", "shown"),
    [("DEV-9", "'DEV-9'"), ("Dev-9", "'Dev-9'"), ("dev-9\n", "'dev-9\\n'"), (" dev-9 ", "' dev-9 '"), ("dev-9\r\n", "'dev-9\\r\\n'")],
)
def test_check_a_key_derived_for_another_spelling(keyed, derived_for, shown):
    from dpsctl.core.keys import derive_device_key

    report = _check(keyed, "dev-9", derive_device_key(KEY_C, derived_for), 5)
    assert report["diagnosis"] == "derivedForOtherSpelling" and report["match"]["derivedFor"] == derived_for
    assert shown in report["message"] and "keys derive" in report["hint"]


def test_check_a_spelling_the_store_remembers(keyed):
    from dpsctl.core.keys import derive_device_key

    keyed.ok("provision", "--registration-id", "MiXeD-Case", "--symmetric-key", derive_device_key(KEY_C, "MiXeD-Case"))
    report = _check(keyed, "mixed-case", derive_device_key(KEY_C, "MiXeD-Case"), 5)
    assert report["diagnosis"] == "derivedForOtherSpelling" and report["match"]["derivedFor"] == "MiXeD-Case"


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("not base64 at all!", "not valid Base64: it contains ' ', '!'"),
        ("notakey", "not valid Base64 of a key: 7 characters"),
        ("my-secret-password", "not valid Base64: it contains '-'"),
        ('"' + KEY_A + '"', "wrapped in quotes"),
        ("c2VjcmV0", "decodes to 6 bytes"),
        (base64.b64encode(b"x" * 65).decode(), "decodes to 65 bytes"),
        (base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(), "URL-safe Base64"),
        (KEY_A.rstrip("="), "padding"),
        ("", "empty"),
    ],
)
def test_check_something_that_is_not_a_key(keyed, key, words):
    report = _check(keyed, "solo", key, 2)
    assert report["diagnosis"] == "invalid" and report["accepted"] is False and words in report["message"]
    assert report["explain"] == []


def test_check_an_unknown_key_and_another_devices_key(keyed):
    unknown = _check(keyed, "solo", base64.b64encode(b"z" * 32).decode(), 5)
    assert unknown["diagnosis"] == "unknown" and unknown["explain"]
    other = _check(keyed, "someone", KEY_A, 5)
    assert other["diagnosis"] == "otherEnrollmentKey" and other["match"] == {"individualEnrollment": "solo", "key": "primary"}


def test_check_where_the_individual_enrollment_takes_precedence(keyed):
    report = _check(keyed, "solo", _derive(keyed, KEY_C, "solo"), 5)
    assert report["diagnosis"] == "derivedFromGroupKey" and "takes precedence" in report["message"]
    assert any("takes precedence" in s["message"] for s in report["explain"])


def test_check_a_disabled_group(keyed):
    report = _check(keyed, VECTOR_ID, VECTOR_KEY, 6)
    assert report["diagnosis"] == "derivedFromGroupKey" and report["match"] == {"enrollmentGroup": "parked", "key": "primary"}
    assert "disabled" in report["error"]


def test_check_writes_nothing(keyed):
    before = keyed.snapshot()
    _check(keyed, "solo", KEY_A, 0)
    _check(keyed, "dev-9", KEY_C, 5)
    assert keyed.snapshot() == before


def test_check_with_an_invalid_registration_id(keyed):
    assert keyed("keys", "check", "--registration-id", "bad id", "--key", KEY_A).exit_code == 2


def test_keys_commands_write_no_files(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli.ok("keys", "generate")
    cli.ok("keys", "derive", "--group-key", GROUP_KEY, "--registration-id", "x")
    cli.ok("keys", "sas", "--registration-id", "x", "--key", KEY_A, "--id-scope", SCOPE)
    assert list(Path(tmp_path).iterdir()) == []
