"""Custom allocation: build the DPS AllocationRequest, call a webhook or local command, check its answer."""

from __future__ import annotations

import copy
import http.client
import json
import os
import shlex
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from dpsctl.core.errors import AllocationFailed, InvalidInput
from dpsctl.core.untrusted_json import check_depth, check_value, parse_json

# Far above any sane answer (DPS messages are capped at 96 KB) yet small enough that a runaway
# webhook or command cannot make us parse an unbounded document.
MAX_RESPONSE_BYTES = 1024 * 1024

_ATTESTATION_KINDS = ("x509", "symmetricKey", "tpm")
_STDERR_EXCERPT_CHARS = 200
_USER_AGENT = "dpsctl-custom-allocation"


@dataclass(frozen=True)
class AllocationResponse:
    """What a custom allocator decided: the hub (as spelled in linkedHubs), optional initial twin and payload."""

    iot_hub_host_name: str
    initial_twin: dict | None
    payload: object | None


def build_allocation_request(
    *,
    enrollment: dict,
    is_group: bool,
    registration_id: str,
    linked_hubs: list[str],
    current_hub: str | None = None,
    current_device_id: str | None = None,
    attestation: dict | None = None,
    payload: object | None = None,
) -> dict:
    """Build the AllocationRequest body DPS posts to a custom allocation webhook."""
    enrollment_key = "enrollmentGroup" if is_group else "individualEnrollment"
    return {
        # Copies, so a webhook result or later edits never alias the caller's records.
        enrollment_key: _masked_enrollment(enrollment),
        "deviceRuntimeContext": _device_runtime_context(
            registration_id, current_hub, current_device_id, attestation, payload
        ),
        "linkedHubs": list(linked_hubs),
    }


def parse_allocation_response(body: bytes | str, linked_hubs: list[str], *, source: str) -> AllocationResponse:
    """Check an AllocationResponse body against the linked hubs; `source` names the allocator in errors."""
    document = _decode_json_object(body, source)
    # The payload and twin are stored and printed: one nested too deep would fail there with RecursionError.
    check_depth(document, f"the answer of {source}", AllocationFailed)
    if document.get("payload") is not None:  # kept in the registration record: the one limit of values from outside
        check_value(document["payload"], f"the payload answered by {source}", AllocationFailed)
    hub = _linked_hub(document, linked_hubs, source)
    return AllocationResponse(
        iot_hub_host_name=hub,
        initial_twin=_initial_twin(document.get("initialTwin"), source),
        payload=document.get("payload"),
    )


def call_webhook(url: str, request: dict, *, timeout: float = 10.0) -> AllocationResponse:
    """POST the AllocationRequest to an http(s) webhook and parse its answer."""
    source = f"webhook {redacted_url(url)}"
    http_request = urllib.request.Request(
        url,
        data=json.dumps(request).encode("utf-8"),
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        },
        method="POST",
    )
    body = _post(http_request, source, timeout)
    return parse_allocation_response(body, request.get("linkedHubs", []), source=source)


def call_command(command: str, request: dict, *, timeout: float = 10.0) -> AllocationResponse:
    """Run a local allocation command (no shell) with the AllocationRequest on stdin and parse its stdout."""
    argv = _command_argv(command)
    # Only the program name: the rest of the command line may carry keys or tokens.
    source = f"allocation command '{os.path.basename(argv[0])}'"
    stdout = _run(argv, json.dumps(request).encode("utf-8"), source, timeout)
    return parse_allocation_response(stdout, request.get("linkedHubs", []), source=source)


