"""Batch processing in the library: a folder of photos -> a mirrored folder of x4 photos, resumable.

    runner = BatchRunner(hitok.Upscaler(hitok.load_model()))
    run = runner.process("photos", "photos_x4", recursive=True)   # run.counts, run.outcomes, run.stopped

What is decided before any model is loaded (inputs, output names, resume, probes) is hitok/batch_plan.py;
``hitok batch`` plans first (so that no model loads for a run that is refused), then runs the plan here and
prints the runner's events (``on_outcome``: one per file; ``on_progress``: files done, fractions included).

* Every output written is recorded with its input and settings in OUT_DIR's ``.hitok-output``
  (hitok/results.py); a resume (``skip_existing``) trusts only outputs recorded with the same settings.
* A bad file is an outcome ``failed`` with its one-line reason; the run goes on. A write error that every
  later file would hit too (a full disk, a read-only file system) stops the run at once (``run.stopped``).
* Several upscalers (one per device): one worker thread each, pulling files from one queue (torch releases
  the GIL inside kernels, so threads are enough).
* Two runs over one folder share the work: each output is claimed with a lock file while it is made
  (fsutil.claim); a file claimed or finished by the other run is skipped.
* Ctrl-C or SIGTERM: workers stop between tiles, the file in flight is abandoned before it is written, the
  temp-file scheme guarantees nothing partial remains, and ``run.stopped`` is an :class:`Interrupted` whose
  message counts the files finished; every outcome so far is kept. Rerun with ``skip_existing=True``.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from hitok.fsutil import WriteError, claim
from hitok.imageio import DEFAULT_MAX_PIXELS
from hitok.outsize import OutputSize
from hitok.upscaler import Upscaler

from . import results
from .batch_plan import (OUTPUT_MARKER, BatchPlan, Job, Outcome, short_reason, find_inputs, plan_jobs,
                         prepare_out_dir, record_settings)
from .errors import Interrupted, Terminated, UserError, one_line

__all__ = ["BatchRunner", "BatchRun", "BatchPlan", "Job", "Outcome", "OUTPUT_MARKER", "find_inputs", "plan_jobs",
           "prepare_out_dir", "record_settings"]


@dataclass
class BatchRun:
    """What a run did: every outcome so far (those decided by the plan first), why it stopped early (None: it ran
    to the end) and the plan's warnings (low disk space)."""

    outcomes: list[Outcome]
    stopped: UserError | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """{"done": n, "skipped": n, "failed": n}."""
        return {s: sum(o.status == s for o in self.outcomes) for s in ("done", "skipped", "failed")}


class _Stop(Exception):
    """Raised inside a worker's progress callback to abandon the file in flight."""


