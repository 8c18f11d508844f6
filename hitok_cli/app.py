"""The ``hitok`` command line: thin Typer commands over the inference library ``hitok``.

Each command parses its options, calls one library function (hitok.upscaler, hitok.tokens,
hitok.model_store, hitok.batch) and reports with Rich: results on stdout (or one JSON object with ``--json``),
progress bars and warnings on stderr. Errors a user can cause are one line on stderr with exit
code 1 (:mod:`hitok.cli.errors`); ``hitok --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from hitok import model_store
from hitok import tokens as tokens_lib
from hitok.batch import BatchRun, BatchRunner, Outcome, plan_jobs, record_settings
from hitok.device import precision_warning, resolve_device, resolve_devices, resolve_precision
from hitok.imageio import DEFAULT_MAX_PIXELS, Picture, read_image, write_image
from hitok.outsize import OutputSize
from hitok.upscaler import Upscaler, check_output, check_tiling, plan_file, quality_warning, tile_grid

from .errors import OneLineErrors, UserError, printable, set_debug, sigterm_as_interrupt, user_errors

# Plain click help (rich_markup_mode=None): on/off flags show no "<bool>" value placeholder that they would refuse.
app = typer.Typer(name="hitok", help="hitok: x4 photo upscaler (HiTokSR: hierarchical tokens predicted from a "
                  "low-resolution photo in one pass).", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None, cls=OneLineErrors)
models_app = typer.Typer(help="List and add models (.safetensors only).", no_args_is_help=True,
                         rich_markup_mode=None)
app.add_typer(models_app, name="models")
# `hitok train` is attached at the end of this file (hitok_cli/train_cmd.py); it wraps its commands with
# hitok.cli.errors.user_errors for the same one-line errors.

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Format(str, Enum):
    png = "png"
    jpg = "jpg"
    webp = "webp"
    same = "same"


class Source(str, Enum):
    hr = "hr"
    lr = "lr"


# Options shared by upscale and batch. Help says what an option does to the picture first, the model's terms second.
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model name (see `hitok models list`) or "
                                                 "path to a .safetensors file. Default: the shipped model.")]
TileOpt = Annotated[str, typer.Option("--tile", help="Work on the photo in square pieces of this many input pixels "
                                      "a side (less memory, same picture), or 'auto': the largest piece that fits "
                                      "free memory, halved on out-of-memory.")]
OverlapOpt = Annotated[Optional[int], typer.Option("--overlap", min=0, help="How many input pixels neighbouring "
                                                   "pieces (--tile) share, blended so that no seam shows; at most "
                                                   "half a piece. Default: 16, or less when the model sees less "
                                                   "far.", show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="Number format: auto = bf16/fp16 on a GPU, "
                                                 "bf16 on CPUs with AMX, else fp32; a piece that comes out "
                                                 "broken (NaN/inf) is redone in fp32.")]
DetailOpt = Annotated[Optional[int], typer.Option("--detail", help="How much fine texture the model adds, "
                                                  "from 1 (only the coarsest structure, smoothest) to the model's N "
                                                  "(all of it, the default). In the model's terms: decode with the "
                                                  "first M of its N token groups, coarse to fine.")]
FidelityOpt = Annotated[Optional[float], typer.Option("--fidelity", help="How closely the "
                                                     "result follows your photo: 1 = most faithful, 0 = the model's "
                                                     "own rendering (its tokens only, as in the paper). Default: "
                                                     "the model's.")]
TextureOpt = Annotated[Optional[float], typer.Option("--texture", help="How much texture (grass, bark, fur, "
                                                     "stone) the restorer draws, 0 = none (the most faithful) .. 1 = "
                                                     "all it learnt from Real-ESRGAN; needs a model with a texture "
                                                     "restorer and a fidelity above 0. Default: the model's.")]
ColorFixOpt = Annotated[bool, typer.Option("--color-fix/--no-color-fix", help="Keep the photo's own colours and "
                                           "shading (corrects colour drift of the model).")]
FormatOpt = Annotated[Format, typer.Option("--format", help="Output format; 'same' keeps the input's.")]
QualityOpt = Annotated[Optional[int], typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality "
                                                   "(default 95; WebP 100 = lossless).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist (never the "
                                            "input photo).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
MaxPixelsOpt = Annotated[int, typer.Option("--max-pixels", min=1, help="Refuse inputs with more pixels "
                                           "(decompression-bomb guard; Pillow's default).")]
OutscaleOpt = Annotated[Optional[float], typer.Option("--outscale", help="Output scale, any number above 0 "
                                                      "(e.g. 2, 3, 1.5): the model runs x4, then an antialiased "
                                                      "Lanczos resize to round(S x size), as Real-ESRGAN's "
                                                      "--outscale. Default: 4.", show_default=False)]
WidthOpt = Annotated[Optional[int], typer.Option("--width", min=1, help="Output width in pixels (x4, then resized); "
                                                 "the height follows the aspect ratio unless --height is given too.",
                                                 show_default=False)]
HeightOpt = Annotated[Optional[int], typer.Option("--height", min=1, help="Output height in pixels; with --width "
                                                  "the output is exactly WIDTH x HEIGHT.", show_default=False)]


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False) -> None:
    set_debug(debug)


def _tile_value(tile: str) -> int | None:
    if tile.strip().lower() == "auto":
        return None
    try:
        value = int(tile)
    except ValueError:
        raise UserError(f"--tile {tile!r}: give a number of LR pixels or 'auto'") from None
    if value <= 0:
        raise UserError(f"--tile {tile}: must be positive")
    return value


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(printable(message))}", soft_wrap=True)


class _TileBar:
    """A tile progress bar that appears only when an image needs more than one tile."""

    def __init__(self, label: str):
        self.label, self.progress, self.task = label, None, None

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None and total > 1 and err.is_terminal:  # elsewhere a transient bar leaves a blank line
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("tiles"), TimeRemainingColumn(), console=err, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total)
        if self.progress is not None:
            self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _make_upscaler(model: Optional[str], device, precision: Precision, detail: Optional[int],
                   color_fix: bool = True, fidelity: Optional[float] = None,
                   texture: Optional[float] = None) -> Upscaler:
    dtype = resolve_precision(precision.value, device)
    if precision != Precision.auto and (slow := precision_warning(dtype, device)):
        _warn(slow)
    with err.status(f"loading the model ({escape(model or 'default')}) on {device}"):  # shown on a terminal only
        loaded = model_store.load(model, device, lazy=True)  # the token path loads on first use: not at fidelity 1
    return Upscaler(loaded.model, device, dtype, detail, loaded.id, color_fix, fidelity, texture=texture)


def _check_early(model: Optional[str], tile: Optional[int], overlap: Optional[int], detail: Optional[int],
                 fidelity: Optional[float], texture: Optional[float] = None) -> None:
    """--tile / --overlap against the model's tile grid, --detail / --fidelity / --texture against its range,
    before the model loads (a model built on the meta device: a fraction of a second, not a load)."""
    if tile is None and overlap is None and detail is None and fidelity is None and texture is None:
        return
    peeked = model_store.peek(model)
    if peeked is not None:
        check_tiling(tile, overlap, *tile_grid(peeked[1]))
        peeked[1].settings(detail, fidelity)
        peeked[1].texture_setting(texture)


def _batch_settings(model: Optional[str], detail: Optional[int], fidelity: Optional[float], color_fix: bool,
                    size: OutputSize, quality: Optional[int], texture: Optional[float] = None) -> dict:
    """What batch records with each output and compares on --skip-existing (hitok/results.py), with the
    model's defaults filled in as the Upscaler fills them; known before the model loads."""
    peeked = model_store.peek(model)
    if peeked is None:  # the model load refuses this file, with its reason
        return {}
    return record_settings(peeked[0], *peeked[1].settings(detail, fidelity), color_fix, size, quality,
                           peeked[1].texture_setting(texture))


