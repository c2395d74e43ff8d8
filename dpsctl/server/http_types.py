"""One HTTP request and response as the HTTPS front end hands them to the API code, free of any HTTP library."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.x509 import Certificate


@dataclass
class HttpRequest:
    """One HTTP request: method, target (path and query as sent), headers, body, the TLS client chain, the Host."""

    method: str
    target: str
    headers: dict[str, str]  # names lower-cased
    body: bytes = b""
    client_chain: tuple[Certificate, ...] = ()
    host: str = ""

    def header(self, name: str) -> str | None:
        """A header value, looked up case-insensitively."""
        return self.headers.get(name.lower())


@dataclass
class HttpResponse:
    """What to send back; `note` goes into the request's log line."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    note: str = ""
