"""Creating a test PKI for DPS and writing its files safely, cross-checked with the openssl CLI."""

from __future__ import annotations

import os
import stat
import string
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsctl.core.certs import (
    PrivateKey,
    cert_to_pem,
    certificate_info,
    check_issued_by,
    common_name,
    issue_device,
    issue_intermediate,
    issue_root,
    issue_verification,
    load_certificates,
    load_private_key,
    new_private_key,
    same_certificate,
    verify_chain,
    write_certificates,
    write_private_key,
)
from dpsctl.core.certs.issuing import MAX_DAYS
from dpsctl.core.checks import all_ok
from dpsctl.core.errors import Conflict, InvalidInput

ALNUM = string.ascii_letters + string.digits


def now() -> datetime:
    """The current instant."""
    return datetime.now(timezone.utc)


def ext(cert: x509.Certificate, kind: type) -> x509.Extension:  # type: ignore[type-arg]
    """One extension (value and criticality) of a certificate."""
    return cert.extensions.get_extension_for_class(kind)


def openssl_text(cert: x509.Certificate, tmp_path: Path) -> str:
    """openssl's human dump of a certificate."""
    path = tmp_path / "cert.pem"
    path.write_text(cert_to_pem(cert))
    return subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-text"], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def root() -> tuple[x509.Certificate, PrivateKey]:
    return issue_root("Contoso Test Root")


@pytest.fixture(scope="module")
def inter(root: tuple[x509.Certificate, PrivateKey]) -> tuple[x509.Certificate, PrivateKey]:
    return issue_intermediate("Contoso Test Intermediate", *root)


# --------------------------------------------------------------------------- keys


def test_default_key_is_ec_p256_and_rsa_has_the_asked_size() -> None:
    ec_key = new_private_key()
    rsa_key = new_private_key("rsa", 3072)

    assert isinstance(ec_key, ec.EllipticCurvePrivateKey) and ec_key.curve.name == "secp256r1"
    assert isinstance(rsa_key, rsa.RSAPrivateKey) and rsa_key.key_size == 3072


@pytest.mark.parametrize(("key_type", "bits"), [("dsa", 2048), ("EC", 2048), ("rsa", 1024), ("rsa", 8200)])
def test_unsupported_key_requests_are_invalid_input(key_type: str, bits: int) -> None:
    with pytest.raises(InvalidInput):
        new_private_key(key_type, bits)


# --------------------------------------------------------------------------- certificates


def test_root_is_a_self_signed_critical_ca_with_key_identifiers(
    root: tuple[x509.Certificate, PrivateKey], tmp_path: Path
) -> None:
    cert, key = root
    constraints = ext(cert, x509.BasicConstraints)
    usage = ext(cert, x509.KeyUsage)
    ski = ext(cert, x509.SubjectKeyIdentifier).value

    assert cert.subject == cert.issuer and common_name(cert) == "Contoso Test Root"
    assert constraints.critical and constraints.value.ca and constraints.value.path_length is None
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    cert.verify_directly_issued_by(cert)
    assert 0 < cert.serial_number < 2**128
    assert cert.version == x509.Version.v3
    assert "CA:TRUE" in openssl_text(cert, tmp_path)


def test_root_validity_is_backdated_for_clock_skew_and_lasts_the_asked_days() -> None:
    before = now()
    cert, _ = issue_root("Root", days=10)

    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    assert before - timedelta(minutes=5, seconds=2) <= start <= before - timedelta(minutes=4, seconds=58)
    assert end - start == timedelta(days=10)


def test_serials_are_random(root: tuple[x509.Certificate, PrivateKey]) -> None:
    serials = {issue_device(f"dev-{n}", *root)[0].serial_number for n in range(20)}

    assert len(serials) == 20


def test_root_path_length_is_recorded_and_negative_is_refused() -> None:
    cert, _ = issue_root("Root", path_length=2, key_type="rsa")

    assert ext(cert, x509.BasicConstraints).value.path_length == 2
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    with pytest.raises(InvalidInput):
        issue_root("Root", path_length=-1)


def test_intermediate_links_to_its_root_and_allows_no_further_ca_by_default(
    root: tuple[x509.Certificate, PrivateKey], inter: tuple[x509.Certificate, PrivateKey]
) -> None:
    root_cert, _ = root
    cert, _ = inter

    assert cert.issuer == root_cert.subject
    cert.verify_directly_issued_by(root_cert)
    assert ext(cert, x509.BasicConstraints).value.path_length == 0
    assert (
        ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier
        == ext(root_cert, x509.SubjectKeyIdentifier).value.digest
    )
    assert all_ok(check_issued_by(cert, root_cert, ca_depth=0))


