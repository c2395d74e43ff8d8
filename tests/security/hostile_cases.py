"""The hostile-input table: every bad input dpsctl is tried with, what it must answer, and the files and store it runs on.

One list, two uses: tests/security/test_hostile_inputs.py runs every case through the real CLI (both store
backends), and docs/hostile-inputs.md is generated from it:

    python -m tests.security.hostile_cases > docs/hostile-inputs.md

(a test fails when the document and this list disagree).

In a case, `{f}/NAME` is a file of FILES, made in a temporary folder at test time (the 50 MB ones too: nothing big
is committed); `{text:NAME}` is that file's content passed as the argument itself. Every case runs against the
same store, made by `build_store` (see STORE_SETUP).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from dpsctl.core.sas import build_sas_token, device_resource_uri
from tests.helpers.constants import HUB_A as HUB
from tests.helpers.constants import ID_SCOPE

# --------------------------------------------------------------------------- the store every case runs against

FUNCTION_KEY = "FUNCTIONKEYfunctionkey000"


def _key(label: str) -> str:
    """A fixed 32-byte Base64 key, so that the SAS tokens below are constants."""
    return base64.b64encode(hashlib.sha256(f"dpsctl hostile input {label}".encode()).digest()).decode()


KEY1, KEY2, GROUP_KEY1, GROUP_KEY2, OTHER_KEY = (_key(n) for n in ("enrollment 1", "enrollment 2", "group 1", "group 2", "other"))
FUTURE = 4102444800  # 2100-01-01: a token that has not expired
PAST = 1000000000  # 2001-09-09


def _token(registration_id: str, key: str, se: int = FUTURE) -> str:
    return build_sas_token(device_resource_uri(ID_SCOPE, registration_id), key, se)


GOOD_TOKEN = _token("dev-01", KEY1)
_PREFIX = "SharedAccessSignature "
_FIELDS = dict(part.split("=", 1) for part in GOOD_TOKEN[len(_PREFIX) :].split("&"))
_OTHER_SIG = dict(part.split("=", 1) for part in _token("dev-01", OTHER_KEY)[len(_PREFIX) :].split("&"))["sig"]


def _fields(**changes: str | None) -> str:
    """GOOD_TOKEN with some fields changed (None drops one)."""
    fields = {**_FIELDS, **changes}
    return _PREFIX + "&".join(f"{k}={v}" for k, v in fields.items() if v is not None)


# Allocation commands and webhook paths of the custom-allocation enrollments (`{python}` is this interpreter).
COMMANDS = {
    "cmd-hang": "{python} -c 'import time; time.sleep(60)'",
    "cmd-garbage": "{python} -c 'print(\"<html>not json</html>\")'",
    "cmd-fail": "{python} -c 'import sys; sys.stderr.write(\"no hub for you\\n\"); sys.exit(3)'",
    "cmd-flood": "{python} -c 'import itertools, sys; [sys.stdout.write(\"x\" * 65536) for _ in itertools.count()]'",
    "cmd-missing": "/nonexistent/allocator --hub 1",
    "cmd-wrong-hub": "{python} -c 'print(\"{{\\\"iotHubHostName\\\": \\\"evil.azure-devices.net\\\"}}\")'",
    "cmd-deep": "{python} -c 'print(\"{{\\\"iotHubHostName\\\": \\\"" + HUB + "\\\", \\\"payload\\\": \" + \"[\" * 500 + \"]\" * 500 + \"}}\")'",
    "cmd-escapes": "{python} -c 'import sys; sys.stderr.write(\"\\x1b[2J\\x1b]0;pwned\\x07\\u202egnp.exe\"); sys.exit(3)'",
    "cmd-twin-list": "{python} -c 'print(\"{{\\\"iotHubHostName\\\": \\\"" + HUB + "\\\", \\\"initialTwin\\\": [1]}}\")'",
}
HOOKS = {
    "hook-garbage": "/garbage",
    "hook-500": "/fail",
    "hook-to-file": "/to-file",
    "hook-to-ftp": "/to-ftp",
    "hook-to-https": "/to-https",
    "hook-drip": "/drip",
}

STORE_SETUP = f"""\
dpsctl init --id-scope {ID_SCOPE}
dpsctl hub add hub-a
dpsctl enrollment add dev-01 --attestation symmetricKey --primary-key KEY1 --secondary-key KEY2
dpsctl enrollment-group add grp --attestation symmetricKey --primary-key GROUP_KEY1 --secondary-key GROUP_KEY2
dpsctl enrollment-group add x509grp --attestation x509 --signing-cert root.pem
dpsctl enrollment add cmd-... --attestation symmetricKey --primary-key KEY1 --allocation-command COMMAND  # one per COMMANDS
dpsctl enrollment add hook-... --attestation symmetricKey --primary-key KEY1 --webhook-url WEBHOOK/PATH?code=...  # one per HOOKS
"""


def build_store(dps: Any, files: Files, webhook: str) -> None:
    """Make the store of STORE_SETUP through the CLI (`dps` is the tests' in-process runner)."""
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1, "--secondary-key", KEY2)
    dps.ok("enrollment-group", "add", "grp", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY1, "--secondary-key", GROUP_KEY2)
    dps.ok("enrollment-group", "add", "x509grp", "--attestation", "x509", "--signing-cert", str(files.path("root.pem")))
    for name, command in COMMANDS.items():
        command = command.format(python=sys.executable)
        dps.ok("enrollment", "add", name, "--attestation", "symmetricKey", "--primary-key", KEY1, "--secondary-key", KEY2, "--allocation-command", command)
    for name, path in HOOKS.items():
        url = f"{webhook}{path}?code={FUNCTION_KEY}"
        dps.ok("enrollment", "add", name, "--attestation", "symmetricKey", "--primary-key", KEY1, "--secondary-key", KEY2, "--webhook-url", url)


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One bad input: the dpsctl arguments (after --db STORE), the exit code, and the one-line error.

    `error` is the stderr line after `error: `, with the temporary folder removed; `…` stands for any text
    (a date, a size, a path). `writes` says what a refused provisioning attempt records: nothing (every
    other command), "history" (exit 5: the attempt in the history), or "registration" (exit 6 or 7: the
    attempt and the device's registration record with its status).
    """

    id: str
    area: str
    what: str
    args: tuple[str, ...]
    code: int
    error: str
    writes: str = "nothing"


def case(id: str, area: str, what: str, args: str | tuple[str, ...], code: int, error: str, writes: str = "nothing") -> Case:  # noqa: A002
    return Case(id, area, what, tuple(args.split()) if isinstance(args, str) else args, code, error, writes)


X509, KEYS, SAS, IDS, DOCS, TWINS, CUSTOM, TPM, BIG, FILES, TERMINAL = (
    "Certificates and private keys",
    "Symmetric keys and connection strings",
    "SAS tokens",
    "Identifiers",
    "Import documents (YAML and JSON)",
    "Initial twins, payloads and batch files",
    "Custom allocation: webhooks and commands",
    "Software TPM files and endorsement keys",
    "50 MB files",
    "Store files, lock files and other files on disk",
    "Text that reaches the terminal or becomes a file name",
)
AREAS = (X509, KEYS, SAS, IDS, DOCS, TWINS, CUSTOM, TPM, BIG, FILES, TERMINAL)

PROVISION_X509 = ("provision", "-o", "json", "--cert")
SAS_AS_DEV01 = ("provision", "-o", "json", "--registration-id", "dev-01", "--sas-token")
LONG_ID = "a" * 129

CASES: tuple[Case, ...] = (
    # ---------------------------------------------------------------- X.509
    case("pem-truncated", X509, "PEM certificate cut off in the middle", "cert check {f}/truncated.pem", 2,
         "truncated.pem: PEM block #2 ('-----BEGIN CERTIFICATE-----') has no matching END line; the file looks truncated"),
    case("pem-body-damaged", X509, "PEM armour around a body that is not Base64", "enrollment add dev-x --attestation x509 --cert {f}/body-damaged.pem", 2,
         "body-damaged.pem: PEM block #1 ('CERTIFICATE') is damaged: its body is not valid Base64"),
    case("pem-not-a-certificate", X509, "PEM armour around Base64 of random bytes", "ca add junk --cert {f}/not-a-cert.pem", 2,
         "not-a-cert.pem: the certificate is damaged or not a valid X.509 certificate"),
    case("binary-as-certificate", X509, "4 KiB of random bytes as a certificate", "enrollment-group add g2 --attestation x509 --signing-cert {f}/random.bin", 2,
         "random.bin: found 4096 bytes of binary data, not a PEM, DER or Base64 certificate"),
    case("empty-certificate", X509, "an empty certificate file", "cert check {f}/empty.pem -o json", 2,
         "empty.pem: is empty, expected a certificate"),
    case("der-key-as-certificate", X509, "a DER private key where a certificate is expected", "cert check {f}/dev.key.der", 2,
         "dev.key.der: found a private key, not a PEM, DER or Base64 certificate"),
    case("pem-key-as-certificate", X509, "a PEM private key where a certificate is expected", (*PROVISION_X509, "{f}/dev.key", "--key", "{f}/dev.key"), 2,
         "dev.key: PEM block #1 is a private key ('PRIVATE KEY'), not a certificate"),
    case("der-certificate-as-key", X509, "a DER certificate where a private key is expected", (*PROVISION_X509, "{f}/dev.pem", "--key", "{f}/dev.der"), 2,
         "dev.der: found a certificate, not a usable private key"),
    case("pem-certificate-as-key", X509, "a PEM certificate where a private key is expected", "cert check {f}/dev.pem --key {f}/dev.pem", 2,
         "dev.pem: holds no private key (found PEM blocks: CERTIFICATE)"),
    case("encrypted-key", X509, "a password-protected private key", (*PROVISION_X509, "{f}/dev.pem", "--key", "{f}/encrypted.key"), 2,
         "encrypted.key: the private key is encrypted; dpsctl reads only unencrypted keys"),
    case("ed25519-key", X509, "an Ed25519 private key (DPS takes RSA and EC)", "cert create-device dev-ed --ca {f}/root.pem --ca-key {f}/ed25519.key --out {f}", 2,
         "ed25519.key: found an Ed25519 private key; dpsctl supports only RSA and EC keys"),
    case("wrong-key-provision", X509, "a device certificate with another certificate's key", (*PROVISION_X509, "{f}/dev.pem", "--key", "{f}/other.key"), 5,
         "the private key does not belong to the device certificate 'CN=dev-x509'", "history"),
    case("wrong-key-ca", X509, "a CA certificate with another key to sign with", "cert create-device dev-y --ca {f}/root.pem --ca-key {f}/other.key --out {f}", 2,
         "other.key: the key does not belong to the certificate 'CN=hostile root' in root.pem"),
    case("expired-chain", X509, "an expired device certificate", (*PROVISION_X509, "{f}/expired.pem", "--key", "{f}/expired.key"), 5,
         "CN=exp-01: has expired: validity window …..… ended before now (…)", "history"),
    case("not-yet-valid-chain", X509, "a device certificate valid only from next week", (*PROVISION_X509, "{f}/notyet.pem", "--key", "{f}/notyet.key"), 5,
         "CN=notyet-01: is not yet valid: validity window …..… starts after now (…)", "history"),
    case("self-signed-leaf-to-group", X509, "a self-signed device certificate, no individual enrollment (only groups)", (*PROVISION_X509, "{f}/self.pem", "--key", "{f}/self.key"), 5,
         "no enrollment matches the certificate chain of 'self-01' (issuer 'CN=self-01')", "history"),
    case("self-signed-leaf-as-group-ca", X509, "a self-signed device certificate as a group's signing certificate", "enrollment-group add g3 --attestation x509 --signing-cert {f}/self.pem", 2,
         "certificate {f}/self.pem is not a CA certificate (no basicConstraints CA=true)"),
    case("ca-flag-missing", X509, "a chain whose intermediate lacks basicConstraints CA=true", (*PROVISION_X509, "{f}/noca.pem", "--key", "{f}/noca.key"), 5,
         "CN=fake-ca: is not a CA (has basicConstraints CA=false), so it may not sign 'CN=dev-noca'", "history"),
    case("ca-flag-missing-issuer", X509, "signing a certificate with a CA that is not one", "cert create-intermediate sub --ca {f}/self.pem --ca-key {f}/self.key --out {f}", 2,
         "self.pem: 'CN=self-01' is not a CA certificate (no basicConstraints CA=true), so it cannot sign certificates"),
    case("path-length-exceeded", X509, "a root with path length 0 above an intermediate", (*PROVISION_X509, "{f}/pathlen.pem", "--key", "{f}/pathlen.key"), 5,
         "CN=pathlen root: path length limit 0 is exceeded: 1 CA certificate(s) sit between it and the leaf", "history"),
    case("path-length-exceeded-create", X509, "an intermediate below a CA whose path length is used up", "cert create-intermediate sub --ca {f}/inter.pem --ca-key {f}/inter.key --out {f}", 2,
         "'CN=hostile intermediate' has path length limit 0: it allows 0 CA certificate(s) below it, and a new intermediate here would make 1"),
    case("chain-too-long", X509, "a chain of 11 certificates (limit 10)", (*PROVISION_X509, "{f}/long.pem", "--key", "{f}/long.key"), 5,
         "CN=long-01: chain has 11 certificates, more than the limit of 10", "history"),
    case("too-many-pem-blocks", X509, "21 certificates in one file (limit 20)", "cert check {f}/many.pem", 2,
         "many.pem: holds 21 PEM blocks, more than the limit of 20"),
    case("weak-rsa-key", X509, "a device certificate with an RSA-1024 key", (*PROVISION_X509, "{f}/weak.pem", "--key", "{f}/weak.key"), 5,
         "CN=weak-01: has an RSA 1024-bit key; DPS accepts RSA >= 2048 bits or EC P-256/P-384", "history"),
    case("ca-add-chain", X509, "a chain where one CA certificate is expected", "ca add chain --cert {f}/dev.pem", 2,
         "dev.pem: holds 2 certificates; upload exactly one CA certificate"),
    # ---------------------------------------------------------------- symmetric keys
    case("key-not-base64", KEYS, "a key that is not Base64", ("enrollment", "add", "k1", "--attestation", "symmetricKey", "--primary-key", "not*base64!"), 2,
         "primary key is not valid Base64: it contains '!', '*', which Base64 never does"),
    case("key-too-short", KEYS, "a key of 8 bytes (DPS: 16 to 64)", ("enrollment", "add", "k2", "--attestation", "symmetricKey", "--primary-key", "AAAAAAAAAAA="), 2,
         "primary key decodes to 8 bytes; DPS requires 16 to 64 bytes"),
    case("key-too-long", KEYS, "a key of 65 bytes", ("enrollment-group", "add", "k3", "--attestation", "symmetricKey", "--secondary-key", base64.b64encode(bytes(65)).decode()), 2,
         "secondary key decodes to 65 bytes; DPS requires 16 to 64 bytes"),
    case("key-empty", KEYS, "an empty group key", ("keys", "derive", "--group-key", "", "--registration-id", "dev-01"), 2,
         "group key is empty"),
    case("device-key-not-base64", KEYS, "a device key with a non-ASCII character", ("provision", "-o", "json", "--registration-id", "dev-01", "--symmetric-key", KEY1[:-2] + "é="), 2,
         "device key is not valid Base64: it contains U+00E9, which Base64 never does"),
    case("key-url-safe", KEYS, "a key in URL-safe Base64", ("keys", "check", "-o", "json", "--registration-id", "dev-01", "--key", "-_" + KEY1[2:]), 2,
         "the key is not valid Base64: it uses URL-safe Base64 ('-' and '_'); DPS keys use standard Base64 ('+' and '/')"),
    case("hub-connection-string-no-key", KEYS, "a hub connection string without its key", ("hub", "add", "hub-b", "--connection-string", "HostName=hub-b.azure-devices.net;SharedAccessKeyName=iothubowner"), 2,
         "hub connection string is missing sharedaccesskey"),
    case("hub-connection-string-other-hub", KEYS, "a connection string of another hub", ("hub", "add", "hub-b", "--connection-string", f"HostName=evil.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY1}"), 2,
         "the connection string is for evil.azure-devices.net, not hub-b.azure-devices.net"),
    # ---------------------------------------------------------------- SAS tokens
    case("sas-no-prefix", SAS, "a token without 'SharedAccessSignature '", (*SAS_AS_DEV01, GOOD_TOKEN[len(_PREFIX) :]), 5,
         "SAS token is malformed: SAS token does not start with 'SharedAccessSignature '", "history"),
    case("sas-expired", SAS, "a correctly signed token that expired in 2001", (*SAS_AS_DEV01, _token("dev-01", KEY1, PAST)), 5,
         "SAS token expired at 2001-09-09T01:46:40Z (se=1000000000)", "history"),
    case("sas-tampered", SAS, "a token whose signature was made with another key", (*SAS_AS_DEV01, _fields(sig=_OTHER_SIG)), 5,
         "the SAS token is not signed with a key of enrollment 'dev-01'", "history"),
    case("sas-tampered-expiry", SAS, "a token whose expiry was changed after signing", (*SAS_AS_DEV01, _fields(se=str(FUTURE + 1))), 5,
         "the SAS token is not signed with a key of enrollment 'dev-01'", "history"),
    case("sas-wrong-sr", SAS, "a valid token of another device", (*SAS_AS_DEV01, _token("dev-02", KEY1)), 5,
         f"SAS token is for resource '{ID_SCOPE}/registrations/dev-02', not '{ID_SCOPE}/registrations/dev-01' (ID scope and registration ID must match)", "history"),
    case("sas-wrong-scope", SAS, "a token for another ID scope", (*SAS_AS_DEV01, build_sas_token(device_resource_uri("0ne0000FFFF", "dev-01"), KEY1, FUTURE)), 5,
         f"SAS token is for resource '0ne0000FFFF/registrations/dev-01', not '{ID_SCOPE}/registrations/dev-01' (ID scope and registration ID must match)", "history"),
    case("sas-duplicate-field", SAS, "a token with two sig fields", (*SAS_AS_DEV01, GOOD_TOKEN + "&sig=" + _OTHER_SIG), 5,
         "SAS token is malformed: SAS token has field 'sig' more than once", "history"),
    case("sas-missing-field", SAS, "a token without sig", (*SAS_AS_DEV01, _fields(sig=None)), 5,
         "SAS token is malformed: SAS token is missing field(s): sig", "history"),
    case("sas-bad-expiry", SAS, "a token whose se is '+1e9'", (*SAS_AS_DEV01, _fields(se="+1e9")), 5,
         "SAS token is malformed: SAS token field 'se' must be a non-negative whole number of seconds since the Unix epoch", "history"),
    case("sas-not-pairs", SAS, "a token with a field that is not name=value", (*SAS_AS_DEV01, GOOD_TOKEN + "&&"), 5,
         "SAS token is malformed: SAS token has a field that is not of the form name=value", "history"),
    case("sas-group-key", SAS, "a group device signing with the group key itself", ("provision", "-o", "json", "--sas-token", _token("grp-dev-07", GROUP_KEY1)), 5,
         "the device signed with the group key of enrollment group 'grp' instead of its own derived key", "history"),
    case("sas-garbage-no-id", SAS, "a token that is not one, and no --registration-id", ("provision", "-o", "json", "--sas-token", "hello"), 2,
         "the registration ID is missing"),
    # ---------------------------------------------------------------- identifiers
    case("id-too-long", IDS, "a registration ID of 129 characters (limit 128)", ("enrollment", "add", LONG_ID, "--attestation", "symmetricKey"), 2,
         "registration ID 'aaaa…...' is 129 characters long; the limit is 128"),
    case("id-bad-characters", IDS, "a registration ID with '/'", ("enrollment", "add", "dev/01", "--attestation", "symmetricKey"), 2,
         "registration ID 'dev/01' is not valid"),
    case("id-look-alike", IDS, "a registration ID with a Cyrillic 'е' (U+0435)", ("enrollment", "add", "d\u0435v-01", "--attestation", "symmetricKey"), 2,
         "registration ID 'd\u0435v-01' is not valid"),
    case("id-full-width", IDS, "full-width digits in a registration ID (U+FF10..)", ("provision", "-o", "json", "--registration-id", "dev-\uff10\uff11", "--symmetric-key", KEY1), 2,
         "registration ID 'dev-\uff10\uff11' is not valid"),
    case("id-empty", IDS, "an empty registration ID", ("enrollment", "add", "", "--attestation", "symmetricKey"), 2,
         "registration ID is empty"),
    case("id-control-character", IDS, "a registration ID with a tab", ("keys", "derive", "--group-key", GROUP_KEY1, "--registration-id", "dev\t01"), 2,
         "registration ID 'dev\\t01' is not valid"),
    case("id-x509-too-long", IDS, "a 65-character X.509 registration ID (the CN limit is 64)", ("cert", "create-device", "b" * 65, "--out", "{f}"), 2,
         "registration ID '" + "b" * 65 + "' is 65 characters long; the limit is 64"),
    case("device-id-space", IDS, "a device ID with a space", ("enrollment", "add", "dev-09", "--attestation", "symmetricKey", "--device-id", "my device"), 2,
         "device ID 'my device' is not valid"),
    case("hub-name-bad", IDS, "a hub name with '_' and '!'", ("hub", "add", "Hub_A!"), 2,
         "hub name 'Hub_A!' is not a valid host name"),
    case("id-scope-bad", IDS, "an ID scope that is not 0ne + 8 hex digits", ("keys", "sas", "--registration-id", "dev-01", "--key", KEY1, "--id-scope", "0ne12"), 2,
         "ID scope '0ne12' is not valid"),
    case("ca-name-bad", IDS, "a CA certificate name with a space", ("ca", "add", "my root", "--cert", "{f}/root.pem"), 2,
         "CA certificate name 'my root' is not valid"),
    # ---------------------------------------------------------------- import documents
    case("yaml-unknown-field", DOCS, "an enrollment with a field DPS does not have", "import {f}/unknown-field.yaml", 2,
         "enrollments[0] has unknown field 'colour'"),
    case("yaml-wrong-type", DOCS, "enrollments given as a mapping instead of a list", "import {f}/wrong-type.yaml", 2,
         "enrollments must be a list"),
    case("yaml-wrong-field-type", DOCS, "a hub weight given as a string", "import {f}/weight-string.yaml -o json", 2,
         "linked hub 'hub-c.azure-devices.net'.allocationWeight must be an integer"),
    case("yaml-billion-laughs", DOCS, "anchors that expand exponentially (billion laughs)", "import {f}/bomb.yaml", 2,
         "bomb.yaml uses YAML anchors/aliases, which dpsctl does not accept"),
    case("yaml-python-tag", DOCS, "a !!python/object/apply tag that would run a command", "import {f}/python-tag.yaml", 2,
         "python-tag.yaml is not valid YAML at line 1: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    case("yaml-syntax", DOCS, "YAML cut off inside a flow sequence", "import {f}/truncated.yaml", 2,
         "truncated.yaml is not valid YAML at line …: …"),
    case("yaml-deep", DOCS, "YAML nested 5,000 levels deep", "import {f}/deep.yaml", 2,
         "deep.yaml is not valid YAML at line 1: exceeded maximum nesting depth"),
    case("json-truncated", DOCS, "a JSON document cut off", "import {f}/truncated.json", 2,
         "truncated.json is not valid JSON: … at line 1 column …"),
    case("json-deep", DOCS, "JSON nested 100,000 levels deep", "import {f}/deep.json", 2,
         "deep.json nests objects or arrays too deeply"),
    case("json-huge-number", DOCS, "a number with 5,000 digits", "import {f}/huge-number.json", 2,
         "huge-number.json holds a number with more digits than dpsctl reads"),
    case("json-not-object", DOCS, "a JSON array instead of an object", "import {f}/list.json", 2,
         "list.json must hold an object with linkedHubs, enrollments and enrollmentGroups"),
    case("import-binary", DOCS, "random bytes as an import file", "import {f}/random.bin", 2,
         "random.bin is not UTF-8 text"),
    case("import-bad-certificate", DOCS, "a group whose signing certificate is garbage", "import {f}/bad-certificate.yaml", 2,
         "enrollmentGroups 'g-bad' primary certificate: found text, not a PEM, DER or Base64 certificate"),
    case("import-file-webhook", DOCS, "a webhook URL with the file: scheme", "import {f}/file-webhook.yaml", 2,
         "enrollment 'w1'.customAllocationDefinition.webhookUrl must be an http:// or https:// URL with a host name"),
    case("import-bad-scope", DOCS, "a service ID scope that is not one", "import {f}/bad-scope.yaml", 2,
         "ID scope 'scope' is not valid"),
    # ---------------------------------------------------------------- twins, payloads, batch files
    case("twin-not-object", TWINS, "an initial twin that is a JSON array", ("enrollment", "add", "t1", "--attestation", "symmetricKey", "--initial-twin", "[1, 2]"), 2,
         'initial twin must be a JSON object like {"tags": {...}, "properties": {"desired": {...}}}'),
    case("twin-too-large", TWINS, "initial twin tags of 40 KB (limit 32 KB)", "enrollment add t2 --attestation symmetricKey --initial-twin @{f}/twin-big.json", 2,
         "initialTwin.tags is 40… bytes; the limit is 32768 (IoT Hub's twin limit)"),
    case("twin-unknown-field", TWINS, "an initial twin with a field other than tags and properties", ("enrollment-group", "add", "t3", "--attestation", "symmetricKey", "--initial-twin", '{"colour": "red"}'), 2,
         "initialTwin has unknown field 'colour'"),
    case("twin-not-json", TWINS, "an initial twin that is not JSON", ("enrollment", "add", "t4", "--attestation", "symmetricKey", "--initial-twin", "{tags: 1}"), 2,
         "initial twin is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    case("twin-yaml-bomb", TWINS, "an initial twin file in YAML with exponential anchors", "enrollment add t5 --attestation symmetricKey --initial-twin {f}/twin-bomb.yaml", 2,
         "initial twin uses YAML anchors/aliases, which dpsctl does not accept"),
    case("twin-deep", TWINS, "initial twin tags nested 40 levels deep", "enrollment add t6 --attestation symmetricKey --initial-twin @{f}/twin-deep.json", 2,
         "initial twin nests objects or arrays more than 32 levels deep"),
    case("payload-not-json", TWINS, "a registration payload that is not JSON", ("provision", "-o", "json", "--registration-id", "dev-01", "--symmetric-key", KEY1, "--payload", "{oops"), 2,
         "payload is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    case("payload-deep", TWINS, "a payload nested 5,000 levels deep", ("provision", "-o", "json", "--registration-id", "dev-01", "--symmetric-key", KEY1, "--payload", "@{f}/payload-deep.json"), 2,
         "payload nests objects or arrays too deeply"),
    case("desired-not-json", TWINS, "desired properties that are not JSON", ("device", "update-twin", "dev-01", "--desired", "desired=1"), 2,
         "desired properties is not valid JSON: Expecting value at line 1 column 1"),
    case("batch-field-too-large", TWINS, "a batch CSV with a 200 KB field", "provision --batch {f}/bigfield.csv", 2,
         "bigfield.csv line 2 is not valid CSV: field larger than field limit (131072)"),
    case("batch-unknown-column", TWINS, "a batch CSV with an unknown column", "provision --batch {f}/unknown-column.csv -o json", 2,
         "unknown-column.csv line 2 has unknown column 'password'"),
    case("batch-not-json-lines", TWINS, "a JSON Lines batch with a broken line", "provision --batch {f}/broken.jsonl", 2,
         "broken.jsonl line 2 is not valid JSON: Expecting ',' delimiter…"),
    # ---------------------------------------------------------------- custom allocation
    case("webhook-ftp", CUSTOM, "an ftp:// webhook URL", ("enrollment", "add", "w2", "--attestation", "symmetricKey", "--webhook-url", "ftp://example.com/allocate"), 2,
         "webhook URL must be an http:// or https:// URL with a host name"),
    case("webhook-file", CUSTOM, "a file:// webhook URL", ("enrollment-group", "add", "w3", "--attestation", "symmetricKey", "--webhook-url", "file:///etc/passwd"), 2,
         "webhook URL must be an http:// or https:// URL with a host name"),
    case("webhook-no-host", CUSTOM, "an http URL without a host", ("enrollment", "add", "w4", "--attestation", "symmetricKey", "--webhook-url", "http:///allocate"), 2,
         "webhook URL must be an http:// or https:// URL with a host name"),
    case("command-unparsable", CUSTOM, "an allocation command with an unclosed quote", ("enrollment", "add", "w5", "--attestation", "symmetricKey", "--allocation-command", "python 'allocate.py"), 2,
         "--allocation-command cannot be parsed: No closing quotation"),
    case("webhook-garbage", CUSTOM, "a webhook answering HTML", ("provision", "-o", "json", "--registration-id", "hook-garbage", "--symmetric-key", KEY1), 7,
         "webhook WEBHOOK/garbage did not answer with JSON", "registration"),
    case("webhook-500", CUSTOM, "a webhook answering HTTP 500", ("provision", "-o", "json", "--registration-id", "hook-500", "--symmetric-key", KEY1), 7,
         "webhook WEBHOOK/fail answered HTTP 500 Internal Server Error", "registration"),
    case("webhook-redirect-file", CUSTOM, "a webhook redirecting (302) to file:///etc/passwd", ("provision", "-o", "json", "--registration-id", "hook-to-file", "--symmetric-key", KEY1), 7,
         "webhook WEBHOOK/to-file answered HTTP 302 Found", "registration"),
    case("webhook-redirect-ftp", CUSTOM, "a webhook redirecting (302) to ftp://", ("provision", "-o", "json", "--registration-id", "hook-to-ftp", "--symmetric-key", KEY1), 7,
         "webhook WEBHOOK/to-ftp answered HTTP 302 Found", "registration"),
    case("webhook-redirect-https", CUSTOM, "a webhook redirecting (307) from http to https", ("provision", "-o", "json", "--registration-id", "hook-to-https", "--symmetric-key", KEY1), 7,
         "webhook WEBHOOK/to-https answered HTTP 307 Temporary Redirect", "registration"),
    case("webhook-drip", CUSTOM, "a webhook sending its answer one byte every 0.2 s", ("provision", "-o", "json", "--registration-id", "hook-drip", "--symmetric-key", KEY1, "--webhook-timeout", "1"), 7,
         "webhook WEBHOOK/drip did not answer within 1 s", "registration"),
    case("command-hangs", CUSTOM, "an allocation command that never answers", ("provision", "-o", "json", "--registration-id", "cmd-hang", "--symmetric-key", KEY1, "--webhook-timeout", "1"), 7,
         "allocation command 'python' did not answer within 1 s; it was stopped", "registration"),
    case("command-garbage", CUSTOM, "an allocation command printing HTML", ("provision", "-o", "json", "--registration-id", "cmd-garbage", "--symmetric-key", KEY1), 7,
         "allocation command 'python' did not answer with JSON", "registration"),
    case("command-exit-3", CUSTOM, "an allocation command exiting with status 3", ("provision", "-o", "json", "--registration-id", "cmd-fail", "--symmetric-key", KEY1), 7,
         "allocation command 'python' exited with status 3: no hub for you", "registration"),
    case("command-flood", CUSTOM, "an allocation command printing without end", ("provision", "-o", "json", "--registration-id", "cmd-flood", "--symmetric-key", KEY1), 7,
         "allocation command 'python' answered with more than 1048576 bytes; it was stopped", "registration"),
    case("command-missing", CUSTOM, "an allocation command that does not exist", ("provision", "-o", "json", "--registration-id", "cmd-missing", "--symmetric-key", KEY1), 7,
         "allocation command 'allocator' was not found", "registration"),
    case("command-wrong-hub", CUSTOM, "an allocation command choosing a hub that is not linked", ("provision", "-o", "json", "--registration-id", "cmd-wrong-hub", "--symmetric-key", KEY1), 7,
         f"allocation command 'python' answered with iotHubHostName 'evil.azure-devices.net', which is not one of the linked hubs: {HUB}", "registration"),
    case("command-deep-answer", CUSTOM, "an allocation command answering JSON nested 500 levels deep", ("provision", "-o", "json", "--registration-id", "cmd-deep", "--symmetric-key", KEY1), 7,
         "the answer of allocation command 'python' nests objects or arrays more than 32 levels deep", "registration"),
    case("command-twin-not-object", CUSTOM, "an allocation command answering an initial twin that is an array", ("provision", "-o", "json", "--registration-id", "cmd-twin-list", "--symmetric-key", KEY1), 7,
         "allocation command 'python' answered with initialTwin an array, not an object", "registration"),
    # ---------------------------------------------------------------- TPM
    case("sas-lifetime", SAS, "a correctly signed token valid until the year 292277026596 (se=2^63-1)", (*SAS_AS_DEV01, _token("dev-01", KEY1, 2**63 - 1)), 5,
         "SAS token is valid until 9999-12-31T23:59:59Z (se=9223372036854775807), more than 365 days from now; dpsctl accepts at most 365 days", "history"),
    case("sas-lifetime-built", SAS, "asking `keys sas` for a token valid for two years", ("keys", "sas", "--registration-id", "dev-01", "--key", KEY1, "--ttl", str(2 * 365 * 86400)), 2,
         "the token would be valid for more than 365 days; dpsctl accepts tokens valid for at most 365 days"),
    case("tpm-not-json", TPM, "a TPM file that is not JSON", "provision -o json --tpm {f}/tpm-not-json.json", 2,
         "TPM file {f}/tpm-not-json.json is not JSON"),
    case("tpm-der-not-pem", TPM, "a TPM file whose private key is Base64 DER where PEM is expected", "tpm show {f}/tpm-der.json", 2,
         "{f}/tpm-der.json: endorsementPrivateKey is not an unencrypted PEM private key"),
    case("tpm-other-program", TPM, "a JSON file of another program as a TPM file", "tpm show {f}/list.json", 2,
         "{f}/list.json is not a dpsctl software TPM file"),
    case("ek-pem-not-der", TPM, "an endorsement key given as PEM where Base64 DER is expected", ("enrollment", "add", "tpm-01", "--attestation", "tpm", "--endorsement-key", "{text:ek.pem}"), 2,
         "endorsement key is not valid Base64"),
    case("ek-not-a-key", TPM, "an endorsement key that is Base64 of text", ("enrollment", "add", "tpm-02", "--attestation", "tpm", "--endorsement-key", base64.b64encode(b"endorsement").decode()), 2,
         "endorsement key is not a DER public key"),
    # ---------------------------------------------------------------- 50 MB files
    case("big-certificate", BIG, "a 50 MB file as a certificate", (*PROVISION_X509, "{f}/big.bin", "--key", "{f}/dev.key"), 2,
         "certificate {f}/big.bin is 50 MiB; dpsctl reads files of at most 16 MiB"),
    case("big-ca", BIG, "a 50 MB file as a CA certificate", "ca add big --cert {f}/big.bin", 2,
         "certificate {f}/big.bin is 50 MiB; dpsctl reads files of at most 16 MiB"),
    case("big-twin", BIG, "a 50 MB file as an initial twin", "enrollment add big-01 --attestation symmetricKey --initial-twin @{f}/big.bin", 2,
         "initial twin {f}/big.bin is 50 MiB; dpsctl reads files of at most 16 MiB"),
    case("big-import-binary", BIG, "a 50 MB binary file as an import document", "import {f}/big.bin", 2,
         "{f}/big.bin is not UTF-8 text"),
    case("big-import-json", BIG, "a 50 MB JSON document (one huge unknown field)", "import {f}/big.json", 2,
         "{f}/big.json has unknown field 'padding'"),
    case("big-batch", BIG, "a 50 MB binary file as a batch file", "provision --batch {f}/big.bin", 2,
         "cannot read batch file {f}/big.bin: 'utf-8' codec can't decode byte … in position …: …"),
    case("big-tpm", BIG, "a 50 MB file as a TPM file", "tpm show {f}/big.bin", 2,
         "TPM file {f}/big.bin is 50 MiB; dpsctl reads files of at most 1 MiB"),
    # ---------------------------------------------------------------- store files, lock files, files on disk
    case("store-fifo", FILES, "a FIFO as the store (reading it would wait for a writer forever)", "--db {f}/fifo.json enrollment list", 1,
         "store {f}/fifo.json is a FIFO (named pipe), not a regular file; it was left untouched"),
    case("store-fifo-sqlite", FILES, "a FIFO as a SQLite store", "--db {f}/fifo.sqlite hub add hub-z", 1,
         "store {f}/fifo.sqlite is a FIFO (named pipe), not a regular file; it was left untouched"),
    case("store-dev-zero", FILES, "a store that is a symbolic link to /dev/zero (endless bytes)", "--db {f}/zero.json export", 1,
         "store {f}/zero.json (a link to /dev/zero) is a character device, not a regular file; it was left untouched"),
    case("store-hard-link", FILES, "a store with a second hard link (two names would not lock each other out)", "--db {f}/linked-b.json hub add hub-z", 1,
         "store {f}/linked-b.json has 2 hard links; dpsctl refuses it, because writes through one name would not be seen (nor locked against) through the others"),
    case("store-hard-link-sqlite", FILES, "a SQLite store with a second hard link", "--db {f}/linked-b.sqlite enrollment list", 1,
         "store {f}/linked-b.sqlite has 2 hard links; dpsctl refuses it, because writes through one name would not be seen (nor locked against) through the others"),
    case("store-dangling-link", FILES, "a store path that is a symbolic link to nothing", "--db {f}/dangling.json hub add hub-z", 1,
         "store {f}/dangling.json is a symbolic link to {f}/nothing-here.json, which does not exist"),
    case("store-read-only", FILES, "a store made read-only with chmod 400", "--db {f}/readonly.json hub add hub-z", 1,
         "store {f}/readonly.json is read-only (mode 0400); dpsctl does not replace a store it may not write"),
    case("store-name-too-long", FILES, "a store file name of 300 characters", ("--db", "{f}/" + "n" * 300 + ".json", "hub", "add", "hub-z"), 1,
         "cannot open store {f}/" + "n" * 300 + ".json: the file name is too long for the file system"),
    case("lock-dangling-link", FILES, "the store's lock file replaced by a dangling symbolic link", "--db {f}/locked.json hub add hub-z", 1,
         "lock file {f}/locked.json.lock is a symbolic link; dpsctl never follows one"),
    case("lock-is-folder", FILES, "the store's lock file replaced by a folder", "--db {f}/lockdir.json hub add hub-z", 1,
         "lock file {f}/lockdir.json.lock is a directory"),
    case("sqlite-wal-link", FILES, "a SQLite -wal file planted as a symbolic link before the store is made", "--db {f}/planted.sqlite hub add hub-z", 1,
         "SQLite side file {f}/planted.sqlite-wal of store {f}/planted.sqlite is a symbolic link, not a regular file; dpsctl did not open the store"),
    case("batch-fifo", FILES, "a FIFO as a batch file", "provision --batch {f}/fifo.json", 2,
         "batch file {f}/fifo.json is a FIFO (named pipe), not a regular file"),
    case("tpm-dev-zero", FILES, "a TPM file that is a symbolic link to /dev/zero", "tpm show {f}/zero.json", 2,
         "TPM file {f}/zero.json is a character device, not a regular file"),
    case("secret-file-folder", FILES, "a device key read from @FOLDER", ("provision", "-o", "json", "--registration-id", "dev-01", "--symmetric-key", "@{f}"), 2,
         "device key . is a directory"),
    case("secret-file-two-lines", FILES, "a key file holding two lines", ("keys", "check", "--registration-id", "dev-01", "--key", "@{f}/two-keys.txt"), 2,
         "device key in {f}/two-keys.txt has more than one line; the file must hold the secret alone"),
    case("device-info-deep", FILES, "optionalDeviceInformation nested 36 levels deep in an import file (limit 32)", "import {f}/device-info-deep.json", 2,
         "enrollment 'deep-01'.optionalDeviceInformation nests objects or arrays more than 32 levels deep"),
    case("device-info-400", FILES, "optionalDeviceInformation nested 400 levels deep in an import file", "import {f}/device-info-400.json", 2,
         "{f}/device-info-400.json nests objects or arrays more than 40 levels deep"),
    case("device-info-400-yaml", FILES, "optionalDeviceInformation nested 400 levels deep in YAML", "import {f}/device-info-400.yaml", 2,
         "{f}/device-info-400.yaml nests YAML collections too deeply to be an import document"),
    case("device-info-big", FILES, "optionalDeviceInformation of 100 KB", "import {f}/device-info-big.json", 2,
         "enrollment 'big-01'.optionalDeviceInformation is 1000… bytes of JSON; the limit is 98304 (DPS's largest message)"),
    case("payload-big", FILES, "a registration payload of 100 KB", ("provision", "-o", "json", "--registration-id", "dev-01", "--symmetric-key", KEY1, "--payload", "@{f}/payload-big.json"), 2,
         "payload is 1000… bytes of JSON; the limit is 98304 (DPS's largest message)"),
    # ---------------------------------------------------------------- terminal text and file names
    case("command-escapes", TERMINAL, "an allocation command whose stderr clears the screen, sets the title and reverses text", ("provision", "-o", "json", "--registration-id", "cmd-escapes", "--symmetric-key", KEY1), 7,
         "allocation command 'python' exited with status 3: \\x1b[2J\\x1b]0;pwned\\x07\\u202egnp.exe", "registration"),
    case("cert-name-escape", TERMINAL, "a certificate name with ESC (it becomes a file name)", ("cert", "create-root", "evil\x1b[31m", "--out", "{f}"), 2,
         "'evil\\x1b[31m' cannot be used as a file name: it holds a control, format or bidirectional character"),
    case("cert-name-newline", TERMINAL, "a certificate name with a newline", ("cert", "create-root", "two\nlines", "--out", "{f}"), 2,
         "'two\\nlines' cannot be used as a file name: it holds a control, format or bidirectional character"),
    case("cert-name-bidi", TERMINAL, "a certificate name with a right-to-left override", ("cert", "create-device", "invoice-\u202egnp", "--out", "{f}"), 2,
         "registration ID 'invoice-\\u202egnp' is not valid"),
    case("cert-name-bidi-root", TERMINAL, "a root certificate name with a right-to-left override", ("cert", "create-root", "root-\u202etxt.exe", "--out", "{f}"), 2,
         "'root-\\u202etxt.exe' cannot be used as a file name: it holds a control, format or bidirectional character"),
    case("cert-name-too-long", TERMINAL, "a certificate name of 300 characters", ("cert", "create-root", "c" * 300, "--out", "{f}"), 2,
         "name '" + "c" * 40 + "'... is 300 bytes long; as a file name it may have at most 200"),
    case("hub-name-kelvin", TERMINAL, "a hub name with a Kelvin sign (U+212A), which lower() folds to 'k'", ("hub", "add", "hub-\u212a"), 2,
         "hub name 'hub-\u212a' is not a valid host name"),
    case("hub-key-invalid", TERMINAL, "a hub connection string whose key is not Base64", ("hub", "add", "hub-b", "--connection-string", "HostName=hub-b.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=not*a*key"), 2,
         "hub key (SharedAccessKey of the connection string) is not valid Base64: it contains '*', which Base64 never does"),
)


# --------------------------------------------------------------------------- the files


class Files:
    """The input files of the cases, made on first use in one folder (certificates with dpsctl's own test PKI)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._pki: dict[str, Any] = {}

    def path(self, name: str) -> Path:
        """The file NAME, made if it does not exist yet (a name no builder knows is one that must not exist)."""
        target = self.folder / name
        if name in SPECIAL:
            SPECIAL[name](target)  # FIFOs, links, stores with companions: made by a function, idempotently
            return target
        if name not in BUILDERS:
            return target
        if not target.exists():
            builder = BUILDERS[name]
            data = builder(self) if callable(builder) else builder
            target.write_bytes(data if isinstance(data, bytes) else data.encode())
        return target

    # -- a small PKI, made once
    def pki(self, name: str) -> Any:
        if not self._pki:
            from dpsctl.core.certs import issue_device, issue_intermediate, issue_root

            root = issue_root("hostile root", path_length=2)
            inter = issue_intermediate("hostile intermediate", *root, path_length=0)
            self._pki.update(root=root, inter=inter, dev=issue_device("dev-x509", *inter), other=issue_device("other-01", *inter))
        return self._pki[name]


def _pem(*certs: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _cert_der(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.DER)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _key_der(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _device(files: Files, reg_id: str, *, part: str, **options: Any) -> bytes:
    """A device certificate below the intermediate (chain file: leaf then intermediate), or its key."""
    from dpsctl.core.certs import issue_device

    cache = f"device:{reg_id}"
    if cache not in files._pki:
        files.pki("inter")
        files._pki[cache] = issue_device(reg_id, *files._pki["inter"], **options)
    cert, key = files._pki[cache]
    return _pem(cert, files._pki["inter"][0]) if part == "cert" else _key_pem(key)


def _chain(files: Files, name: str) -> tuple[list[Any], Any]:
    """Special chains: (certificates leaf first, leaf key)."""
    from dpsctl.core.certs import issue_device, issue_intermediate, issue_root

    cache = f"chain:{name}"
    if cache not in files._pki:
        inter = files.pki("inter")
        if name == "noca":
            root = files.pki("root")
            fake_ca = _not_a_ca("fake-ca", *root)  # basicConstraints CA=false, yet it signs below
            leaf = issue_device("dev-noca", *fake_ca)
            files._pki[cache] = ([leaf[0], fake_ca[0], root[0]], leaf[1])
        elif name == "pathlen":
            root0 = issue_root("pathlen root", path_length=0)
            inter0 = issue_intermediate("pathlen intermediate", *root0, path_length=None)
            leaf = issue_device("dev-pathlen", *inter0)
            files._pki[cache] = ([leaf[0], inter0[0], root0[0]], leaf[1])
        elif name == "long":
            issuer = issue_root("long root")
            certs = []
            for level in range(10):
                issuer = issue_intermediate(f"long {level}", *issuer, path_length=None)
                certs.insert(0, issuer[0])
            leaf = issue_device("long-01", *issuer)
            files._pki[cache] = ([leaf[0], *certs], leaf[1])
        elif name == "self":
            leaf = issue_device("self-01", None, None)
            files._pki[cache] = ([leaf[0]], leaf[1])
        elif name == "weak":
            files._pki[cache] = _weak_rsa_certificate()
    return files._pki[cache]


def _not_a_ca(common_name: str, issuer: Any, issuer_key: Any) -> tuple[Any, Any]:
    """A certificate with basicConstraints CA=false and no keyUsage: only the CA flag is wrong for an issuer."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(11)
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


def _weak_rsa_certificate() -> tuple[list[Any], Any]:
    """A self-signed device certificate with an RSA-1024 key (dpsctl's PKI refuses to make one)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak-01")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(7)
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return [cert], key


def _random(size: int) -> bytes:
    return random.Random(6).randbytes(size)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _tpm_der(files: Files) -> str:
    from dpsctl.core.tpm import create_tpm

    tpm = create_tpm()
    doc = {
        "format": "dpsctl-software-tpm",
        "version": 1,
        "endorsementKey": tpm.endorsement_key,
        "storageRootKey": tpm.storage_root_key,
        "endorsementPrivateKey": base64.b64encode(_key_der(tpm.endorsement_private_key)).decode(),
        "storageRootPrivateKey": base64.b64encode(_key_der(tpm.storage_root_private_key)).decode(),
    }
    return json.dumps(doc)


def _ek_pem(files: Files) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _encrypted_key(files: Files) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = files.pki("dev")[1]
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"secret"))


def _ed25519_key(files: Files) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return _key_pem(ed25519.Ed25519PrivateKey.generate())


def _bomb_yaml(top: str) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return f"{top}:\n" + "".join(f"  {line}\n" for line in lines)


def _twin_deep() -> str:
    return json.dumps({"tags": json.loads('{"a": ' * 40 + "1" + "}" * 40)})


BUILDERS: dict[str, Callable[[Files], bytes | str] | bytes | str] = {
    "root.pem": lambda f: _pem(f.pki("root")[0]),
    "root.key": lambda f: _key_pem(f.pki("root")[1]),
    "inter.pem": lambda f: _pem(f.pki("inter")[0], f.pki("root")[0]),
    "inter.key": lambda f: _key_pem(f.pki("inter")[1]),
    "dev.pem": lambda f: _pem(f.pki("dev")[0], f.pki("inter")[0]),
    "dev.key": lambda f: _key_pem(f.pki("dev")[1]),
    "dev.der": lambda f: _cert_der(f.pki("dev")[0]),
    "dev.key.der": lambda f: _key_der(f.pki("dev")[1]),
    "other.key": lambda f: _key_pem(f.pki("other")[1]),
    "truncated.pem": lambda f: _pem(f.pki("dev")[0], f.pki("inter")[0])[:-200],
    "body-damaged.pem": b"-----BEGIN CERTIFICATE-----\nMIIB!!!not*base64\n-----END CERTIFICATE-----\n",
    "not-a-cert.pem": lambda f: b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(_random(300)) + b"-----END CERTIFICATE-----\n",
    "random.bin": lambda f: _random(4096),
    "empty.pem": b"",
    "encrypted.key": _encrypted_key,
    "ed25519.key": _ed25519_key,
    "expired.pem": lambda f: _device(f, "exp-01", part="cert", not_before=datetime.now(timezone.utc) - timedelta(days=10), days=1),
    "expired.key": lambda f: _device(f, "exp-01", part="key", not_before=datetime.now(timezone.utc) - timedelta(days=10), days=1),
    "notyet.pem": lambda f: _device(f, "notyet-01", part="cert", not_before=datetime.now(timezone.utc) + timedelta(days=7)),
    "notyet.key": lambda f: _device(f, "notyet-01", part="key", not_before=datetime.now(timezone.utc) + timedelta(days=7)),
    **{
        f"{name}.{part}": (lambda name, part: lambda f: _pem(*_chain(f, name)[0]) if part == "pem" else _key_pem(_chain(f, name)[1]))(name, part)
        for name in ("noca", "pathlen", "long", "self", "weak")
        for part in ("pem", "key")
    },
    "many.pem": lambda f: _pem(*[f.pki("dev")[0]] * 21),
    "unknown-field.yaml": "enrollments:\n  - registrationId: y1\n    attestation: {type: symmetricKey}\n    colour: red\n",
    "wrong-type.yaml": "enrollments:\n  y1: {attestation: {type: symmetricKey}}\n",
    "weight-string.yaml": "linkedHubs:\n  - name: hub-c\n    allocationWeight: heavy\n",
    "bomb.yaml": lambda f: _bomb_yaml("service"),
    "python-tag.yaml": '!!python/object/apply:os.system ["echo pwned > pwned.txt"]\n',
    "truncated.yaml": "enrollments:\n  - registrationId: y1\n    attestation: {type: symmetricKey\n",
    "deep.yaml": lambda f: "enrollments: " + _nested(5000) + "\n",
    "truncated.json": '{"enrollments": [{"registrationId": "y1", "attestation": {"type": ',
    "deep.json": lambda f: _nested(100_000),
    "huge-number.json": lambda f: '{"service": {"operations": ' + "9" * 5000 + "}}",
    "list.json": "[1, 2, 3]\n",
    "bad-certificate.yaml": "enrollmentGroups:\n  - enrollmentGroupId: g-bad\n    attestation:\n      type: x509\n      x509:\n        signingCertificates:\n          primary: {certificate: 'hello, I am a certificate'}\n",
    "file-webhook.yaml": "enrollments:\n  - registrationId: w1\n    attestation: {type: symmetricKey}\n    allocationPolicy: custom\n    customAllocationDefinition: {webhookUrl: 'file:///etc/passwd', apiVersion: '2021-10-01'}\n",
    "bad-scope.yaml": "service:\n  idScope: scope\n",
    "twin-big.json": lambda f: json.dumps({"tags": {"blob": "x" * 40_000}}),
    "twin-bomb.yaml": lambda f: _bomb_yaml("tags"),
    "twin-deep.json": lambda f: _twin_deep(),
    "payload-deep.json": lambda f: _nested(5000),
    "bigfield.csv": lambda f: "registrationId,payload\nb1," + "x" * 200_000 + "\n",
    "unknown-column.csv": "registrationId,password\nb1,hunter2\n",
    "broken.jsonl": '{"registrationId": "b1", "symmetricKey": "' + KEY1 + '"}\n{"registrationId": "b2" "symmetricKey": 1}\n',
    "tpm-not-json.json": "this is not a TPM\n",
    "tpm-der.json": _tpm_der,
    "ek.pem": _ek_pem,
    "big.bin": lambda f: _random(50 * 1024 * 1024),
    "big.json": lambda f: '{"enrollments": [], "padding": "' + "x" * (50 * 1024 * 1024) + '"}',
}


def _store_file(path: Path) -> None:
    """An empty dpsctl store at `path` (TinyDB or SQLite by its name), made through the store layer."""
    from dpsctl.store import open_store

    if path.exists():
        return
    if path.suffix == ".json":
        path.write_text('{"_dpsctl": {"1": {"app": "dpsctl", "schemaVersion": 1}}}\n')
        path.chmod(0o600)
        return
    with open_store(path) as store, store.transaction(write=True):
        pass  # SQLite: opening it for writing creates it


def _fifo(path: Path) -> None:
    if not os.path.lexists(path):
        os.mkfifo(path)


def _link(path: Path, to: str) -> None:
    if not os.path.lexists(path):
        os.symlink(to, path)


def _hard_linked(path: Path) -> None:
    first = path.with_name(path.name.replace("-b.", "-a."))
    _store_file(first)
    if not os.path.lexists(path):
        os.link(first, path)


def _read_only(path: Path) -> None:
    _store_file(path)
    path.chmod(0o400)


def _store_with_lock(path: Path, lock: Callable[[Path], None]) -> None:
    _store_file(path)
    lock_path = path.with_name(path.name + ".lock")
    if lock_path.is_file() and not lock_path.is_symlink():
        lock_path.unlink()  # the ordinary lock file the store was made with
    if not os.path.lexists(lock_path):
        lock(lock_path)


SPECIAL: dict[str, Callable[[Path], None]] = {
    "fifo.json": _fifo,
    "fifo.sqlite": _fifo,
    "zero.json": lambda p: _link(p, "/dev/zero"),
    "linked-b.json": _hard_linked,
    "linked-b.sqlite": _hard_linked,
    "dangling.json": lambda p: _link(p, "nothing-here.json"),
    "readonly.json": _read_only,
    "locked.json": lambda p: _store_with_lock(p, lambda lock: os.symlink("nowhere.lock", lock)),
    "lockdir.json": lambda p: _store_with_lock(p, lambda lock: lock.mkdir()),
    "planted.sqlite": lambda p: _link(p.with_name(p.name + "-wal"), "/tmp/dpsctl-planted-wal"),
}


def _device_info_doc(reg_id: str, info: Any) -> str:
    return json.dumps({"enrollments": [{"registrationId": reg_id, "attestation": {"type": "symmetricKey"}, "optionalDeviceInformation": info}]})


def _deep_object(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


BUILDERS.update({
    "two-keys.txt": f"{KEY1}\n{KEY2}\n",
    "device-info-deep.json": lambda f: _device_info_doc("deep-01", _deep_object(36)),
    "device-info-400.json": lambda f: _device_info_doc("deep-01", _deep_object(400)),
    "device-info-400.yaml": lambda f: "enrollments:\n  - registrationId: deep-02\n    attestation: {type: symmetricKey}\n    optionalDeviceInformation: " + "{a: " * 400 + "1" + "}" * 400 + "\n",
    "device-info-big.json": lambda f: _device_info_doc("big-01", {"blob": "x" * 100_000}),
    "payload-big.json": lambda f: json.dumps({"blob": "x" * 100_000}),
})


# --------------------------------------------------------------------------- arguments and the document


def files_of(c: Case) -> list[str]:
    """The FILES a case's arguments name."""
    names = []
    for arg in c.args:
        for marker in ("{f}/", "{text:"):
            if marker in arg:
                names.append(arg.split(marker, 1)[1].rstrip("}").split()[0])
    return names


def resolve(c: Case, files: Files) -> list[str]:
    """The case's arguments with files made and placeholders filled in."""
    out = []
    for arg in c.args:
        if arg.startswith("{text:"):
            out.append(files.path(arg[len("{text:") : -1]).read_text())
            continue
        for name in files_of(Case(c.id, c.area, c.what, (arg,), c.code, c.error)):
            files.path(name)
        out.append(arg.replace("{f}", str(files.folder)))
    return out


def shown_args(c: Case) -> str:
    """The command as the document shows it: files by name, long or odd arguments quoted."""
    import shlex

    parts = []
    for arg in c.args:
        if arg.startswith("{text:"):
            parts.append(f'"$(cat {arg[len("{text:"):-1]})"')
            continue
        arg = arg.replace("{f}/", "").replace("{f}", ".")
        if arg == LONG_ID:
            parts.append('"$(printf \'a%.0s\' {1..129})"')
        elif any(ord(ch) > 126 or ord(ch) < 32 for ch in arg):
            parts.append("$'" + arg.encode("unicode_escape").decode().replace("'", "\\'") + "'")
        else:
            parts.append(shlex.quote(arg))
    return "dpsctl " + " ".join(parts)


def shown_error(c: Case) -> str:
    return c.error.replace("{f}/", "")


WRITES = {"nothing": "unchanged", "history": "+1 history entry", "registration": "+1 history entry, registration record `failed`"}


def render_markdown() -> str:
    """docs/hostile-inputs.md."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    def plain(text: str) -> str:
        # The error as prose, not code: a message such as "dpsctl reads only ..." is no command to type.
        return "".join("\\" + ch if ch in "\\`*_<>[]|#" else ch for ch in text)

    out = [
        "# Hostile and broken input",
        "",
        "<!-- Generated from tests/security/hostile_cases.py: python -m tests.security.hostile_cases > docs/hostile-inputs.md -->",
        "",
        f"Every row is a bad input that CI feeds to dpsctl ({len(CASES)} inputs, each against both store backends,",
        "by `tests/security/test_hostile_inputs.py`). For each one the test checks:",
        "",
        "- the exit code in the table (see [exit-codes.md](exit-codes.md));",
        "- stderr is exactly one `error: ` line (the text in the table after `error: `; `…` stands for text that varies: a date, a",
        "  size, a byte value), optionally followed by one `hint: ` line, and never a traceback;",
        "- stdout is empty, or valid JSON when `-o json` was given (a refused `provision` prints its outcome);",
        "- the store is unchanged, compared record by record before and after; except that a refused",
        "  `provision` records the attempt in the history (exit 5), and for exit 6 and 7 also the device's",
        "  registration record, exactly as documented in [provisioning.md](provisioning.md) — the test checks",
        "  that those records, and nothing else, changed.",
        "",
        "File names are files the test makes in a temporary folder (the 50 MB ones too). `WEBHOOK` is a local",
        "HTTP server of the test (`http://127.0.0.1:PORT`); `python` is the interpreter running the tests.",
        "Every case runs against a store made by:",
        "",
        "<!-- doctest: skip a template: KEY1, COMMAND and WEBHOOK stand for the values in the table -->",
        "```sh",
        STORE_SETUP.rstrip(),
        "```",
        "",
        "where the custom-allocation entries are:",
        "",
        "| Entry | Allocation command or webhook path |",
        "|---|---|",
        *(f"| `{name}` | `{cell(command.format(python='python'))}` |" for name, command in COMMANDS.items()),
        *(f"| `{name}` | `WEBHOOK{path}` — {HOOK_BEHAVIOUR[path]} |" for name, path in HOOKS.items()),
        "",
        "Redirects: dpsctl follows none, whatever the scheme (not even http to https): a webhook answering",
        "3xx is an allocation failure (exit 7) whose hint says to configure the final URL. Timeouts:",
        "`--webhook-timeout` (default 10 s) bounds the whole call — connection, headers and body — and an",
        "allocation command's whole run; an answer larger than 1 MiB is refused (the command is stopped).",
        "",
    ]
    number = 0
    for area in AREAS:
        rows = [c for c in CASES if c.area == area]
        out += [f"## {area}", "", "| # | Bad input | Command | Exit | Error | Store after |", "|---|---|---|---|---|---|"]
        for c in rows:
            number += 1
            out.append(f"| {number} `{c.id}` | {cell(c.what)} | `{cell(shown_args(c))}` | {c.code} | {plain(shown_error(c))} | {WRITES[c.writes]} |")
        out.append("")
    return "\n".join(out + wire_rows())


def wire_rows() -> list[str]:
    """The wire-level cases of `dpsctl serve` (tests/server/test_mqtt.py and test_http_wire.py), as rows."""
    from tests.helpers.wire_cases import CONNACK_REFUSALS, HOSTILE, MALFORMED

    out = [
        "## Wire input to `dpsctl serve`",
        "",
        "Each is sent over TLS by `tests/server/test_mqtt.py` or `tests/server/test_http_wire.py`, against both store",
        "backends; the test checks the answer, that the store is unchanged, and that the server then serves a",
        "well-behaved device. Slow and half-open connections, a chunked body streamed after its refusal (server memory",
        "measured before and after), lock contention and 2,000 idle connections are tested there too.",
        "",
        "| Bad input | Port | Answer |",
        "|---|---|---|",
    ]
    out += [f"| {name} | MQTT | connection closed (one log line) |" for name in sorted(HOSTILE)]
    out += [f"| {name} | MQTT | `CONNACK` {code}, then closed |" for name, (_, code) in sorted(CONNACK_REFUSALS.items())]
    out += [f"| {name} | HTTPS | {' or '.join(map(str, statuses))}, nothing routed |" for name, (_, statuses) in sorted(MALFORMED.items())]
    out += ["| an MQTT `CONNECT`, an AMQP header or binary bytes on the HTTPS port | HTTPS | closed at once, one log line naming what arrived |", ""]
    return out


HOOK_BEHAVIOUR = {
    "/garbage": "answers 200 with an HTML page",
    "/fail": "answers 500",
    "/to-file": "answers 302 with `Location: file:///etc/passwd`",
    "/to-ftp": "answers 302 with `Location: ftp://127.0.0.1:PORT/` (a listener that records any connection)",
    "/to-https": "answers 307 with `Location: https://127.0.0.1:PORT/...`",
    "/drip": "sends its answer one byte every 0.2 s",
}


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
