"""The restorer's grain branch (models/restorer.py, models/noise.py): noise tied to output position, added to a
trained restorer without changing its output, and trained from a continuation file with `--grain`."""
import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hitok.models.io import ModelFileError
from hitok.models.noise import position_noise
from hitok.models.restorer import Restorer, RestorerConfig, with_noise_inputs

TINY = RestorerConfig(width=8, blocks=2, up_width=4)


def _trained(cfg: RestorerConfig = TINY) -> Restorer:
    torch.manual_seed(0)
    net = Restorer(cfg)
    with torch.no_grad():  # away from the small-started, zero-bias init, as a trained net is
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_position_noise_is_a_function_of_position_and_white():
    whole = position_noise(3, 96, 80)
    assert torch.equal(position_noise(3, 40, 24, top=30, left=50), whole[:, :, 30:70, 50:74])  # a tile of it
    assert torch.equal(position_noise(3, 96, 80), whole)
    around = position_noise(3, 100, 100, top=-35, left=-33)  # blocks on both sides of 0 (a padded tile's origin)
    assert torch.equal(position_noise(3, 10, 10, top=-5, left=-3), around[:, :, 30:40, 30:40])
    blocks = [around[:, :, 35 + 32 * r:67 + 32 * r, 33 + 32 * c:65 + 32 * c].flatten()  # blocks -1, 0, 1 each way
              for r in (-1, 0, 1) for c in (-1, 0, 1)]
    assert all(not torch.equal(a, b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
    corr = torch.corrcoef(torch.stack(blocks))
    assert max(abs(corr[i, j].item()) for i in range(9) for j in range(i)) < 0.06  # 1/sqrt(3072) = 0.018
    assert abs(whole.mean()) < 0.03 and abs(whole.std() - 1) < 0.03
    assert 0.002 < (whole.abs() > 3).float().mean() < 0.004  # Gaussian as in training (0.27 % beyond 3 sigma)
    assert not torch.equal(position_noise(3, 96, 80, stream=1), whole)  # body noise and grain apart
    assert not torch.equal(whole[:, 0], whole[:, 1]) and not torch.equal(whole[:, :, :48], whole[:, :, 48:])
    power = np.abs(np.fft.fft2(whole[0].numpy())) ** 2  # (3, 96, 80): flat, no peak a pattern would give
    power[:, 0, 0] = power[:, 1:, :].mean()
    assert power.max() / power.mean() < 15  # the largest of 23 k exponential samples is ~10x their mean


@pytest.mark.parametrize("grain, body_noise, gate", [(4, False, False), (0, True, False), (4, True, True)])
def test_with_noise_inputs_keeps_the_output_and_trains_the_noise_inputs(grain, body_noise, gate):
    net = _trained().eval()
    grained = with_noise_inputs(net, grain, body_noise, noise_gate=gate).eval()
    lr = torch.rand(2, 3, 12, 10)
    assert grained.config == RestorerConfig(8, 2, up_width=4, grain=grain, body_noise=body_noise, noise_gate=gate)
    assert torch.equal(net(lr), grained(lr))
    out = grained.train()(lr)
    out.square().mean().backward()
    if grain:
        assert grained.grain_out.weight.grad.abs().sum() > 0  # the zero-started branch gets a gradient at once
    if body_noise:
        assert grained.noise_scale.grad.abs().sum() > 0  # and so do the zero-started noise scales
    if gate:  # at noise scale 0 the gate has nothing to gate; with noise on it learns at once
        grained.zero_grad()
        with torch.no_grad():
            grained.noise_scale.fill_(0.1)
        grained(lr).square().mean().backward()
        assert grained.noise_gate.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="already"):
        with_noise_inputs(grained, 4)


@pytest.mark.parametrize("grain, body_noise", [(4, False), (0, True)])
def test_trained_noise_inputs_draw_noise_fixed_at_inference_random_in_training(grain, body_noise):
    grained = with_noise_inputs(_trained(), grain, body_noise)
    with torch.no_grad():
        if grain:
            grained.grain_out.weight.normal_(0, 0.1)
        else:
            grained.noise_scale.fill_(0.5)
    lr = torch.rand(1, 3, 12, 10)
    grained.eval()
    assert torch.equal(grained(lr), grained(lr))  # the same image on every run
    grained.train()
    assert not torch.equal(grained(lr), grained(lr))
    grained.eval()
    without = with_noise_inputs(_trained(), grain, body_noise).eval()
    assert (grained(lr) - without(lr)).abs().mean() > 1e-3


def test_train_restorer_adds_grain_to_its_init(tmp_path, photos):
    from hitok.train.restorer import RestorerTraining, load_weights, save_weights, train_restorer

    init = tmp_path / "faithful.safetensors"
    save_weights(init, _trained(), None, {"steps": "10"})
    cfg = RestorerTraining(data=str(photos), out=str(tmp_path / "run"), batch_size=2, lr_crop=12, minutes=0.03,
                           bf16=False, init=str(init), grain=4, stats_weight=0.0)
    train_restorer(cfg, log=lambda _m: None)
    model_cfg, state, _, _ = load_weights(tmp_path / "run" / "continuation.safetensors")
    assert model_cfg.grain == 4 and state["up2.weight"].shape[0] == (3 + 4) * 4
    assert not torch.equal(state["grain_out.weight"], torch.zeros_like(state["grain_out.weight"]))
    before = load_file(str(init))["model.up2.weight"]
    assert state["up2.weight"][:12].shape == before.shape
    train_restorer(cfg, log=lambda _m: None)  # resumes with the branch (the checkpoint's network)


def test_grain_only_trains_the_branch_and_nothing_else(tmp_path, photos):
    from hitok.train.restorer import RestorerTraining, load_weights, save_weights, train_restorer

    init = tmp_path / "faithful.safetensors"
    save_weights(init, _trained(), None, {"steps": "10"})
    cfg = RestorerTraining(data=str(photos), out=str(tmp_path / "run"), batch_size=2, lr_crop=12, minutes=0.03,
                           bf16=False, init=str(init), grain=4, grain_only=True, learning_rate=1e-2)
    train_restorer(cfg, log=lambda _m: None)
    _, before, _, _ = load_weights(init)
    _, after, _, _ = load_weights(tmp_path / "run" / "continuation.safetensors")
    changed = {k for k in after if k not in before or not torch.equal(after[k][: len(before[k])], before[k])}
    assert changed == {"grain_out.weight", "grain_out.bias", "grain_scale"}  # up2's colour rows untouched
    assert not torch.equal(after["up2.weight"][12:], with_noise_inputs(_trained(), 4).up2.weight[12:])  # its maps' rows
    with pytest.raises(ModelFileError, match="with the --grain-only"):  # would train every weight
        train_restorer(dataclasses.replace(cfg, grain_only=False), log=lambda _m: None)
    with pytest.raises(ValueError, match="give init"):
        train_restorer(RestorerTraining(data=str(photos), out=str(tmp_path / "r3"), body_noise=True, minutes=0.01),
                       log=lambda _m: None)
    with pytest.raises(ValueError, match="grain branch"):
        train_restorer(RestorerTraining(data=str(photos), out=str(tmp_path / "r2"), init=str(init), grain_only=True,
                                        minutes=0.01), log=lambda _m: None)


def test_the_noise_gate_can_shut_the_noise():
    gated = with_noise_inputs(_trained(), 0, True, noise_scale=0.5, noise_gate=True).eval()
    plain = with_noise_inputs(_trained(), 0, True, noise_scale=0.0).eval()
    lr = torch.rand(1, 3, 12, 10)
    assert (gated(lr) - plain(lr)).abs().mean() > 1e-3  # gate 1 at the start: the noise passes
    with torch.no_grad():
        gated.noise_gate.bias.fill_(-0.2)
    torch.testing.assert_close(gated(lr), plain(lr))


def test_the_gate_sees_flatness_so_it_can_shut_the_noise_on_flat_areas_only():
    """flatness: about -2 on a flat LR, above 0 on texture; a gate weighting it (1 + 10 x 0.1 x flatness) passes the
    noise on the textured half and shuts it on the flat half."""
    from hitok.models.restorer import flatness

    lr = torch.full((1, 3, 24, 48), 0.5)
    lr[..., 24:] += 0.2 * torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    f = flatness(lr)
    assert f.shape == (1, 1, 24, 48) and abs(f[..., :20].mean().item() + 2) < 0.01 and f[..., 28:].min() > 0.5
    gated = with_noise_inputs(_trained(), 0, True, noise_scale=0.5, noise_gate=True).eval()
    plain = with_noise_inputs(_trained(), 0, True, noise_scale=0.0).eval()
    with torch.no_grad():
        gated.noise_gate.weight[:, -1] = 0.1
        out, ref = gated(lr), plain(lr)
    reach = 4 * gated.reach
    torch.testing.assert_close(out[..., :96 - reach], ref[..., :96 - reach])  # flat half: no noise
    assert (out[..., 96 + reach:] - ref[..., 96 + reach:]).abs().mean() > 1e-3


def test_the_noise_mask_reads_a_noisy_flat_lr_as_flat_and_shuts_the_noise_there():
    """structure: the LR luma's local std after a 1 px blur, in grey levels. Sensor noise of 5 grey levels on a
    flat LR (as the eval's compressed track has) reads ~1.2, stripes 4 px wide of +-20 levels ~15 (the unblurred
    std of the noisy flat half, what `flatness` reads, is ~5; 2 px stripes read ~6: the finest texture is
    partly masked); the mask at 4 levels passes the noise on the texture and ~1/10 of it on the noisy flat
    half, and shuts it on a clean flat LR."""
    from hitok.models.restorer import flat_mask, structure

    gen = torch.Generator().manual_seed(0)
    lr = torch.full((1, 3, 32, 64), 0.5) + 5 / 255 * torch.randn(1, 1, 32, 64, generator=gen)
    lr[..., 32:] = 0.5 + 20 / 255 * (torch.arange(32) // 4 % 2 * 2 - 1).float().view(1, 1, 1, 32)
    s = structure(lr)
    assert s.shape == (1, 1, 32, 64)
    assert s[..., 4:24].mean() < 2 and s[..., 40:60].min() > 8, (s[..., 4:24].mean(), s[..., 40:60].min())
    m = flat_mask(lr, 4.0)
    assert m[..., 4:24].mean() < 0.15 and m[..., 40:60].min() > 0.8
    masked = with_noise_inputs(_trained(), 0, True, noise_scale=0.5, noise_mask=4.0).eval()
    plain = with_noise_inputs(_trained(), 0, True, noise_scale=0.0).eval()
    flat = torch.full((1, 3, 16, 16), 0.3)
    with torch.no_grad():
        torch.testing.assert_close(masked(flat), plain(flat))  # nothing to mask in: no noise at all
        assert (masked(lr) - plain(lr))[..., 4 * 40:].abs().mean() > 1e-3  # the texture keeps it


def test_the_flat_mask_is_fp32_under_autocast_and_reaches_its_blur_and_window():
    """Under a bf16 / fp16 autocast (training's default, GPU inference) the blur convs would run in half
    precision and mean(y^2) - mean(y)^2 would lose a bright sky's few grey levels of variance: the mask must read
    the same as in fp32. Its reach: a crop's structure matches the whole picture's from MASK_RADIUS +
    FLAT_WINDOW // 2 px inside the crop's edge on (and the restorer's reach counts it), not nearer."""
    from hitok.models.restorer import FLAT_WINDOW, MASK_RADIUS, flat_mask, structure

    gen = torch.Generator().manual_seed(1)
    sky = 0.85 + 3 / 255 * torch.randn(1, 3, 32, 32, generator=gen)
    want = flat_mask(sky, 3.0)
    assert want.mean() < 0.2  # flat: mostly shut
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            got = flat_mask(sky, 3.0)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="> 0"):
        flat_mask(sky, 0.0)
    picture = torch.rand(1, 3, 40, 40, generator=gen)
    r = MASK_RADIUS + FLAT_WINDOW // 2
    whole, crop = structure(picture), structure(picture[:, :, 10:30, 10:30])
    torch.testing.assert_close(crop[..., r:-r, r:-r], whole[..., 10 + r:30 - r, 10 + r:30 - r])
    assert (crop[..., r - 1, r:-r] - whole[..., 10 + r - 1, 10 + r:30 - r]).abs().max() > 1e-3
    net = with_noise_inputs(_trained(), 0, True, noise_scale=0.5, noise_mask=3.0)
    assert net.reach == with_noise_inputs(_trained(), 0, True, noise_scale=0.5).reach + r - 1


def test_train_restorer_masks_the_noise_of_a_texture_init_and_refuses_an_init_without_noise(tmp_path, photos):
    from typer.testing import CliRunner

    from hitok.cli.app import app
    from hitok.train.restorer import RestorerTraining, load_weights, save_weights, train_restorer

    faithful, textured = tmp_path / "faithful.safetensors", tmp_path / "textured.safetensors"
    save_weights(faithful, _trained(), None, {})
    save_weights(textured, with_noise_inputs(_trained(), 0, True, noise_scale=0.1), None, {})
    cfg = RestorerTraining(data=str(photos), out=str(tmp_path / "run"), batch_size=2, lr_crop=12, minutes=0.03,
                           bf16=False, init=str(textured), noise_mask=3.0, stats_weight=0.0)
    train_restorer(cfg, log=lambda _m: None)
    assert load_weights(tmp_path / "run" / "continuation.safetensors")[0].noise_mask == 3.0
    r = CliRunner().invoke(app, ["train", "restorer", "--data", str(photos), "--out", str(tmp_path / "bad"),
                                 "--init", str(faithful), "--noise-mask", "3", "--minutes", "0.1"])
    assert r.exit_code == 1 and "add --body-noise" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "bad").exists()


