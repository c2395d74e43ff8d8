"""A registration request: what a device sends, and the checks that make a request the caller's error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpsctl.core.attestation import Credential, SasCredential, TpmCredential, X509Credential
from dpsctl.core.errors import InvalidInput
from dpsctl.core.ids import validate_registration_id
from dpsctl.core.models import EnrollmentGroup, IndividualEnrollment

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

Entry = IndividualEnrollment | EnrollmentGroup
Json = dict[str, Any]


@dataclass(frozen=True)
class RegistrationRequest:
    """One device registration attempt."""

    credential: Credential
    registration_id: str | None = None
    payload: Any = None
    region: str | None = None


def check_request(request: RegistrationRequest) -> str:
    """The request's registration ID, after the checks that make a request the caller's error (raise InvalidInput)."""
    reg_id = registration_id_of(request)
    if request.payload is not None:
        from dpsctl.core.untrusted_json import check_value

        # A payload nested too deep would fail later (deepcopy, store write, output) with RecursionError.
        check_value(request.payload, "the registration payload")
    if request.region is not None:
        from dpsctl.core.regions import normalize_region

        # Checked before anything else: a mistyped region is the caller's error whatever the entry's policy,
        # not something to ignore (hashed, static) or to find only after a device has been attested.
        normalize_region(request.region)
    return reg_id


def registration_id_of(request: RegistrationRequest) -> str:
    """The registration ID: given, else the certificate CN (X.509), the TPM default, or the SAS token's resource."""
    cred = request.credential
    reg_id = request.registration_id
    if reg_id is None and isinstance(cred, X509Credential):
        from dpsctl.core.certs import common_name

        reg_id = common_name(cred.chain[0])
        if not reg_id:
            raise InvalidInput("the device certificate has no subject CN, so it has no registration ID")
    if reg_id is None and isinstance(cred, TpmCredential):
        from dpsctl.core.tpm import default_registration_id

        reg_id = default_registration_id(cred.endorsement_key)
    if reg_id is None and isinstance(cred, SasCredential):
        token = cred.parsed  # parsed once: matching reads the same token for its resource and signature
        reg_id = None if isinstance(token, InvalidInput) else token.registration_id
    if reg_id is None:
        raise InvalidInput("the registration ID is missing", hint="pass --registration-id ID")
    return validate_registration_id(reg_id)
