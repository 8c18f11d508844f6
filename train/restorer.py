"""Train the faithful restorer (models/restorer.py): online crops of a photo folder, a mixed clean / mildly
degraded LR (train/degrade.py PhotoDegradation), L1, Adam at a constant rate, an EMA of the weights.
With `teacher` (a train/teacher.py cache) the target is the teacher's x4 image of the clean LR instead of (or
mixed with) the photo: the texture restorer, fine-tuned from the faithful one so the two can be interpolated.

Built for long CPU runs that continue across sessions: the run folder holds `checkpoint.pt` (weights, EMA,
optimizer, step, minutes) written every `save_every` minutes and on SIGINT / SIGTERM, so a stopped run resumes
where it was; `snapshots/` keeps the EMA weights at each save, named by training minutes, for a learning curve
(bench/curve.py), and `snapshots/live/` the weights being trained (a short fine-tune's EMA lags ~1000 steps).
`--init` starts from a continuation file (trained parameters only, see `save_weights`).
bf16 autocast (fp32 master weights) where the CPU has bf16 instructions: measured 1.8x the fp32 step rate on an
AVX512-BF16 EPYC (MODEL_CARD.md)."""
from __future__ import annotations

import csv
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel

from hitok.device import resolve_device
from hitok.models.errors import one_line
from hitok.models.io import ModelFileError, read_metadata
from hitok.models.restorer import Restorer, RestorerConfig, retuned_noise, with_noise_inputs
from hitok.models.rrdbnet import first_conv

from .config import TrainError
from .data import CropStream, make_loader
from .degrade import PhotoDegradation
from .ema import warmup_ema_fn
from .losses.flat_detail import flat_detail_loss
from .losses.subpixel import phase_moments_loss, phase_tile_loss
from .losses.texture_stats import DetailFeatures, sliced_texture_loss
from .restorer_gan import GAN_TERMS, GanSettings, RestorerGan, pool_for_pixel_loss


@dataclass
class RestorerTraining:
    data: str
    out: str
    model: RestorerConfig = field(default_factory=RestorerConfig)
    degradation: PhotoDegradation = field(default_factory=PhotoDegradation)
    batch_size: int = 16
    lr_crop: int = 48              # LR pixels per crop side (HR crop: 4x)
    learning_rate: float = 4e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    minutes: float = 60.0          # wall-clock budget of this invocation (a resumed run adds to its total)
    save_every: float = 10.0       # minutes between checkpoints and EMA snapshots
    threads: int = 1
    device: str = "cpu"            # cpu, cuda[:N], auto (hitok.device.resolve_device)
    workers: int = 0               # data-loading processes (0: crops made in the training process)
    bf16: bool = True
    init: str | None = None        # continuation file: start from its weights (and its EMA when it has one)
    teacher: str | None = None     # train/teacher.py cache folder: learn the teacher's output (distillation)
    teacher_weight: float = 1.0    # with a teacher: loss = (1 - w) L1(photo) + w L1(teacher's image)
    texture_weight: float = 0.0    # with a teacher: + this x L1 between the local detail energies (texture_energy)
    gan: GanSettings | None = None  # the adversarial fine-tune (train/restorer_gan.py): a texture restorer
    stats_weight: float = 0.0      # + this x the patch-wise texture statistics loss (train/losses/texture_stats.py)
                                   # to the photo's statistics, or with a teacher to the teacher image's
    phase_weight: float = 0.0      # + this x the sub-pixel phase loss (train/losses/subpixel.py phase_moments_loss)
    phase_tile_weight: float = 0.0  # + this x its tile-by-tile form (phase_tile_loss: patterns on flat tiles)
    flat_weight: float = 0.0       # + this x the detail drawn where the photo is flat (train/losses/flat_detail.py)
    flat_degraded_only: bool = False  # the flat loss counts only crops whose LR took the degraded branch
    stats_model: list[str] | None = None  # its features' weights: Real-ESRGAN x4plus's ncnn (.param, .bin) files,
                                          # or [its first conv's .safetensors] (models/rrdbnet.py save_first_conv)
    grain: int = 0                 # with init: add a noise-fed grain branch of this many maps (models/restorer.py)
    grain_only: bool = False       # train the grain branch alone (its maps' rows of up2, its conv and scales)
    body_noise: bool = False       # with init: add noise at the body's input (models/restorer.py)
    noise_scale: float = 0.05      # its scales' start (at 0 the noise would stay off: a saddle)
    noise_gate: bool = False       # with body_noise: gated by the picture (models/restorer.py)
    noise_mask: float | None = None  # body noise masked where the LR is flat at this many grey levels (0: no
                                     # mask; None: the init's; models/restorer.py)
    seed: int = 0


