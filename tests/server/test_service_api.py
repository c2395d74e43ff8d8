"""`dpsctl serve` service API over real HTTPS: enrollments, groups, attestation mechanisms, bulk, query, registration states."""

from __future__ import annotations

import time

import pytest

from dpsctl.core.sas import build_sas_token
from tests.helpers.constants import ID_SCOPE


def _sym(registration_id: str, **extra):
    return {"registrationId": registration_id, "attestation": {"type": "symmetricKey"}, **extra}


def test_service_auth(dps, serve):
    served = serve()
    assert served.service("GET", "/enrollments/nobody").status == 404
    client = served.client()
    assert client.call("GET", "/enrollments/nobody").status == 401
    in_hour = int(time.time()) + 3600
    wrong_key = build_sas_token("localhost", "A" * 44, in_hour, key_name="provisioningserviceowner", encode_sr=False)
    wrong_policy = build_sas_token("localhost", served.service_key, in_hour, key_name="registryRead", encode_sr=False)
    expired = build_sas_token("localhost", served.service_key, int(time.time()) - 10, key_name="provisioningserviceowner", encode_sr=False)
    other_host = build_sas_token("elsewhere.example", served.service_key, in_hour, key_name="provisioningserviceowner", encode_sr=False)
    # How the Python service SDK and the az CLI sign: URL-encoded, and the cloud-like host name.
    encoded = build_sas_token("localhost:8443", served.service_key, in_hour, key_name="provisioningserviceowner")
    cloud = build_sas_token("dpsctl.azure-devices-provisioning.net", served.service_key, in_hour, key_name="provisioningserviceowner")
    for token in (wrong_key, wrong_policy, expired, other_host):
        reply = served.service("GET", "/enrollments/nobody", token=token)
        assert reply.status == 401 and reply.body["errorCode"] == 401002, (token, reply)
    for token in (encoded, cloud):
        assert served.service("GET", "/enrollments/nobody", token=token).status == 404
    # The connection string the CLI prints carries the same key.
    printed = dps.ok("service", "connection-string").stdout.strip()
    assert printed == f"HostName=localhost:8443;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={served.service_key}"


@pytest.mark.rule("§7.9/stale-etag-refused")
def test_individual_enrollment_crud_with_etags(dps, serve):
    served = serve()
    created = served.service("PUT", "/enrollments/dev-1", _sym("dev-1", initialTwin={"tags": {"floor": 3}}))
    assert created.status == 200, created
    keys = created.body["attestation"]["symmetricKey"]
    assert keys["primaryKey"] and keys["secondaryKey"]  # generated, and returned on create
    etag = created.body["etag"]

    got = served.service("GET", "/enrollments/DEV-1")  # IDs are case-insensitive
    assert got.status == 200 and got.body["etag"] == etag and got.body["attestation"]["symmetricKey"] == {}
    mechanism = served.service("POST", "/enrollments/dev-1/attestationmechanism")
    assert mechanism.body == {"type": "symmetricKey", "symmetricKey": keys}

    # The CLI sees what the service API wrote.
    assert dps.json("enrollment", "show", "dev-1")["initialTwin"]["tags"] == {"floor": 3}

    # A GET answer sent back (keys absent) keeps the keys; a stale If-Match is 412.
    stale = served.service("PUT", "/enrollments/dev-1", {**got.body, "provisioningStatus": "disabled"}, {"If-Match": '"stale"'})
    assert stale.status == 412 and stale.body["errorCode"] == 412001, stale
    updated = served.service("PUT", "/enrollments/dev-1", {**got.body, "provisioningStatus": "disabled"}, {"If-Match": etag})
    assert updated.status == 200 and updated.body["etag"] != etag and updated.body["provisioningStatus"] == "disabled", updated
    assert updated.body["attestation"]["symmetricKey"] == keys
    assert updated.body["createdDateTimeUtc"] == created.body["createdDateTimeUtc"]

    assert served.service("DELETE", "/enrollments/dev-1", headers={"If-Match": etag}).status == 412
    deleted = served.service("DELETE", "/enrollments/dev-1", headers={"If-Match": updated.body["etag"]})
    assert deleted.status == 204 and deleted.body is None
    missing = served.service("GET", "/enrollments/dev-1")
    assert missing.status == 404 and missing.body["errorCode"] == 404201
    assert served.service("PUT", "/enrollments/dev-1", _sym("dev-1"), {"If-Match": etag}).status == 412


