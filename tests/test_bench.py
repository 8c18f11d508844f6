"""hitok.bench.speed / gpu_bench smoke runs, and the windowed-model tiling they measure.

The benchmarks run as subprocesses, as a user runs them; speed.py forks its measurement children from a
process that has run no kernel yet, which a pytest process cannot promise."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from hitok import tiling
from hitok.imageio import Picture
from hitok.models.restorer import Restorer, RestorerConfig, with_noise_inputs
from hitok.models.sr_model import with_restorer, with_texture
from hitok.upscaler import Upscaler
from hitok.models import HiTok, presets, save_model

torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared 2-core machine


def run_module(*args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def speed_report(tmp_path_factory):
    """One smoke run of speed.py on the tiny preset, its model with a (noise-fed) texture restorer: (markdown
    path, its completed process)."""
    tmp = tmp_path_factory.mktemp("speed")
    torch.manual_seed(0)
    model = tmp / "default.safetensors"
    restorer = Restorer(RestorerConfig(width=8, blocks=2, up_width=4))
    faithful = with_restorer(HiTok(presets.tiny()), restorer)
    save_model(with_texture(faithful, with_noise_inputs(restorer, body_noise=True, noise_scale=0.1)), model)
    out = tmp / "docs" / "benchmarks.md"
    res = run_module("hitok.bench.speed", "--presets", "tiny", "--model", str(model), "--sizes", "0.01,0.04",
                     "--repeat", "1", "--tile-sweep", "16,32", "--skip", "realesrgan", "--isolate", "fork",
                     "--threads", "1", "--lr-size", "32", "--out", str(out))
    return out, res


@pytest.mark.slow
def test_speed_smoke_writes_markdown_and_json(speed_report):
    out, res = speed_report
    assert res.returncode == 0, res.stderr[-2000:]
    md = out.read_text()
    for heading in ("## CPU: presets", "against bicubic", "## CPU: scaling", "## CPU: time per LR pixel",
                    "## GPU (to run when a session has one)"):
        assert heading in md
    assert "--sizes 0.01,0.04" in md and "torch " + torch.__version__ in md  # exact command, torch version
    assert "python3 -m hitok.bench.gpu_bench --out" in md and "No GPU results yet" in md
    report = json.loads(out.with_suffix(".json").read_text())
    tiny, default = report["presets"]
    assert tiny["name"] == "tiny" and default["name"].startswith("default")
    faithful = Restorer(RestorerConfig(width=8, blocks=2, up_width=4))
    restorers = sum(p.numel() for r in (faithful, with_noise_inputs(faithful, body_noise=True)) for p in r.parameters())
    assert default["params"] == tiny["params"] + restorers  # the fixture's file: the tiny preset + its two restorers
    assert 0 < tiny["seconds"] < 5 and tiny["peak_rss_mib"] > 50
    rows = report["compare"]["rows"]
    assert rows["hitok (tile auto, fp32)"]["tiles"] == 1 and rows["bicubic (Pillow)"]["seconds"] > 0
    assert rows["hitok --texture 0.7 (tile auto, fp32)"]["seconds"] > 0  # the detail setting, beside the default
    assert all("error" not in r for r in rows.values())
    sizes = report["scaling"]["rows"]
    assert [r["lr_hw"] for r in sizes] == [[25, 25], [50, 50]] and all(r["seconds"] > 0 for r in sizes)
    assert [r["side"] for r in report["sweep"]["rows"]] == [16, 32]


@pytest.mark.slow
def test_gpu_bench_smoke_on_cpu(tmp_path, speed_report):
    res = run_module("hitok.bench.gpu_bench", "--device", "cpu", "--smoke", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert set(result) >= {"meta", "table2", "inference", "train"}
    assert set(result["table2"]) == {"seconds", "memory_gib", "gmac", "params_m"}
    assert result["meta"]["torch"] == torch.__version__ and result["meta"]["smoke"] is True
    inf = result["inference"]
    modes = ("bf16", "fp16", "bf16-bf16", "fp16-fp16")
    assert {(r["mode"], r["batch"]) for r in inf} == {(m, b) for m in modes for b in (1, 2)}
    for r in inf:
        assert "error" not in r, r
        assert r["latency_s_median"] > 0 and r["per_image_s"] == pytest.approx(r["latency_s_median"] / r["batch"])
    assert [r["stage"] for r in result["train"]] == ["tokenizer", "generator", "decoder"]
    for r in result["train"]:
        assert "error" not in r, r
        assert r["samples_per_s"] > 0
        # backward costs at most twice the forward (less where frozen parts need no weight gradients)
        assert r["fwd_tflop"] < r["tflop_fwd_bwd"] <= 1.05 * r["tflop_3x_fwd"]
    assert "| tokenizer |" in (tmp_path / "gpu_bench.md").read_text()
    # docs/benchmarks.md picks the GPU results up without measuring the CPU again
    from hitok.bench import speed

    md = speed_report[0]
    gpu = json.loads((tmp_path / "gpu_bench.json").read_text())
    gpu["table2"]["seconds"] = 0.5  # the paper row is rendered from the JSON (images/s derived), not typed in
    md.with_name("benchmarks_gpu.json").write_text(json.dumps(gpu))
    assert speed.main(["--rerender", "--out", str(md)]) == 0
    text = md.read_text()
    assert "No GPU results yet" not in text and "| decoder |" in text
    assert "| paper Table 2 (RTX 4090) | - | 1 | 0.5 | 0.5 | 2.0 |" in text
    assert "## CPU: scaling" in text  # the CPU tables survive the re-render


def test_windowed_small_preset_takes_128px_in_one_tile():
    up = Upscaler(HiTok(presets.small(), with_encoder=False), torch.device("cpu"), torch.float32)
    assert up.window == 8 and up.grid == 16  # 8 generator tokens of 2x2 LR pixels
    assert up.pick_tile((128, 128)) == 128  # was 64 (9 tiles of 64 with overlap 16)
    assert up.model.receptive_field() == 75 and up.default_overlap == 16  # the reach exceeds 16: no reduction
    glob = Upscaler(HiTok(presets.tiny(), with_encoder=False), torch.device("cpu"), torch.float32)
    assert glob.grid == glob.model.lr_align == 2 and glob.model.receptive_field() is None
    assert glob.pick_tile((4000, 4000)) <= tiling.AUTO_MAX_TOKENS["cpu"] * 2  # global attention keeps its cap


def test_window_aligned_tiles_agree_with_the_whole_image(windowed_tiny):
    """Beyond the receptive field from its edges, a tile on the window grid computes exactly what one
    whole-image pass does; one token off the grid, the windows differ and so does the output."""
    model = windowed_tiny
    rf, grid = model.receptive_field(), model.tile_align
    assert (rf, grid) == (24, 4)
    lr = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    inner = slice(4 * rf, 4 * (80 - rf))
    with torch.inference_mode():
        whole = model.upscale(lr)
        for off, same in ((16, True), (18, False)):
            tile = model.upscale(lr[..., off:off + 80, off:off + 80])[..., inner, inner]
            ref = whole[..., 4 * off:4 * (off + 80), 4 * off:4 * (off + 80)][..., inner, inner]
            assert torch.allclose(tile, ref, atol=1e-5) == same


def test_auto_tiles_sit_on_the_window_grid_and_are_balanced(windowed_tiny):
    up = Upscaler(windowed_tiny, torch.device("cpu"), torch.float32)
    pic = Picture(pixels=(np.random.default_rng(0).random((90, 70, 3)) * 255).astype(np.uint8))
    tiling.AUTO_MAX_TOKENS_WINDOWED["cpu"], old = 20, tiling.AUTO_MAX_TOKENS_WINDOWED["cpu"]  # 40 px tiles
    try:
        out, plan = up.upscale_picture(pic)
    finally:
        tiling.AUTO_MAX_TOKENS_WINDOWED["cpu"] = old
    assert out.pixels.shape == (360, 280, 3)
    assert all(p % 4 == 0 for p in plan.ys + plan.xs) and plan.tile_h % 4 == 0 and plan.tile_w % 4 == 0
    assert plan.tile_h < 40 and plan.ys[-1] + plan.tile_h == 92  # evened out under the 40 px ceiling
    # n=256 under a 192 px ceiling: two 136 px tiles (1.13x the pixels) instead of two 192s (2.25x)
    even, full = tiling.plan_tiles(256, 256, 192, 16, 8, balance=True), tiling.plan_tiles(256, 256, 192, 16, 8)
    assert (even.tile_h, even.ys, full.tile_h, full.ys) == (136, (0, 120), 192, (0, 64))


def test_engines_benchmark_rows_and_report(tiny_model_path, tmp_path, capsys):
    from hitok.bench import engines

    out = tmp_path / "engines.json"
    assert engines.main(["--model", str(tiny_model_path), "--lr-size", "16", "--rounds", "1", "--engines",
                         "eager,int8", "--json", str(out), "--profile"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["hitok fp32, eager torch", "hitok, int8 dynamic Linear"]
    assert rows["hitok fp32, eager torch"]["psnr_vs_eager_db"] == 200.0  # itself
    assert 20 < rows["hitok, int8 dynamic Linear"]["psnr_vs_eager_db"] <= 200.0
    assert all(r["best_cpu_s"] > 0 and len(r["wall_s"]) == 1 for r in rows.values())
    printed = capsys.readouterr().out
    assert "| hitok, int8 dynamic Linear |" in printed and "Self CPU" in printed  # the table, the profile
