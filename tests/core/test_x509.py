"""Loading, describing and verifying X.509 certificates the way DPS does, cross-checked with the openssl CLI."""

from __future__ import annotations

import base64
import contextlib
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsctl.core.certs import (
    MAX_CERTIFICATES,
    MAX_INPUT_BYTES,
    PrivateKey,
    cert_to_pem,
    certificate_info,
    check_issued_by,
    check_key_strength,
    check_validity,
    common_name,
    issue_device,
    issue_intermediate,
    issue_root,
    load_certificates,
    load_private_key,
    same_certificate,
    sha1_thumbprint,
    sha256_thumbprint,
    sign_possession_challenge,
    verify_chain,
    verify_possession,
)
from dpsctl.core.checks import Check, all_ok
from dpsctl.core.errors import InvalidInput


def now() -> datetime:
    """The current instant; read per test because fixtures may be built minutes after import."""
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- fixtures and helpers


@dataclass(frozen=True)
class Chain:
    """A root -> intermediate -> device PKI with its PEM files on disk."""

    root: x509.Certificate
    root_key: PrivateKey
    inter: x509.Certificate
    inter_key: PrivateKey
    device: x509.Certificate
    device_key: PrivateKey
    folder: Path

    def path(self, name: str) -> Path:
        """The file of one of the chain's certificates."""
        return self.folder / f"{name}.pem"


def build_chain(folder: Path, key_type: str) -> Chain:
    """Create the chain with dpsctl and write each certificate as its own PEM file."""
    root, root_key = issue_root("Contoso Root", key_type=key_type)
    inter, inter_key = issue_intermediate("Contoso Intermediate", root, root_key, key_type=key_type)
    device, device_key = issue_device("contoso-device-01", inter, inter_key, key_type=key_type)
    folder.mkdir(parents=True, exist_ok=True)
    for name, cert in (("root", root), ("inter", inter), ("device", device)):
        (folder / f"{name}.pem").write_text(cert_to_pem(cert))
    return Chain(root, root_key, inter, inter_key, device, device_key, folder)


@pytest.fixture(scope="module")
def ec_chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return build_chain(tmp_path_factory.mktemp("ec"), "ec")


@pytest.fixture(scope="module")
def rsa_chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return build_chain(tmp_path_factory.mktemp("rsa"), "rsa")


