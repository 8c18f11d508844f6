"""The ``.hitok-output`` file in every OUT_DIR of ``hitok batch``: which files there are results, and how each
was made.

It is a log with one JSON line per file written, appended once the file is in place (``O_APPEND``, one
``write`` per line, so two runs into one folder interleave whole lines; a line cut short by a crash is
ignored), the last line of a file counting::

    {"file": "sub/a.png", "input": "sub/a.png", "bytes": 123456, "settings": {"model": "66f99d652b95", ...}}

It serves twice:

* A later ``batch --recursive`` over a folder above OUT_DIR skips exactly the recorded files, and says so;
  photos the user keeps in the same folder are upscaled like any other.
* ``--skip-existing`` trusts an existing output only when its last record names the same input and settings
  and the file still has the recorded size. Anything else is refused before any work, or redone when
  ``--overwrite`` is given too.

Settings are what a photographer asks of the picture: the model (its id), the output size, detail, fidelity,
colour fix, format and JPEG/WebP quality. Device, precision, tile and engine change pixels by rounding only
and are not compared.

A marker written before records existed (its first line is :data:`LEGACY_HEADER`) lists nothing: its whole
folder is taken for results, as that hitok did, and every file skipped that way is reported.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

MARKER = ".hitok-output"
HEADER = "hitok batch results: one JSON line per file written (hitok reads them to resume and to tell results " \
         "from photos)"
LEGACY_HEADER = "hitok batch results: `hitok batch` does not take this folder as input"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a marker planted as a link must not make hitok append to another file


@dataclass
class Log:
    """What a marker says: the last record per result file (path relative to the marker's folder)."""

    folder: Path
    records: dict[str, dict]
    legacy: bool = False


def read_log(folder: Path) -> Log | None:
    """The marker of ``folder``, or None when it has none (or it cannot be read)."""
    try:
        lines = (folder / MARKER).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    records: dict[str, dict] = {}
    for line in lines[1:]:
        with contextlib.suppress(ValueError, RecursionError):  # a cut or hostile line: not a record
            record = json.loads(line)
            if isinstance(record, dict) and isinstance(record.get("file"), str):
                records[record["file"]] = record
    return Log(folder, records, legacy=bool(lines) and lines[0].strip() == LEGACY_HEADER)


def start_log(folder: Path) -> None:
    """Create the marker of ``folder`` (an existing one, of this run or another, is kept as it is)."""
    with contextlib.suppress(FileExistsError):
        fd = os.open(folder / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        try:
            os.write(fd, (HEADER + "\n").encode())
        finally:
            os.close(fd)


def record(folder: Path, result: Path, source: str, settings: dict) -> None:
    """Append the record of ``result`` (a file below ``folder``, just written from input ``source``)."""
    line = json.dumps({"file": result.relative_to(folder).as_posix(), "input": source,
                       "bytes": result.stat().st_size, "settings": settings}, sort_keys=True)
    fd = os.open(folder / MARKER, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def mismatch(log: Log | None, result: Path, source: str, settings: dict) -> str | None:
    """Why the existing ``result`` cannot be trusted as the output of ``source`` with ``settings``; None if it can."""
    found = log.records.get(result.relative_to(log.folder).as_posix()) if log else None
    if found is None:
        return "no record of how it was made"
    if found.get("input") != source:
        return f"it was made from {found.get('input')}"
    old = found.get("settings") if isinstance(found.get("settings"), dict) else {}
    changed = [f"{k} {_show(old.get(k))} (now {_show(settings.get(k))})"
               for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
    if changed:
        return "it was made with " + ", ".join(changed)
    try:
        if result.stat().st_size != found.get("bytes"):
            return "it changed since hitok wrote it"
    except OSError:
        return "it cannot be read"
    return None


def _show(value) -> str:
    if value is None:
        return "default"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)
