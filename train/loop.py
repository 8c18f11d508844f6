"""The training loop of one HiTokSR stage (Sec. 3.1-3.3, Table 6). It only orchestrates; the parts live beside it:

  train/stages.py    the method's math: a stage module, forward(batch, rng, step) -> StageLosses
  train/gan.py       the adversarial term and the discriminator's step
  train/schedule.py  warm-up, then constant or cosine learning rates
  train/codebook.py  k-means init / dead-code restart bookkeeping (replicas, EMA, AdamW moments)
  train/ema.py       the EMA of the trained parameters, what the exported model carries
  train/distributed.py  DistributedDataParallel and the process group
  train/budget.py    step planning of time-budget runs;  train/stop.py  Ctrl-C / SIGTERM
  train/monitor.py   progress bar, metrics.csv, samples;  train/checkpoint.py  atomic, resumable checkpoints

Per optimizer step: learning rates, `accum` micro-batches through the (DDP-wrapped) stage plus the adversarial
term once step >= adv_start, clipping, AdamW; then the discriminator's step on the same fakes; then the stage's
non-gradient updates and the EMA. bf16 autocast and TF32 on CUDA, fp32 on the CPU.

Reproducibility: batches are a pure function of (seed, step, rank) (train/data.py) and every random draw of a
step comes from `step_rng(seed, stage, step, micro-step, rank)`, so `--resume` from a checkpoint continues
bit-for-bit on the CPU."""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hitok.device import device_type
from hitok.models import save_model
from hitok.psnr import psnr

from . import distributed as ddp
from . import schedule
from .assemble import Setup, assemble, build, prepare, provenance, training_device
from .budget import plan_total
from .checkpoint import atomic_write_text, find_checkpoint, read_state, rng_state, set_rng_state, write_checkpoint
from .codebook import CodebookKeeper
from .config import ADV_START_FRACTION, STAGES, TrainConfig
from .data import CropStream, make_loader
from .degrade import DegradationConfig
from .ema import EMA
from .gan import Adversarial
from .monitor import Averager, Bar, MetricsCSV, TensorBoard, dead_groups, save_sample, usage_report
from .stages import Stage
from .stop import StopFlag

log = logging.getLogger("hitok.train")
lr_factor = schedule.lr_factor  # re-exported: tests and older callers import it from here


@dataclass
class RunResult:
    run_dir: Path
    stage: str
    step: int
    total_steps: int
    interrupted: bool
    seconds: float
    it_per_s: float
    samples_per_s: float
    terms: dict[str, float] = field(default_factory=dict)
    replica_spread: float = 0.0


def step_rng(seed: int, stage: str, step: int, micro: int, rank: int, device: torch.device) -> torch.Generator:
    """The one source of randomness of a (micro-)step; on the model's device so every sampler can use it."""
    s = np.random.SeedSequence([seed, STAGES.index(stage), step, micro, rank]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(s) & (2 ** 63 - 1))


def _model_prefixes(model: torch.nn.Module, trained: dict[str, torch.nn.Module]) -> dict[str, str]:
    """name -> its model.state_dict() prefix, for the trained modules that are part of the model."""
    where = {id(m): n for n, m in model.named_modules()}
    return {k: where[id(m)] + "." for k, m in trained.items() if id(m) in where}


