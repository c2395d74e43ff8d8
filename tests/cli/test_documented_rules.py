"""Documented DPS rules that dpsctl used to bend (issue 16), each as a user meets it; named after the rule and its §."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from dpsctl.core.certs import issue_device, issue_intermediate, issue_root
from dpsctl.core.keys import derive_device_key
from tests.cli.provision_helpers import HUB_A, HUB_B, devices, failed_checks, init, provision, refused, registration, write_key, write_pem

GROUP_KEY = base64.b64encode(b"g" * 64).decode()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A root, an intermediate under it, and certificate files for both."""
    folder = tmp_path_factory.mktemp("chain")
    root = issue_root("fidelity root")
    intermediate = issue_intermediate("fidelity intermediate", *root)
    return {
        "folder": folder,
        "root": root,
        "intermediate": intermediate,
        "root_pem": write_pem(folder, "root.pem", root[0]),
        "intermediate_pem": write_pem(folder, "intermediate.pem", intermediate[0]),
    }


def _device(chain: dict, name: str, folder: Path) -> tuple[str, str, str]:
    """(leaf-only file, leaf+intermediate file, key file) of a device issued by the intermediate."""
    cert, key = issue_device(name, *chain["intermediate"])
    return (
        write_pem(folder, f"{name}.leaf.pem", cert),
        write_pem(folder, f"{name}.chain.pem", cert, chain["intermediate"][0]),
        write_key(folder, f"{name}.key.pem", key),
    )


# --------------------------------------------------------------------------- §5 one entry per certificate


@pytest.mark.rule("§5/one-entry-per-certificate")
def test_ref5_a_certificate_stands_in_only_one_enrollment_entry(dps, chain):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "line-1", "--attestation", "x509", "--signing-cert", chain["intermediate_pem"])
    before = dps.snapshot()

    second = dps("enrollment-group", "add", "line-2", "--attestation", "x509", "--signing-cert", chain["intermediate_pem"])

    assert second.exit_code == 4, second
    assert "already in enrollment group 'line-1'" in second.stderr and "only one enrollment entry" in second.stderr
    assert second.stderr.count("error: ") == 1 and "hint: " in second.stderr
    assert dps.snapshot() == before  # nothing written
    # A group may keep (or re-state) its own certificate; another group may not take it over by update.
    dps.ok("enrollment-group", "update", "line-1", "--signing-cert", chain["intermediate_pem"])
    dps.ok("enrollment-group", "add", "line-2", "--attestation", "x509", "--signing-cert", chain["root_pem"])
    takeover = dps("enrollment-group", "update", "line-2", "--signing-cert", chain["intermediate_pem"])
    assert takeover.exit_code == 4 and "line-1" in takeover.stderr


@pytest.mark.rule("§5/one-entry-per-certificate")
def test_ref5_an_uploaded_ca_stands_in_only_one_enrollment_entry(dps, chain):
    init(dps, "hub-a")
    dps.ok("ca", "add", "root-ca", "--cert", chain["root_pem"], "--verified")
    dps.ok("enrollment-group", "add", "by-ref", "--attestation", "x509", "--ca-ref", "root-ca")

    same_ref = dps("enrollment-group", "add", "by-ref-2", "--attestation", "x509", "--ca-ref", "root-ca")
    assert same_ref.exit_code == 4 and "CA reference 'root-ca'" in same_ref.stderr and "'by-ref'" in same_ref.stderr

    # The uploaded CA's certificate given again as a signing certificate: refer to the CA instead.
    dps.ok("enrollment-group", "delete", "by-ref")
    as_signing_cert = dps("enrollment-group", "add", "by-file", "--attestation", "x509", "--signing-cert", chain["root_pem"])
    assert as_signing_cert.exit_code == 4, as_signing_cert
    assert "is the CA certificate 'root-ca' uploaded to the service" in as_signing_cert.stderr
    assert "hint: refer to the uploaded CA instead: --ca-ref root-ca" in as_signing_cert.stderr
    assert [g["enrollmentGroupId"] for g in dps.json("enrollment-group", "list")] == []


