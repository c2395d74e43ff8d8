"""PostgreSQL store locations: recognising a URL, dpsctl's own parameters in it, and showing it without its password.

Kept apart from the backend so that `open_store` can tell a URL from a file name (and refuse an unknown
scheme) without importing psycopg, which is an optional extra.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from dpsctl.core.errors import InvalidInput

POSTGRES_SCHEMES = ("postgresql", "postgres")
DEFAULT_SCHEMA = "dpsctl"
DEFAULT_POOL_SIZE = 8
# dpsctl's own query parameters, removed before libpq sees the URL (libpq refuses parameters it does not know)
SCHEMA_PARAM = "schema"
POOL_PARAM = "pool_size"

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Lower-case, unquoted-identifier characters only: the name is the same whether a user types it quoted or not.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def url_scheme(location: str) -> str | None:
    """The scheme of a `scheme://...` store location (lower-case), or None for a file name."""
    match = _URL.match(location)
    return match.group(1).lower() if match else None


def _split(location: str) -> tuple[str, str, str, str]:
    """(`scheme://`, user-info-and-hosts, path, query) of a URL, cut by hand so that putting them back together
    gives the same bytes (urllib's urlunsplit turns `postgresql:///db` into `postgresql:/db`)."""
    scheme = _URL.match(location)
    assert scheme is not None, "a location url_scheme recognised as a URL"
    head = scheme.group(0)
    rest = location[len(head) :]
    rest, _, _fragment = rest.partition("#")
    rest, mark, query = rest.partition("?")
    cut = rest.find("/")
    netloc, path = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    return head, netloc, path, query if mark else ""


def _join(head: str, netloc: str, path: str, query: str) -> str:
    return f"{head}{netloc}{path}{'?' + query if query else ''}"


def _without(query: str, names: tuple[str, ...]) -> str:
    """The query string minus the named parameters; the others kept byte for byte."""
    if not query:
        return query
    kept = [piece for piece in query.split("&") if unquote(piece.partition("=")[0]).lower() not in names]
    return "&".join(kept)


def redact(location: str) -> str:
    """The location with any password removed (from the user-info part and from a `password=` parameter)."""
    if url_scheme(location) is None:
        return location
    head, netloc, path, query = _split(location)
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}@{hosts}"
    return _join(head, netloc, path, _without(query, ("password",)))


def secrets_of(location: str) -> list[str]:
    """The password written in a URL, in every spelling a message might echo (to scrub it from them)."""
    if url_scheme(location) is None:
        return []
    _, netloc, _, query = _split(location)
    raw = netloc.rpartition("@")[0].partition(":")[2]
    found = [raw, unquote(raw)]
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        if unquote(name).lower() == "password":
            found += [value, unquote(value)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every spelling of the password replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class PostgresLocation:
    """A parsed PostgreSQL store URL."""

    conninfo: str  # what libpq is given: the URL without dpsctl's parameters
    schema: str  # the schema holding dpsctl's tables
    pool_size: int  # connections one process keeps at most
    shown: str  # the URL as messages and `store info` show it: no password
    secrets: tuple[str, ...]  # the password's spellings, scrubbed from any message


def parse(location: str) -> PostgresLocation:
    """Split a postgresql:// or postgres:// URL into libpq's part and dpsctl's `schema` and `pool_size` parameters."""
    shown = redact(location)
    head, netloc, path, query = _split(location)
    params = parse_qsl(query, keep_blank_values=True)
    schema_values = [v for k, v in params if k == SCHEMA_PARAM]
    pool_values = [v for k, v in params if k == POOL_PARAM]
    if len(schema_values) > 1 or len(pool_values) > 1:
        raise InvalidInput(f"store URL {shown} gives `{SCHEMA_PARAM}` or `{POOL_PARAM}` more than once")
    schema = schema_values[0] if schema_values else DEFAULT_SCHEMA
    if not _SCHEMA_NAME.match(schema):
        raise InvalidInput(
            f"store URL {shown}: schema name {schema!r} is not a plain lower-case SQL name",
            hint="use lower-case letters, digits and underscores, starting with a letter or _ (at most 63), e.g. ?schema=dpsctl_ci",
        )
    pool_size = DEFAULT_POOL_SIZE
    if pool_values:
        try:
            pool_size = int(pool_values[0])
        except ValueError:
            pool_size = 0
        if not 1 <= pool_size <= 1000:
            raise InvalidInput(
                f"store URL {shown}: pool_size must be a whole number from 1 to 1000, not {pool_values[0]!r}"
            )
    conninfo = _join(head, netloc, path, _without(query, (SCHEMA_PARAM, POOL_PARAM)))
    return PostgresLocation(
        conninfo=conninfo, schema=schema, pool_size=pool_size, shown=shown, secrets=tuple(secrets_of(location))
    )
