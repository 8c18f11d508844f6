"""``hitok eval``: the x4 evaluation of issue 5 (bicubic and realistic LR tracks) from the command line.

A thin command over :func:`hitok.bench.evaluate.evaluate`: build the methods (bicubic, Real-ESRGAN when its
ncnn files are found, one hitok per ``--model``), run, print the mean table per track with Rich, and leave
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
    raw: Annotated[bool, typer.Option("--raw", help="Also a 'raw' row per model without the colour fix "
                                      "(what the tokens alone give).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the realistic track's noise.")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch and ncnn "
                                                   "(the same for both so timings compare). Default: torch's.")]
    = None,
) -> None:
    """Evaluate x4 upscaling on a folder of photos: PSNR-Y, SSIM-Y, NIQE, time; hitok vs bicubic vs Real-ESRGAN."""
    from hitok.bench.evaluate import METRICS, TRACKS, build_methods, evaluate, fmt_metric, list_images

    if crop % 16:
        raise UserError(f"--crop {crop}: must be a multiple of 16 (LR side a multiple of 4)")
    list_images(hr_dir, max_images)  # a bad folder fails before any model is loaded
    if threads:
        torch.set_num_threads(threads)
    methods, notes = build_methods(model or [], realesrgan, device,
                                   str(realesrgan_dir) if realesrgan_dir else None, threads, tile, raw)
    for note in notes:
        err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    res = evaluate(hr_dir, methods, crop=crop, out_dir=out_dir, max_images=max_images, seed=seed,
                   notes=notes, log=lambda msg: err.print(escape(msg), soft_wrap=True))

    for track in TRACKS:
        table = Table(title=f"track {track}: mean over {len(res.images)} image(s), crop {crop}", title_justify="left")
        table.add_column("method")
        for m in METRICS:
            table.add_column(m, justify="right")
        for name in res.methods:
            table.add_row(escape(name), *(fmt_metric(k, v) for k, v in res.mean(track, name).items()))
        out.print(table)
    for metric, why in res.unavailable.items():
        out.print(f"{metric} n/a: {escape(why)}", soft_wrap=True)
    out.print(f"wrote {escape(str(out_dir / 'results.md'))}, results.json and {len(res.images) * len(TRACKS)} "
              f"panel(s) in {escape(str(out_dir / 'panels'))}", soft_wrap=True)
