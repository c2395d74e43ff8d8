"""Property tests over every parser of outside input: whatever comes in, only dpsctl's own DpsError comes out.

Each property draws both shapeless input (any text, any bytes) and input shaped like the real thing, then
damaged (a real certificate with bytes flipped, a SAS token with fields shuffled, an import document with
wrong types in plausible places). The settings are derandomized, so CI runs the same examples every time;
FUZZ_EXAMPLES sets the size of the longer "fuzz run" over the SAS token and import document parsers.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpsctl.core import ids, keys, sas
from dpsctl.core.batch import read_batch_file
from dpsctl.core.certs import (
    MAX_CERTIFICATES,
    certificate_info,
    common_name,
    load_certificates,
    load_private_key,
    sign_possession_challenge,
    subject_of,
    verify_chain,
    verify_possession,
)
from dpsctl.core.checks import all_ok
from dpsctl.core.custom_allocation import AllocationResponse, parse_allocation_response
from dpsctl.core.errors import AllocationFailed, DpsError
from dpsctl.core.untrusted_json import MAX_JSON_DEPTH, too_deep
from dpsctl.core.transfer import DOCUMENT_FIELDS, ImportPlan, import_document, parse_document
from dpsctl.store.memory import MemoryStore
from tests.helpers.constants import ID_SCOPE as SCOPE

FUZZ_EXAMPLES = int(os.environ.get("DPSCTL_FUZZ_EXAMPLES", "2000"))
PROPERTY = settings(max_examples=150, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings(PROPERTY, max_examples=FUZZ_EXAMPLES)
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
KEY = base64.b64encode(bytes(range(32))).decode()
HUBS = ["hub-a.azure-devices.net", "hub-b.azure-devices.net"]


def only_dps_errors(call, *args: Any, **kwargs: Any) -> Any:
    """Call, letting through a result or a DpsError; any other exception fails the property."""
    try:
        return call(*args, **kwargs)
    except DpsError as error:
        assert isinstance(error.message, str) and error.message
        return error


# --------------------------------------------------------------------------- strategies

json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False) | st.text(max_size=16)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)


def mostly(good: list[str], bad: st.SearchStrategy) -> st.SearchStrategy:
    """Three times in four a valid value (so that parsing goes deep), else a bad one."""
    return st.integers(0, 3).flatmap(lambda n: bad if n == 0 else st.sampled_from(good))


id_like = mostly(["dev-01", "Dev-01", "g1", "x:y.z_w-", "dev-02"], st.sampled_from(["", "a" * 129, "d\u0435v", "dev/01", "-x", "x."]) | st.text(max_size=16))
key_like = mostly([KEY, base64.b64encode(bytes(range(16))).decode()], st.sampled_from(["", "not base64", "AAAA", base64.b64encode(bytes(65)).decode(), KEY.replace("+", "-")]) | st.text(max_size=24))
hub_like = mostly(["hub-a", "hub-a.azure-devices.net", "HUB-B"], st.sampled_from(["", "bad_hub", "a" * 300]) | st.text(max_size=12))


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the strategy; now and then a JSON value of any type in its place."""
    return st.integers(0, 5).flatmap(lambda n: json_values if n == 0 else strategy)


@lru_cache(maxsize=None)
def seed_material() -> dict[str, bytes]:
    """A real chain and key from dpsctl's own PKI, to mutate."""
    from cryptography.hazmat.primitives import serialization

    from dpsctl.core.certs import issue_device, issue_intermediate, issue_root

    root = issue_root("fuzz root")
    inter = issue_intermediate("fuzz intermediate", *root)
    leaf, key = issue_device("fuzz-01", *inter)
    expired = issue_device("fuzz-02", *inter, not_before=datetime.now(timezone.utc) - timedelta(days=30), days=1)[0]
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, inter[0], root[0]))
    return {
        "pem": pem,
        "der": leaf.public_bytes(serialization.Encoding.DER),
        "b64": base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)),
        "key_pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "key_der": key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()),
        "expired": expired.public_bytes(serialization.Encoding.PEM),
        "root": root[0].public_bytes(serialization.Encoding.PEM),
    }


@st.composite
def mutated(draw: st.DrawFn, seed: str) -> bytes:
    """A seed file with a few random edits: flipped bytes, cuts, insertions, duplicated parts."""
    data = bytearray(seed_material()[seed])
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "truncate":
            del data[at:]
        else:
            data += data[at : at + draw(st.integers(1, 400))]
    return bytes(data)


