"""Talking to a running `dpsctl serve`: an HTTPS client, the in-process emulator's handle, device tokens, and the
entry point started as a real process."""

from __future__ import annotations

import http.client
import io
import json
import queue
import re
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpsctl.core.sas import build_sas_token, device_resource_uri
from dpsctl.server.runtime import Running
from dpsctl.server.tls import TlsFiles
from tests.helpers import mqtt_wire as wire
from tests.helpers.constants import DEVICE_API, ID_SCOPE, SERVICE_API


@dataclass
class Reply:
    """One HTTP answer: status, headers (lower-case names) and the parsed JSON body."""

    status: int
    headers: dict[str, str]
    body: Any

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body!r})"


class Client:
    """An HTTPS client trusting the development CA, optionally presenting a client certificate."""

    def __init__(self, port: int, ca: Path, cert: str | None = None, key: str | None = None, host: str = "localhost") -> None:
        self.port = port
        self.host = host
        self.context = ssl.create_default_context(cafile=str(ca))
        if cert:
            self.context.load_cert_chain(cert, key)

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, *, api: str | None = SERVICE_API) -> Reply:
        if api and "api-version=" not in path:
            path += ("&" if "?" in path else "?") + f"api-version={api}"
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
        try:
            conn.request(method, path, body=data, headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})})
            response = conn.getresponse()
            raw = response.read()
            reply_headers = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        if raw:
            assert reply_headers.get("content-type", "").startswith("application/json"), reply_headers
        return Reply(response.status, reply_headers, json.loads(raw) if raw else None)


@dataclass
class Served:
    """A running emulator and what tests need to talk to it."""

    running: Running
    tls: TlsFiles
    log: io.StringIO
    service_key: str

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def mqtt_port(self) -> int:
        assert self.running.mqtt_port is not None
        return self.running.mqtt_port

    def client(self, cert: str | None = None, key: str | None = None) -> Client:
        return Client(self.port, self.tls.ca, cert, key)  # type: ignore[arg-type]

    def service(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, *, token: str | None = None) -> Reply:
        """A service API call signed like the Node service client (raw host as `sr`, the owner policy)."""
        auth = token or build_sas_token("localhost", self.service_key, int(time.time()) + 3600, key_name="provisioningserviceowner", encode_sr=False)
        return self.client().call(method, path, body, {"Authorization": auth, **(headers or {})})

    def register(self, registration_id: str, key: str | None = None, *, payload: Any = None, client: Client | None = None, scope: str = ID_SCOPE, encode_sr: bool = False, headers: dict[str, str] | None = None) -> Reply:
        """PUT .../register as the Node HTTP transport sends it (a SAS token when a key is given)."""
        body: dict[str, Any] = {"registrationId": registration_id}
        if payload is not None:
            body["payload"] = payload
        all_headers = dict(headers or {})
        if key:
            all_headers["Authorization"] = device_token(registration_id, key, encode_sr=encode_sr, scope=scope)
        return (client or self.client()).call("PUT", f"/{scope}/registrations/{registration_id}/register", body, all_headers, api=DEVICE_API)

    def poll(self, registration_id: str, operation_id: str, key: str | None = None, *, client: Client | None = None, settle: bool = True) -> Reply:
        if settle:
            self.settle()
        headers = {"Authorization": device_token(registration_id, key)} if key else {}
        return (client or self.client()).call("GET", f"/{ID_SCOPE}/registrations/{registration_id}/operations/{operation_id}", "{}", headers, api=DEVICE_API)

    def mqtt_register(self, registration_id: str, key: str) -> Any:
        """Register over MQTT as a device does (CONNECT with its SAS token, SUBSCRIBE, PUBLISH): the answer's JSON."""
        client = wire.RawMqtt(self.mqtt_port, self.tls.ca)
        try:
            client.send(wire.connect(registration_id, wire.username(ID_SCOPE, registration_id), device_token(registration_id, key, encode_sr=True)))
            client.send(wire.subscribe())
            client.send(wire.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", b"{}"))
            return client.response()[1]
        finally:
            client.close()

    def settle(self) -> None:
        """Wait until the allocations in flight are committed: a poll then sees the outcome (no sleeping)."""
        assert self.running.devices.wait_idle(30)

    def log_lines(self) -> list[str]:
        return [line for line in self.log.getvalue().splitlines() if line]


def device_token(registration_id: str, key: str, *, encode_sr: bool = False, scope: str = ID_SCOPE) -> str:
    """A device SAS token: raw `sr` as Node signs it, or URL-encoded as the Python SDK does."""
    return build_sas_token(device_resource_uri(scope, registration_id), key, int(time.time()) + 3600, encode_sr=encode_sr)


LISTENING = re.compile(r"listening on https://[\w.:\[\]-]+:(\d+)")


def start_serve(store: Path | str, *args: str, folder: Path | None = None, log_name: str = "serve.log") -> tuple[subprocess.Popen[str], int, str, Path]:
    """`python -m dpsctl --db STORE serve --port 0 ...`: the process, its port, the banner, and its stderr file.

    stderr goes to a file (`log_name` beside the store, or in `folder` for a database URL, which is also the
    process's working folder), so a long run never blocks on a full pipe.
    """
    folder = folder or Path(store).parent
    log = folder / log_name
    if "--mqtt-port" not in args:
        args = (*args, "--mqtt-port", "0")  # MQTT's default port 8883 may be taken on this machine: MQTT off
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dpsctl", "--db", str(store), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=folder,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in iter(proc.stdout.readline, "")] and None, daemon=True).start()  # type: ignore[union-attr]
    banner = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        banner += line
        if line.startswith("Stop with"):
            match = LISTENING.search(banner)
            assert match, banner
            return proc, int(match.group(1)), banner, log
    proc.kill()
    raise AssertionError(f"dpsctl serve did not start: {banner}{log.read_text()}")
