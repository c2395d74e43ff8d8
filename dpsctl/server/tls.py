"""TLS for `dpsctl serve`: a local development CA and server certificate, and the trust store for device certificates.

DPS authenticates X.509 devices by their TLS client certificate. Python's `ssl` accepts a client certificate
only when it chains to a trust anchor loaded in the context, so every connection gets a context whose anchors
are the certificates the store's enrollments name *now*: individual enrollments' device certificates, X.509
groups' signing certificates, and the verified CA certificates groups reference. The engine then decides,
exactly as for `dpsctl provision --cert`, with the chain the handshake verified.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

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
    from dpsctl.core import pki, x509

    now = now or datetime.now(timezone.utc)
    names = server_names(host)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create the TLS folder {folder}: {exc.strerror}", hint="pass --tls-cert and --tls-key") from None
    ca_path, ca_key_path = folder / "ca.pem", folder / "ca.key.pem"
    cert_path, key_path = folder / "server.pem", folder / "server.key.pem"
    created = False
    if ca_path.exists() and ca_key_path.exists():
        ca_cert = x509.load_certificates(ca_path.read_bytes(), source=str(ca_path))[0]
        ca_key = x509.load_private_key(ca_key_path.read_bytes(), source=str(ca_key_path))
    else:
        ca_cert, ca_key = pki.create_root(CA_NAME, days=3650)
        pki.write_private_key(ca_key_path, ca_key, force=True)
        pki.write_certificates(ca_path, [ca_cert], force=True)
        created = True
    if created or not _server_cert_fits(cert_path, key_path, ca_cert, names, now):
        cert, key = _make_server_cert(ca_cert, ca_key, names, now)
        pki.write_private_key(key_path, key, force=True)
        pki.write_certificates(cert_path, [cert, ca_cert], force=True)
        created = True
    return TlsFiles(cert_path, key_path, ca_path, created)


def _server_cert_fits(cert_path: Path, key_path: Path, ca_cert: Any, names: list[str], now: datetime) -> bool:
    from cryptography import x509 as cx509

    from dpsctl.core import x509

    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        certs = x509.load_certificates(cert_path.read_bytes(), source=str(cert_path))
        x509.load_private_key(key_path.read_bytes(), source=str(key_path))
    except DpsError:
        return False
    cert = certs[0]
    if cert.issuer != ca_cert.subject or cert.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    try:
        san = cert.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
    except cx509.ExtensionNotFound:
        return False
    have = {n.lower() for n in san.get_values_for_type(cx509.DNSName)} | {str(ip) for ip in san.get_values_for_type(cx509.IPAddress)}
    return all(_san_value(name) in have for name in names)


def _san_value(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def _make_server_cert(ca_cert: Any, ca_key: Any, names: list[str], now: datetime) -> tuple[Any, Any]:
    """A TLS server certificate for `names` (DNS names and IP addresses), issued by the development CA."""
    import secrets

    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from dpsctl.core import pki

    key = pki.new_private_key("ec")
    alt: list[cx509.GeneralName] = []
    for name in names:
        try:
            alt.append(cx509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(cx509.DNSName(name))
    ca_ski = ca_cert.extensions.get_extension_for_class(cx509.SubjectKeyIdentifier).value
    builder = (
        cx509.CertificateBuilder()
        .subject_name(cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(128) or 1)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(cx509.SubjectAlternativeName(alt), critical=False)
        .add_extension(cx509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            cx509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(cx509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(cx509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(cx509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256()), key


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


# --------------------------------------------------------------------------- device certificates


def trusted_certificates(tx: Any) -> list[str]:
    """PEM of every certificate an X.509 device may chain to, as the enrollments stand in this transaction."""
    pems: set[str] = set()
    for doc in tx.scan("enrollments"):
        attestation = doc.get("attestation") or {}
        if attestation.get("type") == "x509":
            certs = (attestation.get("x509") or {}).get("clientCertificates") or {}
            pems.update(c["certificate"] for c in certs.values() if isinstance(c, dict) and c.get("certificate"))
    for doc in tx.find("groups", "attestation", "x509"):
        x509 = doc["attestation"].get("x509") or {}
        certs = x509.get("signingCertificates") or {}
        pems.update(c["certificate"] for c in certs.values() if isinstance(c, dict) and c.get("certificate"))
        for name in (x509.get("caReferences") or {}).values():
            ca = tx.get("cas", name) if isinstance(name, str) and name else None
            # Only a CA whose possession was proven may admit devices (DPS refuses the others too).
            if ca is not None and ca.get("isVerified"):
                pems.add(ca["certificate"])
    return sorted(pems)


def _store_stamp(store: Any) -> tuple[Any, ...] | None:
    """The store's change counters of what the trust anchors come from, whoever wrote them (None: unknown now)."""
    try:
        return store.change_stamp(("enrollments", "groups", "cas"))
    except DpsError:
        return None  # the store is unreachable or busy: read it, which keeps the last trust if that fails too