def openssl(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the openssl CLI, the independent judge in these tests."""
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, cwd=cwd, check=False)


def openssl_verify(root: Path, leaf: Path, *untrusted: Path) -> subprocess.CompletedProcess[str]:
    """openssl verify -x509_strict of leaf against root, with optional intermediates."""
    args: list[str | Path] = ["verify", "-x509_strict", "-CAfile", root]
    for path in untrusted:
        args += ["-untrusted", path]
    return openssl(*args, leaf)


def write_pem(folder: Path, name: str, *certs: x509.Certificate) -> Path:
    """Write certificates to folder/name.pem and return the path."""
    path = folder / f"{name}.pem"
    path.write_text("".join(cert_to_pem(cert) for cert in certs))
    return path


def failures(checks: list[Check]) -> list[Check]:
    """The failed checks, for asserting exactly what went wrong."""
    return [check for check in checks if not check.ok]


def self_signed_with(key: object, common: str = "odd key") -> x509.Certificate:
    """A bare self-signed certificate for a key dpsctl itself would never create."""
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(1)
        .not_valid_before(now() - timedelta(days=1))
        .not_valid_after(now() + timedelta(days=1))
    )
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, digest)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- a good chain


@pytest.mark.parametrize("chain_name", ["ec_chain", "rsa_chain"])
def test_dpsctl_made_chain_verifies_here_and_with_openssl(chain_name: str, request: pytest.FixtureRequest) -> None:
    chain: Chain = request.getfixturevalue(chain_name)

    checks = verify_chain([chain.device, chain.inter, chain.root], now())

    assert all_ok(checks), failures(checks)
    assert {check.subject for check in checks} == {"CN=contoso-device-01", "CN=Contoso Intermediate", "CN=Contoso Root"}
    assert "is signed by 'CN=Contoso Intermediate'" in [c.what for c in checks]
    result = openssl_verify(chain.path("root"), chain.path("device"), chain.path("inter"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_openssl_refuses_the_chain_without_its_intermediate_so_the_cross_check_can_fail(ec_chain: Chain) -> None:
    result = openssl_verify(ec_chain.path("root"), ec_chain.path("device"))

    assert result.returncode != 0
    assert not all_ok(verify_chain([ec_chain.device, ec_chain.root], now()))


@pytest.fixture(scope="module")
def shell_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root and a device certificate made only with the openssl CLI, as users do following the docs."""
    folder = tmp_path_factory.mktemp("shell")
    (folder / "ca.cnf").write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
        "[v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n"
    )
    (folder / "leaf.ext").write_text(
        "basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
    )
    ec_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    steps = [
        ("req", "-x509", "-config", "ca.cnf", "-extensions", "v3_ca", *ec_key, "-keyout", "root.key",
         "-out", "root.pem", "-days", "30", "-subj", "/C=US/O=Contoso/CN=Shell Root"),
        ("req", "-new", "-config", "ca.cnf", *ec_key, "-keyout", "leaf.key", "-out", "leaf.csr",
         "-subj", "/CN=shell-device-01"),
        ("x509", "-req", "-in", "leaf.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial",
         "-days", "30", "-sha256", "-extfile", "leaf.ext", "-out", "leaf.pem"),
    ]  # fmt: skip
    for step in steps:
        result = openssl(*step, cwd=folder)
        assert result.returncode == 0, result.stderr
    return folder


def test_openssl_made_chain_loads_and_verifies(shell_chain: Path) -> None:
    pem = (shell_chain / "leaf.pem").read_text() + (shell_chain / "root.pem").read_text()

    leaf, root = load_certificates(pem, source="chain.pem")

    assert common_name(leaf) == "shell-device-01"
    assert certificate_info(root)["subjectName"] == "CN=Shell Root, O=Contoso, C=US"
    checks = verify_chain([leaf, root], now())
    assert all_ok(checks), failures(checks)


def test_possession_proof_with_an_openssl_made_key(shell_chain: Path) -> None:
    (leaf,) = load_certificates((shell_chain / "leaf.pem").read_bytes(), source="leaf.pem")
    key = load_private_key((shell_chain / "leaf.key").read_bytes(), source="leaf.key")
    root_key = load_private_key((shell_chain / "root.key").read_bytes(), source="root.key")

    assert verify_possession(leaf, b"nonce-1", sign_possession_challenge(key, b"nonce-1"))
    assert not verify_possession(leaf, b"nonce-1", sign_possession_challenge(root_key, b"nonce-1"))


def test_rsa_pss_signed_child_verifies(rsa_chain: Chain) -> None:
    child_key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "pss-device")]))
        .issuer_name(rsa_chain.root.subject)
        .public_key(child_key.public_key())
        .serial_number(7)
        .not_valid_before(now() - timedelta(hours=1))
        .not_valid_after(now() + timedelta(days=1))
    )
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    child = builder.sign(rsa_chain.root_key, hashes.SHA256(), rsa_padding=pss)
    assert isinstance(child.signature_algorithm_parameters, padding.PSS)

    checks = check_issued_by(child, rsa_chain.root, ca_depth=0)

    assert all_ok(checks), failures(checks)
    assert not all_ok(check_issued_by(child, rsa_chain.inter, ca_depth=0))


# --------------------------------------------------------------------------- chains that must be refused


