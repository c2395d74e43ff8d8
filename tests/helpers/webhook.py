"""A local allocation webhook (what an Azure Function is to DPS), and a bare TCP trap that records connections."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY")


@dataclass
class Answer:
    """One HTTP answer of the webhook; with `drip`, the whole response goes out one byte every `drip` seconds."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    drip: float | None = None


def as_answer(reply: Answer | tuple[Any, ...]) -> Answer:
    """(status, document) or (status, document, headers) as an Answer: bytes go as they are, anything else as JSON."""
    if isinstance(reply, Answer):
        return reply
    status, document, *headers = reply
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return Answer(status, body, *headers)


class Webhook:
    """A local HTTP server: records each request in `requests`, answers with `paths[path]` or `respond(body)`.

    A request record is {"method", "path" (with the query), "contentType", "body" (the JSON, or None)}.
    `delay` holds every answer that long, and `released` (set by `stop`) lets held answers go at once.
    """

    def __init__(self, path: str = "/api/allocate", key: str | None = "s3cret") -> None:
        self.requests: list[dict[str, Any]] = []
        self.respond: Callable[[Any], Answer | tuple[Any, ...]] = lambda request: (200, {"iotHubHostName": request["linkedHubs"][0]})
        self.paths: dict[str, Answer] = {}
        self.delay = 0.0
        self.released = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.webhook = self  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base_url}{path}" + (f"?code={key}" if key else "")
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._stopped = False

    def answer(self, document: Any, status: int = 200) -> None:
        """Answer every request with this JSON document."""
        self.respond = lambda request: (status, document)

    def start(self) -> Webhook:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release held answers, stop serving and close the port (twice is fine)."""
        self.released.set()
        if not self._stopped:
            self._stopped = True
            self.server.shutdown()
            self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        hook: Webhook = self.server.webhook  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        hook.requests.append({"method": self.command, "path": self.path, "contentType": self.headers.get("Content-Type"), "body": body})
        path = self.path.split("?")[0]
        answer = hook.paths[path] if path in hook.paths else as_answer(hook.respond(body))
        if hook.delay:
            hook.released.wait(hook.delay)
        head = [f"HTTP/1.1 {answer.status} {self.responses.get(answer.status, ('',))[0]}"]
        head += [f"{name}: {value}" for name, value in {**answer.headers, "Content-Length": str(len(answer.body))}.items()]
        data = "\r\n".join(head).encode() + b"\r\n\r\n" + answer.body
        try:
            if answer.drip is None:
                self.wfile.write(data)
                return
            for byte in data:
                if hook.released.wait(answer.drip):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:
            pass  # the client gave up (a timeout test)

    do_GET = do_POST

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature; quiet
        pass


class Trap:
    """A bare TCP listener that records the first bytes of every connection (a redirect target nobody should reach)."""

    def __init__(self) -> None:
        self.connections: list[bytes] = []
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(8)
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> Trap:
        """Accept connections in a daemon thread."""
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except OSError:
                continue  # the accept timeout: look at the stop flag again
            with conn:
                conn.settimeout(0.5)
                try:
                    self.connections.append(conn.recv(64) or b"(connected)")
                except OSError:
                    self.connections.append(b"(connected)")

    def stop(self) -> None:
        """Stop accepting and close the port."""
        self._stop.set()
        self._thread.join(2)
        self._socket.close()
