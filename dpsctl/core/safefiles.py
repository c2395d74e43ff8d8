"""Files on the user's disk, opened so that a planted file, link or FIFO cannot redirect, hang or flood dpsctl.

Every file dpsctl writes is created with O_CREAT|O_EXCL|O_NOFOLLOW under a name nobody can predict, and is
0600 (or the mode asked for) before its first byte; a file that replaces another is renamed over it, so a
symbolic link at the destination is replaced, never written through. Every file dpsctl reads is opened
without blocking (a FIFO answers at once), checked to be a regular file, and read up to a limit.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from dpsctl.core.errors import DpsError, InvalidInput, StoreError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)

# errno -> (what it means, what to do): the one-line explanations of operating-system failures.
_REASONS: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", "check the owner and mode of the file and of its folder (ls -ld)"),
    errno.EPERM: ("operation not permitted", "check the owner and mode of the file and of its folder (ls -ld)"),
    errno.EROFS: ("the file system is read-only", "use a folder on a writable file system"),
    errno.ENOSPC: (
        "the disk is full (no space left on device)",
        "free some space on that disk, or use a folder on another one",
    ),
    errno.EDQUOT: ("the disk quota is exhausted", "free some space, or use a folder on another disk"),
    errno.ENAMETOOLONG: ("the file name is too long for the file system", "use a shorter name"),
    errno.EISDIR: ("it is a directory", "give the path of a file"),
    errno.ENOTDIR: ("a part of the path is not a directory", "check the path"),
    errno.ENOENT: ("it does not exist", "check the path (and that its folder exists)"),
    errno.ELOOP: (
        "it is a symbolic link, which dpsctl does not follow here",
        "remove the link (rm PATH) and run the command again",
    ),
    errno.EMFILE: ("this process has too many open files", "raise the limit (ulimit -n)"),
    errno.EIO: ("an input/output error (a failing disk?)", "check the disk (dmesg)"),
}


def os_error(
    exc: OSError, path: str | os.PathLike[str] | None, doing: str, error: type[DpsError] = StoreError
) -> DpsError:
    """A one-line error for an OSError: what was done, to which path, why it failed, and what to do."""
    where = exc.filename if exc.filename is not None else path
    reason, hint = _REASONS.get(
        exc.errno or 0, (exc.strerror or str(exc), "check the path, the disk and the permissions")
    )
    if where is None:
        return error(f"the operating system refused: {reason}", hint=hint)
    return error(f"cannot {doing} {where}: {reason}", hint=hint)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


def read_bounded(path: str | os.PathLike[str], what: str, limit: int, error: type[DpsError] = InvalidInput) -> bytes:
    """Read a regular file of at most `limit` bytes; a FIFO, device or folder is refused at once, never read."""
    try:
        fd = os.open(path, os.O_RDONLY | NONBLOCK | CLOEXEC)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except PermissionError:
        raise error(
            f"{what} {path} is not readable (permission denied)", hint="check its owner and mode (ls -l)"
        ) from None
    except OSError as exc:
        raise os_error(exc, path, f"read {what}", error) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{what} {path} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise error(
                f"{what} {path} is a {file_kind(info.st_mode)}, not a regular file",
                hint="give the path of a regular file",
            )
        if info.st_size > limit:
            raise error(f"{what} {path} is {_size(info.st_size)}; dpsctl reads files of at most {_size(limit)}")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while we read it
                raise error(
                    f"{what} {path} is larger than {_size(limit)}; dpsctl reads files of at most {_size(limit)}"
                )
    except OSError as exc:
        raise os_error(exc, path, f"read {what}", error) from None
    finally:
        os.close(fd)


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def temporary_prefix(path: Path) -> str:
    """The start of the names of `path`'s temporary files (the stale ones are found by it)."""
    return f".{path.name[:200]}."


def write_new(path: Path, payload: bytes, *, mode: int = 0o600) -> None:
    """Create `path` (never an existing file, never through a link) with `mode` from the first byte; OSError as is."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # umask trims the mode given to open; set it exactly while the file is empty
        _write_all(fd, payload)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def write_atomically(path: Path, payload: bytes, *, mode: int = 0o600) -> None:
    """Write an unpredictably named temporary file beside `path` and rename it over `path`, fsynced; OSError as is.

    The temporary file is created with O_EXCL|O_NOFOLLOW and `mode`, so a file or link planted beside the
    store cannot be adopted (with its owner and mode) or followed. The rename replaces whatever `path` is
    (a symbolic link included) and never writes through it. When run as root on a file of another user,
    the file keeps its owner.
    """
    owner = None
    try:
        current = os.lstat(path)
        if stat.S_ISREG(current.st_mode) and os.geteuid() == 0 and current.st_uid != 0:
            owner = (current.st_uid, current.st_gid)
    except OSError:
        pass
    tmp = path.with_name(f"{temporary_prefix(path)}{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            if owner:
                os.fchown(fd, *owner)
            _write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename or a link in it is on disk."""
    dir_fd = os.open(folder, os.O_RDONLY | CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def remove_stale_temporaries(path: Path, suffix: str = ".tmp") -> None:
    """Delete our own temporary files left beside `path` by killed writers (call with the store's lock held).

    Only regular files of this user are removed: anything else matching the pattern is not ours, and is
    never opened either, since new temporary files get new, unpredictable names.
    """
    prefix = temporary_prefix(path)
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    me = os.geteuid()
    for name in names:
        if name.startswith(prefix) and name.endswith(suffix):
            stale = path.parent / name
            try:
                info = os.lstat(stale)
                if stat.S_ISREG(info.st_mode) and info.st_uid == me:
                    stale.unlink()
            except OSError:
                pass
