"""An exclusive inter-process lock held across a command's read-modify-write."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from dpsctl.core.errors import StoreBusy

DEFAULT_LOCK_TIMEOUT = 30.0


def lock_timeout() -> float:
    """Seconds to wait for the lock: `DPSCTL_LOCK_TIMEOUT`, else 30."""
    try:
        return max(0.0, float(os.environ.get("DPSCTL_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)))
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT


class FileLock:
    """flock(2) on a sidecar `<store>.lock` file; released when the process dies, so a crash never wedges it."""

    def __init__(self, store_path: Path, timeout: float | None = None) -> None:
        self.path = store_path.with_name(store_path.name + ".lock")
        self.timeout = lock_timeout() if timeout is None else timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        """Wait (polling, with back-off) until the lock is ours, or raise StoreBusy."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StoreBusy(
                        f"store {self.path.with_suffix('')} is locked by another dpsctl process (waited {self.timeout:g} s)",
                        hint="retry, or raise the wait with DPSCTL_LOCK_TIMEOUT=SECONDS",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def release(self) -> None:
        """Give the lock back."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
