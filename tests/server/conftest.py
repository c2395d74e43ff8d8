"""`dpsctl serve` in-process on a free port, over the same store file as the `dps` CLI runner (client: tests/helpers/server.py)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from dpsctl.server.faults import Options
from dpsctl.server.log import RequestLog
from dpsctl.server.runtime import Running, prepare, start
from dpsctl.server.tls import TlsFiles, dev_tls
from tests.helpers.constants import ID_SCOPE
from tests.helpers.server import Served


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """The development CA and server certificate, made once for the session."""
    return dev_tls(tmp_path_factory.mktemp("serve-tls"), "127.0.0.1")


@pytest.fixture
def serve(dps, tls_files):
    """A factory: start the emulator over the `dps` store (initialised with ID_SCOPE and a hub) with options."""
    started: list[Running] = []

    def make(*, init: bool = True, hubs: tuple[str, ...] = ("hub-a",), mqtt: bool = True, clock: Any = None, limits: Any = None, **options: Any) -> Served:
        if init:
            dps.ok("init", "--id-scope", ID_SCOPE)
            for hub in hubs:
                dps.ok("hub", "add", hub)
        from dpsctl.store import open_store

        store = open_store(dps.store)
        settings = prepare(store)
        log = io.StringIO()
        running = start(
            store,
            Options(**options),
            host="127.0.0.1",
            port=0,
            mqtt_port=0 if mqtt else None,
            cert=tls_files.cert,
            key=tls_files.key,
            ca=tls_files.ca,
            log=RequestLog(log),
            clock=clock,
            limits=limits,
        )
        started.append(running)
        return Served(running, tls_files, log, settings.service_key)

    yield make
    for running in started:
        running.stop()
