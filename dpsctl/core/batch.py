"""Many registrations in one process: batch files and provisioning storms, written in chunked transactions."""

from __future__ import annotations

import csv
import io
import json
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dpsctl.core.errors import DpsError, InvalidInput
from dpsctl.core.provisioning import (
    ALLOCATION_ROUNDS,
    Plan,
    ProvisionResult,
    RegistrationRequest,
    allocate,
    commit_plan,
    plan_registration,
    settle,
)
from dpsctl.core.untrusted_json import parse_json
from dpsctl.store import Store

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

BATCH_COLUMNS = ("registrationId", "symmetricKey", "sasToken", "cert", "key", "chain", "tpm", "payload", "region")
DEFAULT_CHUNK = 500
MAX_BATCH_BYTES = 256 * 1024 * 1024  # about two million devices of CSV; the whole file is held in memory
ALLOCATION_WORKERS = 8  # custom allocations (webhooks, commands) of one chunk run this many at a time


@dataclass(frozen=True)
class BatchLine:
    """One device of a batch file, as written (credentials are built when it is its turn)."""

    number: int
    fields: dict[str, str]


@dataclass
class BatchSummary:
    """What a batch or storm did: outcomes, refusals by reason, devices per hub, speed."""

    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    per_hub: Counter[str] = field(default_factory=Counter)
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))  # 8 bytes a device: a million fit in 8 MB
    seconds: float = 0.0

    @property
    def all_assigned(self) -> bool:
        """True when every device got a hub."""
        return self.total > 0 and self.by_status.get("assigned", 0) == self.total

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds (nearest rank)."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    def to_dict(self) -> dict[str, Any]:
        """The summary as `-o json` prints it."""
        return {
            "devices": self.total,
            "assigned": self.by_status.get("assigned", 0),
            "byStatus": dict(sorted(self.by_status.items())),
            "refusedByReason": dict(self.refusals.most_common()),
            "devicesPerHub": dict(sorted(self.per_hub.items())),
            "seconds": round(self.seconds, 3),
            "devicesPerSecond": round(self.total / self.seconds, 1) if self.seconds else None,
            "latencyMs": {
                p: round(self.percentile(q), 3) for p, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
            },
        }


