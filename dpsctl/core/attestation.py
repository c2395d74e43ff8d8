"""Device attestation: how a SAS token, an X.509 chain or a TPM proves itself against an enrollment entry.

Every check appends a line to a `Trace`, so a refusal can always say which check failed and why.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from dpsctl.core.checks import Trace
from dpsctl.core.errors import InvalidInput

if TYPE_CHECKING:
    from dpsctl.core.sas import SasToken

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

# --------------------------------------------------------------------------- what a device presents


@dataclass(frozen=True)
class SasCredential:
    """A SAS token, as a symmetric-key device sends it in the Authorization header or MQTT password."""

    token: str

    @cached_property
    def parsed(self) -> SasToken | InvalidInput:
        """The token parsed, once for every use (registration ID, resource, signature), or why it does not parse."""
        from dpsctl.core.sas import parse_sas_token

        try:
            return parse_sas_token(self.token)
        except InvalidInput as exc:
            return exc


@dataclass(frozen=True)
class X509Credential:
    """A certificate chain (leaf first) and a way to prove possession of the leaf's private key.

    `prove` signs a nonce with the private key; None means possession was already proven (a TLS handshake).
    """

    chain: tuple[Any, ...]
    prove: Callable[[bytes], bytes] | None = None


@dataclass(frozen=True)
class TpmCredential:
    """A TPM's public keys and its answer to DPS's challenge (authentication key blob -> SAS token).

    `challenge_key` is set when the challenge was issued by an earlier request (over HTTP the 401 carrying
    `authenticationKey` and the signed retry are two requests): the engine then checks the answer against
    that key instead of issuing a new challenge, and `answer` is called with an empty blob.
    """

    endorsement_key: str
    storage_root_key: str | None
    answer: Callable[[str], str]
    challenge_key: bytes | None = field(default=None, repr=False)


Credential = SasCredential | X509Credential | TpmCredential

# The trace step for a chain whose key was proven outside the engine (a TLS handshake); tools that check a
# certificate without its key recognise and drop this step.
POSSESSION_BY_TLS = "possession of the leaf's private key was proven by the TLS handshake"


def credential_type(credential: Credential) -> str:
    """The DPS attestation type a credential belongs to."""
    if isinstance(credential, SasCredential):
        return "symmetricKey"
    if isinstance(credential, X509Credential):
        return "x509"
    return "tpm"


# --------------------------------------------------------------------------- symmetric keys


def parse_token(credential: SasCredential, trace: Trace) -> SasToken | None:
    """The device's SAS token, parsed (a malformed token is the device's failure, not an input error)."""
    token = credential.parsed
    if isinstance(token, InvalidInput):
        trace.fail(f"SAS token is malformed: {token.message}")
        return None
    trace.ok("SAS token parses (sr, sig, se" + (", skn)" if token.skn else "; no skn, which DPS allows)"))
    return token


def check_token_scope(token: SasToken, id_scope: str, registration_id: str, now: datetime, trace: Trace) -> bool:
    """The token names this ID scope and registration ID, and has not expired."""
    from dpsctl.core.sas import device_resource_uri, is_expired, resource_matches

    expected = device_resource_uri(id_scope, registration_id)
    if not resource_matches(token, id_scope, registration_id):
        trace.fail(
            f"SAS token is for resource {token.resource!r}, not {expected!r} (ID scope and registration ID must match)"
        )
        return False
    trace.ok(f"SAS token resource {token.resource!r} names this ID scope and registration ID")
    expiry = datetime.fromtimestamp(min(token.se, 253402300799), tz=now.tzinfo).strftime("%Y-%m-%dT%H:%M:%SZ")
    if is_expired(token, now.timestamp()):
        trace.fail(f"SAS token expired at {expiry} (se={token.se})")
        return False
    trace.ok(f"SAS token is valid until {expiry}")
    return True


@dataclass(frozen=True)
class TokenRefusal:
    """Why a device's token is refused before any key is tried (the failed check), and what to do about it."""

    message: str
    hint: str


def check_token(
    credential: SasCredential, id_scope: str, registration_id: str, now: datetime, trace: Trace
) -> SasToken | TokenRefusal:
    """The device's token, parsed once: well formed, naming this ID scope and registration ID, not expired."""
    token = parse_token(credential, trace)
    if token is None:
        return TokenRefusal(
            trace.last_failure(),
            "a device SAS token looks like: SharedAccessSignature sr=...&sig=...&se=...&skn=registration",
        )
    if not check_token_scope(token, id_scope, registration_id, now, trace):
        return TokenRefusal(
            trace.last_failure(), "build a fresh token: dpsctl keys sas --registration-id ID --key @KEY_FILE"
        )
    return token