class Trainer:
    def __init__(self, cfg: TrainConfig, env: ddp.DistEnv, s: Setup):
        self.cfg, self.env, self.s = cfg, env, s
        self.run_dir = Path(cfg.out)
        self.device = s.device
        self.step, self.total = 0, cfg.steps
        self.adv_start = cfg.adv_start
        self.planned = not cfg.budget_plan
        self.elapsed_before = 0.0
        self.g_params = [p for g in s.opt.param_groups for p in g["params"]]
        trained = s.stage.trained()
        prefixes = _model_prefixes(s.model, trained)
        self.ema = EMA({k: m for k, m in trained.items() if k in prefixes}, prefixes, cfg.ema_decay)
        self.extra = {k: m for k, m in trained.items() if k not in prefixes}  # e.g. the REPA projector
        self.gan = Adversarial(s.disc, s.d_opt, s.weights.adv, s.weights.adv_kind, env, cfg.grad_clip)
        self.codebook = CodebookKeeper(s.stage, s.opt, self.ema, env) if cfg.stage == "tokenizer" else None
        self.wrapped: torch.nn.Module = s.stage  # DistributedDataParallel(stage) once the run starts

    def autocast(self):
        """bf16 autocast on CUDA (TF32 for what stays fp32, set in assemble.py); plain fp32 elsewhere."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ---- state -----------------------------------------------------------------------------------------------
    def resume_from(self, ckpt: Path) -> None:
        state, disc, ema_t, ema_n = read_state(ckpt, self.device)
        self.s.opt.load_state_dict(state["opt"])
        for k, m in self.extra.items():
            m.load_state_dict(state["extra"][k])
        self.s.disc.load_state_dict(disc["model"])
        self.s.d_opt.load_state_dict(disc["opt"])
        self.ema.load_state_tensors(ema_t, ema_n)
        self.step, self.elapsed_before = int(state["step"]), float(state.get("elapsed", 0.0))
        set_rng_state(state.get("rng", {}), self.device)

    def save(self) -> None:
        if not self.env.is_main:
            return
        s = self.s
        state = {"step": self.step, "total_steps": self.total, "opt": s.opt.state_dict(),
                 "extra": {k: m.state_dict() for k, m in self.extra.items()}, "rng": rng_state(self.device),
                 "elapsed": self.elapsed_before + (time.time() - self.t_start)}
        disc = {"model": s.disc.state_dict(), "opt": s.d_opt.state_dict()}
        meta = {"checkpoint_stage": self.cfg.stage, "checkpoint_step": str(self.step)}
        write_checkpoint(self.run_dir, lambda p: save_model(s.model, p, metadata=meta),
                         self.ema.state_tensors(), self.ema.updates, state, disc)
        with self.ema.swapped_in():
            save_model(s.model, self.run_dir / "model.safetensors", metadata=provenance(self.cfg, s, self.step))

    # ---- one step --------------------------------------------------------------------------------------------
    def _set_lrs(self, gan: bool) -> None:
        c = self.cfg
        schedule.apply(self.s.opt, schedule.lr_factor(self.step, c.warmup, self.total, c.schedule, c.min_lr_ratio))
        if gan:
            fd = schedule.lr_factor(self.step - self.adv_start, c.warmup, self.total - self.adv_start, c.schedule,
                                    c.min_lr_ratio)
            for g in self.s.d_opt.param_groups:
                g["lr"] = c.d_lr * fd

    def train_step(self, it) -> tuple[dict, dict, object]:
        c, s = self.cfg, self.s
        gan = self.adv_start is not None and self.step >= self.adv_start and self.gan.weight > 0
        self._set_lrs(gan)
        if self.codebook is not None:
            self.codebook.before_step()
        s.opt.zero_grad(set_to_none=True)
        avg = Averager()
        for micro in range(c.accum):
            data_step, batch = next(it)
            assert data_step == self.step * c.accum + micro, (data_step, self.step, micro)
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            rng = step_rng(c.seed, c.stage, self.step, micro, self.env.rank, self.device)
            with ddp.no_sync(self.wrapped, sync=micro == c.accum - 1):  # gradients all-reduced on the last
                with self.autocast():
                    out = self.wrapped(batch, rng, self.step)
                    loss, terms = out.total, dict(out.terms)
                    if gan:
                        adv = self.gan.generator_term(out.fake, out.photo)
                        loss = loss + self.gan.weight * adv
                        terms["adv"] = adv.item()
                (loss / c.accum).backward()
            terms.update(loss=loss.item(), psnr=psnr(out.fake, out.photo))
            avg.add(terms)
        extra = {}
        if c.grad_clip > 0:
            extra["gnorm"] = float(torch.nn.utils.clip_grad_norm_(self.g_params, c.grad_clip))
        s.opt.step()
        if gan:
            avg.add(self.gan.discriminator_step(self.autocast))
        if self.codebook is not None:
            extra.update(self.codebook.after_step(self.step, rng))
        else:
            extra.update(s.stage.after_step(self.step, rng))
        self.ema.update()
        return {**avg.flush(), **extra}, batch, out

    # ---- the loop ----------------------------------------------------------------------------------------------
    def _plan_from_budget(self, elapsed: float, rate_start: tuple[int, float] | None) -> None:
        c = self.cfg
        if self.planned or rate_start is None:
            return
        total = plan_total(self.step, elapsed, c.time_limit_s, rate_start)
        if total is None:
            return
        self.total = int(ddp.agree_max([float(total)], self.env, self.device)[0])  # ranks measure their own speed
        self.adv_start = max(self.step, int(ADV_START_FRACTION[c.stage] * self.total)) \
            if c.adv_start is None else c.adv_start
        self.planned = True
        self.cfg.steps, self.cfg.adv_start, self.cfg.budget_plan = self.total, self.adv_start, False
        if self.env.is_main:
            atomic_write_text(self.run_dir / "config.json", self.cfg.to_json())
            log.info(f"{c.stage}: planned {self.total} steps within the time limit (GAN from step {self.adv_start})")

    def run(self, on_step=None) -> RunResult:
        c, s, env = self.cfg, self.s, self.env
        self.t_start = time.time()
        ckpt = find_checkpoint(self.run_dir) if c.resume else None
        if ckpt is not None:
            self.resume_from(ckpt)
            if env.is_main:
                log.info(f"resumed {c.stage} run at step {self.step} from {ckpt}")
        self.wrapped = ddp.wrap(s.stage, env, s.stage.find_unused_parameters)  # replicas made equal (rank 0's) here
        self.gan.wrap()
        stream = CropStream(c.data, c.crop, c.batch_size, seed=c.seed + 1000 * STAGES.index(c.stage),
                            start_step=self.step * c.accum, with_low_res=c.stage != "tokenizer", rank=env.rank,
                            degrade_cfg=DegradationConfig(clean_prob=c.clean_lr))
        loader = make_loader(stream, c.workers)
        main = env.is_main
        csv = MetricsCSV(self.run_dir / "metrics.csv", resume_step=self.step) if main else None
        tb = TensorBoard(self.run_dir / "tb") if main else None
        bar = Bar(self.total, self.step, c.stage, enabled=main and not c.quiet)
        avg, first = Averager(), self.step
        rate_start, t_first, last_ckpt, interrupted = None, None, self.step, False
        last_terms: dict = {}
        it = iter(loader)
        try:
            with StopFlag() as stop:
                while self.step < self.total:
                    terms, batch, out = self.train_step(it)
                    self.step += 1
                    now = time.time()
                    if t_first is None:  # the first step carries one-off costs (worker start-up, allocations)
                        t_first = now
                        rate_start = (self.step, now - self.t_start)
                    avg.add(terms)
                    last_terms = terms
                    bar.update(terms)
                    if on_step is not None:
                        on_step(self.step, terms)
                    # every rank takes the same branch: any rank's stop request, the slowest rank's clock
                    stop_flag, elapsed = ddp.agree_max([float(stop.requested), time.time() - self.t_start],
                                                       env, self.device)
                    if c.time_limit_s:
                        self._plan_from_budget(elapsed, rate_start)
                        bar.set_total(self.total)
                    if main and (self.step % c.log_every == 0 or self.step == self.total):
                        self._log(csv, tb, bar, avg.flush(), batch)
                    if main and (self.step % c.sample_every == 0 or self.step == self.total):
                        self._sample(batch, out)
                    timed_out = c.time_limit_s is not None and elapsed >= c.time_limit_s
                    if timed_out and not self.planned:  # the budget ran out before the speed was measured
                        self.total = self.cfg.steps = self.step
                    if stop_flag or timed_out:
                        interrupted = bool(stop_flag)
                        if main and interrupted:
                            bar.write(f"stopping at step {self.step} (interrupted)")
                        break
                    if self.step % c.ckpt_every == 0:
                        self.save()
                        last_ckpt = self.step
                        ddp.barrier(env)
            if self.step != last_ckpt or not (self.run_dir / "model.safetensors").exists():
                self.save()
            ddp.barrier(env)
        finally:
            bar.close()
            if tb is not None:
                tb.close()
            del it, loader
        spread = ddp.replica_spread(self.g_params, env, self.device)
        if main and spread > 1e-3:
            log.warning(f"replicas differ after training (checksum spread {spread:.3g})")
        seconds = time.time() - self.t_start
        steps_timed = self.step - first - 1
        ips = steps_timed / (time.time() - t_first) if t_first and steps_timed > 0 else 0.0
        world_batch = c.batch_size * c.accum * env.world
        return RunResult(self.run_dir, c.stage, self.step, self.total, interrupted, seconds, ips,
                         ips * world_batch, last_terms, spread)

    def _log(self, csv, tb, bar, terms: dict, batch: dict) -> None:
        s = self.s
        report = usage_report(self.cfg.stage, s.model, batch, getattr(s.stage, "restart_threshold", 0.03))
        row = {"step": self.step, "time": round(time.time() - self.t_start + self.elapsed_before, 1),
               "learning_rate": s.opt.param_groups[0]["lr"], **terms, **report}
        csv.append(row)
        tb.add(self.step, row)
        # what a batch really uses: the tokenizer's own codes, or the generator's top-1 predictions
        used = {k: v for k, v in terms.items() if k.startswith("usage")} if self.cfg.stage == "tokenizer" else report
        dead = dead_groups(used, s.model.config.tokenizer.codebook_size)
        shown = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("step", "time") and
                         not k.startswith(("usage", "live", "pred_usage", "restarted")))
        usage = " ".join(f"{v:.0%}" for v in used.values())
        bar.write(f"[{self.cfg.stage} {self.step}/{self.total}] {shown} | codes used per group: {usage}")
        if dead and self.cfg.stage == "tokenizer":
            bar.write(f"warning: dead codebook in group(s) {dead}: batches use at most 1% of their codes")
        elif dead:
            bar.write(f"warning: the generator predicts at most 1% of the codes of group(s) {dead} (collapse)")

    def _sample(self, batch: dict, out) -> None:
        inp = batch["hr"] if self.cfg.stage == "tokenizer" else batch["low_res"]
        save_sample(self.run_dir / "samples" / f"{self.cfg.stage}_{self.step:07d}.png", [inp, out.fake, out.photo])


def _run_here(cfg: TrainConfig, on_step=None) -> RunResult:
    env = ddp.init_from_env(device_type(cfg.device))
    s = None
    try:
        s = build(cfg, env)
        return Trainer(cfg, env, s).run(on_step)
    except BaseException as e:
        traceback.clear_frames(e.__traceback__)  # the failed run's frames hold the trainer and its DDP wrappers
        raise
    finally:
        # The DDP wrappers hold the process group: free them first, or the interpreter tears them down after the
        # group is gone and a gloo thread aborts the process at exit (seen 4 times in 12 two-process runs).
        del s
        gc.collect()
        ddp.shutdown(env)


def train_stage(cfg: TrainConfig, stage: Stage, description: str = "custom", on_step=None) -> RunResult:
    """Train a stage module built by the caller (its own model, loss weights or switches: experiments such as
    bench/ablate_tokenizer.py) with this loop, in this process. `cfg` must be resolved (config.resolve); its
    run folder must be new; LPIPS/VFM provenance reads `description`."""
    env = ddp.DistEnv()
    setup = assemble(cfg, env, training_device(cfg.device, env), stage, description, description)
    result = Trainer(cfg, env, setup).run(on_step)
    write_summary(result)
    return result


def _spawned_worker(cfg: TrainConfig) -> None:
    result = _run_here(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        write_summary(result)


def train(cfg: TrainConfig, on_step=None) -> RunResult:
    """Run (or resume) one stage; returns when done, interrupted or out of time. `--nproc N` spawns N local
    processes (rank 0's result is read back from summary.json)."""
    cfg = prepare(cfg)
    if cfg.nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        ddp.spawn(cfg.nproc, _spawned_worker, cfg)
        return read_summary(Path(cfg.out))
    result = _run_here(cfg, on_step)
    if int(os.environ.get("RANK", "0")) == 0:
        write_summary(result)
    return result


def write_summary(r: RunResult) -> None:
    d = {**asdict(r), "run_dir": str(r.run_dir)}
    atomic_write_text(Path(r.run_dir) / "summary.json", json.dumps(d, indent=1))


def read_summary(run_dir: Path) -> RunResult:
    d = json.loads((Path(run_dir) / "summary.json").read_text())
    d["run_dir"] = Path(d["run_dir"])
    return RunResult(**d)
