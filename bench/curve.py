"""Learning curves of restorer runs (train/restorer.py): every EMA snapshot of a run folder scored on a folder of
HR photos, both tracks of `hitok eval` (the same centre crops, LR and metrics), so runs of different sizes or
recipes can be compared at equal training minutes.

    python -m hitok.bench.curve runs/rA runs/rB --hr ../shared/data/val --out docs/curves.csv
    python -m hitok.bench.curve runs/gan --live ...   # the weights being trained (a short fine-tune's EMA lags)

Appends rows (run, snapshot, steps, minutes, track, PSNR-Y, HaarPSI, NIQE, periodic, blocky, flat) to the CSV and
skips snapshots already in it, so it can be rerun while the runs go on (a CSV from before a column was scored gets
it, empty). `periodic`, `blocky` and `flat` are bench/artefacts.py's scores of the worst crop (above FLAG: a regular
pattern the photo lacks; above BLOCK_FLAG: pixelated; above FLAT_FLAG: grain on flat areas; empty where no crop has
flat areas)."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hitok.imageio import list_images, load_rgb8
from hitok.models.restorer import Restorer, RestorerConfig
from hitok.train.restorer import load_weights

from .artefacts import blockiness_score, flat_noise_score, periodic_score
from .evaluate import SHAVE, TRACKS, Bicubic, centre_crop, image_seed, make_lr
from .haarpsi import haarpsi
from .metrics import psnr_y
from .niqe import niqe

FIELDS = ["run", "snapshot", "steps", "minutes", "track", "psnr_y", "haarpsi", "niqe", "periodic", "blocky", "flat"]


def val_pairs(hr_dir: str | Path, crop: int = 512, seed: int = 0, every: int = 1
              ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """track -> [(LR, HR)] exactly as `hitok eval` makes them (centre crop, per-image seed), of every `every`-th
    photo of the folder."""
    pairs: dict[str, list] = {t: [] for t in TRACKS}
    for path in list_images(hr_dir)[::every]:
        hr = centre_crop(load_rgb8(path), crop)
        if hr is None:
            continue
        for track in TRACKS:
            pairs[track].append((make_lr(hr, track, image_seed(seed, path.name)), hr))
    return pairs


def score_restorer(net: Callable[[torch.Tensor], torch.Tensor], pairs: list[tuple[np.ndarray, np.ndarray]]
                   ) -> dict[str, float]:
    """Mean PSNR-Y, HaarPSI and NIQE of a restorer (fp32; any LR -> x4 function) over (LR, HR) pairs, and the
    worst periodic, blockiness and flat-noise scores (flat: None where no crop has flat areas)."""
    psnrs, haars, niqes, periodic, blocky, flat = [], [], [], [], [], []
    for lr, hr in pairs:
        x = torch.from_numpy(np.array(lr)).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, h, w)
        with torch.inference_mode():
            y = net(x)[0].clamp(0, 1)
        sr = (y.permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy()
        psnrs.append(psnr_y(sr, hr, SHAVE))
        haars.append(haarpsi(hr, sr, SHAVE))
        niqes.append(niqe(sr, crop_border=SHAVE))
        periodic.append(periodic_score(sr, hr, Bicubic()(lr)))
        blocky.append(blockiness_score(sr, hr))
        flat.append(flat_noise_score(sr, hr))
    return {"psnr_y": float(np.mean(psnrs)), "haarpsi": float(np.mean(haars)), "niqe": float(np.mean(niqes)),
            "periodic": float(np.max(periodic)), "blocky": float(np.max(blocky)),
            "flat": max((f for f in flat if f is not None), default=None)}


def _weights(run: Path, live: bool):
    """(name, state, metadata) of what to score in a run: its EMA snapshots, or with `live` the weights being
    trained (its `snapshots/live/` and the `model.*` of its continuation file; `run` may be that file itself,
    e.g. one a GPU session returned), named by their step count so later calls add rows."""
    if not live:
        for snap in sorted((run / "snapshots").glob("*.safetensors")):
            _, state, _, meta = load_weights(snap)
            yield snap.stem, state, meta
        return
    files = sorted((run / "snapshots" / "live").glob("*.safetensors")) + [run / "continuation.safetensors"]
    for path in files if run.is_dir() else [run]:
        if path.exists():
            _, state, _, meta = load_weights(path)
            yield f"live-{meta.get('steps', '?')}", state, meta


def score_runs(runs: list[Path], hr_dir: str | Path, out_csv: Path, live: bool = False) -> list[dict]:
    pairs = val_pairs(hr_dir)
    done = set()
    if out_csv.exists():
        with open(out_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        done = {(r["run"], r["snapshot"]) for r in rows}
        if rows and any(k not in rows[0] for k in FIELDS):
            with open(out_csv, "w", newline="") as f:
                writer = csv.DictWriter(f, FIELDS, restval="")
                writer.writeheader()
                writer.writerows(rows)
    new = []
    with open(out_csv, "a", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        if f.tell() == 0:
            writer.writeheader()
        for run in runs:
            name = run.name if run.is_dir() else run.stem
            for snapshot, state, meta in _weights(run, live):
                if (name, snapshot) in done:
                    continue
                done.add((name, snapshot))  # a run's last live snapshot and its continuation file: one row
                net = Restorer(RestorerConfig(**json.loads(meta["restorer"]))).eval()
                net.load_state_dict(state)
                for track in TRACKS:
                    sc = score_restorer(net, pairs[track])
                    row = {"run": name, "snapshot": snapshot, "steps": meta.get("steps", ""),
                           "minutes": meta.get("minutes", ""), "track": track, "psnr_y": f"{sc['psnr_y']:.3f}",
                           "haarpsi": f"{sc['haarpsi']:.4f}", "niqe": f"{sc['niqe']:.3f}",
                           "periodic": f"{sc['periodic']:.2f}", "blocky": f"{sc['blocky']:.2f}",
                           "flat": "" if sc["flat"] is None else f"{sc['flat']:.2f}"}
                    writer.writerow(row)
                    f.flush()
                    new.append(row)
                    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return new


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--hr", required=True, help="folder of HR photos (never the training photos)")
    ap.add_argument("--out", type=Path, default=Path("curves.csv"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--live", action="store_true", help="score the weights being trained (each run's live "
                    "snapshots and continuation file, or such a file named directly) instead of the EMA snapshots")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    score_runs(args.runs, args.hr, args.out, live=args.live)


if __name__ == "__main__":
    main()
