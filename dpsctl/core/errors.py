"""The one error type of dpsctl: every user-visible failure carries an exit code and an optional hint."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (docs/exit-codes.md)."""

    OK = 0
    UNEXPECTED = 1
    INVALID_INPUT = 2
    NOT_FOUND = 3
    CONFLICT = 4
    UNAUTHORIZED = 5
    DISABLED = 6
    ALLOCATION_FAILED = 7
    STORE_BUSY = 8


class DpsError(Exception):
    """Base of every error a user can cause; the CLI turns it into one line on stderr."""

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InvalidInput(DpsError):
    """Input that does not follow DPS rules (bad ID, bad key, bad file...)."""

    exit_code = ExitCode.INVALID_INPUT


class NotFound(DpsError):
    """A named record does not exist."""

    exit_code = ExitCode.NOT_FOUND


class Conflict(DpsError):
    """Already exists, stale etag, or still in use."""

    exit_code = ExitCode.CONFLICT


class Unauthorized(DpsError):
    """A device credential did not prove itself."""

    exit_code = ExitCode.UNAUTHORIZED


class Disabled(DpsError):
    """The device's enrollment or group is disabled."""

    exit_code = ExitCode.DISABLED


class AllocationFailed(DpsError):
    """No IoT hub could be assigned."""

    exit_code = ExitCode.ALLOCATION_FAILED


class StoreError(DpsError):
    """The store file is damaged, foreign, or from a newer dpsctl."""

    exit_code = ExitCode.UNEXPECTED


class StoreBusy(DpsError):
    """Another dpsctl process held the store lock for longer than the wait timeout."""

    exit_code = ExitCode.STORE_BUSY


class RegistrationConflict(Conflict):
    """What a custom allocation relied on (the enrollment, its group, the linked hubs) changed while it ran, twice."""
