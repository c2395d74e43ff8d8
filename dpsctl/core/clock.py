"""Time stamps and etags in the formats DPS uses."""

from __future__ import annotations

import base64
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Clock(Protocol):
    """Where long-running code (the server) reads the time, so that tests can move it instead of sleeping."""

    def now(self) -> datetime:
        """The current UTC time (stored stamps and expiries use it: it means the same in every process)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines and rate windows inside one process)."""


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        """The current UTC time."""
        return utc_now()

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to: tests of expiry, Retry-After and quotas without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or utc_now()  # real "now" by default: SAS tokens made with time.time() stay valid
        self._mono = 1000.0

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    def monotonic(self) -> float:
        """The clock's monotonic seconds."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


def format_timestamp(moment: datetime) -> str:
    """DPS writes UTC times with seven fractional digits (.NET ticks); Python has six, so pad one."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def new_etag() -> str:
    """An enrollment etag: a JSON-quoted opaque string, as Cosmos DB (and so DPS) makes them."""
    return f'"{uuid.uuid4()}"'


def new_registration_etag() -> str:
    """A registration etag: DPS sends the Base64 of a quoted etag."""
    return base64.b64encode(new_etag().encode()).decode()


def same_etag(given: str, current: str | None) -> bool:
    """Compare a user-given etag with the stored one; quotes are optional on the command line."""
    if given == "*":
        return True
    return current is not None and given.strip().strip('"') == current.strip('"')


def new_operation_id() -> str:
    """An operation ID shaped like the ones DPS returns (`<n>.<16 hex>.<uuid>`)."""
    return f"5.{uuid.uuid4().hex[:16]}.{uuid.uuid4()}"


_history_lock = threading.Lock()
_last_history_ns = 0


def new_history_id() -> str:
    """A unique, time-ordered key for a history record: nanoseconds (never repeating in this process) and random bits.

    Replaces a shared sequence number in the service record, which every registration had to rewrite: the
    IDs of one process sort in the order it made them, and two writers never touch the same record.
    """
    global _last_history_ns
    with _history_lock:
        _last_history_ns = max(time.time_ns(), _last_history_ns + 1)
        stamp = _last_history_ns
    return f"{stamp:020d}.{secrets.token_hex(4)}"
