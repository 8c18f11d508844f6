"""``hitok batch``: a folder of photos -> a mirrored folder of x4 photos, resumable.

* Inputs: image files in IN_DIR (``--recursive`` for sub-folders), optionally filtered by a
  case-insensitive ``--glob``; hidden files, hitok's temp files, OUT_DIR itself and any folder an
  earlier ``batch`` wrote into (it holds a ``.hitok-output`` marker) are skipped, so results are
  never fed back in (x16).
* Outputs mirror the tree: IN_DIR/a/b.jpg -> OUT_DIR/a/b.jpg (suffix per ``--format``). Two inputs
  that would share an output (a.gif and a.png -> a.png) both get one: the one whose format is kept
  keeps the name, the other is named after its own suffix (a_gif.png), with a warning.
* Outputs that already exist are skipped with ``--skip-existing`` (a file that exists is
  complete: every write is atomic), replaced with ``--overwrite``, and otherwise refused up front.
* Before any model is loaded, every output folder is probed (fsutil.check_writable): an OUT_DIR
  that cannot be written is one line and nothing is computed; a sub-folder that cannot be is a
  failed row for its files. A write error that every later file would hit too (a full disk, a
  read-only file system) stops the run at once.
* A bad file is recorded as failed with its one-line reason; the run goes on.
* Several devices: one worker thread per device, each with its own model, pulling files from
  one queue (torch releases the GIL inside kernels, so threads are enough).
* Two runs over one folder share the work: each output is claimed with a lock file while it is
  made (fsutil.claim); a file claimed or finished by the other run is skipped.
* Ctrl-C or SIGTERM: workers stop between tiles, the file in flight is abandoned before it is
  written, the temp-file scheme guarantees nothing partial remains, and the summary still lists
  every file finished so far; rerun with ``--skip-existing``.
"""

from __future__ import annotations

import fnmatch
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hitok.fsutil import WriteError, check_writable, claim, is_temp_name, low_space_warning, sweep_stale_temps
from hitok.imageio import DEFAULT_MAX_PIXELS, READ_SUFFIXES, probe_image
from hitok.outsize import OutputSize
from hitok.upscaler import UpscaleResult, Upscaler, check_output_pixels, estimated_bytes, resolve_output, same_file

from .errors import Interrupted, Terminated, UserError, one_line

OUTPUT_MARKER = ".hitok-output"  # in every OUT_DIR: "this folder holds results, not photos to upscale"


@dataclass
class Job:
    src: Path
    rel: Path  # path relative to IN_DIR
    dst: Path
    fmt: str  # Pillow format name
    replace: bool = False  # dst existed when the run was planned (--overwrite)
    warnings: list[str] = field(default_factory=list)


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
    # earlier OUT_DIRs below IN_DIR (IN_DIR itself may be one: upscaling results again is then asked for)
    results = {d.parent for d in in_dir.rglob(OUTPUT_MARKER)} - {in_dir} if recursive else set()
    walker = in_dir.rglob("*") if recursive else in_dir.iterdir()
    for p in walker:
        rel = p.relative_to(in_dir)
        if any(part.startswith(".") for part in rel.parts) or is_temp_name(p.name) or not p.is_file():
            continue
        if out_dir.exists() and _inside(p, out_dir):
            continue  # OUT_DIR inside IN_DIR: never feed our own results back in
        if any(folder in results for folder in p.parents):
            continue  # an earlier batch's OUT_DIR inside IN_DIR
        if glob:
            target = rel.as_posix() if "/" in glob else p.name
            if not fnmatch.fnmatchcase(target.lower(), glob.lower()):
                continue
        elif p.suffix.lower() not in READ_SUFFIXES:
            continue
        found.append(p)
    return sorted(found, key=lambda p: p.relative_to(in_dir).as_posix())


