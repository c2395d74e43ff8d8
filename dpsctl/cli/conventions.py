"""How every command reads and behaves in a shell, applied to each command as it is loaded (one place, no per-command code).

- help: plain text, conventional placeholders (TEXT, INTEGER, FILE, REGISTRATION_ID, the choices), whole
  summaries in command lists, repeatable options said to be repeatable;
- the global options `--db` and `--query` (and `-o` where a command has no output of its own) are accepted after
  the sub-command too, hidden from its help (the root help lists them);
- shell completion of stored IDs: enrollments, groups, hubs, CA names, registrations.
"""

import inspect
import os
import typing
from collections.abc import Callable
from enum import Enum
from pathlib import PurePath
from typing import Annotated, Any

import typer

from dpsctl.cli.context import DEFAULT_DB, STATE
from dpsctl.cli.render import SELECTION, Output

# The store is imported where used (completing names from it): every command loads this module at start-up.

_KINDS = {str: "TEXT", int: "INTEGER", float: "NUMBER", bool: "BOOLEAN"}
_CLICK_KINDS = {
    "text": "TEXT",
    "integer": "INTEGER",
    "float": "NUMBER",
    "boolean": "BOOLEAN",
    "path": "PATH",
    "filename": "FILE",
}


# --------------------------------------------------------------------------- placeholders


def is_option(param: Any) -> bool:
    """True for an option, False for a positional argument."""
    return getattr(param, "param_type_name", None) == "option" or any(o.startswith("-") for o in param.opts)


def value_kind(param: Any) -> str:
    """What a parameter takes: TEXT, INTEGER, NUMBER, FILE, DIR, or its choices joined by '|' (a declared metavar wins for options)."""
    declared = getattr(param, "declared_metavar", None)
    if declared:
        return declared
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    if annotation is not None:
        origin = typing.get_origin(annotation)
        if origin in (list, tuple, set, typing.Union) or str(origin) == "types.UnionType":
            inner = [a for a in typing.get_args(annotation) if a is not type(None) and a is not Ellipsis]
            annotation = inner[0] if inner else str
        if isinstance(annotation, type) and issubclass(annotation, Enum):
            return "|".join(str(member.value) for member in annotation)
        if isinstance(annotation, type) and issubclass(annotation, PurePath):
            return "PATH"
        return _KINDS.get(annotation, "TEXT")
    click_type = getattr(param, "type", None)
    choices = getattr(click_type, "choices", None)
    if choices:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    return _CLICK_KINDS.get(getattr(click_type, "name", "text"), "TEXT")


def argument_name(param: Any) -> str:
    """An argument's placeholder: REGISTRATION_ID (a declared metavar wins)."""
    return (getattr(param, "declared_metavar", None) or param.name).upper()


def _placeholders(param: Any) -> None:
    if not hasattr(param, "declared_metavar"):
        param.declared_metavar = param.metavar  # what the code declared, before this module fills it in
    if is_option(param):
        if not (getattr(param, "is_flag", False) or getattr(param, "count", False)):
            param.metavar = value_kind(param)
        return
    name = argument_name(param)
    param.metavar = name
    usage = (name if param.required else f"[{name}]") + ("..." if param.nargs != 1 else "")
    # Instance attributes: Typer's help calls these methods; the argument's own name is its placeholder.
    param.display_type_rich = lambda ctx=None: None
    param._usage_display_name = lambda: usage


def placeholders(params: list[Any]) -> None:
    """Conventional placeholders for the given parameters (the root's own, which `apply` does not visit)."""
    for param in params:
        if not getattr(param, "hidden", False):
            _placeholders(param)


def _repeatable(param: Any) -> None:
    if getattr(param, "multiple", False) and "Repeatable" not in (param.help or ""):
        param.help = ((param.help or "").rstrip() + " Repeatable.").strip()


# --------------------------------------------------------------------------- global options after the sub-command


_GLOBALS: dict[str, Any] = {}


