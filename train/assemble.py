"""Setting up one stage's run: check the options against the run folder, build or load the model (stage
hand-off: tokenizer run -> generator run -> decoder run through `--init`), the stage, LPIPS, the
discriminator and the two AdamW optimizers (Table 6: G and D learning rates per stage)."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from hitok.device import device_type, resolve_device
from hitok.errors import UserError, one_line
from hitok.imageio import list_images
from hitok.models import HiTok, HiTokConfig, ModelFileError, load_model_file, presets, read_metadata
from hitok.models.sr_model import add_guide
from hitok.models.io import config_from_dict

from . import distributed as ddp
from . import schedule
from .checkpoint import atomic_write_text, find_checkpoint
from .config import TrainConfig, TrainError, check_crop, init_model_path, merge_for_resume, resolve
from .losses.discriminator import Discriminator, DiscriminatorConfig
from .losses.lpips import try_lpips
from .stages import DecoderStage, GeneratorStage, LossWeights, TokenizerStage, Stage, default_weights

log = logging.getLogger("hitok.train")


@dataclass
class Setup:
    device: torch.device
    model: HiTok
    stage: Stage               # TokenizerStage | GeneratorStage | DecoderStage
    weights: LossWeights
    opt: torch.optim.Optimizer
    disc: nn.Module
    d_opt: torch.optim.Optimizer
    lpips_desc: str
    vfm_desc: str


def _file_config(path: Path) -> HiTokConfig:
    try:
        return config_from_dict(json.loads(read_metadata(path)["config"]))
    except (KeyError, ValueError) as e:
        raise ModelFileError(f"{path}: not a hitok model file ({e})") from None


def model_config(cfg: TrainConfig) -> HiTokConfig:
    """The architecture of the run: the checkpoint's, the --init model's, or the preset's."""
    ckpt = find_checkpoint(Path(cfg.out)) if cfg.resume else None
    if ckpt is not None:
        return _file_config(ckpt / "model.safetensors")
    if cfg.init:
        return _file_config(init_model_path(cfg.init))
    if cfg.preset not in presets.PRESETS:
        raise TrainError(f"unknown preset '{cfg.preset}' (choose from {', '.join(presets.PRESETS)})")
    hcfg = presets.PRESETS[cfg.preset]()
    return replace(hcfg, vfm=None) if cfg.no_vfm else hcfg