def test_device_certificate_is_a_tls_client_leaf_named_by_its_registration_id(
    inter: tuple[x509.Certificate, PrivateKey], root: tuple[x509.Certificate, PrivateKey], tmp_path: Path
) -> None:
    cert, _ = issue_device("contoso-device-07", *inter)

    assert common_name(cert) == "contoso-device-07"
    assert ext(cert, x509.BasicConstraints).critical and not ext(cert, x509.BasicConstraints).value.ca
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (
        ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier
        == ext(inter[0], x509.SubjectKeyIdentifier).value.digest
    )
    assert all_ok(verify_chain([cert, inter[0], root[0]], now()))
    text = openssl_text(cert, tmp_path)
    assert "CA:FALSE" in text and "TLS Web Client Authentication" in text and "Digital Signature" in text


def test_device_without_a_ca_is_self_signed_for_individual_enrollments() -> None:
    cert, _ = issue_device("solo-device", None, None, key_type="rsa")

    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    assert all_ok(verify_chain([cert], now()))


def test_device_needs_both_ca_cert_and_key_or_neither(root: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, key = root

    with pytest.raises(InvalidInput):
        issue_device("dev", cert, None)
    with pytest.raises(InvalidInput):
        issue_device("dev", None, key)


def test_a_ca_key_that_does_not_belong_to_the_ca_certificate_is_refused(
    root: tuple[x509.Certificate, PrivateKey], inter: tuple[x509.Certificate, PrivateKey]
) -> None:
    with pytest.raises(InvalidInput, match="does not belong to the CA certificate 'CN=Contoso Test Root'"):
        issue_device("dev", root[0], inter[1])
    with pytest.raises(InvalidInput):
        issue_intermediate("Inter", root[0], inter[1])
    with pytest.raises(InvalidInput):
        issue_verification("ABC", root[0], inter[1])


def test_is_ca_makes_a_ca_flagged_leaf_for_negative_tests(inter: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, _ = issue_device("odd-device", *inter, is_ca=True)

    assert ext(cert, x509.BasicConstraints).value.ca


def test_verification_certificate_proves_possession_of_the_ca_key(
    root: tuple[x509.Certificate, PrivateKey], tmp_path: Path
) -> None:
    code = "3A8F7C1D9E2B4F60A1C3E5D7B9F1A3C5E7D9B1F3A5C7E9D1"

    cert = issue_verification(code, *root)

    assert common_name(cert) == code
    assert cert.issuer == root[0].subject
    assert all_ok(check_issued_by(cert, root[0], ca_depth=0))
    assert not ext(cert, x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)
    other_root, _ = issue_root("Contoso Test Root")
    assert not all_ok(check_issued_by(cert, other_root, ca_depth=0))


@pytest.mark.parametrize("code", ["", "   ", "X" * 65])
def test_verification_code_must_fit_a_common_name(code: str, root: tuple[x509.Certificate, PrivateKey]) -> None:
    with pytest.raises(InvalidInput):
        issue_verification(code, *root)


@pytest.mark.parametrize("days", [0, -1, MAX_DAYS + 1])
def test_days_out_of_range_are_invalid_input(days: int, root: tuple[x509.Certificate, PrivateKey]) -> None:
    with pytest.raises(InvalidInput):
        issue_device("dev", *root, days=days)
    with pytest.raises(InvalidInput):
        issue_root("Root", days=days)


def test_expired_and_future_certificates_can_be_made_for_tests(root: tuple[x509.Certificate, PrivateKey]) -> None:
    expired, _ = issue_device("old", *root, not_before=now() - timedelta(days=3), days=1)
    future, _ = issue_intermediate("Later CA", *root, not_before=now() + timedelta(days=2), days=5)

    assert expired.not_valid_after_utc < now()
    assert future.not_valid_before_utc > now()
    assert not all_ok(verify_chain([expired, root[0]], now()))


def test_a_naive_not_before_is_taken_as_utc() -> None:
    cert, _ = issue_root("Root", not_before=datetime(2030, 1, 2, 3, 4, 5), days=1)

    assert certificate_info(cert)["notBeforeUtc"] == "2030-01-02T03:04:05Z"
    assert certificate_info(cert)["notAfterUtc"] == "2030-01-03T03:04:05Z"


@pytest.mark.parametrize("name", ["", " ", "R" * 65])
def test_ca_common_names_must_fit(name: str, root: tuple[x509.Certificate, PrivateKey]) -> None:
    with pytest.raises(InvalidInput):
        issue_root(name)
    with pytest.raises(InvalidInput):
        issue_intermediate(name, *root)


def test_a_users_own_p384_ca_signs_with_sha384() -> None:
    # dpsctl only creates P-256 keys, but a user may bring a P-384 CA and its key.
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "P384 Root")])
    p384_ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(9)
        .not_valid_before(now() - timedelta(hours=1))
        .not_valid_after(now() + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )

    device, _ = issue_device("p384-device", p384_ca, key)

    assert device.signature_hash_algorithm is not None and device.signature_hash_algorithm.name == "sha384"
    assert all_ok(verify_chain([device, p384_ca], now()))


