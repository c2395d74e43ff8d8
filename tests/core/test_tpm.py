"""Software TPM: the engine challenges an endorsement key, only its holder can answer, and the file stays private."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import textwrap
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpsctl.core.errors import Conflict, InvalidInput, Unauthorized
from dpsctl.core.sas import build_sas_token, device_resource_uri, parse_sas_token, resource_matches, signature_matches
from dpsctl.core.tpm import (
    SoftwareTpm,
    create_tpm,
    default_registration_id,
    issue_challenge,
    load_tpm,
    save_tpm,
    validate_endorsement_key,
)
from tests.helpers.constants import ID_SCOPE as SCOPE

DPS_REGISTRATION_ID = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._:-]{0,126}[A-Za-z0-9-])?$")


@pytest.fixture(scope="module")
def device_tpm() -> SoftwareTpm:
    return create_tpm()


@pytest.fixture(scope="module")
def other_tpm() -> SoftwareTpm:
    return create_tpm()


@pytest.fixture(scope="module")
def small_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def spki_b64(public_key: object) -> str:
    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def pem(private_key: object) -> str:
    return private_key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# --- the attestation round trip -------------------------------------------------------------------------------------

def test_device_proves_possession_of_its_endorsement_key(device_tpm: SoftwareTpm) -> None:
    # Engine: the enrollment holds the EK; an unauthenticated register gets a 401 carrying authenticationKey.
    enrolled_ek = validate_endorsement_key(device_tpm.endorsement_key)
    engine_key, authentication_key = issue_challenge(enrolled_ek)

    # Device: open the challenge with the EK private key, sign a SAS token with the recovered key, retry.
    recovered = device_tpm.activate_credential(authentication_key)
    uri = device_resource_uri(SCOPE, device_tpm.registration_id)
    header = build_sas_token(uri, base64.b64encode(recovered).decode(), int(time.time()) + 3600)

    # Engine: the retried register verifies against the key it issued.
    token = parse_sas_token(header)
    assert signature_matches(token, engine_key)
    assert resource_matches(token, SCOPE, device_tpm.registration_id)


def test_a_device_without_the_endorsement_key_cannot_answer(device_tpm: SoftwareTpm, other_tpm: SoftwareTpm) -> None:
    engine_key, authentication_key = issue_challenge(device_tpm.endorsement_key)
    with pytest.raises(Unauthorized) as caught:
        other_tpm.activate_credential(authentication_key)
    assert "could not be decrypted with this TPM's endorsement key" in caught.value.message
    shown = f"{caught.value} {caught.value.hint}"
    assert authentication_key[:16] not in shown
    assert base64.b64encode(engine_key).decode()[:16] not in shown


def test_every_challenge_is_fresh(device_tpm: SoftwareTpm) -> None:
    first_key, first_blob = issue_challenge(device_tpm.endorsement_key)
    second_key, second_blob = issue_challenge(device_tpm.endorsement_key)
    assert len(first_key) == 32
    assert first_key != second_key and first_blob != second_blob
    # A token signed with an earlier challenge's key does not answer a later challenge.
    header = build_sas_token("r", base64.b64encode(first_key).decode(), 10**10)
    assert not signature_matches(parse_sas_token(header), second_key)


def test_the_challenge_is_oaep_sha256_with_the_identity_label(device_tpm: SoftwareTpm) -> None:
    # A blob made the "obvious" way without the TPM's IDENTITY label must not open: the label binds the purpose.
    public_key = device_tpm.endorsement_private_key.public_key()
    no_label = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    blob = base64.b64encode(public_key.encrypt(b"k" * 32, no_label)).decode()
    with pytest.raises(Unauthorized):
        device_tpm.activate_credential(blob)
    with_label = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=b"IDENTITY\x00")
    blob = base64.b64encode(public_key.encrypt(b"k" * 32, with_label)).decode()
    assert device_tpm.activate_credential(blob) == b"k" * 32


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=255), flip=st.integers(min_value=1, max_value=255))
def test_a_tampered_challenge_is_refused(device_tpm: SoftwareTpm, position: int, flip: int) -> None:
    _, authentication_key = issue_challenge(device_tpm.endorsement_key)
    blob = bytearray(base64.b64decode(authentication_key))
    blob[position] ^= flip
    with pytest.raises(Unauthorized):
        device_tpm.activate_credential(base64.b64encode(bytes(blob)).decode())


@pytest.mark.parametrize("garbage", ["", "not base64!", "AAAA", base64.b64encode(b"x" * 300).decode()])
def test_garbage_challenges_never_crash(device_tpm: SoftwareTpm, garbage: str) -> None:
    with pytest.raises((InvalidInput, Unauthorized)):
        device_tpm.activate_credential(garbage)


# --- identity -------------------------------------------------------------------------------------------------------

def test_keys_are_base64_der_rsa_2048(device_tpm: SoftwareTpm) -> None:
    for encoded in (device_tpm.endorsement_key, device_tpm.storage_root_key):
        key = serialization.load_der_public_key(base64.b64decode(encoded, validate=True))
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    assert device_tpm.endorsement_key != device_tpm.storage_root_key


@pytest.mark.rule("§6/tpm-default-registration-id")
def test_registration_id_is_node_style_base32_of_the_ek_hash(device_tpm: SoftwareTpm) -> None:
    digest = hashlib.sha256(base64.b64decode(device_tpm.endorsement_key)).digest()
    assert device_tpm.registration_id == base64.b32encode(digest).decode().lower().rstrip("=")
    assert re.fullmatch(r"[a-z2-7]{52}", device_tpm.registration_id)
    assert DPS_REGISTRATION_ID.fullmatch(device_tpm.registration_id)
    assert default_registration_id(device_tpm.endorsement_key) == device_tpm.registration_id


def test_two_tpms_have_different_identities(device_tpm: SoftwareTpm, other_tpm: SoftwareTpm) -> None:
    assert device_tpm.endorsement_key != other_tpm.endorsement_key
    assert device_tpm.registration_id != other_tpm.registration_id


def test_repr_shows_no_key_material(device_tpm: SoftwareTpm) -> None:
    assert repr(device_tpm) == f"SoftwareTpm(registration_id={device_tpm.registration_id!r})"


# --- enrolling an endorsement key -----------------------------------------------------------------------------------

def test_validation_normalises_wrapped_base64(device_tpm: SoftwareTpm) -> None:
    wrapped = "\n" + textwrap.fill(device_tpm.endorsement_key, 64) + "\n"
    assert validate_endorsement_key(wrapped) == device_tpm.endorsement_key


def test_invalid_endorsement_keys_are_refused(small_rsa_key: rsa.RSAPrivateKey, device_tpm: SoftwareTpm) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem_text = device_tpm.endorsement_private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    cases = {
        "": "empty",
        "   ": "empty",
        "not base64!": "not valid Base64",
        pem_text: "not valid Base64",  # PEM armour is not accepted; the hint says what is
        base64.b64encode(b"\x30\x03\x02\x01\x01").decode(): "not a DER public key",
        spki_b64(ec_key.public_key()): "not an RSA key",
        spki_b64(small_rsa_key.public_key()): "RSA-1024",
    }
    for ek, problem in cases.items():
        with pytest.raises(InvalidInput) as caught:
            validate_endorsement_key(ek)
        assert problem in caught.value.message, ek[:20]
        assert caught.value.hint
        with pytest.raises(InvalidInput):
            issue_challenge(ek)


# --- the TPM file ---------------------------------------------------------------------------------------------------

def test_saved_tpm_loads_back_and_still_answers_its_challenges(device_tpm: SoftwareTpm, tmp_path: Path) -> None:
    path = tmp_path / "device.tpm.json"
    save_tpm(device_tpm, path)
    document = json.loads(path.read_text())
    assert document["format"] == "dpsctl-software-tpm" and document["version"] == 1
    assert document["endorsementKey"] == device_tpm.endorsement_key
    assert document["endorsementPrivateKey"].startswith("-----BEGIN PRIVATE KEY-----")

    reloaded = load_tpm(path)
    assert reloaded.endorsement_key == device_tpm.endorsement_key
    assert reloaded.storage_root_key == device_tpm.storage_root_key
    assert reloaded.registration_id == device_tpm.registration_id
    engine_key, blob = issue_challenge(device_tpm.endorsement_key)
    assert reloaded.activate_credential(blob) == engine_key


def test_tpm_file_is_private(device_tpm: SoftwareTpm, tmp_path: Path) -> None:
    path = tmp_path / "device.tpm.json"
    save_tpm(device_tpm, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_overwriting_needs_force(device_tpm: SoftwareTpm, other_tpm: SoftwareTpm, tmp_path: Path) -> None:
    path = tmp_path / "device.tpm.json"
    save_tpm(device_tpm, path)
    with pytest.raises(Conflict) as caught:
        save_tpm(other_tpm, path)
    assert "--force" in (caught.value.hint or "")
    assert load_tpm(path).endorsement_key == device_tpm.endorsement_key  # untouched

    save_tpm(other_tpm, path, force=True)
    assert load_tpm(path).endorsement_key == other_tpm.endorsement_key


def test_forced_overwrite_of_a_world_readable_file_makes_it_private(device_tpm: SoftwareTpm, tmp_path: Path) -> None:
    path = tmp_path / "device.tpm.json"
    path.write_text("{}" + " " * 10_000)
    path.chmod(0o644)
    save_tpm(device_tpm, path, force=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_tpm(path).endorsement_key == device_tpm.endorsement_key  # truncated, not appended to


def test_saving_into_a_missing_directory_is_invalid_input(device_tpm: SoftwareTpm, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot write TPM file"):
        save_tpm(device_tpm, tmp_path / "nowhere" / "device.tpm.json")


def good_document(tpm: SoftwareTpm) -> dict[str, object]:
    return {
        "format": "dpsctl-software-tpm",
        "version": 1,
        "endorsementKey": tpm.endorsement_key,
        "storageRootKey": tpm.storage_root_key,
        "endorsementPrivateKey": pem(tpm.endorsement_private_key),
        "storageRootPrivateKey": pem(tpm.storage_root_private_key),
    }


BAD_PEM = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"


def damaged_files(tpm: SoftwareTpm, other: SoftwareTpm, small: rsa.RSAPrivateKey) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, expected words in the error)."""

    def variant(**changes: object) -> bytes:
        document = good_document(tpm)
        for key, value in changes.items():
            if value is None:
                document.pop(key)
            else:
                document[key] = value
        return json.dumps(document).encode()

    encrypted = tpm.endorsement_private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    ).decode()
    return {
        "empty": (b"", "not JSON"),
        "binary": (b"\xff\xfe\x00garbage", "not UTF-8"),
        "text": (b"hello", "not JSON"),
        "list": (b"[1, 2]", "not a dpsctl software TPM file"),
        "foreign": (b'{"format": "something-else", "version": 1}', "not a dpsctl software TPM file"),
        "future": (variant(version=2), "unsupported software TPM file version 2"),
        "bool-version": (variant(version=True), "unsupported"),
        "no-ek-private": (variant(endorsementPrivateKey=None), "endorsementPrivateKey is missing"),
        "number-srk-private": (variant(storageRootPrivateKey=7), "storageRootPrivateKey is missing"),
        "bad-pem": (variant(endorsementPrivateKey=BAD_PEM), "not an unencrypted PEM"),
        "encrypted": (variant(endorsementPrivateKey=encrypted), "not an unencrypted PEM"),
        "ec": (variant(endorsementPrivateKey=pem(ec.generate_private_key(ec.SECP256R1()))), "not an RSA key"),
        "rsa-1024": (variant(storageRootPrivateKey=pem(small)), "not an RSA key of at least 2048"),
        "ek-mismatch": (variant(endorsementKey=other.endorsement_key), "endorsementKey does not match"),
        "srk-mismatch": (variant(storageRootKey=tpm.endorsement_key), "storageRootKey does not match"),
        "deep": (b"[" * 100_000, "not JSON"),
    }


def test_damaged_tpm_files_are_invalid_input_naming_the_file(
    device_tpm: SoftwareTpm, other_tpm: SoftwareTpm, small_rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    private_pem_body = pem(device_tpm.endorsement_private_key).splitlines()[1]
    for name, (content, problem) in damaged_files(device_tpm, other_tpm, small_rsa_key).items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(content)
        with pytest.raises(InvalidInput) as caught:
            load_tpm(path)
        assert str(path) in caught.value.message, name
        assert problem in caught.value.message, name
        assert private_pem_body not in str(caught.value), name


def test_missing_and_unreadable_tpm_files_are_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist") as caught:
        load_tpm(tmp_path / "absent.json")
    assert "dpsctl tpm create" in (caught.value.hint or "")
    with pytest.raises(InvalidInput, match="TPM file .* is a directory"):
        load_tpm(tmp_path)  # a directory