@app.command()
@user_errors
@sigterm_as_interrupt
def upscale(
    input: Annotated[Path, typer.Argument(help="Photo to upscale x4.", show_default=False)],
    output: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE|FOLDER/", help="Output file, or "
                                                  "a folder to write the default name into (made if it ends with "
                                                  "/). Default: NAME_x4.EXT beside the input (NAME_x2.EXT with "
                                                  "--outscale 2, NAME_w1000.EXT with --width 1000, NAME_h800 / "
                                                  "NAME_1000x800 likewise).", show_default=False)] = None,
    model: ModelOpt = None,
    tile: TileOpt = "auto",
    overlap: OverlapOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    detail: DetailOpt = None,
    fidelity: FidelityOpt = None,
    texture: TextureOpt = None,
    color_fix: ColorFixOpt = True,
    format: FormatOpt = Format.same,
    quality: QualityOpt = None,
    outscale: OutscaleOpt = None,
    width: WidthOpt = None,
    height: HeightOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
) -> None:
    """Upscale one photo x4, or to --outscale / --width / --height (EXIF orientation, ICC, alpha and 16-bit kept)."""
    size = OutputSize(outscale, width, height)
    tile_px = _tile_value(tile)
    plan = plan_file(input, output, format.value, size, overwrite, max_pixels, quality)  # no model needed yet
    _check_early(model, tile_px, overlap, detail, fidelity, texture)
    dev = resolve_device(device)
    picture = read_image(input, max_pixels)  # a truncated file fails here, before the model loads
    for w in plan.warnings:
        _warn(w)
    upscaler = _make_upscaler(model, dev, precision, detail, color_fix, fidelity, texture)
    for w in upscaler.warnings:
        _warn(w)
    bar = _TileBar(input.name)
    try:
        result = upscaler.upscale_file(input, plan.dst, plan.fmt, quality=quality, tile=tile_px, overlap=overlap,
                                       max_pixels=max_pixels, progress=bar, size=size, picture=picture,
                                       overwrite=overwrite)
    finally:
        bar.close()
    for w in result.warnings:
        if w not in plan.warnings:
            _warn(w)
    if json_out:
        print(json.dumps(result.to_dict()))
        return
    (w0, h0), (w1, h1) = result.input_size, result.output_size
    out.print(f"wrote {escape(result.output)}  {w0}x{h0} -> {w1}x{h1}  ({result.seconds:.1f} s, "
              f"{result.device} {result.precision}, tile {result.tile}, {result.tiles} tile(s), "
              f"detail {result.detail}, fidelity {result.fidelity:g}"
              f"{f', texture {result.texture:g}' if result.texture else ''})", soft_wrap=True)


