"""The official Python device SDK (azure-iot-device 2.14.0, MQTT only), unmodified, against `dpsctl serve`.

The SDK connects to port 8883 (MQTT over TLS) or 443 (MQTT over WebSockets) and nothing else, so each test's
server listens on a loopback address of its own (127.x.y.1) on those fixed ports: tests never collide, with
each other or with anything on 127.0.0.1. The server certificate names that address, as the SDK checks.
"""

from __future__ import annotations

import io
import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest

from dpsctl.core.keys import derive_device_key, generate_key
from dpsctl.server.faults import Options
from dpsctl.server.log import RequestLog
from dpsctl.server.runtime import Running, prepare, start
from dpsctl.server.tls import dev_tls
from dpsctl.store import open_store
from tests.helpers.pki import make_pki
from tests.helpers.constants import ID_SCOPE

sdk = pytest.importorskip("azure.iot.device", reason="azure-iot-device (the Python device SDK) is not installed: pip install '.[test]'")
from azure.iot.device import ProvisioningDeviceClient, X509  # noqa: E402
from azure.iot.device.exceptions import ClientError  # noqa: E402

_hosts = itertools.count(1)
REFUSAL_BOUND = 5.0  # the bound for a refusal; they take milliseconds, so this cannot flake


def _loopback() -> str:
    """A loopback address no other test (or process of this run) uses."""
    n = next(_hosts)
    return f"127.{100 + os.getpid() % 100}.{n % 250 + 1}.1"


class SdkServer:
    """`dpsctl serve` on a loopback address of its own, with the fixed ports the SDK needs."""

    def __init__(self, running: Running, host: str, ca: Path, log: io.StringIO) -> None:
        self.running = running
        self.host = host
        self.ca_pem = ca.read_text()
        self.log = log

    def symmetric(self, registration_id: str, key: str, *, scope: str = ID_SCOPE, websockets: bool = False, payload: Any = None) -> Any:
        """Register with a symmetric key through the SDK, exactly as its README shows."""
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host=self.host,
            registration_id=registration_id,
            id_scope=scope,
            symmetric_key=key,
            server_verification_cert=self.ca_pem,
            websockets=websockets,
        )
        if payload is not None:
            client.provisioning_payload = payload
        return client.register()

    def x509(self, registration_id: str, cert_file: str, key_file: str) -> Any:
        """Register with a certificate (chain) and its key over mutual TLS."""
        client = ProvisioningDeviceClient.create_from_x509_certificate(
            provisioning_host=self.host,
            registration_id=registration_id,
            id_scope=ID_SCOPE,
            x509=X509(cert_file=cert_file, key_file=key_file),
            server_verification_cert=self.ca_pem,
        )
        return client.register()


@pytest.fixture(scope="module", autouse=True)
def _sdk_timers_cancelled():
    """The SDK leaves retry and keep-alive timers behind its clients; cancelled here, they do not fire at interpreter
    exit into its shut-down executors (which prints tracebacks after pytest's summary)."""
    import threading

    yield
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


@pytest.fixture
def sdk_serve(dps, tmp_path):
    """A factory: `dpsctl serve` over the `dps` store on 8883 (and 443 with websockets) of a fresh loopback address."""
    started: list[Running] = []

    def make(*, https_port: int = 0, **options: Any) -> SdkServer:
        dps.ok("init", "--id-scope", ID_SCOPE)
        dps.ok("hub", "add", "hub-a")
        host = _loopback()
        tls = dev_tls(tmp_path / f"tls-{host}", host)
        store = open_store(dps.store)
        prepare(store)
        log = io.StringIO()
        running = start(store, Options(**options), host=host, port=https_port, mqtt_port=8883, cert=tls.cert, key=tls.key, ca=tls.ca, log=RequestLog(log))
        started.append(running)
        return SdkServer(running, host, tls.ca, log)

    yield make
    for running in started:
        running.stop()


def _enroll(dps, registration_id: str, *extra: str) -> str:
    dps.ok("enrollment", "add", registration_id, "--attestation", "symmetricKey", *extra)
    return dps.json("enrollment", "show", registration_id, "--show-keys")["attestation"]["symmetricKey"]["primaryKey"]


def _refused_quickly(call: Any, error: type[BaseException]) -> BaseException:
    started = time.monotonic()
    with pytest.raises(error) as caught:
        call()
    assert time.monotonic() - started < REFUSAL_BOUND
    return caught.value


def test_symmetric_key_individual_enrollment_with_a_payload_and_the_202_poll(dps, sdk_serve):
    server = sdk_serve()
    key = _enroll(dps, "py-sensor-1")
    result = server.symmetric("py-sensor-1", key, payload={"modelId": "dtmi:dpsctl:py;1"})
    assert result.status == "assigned"
    assert result.registration_state.device_id == "py-sensor-1"
    assert result.registration_state.assigned_hub == "hub-a.azure-devices.net"
    record = dps.json("registration", "show", "py-sensor-1")
    assert record["status"] == "assigned" and record["deviceId"] == "py-sensor-1"
    log = server.log.getvalue()
    assert "MQTT PUT register py-sensor-1 202" in log and "MQTT GET operationstatus py-sensor-1 200" in log