# --------------------------------------------------------------------------- the CN law


def is_valid_device_cn(text: str) -> bool:
    """The rule, restated independently of the implementation's regex."""
    return 1 <= len(text) <= 64 and text[0] in ALNUM and all(ch in ALNUM or ch in "-._:" for ch in text)


registration_ids = st.one_of(
    st.text(alphabet=ALNUM + "-._: /#é\n\t", max_size=70),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,70}", fullmatch=True),
    st.text(max_size=8),
)


@settings(max_examples=150, deadline=None)
@given(registration_id=registration_ids)
def test_device_cn_law(registration_id: str) -> None:
    if is_valid_device_cn(registration_id):
        cert, _ = issue_device(registration_id, None, None)
        assert common_name(cert) == registration_id
        assert certificate_info(cert)["subjectName"] == f"CN={registration_id}"
    else:
        with pytest.raises(InvalidInput):
            issue_device(registration_id, None, None)


def test_cn_law_boundaries() -> None:
    assert common_name(issue_device("a" * 64, None, None)[0]) == "a" * 64
    assert common_name(issue_device("0:a.b_c-", None, None)[0]) == "0:a.b_c-"
    for bad in ("a" * 65, "-leading-dash", "trailing-newline\n", "ünïcode", "has space"):
        with pytest.raises(InvalidInput):
            issue_device(bad, None, None)


# --------------------------------------------------------------------------- writing files


def mode_of(path: Path) -> int:
    """The permission bits of a file."""
    return stat.S_IMODE(path.stat().st_mode)


def test_private_key_file_is_0600_pkcs8_and_openssl_reads_it(tmp_path: Path) -> None:
    key = new_private_key()
    path = tmp_path / "device.key"
    old_umask = os.umask(0)  # the most permissive umask must still give 0600
    try:
        write_private_key(path, key)
    finally:
        os.umask(old_umask)

    assert mode_of(path) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    loaded = load_private_key(path.read_bytes(), source=path.name)
    assert loaded.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    result = subprocess.run(["openssl", "pkey", "-in", str(path), "-noout", "-check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_existing_key_is_overwritten_only_with_force(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    first, second = new_private_key(), new_private_key()
    write_private_key(path, first)
    original = path.read_bytes()

    with pytest.raises(Conflict) as caught:
        write_private_key(path, second)
    assert "--force" in (caught.value.hint or "")
    assert path.read_bytes() == original

    path.chmod(0o644)  # someone loosened it; an overwrite must tighten it again
    write_private_key(path, second, force=True)
    assert mode_of(path) == 0o600
    assert load_private_key(path.read_bytes(), source="k").private_numbers() == second.private_numbers()  # type: ignore[union-attr]


def test_a_key_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched")
    link = tmp_path / "device.key"
    link.symlink_to(target)

    with pytest.raises(Conflict):
        write_private_key(link, new_private_key())
    # --force replaces the link itself with a new 0600 file: the link's target is never written.
    write_private_key(link, new_private_key(), force=True)
    assert target.read_text() == "untouched"
    assert not link.is_symlink() and "PRIVATE KEY" in link.read_text() and (link.stat().st_mode & 0o777) == 0o600


def test_writing_into_a_missing_folder_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot write"):
        write_private_key(tmp_path / "missing" / "device.key", new_private_key())


def test_certificate_files_are_0644_pem_in_order_and_overwritten_only_with_force(
    root: tuple[x509.Certificate, PrivateKey], inter: tuple[x509.Certificate, PrivateKey], tmp_path: Path
) -> None:
    device, _ = issue_device("dev-1", *inter)
    path = tmp_path / "device-full-chain.pem"

    write_certificates(path, [device, inter[0], root[0]])

    assert mode_of(path) == 0o644
    loaded = load_certificates(path.read_bytes(), source=path.name)
    assert [same_certificate(a, b) for a, b in zip(loaded, [device, inter[0], root[0]], strict=True)] == [
        True,
        True,
        True,
    ]
    found = subprocess.run(["openssl", "storeutl", "-noout", "-certs", str(path)], capture_output=True, text=True)
    assert "Total found: 3" in found.stdout
    with pytest.raises(Conflict):
        write_certificates(path, [root[0]])
    write_certificates(path, [root[0]], force=True)
    assert len(load_certificates(path.read_bytes(), source=path.name)) == 1


def test_writing_no_certificates_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        write_certificates(tmp_path / "empty.pem", [])
    assert not (tmp_path / "empty.pem").exists()
