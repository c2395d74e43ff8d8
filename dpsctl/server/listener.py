"""The network side of `dpsctl serve`: one asyncio loop, TLS per connection, limits, and the blocking work pool.

Why asyncio: a connection costs a few kilobytes instead of a thread, so a thousand MQTT sessions held open
or thousands of slow clients cannot exhaust threads or descriptors; every phase of a connection has a
deadline. The engine and the store are synchronous, so requests run on a bounded thread pool; a request that
cannot get a worker or the store in time is refused with 503 and Retry-After instead of queueing without bound.

TLS is pyOpenSSL's over memory BIOs (tls_stream.py): the handshake takes any client certificate, the engine
judges the chain the client sent against the enrollments of that moment, and a certificate that matches no
enrollment gets DPS's 401, not a failed handshake.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from cryptography.x509 import Certificate
from OpenSSL import SSL

from dpsctl.core.errors import Conflict, DpsError, InvalidInput, StoreBusy
from dpsctl.server.log import RequestLog
from dpsctl.server.tls import describe_handshake_failure
from dpsctl.server.tls_stream import TlsConnection, TlsError

T = TypeVar("T")

STOP_GRACE = 5.0
PURGE_EVERY = 60.0


@dataclass(frozen=True)
class Limits:
    """Deadlines and caps that keep one client (or a thousand) from holding the server."""

    handshake_timeout: float = 10.0  # TCP accept to the end of the TLS handshake
    header_timeout: float = 10.0  # an HTTP request's head, or MQTT's CONNECT, once the connection is up
    request_timeout: float = 30.0  # a whole HTTP request (head and body)
    idle_timeout: float = 60.0  # an idle keep-alive HTTP connection
    max_connections: int = 10_000  # at once, all clients (lowered to fit the descriptor limit)
    max_per_address: int = 4_096  # at once, from one client address
    max_pending: int = 256  # requests waiting for a worker; beyond it: 503 at once
    workers: int = 16  # threads answering requests (engine and store calls)


@dataclass
class Peer:
    """One accepted connection after its TLS handshake: the client address, the TLS stream, the client's chain."""

    address: str
    tls: TlsConnection
    chain: tuple[Certificate, ...] = ()

    @property
    def reader(self) -> TlsConnection:
        """Where plaintext is read."""
        return self.tls

    @property
    def writer(self) -> TlsConnection:
        """Where plaintext is written."""
        return self.tls


Handler = Callable[["Server", Peer], Coroutine[Any, Any, None]]


