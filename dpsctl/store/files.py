"""What a store file must be before dpsctl reads or writes it: followed to its target, regular, one link, ours.

A store reached through a symbolic link is read, locked and written at the link's target (the link stays).
A store with more than one hard link is refused: two names for one store would not exclude each other (the
lock is per name) and every write replaces the file at one name, splitting the two. SQLite's side files
(-wal, -shm, -journal) must be regular files of this user or of the store's owner, with one link; one of
ours with a wider mode is narrowed to 0600, anyone else's is refused before SQLite opens (and trusts) it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from dpsctl.core.errors import StoreError
from dpsctl.core.safefiles import CLOEXEC, NOFOLLOW, NONBLOCK, file_kind, os_error

OTHER_STORE_HINT = "point --db / DPSCTL_DB at another file"


def store_target(path: Path) -> Path:
    """The file a store path stands for: the final target of a symbolic link, else the path itself."""
    try:
        if not stat.S_ISLNK(os.lstat(path).st_mode):
            return path
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise os_error(exc, path, "open store") from None
    target = Path(os.path.realpath(path))
    if not os.path.lexists(target):
        raise StoreError(
            f"store {path} is a symbolic link to {target}, which does not exist",
            hint=f"create the store there first (dpsctl --db {target} init), or remove the link",
        )
    return target


def check_store_file(path: Path, target: Path, *, write: bool, creating: tuple[str, ...] = ()) -> os.stat_result | None:
    """Stat the store's target and refuse what dpsctl must not use (None: it does not exist yet)."""
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error(exc, path, "open store") from None
    named = f"store {path}" + (f" (a link to {target})" if target != path else "")
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(
            f"{named} is a {file_kind(info.st_mode)}, not a regular file; it was left untouched", hint=OTHER_STORE_HINT
        )
    if info.st_nlink > 1 and not _being_created(target, info, creating):
        raise StoreError(
            f"{named} has {info.st_nlink} hard links; dpsctl refuses it, because writes through one name would not be seen "
            "(nor locked against) through the others",
            hint=f"keep one name: copy it to a new file (cp {target} NEW) and use that, or remove the other links",
        )
    if write and (not info.st_mode & stat.S_IWUSR or not os.access(target, os.W_OK)):
        raise StoreError(
            f"{named} is read-only (mode {stat.S_IMODE(info.st_mode):04o}); dpsctl does not replace a store it may not write",
            hint=f"allow writing (chmod u+w {target}) if the change is intended, or work on a copy",
        )
    return info


def _being_created(target: Path, info: os.stat_result, markers: tuple[str, ...]) -> bool:
    """True when the extra link is a store being created beside it (SQLite links a finished store into place)."""
    if not markers:
        return False
    prefix = f".{target.name[:200]}."
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(markers)]
    except OSError:
        return False
    for name in names:
        try:
            other = os.lstat(target.parent / name)
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino):
            return True
    return False


def read_store_bytes(path: Path, target: Path) -> bytes | None:
    """The whole store file (None if it does not exist), opened without following links or blocking on a FIFO."""
    try:
        fd = os.open(target, os.O_RDONLY | NOFOLLOW | NONBLOCK | CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error(exc, path, "read store") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(
                f"store {path} is a {file_kind(info.st_mode)}, not a regular file; it was left untouched",
                hint=OTHER_STORE_HINT,
            )
        # Read what fstat says is there, plus a little: a file being appended to by another program cannot keep us reading.
        budget = info.st_size + (1 << 20)
        chunks: list[bytes] = []
        while budget > 0:
            chunk = os.read(fd, min(budget, 8 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            budget -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise os_error(exc, path, "read store") from None
    finally:
        os.close(fd)


SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def secure_side_files(
    path: Path, target: Path, store_owner: int, *, create: tuple[str, ...] = ("-wal", "-shm")
) -> list[Path]:
    """Check SQLite's side files of `target` before SQLite opens them; create the missing ones in `create`, 0600.

    SQLite opens an existing -wal or -shm as it finds it and writes pages (keys included) into it. One planted
    by another user, or left world-readable, would hand them the store; so each must be a regular file, not a
    link, with one name, owned by this user, by the store's owner or by root. Ours with a wider mode are narrowed to 0600.
    Creating the missing ones here (O_EXCL|O_NOFOLLOW, 0600) leaves no moment in which another user could plant one.
    Returns the files it created (to be removed if the store is then refused).
    """
    me = os.geteuid()
    created: list[Path] = []
    for suffix in SIDE_SUFFIXES:
        side = target.with_name(target.name + suffix)
        if suffix in create:
            try:
                os.close(os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o600))
                created.append(side)
                continue
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno in (
                    errno.EACCES,
                    errno.EROFS,
                ):  # a reader in a folder it may not write; SQLite opens read-only
                    continue
                raise os_error(exc, side, "create SQLite side file") from None
        try:
            info = os.lstat(side)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise os_error(exc, side, "check SQLite side file") from None
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = f"is a {file_kind(info.st_mode)}, not a regular file"
        elif info.st_uid not in (me, store_owner, 0):  # root could read the store anyway
            problem = f"belongs to another user (uid {info.st_uid}), who could read or change what SQLite writes there"
        elif info.st_nlink > 1:
            problem = f"has {info.st_nlink} hard links"
        if problem:
            remove_empty(created)
            raise StoreError(
                f"SQLite side file {side} of store {path} {problem}; dpsctl did not open the store",
                hint=f"find out who made it; if no dpsctl or SQLite process uses the store, remove it (rm {side})",
            )
        if stat.S_IMODE(info.st_mode) & 0o077:
            try:
                fd = os.open(side, os.O_RDONLY | NOFOLLOW | NONBLOCK | CLOEXEC)
                try:
                    os.fchmod(fd, 0o600)
                finally:
                    os.close(fd)
            except OSError as exc:
                remove_empty(created)
                raise os_error(exc, side, "narrow the mode of SQLite side file") from None
    return created


def remove_empty(files: list[Path]) -> None:
    """Remove those of `files` (side files we created) that are still empty: nothing of a refused store is left behind."""
    for side in files:
        try:
            if os.lstat(side).st_size == 0:
                side.unlink()
        except OSError:
            pass
