"""TLS material for `dpsctl serve`: a local development CA and server certificate, and handshake failures in words.

Client certificates are not judged here: the handshake accepts any (tls_stream.py) and the engine decides
with the chain the device sent, as for `dpsctl provision --cert`.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509 as cx509

from dpsctl.core.certs import (
    issue_root,
    issue_server,
    load_certificates,
    load_private_key,
    write_certificates,
    write_private_key,
)
from dpsctl.core.errors import DpsError, InvalidInput

DEV_FOLDER = "dpsctl-serve"
CA_NAME = "dpsctl serve local development CA"
SERVER_DAYS = 397
RENEW_BEFORE = timedelta(days=30)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
# A store stamp can miss a change made within one file-time tick with an unchanged size; never trust it longer.
TRUST_MAX_AGE = 2.0


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate (leaf first, then its CA) and key, and the CA file clients must trust."""

    cert: Path
    key: Path
    ca: Path | None  # None: the user brought the certificate, and knows its issuer
    created: bool = False


def server_names(host: str) -> list[str]:
    """The names the server certificate must carry: loopback, plus the listening host when it is specific."""
    names = list(LOOPBACK_NAMES)
    if host not in WILDCARD_HOSTS and host.lower() not in names:
        names.append(host.lower())
    return names


def dev_tls(folder: Path, host: str, now: datetime | None = None) -> TlsFiles:
    """The development CA and server certificate in `folder`: made once, the server certificate renewed when needed.

    The CA is kept across runs (clients trust it once); the server certificate is made again when it expires
    within 30 days, lacks a name the server is reached by, or was not issued by this CA.
    """

    now = now or datetime.now(UTC)
    names = server_names(host)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(
            f"cannot create the TLS folder {folder}: {exc.strerror}", hint="pass --tls-cert and --tls-key"
        ) from None
    ca_path, ca_key_path = folder / "ca.pem", folder / "ca.key.pem"
    cert_path, key_path = folder / "server.pem", folder / "server.key.pem"
    created = False
    if ca_path.exists() and ca_key_path.exists():
        ca_cert = load_certificates(ca_path.read_bytes(), source=str(ca_path))[0]
        ca_key = load_private_key(ca_key_path.read_bytes(), source=str(ca_key_path))
    else:
        ca_cert, ca_key = issue_root(CA_NAME, days=3650)
        write_private_key(ca_key_path, ca_key, force=True)
        write_certificates(ca_path, [ca_cert], force=True)
        created = True
    if created or not _server_cert_fits(cert_path, key_path, ca_cert, names, now):
        cert, key = issue_server(names, ca_cert, ca_key, now, days=SERVER_DAYS)
        write_private_key(key_path, key, force=True)
        write_certificates(cert_path, [cert, ca_cert], force=True)
        created = True
    return TlsFiles(cert_path, key_path, ca_path, created)


def _server_cert_fits(cert_path: Path, key_path: Path, ca_cert: Any, names: list[str], now: datetime) -> bool:

    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        certs = load_certificates(cert_path.read_bytes(), source=str(cert_path))
        load_private_key(key_path.read_bytes(), source=str(key_path))
    except DpsError:
        return False
    cert = certs[0]
    if cert.issuer != ca_cert.subject or cert.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    try:
        san = cert.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
    except cx509.ExtensionNotFound:
        return False
    have = {n.lower() for n in san.get_values_for_type(cx509.DNSName)} | {
        str(ip) for ip in san.get_values_for_type(cx509.IPAddress)
    }
    return all(_san_value(name) in have for name in names)


def _san_value(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def check_server_files(cert: Path, key: Path) -> None:
    """A certificate and key given with --tls-cert/--tls-key must load together."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise InvalidInput(f"{exc.filename} does not exist") from None
    except (ssl.SSLError, OSError) as exc:
        raise InvalidInput(
            f"cannot use {cert} and {key} as the server certificate and key: {getattr(exc, 'reason', None) or exc}",
            hint="give a PEM certificate (chain) and its unencrypted PEM private key",
        ) from None


def describe_handshake_failure(exc: BaseException, ca: Path | None) -> str:
    """One line saying why a TLS handshake failed, in the terms of what the user should fix."""
    text = str(exc).upper().replace(" ", "_")
    if "UNKNOWN_CA" in text or "BAD_CERTIFICATE" in text or "CERTIFICATE_UNKNOWN" in text:
        trust = f" (trust {ca})" if ca else ""
        return f"the client does not trust the server certificate{trust}"
    if "WRONG_VERSION_NUMBER" in text or "HTTP_REQUEST" in text:
        return "the client did not speak TLS (use https://)"
    if isinstance(exc, TimeoutError):
        return "the client sent no TLS handshake in time"
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
    return f"TLS handshake failed: {reason}"