def save_weights(path: Path, model: Restorer, ema: AveragedModel | None, meta: dict[str, str]) -> None:
    """Trained parameters only (the continuation-file format): `model.*` and `ema.*`, config in the metadata."""
    state = {f"model.{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        state |= {f"ema.{k}": v.detach().float().cpu().contiguous() for k, v in ema.module.state_dict().items()}
    save_file(state, str(path), metadata={"restorer": json.dumps(asdict(model.config)), **meta})


def load_weights(path: str | Path) -> tuple[RestorerConfig, dict, dict, dict[str, str]]:
    """A continuation file -> (config, model state, EMA state (may be empty), metadata)."""
    try:
        meta = read_metadata(path)
        if "restorer" not in meta:
            raise ModelFileError(f"{path}: not a restorer weights file (no 'restorer' config in its metadata)")
        cfg = RestorerConfig(**json.loads(meta["restorer"]))
        state = load_file(str(path))
    except (ValueError, TypeError, OSError) as e:
        raise ModelFileError(f"{path}: not a readable restorer weights file ({one_line(e)})") from None
    model = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    _check_gate(model or ema, cfg, path)
    return cfg, model, ema, meta


def _check_gate(state: dict, cfg: RestorerConfig, where: str | Path) -> None:
    """Refuse by name a noise gate of the head output alone (before it also read the LR's flatness)."""
    gate = state.get("noise_gate.weight")
    if gate is not None and gate.shape[1] != cfg.width + 1:
        raise ModelFileError(f"{where}: its noise gate reads the head output only (made before the gate read the "
                             "LR's flatness, 2026-12-05): not loadable by this version")


def average_live_snapshots(run: str | Path, out: str | Path, from_minutes: float = 0.0) -> int:
    """Write the equal-weight average (stochastic weight averaging, torch's AveragedModel) of a run's live
    snapshots saved at `from_minutes` or later to `out` (a weights file `hitok train attach --texture-from`
    takes); returns how many were averaged. A texture run's live weights swing between more and less pattern
    from save to save; their mean keeps none (MODEL_CARD.md, "Noise inputs")."""
    files = sorted((Path(run) / "snapshots" / "live").glob("*.safetensors"))
    loaded = [w for w in map(load_weights, files) if float(w[3].get("minutes", 0)) >= from_minutes]
    if not loaded:
        raise ModelFileError(f"{run}: no live snapshots at {from_minutes:g} min or later")
    net = Restorer(loaded[0][0])
    average = AveragedModel(net, use_buffers=False)
    for _, state, _, _ in loaded:
        net.load_state_dict(state)
        average.update_parameters(net)
    save_weights(Path(out), average.module, None, loaded[-1][3] | {"averaged_snapshots": str(len(loaded))})
    return len(loaded)


def _run_model_config(out: Path, fallback: RestorerConfig) -> dict:
    """The network config a run folder's config.json recorded (checkpoints before 2026-12-05 lack their own)."""
    try:
        return json.loads((out / "config.json").read_text())["model"]
    except (OSError, ValueError, KeyError):
        return asdict(fallback)


def _noise_state(model_cfg: RestorerConfig, state: dict, cfg: RestorerTraining) -> dict:
    net = Restorer(model_cfg)
    net.load_state_dict(state)
    return with_noise_inputs(net, cfg.grain, cfg.body_noise, cfg.noise_scale, cfg.seed,
                             cfg.body_noise and cfg.noise_gate).state_dict()  # the mask has no weights


def _train_grain_only(model: Restorer) -> None:
    """Fix every weight but the grain branch's: its conv and scales, and the rows of up2 that make its maps (the
    first 3 x 4 rows, the colour channels' sub-pixels, get no gradient)."""
    if not model.config.grain:
        raise ValueError("grain_only needs a restorer with a grain branch (grain > 0)")
    model.requires_grad_(False)
    for p in (model.grain_out.weight, model.grain_out.bias, model.grain_scale, model.up2.weight, model.up2.bias):
        p.requires_grad_(True)
    for p in (model.up2.weight, model.up2.bias):
        p.register_hook(lambda g: torch.cat([torch.zeros_like(g[:12]), g[12:]]))


def texture_energy(x: torch.Tensor, pool: int = 8) -> torch.Tensor:
    """How much fine detail each `pool` x `pool` region holds: the mean |x - blur(x)| (3x3 binomial blur), per
    channel. Two textures with the same energy match here whatever their phase: a loss on it asks for texture of
    the teacher's strength where a pixel loss, unable to predict where each blade of grass goes, asks for none."""
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    k = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    detail = x - F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])
    return F.avg_pool2d(detail.abs(), pool)


