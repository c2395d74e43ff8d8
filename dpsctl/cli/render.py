"""The only place that draws: every command's data goes through `emit`, one pipeline for every format.

    data --select (--query, JMESPath)--> value --format (json|yaml|tsv|table|none)--> text --write--> stdout

The query is applied before any format, so `-o tsv`, `-o none` and `--query` work the same on every command.
Text that came from outside (IDs, messages, twin values) reaches the terminal only through `cell()` (tables
and TSV) or a JSON/YAML encoder, and all of it leaves through `write()`: the two places where a safe-text
step (e.g. neutralising terminal escapes) belongs.

Tables are plain text, sized to the terminal (80 columns when it is unknown, e.g. piped): columns that are
empty or of low value are dropped first, then the widest values are shortened with an ellipsis; a cell is
never wrapped or broken across lines.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import unicodedata
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from dpsctl.cli.safetext import safe_json, safe_lines, safe_text, too_deep_to_print
from dpsctl.core.errors import InvalidInput

# jmespath (--query) and yaml (-o yaml) are imported where used: every command loads this module at start-up.


class Output(str, Enum):  # noqa: UP042 - Typer lists the choices of a str Enum
    """Output formats of every command that shows data."""

    table = "table"
    json = "json"
    yaml = "yaml"
    tsv = "tsv"
    none = "none"


Row = Sequence[Any]
DEFAULT_WIDTH = 80
ELLIPSIS = "…"
GAP = "  "


class Selection:
    """What the options ask of the render layer for this invocation (reset by the root command)."""

    query: str | None = None
    whole_values: bool = False  # --show-keys: a key cut short is no key, so tables keep every value whole
    top: int | None = None  # az's --top: at most this many records of a list, before the query (None or negative: all)


SELECTION = Selection()


# --------------------------------------------------------------------------- the pipeline


def emit(
    data: Any,
    output: Output,
    *,
    columns: Sequence[str] = (),
    rows: Callable[[], Sequence[Row]] | None = None,
    drop: Sequence[str] = (),
    title: str | None = None,
    table: Callable[[], str] | None = None,
) -> None:
    """Print `data` (the JSON shape) in the asked format.

    For `-o table` without --query, the command's own view is drawn: `table()` if given, else `rows()` under
    `columns` (dropping the `drop` columns first, least valuable first, when the terminal is too narrow), else
    a FIELD/VALUE table of a record, or a bare value. With --query the table shows the query's result.
    """
    if SELECTION.top is not None and SELECTION.top >= 0 and isinstance(data, list):
        data = data[: SELECTION.top]
        if rows is not None:
            every_row, limit = rows, len(data)
            rows = lambda: every_row()[:limit]  # noqa: E731 - the table shows the same records as the data
    if SELECTION.query is not None:
        data = select(data, SELECTION.query)
        table = rows = None
    if output == Output.none:
        return
    with too_deep_to_print():  # each writer builds its whole text first: nothing half-printed precedes the error
        if output == Output.json:
            write(safe_json(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")
        elif output == Output.yaml:
            write(to_yaml(data))
        elif output == Output.tsv:
            write(to_tsv(data))
        elif table is not None:
            write(table())
        elif rows is not None:
            write(format_table(columns, rows(), drop=drop, title=title))
        else:
            write(generic_table(data))


def select(data: Any, query: str) -> Any:
    """Apply a JMESPath query (as az does, before any format); a bad query is invalid input."""
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.search(query, data)
    except JMESPathError as exc:
        detail = " ".join(str(exc).split())
        raise InvalidInput(
            f"--query {query!r} is not a valid JMESPath expression: {detail}",
            hint="see https://jmespath.org, e.g. --query \"[?status=='assigned'].deviceId\"",
        ) from None


def write(text: str) -> None:
    """Every byte of command output leaves here."""
    sys.stdout.write(text)


def info(message: str) -> None:
    """A message for the user (stderr, so that stdout stays data), made safe for the terminal line by line."""
    print(safe_lines(message), file=sys.stderr)


# --------------------------------------------------------------------------- YAML and TSV


def to_yaml(data: Any) -> str:
    """Block YAML in document order; multi-line strings (certificate PEMs) as literal `|` blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    dumped = yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    if safe_json(dumped) != dumped:
        # PyYAML escapes C0 and C1 controls itself but writes bidi characters raw when allow_unicode is on.
        dumped = yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=False, default_flow_style=False)
    return dumped


def to_tsv(data: Any) -> str:
    """Tab-separated values, no header: one line per record, a record's values in order; a single value bare."""
    if data is None:
        return ""
    records = data if isinstance(data, list) else [data]
    lines = []
    for record in records:
        if isinstance(record, dict):
            values: Sequence[Any] = list(record.values())
        elif isinstance(record, list):
            values = record
        else:
            # az (knack) lower-cases a boolean that is a whole line, so `--query isVerified -o tsv` gives true/false
            lines.append(tsv_value(record, booleans=("true", "false")))
            continue
        lines.append("\t".join(tsv_value(v) for v in values))
    return "".join(line + "\n" for line in lines)


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsv_value(value: Any, booleans: tuple[str, str] = ("True", "False")) -> str:
    """One TSV field: null empty, nested data as compact JSON, tabs and newlines escaped; booleans as az prints them
    in a record (True/False, Python's spelling); a bare boolean is true/false (see to_tsv)."""
    # TSV's own escapes first (tab, newline, backslash), then the terminal's for the other control characters.
    return safe_text(_plain(value, booleans).translate(_TSV_ESCAPES))


