"""The HTTPS front end: HTTP/1.1 by h11 (strict framing), the body limit enforced while reading, one log line per
request, and the WebSocket upgrade at `/$iothub/websocket` handed to the MQTT session.

h11 refuses what hand-written parsers let through: a Content-Length that is not digits, two different ones,
a Transfer-Encoding other than chunked, malformed chunk sizes. A request carrying both Content-Length and
Transfer-Encoding (the request-smuggling pattern) is refused here. Bytes that are not HTTP at all (an MQTT
CONNECT, an AMQP header) get one log line naming what arrived, and the connection is closed at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import h11

from dpsctl import __version__
from dpsctl.core.errors import DpsError
from dpsctl.server.errors import E_BAD_REQUEST, E_INTERNAL, E_TOO_LARGE, Refusal, refusal_for
from dpsctl.server.http_api import WEBSOCKET_PATH, HttpApi, refusal_response
from dpsctl.server.http_types import HttpRequest, HttpResponse
from dpsctl.server.listener import Peer, Server

MAX_BODY_BYTES = 4 * 1024 * 1024  # the service API (bulk operations, enrollment groups with certificates)
MAX_DEVICE_BODY_BYTES = 96 * 1024  # the device API's documented message limit
MAX_HEAD_BYTES = 16 * 1024
READ_SIZE = 64 * 1024
SERVER_NAME = f"dpsctl/{__version__}".encode()

# Takes over a connection whose request asked for the WebSocket upgrade: (server, peer, the raw request bytes).
WebSocketHandler = Callable[[Server, Peer, bytes], Coroutine[Any, Any, None]]


def what_arrived(data: bytes) -> str | None:
    """None for what looks like HTTP; else a name for the protocol that arrived instead."""
    if not data:
        return None
    if data[0] == 0x10:
        return "an MQTT CONNECT"
    if data.startswith(b"AMQP"):
        return "an AMQP protocol header"
    if data[:1].isalpha():
        return None
    return f"bytes that are not HTTP (0x{data[:8].hex()})"


class HttpsConnection:
    """One client connection: requests answered in order until either side closes."""

    def __init__(
        self, server: Server, peer: Peer, api: HttpApi, mqtt_port: int | None, websocket: WebSocketHandler | None
    ) -> None:
        self.server = server
        self.peer = peer
        self.api = api
        self.mqtt_port = mqtt_port
        self.websocket = websocket
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.raw_head = bytearray()  # the bytes of the current request's head, for a WebSocket hand-over

    async def serve(self) -> None:
        """Answer requests until the connection closes."""
        limits = self.server.limits
        first = await _read(self.peer, limits.header_timeout)
        other = what_arrived(first)
        if other is not None:
            hint = f" (MQTT is on port {self.mqtt_port})" if "MQTT" in other and self.mqtt_port else ""
            self.server.log.line(f"{self.peer.address} HTTPS port got {other}{hint}: connection closed")
            return
        pending = first
        while True:
            started = time.perf_counter()
            try:
                request = await self._read_request(pending, started)
            except _Closed:
                return
            except Refusal as refusal:
                self._log("-", "-", refusal_response(refusal), started)
                await self._send(refusal_response(refusal), close=True)
                return
            pending = b""
            if request is None:
                return
            if (
                request.method == "GET"
                and urlsplit(request.target).path == WEBSOCKET_PATH
                and _wants_websocket(request)
                and self.websocket is not None
            ):
                self.server.log.line(f"{self.peer.address} GET {WEBSOCKET_PATH} 101 WebSocket upgrade (MQTT)")
                await self.websocket(self.server, self.peer, bytes(self.raw_head))
                return
            response = await self._answer(request)
            self.server.count_request()
            close = self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE
            self._log(
                request.method, request.target, response, started
            )  # before the send: a client never outruns its line
            await self._send(response, close=close, head_only=request.method == "HEAD")
            if self.conn.our_state is h11.MUST_CLOSE or close:
                return
            try:
                self.conn.start_next_cycle()
            except h11.LocalProtocolError:
                return
            self.raw_head.clear()

    async def _read_request(self, pending: bytes, started: float) -> HttpRequest | None:
        limits = self.server.limits
        deadline = time.monotonic() + limits.request_timeout
        first_wait = limits.idle_timeout if not pending and self.conn.their_state is h11.IDLE else limits.header_timeout
        head: h11.Request | None = None
        body = bytearray()
        limit = MAX_BODY_BYTES
        data = pending
        waited_first = False
        while True:
            if data:
                if head is None:
                    self.raw_head += data
                self.conn.receive_data(data)
                data = b""
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise Refusal(
                    exc.error_status_hint,
                    E_BAD_REQUEST if exc.error_status_hint != 413 else E_TOO_LARGE,
                    f"malformed HTTP request: {exc}",
                ) from None
            if event is h11.NEED_DATA:
                timeout = (
                    first_wait
                    if not waited_first and head is None and not self.raw_head
                    else deadline - time.monotonic()
                )
                waited_first = True
                if timeout <= 0:
                    raise Refusal(408, E_BAD_REQUEST, f"the request took longer than {limits.request_timeout:g} s")
                data = await _read(self.peer, timeout, idle_ok=head is None and not self.raw_head)
                if not data:
                    if head is None and not self.raw_head:
                        raise _Closed
                    self.conn.receive_data(b"")
                continue
            if isinstance(event, h11.Request):
                head = event
                if event.http_version not in (b"1.0", b"1.1"):
                    raise Refusal(
                        505,
                        E_BAD_REQUEST,
                        f"HTTP/{event.http_version.decode()} is not spoken here",
                        hint="use HTTP/1.1",
                    )
                if (
                    len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers)
                    > MAX_HEAD_BYTES
                ):
                    raise Refusal(431, E_BAD_REQUEST, f"the request head is larger than {MAX_HEAD_BYTES} bytes")
                limit = _body_limit(event)
                declared = _declared_length(event)
                if declared is not None and declared > limit:
                    raise Refusal(
                        413, E_TOO_LARGE, f"the body is {declared} bytes; this endpoint takes at most {limit}"
                    )
                if _wants_websocket_head(event):
                    return _to_request(event, b"", self.peer)
                continue
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > limit:
                    raise Refusal(413, E_TOO_LARGE, f"the body is larger than {limit} bytes")
                continue
            if isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _to_request(head, bytes(body), self.peer)
            if isinstance(event, h11.ConnectionClosed):
                raise _Closed
            raise _Closed

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        try:
            return await self.server.blocking(lambda: self.api.handle(request))
        except DpsError as exc:  # the pool is saturated, or the request waited too long for it
            return refusal_response(refusal_for(exc))
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the server
            if os.environ.get("DPSCTL_DEBUG"):
                traceback.print_exc()
            return refusal_response(
                Refusal(
                    500,
                    E_INTERNAL,
                    f"unexpected {type(exc).__name__} in dpsctl serve (a bug; DPSCTL_DEBUG=1 prints the traceback)",
                )
            )

    async def _send(self, response: HttpResponse, *, close: bool, head_only: bool = False) -> None:
        payload = (
            b""
            if response.body is None
            else json.dumps(response.body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        )
        headers: list[tuple[bytes, bytes]] = [(b"Server", SERVER_NAME)]
        if response.status != 204:
            # Node parses a body only when it is declared JSON.
            headers += [
                (b"Content-Type", b"application/json; charset=utf-8"),
                (b"Content-Length", str(len(payload)).encode()),
            ]
        headers.append(
            (b"x-ms-request-id", (response.headers.pop("x-ms-request-id", None) or str(uuid.uuid4())).encode())
        )
        headers += [(name.encode(), value.encode()) for name, value in response.headers.items()]
        if close:
            headers.append((b"Connection", b"close"))
        try:
            out = self.conn.send(h11.Response(status_code=response.status, headers=headers))
            if payload and not head_only and response.status != 204:
                out += self.conn.send(h11.Data(data=payload))
            out += self.conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # The request was too broken for h11 to answer in its state: write a minimal response by hand.
            out = (
                f"HTTP/1.1 {response.status} Error\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
        self.peer.writer.write(out)
        await self.peer.writer.drain()

    def _log(self, method: str, target: str, response: HttpResponse, started: float) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        path = target.split("?", 1)[0]
        if len(path) > 200:
            path = path[:200] + "..."
        note = f" {response.note}" if response.note else ""
        self.server.log.line(f"{self.peer.address} {method} {path} {response.status} {elapsed:.1f}ms{note}")


class _Closed(Exception):
    """The client closed the connection between requests."""


async def serve_https(
    server: Server, peer: Peer, api: HttpApi, mqtt_port: int | None, websocket: WebSocketHandler | None
) -> None:
    """Serve one HTTPS connection."""
    await HttpsConnection(server, peer, api, mqtt_port, websocket).serve()


async def _read(peer: Peer, timeout: float, *, idle_ok: bool = False) -> bytes:
    try:
        return await asyncio.wait_for(peer.reader.read(READ_SIZE), max(0.001, timeout))
    except TimeoutError:
        if idle_ok:
            return b""
        raise Refusal(408, E_BAD_REQUEST, f"the request did not arrive within {timeout:.0f} s") from None


def _body_limit(head: h11.Request) -> int:
    """The device API takes 96 KB (DPS's documented limit); the service API 4 MiB."""
    path = urlsplit(head.target.decode("latin-1")).path
    segments = [s for s in path.split("/") if s]
    if (
        len(segments) >= 3
        and segments[1].lower() == "registrations"
        and segments[0].lower() not in ("enrollments", "enrollmentgroups", "registrations")
    ):
        return MAX_DEVICE_BODY_BYTES
    return MAX_BODY_BYTES


def _declared_length(head: h11.Request) -> int | None:
    lengths = {value for name, value in head.headers if name == b"content-length"}
    encodings = [value for name, value in head.headers if name == b"transfer-encoding"]
    if lengths and encodings:
        raise Refusal(
            400,
            E_BAD_REQUEST,
            "the request has both Content-Length and Transfer-Encoding",
            hint="send one of them (RFC 9112 §6.1)",
        )
    return int(next(iter(lengths))) if lengths else None


def _wants_websocket_head(head: h11.Request) -> bool:
    upgrade = [value.lower() for name, value in head.headers if name == b"upgrade"]
    return head.method == b"GET" and b"websocket" in upgrade


def _wants_websocket(request: HttpRequest) -> bool:
    return (request.header("Upgrade") or "").lower() == "websocket"


def _to_request(head: h11.Request, body: bytes, peer: Peer) -> HttpRequest:
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return HttpRequest(
        head.method.decode("ascii"), head.target.decode("latin-1"), headers, body, peer.chain, headers.get("host", "")
    )
