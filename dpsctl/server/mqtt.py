"""The MQTT front end: DPS's device API over MQTT 3.1.1 (reference §3), on TLS or inside a WebSocket.

DPS is not a general broker, and neither is this: a device connects as its registration ID, subscribes to
`$dps/registrations/res/#`, publishes register and operation-status requests, and gets each answer published
back on `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`, the HTTP status reused as DPS does.
Packets are decoded and encoded by amqtt's packet classes; this module adds the limits (packet size,
deadlines, keep-alive) and the DPS rules (topics, client ID, username) around them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from amqtt.adapters import ReaderAdapter
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBLISH,
    SUBSCRIBE,
    UNSUBSCRIBE,
    MQTTFixedHeader,
    MQTTPacket,
)
from amqtt.mqtt.pingreq import PingReqPacket
from amqtt.mqtt.pingresp import PingRespPacket
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsuback import UnsubackPacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from cryptography.x509 import Certificate

from dpsctl.core.errors import DpsError
from dpsctl.server.device_service import DeviceReply, DeviceService, Presented
from dpsctl.server.errors import E_BAD_REQUEST, E_INTERNAL, E_NO_RESOURCE, Refusal, error_body, refusal_for
from dpsctl.server.listener import Peer, Server
from dpsctl.server.tls_stream import TlsError

MAX_PACKET_BYTES = 128 * 1024  # a 96 KB registration body, its topic and headers
RESPONSE_FILTER = "$dps/registrations/res/#"
TOPIC_PREFIX = "$dps/registrations/"
REGISTER = "$dps/registrations/PUT/iotdps-register/"
OPERATION_STATUS = "$dps/registrations/GET/iotdps-get-operationstatus/"
MAX_IN_FLIGHT = 8  # requests one session may have running at once

# CONNACK return codes (MQTT 3.1.1 §3.2.2.3)
ACCEPTED, BAD_PROTOCOL, IDENTIFIER_REJECTED, BAD_CREDENTIALS = 0, 1, 2, 4

PACKETS: dict[int, type[MQTTPacket[Any, Any, Any]]] = {
    CONNECT: ConnectPacket,
    PUBLISH: PublishPacket,
    PUBACK: PubackPacket,
    SUBSCRIBE: SubscribePacket,
    UNSUBSCRIBE: UnsubscribePacket,
    PINGREQ: PingReqPacket,
    DISCONNECT: DisconnectPacket,
}
# Fixed-header flags MQTT 3.1.1 requires (§2.2.2); PUBLISH's carry DUP, QoS and RETAIN.
REQUIRED_FLAGS = {CONNECT: 0, PUBACK: 0, SUBSCRIBE: 2, UNSUBSCRIBE: 2, PINGREQ: 0, DISCONNECT: 0}


class ByteStream(Protocol):
    """Where an MQTT session reads and writes bytes: a TLS connection, or the payload of a WebSocket."""

    async def read_exactly(self, count: int, timeout: float | None) -> bytes:
        """`count` bytes, or asyncio.IncompleteReadError at the end, or TimeoutError."""

    async def send(self, data: bytes) -> None:
        """Write bytes (one whole packet); they may wait for `flush` or the next wait for the client."""

    def flush(self) -> None:
        """Send whatever `send` left queued."""


class TcpStream:
    """A TLS connection as a ByteStream."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    async def read_exactly(self, count: int, timeout: float | None) -> bytes:
        """Read `count` bytes within `timeout` seconds."""
        if self.peer.tls.buffered >= count:
            return self.peer.tls.take(count)  # already decrypted: no wait, so no deadline to arm
        async with asyncio.timeout(timeout):  # a timer, not a task per read as wait_for makes
            return await self.peer.reader.readexactly(count)

    async def send(self, data: bytes) -> None:
        """Queue one packet: it leaves with the answers to the other packets already received, or at once."""
        self.peer.tls.write_soon(data)
        await self.peer.writer.drain()

    def flush(self) -> None:
        """Send the queued packets now."""
        self.peer.tls.push()


class ProtocolViolation(Exception):
    """The client broke MQTT or DPS's rules: logged, and the connection closed."""


