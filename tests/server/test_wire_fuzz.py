"""Fuzzing the parsers that take bytes from the network: MQTT packets and CONNECT user names, and HTTP framing.

Whatever arrives, the MQTT reader returns a packet or raises one of its two documented outcomes (the client
broke a rule, or the stream ended); the HTTP side answers with a status. Derandomized, so CI runs the same
examples every time.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpsctl.server.mqtt import DeviceIdentity, ProtocolViolation, parse_username, read_packet
from tests.helpers import mqtt_wire as wire
from tests.helpers.constants import ID_SCOPE

FUZZ = settings(max_examples=400, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Bytes:
    """A ByteStream over fixed bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read_exactly(self, count: int, timeout: float | None) -> bytes:
        if len(self.data) < count:
            partial, self.data = self.data, b""
            raise asyncio.IncompleteReadError(partial, count)
        chunk, self.data = self.data[:count], self.data[count:]
        return chunk

    async def send(self, data: bytes) -> None:
        raise AssertionError("the reader never writes")


def _read(data: bytes) -> object:
    try:
        return asyncio.run(read_packet(Bytes(data), wait=1, within=1))
    except (ProtocolViolation, asyncio.IncompleteReadError) as outcome:
        return outcome


VALID = [
    wire.connect("dev-1", wire.username(ID_SCOPE, "dev-1"), "SharedAccessSignature sr=x&sig=y&se=1"),
    wire.subscribe(),
    wire.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", b'{"registrationId":"dev-1"}'),
    wire.publish("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=5.x", b" ", qos=0),
    wire.packet(12, 0, b""),
    wire.packet(14, 0, b""),
]


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_give_a_packet_or_a_documented_outcome(data):
    _read(data)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_damaged_real_packets_give_a_packet_or_a_documented_outcome(packet, data):
    position = data.draw(st.integers(0, len(packet) - 1))
    byte = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(packet)))
    damaged = (packet[:position] + bytes([byte]) + packet[position + 1 :])[:cut]
    _read(damaged)


def test_the_real_packets_parse():
    for packet in VALID:
        assert not isinstance(_read(packet), Exception), packet


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=120)), st.one_of(st.none(), st.text(max_size=40)))
def test_any_user_name_gives_an_identity_or_a_connack_code(username, client_id):
    outcome = parse_username(username, client_id)
    assert isinstance(outcome, DeviceIdentity) or outcome in (2, 4)
    if isinstance(outcome, DeviceIdentity):
        assert outcome.registration_id.lower() == (client_id or "").lower()
