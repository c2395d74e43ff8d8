"""az's spellings on dpsctl's commands, so that `az iot dps ...` scripts run with the prefix replaced.

The table (`dpsctl.cli.az_aliases.ALIASES`) says, for each dpsctl command, which az commands it answers to
and which az options it takes. `install` applies it to a noun's commands as they are loaded:

- an az option that means what a dpsctl option means becomes extra names of that option, hidden from help;
- an az option whose value reads differently (`--eid ID` for the positional ID, `--provisioning-status
  enabled|disabled` for `--disabled`, `--edge-enabled true|false` for `--edge/--no-edge`, `--iot-hubs a b` for
  `--hub a --hub b`) is a hidden option, translated before the command runs;
- options that name the Azure resource (`--dps-name`, `--resource-group`, `--auth-type`) are accepted: one
  store is one DPS; `--login` is checked against the store;
- an az command whose path differs from dpsctl's (`enrollment create` is `enrollment add`) is a hidden copy
  of the dpsctl command at az's path.

az's three-state booleans (`--edge-enabled`, `--ee true`, `--show-keys false`) and space-separated lists
(`--iot-hubs a b`, `--ih "a b"`) are rewritten into Click's forms before Click parses (`normalize`).
"""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any

import typer
from typer._click.exceptions import MissingParameter, UsageError
from typer._click.globals import get_current_context
from typer.core import TyperGroup

from dpsctl.cli.app import load_command
from dpsctl.cli.context import STATE, now
from dpsctl.cli.render import SELECTION

# The alias table, the store and the service settings are imported where used: this module is loaded with
# every sub-command, and most need none of them.

# az's three-state flags take these words (get_three_state_flag: true/false, case-insensitive; yes/no as Click).
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")

# mypy wants an Enum's members spelled out; these come from the word lists above.
TriState = Enum("TriState", {w: w for w in (*_TRUE, *_FALSE)}, type=str)  # type: ignore[misc]
Status = Enum("Status", {"enabled": "enabled", "disabled": "disabled"}, type=str)
AuthType = Enum("AuthType", {"key": "key", "login": "login"}, type=str)
AZ_PREFIX = "dps "  # az paths are written after `az iot`: "dps enrollment create", "device registration create"


def tri_state(value: Any) -> bool | None:
    """A three-state option's value as a boolean (None: not given)."""
    if value is None:
        return None
    return (value.value if isinstance(value, Enum) else str(value)).lower() in _TRUE


def accept_bare(command: Any, names: tuple[str, ...]) -> None:
    """Let a command's az three-state options (`--verified`) be given bare, meaning true (sub-commands too)."""
    for sub in getattr(command, "commands", {}).values():
        accept_bare(sub, names)
    taken = {n for p in command.params for n in p.opts}
    if taken & set(names):
        _wrap_parse(command, taken & set(names), set(), set())


@dataclass(frozen=True)
class AzOption:
    """One az option: its spellings, the dpsctl parameter it feeds, and how its value reads.

    how:
      same      the value means the same: extra names of the dpsctl option (or fills a positional argument)
      flag      a dpsctl boolean flag, which az writes as a three-state flag (`--show-keys`, `--show-keys false`)
      bool      az's `--x true|false` for a dpsctl `--x/--no-x` flag
      enabled   `enabled|disabled` for a dpsctl `--enabled/--disabled` flag
      disabled  `enabled|disabled` for a dpsctl `--disabled` flag
      many      several values (`--ih a b`) for a repeatable dpsctl option
      top       az's `--top N` (-1: all): at most N records of the list
      resource  names the Azure resource: accepted, one store is one DPS
      auth      az's `--auth-type key|login`: accepted
      login     a DPS connection string: must be this store's (host and key)
    """

    names: tuple[str, ...]
    to: str | None = None
    how: str = "same"


@dataclass(frozen=True)
class AzCommand:
    """A dpsctl command, the az commands that mean it (paths after `az iot`), and their options."""

    target: str
    az: tuple[str, ...]
    options: tuple[AzOption, ...]


def dpsctl_path(az_path: str) -> str:
    """Where an az command lives in dpsctl: `dps enrollment create` -> `enrollment create`."""
    return az_path[len(AZ_PREFIX) :] if az_path.startswith(AZ_PREFIX) else az_path


# --------------------------------------------------------------------------- installing


def install(command: Any, noun: str) -> None:
    """Give a loaded noun its az options, and hidden copies of its commands at az's paths."""
    from dpsctl.cli.az_aliases import ALIASES

    for spec in ALIASES:
        if spec.target.split()[0] == noun:
            _apply(_find(command, spec.target.split()[1:]), spec)
    for spec in ALIASES:
        for az_path in spec.az:
            path = dpsctl_path(az_path).split()
            if path[0] == noun and len(path) > 1 and path != spec.target.split():
                _graft(command, path[1:], _target(spec.target, noun, command))


