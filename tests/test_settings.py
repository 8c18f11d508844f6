"""Detail and fidelity are checked in one place, the model (models/sr_model.py ``HiTok.settings``): every entry point
(the model, its config, the library's Upscaler, the command line) refuses a bad value with the same one line."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import hitok
from cli_corpus import save_png, smooth_rgb
from cli_helpers import hitok as run_hitok, one_error_line
from hitok.models import SettingError, presets

# the tiny preset: 2 token groups, no restorer and no LR guide (only fidelity 0 is possible)
BAD = [
    ("fidelity", 1.5, "fidelity 1.5: must be between 0 and 1"),
    ("fidelity", -0.25, "fidelity -0.25: must be between 0 and 1"),
    ("fidelity", 0.5, "fidelity 0.5: this model has no faithful path (no restorer or LR guide); only 0 is possible"),
    ("detail", 3, "detail 3: this model has 2 token groups; use 1..2"),
    ("detail", 0, "detail 0: this model has 2 token groups; use 1..2"),
]


@pytest.mark.parametrize("name, value, message", BAD)
def test_a_bad_setting_is_refused_with_one_message_everywhere(tiny_model, tiny_model_path, tmp_path, name, value,
                                                              message):
    model_kw = {"detail": "detail", "fidelity": "fidelity"}[name]
    with pytest.raises(SettingError) as err:
        tiny_model.upscale(torch.rand(1, 3, 8, 8), **{model_kw: value})
    assert str(err.value) == message
    if name == "fidelity":  # the config holds a default fidelity, not a detail
        with pytest.raises(SettingError) as err:
            dataclasses.replace(presets.tiny(), fidelity=value)
        assert str(err.value) == message
    with pytest.raises(hitok.UserError) as err:  # what a Python user catches
        hitok.Upscaler(tiny_model, "cpu", "fp32", **{name: value})
    assert str(err.value) == message
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    result = run_hitok("upscale", src, "--model", tiny_model_path, f"--{name}", value)
    assert result.exit_code == 1 and one_error_line(result) == f"error: {message}"
    assert not (tmp_path / "p_x4.png").exists()


def test_good_settings_and_defaults(tiny_model):
    assert tiny_model.settings() == (2, 0.0)  # all groups, the config's fidelity
    assert tiny_model.settings(1, 0) == (1, 0.0)
    with pytest.raises(SettingError, match=r"^detail 1.5: this model has 2 token groups; use 1..2$"):
        tiny_model.settings(1.5)  # a number of groups is whole (the command line's --detail takes integers only)
    guided = dataclasses.replace(presets.tiny(), tokenizer=dataclasses.replace(presets.tiny().tokenizer,
                                                                               guide_width=8), fidelity=0.5)
    assert guided.fidelity == 0.5  # a faithful path: any fidelity in [0, 1]
    with pytest.raises(SettingError, match="^fidelity 2: must be between 0 and 1$"):
        dataclasses.replace(guided, fidelity=2.0)


def test_detokenize_takes_the_models_check_of_detail(tiny_model_path, tmp_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    codes = tmp_path / "codes.safetensors"
    assert run_hitok("tokenize", src, "--out", codes, "--source", "lr", "--model", tiny_model_path).exit_code == 0
    result = run_hitok("detokenize", codes, "-o", tmp_path / "back.png", "--model", tiny_model_path, "--detail", 3)
    assert result.exit_code == 1
    assert one_error_line(result) == "error: detail 3: this model has 2 token groups; use 1..2"
    assert not (tmp_path / "back.png").exists()
