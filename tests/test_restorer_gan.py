"""The adversarial fine-tune of a restorer (train/restorer_gan.py) and LDL's artefact loss (train/losses/ldl.py)."""
import csv

import pytest
import torch

from hitok.models import Restorer, RestorerConfig
from hitok.train.losses.ldl import artefact_map, ldl_loss

TINY = RestorerConfig(width=8, blocks=2, up_width=4)


def _checkerboard(n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return ((yy + xx) % 2).float()[None, None].expand(1, 3, n, n)  # 0 / 1


def test_ldl_weighs_a_pattern_not_an_even_error():
    """The same mean error: spread evenly (a shift) gets no weight, drawn as a checkerboard in one corner gets a
    lot -- and a pixel the EMA network gets more wrong than the current one is not an artefact."""
    photo = torch.full((1, 3, 32, 32), 0.5)
    shifted = photo + 0.05
    pattern = photo.clone()
    pattern[..., :16, :16] += 0.4 * _checkerboard(16)  # an eighth of the pixels, 8x the error: same mean |error|
    assert torch.allclose((shifted - photo).abs().mean(), (pattern - photo).abs().mean())
    assert ldl_loss(shifted, photo, photo).item() < 1e-8
    assert ldl_loss(pattern, photo, photo).item() > 1e-5
    assert artefact_map(pattern, photo, photo)[..., :14, :14].min() > 0  # inside the pattern
    worse_ema = pattern + 0.5
    assert artefact_map(pattern, worse_ema, photo).abs().max() == 0


def test_ldl_gradient_pulls_the_pattern_towards_the_photo():
    photo = torch.full((1, 3, 16, 16), 0.5)
    out = (photo + 0.4 * _checkerboard(16)).requires_grad_(True)
    ldl_loss(out, photo, photo).backward()
    step = out.detach() - 100.0 * out.grad
    assert (step - photo).abs().mean() < (out.detach() - photo).abs().mean()


def test_gan_run_logs_its_terms_resumes_and_refuses_a_switch(photos, tmp_path):
    import dataclasses

    from hitok.models.io import ModelFileError
    from hitok.train.restorer import RestorerTraining, load_weights, save_weights, train_restorer
    from hitok.train.restorer_gan import GanSettings

    faithful = tmp_path / "faithful.safetensors"
    torch.manual_seed(3)
    save_weights(faithful, Restorer(TINY), None, {"steps": "0"})
    run = tmp_path / "gan"
    cfg = RestorerTraining(data=str(photos), out=str(run), batch_size=2, lr_crop=12, minutes=0.05,
                           save_every=0.02, bf16=False, warmup_steps=1, init=str(faithful),
                           gan=GanSettings(adv_weight=0.1, disc_channels=4))
    train_restorer(cfg, log=lambda _m: None)
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ck["step"] > 0 and set(ck["gan"]) == {"disc", "d_opt"}
    d_weights = {k: v.clone() for k, v in ck["gan"]["disc"].items()}
    resumed = dataclasses.replace(cfg, gan=dataclasses.replace(cfg.gan, d_learning_rate=3e-3, d_betas=(0.0, 0.9)))
    train_restorer(resumed, log=lambda _m: None)  # resumes, discriminator included, at the new D settings
    ck2 = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ck2["step"] > ck["step"]
    assert any(not torch.equal(d_weights[k], v) for k, v in ck2["gan"]["disc"].items())  # D trained on
    group = ck2["gan"]["d_opt"]["param_groups"][0]
    assert group["lr"] == 3e-3 and tuple(group["betas"]) == (0.0, 0.9)
    with open(run / "metrics.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["step", "minutes", "l1", "sec_per_step", "g_adv", "ldl", "grid", "d_real", "d_fake"]
    assert all(len(row) == len(table[0]) for row in table[1:])
    rcfg, state, ema, _ = load_weights(run / "continuation.safetensors")
    assert rcfg == TINY and ema
    with pytest.raises(ModelFileError, match="with a GAN must be resumed with one"):
        train_restorer(dataclasses.replace(cfg, gan=None), log=lambda _m: None)

    plain = tmp_path / "plain"
    train_restorer(RestorerTraining(data=str(photos), out=str(plain), model=TINY, batch_size=2, lr_crop=12,
                                    minutes=0.02, bf16=False), log=lambda _m: None)
    with pytest.raises(ModelFileError, match="without a GAN must be resumed without one"):
        train_restorer(RestorerTraining(data=str(photos), out=str(plain), model=TINY, batch_size=2, lr_crop=12,
                                        minutes=0.02, bf16=False, gan=GanSettings(disc_channels=4)),
                       log=lambda _m: None)


def test_a_frozen_upsampler_is_the_faithful_restorers_as_shipped(photos, tmp_path):
    """With --freeze-upsampler from a continuation file (live + EMA), the pixel-shuffle convs of both the live
    and the averaged texture restorer are the init's EMA ones (what attach ships as the faithful end)."""
    from hitok.train.restorer import RestorerTraining, load_weights, save_weights, train_restorer
    from hitok.train.restorer_gan import GanSettings

    torch.manual_seed(5)
    live, avg = Restorer(TINY), Restorer(TINY)
    with torch.no_grad():
        for p in avg.parameters():
            p.add_(0.1)
    init = tmp_path / "continuation.safetensors"
    from torch.optim.swa_utils import AveragedModel
    save_weights(init, live, AveragedModel(avg), {"steps": "0"})
    run = tmp_path / "run"
    train_restorer(RestorerTraining(data=str(photos), out=str(run), batch_size=2, lr_crop=12, minutes=0.05,
                                    bf16=False, init=str(init), gan=GanSettings(disc_channels=4,
                                                                                freeze_upsampler=True)),
                   log=lambda _m: None)
    _, state, ema, _ = load_weights(run / "continuation.safetensors")
    _, _, start_ema, _ = load_weights(init)
    up = [k for k in start_ema if k.startswith(("up1.", "up2."))]
    assert up and all(torch.equal(state[k], start_ema[k]) and torch.equal(ema[k], start_ema[k]) for k in up)
    assert any(not torch.equal(state[k], start_ema[k]) for k in state if k.startswith("body."))


def test_a_gan_step_moves_the_restorer_towards_what_the_discriminator_calls_real():
    """One generator step on the adversarial term alone raises D's logits on the restorer's output."""
    from hitok.train.restorer_gan import GanSettings, RestorerGan

    torch.manual_seed(0)
    net = Restorer(TINY)
    gan = RestorerGan(GanSettings(adv_weight=1.0, ldl_weight=0.0, disc_channels=4))
    lr = torch.rand(2, 3, 8, 8)
    photo = torch.rand(2, 3, 32, 32)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    nocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    with torch.no_grad():
        before = gan.disc(net(lr)).mean()
    pred = net(lr)
    loss, terms = gan.generator_terms(pred, pred.detach(), photo, nocast)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = gan.disc(net(lr)).mean()
    assert after > before and terms.keys() == {"g_adv", "ldl", "grid"}
    d_terms = gan.discriminator_step(nocast)
    assert {"d_real", "d_fake"} <= d_terms.keys()


def test_the_pooled_pixel_loss_leaves_the_finest_octave_to_the_discriminator():
    """With pixel_pool 2 a zero-mean 2 x 2 pattern costs nothing in the pixel loss (full resolution: its size),
    while a change of colour costs as much as at full resolution."""
    from hitok.train.restorer import restorer_loss
    from hitok.train.restorer_gan import GanSettings, pool_for_pixel_loss

    photo = torch.rand(1, 3, 16, 16)
    grain = photo + 0.1 * (2 * _checkerboard(16) - 1)
    tint = photo + 0.1
    for pred, pooled_loss in ((grain, 0.0), (tint, 0.1)):
        full = restorer_loss(pred, {"hr": photo}).item()
        pooled = restorer_loss(pool_for_pixel_loss({"p": pred}, 2)["p"], pool_for_pixel_loss({"hr": photo}, 2))
        assert full == pytest.approx(0.1, abs=1e-6) and pooled.item() == pytest.approx(pooled_loss, abs=1e-6)
    assert pool_for_pixel_loss({"hr": photo}, 1)["hr"] is photo
    with pytest.raises(ValueError):
        GanSettings(pixel_pool=0)


def test_cli_gan_options_reach_the_run(photos, tmp_path):
    import json

    from typer.testing import CliRunner

    from hitok.cli.app import app
    from hitok.train.restorer import save_weights

    init = tmp_path / "faithful.safetensors"
    save_weights(init, Restorer(TINY), None, {"steps": "0"})
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "restorer", "--data", str(photos), "--out", str(run), "--minutes", "0.1",
                                 "--init", str(init), "--batch-size", "2", "--lr-crop", "12", "--fp32",
                                 "--adv-weight", "0.5", "--ldl-weight", "2", "--disc-channels", "4",
                                 "--d-learning-rate", "4e-4", "--d-betas", "0", "0.9", "--pixel-pool", "4",
                                 "--shift", "3",
                                 "--grid-weight", "5", "--freeze-upsampler"])
    assert r.exit_code == 0, r.output
    gan = json.loads((run / "config.json").read_text())["gan"]
    assert gan == {"adv_weight": 0.5, "ldl_weight": 2.0, "disc_channels": 4, "d_learning_rate": 4e-4,
                   "d_betas": [0.0, 0.9], "pixel_pool": 4, "shift": 3, "grid_weight": 5.0, "freeze_upsampler": True,
                   "kind": "vanilla"}
    assert "discriminator" in r.output
    from hitok.train.restorer import load_weights as _load
    _, state, _, _ = _load(run / "continuation.safetensors")
    _, start, _, _ = _load(init)
    assert all(torch.equal(state[k], start[k]) for k in start if k.startswith(("up1.", "up2.")))
    assert any(not torch.equal(state[k], start[k]) for k in start if k.startswith("body."))
    d_opt = torch.load(run / "checkpoint.pt", weights_only=False)["gan"]["d_opt"]
    assert d_opt["param_groups"][0]["betas"] == (0.0, 0.9)


