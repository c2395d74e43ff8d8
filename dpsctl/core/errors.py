"""The error types of dpsctl: every user-visible failure is one of them, with a message and an optional hint.

They say what went wrong, not how a front end reports it: the CLI maps each type to an exit code
(dpsctl/cli/errors.py), the HTTPS and MQTT front ends to a status and a DPS error code (dpsctl/server/errors.py).
"""

from __future__ import annotations

from typing import Self


class DpsError(Exception):
    """Base of every error a user can cause; the CLI turns it into one line on stderr."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def amended(self, *, message: str | None = None, hint: str | None = None) -> Self:
        """A new error of this type with another message and/or hint (None keeps this one's): errors stay as raised."""
        return type(self)(self.message if message is None else message, hint=self.hint if hint is None else hint)


class InvalidInput(DpsError):
    """Input that does not follow DPS rules (bad ID, bad key, bad file...)."""


class NotFound(DpsError):
    """A named record does not exist."""


class Conflict(DpsError):
    """Already exists, stale etag, or still in use."""


class Unauthorized(DpsError):
    """A device credential did not prove itself."""


class Disabled(DpsError):
    """The device's enrollment or group is disabled."""


class AllocationFailed(DpsError):
    """No IoT hub could be assigned."""


class StoreError(DpsError):
    """The store file is damaged, foreign, or from a newer dpsctl."""


class StoreBusy(DpsError):
    """Another dpsctl process held the store lock for longer than the wait timeout."""


class RegistrationConflict(Conflict):
    """What a custom allocation relied on (the enrollment, its group, the linked hubs) changed while it ran, twice."""
