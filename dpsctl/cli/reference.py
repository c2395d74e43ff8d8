"""Generate docs/cli-reference.md from the Typer app itself, so the reference can never drift from the code.

    python -m dpsctl.cli.reference > docs/cli-reference.md        # regenerate
    python -m dpsctl.cli.reference --check docs/cli-reference.md  # exit 1 if the file is out of date

The output depends only on the command tree (names, help texts, parameters), never on the terminal, the
environment or the Typer version's help formatter: usage lines and value kinds are built here.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import sys
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

import typer

from dpsctl.cli.app import app

REGENERATE = "python -m dpsctl.cli.reference > docs/cli-reference.md"
PROG = "dpsctl"


# --------------------------------------------------------------------------- the command tree


def root_command() -> Any:
    """The Click-style command object Typer builds from dpsctl's app."""
    return typer.main.get_command(app)


def subcommands(command: Any) -> dict[str, Any]:
    """A group's sub-commands by name, through the Click API (the root group imports its commands lazily)."""
    if not hasattr(command, "list_commands"):
        return {}
    return {name: command.get_command(None, name) for name in command.list_commands(None)}


def walk(command: Any, path: tuple[str, ...] = (PROG,)) -> list[tuple[tuple[str, ...], Any]]:
    """Every (command path, command) pair, the root first, then sub-commands by name, depth first; hidden ones left out."""
    found = [(path, command)]
    subs = subcommands(command)
    for name in sorted(subs):
        sub = subs[name]
        if getattr(sub, "hidden", False):
            continue
        found.extend(walk(sub, (*path, name)))
    return found


def is_group(command: Any) -> bool:
    """True for a command that has sub-commands."""
    return bool(subcommands(command))


def help_text(command: Any) -> str:
    """A command's full help, cleaned of Click's formatting markers (text after \\f is for code readers only)."""
    text = command.help or ""
    text = text.split("\f", 1)[0]
    text = inspect.cleandoc(text)
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


def parameters(command: Any) -> tuple[list[Any], list[Any]]:
    """(arguments, options) of a command, in declaration order; hidden ones left out."""
    args: list[Any] = []
    opts: list[Any] = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        (opts if _is_option(param) else args).append(param)
    return args, opts


def _is_option(param: Any) -> bool:
    from dpsctl.cli.conventions import is_option

    return is_option(param)


# --------------------------------------------------------------------------- rendering one parameter


def value_kind(param: Any) -> str:
    """What an option or argument takes, as the help shows it (dpsctl.cli.conventions)."""
    from dpsctl.cli.conventions import value_kind as kind

    return kind(param)


def _is_flag(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False)) or bool(getattr(param, "count", False))


def option_names(param: Any) -> str:
    """`-o, --output`, or `--edge / --no-edge` for an on/off pair; short names first."""
    names = sorted(
        getattr(param, "dpsctl_opts", param.opts),  # az's extra names stay out (docs/az-mapping.md)
        key=lambda o: (o.startswith("--"), o),
    )
    text = ", ".join(names)
    if param.secondary_opts:
        text += " / " + ", ".join(param.secondary_opts)
    return text


def option_signature(param: Any) -> str:
    """The option as typed: its names, and the kind of value unless it is a flag."""
    names = option_names(param)
    return names if _is_flag(param) else f"{names} {value_kind(param)}"


def argument_metavar(param: Any) -> str:
    """NAME, [NAME] when optional, NAME... when it takes many."""
    from dpsctl.cli.conventions import argument_name

    name = argument_name(param)
    if param.nargs == -1:
        name += "..."
    # an argument az may give as an option instead (--eid) is still required: az_compat checks one is given
    return name if param.required or getattr(param, "az_required", False) else f"[{name}]"


def default_text(param: Any) -> str:
    """The default as a user would type it, or '' when there is none worth showing."""
    if getattr(param, "show_default", True) is False:
        return ""
    default = param.default
    if callable(default) or default is None or default == ():
        return ""
    if isinstance(default, Enum):
        default = default.value
    if isinstance(default, bool):
        if _is_flag(param) and not param.secondary_opts:
            return ""  # a plain flag is off unless given
        return option_names(param).split(" / ")[0 if default else 1]
    if isinstance(default, (list, tuple)):
        return " ".join(str(v) for v in default)
    if isinstance(default, PurePath):
        return default.as_posix()
    return str(default)


