"""SAS tokens as the real clients send them: Python (%2F, no skn), Node (raw sr), C (%2f), and what must not verify."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsctl.core.errors import InvalidInput
from dpsctl.core.sas import (
    SasToken,
    build_sas_token,
    device_resource_uri,
    is_expired,
    parse_sas_token,
    resource_matches,
    sign,
    signature_matches,
)
from tests.helpers.constants import ID_SCOPE as SCOPE

DEVICE = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
DEVICE_KEY_B64 = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="  # derived in the published §4.2 vector
DEVICE_KEY = base64.b64decode(DEVICE_KEY_B64)
SE = 1700000000
ENCODED_SR = "0ne00000A0A%2Fregistrations%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
RAW_SR = "0ne00000A0A/registrations/sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
ENCODED_SIG = "t6/8JHWQuQgM9mXdYf/uIqa3dKECOEk9Rr4WrFV19q0="  # self-computed vector, §4.2
RAW_SIG = "hUOH8hSLSay+bfE5WjQhRmpIvWZdSog5Tlv8EyKqBg4="

REGISTRATION_IDS = st.from_regex(r"^[A-Za-z0-9]([A-Za-z0-9._:-]{0,20}[A-Za-z0-9-])?$", fullmatch=True)
ID_SCOPES = st.text(alphabet="0123456789ABCDEF", min_size=8, max_size=8).map(lambda h: "0ne" + h)
KEYS = st.binary(min_size=16, max_size=64)
EXPIRIES = st.integers(min_value=0, max_value=2**40)


def oracle_sig(key: bytes, signed_sr: str, se: int) -> str:
    """An independent HMAC so the client-style tests don't trust sas.sign."""
    return base64.b64encode(hmac.new(key, f"{signed_sr}\n{se}".encode(), hashlib.sha256).digest()).decode()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- the self-computed vectors of §4.2 --------------------------------------------------------------------------

def test_sign_reproduces_the_encoded_and_raw_vectors() -> None:
    assert sign(DEVICE_KEY, ENCODED_SR, SE) == ENCODED_SIG
    assert sign(DEVICE_KEY, RAW_SR, SE) == RAW_SIG


def test_built_token_carries_the_vector_signature_url_encoded() -> None:
    token = build_sas_token(device_resource_uri(SCOPE, DEVICE), DEVICE_KEY_B64, SE)
    assert token == (
        f"SharedAccessSignature sr={ENCODED_SR}&sig={quote(ENCODED_SIG, safe='')}&se={SE}&skn=registration"
    )


def test_raw_sr_token_is_signed_over_the_raw_text() -> None:
    token = build_sas_token(RAW_SR, DEVICE_KEY_B64, SE, encode_sr=False)
    assert parse_sas_token(token).sig == RAW_SIG


def test_device_resource_uri_shape() -> None:
    assert device_resource_uri("0ne0045B3C6", "dev-1") == "0ne0045B3C6/registrations/dev-1"


# --- what the three client families really send all verifies ---------------------------------------------------

def python_sdk_token() -> str:
    sr = quote(device_resource_uri(SCOPE, DEVICE), safe="")
    return f"SharedAccessSignature sr={sr}&sig={quote(oracle_sig(DEVICE_KEY, sr, SE), safe='')}&se={SE}"