class ClientTrust:
    """Hands out the SSL context for each new connection, its trust anchors following the store's enrollments.

    The anchors are re-read when the store says enrollments, groups or CAs changed (Store.change_stamp, asked per
    connection, counts the commits of every process) and the context is rebuilt only when the set of certificates
    differs, so connections of symmetric-key devices pay almost nothing.
    """

    def __init__(self, store: Any, cert: Path, key: Path, read: Any) -> None:
        self._store = store
        self._cert = str(cert)
        self._key = str(key)
        self._read = read  # a context manager giving a read transaction (the emulator's, which serialises memory stores)
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._read_at = 0.0
        self._digest: str | None = None
        self._context = self._build([])
        self.anchors = 0

    def context(self) -> ssl.SSLContext:
        """The context to wrap a new connection with."""
        stamp = _store_stamp(self._store)
        with self._lock:
            fresh = time.monotonic() - self._read_at < TRUST_MAX_AGE
            if stamp is not None and stamp == self._stamp and fresh:
                return self._context
            try:
                with self._read() as tx:
                    pems = trusted_certificates(tx)
            except DpsError:
                return self._context  # the store is busy: keep the last trust rather than refuse the device
            digest = hashlib.sha256("\n".join(pems).encode()).hexdigest()
            if digest != self._digest:
                self._context = self._build(pems)
                self._digest = digest
                self.anchors = len(pems)
            self._stamp = stamp
            self._read_at = time.monotonic()
            return self._context

    def _build(self, pems: list[str]) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # the Python device SDK speaks TLS 1.2 only
        context.load_cert_chain(self._cert, self._key)
        # Ask every client for a certificate; symmetric-key and TPM devices simply send none.
        context.verify_mode = ssl.CERT_OPTIONAL
        # An enrolled intermediate or device certificate is an anchor by itself: no need for its root.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        for pem in pems:
            try:
                context.load_verify_locations(cadata=pem)
            except ssl.SSLError:
                continue  # a certificate OpenSSL cannot load cannot admit anyone; the others still do
        return context


def peer_chain(sock: ssl.SSLSocket) -> tuple[Any, ...]:
    """The client's certificate chain as the handshake verified it (leaf first), parsed; () without one."""
    from cryptography import x509 as cx509

    leaf = sock.getpeercert(binary_form=True)
    if not leaf:
        return ()
    ders: list[bytes] = []
    getter = getattr(sock, "get_verified_chain", None) or getattr(getattr(sock, "_sslobj", None), "get_verified_chain", None)
    if getter is not None:
        try:
            for cert in getter() or []:
                ders.append(cert if isinstance(cert, bytes) else cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
        except (AttributeError, ValueError, ssl.SSLError):
            ders = []
    if not ders or ders[0] != leaf:
        ders = [leaf]
    try:
        return tuple(cx509.load_der_x509_certificate(der) for der in ders)
    except ValueError:
        return ()  # a certificate OpenSSL took but cryptography cannot read: the device presents nothing usable


def describe_handshake_failure(exc: BaseException, ca: Path | None) -> str:
    """One line saying why a TLS handshake failed, in the terms of what the user should fix."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "client certificate refused: it is not enrolled, and no enrolled signing certificate or verified CA issued it"
    if "UNKNOWN_CA" in text or "BAD_CERTIFICATE" in text or "CERTIFICATE_UNKNOWN" in text:
        trust = f" (trust {ca})" if ca else ""
        return f"the client does not trust the server certificate{trust}"
    if "WRONG_VERSION_NUMBER" in text or "HTTP_REQUEST" in text:
        return "the client did not speak TLS (use https://)"
    if isinstance(exc, TimeoutError):
        return "the client sent no TLS handshake in time"
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
    return f"TLS handshake failed: {reason}"