def test_enrollment_bodies_are_validated(dps, serve, tmp_path):
    served = serve()
    assert served.service("PUT", "/enrollments/dev-1", _sym("dev-2")).status == 400  # ID differs from the path
    assert served.service("PUT", "/enrollments/dev-1", {"attestation": {"type": "bogus"}}).status == 400
    assert served.service("PUT", "/enrollments/dev-1", _sym("dev-1", iotHubs=["not-linked.azure-devices.net"])).status == 400
    assert served.service("PUT", "/enrollments/dev-1", "[1, 2").status == 400
    assert served.service("PATCH", "/enrollments/dev-1", _sym("dev-1")).status == 405
    # An X.509 enrollment: the certificate's info is derived by the service, not taken from the body.
    out = tmp_path / "pki"
    out.mkdir()
    dps.ok("cert", "create-device", "cam-1", "--out", str(out))
    pem = (out / "cam-1.cert.pem").read_text()
    body = {"registrationId": "cam-1", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem, "info": {"subjectName": "CN=lie"}}}}}}
    reply = served.service("PUT", "/enrollments/cam-1", body)
    assert reply.status == 200 and reply.body["attestation"]["x509"]["clientCertificates"]["primary"]["info"]["subjectName"] == "CN=cam-1", reply
    wrong_cn = {**body, "registrationId": "cam-2"}
    assert served.service("PUT", "/enrollments/cam-2", wrong_cn).status == 400


def test_groups_crud_and_case_insensitive_paths(dps, serve, tmp_path):
    served = serve()
    created = served.service("PUT", "/enrollmentGroups/fleet", {"enrollmentGroupId": "fleet", "attestation": {"type": "symmetricKey"}})
    assert created.status == 200, created
    assert served.service("GET", "/ENROLLMENTGROUPS/Fleet/").status == 200
    mechanism = served.service("POST", "/enrollmentgroups/fleet/attestationmechanism")  # as the Node client writes it
    assert mechanism.status == 200 and mechanism.body["symmetricKey"] == created.body["attestation"]["symmetricKey"]
    assert dps.json("enrollment-group", "show", "fleet")["etag"] == created.body["etag"]

    out = tmp_path / "pki"
    out.mkdir()
    dps.ok("cert", "create-root", "root", "--out", str(out))
    signing = {"enrollmentGroupId": "factory", "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": (out / "root.cert.pem").read_text()}}}}}
    reply = served.service("PUT", "/enrollmentGroups/factory", signing)
    assert reply.status == 200 and reply.body["attestation"]["x509"]["signingCertificates"]["primary"]["info"]["subjectName"] == "CN=root"
    assert served.service("DELETE", "/enrollmentGroups/factory").status == 204
    assert served.service("DELETE", "/enrollmentGroups/factory").status == 404
    assert [g["enrollmentGroupId"] for g in dps.json("enrollment-group", "list")] == ["fleet"]


def test_bulk_operations(dps, serve):
    served = serve()
    first = served.service("POST", "/enrollments/", {"mode": "create", "enrollments": [_sym("b-1"), _sym("b-2")]})
    assert first.status == 200 and first.body == {"isSuccessful": True, "errors": []}, first
    again = served.service("POST", "/enrollments", {"mode": "create", "enrollments": [_sym("b-2"), _sym("b-3")]})
    assert again.body["isSuccessful"] is False
    assert again.body["errors"] == [{"registrationId": "b-2", "errorCode": 409201, "errorStatus": "'b-2' already exists"}]
    assert {e["registrationId"] for e in dps.json("enrollment", "list")} == {"b-1", "b-2", "b-3"}
    etag = served.service("GET", "/enrollments/b-1").body["etag"]
    guarded = served.service("POST", "/enrollments", {"mode": "UPDATEIFMATCHETAG", "enrollments": [_sym("b-1", etag=etag), _sym("b-2", etag='"old"')]})
    assert [e["registrationId"] for e in guarded.body["errors"]] == ["b-2"] and guarded.body["errors"][0]["errorCode"] == 412001
    deleted = served.service("POST", "/enrollments", {"mode": "delete", "enrollments": [_sym("b-1"), _sym("b-9")]})
    assert [e["registrationId"] for e in deleted.body["errors"]] == ["b-9"]
    groups = served.service("POST", "/enrollmentGroups", {"mode": "create", "enrollmentGroups": [{"enrollmentGroupId": "g-1", "attestation": {"type": "symmetricKey"}}]})
    assert groups.body["isSuccessful"] is True
    too_many = served.service("POST", "/enrollments", {"mode": "create", "enrollments": [_sym(f"m-{i}") for i in range(11)]})
    assert too_many.status == 400


