"""Write docs/az-mapping.md from the app: every `az iot dps` command and option dpsctl accepts, and its dpsctl form.

    python -m dpsctl.cli.azmap > docs/az-mapping.md

Rows come from the loaded commands (az_aliases for dpsctl's own commands, the options of the az-worded nouns),
and each az name is checked to be accepted by the command it is listed under; tests/cli/test_az_mapping.py
fails when the file is stale or a command or option of az's surface has no row.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from dpsctl.cli.app import app
from dpsctl.cli.az_compat import AzOption, accepted_names, dpsctl_path

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

# The nouns written in az's own words, and the dpsctl command each az command does the work of.
NATIVE: dict[str, str] = {
    "dps linked-hub create": "hub add",
    "dps linked-hub list": "hub list",
    "dps linked-hub show": "hub show",
    "dps linked-hub update": "hub update",
    "dps linked-hub delete": "hub delete",
    "dps certificate create": "ca add",
    "dps certificate list": "ca list",
    "dps certificate show": "ca show",
    "dps certificate update": "ca add, over the same name",
    "dps certificate delete": "ca delete",
    "dps certificate generate-verification-code": "ca verification-code",
    "dps certificate verify": "ca verify",
    "dps connection-string show": "service connection-string",
    "device registration create": "provision",
}

HOW = {
    "top": "at most N records (`-1`: all); dpsctl lists everything by default",
    "resource": "accepted: one store is one DPS",
    "auth": "accepted (`key` or `login`)",
    "login": "accepted when it is this store's connection string (`dpsctl connection-string show`); another host is refused (exit 2), a wrong key too (exit 5)",
}


def resolve(path: str) -> Any:
    """The Click command at a dpsctl path ("enrollment registration show"), loaded as `dpsctl` would."""
    command: Any = typer.main.get_command(app)
    for word in path.split():
        found = command.get_command(None, word)
        if found is None:
            raise LookupError(f"dpsctl has no command {path!r}")
        command = found
    return command


def _names(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _dpsctl_form(opt: AzOption, command: Any) -> str:
    """What an az option is in dpsctl's words."""
    if opt.how in HOW:
        return HOW[opt.how]
    param = next(p for p in command.params if p.name == opt.to)
    if getattr(param, "param_type_name", None) != "option":
        return f"the `{param.name.upper()}` argument"
    own = list(getattr(param, "dpsctl_opts", param.opts))
    if getattr(param, "hidden", False):
        return f"az's spelling only, hidden: {(param.help or '').rstrip('.')}"
    if opt.how == "bool":
        return f"{_names(own)} / {_names(param.secondary_opts)}" if param.secondary_opts else _names(own)
    if opt.how == "enabled":
        return "`--enabled` / `--disabled`"
    if opt.how == "disabled":
        return "`--disabled` (`enabled`: the default)"
    if opt.how == "many":
        return f"{_names(own)}, once per value"
    if opt.how == "flag":
        return f"{_names(own)} (az's `true`/`false` value accepted)"
    return _names(own)


def _check(command: Any, az_path: str, names: tuple[str, ...] | list[str]) -> None:
    taken = accepted_names(command)
    missing = [n for n in names if n not in taken]
    if missing:
        raise LookupError(f"az {az_path}: dpsctl does not accept {', '.join(missing)}")


def rows() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(az command, dpsctl command, [(az option names, dpsctl form)]) for every az command dpsctl accepts."""
    from dpsctl.cli.az_aliases import ALIASES

    out: list[tuple[str, str, list[tuple[str, str]]]] = []
    for spec in ALIASES:
        for az_path in spec.az:
            command = resolve(dpsctl_path(az_path))
            target = resolve(spec.target)
            options = []
            for opt in spec.options:
                _check(command, az_path, opt.names)
                options.append((_names(opt.names), _dpsctl_form(opt, target)))
            out.append((az_path, spec.target, options))
    for az_path, equivalent in NATIVE.items():
        command = resolve(dpsctl_path(az_path))
        options = []
        for param in command.params:
            if (
                getattr(param, "param_type_name", None) != "option"
                or getattr(param, "hidden", False)
                or param.name == "output"
            ):
                continue
            _check(command, az_path, param.opts)
            options.append((_names(param.opts), (param.help or "").rstrip(".")))
        out.append((az_path, f"{dpsctl_path(az_path)} (az's words; does what `dpsctl {equivalent}` does)", options))
    return sorted(out, key=lambda r: r[0])


def az_command(path: str) -> str:
    """`az iot dps enrollment create` from "dps enrollment create"."""
    return f"az iot {path}"


def render() -> str:
    """The whole of docs/az-mapping.md."""
    table = rows()
    lines = [
        "# `az iot dps` scripts against dpsctl",
        "",
        "<!-- Generated by `python -m dpsctl.cli.azmap > docs/az-mapping.md`; tests/cli/test_az_mapping.py keeps it current. -->",
        "",
        "Replace `az iot dps` with `dpsctl` (and `az iot device registration create` with `dpsctl device registration create`):",
        "every command and option below is accepted with az's meaning, so an `az iot dps` script runs against a local",
        "store. az's spellings are aliases: they are hidden from dpsctl's help, which documents dpsctl's own words (the",
        "second column). With `DPSCTL_OUTPUT=json` (az's default output) the JSON is what az prints: the DPS REST shapes",
        "for enrollments, groups and registrations, ARM's for `linked-hub` and `certificate`; deletes print nothing on",
        "stdout. `--query` and `-o tsv|json|yaml|table|none` work on every command; `-o tsv` prints a boolean that is a",
        "whole line as `true`/`false` and one inside a record as `True`/`False`, as az does.",
        "",
        "## Commands",
        "",
        "| az | dpsctl |",
        "|---|---|",
    ]
    lines += [
        f"| `{az_command(az)}` | `dpsctl {dpsctl}` |"
        if "(" not in dpsctl
        else f"| `{az_command(az)}` | `dpsctl {dpsctl.split(' (')[0]}` ({dpsctl.split(' (', 1)[1]} |"
        for az, dpsctl, _ in table
    ]
    lines += ["", "## Options", ""]
    for az, _dpsctl, options in table:
        lines += [f"### `{az_command(az)}`", "", "| az option | dpsctl |", "|---|---|"]
        lines += [f"| {names} | {form} |" for names, form in options]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Print the mapping (redirect it to docs/az-mapping.md)."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
