"""Certificates for DPS: load, describe, verify and issue them, and write them to PEM files.

The package's modules, each one concern: `loading` (PEM, DER, Base64 input), `describing` (names, thumbprints,
key identity), `verifying` (possession, validity, chain links), `issuing` (a test PKI in memory), `files`
(the issuing CA, `dpsctl cert create-*`, and the one PEM writer) and `report` (`dpsctl cert check`).
The names below are what the engine, the command line and the server use; `files` and `report` are imported by
their own path because they serve one command each.
"""

from dpsctl.core.certs.describing import (
    PrivateKey,
    as_utc,
    cert_to_pem,
    certificate_info,
    common_name,
    distinguished_name,
    is_ca,
    is_self_signed,
    issuer_of,
    key_belongs_to,
    names_registration_id,
    same_certificate,
    serial_hex,
    sha1_thumbprint,
    sha256_thumbprint,
    subject_of,
    utc_iso,
)
from dpsctl.core.certs.files import write_certificates, write_private_key
from dpsctl.core.certs.issuing import (
    issue_device,
    issue_intermediate,
    issue_root,
    issue_server,
    issue_verification,
    new_private_key,
)
from dpsctl.core.certs.loading import MAX_CERTIFICATES, MAX_INPUT_BYTES, load_certificates, load_private_key
from dpsctl.core.certs.verifying import (
    MIN_RSA_BITS,
    check_common_name,
    check_issued_by,
    check_key_strength,
    check_validity,
    sign_possession_challenge,
    verify_chain,
    verify_possession,
)

__all__ = [
    "MAX_CERTIFICATES",
    "MAX_INPUT_BYTES",
    "MIN_RSA_BITS",
    "PrivateKey",
    "as_utc",
    "cert_to_pem",
    "certificate_info",
    "check_common_name",
    "check_issued_by",
    "check_key_strength",
    "check_validity",
    "common_name",
    "distinguished_name",
    "is_ca",
    "is_self_signed",
    "issue_device",
    "issue_intermediate",
    "issue_root",
    "issue_server",
    "issue_verification",
    "issuer_of",
    "key_belongs_to",
    "load_certificates",
    "load_private_key",
    "names_registration_id",
    "new_private_key",
    "same_certificate",
    "serial_hex",
    "sha1_thumbprint",
    "sha256_thumbprint",
    "sign_possession_challenge",
    "subject_of",
    "utc_iso",
    "verify_chain",
    "verify_possession",
    "write_certificates",
    "write_private_key",
]
