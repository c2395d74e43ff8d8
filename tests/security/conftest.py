"""Fixtures of the security suite: the hostile-input files, a local misbehaving webhook, and a prepared store."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers.backends import STORE_FILES
from tests.helpers.cli import Dps
from tests.security.hostile_cases import Files, build_store

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY")


@dataclass
class LocalWebhook:
    """A local HTTP server whose paths misbehave, and a bare TCP listener ("trap") that records any connection."""

    base: str
    trap_port: int
    received: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    trap_connections: list[bytes] = field(default_factory=list)  # first bytes of every connection to the trap
    stop: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        hook: LocalWebhook = self.server.hook  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?")[0]
        hook.received.append((self.command, path))
        if path == "/drip":
            self._drip(hook)
            return
        redirects = {
            "/to-file": (302, "file:///etc/passwd"),
            "/to-ftp": (302, f"ftp://127.0.0.1:{hook.trap_port}/allocate"),
            "/to-https": (307, f"https://127.0.0.1:{hook.trap_port}/allocate"),
            "/to-http": (302, f"{hook.base}/garbage"),
        }
        if path in redirects:
            status, location = redirects[path]
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, body = (500, b"oops") if path == "/fail" else (200, b"<html>not json</html>")
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, hook: LocalWebhook) -> None:
        body = b'{"iotHubHostName": "hub-a.azure-devices.net"}'
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        for byte in answer:
            if hook.stop.wait(0.2):
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return  # the client gave up, as it should

    do_POST = _answer
    do_GET = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture(scope="session")
def local_webhook() -> Iterator[LocalWebhook]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.settimeout(0.2)
    hook = LocalWebhook(base=f"http://127.0.0.1:{server.server_address[1]}", trap_port=trap.getsockname()[1])
    server.hook = hook  # type: ignore[attr-defined]

    def watch_trap() -> None:
        while not hook.stop.is_set():
            try:
                conn, _ = trap.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.5)
                try:
                    hook.trap_connections.append(conn.recv(64) or b"(connected)")
                except OSError:
                    hook.trap_connections.append(b"(connected)")

    threads = [
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True),
        threading.Thread(target=watch_trap, daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield hook
    finally:
        hook.stop.set()
        server.shutdown()
        server.server_close()
        trap.close()


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment would send the local webhook calls elsewhere.
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """The input files of the hostile cases, made on first use (big ones included) in a temporary folder."""
    return Files(tmp_path_factory.mktemp("hostile-files"))


@pytest.fixture(scope="session")
def _store_templates(tmp_path_factory: pytest.TempPathFactory, hostile_files: Files, local_webhook: LocalWebhook) -> Callable[[str], Path]:
    """The store every hostile case runs against, made once per backend through the CLI."""
    made: dict[str, Path] = {}

    def template(file_name: str) -> Path:
        if file_name not in made:
            path = tmp_path_factory.mktemp("hostile-store") / file_name
            build_store(Dps(path), hostile_files, local_webhook.base)
            made[file_name] = path
        return made[file_name]

    return template


@pytest.fixture
def hostile_store(_store_templates: Callable[[str], Path]) -> Callable[[Dps], None]:
    """Copy the prepared store (of the dps fixture's backend) to where `dps` looks for it."""

    def prepare(dps: Dps) -> None:
        source = _store_templates(dps.store.name)
        assert dps.store.name in STORE_FILES.values()
        for suffix in ("", "-wal", "-shm"):
            part = source.with_name(source.name + suffix)
            if part.exists():
                shutil.copy2(part, dps.store.with_name(dps.store.name + suffix))

    return prepare


def wait_for(condition: Callable[[], bool], seconds: float = 2.0) -> bool:
    """Poll `condition` until it holds or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