def redacted_url(url: str) -> str:
    """scheme://host[:port]/path of a URL: no query, fragment or user info, which may hold function keys."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        # Never echo the URL itself: a mistyped one may still carry its ?code= key.
        raise InvalidInput(
            "the custom allocation webhook URL must start with http:// or https://",
            hint="for a local program, use an allocation command instead of a webhook URL",
        )
    try:
        port = parts.port
    except ValueError as error:
        raise InvalidInput("the custom allocation webhook URL has an invalid port") from error
    if not parts.hostname:
        raise InvalidInput("the custom allocation webhook URL has no host name")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    authority = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme.lower()}://{authority}{parts.path}"


def masked_webhook_url(url: str) -> str:
    """The webhook URL as DPS shows it in an AllocationRequest: a query (the `?code=` function key) becomes `?****`."""
    base, sep, _ = url.partition("?")
    return f"{base.partition('#')[0]}?****" if sep else url


def _masked_enrollment(enrollment: dict) -> dict:
    """A copy of the enrollment with its webhook key masked (DOC:concepts-custom-allocation shows `...?****`).

    dpsctl's `allocationCommand` is left out: it is no field of DPS's request, and a command line may carry a token.
    """
    masked = copy.deepcopy(enrollment)
    definition = masked.get("customAllocationDefinition")
    if isinstance(definition, dict):
        definition.pop("allocationCommand", None)
        if isinstance(definition.get("webhookUrl"), str):
            definition["webhookUrl"] = masked_webhook_url(definition["webhookUrl"])
    return masked


def _device_runtime_context(
    registration_id: str,
    current_hub: str | None,
    current_device_id: str | None,
    attestation: dict | None,
    payload: object | None,
) -> dict:
    context: dict[str, object] = {"registrationId": registration_id}
    if current_hub is not None:
        context["currentIotHubHostName"] = current_hub
    if current_device_id is not None:
        context["currentDeviceId"] = current_device_id
    context.update(_attestation_context(attestation))
    if payload is not None:
        context["payload"] = copy.deepcopy(payload)
    return context


def _attestation_context(attestation: dict | None) -> dict:
    if not attestation:
        return {}
    unknown = sorted(set(attestation) - set(_ATTESTATION_KINDS))
    if unknown or len(attestation) != 1:
        raise InvalidInput(
            f"the device runtime context takes one attestation kind, got: {', '.join(sorted(attestation))}",
            hint=f"use one of {', '.join(_ATTESTATION_KINDS)}",
        )
    return copy.deepcopy(attestation)


def _decode_json_object(body: bytes | str, source: str) -> dict:
    size = len(body.encode("utf-8") if isinstance(body, str) else body)
    if size > MAX_RESPONSE_BYTES:
        raise AllocationFailed(f"{source} answered with more than {MAX_RESPONSE_BYTES} bytes")
    try:
        # utf-8-sig: scripts on Windows like to start their output with a byte-order mark.
        text = body.decode("utf-8-sig") if isinstance(body, bytes) else body
    except UnicodeDecodeError as error:
        raise AllocationFailed(f"{source} answered with text that is not UTF-8") from error
    try:
        # NaN/Infinity are not JSON; accepting them would break re-serialising the payload later.
        document = parse_json(text, source, allow_nan=False)
    except InvalidInput as error:  # absurdly nested arrays too: still "not an AllocationResponse"
        raise AllocationFailed(f"{source} did not answer with JSON") from error
    if not isinstance(document, dict):
        raise AllocationFailed(f"{source} answered with JSON {_json_kind(document)}, not an object")
    return document


def _linked_hub(document: Mapping[str, object], linked_hubs: list[str], source: str) -> str:
    chosen = document.get("iotHubHostName")
    if chosen is None:
        raise AllocationFailed(f"{source} answered without iotHubHostName")
    if not isinstance(chosen, str):
        raise AllocationFailed(f"{source} answered with iotHubHostName {_json_kind(chosen)}, not a string")
    for hub in linked_hubs:
        if hub.lower() == chosen.lower():
            return hub
    raise AllocationFailed(
        f"{source} answered with iotHubHostName '{chosen}', which is not one of the linked hubs: "
        f"{', '.join(linked_hubs) or '(none)'}"
    )


def _initial_twin(twin: object, source: str) -> dict | None:
    # null means "no opinion": the enrollment's own initial twin then applies.
    if twin is None:
        return None
    checked = _as_object(twin, "initialTwin", source)
    _as_optional_object(checked.get("tags"), "initialTwin.tags", source)
    properties = _as_optional_object(checked.get("properties"), "initialTwin.properties", source)
    if properties is not None:
        _as_optional_object(properties.get("desired"), "initialTwin.properties.desired", source)
    return checked


def _as_optional_object(value: object, field: str, source: str) -> dict | None:
    return None if value is None else _as_object(value, field, source)


def _as_object(value: object, field: str, source: str) -> dict:
    if not isinstance(value, dict):
        raise AllocationFailed(f"{source} answered with {field} {_json_kind(value)}, not an object")
    return value


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _post(http_request: urllib.request.Request, source: str, timeout: float) -> bytes:
    # `timeout` bounds the whole call, not each socket read: a server that drips one byte at a time would
    # otherwise keep a provisioning run (and the store lock) waiting for ever. A watchdog shuts the socket
    # down at the deadline, which wakes any blocked read.
    connections: list[http.client.HTTPConnection] = []
    fired = threading.Event()
    watchdog = threading.Timer(timeout, _shut_down, args=(connections, fired))
    watchdog.daemon = True
    watchdog.start()
    try:
        with _opener(connections).open(http_request, timeout=timeout) as response:
            body: bytes = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as error:
        error.close()
        if fired.is_set():
            raise AllocationFailed(f"{source} did not answer within {timeout:g} s") from None
        raise _http_status_error(error.code, error.reason, source) from None
    except urllib.error.URLError as error:
        reason = TimeoutError() if fired.is_set() else error.reason
        raise _connection_error(reason, source, timeout) from None
    except TimeoutError:
        raise AllocationFailed(f"{source} did not answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as error:
        reason = TimeoutError() if fired.is_set() else error
        raise _connection_error(reason, source, timeout) from None
    finally:
        watchdog.cancel()
    if fired.is_set():
        # The deadline passed while the body was being read: what arrived may be cut short.
        raise AllocationFailed(f"{source} did not answer within {timeout:g} s")
    return body


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it could lead to another scheme (file:, ftp:) or host, or turn the POST into a GET.

    Declining every 3xx here (urllib's own handler follows http, https and ftp, and turns a POST into a GET)
    makes urllib report the answer as an HTTPError, which becomes an allocation failure.
    """

    def _decline(self, req, fp, code, msg, headers):
        return None

    http_error_301 = http_error_302 = http_error_303 = http_error_307 = http_error_308 = _decline


