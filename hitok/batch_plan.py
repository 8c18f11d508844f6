"""What ``hitok batch`` (and :class:`hitok.batch.BatchRunner`) decides before any model is loaded: a folder of
photos -> the jobs of a mirrored folder of x4 photos, and the files left out, each with its reason.

* Inputs: image files in IN_DIR (``recursive`` for sub-folders), optionally filtered by a case-insensitive
  ``glob``. No photo is left out in silence: hidden photos, photo formats hitok does not read (HEIC, camera
  raw), broken links, unreadable folders, files in OUT_DIR (when it lies inside IN_DIR) and the results an
  earlier batch recorded in its OUT_DIR's ``.hitok-output`` (hitok/results.py) each get an outcome with the
  reason, so results are never fed back in (x16) and photos kept beside them still are. Only files that are
  no photos, hitok's own temp files and hidden folders are passed over.
* Outputs mirror the tree: IN_DIR/a/b.jpg -> OUT_DIR/a/b.jpg (suffix per ``fmt``). Two inputs that would
  share an output (a.gif and a.png -> a.png) both get one: the one whose format is kept keeps the name, the
  other is named after its own suffix (a_gif.png, or a_gif_2.png when a_gif.png is another input's output),
  with a warning. OUT_DIR may be a folder above IN_DIR; an output that would then land inside IN_DIR fails.
* ``skip_existing`` keeps an existing output only when OUT_DIR's record matches this run (same input, model,
  size, detail, fidelity, colour fix, format, quality); any other existing output refuses the run up front,
  or is redone with ``overwrite`` too. ``overwrite`` alone replaces them all; without either, existing
  outputs refuse the run.
* Every output folder is probed (fsutil.check_writable): an OUT_DIR that cannot be written is one line
  (UserError); a sub-folder that cannot be is a failed outcome for its files. Every input's header is read:
  files that are no image, or too large, fail here.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from hitok.fsutil import WriteError, check_writable, is_temp_name, low_space_warning, sweep_stale_temps
from hitok.imageio import DEFAULT_MAX_PIXELS, READ_SUFFIXES, probe_image
from hitok.outsize import OutputSize, shrink_warning
from hitok.upscaler import UpscaleResult, check_output_pixels, estimated_bytes, resolve_output, same_file

from . import results
from .errors import UserError, one_line

OUTPUT_MARKER = results.MARKER  # in every OUT_DIR: which files there are results, and how each was made


@dataclass
class Job:
    src: Path
    rel: Path  # path relative to IN_DIR
    dst: Path
    fmt: str  # Pillow format name
    replace: bool = False  # dst existed when the run was planned (--overwrite)
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # recorded with the output (hitok/results.py)


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


# Photo formats hitok does not read: said so when batch meets them, not passed over like a text file.
UNREAD_PHOTO_SUFFIXES = {".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf",
                         ".orf", ".rw2", ".pef", ".srw", ".psd"}


def find_inputs(in_dir: Path, out_dir: Path, recursive: bool, glob: str | None
                ) -> tuple[list[Path], list[Outcome]]:
    """(image files under ``in_dir`` in a stable (sorted) order, the files left out with the reason).

    Left out and reported: hidden photos, photos of formats hitok does not read, unreadable folders, broken links,
    and results: files in OUT_DIR when it lies inside IN_DIR, and the files an earlier batch recorded in a
    ``.hitok-output`` below IN_DIR (hitok/results.py). Passed over in silence: files that are no photos (by
    suffix, or not matching ``--glob``), hitok's own temp and marker files, and hidden folders."""
    if not in_dir.is_dir():
        raise UserError(f"{in_dir}: no such folder" if not in_dir.exists() else f"{in_dir}: is not a folder")
    if not os.access(in_dir, os.R_OK | os.X_OK):
        raise UserError(f"{in_dir}: cannot read this folder (permission denied)")
    found: list[Path] = []
    left: list[Outcome] = []
    out_inside = out_dir.exists() and _inside(out_dir, in_dir)
    logs: dict[Path, results.Log] = {}

    def unreadable(exc: OSError) -> None:
        rel = Path(exc.filename).relative_to(in_dir) if exc.filename else Path(".")
        left.append(Outcome(rel, "failed", f"cannot read this folder ({exc.strerror or one_line(exc)})"))

    for folder, dirs, files in os.walk(in_dir, onerror=unreadable):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        if here != in_dir and (log := results.read_log(here)) is not None:
            logs[here] = log
        for name in files:
            p = here / name
            rel = p.relative_to(in_dir)
            if is_temp_name(name) or name == results.MARKER:
                continue
            if glob:
                target = rel.as_posix() if "/" in glob else name
                if not fnmatch.fnmatchcase(target.lower(), glob.lower()):
                    continue
            elif p.suffix.lower() not in READ_SUFFIXES:
                if p.suffix.lower() in UNREAD_PHOTO_SUFFIXES:
                    left.append(Outcome(rel, "skipped", f"hitok does not read {p.suffix[1:].upper()} photos; "
                                                        "convert them to TIFF, PNG or JPEG first"))
                continue
            reason = _left_out(p, rel, name, out_inside and _inside(p, out_dir), logs, in_dir)
            if reason is not None:
                left.append(reason)
                continue
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(in_dir).as_posix()), left


