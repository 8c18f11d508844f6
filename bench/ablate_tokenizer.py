"""Small-scale reproduction of HiTokSR's tokenizer claims: Table 7 (number of sub-codebooks at a fixed
capacity of 4096 codes and C=32), the tokenizer columns of Table 3 (vanilla VQ -> + multi-group -> + group masking
-> + frequency-matched supervision) and Fig. 1a (decoding with M = 1..N groups is coarse-to-fine).

    python -m hitok.bench.ablate_tokenizer --data DIR --val DIR --out DIR --minutes-per-row 6 --seeds 0 1 2

Every row is the `small` preset's tokenizer with latent_dim/groups/codebook_size replaced, trained by the project's
own loop (train/loop.py `train_stage` around train/stages.py `TokenizerStage`) on the same batches (CropStream is a
pure function of seed and step) for the same number of steps. Only L1 + commitment (Eq. 6 without LPIPS/GAN,
Eq. 7, lambda=1, beta=0.25) so that rows differ in the tokenizer design alone. The model and the stage are built
here (`hitok train` only builds presets and ties DWT targets to masking) and handed to `train_stage`.

Equal steps, not equal time: the paper compares at equal iterations, and on a shared CPU wall time depends on the
other jobs. With `--minutes-per-row` the first row trained (1x4096, the slowest quantizer) runs on that time
budget and its step count becomes every row's; steps and seconds are recorded per row either way.

Table 7 rows use masking + DWT targets: the paper's 1x4096 and 4x1024 numbers equal its Table 3 "vanilla VQ" and
"full" rows, so its Table 7 is the full recipe with N varied (at N=1 masking and Eq. 5 are no-ops). Those two
runs are therefore shared by both tables; `--seeds` apply to the Table 7 rows, `--table3-seeds` (default: the
first seed) to the two Table 3-only rows. Runs go seed-major, so an interrupted ablation holds whole seeds, and
a finished run (RUN/runs/<row>-s<seed>/row.json, same settings) is reused when the command is run again.
An 8-group row needs a 7-level DWT, hence crops that are multiples of 128 (default 128 px x 4 images: the pixels
per step of the lead's 64 px x 16 runs).

Metrics on centre crops (`--val-crop`, 256) of the val folder, evaluating each run's exported (EMA) model:
r-PSNR / r-SSIM on Y, 4 px shaved (hitok.bench.metrics, as `hitok eval`), RGB PSNR too, fraction of each
group's codes used. Hierarchy (Fig. 1a), every multi-group row: decode with M groups, RGB PSNR against T(N-M)
and against the image, and the HF share: the share of the image's non-DC energy (orthonormal Haar, all levels)
that lies in the detail bands of levels 1..N-1, i.e. exactly what T(N-1) removes; and which T(l) each M-group
decode is closest to (frequency-matched: l = N-M)."""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from hitok.errors import UserError
from hitok.imageio import list_images, load_rgb8
from hitok.psnr import psnr
from hitok.models import HiTok, ModelFileError, load_model_file, presets
from hitok.train.assemble import training_device
from hitok.train.checkpoint import atomic_write_text
from hitok.train.config import TrainConfig, TrainError, check_crop, resolve
from hitok.train.distributed import DistEnv
from hitok.train.loop import train_stage
from hitok.train.losses.dwt import dwt_target, haar_analysis
from hitok.train.stages import LossWeights, TokenizerStage

from .metrics import psnr_y, ssim_y

log = logging.getLogger("hitok.bench")
# (latent C, total codes): the paper's Table 7 budget; `tiny` keeps the row structure at test sizes
CAPACITY = {"small": (32, 4096), "tiny": (8, 32)}
PAPER = {"table7": {"g1": 23.90, "g2": 25.68, "g4": 26.74, "g8": 27.03},
         "table3": {"g1": 23.90, "g4-plain": 25.49, "g4-mask": 26.31, "g4": 26.74}}
T3_LABEL = {"g1": "Vanilla VQ (baseline)", "g4-plain": "+ Multi-Group Codebook", "g4-mask": "+ Group-Masking",
            "g4": "+ Frequency-Matched Supervision"}
FULL = "g4"  # the Fig. 1a model: 4 groups, masking + DWT targets


@dataclass(frozen=True)
class Row:
    id: str
    groups: int
    masking: bool
    freq_targets: bool

    @property
    def tables(self) -> list[str]:
        return [t for t in ("table7", "table3") if self.id in PAPER[t]]


