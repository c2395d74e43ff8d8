"""A running `dpsctl serve`: the listeners bound, the device service and service API over the store, started.

`bind` takes the ports first (before the store or TLS files are touched, so a taken port changes nothing);
`launch` builds the services and serves; `start` does both (in-process use and tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.x509 import Certificate

from dpsctl.core.clock import Clock, SystemClock
from dpsctl.core.models import ServiceSettings
from dpsctl.core.service import ensure_service_key
from dpsctl.server.device_service import DeviceService
from dpsctl.server.faults import Options
from dpsctl.server.http_api import HttpApi
from dpsctl.server.https import serve_https
from dpsctl.server.listener import Limits, Peer, Server
from dpsctl.server.log import RequestLog
from dpsctl.server.mqtt import ByteStream, MqttSession, serve_mqtt
from dpsctl.server.service_api import ServiceApi
from dpsctl.server.store_access import StoreAccess
from dpsctl.server.tls_stream import server_context
from dpsctl.server.websocket import serve_websocket
from dpsctl.store import Store


@dataclass
class Bound:
    """Listening sockets taken, nothing served yet."""

    server: Server
    host: str
    port: int
    mqtt_port: int | None


@dataclass
class Running:
    """A started server: its addresses, its services, and how to stop it."""

    server: Server
    devices: DeviceService
    host: str
    port: int
    mqtt_port: int | None

    @property
    def requests(self) -> int:
        """Requests answered so far (HTTPS and MQTT)."""
        return self.server.requests

    def stop(self) -> bool:
        """Stop accepting, let answers and allocations in progress finish, close; True when all finished."""
        finished = self.server.stop()
        self.devices.close()
        return finished


def bind(
    host: str,
    port: int,
    mqtt_port: int | None,
    log: RequestLog,
    *,
    limits: Limits | None = None,
    ca: Path | None = None,
) -> Bound:
    """Take the HTTPS port (and the MQTT port unless None) before anything is written."""
    server = Server(None, log, limits=limits, ca=ca)
    try:
        bound_port = server.bind(host, port, "https")
        bound_mqtt = server.bind(host, mqtt_port, "mqtt") if mqtt_port is not None else None
    except BaseException:
        server.stop()
        raise
    return Bound(server, host, bound_port, bound_mqtt)


def prepare(store: Store, clock: Clock | None = None) -> ServiceSettings:
    """Create the store, the service and its key if missing; returns the service settings."""
    access = StoreAccess(store)
    with access.write() as tx:
        return ensure_service_key(tx, (clock or SystemClock()).now())


def launch(
    bound: Bound, store: Store, options: Options, *, cert: Path, key: Path, ca: Path | None, clock: Clock | None = None
) -> Running:
    """Serve HTTPS (with MQTT over WebSockets) and MQTT over TLS on the bound sockets."""
    clock = clock or SystemClock()
    access = StoreAccess(store)
    devices = DeviceService(access, options, clock=clock)
    api = HttpApi(devices, ServiceApi(access, options, clock=clock))
    server = bound.server
    server.tls = server_context(cert, key)
    server.ca = ca

    def purge() -> None:  # the listener's tick wants nothing back; purge says how many it dropped
        devices.purge()

    server.on_tick = purge

    async def session(stream: ByteStream, address: str, chain: tuple[Certificate, ...]) -> None:
        await MqttSession(server, devices, stream, address, chain, "MQTT-WS").run()

    async def websocket(srv: Server, peer: Peer, raw: bytes) -> None:
        await serve_websocket(srv, peer, raw, session)

    async def https(srv: Server, peer: Peer) -> None:
        await serve_https(srv, peer, api, bound.mqtt_port, websocket)

    async def mqtt(srv: Server, peer: Peer) -> None:
        await serve_mqtt(srv, peer, devices)

    server.start({"https": https, "mqtt": mqtt})
    return Running(server, devices, bound.host, bound.port, bound.mqtt_port)


def start(
    store: Store,
    options: Options | None = None,
    *,
    host: str,
    port: int,
    mqtt_port: int | None = None,
    cert: Path,
    key: Path,
    ca: Path | None,
    log: RequestLog,
    clock: Clock | None = None,
    limits: Limits | None = None,
) -> Running:
    """Bind and serve in one step (in-process use and tests)."""
    bound = bind(host, port, mqtt_port, log, limits=limits, ca=ca)
    try:
        return launch(bound, store, options or Options(), cert=cert, key=key, ca=ca, clock=clock)
    except BaseException:
        bound.server.stop()
        raise
