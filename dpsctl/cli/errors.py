"""The single error boundary: every failure becomes `error: ...` (and `hint: ...`) on stderr and an exit code."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from dpsctl.core.errors import DpsError, ExitCode


# A Base64 run long enough to be a key (16 bytes and up) or a SAS signature...
_SECRET_LOOKING = re.compile(r"[A-Za-z0-9+/]{22,}={0,2}")
# ...unless it reads as words: CamelCase like DeviceRegistrationState, or one case throughout. A random key of
# 22 characters or more has this shape with a probability below one in a billion.
_WORDS = re.compile(r"(?:[A-Z][a-z]{2,})+|[a-z]+|[A-Z]+")


def _redact(text: str) -> str:
    """Usage errors quote what was typed; a key typed in the wrong place must not end up in CI logs."""
    return _SECRET_LOOKING.sub(lambda m: m.group(0) if _WORDS.fullmatch(m.group(0)) else "<redacted>", text)


def _say(message: str, hint: str | None = None) -> None:
    # One line each, whatever the message holds: scripts grep stderr line by line.
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    if hint:
        print("hint: " + " ".join(hint.split()), file=sys.stderr)


def run_guarded(command: Any, args: list[str] | None, prog_name: str) -> int:
    """Run the Click command, turning every exception into a message and an exit code."""
    try:
        result = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except DpsError as exc:
        _say(exc.message, exc.hint)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except BrokenPipeError:
        # `dpsctl ... | head` closed the pipe: not an error worth a message.
        sys.stderr.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - this is the boundary
        if type(exc).__name__ == "NoArgsIsHelpError":
            # Bare `dpsctl` or `dpsctl hub`: the help the user asked for in effect, on stdout, exit 0.
            sys.stdout.write(exc.ctx.get_help() + "\n")
            return 0
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # Click usage errors
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else prog_name
            _say(_redact(exc.format_message()), f"see `{where} --help`")
            return int(getattr(exc, "exit_code", ExitCode.INVALID_INPUT) or ExitCode.INVALID_INPUT)
        if type(exc).__name__ == "Abort":
            _say("aborted")
            return 1
        if os.environ.get("DPSCTL_DEBUG"):
            raise
        _say(f"unexpected {type(exc).__name__}: {exc}", "this is a dpsctl bug; rerun with DPSCTL_DEBUG=1 for a traceback and report it")
        return int(ExitCode.UNEXPECTED)
    return int(result) if isinstance(result, int) else 0