certificate_inputs = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=256).map(str.encode),
    mutated("pem"),
    mutated("der"),
    mutated("b64"),
    mutated("key_pem"),
    st.just(b"-----BEGIN CERTIFICATE-----\n"),
)
key_inputs = st.one_of(st.binary(max_size=1024), mutated("key_pem"), mutated("key_der"), mutated("pem"))


@st.composite
def sas_tokens(draw: st.DrawFn) -> str:
    """SAS tokens: real ones, then fields dropped, repeated, reordered, re-encoded or replaced."""
    reg_id = draw(st.sampled_from(["dev-01", "Dev-01", "dev 01", "d\u0435v"]) | st.text(max_size=10))
    try:
        token = sas.build_sas_token(sas.device_resource_uri(SCOPE, reg_id), KEY, draw(st.integers(0, 2**40)), encode_sr=draw(st.booleans()))
    except DpsError:
        token = sas.SAS_PREFIX + "sr=x&sig=y&se=1"
    prefix, _, body = token.partition(" ")
    fields = body.split("&")
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "repeat", "swap", "replace", "add", "value"]))
        if op == "drop" and fields:
            fields.pop(draw(st.integers(0, len(fields) - 1)))
        elif op == "repeat" and fields:
            fields.append(draw(st.sampled_from(fields)))
        elif op == "swap" and len(fields) > 1:
            fields.reverse()
        elif op == "replace" and fields:
            fields[draw(st.integers(0, len(fields) - 1))] = draw(st.text(max_size=20))
        elif op == "add":
            fields.append(f"{draw(st.sampled_from(['sr', 'sig', 'se', 'skn', 'x', '']))}={draw(st.text(max_size=20))}")
        elif fields:
            i = draw(st.integers(0, len(fields) - 1))
            name = fields[i].partition("=")[0]
            fields[i] = f"{name}={draw(st.sampled_from(['', '+1', '-1', '1e9', '٣', '99999999999999999999', '%ZZ', '%00']) | st.text(max_size=12))}"
    separator = draw(st.sampled_from([" ", "  ", "\t", " "]))
    return draw(st.sampled_from([prefix, "sharedaccesssignature", "SharedAccessSignature", ""])) + separator + "&".join(fields)


# --------------------------------------------------------------------------- SAS tokens


def _check_token(text: str) -> None:
    token = only_dps_errors(sas.parse_sas_token, text)
    if isinstance(token, DpsError):
        return
    # Whatever parsed must be checkable without an exception.
    assert isinstance(token.se, int) and token.se >= 0
    sas.signature_matches(token, base64.b64decode(KEY))
    sas.resource_matches(token, SCOPE, "dev-01")
    sas.is_expired(token, NOW.timestamp())


@PROPERTY
@given(st.text(max_size=300) | st.binary(max_size=64))
def test_any_text_is_a_sas_token_or_invalid_input(text):
    _check_token(text)


@FUZZ
@given(sas_tokens())
def test_fuzz_run_sas_tokens(token):
    _check_token(token)


@PROPERTY
@given(reg_id=st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._:-]{0,30}[A-Za-z0-9-])?", fullmatch=True), key=st.binary(min_size=16, max_size=64), se=st.integers(0, 2**40))
def test_a_token_built_by_dpsctl_verifies_with_its_key_only(reg_id, key, se):
    token = sas.parse_sas_token(sas.build_sas_token(sas.device_resource_uri(SCOPE, reg_id), base64.b64encode(key).decode(), se))
    assert sas.signature_matches(token, key)
    assert not sas.signature_matches(token, bytes(b ^ 1 for b in key))
    assert sas.resource_matches(token, SCOPE, reg_id) and token.se == se


# --------------------------------------------------------------------------- identifiers and keys


@PROPERTY
@given(id_like)
def test_identifiers_are_valid_or_invalid_input(value):
    for check in (ids.validate_registration_id, ids.validate_group_id, ids.validate_device_id, ids.hub_host_name, ids.validate_id_scope):
        result = only_dps_errors(check, value)
        if not isinstance(result, DpsError) and check is ids.validate_registration_id:
            assert result == value and value.isascii() and 1 <= len(value) <= ids.MAX_REGISTRATION_ID


@PROPERTY
@given(key_like, id_like)
def test_keys_decode_and_derive_or_are_invalid_input(key, reg_id):
    raw = only_dps_errors(keys.decode_key, key)
    assert isinstance(raw, DpsError) or keys.MIN_KEY_BYTES <= len(raw) <= keys.MAX_KEY_BYTES
    derived = only_dps_errors(keys.derive_device_key, key, reg_id)
    assert isinstance(derived, DpsError) or len(base64.b64decode(derived)) == 32


