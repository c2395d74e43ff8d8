"""az's spellings, as a user of `az iot dps` types them with the prefix changed: every alias, its meaning and its JSON."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.helpers.cli import Dps

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
HUB1 = "hub-1.azure-devices.net"
HUB2 = "hub-2.azure-devices.net"
RESOURCE = ("--dps-name", "my-dps", "-g", "my-rg")


@pytest.fixture
def az(tmp_path: Path) -> Dps:
    """dpsctl on a fresh store, with two linked hubs (az's scripts link them first)."""
    runner = Dps(tmp_path / "dps.json")
    runner.ok("hub", "add", HUB1)
    runner.ok("hub", "add", HUB2)
    return runner


def js(az: Dps, *args: str) -> object:
    """Run with az's default output, JSON."""
    return az.ok(*args, "-o", "json").json()


# --------------------------------------------------------------------------- individual enrollments


def test_enrollment_create_takes_every_az_option_with_az_meaning(az: Dps) -> None:
    doc = js(
        az, "enrollment", "create", *RESOURCE, "--auth-type", "key",
        "--enrollment-id", "dev-1", "--attestation-type", "symmetrickey", "--primary-key", KEY_A, "--secondary-key", KEY_B,
        "--device-id", "thermostat-1", "--provisioning-status", "disabled",
        "--initial-twin-tags", "{'location': {'region': 'US'}}", "--initial-twin-properties", '{"interval": 30}',
        "--device-information", '{"model": "t1"}',
        "--reprovision-policy", "reprovisionandresetdata", "--allocation-policy", "hashed", "--iot-hubs", HUB1, HUB2,
        "--edge-enabled", "true", "--show-keys",
    )
    assert doc["registrationId"] == "dev-1" and doc["deviceId"] == "thermostat-1"
    assert doc["attestation"]["symmetricKey"] == {"primaryKey": KEY_A, "secondaryKey": KEY_B}
    assert doc["provisioningStatus"] == "disabled"
    assert doc["initialTwin"] == {"tags": {"location": {"region": "US"}}, "properties": {"desired": {"interval": 30}}}
    assert doc["optionalDeviceInformation"] == {"model": "t1"}
    assert doc["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": False}
    assert doc["allocationPolicy"] == "hashed" and doc["iotHubs"] == [HUB1, HUB2]
    assert doc["capabilities"] == {"iotEdge": True}


def test_enrollment_create_short_names(az: Dps) -> None:
    doc = js(
        az, "enrollment", "create", "-n", "my-dps", "--resource-group", "my-rg",
        "--eid", "dev-2", "--at", "symmetricKey", "--pk", KEY_A, "--sk", KEY_B, "--ps", "enabled",
        "--tags", '{"a": 1}', "--props", '{"b": 2}', "--info", '{"c": 3}', "--rp", "never", "--ap", "static", "--ih", HUB2,
        "--ee", "--keys", "true",
    )
    assert doc["attestation"]["symmetricKey"]["primaryKey"] == KEY_A and doc["provisioningStatus"] == "enabled"
    assert doc["initialTwin"] == {"tags": {"a": 1}, "properties": {"desired": {"b": 2}}} and doc["optionalDeviceInformation"] == {"c": 3}
    assert doc["reprovisionPolicy"] == {"updateHubAssignment": False, "migrateDeviceData": False}
    assert doc["allocationPolicy"] == "static" and doc["iotHubs"] == [HUB2] and doc["capabilities"]["iotEdge"] is True


def test_enrollment_create_x509_tpm_and_custom_allocation(az: Dps, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for reg in ("x509-dev", "x509-dev2"):
        az.ok("cert", "create-device", reg, "--out", str(tmp_path))
        az.ok("cert", "create-device", reg, "--out", str(tmp_path / "b"))
    cert, second = str(tmp_path / "x509-dev.cert.pem"), str(tmp_path / "b" / "x509-dev.cert.pem")
    doc = js(az, "enrollment", "create", "--eid", "x509-dev", "--attestation-type", "x509", "--certificate-path", cert, "--secondary-certificate-path", second)
    assert set(doc["attestation"]["x509"]["clientCertificates"]) == {"primary", "secondary"}
    doc = js(az, "enrollment", "create", "--eid", "x509-dev2", "--at", "x509", "--cp", str(tmp_path / "x509-dev2.cert.pem"), "--scp", str(tmp_path / "b" / "x509-dev2.cert.pem"))
    assert set(doc["attestation"]["x509"]["clientCertificates"]) == {"primary", "secondary"}
    az.ok("tpm", "create", str(tmp_path / "t.tpm"))
    ek = json.loads(az.ok("tpm", "show", str(tmp_path / "t.tpm"), "-o", "json").stdout)["endorsementKey"]
    for names in (("--endorsement-key",), ("--ek",)):
        reg = f"tpm-{len(names[0])}"
        doc = js(az, "enrollment", "create", "--eid", reg, "--at", "tpm", names[0], ek)
        assert doc["attestation"]["tpm"]["endorsementKey"] == ek
    doc = js(az, "enrollment", "create", "--eid", "custom-1", "--at", "symmetricKey", "--ap", "custom", "--webhook-url", "https://example.test/alloc", "--api-version", "2021-10-01")
    assert doc["customAllocationDefinition"] == {"webhookUrl": "https://example.test/alloc", "apiVersion": "2021-10-01"}
    doc = js(az, "enrollment", "create", "--eid", "custom-2", "--at", "symmetricKey", "--allocation-policy", "custom", "--wh", "https://example.test/b", "--av", "2019-03-31")
    assert doc["customAllocationDefinition"] == {"webhookUrl": "https://example.test/b", "apiVersion": "2019-03-31"}


def test_enrollment_show_list_and_keys_as_az(az: Dps) -> None:
    az.ok("enrollment", "create", "--eid", "dev-1", "--at", "symmetricKey", "--pk", KEY_A, "--sk", KEY_B)
    az.ok("enrollment", "create", "--eid", "dev-2", "--at", "symmetricKey")
    assert "primaryKey" not in js(az, "enrollment", "show", "--enrollment-id", "dev-1")["attestation"]["symmetricKey"]
    for keys in (["--show-keys"], ["--keys"], ["--show-keys", "true"], ["--keys", "yes"]):
        assert az.ok("enrollment", "show", "--eid", "dev-1", *keys, "--query", "attestation.symmetricKey.primaryKey", "-o", "tsv").stdout == KEY_A + "\n"
    assert js(az, "enrollment", "show", "--eid", "dev-1", "--show-keys", "false")["attestation"]["symmetricKey"] == {}
    assert az.ok("enrollment", "list", *RESOURCE, "--top", "1", "--query", "[].registrationId", "-o", "tsv").stdout == "dev-1\n"
    assert len(js(az, "enrollment", "list", "--top", "-1")) == 2
    assert az.ok("enrollment", "list", "--keys", "--query", "[0].attestation.symmetricKey.primaryKey", "-o", "tsv").stdout == KEY_A + "\n"


def test_enrollment_update_with_etags_and_twin_halves(az: Dps) -> None:
    az.ok("enrollment", "create", "--eid", "dev-1", "--at", "symmetricKey", "--tags", '{"a": 1}', "--props", '{"b": 2}')
    etag = az.ok("enrollment", "show", "--eid", "dev-1", "--query", "etag", "-o", "tsv").stdout.strip()
    doc = js(az, "enrollment", "update", *RESOURCE, "--eid", "dev-1", "--etag", etag, "--provisioning-status", "disabled", "--initial-twin-tags", '{"a": 9}', "--edge-enabled", "false", "--device-id", "d1")
    assert doc["provisioningStatus"] == "disabled" and doc["capabilities"]["iotEdge"] is False and doc["deviceId"] == "d1"
    assert doc["initialTwin"] == {"tags": {"a": 9}, "properties": {"desired": {"b": 2}}}  # the other half is kept, as az merges
    stale = az("enrollment", "update", "--eid", "dev-1", "-e", etag, "--ps", "enabled")
    assert stale.exit_code == 4 and "changed since etag" in stale.stderr
    doc = js(
        az, "enrollment", "update", "--enrollment-id", "dev-1", "-e", "*", "--ps", "enabled", "--props", '{"b": 3}', "--ee", "--rp", "never",
        "--ap", "static", "--ih", HUB1, "--pk", KEY_A, "--sk", KEY_B, "--show-keys", "--info", '{"m": 1}',
    )
    assert doc["provisioningStatus"] == "enabled" and doc["capabilities"]["iotEdge"] is True
    assert doc["initialTwin"]["properties"]["desired"] == {"b": 3} and doc["iotHubs"] == [HUB1]
    assert doc["attestation"]["symmetricKey"]["primaryKey"] == KEY_A and doc["optionalDeviceInformation"] == {"m": 1}
    doc = js(az, "enrollment", "update", "--eid", "dev-1", "--allocation-policy", "custom", "--webhook-url", "https://example.test/x", "--api-version", "2021-10-01")
    assert doc["allocationPolicy"] == "custom"
    doc = js(az, "enrollment", "update", "--eid", "dev-1", "--wh", "https://example.test/y", "--av", "2019-03-31", "--reprovision-policy", "reprovisionandmigratedata", "--iot-hubs", HUB2, "--keys", "false")
    assert doc["customAllocationDefinition"] == {"webhookUrl": "https://example.test/y", "apiVersion": "2019-03-31"}
    assert doc["attestation"]["symmetricKey"] == {}


def test_enrollment_update_removes_certificates_and_takes_new_ones(az: Dps, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    az.ok("cert", "create-device", "x1", "--out", str(tmp_path))
    az.ok("cert", "create-device", "x1", "--out", str(tmp_path / "b"))
    first, second = str(tmp_path / "x1.cert.pem"), str(tmp_path / "b" / "x1.cert.pem")
    az.ok("enrollment", "create", "--eid", "x1", "--at", "x509", "--cp", first, "--scp", second)
    certs = js(az, "enrollment", "update", "--eid", "x1", "--remove-secondary-certificate")["attestation"]["x509"]["clientCertificates"]
    assert set(certs) == {"primary"}
    certs = js(az, "enrollment", "update", "--eid", "x1", "--rc", "true", "--certificate-path", second)["attestation"]["x509"]["clientCertificates"]
    assert set(certs) == {"primary"}
    certs = js(az, "enrollment", "update", "--eid", "x1", "--secondary-certificate-path", first, "--rsc", "false")["attestation"]["x509"]["clientCertificates"]
    assert set(certs) == {"primary", "secondary"}
    certs = js(az, "enrollment", "update", "--eid", "x1", "--remove-certificate")["attestation"]["x509"]["clientCertificates"]
    assert set(certs) == {"primary"}  # the lone secondary becomes the primary, as DPS keeps one
    lone = az("enrollment", "update", "--eid", "x1", "--rc")
    assert lone.exit_code == 2 and "would have no certificate" in lone.stderr
    az.ok("enrollment", "create", "--eid", "sk", "--at", "symmetricKey")
    wrong = az("enrollment", "update", "--eid", "sk", "--rc")
    assert wrong.exit_code == 2 and "--remove-certificate does not apply to symmetricKey" in wrong.stderr
    az.ok("tpm", "create", str(tmp_path / "t.tpm"))
    ek = json.loads(az.ok("tpm", "show", str(tmp_path / "t.tpm"), "-o", "json").stdout)["endorsementKey"]
    az.ok("enrollment", "create", "--eid", "tpm-1", "--at", "tpm", "--ek", ek)
    assert js(az, "enrollment", "update", "--eid", "tpm-1", "--endorsement-key", ek)["attestation"]["tpm"]["endorsementKey"] == ek
    assert js(az, "enrollment", "update", "--eid", "tpm-1", "--ek", ek)["attestation"]["type"] == "tpm"


def test_enrollment_delete_prints_nothing_and_honours_etag(az: Dps) -> None:
    az.ok("enrollment", "create", "--eid", "dev-1", "--at", "symmetricKey")
    az.ok("enrollment", "create", "--eid", "dev-2", "--at", "symmetricKey")
    assert az("enrollment", "delete", *RESOURCE, "--eid", "dev-1", "--etag", '"nope"').exit_code == 4
    run = az.ok("enrollment", "delete", *RESOURCE, "--enrollment-id", "dev-1", "--etag", "*")
    assert run.stdout == ""
    assert az.ok("enrollment", "delete", "--eid", "dev-2", "-e", "*", "-o", "json").stdout == ""
    assert js(az, "enrollment", "list") == []


def test_the_id_as_argument_and_as_option_must_agree(az: Dps) -> None:
    az.ok("enrollment", "create", "--eid", "dev-1", "--at", "symmetricKey")
    assert az.ok("enrollment", "show", "dev-1", "--eid", "dev-1", "-o", "json").json()["registrationId"] == "dev-1"
    clash = az("enrollment", "show", "dev-1", "--eid", "dev-2")
    assert clash.exit_code == 2 and "--enrollment-id" in clash.stderr and "give one of them" in clash.stderr
    missing = az("enrollment", "show")
    assert missing.exit_code == 2 and "REGISTRATION_ID" in missing.stderr and "--eid" in missing.stderr


# --------------------------------------------------------------------------- enrollment groups


def test_group_create_defaults_to_symmetric_key_and_takes_every_option(az: Dps) -> None:
    doc = js(
        az, "enrollment-group", "create", *RESOURCE, "--enrollment-id", "g1", "--pk", KEY_A, "--sk", KEY_B, "--ps", "disabled",
        "--initial-twin-tags", '{"t": 1}', "--initial-twin-properties", '{"p": 2}', "--rp", "reprovisionandresetdata",
        "--ap", "hashed", "--ih", f"{HUB1} {HUB2}", "--ee", "true", "--show-keys",
    )
    assert doc["enrollmentGroupId"] == "g1" and doc["attestation"]["type"] == "symmetricKey"
    assert doc["attestation"]["symmetricKey"] == {"primaryKey": KEY_A, "secondaryKey": KEY_B}
    assert doc["provisioningStatus"] == "disabled" and doc["iotHubs"] == [HUB1, HUB2] and doc["capabilities"]["iotEdge"] is True
    assert doc["initialTwin"] == {"tags": {"t": 1}, "properties": {"desired": {"p": 2}}}
    for names in (("--eid", "g2"), ("--group-id", "g3"), ("--gid", "g4")):
        assert js(az, "enrollment-group", "create", *names, "--primary-key", KEY_A, "--secondary-key", KEY_B, "--keys")["attestation"]["symmetricKey"]["primaryKey"] == KEY_A
    doc = js(
        az, "enrollment-group", "create", "--gid", "g5", "--provisioning-status", "enabled", "--tags", "{}", "--props", "{'x': 1}",
        "--reprovision-policy", "never", "--allocation-policy", "custom", "--webhook-url", "https://example.test/a", "--api-version", "2021-10-01",
        "--edge-enabled", "false", "--iot-hubs", HUB1,
    )
    assert doc["customAllocationDefinition"]["webhookUrl"] == "https://example.test/a" and doc["capabilities"]["iotEdge"] is False
    doc = js(az, "enrollment-group", "create", "--gid", "g6", "--ap", "custom", "--wh", "https://example.test/b", "--av", "2021-10-01", "--ee")
    assert doc["allocationPolicy"] == "custom"


def test_group_create_x509_by_certificate_or_ca_name(az: Dps, tmp_path: Path) -> None:
    # A certificate may stand in one enrollment entry only (DPS): each group gets roots of its own.
    roots = {}
    for n in range(1, 11):
        az.ok("cert", "create-root", f"r{n}", "--out", str(tmp_path))
        roots[n] = str(tmp_path / f"r{n}.cert.pem")
    root, root2 = roots[1], roots[2]
    doc = js(az, "enrollment-group", "create", "--gid", "x1", "--certificate-path", root, "--secondary-certificate-path", root2)
    assert doc["attestation"]["type"] == "x509" and set(doc["attestation"]["x509"]["signingCertificates"]) == {"primary", "secondary"}
    doc = js(az, "enrollment-group", "create", "--gid", "x2", "--cp", roots[3], "--scp", roots[4])
    assert set(doc["attestation"]["x509"]["signingCertificates"]) == {"primary", "secondary"}
    az.ok("certificate", "create", "--name", "ca-1", "--path", roots[5], "--verified")
    az.ok("certificate", "create", "--name", "ca-2", "--path", roots[6], "--verified", "true")
    for n, (ca, secondary_ca) in ((7, ("ca-3", "ca-4")), (9, ("ca-5", "ca-6"))):
        az.ok("certificate", "create", "--name", ca, "--path", roots[n], "--verified")
        az.ok("certificate", "create", "--name", secondary_ca, "--path", roots[n + 1], "--verified")
    for (primary, secondary, gid), (ca, secondary_ca) in zip(
        (("--root-ca-name", "--secondary-root-ca-name", "x3"), ("--ca-name", "--secondary-ca-name", "x4"), ("--cn", "--scn", "x5")),
        (("ca-1", "ca-2"), ("ca-3", "ca-4"), ("ca-5", "ca-6")),
    ):
        refs = js(az, "enrollment-group", "create", "--gid", gid, primary, ca, secondary, secondary_ca)["attestation"]["x509"]["caReferences"]
        assert refs == {"primary": ca, "secondary": secondary_ca}
    refs = js(az, "enrollment-group", "update", "--gid", "x3", "--cn", "ca-2", "--scn", "ca-1")["attestation"]["x509"]["caReferences"]
    assert refs == {"primary": "ca-2", "secondary": "ca-1"}
    refs = js(az, "enrollment-group", "update", "--gid", "x3", "--root-ca-name", "ca-1", "--secondary-root-ca-name", "ca-2", "--ca-name", "ca-1")["attestation"]["x509"]["caReferences"]
    assert refs["primary"] == "ca-1"
    certs = js(az, "enrollment-group", "update", "--gid", "x1", "--remove-secondary-certificate", "--certificate-path", root2)["attestation"]["x509"]["signingCertificates"]
    assert set(certs) == {"primary"}
    certs = js(az, "enrollment-group", "update", "--gid", "x1", "--scp", root, "--rc", "false", "--rsc", "false")["attestation"]["x509"]["signingCertificates"]
    assert set(certs) == {"primary", "secondary"}
    certs = js(az, "enrollment-group", "update", "--gid", "x1", "--remove-certificate", "--cp", root)["attestation"]["x509"]["signingCertificates"]
    assert set(certs) == {"primary", "secondary"}
    certs = js(az, "enrollment-group", "update", "--gid", "x1", "--secondary-certificate-path", root2, "--rc", "false")["attestation"]["x509"]["signingCertificates"]
    assert set(certs) == {"primary", "secondary"}


def test_group_show_list_update_delete(az: Dps) -> None:
    az.ok("enrollment-group", "create", "--gid", "g1", "--pk", KEY_A, "--sk", KEY_B)
    az.ok("enrollment-group", "create", "--gid", "g2")
    assert js(az, "enrollment-group", "show", *RESOURCE, "--enrollment-id", "g1")["attestation"]["symmetricKey"] == {}
    for names in (("--eid", "g1", "--show-keys"), ("--group-id", "g1", "--keys"), ("--gid", "g1", "--keys", "true")):
        assert az.ok("enrollment-group", "show", *names, "--query", "attestation.symmetricKey.secondaryKey", "-o", "tsv").stdout == KEY_B + "\n"
    assert az.ok("enrollment-group", "list", *RESOURCE, "--top", "1", "--query", "[].enrollmentGroupId", "-o", "tsv").stdout == "g1\n"
    assert az.ok("enrollment-group", "list", "--show-keys", "--query", "[0].attestation.symmetricKey.primaryKey", "-o", "tsv").stdout == KEY_A + "\n"
    etag = az.ok("enrollment-group", "show", "--gid", "g1", "--query", "etag", "-o", "tsv").stdout.strip()
    doc = js(
        az, "enrollment-group", "update", *RESOURCE, "--enrollment-id", "g1", "--etag", etag, "--provisioning-status", "disabled",
        "--initial-twin-tags", '{"x": 1}', "--initial-twin-properties", '{"y": 2}', "--reprovision-policy", "never", "--allocation-policy", "static",
        "--iot-hubs", HUB2, "--edge-enabled", "true", "--primary-key", KEY_B, "--secondary-key", KEY_A, "--show-keys",
    )
    assert doc["provisioningStatus"] == "disabled" and doc["iotHubs"] == [HUB2] and doc["attestation"]["symmetricKey"]["primaryKey"] == KEY_B
    assert js(az, "enrollment-group", "update", "--eid", "g1", "-e", "*", "--ps", "enabled", "--tags", '{"x": 2}', "--ee", "false")["initialTwin"] == {"tags": {"x": 2}, "properties": {"desired": {"y": 2}}}
    doc = js(az, "enrollment-group", "update", "--group-id", "g1", "--props", "{'y': 3}", "--rp", "reprovisionandresetdata", "--ap", "hashed", "--ih", HUB1, "--pk", KEY_A, "--sk", KEY_B, "--keys")
    assert doc["initialTwin"]["properties"]["desired"] == {"y": 3} and doc["attestation"]["symmetricKey"]["primaryKey"] == KEY_A
    doc = js(az, "enrollment-group", "update", "--gid", "g2", "--webhook-url", "https://example.test/a", "--api-version", "2021-10-01", "--ee")
    assert doc["allocationPolicy"] == "custom"
    doc = js(az, "enrollment-group", "update", "--gid", "g2", "--wh", "https://example.test/b", "--av", "2019-03-31")
    assert doc["customAllocationDefinition"]["apiVersion"] == "2019-03-31"
    assert az("enrollment-group", "delete", "--gid", "g1", "--etag", '"stale"').exit_code == 4
    assert az.ok("enrollment-group", "delete", *RESOURCE, "--enrollment-id", "g1", "-e", "*").stdout == ""
    assert az.ok("enrollment-group", "delete", "--group-id", "g2").stdout == ""
    az.ok("enrollment-group", "create", "--gid", "g3")
    assert az.ok("enrollment-group", "delete", "--eid", "g3").stdout == ""


def test_compute_device_key_online_offline_and_hidden_alias(az: Dps) -> None:
    from dpsctl.core.keys import derive_device_key

    az.ok("enrollment-group", "create", "--gid", "g1", "--pk", KEY_A, "--sk", KEY_B)
    expected = derive_device_key(KEY_A, "dev-1")
    assert js(az, "enrollment-group", "compute-device-key", *RESOURCE, "--enrollment-id", "g1", "--registration-id", "dev-1") == expected  # a JSON string
    assert az.ok("enrollment-group", "compute-device-key", "--gid", "g1", "--rid", "dev-1", "-o", "tsv").stdout == expected + "\n"
    assert az.ok("enrollment-group", "compute-device-key", "--group-id", "g1", "--rid", "dev-1", "-o", "tsv").stdout == expected + "\n"
    assert az.ok("enrollment-group", "compute-device-key", "--eid", "g1", "--rid", "dev-1", "-o", "tsv").stdout == expected + "\n"
    assert js(az, "enrollment-group", "compute-device-key", "--symmetric-key", KEY_A, "--rid", "dev-1") == expected
    assert js(az, "compute-device-key", *RESOURCE, "--key", KEY_A, "--registration-id", "dev-1") == expected
    assert js(az, "compute-device-key", "--gid", "g1", "--rid", "dev-1") == expected
    assert js(az, "enrollment-group", "compute-device-key", "--registration-id", "dev-1", "--group-key", KEY_A) == expected
    nothing = az("compute-device-key", "--rid", "dev-1")
    assert nothing.exit_code == 2 and "--group-key" in nothing.stderr


# --------------------------------------------------------------------------- registrations


def _provision_group_device(az: Dps, group: str, registration_id: str) -> None:
    az.ok("device", "registration", "create", "--rid", registration_id, "--gid", group)


def test_registration_records_by_every_az_path(az: Dps) -> None:
    az.ok("enrollment-group", "create", "--gid", "g1")
    for n in (1, 2, 3, 4):
        _provision_group_device(az, "g1", f"dev-{n}")
    az.ok("enrollment", "create", "--eid", "solo", "--at", "symmetricKey")
    az.ok("device", "registration", "create", "--rid", "solo")
    assert js(az, "enrollment", "registration", "show", *RESOURCE, "--enrollment-id", "solo")["status"] == "assigned"
    assert js(az, "enrollment", "registration", "show", "--eid", "solo")["registrationId"] == "solo"
    assert js(az, "enrollment-group", "registration", "show", *RESOURCE, "--registration-id", "dev-1")["symmetricKey"] == {"enrollmentGroupId": "g1"}
    assert js(az, "enrollment-group", "registration", "show", "--rid", "dev-2")["deviceId"] == "dev-2"
    assert js(az, "registration", "show", *RESOURCE, "--rid", "dev-3")["status"] == "assigned"
    assert js(az, "registration", "show", "--registration-id", "dev-3")["status"] == "assigned"
    listed = js(az, "enrollment-group", "registration", "list", *RESOURCE, "--enrollment-id", "g1")
    assert sorted(d["registrationId"] for d in listed) == ["dev-1", "dev-2", "dev-3", "dev-4"]
    assert len(js(az, "enrollment-group", "registration", "list", "--eid", "g1", "--top", "2")) == 2
    assert len(js(az, "enrollment-group", "registration", "list", "--group-id", "g1")) == 4
    assert len(js(az, "registration", "list", *RESOURCE, "--gid", "g1", "--top", "3")) == 3
    etag = az.ok("enrollment", "registration", "show", "--eid", "solo", "--query", "etag", "-o", "tsv").stdout.strip()
    assert az("enrollment", "registration", "delete", "--eid", "solo", "--etag", '"stale"').exit_code == 4
    assert az.ok("enrollment", "registration", "delete", *RESOURCE, "--enrollment-id", "solo", "--etag", etag).stdout == ""
    assert az.ok("enrollment-group", "registration", "delete", *RESOURCE, "--registration-id", "dev-1", "-e", "*").stdout == ""
    assert az.ok("enrollment-group", "registration", "delete", "--rid", "dev-2").stdout == ""
    assert az.ok("registration", "delete", *RESOURCE, "--rid", "dev-3", "--etag", "*").stdout == ""
    assert az.ok("registration", "delete", "--eid", "dev-4").stdout == ""
    assert js(az, "registration", "list") == []
    assert az("enrollment", "registration", "show", "--eid", "solo").exit_code == 3


# --------------------------------------------------------------------------- the resource options and --login


def test_login_must_be_this_stores_connection_string(az: Dps) -> None:
    az.ok("enrollment", "create", "--eid", "dev-1", "--at", "symmetricKey")
    cs = az.ok("connection-string", "show", "--dps-name", "my-dps", "--query", "connectionString", "-o", "tsv").stdout.strip()
    assert js(az, "enrollment", "show", "--eid", "dev-1", "--login", cs, "--auth-type", "key")["registrationId"] == "dev-1"
    assert js(az, "enrollment", "list", "-l", cs, "--auth-type", "login") != []
    service_host = cs.replace("HostName=localhost:8443", "HostName=dpsctl.azure-devices-provisioning.net")
    assert az.ok("enrollment", "show", "--eid", "dev-1", "--login", service_host, "-o", "none").stdout == ""
    other = az("enrollment", "show", "--eid", "dev-1", "--login", cs.replace("localhost:8443", "contoso.azure-devices-provisioning.net"))
    assert other.exit_code == 2 and "contoso.azure-devices-provisioning.net" in other.stderr and "connection-string show" in other.stderr
    wrong_key = az("enrollment", "show", "--eid", "dev-1", "--login", cs.rsplit("=", 2)[0] + "=" + KEY_A)
    assert wrong_key.exit_code == 5 and KEY_A not in wrong_key.stderr
    garbage = az("enrollment", "list", "--login", "not a connection string")
    assert garbage.exit_code == 2 and "HostName" in garbage.stderr
    bad_auth = az("enrollment", "list", "--auth-type", "password")
    assert bad_auth.exit_code == 2


def test_login_against_a_store_without_a_key_is_refused(tmp_path: Path) -> None:
    fresh = Dps(tmp_path / "fresh.json")
    run = fresh("enrollment", "create", "--eid", "d", "--at", "symmetricKey", "--login", "HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + KEY_A)
    assert run.exit_code == 5
    assert not (tmp_path / "fresh.json").exists()  # refused before anything is written


# --------------------------------------------------------------------------- linked hubs, certificates, connection string


def test_linked_hub_commands_in_arm_shape(tmp_path: Path) -> None:
    az = Dps(tmp_path / "dps.json")
    hub_cs = f"HostName=contoso-1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY_A}"
    hubs = js(az, "linked-hub", "create", *RESOURCE, "--connection-string", hub_cs, "--allocation-weight", "5", "--apply-allocation-policy", "true", "--no-wait")
    assert hubs == [{
        "allocationWeight": 5, "applyAllocationPolicy": True, "location": "eastus", "name": "contoso-1.azure-devices.net",
        "connectionString": "HostName=contoso-1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=****",
    }]
    hubs = js(az, "linked-hub", "create", "-n", "my-dps", "--resource-group", "rg", "--hub-name", "contoso-2", "--hub-resource-group", "hrg", "--location", "westus", "--apply-allocation-policy")
    assert [h["name"] for h in hubs] == ["contoso-1.azure-devices.net", "contoso-2.azure-devices.net"] and hubs[1]["applyAllocationPolicy"] is True
    js(az, "linked-hub", "create", "--dps-name", "d", "--cs", hub_cs.replace("contoso-1", "contoso-3"), "--apply-allocation-policy", "false")
    js(az, "linked-hub", "create", "--dps-name", "d", "--hn", "contoso-4", "--hrg", "rg")
    assert az.ok("linked-hub", "list", *RESOURCE, "--query", "[].name", "-o", "tsv").stdout.split() == [f"contoso-{n}.azure-devices.net" for n in (1, 2, 3, 4)]
    assert js(az, "linked-hub", "show", *RESOURCE, "--linked-hub", "contoso-1.azure-devices.net")["allocationWeight"] == 5
    assert js(az, "linked-hub", "show", "--lh", "contoso-3")["applyAllocationPolicy"] is False
    doc = js(az, "linked-hub", "update", *RESOURCE, "--linked-hub", "contoso-2.azure-devices.net", "--allocation-weight", "7", "--apply-allocation-policy", "false", "--no-wait")
    assert doc["allocationWeight"] == 7 and doc["applyAllocationPolicy"] is False and doc["location"] == "westus"
    assert js(az, "linked-hub", "update", "--lh", "contoso-2", "--apply-allocation-policy")["applyAllocationPolicy"] is True
    assert az.ok("linked-hub", "show", "--lh", "contoso-1", "--query", "applyAllocationPolicy", "-o", "tsv").stdout == "true\n"
    # az's tsv: a boolean alone on its line is true/false, one inside a row True/False (knack's str())
    rows = az.ok("linked-hub", "list", "--query", "[?name=='contoso-1.azure-devices.net'].[name, applyAllocationPolicy]", "-o", "tsv").stdout
    assert rows == "contoso-1.azure-devices.net\tTrue\n"
    assert az.ok("linked-hub", "delete", *RESOURCE, "--linked-hub", "contoso-4.azure-devices.net", "--no-wait").stdout == ""
    assert az.ok("linked-hub", "delete", "--lh", "contoso-3").stdout == ""
    assert len(js(az, "linked-hub", "list")) == 2
    both = az("linked-hub", "create", "--hub-name", "x", "--cs", hub_cs)
    assert both.exit_code == 2 and "one of them" in both.stderr
    assert az("linked-hub", "show", "--lh", "nope").exit_code == 3


def test_certificate_commands_with_proof_of_possession(tmp_path: Path) -> None:
    az = Dps(tmp_path / "dps.json")
    az.ok("cert", "create-root", "root", "--out", str(tmp_path))
    az.ok("cert", "create-root", "other", "--out", str(tmp_path))
    root, root_key, other = str(tmp_path / "root.cert.pem"), str(tmp_path / "root.key.pem"), str(tmp_path / "other.cert.pem")
    doc = js(az, "certificate", "create", *RESOURCE, "--certificate-name", "root-ca", "--path", root)
    assert doc["name"] == "root-ca" and doc["type"] == "Microsoft.Devices/provisioningServices/certificates"
    assert doc["id"].endswith("/provisioningServices/dpsctl/certificates/root-ca") and doc["etag"]
    props = doc["properties"]
    assert props["isVerified"] is False and props["subject"] == "CN=root" and len(props["thumbprint"]) == 40 and "BEGIN CERTIFICATE" in props["certificate"]
    assert {"expiry", "created", "updated"} <= set(props)
    assert az.ok("certificate", "list", "--dps-name", "d", "-g", "rg", "--query", "value[].name", "-o", "tsv").stdout == "root-ca\n"
    assert az.ok("certificate", "show", "--dps-name", "d", "--name", "root-ca", "--query", "properties.isVerified", "-o", "tsv").stdout == "false\n"
    etag = az.ok("certificate", "show", "-n", "root-ca", "--query", "etag", "-o", "tsv").stdout.strip()
    code_doc = js(az, "certificate", "generate-verification-code", *RESOURCE, "--certificate-name", "root-ca", "--etag", etag)
    code = code_doc["properties"]["verificationCode"]
    az.ok("cert", "create-verification", code, "--ca", root, "--ca-key", root_key, "--out", str(tmp_path))
    assert az("certificate", "verify", "-n", "root-ca", "-p", str(tmp_path / "verification.cert.pem"), "-e", etag).exit_code == 4  # stale etag
    doc = js(az, "certificate", "verify", "--dps-name", "d", "-g", "rg", "--name", "root-ca", "--path", str(tmp_path / "verification.cert.pem"), "--etag", code_doc["etag"])
    assert doc["properties"]["isVerified"] is True
    assert js(az, "certificate", "generate-verification-code", "-n", "root-ca", "-e", "*")["properties"]["verificationCode"]
    js(az, "certificate", "create", "--dps-name", "d", "--name", "other-ca", "--path", other, "--verified", "false")
    assert js(az, "certificate", "show", "--certificate-name", "other-ca")["properties"]["isVerified"] is False
    etag = az.ok("certificate", "show", "-n", "other-ca", "--query", "etag", "-o", "tsv").stdout.strip()
    doc = js(az, "certificate", "update", *RESOURCE, "--certificate-name", "other-ca", "--path", root, "--etag", etag, "--verified")
    assert doc["properties"]["subject"] == "CN=root" and doc["properties"]["isVerified"] is True
    doc = js(az, "certificate", "update", "--name", "other-ca", "-p", other, "-e", "*", "-v", "false")
    assert doc["properties"]["subject"] == "CN=other" and doc["properties"]["isVerified"] is False
    js(az, "certificate", "create", "-n", "third", "-p", other, "-v")
    assert js(az, "certificate", "show", "-n", "third")["properties"]["isVerified"] is True
    assert az("certificate", "delete", "-n", "third", "--etag", '"stale"').exit_code == 4
    assert az.ok("certificate", "delete", *RESOURCE, "--certificate-name", "third", "--etag", "*").stdout == ""
    assert az.ok("certificate", "delete", "--name", "other-ca", "-e", "*").stdout == ""
    assert az.ok("certificate", "delete", "-n", "root-ca").stdout == ""
    assert js(az, "certificate", "list") == {"value": []}


def test_connection_string_show_shapes(az: Dps) -> None:
    named = js(az, "connection-string", "show", "--dps-name", "my-dps", "--resource-group", "rg")
    assert list(named) == ["connectionString"] and named["connectionString"].startswith("HostName=localhost:8443;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=")
    assert js(az, "connection-string", "show", "-n", "my-dps", "-g", "rg", "--policy-name", "provisioningserviceowner", "--key-type", "primary") == named
    assert js(az, "connection-string", "show") == [{"name": "dpsctl", "connectionString": named["connectionString"]}]
    assert js(az, "connection-string", "show", "-n", "x", "--all") == {"connectionString": [named["connectionString"]]}
    assert js(az, "connection-string", "show", "-n", "x", "--pn", "provisioningserviceowner", "--kt", "primary") == named
    assert az("connection-string", "show", "-n", "x", "--policy-name", "reader").exit_code == 3
    assert az("connection-string", "show", "-n", "x", "--key-type", "secondary").exit_code == 2


# --------------------------------------------------------------------------- az iot device registration create


def test_device_registration_create_as_az_prints_it(az: Dps, tmp_path: Path) -> None:
    az.ok("enrollment", "create", "--eid", "solo", "--at", "symmetricKey", "--pk", KEY_A, "--sk", KEY_B)
    doc = js(az, "device", "registration", "create", *RESOURCE, "--registration-id", "solo", "--symmetric-key", KEY_A, "--payload", "{'a': 1}", "--provisioning-host", "global.azure-devices-provisioning.net")
    assert set(doc) == {"operationId", "status", "registrationState"} and doc["status"] == "assigned"
    assert doc["registrationState"]["registrationId"] == "solo" and doc["registrationState"]["assignedHub"] in (HUB1, HUB2)
    scope = az.ok("service", "show", "--query", "properties.idScope", "-o", "tsv").stdout.strip()
    assert js(az, "device", "registration", "create", "--rid", "solo", "--key", KEY_B, "--id-scope", scope, "--host", "localhost")["status"] == "assigned"
    assert js(az, "device", "registration", "create", "--rid", "solo", "--scope", scope)["status"] == "assigned"  # the key looked up
    wrong = az("device", "registration", "create", "--rid", "solo", "--key", base64.b64encode(b"z" * 32).decode())
    assert wrong.exit_code == 5 and wrong.stdout == ""
    assert az("device", "registration", "create", "--rid", "solo", "--scope", "0ne99999999").exit_code == 2
    az.ok("enrollment-group", "create", "--gid", "g1", "--pk", KEY_A, "--sk", KEY_B)
    assert js(az, "device", "registration", "create", "--rid", "g-1", "--enrollment-group-id", "g1", "--symmetric-key", KEY_A, "--compute-key")["status"] == "assigned"
    assert js(az, "device", "registration", "create", "--rid", "g-2", "--gid", "g1", "--key", KEY_A, "--ck", "true")["status"] == "assigned"
    assert js(az, "device", "registration", "create", "--rid", "g-3", "--gid", "g1")["status"] == "assigned"
    cs = az.ok("connection-string", "show", "-n", "d", "--query", "connectionString", "-o", "tsv").stdout.strip()
    assert js(az, "device", "registration", "create", "--rid", "g-4", "--gid", "g1", "--login", cs, "--auth-type", "key", "--dps-name", "d", "-n", "d")["status"] == "assigned"
    bad = az("device", "registration", "create", "--rid", "g-5", "--gid", "g1", "-l", cs.replace("localhost:8443", "elsewhere.net"))
    assert bad.exit_code == 2
    # X.509, the device key encrypted with a passphrase
    az.ok("cert", "create-device", "x509-1", "--out", str(tmp_path))
    from cryptography.hazmat.primitives import serialization

    plain = serialization.load_pem_private_key((tmp_path / "x509-1.key.pem").read_bytes(), password=None)
    locked = tmp_path / "x509-1.locked.pem"
    locked.write_bytes(plain.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"s3cret")))
    az.ok("enrollment", "create", "--eid", "x509-1", "--at", "x509", "--cp", str(tmp_path / "x509-1.cert.pem"))
    cert = str(tmp_path / "x509-1.cert.pem")
    assert js(az, "device", "registration", "create", "--rid", "x509-1", "--certificate-file-path", cert, "--key-file-path", str(tmp_path / "x509-1.key.pem"))["status"] == "assigned"
    assert js(az, "device", "registration", "create", "--rid", "x509-1", "--cp", cert, "--kp", str(locked), "--passphrase", "s3cret")["status"] == "assigned"
    wrong_pass = az("device", "registration", "create", "--rid", "x509-1", "--cp", cert, "--kp", str(locked), "--pass", "nope")
    assert wrong_pass.exit_code == 2 and "passphrase" in wrong_pass.stderr


# --------------------------------------------------------------------------- hidden from dpsctl's own help


def _listed(help_text: str) -> list[str]:
    """The command names a help page lists (first word of each entry under Commands:)."""
    section = help_text.split("Commands:")[1]
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ") and not line.startswith("    ")]


def test_az_spellings_stay_out_of_the_help(az: Dps) -> None:
    root = _listed(az.ok("--help").stdout)
    assert "enrollment" in root and "hub" in root
    for noun in ("linked-hub", "certificate", "connection-string", "compute-device-key"):
        assert noun not in root
    assert "create" not in _listed(az.ok("enrollment", "--help").stdout)
    assert "registration" not in _listed(az.ok("enrollment", "--help").stdout)
    assert "registration" not in _listed(az.ok("enrollment-group", "--help").stdout)
    assert "create" not in _listed(az.ok("enrollment-group", "--help").stdout)
    assert "registration" not in _listed(az.ok("device", "--help").stdout)
    for command, hidden in (
        (("enrollment", "add"), ("--eid", "--at", "--pk", "--cp", "--ps", "--tags", "--ih", "--ee", "--dps-name", "--login", "--info", "--keys")),
        (("enrollment", "show"), ("--eid", "--keys", "--dps-name")),
        (("enrollment-group", "update"), ("--gid", "--cn", "--rc", "-e", "--ps")),
        (("registration", "list"), ("--eid", "--gid", "--top")),
    ):
        text = az.ok(*command, "--help").stdout
        for name in hidden:
            assert f" {name} " not in text and f" {name}," not in text and f"{name}\n" not in text, (command, name)
    assert "--primary-key" in az.ok("enrollment", "add", "--help").stdout


def test_normalize_reads_az_argument_forms() -> None:
    from dpsctl.cli.az_compat import normalize

    three, flags, many = {"--ee"}, {"--show-keys"}, {"--ih"}

    def n(*args: str) -> list[str]:
        return normalize(list(args), three_state=three, flags=flags, many=many)

    assert n("--ee") == ["--ee=true"]
    assert n("--ee", "FALSE", "x") == ["--ee=FALSE", "x"]
    assert n("--ee", "x") == ["--ee=true", "x"]
    assert n("--ee=no") == ["--ee=no"]
    assert n("--show-keys", "false", "id") == ["id"]
    assert n("--show-keys", "true") == ["--show-keys"]
    assert n("--show-keys", "id") == ["--show-keys", "id"]
    assert n("--ih", "a", "b c", "--ee") == ["--ih=a", "--ih=b c", "--ee=true"]
    assert n("--ih") == ["--ih"]
    assert n("--", "--ee") == ["--", "--ee"]


# --------------------------------------------------------------------------- laws of the argument rewriting and the lenient JSON

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TOKENS = st.lists(st.sampled_from(["--ee", "--show-keys", "--ih", "true", "False", "no", "x", "a b", "-o", "json", "--", "--ee=1", "--ih=h"]), max_size=12)


@given(_TOKENS)
def test_normalize_is_idempotent_and_leaves_other_arguments_alone(args: list[str]) -> None:
    """Valued options come out as one `--name=value` token each, so a second pass changes nothing (a flag cannot
    carry its value that way: `--show-keys true true` is read once, as the flag and an argument)."""
    from dpsctl.cli.az_compat import normalize

    sets = {"three_state": {"--ee"}, "flags": set(), "many": {"--ih"}}
    once = normalize(args, **sets)
    assert normalize(once, **sets) == once
    assert normalize(args, three_state=set(), flags=set(), many=set()) == args
    kept = [a for a in args if not a.startswith(("--ee", "--ih")) and a not in ("true", "False", "no", "x", "a b", "json", "-o")]
    assert [a for a in once if a in kept] == kept  # nothing else is dropped or reordered


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_az_json_values_are_json_or_a_one_line_refusal(text: str) -> None:
    from dpsctl.cli.context import json_arg
    from dpsctl.core.errors import InvalidInput

    try:
        value = json_arg("{" + text, "initial twin tags", lenient=True)
    except InvalidInput as exc:
        assert "\n" not in exc.message or exc.message  # a refusal, never another exception
    else:
        assert json.loads(json.dumps(value)) == value
