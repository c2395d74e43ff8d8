"""Secrets: files created 0600, keys kept out of every output unless --show-keys, constant-time signature
checks, safe YAML, allocation commands without a shell, and webhook calls that time out and follow no redirect."""

from __future__ import annotations

import ast
import base64
import hmac
import json
import shlex
import sqlite3
import stat
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from dpsctl.core.custom_allocation import call_webhook
from dpsctl.core.errors import AllocationFailed
from dpsctl.core.keys import derive_device_key
from tests.helpers.waiting import wait_for
from tests.security.hostile_cases import FUNCTION_KEY, GROUP_KEY1, GROUP_KEY2, ID_SCOPE, KEY1, KEY2, _token

SOURCE = Path(__file__).resolve().parents[2] / "dpsctl"
HUB_KEY = base64.b64encode(b"hub key of hub-s: keep it secret!").decode()
HUB_CS = f"HostName=hub-s.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={HUB_KEY}"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- 0600 files


def test_the_store_and_its_companions_are_0600(dps, tmp_path, open_umask):
    dps.ok("hub", "add", "hub-s")
    assert mode(dps.store) == 0o600
    if dps.store.suffix == ".sqlite":
        # -wal and -shm exist while a connection is open: hold a reader open across a write.
        reader = sqlite3.connect(dps.store)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM records").fetchone()
        try:
            dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey")
            companions = [dps.store.with_name(dps.store.name + s) for s in ("-wal", "-shm")]
            assert all(p.exists() for p in companions)
            assert {p.name: mode(p) for p in companions} == {p.name: 0o600 for p in companions}
        finally:
            reader.close()
    else:
        assert mode(dps.store.with_name(dps.store.name + ".lock")) == 0o600
    # A copy made by `store migrate`, to either backend, is private too.
    for target in (tmp_path / "copy.json", tmp_path / "copy.sqlite"):
        dps.ok("store", "migrate", "--to", str(target))
        assert mode(target) == 0o600
    leftovers = [p.name for p in tmp_path.iterdir() if mode(p) & 0o077]
    assert leftovers == [], leftovers


def test_key_files_are_0600_even_when_overwritten(dps, tmp_path, open_umask):
    dps.ok("cert", "create-root", "root", "--out", str(tmp_path))
    dps.ok("cert", "create-intermediate", "inter", "--ca", str(tmp_path / "root.cert.pem"), "--ca-key", str(tmp_path / "root.key.pem"), "--out", str(tmp_path))
    dps.ok("cert", "create-device", "dev-01", "--ca", str(tmp_path / "inter.fullchain.pem"), "--ca-key", str(tmp_path / "inter.key.pem"), "--out", str(tmp_path))
    keys = sorted(tmp_path.glob("*.key.pem"))
    assert [p.name for p in keys] == ["dev-01.key.pem", "inter.key.pem", "root.key.pem"]
    assert {p.name: mode(p) for p in keys} == {p.name: 0o600 for p in keys}
    # --force over a file someone made world-readable: the new key is private again.
    (tmp_path / "dev-01.key.pem").chmod(0o644)
    dps.ok("cert", "create-device", "dev-01", "--out", str(tmp_path), "--force")
    assert mode(tmp_path / "dev-01.key.pem") == 0o600


def test_tpm_files_are_0600(dps, tmp_path, open_umask):
    dps.ok("tpm", "create", str(tmp_path / "device.tpm"))
    assert mode(tmp_path / "device.tpm") == 0o600
    (tmp_path / "device.tpm").chmod(0o644)
    dps.ok("tpm", "create", str(tmp_path / "device.tpm"), "--force")
    assert mode(tmp_path / "device.tpm") == 0o600


# --------------------------------------------------------------------------- keys stay out of output