def test_expired_and_not_yet_valid_devices_fail_the_validity_check(ec_chain: Chain, tmp_path: Path) -> None:
    expired, _ = issue_device(
        "old-device", ec_chain.inter, ec_chain.inter_key, not_before=now() - timedelta(days=10), days=1
    )
    future, _ = issue_device(
        "new-device", ec_chain.inter, ec_chain.inter_key, not_before=now() + timedelta(days=1), days=30
    )

    for cert, words in ((expired, "has expired"), (future, "is not yet valid")):
        moment = now()
        check = check_validity(cert, moment)
        assert not check.ok and words in check.what
        (only,) = failures(verify_chain([cert, ec_chain.inter, ec_chain.root], moment))
        assert only == check
    result = openssl_verify(ec_chain.path("root"), write_pem(tmp_path, "expired", expired), ec_chain.path("inter"))
    assert result.returncode != 0 and "expired" in result.stdout + result.stderr


def test_validity_window_is_inclusive_at_both_ends(ec_chain: Chain) -> None:
    start, end = ec_chain.device.not_valid_before_utc, ec_chain.device.not_valid_after_utc

    assert check_validity(ec_chain.device, start).ok
    assert check_validity(ec_chain.device, end).ok
    assert not check_validity(ec_chain.device, start - timedelta(seconds=1)).ok
    assert not check_validity(ec_chain.device, end + timedelta(seconds=1)).ok


@given(
    moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc))
)
def test_validity_law(ec_chain: Chain, moment: datetime) -> None:
    cert = ec_chain.device
    expected = cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc

    assert check_validity(cert, moment).ok is expected


def test_device_signed_by_a_different_ca_key_fails_only_the_signature_check(ec_chain: Chain, tmp_path: Path) -> None:
    # An impostor CA with the same name: the name link holds, only the signature can tell them apart.
    impostor, impostor_key = issue_intermediate("Contoso Intermediate", ec_chain.root, ec_chain.root_key)
    forged, _ = issue_device("contoso-device-01", impostor, impostor_key)

    (only,) = failures(verify_chain([forged, ec_chain.inter, ec_chain.root], now()))

    assert only.subject == "CN=contoso-device-01"
    assert only.what == "signature does not verify with the key of 'CN=Contoso Intermediate'"
    result = openssl_verify(ec_chain.path("root"), write_pem(tmp_path, "forged", forged), ec_chain.path("inter"))
    assert result.returncode != 0


def test_a_device_certificate_cannot_act_as_a_ca(ec_chain: Chain, tmp_path: Path) -> None:
    # Issued straight by the root (no path length limit), so the CA flag is the only thing wrong.
    device, device_key = issue_device("rogue-device", ec_chain.root, ec_chain.root_key)
    child, _ = issue_device("child-device", device, device_key)

    failed = failures(verify_chain([child, device, ec_chain.root], now()))

    assert {(c.subject, c.what) for c in failed} == {
        ("CN=rogue-device", "is not a CA (has basicConstraints CA=false), so it may not sign 'CN=child-device'"),
        ("CN=rogue-device", "keyUsage lacks keyCertSign, so it may not sign certificates"),
    }
    result = openssl_verify(
        ec_chain.path("root"), write_pem(tmp_path, "child", child), write_pem(tmp_path, "d", device)
    )
    assert result.returncode != 0


def test_issuer_without_basic_constraints_is_not_a_ca(ec_chain: Chain) -> None:
    bare_key = ec.generate_private_key(ec.SECP256R1())
    bare_issuer = self_signed_with(bare_key, "No Extensions CA")
    child, _ = issue_device("child-device", bare_issuer, bare_key)

    (failed,) = failures(check_issued_by(child, bare_issuer, ca_depth=0))

    assert "has no basicConstraints" in failed.what


def test_path_length_zero_intermediate_cannot_sign_another_intermediate(ec_chain: Chain, tmp_path: Path) -> None:
    sub, sub_key = issue_intermediate("Contoso Sub CA", ec_chain.inter, ec_chain.inter_key)
    leaf, _ = issue_device("deep-device", sub, sub_key)

    (only,) = failures(verify_chain([leaf, sub, ec_chain.inter, ec_chain.root], now()))

    assert only.subject == "CN=Contoso Intermediate"
    assert "path length limit 0 is exceeded: 1 CA certificate(s)" in only.what
    untrusted = write_pem(tmp_path, "inters", sub, ec_chain.inter)
    assert openssl_verify(ec_chain.path("root"), write_pem(tmp_path, "deep", leaf), untrusted).returncode != 0


