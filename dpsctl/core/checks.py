"""The one check result: what the engine's trace and every doctor (`cert check`, `keys check`, `--explain`) report.

A check has a level, a sentence, and optionally the certificate subject it is about. Its level's value is the
`result` word of the JSON reports (ok, warn, fail, note), so reports keep one wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class Trace:
    """The decision trace printed by `provision --explain`: every check and decision step, in order."""

    steps: list[Check] = field(default_factory=list)

    def ok(self, text: str) -> None:
        """A check that passed."""
        self.steps.append(passed(text))

    def fail(self, text: str) -> None:
        """A check that failed."""
        self.steps.append(refused(text))

    def note(self, text: str) -> None:
        """A step of the decision that is not a check."""
        self.steps.append(Check(Level.NOTE, text))

    def add(self, checks: list[Check]) -> bool:
        """Record checks made elsewhere (a certificate chain's); whether all of them passed."""
        self.steps.extend(checks)
        return all_ok(checks)

    def last_failure(self) -> str:
        """The message of the last failed check (what a refusal reports)."""
        fails = [step.message for step in self.steps if not step.ok]
        return fails[-1] if fails else "attestation failed"
