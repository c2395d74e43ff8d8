"""An exclusive inter-process lock held across a command's read-modify-write."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from pathlib import Path

from dpsctl.core.errors import StoreBusy, StoreError
from dpsctl.core.safefiles import CLOEXEC, NOFOLLOW, NONBLOCK, file_kind, os_error

DEFAULT_LOCK_TIMEOUT = 30.0


def lock_timeout() -> float:
    """Seconds to wait for the lock: `DPSCTL_LOCK_TIMEOUT`, else 30."""
    try:
        return max(0.0, float(os.environ.get("DPSCTL_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)))
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT


class FileLock:
    """flock(2) on a sidecar `<store>.lock` file; released when the process dies, so a crash never wedges it.

    The lock file is never followed: a symbolic link (dangling or not), a folder or a FIFO in its place is
    refused with its path, instead of creating or locking a file somewhere else.
    """

    def __init__(self, store_path: Path, timeout: float | None = None) -> None:
        self.path = store_path.with_name(store_path.name + ".lock")
        self.timeout = lock_timeout() if timeout is None else timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        """Wait (polling, with back-off) until the lock is ours, or raise StoreBusy."""
        fd = self._open()
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

    def _open(self) -> int:
        hint = f"no dpsctl makes such a thing: remove it (rm -r {self.path}) and run the command again"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW | NONBLOCK | CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreError(
                    f"lock file {self.path} is a symbolic link; dpsctl never follows one", hint=hint
                ) from None
            if exc.errno == errno.EISDIR:
                raise StoreError(f"lock file {self.path} is a directory", hint=hint) from None
            raise os_error(exc, self.path, "create lock file") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise StoreError(f"lock file {self.path} is a {file_kind(mode)}, not a regular file", hint=hint)
        return fd

    def release(self) -> None:
        """Give the lock back."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
