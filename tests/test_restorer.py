"""The faithful restorer (models/restorer.py) inside HiTok, its trainer (train/restorer.py), the photo
degradation it trains on (train/degrade.py PhotoDegradation) and `hitok train attach`."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hitok.models import HiTok, Restorer, RestorerConfig, load_model_file, presets, save_model
from hitok.models.sr_model import with_restorer
from hitok.models.summary import summarize
from hitok.train.degrade import PhotoDegradation, degrade_photo, degrade_photo_flagged

TINY = RestorerConfig(width=8, blocks=2, up_width=4)


def _model(fidelity: float = 1.0) -> HiTok:
    torch.manual_seed(0)
    restorer = Restorer(TINY)
    with torch.no_grad():  # wake the small-started last layer so the restorer differs from bicubic
        restorer.up2.weight.normal_(0, 0.3)
    return with_restorer(HiTok(presets.tiny()), restorer, fidelity)


def test_restorer_shape_and_untrained_start_near_bicubic():
    net = Restorer(TINY)
    lr = torch.rand(2, 3, 12, 10)
    out = net(lr)
    assert out.shape == (2, 3, 48, 40) and torch.isfinite(out).all()
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    assert (out - bicubic).abs().mean() < 0.05  # the last conv starts small
    assert (out - bicubic).abs().mean() > 0  # but not zero: every layer gets a gradient from step 1


def _reference_forward(r: Restorer, lr: torch.Tensor) -> torch.Tensor:
    """The restorer's equations of the module docstring, every step a new tensor."""
    x = r.head(lr - 0.5)
    h = x
    for b in r.body:
        h = h + b.res_scale * b.conv2(F.relu(b.conv1(h)))
    x = x + r.tail(h)
    x = F.pixel_shuffle(r.up2(F.relu(F.pixel_shuffle(r.up1(x), 2))), 2)
    return F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False) + x


def test_in_place_forward_gives_the_reference_numbers_and_gradients():
    torch.manual_seed(0)
    r = Restorer(RestorerConfig(width=8, blocks=3, up_width=4))
    lr = torch.rand(2, 3, 12, 10)
    out, ref = r(lr), _reference_forward(r, lr)
    assert torch.equal(out, ref)
    grads = torch.autograd.grad(out.square().mean(), list(r.parameters()))
    ref_grads = torch.autograd.grad(ref.square().mean(), list(r.parameters()))
    assert all(torch.equal(g, h) for g, h in zip(grads, ref_grads))
    with torch.inference_mode():
        assert torch.equal(r(lr.contiguous(memory_format=torch.channels_last)), ref)


def test_icnr_start_has_no_checkerboard():
    """Each pixel-shuffle group of up1 starts with one kernel repeated, so the 2x stage is a nearest upsample."""
    net = Restorer(TINY)
    w = net.up1.weight.view(TINY.up_width, 4, TINY.width, 3, 3)  # (out, sub-pixel, in, k, k)
    assert torch.equal(w, w[:, :1].expand_as(w))


def test_fidelity_dial_with_a_restorer():
    model = _model().eval()
    lr = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        restored = model.restorer(lr)
        tokens = model.decode_indices(model.predict_indices(lr))
        w1 = model.upscale(lr, fidelity=1.0)
        w0 = model.upscale(lr, fidelity=0.0)
        half = model.upscale(lr, fidelity=0.5)
        half_fixed = model.upscale(lr, fidelity=0.5, color_fix=True)
    assert torch.equal(w1, restored)  # the faithful end runs the restorer alone
    assert torch.equal(w0, tokens)  # the other end is the paper's token-only decoder
    assert torch.allclose(half, (tokens + restored) / 2, atol=1e-6)
    assert not torch.allclose(half_fixed, half)  # the colour fix applies to the token image
    assert model.guided and model.config.restorer == TINY


