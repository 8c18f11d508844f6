"""Safe writes: a finished file or no file, never a partial one, and write problems found before the work.

* :func:`atomic_path` / :func:`atomic_write`: every output hitok writes (images, code dumps, copied
  models) is written to a hidden temporary file in the destination folder and moved into place with
  ``os.replace`` (atomic on POSIX and Windows within one file system). If anything fails — a full disk,
  an encoder error, Ctrl-C, SIGTERM — the temporary file is removed and the destination is left
  exactly as it was, so a rerun of ``hitok batch --skip-existing`` can trust any file it finds.
* A process killed outright (SIGKILL, power loss) cannot clean up: temp names carry the writer's host
  and pid, and the next write into that folder removes temp files whose writer is gone
  (:func:`sweep_stale_temps`).
* :func:`check_writable`: the folder of an output is probed (a small file created and removed) before
  any model is loaded, so a read-only folder, a parent that is a file or a full disk is one line at
  start-up, not an error after an hour of inference.
* :func:`claim`: a lock file per output, so two ``batch`` runs over one folder share the work.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import secrets
import shutil
import socket
import time
import zlib
from pathlib import Path
from typing import Iterator

from .errors import UserError, one_line

TEMP_SUFFIX = ".hitok-tmp"
LOCK_SUFFIX = ".hitok-lock"
# Temp files of hitok versions that did not record their writer are stale after this long.
UNOWNED_STALE_S = 3600
_PROBE_BYTES = 64 * 1024
# errnos that mean every later write to the same place fails too: a batch stops at the first one.
SYSTEMIC_ERRNOS = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_OWNED = re.compile(r"\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")


class WriteError(UserError):
    """An output that cannot be written; ``systemic`` when no later write to that place can succeed."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code

    @property
    def systemic(self) -> bool:
        return self.errno in SYSTEMIC_ERRNOS


def _write_error(dest: Path, exc: OSError) -> WriteError:
    return WriteError(f"cannot write {dest}: {exc.strerror or one_line(exc)}", exc.errno)


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and (name.endswith(TEMP_SUFFIX) or name.endswith(LOCK_SUFFIX))


def _temp_name(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists and belongs to someone else
        return True
    return True


def _writer_gone(path: Path) -> bool:
    m = _OWNED.search(path.name)
    if m is None:  # an older hitok's temp file: no writer recorded, judged by age
        try:
            return time.time() - path.stat().st_mtime > UNOWNED_STALE_S
        except OSError:
            return False
    return m["host"] == _HOST and not _pid_alive(int(m["pid"]))


def sweep_stale_temps(folder: Path, recursive: bool = False, name: str | None = None) -> int:
    """Remove temp and lock files in ``folder`` (``name``: only those of that output) whose writer is gone.

    Those of another host are left alone: its processes cannot be checked from here."""
    if not folder.is_dir():
        return 0
    removed = 0
    for suffix, gone in ((TEMP_SUFFIX, _writer_gone), (LOCK_SUFFIX, lambda p: _lock_holder(p) is None)):
        pattern = f".{glob.escape(name)}*{suffix}" if name else f".*{suffix}"
        for path in (folder.rglob(pattern) if recursive else folder.glob(pattern)):
            if path.is_file() and gone(path):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
    return removed


def ensure_parent(dest: Path) -> None:
    """Create the destination's folder, or explain in one line why it cannot exist."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise WriteError(f"cannot write {dest}: a parent of it is a file, not a folder", errno.ENOTDIR) from None
    except OSError as exc:
        raise _write_error(dest, exc) from None
    if not dest.parent.is_dir():
        raise WriteError(f"cannot write {dest}: {dest.parent} is not a folder", errno.ENOTDIR)


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(dest: Path | str) -> None:
    """Raise a one-line :class:`WriteError` now if ``dest`` could not be written later.

    Probes the output's folder (or, when it does not exist yet, the nearest folder above it that
    does, where it would be created) by writing a small file there and removing it: permissions,
    read-only mounts and a disk without space all show. Leaves nothing behind."""
    dest = Path(dest)
    if dest.is_dir():
        raise WriteError(f"cannot write {dest}: it is a folder", errno.EISDIR)
    folder = _nearest_existing(dest.parent)
    if not folder.is_dir():
        raise WriteError(f"cannot write {dest}: {folder} is a file, not a folder", errno.ENOTDIR)
    probe = _temp_name(folder / dest.name)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"\0" * _PROBE_BYTES)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _write_error(dest, exc) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def low_space_warning(place: Path | str, needed: int) -> str | None:
    """A warning when the disk that would hold ``place`` (an output file or folder) has less free space than
    ``needed`` bytes, an estimate."""
    folder = _nearest_existing(Path(place))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if free >= needed:
        return None
    return (f"only {free / 2**20:.1f} MiB free on the disk of {place}; the output may need about "
            f"{needed / 2**20:.1f} MiB")


def _link_into_place(tmp: Path, dest: Path) -> None:
    """``tmp`` becomes ``dest`` only if ``dest`` does not exist: a hard link is created atomically or not at all.
    File systems without hard links fall back to a check just before the rename."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise WriteError(f"cannot write {dest}: a file of that name appeared while hitok worked (another program "
                         "made it); pass --overwrite to replace it", errno.EEXIST) from None
    except OSError:
        if dest.exists():
            raise WriteError(f"cannot write {dest}: a file of that name appeared while hitok worked (another "
                             "program made it); pass --overwrite to replace it", errno.EEXIST) from None
        os.replace(tmp, dest)
        return
    with contextlib.suppress(OSError):  # dest is in place; a leftover temp name is swept by the next write
        tmp.unlink()