# g1 runs the vanilla path; at N=1 masking (M is always 1) and Eq. 5 (T(0) = x) would change nothing anyway
ROWS = [Row("g1", 1, False, False), Row("g2", 2, True, True), Row("g4", 4, True, True), Row("g8", 8, True, True),
        Row("g4-plain", 4, False, False), Row("g4-mask", 4, True, False)]


def label(row: Row, preset: str) -> str:
    C, total = CAPACITY[preset]
    return f"{row.groups}x{total // row.groups} / {C // row.groups}"


# ---- training --------------------------------------------------------------------------------------------------
def row_model(row: Row, preset: str) -> HiTok:
    base = presets.PRESETS[preset]()
    C, total = CAPACITY[preset]
    K = total // row.groups
    tok = replace(base.tokenizer, latent_dim=C, groups=row.groups, codebook_size=K)
    gen = replace(base.generator, groups=row.groups, codebook_size=K)  # built (HiTok needs one), never trained
    return HiTok(replace(base, tokenizer=tok, generator=gen, vfm=None, name=f"{preset}-ablate-{row.id}"))


def train_row(row: Row, seed: int, a: argparse.Namespace, run_dir: Path, steps: int | None,
              minutes: float | None) -> dict:
    """One run of the project's loop (hitok.train.loop.train_stage) with this row's tokenizer: `steps` steps, or
    `minutes` when steps is None."""
    cfg = resolve(TrainConfig(
        stage="tokenizer", data=a.data, out=str(run_dir), preset=a.preset, steps=steps,
        batch_size=a.batch_size, crop=a.crop, learning_rate=a.lr, warmup=a.warmup, ae_warmup=a.ae_warmup, adv_weight=0.0,
        masking=row.masking, seed=seed, device=a.device, workers=a.workers, log_every=a.log_every,
        sample_every=10 ** 9, ckpt_every=10 ** 9, quiet=True, time_limit_s=None if steps else minutes * 60))
    torch.manual_seed(seed)  # same init draw for every row of a seed
    model = row_model(row, a.preset).train()
    weights = LossWeights(l1=1.0, lpips=0.0, vq=1.0, adv=0.0)
    stage = TokenizerStage(model, weights, lpips=None, masking=row.masking, freq_targets=row.freq_targets,
                           ae_warmup=cfg.ae_warmup)
    res = train_stage(cfg, stage, description="off (ablation: L1 + commitment)")
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)  # resume state; model.safetensors is what we keep
    return {"steps": res.step, "train_seconds": round(res.seconds, 1), "it_per_s": round(res.it_per_s, 3),
            "final_train_l1": res.terms.get("l1")}


