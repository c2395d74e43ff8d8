"""`dpsctl cert ...`: the test PKI (checked by the openssl command line) and `cert check`, the certificate doctor."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.helpers.pki import Pki, load, make_pki, openssl, openssl_root, openssl_signed
from tests.helpers.cli import Dps

TEST_CREDENTIALS = "test credentials"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """root -> inter -> dev-01, made once for the module (the store is not involved)."""
    out = tmp_path_factory.mktemp("pki")
    return make_pki(Dps(out / "unused.json"), out)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Dps:
    """A runner for the commands that never open the store (the `dps` fixture runs each test once per backend)."""
    return Dps(tmp_path_factory.mktemp("cli") / "unused.json")


def _ext(cert: x509.Certificate, kind: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(Path(path).stat().st_mode)


# --------------------------------------------------------------------------- files and extensions


def test_files_modes_and_full_chain(pki):
    for name in ("root", "inter", "dev-01"):
        assert _mode(pki.path(name, "key")) == 0o600
        assert _mode(pki.path(name)) == 0o644
    assert not Path(pki.path("root", "fullchain")).exists()
    root, inter, dev = load(pki.path("root"))[0], load(pki.path("inter"))[0], load(pki.path("dev-01"))[0]
    # Leaf, then intermediates; never the root (a device does not send it).
    assert load(pki.path("dev-01", "fullchain")) == [dev, inter]
    assert load(pki.path("inter", "fullchain")) == [inter]
    assert root.issuer == root.subject and inter.issuer == root.subject and dev.issuer == inter.subject


def test_ca_extensions(pki):
    root, inter = load(pki.path("root"))[0], load(pki.path("inter"))[0]
    for cert, path_length in ((root, 2), (inter, 0)):
        constraints = _ext(cert, x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca and constraints.value.path_length == path_length
        usage = _ext(cert, x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign
    assert _ext(inter, x509.AuthorityKeyIdentifier).value.key_identifier == _ext(root, x509.SubjectKeyIdentifier).value.digest
    assert _ext(root, x509.AuthorityKeyIdentifier).value.key_identifier == _ext(root, x509.SubjectKeyIdentifier).value.digest


def test_device_extensions_and_default_lifetimes(pki):
    root, inter, dev = load(pki.path("root"))[0], load(pki.path("inter"))[0], load(pki.path("dev-01"))[0]
    assert dev.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-01"
    assert _ext(dev, x509.BasicConstraints).value.ca is False
    usage = _ext(dev, x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert list(_ext(dev, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _ext(dev, x509.AuthorityKeyIdentifier).value.key_identifier == _ext(inter, x509.SubjectKeyIdentifier).value.digest

    def days(cert: x509.Certificate) -> int:
        return (cert.not_valid_after_utc - cert.not_valid_before_utc).days

    assert (days(root), days(inter), days(dev)) == (3650, 1825, 365)  # years for CAs, a year for devices


def test_openssl_verifies_what_dpsctl_makes(pki):
    run = openssl("verify", "-CAfile", pki.path("root"), "-untrusted", pki.path("inter"), pki.path("dev-01"), cwd=pki.folder)
    assert run.stdout.strip().endswith(": OK")
    run = openssl("verify", "-CAfile", pki.path("root"), "-untrusted", pki.path("dev-01", "fullchain"), pki.path("dev-01"), cwd=pki.folder)
    assert run.stdout.strip().endswith(": OK")
    # openssl also agrees the key files are the certificates' keys.
    for name in ("root", "inter", "dev-01"):
        cert_key = openssl("x509", "-in", pki.path(name), "-noout", "-pubkey", cwd=pki.folder).stdout
        file_key = openssl("pkey", "-in", pki.path(name, "key"), "-pubout", cwd=pki.folder).stdout
        assert cert_key == file_key


def test_two_tiers_of_intermediates_and_rsa(cli, tmp_path):
    out = str(tmp_path)
    cli.ok("cert", "create-root", "root", "--out", out, "--key-type", "rsa")
    cli.ok("cert", "create-intermediate", "tier1", "--ca", f"{out}/root.cert.pem", "--ca-key", f"{out}/root.key.pem", "--path-length", "1", "--out", out)
    cli.ok("cert", "create-intermediate", "tier2", "--ca", f"{out}/tier1.fullchain.pem", "--ca-key", f"{out}/tier1.key.pem", "--out", out)
    cli.ok("cert", "create-device", "leaf", "--ca", f"{out}/tier2.fullchain.pem", "--ca-key", f"{out}/tier2.key.pem", "--out", out, "--key-type", "RSA", "--rsa-bits", "2048")
    chain = load(f"{out}/leaf.fullchain.pem")
    assert [c.subject.rfc4514_string() for c in chain] == ["CN=leaf", "CN=tier2", "CN=tier1"]
    assert chain[0].public_key().key_size == 2048
    run = openssl("verify", "-CAfile", f"{out}/root.cert.pem", "-untrusted", f"{out}/leaf.fullchain.pem", f"{out}/leaf.cert.pem", cwd=tmp_path)
    assert run.stdout.strip().endswith(": OK")


def test_an_intermediate_that_would_break_a_path_length_is_refused(cli, pki, tmp_path):
    run = cli("cert", "create-intermediate", "too-deep", "--ca", pki.path("inter"), "--ca-key", pki.path("inter", "key"), "--out", str(tmp_path))
    assert run.exit_code == 2, run
    assert "path length limit 0" in run.stderr and "--path-length 1" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_command_that_writes_a_private_key_warns(cli, pki, tmp_path):
    out = str(tmp_path)
    for args in (
        ("create-root", "r"),
        ("create-intermediate", "i", "--ca", pki.path("root"), "--ca-key", pki.path("root", "key")),
        ("create-device", "d", "--ca", pki.path("inter"), "--ca-key", pki.path("inter", "key")),
        ("create-device", "self"),
    ):
        run = cli.ok("cert", *args, "--out", out)
        assert TEST_CREDENTIALS in run.stderr and "key.pem" in run.stderr
        assert TEST_CREDENTIALS not in run.stdout
    run = cli.ok("cert", "create-verification", "ABC123", "--ca", pki.path("root"), "--ca-key", pki.path("root", "key"), "--out", out)
    assert TEST_CREDENTIALS not in run.stderr  # it writes no key
    assert sorted(p.name for p in tmp_path.glob("verification*")) == ["verification.cert.pem"]
    assert load(tmp_path / "verification.cert.pem")[0].subject.rfc4514_string() == "CN=ABC123"


def test_files_are_never_overwritten_silently(cli, tmp_path):
    out = str(tmp_path)
    first = cli.json("cert", "create-root", "root", "--out", out)
    before = (tmp_path / "root.key.pem").read_bytes()
    again = cli("cert", "create-root", "root", "--out", out)
    assert again.exit_code == 4, again
    assert "--force" in again.stderr
    assert (tmp_path / "root.key.pem").read_bytes() == before
    (tmp_path / "root.key.pem").chmod(0o644)
    forced = cli.json("cert", "create-root", "root", "--out", out, "--force")
    assert forced["thumbprint"] != first["thumbprint"]
    assert (tmp_path / "root.key.pem").read_bytes() != before
    assert _mode(tmp_path / "root.key.pem") == 0o600
    # One existing file of the set refuses the whole set: nothing is half-written.
    (tmp_path / "dev.fullchain.pem").write_text("mine")
    run = cli("cert", "create-device", "dev", "--ca", f"{out}/root.cert.pem", "--ca-key", f"{out}/root.key.pem", "--out", out)
    assert run.exit_code == 4, run
    assert not (tmp_path / "dev.key.pem").exists() and (tmp_path / "dev.fullchain.pem").read_text() == "mine"


@pytest.mark.parametrize("reg_id", ["x" * 65, "has space", "trailing.", "-lead", "dеv"])  # the last has a Cyrillic 'е'
def test_device_cn_follows_dps_registration_id_rules(cli, pki, tmp_path, reg_id):
    run = cli("cert", "create-device", reg_id, "--ca", pki.path("inter"), "--ca-key", pki.path("inter", "key"), "--out", str(tmp_path))
    assert run.exit_code == 2, run
    assert list(tmp_path.iterdir()) == []


def test_wrong_issuer_inputs_are_refused(cli, pki, tmp_path):
    out = str(tmp_path)
    swapped = cli("cert", "create-device", "d", "--ca", pki.path("root"), "--ca-key", pki.path("inter", "key"), "--out", out)
    assert swapped.exit_code == 2 and "does not belong" in swapped.stderr
    not_ca = cli("cert", "create-device", "d", "--ca", pki.path("dev-01"), "--ca-key", pki.path("dev-01", "key"), "--out", out)
    assert not_ca.exit_code == 2 and "not a CA" in not_ca.stderr
    half = cli("cert", "create-device", "d", "--ca", pki.path("root"), "--out", out)
    assert half.exit_code == 2
    bad_type = cli("cert", "create-root", "r", "--key-type", "dsa", "--out", out)
    assert bad_type.exit_code == 2
    assert cli("cert", "create-root", "../escape", "--out", out).exit_code == 2
    assert cli("cert", "create-root", "r", "--out", f"{out}/missing").exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_ca_file_may_hold_its_chain_in_any_order(cli, pki, tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(Path(pki.path("root")).read_bytes() + Path(pki.path("inter")).read_bytes())  # root first
    cli.ok("cert", "create-device", "bundled", "--ca", str(bundle), "--ca-key", pki.path("inter", "key"), "--out", str(tmp_path))
    chain = load(tmp_path / "bundled.fullchain.pem")
    assert [c.subject.rfc4514_string() for c in chain] == ["CN=bundled", "CN=inter"]


def test_leaf_outliving_its_ca_is_warned_about(cli, pki, tmp_path):
    run = cli.ok("cert", "create-device", "long", "--ca", pki.path("inter"), "--ca-key", pki.path("inter", "key"), "--days", "4000", "--out", str(tmp_path))
    assert "warning: 'CN=inter' expires on" in run.stderr


# --------------------------------------------------------------------------- openssl-made certificates in dpsctl


def test_openssl_made_certificates_work_everywhere(dps, tmp_path):
    openssl_root(tmp_path, "oroot", "OpenSSL Test Root")
    openssl_signed(tmp_path, "odev", "openssl-dev", "oroot", extensions="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    openssl_signed(tmp_path, "bare", "bare-dev", "oroot")  # no extensions at all, as `openssl x509 -req` makes by default
    dps.ok("hub", "add", "hub-a")
    dps.ok("ca", "add", "oroot", "--cert", str(tmp_path / "oroot.pem"), "--verified")
    dps.ok("enrollment-group", "add", "ossl", "--attestation", "x509", "--ca-ref", "oroot")  # the uploaded CA, referenced (§5: one entry per certificate)
    for name, reg_id in (("odev", "openssl-dev"), ("bare", "bare-dev")):
        checked = dps("cert", "check", str(tmp_path / f"{name}.pem"), "--key", str(tmp_path / f"{name}.key"), "-o", "json")
        assert checked.exit_code == 0, checked
        assert checked.json()["enrollment"] == {"kind": "enrollmentGroup", "id": "ossl"}
        provisioned = dps.json("provision", "--cert", str(tmp_path / f"{name}.pem"), "--key", str(tmp_path / f"{name}.key"))
        assert provisioned["status"] == "assigned" and provisioned["registrationState"]["registrationId"] == reg_id
    # And dpsctl signs below an openssl-made CA.
    dps.ok("cert", "create-device", "mixed", "--ca", str(tmp_path / "oroot.pem"), "--ca-key", str(tmp_path / "oroot.key"), "--out", str(tmp_path))
    run = openssl("verify", "-CAfile", "oroot.pem", "mixed.cert.pem", cwd=tmp_path)
    assert run.stdout.strip().endswith(": OK")
    assert dps.json("provision", "--cert", str(tmp_path / "mixed.fullchain.pem"), "--key", str(tmp_path / "mixed.key.pem"))["status"] == "assigned"


# --------------------------------------------------------------------------- cert check


@pytest.fixture
def group_store(dps, pki):
    """A store with a hub and an X.509 group whose signing certificate is the PKI's root."""
    dps.ok("hub", "add", "hub-a")
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "x509", "--signing-cert", pki.path("root"))
    return dps