def describe(param: Any) -> str:
    """The help text of a parameter with what else matters: required, repeatable, environment variable."""
    parts = [" ".join((param.help or "").split()) if hasattr(param, "help") else ""]
    if param.required and _is_option(param):
        parts.append("Required.")  # a required argument shows it in the usage line already
    if getattr(param, "multiple", False) and "Repeatable" not in parts[0]:
        parts.append("Repeatable.")
    envvar = getattr(param, "envvar", None)
    if envvar:
        names = [envvar] if isinstance(envvar, str) else list(envvar)
        parts.append("Env: " + ", ".join(f"`{n}`" for n in names) + ".")
    return " ".join(p for p in parts if p)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


# --------------------------------------------------------------------------- the document


def usage(path: tuple[str, ...], command: Any) -> str:
    """The usage line, built from the parameters (not from a help formatter, whose style varies)."""
    args, opts = parameters(command)
    words = [PROG] + (["[GLOBAL OPTIONS]", *path[1:]] if len(path) > 1 else [])
    if opts:
        words.append("[OPTIONS]")
    words += [argument_metavar(a) for a in args]
    if is_group(command):
        words.append("COMMAND [ARGS]...")
    return " ".join(words)


def _anchor(path: tuple[str, ...]) -> str:
    return "-".join(path).lower()


def render_command(path: tuple[str, ...], command: Any) -> list[str]:
    """The Markdown section of one command."""
    title = " ".join(path)
    lines = [f"## {title}", ""]
    text = help_text(command)
    if text:
        lines += [text, ""]
    lines += ["```", usage(path, command), "```", ""]
    args, opts = parameters(command)
    if args:
        lines += ["| Argument | Value | Description |", "|---|---|---|"]
        for arg in args:
            lines.append(f"| {_code(argument_metavar(arg))} | {value_kind(arg)} | {_cell(describe(arg))} |")
        lines.append("")
    if opts:
        lines += ["| Option | Default | Description |", "|---|---|---|"]
        for opt in opts:
            lines.append(
                f"| {_code(_cell(option_signature(opt)))} | {_code(_cell(default_text(opt)))} | {_cell(describe(opt))} |"
            )
        lines.append("")
    if is_group(command):
        lines += ["| Command | Description |", "|---|---|"]
        subs = subcommands(command)
        for name in sorted(subs):
            sub = subs[name]
            if getattr(sub, "hidden", False):
                continue
            first = help_text(sub).split("\n\n", 1)[0]
            lines.append(f"| [{name}](#{_anchor((*path, name))}) | {_cell(first)} |")
        lines.append("")
    return lines


def generate(command: Any | None = None) -> str:
    """The whole reference as Markdown text (deterministic for a given command tree)."""
    command = command if command is not None else root_command()
    commands = walk(command)
    lines = [
        "# dpsctl command reference",
        "",
        f"<!-- Generated from the command tree by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "Global options (`--db`, `-o/--output`, `--query`) go before or after the sub-command:",
        "`dpsctl --db ci.json enrollment list` and `dpsctl enrollment list --db ci.json -o tsv` both work.",
        "Every command also takes `-h` / `--help`. Exit codes are listed in [exit-codes.md](exit-codes.md).",
        "",
        "## Commands",
        "",
    ]
    for path, _ in commands[1:]:
        indent = "  " * (len(path) - 2)
        lines.append(f"{indent}- [{' '.join(path)}](#{_anchor(path)})")
    lines.append("")
    for path, cmd in commands:
        lines += render_command(path, cmd)
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- entry point


def check(path: Path, expected: str) -> str | None:
    """None when the file holds `expected`; else a message saying what to run (and the first differences)."""
    try:
        current = path.read_text(encoding="utf-8")
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror}); generate it with: {REGENERATE}"
    if current == expected:
        return None
    diff = list(
        difflib.unified_diff(
            current.splitlines(), expected.splitlines(), f"{path} (committed)", f"{path} (generated)", lineterm="", n=1
        )
    )
    shown = "\n".join(diff[:40]) + ("\n..." if len(diff) > 40 else "")
    return f"{path} is out of date with the CLI; regenerate it with: {REGENERATE}\n{shown}"


def main(argv: list[str] | None = None) -> int:
    """Print the reference, or with --check FILE compare it with FILE."""
    parser = argparse.ArgumentParser(
        prog="python -m dpsctl.cli.reference", description="Generate the dpsctl command reference (Markdown)."
    )
    parser.add_argument(
        "--check", metavar="FILE", help="exit 1 with a message if FILE differs from the generated reference"
    )
    options = parser.parse_args(argv)
    text = generate()
    if options.check:
        problem = check(Path(options.check), text)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print(f"{options.check} is up to date", file=sys.stderr)
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