# --------------------------------------------------------------------------- certificates


@PROPERTY
@given(certificate_inputs)
def test_certificate_input_loads_or_is_invalid_input(data):
    certs = only_dps_errors(load_certificates, data, source="input")
    if isinstance(certs, DpsError):
        return
    assert 1 <= len(certs) <= MAX_CERTIFICATES
    # A loaded chain can always be described and judged (a bad one fails checks; it never raises).
    for cert in certs:
        certificate_info(cert)
        subject_of(cert)
        common_name(cert)
    all_ok(verify_chain(certs, NOW))


@PROPERTY
@given(key_inputs)
def test_private_key_input_loads_or_is_invalid_input(data):
    key = only_dps_errors(load_private_key, data, source="key")
    if not isinstance(key, DpsError):
        leaf = load_certificates(seed_material()["pem"], source="seed")[0]
        verify_possession(leaf, b"nonce", sign_possession_challenge(key, b"nonce"))


# --------------------------------------------------------------------------- import documents


def _cert_text() -> st.SearchStrategy:
    return st.one_of(st.sampled_from([seed_material()["pem"].decode(), seed_material()["root"].decode(), seed_material()["expired"].decode(), "", "junk"]), st.text(max_size=40))


attestations = st.fixed_dictionaries(
    {"type": maybe(st.sampled_from(["symmetricKey", "x509", "tpm", "SYMMETRICKEY", "nope"]))},
    optional={
        "symmetricKey": maybe(st.fixed_dictionaries({}, optional={"primaryKey": maybe(key_like), "secondaryKey": maybe(key_like)})),
        "x509": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "clientCertificates": maybe(st.fixed_dictionaries({}, optional={"primary": maybe(st.fixed_dictionaries({"certificate": maybe(st.deferred(_cert_text))}))})),
                    "signingCertificates": maybe(st.fixed_dictionaries({}, optional={"primary": maybe(st.fixed_dictionaries({"certificate": maybe(st.deferred(_cert_text))}))})),
                    "caReferences": maybe(st.fixed_dictionaries({"primary": maybe(st.sampled_from(["ca1", "CA1", "missing"]))})),
                },
            )
        ),
        "tpm": maybe(st.fixed_dictionaries({"endorsementKey": maybe(key_like)})),
    },
)
common_fields = {
    "allocationPolicy": maybe(st.sampled_from(["hashed", "geoLatency", "static", "custom", "Hashed", "x"])),
    "iotHubs": maybe(st.lists(maybe(hub_like), max_size=3)),
    "initialTwin": maybe(st.fixed_dictionaries({}, optional={"tags": json_values, "properties": maybe(st.fixed_dictionaries({"desired": json_values}))})),
    "reprovisionPolicy": maybe(st.fixed_dictionaries({}, optional={"updateHubAssignment": maybe(st.booleans()), "migrateDeviceData": maybe(st.booleans())})),
    "customAllocationDefinition": maybe(
        st.fixed_dictionaries({}, optional={"webhookUrl": maybe(st.sampled_from(["http://127.0.0.1:9/x", "file:///etc/passwd", "ftp://h/x", "http://"])), "apiVersion": maybe(st.text(max_size=8)), "allocationCommand": maybe(st.sampled_from(["true", "python 'x", ""]))})
    ),
    "capabilities": maybe(st.fixed_dictionaries({"iotEdge": maybe(st.booleans())})),
    "provisioningStatus": maybe(st.sampled_from(["enabled", "disabled", "Enabled", "off"])),
    "etag": maybe(st.text(max_size=8)),
    "createdDateTimeUtc": maybe(st.text(max_size=8)),
}
enrollments = st.fixed_dictionaries({"registrationId": maybe(id_like), "attestation": maybe(attestations)}, optional={**common_fields, "deviceId": maybe(id_like)})
groups = st.fixed_dictionaries({"enrollmentGroupId": maybe(id_like), "attestation": maybe(attestations)}, optional=common_fields)
hubs = st.fixed_dictionaries(
    {"name": maybe(hub_like)},
    optional={
        "connectionString": maybe(st.sampled_from(["HostName=hub-a.azure-devices.net;SharedAccessKeyName=o;SharedAccessKey=" + KEY, "x", "SharedAccessKey=****"])),
        "location": maybe(st.sampled_from(["westeurope", "West Europe", "mars"])),
        "allocationWeight": maybe(st.integers(-5, 2000)),
        "applyAllocationPolicy": maybe(st.booleans()),
    },
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "service": maybe(st.fixed_dictionaries({}, optional={"idScope": maybe(mostly([SCOPE, "0ne0000ffff"], st.sampled_from(["0ne12", ""]))), "allocationPolicy": maybe(st.sampled_from(["hashed", "custom", "static"])), "location": maybe(mostly(["eastus", "West Europe"], st.just("nowhere")))})),
        "linkedHubs": maybe(st.lists(maybe(hubs), max_size=3)),
        "certificates": maybe(st.lists(maybe(st.fixed_dictionaries({"name": maybe(mostly(["ca1", "CA-2"], st.just("bad name"))), "certificate": maybe(st.deferred(_cert_text))}, optional={"isVerified": maybe(st.booleans())})), max_size=2)),
        "enrollments": maybe(st.lists(maybe(enrollments), max_size=3)),
        "enrollmentGroups": maybe(st.lists(maybe(groups), max_size=2)),
        "extra": json_values,
    },
)


