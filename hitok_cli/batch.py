"""``hitok batch``: a folder of photos -> a mirrored folder of x4 photos, resumable.

* Inputs: image files in IN_DIR (``--recursive`` for sub-folders), optionally filtered by a
  case-insensitive ``--glob``; hidden files, hitok's temp files and OUT_DIR itself are skipped.
* Outputs mirror the tree: IN_DIR/a/b.jpg -> OUT_DIR/a/b.jpg (suffix per ``--format``).
* Outputs that already exist are skipped with ``--skip-existing`` (a file that exists is
  complete: every write is atomic), replaced with ``--overwrite``, and otherwise refused up front.
* A bad file is recorded as failed with its one-line reason; the run goes on.
* Several devices: one worker thread per device, each with its own model, pulling files from
  one queue (torch releases the GIL inside kernels, so threads are enough).
* Ctrl-C: workers stop between tiles, the file in flight is abandoned before it is written, and
  the temp-file scheme guarantees nothing partial remains; rerun with ``--skip-existing``.
"""

from __future__ import annotations

import fnmatch
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import Interrupted, UserError, one_line
from .fsutil import is_temp_name
from .imageio import READ_SUFFIXES
from .upscale import UpscaleResult, Upscaler, resolve_output, same_file


@dataclass
class Job:
    src: Path
    rel: Path  # path relative to IN_DIR
    dst: Path
    fmt: str  # Pillow format name


@dataclass
class Outcome:
    rel: Path
    status: str  # "done" | "skipped" | "failed"
    reason: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    result: UpscaleResult | None = None


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def find_inputs(in_dir: Path, out_dir: Path, recursive: bool, glob: str | None) -> list[Path]:
    """Image files under ``in_dir`` in a stable (sorted) order."""
    if not in_dir.is_dir():
        raise UserError(f"{in_dir}: no such folder" if not in_dir.exists() else f"{in_dir}: is not a folder")
    found = []
    walker = in_dir.rglob("*") if recursive else in_dir.iterdir()
    for p in walker:
        rel = p.relative_to(in_dir)
        if any(part.startswith(".") for part in rel.parts) or is_temp_name(p.name) or not p.is_file():
            continue
        if out_dir.exists() and _inside(p, out_dir):
            continue  # OUT_DIR inside IN_DIR: never feed our own results back in
        if glob:
            target = rel.as_posix() if "/" in glob else p.name
            if not fnmatch.fnmatchcase(target.lower(), glob.lower()):
                continue
        elif p.suffix.lower() not in READ_SUFFIXES:
            continue
        found.append(p)
    return sorted(found, key=lambda p: p.relative_to(in_dir).as_posix())


def plan_jobs(in_dir: Path, out_dir: Path, recursive: bool = False, glob: str | None = None,
              fmt: str = "same", skip_existing: bool = False,
              overwrite: bool = False) -> tuple[list[Job], list[Outcome]]:
    """(jobs to run, outcomes already decided: skipped or failed before any work)."""
    if same_file(in_dir, out_dir):
        raise UserError("OUT_DIR is IN_DIR: outputs would replace the photos; choose another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder")
    jobs: list[Job] = []
    decided: list[Outcome] = []
    claimed: dict[Path, Path] = {}
    existing: list[Path] = []
    for src in find_inputs(in_dir, out_dir, recursive, glob):
        rel = src.relative_to(in_dir)
        named, pil_fmt = resolve_output(rel, None, fmt)
        # resolve_output names NAME_x4.EXT for single files; a mirrored tree keeps NAME.
        dst = out_dir / rel.parent / (rel.stem + named.suffix)
        if dst in claimed:
            decided.append(Outcome(rel, "failed", f"same output {dst.name} as {claimed[dst].as_posix()}"))
            continue
        claimed[dst] = rel
        if dst.exists():
            if skip_existing:
                decided.append(Outcome(rel, "skipped", "output exists"))
                continue
            if not overwrite:
                existing.append(dst)
        jobs.append(Job(src, rel, dst, pil_fmt))
    if existing:
        raise UserError(f"{len(existing)} output(s) already exist (e.g. {existing[0]}); "
                        "pass --skip-existing to resume or --overwrite to replace them")
    return jobs, decided


class _Stop(Exception):
    """Raised inside a worker's progress callback to abandon the file in flight."""


def run_jobs(jobs: list[Job], upscalers: list[Upscaler], upscale_kwargs: dict,
             on_progress: Callable[[float], None] | None = None,
             on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run the jobs with one worker per upscaler (one per device).

    ``on_progress(x)``: x = files finished plus the fractions of files in flight, for an ETA
    that moves during long files too.
    """
    todo: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        todo.put(job)
    stop = threading.Event()
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    partial: dict[int, float] = {}  # worker -> fraction of its current file
    finished = [0]

    def report() -> None:
        if on_progress:
            on_progress(finished[0] + sum(partial.values()))

    def worker(index: int, upscaler: Upscaler) -> None:
        while not stop.is_set():
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            start = time.perf_counter()

            def progress(done: int, total: int) -> None:
                if stop.is_set():
                    raise _Stop
                with lock:
                    partial[index] = done / total * 0.95  # the write is the last 5 %
                report()

            try:
                result = upscaler.upscale_file(job.src, job.dst, job.fmt, progress=progress, **upscale_kwargs)
                outcome = Outcome(job.rel, "done", seconds=time.perf_counter() - start,
                                  warnings=result.warnings, result=result)
            except (_Stop, KeyboardInterrupt):
                stop.set()
                return
            except UserError as exc:
                outcome = Outcome(job.rel, "failed", _short_reason(str(exc), job.src))
            except Exception as exc:  # noqa: BLE001 - one broken file must not end the batch
                outcome = Outcome(job.rel, "failed", f"{type(exc).__name__}: {one_line(exc)}")
            with lock:
                partial.pop(index, None)
                finished[0] += 1
                outcomes.append(outcome)
            report()
            if on_outcome:
                on_outcome(outcome)

    if len(upscalers) == 1:
        # One worker runs in the main thread, so Ctrl-C lands in the middle of the work itself.
        try:
            worker(0, upscalers[0])
        except KeyboardInterrupt:
            stop.set()
        if stop.is_set():
            raise Interrupted(_interrupted_message(outcomes, len(jobs)))
        return outcomes

    errors: list[BaseException] = []

    def guarded(i: int, upscaler: Upscaler) -> None:
        try:
            worker(i, upscaler)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i, u), daemon=True) for i, u in enumerate(upscalers)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    if stop.is_set():
        raise Interrupted(_interrupted_message(outcomes, len(jobs)))
    return outcomes


def _short_reason(message: str, src: Path) -> str:
    # Reasons go into a table whose row already names the file.
    for prefix in (f"{src}: ", f"{src.name}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _interrupted_message(outcomes: list[Outcome], total: int) -> str:
    done = sum(o.status == "done" for o in outcomes)
    return (f"interrupted after {done} of {total} file(s); no partial file was left; "
            "rerun with --skip-existing to resume")