def alias_command(name: str) -> Any:
    """A top-level az noun that is another dpsctl command (`compute-device-key`), as a hidden copy of it."""
    from dpsctl.cli.az_aliases import ALIASES

    for spec in ALIASES:
        if any(dpsctl_path(az) == name for az in spec.az):
            clone = copy.copy(_target(spec.target, name, None))
            clone.name, clone.hidden = name, True
            return clone
    raise KeyError(name)


def _find(command: Any, path: list[str]) -> Any:
    for word in path:
        command = command.commands[word]
    return command


def _target(target: str, noun: str, command: Any) -> Any:
    """The dpsctl command an az path stands for (loading its noun when it is another one)."""
    words = target.split()
    if words[0] == noun and command is not None:
        return _find(command, words[1:])

    return _find(load_command(words[0]), words[1:])


class AzGroup(TyperGroup):
    """A sub-group that exists only at az's paths (`dps enrollment-group registration`): it lists its commands."""


def _graft(group: Any, path: list[str], target: Any) -> None:
    """Put a copy of `target` at `path` below `group`, hidden from dpsctl's help (az's own sub-groups list theirs)."""
    in_az_group = False
    for word in path[:-1]:
        sub = group.commands.get(word)
        if sub is None:
            sub = AzGroup(
                name=word,
                hidden=True,
                no_args_is_help=True,
                help=f"az's `{group.name} {word}` commands (see docs/az-mapping.md).",
            )
            sub.rich_markup_mode = None
            group.add_command(sub, word)
        group = sub
        in_az_group = isinstance(sub, AzGroup)
    clone = copy.copy(target)
    clone.name, clone.hidden = path[-1], not in_az_group
    group.add_command(clone, path[-1])


# --------------------------------------------------------------------------- one command's options


@dataclass
class _Hidden:
    """A hidden az option added to a command, and where its value goes."""

    key: str
    option: AzOption
    target: Any


def _apply(command: Any, spec: AzCommand) -> None:
    if getattr(command, "az_spec", None) is not None:
        return  # already given its az options (a copy at an az path shares its target's parameters)
    params = {p.name: p for p in command.params}
    hidden: list[_Hidden] = []
    three_state: set[str] = set()
    flags: set[str] = set()
    many: set[str] = set()
    added: list[AzOption] = []
    for opt in spec.options:
        target = params.get(opt.to) if opt.to else None
        if opt.to and target is None:
            raise LookupError(
                f"az alias table: {spec.target} has no parameter {opt.to!r}"
            )  # a table bug, caught by the tests
        if opt.how in ("same", "flag") and target is not None and _is_option(target):
            _extra_names(target, opt.names)
            if opt.how == "flag":
                flags.update(opt.names)
            continue
        added.append(opt)
        hidden.append(_Hidden(_key(opt), opt, target))
        if opt.how in ("bool",):
            three_state.update(opt.names)
        if opt.how == "many":
            many.update(opt.names)
        if target is not None and not _is_option(target) and target.required:
            target.required = False  # given as the argument or as az's option; the wrapper insists on one
            target.az_required = True
    command.params.extend(_hidden_options(added))
    command.az_spec = spec
    _wrap_callback(command, hidden)
    _wrap_parse(command, three_state, flags, many)


def _is_option(param: Any) -> bool:
    return getattr(param, "param_type_name", None) == "option"


def _extra_names(param: Any, names: tuple[str, ...]) -> None:
    """Add az's names to a dpsctl option; its help keeps showing only dpsctl's."""
    extra = [n for n in names if n not in param.opts and n not in param.secondary_opts]
    if not extra:
        return
    shown = list(getattr(param, "dpsctl_opts", param.opts))
    param.dpsctl_opts = shown  # dpsctl's own names, for its help and docs/az-mapping.md
    param.opts.extend(extra)
    original = param.get_help_record

    def help_record(ctx: Any) -> Any:
        every = param.opts
        param.opts = shown
        try:
            return original(ctx)
        finally:
            param.opts = every

    param.get_help_record = help_record


def _key(opt: AzOption) -> str:
    return "az_" + opt.names[0].lstrip("-").replace("-", "_")


_KINDS: dict[str, Any] = {
    "bool": TriState,
    "enabled": Status,
    "disabled": Status,
    "auth": AuthType,
    "top": int,
    "many": list[str],
}


def _hidden_options(options: list[AzOption]) -> list[Any]:
    """Hidden options with az's names, built by Typer from a signature (as the global options are)."""
    if not options:
        return []
    signature = inspect.Signature(
        [
            inspect.Parameter(
                _key(opt),
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    _KINDS.get(opt.how, str) | None, typer.Option(*opt.names, hidden=True, case_sensitive=False)
                ],
            )
            for opt in options
        ]
    )

    def probe(**kwargs: Any) -> None:
        """Never run: its parameters are reused."""

    probe.__dict__["__signature__"] = signature  # what inspect.signature reads (typeshed declares no __signature__)
    holder = typer.Typer(add_completion=False)
    holder.command()(probe)
    return list(typer.main.get_command(holder).params)


