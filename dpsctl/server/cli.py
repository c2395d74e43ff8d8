"""Running `dpsctl serve` from the command line: the store, TLS material, the start banner, and a clean stop."""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
from pathlib import Path

from dpsctl import __version__
from dpsctl.core.errors import InvalidInput
from dpsctl.server.api import Emulator, Fault, Options
from dpsctl.server.httpd import RequestLog, bind, launch
from dpsctl.server.tls import DEV_FOLDER, TlsFiles, check_server_files, dev_tls


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
    tls_cert: str | None,
    tls_key: str | None,
    fast: bool,
    assigning_delay: float,
    inject: list[str],
    registrations_per_minute: int | None,
    webhook_timeout: float,
    quiet: bool,
) -> int:
    """Serve until Ctrl-C or SIGTERM; returns the exit code."""
    from dpsctl.store import open_store

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
    )
    if tls_cert and tls_key:
        check_server_files(Path(tls_cert), Path(tls_key))
    log = RequestLog(sys.stderr, quiet=quiet)
    server = bind(host, port, log)  # before the store or the TLS files are touched
    store = None
    try:
        store = open_store(db)
        app = Emulator(store, options)
        settings = app.prepare()
        files = tls_files(db, host, tls_cert, tls_key)
        running = launch(server, app, cert=files.cert, key=files.key, ca=files.ca)
    except BaseException:
        server.server_close()
        if store is not None:
            store.close()
        raise
    _banner(running.host, running.port, store.location, store.backend, settings.id_scope, files, options)

    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if not running.thread.is_alive():
                break
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        finished = running.stop()
        store.close()
        cut = "" if finished else "; requests still running were cut short (their transactions were not committed)"
        log.line(f"dpsctl serve stopped after {running.server.requests} requests{cut}", always=True)
    return 0


def _banner(host: str, port: int, db: str, backend: str, id_scope: str, files: TlsFiles, options: Options) -> None:
    shown = f"[{host}]" if ":" in host else host
    name = "localhost" if host in ("127.0.0.1", "::1", "0.0.0.0", "::", "localhost") else host
    lines = [
        f"dpsctl serve {__version__}: listening on https://{shown}:{port}",
        f"  store        {db} ({backend}), ID scope {id_scope}",
    ]
    if files.ca is not None:
        made = " (new: trust it once)" if files.created else ""
        lines += [
            f"  trust CA     {files.ca}{made}",
            f"               Node: NODE_EXTRA_CA_CERTS={files.ca}",
            f"               Python: server_verification_cert=open({str(files.ca)!r}).read()",
        ]
    else:
        lines.append(f"  certificate  {files.cert} (clients must trust its issuer)")
    lines += [
        f"  devices      PUT https://{name}:{port}/{id_scope}/registrations/{{registrationId}}/register",
        f"  service      https://{name}:{port} with `dpsctl service connection-string --port {port}`",
        "  answers      " + ("200 at once (--fast)" if options.fast else f"202 assigning, then 200 on the poll after {options.assigning_delay:g} s"),
    ]
    faults = [f"{f.status} on {f.rate:.0%} of device requests (Retry-After {f.retry_after} s)" for f in options.faults]
    if options.registrations_per_minute:
        faults.append(f"quota {options.registrations_per_minute} registrations/minute")
    if faults:
        lines.append("  faults       " + "; ".join(faults))
    lines.append("Stop with Ctrl-C (or SIGTERM).")
    print("\n".join(lines), flush=True)