def _steps(report: dict, result: str) -> list[str]:
    return [s["message"] for s in report["checks"] + report["explain"] if s["result"] == result]


def test_check_a_good_certificate(group_store, pki):
    run = group_store("cert", "check", pki.path("dev-01", "fullchain"), "--key", pki.path("dev-01", "key"), "-o", "json")
    assert run.exit_code == 0, run
    report = run.json()
    assert report["accepted"] is True and report["registrationId"] == "dev-01"
    assert report["enrollment"] == {"kind": "enrollmentGroup", "id": "fleet"}
    assert report["certificate"]["commonName"] == "dev-01" and 360 <= report["certificate"]["daysLeft"] <= 365
    assert not _steps(report, "fail") and not _steps(report, "warn")
    ok = " ".join(_steps(report, "ok"))
    for expected in ("valid registration ID", "in order", "clientAuth", "private key belongs", "path length limit 0 holds", "is signed by 'CN=inter'"):
        assert expected in ok
    table = group_store("cert", "check", pki.path("dev-01", "fullchain"), "--key", pki.path("dev-01", "key"))
    assert table.exit_code == 0 and "DPS would accept it: it matches enrollment group 'fleet'" in table.stdout
    assert "[fail]" not in table.stdout
    assert group_store.json("registration", "list") == []  # a check writes nothing


