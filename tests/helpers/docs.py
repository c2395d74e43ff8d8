"""Reading the docs as the doc tests do: the runnable blocks of a Markdown page (tests/test_doc_sessions.py explains
the convention), and the `dpsctl ...` command lines shown as code."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RUNNABLE = {"console", "sh", "bash", "shell"}
_FENCE = re.compile(r"^```([A-Za-z0-9_-]*)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
_FILE = re.compile(r"\bfile=([A-Za-z0-9._/-]+)")
_MARK = re.compile(r"<!--\s*doctest:\s*(skip|needs|new session)\b([^>]*?)-->\s*\n*$")

@dataclass
class Command:
    """One command to run, and what the doc shows it printing (None: not compared)."""

    text: str
    line: int
    shown: list[str] | None
    must_fail: bool


@dataclass
class Block:
    """A runnable block of a doc."""

    lang: str
    line: int
    commands: list[Command] = field(default_factory=list)
    skip: str | None = None
    needs: list[str] = field(default_factory=list)
    new_session: bool = False


def parse(text: str) -> list[Block]:
    """The runnable blocks of a Markdown text, with their commands and marks."""
    blocks = []
    for match in _FENCE.finditer(text):
        lang = match.group(1).lower()
        start = text.count("\n", 0, match.start()) + 1
        target = _FILE.search(match.group(2))
        if target:
            blocks.append(Block("file", start, [Command(match.group(3), start + 1, None, False)], needs=[target.group(1)]))
            continue
        if lang not in RUNNABLE:
            continue
        block = Block(lang, start)
        mark = _MARK.search(text, 0, match.start())
        if mark and mark.end() == match.start():
            kind, rest = mark.group(1), mark.group(2).strip()
            if kind == "skip":
                block.skip = rest or "marked skip"
            elif kind == "new session":
                block.new_session = True
            else:
                block.needs = rest.split()
        body = match.group(3).splitlines()
        if lang == "console":
            block.commands = _console_commands(body, start + 1)
        else:
            block.commands = [Command("\n".join(body), start + 1, None, False)]
        blocks.append(block)
    return blocks


def _console_commands(lines: list[str], first_line: int) -> list[Command]:
    found = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            i += 1
            continue
        at = first_line + i
        command = [lines[i][2:]]
        while command[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            command.append(lines[i])
        i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        while output and not output[-1].strip():
            output.pop()
        failing = any(line.startswith("error: ") for line in output)
        found.append(Command("\n".join(command), at, output or None, failing))
    return found


COMMAND_LINE = re.compile(r"(?:^|[\s`$(|;&])dpsctl((?:\s+--db\s+\S+)?(?:[ \t]+[a-z][a-z0-9-]*)+)", re.M)
_FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_INLINE = re.compile(r"`([^`\n]+)`")


def code_in(text: str) -> list[str]:
    """Fenced blocks and inline code spans: where docs show commands to type."""
    blocks = _FENCED.findall(text)
    prose = _FENCED.sub("", text)
    return blocks + _INLINE.findall(prose)


def command_paths() -> set[tuple[str, ...]]:
    """Every command path of the CLI, ("dpsctl", "enrollment", "add") and so on, hidden ones included."""
    from dpsctl.cli import reference

    return {path for path, _ in reference.walk(reference.root_command())}