# --------------------------------------------------------------------------- tables


def cell(value: Any, booleans: tuple[str, str] = ("yes", "no")) -> str:
    """The text of a value in a table: nested data as compact JSON, None as empty, booleans yes/no, made terminal-safe."""
    return safe_text(_plain(value, booleans))


def _plain(value: Any, booleans: tuple[str, str]) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return booleans[0] if value else booleans[1]
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def terminal_width() -> int:
    """Columns of the terminal on stdout; $COLUMNS when set; 80 when unknown (piped, redirected)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        if sys.stdout.isatty():
            return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns or DEFAULT_WIDTH
    except (AttributeError, ValueError, OSError):
        pass
    return DEFAULT_WIDTH


def text_width(text: str) -> int:
    """Terminal cells a string takes: wide (CJK) characters two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` cells, ending in an ellipsis when cut."""
    if text_width(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    if text.isascii():
        return text[: width - 1] + ELLIPSIS
    out, used = [], 0
    for char in text:
        w = text_width(char)
        if used + w > width - 1:
            break
        out.append(char)
        used += w
    return "".join(out) + ELLIPSIS


def _flat(value: Any) -> str:
    text = cell(value)
    return " ".join(text.split()) if ("\n" in text or "\t" in text or "\r" in text) else text


def fit(
    headers: Sequence[str], cells: list[list[str]], width: int, drop: Sequence[str] = ()
) -> tuple[list[int], list[int]]:
    """Which columns to show and how wide: drop empty then low-value columns, then shorten the widest."""
    natural = [
        max(text_width(h), max((len(r[i]) if r[i].isascii() else text_width(r[i]) for r in cells), default=0))
        for i, h in enumerate(headers)
    ]
    shown = list(range(len(headers)))

    def total() -> int:
        return sum(natural[i] for i in shown) + len(GAP) * (len(shown) - 1)

    empty = [i for i in shown if i and all(not r[i] for r in cells)] if cells else []
    order = empty + [headers.index(name) for name in drop if name in headers]
    for i in order:
        if total() <= width:
            break
        if i and i in shown:  # the first column (the record's ID) always stays
            shown.remove(i)
    widths = {i: natural[i] for i in shown}
    floor = {i: min(natural[i], max(text_width(headers[i]), 8)) for i in shown}
    excess = sum(widths.values()) + len(GAP) * (len(shown) - 1) - width
    while excess > 0:
        widest = max((i for i in shown if widths[i] > floor[i]), key=lambda i: widths[i], default=None)
        if widest is None:
            if len(shown) == 1:
                widths[shown[0]] = max(1, width)
                break
            last = shown.pop()  # still too wide at every floor: the right-most columns go
            excess -= widths.pop(last) + len(GAP)
            continue
        widths[widest] -= 1
        excess -= 1
    return shown, [widths[i] for i in shown]


def format_table(
    columns: Sequence[str],
    rows: Sequence[Row],
    *,
    drop: Sequence[str] = (),
    title: str | None = None,
    width: int | None = None,
) -> str:
    """A plain-text table: header, a rule, one line per row, sized to `width` (default: the terminal)."""
    headers = list(columns)
    cells = [[_flat(v) for v in row] for row in rows]
    limit = width or (sys.maxsize if SELECTION.whole_values else terminal_width())
    shown, widths = fit(headers, cells, limit, drop)
    last = len(shown) - 1

    def line(values: Sequence[str]) -> str:
        parts = []
        for n, (i, w) in enumerate(zip(shown, widths, strict=False)):
            text = values[i]
            if text.isascii() and len(text) <= w:  # the common case, without measuring twice
                parts.append(text if n == last else text.ljust(w))
                continue
            text = shorten(text, w)
            parts.append(text if n == last else text + " " * (w - text_width(text)))
        return GAP.join(parts).rstrip() + "\n"

    out = [title + "\n"] if title else []
    out.append(line(headers))
    out.append(GAP.join("-" * w for w in widths) + "\n")
    out.extend(line(r) for r in cells)
    return "".join(out)


def flatten(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """(dotted field, value) pairs of a record, nested objects flattened."""
    flat: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            flat.append((prefix, value))

    walk("", data)
    return flat


def generic_table(data: Any) -> str:
    """Any JSON value as a table: a bare value, a FIELD/VALUE table of a record, or columns of a list's records."""
    if isinstance(data, dict):
        return format_table(("FIELD", "VALUE"), flatten(data))
    if isinstance(data, list):
        if data and all(isinstance(d, dict) for d in data):
            keys = list(dict.fromkeys(k for d in data for k in d))
            return format_table([k.upper() for k in keys], [[d.get(k) for k in keys] for d in data])
        return "".join(cell(v) + "\n" for v in data)
    return "" if data is None else cell(data) + "\n"


def format_bars(title: str, counts: dict[str, int], width: int = 30) -> str:
    """Horizontal bars, e.g. devices per hub."""
    top = max(counts.values(), default=0) or 1
    rows = [(name, count, "█" * max(1 if count else 0, round(width * count / top))) for name, count in counts.items()]
    return format_table(("HUB", "DEVICES", ""), rows, title=title)


def say(text: str) -> None:
    """Plain text on stdout (a trace, a verdict), made safe for the terminal line by line."""
    write(safe_lines(text) + "\n")
