"""Certificate files: load the issuing CA, refuse chains that could never verify, and write PEM files.

`issuing` makes certificates and does not judge them; this module is where the command line's safety rules live:
an issuer must be a CA whose path length leaves room, the key must belong to it, files are never overwritten
silently, and a device's full chain lists its intermediates (never the root) in order. It is also the one place
that writes PEM files (`write_private_key`, `write_certificates`), for `dpsctl cert create-*` and `dpsctl serve`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dpsctl.core.certs import issuing
from dpsctl.core.certs.describing import (
    PrivateKey,
    distinguished_name,
    extension,
    is_ca,
    is_self_signed,
    key_belongs_to,
    sha1_thumbprint,
    subject_of,
    utc_iso,
)
from dpsctl.core.certs.loading import load_certificates, load_private_key
from dpsctl.core.errors import Conflict, InvalidInput
from dpsctl.core.safefiles import os_error, write_atomically, write_new

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

Json = dict[str, Any]


@dataclass(frozen=True)
class Issuer:
    """A signing CA: its certificate and key, and the certificates above it found in its file (nearest first)."""

    cert: x509.Certificate
    key: PrivateKey
    above: tuple[x509.Certificate, ...] = ()
    source: str = "CA certificate"

    @property
    def intermediates(self) -> list[x509.Certificate]:
        """What a certificate it signs must be sent with: the CA itself unless it is a root, then those above it."""
        return [c for c in (self.cert, *self.above) if not is_self_signed(c)]


@dataclass
class Created:
    """What a create command made: the certificate, the files written, and warnings worth telling the user."""

    cert: x509.Certificate
    files: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> Json:
        """The data a create command prints."""
        cert = self.cert
        return {
            "subject": distinguished_name(cert.subject),
            "issuer": distinguished_name(cert.issuer),
            "thumbprint": sha1_thumbprint(cert),
            "notBeforeUtc": utc_iso(cert.not_valid_before_utc),
            "notAfterUtc": utc_iso(cert.not_valid_after_utc),
            "isCA": is_ca(cert),
            "files": self.files,
        }


def load_issuer(cert_data: bytes, cert_source: str, key_data: bytes, key_source: str) -> Issuer:
    """The CA whose key is given; the certificate file may hold its chain, in any order."""
    certs = load_certificates(cert_data, source=cert_source)
    key = load_private_key(key_data, source=key_source)
    own = [c for c in certs if key_belongs_to(key, c)]
    if not own:
        raise InvalidInput(
            f"{key_source}: the key does not belong to "
            + (
                f"the certificate '{subject_of(certs[0])}'"
                if len(certs) == 1
                else f"any of the {len(certs)} certificates"
            )
            + f" in {cert_source}",
            hint="pass the key file that was created together with the CA certificate",
        )
    ca = own[0]
    _require_can_sign(ca, cert_source)
    return Issuer(ca, key, tuple(_walk_up(ca, certs)), cert_source)


def _walk_up(ca: x509.Certificate, certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """The certificates above `ca` found in `certs`, followed by issuer name, nearest first (up to a root)."""
    above: list[x509.Certificate] = []
    current = ca
    while not is_self_signed(current):
        parent = next((c for c in certs if c.subject == current.issuer and c != current and c not in above), None)
        if parent is None:
            break
        above.append(parent)
        current = parent
    return above


def _require_can_sign(ca: x509.Certificate, source: str) -> None:
    """Refuse an issuer whose certificates no verifier would accept: not a CA, or keyUsage without keyCertSign."""
    if not is_ca(ca):
        raise InvalidInput(
            f"{source}: '{subject_of(ca)}' is not a CA certificate (no basicConstraints CA=true), so it cannot sign certificates",
            hint="sign with a root or intermediate made by `dpsctl cert create-root` or `create-intermediate`",
        )
    usage = extension(ca, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise InvalidInput(
            f"{source}: '{subject_of(ca)}' has a keyUsage without keyCertSign, so it cannot sign certificates"
        )


def _require_room_for_ca(issuer: Issuer) -> None:
    """A new intermediate must fit every path length limit above it (RFC 5280 pathLenConstraint)."""
    for below, ancestor in enumerate([issuer.cert, *issuer.above], start=1):
        constraints = extension(ancestor, x509.BasicConstraints)
        limit = constraints.path_length if constraints is not None else None
        if limit is not None and limit < below:
            raise InvalidInput(
                f"'{subject_of(ancestor)}' has path length limit {limit}: it allows {limit} CA certificate(s) below it,"
                f" and a new intermediate here would make {below}",
                hint=f"re-create '{subject_of(ancestor)}' with --path-length {below} or more, or sign with a CA higher up",
            )


# --------------------------------------------------------------------------- file names

MAX_BASE_NAME_BYTES = 200


def validate_base_name(name: str) -> str:
    """A file base name: no directory parts, so NAME.cert.pem always lands in --out; printable, and short enough.

    Control characters (ESC, newline) and bidirectional overrides would make the file name print as something
    else in `ls` and in dpsctl's own messages; 200 bytes leave room for the longest suffix (.fullchain.pem)
    within the 255 bytes of a file name on Linux and macOS file systems.
    """
    hint = "use letters, digits, '-', '.' and '_'; choose the directory with --out"
    if not name or name in (".", "..") or any(ch in name for ch in "/\\\0") or name.startswith("-"):
        raise InvalidInput(f"{name!r} cannot be used as a file name", hint=hint)
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise InvalidInput(
            f"{name!r} cannot be used as a file name: it holds a control, format or bidirectional character", hint=hint
        )
    if len(name.encode("utf-8")) > MAX_BASE_NAME_BYTES:
        raise InvalidInput(
            f"name {name[:40]!r}... is {len(name.encode('utf-8'))} bytes long; as a file name it may have at most {MAX_BASE_NAME_BYTES}",
            hint=hint,
        )
    return name


def _paths(out_dir: Path, name: str, parts: tuple[str, ...]) -> dict[str, Path]:
    """Target paths by role; all are checked before anything is written, so a refusal leaves no half set."""
    if not out_dir.is_dir():
        raise InvalidInput(f"output directory {out_dir} does not exist", hint="create it first, or pass another --out")
    suffix = {"certificate": "cert.pem", "key": "key.pem", "fullchain": "fullchain.pem"}
    return {part: out_dir / f"{name}.{suffix[part]}" for part in parts}


def _refuse_existing(paths: dict[str, Path], force: bool) -> None:
    if force:
        return
    existing = [str(p) for p in paths.values() if p.exists() or p.is_symlink()]
    if existing:
        raise Conflict(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}",
            hint="pass --force to overwrite, or choose another --out",
        )


def _write(
    paths: dict[str, Path], key: PrivateKey | None, certs: dict[str, list[x509.Certificate]], force: bool
) -> dict[str, str]:
    """Write the key first (0600 from its first byte), then the certificate files."""
    _refuse_existing(paths, force)
    if key is not None:
        write_private_key(paths["key"], key, force=force)
    for part, chain in certs.items():
        write_certificates(paths[part], chain, force=force)
    return {part: str(path) for part, path in paths.items()}


# --------------------------------------------------------------------------- create


def create_root(
    name: str,
    out_dir: Path,
    *,
    common_name: str | None,
    key_type: str,
    rsa_bits: int,
    days: int,
    path_length: int | None,
    force: bool,
) -> Created:
    """A self-signed root CA: NAME.cert.pem and NAME.key.pem."""
    paths = _paths(out_dir, validate_base_name(name), ("certificate", "key"))
    _refuse_existing(paths, force)
    cert, key = issuing.issue_root(
        common_name or name, key_type=key_type, rsa_bits=rsa_bits, days=days, path_length=path_length
    )
    return Created(cert, _write(paths, key, {"certificate": [cert]}, force))


def create_intermediate(
    name: str,
    issuer: Issuer,
    out_dir: Path,
    *,
    common_name: str | None,
    key_type: str,
    rsa_bits: int,
    days: int,
    path_length: int | None,
    force: bool,
    now: datetime,
) -> Created:
    """An intermediate CA: NAME.cert.pem, NAME.key.pem, and NAME.fullchain.pem (it, then the intermediates above it)."""
    paths = _paths(out_dir, validate_base_name(name), ("certificate", "key", "fullchain"))
    _refuse_existing(paths, force)
    _require_room_for_ca(issuer)
    cert, key = issuing.issue_intermediate(
        common_name or name,
        issuer.cert,
        issuer.key,
        key_type=key_type,
        rsa_bits=rsa_bits,
        days=days,
        path_length=path_length,
    )
    files = _write(paths, key, {"certificate": [cert], "fullchain": [cert, *issuer.intermediates]}, force)
    return Created(cert, files, _lifetime_warnings(cert, issuer, now))


def create_device(
    registration_id: str,
    issuer: Issuer | None,
    out_dir: Path,
    *,
    key_type: str,
    rsa_bits: int,
    days: int,
    force: bool,
    now: datetime,
) -> Created:
    """A device certificate (CN = registration ID): NAME.cert.pem, NAME.key.pem, NAME.fullchain.pem (leaf, then intermediates)."""
    from dpsctl.core.ids import MAX_X509_REGISTRATION_ID, validate_registration_id

    validate_registration_id(registration_id, max_length=MAX_X509_REGISTRATION_ID)
    paths = _paths(out_dir, validate_base_name(registration_id), ("certificate", "key", "fullchain"))
    _refuse_existing(paths, force)
    cert, key = issuing.issue_device(
        registration_id,
        issuer.cert if issuer else None,
        issuer.key if issuer else None,
        key_type=key_type,
        rsa_bits=rsa_bits,
        days=days,
    )
    chain = [cert, *(issuer.intermediates if issuer else [])]
    files = _write(paths, key, {"certificate": [cert], "fullchain": chain}, force)
    return Created(cert, files, _lifetime_warnings(cert, issuer, now) if issuer else [])


def create_verification(code: str, issuer: Issuer, out_dir: Path, *, name: str, days: int, force: bool) -> Created:
    """A proof-of-possession certificate (CN = code, signed by the CA key): NAME.cert.pem only; its own key is never needed."""
    paths = _paths(out_dir, validate_base_name(name), ("certificate",))
    _refuse_existing(paths, force)
    code = code.strip()
    cert = issuing.issue_verification(code, issuer.cert, issuer.key, days=days)
    return Created(cert, _write(paths, None, {"certificate": [cert]}, force))


def _lifetime_warnings(cert: x509.Certificate, issuer: Issuer | None, now: datetime) -> list[str]:
    """Warn when the issuer has expired, or will expire before the new certificate does."""
    if issuer is None:
        return []
    warnings = []
    for ca in (issuer.cert, *issuer.above):
        end = ca.not_valid_after_utc
        if end < now:
            warnings.append(f"'{subject_of(ca)}' expired on {utc_iso(end)}: the new certificate does not verify")
        elif end < cert.not_valid_after_utc:
            warnings.append(
                f"'{subject_of(ca)}' expires on {utc_iso(end)}, before this certificate: the chain stops verifying then"
            )
    return warnings


# --------------------------------------------------------------------------- writing PEM files


def write_private_key(path: Path, key: PrivateKey, *, force: bool = False) -> None:
    """Write the key as unencrypted PKCS#8 PEM, mode 0600 from the first byte; overwrite only with force."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_new_file(path, pem, mode=0o600, force=force, what="private key")


def write_certificates(path: Path, certs: list[x509.Certificate], *, force: bool = False) -> None:
    """Write the certificates as concatenated PEM in the given order, mode 0644; overwrite only with force."""
    if not certs:
        raise InvalidInput(f"{path}: no certificates to write")
    pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)
    _write_new_file(path, pem, mode=0o644, force=force, what="certificate file")


def _write_new_file(path: Path, content: bytes, *, mode: int, force: bool, what: str) -> None:
    """Create (or with force, truncate) a file with an exact mode set before any content is written."""
    # O_EXCL makes "does it exist?" and "create it" one step; O_NOFOLLOW stops a planted symlink from
    # redirecting a private key elsewhere.
    # --force renames a new file over the old one, so a planted link is replaced, never written through.
    try:
        if force:
            write_atomically(Path(path), content, mode=mode)
        else:
            write_new(Path(path), content, mode=mode)
    except FileExistsError:
        raise Conflict(f"{path}: {what} already exists", hint="pass --force to overwrite it") from None
    except OSError as error:
        raise os_error(error, path, f"write the {what}", InvalidInput) from None