@pytest.fixture
def secret_store(dps, tmp_path, local_webhook):
    """A store holding every kind of key, with devices provisioned through each kind of enrollment."""
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-s", "--connection-string", HUB_CS)
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1, "--secondary-key", KEY2)
    dps.ok("enrollment-group", "add", "grp", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY1, "--secondary-key", GROUP_KEY2)
    dps.ok("enrollment", "add", "hook-01", "--attestation", "symmetricKey", "--primary-key", KEY1, "--secondary-key", KEY2, "--webhook-url", f"{local_webhook.base}/fail?code={FUNCTION_KEY}")
    dps.ok("cert", "create-root", "root", "--out", str(tmp_path))
    dps.ok("ca", "add", "root", "--cert", str(tmp_path / "root.cert.pem"), "--verified")
    dps.ok("enrollment-group", "add", "x509grp", "--attestation", "x509", "--ca-ref", "root")
    dps.ok("cert", "create-device", "cam-01", "--ca", str(tmp_path / "root.cert.pem"), "--ca-key", str(tmp_path / "root.key.pem"), "--out", str(tmp_path))
    dps.ok("provision", "--registration-id", "dev-01", "--symmetric-key", KEY1)
    dps.ok("provision", "--registration-id", "grp-dev-01", "--symmetric-key", derive_device_key(GROUP_KEY1, "grp-dev-01"))
    dps.ok("provision", "--cert", str(tmp_path / "cam-01.fullchain.pem"), "--key", str(tmp_path / "cam-01.key.pem"))
    assert dps("provision", "--registration-id", "hook-01", "--symmetric-key", KEY1).exit_code == 7
    assert dps("provision", "--registration-id", "dev-01", "--symmetric-key", KEY2[:-4] + "AAA=").exit_code == 5
    service_key = next(iter(dps.snapshot()["service"]))["serviceKey"]
    ca_key_lines = [line for line in (tmp_path / "root.key.pem").read_text().splitlines() if not line.startswith("-----")]
    secrets = {
        "enrollment primary key": KEY1,
        "enrollment secondary key": KEY2,
        "group primary key": GROUP_KEY1,
        "group secondary key": GROUP_KEY2,
        "derived device key": derive_device_key(GROUP_KEY1, "grp-dev-01"),
        "derived secondary device key": derive_device_key(GROUP_KEY2, "grp-dev-01"),
        "hub key": HUB_KEY,
        "service key": service_key,
        "webhook function key": FUNCTION_KEY,
        **{f"CA private key line {i}": line for i, line in enumerate(ca_key_lines)},
    }
    return dps, tmp_path, secrets


def leaked(text: str, secrets: dict[str, str], *, allowed: tuple[str, ...] = ()) -> list[str]:
    """Names of the secrets found in text (as is, or URL-encoded), leaving out those allowed there."""
    return [name for name, value in secrets.items() if name not in allowed and (value in text or quote(value, safe="") in text)]


# Commands that show stored data or diagnose a credential; none may print a key without --show-keys.
READERS = [
    ("enrollment", "list"), ("enrollment", "show", "dev-01"), ("enrollment", "show", "hook-01"),
    ("enrollment-group", "list"), ("enrollment-group", "show", "grp"), ("enrollment-group", "show", "x509grp"),
    ("hub", "list"), ("hub", "show", "hub-s"), ("service", "show"), ("export",),
    ("registration", "list"), ("registration", "show", "dev-01"), ("registration", "show", "grp-dev-01"), ("registration", "history"),
    ("device", "list"), ("device", "show", "dev-01"), ("device", "show", "grp-dev-01"), ("device", "show", "cam-01"),
    ("stats",), ("store", "info"), ("ca", "list"), ("ca", "show", "root"),
    ("keys", "check", "--registration-id", "grp-dev-01", "--key", GROUP_KEY1),
    ("keys", "check", "--registration-id", "dev-02", "--key", KEY1),
    ("keys", "check", "--registration-id", "dev-01", "--key", KEY1.replace("+", "-").replace("/", "_")),
]
# The webhook URL, function key (?code=) included, is part of the enrollment as DPS stores it and is shown
# with it (docs/security.md); no error, trace or other command may show it.
URL_SHOWN = {("enrollment", "show", "hook-01"), ("enrollment", "list"), ("export",)}


@pytest.mark.parametrize("output", ["table", "json", "yaml"])
def test_no_output_shows_a_key_without_show_keys(secret_store, output):
    dps, _, secrets = secret_store
    for args in READERS:
        run = dps(*args, "-o", output)
        allowed = ("webhook function key",) if args in URL_SHOWN else ()
        # keys check was given the key it diagnoses: the arguments are not output, and the output must not echo them.
        assert run.exit_code in (0, 2, 5), (args, run)
        assert leaked(run.stdout + run.stderr, secrets, allowed=allowed) == [], (args, output, run)