def test_a_faithful_restorer_with_noise_is_refused_and_the_cli_checks_its_options(tmp_path, photos):
    from typer.testing import CliRunner

    from hitok.cli.app import app
    from hitok.models import HiTok, presets
    from hitok.models.sr_model import with_restorer

    noisy = with_noise_inputs(_trained(), body_noise=True, noise_scale=0.1)
    with pytest.raises(ValueError, match="no noise inputs"):
        with_restorer(HiTok(presets.tiny()), noisy)
    for extra in [{"noise_gate": True}, {"noise_mask": 4.0}]:
        with pytest.raises(ValueError, match="needs body noise"):
            RestorerConfig(8, 2, up_width=4, **extra)
    base = ["train", "restorer", "--data", str(photos), "--out", str(tmp_path / "run"), "--minutes", "0.1"]
    for extra, message in [(["--body-noise"], "give --init"), (["--noise-gate"], "add --body-noise"),
                           (["--noise-mask", "4"], "give --init"),
                           (["--grain-only"], "add --grain"),
                           (["--flat-degraded-only"], "add --flat-weight"),
                           (["--flat-degraded-only", "--flat-weight", "5", "--clean-share", "1"],
                            "no crop is degraded")]:
        r = CliRunner().invoke(app, base + extra)
        assert r.exit_code == 1 and message in r.output, r.output


