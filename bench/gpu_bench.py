"""GPU benchmark of the paper preset against HiTokSR's Table 2, plus one training step of each stage.

Table 2 of the paper (128x128 LR input, RTX 4090): HiTokSR 0.047 s, 1.88 GiB, 572 GMAC, 339M parameters.
Here, in one process (one device call):

* inference: ``model.upscale`` of a 128x128 LR batch (generator + VFM -> top-1 -> decoder) with random
  weights and VFM weights "none" (timing does not depend on the weights), batch 1 and batched, under bf16
  and fp16 autocast (fp32 weights) and with the weights cast to bf16; latency from CUDA events after a
  warm-up, peak memory from ``torch.cuda.max_memory_allocated``;
* training: one optimizer step (AdamW, grad clip 1) of each stage of train/stages.py under bf16 autocast:
  samples/s, and model FLOPs utilisation = FLOPs of a step / (step time x the chip's dense bf16 peak),
  with FLOPs counted by torch.utils.flop_counter both as 3 x forward (the usual convention) and as the
  forward + backward actually run (frozen parts need no weight gradients, so that one is lower).
  The GAN discriminator step and LPIPS (pretrained VGG weights) are left out: the stage's own step only.

Plain argparse/json, torch + timm only: it runs under the GPU machine's python3 (torch 2.11), where hitok is
not installed; docs/benchmarks.md gives the command that makes ``hitok.*`` importable there.
``--device cpu --smoke`` runs the whole script on the tiny preset in seconds (tests/test_bench.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shlex
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from hitok.models import HiTok, presets
from hitok.models.errors import one_line
from hitok.models.summary import summarize

# The paper's Table 2 row for HiTokSR (128x128 LR input, RTX 4090).
TABLE2 = {"seconds": 0.047, "memory_gib": 1.88, "gmac": 572, "params_m": 339}
H200_BF16_DENSE_TFLOPS = 989.0  # vendor datasheet, dense (no sparsity); KINDS.md measured ~790 on random data
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GIB = 1024**3


def build_config(preset: str):
    return presets.paper(vfm_weights="none") if preset == "paper" else getattr(presets, preset)()


def build_model(cfg, device: torch.device, with_encoder: bool, notes: list[str]) -> HiTok:
    """HiTok(cfg) initialised on the device (a 300M-parameter CPU init would take most of a minute). If the
    VFM cannot be built (a timm without DINOv3), say so and go on without it rather than lose the device call."""
    torch.manual_seed(0)
    try:
        with torch.device(device):
            return HiTok(cfg, with_encoder=with_encoder)
    except Exception as exc:  # noqa: BLE001
        if cfg.vfm is None:
            raise
        note = f"VFM {cfg.vfm.name} not built ({one_line(exc, with_type=True)}); ran without it"
        if note not in notes:
            notes.append(note)
            print(note, file=sys.stderr)
        with torch.device(device):
            return HiTok(dataclasses.replace(cfg, vfm=None), with_encoder=with_encoder)


class Timer:
    """Per-call wall time: CUDA events on a GPU (no host sync inside the timed region), perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def time(self, fn: Callable[[], object], warmup: int, iters: int) -> list[float]:
        for _ in range(warmup):
            fn()
        self.sync()
        if not self.cuda:
            out = []
            for _ in range(iters):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
            return out
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) / 1000 for s, e in zip(starts, ends)]

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / GIB if device.type == "cuda" else None


def _allocated_gib(device: torch.device) -> float | None:
    return torch.cuda.memory_allocated() / GIB if device.type == "cuda" else None


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def bench_inference(args, device: torch.device, timer: Timer, notes: list[str]) -> list[dict]:
    cfg = build_config(args.preset)
    rows = []
    model = build_model(cfg, device, with_encoder=False, notes=notes).eval()
    summary = summarize(model.config, args.lr_size)
    for mode in args.modes:
        dtype_name, weights = mode.split("-") if "-" in mode else (mode, "fp32")
        dtype = DTYPES[dtype_name]
        m = model.to(DTYPES[weights])
        for batch in args.batches:
            row = {"preset": args.preset, "mode": mode, "autocast": dtype_name, "weights": weights, "batch": batch,
                   "lr_size": args.lr_size, "params_m": summary["inference_params"] / 1e6,
                   "gmac_per_image": summary["total_macs"] / 1e9}
            try:
                x = torch.rand(batch, 3, args.lr_size, args.lr_size, device=device, dtype=DTYPES[weights])
                _reset_peak(device)
                row["weights_gib"] = _allocated_gib(device)

                def call() -> torch.Tensor:
                    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype,
                                                                enabled=dtype != torch.float32):
                        return m.upscale(x)

                times = timer.time(call, args.warmup, args.iters)
                row.update(latency_s_median=_median(times), latency_s_min=min(times),
                           per_image_s=_median(times) / batch, images_per_s=batch / _median(times),
                           peak_gib=_peak_gib(device))
            except Exception as exc:  # noqa: BLE001 - one failing row (e.g. out of memory) must not lose the rest
                row["error"] = one_line(exc, with_type=True)
                traceback.print_exc()
            print(json.dumps(row), flush=True)
            rows.append(row)
    model.to(torch.float32)
    del model
    _reset_peak(device)
    return rows


