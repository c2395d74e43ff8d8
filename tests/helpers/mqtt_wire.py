"""A raw MQTT 3.1.1 client for tests that must send what no real client sends (and check the bytes that come back)."""

from __future__ import annotations

import json
import socket
import ssl
import struct
from pathlib import Path
from typing import Any


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(text: str) -> bytes:
    """An MQTT length-prefixed string."""
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def packet(kind: int, flags: int, body: bytes) -> bytes:
    """A whole packet: fixed header, remaining length, body."""
    return bytes([kind << 4 | flags]) + remaining_length(len(body)) + body


def connect(client_id: str, username: str | None, password: str | None = None, *, level: int = 4, keep_alive: int = 60) -> bytes:
    """A CONNECT packet."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = utf8("MQTT") + bytes([level, flags]) + struct.pack("!H", keep_alive) + utf8(client_id)
    if username is not None:
        body += utf8(username)
    if password is not None:
        body += utf8(password)
    return packet(1, 0, body)


def subscribe(topic: str = "$dps/registrations/res/#", packet_id: int = 1, qos: int = 1) -> bytes:
    """A SUBSCRIBE packet for one filter."""
    return packet(8, 2, struct.pack("!H", packet_id) + utf8(topic) + bytes([qos]))


def publish(topic: str, payload: bytes, *, qos: int = 1, packet_id: int = 2) -> bytes:
    """A PUBLISH packet."""
    body = utf8(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(3, qos << 1, body)


def username(scope: str, registration_id: str) -> str:
    """The DPS user name a device sends."""
    return f"{scope}/registrations/{registration_id}/api-version=2019-03-31&ClientVersion=raw-test"


class RawMqtt:
    """A TLS connection to the MQTT port that reads whole packets back."""

    def __init__(
        self,
        port: int,
        ca: Path,
        host: str = "127.0.0.1",
        *,
        timeout: float = 10.0,
        tls: bool = True,
        context: ssl.SSLContext | None = None,
    ) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        if tls:
            context = context or ssl.create_default_context(cafile=str(ca))
            self.sock: socket.socket = context.wrap_socket(raw, server_hostname="localhost")
        else:
            self.sock = raw
        self._buffer = bytearray()  # bytes received but not yet read: one recv per TLS record, not per byte

    def send(self, data: bytes) -> None:
        """Write raw bytes."""
        self.sock.sendall(data)

    def read_packet(self) -> tuple[int, int, bytes] | None:
        """(type, flags, body) of the next packet, or None when the server closed the connection."""
        first = self._exactly(1)
        if not first:
            return None
        length, multiplier = 0, 1
        while True:
            byte = self._exactly(1)
            if not byte:
                return None
            length += (byte[0] & 0x7F) * multiplier
            multiplier *= 128
            if not byte[0] & 0x80:
                break
        body = self._exactly(length) if length else b""
        return first[0] >> 4, first[0] & 0x0F, body

    def closed_by_server(self) -> bool:
        """True when the server closes the connection (after any packets it sends first)."""
        try:
            while True:
                if self.read_packet() is None:
                    return True
        except (ConnectionError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    def response(self) -> tuple[str, Any]:
        """The next PUBLISH from the server: (topic, JSON payload); PUBACKs and SUBACKs before it are skipped."""
        while True:
            got = self.read_packet()
            assert got is not None, "the server closed the connection"
            kind, flags, body = got
            if kind != 3:
                continue
            (size,) = struct.unpack("!H", body[:2])
            topic = body[2 : 2 + size].decode()
            rest = body[2 + size :]
            if (flags >> 1) & 3:
                (packet_id,) = struct.unpack("!H", rest[:2])
                rest = rest[2:]
                self.send(packet(4, 0, struct.pack("!H", packet_id)))  # PUBACK
            return topic, json.loads(rest)

    def close(self) -> None:
        """Close the connection."""
        try:
            self.sock.close()
        except OSError:
            pass

    def _exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return b""
            if not chunk:
                return b""
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data
