"""Global state of one invocation (the store path) and the options shared by many commands."""

from __future__ import annotations

import ast
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer._click.core import ParameterSource

from dpsctl.cli.render import SELECTION, Output
from dpsctl.core.errors import InvalidInput, NotFound

if TYPE_CHECKING:  # for annotations only: the store package costs start-up time every command would pay
    from dpsctl.store import Transaction

# The store, the core's service settings and file helpers are imported where used: every command loads this
# module at start-up, and most of them need none of these before they run.

DEFAULT_DB = "dps.json"


class Invocation:
    """What the global options said: where the store is, and the output format given before the sub-command."""

    db: str = DEFAULT_DB
    stdin_taken_by: str | None = None  # the secret option that read stdin (`-`) in this invocation
    output: Output | None = None


STATE = Invocation()


def _global_output(ctx: typer.Context, param: typer.CallbackParam, value: Output) -> Output:
    """`dpsctl -o json hub list` and `dpsctl hub list -o json` mean the same; DPSCTL_OUTPUT yields to either."""
    if STATE.output is not None and ctx.get_parameter_source(param.name or "output") in (
        ParameterSource.DEFAULT,
        ParameterSource.ENVIRONMENT,
    ):
        return STATE.output
    return value


OUTPUT_HELP = "Output format: table, json, yaml, tsv (tab-separated values, no header) or none."
OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output", "-o", envvar="DPSCTL_OUTPUT", help=OUTPUT_HELP, case_sensitive=False, callback=_global_output
    ),
]


def _whole_values(value: bool) -> bool:
    SELECTION.whole_values = SELECTION.whole_values or value
    return value


ShowKeysOpt = Annotated[
    bool,
    typer.Option(
        "--show-keys",
        help="Include symmetric keys and hub keys in the output (tables then show every value whole).",
        callback=_whole_values,
    ),
]
EtagOpt = Annotated[
    str | None, typer.Option("--etag", help="Refuse unless the record still has this etag ('*' matches any).")
]
# az's options that name the Azure resource, on the commands that speak az's words: one store is one DPS.
DpsNameOpt = Annotated[
    str | None, typer.Option("--dps-name", "-n", help="The DPS name: accepted, one store is one DPS.")
]
ResourceGroupOpt = Annotated[
    str | None, typer.Option("--resource-group", "-g", help="Resource group: accepted, ignored.")
]

SharedOptions = dict[str, tuple[Any, Any]]  # parameter name: (its Annotated option, its default)
Command = TypeVar("Command", bound=Callable[..., None])


def shared_options(shared: SharedOptions, *, before: str | None = None) -> Callable[[Command], Command]:
    """Give a command the `shared` options, in --help just before its parameter `before` (or after all of its own).

    The command takes them as `**kwargs`; Typer reads the signature made here. Options declared once this way
    keep the same names, help and defaults on every command that has them.
    """

    def decorate(command: Command) -> Command:
        added = [
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind)
            for name, (kind, default) in shared.items()
        ]
        own = inspect.signature(command, eval_str=True).parameters
        params: list[inspect.Parameter] = []
        for param in own.values():
            if param.name == before:
                params += added
            if param.kind is not inspect.Parameter.VAR_KEYWORD:
                params.append(param)
        if before not in own:
            params += added
        # A function's own attributes (typeshed declares no __signature__ on it): what inspect.signature reads.
        command.__dict__["__signature__"] = inspect.Signature(params, return_annotation=None)
        command.__annotations__ = {param.name: param.annotation for param in params} | {"return": None}
        return command

    return decorate


# az's resource options as `shared_options` takes them: the commands that accept them need neither.
AZ_RESOURCE: SharedOptions = {"dps_name": (DpsNameOpt, None), "resource_group": (ResourceGroupOpt, None)}


@contextmanager
def session(*, write: bool = False) -> Iterator[Transaction]:
    """Open the store for one command: one read, at most one atomic write, locked when writing."""
    from dpsctl.store import open_store

    if not write:
        require_store(STATE.db)
    with open_store(STATE.db) as store:
        # A store that does not exist yet is created by the first command that needs it, so that command writes.
        with store.transaction(write=write or not store.exists()) as tx:
            if write:
                from dpsctl.core.service import load_service

                # A writing command creates the service settings with the store: a store begun by `hub add` would
                # otherwise have none, and `service show`, `export` or `keys sas` would then fail on it (exit 1).
                load_service(tx, now())
            yield tx


def require_store(path: str) -> None:
    """A command that only reads refuses a store that does not exist (exit 3), creating no file, not even a lock."""
    if path == ":memory:":
        return
    if "://" in path:  # a database URL: the store exists when its schema holds one
        from dpsctl.store import open_store

        with open_store(path) as store:
            if store.exists():
                return
    elif os.path.lexists(path):
        return

    where = f"the default store {path} (in {os.getcwd()})" if path == DEFAULT_DB else f"store {path}"
    raise NotFound(
        f"{where} does not exist; this command only reads",
        hint="create it with `dpsctl init` (or any command that writes, e.g. `dpsctl hub add NAME`), or name yours with --db PATH or DPSCTL_DB",
    )