def _make_stage(name: str, model: HiTok):
    from hitok.train.stages import DecoderStage, GeneratorStage, TokenizerStage, default_weights

    if name == "tokenizer":
        return TokenizerStage(model, default_weights(name), lpips=None, restart_every=0)
    if name == "generator":
        return GeneratorStage(model, default_weights(name), lpips=None)
    return DecoderStage(model, default_weights(name), lpips=None)


def _count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def bench_train(args, device: torch.device, timer: Timer, notes: list[str]) -> list[dict]:
    cfg = build_config(args.preset)
    rows = []
    hr_size = args.lr_size * 4
    for name in args.stages:
        row = {"stage": name, "preset": args.preset, "batch": args.train_batch, "hr_size": hr_size,
               "autocast": "bf16" if device.type == "cuda" else "fp32"}
        try:
            model = build_model(cfg, device, with_encoder=True, notes=notes).train()
            stage = _make_stage(name, model).to(device)  # the REPA projector, built with the stage
            opt = torch.optim.AdamW(stage.param_groups(1e-4), fused=device.type == "cuda")
            params = [p for g in opt.param_groups for p in g["params"]]
            rng = torch.Generator(device=device).manual_seed(0)
            batch = {"hr": torch.rand(args.train_batch, 3, hr_size, hr_size, device=device),
                     "low_res": torch.rand(args.train_batch, 3, args.lr_size, args.lr_size, device=device)}
            autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
            step_no = [0]

            def forward():
                with autocast:
                    return stage(batch, rng, step_no[0]).total

            def train_step():
                opt.zero_grad(set_to_none=True)
                forward().backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                step_no[0] += 1

            train_step()  # first step: k-means codebook init (tokenizer), lazy optimizer state
            _reset_peak(device)
            times = timer.time(train_step, args.train_warmup, args.train_iters)
            row["peak_gib"] = _peak_gib(device)
            fwd = _count_flops(lambda: forward().detach())
            opt.zero_grad(set_to_none=True)
            both = _count_flops(lambda: forward().backward())
            opt.zero_grad(set_to_none=True)
            step_s = _median(times)
            row.update(step_s_median=step_s, step_s_min=min(times), samples_per_s=args.train_batch / step_s,
                       trainable_params_m=sum(p.numel() for p in params) / 1e6,
                       fwd_tflop=fwd / 1e12, tflop_3x_fwd=3 * fwd / 1e12, tflop_fwd_bwd=both / 1e12)
            if args.peak_tflops:
                row["mfu_3x_fwd"] = 3 * fwd / step_s / (args.peak_tflops * 1e12)
                row["mfu_fwd_bwd"] = both / step_s / (args.peak_tflops * 1e12)
            del model, stage, opt, params, batch
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory at this batch: keep the other stages
            row["error"] = one_line(exc, with_type=True)
            traceback.print_exc()
        _reset_peak(device)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _fmt(v, spec: str = ".3f", none: str = "-") -> str:
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def render_markdown(result: dict) -> str:
    """The GPU results as markdown tables (also used by hitok.bench.speed for docs/benchmarks.md)."""
    m = result["meta"]
    lines = [f"Run {m['date']} on {m['device_name']} (torch {m['torch']}, timm {m['timm']}, CUDA {m['cuda']}); "
             f"command: `{m['command']}`", ""]
    t2 = result["table2"]
    lines += ["| preset | mode | batch | s / call (median) | s / image | images/s | peak GiB | weights GiB "
              "| GMAC / image | params M |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
              f"| paper Table 2 (RTX 4090) | - | 1 | {t2['seconds']} | {t2['seconds']} | {1 / t2['seconds']:.1f} "
              f"| {t2['memory_gib']} | - | {t2['gmac']} | {t2['params_m']} |"]
    for r in result["inference"]:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['mode']} | {r['batch']} | error: {r['error']} | | | | | | |")
            continue
        lines.append(f"| {r['preset']} | {r['mode']} | {r['batch']} | {_fmt(r['latency_s_median'], '.4f')} "
                     f"| {_fmt(r['per_image_s'], '.4f')} | {_fmt(r['images_per_s'], '.1f')} | {_fmt(r['peak_gib'])} "
                     f"| {_fmt(r['weights_gib'])} | {r['gmac_per_image']:.4g} | {r['params_m']:.4g} |")
    lines += ["", "Mode: the autocast dtype, then `-bf16`/`-fp16` where the weights themselves are half "
              "(else fp32 weights)."]
    lines += [f"Note: {n}" for n in result.get("notes", [])]
    lines += ["", f"Training steps (peak {_fmt(m.get('peak_tflops'), '.0f')} TFLOP/s for MFU):", "",
              "| stage | batch (HR px) | s / step | samples/s | TFLOP / step (3x fwd) | TFLOP / step (fwd+bwd run) "
              "| MFU (3x fwd) | MFU (fwd+bwd) | peak GiB |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["train"]:
        if "error" in r:
            lines.append(f"| {r['stage']} | {r['batch']} ({r['hr_size']}) | error: {r['error']} | | | | | | |")
            continue
        lines.append(f"| {r['stage']} | {r['batch']} ({r['hr_size']}) | {_fmt(r['step_s_median'], '.4f')} "
                     f"| {_fmt(r['samples_per_s'], '.1f')} | {_fmt(r['tflop_3x_fwd'], '.4g')} "
                     f"| {_fmt(r['tflop_fwd_bwd'], '.4g')} | {_fmt(r.get('mfu_3x_fwd'), '.1%')} "
                     f"| {_fmt(r.get('mfu_fwd_bwd'), '.1%')} | {_fmt(r['peak_gib'])} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_bench.json and gpu_bench.md (e.g. $OUT)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="paper", choices=sorted(presets.PRESETS))
    p.add_argument("--lr-size", type=int, default=128)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--modes", default="bf16,fp16,bf16-bf16,fp16-fp16",
                   help="autocast dtype[-weights dtype], comma-separated")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--stages", default="tokenizer,generator,decoder")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-warmup", type=int, default=3)
    p.add_argument("--train-iters", type=int, default=10)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help=f"dense bf16 peak for MFU (default {H200_BF16_DENSE_TFLOPS:.0f} on CUDA, none on the CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; --smoke: 1)")
    p.add_argument("--smoke", action="store_true", help="tiny preset, tiny sizes, 1-2 iterations: a CPU check")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.lr_size, args.batches, args.warmup, args.iters = "tiny", 16, "1,2", 1, 2
        args.train_batch, args.train_warmup, args.train_iters = 2, 0, 1
        args.threads = args.threads or 1  # tiny tensors: a second thread only adds contention
    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.modes = [m for m in args.modes.split(",") if m]
    args.stages = [s for s in args.stages.split(",") if s]
    if args.peak_tflops is None and args.device.startswith("cuda"):
        args.peak_tflops = H200_BF16_DENSE_TFLOPS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("gpu_bench: CUDA is not available here; use --device cpu --smoke for a CPU check", file=sys.stderr)
            return 2
        torch.backends.cuda.matmul.allow_tf32 = True  # as the training loop does for what stays fp32
        torch.backends.cudnn.allow_tf32 = True
    import timm

    timer = Timer(device)
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python -m hitok.bench.gpu_bench " + shlex.join(sys.argv[1:] if argv is None else argv),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
            or platform.machine(),
            "torch": torch.__version__, "timm": timm.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "peak_tflops": args.peak_tflops, "smoke": args.smoke,
            "cpu_threads": torch.get_num_threads()}
    started = time.perf_counter()
    notes: list[str] = []
    result = {"meta": meta, "table2": TABLE2, "notes": notes, "inference": bench_inference(args, device, timer, notes),
              "train": bench_train(args, device, timer, notes)}
    meta["seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.json").write_text(json.dumps(result, indent=1))
    (out / "gpu_bench.md").write_text(render_markdown(result))
    print(render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