def test_detail_at_fidelity_1_with_a_restorer_is_a_warning(tmp_path):
    """The restorer alone makes the picture at fidelity 1, so a --detail the user set there changes nothing: said
    once, in upscaler.warnings and by the command; not where detail acts or was not asked for."""
    from typer.testing import CliRunner

    from hitok.cli.app import app
    from hitok.upscaler import Upscaler

    said = Upscaler(_model(1.0), "cpu", "fp32", detail=1).warnings
    assert said == ["detail 1 changes nothing at fidelity 1: this model's restorer alone makes the picture there; "
                    "lower the fidelity for detail to act"]
    assert Upscaler(_model(1.0), "cpu", "fp32").warnings == []  # detail not set: nothing to warn about
    assert Upscaler(_model(1.0), "cpu", "fp32", detail=1, fidelity=0.5).warnings == []  # detail acts
    assert Upscaler(HiTok(presets.tiny()), "cpu", "fp32", detail=1).warnings == []  # no restorer
    save_model(_model(1.0), tmp_path / "r.safetensors")
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / "in.png")
    result = CliRunner().invoke(app, ["upscale", str(tmp_path / "in.png"), "--model", str(tmp_path / "r.safetensors"),
                                      "--detail", "1", "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: detail 1 changes nothing at fidelity 1") == 1


def test_restorer_and_guide_are_exclusive():
    cfg = dataclasses.replace(presets.tiny(), restorer=TINY)
    with pytest.raises(ValueError, match="either a restorer or an LR-guided decoder"):
        dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, guide_width=4))


def test_model_file_round_trip_and_cost(tmp_path):
    model = _model()
    path = tmp_path / "m.safetensors"
    save_model(model, path, half=True)
    back = load_model_file(path)
    assert back.config == model.config and back.restorer is not None
    lr = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(back.upscale(lr), model.upscale(lr), atol=5e-3)
    s = summarize(model.config)
    assert s["macs"]["restorer"] > 0 and s["total_macs"] == s["macs"]["restorer"]  # fidelity 1: no token path
    s_half = summarize(dataclasses.replace(model.config, fidelity=0.5))
    assert s_half["total_macs"] == sum(s_half["macs"].values())


def test_photo_degradation_clean_share_and_determinism():
    hr = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    clean = degrade_photo(hr, 0, PhotoDegradation(clean_prob=1.0))
    ref = F.interpolate(hr, size=(16, 16), mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose(clean, (ref.clamp(0, 1) * 255).round() / 255)
    cfg = PhotoDegradation(clean_prob=0.0, jpeg_prob=1.0, noise_prob=1.0)
    a, b = degrade_photo(hr, 7, cfg), degrade_photo(hr, 7, cfg)
    assert torch.equal(a, b) and a.shape == (6, 3, 16, 16)
    assert torch.equal((a * 255).round(), a * 255)  # 8-bit valued
    assert (a - clean).abs().mean() > 0.01  # degraded, not the clean LR
    assert not torch.equal(a, degrade_photo(hr, 8, cfg))


def test_the_flags_say_which_samples_took_the_degraded_branch():
    """Same draws as degrade_photo; a flagged-clean sample is the clean bicubic LR, a flagged-degraded one not; the
    crop stream hands the flags to the training loop (the flat loss limited to degraded crops uses them)."""
    hr = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cfg = PhotoDegradation(clean_prob=0.5, noise_prob=1.0)
    lr, degraded = degrade_photo_flagged(hr, 3, cfg)
    assert torch.equal(lr, degrade_photo(hr, 3, cfg)) and degraded.dtype == torch.bool and degraded.shape == (16,)
    assert 0 < degraded.sum() < 16
    clean = degrade_photo(hr, 0, PhotoDegradation(clean_prob=1.0))
    same = (lr - clean).abs().flatten(1).amax(1) == 0
    assert torch.equal(same, ~degraded)
    one_lr, one_flag = degrade_photo_flagged(hr[0], 3, PhotoDegradation(clean_prob=0.0))
    assert one_lr.shape == (3, 16, 16) and one_flag.shape == () and bool(one_flag)


def test_train_resume_and_attach(photos, tmp_path):
    from hitok.train.restorer import RestorerTraining, attach_restorer, load_weights, train_restorer

    run = tmp_path / "run"
    cfg = RestorerTraining(data=str(photos), out=str(run), model=TINY, batch_size=2, lr_crop=12, minutes=0.03,
                           save_every=0.01, bf16=False, warmup_steps=1)
    snap = train_restorer(cfg, log=lambda _m: None)
    assert snap.exists() and (run / "checkpoint.pt").exists() and (run / "continuation.safetensors").exists()
    steps = torch.load(run / "checkpoint.pt", weights_only=False)["step"]
    assert steps > 0
    train_restorer(cfg, log=lambda _m: None)  # resumes
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] > steps
    rcfg, state, ema, meta = load_weights(run / "continuation.safetensors")
    assert rcfg == TINY and ema and state.keys() == ema.keys() and int(meta["steps"]) > steps

    base = tmp_path / "base.safetensors"
    save_model(HiTok(presets.tiny()), base)
    out = tmp_path / "with.safetensors"
    attach_restorer(base, run / "continuation.safetensors", out, half=False)
    model = load_model_file(out)
    net = Restorer(TINY)
    net.load_state_dict(ema)
    lr = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(model.upscale(lr), net(lr), atol=1e-6)  # the EMA weights, at fidelity 1