@contextlib.contextmanager
def atomic_path(dest: Path | str, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it becomes ``dest`` in one step, replacing a file there
    only with ``replace`` (else a file that appeared meanwhile is a WriteError and stays as it is)."""
    dest = Path(dest)
    if dest.is_dir():
        raise WriteError(f"cannot write {dest}: it is a folder", errno.EISDIR)
    ensure_parent(dest)
    sweep_stale_temps(dest.parent, name=dest.name)
    tmp = _temp_name(dest)
    try:
        # O_EXCL: never clobber someone else's file that happens to have our temporary name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
    except OSError as exc:
        raise _write_error(dest, exc) from None
    try:
        yield tmp
        try:
            os.replace(tmp, dest) if replace else _link_into_place(tmp, dest)
        except OSError as exc:
            raise _write_error(dest, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(dest: Path | str, replace: bool = True) -> Iterator:
    """Like :func:`atomic_path`, but yields an open binary file."""
    with atomic_path(dest, replace) as tmp:
        try:
            with open(tmp, "wb") as fp:
                yield fp
                fp.flush()
                os.fsync(fp.fileno())
        except OSError as exc:
            raise _write_error(Path(dest), exc) from None


def _lock_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}{LOCK_SUFFIX}"


def _lock_holder(lock: Path) -> str | None:
    """Who holds ``lock`` ("host pid"), or None when the lock is stale (its process on this host is gone)."""
    try:
        host, pid = lock.read_text().split()
    except (OSError, ValueError):
        return "unknown"  # being written this instant, or foreign: respect it
    if host == _HOST and not _pid_alive(int(pid)):
        return None
    return f"pid {pid}" if host == _HOST else "a process on another machine"


@contextlib.contextmanager
def claim(dest: Path | str) -> Iterator[str | None]:
    """Mark ``dest`` as being made by this process for the duration of the block.

    Yields None when the claim is ours, or who holds it (another live hitok run: skip this file). A
    lock left by a process that is gone is taken over."""
    dest = Path(dest)
    ensure_parent(dest)
    lock = _lock_path(dest)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None:
                yield holder
                return
            with contextlib.suppress(OSError):
                lock.unlink()
            continue
        except OSError as exc:
            raise _write_error(dest, exc) from None
        break
    else:
        yield "another process"
        return
    try:
        os.write(fd, f"{_HOST} {os.getpid()}".encode())
        os.close(fd)
        yield None
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