def test_the_discriminator_sees_output_and_photo_cut_at_one_random_offset():
    from hitok.train.restorer_gan import GanSettings, RestorerGan, random_offset_crop

    a = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    offsets = set()
    for seed in range(40):
        torch.manual_seed(seed)
        x, y = random_offset_crop(a, a + 1, 4)
        assert x.shape == (2, 3, 12, 12) and torch.equal(y, x + 1)  # the same offset for both
        offsets.add(int(x[0, 0, 0, 0]))
    assert len(offsets) > 10  # many of the 25 (dy, dx)
    assert random_offset_crop(a, a, 0)[0] is a
    gan = RestorerGan(GanSettings(disc_channels=4, shift=4))
    pred, photo = torch.rand(1, 3, 24, 24, requires_grad=True), torch.rand(1, 3, 24, 24)
    nocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    gan.generator_terms(pred, pred.detach(), photo, nocast)
    fake, real = gan.adv.pending[0]
    assert fake.shape[-2:] == real.shape[-2:] == (20, 20)


def test_grid_loss_weighs_a_pattern_on_the_upsampler_grid_at_any_offset_above_texture():
    from hitok.train.losses.grid import grid_loss

    torch.manual_seed(0)
    photo = torch.rand(2, 3, 64, 64)
    texture = torch.randn(2, 3, 64, 64).sign()  # the same amplitude, no period
    texture_loss = grid_loss(photo + 0.02 * texture, photo).item()
    assert grid_loss(photo, photo).item() == 0.0
    col = torch.arange(64)
    for pattern in (2 * _checkerboard(64) - 1,                                   # 2 px checkerboard
                    (col + 1).remainder(4).lt(2).float().mul(2).sub(1).expand(2, 3, 64, 64),  # 4 px, offset 1
                    (col[:, None] + 3).remainder(4).lt(2).float().mul(2).sub(1).expand(2, 3, 64, 64)):
        assert grid_loss(photo + 0.02 * pattern, photo).item() > 3 * texture_loss
    out = (photo + 0.02 * (2 * _checkerboard(64) - 1)).requires_grad_(True)
    first = grid_loss(out, photo).item()
    opt = torch.optim.Adam([out], lr=1e-3)
    for _ in range(30):  # descending it removes the pattern
        opt.zero_grad()
        grid_loss(out, photo).backward()
        opt.step()
    assert grid_loss(out, photo).item() < 0.3 * first


def test_an_older_checkpoint_resumes_with_the_network_its_run_recorded(photos, tmp_path):
    """Checkpoints written before they held their network config resume from the run's config.json."""
    from hitok.train.restorer import RestorerTraining, save_weights, train_restorer

    init = tmp_path / "init.safetensors"
    save_weights(init, Restorer(TINY), None, {"steps": "0"})
    run = tmp_path / "run"
    cfg = RestorerTraining(data=str(photos), out=str(run), batch_size=2, lr_crop=12, minutes=0.02, bf16=False,
                           init=str(init))  # cfg.model is the default network, not TINY
    train_restorer(cfg, log=lambda _m: None)
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    del ck["model_config"]
    torch.save(ck, run / "checkpoint.pt")
    train_restorer(cfg, log=lambda _m: None)
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] > ck["step"]
