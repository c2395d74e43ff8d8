"""Symmetric keys: generation, strict decoding and group-key derivation against the published DPS vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpsctl.core.errors import InvalidInput
from dpsctl.core.keys import decode_key, derive_device_key, generate_key

DOC_GROUP_KEY = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
CONTOSO_GROUP_KEY = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="


# --- derivation: the three vectors published by Microsoft (reference §4.2) -------------------------------------

@pytest.mark.parametrize(
    ("group_key", "registration_id", "device_key"),
    [
        (DOC_GROUP_KEY, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="),
        (CONTOSO_GROUP_KEY, "breakroom499-contoso-tstrsd-007", "JC8F96eayuQwwz+PkE7IzjH2lIAjCUnAa61tDigBnSs="),
        (CONTOSO_GROUP_KEY, "mainbuilding167-contoso-hpsd-088", "6uejA9PfkQgmYylj8Zerp3kcbeVrGZ172YLa7VSnJzg="),
    ],
)
def test_derived_keys_match_published_vectors(group_key: str, registration_id: str, device_key: str) -> None:
    assert derive_device_key(group_key, registration_id) == device_key


def test_derived_key_is_itself_a_usable_device_key() -> None:
    # The self-computed SAS vector in §4.2 signs with this derived key, so it must pass our own key rules.
    device_key = derive_device_key(DOC_GROUP_KEY, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6")
    assert len(decode_key(device_key)) == 32


def test_derivation_depends_on_the_registration_id_case() -> None:
    # DPS IDs are case-insensitive, but the derivation is over the bytes the device sends: no silent normalising.
    assert derive_device_key(DOC_GROUP_KEY, "Device-1") != derive_device_key(DOC_GROUP_KEY, "device-1")


def test_deriving_from_a_bad_group_key_names_the_group_key() -> None:
    with pytest.raises(InvalidInput, match="group key"):
        derive_device_key("not base64!", "dev-1")


@given(key=st.binary(min_size=16, max_size=64), registration_id=st.text(min_size=1, max_size=40))
def test_derivation_is_hmac_sha256_of_the_utf8_id(key: bytes, registration_id: str) -> None:
    expected = hmac.new(key, registration_id.encode("utf-8"), hashlib.sha256).digest()
    derived = derive_device_key(base64.b64encode(key).decode(), registration_id)
    assert base64.b64decode(derived) == expected


@given(key=st.binary(min_size=16, max_size=64), a=st.text(min_size=1, max_size=20), b=st.text(min_size=1, max_size=20))
def test_different_devices_in_a_group_get_different_keys(key: bytes, a: str, b: str) -> None:
    group_key = base64.b64encode(key).decode()
    assert (derive_device_key(group_key, a) == derive_device_key(group_key, b)) == (a == b)


# --- generation ---------------------------------------------------------------------------------------------------

def test_generated_keys_default_to_64_bytes_like_the_service() -> None:
    assert len(base64.b64decode(generate_key(), validate=True)) == 64


def test_generated_keys_are_fresh_each_time() -> None:
    assert len({generate_key() for _ in range(20)}) == 20


@given(st.integers(min_value=16, max_value=64))
def test_any_allowed_size_generates_a_key_that_decodes_back(nbytes: int) -> None:
    assert len(decode_key(generate_key(nbytes))) == nbytes


@pytest.mark.parametrize("nbytes", [0, 15, 65, 1024, -1])
def test_sizes_outside_16_to_64_are_refused(nbytes: int) -> None:
    with pytest.raises(InvalidInput, match="16 and 64"):
        generate_key(nbytes)


def test_a_boolean_is_not_a_key_size() -> None:
    with pytest.raises(InvalidInput):
        generate_key(True)  # type: ignore[arg-type]


# --- decoding -----------------------------------------------------------------------------------------------------

def test_surrounding_whitespace_is_tolerated() -> None:
    assert decode_key(f"  {DOC_GROUP_KEY}\n") == base64.b64decode(DOC_GROUP_KEY)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("this is not base64!", "not valid Base64"),
        ("QUJD", "decodes to 3 bytes"),  # valid Base64, too short
        (base64.b64encode(b"x" * 65).decode(), "decodes to 65 bytes"),
        (DOC_GROUP_KEY.rstrip("="), "not valid Base64: it has lost its '=' padding"),  # missing padding: strict
        (DOC_GROUP_KEY.replace("/", "_"), "not valid Base64: it uses URL-safe Base64"),  # a different encoding
        ('"' + DOC_GROUP_KEY + '"', "not valid Base64: it is wrapped in quotes"),  # captured from -o json
        ("Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24\nwNoykUmermc=", "not valid Base64"),  # inner whitespace
        ("Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmerm€=", "not valid Base64"),  # non-ASCII
    ],
)
def test_bad_keys_are_refused_naming_what_and_why(text: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_key(text, what="primary key")
    assert caught.value.message.startswith("primary key")
    assert problem in caught.value.message
    # A recognised mistake gets its own fix; anything else the caller's next step (by default: generate a key).
    fixes = {"padding": "'=' included", "URL-safe": "replace '-' with '+'", "quotes": "-o tsv"}
    expected = next((fix for word, fix in fixes.items() if word in problem), "dpsctl keys generate")
    assert expected in (caught.value.hint or "")


@pytest.mark.parametrize("secretish", ["c2VjcmV0LWtleQ==", "hunter2-not-base64-hunter2"])
def test_the_rejected_key_never_appears_in_the_error(secretish: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_key(secretish, what="secondary key")
    assert secretish not in str(caught.value)
    assert secretish not in (caught.value.hint or "")


@given(st.text(max_size=120))
def test_decoding_arbitrary_text_either_yields_a_valid_key_or_raises_invalid_input(text: str) -> None:
    try:
        raw = decode_key(text)
    except InvalidInput:
        return
    assert 16 <= len(raw) <= 64
