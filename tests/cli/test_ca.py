"""`dpsctl ca ...`: CA certificates with proof of possession, and provisioning through a CA reference."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from tests.helpers.pki import Pki, make_pki, openssl, openssl_signed
from tests.helpers.cli import Dps

RFC1123 = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    out = tmp_path_factory.mktemp("pki")
    return make_pki(Dps(out / "unused.json"), out)


@pytest.fixture(scope="module")
def imposter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different root that claims the same name as the PKI's root: same subject, another key."""
    out = tmp_path_factory.mktemp("imposter")
    Dps(out / "unused.json").ok("cert", "create-root", "fake", "--cn", "root", "--out", str(out))
    return out


def _verify_with(dps, pki: Pki, tmp_path: Path, name: str, code: str, *, ca: str = "root", ca_dir: Path | None = None):  # noqa: ANN001, ANN202
    """Make a verification certificate for `code` signed by `ca`, and run `ca verify NAME` with it."""
    where = ca_dir or pki.folder
    dps.ok("cert", "create-verification", code, "--ca", str(where / f"{ca}.cert.pem"), "--ca-key", str(where / f"{ca}.key.pem"), "--out", str(tmp_path), "--force")
    return dps("ca", "verify", name, "--cert", str(tmp_path / "verification.cert.pem"))


def test_add_list_show(dps, pki):
    added = dps.json("ca", "add", "root", "--cert", pki.path("root"))
    props = added["properties"]
    assert added["name"] == "root" and added["etag"]
    assert props["subject"] == "CN=root" and props["isVerified"] is False
    assert RFC1123.fullmatch(props["expiry"]) and RFC1123.fullmatch(props["created"]) and props["created"] == props["updated"]
    fingerprint = openssl("x509", "-in", pki.path("root"), "-noout", "-fingerprint", "-sha1", cwd=pki.folder).stdout
    assert props["thumbprint"] == fingerprint.strip().split("=", 1)[1].replace(":", "")  # upper-case hex, no colons
    assert props["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    expiry = parsedate_to_datetime(props["expiry"])
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(pki.path("root")).read_bytes())
    assert expiry == cert.not_valid_after_utc.replace(microsecond=0)

    assert [c["name"] for c in dps.json("ca", "list")] == ["root"]
    assert dps.json("ca", "show", "ROOT")["properties"]["thumbprint"] == props["thumbprint"]  # names are case-insensitive
    table = dps.ok("ca", "list").stdout
    assert "root" in table and props["thumbprint"] in table and "BEGIN CERTIFICATE" not in table
    assert "BEGIN CERTIFICATE" not in dps.ok("ca", "show", "root").stdout
    assert dps("ca", "show", "nope").exit_code == 3


def test_add_refuses_bad_input(dps, pki, tmp_path):
    assert dps("ca", "add", "bad name", "--cert", pki.path("root")).exit_code == 2
    assert dps("ca", "add", "x" * 257, "--cert", pki.path("root")).exit_code == 2
    leaf = dps("ca", "add", "leaf", "--cert", pki.path("dev-01"))
    assert leaf.exit_code == 2 and "not a CA" in leaf.stderr
    chain = dps("ca", "add", "chain", "--cert", pki.path("dev-01", "fullchain"))
    assert chain.exit_code == 2 and "exactly one" in chain.stderr
    key = dps("ca", "add", "key", "--cert", pki.path("root", "key"))
    assert key.exit_code == 2 and "BEGIN" not in key.stderr
    dps.ok("ca", "add", "Root", "--cert", pki.path("root"))
    assert dps("ca", "add", "root", "--cert", pki.path("root")).exit_code == 4
    assert [c["name"] for c in dps.json("ca", "list")] == ["Root"]


@pytest.mark.rule("§12/quotas")
def test_at_most_25(dps, pki):
    for number in range(25):
        dps.ok("ca", "add", f"ca-{number:02d}", "--cert", pki.path("root"))
    run = dps("ca", "add", "one-too-many", "--cert", pki.path("root"))
    assert run.exit_code == 4 and "25" in run.stderr
    dps.ok("ca", "delete", "ca-00")
    dps.ok("ca", "add", "one-too-many", "--cert", pki.path("root"))