# ---- evaluation ------------------------------------------------------------------------------------------------
def load_val(folder: str, crop: int, align: int) -> list[tuple[str, np.ndarray]]:
    """Centre crops of side min(crop, largest multiple of `align`) per image side."""
    out = []
    for p in list_images(Path(folder)):
        img = load_rgb8(p)
        h, w = (min(crop, s // align * align) for s in img.shape[:2])
        if h and w:
            t, l = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
            out.append((p.name, np.ascontiguousarray(img[t:t + h, l:l + w])))
    if not out:
        raise UserError(f"{folder}: no image is at least {align} px on both sides")
    return out


def _t(img: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(device)  # (1, 3, H, W)


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def haar_energies(x: torch.Tensor) -> list[float]:
    """Energy of the detail bands (LH+HL+HH) of every Haar level, finest first; their sum is the non-DC energy."""
    ll, out = x.double(), []
    while ll.shape[-1] % 2 == 0 and ll.shape[-2] % 2 == 0:
        ll, lh, hl, hh = haar_analysis(ll)
        out.append(float(lh.pow(2).sum() + hl.pow(2).sum() + hh.pow(2).sum()))
    return out


def hf_share(x: torch.Tensor, levels: int) -> float:
    e = haar_energies(x)
    return sum(e[:levels]) / max(sum(e), 1e-12)


def _mean(values) -> float:
    return float(np.mean(values))


@torch.no_grad()
def evaluate_model(model: HiTok, val: list[tuple[str, np.ndarray]], device) -> tuple[dict, list[list[np.ndarray]]]:
    """Reconstruction metrics, code usage, and (N > 1) the M = 1..N hierarchy; also the grid's image rows."""
    tok = model.tokenizer.eval()
    q, N = tok.quantizer, tok.cfg.groups
    counts = torch.zeros(N, q.codebook_size)
    ry, sy, rgb, grid = [], [], [], []
    psnr_levels = [[[] for _ in range(N)] for _ in range(N)]  # [M-1][l]: decode with M groups vs T(l)
    hf, hf_target = [[] for _ in range(N)], [[] for _ in range(N)]
    hf_gt = []
    for _, img in val:
        x = _t(img, device)
        idx = tok.encode(x)  # (1, N, h, w)
        counts += q.code_counts(idx).cpu()
        rec = tok.decode_indices(idx)
        r8 = _u8(rec)
        ry.append(psnr_y(r8, img))
        sy.append(ssim_y(r8, img))
        rgb.append(psnr(rec, x))
        if N == 1:
            continue
        hf_gt.append(hf_share(x, N - 1))
        row = [img]
        targets = [dwt_target(x, level) for level in range(N)]
        for M in range(1, N + 1):
            dec = rec if M == N else tok.decode_indices(idx, M)
            for level, t in enumerate(targets):
                psnr_levels[M - 1][level].append(psnr(dec, t))
            hf[M - 1].append(hf_share(dec, N - 1))
            hf_target[M - 1].append(hf_share(targets[N - M], N - 1))
            row.append(_u8(dec))
        grid.append(row)
    p = counts / counts.sum(1, keepdim=True).clamp_min(1)
    out = {"r_psnr": _mean(ry), "r_ssim": _mean(sy), "r_psnr_rgb": _mean(rgb),
           "r_psnr_per_image": [round(v, 3) for v in ry],
           "usage": [round(float(u), 4) for u in (counts > 0).float().mean(1)],
           "perplexity": [round(float(v), 1) for v in torch.exp(-(p * p.clamp_min(1e-12).log()).sum(1))]}
    if N > 1:
        mat = [[round(_mean(v), 3) for v in row] for row in psnr_levels]
        h = {"M": list(range(1, N + 1)), "psnr_vs_target": [mat[M - 1][N - M] for M in range(1, N + 1)],
             "psnr_vs_full": [mat[M - 1][0] for M in range(1, N + 1)],
             "hf_share": [round(_mean(v), 4) for v in hf], "hf_share_target": [round(_mean(v), 4) for v in hf_target],
             "psnr_vs_dwt_levels": mat, "best_level": [int(np.argmax(r)) for r in mat],
             "hf_share_gt": round(_mean(hf_gt), 4)}
        h["monotone_psnr_vs_full"] = all(b > a for a, b in zip(h["psnr_vs_full"], h["psnr_vs_full"][1:]))
        h["monotone_hf_share"] = all(b > a for a, b in zip(h["hf_share"], h["hf_share"][1:]))
        out["hierarchy"] = h
    return out, grid


def save_grid(path: Path, grid: list[list[np.ndarray]], names: list[str], N: int) -> None:
    """Labelled preview: one row per val image, columns input | M=1 .. M=N (Fig. 1a)."""
    labels = ["input"] + [f"M={M}  (target T({N - M}))" for M in range(1, N + 1)]
    font = ImageFont.load_default(size=13)
    gap, head = 4, 18
    h, w = grid[0][0].shape[:2]
    canvas = Image.new("RGB", (len(labels) * (w + gap) - gap, len(grid) * (h + head + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (row, name) in enumerate(zip(grid, names)):
        y = r * (h + head + gap)
        for c, (img, text) in enumerate(zip(row, labels)):
            x = c * (w + gap)
            draw.rectangle([x, y, x + w - 1, y + head - 1], fill="black")
            draw.text((x + 3, y + 2), f"{name}: {text}" if c == 0 else text, fill="white", font=font)
            canvas.paste(Image.fromarray(img[:h, :w]), (x, y + head))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


# ---- the ablation ----------------------------------------------------------------------------------------------
def plan(a: argparse.Namespace) -> list[tuple[Row, int]]:
    """(row, seed) runs, seed-major so that an interrupted ablation already holds one seed of every row."""
    rows = [r for r in ROWS if set(r.tables) & set(a.rows) and (not a.only or r.id in a.only)]

    def seeds(r: Row) -> list[int]:
        return a.seeds if "table7" in a.rows and "table7" in r.tables else a.table3_seeds

    return [(r, seeds(r)[i]) for i in range(max(len(a.seeds), len(a.table3_seeds))) for r in rows
            if i < len(seeds(r))]


def _aggregate(row: Row, preset: str, runs: list[dict]) -> dict:
    C, total = CAPACITY[preset]

    def ms(key: str) -> tuple[float, float]:
        v = [r[key] for r in runs]
        return round(_mean(v), 4), round(float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, 4)

    (p, psd), (s, ssd), (rgb, _) = ms("r_psnr"), ms("r_ssim"), ms("r_psnr_rgb")
    return {"label": label(row, preset), "tables": row.tables, "groups": row.groups,
            "codebook_size": total // row.groups, "code_dim": C // row.groups, "masking": row.masking,
            "freq_targets": row.freq_targets, "paper_r_psnr": {t: PAPER[t][row.id] for t in row.tables},
            "n_seeds": len(runs), "r_psnr": p, "r_psnr_sd": psd, "r_ssim": s, "r_ssim_sd": ssd, "r_psnr_rgb": rgb,
            "usage": [round(_mean(u), 4) for u in zip(*(r["usage"] for r in runs))],
            "steps": [r["steps"] for r in runs], "train_seconds": [r["train_seconds"] for r in runs], "runs": runs}


def run_ablation(a: argparse.Namespace, command: str) -> dict:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    list_images(a.data, recursive=True)  # a missing or empty folder fails here, before any training
    runs = plan(a)
    patch = presets.PRESETS[a.preset]().tokenizer.patch
    for row, _ in runs:
        check_crop(a.crop, patch, row.groups)
    max_n = max(r.groups for r, _ in runs)
    val = load_val(a.val, a.val_crop, max(16, patch, 2 ** (max_n - 1)))
    device = training_device(a.device, DistEnv())
    steps, minutes = a.steps, a.minutes_per_row
    results: dict = {"command": command, "settings": {k: v for k, v in vars(a).items()},
                     "val_images": [n for n, _ in val], "val_crop": list(val[0][1].shape[:2]), "rows": {}}
    done: dict[str, list[dict]] = {}
    for row, seed in runs:
        run_dir = out / "runs" / f"{row.id}-s{seed}"
        fp = {"row": asdict(row), "seed": seed, **{k: getattr(a, k) for k in (
            "preset", "crop", "batch_size", "lr", "warmup", "ae_warmup", "data")},
              "budget": {"steps": steps} if steps else {"minutes": minutes}}
        marker = run_dir / "row.json"
        saved = json.loads(marker.read_text()) if marker.is_file() else None
        if saved and saved["fingerprint"] == fp:
            train = saved["train"]
            log.info(f"[{row.id} seed {seed}] reusing the finished run in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)  # unfinished or different settings: start over
            log.info(f"[{row.id} seed {seed}] training {label(row, a.preset)}, masking={row.masking}, "
                     f"DWT targets={row.freq_targets}, " + (f"{steps} steps" if steps else f"{minutes} min"))
            train = train_row(row, seed, a, run_dir, steps, minutes)
            atomic_write_text(marker, json.dumps({"fingerprint": fp, "train": train}, indent=1))
        if not steps:  # the first run's budget fixes every later run's step count
            steps = train["steps"]
            results["steps_from_budget"] = {"row": row.id, "seed": seed, "minutes": minutes, "steps": steps}
        t0 = time.time()
        model = load_model_file(run_dir / "model.safetensors", device=device)
        metrics, grid = evaluate_model(model, val, device)
        if grid and row.id not in done:  # one preview per row, from its first seed
            name = "fig1a_grid.png" if row.id == FULL else f"hierarchy_{row.id}.png"
            save_grid(out / name, grid, [n for n, _ in val], row.groups)
            metrics["grid"] = name
        run = {"seed": seed, **train, **metrics, "eval_seconds": round(time.time() - t0, 1)}
        done.setdefault(row.id, []).append(run)
        log.info(f"[{row.id} seed {seed}] {train['steps']} steps, {train['train_seconds']:.0f} s: "
                 f"r-PSNR {metrics['r_psnr']:.2f} dB, r-SSIM {metrics['r_ssim']:.4f}, codes used "
                 + " ".join(f"{u:.0%}" for u in metrics["usage"]))
        results["rows"] = {r.id: _aggregate(r, a.preset, done[r.id]) for r in ROWS if r.id in done}
        if FULL in done:
            first = done[FULL][0]
            results["fig1a"] = {"row": FULL, "seed": first["seed"], "grid": first.get("grid"), **first["hierarchy"]}
        write_outputs(out, results)
    return results


# ---- reports ---------------------------------------------------------------------------------------------------
def _pm(v: float, sd: float, n: int, digits: int = 2) -> str:
    return f"{v:.{digits}f} ± {sd:.{digits}f} (n={n})" if n > 1 else f"{v:.{digits}f}"


def _paired_delta(prev: list[dict], cur: list[dict]) -> str:
    """r-PSNR difference to the row above over the seeds both rows ran (same init seed and batches): mean ± sd."""
    a, b = ({r["seed"]: r["r_psnr"] for r in runs} for runs in (prev, cur))
    d = [b[s] - a[s] for s in sorted(set(a) & set(b))]
    if not d:
        return "no common seed"
    return f"{_mean(d):+.2f}" + (f" ± {np.std(d, ddof=1):.2f} (n={len(d)})" if len(d) > 1 else "")


def _table(results: dict, table: str) -> list[str]:
    preset = results["settings"]["preset"]
    first = "Codebooks / code dim" if table == "table7" else "Method"
    lines = [f"| {first} | paper r-PSNR | r-PSNR (Y) | Δ paper / Δ ours (paired by seed) | r-SSIM (Y) | PSNR (RGB) "
             "| codes used per group | steps | train s |", "|" + "---|" * 9]
    prev = None
    for rid in PAPER[table]:
        r = results["rows"].get(rid)
        paper = PAPER[table][rid]
        size = label(next(x for x in ROWS if x.id == rid), preset)
        name = size if table == "table7" else f"{T3_LABEL[rid]} ({size})"
        if r is None:
            lines.append(f"| {name} | {paper:.2f} | not run | | | | | | |")
            prev = None
            continue
        delta = f"{paper - prev[0]:+.2f} / {_paired_delta(prev[1], r['runs'])}" if prev else ""
        used = " ".join(f"{u:.0%}" for u in r["usage"])
        lines.append(f"| {name} | {paper:.2f} | {_pm(r['r_psnr'], r['r_psnr_sd'], r['n_seeds'])} | {delta} "
                     f"| {_pm(r['r_ssim'], r['r_ssim_sd'], r['n_seeds'], 4)} | {r['r_psnr_rgb']:.2f} | {used} "
                     f"| {'/'.join(map(str, sorted(set(r['steps']))))} | {_mean(r['train_seconds']):.0f} |")
        prev = (paper, r["runs"])
    return lines


def to_markdown(results: dict) -> str:
    s = results["settings"]
    C, total = CAPACITY[s["preset"]]
    budget = (f"{s['steps']} steps per run" if s["steps"] else
              f"{s['minutes_per_row']} min for the first run; its step count "
              f"({results.get('steps_from_budget', {}).get('steps', '?')}) for every run")
    md = ["# Tokenizer ablation: HiTokSR Table 7, Table 3 (tokenizer columns), Fig. 1a", "",
          f"Command: `{results['command']}`", "",
          f"- Architecture: `{s['preset']}` preset tokenizer (p={presets.PRESETS[s['preset']]().tokenizer.patch}), "
          f"C={C}, {total} codes in total; rows change groups x codebook size only.",
          f"- Training: same batches and seeds for every row; {budget}; crop {s['crop']} px, batch "
          f"{s['batch_size']}, AdamW lr {s['lr']} (codebook 10x), warm-up {s['warmup']}, {s['ae_warmup']} "
          "autoencoder steps before k-means init, dead-code restarts; loss L1 + commitment only (no LPIPS, "
          "no GAN); the exported EMA weights are evaluated.",
          f"- Val: {len(results['val_images'])} image(s) of `{s['val']}`, centre crops "
          f"{results['val_crop'][0]}x{results['val_crop'][1]}. r-PSNR / r-SSIM on Y (BT.601), 4 px shaved "
          "(hitok.bench.metrics); PSNR (RGB) on [0, 1]; codes used = fraction of each group's codebook "
          "hit on val. Paper numbers: DIV2K, 500k iterations, p=16 — compare trends, not levels.", ""]
    for table, title in (("table7", "Table 7: number of sub-codebooks (masking + DWT targets when N > 1)"),
                         ("table3", "Table 3: tokenizer designs (r-PSNR column)")):
        if table in s["rows"]:
            md += [f"## {title}", ""] + _table(results, table) + [""]
    f = results.get("fig1a")
    if f:
        md += [f"## Fig. 1a: decoding the {results['rows'][FULL]['label']} model with M groups (seed {f['seed']})",
               "", "PSNR in dB on RGB; HF share = share of the non-DC Haar energy in the detail bands of levels "
               f"1..N-1 (what T(N-1) removes); ground truth: {f['hf_share_gt']:.3f}.", "",
               "| M | target | PSNR vs target | PSNR vs full image | HF share | HF share of the target |",
               "|---|---|---|---|---|---|"]
        n = len(f["M"])
        for i, M in enumerate(f["M"]):
            md.append(f"| {M} | T({n - M}) | {f['psnr_vs_target'][i]:.2f} | {f['psnr_vs_full'][i]:.2f} "
                      f"| {f['hf_share'][i]:.3f} | {f['hf_share_target'][i]:.3f} |")
        md += ["", f"Monotone coarse -> fine: PSNR vs full {'yes' if f['monotone_psnr_vs_full'] else 'NO'}, "
               f"HF share {'yes' if f['monotone_hf_share'] else 'NO'}. Best-matching DWT level per M (PSNR vs "
               f"T(0..{n - 1})): {' '.join(map(str, f['best_level']))}; frequency-matched would be "
               f"{' '.join(str(n - M) for M in f['M'])}.", "", f"![Fig. 1a grid]({f['grid']})", ""]
    others = [(rid, r["runs"][0]) for rid, r in results["rows"].items() if rid != FULL and "hierarchy" in r["runs"][0]]
    if others:
        md += ["## Hierarchy of the other multi-group rows (first seed)", "",
               "| row | PSNR vs full, M=1..N | HF share, M=1..N | best DWT level, M=1..N | monotone |",
               "|---|---|---|---|---|"]
        for rid, run in others:
            h = run["hierarchy"]
            mono = "yes" if h["monotone_psnr_vs_full"] and h["monotone_hf_share"] else "no"
            md.append(f"| {rid} | {' '.join(f'{v:.2f}' for v in h['psnr_vs_full'])} "
                      f"| {' '.join(f'{v:.3f}' for v in h['hf_share'])} | {' '.join(map(str, h['best_level']))} "
                      f"| {mono} |")
        md.append("")
    md += ["## Every run", "", "| row | seed | steps | train s | it/s | r-PSNR | r-SSIM | codes used |",
           "|---|---|---|---|---|---|---|---|"]
    for rid, r in results["rows"].items():
        for run in r["runs"]:
            md.append(f"| {rid} | {run['seed']} | {run['steps']} | {run['train_seconds']:.0f} | {run['it_per_s']:.2f} "
                      f"| {run['r_psnr']:.2f} | {run['r_ssim']:.4f} | {' '.join(f'{u:.0%}' for u in run['usage'])} |")
    return "\n".join(md) + "\n"


def write_outputs(out: Path, results: dict) -> None:
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    atomic_write_text(out / "ablation.md", to_markdown(results))


# ---- command line ----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hitok.bench.ablate_tokenizer", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="training photos")
    p.add_argument("--val", required=True, help="validation photos (centre crops)")
    p.add_argument("--out", required=True)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes-per-row", type=float, help="time budget of the first run; sets every run's steps")
    budget.add_argument("--steps", type=int, help="optimizer steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the Table 7 rows")
    p.add_argument("--table3-seeds", type=int, nargs="+", help="seeds of the Table 3-only rows (default: first seed)")
    p.add_argument("--rows", default="table7,table3", help="comma list of table7, table3")
    p.add_argument("--only", default="", help="comma list of row ids (g1 g2 g4 g8 g4-plain g4-mask)")
    p.add_argument("--preset", default="small", choices=sorted(CAPACITY))
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ae-warmup", type=int, default=100)
    p.add_argument("--val-crop", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    a = p.parse_args(argv)
    a.rows = [t.strip() for t in a.rows.split(",") if t.strip()]
    if not a.rows or set(a.rows) - {"table7", "table3"}:
        p.error(f"--rows: choose from table7, table3 (got {','.join(a.rows)})")
    a.only = [r.strip() for r in a.only.split(",") if r.strip()]
    if set(a.only) - {r.id for r in ROWS}:
        p.error(f"--only: unknown row id(s) {sorted(set(a.only) - {r.id for r in ROWS})}")
    a.table3_seeds = a.table3_seeds or a.seeds[:1]
    if (a.steps is not None and a.steps < 1) or (a.minutes_per_row is not None and a.minutes_per_row <= 0):
        p.error("--steps / --minutes-per-row must be positive")
    if not plan(a):
        p.error("no row selected")
    return a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("hitok").setLevel(logging.INFO)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        run_ablation(a, "python -m hitok.bench.ablate_tokenizer " + shlex.join(argv))
    except (UserError, TrainError, ModelFileError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {Path(a.out) / 'ablation.md'} and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
