"""The texture dial: a second restorer of the same shape (trained on a teacher, train/teacher.py) whose weights
the restorer's are interpolated towards (models/sr_model.py HiTok.restore), through the Upscaler, batch records
and the command line."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hitok.batch_plan import record_settings
from hitok.cli.app import app
from hitok.models import HiTok, Restorer, RestorerConfig, load_model_file, presets, save_model
from hitok.models.errors import SettingError
from hitok.models.sr_model import with_restorer, with_texture
from hitok.models.summary import summarize
from hitok.upscaler import Upscaler

TINY = RestorerConfig(width=8, blocks=2, up_width=4)


def _restorer(seed: int) -> Restorer:
    torch.manual_seed(seed)
    net = Restorer(TINY)
    with torch.no_grad():  # wake the small-started last layer so the two restorers differ clearly
        net.up2.weight.normal_(0, 0.3)
    return net


def _model(texture: float = 0.0) -> HiTok:
    return with_texture(with_restorer(HiTok(presets.tiny()), _restorer(0)), _restorer(1), texture).eval()


def test_texture_interpolates_the_weights_at_one_networks_cost():
    model = _model()
    lr = torch.rand(1, 3, 16, 16)
    mixed = Restorer(TINY)
    mixed.load_state_dict({k: (a + b) / 2 for (k, a), b in zip(model.restorer.state_dict().items(),
                                                               model.texture_restorer.state_dict().values())})
    with torch.inference_mode():
        assert torch.equal(model.upscale(lr), model.restorer(lr))  # the default texture is 0
        assert torch.equal(model.upscale(lr, texture=1.0), model.texture_restorer(lr))
        half = model.upscale(lr, texture=0.5)
        assert torch.allclose(half, mixed(lr), atol=1e-5)  # the weights are mixed, not the images
        assert not torch.allclose(half, (model.restorer(lr) + model.texture_restorer(lr)) / 2, atol=1e-3)
        w_half = model.upscale(lr, fidelity=0.5, texture=1.0)
        tokens = model.decode_indices(model.predict_indices(lr))
        assert torch.allclose(w_half, (tokens + model.texture_restorer(lr)) / 2, atol=1e-6)
    plain = summarize(with_restorer(HiTok(presets.tiny()), _restorer(0)).config)
    textured = summarize(model.config)
    assert textured["total_macs"] == plain["total_macs"]
    assert textured["params"]["texture_restorer"] == textured["params"]["restorer"] > 0


def test_texture_is_checked_and_kept_in_the_file(tmp_path):
    with pytest.raises(SettingError, match="no texture restorer"):
        with_restorer(HiTok(presets.tiny()), _restorer(0)).upscale(torch.rand(1, 3, 8, 8), texture=0.5)
    with pytest.raises(SettingError, match="between 0 and 1"):
        _model().texture_setting(1.5)
    with pytest.raises(ValueError, match="shape of the model's restorer"):
        with_texture(with_restorer(HiTok(presets.tiny()), _restorer(0)), Restorer(RestorerConfig(4, 1, up_width=4)))
    with pytest.raises(ValueError, match="needs a restorer"):
        dataclasses.replace(presets.tiny(), texture_restorer=True)
    model = _model(texture=0.25)
    save_model(model, tmp_path / "t.safetensors")
    back = load_model_file(tmp_path / "t.safetensors")
    assert back.config.texture == 0.25 and back.config.texture_restorer
    lr = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(back.upscale(lr), model.upscale(lr), atol=1e-6)


def test_upscaler_cli_and_batch_records(tmp_path):
    lr = torch.rand(1, 3, 8, 8)
    assert Upscaler(_model(), "cpu", "fp32", texture=0.5).warnings == []
    said = Upscaler(_model(), "cpu", "fp32", fidelity=0.0, texture=0.5).warnings
    assert said and "texture 0.5 changes nothing at fidelity 0" in said[0]
    assert "texture" not in record_settings("m", 4, 1.0, True, texture=0.0)  # records look as they did before
    assert record_settings("m", 4, 1.0, True, texture=0.5)["texture"] == 0.5
    path = tmp_path / "t.safetensors"
    save_model(_model(), path)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    outs = {}
    for t in ("0", "1"):
        out = tmp_path / f"out{t}.png"
        r = CliRunner().invoke(app, ["upscale", str(tmp_path / "in.png"), "-m", str(path), "-o", str(out),
                                     "--texture", t, "--device", "cpu", "--precision", "fp32", "--json"])
        assert r.exit_code == 0, r.output
        outs[t] = np.asarray(Image.open(out)).astype(int)
    assert np.abs(outs["0"] - outs["1"]).mean() > 1  # the dial moves the picture
    r = CliRunner().invoke(app, ["upscale", str(tmp_path / "in.png"), "-m", str(path), "--texture", "2"])
    assert r.exit_code != 0 and "texture 2: must be between 0 and 1" in r.output


def test_train_attach_adds_a_texture_restorer(tmp_path):
    from hitok.train.restorer import save_weights

    base = tmp_path / "base.safetensors"
    save_model(HiTok(presets.tiny()), base)
    faithful, textured = _restorer(0), _restorer(1)
    save_weights(tmp_path / "f.safetensors", faithful, None, {"steps": "10"})
    save_weights(tmp_path / "t.safetensors", textured, None, {"steps": "20"})
    save_weights(tmp_path / "other.safetensors", Restorer(RestorerConfig(4, 1, up_width=4)), None, {})
    out = tmp_path / "m.safetensors"
    args = ["train", "attach", str(tmp_path / "f.safetensors"), "-o", str(out), "--base", str(base)]
    r = CliRunner().invoke(app, args + ["--texture-from", str(tmp_path / "t.safetensors"), "--texture", "0.3"])
    assert r.exit_code == 0, r.output
    model = load_model_file(out)
    assert model.config.texture == 0.3 and model.metadata["texture_steps"] == "20"
    lr = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(model.upscale(lr, texture=1.0), textured(lr), atol=5e-3)  # fp16 file
    r = CliRunner().invoke(app, args + ["--texture-from", str(tmp_path / "other.safetensors"), "--overwrite"])
    assert r.exit_code == 1 and "shape of the model's restorer" in r.output
    r = CliRunner().invoke(app, args + ["--texture", "0.3", "--overwrite"])
    assert r.exit_code == 1 and "need --texture-from" in r.output


def test_attach_masks_and_scales_a_texture_restorers_noise(tmp_path):
    """--noise-mask T / --noise-gain G at attach: the texture restorer's config gains the mask (kept in the file)
    and its noise scales are G times the trained ones; the faithful end is untouched."""
    from hitok.models.restorer import retuned_noise, with_noise_inputs
    from hitok.train.restorer import save_weights

    base = tmp_path / "base.safetensors"
    save_model(HiTok(presets.tiny()), base)
    textured = with_noise_inputs(_restorer(1), body_noise=True, noise_scale=0.5)
    save_weights(tmp_path / "f.safetensors", _restorer(0), None, {})
    save_weights(tmp_path / "t.safetensors", textured, None, {})
    out = tmp_path / "m.safetensors"
    r = CliRunner().invoke(app, ["train", "attach", str(tmp_path / "f.safetensors"), "-o", str(out), "--base",
                                 str(base), "--texture-from", str(tmp_path / "t.safetensors"), "--noise-mask", "3",
                                 "--noise-gain", "2"])
    assert r.exit_code == 0, r.output
    model = load_model_file(out).eval()
    assert model.config.texture_noise_mask == 3.0 and model.texture_restorer.config.noise_mask == 3.0
    assert model.metadata["texture_noise_gain"] == "2"
    want = retuned_noise(textured, 3.0, 2.0).eval()
    torch.testing.assert_close(model.texture_restorer.noise_scale, 2 * textured.noise_scale.detach(), atol=1e-3,
                               rtol=1e-3)  # fp16 file
    lr = torch.full((1, 3, 12, 24), 0.4)  # a flat half, where the mask shuts the noise, and a textured half
    lr[..., 12:] = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    unmasked = retuned_noise(textured, None, 2.0).eval()
    with torch.inference_mode():
        assert torch.allclose(model.upscale(lr, texture=1.0), want(lr), atol=5e-3)
        assert (model.upscale(lr, texture=1.0) - unmasked(lr))[..., :16].abs().max() > 0.05
        assert torch.allclose(model.upscale(lr), _restorer(0)(lr), atol=5e-3)
    with pytest.raises(ValueError, match="no body noise"):
        retuned_noise(_restorer(1), 3.0)


def test_eval_rows_and_figure_column(tmp_path):
    import hitok.bench.evaluate as ev

    path = tmp_path / "t.safetensors"
    save_model(_model(), path)
    methods, notes = ev.build_methods([str(path)], realesrgan=False, textures=(0.5, 1))
    names = [m.name for m in methods]
    assert names == ["bicubic", "hitok", "hitok texture 0.5", "hitok texture 1"] and not notes
    assert "texture 0.5," in methods[2].info
    lr = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert not np.array_equal(methods[1](lr), methods[3](lr))
    assert ev.figure_methods(names + ["hitok fidelity 0"]) == ["bicubic", "hitok", "hitok texture 1"]
    assert ev.figure_methods(["bicubic", "hitok", "hitok fidelity 0"]) == ["bicubic", "hitok", "hitok fidelity 0"]
    assert ev.figure_methods(["bicubic", "hitok", "hitok texture 0.6"]) == ["bicubic", "hitok", "hitok texture 0.6"]
    plain = tmp_path / "p.safetensors"
    save_model(with_restorer(HiTok(presets.tiny()), _restorer(0)), plain)
    _, notes = ev.build_methods([str(plain)], realesrgan=False, textures=(1,))
    assert notes == ["hitok: no texture restorer in this model, so no texture rows"]


def test_a_lazily_loaded_model_keeps_its_texture_restorer(tmp_path):
    path = tmp_path / "t.safetensors"
    model = _model()
    save_model(model, path)
    lazy = load_model_file(path, lazy=True)
    assert not lazy.token_path_built
    lr = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(lazy.upscale(lr, texture=0.5), model.upscale(lr, texture=0.5), atol=1e-6)
    assert not lazy.token_path_built  # fidelity 1 with texture still runs the restorers alone


def test_texture_0_overrides_the_files_default():
    model = _model(texture=0.3)
    lr = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(Upscaler(model, "cpu", "fp32", texture=0.0)._forward(lr, torch.float32),
                              model.restorer(lr), atol=1e-6)
        assert torch.allclose(Upscaler(model, "cpu", "fp32")._forward(lr, torch.float32),
                              model.upscale(lr, texture=0.3), atol=1e-6)


def test_a_new_restorer_drops_the_bases_texture_restorer():
    """The base's texture restorer was fine-tuned from the base's restorer: it cannot pair with another one."""
    replaced = with_restorer(_model(texture=0.3), _restorer(5))
    assert replaced.texture_restorer is None and replaced.config.texture == 0
    assert not any(k.startswith("texture_restorer.") for k in replaced.state_dict())


def _noisy_model(texture: float = 0.0) -> HiTok:
    """A texture restorer with gated body noise (models/restorer.py), the faithful one without."""
    from hitok.models.restorer import with_noise_inputs

    textured = with_noise_inputs(_restorer(1), body_noise=True, noise_scale=0.5, noise_gate=True)
    with torch.no_grad():
        textured.noise_gate.weight.normal_(0, 0.3)
    return with_texture(with_restorer(HiTok(presets.tiny()), _restorer(0)), textured, texture).eval()


def test_a_texture_restorer_with_noise_scales_it_from_zero_and_keeps_it_in_the_file(tmp_path):
    from hitok.models.restorer import with_noise_inputs

    model = _noisy_model()
    assert model.config.texture_noise and model.config.texture_noise_gate
    lr = torch.rand(1, 3, 16, 16)
    faithful_as_textured = with_noise_inputs(model.restorer, body_noise=True, noise_gate=True).eval()  # noise at 0
    with torch.inference_mode():
        assert torch.equal(model.upscale(lr), model.restorer(lr))
        assert torch.equal(model.upscale(lr, texture=1.0), model.texture_restorer(lr))
        mixed = Restorer(model.texture_restorer.config).eval()
        faithful = faithful_as_textured.state_dict()
        mixed.load_state_dict({k: torch.lerp(faithful[k], v, 0.5)
                               for k, v in model.texture_restorer.state_dict().items()})
        torch.testing.assert_close(model.upscale(lr, texture=0.5), mixed(lr))
        assert torch.equal(model.upscale(lr, texture=0.5), model.upscale(lr, texture=0.5))  # fixed noise
    save_model(model, tmp_path / "m.safetensors")
    loaded = load_model_file(tmp_path / "m.safetensors").eval()
    with torch.inference_mode():
        assert torch.equal(loaded.upscale(lr, texture=0.7), model.upscale(lr, texture=0.7))
    with pytest.raises(ValueError, match="shape of the model's restorer"):
        with_texture(model, with_noise_inputs(Restorer(dataclasses.replace(TINY, width=4)), body_noise=True))


@pytest.mark.parametrize("texture", [1.0, 0.5])
def test_tiles_draw_the_same_noise_as_the_whole_picture(texture):
    """The noise is tied to picture position (the Upscaler passes each tile's origin), so tiles of a textured
    picture agree with the whole-picture one as well as the faithful restorer's do (its tiles differ only
    within its reach of their edges, blended away); tiles that each drew their own noise would not."""
    model = _noisy_model()
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (64, 72, 3), dtype=np.uint8))

    def tiling_error(texture, upscaler=None):
        whole = np.asarray(Upscaler(model, texture=texture).upscale(small, tile=128), dtype=np.int16)
        tiled = (upscaler or Upscaler(model, texture=texture)).upscale(small, tile=32, overlap=12)
        return np.abs(np.asarray(tiled, dtype=np.int16) - whole).mean()

    faithful = tiling_error(0.0)
    assert tiling_error(texture) < 1.5 * faithful + 0.05
    unaligned = Upscaler(model, texture=texture)
    unaligned.tile_fn = lambda lr, origin=(0, 0): Upscaler.tile_fn(unaligned, lr)  # every tile at (0, 0)
    assert tiling_error(texture, unaligned) > 5 * faithful + 0.5