class _Bytes(ReaderAdapter):
    """amqtt's reader interface over one packet's bytes, already read whole."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    async def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._at + n
        chunk = self._data[self._at : end]
        self._at += len(chunk)
        return chunk

    def feed_eof(self) -> None:
        """Nothing to do."""

    @property
    def left(self) -> int:
        """Bytes not yet read."""
        return len(self._data) - self._at


async def read_packet(stream: ByteStream, *, wait: float | None, within: float) -> MQTTPacket[Any, Any, Any]:
    """One packet: the first byte within `wait` seconds, the rest within `within`; refused when too large or malformed.

    The fixed header's bytes are gathered by their continuation bits (MQTT 3.1.1 §2.2.3: one to four length bytes)
    and the packet's bytes read whole, then amqtt decodes both from memory: one read per part instead of an await
    per byte through its reader interface.
    """
    first = await _read(stream, 1, wait)
    if not first:
        raise asyncio.IncompleteReadError(b"", 1)
    header_bytes = bytearray(first)
    while True:
        byte = await _read(stream, 1, within)
        if not byte:
            raise asyncio.IncompleteReadError(bytes(header_bytes), len(header_bytes) + 1)
        header_bytes += byte
        if not byte[0] & 0x80:
            break
        if len(header_bytes) == 5:
            raise ProtocolViolation("malformed fixed header: a remaining length of more than four bytes")
    try:
        header = await MQTTFixedHeader.from_stream(_Bytes(bytes(header_bytes)))
    except (MQTTError, NoDataError) as exc:
        raise ProtocolViolation(f"malformed fixed header: {exc}") from None
    if header is None:
        raise asyncio.IncompleteReadError(b"", 1)
    kind = header.packet_type
    if kind not in PACKETS:
        raise ProtocolViolation(f"packet type {kind} is not one a DPS device sends")
    if kind in REQUIRED_FLAGS and header.flags != REQUIRED_FLAGS[kind]:
        raise ProtocolViolation(f"packet type {kind} with reserved flags 0x{header.flags:x}")
    if header.remaining_length > MAX_PACKET_BYTES:
        raise ProtocolViolation(f"a packet of {header.remaining_length} bytes (at most {MAX_PACKET_BYTES})")
    body = await _read(stream, header.remaining_length, within) if header.remaining_length else b""
    if len(body) < header.remaining_length:
        raise asyncio.IncompleteReadError(body, header.remaining_length)
    source = _Bytes(body)
    try:
        packet = await PACKETS[kind].from_stream(source, fixed_header=header)
    except (AMQTTError, MQTTError, NoDataError, UnicodeDecodeError, ValueError, IndexError, KeyError, TypeError) as exc:
        raise ProtocolViolation(f"malformed packet type {kind}: {type(exc).__name__}") from None
    if kind != PUBLISH and source.left:
        raise ProtocolViolation(f"packet type {kind} has {source.left} bytes more than it declares")
    return packet


async def _read(stream: ByteStream, count: int, timeout: float | None) -> bytes:
    """`count` bytes, or fewer at the end of the stream (the caller tells a short read from a whole one)."""
    try:
        return await stream.read_exactly(count, timeout)
    except asyncio.IncompleteReadError as exc:
        return exc.partial


@dataclass(frozen=True)
class DeviceIdentity:
    """Who a CONNECT says it is: ID scope and registration ID from the user name (reference §3)."""

    id_scope: str
    registration_id: str
    api_version: str


def parse_username(username: str | None, client_id: str | None) -> DeviceIdentity | int:
    """The identity in `{idScope}/registrations/{registrationId}/api-version=...`, or a CONNACK refusal code."""
    if not username:
        return BAD_CREDENTIALS
    parts = username.split("/", 3)
    if len(parts) != 4 or parts[1].lower() != "registrations" or not parts[0] or not parts[2]:
        return BAD_CREDENTIALS
    query = dict(parse_qsl(parts[3], keep_blank_values=True))
    api_version = query.get("api-version", "")
    if not api_version:
        return BAD_CREDENTIALS
    if not client_id or client_id.lower() != parts[2].lower():
        return IDENTIFIER_REJECTED
    return DeviceIdentity(parts[0], parts[2], api_version)


class MqttSession:
    """One device's MQTT connection, from CONNECT to DISCONNECT."""

    def __init__(
        self,
        server: Server,
        devices: DeviceService,
        stream: ByteStream,
        address: str,
        chain: tuple[Certificate, ...],
        transport: str = "MQTT",
    ) -> None:
        self.server = server
        self.devices = devices
        self.stream = stream
        self.address = address
        self.chain = chain
        self.transport = transport
        self.identity: DeviceIdentity | None = None
        self.password: str | None = None
        self.subscribed_qos: int | None = None
        self.keep_alive = 0
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Serve the session until the client disconnects, breaks a rule or goes silent past its keep-alive."""
        limits = self.server.limits
        try:
            connect = await read_packet(self.stream, wait=limits.header_timeout, within=limits.header_timeout)
            if not isinstance(connect, ConnectPacket):
                raise ProtocolViolation("the first packet is not CONNECT")
            if not await self._connect(connect):
                return
            idle = self.keep_alive * 1.5 if self.keep_alive else limits.idle_timeout * 10
            while True:
                packet = await read_packet(self.stream, wait=idle, within=limits.request_timeout)
                if isinstance(packet, DisconnectPacket):
                    return
                await self._dispatch(packet)
        except ProtocolViolation as exc:
            self.server.log.line(f"{self.address} {self.transport} {self._who()}closed: {exc}")
        except TimeoutError:
            what = (
                "no CONNECT" if self.identity is None else f"nothing within 1.5 x the keep-alive of {self.keep_alive} s"
            )
            self.server.log.line(f"{self.address} {self.transport} {self._who()}closed: {what}")
        except asyncio.IncompleteReadError:
            pass  # the client closed the connection
        finally:
            for task in list(self._tasks):
                task.cancel()
            try:
                self.stream.flush()  # a refusal's CONNACK, or answers queued behind the last packet read
            except (OSError, TlsError):
                pass  # the client is gone

    def _who(self) -> str:
        return f"{self.identity.registration_id} " if self.identity else ""

    async def _connect(self, packet: ConnectPacket) -> bool:
        if packet.proto_name != "MQTT" or packet.proto_level != 4:
            await self._connack(BAD_PROTOCOL)
            self.server.log.line(
                f"{self.address} {self.transport} CONNECT refused: protocol {packet.proto_name!r} level {packet.proto_level} (DPS speaks MQTT 3.1.1, level 4)"
            )
            return False
        identity = parse_username(packet.username, packet.client_id)
        if isinstance(identity, int):
            await self._connack(identity)
            why = (
                "client ID is not the registration ID"
                if identity == IDENTIFIER_REJECTED
                else "user name is not {idScope}/registrations/{registrationId}/api-version=..."
            )
            self.server.log.line(f"{self.address} {self.transport} CONNECT refused: the {why}")
            return False
        self.identity = identity
        password = packet.password
        self.password = password.decode("utf-8", "replace") if isinstance(password, (bytes, bytearray)) else password
        self.keep_alive = int(packet.keep_alive or 0)
        await self._connack(ACCEPTED)
        return True

    async def _connack(self, code: int) -> None:
        await self.stream.send(ConnackPacket.build(0, code).to_bytes())

    async def _dispatch(self, packet: MQTTPacket[Any, Any, Any]) -> None:
        if isinstance(packet, PingReqPacket):
            await self.stream.send(PingRespPacket.build().to_bytes())
        elif isinstance(packet, SubscribePacket):
            codes = []
            for topic, qos in packet.payload.topics:
                if topic == RESPONSE_FILTER:
                    self.subscribed_qos = min(int(qos), 1)  # DPS grants QoS 2 as 1
                    codes.append(self.subscribed_qos)
                else:
                    codes.append(0x80)  # DPS supports no other filter
            await self.stream.send(SubackPacket.build(packet.variable_header.packet_id, codes).to_bytes())
        elif isinstance(packet, UnsubscribePacket):
            if RESPONSE_FILTER in packet.payload.topics:
                self.subscribed_qos = None
            await self.stream.send(UnsubackPacket.build(packet.variable_header.packet_id).to_bytes())
        elif isinstance(packet, PubackPacket):
            pass  # the device acknowledged one of our answers
        elif isinstance(packet, PublishPacket):
            await self._publish(packet)
        elif isinstance(packet, ConnectPacket):
            raise ProtocolViolation("a second CONNECT")

    async def _publish(self, packet: PublishPacket) -> None:
        topic = packet.topic_name or ""
        qos = packet.qos or 0
        if qos > 1:
            raise ProtocolViolation("PUBLISH with QoS 2 (DPS takes QoS 0 and 1)")
        if not topic.startswith(TOPIC_PREFIX):
            raise ProtocolViolation(f"PUBLISH to {topic[:80]!r}, outside {TOPIC_PREFIX}")
        if qos == 1:
            await self.stream.send(PubackPacket.build(packet.packet_id).to_bytes())
        data = bytes(packet.data or b"")
        if len(self._tasks) >= MAX_IN_FLIGHT:
            await self._request(topic, data)
            return
        task = asyncio.get_running_loop().create_task(self._request(topic, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, topic: str, data: bytes) -> None:
        started = time.perf_counter()
        path, _, query = topic.partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        rid = params.get("$rid", "")
        assert self.identity is not None
        identity = self.identity
        presented = Presented(self.password or None, self.chain)
        call: Callable[[], DeviceReply]
        if path == REGISTER:
            name = "PUT register"

            def call() -> DeviceReply:
                return self.devices.register(
                    identity.id_scope, identity.registration_id, presented, data, tpm_allowed=False
                )
        elif path == OPERATION_STATUS:
            name = "GET operationstatus"
            operation_id = params.get("operationId", "")

            def call() -> DeviceReply:
                return self.devices.operation_status(
                    identity.id_scope, identity.registration_id, operation_id, presented
                )
        else:
            name = path[len(TOPIC_PREFIX) :][:60]
            call = _refuse(
                Refusal(
                    404,
                    E_NO_RESOURCE,
                    f"no such DPS topic: {path[:80]}",
                    hint="publish to $dps/registrations/PUT/iotdps-register/?$rid=... or .../GET/iotdps-get-operationstatus/?$rid=...&operationId=...",
                )
            )
        if not rid:
            call = _refuse(Refusal(400, E_BAD_REQUEST, "the topic has no $rid", hint="add ?$rid={request id}"))
        status, body, retry_after, note = await self._answer(call)
        self.server.count_request()
        answer_topic = f"$dps/registrations/res/{status}/?$rid={rid}" + (
            f"&retry-after={retry_after}" if retry_after is not None else ""
        )
        elapsed = (time.perf_counter() - started) * 1000
        self.server.log.line(
            f"{self.address} {self.transport} {name} {identity.registration_id} {status} {elapsed:.1f}ms{' ' + note if note else ''}"
        )
        await self._respond(answer_topic, body)

    async def _answer(self, call: Callable[[], DeviceReply]) -> tuple[int, Any, int | None, str]:
        try:
            reply = await self.server.blocking(call)
            return reply.status, reply.body, reply.retry_after, reply.note
        except Refusal as exc:
            refused = exc
        except DpsError as exc:
            refused = refusal_for(exc)
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the session
            return (
                500,
                error_body(E_INTERNAL, f"unexpected {type(exc).__name__} in dpsctl serve (a bug)"),
                None,
                type(exc).__name__,
            )
        body = error_body(refused.code, refused.message, refused.hint)
        return refused.status, body, refused.retry_after, f"{refused.code} {refused.message}"

    async def _respond(self, topic: str, body: Any) -> None:
        if self.subscribed_qos is None:
            self.server.log.line(
                f"{self.address} {self.transport} {self._who()}answer dropped: not subscribed to {RESPONSE_FILTER}"
            )
            return
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        packet_id = None
        if self.subscribed_qos == 1:
            self._next_id = self._next_id % 65535 + 1
            packet_id = self._next_id
        packet = PublishPacket.build(topic, payload, packet_id, False, self.subscribed_qos, False)
        await self.stream.send(packet.to_bytes())


def _refuse(refusal: Refusal) -> Callable[[], DeviceReply]:
    def refuse() -> DeviceReply:
        raise refusal

    return refuse


async def serve_mqtt(server: Server, peer: Peer, devices: DeviceService) -> None:
    """Serve one MQTT-over-TLS connection."""
    await MqttSession(server, devices, TcpStream(peer), peer.address, peer.chain).run()


SessionRunner = Callable[[ByteStream, str, tuple[Certificate, ...]], Awaitable[None]]