def test_provision_explain_and_errors_show_no_key(secret_store):
    dps, tmp, secrets = secret_store
    runs = [
        dps("provision", "--registration-id", "dev-01", "--symmetric-key", KEY1, "--explain"),
        dps("provision", "--registration-id", "grp-dev-02", "--symmetric-key", derive_device_key(GROUP_KEY1, "grp-dev-02"), "--explain"),
        dps("provision", "--registration-id", "grp-dev-03", "--symmetric-key", GROUP_KEY1, "--explain"),  # the group key itself: 401
        dps("provision", "--registration-id", "dev-01", "--sas-token", _token("dev-01", KEY2[:-4] + "AAA="), "--explain"),
        dps("provision", "--registration-id", "hook-01", "--symmetric-key", KEY1, "--explain"),  # the webhook answers 500
        dps("provision", "--cert", str(tmp / "cam-01.fullchain.pem"), "--key", str(tmp / "cam-01.key.pem"), "--explain"),
        dps("provision", "--batch", str(_batch(tmp))),
        dps("provision", "--count", "3", "--group", "grp", "--id-pattern", "storm-{n}"),
    ]
    for run in runs:
        assert "Traceback" not in run.stderr
        assert leaked(run.stdout + run.stderr, secrets) == [], run
    # -o json: the connectionString carries the device's own key (documented in choices.md); nothing else does.
    for reg_id, key in (("dev-01", KEY1), ("grp-dev-04", derive_device_key(GROUP_KEY1, "grp-dev-04"))):
        doc = dps.json("provision", "--registration-id", reg_id, "--symmetric-key", key, "--explain")
        assert doc.pop("connectionString").endswith(f"SharedAccessKey={key}")
        assert leaked(json.dumps(doc), secrets) == [], doc


def _batch(folder: Path) -> Path:
    path = folder / "batch.csv"
    path.write_text(f"registrationId,symmetricKey\ngrp-dev-05,{derive_device_key(GROUP_KEY1, 'grp-dev-05')}\ndev-01,{KEY2[:-4]}AAA=\n")
    return path


def test_certificate_commands_never_print_a_private_key(dps, tmp_path):
    runs = [
        dps("cert", "create-root", "root", "--out", str(tmp_path), "-o", "json"),
        dps("cert", "create-intermediate", "inter", "--ca", str(tmp_path / "root.cert.pem"), "--ca-key", str(tmp_path / "root.key.pem"), "--out", str(tmp_path)),
        dps("cert", "create-device", "dev-01", "--ca", str(tmp_path / "inter.fullchain.pem"), "--ca-key", str(tmp_path / "inter.key.pem"), "--out", str(tmp_path), "-o", "yaml"),
        dps("cert", "check", str(tmp_path / "dev-01.fullchain.pem"), "--key", str(tmp_path / "dev-01.key.pem")),
        dps("cert", "check", str(tmp_path / "dev-01.fullchain.pem"), "--key", str(tmp_path / "root.key.pem"), "-o", "json"),
        dps("cert", "create-device", "dev-02", "--ca", str(tmp_path / "root.cert.pem"), "--ca-key", str(tmp_path / "inter.key.pem"), "--out", str(tmp_path)),
        dps("tpm", "create", str(tmp_path / "dev.tpm")),
        dps("tpm", "show", str(tmp_path / "dev.tpm"), "-o", "json"),
    ]
    private = {}
    for key_file in tmp_path.glob("*.key.pem"):
        for i, line in enumerate(key_file.read_text().splitlines()):
            if not line.startswith("-----"):
                private[f"{key_file.name} line {i}"] = line
    tpm = json.loads((tmp_path / "dev.tpm").read_text())
    for field in ("endorsementPrivateKey", "storageRootPrivateKey"):
        for i, line in enumerate(tpm[field].splitlines()):
            if not line.startswith("-----"):
                private[f"TPM {field} line {i}"] = line
    for run in runs:
        assert leaked(run.stdout + run.stderr, private) == [], run