def test_path_length_one_allows_one_intermediate_below() -> None:
    root, root_key = issue_root("Root", path_length=1)
    inter, inter_key = issue_intermediate("Inter", root, root_key)
    leaf, _ = issue_device("dev", inter, inter_key)

    assert all_ok(verify_chain([leaf, inter, root], now()))
    assert not all_ok(check_issued_by(inter, root, ca_depth=2))


def test_a_ca_certificate_is_refused_as_the_device_leaf(ec_chain: Chain) -> None:
    leaf, _ = issue_device("ca-flagged-device", ec_chain.inter, ec_chain.inter_key, is_ca=True)

    (only,) = failures(verify_chain([leaf, ec_chain.inter, ec_chain.root], now()))

    assert only.subject == "CN=ca-flagged-device" and "is a CA certificate" in only.what


def test_a_missing_link_fails_name_and_signature(ec_chain: Chain) -> None:
    failed = failures(verify_chain([ec_chain.device, ec_chain.root], now()))

    assert [c.what for c in failed] == [
        "names its issuer 'CN=Contoso Intermediate', but the next certificate is 'CN=Contoso Root'",
        "signature does not verify with the key of 'CN=Contoso Root'",
    ]


@given(order=st.permutations([0, 1, 2]))
def test_only_the_leaf_first_order_verifies(ec_chain: Chain, order: list[int]) -> None:
    certs = [ec_chain.device, ec_chain.inter, ec_chain.root]

    assert all_ok(verify_chain([certs[i] for i in order], now())) is (order == [0, 1, 2])


def test_a_chain_longer_than_the_limit_fails(ec_chain: Chain) -> None:
    chain = [ec_chain.device, ec_chain.inter, ec_chain.root]

    (only,) = failures(verify_chain(chain, now(), max_length=2))

    assert only.what == "chain has 3 certificates, more than the limit of 2"
    assert all_ok(verify_chain(chain, now(), max_length=3))


def test_an_empty_chain_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        verify_chain([], now())


@pytest.mark.parametrize(
    ("key", "ok", "what"),
    [
        (ec.generate_private_key(ec.SECP384R1()), True, "has an EC P-384 key"),
        (ec.generate_private_key(ec.SECP521R1()), False, "has an EC secp521r1 key; DPS accepts"),
        (rsa.generate_private_key(65537, 1024), False, "has an RSA 1024-bit key; DPS accepts"),
        (ed25519.Ed25519PrivateKey.generate(), False, "has an Ed25519 key; DPS accepts"),
    ],
    ids=["p384", "p521", "rsa1024", "ed25519"],
)
def test_check_key_accepts_only_dps_key_types(key: object, ok: bool, what: str) -> None:
    check = check_key_strength(self_signed_with(key))

    assert check.ok is ok
    assert check.what.startswith(what)


def test_a_weak_key_fails_the_chain() -> None:
    weak_key = rsa.generate_private_key(65537, 1024)
    weak = self_signed_with(weak_key, "weak-device")

    (only,) = failures(verify_chain([weak], now()))

    assert only.what.startswith("has an RSA 1024-bit key")


# --------------------------------------------------------------------------- certificate info


def openssl_fields(path: Path) -> dict[str, str]:
    """Fingerprints, serial, names, dates and version as openssl prints them."""
    out = openssl("x509", "-in", path, "-noout", "-nameopt", "RFC2253", "-subject", "-issuer", "-serial",
                  "-startdate", "-enddate", "-fingerprint", "-sha1").stdout  # fmt: skip
    out += openssl("x509", "-in", path, "-noout", "-fingerprint", "-sha256").stdout
    version = re.search(r"Version: (\d+)", openssl("x509", "-in", path, "-noout", "-text").stdout)
    assert version is not None
    out += f"version={version[1]}"
    pairs = (line.split("=", 1) for line in out.splitlines())
    return {name.lower() if "Fingerprint" in name else name: value for name, value in pairs}