@pytest.mark.rule("§5/proof-of-possession")
def test_proof_of_possession(dps, pki, tmp_path):
    added = dps.json("ca", "add", "root", "--cert", pki.path("root"))
    coded = dps.json("ca", "verification-code", "root")
    code = coded["properties"]["verificationCode"]
    assert re.fullmatch(r"[0-9A-F]{48}", code)
    assert coded["etag"] != added["etag"] and coded["properties"]["isVerified"] is False
    assert dps.json("ca", "show", "root")["properties"]["verificationCode"] == code
    plain = dps.ok("ca", "verification-code", "root")
    assert re.fullmatch(r"[0-9A-F]{48}\n", plain.stdout) and plain.stdout.strip() != code  # each call makes a fresh code
    code = plain.stdout.strip()
    assert f"create-verification {code}" in plain.stderr

    run = _verify_with(dps, pki, tmp_path, "root", code)
    assert run.exit_code == 0, run
    shown = dps.json("ca", "show", "root")["properties"]
    assert shown["isVerified"] is True and "verificationCode" not in shown  # the code is single-use
    # Verifying again is harmless.
    assert dps("ca", "verify", "root", "--cert", str(tmp_path / "verification.cert.pem")).exit_code == 0


def test_verification_signed_by_the_wrong_key_is_refused(dps, pki, imposter, tmp_path):
    dps.ok("ca", "add", "root", "--cert", pki.path("root"))
    code = dps.ok("ca", "verification-code", "root").stdout.strip()
    run = _verify_with(dps, pki, tmp_path, "root", code, ca="fake", ca_dir=imposter)
    assert run.exit_code == 5, run
    assert "does not prove possession" in run.stderr and "signature does not verify" in run.stderr
    assert dps.json("ca", "show", "root")["properties"]["isVerified"] is False
    # Signed by the intermediate's key (a real key of the PKI, but not this CA's): refused too.
    run = _verify_with(dps, pki, tmp_path, "root", code, ca="inter")
    assert run.exit_code == 5, run
    assert dps.json("ca", "show", "root")["properties"]["isVerified"] is False


def test_stale_code_is_refused(dps, pki, tmp_path):
    dps.ok("ca", "add", "root", "--cert", pki.path("root"))
    old = dps.ok("ca", "verification-code", "root").stdout.strip()
    new = dps.ok("ca", "verification-code", "root").stdout.strip()
    run = _verify_with(dps, pki, tmp_path, "root", old)
    assert run.exit_code == 2, run
    assert "not the current verification code" in run.stderr and new in run.stderr
    assert dps.json("ca", "show", "root")["properties"]["isVerified"] is False
    assert _verify_with(dps, pki, tmp_path, "root", new).exit_code == 0


def test_verify_needs_a_code_and_honours_etags(dps, pki, tmp_path):
    added = dps.json("ca", "add", "root", "--cert", pki.path("root"))
    no_code = dps("ca", "verify", "root", "--cert", pki.path("dev-01"))
    assert no_code.exit_code == 4 and "verification-code root" in no_code.stderr
    assert dps("ca", "verification-code", "root", "--etag", '"stale"').exit_code == 4
    coded = dps.json("ca", "verification-code", "root", "--etag", added["etag"])
    code = coded["properties"]["verificationCode"]
    dps.ok("cert", "create-verification", code, "--ca", pki.path("root"), "--ca-key", pki.path("root", "key"), "--out", str(tmp_path))
    stale = dps("ca", "verify", "root", "--cert", str(tmp_path / "verification.cert.pem"), "--etag", added["etag"])
    assert stale.exit_code == 4
    dps.ok("ca", "verify", "root", "--cert", str(tmp_path / "verification.cert.pem"), "--etag", coded["etag"])


def test_openssl_made_verification_certificate(dps, pki, tmp_path):
    """The documented openssl route (Docs#8580): req + x509 -req with the CA key; dpsctl accepts it."""
    dps.ok("ca", "add", "root", "--cert", pki.path("root"))
    code = dps.ok("ca", "verification-code", "root").stdout.strip()
    (tmp_path / "root.pem").write_bytes(Path(pki.path("root")).read_bytes())
    (tmp_path / "root.key").write_bytes(Path(pki.path("root", "key")).read_bytes())
    openssl_signed(tmp_path, "pop", code, "root")
    dps.ok("ca", "verify", "root", "--cert", str(tmp_path / "pop.pem"))
    assert dps.json("ca", "show", "root")["properties"]["isVerified"] is True


