"""How `dpsctl serve` answers devices: its options, injected faults and the registration quota.

Both device front ends (HTTPS and MQTT) go through these, so a fault or a quota means the same on either.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from dataclasses import dataclass

from dpsctl.core.clock import Clock, SystemClock
from dpsctl.core.errors import InvalidInput
from dpsctl.server.errors import E_INJECTED, E_THROTTLED, Refusal

TRANSIENT_STATUSES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class Fault:
    """`--inject STATUS:RATE[:RETRY_AFTER]`: answer that share of device requests with STATUS."""

    status: int
    rate: float
    retry_after: int = 1

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse `429:0.1` or `503:0.05:5`."""
        parts = text.strip().split(":")
        hint = "write STATUS:RATE[:RETRY_AFTER], e.g. 429:0.1 (10% of device requests) or 503:0.05:5"
        try:
            status, rate = int(parts[0]), float(parts[1])
            retry_after = int(parts[2]) if len(parts) > 2 else 1
        except (ValueError, IndexError):
            raise InvalidInput(f"--inject {text!r} is not STATUS:RATE", hint=hint) from None
        if len(parts) > 3:
            raise InvalidInput(f"--inject {text!r} has too many parts", hint=hint)
        if status not in TRANSIENT_STATUSES:
            raise InvalidInput(
                f"--inject status {status} is not one devices retry on",
                hint=f"use one of {', '.join(map(str, TRANSIENT_STATUSES))} (clients give up on other errors)",
            )
        if not 0.0 <= rate <= 1.0 or math.isnan(rate):
            raise InvalidInput(f"--inject rate {parts[1]} is not between 0 and 1", hint=hint)
        if not 0 <= retry_after <= 3600:
            raise InvalidInput(f"--inject Retry-After {retry_after} is not 0..3600 seconds", hint=hint)
        return cls(status, rate, retry_after)


@dataclass(frozen=True)
class Options:
    """How the emulator answers: the `dpsctl serve` flags."""

    fast: bool = False
    assigning_delay: float = 0.0
    faults: tuple[Fault, ...] = ()
    registrations_per_minute: int | None = None
    webhook_timeout: float = 10.0
    host_names: frozenset[str] = frozenset()  # extra names a service SAS token's resource may use
    allocation_workers: int = 8


class FaultInjector:
    """Draws, per device request, whether an injected fault answers it."""

    def __init__(self, faults: tuple[Fault, ...], rng: random.Random | None = None) -> None:
        self.faults = faults
        self._rng = rng or random.Random()
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise the refusal of the first fault drawn, if any."""
        for fault in self.faults:
            with self._lock:
                hit = self._rng.random() < fault.rate
            if hit:
                code = E_THROTTLED if fault.status == 429 else E_INJECTED
                raise Refusal(
                    fault.status,
                    code,
                    f"injected fault: {fault.status} (dpsctl serve --inject)",
                    headers={"Retry-After": str(fault.retry_after)},
                )


class RateLimiter:
    """A sliding one-minute window over registrations (DPS's quota is 1,000 per minute per service).

    The window lives in this process: several `serve` instances on one store each enforce their own quota.
    """

    def __init__(self, per_minute: int | None, clock: Clock | None = None) -> None:
        self.per_minute = per_minute
        self._clock = clock or SystemClock()
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self) -> int | None:
        """None when admitted (and counted), else the seconds until a slot frees."""
        if self.per_minute is None:
            return None
        now = self._clock.monotonic()
        with self._lock:
            while self._times and self._times[0] <= now - 60.0:
                self._times.popleft()
            if len(self._times) >= self.per_minute:
                return max(1, math.ceil(self._times[0] + 60.0 - now))
            self._times.append(now)
            return None

    def check(self) -> None:
        """Raise 429 with Retry-After when the quota is used up."""
        wait = self.admit()
        if wait is not None:
            raise Refusal(
                429,
                E_THROTTLED,
                f"registration quota of {self.per_minute} per minute exceeded",
                headers={"Retry-After": str(wait)},
            )
