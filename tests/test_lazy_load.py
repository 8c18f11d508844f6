"""Lazy loading (models/io.py ``load_model_file(..., lazy=True)``, what `hitok upscale` uses): a model with a
restorer builds and reads only the restorer, and its token path on first use, from the same file. It must give
exactly what an eagerly loaded model gives, at fidelity 1 without ever building the token path."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cli_corpus import smooth_rgb
from hitok import tokens as tokens_lib
from hitok.imageio import Picture
from hitok.models import HiTok, ModelFileError, Restorer, RestorerConfig, load_model_file, presets, save_model
from hitok.models.sr_model import with_restorer
from hitok.upscaler import Upscaler

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def restorer_model_path(tmp_path_factory):
    torch.manual_seed(0)
    restorer = Restorer(RestorerConfig(width=8, blocks=2, up_width=4))
    with torch.no_grad():  # wake the small-started last layer so the restorer differs from bicubic
        restorer.up2.weight.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("lazy") / "restorer.safetensors"
    save_model(with_restorer(HiTok(presets.tiny()), restorer, fidelity=1.0), path)
    return path


def _upscale(model: HiTok, fidelity: float) -> np.ndarray:
    out, _ = Upscaler(model, CPU, torch.float32, fidelity=fidelity).upscale_picture(Picture(pixels=smooth_rgb(40, 24)))
    return out.pixels


def test_fidelity_1_never_builds_the_token_path_and_gives_the_eager_output(restorer_model_path):
    lazy = load_model_file(restorer_model_path, lazy=True)
    assert not lazy.token_path_built
    assert sorted(lazy.state_dict()) == sorted(k for k in load_file(str(restorer_model_path)) if k.startswith("restorer."))
    got = _upscale(lazy, 1.0)
    assert not lazy.token_path_built
    assert np.array_equal(got, _upscale(load_model_file(restorer_model_path), 1.0))


def test_the_same_model_serves_fidelity_half_exactly_as_an_eager_one(restorer_model_path):
    lazy, eager = load_model_file(restorer_model_path, lazy=True), load_model_file(restorer_model_path)
    assert np.array_equal(_upscale(lazy, 1.0), _upscale(eager, 1.0))
    assert np.array_equal(_upscale(lazy, 0.5), _upscale(eager, 0.5))  # the token path is built here
    assert lazy.token_path_built and not lazy.training
    # built where the Upscaler had put the restorer: channels-last on the CPU, as the eager model's
    conv = next(p for p in lazy.tokenizer.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    lazy_state, eager_state = lazy.state_dict(), eager.state_dict()
    assert lazy_state.keys() == eager_state.keys()
    assert all(torch.equal(lazy_state[k], eager_state[k]) for k in eager_state)


def test_tokenize_on_a_lazily_loaded_model(restorer_model_path):
    lazy, eager = load_model_file(restorer_model_path, lazy=True), load_model_file(restorer_model_path)
    img = tokens_lib.picture_to_tensor(Picture(pixels=smooth_rgb(32, 32)))
    for source in ("hr", "lr"):
        assert torch.equal(tokens_lib.tokenize(lazy, img, source, "x").indices,
                           tokens_lib.tokenize(eager, img, source, "x").indices)


def test_a_model_without_a_restorer_loads_whole(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_model(HiTok(presets.tiny()), path)
    model = load_model_file(path, lazy=True)
    assert model.token_path_built and model.restorer is None
    assert model.state_dict().keys() == load_model_file(path).state_dict().keys()


def _edited(src, dest, edit=None, drop=None):
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    state = {k: v for k, v in load_file(str(src)).items() if k != drop}
    cfg = json.loads(meta["config"])
    if edit:
        edit(cfg)
    save_file(state, str(dest), metadata={**meta, "config": json.dumps(cfg)})
    return dest


def test_the_token_path_is_checked_as_strictly_when_it_loads(restorer_model_path, tmp_path):
    dropped = next(k for k in load_file(str(restorer_model_path)) if k.startswith("generator."))
    broken = load_model_file(_edited(restorer_model_path, tmp_path / "m.safetensors", drop=dropped), lazy=True)
    _upscale(broken, 1.0)  # the restorer alone: fine
    with pytest.raises(ModelFileError, match="missing"):
        _upscale(broken, 0.5)


def test_a_huge_token_path_is_refused_when_it_would_be_built(restorer_model_path, tmp_path):
    def huge(cfg):
        cfg["generator"].update(dim=8192, depth=64, heads=64)

    model = load_model_file(_edited(restorer_model_path, tmp_path / "huge.safetensors", huge), lazy=True)
    with pytest.raises(ModelFileError, match="above the limit of 537 M"):
        model.generator


def test_a_file_changed_since_the_load_is_refused(restorer_model_path, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(restorer_model_path.read_bytes())
    model = load_model_file(path, lazy=True)
    path.write_bytes(path.read_bytes() + b" ")  # another size: another file
    with pytest.raises(ModelFileError, match="changed since"):
        model.tokenizer


def test_a_failed_lazy_load_stays_failed_and_builds_outside_inference_mode(tmp_path):
    """A damaged token path fails on every use (never runs random weights); a good one, first used inside
    inference mode (as the Upscaler does), holds ordinary parameters."""
    good = tmp_path / "good.safetensors"
    save_model(with_restorer(HiTok(presets.tiny()), Restorer(RestorerConfig(8, 1, up_width=4))), good)
    lr = torch.rand(1, 3, 8, 8)
    lazy = load_model_file(good, lazy=True)
    with torch.inference_mode():
        lazy.upscale(lr, fidelity=0.5)
    assert lazy.token_path_built and not any(p.is_inference() for p in lazy.parameters())

    state = load_file(str(good))
    name = next(k for k in state if k.startswith("generator.") and state[k].is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    bad = tmp_path / "bad.safetensors"
    with safe_open(str(good), "pt") as f:
        save_file(state, str(bad), metadata=f.metadata())
    lazy = load_model_file(bad, lazy=True)
    for _ in range(2):
        with pytest.raises(ModelFileError, match="NaN"), torch.inference_mode():
            lazy.upscale(lr, fidelity=0.5)
        assert not lazy.token_path_built
