"""The HTTP face of `dpsctl serve`: the routing table from paths to the device service and the service API.

Device paths (reference §2) go to the transport-neutral `DeviceService`; service paths (reference §7) to
`ServiceApi`. A `Refusal` becomes the DPS error body with its code in `x-ms-error-code`; a core error is
mapped through the one table in errors.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from dpsctl.core.errors import DpsError
from dpsctl.server.device_service import DeviceReply, DeviceService, Presented
from dpsctl.server.errors import E_API_VERSION, E_METHOD, E_NO_RESOURCE, Refusal, error_body, refusal_for
from dpsctl.server.http_types import HttpRequest, HttpResponse
from dpsctl.server.service_api import ServiceApi

WEBSOCKET_PATH = "/$iothub/websocket"

DeviceCall = Callable[["HttpApi", HttpRequest, str, str, list[str]], DeviceReply]


@dataclass(frozen=True)
class DeviceRoute:
    """A device path: what follows `/{idScope}/registrations/{registrationId}`, its method, and the call."""

    rest: tuple[str, ...]  # lower-cased; "*" matches any one segment
    method: str
    call: DeviceCall

    def matches(self, rest: list[str]) -> bool:
        """True when the path's remaining segments fit this route."""
        return len(rest) == len(self.rest) and all(
            want in ("*", got.lower()) for want, got in zip(self.rest, rest, strict=False)
        )


def _register(api: HttpApi, request: HttpRequest, scope: str, registration_id: str, rest: list[str]) -> DeviceReply:
    return api.devices.register(scope, registration_id, api.presented(request), request.body)


def _operation(api: HttpApi, request: HttpRequest, scope: str, registration_id: str, rest: list[str]) -> DeviceReply:
    return api.devices.operation_status(scope, registration_id, rest[1], api.presented(request))


def _lookup(api: HttpApi, request: HttpRequest, scope: str, registration_id: str, rest: list[str]) -> DeviceReply:
    return api.devices.status_lookup(scope, registration_id, api.presented(request), request.body)


DEVICE_ROUTES = (
    DeviceRoute(("register",), "PUT", _register),
    DeviceRoute(("operations", "*"), "GET", _operation),
    DeviceRoute((), "POST", _lookup),
)
SERVICE_HEADS = ("enrollments", "enrollmentgroups", "registrations")


class HttpApi:
    """Answers one HTTP request; never raises for anything a client sends."""

    def __init__(self, devices: DeviceService, service: ServiceApi) -> None:
        self.devices = devices
        self.service = service

    def handle(self, request: HttpRequest) -> HttpResponse:
        """The response to one request."""
        try:
            return self._route(request)
        except Refusal as refusal:
            return refusal_response(refusal)
        except DpsError as exc:
            return refusal_response(refusal_for(exc))

    def presented(self, request: HttpRequest) -> Presented:
        """What an HTTPS device presents: the Authorization header and its TLS chain."""
        return Presented(request.header("Authorization"), request.client_chain)

    def _route(self, request: HttpRequest) -> HttpResponse:
        url = urlsplit(request.target)
        # Split before decoding, so that an encoded '/' stays inside its segment; empty segments (a trailing
        # slash, as the Node bulk call sends) are dropped.
        segments = [unquote(s) for s in url.path.split("/") if s]
        head = segments[0].lower() if segments else ""
        if head in SERVICE_HEADS:
            _require_api_version(url.query)
            return self.service.handle(request, segments)
        if len(segments) >= 3 and segments[1].lower() == "registrations":
            _require_api_version(url.query)
            return self._device(request, segments)
        if url.path == WEBSOCKET_PATH:
            raise Refusal(
                400,
                E_NO_RESOURCE,
                f"{WEBSOCKET_PATH} takes WebSocket upgrades only (subprotocol mqtt)",
                hint="connect with an MQTT-over-WebSocket client",
            )
        raise Refusal(
            404,
            E_NO_RESOURCE,
            f"no such resource: {url.path or '/'}",
            hint="device paths are /{idScope}/registrations/{id}/register; service paths start with /enrollments, /enrollmentGroups or /registrations",
        )

    def _device(self, request: HttpRequest, segments: list[str]) -> HttpResponse:
        scope, registration_id, rest = segments[0], segments[2], segments[3:]
        routes = [route for route in DEVICE_ROUTES if route.matches(rest)]
        if not routes:
            raise Refusal(404, E_NO_RESOURCE, f"no such device resource: {'/'.join(rest)}")
        route = routes[0]
        if request.method != route.method:
            raise Refusal(
                405,
                E_METHOD,
                f"{request.method} is not allowed here; use {route.method}",
                headers={"Allow": route.method},
            )
        reply = route.call(self, request, scope, registration_id, rest)
        headers = {"Retry-After": str(reply.retry_after)} if reply.retry_after is not None else {}
        if reply.status == 202 and route.rest == ("register",) and request.host:
            headers["Location"] = f"https://{request.host}/{scope}/registrations/{registration_id}/register"
        return HttpResponse(reply.status, reply.body, headers, note=reply.note)


def refusal_response(refusal: Refusal) -> HttpResponse:
    """The response for a refusal: the DPS error body and its code in `x-ms-error-code`."""
    headers = {"x-ms-error-code": str(refusal.code), **refusal.headers}
    return HttpResponse(
        refusal.status,
        error_body(refusal.code, refusal.message, refusal.hint),
        headers,
        note=f"{refusal.code} {refusal.message}",
    )


def _require_api_version(query: str) -> None:
    if not parse_qs(query).get("api-version"):
        raise Refusal(
            400,
            E_API_VERSION,
            "the api-version query parameter is missing",
            hint="add ?api-version=2021-10-01 (devices may use 2019-03-31)",
        )
