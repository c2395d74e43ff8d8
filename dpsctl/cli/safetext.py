"""Text from outside made safe for a terminal: the one place that neutralises escape sequences and bidi tricks.

Anything a device, a webhook, an allocation command, an import file or a store can hold may reach the terminal
in a table, an error, a warning or a hint. Control characters (C0 such as ESC, DEL, C1 such as CSI U+009B) would
let that text move the cursor, rewrite earlier lines, change the title or hide itself; bidirectional overrides and
isolates (U+202A..U+202E, U+2066..U+2069, ...) would make it display in another order than it is. Each such
character is shown as a visible escape instead (`\\x1b`, `\\u202e`), so what is printed is what is there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from dpsctl.core.errors import StoreError

# Bidirectional formatting characters: embeddings, overrides, isolates, marks; plus the line and paragraph separators.
BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029" + BIDI + "]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def safe_text(text: str) -> str:
    """`text` with every control, bidi and line-separator character replaced by a visible escape."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def safe_lines(text: str) -> str:
    """Multi-line text made safe line by line: its own line breaks stay, everything else is escaped."""
    return "\n".join(safe_text(line) for line in str(text).split("\n"))


_RAW_IN_DATA = re.compile("[\x7f-\x9f\u2028\u2029" + BIDI + "]")


@contextmanager
def too_deep_to_print() -> Iterator[None]:
    """Data nested deeper than the JSON and YAML writers recurse (an old store, a hand edit): one line, not a crash.

    Each writer builds its whole text before printing, so nothing half-printed precedes the error; checking
    the depth first instead would walk every record of a million-record export.
    """
    try:
        yield
    except RecursionError:
        raise StoreError(
            "what the store holds here nests objects or arrays too deeply to print (written by an older dpsctl or by hand)",
            hint="delete or replace the record that holds it (dpsctl enrollment delete ID, dpsctl registration delete ID)",
        ) from None


def safe_json(text: str) -> str:
    """JSON from json.dumps(ensure_ascii=False) with bidi and C1 characters written as \\u escapes (the same JSON)."""
    return _RAW_IN_DATA.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