def _left_out(p: Path, rel: Path, name: str, in_out_dir: bool, logs: dict[Path, results.Log], in_dir: Path
              ) -> Outcome | None:
    """Why a photo file found under IN_DIR is not an input (an outcome to report), or None when it is one."""
    if not p.is_file():
        why = "a link to a missing file" if p.is_symlink() and not p.exists() else "not a regular file"
        return Outcome(rel, "failed", why)
    if name.startswith("."):
        return Outcome(rel, "skipped", "hidden file (its name starts with '.'); rename it to include it")
    if in_out_dir:
        return Outcome(rel, "skipped", "inside OUT_DIR: results are not taken as photos")
    for folder in p.parents:
        log = logs.get(folder)
        if log is None:
            if folder == in_dir:
                break
            continue
        where = (folder / results.MARKER).relative_to(in_dir).as_posix()
        if log.legacy:
            return Outcome(rel, "skipped", f"in a folder an older hitok batch wrote into ({where} does not say "
                                           f"which files are results); delete {where} to include them")
        if p.relative_to(folder).as_posix() in log.records:
            return Outcome(rel, "skipped", f"a result of an earlier hitok batch (recorded in {where})")
    return None


def _name_outputs(sources: list[Path], in_dir: Path, out_dir: Path, fmt: str
                  ) -> tuple[list[Job], list[Outcome]]:
    """A mirrored output per input; inputs that would share one are told apart by their own suffix (a.gif ->
    a_gif.png), and by a number when that name is someone else's output too (a_gif_2.png)."""
    jobs: list[Job] = []
    for src in sources:
        rel = src.relative_to(in_dir)
        named, pil_fmt = resolve_output(rel, None, fmt)
        # resolve_output names NAME_x4.EXT for single files; a mirrored tree keeps NAME.
        jobs.append(Job(src, rel, out_dir / rel.parent / (rel.stem + named.suffix), pil_fmt))
    by_dst: dict[Path, list[Job]] = {}
    for job in jobs:
        by_dst.setdefault(job.dst, []).append(job)
    renamed: list[Job] = []
    for dst, group in by_dst.items():
        if len(group) > 1:
            keeper = next((j for j in group if j.rel.suffix == dst.suffix), None)  # its format and name unchanged
            renamed += [j for j in group if j is not keeper]
    taken = {job.dst for job in jobs if job not in renamed}
    for job in renamed:
        dst = job.dst
        base = f"{job.rel.stem}_{job.rel.suffix[1:].lower()}"
        job.dst = dst.with_name(base + dst.suffix)
        n = 1
        while job.dst in taken:
            n += 1
            job.dst = dst.with_name(f"{base}_{n}{dst.suffix}")
        taken.add(job.dst)
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
    marker = out_dir / OUTPUT_MARKER
    if marker.is_symlink() or marker.exists() and not marker.is_file():
        raise UserError(f"{marker} is not hitok's record of results (a folder or a link); move it away")
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
            in_size = probe_image(job.src, max_pixels)
            out_sizes[job.src] = size.target(*in_size)
            check_output_pixels(job.src, out_sizes[job.src], max_pixels)
            if note := shrink_warning(in_size, out_sizes[job.src]):
                job.warnings.append(note)
        except UserError as exc:
            failed.append(Outcome(job.rel, "failed", short_reason(str(exc), job.src)))
            continue
        kept.append(job)
    return kept, failed, out_sizes


