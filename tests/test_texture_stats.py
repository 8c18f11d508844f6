"""The patch-wise texture statistics loss (train/losses/texture_stats.py) and its place in a restorer run."""
import csv

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hitok.models import Restorer, RestorerConfig
from hitok.models.rrdbnet import RRDBNet
from hitok.train.losses.texture_stats import DetailFeatures, highpass, sliced_texture_loss

TINY = RestorerConfig(width=8, blocks=2, up_width=4)


def _features(seed: int = 0) -> DetailFeatures:
    torch.manual_seed(seed)
    return DetailFeatures(nn.Conv2d(3, 16, 3, padding=1))


def _texture(n: int = 64, seed: int = 1) -> torch.Tensor:
    """Grass-like: fine random detail over mid grey."""
    g = torch.Generator().manual_seed(seed)
    detail = F.avg_pool2d(torch.randn(1, 3, n + 1, n + 1, generator=g), 2, stride=1)
    return (0.5 + 0.15 * detail).clamp(0, 1)


def test_the_photos_texture_moved_a_few_pixels_is_closer_than_its_smooth_average():
    """What a pixel loss cannot do: L1 prefers the blurred (averaged) texture to the same texture drawn a few
    pixels off; these statistics prefer the texture, and put a regular pattern over the average far from it."""
    photo = _texture()
    moved = torch.roll(photo, shifts=(3, 2), dims=(2, 3))
    smooth = photo - highpass(photo)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    hatch = smooth + 0.06 * torch.sign(torch.sin(2.0 * (0.9 * xx + 0.4 * yy)))
    assert (smooth - photo).abs().mean() < (moved - photo).abs().mean()
    f = _features()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731  the same directions and offset for each
    d = {name: sliced_texture_loss(x, photo, f, generator=gen()).item()
         for name, x in [("photo", photo), ("moved", moved), ("smooth", smooth), ("hatch", hatch)]}
    assert d["photo"] == 0
    assert d["moved"] < 0.5 * d["smooth"]
    assert d["hatch"] > 2 * d["moved"]


def test_gradients_reach_the_output_only():
    f = _features()
    photo = _texture(48)
    out = (photo - highpass(photo)).requires_grad_(True)
    sliced_texture_loss(out, photo, f).backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in f.parameters())


def test_a_run_with_stats_weight_logs_the_term_and_needs_the_model_files(photos, tmp_path, monkeypatch):
    from hitok.models import rrdbnet as rrdbnet_mod
    from hitok.train.restorer import RestorerTraining, save_weights, train_restorer

    init = tmp_path / "faithful.safetensors"
    save_weights(init, Restorer(TINY), None, {"steps": "0"})
    cfg = dict(data=str(photos), batch_size=2, lr_crop=12, minutes=0.05, bf16=False, init=str(init),
               stats_weight=5.0)
    with pytest.raises(ValueError, match="stats_model"):
        train_restorer(RestorerTraining(out=str(tmp_path / "none"), **cfg), log=lambda _m: None)
    loaded = []
    monkeypatch.setattr(rrdbnet_mod, "load_ncnn",
                        lambda *files: loaded.append(files) or RRDBNet(blocks=0))  # Real-ESRGAN's, in CI absent
    run = tmp_path / "run"
    train_restorer(RestorerTraining(out=str(run), stats_model=["x.param", "x.bin"], **cfg), log=lambda _m: None)
    assert loaded == [("x.param", "x.bin")]
    with open(run / "metrics.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["step", "minutes", "l1", "sec_per_step", "stats"]
    from hitok.models.io import ModelFileError
    recorded = (run / "config.json").read_text()
    with pytest.raises(ModelFileError, match="resume it with the same terms"):  # its log would lose a column
        train_restorer(RestorerTraining(out=str(run), **(cfg | {"stats_weight": 0.0})), log=lambda _m: None)
    assert (run / "config.json").read_text() == recorded  # the refused resume changed nothing


def test_cli_stats_weight_without_the_model_files_is_a_user_error(photos, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hitok.bench import realesrgan
    from hitok.cli.app import app

    monkeypatch.setenv(realesrgan.ENV_DIR, str(tmp_path / "nowhere"))
    monkeypatch.setattr(realesrgan, "_package_models_dir", lambda: None)
    r = CliRunner().invoke(app, ["train", "restorer", "--data", str(photos), "--out", str(tmp_path / "run"),
                                 "--minutes", "0.1", "--stats-weight", "5"])
    assert r.exit_code != 0 and "not found" in r.output


def test_cli_texture_options_reach_the_run(photos, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from hitok.bench import realesrgan
    from hitok.cli.app import app
    from hitok.models import rrdbnet as rrdbnet_mod
    from hitok.train.restorer import save_weights

    files = tmp_path / "re"
    files.mkdir()
    for name in (realesrgan.PARAM_NAME, realesrgan.BIN_NAME):
        (files / name).write_text("")
    monkeypatch.setenv(realesrgan.ENV_DIR, str(files))
    monkeypatch.setattr(rrdbnet_mod, "load_ncnn", lambda *files: RRDBNet(blocks=0))
    init = tmp_path / "faithful.safetensors"
    save_weights(init, Restorer(TINY), None, {"steps": "0"})
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "restorer", "--data", str(photos), "--out", str(run), "--minutes", "0.1",
                                 "--init", str(init), "--batch-size", "2", "--lr-crop", "12", "--fp32",
                                 "--stats-weight", "40", "--phase-weight", "20", "--phase-tile-weight", "5"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["stats_weight"] == 40 and cfg["phase_weight"] == 20 and cfg["phase_tile_weight"] == 5
    assert cfg["stats_model"] == [str(files / realesrgan.PARAM_NAME), str(files / realesrgan.BIN_NAME)]
    from hitok.models.rrdbnet import save_first_conv
    save_first_conv("x.param", "x.bin", tmp_path / "conv.safetensors")  # through the stand-in reader
    r = CliRunner().invoke(app, ["train", "restorer", "--data", str(photos), "--out", str(tmp_path / "run2"),
                                 "--minutes", "0.1", "--init", str(init), "--batch-size", "2", "--lr-crop", "12",
                                 "--fp32", "--stats-weight", "40", "--stats-model", str(tmp_path / "conv.safetensors")])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "run2" / "config.json").read_text())
    assert cfg["stats_model"] == [str(tmp_path / "conv.safetensors")]


def test_the_first_conv_alone_serves_the_statistics(tmp_path, monkeypatch):
    """What a GPU session carries instead of the 32 MB model: the conv, equal to the one the ncnn files give."""
    from hitok.models import rrdbnet as rrdbnet_mod
    from hitok.models.rrdbnet import first_conv, save_first_conv

    torch.manual_seed(0)
    net = RRDBNet(blocks=0)
    monkeypatch.setattr(rrdbnet_mod, "load_ncnn", lambda *files: net)  # stands in for the real files' reader
    save_first_conv("m.param", "m.bin", tmp_path / "first.safetensors")
    full = first_conv(["m.param", "m.bin"])
    small = first_conv([str(tmp_path / "first.safetensors")])
    x = torch.rand(1, 3, 16, 16)
    assert small is not full and torch.equal(full(x), small(x))
    assert (tmp_path / "first.safetensors").stat().st_size < 10_000
