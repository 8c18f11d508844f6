"""Atomic file writes: a finished file or no file, never a partial one.

Every output hitok writes (images, code dumps, copied models) goes through :func:`atomic_path`:
the data is written to a hidden temporary file in the destination folder and moved into place
with ``os.replace`` (atomic on POSIX and Windows within one file system). If anything fails —
a full disk, an encoder error, Ctrl-C — the temporary file is removed and the destination is
left exactly as it was. A rerun of ``hitok batch --skip-existing`` can therefore trust that any
file it finds is complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

from .errors import UserError, one_line

TEMP_SUFFIX = ".hitok-tmp"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def ensure_parent(dest: Path) -> None:
    """Create the destination's folder, or explain in one line why it cannot exist."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot write {dest}: a parent of it is a file, not a folder") from None
    except OSError as exc:
        raise UserError(f"cannot write {dest}: {one_line(exc)}") from None
    if not dest.parent.is_dir():
        raise UserError(f"cannot write {dest}: {dest.parent} is not a folder")


@contextlib.contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it replaces ``dest`` in one step."""
    dest = Path(dest)
    if dest.is_dir():
        raise UserError(f"cannot write {dest}: it is a folder")
    ensure_parent(dest)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        # O_EXCL: never clobber someone else's file that happens to have our temporary name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
    except OSError as exc:
        raise UserError(f"cannot write {dest}: {exc.strerror or one_line(exc)}") from None
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(dest: Path | str) -> Iterator:
    """Like :func:`atomic_path`, but yields an open binary file."""
    with atomic_path(dest) as tmp:
        try:
            with open(tmp, "wb") as fp:
                yield fp
                fp.flush()
                os.fsync(fp.fileno())
        except OSError as exc:
            raise UserError(f"cannot write {dest}: {exc.strerror or one_line(exc)}") from None
