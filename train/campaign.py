"""A GPU campaign: the three HiTokSR stages of one preset (Sec. 3.1-3.3) run back to back within one wall-clock
budget, then the final model is written as bf16 parts of at most 16 MiB (train/export.py) so it can leave a
machine whose outputs are size-limited; `join` reassembles them.

The budget is split 45/35/20 between tokenizer, generator and decoder. Each stage runs with a time limit and
plans its own step count from its measured speed (train/loop.py), so warm-up, GAN start and schedule fit the
time it gets; whatever a stage over- or under-spends is redistributed over the stages after it. Start-up and
the final export come out of a reserve. Besides the parts, the output folder gets campaign.json (steps, speed,
final losses per stage) and sample.png (the decoder stage's last LR | output | GT strip): 8 files at most.

Runs from a checkout that is not installed too (torch, timm, numpy, pillow, safetensors): docs/TRAINING.md."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from hitok.models import HiTok, presets

from .config import STAGES, TrainConfig, TrainError
from .export import HEADER_ROOM, MiB, export_bundle, join_parts, write_parts
from .loop import train

log = logging.getLogger("hitok.train")
SHARES = (0.45, 0.35, 0.20)


def _model_bytes(preset: str, with_encoder: bool) -> int:
    cfg = presets.PRESETS[preset]()
    cfg = replace(cfg, vfm=None)  # a pretrained VFM backbone is not stored in the file; its LoRA is small
    with torch.device("meta"):  # count without allocating (or loading anything)
        model = HiTok(cfg, with_encoder=with_encoder)
    return sum(t.numel() for t in model.state_dict().values() if t.is_floating_point()) * 2


def check_fits(preset: str, max_parts: int, part_bytes: int = 16 * MiB) -> bool:
    """Whether the bf16 bundle fits into max_parts parts; True with the encoder, False without it, or an error."""
    room = max_parts * (part_bytes - HEADER_ROOM)
    if _model_bytes(preset, True) <= room:
        return True
    if _model_bytes(preset, False) <= room:
        log.warning(f"the {preset} bundle only fits into {max_parts} parts without the tokenizer encoder; "
                    f"exporting it without (`tokenize --source hr` will not work with it)")
        return False
    raise TrainError(f"the {preset} preset's bf16 weights need more than {max_parts} x "
                     f"{part_bytes // MiB} MiB; choose a smaller preset")


def run_campaign(data: str, out: str, preset: str = "small", budget_min: float = 9.0, work: str | None = None,
                 device: str = "auto", seed: int = 0, workers: int | None = None, batch_size: int | None = None,
                 crop: int | None = None, nproc: int = 1, max_parts: int = 6, no_vfm: bool = False,
                 quiet: bool = False, threads: int | None = None) -> dict:
    t0 = time.time()
    if preset not in presets.PRESETS:
        raise TrainError(f"unknown preset '{preset}' (choose from {', '.join(presets.PRESETS)})")
    if budget_min <= 0:
        raise TrainError("--budget-min must be positive")
    out_dir = Path(out)
    work_dir = Path(work) if work else out_dir.parent / f"{out_dir.name}-runs"
    if work_dir.exists() and any(work_dir.iterdir()):
        raise TrainError(f"work folder {work_dir} is not empty (give --work a fresh folder)")
    keep_encoder = check_fits(preset, max_parts)
    budget = budget_min * 60
    reserve = min(60.0, max(3.0, 0.06 * budget))  # final export, process start-up between stages
    prev, stages, overhead = None, {}, 0.0
    for i, stage in enumerate(STAGES):
        left = budget - (time.time() - t0) - reserve
        # a stage's limit counts its training loop; its start-up (model, workers) is estimated from the last one
        limit = max(1.0, left * SHARES[i] / sum(SHARES[i:]) - overhead)
        cfg = TrainConfig(stage=stage, data=data, out=str(work_dir / stage), preset=preset if prev is None else None,
                          init=prev, time_limit_s=limit, seed=seed, device=device, workers=workers,
                          batch_size=batch_size, crop=crop, nproc=nproc, no_vfm=no_vfm and prev is None,
                          quiet=quiet, log_every=50, threads=threads)
        t = time.time()
        r = train(cfg)
        overhead = max(0.0, time.time() - t - limit)
        stages[stage] = {"steps": r.step, "seconds": round(time.time() - t, 1), "time_limit_s": round(limit, 1),
                         "it_per_s": round(r.it_per_s, 3), "samples_per_s": round(r.samples_per_s, 2),
                         "interrupted": r.interrupted, "terms": {k: round(v, 5) for k, v in r.terms.items()}}
        log.info(f"campaign: {stage} done, {r.step} steps in {stages[stage]['seconds']} s")
        if r.interrupted:
            raise TrainError(f"campaign interrupted during the {stage} stage (runs kept in {work_dir})")
        prev = str(work_dir / stage)
    final = work_dir / "decoder" / "model.safetensors"
    if not keep_encoder:
        export_bundle(final, work_dir / "bundle-no-encoder.safetensors", no_encoder=True)
        final = work_dir / "bundle-no-encoder.safetensors"
    parts = write_parts(final, out_dir, max_files=max_parts)
    samples = sorted((work_dir / "decoder" / "samples").glob("*.png"))
    if samples:
        shutil.copyfile(samples[-1], out_dir / "sample.png")
    summary = {"preset": preset, "budget_min": budget_min, "seconds": round(time.time() - t0, 1),
               "device": device, "torch": torch.__version__, "with_encoder": keep_encoder,
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "stages": stages, "parts": [p.name for p in parts], "work": str(work_dir)}
    (out_dir / "campaign.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    """`campaign` and `join` without Typer: `python -m hitok.train.campaign` on a machine with only torch."""
    ap = argparse.ArgumentParser(prog="hitok-train")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("campaign", help="all three stages within a time budget, then bf16 parts")
    c.add_argument("--data", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--preset", default="small")
    c.add_argument("--budget-min", type=float, default=9.0)
    c.add_argument("--work", default=None)
    c.add_argument("--device", default="auto")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--workers", type=int, default=None)
    c.add_argument("--batch-size", type=int, default=None)
    c.add_argument("--crop", type=int, default=None)
    c.add_argument("--nproc", type=int, default=1)
    c.add_argument("--max-parts", type=int, default=6)
    c.add_argument("--no-vfm", action="store_true")
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--quiet", action="store_true")
    j = sub.add_parser("join", help="join model-XX-of-YY.safetensors parts into one model file")
    j.add_argument("dir")
    j.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if a.cmd == "campaign":
            s = run_campaign(a.data, a.out, a.preset, a.budget_min, a.work, a.device, a.seed, a.workers,
                             a.batch_size, a.crop, a.nproc, a.max_parts, a.no_vfm, a.quiet, a.threads)
            print(json.dumps(s, indent=1))
        else:
            join_parts(a.dir, a.output)
            print(f"wrote {a.output}")
    except (TrainError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