def test_check_explains_a_missing_intermediate(group_store, pki):
    run = group_store("cert", "check", pki.path("dev-01"), "-o", "json")  # the leaf alone
    assert run.exit_code == 5, run
    report = run.json()
    assert report["accepted"] is False and report["enrollment"] is None
    assert "not in the chain" in report["hint"] and "--chain" in report["hint"]
    fixed = group_store("cert", "check", pki.path("dev-01"), "--chain", pki.path("inter"))
    assert fixed.exit_code == 0, fixed


def test_check_finds_a_chain_out_of_order_and_a_wrong_key(group_store, pki, tmp_path):
    reversed_chain = tmp_path / "reversed.pem"
    reversed_chain.write_bytes(Path(pki.path("inter")).read_bytes() + Path(pki.path("dev-01")).read_bytes())
    run = group_store("cert", "check", str(reversed_chain), "--registration-id", "dev-01", "-o", "json")
    assert run.exit_code == 5, run
    assert any("out of order" in m and "'dev-01', 'inter'" in m for m in _steps(run.json(), "fail"))
    wrong_key = group_store("cert", "check", pki.path("dev-01", "fullchain"), "--key", pki.path("inter", "key"), "-o", "json")
    assert wrong_key.exit_code == 5
    assert "the private key does not belong to the device certificate" in _steps(wrong_key.json(), "fail")


