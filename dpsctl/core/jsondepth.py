"""Untrusted JSON: parsing it with one-line errors, and a nesting limit (twins, payloads, webhook answers).

Python's JSON parser, `copy.deepcopy` and the JSON encoder all recurse once per level, so a document nested a
few hundred levels deep parses and then fails later with RecursionError, far from where it came in (and after
a store write has been planned). Real twins and payloads are a handful of levels deep; IoT Hub allows 10 in
twins. Anything deeper than MAX_JSON_DEPTH is refused where it enters, with the caller's own error type.
"""

from __future__ import annotations

import json
from typing import Any

from dpsctl.core.errors import DpsError, InvalidInput

MAX_JSON_DEPTH = 32
"""Most levels of objects and arrays accepted in one value: `{}` is 1 level, `{"a": [1]}` is 2."""


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether objects and arrays in `value` nest deeper than `limit`; iterative, so any depth is safe to ask."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def check_depth(value: Any, what: str, error: type[DpsError] = InvalidInput) -> Any:
    """Return `value` unchanged, or raise `error` when it nests deeper than MAX_JSON_DEPTH."""
    if too_deep(value):
        raise error(f"{what} nests objects or arrays more than {MAX_JSON_DEPTH} levels deep")
    return value


def parse_json(text: str | bytes, what: str, *, limit_depth: bool = False) -> Any:
    """json.loads for text from outside: every way it can fail becomes one InvalidInput naming `what`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # not a JSONDecodeError: an integer beyond Python's 4300-digit limit
        raise InvalidInput(f"{what} holds a number with more digits than dpsctl reads") from None
    except RecursionError:  # the parser recurses once per level of [ or {
        raise InvalidInput(f"{what} nests objects or arrays too deeply") from None
    return check_depth(value, what) if limit_depth else value