@dataclass
class BatchPlan:
    out_dir: Path
    jobs: list[Job]  # to run
    decided: list[Outcome]  # skipped or failed before any work
    warnings: list[str] = field(default_factory=list)


def record_settings(model_id: str, detail: int, fidelity: float, color_fix: bool, size: OutputSize | None = None,
                    quality: int | None = None, texture: float = 0.0) -> dict:
    """What batch records with each output and compares on a resume (hitok/results.py): what a photographer asks
    of the picture; device, precision, tile and engine change pixels by rounding only and are left out. Texture
    is recorded only when used, so outputs recorded before it existed still match."""
    return {"model": model_id, "detail": detail, "fidelity": float(fidelity), "color_fix": color_fix,
            **(size or OutputSize()).to_dict(), "quality": quality, **({"texture": float(texture)} if texture else {})}


def plan_jobs(in_dir: Path | str, out_dir: Path | str, recursive: bool = False, glob: str | None = None,
              fmt: str = "same", skip_existing: bool = False, overwrite: bool = False,
              size: OutputSize | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
              settings: dict | None = None) -> BatchPlan:
    """Everything ``batch`` decides without a model: inputs (headers read), outputs (named, probed), and which
    existing outputs a resume may keep: those recorded with the same ``settings`` (hitok/results.py)."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if same_file(in_dir, out_dir):
        raise UserError("OUT_DIR is IN_DIR: outputs would replace the photos; choose another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder")
    sources, decided = find_inputs(in_dir, out_dir, recursive, glob)
    jobs, unnamed = _name_outputs(sources, in_dir, out_dir, fmt)
    decided += unnamed
    in_inside_out = _inside(in_dir, out_dir)  # `batch photos/new photos`: outputs must not land among the inputs
    log = results.read_log(out_dir)
    todo: list[Job] = []
    existing: list[Path] = []
    untrusted: list[tuple[Path, str]] = []
    for job in jobs:
        job.settings = {**(settings or {}), "format": job.fmt}
        if job.dst.is_dir():
            decided.append(Outcome(job.rel, "failed", f"a folder is where its output {job.dst} would go; move it "
                                                      "or choose another OUT_DIR"))
            continue
        if in_inside_out and _inside(job.dst, in_dir):
            decided.append(Outcome(job.rel, "failed", f"its output {job.dst} would land inside IN_DIR {in_dir}, "
                                                      "among the photos; choose an OUT_DIR outside IN_DIR"))
            continue
        if job.dst.exists():
            why = results.mismatch(log, job.dst, job.rel.as_posix(), job.settings) if skip_existing else None
            if skip_existing and why is None:
                decided.append(Outcome(job.rel, "skipped", "output exists (same settings)"))
                continue
            if why is not None and overwrite:
                job.warnings.append(f"replaced {job.dst.name}: {why}")
            elif why is not None:
                untrusted.append((job.dst, why))
            elif not overwrite:
                existing.append(job.dst)
            job.replace = True
        todo.append(job)
    if untrusted:
        dst, why = untrusted[0]
        raise UserError(f"{len(untrusted)} existing output(s) cannot be trusted as done (e.g. {dst}: {why}); "
                        "pass --overwrite too to redo them, or choose another OUT_DIR")
    if existing:
        raise UserError(f"{len(existing)} output(s) already exist (e.g. {existing[0]}); "
                        "pass --skip-existing to resume or --overwrite to replace them")
    if not todo:
        return BatchPlan(out_dir, todo, decided)
    todo, unwritable = _check_folders(todo, out_dir)
    todo, unreadable, out_sizes = _probe_inputs(todo, size or OutputSize(), max_pixels)
    needed = sum(estimated_bytes(out_sizes[j.src], j.fmt) for j in todo)
    warnings = [w for w in (low_space_warning(out_dir, needed),) if w]
    return BatchPlan(out_dir, todo, decided + unwritable + unreadable, warnings)


def prepare_out_dir(out_dir: Path) -> None:
    """Create OUT_DIR with its marker (the record of its results, hitok/results.py) and sweep temp files of
    runs that were killed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results.start_log(out_dir)
    sweep_stale_temps(out_dir, recursive=True)


def short_reason(message: str, src: Path) -> str:
    # Reasons go into a table whose row already names the file.
    for prefix in (f"{src}: ", f"{src.name}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message
