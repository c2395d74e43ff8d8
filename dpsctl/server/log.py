"""The request log of `dpsctl serve`: one line per request or refusal, on stderr, never a secret."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from dpsctl.core.clock import format_timestamp, utc_now


class RequestLog:
    """One line per request on a stream (stderr), whole lines even when threads write at once."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self._lock = threading.Lock()

    def line(self, text: str, *, always: bool = False) -> None:
        """Write one line, control characters escaped so a client cannot forge log lines."""
        if self.quiet and not always:
            return
        clean = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
        stamp = format_timestamp(utc_now())[:23] + "Z"
        with self._lock:
            try:
                self.stream.write(f"{stamp} {clean}\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed stderr must not take a request down
