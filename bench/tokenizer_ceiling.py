"""The ceiling of the token path: what a model's tokenizer makes of a photo's own tokens, and how many of those
tokens its generator finds from the LR (issue 21: measure before and after teaching the decoder texture).

    python -m hitok.bench.tokenizer_ceiling MODEL [MODEL ...] --hr VAL_DIR [--crop 256] [--out ceiling.json]

Per model, mean over the centre crops of the folder:
- r-PSNR-Y: decode(encode(photo)) against the photo (Y, 4 px shaved, as `hitok eval`);
- HF energy: the energy of the two finest Haar detail levels of the reconstruction over the photo's (1 = as much
  fine detail as the photo, below 1 = smoother);
- NIQE of the reconstruction (and of the photo, for reference);
- token accuracy per group: the share of the generator's top-1 predictions from the clean LR (MATLAB-style
  bicubic 1/4, as `hitok eval`'s clean track) that equal the photo's own tokens."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from hitok.models import load_model_file

from .ablate_tokenizer import _t, _u8, haar_energies, load_val
from .evaluate import SHAVE, make_lr
from .metrics import psnr_y
from .niqe import niqe


@torch.no_grad()
def ceiling(model, val: list[tuple[str, np.ndarray]]) -> dict:
    model.eval()
    if not model.has_encoder:
        raise ValueError("this model file has no encoder (exported with --no-encoder): its tokens cannot be measured")
    psnrs, hf, rec_niqe, photo_niqe, hits = [], [], [], [], []
    for _, img in val:
        x = _t(img, "cpu")
        idx = model.encode(x)  # (1, N, h, w)
        rec = model.decode_indices(idx)
        r8 = _u8(rec)
        psnrs.append(psnr_y(r8, img, SHAVE))
        hf.append(sum(haar_energies(rec)[:2]) / max(sum(haar_energies(x)[:2]), 1e-12))
        rec_niqe.append(niqe(r8, crop_border=SHAVE))
        photo_niqe.append(niqe(img, crop_border=SHAVE))
        pred = model.predict_indices(_t(make_lr(img, "bicubic", 0), "cpu"))
        hits.append((pred == idx).float().mean(dim=(0, 2, 3)).tolist())
    return {"images": len(val), "r_psnr_y": float(np.mean(psnrs)), "hf_energy_ratio": float(np.mean(hf)),
            "niqe": float(np.mean(rec_niqe)), "niqe_photo": float(np.mean(photo_niqe)),
            "token_accuracy_per_group": [round(float(v), 4) for v in np.mean(hits, axis=0)]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--hr", required=True, help="folder of photos (e.g. the val set)")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    results = {}
    for path in a.models:
        model = load_model_file(path)
        val = load_val(a.hr, a.crop, model.lr_align * 4)
        results[path] = ceiling(model, val)
        print(path, json.dumps(results[path]))
    if a.out:
        a.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
