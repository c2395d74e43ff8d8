"""`dpsctl provision --tpm`: software TPMs made with `dpsctl tpm create`, individual enrollments only."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from dpsctl.core.tpm import load_tpm
from tests.cli.provision_helpers import (
    HUB_A,
    REGISTRATION_STATE_FIELDS,
    connection_string_fields,
    devices,
    failed_checks,
    history,
    init,
    provision,
    refused,
    registration,
)
from tests.helpers.cli import Dps


@pytest.fixture(scope="module")
def tpms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Two software TPMs made through the CLI once per module (RSA key generation is slow)."""
    folder = tmp_path_factory.mktemp("tpm")
    cli = Dps(folder / "unused.json")  # `tpm create` does not touch the store
    made = {}
    for name in ("first", "second"):
        path = folder / f"{name}.tpm"
        created = cli.json("tpm", "create", str(path))
        assert cli.json("tpm", "show", str(path)) == created
        made[name] = {**created, "file": str(path)}
    return made


def test_tpm_create_and_show(tpms, tmp_path):
    first = tpms["first"]
    assert set(first) == {"registrationId", "endorsementKey", "storageRootKey", "file"}
    # The Node SDK's default registration ID: lower-case base32 of SHA-256(EK), no padding.
    assert first["registrationId"].islower() and "=" not in first["registrationId"]
    assert first["registrationId"] != tpms["second"]["registrationId"]
    assert oct(Path(first["file"]).stat().st_mode & 0o777) == "0o600"  # it holds the private keys
    again = Dps(tmp_path / "unused.json")("tpm", "create", first["file"])
    assert again.exit_code == 4, again


@pytest.mark.rule("§6/tpm-wire-structures", differs="no TPM 2.0 structures: the endorsement key is an RSA SubjectPublicKeyInfo and the challenge a key encrypted to it with RSA-OAEP")
def test_tpm_individual_enrollment(dps, tpms):
    tpm = tpms["first"]
    init(dps, "hub-a")
    dps.ok("enrollment", "add", tpm["registrationId"], "--attestation", "tpm", "--endorsement-key", tpm["endorsementKey"], "--storage-root-key", tpm["storageRootKey"])

    doc = provision(dps, "--tpm", tpm["file"])

    assert doc["status"] == "assigned"
    state = doc["registrationState"]
    assert REGISTRATION_STATE_FIELDS | {"tpm"} == set(state), state
    assert (state["registrationId"], state["deviceId"], state["assignedHub"], state["substatus"]) == (tpm["registrationId"], tpm["registrationId"], HUB_A, "initialAssignment")
    messages = [step["message"] for step in doc["explain"] if step["result"] == "ok"]
    assert any("holds the endorsement key's private key" in m for m in messages), doc["explain"]

    # The hub key comes back sealed to the EK (only this TPM can open it) and in the connection string.
    key = connection_string_fields(doc)["SharedAccessKey"]
    assert connection_string_fields(doc) == {"HostName": HUB_A, "DeviceId": tpm["registrationId"], "SharedAccessKey": key}
    opened = load_tpm(Path(tpm["file"])).activate_credential(state["tpm"]["authenticationKey"])
    assert base64.b64encode(opened).decode() == key
    hub_device = dps.json("device", "show", tpm["registrationId"], "--show-keys")
    assert hub_device["authentication"]["type"] == "sas"
    assert hub_device["authentication"]["symmetricKey"]["primaryKey"] == key
    assert registration(dps, tpm["registrationId"]) == state


def test_tpm_with_a_chosen_registration_id(dps, tpms):
    tpm = tpms["first"]
    init(dps, "hub-a")
    dps.ok("enrollment", "add", "furnace-7", "--attestation", "tpm", "--endorsement-key", tpm["endorsementKey"])
    doc = provision(dps, "--tpm", tpm["file"], "--registration-id", "furnace-7")
    assert doc["registrationState"]["registrationId"] == "furnace-7"
    assert devices(dps) == [(HUB_A, "furnace-7")]


def test_another_tpm_cannot_use_the_enrollment(dps, tpms):
    first, second = tpms["first"], tpms["second"]
    init(dps, "hub-a")
    dps.ok("enrollment", "add", first["registrationId"], "--attestation", "tpm", "--endorsement-key", first["endorsementKey"])

    doc, _ = refused(dps, "--tpm", second["file"], "--registration-id", first["registrationId"], code=5)

    assert "endorsement key is not the one in its enrollment" in failed_checks(doc)[0]
    assert dps("registration", "show", first["registrationId"]).exit_code == 3
    assert history(dps, first["registrationId"]) == [("unauthorized", None)]


def test_tpm_without_an_enrollment(dps, tpms):
    tpm = tpms["second"]
    init(dps, "hub-a")
    doc, stderr = refused(dps, "--tpm", tpm["file"], code=5)
    assert "need an individual enrollment" in failed_checks(doc)[0]
    assert f"dpsctl enrollment add {tpm['registrationId']} --attestation tpm" in stderr


def test_disabled_tpm_enrollment(dps, tpms):
    tpm = tpms["first"]
    init(dps, "hub-a")
    dps.ok("enrollment", "add", tpm["registrationId"], "--attestation", "tpm", "--endorsement-key", tpm["endorsementKey"], "--disabled")
    doc, _ = refused(dps, "--tpm", tpm["file"], code=6)
    assert doc["registrationState"]["status"] == "disabled"
    assert devices(dps) == []


def test_tpm_file_that_is_not_a_tpm(dps, tmp_path):
    init(dps, "hub-a")
    bogus = tmp_path / "bogus.tpm"
    bogus.write_text('{"format": "something else"}')
    run = dps("provision", "--tpm", str(bogus))
    assert run.exit_code == 2, run
    assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr
