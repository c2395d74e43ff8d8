"""The hostile wire inputs of `dpsctl serve`, shared by the server tests that send them (tests/server/test_http_wire.py,
test_mqtt.py) and the table of docs/hostile-inputs.md (tests/security/hostile_cases.py)."""

from __future__ import annotations

from tests.helpers import mqtt_wire as wire
from tests.helpers.constants import DEVICE_API, ID_SCOPE

HTTP_REGISTER = f"/{ID_SCOPE}/registrations/x/register?api-version={DEVICE_API}"
MQTT_REGISTER = "$dps/registrations/PUT/iotdps-register/?$rid=1"


def http_head(extra: str, body: bytes = b"") -> bytes:
    """A device registration PUT with extra header lines and a body."""
    return f"PUT {HTTP_REGISTER} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode() + body


MALFORMED = {
    "negative chunk size": (http_head("Transfer-Encoding: chunked\r\n", b"-1\r\n" + b"x" * 1000), (400,)),
    "chunk size with 0x": (http_head("Transfer-Encoding: chunked\r\n", b"0x2\r\nab\r\n0\r\n\r\n"), (400,)),
    "Content-Length with an underscore": (http_head("Content-Length: 0_2\r\n", b"{}"), (400,)),
    "two different Content-Lengths": (http_head("Content-Length: 2\r\nContent-Length: 3\r\n", b"{}x"), (400,)),
    "Transfer-Encoding that is not chunked": (http_head("Transfer-Encoding: xchunked\r\n", b"{}"), (400, 501)),
    "both Content-Length and Transfer-Encoding": (http_head("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n"), (400,)),
    "device body over 96 KB declared": (http_head("Content-Length: 200000000\r\n"), (413,)),
    "device body over 96 KB sent chunked": (http_head("Transfer-Encoding: chunked\r\n", (b"8000\r\n" + b"x" * 0x8000 + b"\r\n") * 4), (413,)),
    "header section over 16 KB": (http_head("X-Big: " + "a" * 20000 + "\r\n"), (431, 400)),
    "not HTTP/1.x": (b"PUT / HTTP/9.9\r\nHost: x\r\n\r\n", (400, 505)),
}


HOSTILE = {
    "malformed remaining length": lambda served: [b"\x10\xff\xff\xff\xff\x01"],
    "oversized packet": lambda served: [b"\x10" + wire.remaining_length(10 * 1024 * 1024)],
    "PUBLISH before CONNECT": lambda served: [wire.publish(MQTT_REGISTER, b"{}")],
    "reserved packet type": lambda served: [b"\xf0\x00"],
    "CONNECT with trailing garbage": lambda served: [wire.packet(1, 0, wire.connect("x", wire.username(ID_SCOPE, "x"))[2:] + b"junk")],
    "SUBSCRIBE with bad flags": lambda served: [wire.connect("hx", wire.username(ID_SCOPE, "hx")), wire.packet(8, 0, b"\x00\x01" + wire.utf8("$dps/registrations/res/#") + b"\x01")],
    "topic outside $dps": lambda served: [wire.connect("hx", wire.username(ID_SCOPE, "hx")), wire.publish("devices/hx/messages/events/", b"{}")],
    "QoS 2 publish": lambda served: [wire.connect("hx", wire.username(ID_SCOPE, "hx")), wire.publish(MQTT_REGISTER, b"{}", qos=2)],
    "second CONNECT": lambda served: [wire.connect("hx", wire.username(ID_SCOPE, "hx")), wire.connect("hx", wire.username(ID_SCOPE, "hx"))],
    "invalid UTF-8 topic": lambda served: [wire.connect("hx", wire.username(ID_SCOPE, "hx")), wire.packet(3, 0, b"\x00\x02\xff\xfe{}")],
}
CONNACK_REFUSALS = {
    "wrong protocol level": (wire.connect("hx", wire.username(ID_SCOPE, "hx"), level=5), 1),
    "client ID is not the registration ID": (wire.connect("someone-else", wire.username(ID_SCOPE, "hx")), 2),
    "user name not DPS's": (wire.connect("hx", "hx"), 4),
    "no user name": (wire.connect("hx", None), 4),
}