def read_batch_file(text: str, source: str) -> list[BatchLine]:
    """Parse a CSV (with a header) or JSON Lines batch file; columns match the single-device flags."""
    lines: list[BatchLine] = []
    stripped = text.lstrip()
    if stripped.startswith("{"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            doc = parse_json(line, f"{source} line {number}")
            if not isinstance(doc, dict):
                raise InvalidInput(f"{source} line {number} must be a JSON object")
            lines.append(BatchLine(number, _check_columns(doc, source, number)))
        return lines
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise InvalidInput(f"{source} is empty", hint=f"CSV needs a header with some of: {', '.join(BATCH_COLUMNS)}")
    try:
        for row in reader:
            number = reader.line_num
            if None in row:
                raise InvalidInput(f"{source} line {number} has more fields than the header")
            lines.append(
                BatchLine(number, _check_columns({k: v for k, v in row.items() if v not in (None, "")}, source, number))
            )
    except csv.Error as exc:  # e.g. a field over the csv module's 128 KiB limit: the file's fault, not a bug
        raise InvalidInput(f"{source} line {reader.line_num + 1} is not valid CSV: {exc}") from None
    return lines


def _check_columns(doc: dict[str, Any], source: str, number: int) -> dict[str, str]:
    unknown = sorted(set(doc) - set(BATCH_COLUMNS))
    if unknown:
        raise InvalidInput(
            f"{source} line {number} has unknown column {unknown[0]!r}", hint=f"columns: {', '.join(BATCH_COLUMNS)}"
        )
    out: dict[str, str] = {}
    for key, value in doc.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def storm_ids(pattern: str, count: int, start: int = 1) -> Iterator[str]:
    """Registration IDs from a pattern such as 'sensor-{n:05d}'."""
    if count < 1:
        raise InvalidInput("--count must be at least 1")
    try:
        first = pattern.format(n=start)
    except (KeyError, IndexError, ValueError) as exc:
        raise InvalidInput(
            f"--id-pattern {pattern!r} is not a valid pattern ({exc})",
            hint="use {n} for the device number, e.g. sensor-{n:05d}",
        ) from None
    if first == pattern.format(n=start + 1):
        raise InvalidInput(f"--id-pattern {pattern!r} does not use {{n}}, so every device would get the same ID")
    for n in range(start, start + count):
        yield pattern.format(n=n)


def run_batch(
    store: Store,
    requests: Iterable[RegistrationRequest | DpsError],
    *,
    clock: Callable[[], datetime],
    chunk_size: int = DEFAULT_CHUNK,
    webhook_timeout: float = 10.0,
    progress: Callable[[int], None] | None = None,
    allocation_workers: int = ALLOCATION_WORKERS,
) -> BatchSummary:
    """Provision every request; each chunk of `chunk_size` devices is one store transaction, plus one per allocation round.

    The engine's phases (core/engine/), chunk by chunk: every device is planned in the chunk's write
    transaction, and those with a fast policy are committed in it; devices with a custom allocation are set aside,
    their webhooks or commands run `allocation_workers` at a time with no transaction held, and their decisions
    are settled in one more write transaction (a device whose enrollment changed meanwhile goes round once more).

    A request may be a DpsError instead (a line whose credential could not even be built): it counts as
    refused for that reason, and the run goes on.
    """
    summary = BatchSummary()
    started = time.perf_counter()
    pending = iter(requests)
    with ThreadPoolExecutor(max_workers=max(1, allocation_workers), thread_name_prefix="allocation") as pool:
        while True:
            chunk = [r for _, r in zip(range(chunk_size), pending, strict=False)]
            if not chunk:
                break
            waiting: list[tuple[Plan, float]] = []
            with store.transaction(write=True) as tx:
                for request in chunk:
                    t0 = time.perf_counter()
                    if isinstance(request, DpsError):
                        _tally_invalid(summary, request, t0)
                        continue
                    try:
                        plan = plan_registration(tx, request, clock())
                    except DpsError as exc:  # the request itself is unusable (an invalid registration ID, say)
                        _tally_invalid(summary, exc, None)
                        continue
                    if plan.needs_allocator:
                        waiting.append((plan, t0))
                    else:
                        _tally(summary, commit_plan(tx, plan, None, clock(), webhook_timeout=webhook_timeout), t0)
            for round_ in range(ALLOCATION_ROUNDS):
                if not waiting:
                    break
                decisions = list(pool.map(lambda item: allocate(item[0], webhook_timeout), waiting))
                again: list[tuple[Plan, float]] = []
                with store.transaction(write=True) as tx:
                    for (plan, t0), decision in zip(waiting, decisions, strict=False):
                        outcome = settle(
                            tx,
                            plan,
                            decision,
                            clock(),
                            webhook_timeout=webhook_timeout,
                            last=round_ == ALLOCATION_ROUNDS - 1,
                        )
                        if isinstance(outcome, ProvisionResult):
                            _tally(summary, outcome, t0)
                        else:
                            again.append((outcome, t0))
                waiting = again
            if progress:
                progress(len(chunk))
    summary.seconds = time.perf_counter() - started
    return summary


def _tally(summary: BatchSummary, result: ProvisionResult, t0: float) -> None:
    summary.by_status[result.status] += 1
    if result.assigned:
        summary.per_hub[result.operation["registrationState"]["assignedHub"]] += 1
    elif result.error is not None:
        summary.refusals[_reason(result.status, result.error.message)] += 1
    summary.latencies_ms.append((time.perf_counter() - t0) * 1000)
    summary.total += 1


def _tally_invalid(summary: BatchSummary, error: DpsError, t0: float | None) -> None:
    summary.by_status["invalid"] += 1
    summary.refusals[f"invalid: {error.message}"] += 1
    if t0 is not None:  # as before: a line that could not be built has a latency, a request the engine refused has none
        summary.latencies_ms.append((time.perf_counter() - t0) * 1000)
    summary.total += 1


def _reason(status: str, message: str) -> str:
    """Group refusals by kind: the message without the device-specific registration ID."""
    import re

    return f"{status}: " + re.sub(r"'[^']*'", "'…'", message)


def read_text(path: Path) -> str:
    """Read a batch file as text (at most MAX_BATCH_BYTES; a FIFO or a device is refused, not read)."""
    from dpsctl.core.safefiles import read_bounded

    try:
        return read_bounded(path, "batch file", MAX_BATCH_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"cannot read batch file {path}: {exc}") from None