def test_query_pages_with_continuation(dps, serve):
    served = serve()
    for i in range(5):
        dps.ok("enrollment", "add", f"q-{i}", "--attestation", "symmetricKey")
    seen, token, pages = [], None, 0
    while True:
        headers = {"x-ms-max-item-count": "2", **({"x-ms-continuation": token} if token else {})}
        reply = served.service("POST", "/enrollments/query", {"query": "*"}, headers)
        assert reply.status == 200 and reply.headers["x-ms-item-type"] == "Enrollment", reply
        assert all("primaryKey" not in (e["attestation"]["symmetricKey"]) for e in reply.body)
        seen += [e["registrationId"] for e in reply.body]
        pages += 1
        token = reply.headers.get("x-ms-continuation")
        if token is None:
            break
    assert seen == [f"q-{i}" for i in range(5)] and pages == 3
    everything = served.service("POST", "/enrollments/query", {"query": "SELECT *"})
    assert len(everything.body) == 5 and "x-ms-continuation" not in everything.headers
    assert served.service("POST", "/enrollments/query", {"query": "SELECT * WHERE x = 1"}).status == 400
    assert served.service("POST", "/enrollmentGroups/query", {"query": "*"}).body == []
    assert served.service("POST", "/enrollments/query", {"query": "*"}, {"x-ms-continuation": "%%%"}).status == 400


def test_registration_states(dps, serve):
    served = serve(fast=True)
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "symmetricKey")
    for device in ("r-1", "r-2"):
        key = dps.ok("enrollment-group", "compute-device-key", "fleet", "--registration-id", device).stdout.strip()
        assert served.register(device, key).status == 200
    state = served.service("GET", "/registrations/r-1")
    assert state.status == 200 and state.body["status"] == "assigned" and state.body["assignedHub"] == "hub-a.azure-devices.net", state
    assert "symmetricKey" not in state.body  # the service's DeviceRegistrationState has no attestation part
    group = served.service("POST", "/registrations/fleet/query", headers={"x-ms-max-item-count": "1"})
    assert [r["registrationId"] for r in group.body] == ["r-1"] and group.headers["x-ms-item-type"] == "DeviceRegistration"
    rest = served.service("POST", "/registrations/fleet/query", {"query": "*"}, {"x-ms-continuation": group.headers["x-ms-continuation"]})
    assert [r["registrationId"] for r in rest.body] == ["r-2"] and "x-ms-continuation" not in rest.headers
    # Individual enrollments show their device's registration state.
    assert served.service("DELETE", "/registrations/r-1", headers={"If-Match": "nope"}).status == 412
    assert served.service("DELETE", "/registrations/r-1", headers={"If-Match": state.body["etag"]}).status == 204
    assert served.service("GET", "/registrations/r-1").body["errorCode"] == 404202
    assert [r["registrationId"] for r in dps.json("registration", "list")] == ["r-2"]


def test_individual_enrollment_shows_its_registration_state(dps, serve):
    served = serve(fast=True)
    created = served.service("PUT", "/enrollments/dev-1", _sym("dev-1"))
    key = created.body["attestation"]["symmetricKey"]["primaryKey"]
    assert served.register("dev-1", key).status == 200
    view = served.service("GET", "/enrollments/dev-1").body
    assert view["registrationState"]["status"] == "assigned" and view["registrationState"]["registrationId"] == "dev-1"
    # Sending the view back (as Node's get-modify-put does) is accepted.
    assert served.service("PUT", "/enrollments/dev-1", view, {"If-Match": view["etag"]}).status == 200


def test_unknown_id_scope_path_and_service_paths_do_not_mix(dps, serve):
    served = serve()
    assert served.service("GET", f"/{ID_SCOPE}").status == 404
    assert served.service("GET", "/enrollments/a/b/c").status == 404
    assert served.service("GET", "/registrations/a/query").status == 405