def test_show_keys_shows_them(secret_store):
    dps, _, secrets = secret_store
    shown = dps("export", "--show-keys", "-o", "json").stdout
    assert leaked(shown, secrets, allowed=()) == [name for name in secrets if name in {"enrollment primary key", "enrollment secondary key", "group primary key", "group secondary key", "hub key", "service key", "webhook function key"}]
    assert KEY1 in dps("enrollment", "show", "dev-01", "--show-keys").stdout
    assert HUB_KEY in dps("hub", "list", "--show-keys", "-o", "yaml").stdout


# --------------------------------------------------------------------------- constant-time comparisons


def test_signatures_are_compared_with_compare_digest(dps, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def counting(a, b):  # noqa: ANN001, ANN202
        calls.append((type(a).__name__, len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY1, "--secondary-key", KEY2)
    dps.ok("enrollment-group", "add", "grp", "--attestation", "symmetricKey", "--primary-key", GROUP_KEY1)
    for args, code in (
        (("--registration-id", "dev-01", "--symmetric-key", KEY1), 0),
        (("--registration-id", "dev-01", "--symmetric-key", KEY2), 0),
        (("--registration-id", "dev-01", "--sas-token", _token("dev-01", GROUP_KEY2)), 5),
        (("--registration-id", "grp-dev", "--symmetric-key", derive_device_key(GROUP_KEY1, "grp-dev")), 0),
        (("--registration-id", "grp-dev", "--symmetric-key", GROUP_KEY1), 5),
    ):
        calls.clear()
        assert dps("provision", *args).exit_code == code
        # Every signature the engine tried went through compare_digest, on 32-byte HMAC-SHA256 values.
        assert calls and all(c == ("bytes", 32, 32) for c in calls), calls
    calls.clear()
    assert dps("keys", "check", "--registration-id", "dev-01", "--key", KEY2).exit_code == 0
    assert calls


SECRET_WORDS = {"sig", "signature", "hmac", "mac", "secret", "digest"}  # parts of a name: primary_key -> {"primary", "key"}
SECRET_NAMES = {"primary_key", "secondary_key", "device_key", "group_key", "service_key", "nonce_key", "challenge_key"}
# == on these compares no secret: a DER octet, a cache key over public CA certificates, which options were
# given, and the TPM's endorsement key (a public key).
NOT_SECRETS = {"der[-len(cert.signature) - 1] == 0", "digest != self._digest", "bool(group) == bool(group_key)", "presented != endorsement_key"}


def test_no_secret_is_compared_with_equals():
    """Statically: no == or != has a signature, MAC or key among its operands (those go through compare_digest)."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare) or not any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and (o.value is None or isinstance(o.value, str)) for o in operands):
                continue  # comparing with None or a literal (an attestation type name) reveals nothing
            names = {n.id for o in operands for n in ast.walk(o) if isinstance(n, ast.Name)} | {n.attr for o in operands for n in ast.walk(o) if isinstance(n, ast.Attribute)}
            secret = any(name.lower() in SECRET_NAMES or SECRET_WORDS & set(name.lower().split("_")) for name in names)
            if secret and ast.unparse(node) not in NOT_SECRETS:
                found.append(f"{path.relative_to(SOURCE.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
    # The TPM check compares the presented endorsement key, a public key, with the enrolled one: not a secret.
    assert "presented != endorsement_key" in (SOURCE / "core" / "attestation.py").read_text()


# --------------------------------------------------------------------------- safe YAML, no shell


def _calls(attribute: str) -> list[tuple[str, ast.Call]]:
    out = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attribute:
                out.append((f"{path.relative_to(SOURCE.parent)}:{node.lineno}", node))
    return out


def test_yaml_is_only_loaded_safely(dps, tmp_path):
    for banned in ("unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"):
        assert [where for where, _ in _calls(banned)] == [], banned
    for where, call in _calls("load") + _calls("compose"):
        if ast.unparse(call.func).startswith("yaml."):
            loader = next((ast.unparse(k.value) for k in call.keywords if k.arg == "Loader"), "")
            assert loader == "loader" or "Safe" in loader, where
    assert "yaml.Loader" not in "".join(p.read_text() for p in SOURCE.rglob("*.py"))
    # And in practice: a Python tag that would run a command is refused, and nothing runs.
    marker = tmp_path / "pwned"
    payload = f'!!python/object/apply:os.system ["touch {marker}"]\n'
    for name, args in (("doc.yaml", ("import",)), ("twin.yaml", ("enrollment", "add", "t1", "--attestation", "symmetricKey", "--initial-twin"))):
        (tmp_path / name).write_text(payload if name == "doc.yaml" else f"tags: {payload}")
        run = dps(*args, str(tmp_path / name))
        assert run.exit_code == 2 and "constructor" in run.stderr, run
    assert not marker.exists()


def test_no_shell_anywhere():
    for where, call in _calls("run") + _calls("Popen") + _calls("call") + _calls("check_output") + _calls("check_call"):
        assert not any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False) for k in call.keywords), where
    for banned in ("system", "popen", "getoutput", "getstatusoutput"):
        assert [where for where, call in _calls(banned) if ast.unparse(call.func) in (f"os.{banned}", f"subprocess.{banned}")] == [], banned


def test_the_allocation_command_is_not_interpreted_by_a_shell(dps, tmp_path):
    script = tmp_path / "allocate.py"
    script.write_text(
        "import json, sys\n"
        "request = json.load(sys.stdin)\n"
        f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        "print(json.dumps({'iotHubHostName': request['linkedHubs'][0]}))\n"
    )
    pwned = [tmp_path / name for name in ("semicolon", "subshell", "backtick", "redirect")]
    command = shlex.join([sys.executable, str(script)]) + f" ; touch {pwned[0]} '$(touch {pwned[1]})' '`touch {pwned[2]}`' '>' {pwned[3]} '$HOME'"
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment", "add", "cmd-01", "--attestation", "symmetricKey", "--primary-key", KEY1, "--allocation-command", command)
    dps.ok("provision", "--registration-id", "cmd-01", "--symmetric-key", KEY1)
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == [";", "touch", str(pwned[0]), f"$(touch {pwned[1]})", f"`touch {pwned[2]}`", ">", str(pwned[3]), "$HOME"]
    assert not any(p.exists() for p in pwned)


# --------------------------------------------------------------------------- webhooks: redirects and timeouts


REQUEST = {"individualEnrollment": {}, "deviceRuntimeContext": {"registrationId": "dev-01"}, "linkedHubs": ["hub-a.azure-devices.net"]}


@pytest.mark.parametrize("path", ["/to-file", "/to-ftp", "/to-https", "/to-http"])
def test_no_redirect_is_followed(local_webhook, path):
    """A 3xx answer is a failed allocation: to file:, ftp:, https: (from http) or even the same scheme."""
    before_trap = len(local_webhook.trap_connections)
    before = len(local_webhook.received)
    with pytest.raises(AllocationFailed) as caught:
        call_webhook(f"{local_webhook.base}{path}?code={FUNCTION_KEY}", REQUEST, timeout=3)
    assert caught.value.message.startswith(f"webhook {local_webhook.base}{path} answered HTTP 30")
    assert "redirect" in (caught.value.hint or "")
    for text in (caught.value.message, caught.value.hint or ""):
        assert FUNCTION_KEY not in text and "passwd" not in text and str(local_webhook.trap_port) not in text
    # Nothing was followed: the trap saw no connection, the server no second request.
    assert not wait_for(lambda: len(local_webhook.trap_connections) > before_trap, 0.5)
    assert local_webhook.received[before:] == [("POST", path)]


@pytest.mark.slow  # a real 1 s deadline against a real 0.2 s-a-byte server
def test_a_dripping_webhook_is_cut_off_at_the_timeout(local_webhook):
    started = time.monotonic()
    with pytest.raises(AllocationFailed, match=r"did not answer within 1 s"):
        call_webhook(f"{local_webhook.base}/drip", REQUEST, timeout=1)
    assert time.monotonic() - started < 5  # one deadline for the whole call, not one per byte (which would take ~20 s)


def test_the_trap_would_have_seen_a_followed_redirect(local_webhook):
    """The check above means something: a plain connection to the trap port is recorded."""
    import socket

    before = len(local_webhook.trap_connections)
    with socket.create_connection(("127.0.0.1", local_webhook.trap_port), timeout=2) as probe:
        probe.sendall(b"USER anonymous\r\n")
    assert wait_for(lambda: len(local_webhook.trap_connections) > before)
