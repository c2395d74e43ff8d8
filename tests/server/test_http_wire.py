"""`dpsctl serve`'s HTTPS port against requests no HTTP client sends: strict framing, limits, other protocols.

Framing is h11's: what it refuses never reaches routing or authentication, and no body is buffered past its
limit. Each case is answered with an error status (or closed) and the server keeps serving.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

import pytest

from tests.helpers import mqtt_wire as wire
from tests.helpers.constants import ID_SCOPE
from tests.helpers.server import start_serve
from tests.helpers.wire_cases import HTTP_REGISTER as REGISTER
from tests.helpers.wire_cases import MALFORMED
from tests.helpers.wire_cases import http_head as _head
from tests.helpers.waiting import wait_for


def _tls(port: int, ca: Path, timeout: float = 10.0) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=timeout), server_hostname="localhost")


def _exchange(port: int, ca: Path, request: bytes) -> bytes:
    sock = _tls(port, ca)
    try:
        sock.sendall(request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionError, ssl.SSLError):
                break
            if not chunk:
                break
            data += chunk
        return data
    finally:
        sock.close()


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.rule("§12/message-size-96kb")
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_framing_is_refused_before_the_api(dps, serve, case):
    served = serve(fast=True)
    request, statuses = MALFORMED[case]
    before = dps.snapshot()
    response = _exchange(served.port, served.tls.ca, request)
    assert _status(response) in statuses, response[:300]
    assert dps.snapshot() == before
    assert served.register("x", None).status == 401  # still serving (x has no credential)


@pytest.mark.parametrize(("name", "data", "said"), [("mqtt", wire.connect("x", "y"), "an MQTT CONNECT"), ("amqp", b"AMQP\x00\x01\x00\x00", "an AMQP protocol header"), ("binary", b"\x00\x01\x02\x03", "bytes that are not HTTP")])
def test_other_protocols_on_the_https_port_are_named_and_closed(dps, serve, name, data, said):
    served = serve(fast=True)
    sock = _tls(served.port, served.tls.ca)
    sock.sendall(data)
    assert sock.recv(100) == b""  # closed at once, nothing sent back
    sock.close()
    line = next(line for line in served.log_lines() if "HTTPS port got" in line)
    assert said in line
    if name == "mqtt":
        assert f"MQTT is on port {served.mqtt_port}" in line


def test_a_slow_request_head_is_cut_off_at_the_deadline(dps, serve):
    from dpsctl.server.listener import Limits

    served = serve(fast=True, limits=Limits(header_timeout=0.3, request_timeout=0.6))
    sock = _tls(served.port, served.tls.ca)
    sock.sendall(b"PUT " + REGISTER.encode() + b" HTTP/1.1\r\nHost: local")  # ... and then nothing
    response = sock.recv(4096)
    assert _status(response) == 408, response
    sock.close()


@pytest.mark.slow
def test_a_body_streamed_after_a_negative_chunk_size_is_not_buffered(tmp_path):
    """The probe's attack: chunk size -1, then hundreds of MiB. The server must refuse at the chunk header."""
    from tests.helpers.cli import Dps

    store = tmp_path / "dps.json"
    Dps(store).ok("init", "--id-scope", ID_SCOPE)
    proc, port, _banner, _log = start_serve(store)
    try:
        rss_before, sockets_before = _rss(proc.pid), _sockets(proc.pid)
        sock = _tls(port, tmp_path / "dpsctl-serve" / "ca.pem")
        sock.sendall(_head("Transfer-Encoding: chunked\r\n", b"-1\r\n"))
        sent = 0
        block = b"x" * (1 << 20)
        try:
            while sent < 200 * (1 << 20):
                sock.sendall(block)
                sent += len(block)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass  # the server closed the connection: what we want
        sock.close()
        # The server is another process: its memory is read once it has closed this connection too.
        assert wait_for(lambda: _sockets(proc.pid) <= sockets_before, 10), "the server kept the refused connection open"
        grown = _rss(proc.pid) - rss_before
        assert sent < 200 * (1 << 20), "the server kept reading a body it had refused"
        assert grown < 20 * (1 << 20), f"server memory grew by {grown / (1 << 20):.0f} MiB"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _sockets(pid: int) -> int:
    """How many sockets process `pid` has open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    return count


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
