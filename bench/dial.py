"""The detail setting of a model file, chosen on photos the eval never sees (training photos): the largest
`--texture` at which no crop of either track is flagged by an artefact check (bench/artefacts.py: periodic,
blocky, flat noise). The rule the documented detail setting follows (MODEL_CARD.md, "Noise inputs"); fixed
before looking at the numbers, so that val stays a test.

    python -m hitok.bench.dial MODEL --hr ../shared/data/train --every 3 --settings 0.5,0.6,0.7,0.8,0.9,1

Prints, per setting and track (`hitok eval`'s centre crops, LR and metrics, the restorer in fp32 through the
model's own `restore`, as `hitok upscale --texture` runs it): PSNR-Y / HaarPSI / NIQE and the worst crop's
periodic / blocky / flat-noise scores; then the setting the rule picks (None when even the first is flagged)."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hitok.models import load_model_file

from .artefacts import BLOCK_FLAG, FLAG, FLAT_FLAG
from .curve import score_restorer, val_pairs


def flagged(row: dict) -> bool:
    """Whether the worst crop of a `score_restorer` row trips any artefact check (above its flag, as `hitok
    eval`)."""
    return row["periodic"] > FLAG or row["blocky"] > BLOCK_FLAG or (row["flat"] is not None
                                                                    and row["flat"] > FLAT_FLAG)


def pick_setting(model, pairs: dict[str, list], settings: list[float], log=print) -> float | None:
    """The largest of `settings` up to which no setting has a flagged track (scored in increasing order); None if
    the smallest is flagged. Every setting is scored and logged, so a pass above a flag is seen, not picked."""
    picked, clean_so_far = None, True
    for t in sorted(settings):
        rows = {track: score_restorer(lambda x, t=t: model.restore(x, texture=t), ps) for track, ps in pairs.items()}
        bad = any(flagged(r) for r in rows.values())
        log(f"texture {t:g}: " + " | ".join(
            f"{tr} {r['psnr_y']:.2f}/{r['haarpsi']:.3f}/{r['niqe']:.2f} periodic {r['periodic']:.1f} blocky "
            f"{r['blocky']:.2f} flat {'-' if r['flat'] is None else format(r['flat'], '.2f')}"
            for tr, r in rows.items()) + ("  FLAGGED" if bad else ""))
        clean_so_far = clean_so_far and not bad
        if clean_so_far:
            picked = t
    return picked


def main(argv: list[str] | None = None) -> float | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="a model file with a texture restorer (`hitok train attach "
                    "--texture-from`)")
    ap.add_argument("--hr", required=True, help="folder of photos (training photos: not the eval's)")
    ap.add_argument("--every", type=int, default=3, help="score every N-th photo of the folder (default 3)")
    ap.add_argument("--settings", default="0.5,0.6,0.7,0.8,0.9,1")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    if a.every < 1:
        ap.error("--every must be at least 1")
    torch.set_num_threads(a.threads)
    model = load_model_file(a.model)
    if model.texture_restorer is None:
        raise SystemExit(f"{a.model}: no texture restorer (add one with `hitok train attach --texture-from`)")
    picked = pick_setting(model, val_pairs(a.hr, every=a.every), [float(s) for s in a.settings.split(",")])
    print(f"detail setting: {picked}")
    return picked


if __name__ == "__main__":
    main()
