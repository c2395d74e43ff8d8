"""Server-side TLS over an accepted asyncio connection, by pyOpenSSL over memory BIOs.

Why not the standard library's `ssl`: it verifies a client certificate during the handshake and fails the
handshake when it chains to nothing it trusts, so a device whose certificate matches no enrollment would see a
TLS error where DPS answers `401` with its error body (and the SDKs react differently to the two). pyOpenSSL's
verify callback lets the handshake accept any client certificate: TLS still proves that the client holds the
leaf's private key, and the engine then judges the chain against the enrollments of that moment, exactly as
`dpsctl provision --cert` does, and refuses in DPS's terms.

Reading is pull-based (bytes are read from the socket only when the protocol code asks for more), so a client
that sends faster than it is served cannot make the server buffer without bound.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cryptography.x509 import Certificate
from OpenSSL import SSL

READ_SIZE = 64 * 1024


def server_context(cert: Path, key: Path) -> SSL.Context:
    """The one TLS context of a server: its certificate, TLS 1.2 or newer, and a client certificate asked for, never judged."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)  # the Python device SDK speaks TLS 1.2 only
    context.use_certificate_chain_file(str(cert))
    context.use_privatekey_file(str(key))
    context.check_privatekey()
    # Ask every client for a certificate and accept whatever it sends (or none): the engine judges it.
    context.set_verify(SSL.VERIFY_PEER, _accept_any)
    context.set_session_id(b"dpsctl-serve")
    return context


def _accept_any(_connection: SSL.Connection, _cert: Any, _errno: int, _depth: int, _ok: int) -> bool:
    return True


class TlsError(Exception):
    """The TLS handshake or a record failed; the message says how, in OpenSSL's words."""


class TlsConnection:
    """One server-side TLS connection over a plain asyncio stream pair: `read`, `readexactly`, `write`, `drain`."""

    def __init__(
        self, context: SSL.Context, raw_reader: asyncio.StreamReader, raw_writer: asyncio.StreamWriter
    ) -> None:
        self._tls = SSL.Connection(context, None)
        self._tls.set_accept_state()
        self._raw_reader = raw_reader
        self._raw_writer = raw_writer
        self._plain = bytearray()
        self._eof = False
        self._outgoing = bytearray()  # plaintext queued by write_soon, not yet encrypted
        self._waiting = False  # True while a read waits for the client's next bytes

    # -- the handshake and the client's chain

    async def handshake(self) -> None:
        """Complete the server side of the handshake."""
        while True:
            try:
                self._tls.do_handshake()
                self._flush()
                return
            except SSL.WantReadError:
                self._flush()
                data = await self._raw_reader.read(READ_SIZE)
                if not data:
                    raise ConnectionResetError("the client closed the connection during the TLS handshake") from None
                self._tls.bio_write(data)
            except SSL.Error as exc:
                self._flush()  # the alert, so that the client learns why
                raise TlsError(_describe(exc)) from None

    def client_chain(self) -> tuple[Certificate, ...]:
        """The certificates the client sent, leaf first (empty without a client certificate)."""
        leaf = self._tls.get_peer_certificate()
        if leaf is None:
            return ()
        certificates = [leaf.to_cryptography()]
        for cert in self._tls.get_peer_cert_chain() or []:
            parsed = cert.to_cryptography()
            if parsed not in certificates:
                certificates.append(parsed)
        return tuple(certificates)

    # -- reading

    @property
    def buffered(self) -> int:
        """Plaintext bytes already decrypted and not yet read (a read of at most this many does not wait)."""
        return len(self._plain)

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes of plaintext (b"" at the end)."""
        if not self._plain and not self._eof:
            await self._fill()
        size = len(self._plain) if n < 0 else min(n, len(self._plain))
        chunk = bytes(self._plain[:size])
        del self._plain[:size]
        return chunk

    def take(self, n: int) -> bytes:
        """`n` bytes already decrypted (at most `buffered`), without waiting."""
        chunk = bytes(self._plain[:n])
        del self._plain[:n]
        return chunk

    async def readexactly(self, n: int) -> bytes:
        """Exactly `n` bytes, or asyncio.IncompleteReadError at the end."""
        while len(self._plain) < n:
            if self._eof:
                partial = bytes(self._plain)
                self._plain.clear()
                raise asyncio.IncompleteReadError(partial, n)
            await self._fill()
        chunk = bytes(self._plain[:n])
        del self._plain[:n]
        return chunk

    async def _fill(self) -> None:
        """Decrypt at least one more byte, or note the end of the stream."""
        while True:
            try:
                self._plain += self._tls.recv(READ_SIZE)
                return
            except SSL.WantReadError:
                self._flush()
            except SSL.ZeroReturnError:
                self._eof = True
                return
            except SSL.SysCallError:
                self._eof = True
                return
            except SSL.Error as exc:
                self._eof = True
                raise TlsError(_describe(exc)) from None
            self.push()  # about to wait for the client: what it should see first goes out now
            self._waiting = True
            try:
                data = await self._raw_reader.read(READ_SIZE)
            finally:
                self._waiting = False
            if not data:
                self._eof = True
                return
            self._tls.bio_write(data)

    # -- writing

    def write(self, data: bytes) -> None:
        """Encrypt and queue `data`."""
        view = memoryview(data)
        while view:
            sent = self._tls.send(view)
            view = view[sent:]
        self._flush()

    def write_soon(self, data: bytes) -> None:
        """Queue `data`: sent at once while a read waits for the client, otherwise just before a read next waits.

        The answers to packets that arrived together (an MQTT client's CONNECT, SUBSCRIBE and PUBLISH) then leave in
        one TLS record and one socket write instead of one each: on loopback every send costs the sender the
        receiver's TCP work too.
        """
        self._outgoing += data
        if self._waiting:
            self.push()

    def push(self) -> None:
        """Encrypt and send what write_soon queued."""
        if self._outgoing:
            data = bytes(self._outgoing)
            self._outgoing.clear()
            self.write(data)

    async def drain(self) -> None:
        """Wait until the socket's buffer has room."""
        await self._raw_writer.drain()

    def _flush(self) -> None:
        while True:
            try:
                out = self._tls.bio_read(READ_SIZE)
            except SSL.WantReadError:
                return
            if not out:
                return
            self._raw_writer.write(out)

    # -- what the connection code asks of a writer

    @property
    def transport(self) -> asyncio.BaseTransport:
        """The socket's transport (to abort the connection)."""
        return self._raw_writer.transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """As StreamWriter.get_extra_info, for the socket."""
        return self._raw_writer.get_extra_info(name, default)


def _describe(exc: SSL.Error) -> str:
    reasons = [
        str(part[2]) for part in (exc.args[0] if exc.args and isinstance(exc.args[0], list) else []) if len(part) > 2
    ]
    return "; ".join(reasons) or type(exc).__name__
