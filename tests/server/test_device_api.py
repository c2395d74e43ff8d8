"""`dpsctl serve` device API over real HTTPS: register, poll, status lookup, the TPM challenge, X.509 over mutual TLS."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest

from dpsctl.core.keys import derive_device_key
from dpsctl.core.sas import build_sas_token, device_resource_uri
from dpsctl.core.clock import ManualClock
from dpsctl.server.faults import Fault
from dpsctl.store import open_store
from tests.helpers.constants import DEVICE_API, ID_SCOPE
from tests.helpers.pki import make_pki
from tests.helpers.server import device_token

ERROR_FIELDS = {"errorCode", "trackingId", "message", "timestampUtc"}


def _key(dps, registration_id: str) -> str:
    return dps.json("enrollment", "show", registration_id, "--show-keys")["attestation"]["symmetricKey"]["primaryKey"]


def _dps_error(reply, status: int, code: int) -> None:
    assert reply.status == status, reply
    assert ERROR_FIELDS <= set(reply.body), reply.body
    assert reply.body["errorCode"] == code and reply.headers["x-ms-error-code"] == str(code)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", reply.body["timestampUtc"])


@pytest.mark.rule("§2.1/register-202-then-poll-200")
def test_symmetric_key_device_gets_202_then_200_and_the_cli_sees_it(dps, serve):
    served = serve()
    dps.ok("enrollment", "add", "dev-1", "--attestation", "symmetricKey")  # added while the server runs
    key = _key(dps, "dev-1")

    first = served.register("dev-1", key, payload={"modelId": "dtmi:x;1"})
    assert first.status == 202, first
    assert first.body["status"] == "assigning" and first.body["operationId"]
    assert first.headers["retry-after"] == "1"
    assert first.headers["location"].endswith(f"/{ID_SCOPE}/registrations/dev-1/register")

    done = served.poll("dev-1", first.body["operationId"], key)
    assert done.status == 200, done
    state = done.body["registrationState"]
    assert done.body["status"] == "assigned" and done.body["operationId"] == first.body["operationId"]
    assert (state["deviceId"], state["assignedHub"], state["substatus"]) == ("dev-1", "hub-a.azure-devices.net", "initialAssignment")

    # One store: the CLI sees the registration and the device on its hub.
    listed = dps.json("registration", "list")
    assert [r["registrationId"] for r in listed] == ["dev-1"] and listed[0]["status"] == "assigned"
    assert dps.json("device", "show", "dev-1")["deviceId"] == "dev-1"

    # Status lookup (POST /{idScope}/registrations/{id}) gives the record, not wrapped.
    lookup = served.client().call("POST", f"/{ID_SCOPE}/registrations/dev-1", {"registrationId": "dev-1"}, {"Authorization": device_token("dev-1", key)}, api=DEVICE_API)
    assert lookup.status == 200 and lookup.body["assignedHub"] == "hub-a.azure-devices.net", lookup

    lines = served.log_lines()
    assert any(" PUT /0ne00000A0A/registrations/dev-1/register 202 " in line for line in lines), lines
    assert any(re.search(r" GET /0ne00000A0A/registrations/dev-1/operations/\S+ 200 .*assigned to hub-a", line) for line in lines), lines
    assert not any(key in line for line in lines)


def test_fast_answers_200_at_once_and_python_style_tokens_work(dps, serve):
    served = serve(fast=True)
    dps.ok("enrollment", "add", "dev-2", "--attestation", "symmetricKey")
    reply = served.register("dev-2", _key(dps, "dev-2"), encode_sr=True)
    assert reply.status == 200 and reply.body["status"] == "assigned", reply
    assert "retry-after" not in reply.headers


def test_group_device_with_a_derived_key_and_the_group_key_refused(dps, serve):
    served = serve(fast=True)
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey")
    group_key = dps.json("enrollment-group", "show", "fleet", "--show-keys")["attestation"]["symmetricKey"]["primaryKey"]

    ok = served.register("sensor-7", derive_device_key(group_key, "sensor-7"))
    assert ok.status == 200 and ok.body["registrationState"]["symmetricKey"] == {"enrollmentGroupId": "fleet"}, ok

    refused = served.register("sensor-8", group_key)
    _dps_error(refused, 401, 401002)
    assert "group key" in refused.body["message"] and "compute-device-key" in refused.body["info"]["hint"]
    assert [r["registrationId"] for r in dps.json("registration", "list", "--enrollment-group", "fleet")] == ["sensor-7"]


@pytest.mark.rule("§2.6/error-body-shape")
@pytest.mark.rule("§2.5/bad-credential-401")
def test_wrong_key_missing_credential_and_wrong_scope_are_401(dps, serve):
    served = serve()
    dps.ok("enrollment", "add", "dev-3", "--attestation", "symmetricKey")
    wrong = served.register("dev-3", dps.json("keys", "generate"))
    _dps_error(wrong, 401, 401002)
    _dps_error(served.register("dev-3"), 401, 401002)
    scoped = served.register("dev-3", _key(dps, "dev-3"), scope="0ne0000FFFF")
    _dps_error(scoped, 401, 401002)
    assert "0ne0000FFFF" in scoped.body["message"]
    assert dps.json("registration", "list") == []


def test_disabled_enrollment_is_202_then_200_disabled(dps, serve):
    served = serve()
    dps.ok("enrollment", "add", "dev-4", "--attestation", "symmetricKey", "--disabled")
    key = _key(dps, "dev-4")
    first = served.register("dev-4", key)
    assert first.status == 202, first
    done = served.poll("dev-4", first.body["operationId"], key)
    assert done.status == 200 and done.body["status"] == "disabled", done


def test_assigning_delay_keeps_polls_at_202_with_retry_after(dps, serve):
    clock = ManualClock()
    served = serve(assigning_delay=1.2, clock=clock)
    dps.ok("enrollment", "add", "dev-5", "--attestation", "symmetricKey")
    key = _key(dps, "dev-5")
    first = served.register("dev-5", key)
    assert first.headers["retry-after"] == "2"
    early = served.poll("dev-5", first.body["operationId"], key)
    assert early.status == 202 and early.body["status"] == "assigning" and early.headers["retry-after"] == "2", early
    clock.advance(0.5)
    assert served.poll("dev-5", first.body["operationId"], key).headers["retry-after"] == "1"
    clock.advance(0.7)
    assert served.poll("dev-5", first.body["operationId"], key).body["status"] == "assigned"


def test_operations_expire_after_thirty_minutes(dps, serve):
    clock = ManualClock()
    served = serve(clock=clock)
    dps.ok("enrollment", "add", "dev-5e", "--attestation", "symmetricKey")
    key = _key(dps, "dev-5e")
    operation = served.register("dev-5e", key).body["operationId"]
    clock.advance(1799)
    assert served.poll("dev-5e", operation, key).status == 200
    clock.advance(2)
    _dps_error(served.poll("dev-5e", operation, key), 404, 404203)
    assert served.running.devices.purge() == 1  # the expired record is removed, not only hidden
    with open_store(dps.store).transaction() as tx:
        assert tx.count("operations") == 0


def test_a_poll_after_a_restart_is_answered(dps, serve):
    first_server = serve()
    dps.ok("enrollment", "add", "dev-5r", "--attestation", "symmetricKey")
    key = _key(dps, "dev-5r")
    operation = first_server.register("dev-5r", key).body["operationId"]
    first_server.settle()
    first_server.running.stop()
    second_server = serve(init=False)  # a new process would see the same: the operation is in the store
    done = second_server.poll("dev-5r", operation, key)
    assert done.status == 200 and done.body["status"] == "assigned" and done.body["operationId"] == operation


def test_the_quota_window_moves_with_the_clock(dps, serve):
    clock = ManualClock()
    served = serve(fast=True, registrations_per_minute=1, clock=clock)
    dps.ok("enrollment", "add", "dev-9c", "--attestation", "symmetricKey")
    key = _key(dps, "dev-9c")
    assert served.register("dev-9c", key).status == 200
    clock.advance(20)
    throttled = served.register("dev-9c", key)
    assert throttled.status == 429 and throttled.headers["retry-after"] == "40"
    clock.advance(40)
    assert served.register("dev-9c", key).status == 200


def test_polls_are_authenticated_and_operations_are_per_device(dps, serve):
    served = serve()
    dps.ok("enrollment", "add", "dev-6", "--attestation", "symmetricKey")
    dps.ok("enrollment", "add", "dev-7", "--attestation", "symmetricKey")
    first = served.register("dev-6", _key(dps, "dev-6"))
    operation = first.body["operationId"]
    _dps_error(served.poll("dev-6", operation), 401, 401002)  # no credential
    _dps_error(served.poll("dev-6", operation, _key(dps, "dev-7")), 401, 401002)  # another device's key
    _dps_error(served.poll("dev-7", operation, _key(dps, "dev-7")), 404, 404203)  # another device's operation
    _dps_error(served.poll("dev-6", "5.0000.unknown", _key(dps, "dev-6")), 404, 404203)


def test_faults_inject_429_and_the_quota_answers_429_with_retry_after(dps, serve):
    served = serve(faults=(Fault(429, 1.0, 7),))
    dps.ok("enrollment", "add", "dev-8", "--attestation", "symmetricKey")
    injected = served.register("dev-8", _key(dps, "dev-8"))
    _dps_error(injected, 429, 429001)
    assert injected.headers["retry-after"] == "7"


def test_registrations_per_minute(dps, serve):
    served = serve(fast=True, registrations_per_minute=2)
    dps.ok("enrollment", "add", "dev-9", "--attestation", "symmetricKey")
    key = _key(dps, "dev-9")
    assert served.register("dev-9", key).status == 200
    assert served.register("dev-9", key).status == 200
    throttled = served.register("dev-9", key)
    _dps_error(throttled, 429, 429001)
    assert 1 <= int(throttled.headers["retry-after"]) <= 60


def test_request_errors(dps, serve):
    served = serve()
    client = served.client()
    _dps_error(client.call("PUT", f"/{ID_SCOPE}/registrations/x/register", {}, api=None), 400, 400001)  # no api-version
    _dps_error(client.call("GET", f"/{ID_SCOPE}/registrations/x/register", api=DEVICE_API), 405, 405001)
    _dps_error(client.call("GET", "/nothing/here", api=DEVICE_API), 404, 404001)
    _dps_error(client.call("PUT", f"/{ID_SCOPE}/registrations/x/register", "{not json", api=DEVICE_API), 400, 400004)
    _dps_error(client.call("PUT", f"/{ID_SCOPE}/registrations/x/register", {"registrationId": "y"}, api=DEVICE_API), 400, 400004)
    deep = "[" * 40_000 + "]" * 40_000
    _dps_error(client.call("PUT", f"/{ID_SCOPE}/registrations/x/register", deep, api=DEVICE_API), 400, 400004)
    _dps_error(served.register("bad!id", "AAAAAAAAAAAAAAAAAAAAAA==", encode_sr=True), 400, 400004)


# --------------------------------------------------------------------------- X.509 over mutual TLS


def _pki(dps, tmp_path: Path) -> Path:
    out = tmp_path / "pki"
    out.mkdir()
    make_pki(dps, out, device="x509-dev")
    dps.ok("cert", "create-device", "solo", "--out", str(out))
    dps.ok("cert", "create-root", "stranger", "--out", str(out))
    dps.ok("cert", "create-device", "intruder", "--ca", str(out / "stranger.cert.pem"), "--ca-key", str(out / "stranger.key.pem"), "--out", str(out))
    return out


def test_x509_individual_and_group_devices_over_mutual_tls(dps, serve, tmp_path):
    pki = _pki(dps, tmp_path)
    served = serve(fast=True)
    # Enrolled after the server started: the trust store follows the enrollments.
    dps.ok("enrollment", "add", "solo", "--attestation", "x509", "--cert", str(pki / "solo.cert.pem"))
    dps.ok("enrollment-group", "add", "factory", "--attestation", "x509", "--signing-cert", str(pki / "root.cert.pem"))

    solo = served.client(str(pki / "solo.cert.pem"), str(pki / "solo.key.pem"))
    reply = served.register("solo", client=solo)
    assert reply.status == 200 and reply.body["status"] == "assigned", reply
    assert reply.body["registrationState"]["x509"]["certificateInfo"]["subjectName"] == "CN=solo"

    device = served.client(str(pki / "x509-dev.fullchain.pem"), str(pki / "x509-dev.key.pem"))
    reply = served.register("x509-dev", client=device)
    assert reply.status == 200 and reply.body["registrationState"]["x509"]["enrollmentGroupId"] == "factory", reply
    assert reply.body["registrationState"]["x509"]["signingCertificateInfo"]["subjectName"] == "CN=root"

    # The certificate CN is the registration ID: another device's path is refused.
    other = served.register("someone-else", client=device)
    assert other.status == 401 and "CN" in other.body["message"], other


@pytest.mark.rule("§2.5/x509-without-enrollment-401")
def test_rule_2_5_an_x509_device_matching_no_enrollment_gets_401_not_a_failed_handshake(dps, serve, tmp_path):
    """Reference §2.5: "X.509 device with no matching enrollment → 401" (DPS answers, the handshake succeeds)."""
    pki = _pki(dps, tmp_path)
    served = serve(fast=True)
    before = dps.snapshot()
    intruder = served.client(str(pki / "intruder.fullchain.pem"), str(pki / "intruder.key.pem"))
    reply = served.register("intruder", client=intruder)
    _dps_error(reply, 401, 401002)
    assert dps.snapshot() == before  # refused, nothing written
    assert any("register 401" in line for line in served.log_lines()), served.log_lines()


@pytest.mark.rule("§5/group-chain-reaches-verified-certificate")
def test_group_of_a_ca_reference_needs_the_ca_verified(dps, serve, tmp_path):
    pki = _pki(dps, tmp_path)
    served = serve(fast=True)
    dps.ok("ca", "add", "root-ca", "--cert", str(pki / "root.cert.pem"))
    dps.ok("enrollment-group", "add", "by-ref", "--attestation", "x509", "--ca-ref", "root-ca")
    device = served.client(str(pki / "x509-dev.fullchain.pem"), str(pki / "x509-dev.key.pem"))
    _dps_error(served.register("x509-dev", client=device), 401, 401002)  # the CA is not verified: no anchor
    dps.ok("ca", "delete", "root-ca", "--force")
    dps.ok("enrollment-group", "delete", "by-ref")
    dps.ok("ca", "add", "root-ca", "--cert", str(pki / "root.cert.pem"), "--verified")
    dps.ok("enrollment-group", "add", "by-ref", "--attestation", "x509", "--ca-ref", "root-ca")
    reply = served.register("x509-dev", client=device)
    assert reply.status == 200 and reply.body["registrationState"]["x509"]["enrollmentGroupId"] == "by-ref", reply


# --------------------------------------------------------------------------- TPM


@pytest.mark.rule("§6/tpm-challenge-401")
def test_tpm_challenge_over_http(dps, serve, tmp_path):
    from dpsctl.core.tpm import load_tpm

    path = tmp_path / "device.tpm"
    created = dps.json("tpm", "create", str(path))
    tpm = load_tpm(path)
    served = serve()
    dps.ok("enrollment", "add", "furnace", "--attestation", "tpm", "--endorsement-key", created["endorsementKey"])
    body = {"registrationId": "furnace", "tpm": {"endorsementKey": created["endorsementKey"], "storageRootKey": created["storageRootKey"]}}
    client = served.client()
    url = f"/{ID_SCOPE}/registrations/furnace/register"

    challenge = client.call("PUT", url, body, api=DEVICE_API)
    assert challenge.status == 401 and set(challenge.body) == {"authenticationKey", "keyName"}, challenge
    secret = base64.b64encode(tpm.activate_credential(challenge.body["authenticationKey"])).decode()
    token = build_sas_token(device_resource_uri(ID_SCOPE, "furnace"), secret, int(time.time()) + 3600)

    first = client.call("PUT", url, body, {"Authorization": token}, api=DEVICE_API)
    assert first.status == 202, first
    served.settle()
    done = client.call("GET", f"/{ID_SCOPE}/registrations/furnace/operations/{first.body['operationId']}", "{}", {"Authorization": token}, api=DEVICE_API)
    assert done.status == 200 and done.body["status"] == "assigned", done
    hub_key = tpm.activate_credential(done.body["registrationState"]["tpm"]["authenticationKey"])
    assert len(hub_key) == 32

    # A token signed with anything but the challenge key is refused; an unknown EK gets no challenge.
    forged = build_sas_token(device_resource_uri(ID_SCOPE, "furnace"), base64.b64encode(b"x" * 32).decode(), int(time.time()) + 3600)
    assert client.call("PUT", url, body, {"Authorization": forged}, api=DEVICE_API).status == 401
    other = dps.json("tpm", "create", str(tmp_path / "other.tpm"))
    stranger = client.call("PUT", url, {**body, "tpm": {"endorsementKey": other["endorsementKey"]}}, api=DEVICE_API)
    _dps_error(stranger, 401, 401002)
    assert "endorsement key" in stranger.body["message"]