@pytest.mark.rule("§5/group-chain-reaches-verified-certificate")
def test_provisioning_through_a_ca_reference_needs_verification(dps, pki, tmp_path):
    dps.ok("hub", "add", "hub-a")
    dps.ok("ca", "add", "root", "--cert", pki.path("root"))
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "x509", "--ca-ref", "root")
    device = ("--cert", pki.path("dev-01", "fullchain"), "--key", pki.path("dev-01", "key"))
    refused = dps("provision", *device)
    assert refused.exit_code == 5, refused
    assert "not verified" in refused.stderr and "dpsctl ca verification-code root" in refused.stderr
    checked = dps("cert", "check", pki.path("dev-01", "fullchain"), "-o", "json")
    assert checked.exit_code == 5 and "dpsctl ca verification-code root" in checked.json()["hint"]

    code = dps.ok("ca", "verification-code", "root").stdout.strip()
    assert _verify_with(dps, pki, tmp_path, "root", code).exit_code == 0
    provisioned = dps.json("provision", *device)
    assert provisioned["status"] == "assigned"
    assert provisioned["registrationState"]["x509"]["enrollmentGroupId"] == "fleet"
    assert dps("cert", "check", pki.path("dev-01", "fullchain")).exit_code == 0


def test_an_intermediate_as_ca_reference_and_verified_on_upload(dps, pki):
    dps.ok("hub", "add", "hub-a")
    added = dps.json("ca", "add", "inter", "--cert", pki.path("inter"), "--verified")
    assert added["properties"]["isVerified"] is True
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "x509", "--ca-ref", "inter")
    assert dps.json("provision", "--cert", pki.path("dev-01", "fullchain"), "--key", pki.path("dev-01", "key"))["status"] == "assigned"


def test_delete_is_refused_while_referenced_unless_forced(dps, pki):
    dps.ok("hub", "add", "hub-a")
    dps.ok("ca", "add", "root", "--cert", pki.path("root"), "--verified")
    dps.ok("ca", "add", "spare", "--cert", pki.path("root"), "--verified")
    dps.ok("enrollment-group", "add", "fleet", "--attestation", "x509", "--ca-ref", "root", "--secondary-ca-ref", "spare")
    for name in ("root", "SPARE"):
        run = dps("ca", "delete", name)
        assert run.exit_code == 4 and "fleet" in run.stderr and "--force" in run.stderr
    forced = dps.ok("ca", "delete", "root", "--force")
    assert "fleet" in forced.stderr
    assert [c["name"] for c in dps.json("ca", "list")] == ["spare"]
    # The group still names the missing CA; its secondary reference still lets devices in.
    assert dps.json("provision", "--cert", pki.path("dev-01", "fullchain"), "--key", pki.path("dev-01", "key"))["status"] == "assigned"
    dps.ok("ca", "delete", "spare", "--force")
    refused = dps("provision", "--cert", pki.path("dev-01", "fullchain"), "--key", pki.path("dev-01", "key"))
    assert refused.exit_code == 5
    report = dps("cert", "check", pki.path("dev-01", "fullchain"), "-o", "json").json()
    assert any("names no uploaded CA certificate" in s["message"] for s in report["explain"])
    assert dps("ca", "delete", "spare").exit_code == 3


def test_delete_unreferenced_and_group_ca_ref_must_exist(dps, pki):
    added = dps.json("ca", "add", "root", "--cert", pki.path("root"))
    unknown = dps("enrollment-group", "add", "g", "--attestation", "x509", "--ca-ref", "nope")
    assert unknown.exit_code == 2 and "dpsctl ca add" in unknown.stderr
    assert dps("ca", "delete", "root", "--etag", '"stale"').exit_code == 4
    deleted = dps.ok("ca", "delete", "root", "--etag", added["etag"])
    assert "deleted CA certificate root" in deleted.stderr
    assert dps.json("ca", "list") == []
