"""MQTT over WebSockets: the upgrade at `/$iothub/websocket` (subprotocol `mqtt`), framed by wsproto, handed to
the same MQTT session code as MQTT over TLS (the SDKs' `websockets=True` / `MqttWs` options, on port 443).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from cryptography.x509 import Certificate
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection, Request, TextMessage
from wsproto.utilities import RemoteProtocolError

from dpsctl.server.listener import Peer, Server
from dpsctl.server.mqtt import MAX_PACKET_BYTES, ByteStream

READ_SIZE = 64 * 1024
SUBPROTOCOL = "mqtt"

SessionRunner = Callable[[ByteStream, str, tuple[Certificate, ...]], Coroutine[Any, Any, None]]


class WebSocketStream:
    """The binary payload of a WebSocket as a ByteStream: what MQTT reads and writes."""

    def __init__(self, peer: Peer, ws: WSConnection) -> None:
        self.peer = peer
        self.ws = ws
        self._buffer = bytearray()
        self._closed = False

    async def read_exactly(self, count: int, timeout: float | None) -> bytes:
        """`count` bytes of message payload, however the client split them into frames."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while len(self._buffer) < count:
            if self._closed:
                raise asyncio.IncompleteReadError(bytes(self._buffer), count)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(self.peer.reader.read(READ_SIZE), remaining)
            if not data:
                self._closed = True
                continue
            await self._receive(data)
        chunk = bytes(self._buffer[:count])
        del self._buffer[:count]
        return chunk

    async def _receive(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, BytesMessage):
                    self._buffer += event.data
                    if len(self._buffer) > 2 * MAX_PACKET_BYTES:
                        self._closed = True  # more than a session may have unread: MQTT refuses the packet anyway
                elif isinstance(event, Ping):
                    await self._write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    await self._write(self.ws.send(event.response()))
                    self._closed = True
                elif isinstance(event, TextMessage):
                    self._closed = True  # MQTT over WebSockets is binary only (MQTT 3.1.1 §6)
        except RemoteProtocolError:
            self._closed = True

    async def send(self, data: bytes) -> None:
        """One MQTT packet as one binary message."""
        await self._write(self.ws.send(BytesMessage(data=data)))

    def flush(self) -> None:
        """Nothing queued: each message is written at once."""

    async def _write(self, data: bytes) -> None:
        self.peer.writer.write(data)
        await self.peer.writer.drain()


async def serve_websocket(server: Server, peer: Peer, raw_request: bytes, run_session: SessionRunner) -> None:
    """Complete the upgrade (or refuse it) and run an MQTT session over the WebSocket."""
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(raw_request)
        request = next((event for event in ws.events() if isinstance(event, Request)), None)
    except RemoteProtocolError as exc:
        server.log.line(f"{peer.address} WebSocket upgrade refused: {exc}")
        return
    if request is None:
        return
    if SUBPROTOCOL not in [p.lower() for p in request.subprotocols]:
        peer.writer.write(ws.send(RejectConnection(status_code=400, headers=[(b"content-length", b"0")])))
        await peer.writer.drain()
        server.log.line(
            f"{peer.address} WebSocket upgrade refused: no 'mqtt' subprotocol (offered {request.subprotocols})"
        )
        return
    peer.writer.write(ws.send(AcceptConnection(subprotocol=SUBPROTOCOL)))
    await peer.writer.drain()
    await run_session(WebSocketStream(peer, ws), peer.address, peer.chain)
