"""The one check result: what the engine's trace and every doctor (`cert check`, `keys check`, `--explain`) report.

A check has a level, a sentence, and optionally the certificate subject it is about. Its level's value is the
`result` word of the JSON reports (ok, warn, fail, note), so reports keep one wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    """How a check came out; the value is the word reports print."""

    OK = "ok"
    WARNING = "warn"
    REFUSED = "fail"
    NOTE = "note"  # a step of a decision that is not a check


@dataclass(frozen=True)
class Check:
    """One step of a report: its level, what was found (a sentence), and the certificate it is about, if any."""

    level: Level
    what: str
    subject: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the check lets the device through (everything but a refusal)."""
        return self.level is not Level.REFUSED

    @property
    def message(self) -> str:
        """The sentence as printed: the subject first, when there is one."""
        return f"{self.subject}: {self.what}" if self.subject is not None else self.what

    def to_dict(self) -> dict[str, str]:
        """The step as report data: {"result": level, "message": sentence}."""
        return {"result": self.level.value, "message": self.message}


def passed(what: str, subject: str | None = None) -> Check:
    """A check that held."""
    return Check(Level.OK, what, subject)


def refused(what: str, subject: str | None = None) -> Check:
    """A check that failed: DPS would refuse the device."""
    return Check(Level.REFUSED, what, subject)


def warning(what: str, subject: str | None = None) -> Check:
    """A check that held, with something the user should know."""
    return Check(Level.WARNING, what, subject)


def note(what: str, subject: str | None = None) -> Check:
    """A step of a decision that is not a check."""
    return Check(Level.NOTE, what, subject)


def held(ok: bool, what: str, subject: str | None = None) -> Check:
    """A check that passed or failed by `ok`."""
    return Check(Level.OK if ok else Level.REFUSED, what, subject)


def all_ok(checks: list[Check]) -> bool:
    """Whether no check refused."""
    return all(check.ok for check in checks)


_MARKS = {Level.OK: "[ok]  ", Level.REFUSED: "[fail]", Level.WARNING: "[warn]", Level.NOTE: "      "}


def format_checks(checks: list[Check]) -> str:
    """Report lines as text: '[ok]', '[fail]', '[warn]' or blank, then the message."""
    return "\n".join(f"{_MARKS[check.level]} {check.message}" for check in checks)
