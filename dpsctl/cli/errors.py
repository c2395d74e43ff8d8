"""The single error boundary: every failure becomes `error: ...` (and `hint: ...`) on stderr and an exit code."""

from __future__ import annotations

import os
import re
import sys
from enum import IntEnum

from typer._click.core import Command
from typer._click.exceptions import NoArgsIsHelpError
from typer.exceptions import Abort, TyperException

from dpsctl.cli.safetext import safe_text
from dpsctl.core import errors as core
from dpsctl.core.errors import DpsError


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


# The one table: core error type -> exit code. Order matters only for subclasses; a type it does not name exits 1.
EXIT_CODES: tuple[tuple[type[DpsError], ExitCode], ...] = (
    (core.InvalidInput, ExitCode.INVALID_INPUT),
    (core.NotFound, ExitCode.NOT_FOUND),
    (core.Conflict, ExitCode.CONFLICT),
    (core.Unauthorized, ExitCode.UNAUTHORIZED),
    (core.Disabled, ExitCode.DISABLED),
    (core.AllocationFailed, ExitCode.ALLOCATION_FAILED),
    (core.StoreError, ExitCode.UNEXPECTED),
    (core.StoreBusy, ExitCode.STORE_BUSY),
)


def exit_code_for(exc: DpsError) -> ExitCode:
    """The exit code of a core error, by the table above."""
    return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), ExitCode.UNEXPECTED)


# A Base64 run long enough to be a key (16 bytes and up) or a SAS signature, also URL-encoded (%2B, %2F, %3D).
_SECRET_LOOKING = re.compile(r"(?:[A-Za-z0-9+/]|%2[BbFf]){22,}(?:=|%3[Dd]){0,2}")
# Whatever follows a field that holds a secret, up to the next separator: sig= of a SAS token, a connection string's key.
_SECRET_FIELD = re.compile(r"(?i)\b(sig|sharedaccesskey)=[^&;\s'\"]+")
# ...unless it reads as words: CamelCase like DeviceRegistrationState, or one case throughout. A random key of
# 22 characters or more has this shape with a probability below one in a billion.
_WORDS = re.compile(r"(?:[A-Z][a-z]{2,})+|[a-z]+|[A-Z]+")


def _redact(text: str) -> str:
    """Usage errors quote what was typed; a key typed in the wrong place must not end up in CI logs."""
    return _SECRET_LOOKING.sub(
        lambda m: m.group(0) if _WORDS.fullmatch(m.group(0)) else "<redacted>",
        _SECRET_FIELD.sub(lambda m: f"{m.group(1)}=<redacted>", text),
    )


def _say(message: str, hint: str | None = None) -> None:
    # One line each, whatever the message holds: scripts grep stderr line by line. Then made safe for the
    # terminal: a message may quote a device's, a webhook's or a file's text (escape sequences included).
    print("error: " + safe_text(" ".join(str(message).split())), file=sys.stderr)
    if hint:
        print("hint: " + safe_text(" ".join(hint.split())), file=sys.stderr)


def run_guarded(command: Command, args: list[str] | None, prog_name: str) -> int:
    """Run the Click command, turning every exception into a message and an exit code."""
    try:
        result = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except DpsError as exc:
        _say(exc.message, exc.hint)
        return int(exit_code_for(exc))
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except BrokenPipeError:
        # `dpsctl ... | head` closed the pipe: not an error worth a message.
        sys.stderr.close()
        return 0
    except OSError as exc:
        # The operating system refused a file (permission, full disk, read-only folder, name too long...): the
        # user's to fix, not a bug. Where a command did not say which file, the error itself does.
        # Imported here, not at the top: safefiles brings `secrets` (hashlib, hmac), ~5 ms every start-up would pay.
        from dpsctl.core.safefiles import os_error

        failure = os_error(exc, exc.filename, "use")
        _say(failure.message, failure.hint)
        return int(exit_code_for(failure))
    except NoArgsIsHelpError as exc:
        # Bare `dpsctl` or `dpsctl hub`: the help the user asked for in effect, on stdout, exit 0.
        sys.stdout.write(exc.ctx.get_help() + "\n")
        return 0
    except TyperException as exc:  # Click usage errors
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else prog_name
        _say(_redact(exc.format_message()), f"see `{where} --help`")
        return int(exc.exit_code or ExitCode.INVALID_INPUT)
    except Abort:
        _say("aborted")
        return 1
    except Exception as exc:
        if os.environ.get("DPSCTL_DEBUG"):
            raise
        _say(
            f"unexpected {type(exc).__name__}: {exc}",
            "this is a dpsctl bug; rerun with DPSCTL_DEBUG=1 for a traceback and report it",
        )
        return int(ExitCode.UNEXPECTED)
    return int(result) if isinstance(result, int) else 0