@pytest.mark.parametrize("grain, body_noise, gate, mask", [(4, False, False, 0), (0, True, False, 0),
                                                           (0, True, True, 0), (0, True, False, 4.0)])
def test_a_tile_draws_the_whole_pictures_noise_at_its_origin(grain, body_noise, gate, mask):
    """origin is in LR pixels: the body noise is drawn there, the grain (output resolution) at 4x it; the gate's
    flatness window widens the reach by one LR px, the mask's blur and window by four."""
    net = with_noise_inputs(_trained(), grain, body_noise, noise_scale=0.5, noise_gate=gate, noise_mask=mask).eval()
    with torch.no_grad():
        if grain:
            net.grain_out.weight.normal_(0, 0.3)
        if gate:
            net.noise_gate.weight.normal_(0, 0.3)
    lr = torch.rand(1, 3, 48, 48)
    top, left, side, margin = 8, 12, 32, net.reach + 1
    with torch.inference_mode():
        whole = net(lr)
        tile = net(lr[:, :, top:top + side, left:left + side], origin=(top, left))
        shifted = net(lr[:, :, top:top + side, left:left + side], origin=(top, left + 1))
    inner = slice(4 * margin, 4 * (side - margin))
    want = whole[:, :, 4 * top:4 * (top + side), 4 * left:4 * (left + side)][:, :, inner, inner]
    torch.testing.assert_close(tile[:, :, inner, inner], want, atol=1e-5, rtol=0)
    assert (shifted[:, :, inner, inner] - want).abs().mean() > 1e-3