def _name_outputs(sources: list[Path], in_dir: Path, out_dir: Path, fmt: str
                  ) -> tuple[list[Job], list[Outcome]]:
    """A mirrored output per input; inputs that would share one are told apart by their own suffix."""
    jobs: list[Job] = []
    for src in sources:
        rel = src.relative_to(in_dir)
        named, pil_fmt = resolve_output(rel, None, fmt)
        # resolve_output names NAME_x4.EXT for single files; a mirrored tree keeps NAME.
        jobs.append(Job(src, rel, out_dir / rel.parent / (rel.stem + named.suffix), pil_fmt))
    by_dst: dict[Path, list[Job]] = {}
    for job in jobs:
        by_dst.setdefault(job.dst, []).append(job)
    for dst, group in by_dst.items():
        if len(group) < 2:
            continue
        keeper = next((j for j in group if j.rel.suffix == dst.suffix), None)  # its format and name unchanged
        for job in group:
            if job is not keeper:
                job.dst = dst.with_name(f"{job.rel.stem}_{job.rel.suffix[1:].lower()}{dst.suffix}")
                job.warnings.append(f"named {job.dst.name}: {dst.name} would also be the output of another file")
    kept: list[Job] = []
    decided: list[Outcome] = []
    claimed: dict[Path, Path] = {}
    for job in jobs:
        if job.dst in claimed:
            decided.append(Outcome(job.rel, "failed", f"same output {job.dst.name} as {claimed[job.dst].as_posix()}"))
            continue
        claimed[job.dst] = job.rel
        kept.append(job)
    return kept, decided


def _check_folders(jobs: list[Job], out_dir: Path) -> tuple[list[Job], list[Outcome]]:
    """Probe OUT_DIR (raise: nothing could be written) and each output folder (its files fail)."""
    try:
        check_writable(out_dir / OUTPUT_MARKER)
    except WriteError as exc:
        raise WriteError(str(exc).replace(f"write {out_dir / OUTPUT_MARKER}", f"write into {out_dir}"), exc.errno) \
            from None
    probed: dict[Path, tuple[Path, str | None]] = {}  # folder -> (the output probed for it, error or None)
    kept, failed = [], []
    for job in jobs:
        folder = job.dst.parent
        if folder not in probed:
            try:
                check_writable(job.dst)
                probed[folder] = (job.dst, None)
            except WriteError as exc:
                probed[folder] = (job.dst, str(exc))
        first, error = probed[folder]
        if error is None:
            kept.append(job)
        else:
            failed.append(Outcome(job.rel, "failed", error.replace(str(first), str(job.dst))))
    return kept, failed


def _probe_inputs(jobs: list[Job], size: OutputSize, max_pixels: int
                  ) -> tuple[list[Job], list[Outcome], dict[Path, tuple[int, int]]]:
    """Read every input's header: files that are no image (or too large) fail before any model is loaded."""
    kept, failed, out_sizes = [], [], {}
    for job in jobs:
        try:
            out_sizes[job.src] = size.target(*probe_image(job.src, max_pixels))
            check_output_pixels(job.src, out_sizes[job.src], max_pixels)
        except UserError as exc:
            failed.append(Outcome(job.rel, "failed", _short_reason(str(exc), job.src)))
            continue
        kept.append(job)
    return kept, failed, out_sizes


@dataclass
class BatchPlan:
    jobs: list[Job]  # to run
    decided: list[Outcome]  # skipped or failed before any work
    warnings: list[str] = field(default_factory=list)


