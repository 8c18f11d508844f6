"""The fp32 CPU tile engines side by side (hitok/accel.py): eager torch (the Upscaler's tile path), int8 dynamic
Linear layers (``HITOK_ENGINE=int8``), ONNX Runtime (``HITOK_ENGINE=onnx``, when installed), and Real-ESRGAN x4plus
(ncnn) as the reference, on one LR image.

    python -m hitok.bench.engines [--model M] [--lr-size 128] [--rounds 4] [--threads 1]
        [--engines eager,int8,onnx,realesrgan] [--realesrgan-dir DIR] [--cache DIR] [--profile] [--json OUT]

On a shared machine the rows run interleaved (round-robin, best of ``--rounds``) so that all see the same load,
and each is timed as wall time and as process CPU time (``time.process_time``, robust to being descheduled). Each
hitok row's output is compared with eager torch's (PSNR, dB). ONNX Runtime's first call exports the graph into
``--cache`` (a fresh temporary folder by default), timed on its own. ``--profile`` prints the torch profiler's
table of one eager tile. docs/benchmarks.md, "CPU fp32 engines", holds a run of these rows. Quality against
ground truth is ``hitok eval`` with ``HITOK_ENGINE`` set: the Upscaler takes its engine from the environment.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ENGINES = ("eager", "int8", "onnx", "realesrgan")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-20))


def _rows(upscaler, model_id: str, lr: torch.Tensor, image: np.ndarray, engines: list[str], args,
          info: dict) -> dict[str, Callable[[], object]]:
    """name -> a call that upscales the image once."""
    from hitok import accel

    settings = (upscaler.detail, upscaler.color_fix, upscaler.fidelity)
    rows: dict[str, Callable[[], object]] = {}
    if "eager" in engines:
        rows["hitok fp32, eager torch"] = lambda: upscaler.tile_fn(lr)
    if "int8" in engines:
        int8 = accel.Int8LinearEngine(upscaler.model)
        rows["hitok, int8 dynamic Linear"] = lambda: int8(lr, *settings)
    if "onnx" in engines and accel.available():
        cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="hitok-engines-"))
        ort = accel.OrtEngine(upscaler.model, model_id, threads=args.threads, export_after=1, root=cache)
        start = time.perf_counter()
        with torch.inference_mode():
            ort(lr, *settings)
        info["onnx_first_call_s"] = round(time.perf_counter() - start, 2)
        info["onnx_exported"] = list(ort.exported)
        rows["hitok, ONNX Runtime (CPU EP)"] = lambda: ort(lr, *settings)
    elif "onnx" in engines:
        info["onnx"] = "skipped: onnxruntime/onnxscript not installed (pip install hitok[onnx])"
    if "realesrgan" in engines:
        from .realesrgan import RealESRGAN, find_model_files

        try:
            net = RealESRGAN(*find_model_files(args.realesrgan_dir), tile=args.lr_size, threads=args.threads)
        except (FileNotFoundError, ImportError) as exc:
            info["realesrgan"] = f"skipped: {exc}"
        else:
            rows["Real-ESRGAN x4plus (ncnn)"] = lambda: net(image)
    return rows


def run(args: argparse.Namespace) -> dict:
    from hitok import model_store
    from hitok.upscaler import Upscaler

    from .speed import test_image

    torch.set_num_threads(args.threads)
    loaded = model_store.load(args.model)
    upscaler = Upscaler(loaded.model, "cpu", "fp32", model_id=loaded.id)
    upscaler.engine = None  # the eager row is eager whatever HITOK_ENGINE says
    image = test_image(args.lr_size, args.lr_size)
    lr = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]  # (1, 3, h, w)
    info: dict = {"model": str(loaded.path), "lr_size": args.lr_size, "threads": args.threads, "rounds": args.rounds}
    rows = _rows(upscaler, loaded.id, lr, image, [e.strip() for e in args.engines.split(",")], args, info)
    wall: dict[str, list[float]] = {k: [] for k in rows}
    cpu: dict[str, list[float]] = {k: [] for k in rows}
    outputs = {}
    with torch.inference_mode():
        for name, call in rows.items():  # warm-up, and the output to compare
            outputs[name] = call()
        for _ in range(args.rounds):
            for name, call in rows.items():
                t, c = time.perf_counter(), time.process_time()
                call()
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    eager = outputs.get("hitok fp32, eager torch")
    result = {"info": info, "rows": {}}
    for name in rows:
        row = {"best_wall_s": min(wall[name]), "best_cpu_s": min(cpu[name]), "wall_s": wall[name], "cpu_s": cpu[name]}
        if eager is not None and torch.is_tensor(outputs[name]):
            row["psnr_vs_eager_db"] = round(_psnr(outputs[name], eager), 1)
        result["rows"][name] = row
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            upscaler.tile_fn(lr)
        result["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    return result


def render(result: dict) -> str:
    ref = result["rows"].get("Real-ESRGAN x4plus (ncnn)")
    lines = [f"{result['info']['lr_size']}x{result['info']['lr_size']} LR, {result['info']['threads']} thread(s), "
             f"best of {result['info']['rounds']} interleaved rounds", "",
             "| engine | best wall s | best CPU s | Real-ESRGAN / this (CPU) | PSNR vs eager (dB) |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in result["rows"].items():
        ratio = f"{ref['best_cpu_s'] / r['best_cpu_s']:.2f}" if ref else "-"
        lines.append(f"| {name} | {r['best_wall_s']:.2f} | {r['best_cpu_s']:.2f} | {ratio} | "
                     f"{r.get('psnr_vs_eager_db', '-')} |")
    notes = {k: v for k, v in result["info"].items() if k.startswith(("onnx", "realesrgan"))}
    return "\n".join(lines + [f"{k}: {v}" for k, v in notes.items()])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hitok.bench.engines", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model name or .safetensors path (default: the shipped model)")
    p.add_argument("--lr-size", type=int, default=128, help="side of the LR test image (one tile)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime / ncnn threads, the same for all")
    p.add_argument("--engines", default="eager,int8,onnx,realesrgan", help=f"comma list of {', '.join(ENGINES)}")
    p.add_argument("--realesrgan-dir", default=None, help="folder with realesrgan-x4plus.param/.bin")
    p.add_argument("--cache", default=None, help="ONNX graph cache folder (default: a fresh temporary one)")
    p.add_argument("--profile", action="store_true", help="also print the profiler table of one eager tile")
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    unknown = {e.strip() for e in args.engines.split(",")} - set(ENGINES)
    if unknown:
        p.error(f"unknown engine(s) {sorted(unknown)}: use {', '.join(ENGINES)}")
    result = run(args)
    print(render(result))
    if args.profile:
        print(result["profile"])
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in result.items() if k != "profile"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
