"""Training run configuration: one `TrainConfig` per run of one stage (Sec. 3.1-3.3), with per-preset defaults.

Table 6 fixes the paper preset: batch 32/64/64, 512 px crops, AdamW with G/D learning rates 1e-4/5e-5 for the
tokenizer and 5e-5/1e-5 for the generator and the decoder, 600k/600k/50k iterations. The scaled presets deviate
on purpose: `small` trains each stage in about an hour on a CPU, which needs larger learning rates, smaller
crops and a short warm-up; `tiny` exists for tests. Every field left at None is filled by `resolve` from
`PRESET_DEFAULTS`, so a saved config.json records the values a run really used."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

STAGES = ("tokenizer", "generator", "decoder")


class TrainError(Exception):
    """A training problem the user can fix (bad option, missing run); str() is one line."""


# Per preset: stage -> (G learning rate, D learning rate); steps/batch per stage; everything else shared.
PRESET_DEFAULTS: dict[str, dict] = {
    "paper": dict(learning_rate={"tokenizer": (1e-4, 5e-5), "generator": (5e-5, 1e-5), "decoder": (5e-5, 1e-5)},
                  steps={"tokenizer": 600_000, "generator": 600_000, "decoder": 50_000},
                  batch={"tokenizer": 32, "generator": 64, "decoder": 64}, crop=512, warmup=2000,
                  ema_decay=0.9999, d_channels=64, ae_warmup=0, ckpt_every=5000, sample_every=2000),
    # ~1 hour per stage on 2 shared CPU cores (the speeds: MODEL_CARD.md, "Training defaults"); learning rates
    # are first guesses, to be tuned
    "small": dict(learning_rate={"tokenizer": (4e-4, 2e-4), "generator": (4e-4, 8e-5), "decoder": (2e-4, 4e-5)},
                  steps={"tokenizer": 3000, "generator": 1300, "decoder": 1000},
                  batch={"tokenizer": 4, "generator": 4, "decoder": 4}, crop=96, warmup=100,
                  ema_decay=0.999, d_channels=32, ae_warmup=200, ckpt_every=250, sample_every=250,
                  # the codebook head's latent MSE lowers NIQE at the same PSNR; a short run needs more clean LR
                  # inputs than the Real-ESRGAN mix gives it (MODEL_CARD.md, "Training defaults")
                  latent_weight=1.0, clean_lr=0.3),
    "tiny": dict(learning_rate={"tokenizer": (1e-3, 5e-4), "generator": (1e-3, 2e-4), "decoder": (1e-3, 2e-4)},
                 steps={"tokenizer": 20, "generator": 20, "decoder": 20},
                 batch={"tokenizer": 2, "generator": 2, "decoder": 2}, crop=32, warmup=2,
                 ema_decay=0.9, d_channels=8, ae_warmup=0, ckpt_every=10, sample_every=10),
}
# When does the GAN switch on, as a fraction of the stage's steps: after the reconstruction has formed.
ADV_START_FRACTION = {"tokenizer": 0.3, "generator": 0.3, "decoder": 0.0}
BUDGET_STEPS = 10 ** 9  # placeholder step count until a time-budget run has measured its speed
# Fields `--resume` may change; anything else would make the resumed run a different run.
RESUME_OVERRIDABLE = {"steps", "device", "workers", "time_limit_s", "log_every", "sample_every", "ckpt_every",
                      "quiet", "nproc", "threads", "data", "resume"}


# Defaults of the fields that do not depend on the preset. The dataclass holds None for them ("not given") so that
# `merge_for_resume` can tell an option set back to its default on the command line from one left out.
FIELD_DEFAULTS: dict[str, object] = dict(
    accum=1, schedule="constant", min_lr_ratio=0.1, weight_decay=0.0, beta1=0.9, beta2=0.95, grad_clip=1.0, topk=5,
    guide_width=0, guide_blocks=4, guide_only=False, decoder_only=False, masking=True, no_vfm=False, seed=0,
    device="auto", log_every=10, nproc=1, quiet=False)
# config.json of runs written before a field was renamed: old key -> new key
RENAMED_FIELDS = {"lr": "learning_rate"}


@dataclass
class TrainConfig:
    stage: str
    data: str
    out: str
    preset: str | None = None          # None: the --init model's preset, else "small"
    init: str | None = None            # RUN_DIR or model .safetensors to start from (previous stage)
    resume: bool = False
    steps: int | None = None           # total optimizer steps of this stage
    batch_size: int | None = None      # per process; the global batch is batch_size * processes * accum
    crop: int | None = None            # HR crop side in pixels
    accum: int | None = None           # gradient accumulation micro-batches per step
    learning_rate: float | None = None  # generator-side (G) peak learning rate (CLI: --lr)
    d_lr: float | None = None          # discriminator learning rate
    warmup: int | None = None          # linear warm-up steps (the GAN's D warms up from adv_start too)
    schedule: str | None = None        # "constant" or "cosine" (to min_lr_ratio * lr at the last step)
    min_lr_ratio: float | None = None
    weight_decay: float | None = None  # the paper does not state one; decaying codebooks toward 0 hurts VQ
    beta1: float | None = None
    beta2: float | None = None
    grad_clip: float | None = None     # max global grad norm, G and D separately (0: off)
    ema_decay: float | None = None
    adv_start: int | None = None       # step at which the GAN terms start (None: ADV_START_FRACTION * steps)
    adv_weight: float | None = None    # None: Table 6 (0.8 tokenizer, 0.5 generator/decoder)
    latent_weight: float | None = None  # generator stage with the codebook head: latent MSE weight (None: 0)
    clean_lr: float | None = None      # share of LR inputs made by plain bicubic downscaling (0: Real-ESRGAN only)
    d_channels: int | None = None      # discriminator width (Real-ESRGAN: 64)
    topk: int | None = None            # decoder stage: sample input tokens among the generator's top-K
    guide_width: int | None = None     # decoder stage: add an LR guide of this width (models/guide.py) to an
                                       # --init model without one (0: keep the decoder as it is)
    guide_blocks: int | None = None
    guide_only: bool | None = None     # decoder stage: train only the LR guide (the token-only decoder is kept)
    ae_warmup: int | None = None       # tokenizer stage: steps without quantization before k-means init
    decoder_only: bool | None = None   # tokenizer stage, from --init: train the decoder alone (tokens unchanged)
    masking: bool | None = None        # group masking (Eq. 3-5) in the tokenizer and decoder stages
    no_vfm: bool | None = None         # drop the preset's VFM (e.g. paper preset without DINOv3 weights)
    seed: int | None = None
    device: str | None = None
    workers: int | None = None         # DataLoader worker processes per training process
    log_every: int | None = None
    sample_every: int | None = None
    ckpt_every: int | None = None
    time_limit_s: float | None = None  # stop (checkpoint + export) after this much wall time
    budget_plan: bool = False          # steps not given with a time limit: set them from the measured speed
    nproc: int | None = None           # >1: spawn this many local data-parallel processes (see distributed.py)
    threads: int | None = None         # torch intra-op threads per process
    quiet: bool | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.out)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        d = json.loads(text)
        for old, new in RENAMED_FIELDS.items():
            if old in d and new not in d:
                d[new] = d.pop(old)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def init_model_path(init: str | os.PathLike) -> Path:
    """`--init` accepts a run folder (its exported model.safetensors) or a model file."""
    p = Path(init)
    if p.is_dir():
        p = p / "model.safetensors"
        if not p.is_file():
            raise TrainError(f"{init}: run folder has no exported model.safetensors yet")
    elif not p.is_file():
        raise TrainError(f"--init {init}: no such run folder or model file")
    return p


def resolve(cfg: TrainConfig, model_preset: str | None = None) -> TrainConfig:
    """Fill every None with the preset's default and check what must hold (stage name, crop alignment)."""
    if cfg.stage not in STAGES:
        raise TrainError(f"unknown stage '{cfg.stage}' (choose from {', '.join(STAGES)})")
    preset = cfg.preset or model_preset or "small"
    if model_preset and cfg.preset and model_preset not in (cfg.preset, "custom"):
        raise TrainError(f"--preset {cfg.preset} does not match the --init model's preset '{model_preset}'")
    d = PRESET_DEFAULTS.get(preset, PRESET_DEFAULTS["small"])
    g_lr, d_lr = d["learning_rate"][cfg.stage]
    cfg = with_field_defaults(cfg)
    budget_plan = cfg.budget_plan or (cfg.time_limit_s is not None and cfg.steps is None)
    # a time-budget run plans its steps (and the GAN start) once its speed is measured (train/loop.py)
    steps = BUDGET_STEPS if budget_plan else cfg.steps if cfg.steps is not None else d["steps"][cfg.stage]
    adv_start = cfg.adv_start
    if adv_start is None and not budget_plan:
        adv_start = int(ADV_START_FRACTION[cfg.stage] * steps)
    out = replace(
        cfg, preset=preset, steps=steps,
        batch_size=cfg.batch_size or d["batch"][cfg.stage], crop=cfg.crop or d["crop"],
        learning_rate=cfg.learning_rate if cfg.learning_rate is not None else g_lr,
        d_lr=cfg.d_lr if cfg.d_lr is not None else d_lr,
        warmup=cfg.warmup if cfg.warmup is not None else d["warmup"],
        ema_decay=cfg.ema_decay if cfg.ema_decay is not None else d["ema_decay"],
        adv_start=adv_start, budget_plan=budget_plan,
        d_channels=cfg.d_channels or d["d_channels"],
        latent_weight=cfg.latent_weight if cfg.latent_weight is not None else d.get("latent_weight", 0.0),
        clean_lr=cfg.clean_lr if cfg.clean_lr is not None else d.get("clean_lr", 0.0),
        ae_warmup=cfg.ae_warmup if cfg.ae_warmup is not None else (
            d["ae_warmup"] if cfg.stage == "tokenizer" and not cfg.decoder_only else 0),
        sample_every=cfg.sample_every or d["sample_every"], ckpt_every=cfg.ckpt_every or d["ckpt_every"],
    )
    if out.steps < 1 or out.batch_size < 1 or out.accum < 1:
        raise TrainError("--steps, --batch-size and --accum must be positive")
    if cfg.decoder_only and cfg.stage != "tokenizer":
        raise TrainError("--decoder-only is a tokenizer-stage option (the decoder stage trains on predicted tokens)")
    if out.schedule not in ("constant", "cosine"):
        raise TrainError(f"--schedule must be constant or cosine, got '{out.schedule}'")
    return out