@pytest.mark.rule("§5/one-entry-per-certificate")
def test_ref5_an_import_cannot_put_one_certificate_in_two_entries(dps, chain, tmp_path):
    init(dps, "hub-a")
    pem = Path(chain["intermediate_pem"]).read_text()
    group = {"attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": pem}}}}}
    doc = {"enrollmentGroups": [{"enrollmentGroupId": "a", **group}, {"enrollmentGroupId": "b", **group}]}
    path = tmp_path / "twice.json"
    path.write_text(json.dumps(doc))

    run = dps("import", str(path))

    assert run.exit_code == 4, run
    assert "enrollmentGroups 'b'" in run.stderr and "enrollment group 'a'" in run.stderr
    assert dps.json("enrollment-group", "list") == []


# --------------------------------------------------------------------------- §5 chains reach a verified certificate


@pytest.mark.rule("§5/individual-chain-reaches-verified-certificate")
@pytest.mark.parametrize("presented", ["leaf only", "leaf and intermediate"])
def test_ref5_an_individual_enrollment_chain_must_reach_a_verified_certificate(dps, chain, tmp_path, presented):
    init(dps, "hub-a")
    leaf, full, key = _device(chain, "meter-01", tmp_path)
    dps.ok("enrollment", "add", "meter-01", "--attestation", "x509", "--cert", leaf)
    cert_file = leaf if presented == "leaf only" else full

    # No CA uploaded: the chain leads nowhere verified.
    doc, stderr = refused(dps, "--cert", cert_file, "--key", key, code=5)
    assert doc["errorCode"] == 401002
    assert "reaches no verified certificate" in failed_checks(doc)[-1]
    assert "dpsctl ca add" in stderr
    assert dps("registration", "show", "meter-01").exit_code == 3

    # Uploaded but unverified: still nothing verified.
    dps.ok("ca", "add", "fleet-root", "--cert", chain["root_pem"])
    refused(dps, "--cert", cert_file, "--key", key, code=5)

    # Verified (here on upload, as `az iot dps certificate create --verified true`): the device provisions.
    dps.ok("ca", "delete", "fleet-root")
    dps.ok("ca", "add", "fleet-root", "--cert", chain["root_pem"], "--verified")
    state = provision(dps, "--cert", full, "--key", key)["registrationState"]
    assert (state["registrationId"], state["status"], state["assignedHub"]) == ("meter-01", "assigned", HUB_A)


@pytest.mark.rule("§5/individual-chain-reaches-verified-certificate")
def test_ref5_a_self_signed_device_certificate_needs_no_verified_ca(dps, tmp_path):
    init(dps, "hub-a")
    cert, key = issue_device("meter-02", None, None)
    cert_file, key_file = write_pem(tmp_path, "meter-02.pem", cert), write_key(tmp_path, "meter-02.key", key)
    dps.ok("enrollment", "add", "meter-02", "--attestation", "x509", "--cert", cert_file)
    doc = provision(dps, "--cert", cert_file, "--key", key_file)
    assert doc["status"] == "assigned"
    assert any("self-signed" in step["message"] for step in doc["explain"])


@pytest.mark.rule(
    "§5/group-chain-reaches-verified-certificate",
    differs="a group's own signing certificate counts as verified (automatic verification), so its devices need no uploaded CA",
)
def test_ref5_a_group_signing_certificate_counts_as_verified(dps, chain, tmp_path):
    init(dps, "hub-a")
    _, full, key = _device(chain, "meter-03", tmp_path)
    dps.ok("enrollment-group", "add", "meters", "--attestation", "x509", "--signing-cert", chain["intermediate_pem"])
    assert dps.json("ca", "list") == []
    state = provision(dps, "--cert", full, "--key", key)["registrationState"]
    assert state["x509"]["enrollmentGroupId"] == "meters"


# --------------------------------------------------------------------------- §1 custom allocation api-version


@pytest.mark.rule("§1/custom-allocation-api-version-minimum")
@pytest.mark.parametrize(
    ("version", "accepted"),
    [("2018-09-01-preview", True), ("2019-03-31", True), ("2021-10-01", True), ("2021-10-01-PREVIEW", True),
     ("2018-08-31", False), ("2017-01-01", False), ("2018-09-01x", False), ("2021-13-01", False), ("banana", False), ("", True)],
)
def test_ref1_custom_allocation_api_version_is_at_least_2018_09_01_preview(dps, version, accepted):
    init(dps, "hub-a")
    run = dps("enrollment-group", "add", "g", "--attestation", "symmetricKey", "--webhook-url", "https://example.com/api/f", "--api-version", version, "-o", "json")
    if not accepted:
        assert run.exit_code == 2, run
        assert "api-version" in run.stderr and "2018-09-01-preview" in run.stderr
        assert dps("enrollment-group", "show", "g").exit_code == 3
        return
    assert run.exit_code == 0, run
    assert run.json()["customAllocationDefinition"]["apiVersion"] == (version.lower() or "2021-10-01")