def openssl_date(text: str) -> str:
    """openssl's 'Jan  2 03:04:05 2026 GMT' as ISO 8601 with Z."""
    return datetime.strptime(text, "%b %d %H:%M:%S %Y GMT").strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("which", ["dpsctl", "openssl"])
def test_certificate_info_matches_openssl(which: str, ec_chain: Chain, shell_chain: Path) -> None:
    path = ec_chain.path("device") if which == "dpsctl" else shell_chain / "root.pem"
    (cert,) = load_certificates(path.read_bytes(), source=path.name)
    fields = openssl_fields(path)

    info = certificate_info(cert)

    assert info["sha1Thumbprint"] == fields["sha1 fingerprint"].replace(":", "") == sha1_thumbprint(cert)
    assert info["sha256Thumbprint"] == fields["sha256 fingerprint"].replace(":", "") == sha256_thumbprint(cert)
    assert info["serialNumber"] == fields["serial"]
    assert str(info["subjectName"]).replace(", ", ",") == fields["subject"]
    assert str(info["issuerName"]).replace(", ", ",") == fields["issuer"]
    assert info["notBeforeUtc"] == openssl_date(fields["notBefore"])
    assert info["notAfterUtc"] == openssl_date(fields["notAfter"])
    assert info["version"] == int(fields["version"]) == 3
    assert set(info) == {"subjectName", "sha1Thumbprint", "sha256Thumbprint", "issuerName", "notBeforeUtc",
                         "notAfterUtc", "serialNumber", "version"}  # fmt: skip


# --------------------------------------------------------------------------- loading certificates


@pytest.fixture(scope="module")
def device_der(ec_chain: Chain) -> bytes:
    """The device certificate as DER, converted by openssl rather than by dpsctl."""
    result = subprocess.run(
        ["openssl", "x509", "-in", str(ec_chain.path("device")), "-outform", "DER"], capture_output=True, check=True
    )
    return result.stdout


def test_every_format_real_clients_send_loads_the_same_certificate(ec_chain: Chain, device_der: bytes) -> None:
    pem = ec_chain.path("device").read_text()
    forms: dict[str, bytes | str] = {
        "PEM text": pem,
        "PEM bytes with CRLF": pem.replace("\n", "\r\n").encode(),
        "raw DER (.cer)": device_der,
        "Base64 of DER (az CLI)": base64.b64encode(device_der).decode(),
        "Base64 of DER, wrapped": base64.encodebytes(device_der),
        "Base64 of PEM (C service client)": base64.b64encode(pem.encode()),
        "PEM after openssl -text preamble": "Certificate:\n    Data: ...\n" + pem,
    }
    for form, data in forms.items():
        (cert,) = load_certificates(data, source=form)
        assert same_certificate(cert, ec_chain.device), form


def test_a_pem_bundle_loads_in_file_order(ec_chain: Chain) -> None:
    bundle = "".join(cert_to_pem(c) for c in (ec_chain.root, ec_chain.device, ec_chain.inter))

    certs = load_certificates(bundle, source="bundle.pem")

    assert [common_name(c) for c in certs] == ["Contoso Root", "contoso-device-01", "Contoso Intermediate"]


@given(picks=st.lists(st.sampled_from(["device", "inter", "root"]), min_size=1, max_size=MAX_CERTIFICATES))
def test_pem_concatenation_round_trips_any_sequence(ec_chain: Chain, picks: list[str]) -> None:
    certs = [getattr(ec_chain, name) for name in picks]

    loaded = load_certificates("".join(cert_to_pem(c) for c in certs), source="bundle.pem")

    assert len(loaded) == len(certs)
    assert all(same_certificate(a, b) for a, b in zip(loaded, certs, strict=True))