@app.command()
@user_errors
@sigterm_as_interrupt
def batch(
    in_dir: Annotated[Path, typer.Argument(help="Folder of photos.", show_default=False)],
    out_dir: Annotated[Path, typer.Argument(help="Folder for the results (mirrors IN_DIR's tree, same names).",
                                            show_default=False)],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include sub-folders.")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Resume: skip files whose output exists "
                                                "and was made with the same settings; with --overwrite, redo "
                                                "outputs made otherwise.")] = False,
    glob: Annotated[Optional[str], typer.Option("--glob", help="Only files matching this pattern "
                                                "(case-insensitive), e.g. '*.jpg'.")] = None,
    model: ModelOpt = None,
    tile: TileOpt = "auto",
    overlap: OverlapOpt = None,
    device: DeviceOpt = "auto",
    devices: Annotated[Optional[str], typer.Option("--devices", help="Spread files over several devices, "
                                                   "e.g. cuda:0,cuda:1 (overrides --device).")] = None,
    precision: PrecisionOpt = Precision.auto,
    detail: DetailOpt = None,
    fidelity: FidelityOpt = None,
    texture: TextureOpt = None,
    color_fix: ColorFixOpt = True,
    format: FormatOpt = Format.same,
    quality: QualityOpt = None,
    outscale: OutscaleOpt = None,
    width: WidthOpt = None,
    height: HeightOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
) -> None:
    """Upscale every photo in a folder; keeps going past bad files; exit 1 if any failed."""
    size = OutputSize(outscale, width, height)
    tile_px = _tile_value(tile)
    _check_early(model, tile_px, overlap, detail, fidelity, texture)
    settings = _batch_settings(model, detail, fidelity, color_fix, size, quality, texture)
    plan = plan_jobs(in_dir, out_dir, recursive, glob, format.value, skip_existing, overwrite, size, max_pixels,
                     settings)
    if not plan.jobs and not plan.decided:
        hint = "" if recursive else " (add --recursive for sub-folders)"
        raise UserError(f"no images found in {in_dir}{hint}")
    for w in plan.warnings + [quality_warning([j.fmt for j in plan.jobs], quality)]:
        if w:
            _warn(w)
    devs = resolve_devices(devices) if devices else [resolve_device(device)]
    upscalers = [_make_upscaler(model, d, precision, detail, color_fix, fidelity, texture)
                 for d in devs] if plan.jobs else []
    for w in dict.fromkeys(w for u in upscalers for w in u.warnings):  # once, not once per device
        _warn(w)
    progress = Progress(TextColumn("upscaling"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                        TaskProgressColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                        console=err, transient=False)
    task = progress.add_task("batch", total=len(plan.jobs), visible=bool(plan.jobs))

    def on_outcome(o: Outcome) -> None:
        for w in o.warnings:
            progress.console.print(f"[yellow]warning:[/] {escape(printable(f'{o.rel.as_posix()}: {w}'))}",
                                   soft_wrap=True)

    runner = BatchRunner(upscalers, on_outcome, lambda x: progress.update(task, completed=x)) if upscalers else None
    start = time.perf_counter()
    with progress:
        run = runner.run(plan, quality=quality, tile=tile_px, overlap=overlap, max_pixels=max_pixels, size=size) \
            if runner else BatchRun(plan.decided)  # nothing to run: no model was loaded
    _batch_report(run, json_out, in_dir, out_dir, len(devs), time.perf_counter() - start, size)
    if run.stopped:
        raise run.stopped
    if run.counts["failed"]:
        raise typer.Exit(1)


def _batch_report(run: BatchRun, json_out: bool, in_dir: Path, out_dir: Path, workers: int, wall: float,
                  size: OutputSize) -> None:
    outcomes, counts, stopped = run.outcomes, run.counts, run.stopped
    if json_out:
        files = [{"file": o.rel.as_posix(), "status": o.status, "reason": o.reason, "seconds": round(o.seconds, 3),
                  "warnings": o.warnings,
                  **({"output": o.result.output, "output_size": o.result.output_size} if o.result else {})}
                 for o in outcomes]
        print(json.dumps({"in_dir": str(in_dir), "out_dir": str(out_dir), **counts, "seconds": round(wall, 3),
                          **size.to_dict(), "stopped": str(stopped) if stopped else None, "files": files}))
        return
    failed = sorted((o for o in outcomes if o.status == "failed"), key=lambda o: o.rel.as_posix())
    skipped: dict[str, list[Outcome]] = {}
    for o in sorted((o for o in outcomes if o.status == "skipped"), key=lambda o: o.rel.as_posix()):
        skipped.setdefault(o.reason, []).append(o)
    if failed or skipped:
        table = Table()
        table.add_column("status")
        table.add_column("file", overflow="fold")
        table.add_column("reason", overflow="fold")
        for o in failed[:50]:
            table.add_row("[red]failed[/]", escape(o.rel.as_posix()), escape(o.reason))
        for reason, group in skipped.items():  # a resumed run skips thousands alike: one row per reason
            if len(group) > 3:
                table.add_row("[dim]skipped[/]", f"{len(group)} files", escape(reason))
                continue
            for o in group:
                table.add_row("[dim]skipped[/]", escape(o.rel.as_posix()), escape(reason))
        out.print(table)
        if len(failed) > 50:
            out.print(f"... and {len(failed) - 50} more failures (use --json for the full list)")
    out.print(f"done {counts['done']}  skipped {counts['skipped']}  failed {counts['failed']}  "
              f"-> {escape(str(out_dir))}  ({wall:.1f} s on {workers} worker(s))", soft_wrap=True)


@app.command()
@user_errors
@sigterm_as_interrupt
def tokenize(
    input: Annotated[Path, typer.Argument(help="Photo to tokenize.", show_default=False)],
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Token dump (.safetensors). Default: "
                                                     "NAME_codes.safetensors beside the input.")] = None,
    preview: Annotated[Optional[Path], typer.Option("--preview", help="Write a labelled PNG: "
                                                    "input | detail 1 | ... | detail N.")] = None,
    source: Annotated[Source, typer.Option("--source", help="hr: encode the photo with the tokenizer's "
                                           "encoder; lr: treat it as LR and predict tokens with the generator.")]
    = Source.hr,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
) -> None:
    """Dump the hierarchical token indices of a photo (and a coarse-to-fine preview)."""
    dest = out_file or input.with_name(f"{input.stem}_codes.safetensors")
    if dest.suffix.lower() != ".safetensors":
        raise UserError(f"--out {dest}: the dump is a .safetensors file")
    if preview is not None and preview.suffix.lower() != ".png":
        raise UserError(f"--preview {preview}: the preview is a .png file")
    for path in [dest] + ([preview] if preview else []):
        check_output(input, path, overwrite)
    pic = read_image(input, max_pixels=max_pixels)
    for w in pic.warnings:
        _warn(w)
    if pic.alpha is not None:
        _warn("alpha is ignored by tokenize")
    loaded = model_store.load(model, resolve_device(device))
    img = tokens_lib.picture_to_tensor(pic)
    codes = tokens_lib.tokenize(loaded.model, img, source.value, loaded.id)
    codes.meta["input"] = input.name
    tokens_lib.save_codes(dest, codes)
    if preview is not None:
        tokens_lib.write_preview(preview, loaded.model, img, codes)
    usage = tokens_lib.code_usage(codes)
    if json_out:
        print(json.dumps({"out": str(dest), "preview": str(preview) if preview else None, **codes.meta,
                          "usage": usage}))
        return
    n, k = codes.meta["groups"], codes.meta["codebook_size"]
    out.print(f"{escape(input.name)}: {n} groups x {codes.meta['grid_height']}x{codes.meta['grid_width']} "
              f"tokens, K={k}, source {source.value}", soft_wrap=True)
    table = Table()
    for col in ("group", "codes used", "of K", "perplexity"):
        table.add_column(col, justify="right")
    for row in usage:
        table.add_row(str(row["group"]), str(row["used"]), f"{100 * row['fraction']:.1f}%",
                      f"{row['perplexity']:.1f}")
    out.print(table)
    out.print(f"wrote {escape(str(dest))}" + (f" and {escape(str(preview))}" if preview else ""), soft_wrap=True)