def restorer_loss(pred: torch.Tensor, batch: dict[str, torch.Tensor], teacher_weight: float = 0.0,
                  texture_weight: float = 0.0) -> torch.Tensor:
    """(1 - w) L1(pred, photo) + w L1(pred, teacher's image) [+ t L1 of their texture_energy]. The teacher gives
    one deterministic target per LR where the photo is one of many, so its texture is not averaged away."""
    w = teacher_weight
    loss = (pred - batch["hr"]).abs().mean() if w < 1 else pred.new_zeros(())
    if w > 0:
        loss = (1 - w) * loss + w * (pred - batch["teacher"]).abs().mean()
    if texture_weight > 0:
        loss = loss + texture_weight * (texture_energy(pred) - texture_energy(batch["teacher"])).abs().mean()
    return loss


class _StopFlag:
    """SIGINT / SIGTERM end the run after the current step, with a checkpoint."""

    def __init__(self):
        self.stop = False
        self._old = {s: signal.signal(s, self._set) for s in (signal.SIGINT, signal.SIGTERM)}

    def _set(self, *_):
        self.stop = True

    def restore(self):
        for s, h in self._old.items():
            signal.signal(s, h)


def train_restorer(cfg: RestorerTraining, log=print) -> Path:
    """Run (or resume) the training in cfg.out; returns the path of the last EMA snapshot."""
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None
    model_cfg = cfg.model
    init_state = init_ema = None
    if ck is not None:  # the network the run was started with (from --init), not cfg.model
        model_cfg = RestorerConfig(**ck.get("model_config") or _run_model_config(out, cfg.model))
    elif (cfg.grain or cfg.body_noise) and not cfg.init:
        raise ValueError("noise inputs (grain, body_noise) are added to a trained restorer: give init")
    elif cfg.init:
        model_cfg, init_state, init_ema, meta = load_weights(cfg.init)
        log(f"init from {cfg.init} ({meta.get('steps', '?')} steps, {meta.get('minutes', '?')} min before)")
        if (cfg.grain or cfg.body_noise) and not (model_cfg.grain or model_cfg.body_noise):
            # the same outputs, plus noise inputs to train
            init_state, init_ema = (_noise_state(model_cfg, s, cfg) if s else s for s in (init_state, init_ema))
            model_cfg = RestorerConfig(**asdict(model_cfg) | {"grain": cfg.grain, "body_noise": cfg.body_noise,
                                                              "noise_gate": cfg.body_noise and cfg.noise_gate})
        if cfg.noise_mask is not None:  # weightless: also onto an init with body noise already (a texture restorer)
            if cfg.noise_mask and not model_cfg.body_noise:
                raise TrainError(f"--noise-mask masks body noise: add --body-noise (the init {cfg.init} has none)")
            model_cfg = replace(model_cfg, noise_mask=cfg.noise_mask)
    if ck is not None and cfg.noise_mask is not None and cfg.noise_mask != model_cfg.noise_mask:
        log(f"warning: resuming keeps the run's noise mask ({model_cfg.noise_mask:g}), not {cfg.noise_mask:g}")
    (out / "snapshots" / "live").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = Restorer(model_cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(device)
    freeze = cfg.gan is not None and cfg.gan.freeze_upsampler
    if freeze and init_ema:  # the frozen convs are the faithful restorer's as shipped (its EMA), live and averaged
        model.load_state_dict({k: v for k, v in init_ema.items() if k.startswith(("up1.", "up2."))}, strict=False)
    ema = AveragedModel(model, multi_avg_fn=warmup_ema_fn(cfg.ema_decay), use_buffers=False)
    if init_ema:
        ema.module.load_state_dict(init_ema)
        ema.n_averaged.fill_(10_000)  # a continued average: no warm-up again
    if freeze:
        model.up1.requires_grad_(False)
        model.up2.requires_grad_(False)
    if cfg.grain_only:
        _train_grain_only(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                           betas=(0.9, 0.99))
    gan = RestorerGan(cfg.gan, device) if cfg.gan is not None else None
    step, minutes = 0, 0.0
    if ck is not None:
        _check_gate(ck["model"], model_cfg, ckpt_path)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        if (gan is not None) != ("gan" in ck):
            raise ModelFileError(f"{ckpt_path}: a run {'with' if 'gan' in ck else 'without'} a GAN must be "
                                 f"resumed {'with' if 'gan' in ck else 'without'} one (--adv-weight)")
        trained_then, trained_now = len(ck["opt"]["param_groups"][0]["params"]), len(opt.param_groups[0]["params"])
        if trained_then != trained_now:  # --grain-only and --freeze-upsampler fix some of the net's tensors
            raise ModelFileError(f"{ckpt_path}: the run trained {trained_then} weight tensors, this one would train "
                                 f"{trained_now}: resume it with the --grain-only / --freeze-upsampler it was "
                                 "started with")
        opt.load_state_dict(ck["opt"])
        if gan is not None:
            gan.load_state_dict(ck["gan"])
        step, minutes = ck["step"], ck["minutes"]
        log(f"resumed {out} at step {step}, {minutes:.1f} min")
    terms_logged = ((list(GAN_TERMS) if gan is not None else []) + (["stats"] if cfg.stats_weight > 0 else [])
                    + (["phase"] if cfg.phase_weight > 0 else [])
                    + (["phase_tile"] if cfg.phase_tile_weight > 0 else [])
                    + (["flat"] if cfg.flat_weight > 0 else []))
    header = ["step", "minutes", "l1", "sec_per_step"] + terms_logged
    if (out / "metrics.csv").exists():  # before config.json is rewritten: a refused resume leaves the run as it was
        with open(out / "metrics.csv", newline="") as f:
            logged = next(csv.reader(f), header)
        if logged != header:
            raise ModelFileError(f"{out}: its run logged {logged[4:] or 'no extra loss terms'}; resume it with the "
                                 f"same terms on (now {terms_logged or 'none'})")
    (out / "config.json").write_text(json.dumps(asdict(cfg) | {"model": asdict(model_cfg)}, indent=1))
    model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    log(f"restorer {asdict(model_cfg)}: {params / 1e6:.2f} M params; batch {cfg.batch_size} x {cfg.lr_crop}px LR; "
        f"bf16 {cfg.bf16}; {device}, threads {cfg.threads}, data workers {cfg.workers}")
    if gan is not None:
        d_params = sum(p.numel() for p in gan.disc.parameters())
        log(f"GAN {asdict(cfg.gan)}: U-Net discriminator {d_params / 1e6:.2f} M params")

    stream = CropStream(cfg.data, cfg.lr_crop * 4, cfg.batch_size, seed=cfg.seed, start_step=step,
                        with_low_res=True, degrade_cfg=cfg.degradation, teacher_cache=cfg.teacher)
    stats = None
    if cfg.stats_weight > 0:
        if not cfg.stats_model:
            raise ValueError("stats_weight > 0 needs stats_model (Real-ESRGAN x4plus's .param and .bin files)")
        stats = DetailFeatures(first_conv(cfg.stats_model)).to(device)
        stats_gen = torch.Generator().manual_seed(cfg.seed + step)
    w = cfg.teacher_weight if cfg.teacher else 0.0
    texture_w = cfg.texture_weight if cfg.teacher else 0.0
    pool = cfg.gan.pixel_pool if gan is not None else 1
    metrics = open(out / "metrics.csv", "a", newline="")
    writer = csv.writer(metrics)
    if metrics.tell() == 0:
        writer.writerow(header)

    def save(tag: str) -> Path:
        meta = {"steps": str(step), "minutes": f"{minutes:.2f}"}
        state = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                 "minutes": minutes, "model_config": asdict(model_cfg)}
        torch.save(state | ({"gan": gan.state_dict()} if gan else {}), out / "checkpoint.tmp")
        (out / "checkpoint.tmp").replace(ckpt_path)
        snap = out / "snapshots" / f"{tag}.safetensors"
        save_weights(snap, ema.module, None, meta)
        save_weights(out / "snapshots" / "live" / snap.name, model, None, meta)
        save_weights(out / "continuation.safetensors", model, ema, meta)
        metrics.flush()
        log(f"saved {snap.name} (step {step}, {minutes:.1f} min)")
        return snap

    stop = _StopFlag()
    start, last_save = time.perf_counter(), minutes
    base_minutes = minutes
    running, count, t_log = 0.0, 0, time.perf_counter()
    term_sums: dict[str, float] = {}  # the extra loss terms (GAN, statistics, phase), logged as running means
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)  # noqa: E731
    batches = iter(make_loader(stream, cfg.workers, pin_memory=device.type == "cuda")) if cfg.workers > 0 else None
    snap = None
    try:
        model.train()
        while True:
            minutes = base_minutes + (time.perf_counter() - start) / 60
            if stop.stop or minutes - base_minutes >= cfg.minutes:
                break
            if batches is None:
                batch = stream.batch(step)
            else:
                made_for, batch = next(batches)
                if made_for != step:  # the loader's order is the steps' (CropStream); anything else is a bug
                    raise RuntimeError(f"the data loader made step {made_for}'s crops for step {step}")
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            degraded = batch.pop("degraded", None)  # with PhotoDegradation (cfg.degradation), always
            low_res = batch["low_res"].contiguous(memory_format=torch.channels_last)
            warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            for g in opt.param_groups:
                g["lr"] = cfg.learning_rate * warm
            with autocast():
                pred = model(low_res)
            pred = pred.float()
            images = pool_for_pixel_loss({"pred": pred} | {k: v for k, v in batch.items() if k != "low_res"}, pool)
            loss = restorer_loss(images.pop("pred"), images, w, texture_w)
            pixel = loss.item()
            if stats is not None:
                target = batch["teacher" if cfg.teacher else "hr"]
                term = sliced_texture_loss(pred, target, stats, generator=stats_gen)
                loss = loss + cfg.stats_weight * term
                term_sums["stats"] = term_sums.get("stats", 0.0) + term.item()
            if cfg.phase_weight > 0:
                term = phase_moments_loss(pred, batch["hr"])
                loss = loss + cfg.phase_weight * term
                term_sums["phase"] = term_sums.get("phase", 0.0) + term.item()
            if cfg.phase_tile_weight > 0:
                term = phase_tile_loss(pred, batch["hr"])
                loss = loss + cfg.phase_tile_weight * term
                term_sums["phase_tile"] = term_sums.get("phase_tile", 0.0) + term.item()
            if cfg.flat_weight > 0:
                term = flat_detail_loss(pred, batch["hr"], on=degraded if cfg.flat_degraded_only else None)
                loss = loss + cfg.flat_weight * term
                term_sums["flat"] = term_sums.get("flat", 0.0) + term.item()
            if gan is not None:
                with torch.no_grad(), autocast():
                    ema_pred = ema.module(low_res).float()
                extra, terms = gan.generator_terms(pred, ema_pred, batch["hr"], autocast)
                loss = loss + extra
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"loss is {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update_parameters(model)
            if gan is not None:
                terms |= gan.discriminator_step(autocast)
                for k in GAN_TERMS:
                    term_sums[k] = term_sums.get(k, 0.0) + terms[k]
            step += 1
            running += pixel
            count += 1
            if step % 50 == 0:
                sec = (time.perf_counter() - t_log) / count
                means = {k: term_sums[k] / count for k in terms_logged}
                writer.writerow([step, f"{minutes:.2f}", f"{running / count:.5f}", f"{sec:.3f}"]
                                + [f"{v:.5f}" for v in means.values()])
                extra_log = "".join(f"  {k} {v:.4f}" for k, v in means.items())
                log(f"step {step}  {minutes:.1f} min  L1 {running / count:.4f}{extra_log}  {sec:.2f} s/step")
                running, count, t_log = 0.0, 0, time.perf_counter()
                term_sums.clear()
            if minutes - last_save >= cfg.save_every:
                snap = save(f"min{minutes:07.1f}")
                last_save = minutes
        snap = save(f"min{minutes:07.1f}")
    finally:
        stop.restore()
        metrics.close()
    return snap


