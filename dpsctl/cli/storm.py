"""`dpsctl provision --batch FILE` and `--count N`: many devices in one process, and their summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpsctl.cli.context import STATE, now
from dpsctl.cli.render import Output, emit, format_bars, format_table
from dpsctl.core.errors import AllocationFailed, Disabled, DpsError, InvalidInput, Unauthorized

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

if TYPE_CHECKING:  # the engine is imported when the devices register, not when the CLI starts
    from dpsctl.core.provisioning import RegistrationRequest


def _scope() -> str:
    from dpsctl.core.service import load_service
    from dpsctl.store import open_store

    with open_store(STATE.db) as store, store.transaction(write=not store.exists()) as tx:
        return load_service(tx, now()).id_scope


def _group_key(group: str | None, group_key: str | None) -> str:
    from dpsctl.core.keys import decode_key

    if bool(group) == bool(group_key):
        raise InvalidInput("a storm (--count) needs exactly one of --group GROUP_ID or --group-key @KEY_FILE")
    if group_key:
        decode_key(group_key, what="group key")
        return group_key
    from dpsctl.core.enrollments import get_group
    from dpsctl.store import open_store

    with open_store(STATE.db) as store, store.transaction() as tx:
        entry = get_group(tx, group or "")
    if entry.attestation.type != "symmetricKey":
        raise InvalidInput(
            f"enrollment group {entry.id!r} uses {entry.attestation.type} attestation; a storm needs a symmetric-key group"
        )
    return entry.attestation.primary_key or ""


def storm_requests(scope: str, ids: Iterator[str], group_key: str, region: str | None) -> Iterator[RegistrationRequest]:
    """Each device derives its key from the group key and signs its own SAS token, as real devices do."""
    from dpsctl.core.attestation import SasCredential
    from dpsctl.core.keys import derive_device_key
    from dpsctl.core.provisioning import RegistrationRequest
    from dpsctl.core.sas import build_sas_token, device_resource_uri

    expiry = int(time.time()) + 3600
    for rid in ids:
        token = build_sas_token(device_resource_uri(scope, rid), derive_device_key(group_key, rid), expiry)
        yield RegistrationRequest(SasCredential(token), rid, None, region)


def batch_requests(scope: str, path: Path, region: str | None) -> Iterator[RegistrationRequest | DpsError]:
    """One request per line; a line whose credential cannot be built becomes a counted refusal, not a crash."""
    from dpsctl.cli.provision import credential as device_credential
    from dpsctl.core.batch import read_batch_file, read_text
    from dpsctl.core.provisioning import RegistrationRequest
    from dpsctl.core.untrusted_json import parse_json

    base = path.parent

    def local(name: str | None) -> str | None:
        # File columns are relative to the batch file, so a batch folder can be moved as a whole.
        return str(base / name) if name else None

    for line in read_batch_file(read_text(path), str(path)):
        f = line.fields
        try:
            credential = device_credential(
                scope,
                f.get("registrationId"),
                f.get("symmetricKey"),
                f.get("sasToken"),
                local(f.get("cert")),
                local(f.get("key")),
                local(f.get("chain")),
                local(f.get("tpm")),
            )
            payload = parse_json(f["payload"], "payload", limit_depth=True) if "payload" in f else None
            yield RegistrationRequest(credential, f.get("registrationId"), payload, f.get("region") or region)
        except DpsError as exc:
            yield InvalidInput(f"{path} line {line.number}: {exc.message}")


def _progress(total: int | None) -> tuple[Any, Any]:
    """A Rich progress bar on stderr when it is a terminal; nothing otherwise (CI logs stay clean)."""
    if not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "provisioning",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("devices", total=total)
    return bar, lambda n: bar.advance(task, n)


# The most serious outcome present names the error (and so the exit code, by the CLI's one table).
EXIT_ORDER: tuple[tuple[str, type[DpsError]], ...] = (
    ("unauthorized", Unauthorized),
    ("disabled", Disabled),
    ("failed", AllocationFailed),
    ("invalid", InvalidInput),
)


def _summary_table(doc: dict) -> str:
    """The summary of a batch or storm: totals and latency, refusals by reason, devices per hub."""
    latency = doc["latencyMs"]
    text = format_table(
        ("DEVICES", "ASSIGNED", "NOT ASSIGNED", "SECONDS", "DEVICES/S", "P50 MS", "P90 MS", "P99 MS"),
        [
            (
                doc["devices"],
                doc["assigned"],
                doc["devices"] - doc["assigned"],
                doc["seconds"],
                doc["devicesPerSecond"],
                latency["p50"],
                latency["p90"],
                latency["p99"],
            )
        ],
    )
    if doc["refusedByReason"]:
        text += "\n" + format_table(
            ("REFUSED", "REASON"), [(n, reason) for reason, n in doc["refusedByReason"].items()]
        )
    return text + "\n" + format_bars("devices per hub", doc["devicesPerHub"])


def run_many(
    *,
    batch: str | None,
    count: int | None,
    id_pattern: str,
    group: str | None,
    group_key: str | None,
    chunk_size: int,
    region: str | None,
    webhook_timeout: float,
    output: Output,
) -> None:
    """Run a batch file or a storm, print the summary, and fail unless every device was assigned."""
    from dpsctl.core.batch import run_batch, storm_ids
    from dpsctl.core.clock import utc_now
    from dpsctl.store import open_store

    if batch is not None and count is not None:
        raise InvalidInput("give --batch FILE or --count N, not both")
    if chunk_size < 1:
        raise InvalidInput("--chunk-size must be at least 1")
    if region is not None:
        from dpsctl.core.regions import normalize_region

        region = normalize_region(region)
    scope = _scope()
    requests: Iterator[RegistrationRequest | DpsError]
    if count is not None:
        key = _group_key(group, group_key)
        requests = storm_requests(scope, storm_ids(id_pattern, count), key, region)
    else:
        if group or group_key:
            raise InvalidInput("--group and --group-key are for a storm (--count)")
        requests = batch_requests(scope, Path(batch or ""), region)
    bar, advance = _progress(count)
    if bar:
        bar.start()
    try:
        with open_store(STATE.db) as store:
            summary = run_batch(
                store, requests, clock=utc_now, chunk_size=chunk_size, webhook_timeout=webhook_timeout, progress=advance
            )
    finally:
        if bar:
            bar.stop()
    doc = summary.to_dict()
    emit(doc, output, table=lambda: _summary_table(doc))
    if not summary.all_assigned:
        kind = next((k for status, k in EXIT_ORDER if summary.by_status.get(status)), AllocationFailed)
        raise kind(
            f"{doc['devices'] - doc['assigned']} of {doc['devices']} devices were not assigned",
            hint="see the summary; rerun one device with --explain",
        )