def check_crop(crop: int, patch: int, groups: int) -> None:
    """The crop must hold whole tokens, a whole LR token grid, and an (N-1)-level DWT (Eq. 5)."""
    need = max(patch, 2 ** (groups - 1), 8)
    if crop % need or crop < need:
        raise TrainError(f"--crop {crop}: must be a positive multiple of {need} for this model "
                         f"(patch {patch}, {groups} groups)")


def with_field_defaults(cfg: TrainConfig) -> TrainConfig:
    """Every preset-independent field left at None ("not given") set to its FIELD_DEFAULTS value."""
    return replace(cfg, **{k: v for k, v in FIELD_DEFAULTS.items() if getattr(cfg, k) is None})


def merge_for_resume(saved: TrainConfig, given: TrainConfig) -> TrainConfig:
    """The saved run config, with the few fields a resumed run may change taken from the command line.

    None in `given` means "not given"; any other value was asked for, even one equal to a default (e.g.
    `--log-every 10` on a run saved with 5 is applied, `--seed 0` on a seed-3 run is refused)."""
    changes = {}
    saved = with_field_defaults(saved)  # a config.json from before a field existed
    for f in fields(TrainConfig):
        new, old = getattr(given, f.name), getattr(saved, f.name)
        if new is None or new == old or f.name in ("out", "stage", "init", "resume", "budget_plan"):
            continue
        if f.name not in RESUME_OVERRIDABLE:
            raise TrainError(f"--resume cannot change {f.name} (the run used {old!r}); start a new --out instead")
        changes[f.name] = new
    # the folder being resumed is where the run lives now, even if it was moved since config.json was written
    return replace(saved, resume=True, out=given.out, **changes)
