"""Fixtures of the security suite: the hostile-input files, a local misbehaving webhook, and a prepared store."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.backends import STORE_FILES
from tests.helpers.cli import Dps
from tests.helpers.webhook import PROXY_VARIABLES, Answer, Trap, Webhook
from tests.security.hostile_cases import Files, build_store


@dataclass
class LocalWebhook:
    """A local HTTP server whose paths misbehave (tests/helpers/webhook.py), and a trap port that records any connection."""

    hook: Webhook
    trap: Trap

    @property
    def base(self) -> str:
        return self.hook.base_url

    @property
    def trap_port(self) -> int:
        return self.trap.port

    @property
    def trap_connections(self) -> list[bytes]:
        return self.trap.connections

    @property
    def received(self) -> list[tuple[str, str]]:
        """(method, path without the query) of every request."""
        return [(request["method"], request["path"].split("?")[0]) for request in self.hook.requests]


def _redirect(status: int, location: str) -> Answer:
    return Answer(status, b"", {"Location": location})


@pytest.fixture(scope="session")
def local_webhook() -> Iterator[LocalWebhook]:
    hook, trap = Webhook().start(), Trap().start()
    drip_body = b'{"iotHubHostName": "hub-a.azure-devices.net"}'
    hook.paths = {
        "/to-file": _redirect(302, "file:///etc/passwd"),
        "/to-ftp": _redirect(302, f"ftp://127.0.0.1:{trap.port}/allocate"),
        "/to-https": _redirect(307, f"https://127.0.0.1:{trap.port}/allocate"),
        "/to-http": _redirect(302, f"{hook.base_url}/garbage"),
        "/fail": Answer(500, b"oops", {"Content-Type": "text/html"}),
        "/drip": Answer(200, drip_body, drip=0.2),
    }
    hook.respond = lambda request: Answer(200, b"<html>not json</html>", {"Content-Type": "text/html"})
    try:
        yield LocalWebhook(hook, trap)
    finally:
        hook.stop()
        trap.stop()


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment would send the local webhook calls elsewhere.
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: a 0600 file must be 0600 because dpsctl says so, not because of the umask."""
    old = os.umask(0)
    yield
    os.umask(old)


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
