"""`dpsctl serve` over MQTT, byte by byte: the DPS topics, QoS, keep-alive, and hostile input closed cleanly.

Every hostile case checks three things: the connection is closed (after a CONNACK refusal where MQTT has one),
the server still serves a well-behaved device afterwards, and nothing was written to the store.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.helpers import mqtt_wire as wire
from tests.helpers.constants import ID_SCOPE
from tests.helpers.server import device_token
from tests.helpers.wire_cases import CONNACK_REFUSALS, HOSTILE
from tests.helpers.wire_cases import MQTT_REGISTER as REGISTER


def _key(dps, registration_id: str) -> str:
    dps.ok("enrollment", "add", registration_id, "--attestation", "symmetricKey")
    return dps.json("enrollment", "show", registration_id, "--show-keys")["attestation"]["symmetricKey"]["primaryKey"]


def _session(served, registration_id: str, key: str | None, *, subscribe: bool = True) -> wire.RawMqtt:
    client = wire.RawMqtt(served.mqtt_port, served.tls.ca)
    password = device_token(registration_id, key, encode_sr=True) if key else None
    client.send(wire.connect(registration_id, wire.username(ID_SCOPE, registration_id), password))
    assert client.read_packet() == (2, 0, b"\x00\x00")  # CONNACK accepted
    if subscribe:
        client.send(wire.subscribe())
        assert client.read_packet() == (9, 0, b"\x00\x01\x01")  # SUBACK, QoS 1 granted
    return client


def _register(served, registration_id: str, key: str) -> tuple[str, dict]:
    client = _session(served, registration_id, key)
    try:
        client.send(wire.publish(REGISTER, b'{"registrationId": "%s"}' % registration_id.encode()))
        return client.response()
    finally:
        client.close()


@pytest.mark.rule("§3/mqtt-register-and-poll")
def test_register_then_poll_over_raw_mqtt(dps, serve):
    served = serve()
    key = _key(dps, "raw-1")
    client = _session(served, "raw-1", key)
    client.send(wire.publish(REGISTER, b'{"registrationId": "raw-1", "payload": {"fw": "1.0"}}'))
    assert client.read_packet() == (4, 0, b"\x00\x02")  # PUBACK for QoS 1
    topic, body = client.response()
    assert topic == "$dps/registrations/res/202/?$rid=1&retry-after=1" and body["status"] == "assigning"
    served.settle()
    client.send(wire.publish(f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId={body['operationId']}", b" ", qos=0))
    topic, done = client.response()
    assert topic == "$dps/registrations/res/200/?$rid=2"
    assert done["status"] == "assigned" and done["registrationState"]["deviceId"] == "raw-1"
    client.send(wire.packet(12, 0, b""))  # PINGREQ
    assert client.read_packet() == (13, 0, b"")  # PINGRESP
    client.send(wire.packet(10, 2, b"\x00\x03" + wire.utf8("$dps/registrations/res/#")))  # UNSUBSCRIBE
    assert client.read_packet() == (11, 0, b"\x00\x03")  # UNSUBACK
    client.send(wire.packet(14, 0, b""))  # DISCONNECT
    assert client.closed_by_server()


@pytest.mark.rule("§3/mqtt-bad-credential-on-the-response-topic")
def test_a_wrong_key_gets_401_on_the_response_topic_and_writes_nothing(dps, serve):
    served = serve(fast=True)
    _key(dps, "raw-2")
    before = dps.snapshot()
    topic, body = _register(served, "raw-2", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    assert topic == "$dps/registrations/res/401/?$rid=1" and body["errorCode"] == 401002
    assert dps.snapshot() == before
    assert served.running.devices.refused == 1


@pytest.mark.rule("§1/tpm-not-over-mqtt")
def test_no_credential_and_a_tpm_body_are_refused(dps, serve):
    served = serve(fast=True)
    _key(dps, "raw-3")
    topic, body = _register(served, "raw-3", None)  # type: ignore[arg-type]
    assert topic.startswith("$dps/registrations/res/401/") and "no credential" in body["message"]
    client = _session(served, "raw-3", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    client.send(wire.publish(REGISTER, b'{"registrationId": "raw-3", "tpm": {"endorsementKey": "AAAA"}}'))
    topic, body = client.response()
    assert topic.startswith("$dps/registrations/res/400/") and "TPM" in body["message"]


def test_no_device_sees_another_devices_answers(dps, serve):
    served = serve(fast=True)
    key_a, key_b = _key(dps, "raw-a"), _key(dps, "raw-b")
    a = _session(served, "raw-a", key_a)
    b = _session(served, "raw-b", key_b)
    a.send(wire.publish(REGISTER, b"{}"))
    b.send(wire.publish(REGISTER, b"{}"))
    assert a.response()[1]["registrationState"]["deviceId"] == "raw-a"
    assert b.response()[1]["registrationState"]["deviceId"] == "raw-b"
    b.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        b.read_packet()  # nothing more for b


def test_unsupported_subscriptions_are_refused_and_unsubscribed_devices_get_no_answer(dps, serve):
    served = serve(fast=True)
    key = _key(dps, "raw-4")
    client = _session(served, "raw-4", key, subscribe=False)
    client.send(wire.subscribe("$dps/registrations/res/#", packet_id=5, qos=2))
    assert client.read_packet() == (9, 0, b"\x00\x05\x01")  # QoS 2 granted as 1
    client.send(wire.subscribe("devices/#", packet_id=6))
    assert client.read_packet() == (9, 0, b"\x00\x06\x80")  # refused filter
    client.close()
    quiet = _session(served, "raw-4", key, subscribe=False)
    quiet.send(wire.publish(REGISTER, b"{}", qos=0))
    quiet.sock.settimeout(1.0)
    with pytest.raises(TimeoutError):
        quiet.read_packet()
    assert "answer dropped: not subscribed" in served.log.getvalue()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_mqtt_input_is_closed_cleanly(dps, serve, case):
    served = serve(fast=True)
    key = _key(dps, "well-behaved")
    before = dps.snapshot()
    client = wire.RawMqtt(served.mqtt_port, served.tls.ca)
    for data in HOSTILE[case](served):
        client.send(data)
    assert client.closed_by_server()
    assert dps.snapshot() == before
    topic, body = _register(served, "well-behaved", key)
    assert body["status"] == "assigned"
    assert "Traceback" not in served.log.getvalue()


@pytest.mark.parametrize("case", sorted(CONNACK_REFUSALS))
def test_connect_refusals_answer_connack_then_close(dps, serve, case):
    served = serve(fast=True)
    data, code = CONNACK_REFUSALS[case]
    client = wire.RawMqtt(served.mqtt_port, served.tls.ca)
    client.send(data)
    assert client.read_packet() == (2, 0, bytes([0, code]))
    assert client.closed_by_server()


def test_plain_tcp_and_tls_without_connect_are_dropped_after_the_deadline(dps, serve):
    from dpsctl.server.listener import Limits

    served = serve(fast=True, limits=Limits(handshake_timeout=0.5, header_timeout=0.5))
    silent = wire.RawMqtt(served.mqtt_port, served.tls.ca)  # TLS up, then nothing
    assert silent.closed_by_server()
    assert "closed: no CONNECT" in served.log.getvalue()


@pytest.mark.slow
def test_keep_alive_is_honoured(dps, serve):
    served = serve(fast=True)
    key = _key(dps, "sleepy")
    client = wire.RawMqtt(served.mqtt_port, served.tls.ca)
    client.send(wire.connect("sleepy", wire.username(ID_SCOPE, "sleepy"), device_token("sleepy", key, encode_sr=True), keep_alive=1))
    assert client.read_packet() == (2, 0, b"\x00\x00")
    assert client.closed_by_server()  # silent past 1.5 x 1 s
    assert "nothing within 1.5 x the keep-alive of 1 s" in served.log.getvalue()


@pytest.mark.slow
def test_two_thousand_half_open_connections_do_not_stop_a_device(dps, serve):
    served = serve(fast=True)
    key = _key(dps, "patient")
    idle: list[socket.socket] = []
    try:
        for port in (served.mqtt_port, served.port):
            for _ in range(1000):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        started = time.monotonic()
        topic, body = _register(served, "patient", key)
        assert body["status"] == "assigned", body
        reply = served.register("patient", key)
        assert reply.status == 200 and reply.body["status"] == "assigned", reply
        assert time.monotonic() - started < 10  # served, not starved (it takes milliseconds)
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.rule("§12/message-size-96kb")
def test_a_registration_body_over_96_kb_gets_413_on_the_response_topic(dps, serve):
    served = serve(fast=True)
    key = _key(dps, "big-1")
    client = _session(served, "big-1", key)
    client.send(wire.publish(REGISTER, b'{"registrationId": "big-1", "payload": "' + b"x" * (100 * 1024) + b'"}'))
    topic, body = client.response()
    assert topic.startswith("$dps/registrations/res/413/?$rid=1") and body["errorCode"] == 413001, (topic, body)
    assert dps.json("registration", "list") == []