@pytest.mark.rule("§1/custom-allocation-api-version-minimum")
def test_ref1_an_import_with_an_old_api_version_is_refused(dps, tmp_path):
    init(dps, "hub-a")
    group = {"enrollmentGroupId": "g", "attestation": {"type": "symmetricKey"}, "allocationPolicy": "custom",
             "customAllocationDefinition": {"webhookUrl": "https://example.com/api/f", "apiVersion": "2017-08-31-preview"}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"enrollmentGroups": [group]}))
    run = dps("import", str(path))
    assert run.exit_code == 2 and "2017-08-31-preview" in run.stderr and "older than 2018-09-01-preview" in run.stderr


# --------------------------------------------------------------------------- §13 linked hubs have a location


@pytest.mark.rule("§13/linked-hub-has-a-location")
def test_ref13_a_hub_linked_without_a_location_gets_the_services(dps, tmp_path):
    dps.ok("init")
    assert dps.json("hub", "add", "hub-a")["location"] == "eastus"  # the service has no location yet
    dps.ok("service", "update", "--location", "West Europe")
    assert dps.json("hub", "add", "hub-b")["location"] == "westeurope"
    assert dps.json("hub", "add", "hub-c", "--location", "japaneast")["location"] == "japaneast"
    path = tmp_path / "hubs.json"
    path.write_text(json.dumps({"linkedHubs": [{"name": "hub-d", "location": None}]}))
    dps.ok("import", str(path))
    assert {h["name"]: h["location"] for h in dps.json("hub", "list")} == {
        "hub-a.azure-devices.net": "eastus",
        "hub-b.azure-devices.net": "westeurope",
        "hub-c.azure-devices.net": "japaneast",
        "hub-d.azure-devices.net": "westeurope",
    }


# --------------------------------------------------------------------------- §12 registration IDs are case-insensitive


@pytest.mark.rule("§12/registration-id-case-insensitive")
def test_ref12_one_registration_whatever_the_case_of_its_id(dps):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)
    first = provision(dps, "--registration-id", "symdev", "--symmetric-key", derive_device_key(GROUP_KEY, "symdev"))["registrationState"]

    # The same device shouting its ID: a key derived from that spelling verifies, and it is the same registration.
    again = provision(dps, "--registration-id", "SYMDEV", "--symmetric-key", derive_device_key(GROUP_KEY, "SYMDEV"))["registrationState"]

    assert (again["registrationId"], again["deviceId"], again["assignedHub"]) == ("symdev", "symdev", HUB_A)
    assert again["createdDateTimeUtc"] == first["createdDateTimeUtc"]
    assert devices(dps) == [(HUB_A, "symdev")]  # hub device IDs are case-sensitive: it is not renamed
    assert registration(dps, "SYMDEV")["registrationId"] == "symdev"
    assert [r["registrationId"] for r in dps.json("registration", "list")] == ["symdev"]


@pytest.mark.rule("§12/registration-id-case-insensitive")
def test_ref12_an_individual_enrollment_spells_its_registration(dps):
    key = base64.b64encode(b"k" * 32).decode()
    init(dps, "hub-a")
    dps.ok("enrollment", "add", "Sensor-7", "--attestation", "symmetricKey", "--primary-key", key)
    state = provision(dps, "--registration-id", "sensor-7", "--symmetric-key", key)["registrationState"]
    assert (state["registrationId"], state["deviceId"]) == ("Sensor-7", "Sensor-7")
    assert devices(dps) == [(HUB_A, "Sensor-7")]


# --------------------------------------------------------------------------- §9 custom allocation webhook