def now():
    """The current time (UTC)."""
    from dpsctl.core.clock import utc_now

    return utc_now()


def read_file(path: str, what: str, *, limit: int = 16 * 1024 * 1024) -> bytes:
    """Read a user file, turning OS errors into a one-line InvalidInput (size-capped: no file is read unbounded)."""
    from dpsctl.core.safefiles import read_bounded

    return read_bounded(path, what, limit)


MAX_SECRET_BYTES = 64 * 1024
SECRET_FORMS = "the value itself, @FILE (read from FILE) or - (read from stdin)"


def secret_value(value: str | None, what: str) -> str | None:
    """A secret given as itself, as `@FILE` or as `-` (stdin), so that it need not appear in argv (`ps`).

    The file or stdin holds the secret alone; surrounding white space (the final newline) is dropped.
    Keys, SAS tokens and connection strings never start with '@', and none is a lone '-'.
    """
    if value is None:
        return None

    if value == "-":
        if STATE.stdin_taken_by is not None:
            raise InvalidInput(
                f"{what} and {STATE.stdin_taken_by} both read stdin (-); only one can",
                hint="give the other one as @FILE",
            )
        STATE.stdin_taken_by = what
        data = (
            sys.stdin.buffer.read(MAX_SECRET_BYTES + 1)
            if hasattr(sys.stdin, "buffer")
            else sys.stdin.read(MAX_SECRET_BYTES + 1).encode()
        )
        if len(data) > MAX_SECRET_BYTES:
            raise InvalidInput(f"{what} on stdin is longer than {MAX_SECRET_BYTES} bytes")
        source = "stdin"
    elif value.startswith("@"):
        data = read_file(value[1:], what, limit=MAX_SECRET_BYTES)
        source = value[1:]
    else:
        return value
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} in {source} is not UTF-8 text") from None
    if not text:
        raise InvalidInput(f"{what} in {source} is empty")
    if "\n" in text:
        raise InvalidInput(f"{what} in {source} has more than one line; the file must hold the secret alone")
    return text


def secret_option(flag: str, what: str, help_text: str, *, envvar: str | None = None, **extra: Any) -> object:
    """A typer.Option for a secret: the value, @FILE or - (stdin), and an environment variable where scripts need one."""
    more = f" Also {SECRET_FORMS.split(', ', 1)[1]}" + (f"; or set {envvar}." if envvar else ".")
    return typer.Option(
        flag,
        help=help_text + more,
        envvar=envvar,
        show_envvar=False,
        callback=lambda value: secret_value(value, what),
        **extra,
    )


def read_stdin(limit: int) -> bytes:
    """Standard input as bytes (for `-` in place of a file), size-capped like a file."""
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise InvalidInput(f"standard input is over {limit // (1024 * 1024)} MiB; dpsctl reads at most that")
    return data


def json_arg(value: str, what: str, *, lenient: bool = False) -> object:
    """A JSON value given inline, or `@FILE`, or a file path (for --initial-twin FILE_OR_JSON).

    `lenient` also takes what az's shell_safe_json_parse takes: Python-literal JSON with single quotes,
    as Microsoft's examples write it (--initial-twin-tags "{'location': {'region': 'US'}}").
    """
    from dpsctl.core.untrusted_json import check_value, parse_json

    text = value
    if value.startswith("@"):
        text = read_file(value[1:], what).decode("utf-8", "replace")
    elif not value.lstrip().startswith(("{", "[", '"')) and os.path.exists(value):
        text = read_file(value, what).decode("utf-8", "replace")
    try:
        return parse_json(text, what, limit_depth=True)
    except InvalidInput as exc:
        if lenient and text.lstrip().startswith(("{", "[")):
            literal = _python_literal(text)
            if literal is not None:
                return check_value(literal, what)
        if value.endswith((".yaml", ".yml")):
            from dpsctl.core.transfer import load_yaml

            # The import loader: safe (no Python tags) and refusing anchors/aliases, whose expansion is exponential.
            return check_value(load_yaml(text, what), what)
        raise exc.amended(hint=exc.hint or "give inline JSON, @FILE, or a file path") from exc


def _python_literal(text: str) -> object | None:
    """A dict or list written as a Python literal ({'a': 'b'}), or None; size-capped, no code runs (ast.literal_eval)."""
    if len(text) > 1024 * 1024:
        return None
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    if not isinstance(value, (dict, list)):
        return None

    try:
        return json.loads(json.dumps(value))  # JSON types only: a set, bytes or complex number is not JSON
    except (TypeError, ValueError, RecursionError):
        return None