class BatchRunner:
    """Runs batch plans with one worker per upscaler (one per device), reporting each file as it finishes.

    ``on_outcome(outcome)``: once per file, from the worker that made it. ``on_progress(x)``: x = files finished
    plus the fractions of files in flight, for an ETA that moves during long files too."""

    def __init__(self, upscalers: Upscaler | Sequence[Upscaler],
                 on_outcome: Callable[[Outcome], None] | None = None,
                 on_progress: Callable[[float], None] | None = None):
        self.upscalers = [upscalers] if isinstance(upscalers, Upscaler) else list(upscalers)
        if not self.upscalers:
            raise UserError("BatchRunner needs at least one Upscaler")
        self.on_outcome, self.on_progress = on_outcome, on_progress

    def process(self, in_dir: Path | str, out_dir: Path | str, recursive: bool = False, glob: str | None = None,
                fmt: str = "same", skip_existing: bool = False, overwrite: bool = False,
                size: OutputSize | None = None, quality: int | None = None, tile: int | None = None,
                overlap: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> BatchRun:
        """Plan and run a folder: what ``hitok batch IN_DIR OUT_DIR`` does, with its options as keywords. A
        refused run (OUT_DIR is IN_DIR, outputs exist without ``skip_existing`` / ``overwrite``, ...) raises
        UserError before any work; files that fail are outcomes."""
        first = self.upscalers[0]
        settings = record_settings(first.model_id, first.detail, first.fidelity, first.color_fix, size, quality,
                                   first.texture)
        plan = plan_jobs(in_dir, out_dir, recursive, glob, fmt, skip_existing, overwrite, size, max_pixels, settings)
        return self.run(plan, quality=quality, tile=tile, overlap=overlap, max_pixels=max_pixels, size=size)

    def run(self, plan: BatchPlan, **options) -> BatchRun:
        """Run a plan (batch_plan.plan_jobs); ``options`` go to every ``Upscaler.upscale_file`` (quality, tile,
        overlap, max_pixels, size)."""
        if plan.jobs:
            prepare_out_dir(plan.out_dir)
        todo: queue.Queue[Job] = queue.Queue()
        for job in plan.jobs:
            todo.put(job)
        stop = threading.Event()
        lock = threading.Lock()
        outcomes: list[Outcome] = []
        partial: dict[int, float] = {}  # worker -> fraction of its current file
        finished = [0]
        why: list[UserError] = []  # the first reason to stop early
        started = time.time()

        def report() -> None:
            if self.on_progress:
                self.on_progress(finished[0] + sum(partial.values()))

        def halt(reason: UserError) -> None:
            with lock:
                if not why:
                    why.append(reason)
            stop.set()

        def run_one(index: int, upscaler: Upscaler, job: Job) -> Outcome:
            start = time.perf_counter()

            def progress(done: int, total: int) -> None:
                if stop.is_set():
                    raise _Stop
                with lock:
                    partial[index] = done / total * 0.95  # the write is the last 5 %
                report()

            try:
                with claim(job.dst) as holder:
                    if holder is not None:
                        return Outcome(job.rel, "skipped", f"being made by another hitok run ({holder})")
                    if job.dst.exists() and (not job.replace or job.dst.stat().st_mtime >= started):
                        return Outcome(job.rel, "skipped", "written meanwhile by another hitok run")
                    # replaced only when the plan said so; a file another program makes meanwhile is kept
                    result = upscaler.upscale_file(job.src, job.dst, job.fmt, progress=progress, overwrite=job.replace,
                                                   **options)
                    noted = _record(job)
                return Outcome(job.rel, "done", seconds=time.perf_counter() - start,
                               warnings=job.warnings + result.warnings + noted, result=result)
            except WriteError as exc:
                if exc.systemic:
                    halt(UserError(f"stopped: {exc}; every later file would fail the same way"))
                return Outcome(job.rel, "failed", short_reason(str(exc), job.dst))
            except UserError as exc:
                return Outcome(job.rel, "failed", short_reason(str(exc), job.src))
            except (_Stop, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - one broken file must not end the batch
                return Outcome(job.rel, "failed", one_line(exc, with_type=True))

        def worker(index: int, upscaler: Upscaler) -> None:
            while not stop.is_set():
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    outcome = run_one(index, upscaler, job)
                except _Stop:
                    return
                except KeyboardInterrupt as exc:
                    interrupted(exc)
                    return
                with lock:
                    partial.pop(index, None)
                    finished[0] += 1
                    outcomes.append(outcome)
                report()
                if self.on_outcome:
                    self.on_outcome(outcome)

        def interrupted(exc: KeyboardInterrupt) -> None:
            halt(Interrupted("", terminated=isinstance(exc, Terminated)))

        if len(self.upscalers) == 1:
            # One worker runs in the main thread, so Ctrl-C lands in the middle of the work itself.
            try:
                worker(0, self.upscalers[0])
            except KeyboardInterrupt as exc:
                interrupted(exc)
        else:
            errors: list[BaseException] = []

            def guarded(i: int, upscaler: Upscaler) -> None:
                try:
                    worker(i, upscaler)
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                    errors.append(exc)

            threads = [threading.Thread(target=guarded, args=(i, u), daemon=True) for i, u in enumerate(self.upscalers)]
            for t in threads:
                t.start()
            try:
                while any(t.is_alive() for t in threads):
                    for t in threads:
                        t.join(timeout=0.2)
            except KeyboardInterrupt as exc:
                interrupted(exc)
                for t in threads:
                    t.join()
            if errors:
                raise errors[0]
        stopped = why[0] if why else None
        if isinstance(stopped, Interrupted):
            stopped = Interrupted(_interrupted_message(outcomes, len(plan.jobs)),
                                  terminated=stopped.exit_code == Terminated.exit_code)
        return BatchRun(plan.decided + outcomes, stopped, plan.warnings)


def _record(job: Job) -> list[str]:
    """Note the finished output in OUT_DIR's marker; a warning if that fails (the file itself is fine)."""
    out_dir = job.dst.parents[len(job.rel.parts) - 1]
    try:
        results.record(out_dir, job.dst, job.rel.as_posix(), job.settings)
    except OSError as exc:
        return [f"not recorded in {results.MARKER} ({exc.strerror or one_line(exc)}): a resume will not trust it"]
    return []


def _interrupted_message(outcomes: list[Outcome], total: int) -> str:
    done = sum(o.status == "done" for o in outcomes)
    return (f"interrupted after {done} of {total} file(s) done; no partial file was left; "
            "rerun with --skip-existing to resume")