def node_sdk_token() -> str:
    sr = device_resource_uri(SCOPE, DEVICE)
    sig = quote(oracle_sig(DEVICE_KEY, sr, SE), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&skn=registration&se={SE}"


def c_sdk_token() -> str:
    sr = device_resource_uri(SCOPE, DEVICE).replace("/", "%2f")
    sig = quote(oracle_sig(DEVICE_KEY, sr, SE), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={SE}&skn=registration"


@pytest.mark.rule("§4.1/sas-signature-over-literal-sr")
@pytest.mark.parametrize("make_token", [python_sdk_token, node_sdk_token, c_sdk_token], ids=["python", "node", "c"])
def test_every_client_style_verifies(make_token) -> None:  # type: ignore[no-untyped-def]
    token = parse_sas_token(make_token())
    assert signature_matches(token, DEVICE_KEY)
    assert resource_matches(token, SCOPE, DEVICE)
    assert not is_expired(token, now_epoch=SE - 60)


def test_python_token_has_no_key_name_and_node_token_does() -> None:
    assert parse_sas_token(python_sdk_token()).skn is None
    assert parse_sas_token(node_sdk_token()).skn == "registration"


def test_sr_is_kept_literally_and_sig_is_url_decoded() -> None:
    token = parse_sas_token(c_sdk_token())
    assert token.sr == RAW_SR.replace("/", "%2f")
    assert "%" not in token.sig
    assert base64.b64decode(token.sig, validate=True)


def test_an_unencoded_plus_in_the_signature_is_kept_as_base64() -> None:
    # Some hand-made tokens don't URL-encode sig; '+' must not turn into a space.
    token = parse_sas_token(f"SharedAccessSignature sr={RAW_SR}&sig={RAW_SIG}&se={SE}")
    assert token.sig == RAW_SIG
    assert signature_matches(token, DEVICE_KEY)


# --- tampering ------------------------------------------------------------------------------------------------------

def test_a_token_signed_with_another_key_does_not_verify() -> None:
    other_device_key = base64.b64decode("JC8F96eayuQwwz+PkE7IzjH2lIAjCUnAa61tDigBnSs=")
    assert not signature_matches(parse_sas_token(python_sdk_token()), other_device_key)


def test_extending_the_expiry_breaks_the_signature() -> None:
    genuine = parse_sas_token(python_sdk_token())
    stretched = SasToken(sr=genuine.sr, sig=genuine.sig, se=genuine.se + 3600, skn=genuine.skn)
    assert signature_matches(genuine, DEVICE_KEY)
    assert not signature_matches(stretched, DEVICE_KEY)


def test_retargeting_the_token_to_another_device_breaks_the_signature() -> None:
    genuine = parse_sas_token(python_sdk_token())
    moved = SasToken(sr=genuine.sr.replace(DEVICE, "other-device"), sig=genuine.sig, se=genuine.se)
    assert resource_matches(moved, SCOPE, "other-device")  # the resource check alone would let it through...
    assert not signature_matches(moved, DEVICE_KEY)  # ...the signature does not


def test_re_encoding_sr_breaks_the_signature() -> None:
    # The signature is over sr as sent, so swapping %2F for / is a different message even though it decodes the same.
    genuine = parse_sas_token(python_sdk_token())
    assert not signature_matches(SasToken(sr=RAW_SR, sig=genuine.sig, se=SE), DEVICE_KEY)


@pytest.mark.parametrize("bad_sig", ["not base64 at all!", "", "AAAA", ENCODED_SIG[:-4], "€uro"])
def test_signatures_that_are_not_the_hmac_simply_do_not_match(bad_sig: str) -> None:
    assert not signature_matches(SasToken(sr=ENCODED_SR, sig=bad_sig, se=SE), DEVICE_KEY)


# Characters 0..41 each carry 6 signature bits; character 42 carries the last 4 bits plus 2 padding bits.
@given(position=st.integers(min_value=0, max_value=41), replacement=st.sampled_from("ABab019+/"))
def test_changing_any_signature_character_breaks_it(position: int, replacement: str) -> None:
    tampered = ENCODED_SIG[:position] + replacement + ENCODED_SIG[position + 1 :]
    token = SasToken(sr=ENCODED_SR, sig=tampered, se=SE)
    assert signature_matches(token, DEVICE_KEY) == (tampered == ENCODED_SIG)


def test_signatures_are_compared_as_bytes_not_text() -> None:
    # Same 32 bytes, different spelling: the non-zero padding bits in the last character are ignored by decoding.
    assert ENCODED_SIG[42] == "0"  # 110100: data bits 1101, padding bits 00
    respelled = ENCODED_SIG[:42] + "1" + "="  # 110101
    assert signature_matches(SasToken(sr=ENCODED_SR, sig=respelled, se=SE), DEVICE_KEY)
    flipped_data_bit = ENCODED_SIG[:42] + "w" + "="  # 110000: the last data bit changes
    assert not signature_matches(SasToken(sr=ENCODED_SR, sig=flipped_data_bit, se=SE), DEVICE_KEY)


# --- resource scope -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sr", "scope", "registration_id", "matches"),
    [
        (ENCODED_SR, SCOPE, DEVICE, True),
        (ENCODED_SR.lower(), SCOPE, DEVICE, True),  # C SDK lower-case hex, lower-cased scope
        (RAW_SR.upper(), SCOPE, DEVICE, True),  # registration IDs are case-insensitive
        (ENCODED_SR, "0ne00000A0B", DEVICE, False),
        (ENCODED_SR, SCOPE, DEVICE + "x", False),
        (f"{SCOPE}%2Fregistrations%2F", SCOPE, "", True),
        (f"{SCOPE}%2Fdevices%2F{DEVICE}", SCOPE, DEVICE, False),  # an IoT Hub token is not a DPS token
    ],
)
def test_resource_matches(sr: str, scope: str, registration_id: str, matches: bool) -> None:
    assert resource_matches(SasToken(sr=sr, sig=ENCODED_SIG, se=SE), scope, registration_id) is matches


# --- expiry ---------------------------------------------------------------------------------------------------------

@pytest.mark.rule("§4.1/sas-expiry")
def test_a_token_is_valid_up_to_and_including_its_expiry_second() -> None:
    token = SasToken(sr=ENCODED_SR, sig=ENCODED_SIG, se=SE)
    assert not is_expired(token, SE - 1)
    assert not is_expired(token, SE)
    assert is_expired(token, SE + 0.5)
    assert is_expired(token, SE + 3600)


# --- parsing --------------------------------------------------------------------------------------------------------

def test_fields_may_come_in_any_order_and_unknown_fields_are_ignored() -> None:
    token = parse_sas_token(f"SharedAccessSignature se={SE}&future=1&skn=registration&sig=abc%3D&sr={ENCODED_SR}")
    assert token == SasToken(sr=ENCODED_SR, sig="abc=", se=SE, skn="registration")


def test_surrounding_whitespace_from_headers_is_tolerated() -> None:
    assert parse_sas_token(f"  {python_sdk_token()}\r\n") == parse_sas_token(python_sdk_token())


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (f"sr={ENCODED_SR}&sig=abc&se=1", "SharedAccessSignature"),  # prefix required
        (f"sharedaccesssignature sr={ENCODED_SR}&sig=abc&se=1", "SharedAccessSignature"),  # case-sensitive
        (f"SharedAccessSignature  sr={ENCODED_SR}&sig=abc&se=1", "name=value"),  # double space: empty field name
        ("SharedAccessSignature ", "no fields"),
        ("SharedAccessSignature", "no fields"),
        (f"SharedAccessSignature sr={ENCODED_SR}&se=1", "missing field(s): sig"),
        ("SharedAccessSignature skn=registration", "missing field(s): sr, sig, se"),
        (f"SharedAccessSignature sr={ENCODED_SR}&sig=abc&se=1&sig=def", "'sig' more than once"),
        (f"SharedAccessSignature sr={ENCODED_SR}&sr={RAW_SR}&sig=abc&se=1", "'sr' more than once"),
        (f"SharedAccessSignature sr=&sig=abc&se=1", "'sr' is empty"),
        (f"SharedAccessSignature sr={ENCODED_SR}&sig=abc&se=1&skn=", "'skn' is empty"),
        (f"SharedAccessSignature sr={ENCODED_SR}&sig=abc&se=1&", "name=value"),
        (f"SharedAccessSignature sr={ENCODED_SR}&sig=abc&se=-1", "non-negative whole number"),
        (f"SharedAccessSignature sr={ENCODED_SR}&sig=abc&se=+1", "non-negative whole number"),
        (f"SharedAccessSignature sr={ENCODED_SR}&sig=abc&se=1.5", "non-negative whole number"),
        (f"SharedAccessSignature sr={ENCODED_SR}&sig=abc&se=1_000", "non-negative whole number"),
        (f"SharedAccessSignature sr={ENCODED_SR}&sig=abc&se=\u0661\u0662", "non-negative whole number"),
        (f"SharedAccessSignature sr={ENCODED_SR}&sig=abc&se={'9' * 400}", "non-negative whole number"),
        (f"SharedAccessSignature sr={ENCODED_SR}\ud800&sig=abc&se=1", "not valid Unicode"),
    ],
)
def test_malformed_tokens_are_invalid_input(token: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_sas_token(token)
    assert problem in caught.value.message
    assert caught.value.hint


def test_parse_errors_never_echo_the_signature_or_token() -> None:
    secret_sig = "c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ%3D%3D"
    token = f"SharedAccessSignature sr={ENCODED_SR}&sig={secret_sig}&sig={secret_sig}&se=1"
    with pytest.raises(InvalidInput) as caught:
        parse_sas_token(token)
    shown = f"{caught.value} {caught.value.hint}"
    assert "c2VjcmV0" not in shown
    assert ENCODED_SR not in shown


def test_a_non_string_token_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        parse_sas_token(b"SharedAccessSignature sr=a&sig=b&se=1")  # type: ignore[arg-type]


# --- building -------------------------------------------------------------------------------------------------------

def test_key_name_can_be_left_out_like_the_python_sdk_does() -> None:
    token = build_sas_token(device_resource_uri(SCOPE, DEVICE), DEVICE_KEY_B64, SE, key_name=None)
    assert "skn=" not in token
    assert parse_sas_token(token).skn is None


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"resource_uri": "", "key_b64": DEVICE_KEY_B64, "expiry": SE}, "resource URI is empty"),
        ({"resource_uri": RAW_SR, "key_b64": "nope", "expiry": SE}, "signing key"),
        ({"resource_uri": RAW_SR, "key_b64": DEVICE_KEY_B64, "expiry": -1}, "non-negative"),
        ({"resource_uri": RAW_SR, "key_b64": DEVICE_KEY_B64, "expiry": 1.5}, "non-negative"),
        ({"resource_uri": "a&b", "key_b64": DEVICE_KEY_B64, "expiry": SE, "encode_sr": False}, "URL-encoded"),
        ({"resource_uri": RAW_SR, "key_b64": DEVICE_KEY_B64, "expiry": SE, "key_name": ""}, "key name is empty"),
    ],
)
def test_build_refuses_bad_input(kwargs: dict, problem: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInput, match=problem):
        build_sas_token(**kwargs)


