"""Running `dpsctl serve` from the command line: the store, TLS material, the start banner, and a clean stop."""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
from pathlib import Path

from dpsctl import __version__
from dpsctl.core.errors import InvalidInput
from dpsctl.server.faults import Fault, Options
from dpsctl.server.listener import disable_core_dumps
from dpsctl.server.log import RequestLog
from dpsctl.server.runtime import bind, launch, prepare
from dpsctl.server.tls import DEV_FOLDER, TlsFiles, check_server_files, dev_tls
from dpsctl.store import open_store


def tls_files(db: str, host: str, tls_cert: str | None, tls_key: str | None) -> TlsFiles:
    """The certificate the user gave, or the development CA's (made once, in the store's folder)."""
    if tls_cert and tls_key:
        cert, key = Path(tls_cert), Path(tls_key)
        check_server_files(cert, key)
        return TlsFiles(cert, key, None)
    if db == ":memory:":
        folder = Path(tempfile.mkdtemp(prefix="dpsctl-serve-"))
    else:  # beside a store file; for a database URL, in the current folder (never in a folder named `postgresql:`)
        folder = (Path.cwd() if "://" in db else Path(db).resolve().parent) / DEV_FOLDER
    return dev_tls(folder, host)


def run(
    *,
    db: str,
    host: str,
    port: int,
    mqtt_port: int,
    tls_cert: str | None,
    tls_key: str | None,
    fast: bool,
    assigning_delay: float,
    inject: list[str],
    registrations_per_minute: int | None,
    webhook_timeout: float,
    allocation_workers: int,
    quiet: bool,
) -> int:
    """Serve until Ctrl-C or SIGTERM; returns the exit code."""

    faults = tuple(Fault.parse(text) for text in inject)
    if not host.strip():
        raise InvalidInput("--host is empty", hint="use 127.0.0.1 (the default), localhost, ::1 or 0.0.0.0")
    options = Options(
        fast=fast,
        assigning_delay=assigning_delay,
        faults=faults,
        registrations_per_minute=registrations_per_minute,
        webhook_timeout=webhook_timeout,
        host_names=frozenset({host.lower()}),
        allocation_workers=allocation_workers,
    )
    if tls_cert and tls_key:
        check_server_files(Path(tls_cert), Path(tls_key))
    disable_core_dumps()
    log = RequestLog(sys.stderr, quiet=quiet)
    bound = bind(host, port, mqtt_port or None, log)  # before the store or the TLS files are touched
    store = None
    try:
        store = open_store(db)
        settings = prepare(store)
        files = tls_files(db, host, tls_cert, tls_key)
        running = launch(bound, store, options, cert=files.cert, key=files.key, ca=files.ca)
    except BaseException:
        bound.server.stop()
        if store is not None:
            store.close()
        raise
    _banner(
        running.host, running.port, running.mqtt_port, store.location, store.backend, settings.id_scope, files, options
    )

    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if not running.server.alive:
                break
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        finished = running.stop()
        store.close()
        cut = "" if finished else "; requests still running were cut short (their transactions were not committed)"
        log.line(f"dpsctl serve stopped after {running.requests} requests{cut}", always=True)
    return 0


def _banner(
    host: str, port: int, mqtt_port: int | None, db: str, backend: str, id_scope: str, files: TlsFiles, options: Options
) -> None:
    shown = f"[{host}]" if ":" in host else host
    name = "localhost" if host in ("127.0.0.1", "::1", "0.0.0.0", "::", "localhost") else host
    lines = [f"dpsctl serve {__version__}: listening on https://{shown}:{port}"]
    if mqtt_port is not None:
        lines.append(
            f"  MQTT         mqtts://{shown}:{mqtt_port} (MQTT 3.1.1 over TLS); MQTT over WebSockets at wss://{shown}:{port}/$iothub/websocket"
        )
    lines.append(f"  store        {db} ({backend}), ID scope {id_scope}")
    if files.ca is not None:
        made = " (new: trust it once)" if files.created else ""
        lines.append(f"  trust CA     {files.ca}{made}")
    else:
        lines.append(f"  certificate  {files.cert} (clients must trust its issuer)")
    ca = str(files.ca or "<the CA of your --tls-cert>")
    python_port = (
        ""
        if mqtt_port == 8883
        else f" (the Python SDK connects to port 8883 only; this MQTT port is {mqtt_port})"
        if mqtt_port
        else " (MQTT is off: --mqtt-port 8883 turns it on)"
    )
    lines += [
        f"  Python SDK   ProvisioningDeviceClient.create_from_symmetric_key(provisioning_host={name!r}, registration_id=..., id_scope={id_scope!r}, symmetric_key=..., server_verification_cert=open({ca!r}).read()){python_port}",
        f"               websockets=True uses wss://{name}:443: run `dpsctl serve --port 443`"
        + ("" if port == 443 else f" (this HTTPS port is {port})"),
        f"  Node SDK     NODE_EXTRA_CA_CERTS={ca}; Http transport: https://{name}:{port}"
        + (f"; Mqtt transport: port {mqtt_port}" if mqtt_port else ""),
        f"  devices      PUT https://{name}:{port}/{id_scope}/registrations/{{registrationId}}/register",
        f"  service      https://{name}:{port} with `dpsctl service connection-string --port {port}`",
        "  answers      "
        + (
            "200 at once (--fast)"
            if options.fast
            else f"202 assigning, then 200 on the poll after {options.assigning_delay:g} s"
        ),
    ]
    faults = [f"{f.status} on {f.rate:.0%} of device requests (Retry-After {f.retry_after} s)" for f in options.faults]
    if options.registrations_per_minute:
        faults.append(f"quota {options.registrations_per_minute} registrations/minute (this instance)")
    if faults:
        lines.append("  faults       " + "; ".join(faults))
    lines.append("Stop with Ctrl-C (or SIGTERM).")
    print("\n".join(lines), flush=True)