@pytest.mark.rule("§9/webhook-url-masked-in-request")
def test_ref9_the_webhook_never_receives_its_own_function_key(dps, webhook):
    init(dps, "hub-a")
    url = webhook.url.replace("code=s3cret", "code=s3cret&x=1")
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY, "--webhook-url", url)
    provision(dps, "--registration-id", "dev-1", "--symmetric-key", derive_device_key(GROUP_KEY, "dev-1"))

    [call] = webhook.requests
    assert call["path"].endswith("?code=s3cret&x=1")  # the call itself authenticates with the key
    definition = call["body"]["enrollmentGroup"]["customAllocationDefinition"]
    assert definition == {"webhookUrl": url.split("?")[0] + "?****", "apiVersion": "2021-10-01"}
    assert "s3cret" not in json.dumps(call["body"])


@pytest.mark.rule("§9/initial-twin-on-reprovisioning")
def test_ref9_the_webhook_initial_twin_counts_on_reprovisioning_only_when_the_hub_changes_and_data_resets(dps, webhook):
    init(dps, "hub-a", "hub-b")
    answers = {"hub": HUB_A}
    webhook.respond = lambda request: (200, {"iotHubHostName": answers["hub"], "initialTwin": {"tags": {"from": "webhook", "to": answers["hub"]}}})
    dps.ok(
        "enrollment-group", "add", "fleet", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY, "--webhook-url", webhook.url,
        "--reprovision-policy", "reprovisionandresetdata", "--initial-twin", '{"tags": {"from": "enrollment"}}',
    )
    key = derive_device_key(GROUP_KEY, "dev-1")

    def register_and_read_tags() -> tuple[str, dict]:
        doc = provision(dps, "--registration-id", "dev-1", "--symmetric-key", key)
        device = dps.json("device", "show", "dev-1")
        return doc["registrationState"]["substatus"], device["tags"]

    # Initial assignment: the webhook's twin.
    assert register_and_read_tags() == ("initialAssignment", {"from": "webhook", "to": HUB_A})
    # Reset on the same hub: DPS ignores the webhook's twin; the entry's initial twin applies.
    assert register_and_read_tags() == ("deviceDataReset", {"from": "enrollment"})
    # Reset onto another hub: the webhook's twin applies.
    answers["hub"] = HUB_B
    assert register_and_read_tags() == ("deviceDataReset", {"from": "webhook", "to": HUB_B})
    # Migrating to another hub keeps the twin; the webhook's is ignored.
    dps.ok("enrollment-group", "update", "fleet", "--reprovision-policy", "reprovisionandmigratedata")
    answers["hub"] = HUB_A
    assert register_and_read_tags() == ("reprovisionedToInitialAssignment", {"from": "webhook", "to": HUB_B})


# --------------------------------------------------------------------------- §7.8 registration records


@pytest.mark.rule("§7.8/registration-records-outlive-their-group")
def test_ref7_registration_records_outlive_their_deleted_group(dps):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)
    provision(dps, "--registration-id", "dev-9", "--symmetric-key", derive_device_key(GROUP_KEY, "dev-9"))
    dps.ok("enrollment-group", "delete", "fleet")
    record = registration(dps, "dev-9")
    assert (record["status"], record["assignedHub"], record["symmetricKey"]["enrollmentGroupId"]) == ("assigned", HUB_A, "fleet")


# --------------------------------------------------------------------------- §2.5 the engine's answer to an unknown chain


@pytest.mark.rule("§2.5/x509-without-enrollment-401")
def test_ref2_an_unknown_chain_accepted_at_tls_is_refused_by_the_engine_with_the_dps_401(dps, chain):
    """What a front end that accepts any client certificate at TLS hands the engine: the presented chain, possession
    already proven by the handshake. The engine answers DPS's 401 body and writes no registration."""
    from datetime import datetime, timezone

    from dpsctl.core.attestation import X509Credential
    from dpsctl.core.provisioning import RegistrationRequest
    from dpsctl.core.provisioning import provision as run_engine
    from dpsctl.store import open_store

    init(dps, "hub-a")
    stranger = issue_root("stranger root")
    cert, _ = issue_device("lost-01", *stranger)
    before = dps.snapshot()
    with open_store(dps.store).transaction(write=True) as tx:
        result = run_engine(tx, RegistrationRequest(X509Credential((cert, stranger[0]), prove=None)), datetime.now(timezone.utc))

    assert result.status == "unauthorized" and result.error is not None
    assert set(result.operation) == {"errorCode", "trackingId", "message", "timestampUtc"}
    assert result.operation["errorCode"] == 401002 and "no enrollment matches" in result.operation["message"]
    assert dps.snapshot()["registrations"] == before["registrations"] == []