def _wrap_callback(command: Any, hidden: list[_Hidden]) -> None:
    original = command.callback

    def callback(**kwargs: Any) -> Any:
        given = {h.key: kwargs.pop(h.key, None) for h in hidden}
        for h in hidden:
            value = given[h.key]
            if value is None or value == ():
                continue
            _translate(h, value, kwargs)
        for param in command.params:
            if getattr(param, "az_required", False) and kwargs.get(param.name) is None:
                names = [n for h in hidden if h.target is param for n in h.option.names]
                raise MissingParameter(ctx=get_current_context(), param=param, message=f"give it, or {'/'.join(names)}")
        return original(**kwargs)

    command.callback = callback


def _translate(h: _Hidden, value: Any, kwargs: dict[str, Any]) -> None:
    """Put one az value where the dpsctl command expects it."""
    how, name = h.option.how, h.option.to
    if how == "resource" or how == "auth":
        return
    if how == "login":
        check_login(value)
        return
    if how == "top":
        SELECTION.top = value
        return
    assert name is not None, h.option  # the table names a parameter for every option that carries a value
    if how == "many":
        values = [part for v in value for part in v.split()]
        kwargs[name] = [*(kwargs.get(name) or []), *values]
        return
    value = value.value if isinstance(value, Enum) else value
    converted = {
        "enabled": lambda v: v == "enabled",
        "disabled": lambda v: v == "disabled",
        "bool": lambda v: v in _TRUE,
    }.get(how, lambda v: v)(value)
    current = kwargs.get(name)
    default = h.target.default if h.target is not None else None
    if current is not None and current != default and current != converted:
        shown = "/".join(h.option.names)
        other = h.target.opts[0] if _is_option(h.target) else h.target.name.upper()
        raise UsageError(f"{shown} says {value!r}, but {other} says {current!r}: give one of them")
    kwargs[name] = converted


def check_login(connection_string: str) -> None:
    """`--login`: the connection string must be this store's (its host and its owner key)."""
    from dpsctl.core.service import check_login

    settings = None
    if STATE.db == ":memory:" or os.path.lexists(STATE.db):
        from dpsctl.store import open_store

        with open_store(STATE.db) as store:
            if store.exists():
                from dpsctl.core.service import load_service

                with store.transaction() as tx:
                    settings = load_service(tx, now())
    check_login(settings, connection_string)


# --------------------------------------------------------------------------- az's argument forms


def _wrap_parse(command: Any, three_state: set[str], flags: set[str], many: set[str]) -> None:
    if not (three_state or flags or many):
        return
    original = command.parse_args

    def parse_args(ctx: Any, args: list[str]) -> list[str]:
        return original(ctx, normalize(args, three_state=three_state, flags=flags, many=many))

    command.parse_args = parse_args


def normalize(args: list[str], *, three_state: set[str], flags: set[str], many: set[str]) -> list[str]:
    """Rewrite az's argument forms into Click's.

    three_state: `--ee`, `--ee true`, `--ee=false` -> `--ee true|false` (a word that is not a boolean is not consumed);
    flags:       `--show-keys true` -> `--show-keys`, `--show-keys false` -> nothing (dpsctl's flag stays a flag);
    many:        `--ih a b` -> `--ih a --ih b` (the values up to the next option).
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            out.extend(args[i:])
            break
        name, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        following = args[i + 1] if i + 1 < len(args) else ""
        word = inline if eq else following
        is_bool = word.lower() in (*_TRUE, *_FALSE)
        if name in three_state:
            if eq:
                out.extend(_joined(name, inline))  # Click says what is wrong with a value that is not a boolean
                i += 1
            elif is_bool:
                out.extend(_joined(name, following))
                i += 2
            else:
                out.extend(_joined(name, "true"))
                i += 1
            continue
        if name in flags and (is_bool or not eq):
            if not (is_bool and word.lower() in _FALSE):
                out.append(name)
            i += 2 if is_bool and not eq else 1
            continue
        if name in many:
            values = [inline] if eq else []
            i += 1
            while not eq and i < len(args) and not args[i].startswith("-"):
                values.append(args[i])
                i += 1
            if not values:
                out.append(name)  # Click says the option needs a value
            out += [token for value in values for token in _joined(name, value)]
            continue
        out.append(token)
        i += 1
    return out


def _joined(name: str, value: str) -> list[str]:
    """`--name=value`: one token, so that the value is never read again as an option or as az's next list item
    (a short name, `-v`, cannot carry `=`: its value follows)."""
    return [f"{name}={value}"] if name.startswith("--") else [name, value]


def accepted_names(command: Any) -> dict[str, Any]:
    """Every option name a command takes, hidden ones included, with its parameter (for the mapping and its tests)."""
    return {name: param for param in command.params for name in (*param.opts, *param.secondary_opts)}