def check_token_lifetime(token: SasToken, now: datetime, trace: Trace) -> bool:
    """The token does not stay valid for longer than dpsctl's maximum lifetime (one year); checked once it is signed."""
    from dpsctl.core.sas import MAX_TOKEN_LIFETIME_SECONDS, lives_too_long

    if lives_too_long(token, now.timestamp()):
        expiry = datetime.fromtimestamp(min(token.se, 253402300799), tz=now.tzinfo).strftime("%Y-%m-%dT%H:%M:%SZ")
        days = MAX_TOKEN_LIFETIME_SECONDS // 86400
        trace.fail(
            f"SAS token is valid until {expiry} (se={token.se}), more than {days} days from now; dpsctl accepts at most {days} days"
        )
        return False
    return True


def match_key(token: SasToken, keys: list[tuple[str, str]]) -> str | None:
    """The label of the first key (Base64) whose HMAC over `sr + "\\n" + se` equals the token's signature."""
    from dpsctl.core.keys import decode_key
    from dpsctl.core.sas import signature_matches

    for label, key_b64 in keys:
        try:
            key = decode_key(key_b64)
        except InvalidInput:
            continue
        if signature_matches(token, key):
            return label
    return None


# --------------------------------------------------------------------------- X.509


def check_chain(credential: X509Credential, now: datetime, trace: Trace) -> bool:
    """Possession of the leaf key, then every certificate's validity, key, and each link of the chain."""
    from dpsctl.core.certs.describing import subject_of
    from dpsctl.core.certs.verifying import verify_chain, verify_possession

    leaf = credential.chain[0]
    if credential.prove is not None:
        nonce = os.urandom(32)
        try:
            signature = credential.prove(nonce)
        except Exception:  # noqa: BLE001 - a device-side failure is a failed proof
            signature = b""
        if not verify_possession(leaf, nonce, signature):
            trace.fail(f"the private key does not belong to the device certificate {subject_of(leaf)!r}")
            return False
        trace.ok("the device proved possession of the leaf certificate's private key")
    else:
        trace.ok(POSSESSION_BY_TLS)
    return trace.add(verify_chain(list(credential.chain), now))


def check_link_to_signer(top: Any, signer: Any, depth: int, now: datetime, trace: Trace) -> bool:
    """The chain's last certificate was issued by an enrolled signing certificate that is not in the chain."""
    from dpsctl.core.certs.verifying import check_issued_by, check_validity

    return trace.add([check_validity(signer, now), *check_issued_by(top, signer, ca_depth=depth)])


# --------------------------------------------------------------------------- TPM


def run_tpm_challenge(
    credential: TpmCredential, endorsement_key: str, id_scope: str, registration_id: str, now: datetime, trace: Trace
) -> bool:
    """DPS's TPM proof: a fresh key encrypted to the enrolled EK; only the TPM can decrypt it and sign with it."""
    from dpsctl.core.sas import parse_sas_token, signature_matches
    from dpsctl.core.tpm import issue_challenge, validate_endorsement_key

    presented = validate_endorsement_key(credential.endorsement_key)
    if presented != endorsement_key:
        trace.fail("the device's endorsement key is not the one in its enrollment")
        return False
    trace.ok("the device's endorsement key matches the enrollment")
    if credential.challenge_key is not None:
        nonce_key, blob = credential.challenge_key, ""
        trace.note(
            "challenge: issued by an earlier request (a 401 carrying authenticationKey); this request brings the answer"
        )
    else:
        nonce_key, blob = issue_challenge(endorsement_key)
        trace.note(
            "challenge: a fresh 32-byte key, RSA-OAEP-encrypted to the endorsement key, sent as authenticationKey"
        )
    try:
        token_text = credential.answer(blob)
        token = parse_sas_token(token_text)
    except Exception as exc:  # noqa: BLE001 - the device failed the challenge, whatever the reason
        trace.fail(f"the device could not answer the challenge: {getattr(exc, 'message', type(exc).__name__)}")
        return False
    if not check_token_scope(token, id_scope, registration_id, now, trace):
        return False
    if not signature_matches(token, nonce_key):
        trace.fail(
            "the SAS token is not signed with the challenge key: the device does not hold the endorsement key's private key"
        )
        return False
    if not check_token_lifetime(token, now, trace):
        return False
    trace.ok("the SAS token is signed with the challenge key: the device holds the endorsement key's private key")
    return True


def random_device_key() -> str:
    """A fresh 32-byte symmetric key for a hub identity."""
    return base64.b64encode(os.urandom(32)).decode()