class Server:
    """Listening sockets, the event loop that serves them (in a thread of its own), and the worker pool."""

    def __init__(
        self, tls: SSL.Context | None, log: RequestLog, *, limits: Limits | None = None, ca: Path | None = None
    ) -> None:
        self.tls = tls
        self.log = log
        self.limits = _fit_to_descriptors(limits or Limits())
        self.ca = ca
        self.requests = 0
        self.refused_connections = 0
        self._sockets: list[tuple[socket.socket, str]] = []
        self._handlers: dict[str, Handler] = {}
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=self.limits.workers, thread_name_prefix="dpsctl-serve")
        self._pending = 0
        self._in_flight = 0
        self._connections: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._last_refusal_log = 0.0
        self.on_tick: Callable[[], None] | None = None  # run on the pool now and then (expired operations)
        self.stopped = threading.Event()

    # -- binding and running

    def bind(self, host: str, port: int, name: str) -> int:
        """Take a port before anything is written; a taken port or a bad host is a DpsError. Returns the port."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _, _, _, address = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
                sock.listen(1024)
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            raise bind_error(exc, host, port, name) from None
        sock.setblocking(False)
        self._sockets.append((sock, name))
        return int(sock.getsockname()[1])

    def start(self, handlers: dict[str, Handler]) -> None:
        """Serve the bound sockets on the loop thread, each with the handler of its name."""
        self._handlers = dict(handlers)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._open(ready))
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="dpsctl-serve-loop", daemon=True)
        self._thread.start()
        ready.wait(10)

    async def _open(self, ready: threading.Event) -> None:
        for sock, name in self._sockets:
            accepted = self._accepting(self._handlers[name], name)

            def factory(
                accepted: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]] = accepted,
            ) -> asyncio.Protocol:
                return _PausedAtConnect(asyncio.StreamReader(limit=256 * 1024), accepted)

            server = await self._loop.create_server(factory, sock=sock)
            self._servers.append(server)
        self._spawn(self._housekeeping())
        ready.set()

    @property
    def alive(self) -> bool:
        """True while the loop thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> bool:
        """Stop accepting, let answers in progress finish (a few seconds at most), close; True when all finished."""
        if self.stopped.is_set():
            return True
        self.stopped.set()
        finished = True
        if self._thread is not None and self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            try:
                finished = future.result(STOP_GRACE + 5)
            except Exception:  # noqa: BLE001 - stopping must not fail
                finished = False
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_GRACE)
        for sock, _ in self._sockets:
            sock.close()
        self._pool.shutdown(wait=finished, cancel_futures=True)
        return finished

    async def _close(self) -> bool:
        for server in self._servers:
            server.close()
        deadline = time.monotonic() + STOP_GRACE
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        finished = self._in_flight == 0
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return finished

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(PURGE_EVERY)
            if self.on_tick is not None:
                try:
                    await self.blocking(self.on_tick)
                except DpsError:
                    pass  # busy now; next time

    # -- connections

    def _accepting(
        self, handler: Handler, name: str
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            address = str((writer.get_extra_info("peername") or ("?",))[0])
            if (
                sum(self._connections.values()) >= self.limits.max_connections
                or self._connections[address] >= self.limits.max_per_address
            ):
                self.refused_connections += 1
                self._log_refusal(address, name)
                writer.transport.abort()  # cheap: no handshake, no read
                return
            self._connections[address] += 1
            try:
                peer = await self._handshake(reader, writer, address, name)
                if peer is not None:
                    await handler(self, peer)
            except (ConnectionError, asyncio.IncompleteReadError, TlsError, TimeoutError):
                pass  # the client went away: nothing to tell anyone
            except asyncio.CancelledError:
                pass  # the server is stopping
            except Exception as exc:  # noqa: BLE001 - one bad connection must not stop the server
                self.log.line(f"{address} {name} connection error: {type(exc).__name__}: {exc}", always=True)
            finally:
                self._connections[address] -= 1
                if self._connections[address] <= 0:
                    del self._connections[address]
                writer.transport.abort()

        return accepted

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str, name: str
    ) -> Peer | None:
        if self.tls is None:
            return None  # bound but not launched: nothing to serve yet
        tls = TlsConnection(self.tls, reader, writer)
        if isinstance(writer.transport, asyncio.ReadTransport):
            writer.transport.resume_reading()  # paused at accept (_PausedAtConnect)
        try:
            await asyncio.wait_for(tls.handshake(), self.limits.handshake_timeout)
        except (TlsError, OSError, TimeoutError) as exc:
            self.log.line(f"{address} {name} TLS {describe_handshake_failure(exc, self.ca)}")
            return None
        return Peer(address, tls, tls.client_chain())

    def _log_refusal(self, address: str, name: str) -> None:
        now = time.monotonic()
        if now - self._last_refusal_log >= 1.0:  # one line a second at most: a flood must not flood the log
            self._last_refusal_log = now
            self.log.line(
                f"{address} {name} connection refused: {self.refused_connections} so far over the limit of {self.limits.max_connections} connections ({self.limits.max_per_address} per address)",
                always=True,
            )

    # -- blocking work

    async def blocking(self, call: Callable[[], T]) -> T:
        """Run an engine or store call on the worker pool; StoreBusy when the pool is saturated or the wait was too long."""
        if self._pending >= self.limits.max_pending:
            raise StoreBusy(f"{self._pending} requests are already waiting", hint="retry after the Retry-After seconds")
        self._pending += 1
        queued = time.monotonic()
        timeout = self.limits.request_timeout

        def timed() -> T:
            if time.monotonic() - queued > timeout:
                raise StoreBusy(
                    f"the request waited more than {timeout:g} s for a worker",
                    hint="retry after the Retry-After seconds",
                )
            return call()

        self._in_flight += 1
        try:
            return await self._loop.run_in_executor(self._pool, timed)
        finally:
            self._pending -= 1
            self._in_flight -= 1

    def count_request(self) -> None:
        """Count one answered request (printed when the server stops)."""
        self.requests += 1


class _PausedAtConnect(asyncio.StreamReaderProtocol):
    """A stream protocol that reads nothing until the connection is admitted (the caps) and TLS is set up."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()


def _fit_to_descriptors(limits: Limits) -> Limits:
    """Raise the soft descriptor limit to the hard one, and keep the connection cap below it with room to spare."""
    try:
        import resource  # Unix only: elsewhere the limits stay as they are

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        room = int(soft) - 64 - limits.workers * 4  # store files, the pool's, logs
    except (ImportError, ValueError, OSError):
        return limits
    if room < limits.max_connections:
        return replace(
            limits, max_connections=max(16, room), max_per_address=min(limits.max_per_address, max(16, room))
        )
    return limits


def bind_error(exc: OSError, host: str, port: int, name: str = "https") -> DpsError:
    """The one-line error for a port that cannot be taken."""
    option = "--mqtt-port" if name == "mqtt" else "--port"
    if exc.errno == errno.EADDRINUSE:
        return Conflict(
            f"port {port} on {host} is already in use",
            hint=f"stop the process listening there (see `ss -ltnp 'sport = :{port}'`), or pass another {option}",
        )
    if exc.errno == errno.EACCES:
        return InvalidInput(
            f"no permission to listen on port {port}",
            hint=f"ports below 1024 need root or CAP_NET_BIND_SERVICE; choose another {option}",
        )
    if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return InvalidInput(
            f"cannot listen on {host!r}: {exc.strerror or exc}",
            hint="use 127.0.0.1, localhost, ::1 or an address of this machine",
        )
    return InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def disable_core_dumps() -> None:
    """A core dump of `serve` would hold every key and the CA's private key: turn them off for this process."""
    try:
        import resource  # Unix only

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    if os.name == "posix":
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4: no core, and no ptrace by other same-user processes
        except (OSError, AttributeError):
            pass
