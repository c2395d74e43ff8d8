"""Global state of one invocation (the store path) and the options shared by many commands."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from dpsctl.cli.render import Output

DEFAULT_DB = "dps.json"


class Invocation:
    """What the root callback parsed: where the store is."""

    db: str = DEFAULT_DB


STATE = Invocation()

OutputOpt = Annotated[
    Output,
    typer.Option("--output", "-o", envvar="DPSCTL_OUTPUT", help="Output format: table, json or yaml.", case_sensitive=False),
]
ShowKeysOpt = Annotated[bool, typer.Option("--show-keys", help="Include symmetric keys and hub keys in the output.")]
EtagOpt = Annotated[str | None, typer.Option("--etag", help="Refuse unless the record still has this etag ('*' matches any).")]


@contextmanager
def session(*, write: bool = False) -> Iterator[object]:
    """Open the store for one command: one read, at most one atomic write, locked when writing."""
    from dpsctl.store import open_store

    with open_store(STATE.db) as store:
        # A store that does not exist yet is created by the first command that needs it, so that command writes.
        with store.transaction(write=write or not store.exists()) as tx:
            if write:
                from dpsctl.core.service import load_service

                # A writing command creates the service settings with the store: a store begun by `hub add` would
                # otherwise have none, and `service show`, `export` or `keys sas` would then fail on it (exit 1).
                load_service(tx, now())
            yield tx


def now():  # noqa: ANN201 - datetime, imported lazily
    """The current time (UTC)."""
    from dpsctl.core.clock import utc_now

    return utc_now()


def read_file(path: str, what: str, *, limit: int = 16 * 1024 * 1024) -> bytes:
    """Read a user file, turning OS errors into a one-line InvalidInput (size-capped: no file is read unbounded)."""
    from dpsctl.core.errors import InvalidInput

    try:
        size = os.path.getsize(path)
        if size > limit:
            raise InvalidInput(f"{what} {path} is {size // (1024 * 1024)} MiB; dpsctl reads files of at most {limit // (1024 * 1024)} MiB")
        with open(path, "rb") as handle:
            return handle.read(limit + 1)
    except FileNotFoundError:
        raise InvalidInput(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"{what} {path} is a directory") from None
    except PermissionError:
        raise InvalidInput(f"{what} {path} is not readable (permission denied)") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror}") from None


def json_arg(value: str, what: str) -> object:
    """A JSON value given inline, or `@FILE`, or a file path (for --initial-twin FILE_OR_JSON)."""
    from dpsctl.core.errors import InvalidInput
    from dpsctl.core.jsondepth import check_depth, parse_json

    text = value
    if value.startswith("@"):
        text = read_file(value[1:], what).decode("utf-8", "replace")
    elif not value.lstrip().startswith(("{", "[", '"')) and os.path.exists(value):
        text = read_file(value, what).decode("utf-8", "replace")
    try:
        return parse_json(text, what, limit_depth=True)
    except InvalidInput as exc:
        if value.endswith((".yaml", ".yml")):
            from dpsctl.core.transfer import _load_yaml

            # The import loader: safe (no Python tags) and refusing anchors/aliases, whose expansion is exponential.
            return check_depth(_load_yaml(text, what), what)
        exc.hint = exc.hint or "give inline JSON, @FILE, or a file path"
        raise