def test_average_live_snapshots_is_the_mean_of_those_from_the_given_minute(tmp_path):
    from hitok.errors import ModelFileError
    from hitok.train.restorer import average_live_snapshots, load_weights, save_weights

    live = tmp_path / "run" / "snapshots" / "live"
    live.mkdir(parents=True)
    nets = [_trained() for _ in range(3)]
    for i, net in enumerate(nets):
        with torch.no_grad():
            net.head.bias.fill_(float(i))
        save_weights(live / f"min{2.5 * i:07.1f}.safetensors", net, None, {"minutes": f"{2.5 * i:.2f}"})
    assert average_live_snapshots(tmp_path / "run", tmp_path / "avg.safetensors", from_minutes=2) == 2
    _, state, _, meta = load_weights(tmp_path / "avg.safetensors")
    torch.testing.assert_close(state["head.bias"], torch.full_like(state["head.bias"], 1.5))  # (1 + 2) / 2
    assert meta["averaged_snapshots"] == "2"
    with pytest.raises(ModelFileError, match="no live snapshots"):
        average_live_snapshots(tmp_path / "run", tmp_path / "x.safetensors", from_minutes=60)


def test_a_weights_file_with_the_old_head_only_gate_is_refused_by_name(tmp_path):
    from torch import nn

    from hitok.train.restorer import load_weights, save_weights

    net = with_noise_inputs(_trained(), 0, True, noise_scale=0.1, noise_gate=True)
    save_weights(tmp_path / "new.safetensors", net, None, {})
    assert load_weights(tmp_path / "new.safetensors")[0].noise_gate
    net.noise_gate = nn.Conv2d(TINY.width, TINY.width, 1)  # the gate as it was: head output only
    save_weights(tmp_path / "old.safetensors", net, None, {})
    with pytest.raises(ModelFileError, match="reads the head output only"):
        load_weights(tmp_path / "old.safetensors")
