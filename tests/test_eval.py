"""The x4 evaluation (bench/evaluate.py) and `hitok eval`, on generated images with a random tiny model.

Checks the table's rows and columns, finiteness, the n/a reasons (NIQE below two 96 px patches, LPIPS
without weights, DISTS always), the deterministic crops and LR tracks, the side-by-side PNGs (wrapping when
there are many rows), the CNN floor baseline, the fidelity rows of a guided model, and the command through a
Typer app that holds only it (the real app attaches it in app.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer
from PIL import Image
from typer.testing import CliRunner

from hitok.bench import evaluate as ev
from hitok.bench.haarpsi import haarpsi
from hitok.bench.metrics import psnr_y
from hitok.cli.eval_cmd import eval_command

torch.set_num_threads(1)
COLS = ("| PSNR-Y (dB) ↑ | SSIM-Y ↑ | HaarPSI ↑ | NIQE ↓ | periodic ↓ | blocky ↓ | flat noise ↓ | LPIPS ↓ | DISTS ↓ "
        "| s / image |")


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour gradients plus a few sharp edges and mild noise: something to upscale."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([0.5 + 0.3 * np.sin(x * rng.uniform(0.05, 0.15) + y * rng.uniform(0.05, 0.15) + c)
                    for c in range(3)], -1)
    img[h // 3 : h // 2, w // 4 : 3 * w // 4] *= 0.5  # a dark bar: edges
    img += rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture()
def hr_dir(tmp_path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    for i, name in enumerate(("a.png", "b.png")):
        Image.fromarray(_photo(96, 96, i)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(autouse=True)
def no_real_esrgan(monkeypatch):
    """Tests never find (or run) Real-ESRGAN, whatever this machine has installed."""
    from hitok.bench import realesrgan

    monkeypatch.delenv(realesrgan.ENV_DIR, raising=False)
    monkeypatch.setattr(realesrgan, "_package_models_dir", lambda: None)
    monkeypatch.delenv("HITOK_MODEL", raising=False)


def test_evaluate_table_values_and_panels(hr_dir, tiny_model_path, tmp_path):
    methods, notes = ev.build_methods([str(tiny_model_path)], realesrgan=False)
    assert [m.name for m in methods] == ["bicubic", "hitok"] and notes == []
    out = tmp_path / "out"
    res = ev.evaluate(hr_dir, methods, crop=64, out_dir=out)

    assert res.images == ["a.png", "b.png"]
    assert len(res.scores) == 2 * 2 * 2  # images x tracks x methods
    for track in ev.TRACKS:
        for m in res.methods:
            mean = res.mean(track, m)
            assert list(mean) == list(ev.METRICS)
            assert all(math.isfinite(mean[k]) for k in ("psnr_y", "ssim_y", "haarpsi", "seconds"))
            assert 0 < mean["ssim_y"] <= 1 and 0 < mean["haarpsi"] < 1 and mean["seconds"] >= 0
            assert mean["niqe"] is None and mean["dists"] is None  # 64 px < two NIQE patches
    # bicubic on the bicubic track of a smooth image beats a random model, and is reproducible here.
    bic = res.mean("bicubic", "bicubic")["psnr_y"]
    assert bic > 25 and bic > res.mean("bicubic", "hitok")["psnr_y"]
    hr = ev.centre_crop(np.asarray(Image.open(hr_dir / "a.png")), 64)
    again = psnr_y(ev.Bicubic()(ev.make_lr(hr, "bicubic", 0)), hr)
    assert again == pytest.approx(res.rows("bicubic", "bicubic")[0].psnr_y)
    assert res.rows("bicubic", "bicubic")[0].haarpsi == pytest.approx(
        haarpsi(hr, ev.Bicubic()(ev.make_lr(hr, "bicubic", 0)), shave=4))
    assert res.mean("bicubic", "bicubic")["haarpsi"] > res.mean("bicubic", "hitok")["haarpsi"]
    assert "two 96x96 patches" in res.unavailable["niqe"]
    assert res.unavailable["dists"] == ev.DISTS_NA
    assert res.unavailable.get("lpips") or all(s.lpips is not None and s.lpips >= 0 for s in res.scores)

    md = (out / "results.md").read_text()
    for track in ev.TRACKS:
        assert f"## Track: {track} (mean over 2 image(s))" in md
    lines = md.splitlines()
    assert lines.count("| method " + COLS) == 2 and lines.count("| image | method " + COLS) == 2
    def starting(prefix: str) -> int:
        return sum(ln.startswith(prefix) for ln in lines)

    assert starting("| bicubic | ") == 2 and starting("| hitok | ") == 2
    assert starting("| GT (HR crop) | — | — | — | n/a | — | — | — |") == 2
    assert starting("| a.png | hitok | ") == 2 and starting("| b.png | bicubic | ") == 2
    assert starting("| b.png | GT (HR crop) | — | — | — | n/a |") == 2
    assert all(ln.count("|") == len(ev.METRICS) + 2 for ln in lines if ln.startswith(("| bicubic", "| hitok")))
    assert "- DISTS n/a:" in md and "- NIQE n/a:" in md and "- HaarPSI: Reisenhofer" in md

    data = json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["methods"] == ["bicubic", "hitok"] and len(data["per_image"]) == 8
    assert data["mean"]["realistic"]["hitok"]["psnr_y"] == pytest.approx(res.mean("realistic", "hitok")["psnr_y"])
    assert data["per_image"][0]["haarpsi"] == pytest.approx(res.scores[0].haarpsi)
    assert "tile auto -> " in data["method_info"][1]

    pngs = sorted(p.name for p in (out / "panels").iterdir())
    assert pngs == ["a_bicubic.png", "a_realistic.png", "b_bicubic.png", "b_realistic.png"]
    panel = Image.open(out / "panels" / "a_realistic.png")
    # 4 panels (LR | bicubic | hitok | GT) of 64 px + gaps; overview and 2x detail rows, each labelled.
    assert panel.width == 4 * 128 + 3 * 4 and panel.height == (64 + 18) + 6 + (128 + 18)
    # The overview's last panel is GT at full size under its label (the detail box outlines its rim).
    gt = np.asarray(panel.convert("RGB"))[18 + 1 : 18 + 63, 3 * 68 + 1 : 3 * 68 + 63]
    assert np.array_equal(gt, hr[1:63, 1:63])


def test_niqe_scored_on_large_enough_crops(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    Image.fromarray(_photo(224, 240, 3)).save(folder / "big.png")
    res = ev.evaluate(folder, [ev.Bicubic()], crop=208, lpips=False)
    assert "niqe" not in res.unavailable
    for track in ev.TRACKS:
        assert math.isfinite(res.mean(track, "bicubic")["niqe"])
    assert math.isfinite(res.hr_niqe["big.png"])
    md = res.to_markdown()
    assert "| GT (HR crop) | — | — | — | n/a |" not in md and f"| {res.hr_niqe['big.png']:.3f} |" in md


def test_crops_and_tracks_are_deterministic():
    img = _photo(100, 70, 0)
    assert ev.centre_crop(img, 512).shape == (96, 64, 3)  # largest multiple-of-16 crop per side
    assert ev.centre_crop(img, 32).shape == (32, 32, 3)
    assert np.array_equal(ev.centre_crop(img, 32), img[34:66, 19:51])
    assert ev.centre_crop(img[:10], 512) is None
    hr = ev.centre_crop(img, 64)
    a = ev.make_lr(hr, "realistic", ev.image_seed(0, "x.png"))
    assert a.shape == (16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, ev.make_lr(hr, "realistic", ev.image_seed(0, "x.png")))
    assert not np.array_equal(a, ev.make_lr(hr, "realistic", ev.image_seed(0, "y.png")))
    assert not np.array_equal(a, ev.make_lr(hr, "bicubic", 0))


def test_missing_real_esrgan_is_a_note(tiny_model_path, tmp_path):
    methods, notes = ev.build_methods([str(tiny_model_path)], realesrgan=True, realesrgan_dir=str(tmp_path))
    assert [m.name for m in methods] == ["bicubic", "hitok"]
    assert len(notes) == 1 and notes[0].startswith("Real-ESRGAN skipped:") and "not found" in notes[0]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(eval_command)

    @app.callback()
    def main() -> None:  # a callback keeps "eval" a sub-command, as in the real app
        pass

    return app


def test_cli_eval(hr_dir, tiny_model_path, tmp_path):
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(_app(), ["eval", str(hr_dir), "--model", str(tiny_model_path), "--model",
                                         str(tiny_model_path), "--crop", "64", "--out", str(out), "--max-images", "1",
                                         "--threads", "1", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "track bicubic" in result.stdout and "track realistic" in result.stdout
    assert "Real-ESRGAN skipped" in result.stderr
    data = json.loads((out / "results.json").read_text())
    assert data["images"] == ["a.png"] and data["settings"]["seed"] == 3
    ident = data["method_info"][1].split("(id ")[1][:6]
    assert data["methods"] == ["bicubic", f"hitok:tiny@{ident}", f"hitok:tiny@{ident}#2"]  # same file twice
    assert "Real-ESRGAN skipped" in (out / "results.md").read_text()
    assert sorted(p.name for p in (out / "panels").iterdir()) == ["a_bicubic.png", "a_realistic.png"]


@pytest.mark.parametrize("args, message", [
    (["eval", "/nonexistent/photos", "--no-realesrgan"], "no such folder"),
    (["eval", "{hr}", "--crop", "100", "--no-realesrgan"], "multiple of 16"),
    (["eval", "{hr}", "--model", "/nonexistent/m.safetensors", "--no-realesrgan"], "no such model file"),
    (["eval", "{hr}", "--fidelity-sweep", "0,x", "--no-realesrgan"], "'x' is not a number"),
    (["eval", "{hr}", "--fidelity-sweep", "0.5,1.5", "--no-realesrgan"], "1.5 is outside 0..1"),
    (["eval", "{hr}", "--floor-data", "/nonexistent/train", "--no-realesrgan"], "no such folder"),
])
def test_cli_eval_errors_are_one_line(hr_dir, args, message):
    result = CliRunner().invoke(_app(), [a.replace("{hr}", str(hr_dir)) for a in args])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 1
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_raw_rows_evaluate_the_model_without_the_colour_fix(tiny_model_path):
    methods, _ = ev.build_methods([str(tiny_model_path)], realesrgan=False, raw_rows=True)
    assert [m.name for m in methods] == ["bicubic", "hitok", "hitok raw"]
    assert methods[1].upscaler.color_fix and not methods[2].upscaler.color_fix


# -- fidelity rows ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guided_path(tmp_path_factory) -> Path:
    """A tiny model with an LR guide whose zero-started last layer is woken, so fidelity changes the output."""
    from hitok.models import HiTok, presets, save_model
    from hitok.models.sr_model import add_guide

    torch.manual_seed(0)
    model = add_guide(HiTok(presets.tiny()), width=8, blocks=2)
    with torch.no_grad():
        for p in model.tokenizer.decoder.guide.head[-2].parameters():
            p.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("models") / "guided.safetensors"
    save_model(model, path)
    return path


def test_fidelity_rows_for_a_guided_model(guided_path):
    methods, notes = ev.build_methods([str(guided_path)], realesrgan=False, raw_rows=True, fidelities=(0, 0.5, 1))
    names = [m.name for m in methods]
    assert names == ["bicubic", "hitok", "hitok fidelity 0", "hitok fidelity 0.5", "hitok fidelity 1", "hitok raw",
                     "hitok fidelity 0 raw", "hitok no tokens"]
    assert notes == []
    ups = {m.name: m.upscaler for m in methods[1:] if hasattr(m, "upscaler")}
    assert [ups[n].fidelity for n in names[2:5]] == [0.0, 0.5, 1.0]
    assert all(ups[n].color_fix for n in names[1:5]) and not ups["hitok raw"].color_fix
    assert ups["hitok raw"].fidelity == ups["hitok"].fidelity  # the model's default
    assert ups["hitok fidelity 0 raw"].fidelity == 0.0 and not ups["hitok fidelity 0 raw"].color_fix
    assert "fidelity 0.5, colour fix on" in methods[3].info
    lr = _photo(16, 16, 5)
    by = {m.name: m for m in methods}
    assert not np.array_equal(by["hitok fidelity 0"](lr), by["hitok fidelity 1"](lr))
    # the token ablation: same shape, but without the tokens the guided image changes
    no_tokens, with_tokens = by["hitok no tokens"](lr), by["hitok fidelity 1"](lr)
    assert no_tokens.shape == with_tokens.shape == (64, 64, 3) and no_tokens.dtype == np.uint8
    assert np.abs(no_tokens.astype(int) - with_tokens.astype(int)).max() > 2


def test_fidelity_sweep_skips_a_model_without_a_guide(tiny_model_path):
    methods, notes = ev.build_methods([str(tiny_model_path)], realesrgan=False, raw_rows=True, fidelities=(0.5,))
    assert [m.name for m in methods] == ["bicubic", "hitok", "hitok raw"]
    assert len(notes) == 1 and "no LR guide" in notes[0]


# -- CNN floor --------------------------------------------------------------------------------------
@pytest.fixture()
def train_dir(tmp_path) -> Path:
    folder = tmp_path / "train"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(_photo(40, 48, 7)).save(folder / "p1.png")
    Image.fromarray(_photo(36, 36, 8)).save(folder / "sub" / "p2.jpg")
    Image.fromarray(_photo(20, 60, 9)).save(folder / "small.png")  # below a 32 px crop: never drawn
    return folder


def test_floor_net_size_and_bicubic_start():
    from hitok.bench.floor import FloorNet

    net = FloorNet()
    assert sum(p.numel() for p in net.parameters()) == 168_000  # bench/floor.py's "0.17 M"
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 9 and all(c.out_channels == 48 for c in convs[:-1]) and convs[-1].out_channels == 48
    x = torch.rand(1, 3, 8, 8)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.equal(net(x), bicubic)  # the last conv starts at zero


def test_floor_trains_and_upscales(train_dir):
    from hitok.bench.floor import train_floor

    lines: list[str] = []
    floor = train_floor(train_dir, steps=3, batch=4, lr_crop=8, pool=6, seed=1, threads=1, log=lines.append)
    assert floor.name == "CNN floor"
    assert "3 steps" in floor.info and "0.168 M params" in floor.info and str(train_dir) in floor.info
    assert any("step 3/3" in ln for ln in lines)
    lr = _photo(12, 20, 2)
    out = floor(lr)
    assert out.shape == (48, 80, 3) and out.dtype == np.uint8
    again = train_floor(train_dir, steps=3, batch=4, lr_crop=8, pool=6, seed=1, threads=1)
    assert np.array_equal(again(lr), out)  # seeded: the same run gives the same floor
    assert torch.get_num_threads() == 1


def test_floor_crop_pool_and_its_errors(train_dir, tmp_path):
    from hitok.bench.floor import crop_pool
    from hitok.errors import UserError

    pool = crop_pool(train_dir, 10, 32, seed=0)
    assert pool.shape == (10, 32, 32, 3) and pool.dtype == np.uint8
    assert np.array_equal(pool, crop_pool(train_dir, 10, 32, seed=0))
    with pytest.raises(UserError, match="no readable photo of at least 64x64"):
        crop_pool(train_dir, 4, 64, seed=0)
    with pytest.raises(UserError, match="no such folder"):
        crop_pool(tmp_path / "nowhere", 4, 32, seed=0)


def test_floor_row_sits_after_real_esrgan(monkeypatch, tiny_model_path, train_dir, hr_dir):
    from functools import partial

    from hitok.bench import floor

    monkeypatch.setattr(floor, "train_floor", partial(floor.train_floor, batch=2, lr_crop=8, pool=4))
    methods, _ = ev.build_methods([str(tiny_model_path)], realesrgan=False, floor_data=train_dir, floor_steps=2)
    assert [m.name for m in methods] == ["bicubic", "CNN floor", "hitok"]
    res = ev.evaluate(hr_dir, methods, crop=32, max_images=1, lpips=False)
    assert res.methods == ["bicubic", "CNN floor", "hitok"] and "2 steps" in res.method_info[1]
    assert all(math.isfinite(res.mean(t, "CNN floor")["psnr_y"]) for t in ev.TRACKS)


# -- panels -----------------------------------------------------------------------------------------
def test_many_panels_wrap_and_keep_order_and_labels():
    colours = [(40 * i % 256, 255 - 20 * i, 90) for i in range(12)]
    panels = [(f"row {i}", np.full((64, 64, 3), c, np.uint8)) for i, c in enumerate(colours)]
    img = np.asarray(ev.side_by_side(panels, (0, 0, 64)))
    assert img.shape[1] <= ev.MAX_ROW
    # 7 + 5 panels: two overview rows (64 px + label, 4 px apart), 6 px, two detail rows at 2x.
    assert img.shape[:2] == (2 * (64 + 18) + 4 + 6 + 2 * (128 + 18) + 4, 7 * 128 + 6 * 4)
    for i, c in enumerate(colours):  # overview panel i: row i // 7, column i % 7, in the given order
        y, x = (i // 7) * (64 + 18 + 4) + 18 + 32, (i % 7) * 68 + 32
        assert tuple(img[y, x]) == c, i

    big = [(f"hitok:some-model fidelity 0.{i}  28.31 dB  NIQE 4.21", np.zeros((512, 512, 3), np.uint8))
           for i in range(13)]
    wide = ev.side_by_side(big, (0, 0, 128))
    assert wide.width <= ev.MAX_ROW
    cap = np.asarray(wide)[:18, :]
    pw = (ev.MAX_ROW - 4 * 6) // 7
    assert cap[:, 3:pw - 3].max() > 0  # the caption is drawn ...
    assert cap[:, pw - 2 : pw].max() == 0  # ... and shrunk to fit its panel, not cut at the edge


def test_cli_eval_floor_and_fidelity_sweep(hr_dir, guided_path, tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    Image.fromarray(_photo(128, 136, 4)).save(train / "t.png")
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(_app(), ["eval", str(hr_dir), "--model", str(guided_path), "--crop", "32",
                                         "--out", str(out), "--max-images", "2", "--threads", "1",
                                         "--no-realesrgan", "--floor-data", str(train), "--floor-steps", "1",
                                         "--fidelity-sweep", "0, 1,1", "--raw", "--figure",
                                         str(tmp_path / "fig.png"), "--figure-image", "a.png"])
    assert result.exit_code == 0, result.output
    assert "CNN floor: step 1/1" in result.stderr
    data = json.loads((out / "results.json").read_text())
    assert data["methods"] == ["bicubic", "CNN floor", "hitok", "hitok fidelity 0", "hitok fidelity 1", "hitok raw",
                               "hitok fidelity 0 raw", "hitok no tokens"]
    assert "1 steps" in data["method_info"][1] and "0.168 M params" in data["method_info"][1]
    md = (out / "results.md").read_text()
    assert "| CNN floor | " in md and "| hitok fidelity 0 raw | " in md
    panel = Image.open(out / "panels" / "a_bicubic.png")  # 10 panels: LR, 8 methods, GT -> two rows of 7 + 3
    assert panel.width == 7 * 64 + 6 * 4 and panel.height == 2 * (32 + 18) + 4 + 6 + 2 * (64 + 18) + 4
    # the README figure: bicubic | hitok | hitok fidelity 0 | ground truth, clean and compressed rows, detail at 2x
    fig = Image.open(tmp_path / "fig.png")
    assert fig.size == (4 * 64 + 3 * 4, 2 * (64 + 18) + 6)


@pytest.mark.slow
def test_cnn_floor_learns(tmp_path):
    """The floor must learn (a baseline that does not proves nothing): 300 steps beat its own bicubic skip on a
    held-out photo of the same kind. With torch's default init and a cosine schedule it stayed at the skip."""
    from hitok.bench.evaluate import make_lr
    from hitok.bench.floor import train_floor
    from hitok.bench.metrics import psnr_y

    train = tmp_path / "train"
    train.mkdir()
    for i in range(3):
        Image.fromarray(_photo(160, 160, 10 + i)).save(train / f"t{i}.png")
    floor = train_floor(train, steps=300, pool=64, threads=1)
    hr = _photo(128, 128, 99)
    lr = make_lr(hr, "bicubic", 0)
    skip = F.interpolate(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255, scale_factor=4, mode="bicubic",
                         align_corners=False)[0].clamp(0, 1)
    skip8 = (skip.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert psnr_y(floor(lr), hr) > psnr_y(skip8, hr) + 0.3