def test_same_certificate_is_der_equality(ec_chain: Chain) -> None:
    (again,) = load_certificates(cert_to_pem(ec_chain.device), source="x")

    assert same_certificate(again, ec_chain.device)
    assert not same_certificate(ec_chain.device, ec_chain.inter)


def key_pem(key: PrivateKeyTypes) -> bytes:
    """An unencrypted PKCS#8 PEM private key."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_der(key: PrivateKeyTypes) -> bytes:
    """An unencrypted PKCS#8 DER private key."""
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def truncated(pem: str) -> str:
    """A PEM file cut off half way through its body."""
    return pem[: len(pem) // 2]


def damaged_body(pem: str) -> str:
    """A PEM file whose armour is intact but whose Base64 body lost 8 characters from the middle."""
    middle = len(pem) // 2
    return pem[:middle] + pem[middle + 8 :]


@pytest.mark.parametrize(
    ("make", "found"),
    [
        (lambda c: b"", "is empty"),
        (lambda c: "  \n\t\n", "is empty"),
        (lambda c: "hello, this is not a certificate", "found text"),
        (lambda c: bytes(range(256)), "256 bytes of binary data"),
        (lambda c: key_pem(c.device_key), "is a private key ('PRIVATE KEY')"),
        (lambda c: key_der(c.device_key), "found a private key"),
        (lambda c: base64.b64encode(key_der(c.device_key)), "is Base64 of a private key"),
        (lambda c: truncated(cert_to_pem(c.device)), "no matching END line; the file looks truncated"),
        (lambda c: cert_to_pem(c.device).split("\n", 1)[1], "has a PEM END line but no BEGIN line"),
        (lambda c: damaged_body(cert_to_pem(c.device)), "damaged"),
        (lambda c: cert_to_pem(c.device).replace("CERTIFICATE", "CERTIFICATE REQUEST"), "'CERTIFICATE REQUEST' block"),
        (lambda c: c.device.public_bytes(serialization.Encoding.DER)[:-20], "found"),
    ],
    ids=[
        "empty",
        "blank",
        "text",
        "binary",
        "pem-key",
        "der-key",
        "b64-der-key",
        "truncated",
        "no-begin",
        "damaged",
        "csr-label",
        "truncated-der",
    ],
)
def test_wrong_input_is_invalid_input_naming_the_source(ec_chain: Chain, make, found: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        load_certificates(make(ec_chain), source="device.pem")

    assert caught.value.message.startswith("device.pem: ")
    assert found in caught.value.message


def test_a_private_key_given_as_a_certificate_never_leaks_into_the_message(ec_chain: Chain) -> None:
    pem = key_pem(ec_chain.device_key).decode()

    with pytest.raises(InvalidInput) as caught:
        load_certificates(pem, source="--certificate-path")

    body_lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    shown = caught.value.message + (caught.value.hint or "")
    assert not any(line in shown for line in body_lines)
    assert "not the private key" in (caught.value.hint or "")


def test_input_size_and_certificate_count_are_capped(ec_chain: Chain) -> None:
    one = cert_to_pem(ec_chain.device)

    assert len(load_certificates(one * MAX_CERTIFICATES, source="many.pem")) == MAX_CERTIFICATES
    with pytest.raises(InvalidInput, match="more than the limit of 20"):
        load_certificates(one * (MAX_CERTIFICATES + 1), source="many.pem")
    with pytest.raises(InvalidInput, match="byte limit"):
        load_certificates(b"A" * (MAX_INPUT_BYTES + 1), source="huge.bin")


@settings(max_examples=300)
@given(data=st.one_of(st.binary(max_size=600), st.text(max_size=300)))
def test_arbitrary_input_raises_only_invalid_input(data: bytes | str) -> None:
    try:
        certs = load_certificates(data, source="fuzz")
    except InvalidInput as error:
        assert error.message.startswith("fuzz")
    else:
        assert certs  # only a real certificate could get here


@given(
    data=st.one_of(
        st.binary(max_size=200).map(
            lambda b: b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(b) + b"-----END CERTIFICATE-----\n"
        ),
        st.binary(max_size=200).map(lambda b: b"0" + b),
        st.binary(max_size=200).map(base64.b64encode),
    )
)
def test_almost_right_input_raises_only_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        load_certificates(data, source="fuzz")


def test_a_signature_with_unused_bits_set_is_refused_like_openssl_does(ec_chain: Chain, tmp_path: Path) -> None:
    # Found by the corruption property below: cryptography ignores the BIT STRING's unused-bits octet.
    # DER demands the unused bits be zero, so pick a signature whose last bit is 0 (half of them are).
    device = next(
        cert
        for cert, _key in (issue_device("dev", ec_chain.inter, ec_chain.inter_key) for _ in range(64))
        if cert.signature[-1] % 2 == 0
    )
    altered = bytearray(device.public_bytes(serialization.Encoding.DER))
    altered[-len(device.signature) - 1] = 1
    (cert,) = load_certificates(bytes(altered), source="altered.cer")
    assert cert.signature == device.signature and not same_certificate(cert, device)

    (only,) = failures(verify_chain([cert, ec_chain.inter, ec_chain.root], now()))

    assert only.what == "signature does not verify with the key of 'CN=Contoso Intermediate'"
    assert all_ok(verify_chain([device, ec_chain.inter, ec_chain.root], now()))
    result = openssl_verify(ec_chain.path("root"), write_pem(tmp_path, "altered", cert), ec_chain.path("inter"))
    assert result.returncode != 0 and "bit string" in result.stdout + result.stderr


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
@settings(max_examples=300)
@given(position=st.data(), flip=st.integers(min_value=1, max_value=255))
def test_no_single_byte_corruption_of_a_device_certificate_verifies(
    ec_chain: Chain, device_der: bytes, position: st.DataObject, flip: int
) -> None:
    index = position.draw(st.integers(min_value=0, max_value=len(device_der) - 1))
    corrupted = bytearray(device_der)
    corrupted[index] ^= flip

    try:
        (cert,) = load_certificates(bytes(corrupted), source="corrupted.cer")
    except InvalidInput:
        return
    assert not all_ok(verify_chain([cert, ec_chain.inter, ec_chain.root], now()))


# --------------------------------------------------------------------------- private keys


def test_private_keys_load_from_pem_der_and_openssl_traditional_files(
    ec_chain: Chain, rsa_chain: Chain, tmp_path: Path
) -> None:
    traditional_ec = openssl("ecparam", "-genkey", "-name", "prime256v1").stdout  # EC PARAMETERS + EC PRIVATE KEY
    traditional_rsa = openssl("genrsa", "-traditional", "2048").stdout  # RSA PRIVATE KEY

    assert isinstance(load_private_key(key_pem(ec_chain.device_key), source="k.pem"), ec.EllipticCurvePrivateKey)
    assert isinstance(load_private_key(key_der(rsa_chain.device_key), source="k.der"), rsa.RSAPrivateKey)
    assert isinstance(load_private_key(traditional_ec.encode(), source="ec.key"), ec.EllipticCurvePrivateKey)
    assert isinstance(load_private_key(traditional_rsa.encode(), source="rsa.key"), rsa.RSAPrivateKey)
    loaded = load_private_key(key_pem(ec_chain.device_key), source="k.pem")
    assert loaded.private_numbers() == ec_chain.device_key.private_numbers()  # type: ignore[union-attr]


def test_a_key_file_with_the_certificate_in_front_still_yields_the_key(ec_chain: Chain) -> None:
    combined = cert_to_pem(ec_chain.device).encode() + key_pem(ec_chain.device_key)

    key = load_private_key(combined, source="device-full.pem")

    assert verify_possession(ec_chain.device, b"n", sign_possession_challenge(key, b"n"))


def test_encrypted_keys_are_refused_with_a_hint(ec_chain: Chain) -> None:
    encryption = serialization.BestAvailableEncryption(b"secret-pass")
    pkcs8_pem = ec_chain.device_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    pkcs8_der = ec_chain.device_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, encryption
    )
    legacy = subprocess.run(  # traditional PEM with "Proc-Type: 4,ENCRYPTED" headers
        ["openssl", "ec", "-aes128", "-passout", "pass:x"],
        input=key_pem(ec_chain.device_key),
        capture_output=True,
        check=True,
    )
    assert b"Proc-Type: 4,ENCRYPTED" in legacy.stdout

    for data in (pkcs8_pem, pkcs8_der, legacy.stdout):
        with pytest.raises(InvalidInput) as caught:
            load_private_key(data, source="device.key")
        assert "encrypted" in caught.value.message
        assert "openssl pkey" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("make", "found"),
    [
        (lambda c: cert_to_pem(c.device).encode(), "holds no private key (found PEM blocks: CERTIFICATE)"),
        (lambda c: c.device.public_bytes(serialization.Encoding.DER), "found a certificate"),
        (lambda c: key_pem(ed25519.Ed25519PrivateKey.generate()), "found an Ed25519 private key"),
        (lambda c: damaged_body(key_pem(c.device_key).decode()).encode(), "damaged"),
        (lambda c: b"", "is empty"),
        (lambda c: key_pem(c.device_key) + key_pem(c.inter_key), "holds 2 private keys"),
    ],
    ids=["cert-pem", "cert-der", "ed25519", "damaged", "empty", "two-keys"],
)
def test_wrong_key_input_is_invalid_input_without_key_material(ec_chain: Chain, make, found: str) -> None:  # type: ignore[no-untyped-def]
    data = make(ec_chain)

    with pytest.raises(InvalidInput) as caught:
        load_private_key(data, source="device.key")

    assert found in caught.value.message
    shown = caught.value.message + (caught.value.hint or "")
    body_lines = [
        line for line in data.decode("ascii", "replace").splitlines() if len(line) > 16 and "-----" not in line
    ]
    assert not any(line in shown for line in body_lines)