# --- laws -----------------------------------------------------------------------------------------------------------

@settings(max_examples=150)
@given(
    scope=ID_SCOPES,
    registration_id=REGISTRATION_IDS,
    key=KEYS,
    se=EXPIRIES,
    encode_sr=st.booleans(),
    key_name=st.sampled_from([None, "registration", "provisioningserviceowner"]),
)
def test_build_parse_verify_round_trip(
    scope: str, registration_id: str, key: bytes, se: int, encode_sr: bool, key_name: str | None
) -> None:
    token = parse_sas_token(
        build_sas_token(
            device_resource_uri(scope, registration_id), b64(key), se, key_name=key_name, encode_sr=encode_sr
        )
    )
    assert token.se == se and token.skn == key_name
    assert signature_matches(token, key)
    assert resource_matches(token, scope, registration_id)
    assert resource_matches(token, scope.lower(), registration_id.upper())


@given(registration_id=REGISTRATION_IDS, key=KEYS, other_key=KEYS, se=EXPIRIES)
def test_only_the_signing_key_verifies(registration_id: str, key: bytes, other_key: bytes, se: int) -> None:
    token = parse_sas_token(build_sas_token(device_resource_uri(SCOPE, registration_id), b64(key), se))
    # HMAC zero-pads keys up to its 64-byte block, so keys differing only in trailing zero bytes are the same key.
    assert signature_matches(token, other_key) == (key.rstrip(b"\0") == other_key.rstrip(b"\0"))