@app.command()
@user_errors
@sigterm_as_interrupt
def detokenize(
    codes_file: Annotated[Path, typer.Argument(help="Token dump written by `hitok tokenize`.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output PNG. Default: "
                                                   "NAME.png beside the dump.")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    detail: DetailOpt = None,
    overwrite: OverwriteOpt = False,
    max_pixels: Annotated[int, typer.Option("--max-pixels", min=1, help="Refuse dumps that decode to more pixels "
                                            "(the decoder holds the whole image in memory).")] = DEFAULT_MAX_PIXELS,
) -> None:
    """Decode a token dump back to an image (equals the preview's detail N panel)."""
    codes = tokens_lib.load_codes(codes_file, max_pixels)
    dest = output or codes_file.with_name(codes_file.name.removesuffix(".safetensors") + ".png")
    if dest.suffix.lower() != ".png":
        raise UserError(f"-o {dest}: detokenize writes PNG")
    check_output(codes_file, dest, overwrite)
    loaded = model_store.load(model, resolve_device(device))
    tokens_lib.check_model_matches(codes, loaded.model, loaded.id)  # so the dump's groups are the model's
    n = int(codes.meta["groups"])
    detail, _ = loaded.model.settings(detail)
    pixels = tokens_lib.decode_panel(loaded.model, codes, detail)
    write_image(dest, Picture(pixels=pixels), "PNG")
    out.print(f"wrote {escape(str(dest))}  {pixels.shape[1]}x{pixels.shape[0]}  (detail {detail} of {n} groups)",
              soft_wrap=True)


@app.command()
@user_errors
def presets(
    lr_size: Annotated[int, typer.Option("--lr-size", min=16, help="LR input side for the MAC count.")] = 128,
    json_out: JsonOpt = False,
) -> None:
    """Parameters per component and MACs per LR input for each preset (counted on the meta device)."""
    rows = model_store.preset_summaries(lr_size)
    if json_out:
        print(json.dumps(rows))
        return
    comps = ("encoder", "codebooks", "decoder", "generator", "vfm", "restorer")
    params = Table(title="parameters (millions)", title_justify="left")
    params.add_column("preset")
    for c in comps:
        params.add_column(c, justify="right")
    params.add_column("inference", justify="right")
    macs = Table(title=f"inference GMAC per {lr_size}x{lr_size} LR input (x4 output); total: at the model's "
                 "default fidelity (a restorer at fidelity 1 skips the token path)", title_justify="left")
    for c in ("preset", "generator", "vfm", "decoder", "restorer", "total"):
        macs.add_column(c, justify="right" if c != "preset" else "left")
    for name, r in rows.items():
        params.add_row(name, *(f"{r['params'][c] / 1e6:.3f}" for c in comps), f"{r['inference_params'] / 1e6:.2f}")
        m = r["macs"]
        macs.add_row(name, *(f"{m[c] / 1e9:.1f}" for c in ("generator", "vfm", "decoder", "restorer")),
                     f"{r['total_macs'] / 1e9:.1f}")
    out.print(params)
    out.print(macs)


@models_app.command("list")
@user_errors
def models_list(json_out: JsonOpt = False) -> None:
    """Show the shipped default and the user's models."""
    entries = model_store.list_models()
    if json_out:
        print(json.dumps([{"name": e.name, "source": e.source, "path": str(e.path), "size": e.size, "id": e.id,
                           "summary": e.summary} for e in entries]))
        return
    table = Table(title=f"models (user folder: {escape(str(model_store.user_models_dir()))})", title_justify="left")
    for col in ("name", "source", "id", "size", "config"):
        table.add_column(col)
    for e in entries:
        table.add_row(escape(e.name), e.source, e.id, f"{e.size / 2**20:.1f} MiB", escape(e.summary))
    out.print(table)
    if not any(e.source == "default" for e in entries):
        out.print("no default model is installed: pass --model NAME|PATH to upscale")


@models_app.command("add")
@user_errors
@sigterm_as_interrupt
def models_add(
    file: Annotated[Path, typer.Argument(help="A hitok .safetensors model file.", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", help="Name to use with --model. Default: file stem.")]
    = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an installed model of the same name.")]
    = False,
) -> None:
    """Check a model file and copy it into the user model folder."""
    entry = model_store.add_model(file, name, overwrite)
    out.print(f"added model {escape(entry.name)} ({entry.id}, {escape(entry.summary)}) -> {escape(str(entry.path))}",
              soft_wrap=True)


from .train_cmd import train_app  # noqa: E402 - `hitok train`; hitok.train itself loads only when a command runs
app.add_typer(train_app, name="train")
from .eval_cmd import eval_command  # noqa: E402 - `hitok eval`; hitok.bench loads only when it runs
app.command("eval")(eval_command)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
