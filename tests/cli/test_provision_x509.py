"""`dpsctl provision` with X.509 certificates: individual (self-signed) and group (root or intermediate) enrollments."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dpsctl.core.certs import issue_device, issue_root

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
    thumbprint,
    write_key,
    write_pem,
)
from tests.helpers.pki import Pki, build_pki


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("pki"))


# --------------------------------------------------------------------------- the good paths


@pytest.mark.rule("§2.3/registration-state-fields")
def test_individual_enrollment_with_a_self_signed_certificate(dps, ca):
    init(dps, "hub-a")
    cert_file, key_file, cert = ca.device("camera-01", under="self")
    enrolled = dps.json("enrollment", "add", "camera-01", "--attestation", "x509", "--cert", cert_file)
    assert enrolled["attestation"]["x509"]["clientCertificates"]["primary"]["info"]["sha1Thumbprint"] == thumbprint(cert)

    doc = provision(dps, "--cert", cert_file, "--key", key_file)  # the registration ID is the certificate CN

    assert doc["status"] == "assigned" and doc["operationId"]
    state = doc["registrationState"]
    assert REGISTRATION_STATE_FIELDS | {"x509"} == set(state), state
    assert (state["registrationId"], state["deviceId"], state["assignedHub"], state["substatus"]) == ("camera-01", "camera-01", HUB_A, "initialAssignment")
    info = state["x509"]["certificateInfo"]
    assert info["subjectName"] == "CN=camera-01" and info["sha1Thumbprint"] == thumbprint(cert)
    assert "enrollmentGroupId" not in state["x509"]
    assert connection_string_fields(doc) == {"HostName": HUB_A, "DeviceId": "camera-01", "x509": "true"}
    assert not failed_checks(doc)

    device = dps.json("device", "show", "camera-01")
    assert device["authentication"] == {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": thumbprint(cert), "secondaryThumbprint": None}}
    assert registration(dps, "camera-01") == state


def test_individual_enrollment_refuses_another_certificate_with_the_same_cn(dps, ca):
    init(dps, "hub-a")
    enrolled_file, _, _ = ca.device("camera-02", under="self")
    other_file, other_key, _ = ca.device("camera-02", under="self")
    dps.ok("enrollment", "add", "camera-02", "--attestation", "x509", "--cert", enrolled_file)
    doc, _ = refused(dps, "--cert", other_file, "--key", other_key, code=5)
    assert "neither the primary nor the secondary certificate" in failed_checks(doc)[0]


@pytest.mark.parametrize("how", ["chain in --cert", "chain via --chain"])
def test_group_with_a_root_signing_certificate(dps, ca, how):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "cameras", "--attestation", "x509", "--signing-cert", ca.root_pem)
    if how == "chain in --cert":
        cert_file, key_file, cert = ca.device("camera-10", chain=True)
        args = ["--cert", cert_file, "--key", key_file]
    else:
        cert_file, key_file, cert = ca.device("camera-10")
        args = ["--cert", cert_file, "--key", key_file, "--chain", ca.intermediate_pem]

    doc = provision(dps, *args)

    state = doc["registrationState"]
    assert (state["registrationId"], state["deviceId"], state["status"]) == ("camera-10", "camera-10", "assigned")
    assert state["x509"]["enrollmentGroupId"] == "cameras"
    assert state["x509"]["certificateInfo"]["sha1Thumbprint"] == thumbprint(cert)
    assert state["x509"]["signingCertificateInfo"]["subjectName"] == "CN=dpsctl test root"
    assert connection_string_fields(doc) == {"HostName": HUB_A, "DeviceId": "camera-10", "x509": "true"}
    assert dps.json("device", "show", "camera-10")["authentication"]["x509Thumbprint"]["primaryThumbprint"] == thumbprint(cert)


def test_group_root_device_without_its_intermediate_is_refused(dps, ca):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "cameras", "--attestation", "x509", "--signing-cert", ca.root_pem)
    cert_file, key_file, _ = ca.device("camera-11")
    doc, stderr = refused(dps, "--cert", cert_file, "--key", key_file, code=5)
    assert "no X.509 enrollment group" in failed_checks(doc)[-1]
    assert "hint: " in stderr


@pytest.mark.parametrize("with_chain", [False, True])
def test_group_with_an_intermediate_signing_certificate(dps, ca, with_chain):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "cameras", "--attestation", "x509", "--signing-cert", ca.intermediate_pem)
    cert_file, key_file, cert = ca.device("camera-20", chain=with_chain)

    doc = provision(dps, "--cert", cert_file, "--key", key_file)

    state = doc["registrationState"]
    assert state["x509"]["enrollmentGroupId"] == "cameras"
    assert state["x509"]["signingCertificateInfo"]["subjectName"] == "CN=dpsctl test intermediate"
    assert state["x509"]["signingCertificateInfo"]["sha1Thumbprint"] == thumbprint(ca.intermediate[0])
    assert devices(dps) == [(HUB_A, "camera-20")]


@pytest.mark.rule("§5/first-entry-along-the-chain-wins")
def test_nearest_group_in_the_chain_wins(dps, ca):
    init(dps, "hub-a", "hub-b")
    dps.ok("enrollment-group", "add", "by-root", "--attestation", "x509", "--signing-cert", ca.root_pem, "--hub", "hub-a")
    dps.ok("enrollment-group", "add", "by-intermediate", "--attestation", "x509", "--signing-cert", ca.intermediate_pem, "--hub", "hub-b")
    cert_file, key_file, _ = ca.device("camera-30", chain=True)
    doc = provision(dps, "--cert", cert_file, "--key", key_file)
    assert doc["registrationState"]["x509"]["enrollmentGroupId"] == "by-intermediate"
    assert doc["registrationState"]["assignedHub"] == "hub-b.azure-devices.net"


@pytest.mark.rule("§5/first-entry-along-the-chain-wins")
def test_disabled_group_nearer_the_leaf_wins_until_it_is_deleted(dps, ca):
    # Docs: the first entry along leaf -> root decides, even a disabled one; deleting it lets the next one decide.
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "by-root", "--attestation", "x509", "--signing-cert", ca.root_pem)
    dps.ok("enrollment-group", "add", "by-intermediate", "--attestation", "x509", "--signing-cert", ca.intermediate_pem, "--disabled")
    cert_file, key_file, _ = ca.device("camera-31", chain=True)

    doc, _ = refused(dps, "--cert", cert_file, "--key", key_file, code=6)
    assert "enrollment group 'by-intermediate' is disabled" in failed_checks(doc)[-1]

    dps.ok("enrollment-group", "delete", "by-intermediate")
    assert provision(dps, "--cert", cert_file, "--key", key_file)["registrationState"]["x509"]["enrollmentGroupId"] == "by-root"


@pytest.mark.rule("§5/hub-identity-is-the-leaf-thumbprint")
def test_secondary_certificate_becomes_the_hub_thumbprint(dps, ca):
    init(dps, "hub-a")
    primary_file, _, _ = ca.device("camera-32", under="self")
    secondary_file, secondary_key, secondary = ca.device("camera-32", under="self")
    dps.ok("enrollment", "add", "camera-32", "--attestation", "x509", "--cert", primary_file, "--secondary-cert", secondary_file)

    state = provision(dps, "--cert", secondary_file, "--key", secondary_key)["registrationState"]

    assert state["x509"]["certificateInfo"]["sha1Thumbprint"] == thumbprint(secondary)
    auth = dps.json("device", "show", "camera-32")["authentication"]
    assert auth["x509Thumbprint"]["primaryThumbprint"] == thumbprint(secondary)


# --------------------------------------------------------------------------- failures: exit 5 with the failed check


def _now() -> datetime:
    return datetime.now(timezone.utc)


def test_expired_leaf(dps, ca):
    _refused_by_group(dps, ca, *ca.device("camera-40", days=1, not_before=_now() - timedelta(days=3)), "has expired")


def test_not_yet_valid_leaf(dps, ca):
    _refused_by_group(dps, ca, *ca.device("camera-41", not_before=_now() + timedelta(days=2)), "is not yet valid")


def test_leaf_signed_by_another_cas_key(dps, ca, tmp_path):
    # An impostor CA with the intermediate's name but its own key.
    impostor = issue_root("dpsctl test intermediate")
    cert, key = issue_device("camera-42", *impostor)
    files = write_pem(tmp_path, "impostor-leaf.pem", cert), write_key(tmp_path, "impostor-leaf.key", key)
    _refused_by_group(dps, ca, *files, cert, "signature does not verify with the key of 'CN=dpsctl test intermediate'")


@pytest.mark.rule("§2.5/x509-without-enrollment-401")
def test_chain_to_an_unknown_ca(dps, ca, tmp_path):
    stranger_root = issue_root("stranger root")
    cert, key = issue_device("camera-43", *stranger_root)
    files = write_pem(tmp_path, "stranger-leaf.pem", cert, stranger_root[0]), write_key(tmp_path, "stranger-leaf.key", key)
    _refused_by_group(dps, ca, *files, cert, "no X.509 enrollment group's signing certificate")


def test_key_that_does_not_match_the_certificate(dps, ca):
    cert_file, _, cert = ca.device("camera-44")
    _, other_key, _ = ca.device("camera-45")
    _refused_by_group(dps, ca, cert_file, other_key, cert, "private key does not belong to the device certificate")


@pytest.mark.rule("§5/cn-is-registration-id")
def test_cn_that_is_not_the_registration_id(dps, ca):
    cert_file, key_file, cert = ca.device("camera-46", chain=True)
    _refused_by_group(dps, ca, cert_file, key_file, cert, "CN is 'camera-46', but the registration ID is 'other'", "--registration-id", "other")


def test_individual_enrollment_with_an_expired_certificate(dps, ca):
    init(dps, "hub-a")
    cert_file, key_file, _ = ca.device("camera-47", under="self", days=1, not_before=_now() - timedelta(days=3))
    dps.ok("enrollment", "add", "camera-47", "--attestation", "x509", "--cert", cert_file)
    doc, _ = refused(dps, "--cert", cert_file, "--key", key_file, code=5)
    assert any("has expired" in message for message in failed_checks(doc)), doc["explain"]


def _refused_by_group(dps, ca, cert_file, key_file, cert, failed_check, *more):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "cameras", "--attestation", "x509", "--signing-cert", ca.intermediate_pem)

    doc, stderr = refused(dps, "--cert", cert_file, "--key", key_file, *more, code=5)

    assert doc["errorCode"] == 401002, doc
    assert any(failed_check in message for message in failed_checks(doc)), doc["explain"]
    assert stderr.splitlines()[0] == "error: " + doc["message"]
    reg_id = more[-1] if more else cert.subject.rfc4514_string().removeprefix("CN=")
    assert dps("registration", "show", reg_id).exit_code == 3
    assert history(dps, reg_id) == [("unauthorized", None)]
    assert devices(dps) == []


# --------------------------------------------------------------------------- precedence and revocation
def test_disabled_x509_individual_enrollment_blocks_a_group_device(dps, ca, tmp_path):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "cameras", "--attestation", "x509", "--signing-cert", ca.intermediate_pem)
    cert_file, key_file, cert = ca.device("camera-50", chain=True)
    leaf_only = write_pem(tmp_path, "camera-50-leaf.pem", cert)
    dps.ok("enrollment", "add", "camera-50", "--attestation", "x509", "--cert", leaf_only, "--disabled")

    doc, _ = refused(dps, "--cert", cert_file, "--key", key_file, code=6)

    assert doc["status"] == "disabled"
    assert "individual enrollment 'camera-50' is disabled" in failed_checks(doc)[-1]
    assert registration(dps, "camera-50")["status"] == "disabled"


@pytest.mark.rule("§11/disabled-individual-enrollment-blocks-group-device")
def test_revoke_one_x509_group_device_with_a_disabled_symmetric_key_enrollment(dps, ca):
    # The docs' recipe: block a device of an X.509 group without its certificate, by its CN.
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "cameras", "--attestation", "x509", "--signing-cert", ca.intermediate_pem)
    cert_file, key_file, _ = ca.device("camera-51", chain=True)
    provision(dps, "--cert", cert_file, "--key", key_file)
    dps.ok("enrollment", "add", "camera-51", "--attestation", "symmetricKey", "--disabled")

    doc, stderr = refused(dps, "--cert", cert_file, "--key", key_file, code=6)

    assert "blocks this registration ID whatever the credential" in failed_checks(doc)[-1]
    assert "disabled" in stderr
    assert registration(dps, "camera-51")["status"] == "disabled"
    assert history(dps, "camera-51") == [("assigned", "initialAssignment"), ("disabled", None)]
    # Deleting the disabled entry re-opens the group path (which is why the docs say not to).
    dps.ok("enrollment", "delete", "camera-51")
    assert provision(dps, "--cert", cert_file, "--key", key_file)["registrationState"]["status"] == "assigned"


@pytest.mark.rule("§11/individual-enrollment-before-groups")
def test_enabled_individual_enrollment_beats_an_x509_group(dps, ca, tmp_path):
    init(dps, "hub-a", "hub-b")
    dps.ok("enrollment-group", "add", "cameras", "--attestation", "x509", "--signing-cert", ca.intermediate_pem, "--hub", "hub-a")
    cert_file, key_file, cert = ca.device("camera-52", chain=True)
    dps.ok("enrollment", "add", "camera-52", "--attestation", "x509", "--cert", write_pem(tmp_path, "camera-52-leaf.pem", cert), "--hub", "hub-b")
    state = provision(dps, "--cert", cert_file, "--key", key_file)["registrationState"]
    assert state["assignedHub"] == "hub-b.azure-devices.net"
    assert "enrollmentGroupId" not in state["x509"]


@pytest.mark.rule("§2.5/disabled-entry-status-disabled")
def test_disabled_group_refuses_its_devices(dps, ca):
    init(dps, "hub-a")
    dps.ok("enrollment-group", "add", "cameras", "--attestation", "x509", "--signing-cert", ca.intermediate_pem, "--disabled")
    cert_file, key_file, _ = ca.device("camera-53")
    doc, _ = refused(dps, "--cert", cert_file, "--key", key_file, code=6)
    assert "enrollment group 'cameras' is disabled" in failed_checks(doc)[-1]
    record = registration(dps, "camera-53")
    assert record["status"] == "disabled" and record["x509"]["enrollmentGroupId"] == "cameras"

