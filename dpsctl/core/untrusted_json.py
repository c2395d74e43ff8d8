"""Untrusted JSON: the one parser of JSON from outside (one-line errors), and one nesting and size limit for its values.

Every JSON text dpsctl did not write itself goes through `parse_json`: import files, service API and device
request bodies, CLI values, TPM files, custom allocation answers. The store's own records do not.

Python's JSON parser, `copy.deepcopy` and the JSON encoder all recurse once per level, so a document nested a
few hundred levels deep parses and then fails later with RecursionError, far from where it came in (and after
a store write has been planned). Real twins and payloads are a handful of levels deep; IoT Hub allows 10 in
twins. Anything deeper than MAX_JSON_DEPTH is refused where it enters, with the caller's own error type.
Every JSON value from outside (a payload, optionalDeviceInformation, a twin, desired properties) is held to
MAX_JSON_DEPTH levels and MAX_JSON_VALUE_BYTES bytes; a whole document around such values (an import file, a
service API body) may nest MAX_DOCUMENT_DEPTH levels, so that a value at the limit still fits inside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from dpsctl.core.errors import DpsError, InvalidInput

MAX_JSON_DEPTH = 32
"""Most levels of objects and arrays accepted in one value: `{}` is 1 level, `{"a": [1]}` is 2."""

MAX_JSON_VALUE_BYTES = 96 * 1024
"""Largest value accepted, as compact JSON: DPS's largest message (96 KB); a value cannot be larger than its message."""

MAX_DOCUMENT_DEPTH = MAX_JSON_DEPTH + 8
"""Most levels of a document that carries values: an import file's enrollments[i].initialTwin.properties.desired..."""


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether objects and arrays in `value` nest deeper than `limit`; iterative, so any depth is safe to ask."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
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


def check_depth(value: Any, what: str, error: type[DpsError] = InvalidInput, limit: int = MAX_JSON_DEPTH) -> Any:
    """Return `value` unchanged, or raise `error` when it nests deeper than `limit` (MAX_JSON_DEPTH)."""
    if too_deep(value, limit):
        raise error(f"{what} nests objects or arrays more than {limit} levels deep")
    return value


def check_value(value: Any, what: str, error: type[DpsError] = InvalidInput) -> Any:
    """Return a JSON value from outside unchanged, or raise `error` when it is too deep or too large (the one limit)."""
    check_depth(value, what, error)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_JSON_VALUE_BYTES:
        raise error(f"{what} is {size} bytes of JSON; the limit is {MAX_JSON_VALUE_BYTES} (DPS's largest message)")
    return value


def parse_json(
    text: str | bytes, what: str, *, limit_depth: bool = False, document: bool = False, allow_nan: bool = True
) -> Any:
    """json.loads for text from outside: every way it can fail becomes one InvalidInput naming `what`.

    `limit_depth`: the text is one value (check_value: depth and size); `document`: the text carries values
    (import files, request bodies; at most MAX_DOCUMENT_DEPTH levels, the values being checked where they are read).
    `allow_nan=False` refuses NaN and Infinity, which are not JSON, where a value is passed on as JSON.
    """
    try:
        value = json.loads(text) if allow_nan else json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # not a JSONDecodeError: an integer beyond Python's 4300-digit limit
        raise InvalidInput(f"{what} holds a number with more digits than dpsctl reads") from None
    except RecursionError:  # the parser recurses once per level of [ or {
        raise InvalidInput(f"{what} nests objects or arrays too deeply") from None
    if limit_depth:
        return check_value(value, what)
    return check_depth(value, what, limit=MAX_DOCUMENT_DEPTH) if document else value


def _refuse_constant(name: str) -> object:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)