def _restorer_from(weights: str | Path, use_ema: bool) -> tuple[Restorer, dict[str, str]]:
    rcfg, state, ema_state, meta = load_weights(weights)
    restorer = Restorer(rcfg)
    restorer.load_state_dict(ema_state if (use_ema and ema_state) else state)
    return restorer, meta


def attach_restorer(base: str | Path, weights: str | Path, out: str | Path, fidelity: float = 1.0,
                    half: bool = True, use_ema: bool = True, texture_weights: str | Path | None = None,
                    texture: float = 0.0, noise_mask: float | None = None, noise_gain: float = 1.0) -> None:
    """Write a model file: `base`'s tokens, generator and token-only decoder + the restorer in `weights` (an
    EMA snapshot or a continuation file; its EMA when it has one and use_ema) as the faithful end, and, with
    `texture_weights`, the texture restorer trained from it (`texture`: the file's default --texture; its body
    noise masked at `noise_mask` grey levels, None: as trained, and scaled by `noise_gain`:
    models/restorer.py `retuned_noise`)."""
    from hitok.models.io import load_model_file, save_model
    from hitok.models.sr_model import with_restorer, with_texture

    model = load_model_file(base)
    restorer, meta = _restorer_from(weights, use_ema)
    try:
        combined = with_restorer(model, restorer, fidelity)
    except ValueError as e:
        raise ModelFileError(f"{weights}: {e}") from None
    provenance = {"restorer_steps": meta.get("steps", "?"), "restorer_minutes": meta.get("minutes", "?")}
    if texture_weights is not None:
        textured, tmeta = _restorer_from(texture_weights, use_ema)
        try:
            if noise_mask is not None or noise_gain != 1.0:
                textured = retuned_noise(textured, noise_mask, noise_gain)
            combined = with_texture(combined, textured, texture)
        except ValueError as e:
            raise ModelFileError(f"{texture_weights}: {e}") from None
        provenance |= {"texture_steps": tmeta.get("steps", "?"), "texture_minutes": tmeta.get("minutes", "?")}
        if noise_gain != 1.0:
            provenance["texture_noise_gain"] = f"{noise_gain:g}"
    save_model(combined, out, metadata=provenance, half=half)