def _global_params() -> dict[str, Any]:
    """Hidden copies of the root's --db, --query and -o, built once from a throw-away Typer command."""
    if _GLOBALS:
        return _GLOBALS

    def set_db(value: str | None) -> None:
        if value is not None:
            STATE.db = value

    def set_query(value: str | None) -> None:
        if value is not None:
            SELECTION.query = value

    def set_output(value: Output | None) -> None:
        if value is not None:
            STATE.output = value

    holder = typer.Typer(add_completion=False)

    @holder.command()
    def probe(
        db: Annotated[str | None, typer.Option("--db", hidden=True, expose_value=False, callback=set_db)] = None,
        query: Annotated[
            str | None, typer.Option("--query", hidden=True, expose_value=False, callback=set_query)
        ] = None,
        output: Annotated[
            Output | None,
            typer.Option("--output", "-o", hidden=True, expose_value=False, callback=set_output, case_sensitive=False),
        ] = None,
    ) -> None:
        """Never run: its parameters are reused."""

    for param in typer.main.get_command(holder).params:
        if param.name in ("db", "query", "output"):
            _GLOBALS[param.name] = param
    return _GLOBALS


def _add_globals(command: Any) -> None:
    taken = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for param in _global_params().values():
        if not taken & set(param.opts):
            command.params.append(param)


# --------------------------------------------------------------------------- completion of stored IDs

# (command noun or None for any, parameter name) -> (store kind, ID field)
_COMPLETE: dict[tuple[str | None, str], tuple[str, str]] = {
    ("enrollment", "registration_id"): ("enrollments", "registrationId"),
    ("registration", "registration_id"): ("registrations", "registrationId"),
    ("enrollment-group", "group_id"): ("groups", "enrollmentGroupId"),
    ("hub", "name"): ("hubs", "name"),
    ("ca", "name"): ("cas", "name"),
    (None, "hub"): ("hubs", "name"),
    (None, "enrollment_group"): ("groups", "enrollmentGroupId"),
    (None, "group"): ("groups", "enrollmentGroupId"),
    (None, "ca_ref"): ("cas", "name"),
    (None, "secondary_ca_ref"): ("cas", "name"),
}


def stored_ids(kind: str, field: str) -> Callable[[Any, Any, str], list[str]]:
    """A completion callback listing the IDs of one kind of record in the store (nothing if there is no store)."""

    def complete(ctx: Any, param: Any, incomplete: str) -> list[str]:
        root = ctx.find_root() if ctx is not None else None
        db = (root.params.get("db") if root is not None else None) or os.environ.get("DPSCTL_DB") or DEFAULT_DB
        if db == ":memory:" or not os.path.exists(db):
            return []  # completion never creates a store
        try:
            from dpsctl.store import open_store

            with open_store(db) as store, store.transaction() as tx:
                ids = sorted(str(doc.get(field, "")) for doc in tx.scan(kind))
        except Exception:  # noqa: BLE001 - a busy or damaged store just completes nothing
            return []
        return [i for i in ids if i.lower().startswith(incomplete.lower())]

    return complete


def _completion(noun: str | None, param: Any) -> None:
    target = _COMPLETE.get((noun, param.name)) or _COMPLETE.get((None, param.name) if is_option(param) else ("", ""))
    if target:
        param._custom_shell_complete = stored_ids(*target)


# --------------------------------------------------------------------------- applying them


def first_paragraph(text: str | None) -> str:
    """A command's summary: the first paragraph of its help, whole, on one line."""
    text = inspect.cleandoc((text or "").split("\f", 1)[0])
    return " ".join(text.split("\n\n", 1)[0].split())


def apply(command: Any, noun: str | None = None) -> None:
    """Give a loaded command (and its sub-commands) dpsctl's conventions."""
    command.rich_markup_mode = None
    subs = getattr(command, "commands", None)
    if subs:
        for sub in subs.values():
            sub.short_help = first_paragraph(sub.help)  # command lists show whole sentences
            apply(sub, noun)
    else:
        _add_globals(command)
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        _placeholders(param)
        _repeatable(param)
        _completion(noun, param)