def _import(text: str | bytes) -> None:
    doc = only_dps_errors(parse_document, text, "doc.yaml")
    if isinstance(doc, DpsError):
        return
    assert isinstance(doc, dict) and set(doc) <= DOCUMENT_FIELDS
    store = MemoryStore()
    try:
        with store.transaction(write=True) as tx:
            plan = import_document(tx, doc, NOW)
        assert isinstance(plan, ImportPlan)
        # What was imported reads back, and importing it again changes nothing.
        with store.transaction(write=True) as tx:
            again = import_document(tx, doc, NOW)
        assert again.to_dict()["counts"]["created"] == 0
    except DpsError:
        pass


@FUZZ
@given(documents, st.sampled_from(["json", "yaml"]))
def test_fuzz_run_import_documents(doc, form):
    _import(json.dumps(doc) if form == "json" else yaml.safe_dump(doc))


@PROPERTY
@given(st.text(max_size=400) | st.binary(max_size=400))
def test_any_text_is_an_import_document_or_invalid_input(text):
    _import(text)


@PROPERTY
@given(json_values)
def test_any_json_value_is_an_import_document_or_invalid_input(value):
    _import(json.dumps(value))


# --------------------------------------------------------------------------- webhook and command answers

answers = st.fixed_dictionaries(
    {"iotHubHostName": maybe(st.sampled_from([*HUBS, "HUB-A.AZURE-DEVICES.NET", "evil.azure-devices.net"]))},
    optional={"initialTwin": maybe(st.fixed_dictionaries({}, optional={"tags": json_values, "properties": maybe(st.fixed_dictionaries({"desired": json_values}))})), "payload": json_values},
)


@PROPERTY
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), answers.map(json.dumps), json_values.map(json.dumps), st.integers(0, 3000).map(lambda n: "[" * n + "]" * n)))
def test_any_answer_is_an_allocation_or_allocation_failed(body):
    try:
        response = parse_allocation_response(body, HUBS, source="webhook")
    except AllocationFailed:
        return
    assert isinstance(response, AllocationResponse) and response.iot_hub_host_name in HUBS
    assert not too_deep(response.payload, MAX_JSON_DEPTH) and (response.initial_twin is None or isinstance(response.initial_twin, dict))


# --------------------------------------------------------------------------- batch files

batch_rows = st.lists(st.dictionaries(st.sampled_from(["registrationId", "symmetricKey", "payload", "region", "password"]), st.text(max_size=12), max_size=4), max_size=4)


def _csv(rows: list[dict[str, str]]) -> str:
    import csv
    import io

    out = io.StringIO()
    columns = sorted({k for row in rows for k in row}) or ["registrationId"]
    writer = csv.DictWriter(out, columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@PROPERTY
@given(st.one_of(st.text(max_size=400), batch_rows.map(_csv), batch_rows.map(lambda rows: "\n".join(json.dumps(r) for r in rows)), json_values.map(json.dumps)))
def test_any_text_is_a_batch_file_or_invalid_input(text):
    lines = only_dps_errors(read_batch_file, text, "batch.csv")
    if not isinstance(lines, DpsError):
        assert all(isinstance(v, str) for line in lines for v in line.fields.values())


def test_the_fuzz_run_is_bounded_and_deterministic():
    # The CI budget: a few thousand examples, the same ones every run.
    assert 1000 <= FUZZ_EXAMPLES <= 10_000 or os.environ.get("DPSCTL_FUZZ_EXAMPLES")
    assert FUZZ.derandomize and PROPERTY.derandomize


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 100_000])
def test_the_depth_limit_is_exact_and_iterative(depth):
    value: Any = 1
    for _ in range(depth):
        value = [value]
    assert too_deep(value) == (depth > MAX_JSON_DEPTH)