def plan_jobs(in_dir: Path, out_dir: Path, recursive: bool = False, glob: str | None = None,
              fmt: str = "same", skip_existing: bool = False, overwrite: bool = False,
              size: OutputSize | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> BatchPlan:
    """Everything ``batch`` decides without a model: inputs (headers read), outputs (named, probed)."""
    if same_file(in_dir, out_dir):
        raise UserError("OUT_DIR is IN_DIR: outputs would replace the photos; choose another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder")
    jobs, decided = _name_outputs(find_inputs(in_dir, out_dir, recursive, glob), in_dir, out_dir, fmt)
    todo: list[Job] = []
    existing: list[Path] = []
    for job in jobs:
        if job.dst.exists():
            if skip_existing:
                decided.append(Outcome(job.rel, "skipped", "output exists"))
                continue
            if not overwrite:
                existing.append(job.dst)
            job.replace = True
        todo.append(job)
    if existing:
        raise UserError(f"{len(existing)} output(s) already exist (e.g. {existing[0]}); "
                        "pass --skip-existing to resume or --overwrite to replace them")
    if not todo:
        return BatchPlan(todo, decided)
    todo, unwritable = _check_folders(todo, out_dir)
    todo, unreadable, out_sizes = _probe_inputs(todo, size or OutputSize(), max_pixels)
    needed = sum(estimated_bytes(out_sizes[j.src], j.fmt) for j in todo)
    warnings = [w for w in (low_space_warning(out_dir, needed),) if w]
    return BatchPlan(todo, decided + unwritable + unreadable, warnings)


def prepare_out_dir(out_dir: Path) -> None:
    """Create OUT_DIR with its marker (so no later batch takes it for photos) and sweep temp files of runs
    that were killed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / OUTPUT_MARKER
    if not marker.exists():
        marker.write_text("hitok batch results: `hitok batch` does not take this folder as input\n")
    sweep_stale_temps(out_dir, recursive=True)


@dataclass
class BatchRun:
    """What a run did: every outcome so far, and why it stopped early (None: it ran to the end)."""

    outcomes: list[Outcome]
    stopped: UserError | None = None


class _Stop(Exception):
    """Raised inside a worker's progress callback to abandon the file in flight."""


def run_jobs(jobs: list[Job], upscalers: list[Upscaler], upscale_kwargs: dict,
             on_progress: Callable[[float], None] | None = None,
             on_outcome: Callable[[Outcome], None] | None = None) -> BatchRun:
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
    why: list[UserError] = []  # the first reason to stop early
    started = time.time()

    def report() -> None:
        if on_progress:
            on_progress(finished[0] + sum(partial.values()))

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
                result = upscaler.upscale_file(job.src, job.dst, job.fmt, progress=progress, **upscale_kwargs)
            return Outcome(job.rel, "done", seconds=time.perf_counter() - start,
                           warnings=job.warnings + result.warnings, result=result)
        except WriteError as exc:
            if exc.systemic:
                halt(UserError(f"stopped: {exc}; every later file would fail the same way"))
            return Outcome(job.rel, "failed", _short_reason(str(exc), job.dst))
        except UserError as exc:
            return Outcome(job.rel, "failed", _short_reason(str(exc), job.src))
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
            if on_outcome:
                on_outcome(outcome)

    def interrupted(exc: KeyboardInterrupt) -> None:
        halt(Interrupted("", terminated=isinstance(exc, Terminated)))

    if len(upscalers) == 1:
        # One worker runs in the main thread, so Ctrl-C lands in the middle of the work itself.
        try:
            worker(0, upscalers[0])
        except KeyboardInterrupt as exc:
            interrupted(exc)
    else:
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
        except KeyboardInterrupt as exc:
            interrupted(exc)
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
    stopped = why[0] if why else None
    if isinstance(stopped, Interrupted):
        stopped = Interrupted(_interrupted_message(outcomes, len(jobs)),
                              terminated=stopped.exit_code == Terminated.exit_code)
    return BatchRun(outcomes, stopped)


def _short_reason(message: str, src: Path) -> str:
    # Reasons go into a table whose row already names the file.
    for prefix in (f"{src}: ", f"{src.name}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _interrupted_message(outcomes: list[Outcome], total: int) -> str:
    done = sum(o.status == "done" for o in outcomes)
    return (f"interrupted after {done} of {total} file(s) done; no partial file was left; "
            "rerun with --skip-existing to resume")