def default_workers(device_type: str, world: int) -> int:
    cpus = os.cpu_count() or 1
    if device_type == "cuda":  # the degradation runs on the CPU; feed the GPU from most cores
        return max(1, min(12, cpus // max(1, world) - 1))
    return 1 if cpus >= 4 else 0  # on a small CPU, workers compete with the training threads


def prepare(cfg: TrainConfig) -> TrainConfig:
    """Resolve the options (from the saved run on --resume) and check them; raises TrainError."""
    run_dir = Path(cfg.out)
    if cfg.resume:
        path = run_dir / "config.json"
        if not path.is_file():
            raise TrainError(f"--resume: {run_dir} holds no run to resume (no config.json)")
        saved = TrainConfig.from_json(path.read_text())
        if saved.stage != cfg.stage:
            raise TrainError(f"--resume: {run_dir} is a {saved.stage} run, not a {cfg.stage} run")
        cfg = merge_for_resume(saved, cfg)
    else:
        if (run_dir / "config.json").exists() or find_checkpoint(run_dir) is not None:
            raise TrainError(f"{run_dir} already holds a run: add --resume to continue it, or choose a new --out")
        if cfg.stage != "tokenizer" and not cfg.init:
            raise TrainError(f"the {cfg.stage} stage starts from the previous stage's run: "
                             f"give --init RUN_DIR (or a model .safetensors)")
        init_preset = None
        if cfg.init:
            path = init_model_path(cfg.init)
            cfg = replace(cfg, init=str(path))
            init_preset = _file_config(path).name
            if cfg.no_vfm:
                log.warning("--no-vfm is ignored with --init: the model's architecture comes from its file")
        cfg = resolve(cfg, init_preset)
    hcfg = model_config(cfg)
    check_crop(cfg.crop, hcfg.tokenizer.patch, hcfg.tokenizer.groups)
    try:
        list_images(cfg.data, recursive=True)
    except UserError as e:
        raise TrainError(str(e)) from None
    if cfg.workers is None:
        cfg = replace(cfg, workers=default_workers(device_type(cfg.device), max(cfg.nproc, 1)))
    return cfg


def training_device(spec: str, env: ddp.DistEnv) -> torch.device:
    """The library's choice (hitok.device.resolve_device: auto is CUDA, then MPS, then the CPU), with one GPU per
    process: ``auto`` or ``cuda`` on CUDA is this process's local rank."""
    try:
        device = resolve_device(spec)
    except UserError as exc:
        raise TrainError(str(exc)) from None
    if device.type == "cuda" and spec.strip().lower() in ("auto", "cuda"):
        return torch.device("cuda", env.local_rank)
    return device


def _make_stage(cfg: TrainConfig, model: HiTok, weights: LossWeights, lpips):
    if cfg.stage == "tokenizer":
        try:
            return TokenizerStage(model, weights, lpips, masking=cfg.masking, ae_warmup=cfg.ae_warmup,
                                  decoder_only=cfg.decoder_only)
        except ValueError as e:
            raise TrainError(f"--decoder-only: {e}") from None
    if cfg.stage == "generator":
        try:
            return GeneratorStage(model, weights, lpips)
        except ValueError as e:
            raise TrainError(f"--init {cfg.init}: {e}") from None
    try:
        return DecoderStage(model, weights, lpips, topk=cfg.topk, masking=cfg.masking, guide_only=cfg.guide_only)
    except ValueError as e:
        raise TrainError(f"--guide-only: {e}") from None


def build(cfg: TrainConfig, env: ddp.DistEnv) -> Setup:
    device = training_device(cfg.device, env)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif env.enabled and device.type == "cpu":  # CPU processes would otherwise each take every core
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // env.world))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ckpt = find_checkpoint(Path(cfg.out)) if cfg.resume else None
    if ckpt is not None:
        model = load_model_file(ckpt / "model.safetensors")
    elif cfg.init:
        model = load_model_file(cfg.init)
        if cfg.stage == "decoder" and cfg.guide_width > 0 and not model.guided:
            torch.manual_seed(cfg.seed)
            model = add_guide(model, cfg.guide_width, cfg.guide_blocks)
    else:
        torch.manual_seed(cfg.seed)
        try:
            model = HiTok(model_config(cfg))
        except Exception as e:  # a VFM whose pretrained weights are not on this machine
            raise TrainError(f"cannot build the {cfg.preset} model: {one_line(e)} "
                             f"(--no-vfm trains without the VFM)") from None
    lpips, lpips_desc = try_lpips()
    if lpips is None:
        lpips_desc = f"unavailable ({lpips_desc})"
        if env.is_main:
            log.warning(f"LPIPS: {lpips_desc} — training without the perceptual term")
    else:
        lpips = lpips.to(device)
    vfm = model.generator.vfm
    vfm_desc = "none" if vfm is None else f"{vfm.config.name} ({vfm.weights_source})"
    weights = default_weights(cfg.stage)
    if cfg.adv_weight is not None:
        weights.adv = cfg.adv_weight
    if cfg.latent_weight is not None:
        weights.latent = cfg.latent_weight
    torch.manual_seed(cfg.seed + 1)  # the REPA projector's init
    model.train()
    stage = _make_stage(cfg, model, weights, lpips)
    return assemble(cfg, env, device, stage, lpips_desc, vfm_desc)


def assemble(cfg: TrainConfig, env: ddp.DistEnv, device: torch.device, stage: Stage, lpips_desc: str,
             vfm_desc: str) -> Setup:
    """Around a built stage: the model on `device`, the two AdamW optimizers (Table 6 rates), the discriminator,
    and the run folder's config.json. `build` calls it for the three stages; experiments that build their own
    model or stage (bench/ablate_tokenizer.py) call it through loop.train_stage."""
    stage.model.to(device)
    stage.to(device)  # modules outside the model (the REPA projector)
    fused = {"fused": True} if device.type == "cuda" else {}
    betas = (cfg.beta1, cfg.beta2)
    opt = torch.optim.AdamW(stage.param_groups(cfg.learning_rate), lr=cfg.learning_rate, betas=betas,
                            weight_decay=cfg.weight_decay, **fused)
    schedule.set_peaks(opt)
    torch.manual_seed(cfg.seed + 2)
    disc = Discriminator(DiscriminatorConfig(base_channels=cfg.d_channels)).to(device).train()
    d_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.d_lr, betas=betas, weight_decay=cfg.weight_decay, **fused)
    ddp.barrier(env)  # every rank has read the run folder before rank 0 writes into it
    if env.is_main:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(cfg.out) / "config.json", cfg.to_json())
    return Setup(device, stage.model, stage, stage.loss_weights, opt, disc, d_opt, lpips_desc, vfm_desc)


def provenance(cfg: TrainConfig, s: Setup, step: int) -> dict[str, str]:
    """Metadata of the exported model, added to what the --init model already carried (earlier stages)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return {"preset": cfg.preset, "trained_by": "hitok train", "last_stage": cfg.stage,
            f"steps_{cfg.stage}": str(step), "data": Path(cfg.data).name,
            f"batch_{cfg.stage}": str(cfg.batch_size * cfg.accum * world), f"crop_{cfg.stage}": str(cfg.crop),
            f"lpips_{cfg.stage}": s.lpips_desc, "vfm": s.vfm_desc}