def test_group_device_with_a_derived_key_and_re_registration(dps, sdk_serve):
    server = sdk_serve(fast=True)
    group_key = generate_key(32)
    dps.ok("enrollment-group", "add", "py-fleet", "--attestation", "symmetricKey", "--primary-key", group_key)
    device_key = derive_device_key(group_key, "py-fleet-007")
    first = server.symmetric("py-fleet-007", device_key)
    again = server.symmetric("py-fleet-007", device_key)
    assert first.status == again.status == "assigned"
    assert first.registration_state.device_id == again.registration_state.device_id == "py-fleet-007"
    history = dps.json("registration", "history", "py-fleet-007")
    assert [h["status"] for h in history] == ["assigned", "assigned"]


def test_x509_group_over_mutual_tls_with_the_intermediate_sent(dps, sdk_serve, tmp_path):
    server = sdk_serve(fast=True)
    (tmp_path / "pki").mkdir()
    pki = make_pki(dps, tmp_path / "pki", device="py-cam-1")
    dps.ok("enrollment-group", "add", "py-cams", "--attestation", "x509", "--signing-cert", pki.path("root"))
    result = server.x509("py-cam-1", pki.path("py-cam-1", "fullchain"), pki.path("py-cam-1", "key"))
    assert result.status == "assigned" and result.registration_state.device_id == "py-cam-1"
    assert dps.json("registration", "show", "py-cam-1")["x509"]["enrollmentGroupId"] == "py-cams"


@pytest.mark.slow  # the real time a refusal takes (REFUSAL_BOUND) is what it checks
def test_wrong_key_wrong_scope_and_untrusted_certificate_are_refused_quickly(dps, sdk_serve, tmp_path):
    server = sdk_serve(fast=True)
    key = _enroll(dps, "py-sensor-2")
    wrong = _refused_quickly(lambda: server.symmetric("py-sensor-2", generate_key(32)), ClientError)
    assert "401" in str(wrong.__cause__)
    _refused_quickly(lambda: server.symmetric("py-sensor-2", key, scope="0ne00000BAD"), ClientError)
    (tmp_path / "stranger").mkdir()
    pki = make_pki(dps, tmp_path / "stranger", device="py-stranger")  # a PKI no enrollment names
    # The handshake takes the certificate; DPS's 401 refuses it (reference §2.5), which the SDK raises as ClientError.
    untrusted = _refused_quickly(lambda: server.x509("py-stranger", pki.path("py-stranger", "fullchain"), pki.path("py-stranger", "key")), ClientError)
    assert "401" in str(untrusted.__cause__)
    assert dps.json("registration", "list") == []  # refusals write nothing
    assert "MQTT PUT register py-stranger 401" in server.log.getvalue()


def test_a_disabled_enrollment_is_reported_as_disabled(dps, sdk_serve):
    server = sdk_serve(fast=True)
    key = _enroll(dps, "py-sensor-3", "--disabled")
    with pytest.raises(ClientError) as caught:  # how quickly is test_..._refused_quickly's business (slow)
        server.symmetric("py-sensor-3", key)
    assert "disabled" in str(caught.value.__cause__)
    assert dps.json("registration", "show", "py-sensor-3")["status"] == "disabled"


def test_websockets_on_port_443(dps, sdk_serve):
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("port 443 needs root (or CAP_NET_BIND_SERVICE)")
    server = sdk_serve(https_port=443, fast=True)
    key = _enroll(dps, "py-ws-1")
    result = server.symmetric("py-ws-1", key, websockets=True)
    assert result.status == "assigned" and result.registration_state.device_id == "py-ws-1"
    assert "GET /$iothub/websocket 101" in server.log.getvalue()
    assert "MQTT-WS PUT register py-ws-1 200" in server.log.getvalue()


def test_the_python_example_of_serve_md_works_as_printed(dps, tmp_path, monkeypatch):
    """docs/serve.md's Python SDK example, run as printed (its `device_key` supplied) against `dpsctl serve` defaults."""
    import re
    import socket

    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", 8883))
    except OSError:
        if os.environ.get("CI"):
            raise
        pytest.skip("port 8883 on 127.0.0.1 is taken on this machine")
    finally:
        probe.close()
    doc = (Path(__file__).resolve().parents[2] / "docs" / "serve.md").read_text()
    example = next(block for block in re.findall(r"```python\n(.*?)```", doc, re.S) if "create_from_symmetric_key" in block)
    dps.ok("init", "--id-scope", ID_SCOPE)
    dps.ok("hub", "add", "hub-a")
    key = _enroll(dps, "dev-1")
    tls = dev_tls(tmp_path / "dpsctl-serve", "127.0.0.1")
    store = open_store(dps.store)
    running = start(store, Options(fast=True), host="127.0.0.1", port=0, mqtt_port=8883, cert=tls.cert, key=tls.key, ca=tls.ca, log=RequestLog(io.StringIO()))
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    try:
        exec(compile(example, "docs/serve.md", "exec"), {"device_key": key, "print": lambda *a: printed.write(" ".join(map(str, a)))})
    finally:
        running.stop()
    assert printed.getvalue() == "assigned hub-a.azure-devices.net"