@settings(max_examples=200)
@given(data=st.binary(max_size=400))
def test_arbitrary_key_input_raises_only_invalid_input(data: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        load_private_key(data, source="fuzz.key")


# --------------------------------------------------------------------------- proof of possession


@pytest.mark.parametrize("chain_name", ["ec_chain", "rsa_chain"])
def test_possession_is_proven_only_by_the_certificates_own_key(chain_name: str, request: pytest.FixtureRequest) -> None:
    chain: Chain = request.getfixturevalue(chain_name)
    nonce = b"dps-challenge-42"

    signature = sign_possession_challenge(chain.device_key, nonce)

    assert verify_possession(chain.device, nonce, signature)
    assert not verify_possession(chain.device, b"dps-challenge-43", signature)
    assert not verify_possession(chain.inter, nonce, signature)
    assert not verify_possession(chain.device, nonce, sign_possession_challenge(chain.inter_key, nonce))
    assert not verify_possession(chain.device, nonce, signature[:-1])
    assert not verify_possession(chain.device, b"", signature)


def test_an_empty_nonce_cannot_be_signed(ec_chain: Chain) -> None:
    with pytest.raises(InvalidInput):
        sign_possession_challenge(ec_chain.device_key, b"")


@given(nonce=st.binary(min_size=1, max_size=64), signature=st.binary(max_size=300))
def test_verify_possession_never_raises_and_rejects_forged_signatures(
    ec_chain: Chain, rsa_chain: Chain, nonce: bytes, signature: bytes
) -> None:
    assert verify_possession(ec_chain.device, nonce, signature) is False
    assert verify_possession(rsa_chain.device, nonce, signature) is False
