"""``hitok eval``: the x4 evaluation of bench/evaluate.py (bicubic and realistic LR tracks) from the command line.

A thin command over :func:`hitok.bench.evaluate.evaluate`: build the methods (bicubic, Real-ESRGAN when its
ncnn files are found, the CNN floor trained on ``--floor-data``, one hitok per ``--model`` and per
``--fidelity-sweep`` value), run, print the mean table per track with Rich, and leave
``results.md``, ``results.json`` and the side-by-side panels in ``--out``. Attached to the app in app.py with
``app.command("eval")(eval_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import UserError, user_errors

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@user_errors
def eval_command(
    hr_dir: Annotated[Path, typer.Argument(help="Folder of HR photos (ground truth).", show_default=False)],
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="hitok model name or .safetensors "
                                                       "path; repeat to compare several. Default: the shipped "
                                                       "model.")] = None,
    crop: Annotated[int, typer.Option("--crop", min=16, help="Side of the HR centre crop (multiple of 16).")] = 512,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for results.md, results.json and panels/.")]
    = Path("hitok-eval"),
    realesrgan: Annotated[bool, typer.Option("--realesrgan/--no-realesrgan", help="Also run Real-ESRGAN x4plus "
                                             "(ncnn, CPU) when its model files are found.")] = True,
    realesrgan_dir: Annotated[Optional[Path], typer.Option("--realesrgan-dir", help="Folder holding "
                                                           "realesrgan-x4plus.param/.bin (else "
                                                           "$HITOK_REALESRGAN_DIR or the installed package).")]
    = None,
    max_images: Annotated[Optional[int], typer.Option("--max-images", min=1, help="Only the first N images "
                                                      "(sorted by name).")] = None,
    device: Annotated[str, typer.Option("--device", help="Device for hitok: cpu, cuda, cuda:N, mps or auto.")]
    = "cpu",
    tile: Annotated[Optional[int], typer.Option("--tile", min=1, help="hitok LR tile side. Default: auto, as "
                                                "`hitok upscale` does.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Also a 'raw' row per model without the colour fix, and for "
                                      "a model with an LR guide a 'fidelity 0 raw' row (the tokens alone).")] = False,
    fidelity_sweep: Annotated[str, typer.Option("--fidelity-sweep", help="Comma list of fidelities, e.g. "
                                                "0,0.25,0.5,0.75,1: one more row per value for each model with an "
                                                "LR guide.")] = "",
    texture_sweep: Annotated[str, typer.Option("--texture-sweep", help="Comma list of --texture values, e.g. "
                                               "0.5,1: one more row per value for each model with a texture "
                                               "restorer.")] = "",
    floor_data: Annotated[Optional[Path], typer.Option("--floor-data", help="Folder of training photos: train "
                                                       "the 'CNN floor' baseline (a 0.17 M-parameter plain CNN) "
                                                       "on them at the start of the run and add its row. "
                                                       "Default: no floor row.")] = None,
    floor_steps: Annotated[int, typer.Option("--floor-steps", min=1, help="Training steps of the CNN floor "
                                             "(1000: about 7 minutes on 2 CPU cores).")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the realistic track's noise.")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch and ncnn "
                                                   "(the same for both so timings compare). Default: torch's.")]
    = None,
    figure: Annotated[Optional[Path], typer.Option("--figure", help="Also write a comparison figure (PNG): "
                                                   "the most detailed region of one photo, clean and compressed "
                                                   "LR, bicubic | Real-ESRGAN | hitok | ground truth.")] = None,
    figure_image: Annotated[Optional[str], typer.Option("--figure-image", help="File name of the photo for "
                                                        "--figure. Default: the first.")] = None,
) -> None:
    """Evaluate x4 upscaling on a folder of photos (PSNR-Y, SSIM-Y, HaarPSI, NIQE, time) against baselines."""
    from hitok.bench.evaluate import METRICS, TRACKS, build_methods, evaluate, fmt_metric
    from hitok.imageio import list_images

    if crop % 16:
        raise UserError(f"--crop {crop}: must be a multiple of 16 (LR side a multiple of 4)")
    list_images(hr_dir, max_images=max_images)  # a bad folder fails before any model is loaded
    if floor_data is not None and not floor_data.is_dir():
        raise UserError(f"--floor-data {floor_data}: no such folder")
    fidelities = parse_unit_list(fidelity_sweep, "--fidelity-sweep")
    textures = parse_unit_list(texture_sweep, "--texture-sweep")
    if threads:
        torch.set_num_threads(threads)

    def log(msg: str) -> None:
        err.print(escape(msg), soft_wrap=True)

    methods, notes = build_methods(model or [], realesrgan, device,
                                   str(realesrgan_dir) if realesrgan_dir else None, threads, tile, raw,
                                   fidelities, floor_data, floor_steps, textures, log=log)
    for note in notes:
        err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    res = evaluate(hr_dir, methods, crop=crop, out_dir=out_dir, max_images=max_images, seed=seed,
                   notes=notes, log=log, figure=figure, figure_image=figure_image)

    for track in TRACKS:
        table = Table(title=f"track {track}: mean over {len(res.images)} image(s), crop {crop}", title_justify="left")
        table.add_column("method")
        for m in METRICS:
            table.add_column(m, justify="right")
        for name in res.methods:
            table.add_row(escape(name), *(fmt_metric(k, v) for k, v in res.mean(track, name).items()))
        out.print(table)
    for line in res.flagged():
        out.print(f"[yellow]warning:[/] {escape(line[2:].replace('**', ''))}", soft_wrap=True)
    for metric, why in res.unavailable.items():
        out.print(f"{metric} n/a: {escape(why)}", soft_wrap=True)
    out.print(f"wrote {escape(str(out_dir / 'results.md'))}, results.json and {len(res.images) * len(TRACKS)} "
              f"panel(s) in {escape(str(out_dir / 'panels'))}" + (f"; figure {escape(str(figure))}" if figure else ""),
              soft_wrap=True)


def parse_unit_list(text: str, option: str) -> list[float]:
    """A sweep option's text "0,0.25,1" -> [0.0, 0.25, 1.0]: each in [0, 1], repeats dropped, order kept."""
    values: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise UserError(f"{option} {text}: {part!r} is not a number") from None
        if not 0.0 <= v <= 1.0:
            raise UserError(f"{option} {text}: {part} is outside 0..1")
        if v not in values:
            values.append(v)
    return values