@given(registration_id=REGISTRATION_IDS, other=REGISTRATION_IDS)
def test_a_token_only_fits_its_own_registration(registration_id: str, other: str) -> None:
    token = parse_sas_token(build_sas_token(device_resource_uri(SCOPE, registration_id), DEVICE_KEY_B64, SE))
    assert resource_matches(token, SCOPE, other) == (registration_id.lower() == other.lower())


FIELD_NAMES = st.sampled_from(["sr", "sig", "se", "skn", "x", "", "SR"])
FIELD_VALUES = st.one_of(st.text(max_size=12), st.integers(min_value=-5, max_value=10**25).map(str))
NEAR_TOKENS = st.lists(st.tuples(FIELD_NAMES, FIELD_VALUES), max_size=6).map(
    lambda pairs: "SharedAccessSignature " + "&".join(f"{k}={v}" for k, v in pairs)
)


@settings(max_examples=300)
@given(st.one_of(st.text(), st.text().map(lambda t: "SharedAccessSignature " + t), NEAR_TOKENS))
def test_parsing_arbitrary_text_raises_only_invalid_input(text: str) -> None:
    try:
        token = parse_sas_token(text)
    except InvalidInput:
        return
    # Whatever parses must be usable by the verifier without blowing up.
    assert token.se >= 0 and token.sr and token.sig
    signature_matches(token, DEVICE_KEY)
    resource_matches(token, SCOPE, DEVICE)