def test_restorer_learns_on_one_batch():
    """A few steps of the trainer's update lower L1 on a fixed batch (the trainer can fail to learn)."""
    torch.manual_seed(0)
    net = Restorer(TINY)
    lr = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    hr = F.interpolate(lr, scale_factor=4, mode="nearest")  # sharp edges bicubic blurs: learnable from lr
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    first = (net(lr) - hr).abs().mean().item()
    for _ in range(60):
        loss = (net(lr) - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


def test_cli_train_restorer_then_attach(photos, tmp_path):
    from typer.testing import CliRunner

    from hitok.cli.app import app

    run, model = tmp_path / "run", tmp_path / "m.safetensors"
    base = tmp_path / "base.safetensors"
    save_model(HiTok(presets.tiny()), base)
    r = CliRunner().invoke(app, ["train", "restorer", "--data", str(photos), "--out", str(run), "--minutes", "0.1",
                                 "--width", "8", "--blocks", "1", "--up-width", "4", "--batch-size", "2",
                                 "--lr-crop", "12", "--fp32", "--save-every", "0.1"])
    assert r.exit_code == 0, r.output
    assert (run / "continuation.safetensors").exists() and list((run / "snapshots").glob("*.safetensors"))
    names = lambda folder: sorted(p.name for p in folder.glob("*.safetensors"))  # noqa: E731
    assert names(run / "snapshots" / "live") == names(run / "snapshots")  # the live weights beside each EMA one
    r = CliRunner().invoke(app, ["train", "attach", str(run), "-o", str(model), "--base", str(base)])
    assert r.exit_code == 0, r.output
    assert load_model_file(model).config.restorer == RestorerConfig(8, 1, up_width=4)
    r = CliRunner().invoke(app, ["train", "attach", str(base), "-o", str(tmp_path / "x.safetensors")])
    assert r.exit_code == 1 and "not a restorer weights file" in r.output


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_train_with_every_term_and_data_workers_on_a_device_then_move(photos, tmp_path, device, monkeypatch):
    """A texture run with all its terms (GAN, statistics, phase, flat detail), crops made by worker processes (the loop
    checks they arrive in step order), started on the CPU, resumed on `device` (optimizer and discriminator
    state follow), then on the CPU again without workers."""
    from hitok.models.rrdbnet import RRDBNet
    from hitok.models import rrdbnet as rrdbnet_mod
    from hitok.train.restorer import RestorerTraining, train_restorer
    from hitok.train.restorer_gan import GanSettings

    monkeypatch.setattr(rrdbnet_mod, "load_ncnn", lambda *files: RRDBNet(blocks=0))  # Real-ESRGAN's, in CI absent
    run = tmp_path / "run"
    cfg = RestorerTraining(data=str(photos), out=str(run), model=TINY, batch_size=2, lr_crop=12, minutes=0.05,
                           bf16=False, warmup_steps=1, workers=2, gan=GanSettings(adv_weight=0.1, disc_channels=4),
                           stats_weight=10.0, stats_model=["x.param", "x.bin"], phase_weight=10.0,
                           phase_tile_weight=10.0, flat_weight=10.0, flat_degraded_only=True)
    steps = []
    for where, workers in [("cpu", 2), (device, 2), ("cpu", 0)]:
        train_restorer(dataclasses.replace(cfg, device=where, workers=workers), log=lambda _m: None)
        ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
        steps.append(ck["step"])
    assert 0 < steps[0] < steps[1] < steps[2]
    assert set(ck["gan"]) == {"disc", "d_opt"}