def test_check_warns_inside_30_days_and_about_missing_client_auth(group_store, pki, tmp_path):
    group_store.ok("cert", "create-device", "soon", "--ca", pki.path("inter"), "--ca-key", pki.path("inter", "key"), "--days", "10", "--out", str(tmp_path))
    run = group_store("cert", "check", str(tmp_path / "soon.fullchain.pem"), "-o", "json")
    assert run.exit_code == 0, run  # a warning, not a refusal
    assert any("less than 30 days" in m for m in _steps(run.json(), "warn"))
    (tmp_path / "inter.pem").write_bytes(Path(pki.path("inter")).read_bytes())
    (tmp_path / "inter.key").write_bytes(Path(pki.path("inter", "key")).read_bytes())
    openssl_signed(tmp_path, "server", "server-only", "inter", extensions="extendedKeyUsage=serverAuth\n")
    run = group_store("cert", "check", str(tmp_path / "server.pem"), "--chain", pki.path("inter"), "-o", "json")
    assert any("lacks clientAuth" in m for m in _steps(run.json(), "warn"))


def test_check_an_expired_certificate(group_store, pki, tmp_path):
    from dpsctl.core.certs import issue_device, load_certificates, load_private_key, write_certificates

    inter = load_certificates(Path(pki.path("inter")).read_bytes(), source="inter")[0]
    inter_key = load_private_key(Path(pki.path("inter", "key")).read_bytes(), source="key")
    cert, key = issue_device("old", inter, inter_key, days=30, not_before=datetime.now(timezone.utc) - timedelta(days=60))
    write_certificates(tmp_path / "old.pem", [cert, inter])
    run = group_store("cert", "check", str(tmp_path / "old.pem"), "-o", "json")
    assert run.exit_code == 5, run
    assert any("has expired" in m for m in _steps(run.json(), "fail"))


def test_check_a_ca_certificate_by_mistake(group_store, pki):
    run = group_store("cert", "check", pki.path("inter"), "-o", "json")
    assert run.exit_code == 5, run
    report = run.json()
    assert any("is a CA certificate" in m for m in _steps(report, "fail"))


def test_check_a_cn_that_is_no_registration_id(dps, tmp_path):
    openssl_root(tmp_path, "spaced", "Contoso Root CA")
    dps.ok("init")
    run = dps("cert", "check", str(tmp_path / "spaced.pem"), "-o", "json")
    assert run.exit_code == 5, run
    report = run.json()
    assert report["enrollment"] is None and any("not a usable registration ID" in m for m in _steps(report, "note"))


def test_check_a_registration_id_other_than_the_cn(group_store, pki):
    run = group_store("cert", "check", pki.path("dev-01", "fullchain"), "--registration-id", "someone-else", "-o", "json")
    assert run.exit_code == 5, run
    assert any("CN is 'dev-01'" in m for m in _steps(run.json(), "fail"))


def test_check_individual_and_disabled(group_store, pki, tmp_path):
    group_store.ok("cert", "create-device", "solo", "--out", str(tmp_path))
    group_store.ok("enrollment", "add", "solo", "--attestation", "x509", "--cert", str(tmp_path / "solo.cert.pem"))
    run = group_store("cert", "check", str(tmp_path / "solo.cert.pem"), "--key", str(tmp_path / "solo.key.pem"), "-o", "json")
    assert run.exit_code == 0, run
    assert run.json()["enrollment"] == {"kind": "individualEnrollment", "id": "solo"}
    group_store.ok("enrollment-group", "update", "fleet", "--disabled")
    disabled = group_store("cert", "check", pki.path("dev-01", "fullchain"))
    assert disabled.exit_code == 6, disabled
