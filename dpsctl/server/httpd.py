"""The HTTPS front of `dpsctl serve`: the standard library's ThreadingHTTPServer, TLS per connection, one log line per request.

Why the standard library (docs/serve.md says more): it adds no dependency; a thread per connection fits a
store whose transactions are short and serialised anyway; and wrapping each accepted socket ourselves lets every
handshake use the trust store of that moment and hands the verified client chain straight to the engine.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from dpsctl import __version__
from dpsctl.core.clock import format_timestamp, utc_now
from dpsctl.core.errors import Conflict, InvalidInput
from dpsctl.server.api import (
    E_BAD_REQUEST,
    E_INTERNAL,
    E_TOO_LARGE,
    MAX_BODY_BYTES,
    ApiError,
    Emulator,
    Request,
    Response,
    error_response,
)
from dpsctl.server.tls import ClientTrust, describe_handshake_failure, peer_chain

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
STOP_GRACE = 5.0


class RequestLog:
    """One line per request on a stream (stderr), whole lines even when threads write at once."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self._lock = threading.Lock()

    def line(self, text: str, *, always: bool = False) -> None:
        """Write one line, control characters escaped so a client cannot forge log lines."""
        if self.quiet and not always:
            return
        clean = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
        stamp = format_timestamp(utc_now())[:23] + "Z"
        with self._lock:
            try:
                self.stream.write(f"{stamp} {clean}\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed stderr must not take a request down


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"dpsctl/{__version__}"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: DpsHttpServer

    def setup(self) -> None:
        super().setup()
        self.client_chain = peer_chain(self.connection)  # type: ignore[arg-type]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        """Silenced: `_dispatch` writes its own line per request."""

    def _dispatch(self) -> None:
        started = time.perf_counter()
        response: Response | None = None
        self.server.request_started()
        try:
            try:
                body = self._read_body()
            except ApiError as exc:
                self.close_connection = True  # the rest of the body is still on the wire
                response = error_response(exc)
            else:
                request = Request(self.command, self.path, self.headers, body, self.client_chain, self.headers.get("Host", ""))
                try:
                    response = self.server.app.handle(request)
                except Exception as exc:  # noqa: BLE001 - one bad request must not stop the server
                    if os.environ.get("DPSCTL_DEBUG"):
                        import traceback

                        traceback.print_exc()
                    response = error_response(ApiError(500, E_INTERNAL, f"unexpected {type(exc).__name__} in dpsctl serve (a bug; DPSCTL_DEBUG=1 prints the traceback)"))
            self._send(response)
        finally:
            self.server.request_finished()
            elapsed = (time.perf_counter() - started) * 1000
            path = self.path.split("?", 1)[0]
            if len(path) > 200:
                path = path[:200] + "..."
            if response is None:
                self.server.log.line(f"{self.client_address[0]} {self.command} {path} - {elapsed:.1f}ms connection lost")
            else:
                note = f" {response.note}" if response.note else ""
                self.server.log.line(f"{self.client_address[0]} {self.command} {path} {response.status} {elapsed:.1f}ms{note}")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise ApiError(400, E_BAD_REQUEST, f"Content-Length {raw!r} is not a number") from None
        if length < 0:
            raise ApiError(400, E_BAD_REQUEST, "Content-Length is negative")
        if length > MAX_BODY_BYTES:
            raise ApiError(413, E_TOO_LARGE, f"the body is {length} bytes; dpsctl serve takes at most {MAX_BODY_BYTES}")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ApiError(400, E_BAD_REQUEST, "malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                return bytes(out)
            if len(out) + size > MAX_BODY_BYTES:
                raise ApiError(413, E_TOO_LARGE, f"the body is larger than {MAX_BODY_BYTES} bytes")
            out += self.rfile.read(size)
            self.rfile.readline(1024)

    def _send(self, response: Response) -> None:
        payload = b"" if response.body is None else json.dumps(response.body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.send_response(response.status)
        if response.status != 204:
            # Node parses a body only when it is declared JSON.
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", response.headers.pop("x-ms-request-id", None) or _request_id())
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)


def _request_id() -> str:
    import uuid

    return str(uuid.uuid4())


class DpsHttpServer(ThreadingHTTPServer):
    """A thread per connection; TLS is wrapped in that thread, so a slow handshake never blocks accepting."""

    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up a stop
    request_queue_size = 128

    app: Emulator
    trust: ClientTrust
    ca: Path | None = None

    def __init__(self, address: tuple[str, int], log: RequestLog) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.log = log
        self._in_flight = 0
        self._idle = threading.Condition()
        self.requests = 0
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a machine without DNS.
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.trust.context().wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.log.line(f"{client_address[0]} TLS {describe_handshake_failure(exc, self.ca)}")
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError)):
            return  # the client went away mid-request: nothing to tell anyone
        self.log.line(f"{client_address[0]} connection error: {type(exc).__name__}: {exc}", always=True)
        if os.environ.get("DPSCTL_DEBUG"):
            super().handle_error(request, client_address)

    def request_started(self) -> None:
        with self._idle:
            self._in_flight += 1
            self.requests += 1

    def request_finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being answered; False when some still are after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


@dataclass
class Running:
    """A started server: its address, and how to stop it."""

    server: DpsHttpServer
    thread: threading.Thread
    host: str
    port: int
    stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> bool:
        """Stop accepting, let answers in progress finish (a few seconds at most), close; True when all finished."""
        if self.stopped.is_set():
            return True
        self.stopped.set()
        self.server.shutdown()
        finished = self.server.wait_idle(STOP_GRACE)
        self.server.server_close()
        self.thread.join(STOP_GRACE)
        return finished


def bind(host: str, port: int, log: RequestLog) -> DpsHttpServer:
    """Take the port first, before anything is written: a taken port or a bad host is a DpsError."""
    try:
        return DpsHttpServer((host, port), log)
    except OSError as exc:
        raise _bind_error(exc, host, port) from None


def launch(server: DpsHttpServer, app: Emulator, *, cert: Path, key: Path, ca: Path | None) -> Running:
    """Serve on a bound socket in a background thread."""
    server.app = app
    server.trust = ClientTrust(app.store, cert, key, app.read)
    server.ca = ca
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="dpsctl-serve", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    return Running(server, thread, str(host), int(port))


def start(app: Emulator, *, host: str, port: int, cert: Path, key: Path, ca: Path | None, log: RequestLog) -> Running:
    """Bind and serve in one step (in-process use and tests)."""
    return launch(bind(host, port, log), app, cert=cert, key=key, ca=ca)


def _bind_error(exc: OSError, host: str, port: int) -> Exception:
    if exc.errno == errno.EADDRINUSE:
        return Conflict(
            f"port {port} on {host} is already in use",
            hint=f"stop the process listening there (see `ss -ltnp 'sport = :{port}'`), or pass another --port",
        )
    if exc.errno == errno.EACCES:
        return InvalidInput(
            f"no permission to listen on port {port}",
            hint="ports below 1024 need root or CAP_NET_BIND_SERVICE; the default is 8443",
        )
    if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return InvalidInput(f"cannot listen on {host!r}: {exc.strerror or exc}", hint="use 127.0.0.1, localhost, ::1 or an address of this machine")
    return InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