def _opener(connections: list[http.client.HTTPConnection]) -> urllib.request.OpenerDirector:
    """An opener that records its connections (for the watchdog) and follows no redirect."""

    def track(cls: type[http.client.HTTPConnection]):
        def make(*args: object, **kwargs: object) -> http.client.HTTPConnection:
            # urllib passes the host and its own keywords through unchanged: typing them here would only restate it.
            connection = cls(*args, **kwargs)  # type: ignore[arg-type]
            connections.append(connection)
            return connection

        return make

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(track(http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def __init__(self) -> None:
            self.tls = ssl.create_default_context()  # what urllib uses by default: verified against the system's CAs
            super().__init__(context=self.tls)

        def https_open(self, req):
            return self.do_open(track(http.client.HTTPSConnection), req, context=self.tls)

    return urllib.request.build_opener(_NoRedirects, Http, Https)


def _shut_down(connections: list[http.client.HTTPConnection], fired: threading.Event) -> None:
    """The watchdog's action: end every connection's I/O now."""
    fired.set()
    for connection in connections:
        sock = connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _http_status_error(status: int, reason: object, source: str) -> AllocationFailed:
    hint = None
    if status in (401, 403):
        hint = "an Azure Function needs its function key in the webhook URL (?code=...)"
    if 300 <= status < 400:
        hint = "dpsctl follows no redirect (not even http -> https): set the webhook URL to the address that answers"
    reason_text = f" {reason}" if isinstance(reason, str) and reason else ""
    return AllocationFailed(f"{source} answered HTTP {status}{reason_text}", hint=hint)


def _connection_error(reason: object, source: str, timeout: float) -> AllocationFailed:
    # `from None` at the call sites and hand-written texts: exception chains and reprs can embed the full URL.
    if isinstance(reason, TimeoutError):
        return AllocationFailed(f"{source} did not answer within {timeout:g} s")
    if isinstance(reason, ConnectionRefusedError):
        return AllocationFailed(f"{source} refused the connection", hint="is the webhook server running?")
    if isinstance(reason, socket.gaierror):
        return AllocationFailed(f"{source} has a host name that could not be resolved")
    if isinstance(reason, ssl.SSLError):
        return AllocationFailed(f"{source} failed the TLS handshake ({type(reason).__name__})")
    if isinstance(reason, ConnectionError):
        return AllocationFailed(f"{source} closed the connection without an answer")
    if isinstance(reason, http.client.HTTPException):
        return AllocationFailed(f"{source} answered with something that is not HTTP")
    return AllocationFailed(f"{source} could not be reached ({type(reason).__name__})")


def _command_argv(command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as error:
        raise InvalidInput(f"the allocation command cannot be parsed: {error}") from None
    if not argv:
        raise InvalidInput("the allocation command is empty")
    return argv


def _run(argv: list[str], stdin: bytes, source: str, timeout: float) -> bytes:
    # Not subprocess.run(capture_output=True): it buffers all output, and a command printing garbage without
    # end would fill memory (gigabytes within the timeout) before the size check. Here stdout is read up to
    # MAX_RESPONSE_BYTES + 1 and the command is killed beyond that; stderr keeps only its first bytes.
    try:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise AllocationFailed(f"{source} was not found", hint="give the full path or check PATH") from None
    except PermissionError:
        raise AllocationFailed(f"{source} is not executable") from None
    except OSError as error:
        raise AllocationFailed(f"{source} could not be started ({error.strerror or type(error).__name__})") from None
    stdout, stderr = bytearray(), bytearray()
    too_long = threading.Event()
    workers = [
        threading.Thread(target=_feed, args=(process.stdin, stdin), daemon=True),
        threading.Thread(
            target=_collect, args=(process.stdout, stdout, MAX_RESPONSE_BYTES + 1, process, too_long), daemon=True
        ),
        threading.Thread(target=_collect, args=(process.stderr, stderr, 4096, None, None), daemon=True),
    ]
    for worker in workers:
        worker.start()
    try:
        returncode = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AllocationFailed(f"{source} did not answer within {timeout:g} s; it was stopped") from None
    finally:
        for worker in workers:
            # A grandchild that keeps the pipes open must not hold us beyond the deadline.
            worker.join(timeout=1.0)
    if too_long.is_set():
        raise AllocationFailed(f"{source} answered with more than {MAX_RESPONSE_BYTES} bytes; it was stopped")
    if returncode != 0:
        raise AllocationFailed(f"{source} exited with status {returncode}{_stderr_excerpt(bytes(stderr))}")
    return bytes(stdout)


def _feed(pipe, data: bytes) -> None:
    """Write the request to the command's stdin; a command that does not read it is not an error."""
    try:
        pipe.write(data)
        pipe.close()
    except OSError:  # BrokenPipeError: the command exited or closed stdin without reading
        pass


def _collect(pipe, into: bytearray, limit: int, process, too_long) -> None:
    """Read a pipe to its end, keeping at most `limit` bytes; with a process, kill it once the limit is passed."""
    with pipe:
        while chunk := pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536):
            room = limit - len(into)
            if room > 0:
                into += chunk[:room]
            if process is not None and len(into) >= limit:
                too_long.set()
                process.kill()
                return


def _stderr_excerpt(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", errors="replace").strip().splitlines()
    if not lines:
        return ""
    first = lines[0].strip()
    if len(first) > _STDERR_EXCERPT_CHARS:
        first = first[: _STDERR_EXCERPT_CHARS - 1] + "…"
    return f": {first}"
