"""Whole-process speed: `hitok upscale` against Real-ESRGAN x4plus (ncnn, CPU) on one photo, each a fresh
process (interpreter start, imports, model load, read, upscale, write), alternated round by round so both see
the same machine; medians and their ratio.

    python -m hitok.bench.whole_process photo.png [--rounds 5] [--threads 2] [--model M] [--precision fp32]

Real-ESRGAN's process is this module with --realesrgan-once (hitok.bench.realesrgan, the same threads)."""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _realesrgan_once(src: str, dst: str, threads: int) -> None:
    import numpy as np
    from PIL import Image

    from .realesrgan import RealESRGAN, find_model_files

    param, bin_ = find_model_files(None)
    net = RealESRGAN(param, bin_, threads=threads)
    Image.fromarray(net(np.asarray(Image.open(src).convert("RGB")))).save(dst)


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def compare(photo: Path, rounds: int = 5, threads: int = 2, model: str | None = None,
            precision: str = "fp32") -> dict:
    hitok = shutil.which("hitok") or str(Path(sys.executable).with_name("hitok"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    times: dict[str, list[float]] = {"hitok": [], "Real-ESRGAN": []}
    with tempfile.TemporaryDirectory() as tmp:
        h_cmd = [hitok, "upscale", str(photo), "-o", f"{tmp}/h.png", "--overwrite", "--precision", precision]
        if model:
            h_cmd += ["--model", model]
        r_cmd = [sys.executable, "-m", "hitok.bench.whole_process", "--realesrgan-once", str(photo), f"{tmp}/r.png",
                 "--threads", str(threads)]
        for _ in range(rounds):
            times["hitok"].append(_timed(h_cmd, env))
            times["Real-ESRGAN"].append(_timed(r_cmd, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"photo": str(photo), "threads": threads, "precision": precision, "rounds": rounds, "seconds": times,
            "median": med, "ratio": med["Real-ESRGAN"] / med["hitok"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photo")
    ap.add_argument("dst", nargs="?")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--realesrgan-once", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.realesrgan_once:
        _realesrgan_once(args.photo, args.dst, args.threads)
        return
    r = compare(Path(args.photo), args.rounds, args.threads, args.model, args.precision)
    for k, v in r["seconds"].items():
        print(f"{k:12s} median {r['median'][k]:6.2f} s  rounds {', '.join(f'{s:.2f}' for s in v)}")
    print(f"Real-ESRGAN / hitok (whole process, {r['threads']} threads, {r['precision']}): {r['ratio']:.2f}x")


if __name__ == "__main__":
    main()
