"""What a training run shows and records: a progress bar (it/s, ETA, current losses), metrics.csv (TensorBoard
too when it is installed), sample strips (input | output | target) and warnings about dead codebooks."""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

log = logging.getLogger("hitok.train")
# terms shown on the bar, in this order, when the stage reports them
BAR_TERMS = ("loss", "l1", "psnr", "ce", "acc", "commit", "adv", "d_loss")


class MetricsCSV:
    """Wide CSV, one row per logged step. Columns can appear mid-run (the GAN terms after adv_start, restart
    counts); then the file is rewritten once with the wider header."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        self.columns: list[str] = []
        self.rows: list[dict] = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                r = csv.DictReader(f)
                self.columns = list(r.fieldnames or [])
                self.rows = [row for row in r]
            if resume_step is not None:  # rows logged after the checkpoint will be logged again
                kept = [row for row in self.rows if int(float(row.get("step", 0))) <= resume_step]
                if len(kept) != len(self.rows):
                    self.rows = kept
                    self._rewrite()

    def _rewrite(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(self.rows)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, self.path)

    def append(self, row: dict) -> None:
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new or not self.path.is_file():
            self.columns += new
            self._rewrite()
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(row)


class TensorBoard:
    """Optional scalars; silently absent when the tensorboard package is not installed."""

    def __init__(self, log_dir: Path):
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(log_dir))
        except Exception:  # ImportError, or a tensorboard too old/new for this torch
            self.writer = None

    def add(self, step: int, values: dict) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and k != "step":
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Averager:
    """Mean of each logged term since the last flush."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, terms: dict) -> None:
        for k, v in terms.items():
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
                self.counts[k] = self.counts.get(k, 0) + 1

    def flush(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums.clear()
        self.counts.clear()
        return out


class Bar:
    """tqdm bar on stderr: it/s, ETA and the latest losses; plain log lines stay readable alongside."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True,
                            file=sys.stderr, mininterval=0.5, smoothing=0.1)

    def update(self, terms: dict) -> None:
        if self.bar is None:
            return
        shown = {k: f"{terms[k]:.3g}" for k in BAR_TERMS if k in terms}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def set_total(self, total: int) -> None:
        if self.bar is not None and self.bar.total != total:
            self.bar.total = total
            self.bar.refresh()

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            log.info(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _to_hwc(img: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    img = img.detach().float().clamp(0, 1)[None]
    if tuple(img.shape[-2:]) != size:
        img = F.interpolate(img, size=size, mode="nearest")  # nearest: show the LR pixels as they are
    return (img[0].permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def save_sample(path: Path, panels: list[torch.Tensor], rows: int = 2) -> None:
    """A PNG with one row per sample and one column per panel: panels are (B, 3, h, w) tensors, resized to the
    largest panel's size (LR inputs nearest-upsampled)."""
    size = max((tuple(p.shape[-2:]) for p in panels), key=lambda s: s[0] * s[1])
    n = min(rows, *(p.shape[0] for p in panels))
    grid = np.concatenate([np.concatenate([_to_hwc(p[i], size) for p in panels], axis=1) for i in range(n)], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(grid).save(tmp)
    os.replace(tmp, path)


def usage_report(stage: str, model, batch: dict, threshold: float) -> dict[str, float]:
    """Per-group code usage beyond the tokenizer's per-batch `usage{g}`. Tokenizer: `live{g}`, the fraction of
    codes the dead-code restart does not consider dead (usage EMA >= threshold / K). Generator/decoder:
    `pred_usage{g}`, the fraction of codes the generator's top-1 uses on this batch."""
    q = model.tokenizer.quantizer
    K = q.codebook_size
    if stage == "tokenizer":
        live = (q.usage_ema >= threshold / K).float().mean(1)  # (N,)
        return {f"live{g}": float(v) for g, v in enumerate(live.tolist())}
    with torch.no_grad():
        idx = model.predict_indices(batch["low_res"])  # (B, N, h, w)
    counts = q.code_counts(idx)  # (N, K)
    return {f"pred_usage{g}": float(v) for g, v in enumerate((counts > 0).float().mean(1).tolist())}


def dead_groups(used: dict[str, float], codebook_size: int) -> list[int]:
    """Groups (keys ending in their index) using at most 1% of their codes, or at most 2 codes in tiny codebooks."""
    limit = max(2, 0.01 * codebook_size)
    return [int(re.search(r"\d+$", k).group()) for k, v in used.items() if v * codebook_size <= limit]
