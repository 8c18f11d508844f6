"""A model file's metadata is held to limits before anything is built.

Each hostile file is the tiny model with its config edited: what it asks for (the network, a file
elsewhere on disk, 137 GB, NaN weights) must be refused with one line, by ``upscale`` as by
``models add``, and quickly: nothing is downloaded or opened first, and no more than the limit allocated.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cli_corpus import save_png, smooth_rgb
from cli_helpers import files_in, hitok, one_error_line
from hitok.models import HiTok, ModelFileError, load_model_file, presets, read_metadata, save_model
from hitok.models.alloc_limit import AllocationLimit, AllocationLimitExceeded
from hitok.models.io import MAX_PARAMS, check_config, parameter_count

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_vfm_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vfm") / "tiny_vfm.safetensors"
    save_model(HiTok(presets.tiny(vfm=True)), path)
    return path


def edited(src: Path, dest: Path, edit=None, tensors=None) -> Path:
    """A copy of the model file ``src`` with ``edit(config_dict)`` applied to its config and ``tensors(state)``
    to its weights."""
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    state = load_file(str(src))
    cfg = json.loads(meta["config"])
    if edit:
        edit(cfg)
    if tensors:
        tensors(state)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dest), metadata={**meta, "config": json.dumps(cfg)})
    return dest


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse at once) every name lookup; the test asserts there were none."""
    lookups = []

    def lookup(*args, **kwargs):
        lookups.append(args[0])
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    return lookups


def refused(model: Path, tmp_path: Path) -> str:
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    result = hitok("upscale", src, "--model", model)
    assert result.exit_code == 1
    assert not (tmp_path / "p_x4.png").exists()
    return one_error_line(result)


def test_pretrained_vfm_is_built_offline_and_fails_fast(tmp_path, tiny_vfm_path, no_network):
    def pretrained(cfg):
        cfg["vfm"]["weights"] = "pretrained"

    model = edited(tiny_vfm_path, tmp_path / "m" / "pre.safetensors", pretrained)
    start = time.perf_counter()
    line = refused(model, tmp_path)
    assert time.perf_counter() - start < 20 and "cannot build" in line and "pretrained" in line
    assert no_network == []


@pytest.mark.parametrize("name", ["hf-hub:someone/backdoored-vit", "local-dir:/etc", "no_such_architecture"])
def test_vfm_names_that_timm_would_fetch_are_refused(tmp_path, tiny_vfm_path, no_network, name):
    def rename(cfg):
        cfg["vfm"]["name"] = name

    line = refused(edited(tiny_vfm_path, tmp_path / "m" / "hub.safetensors", rename), tmp_path)
    assert "not a timm architecture name" in line and no_network == []


def test_vfm_weights_outside_the_models_folder_are_refused(tmp_path, tiny_vfm_path):
    outside = tmp_path / "elsewhere" / "backbone.safetensors"
    outside.parent.mkdir()
    save_file({"x": torch.zeros(1)}, str(outside))
    for weights in (str(outside), "../elsewhere/backbone.safetensors", "../../../etc/passwd"):
        def point(cfg, weights=weights):
            cfg["vfm"]["weights"] = weights

        line = refused(edited(tiny_vfm_path, tmp_path / "m" / "path.safetensors", point), tmp_path)
        assert "in its own folder" in line, weights


def test_timm_keyword_arguments_must_be_plain_numbers(tmp_path, tiny_vfm_path):
    def sneak(cfg):
        cfg["vfm"]["model_kwargs"]["checkpoint_path"] = "/etc/passwd"

    line = refused(edited(tiny_vfm_path, tmp_path / "m" / "kw.safetensors", sneak), tmp_path)
    assert "plain-number keyword arguments" in line


def test_a_config_asking_for_137_gb_is_refused_before_the_limit_is_allocated(tmp_path, tiny_model_path):
    def huge(cfg):
        cfg["generator"].update(dim=8192, depth=64, heads=64)

    start = time.perf_counter()
    line = refused(edited(tiny_model_path, tmp_path / "m" / "huge.safetensors", huge), tmp_path)
    assert "M parameters" in line and "above the limit of 537 M" in line
    assert time.perf_counter() - start < 20


def test_the_allocation_limit_refuses_the_call_that_would_pass_it_before_allocating():
    with AllocationLimit(1000) as limit:
        torch.empty(10, 10)
        torch.zeros((20, 20))
        torch.randn(size=(5, 40))
        torch.full((10, 10), 1.0)
        assert limit.allocated == 800
        with pytest.raises(AllocationLimitExceeded):
            torch.ones(201)
        assert limit.allocated == 800  # the refused call allocated nothing
        torch.ones(200)
    assert limit.allocated == 1000


@pytest.mark.parametrize("make", [presets.tiny, presets.small, lambda: presets.tiny(vfm=True)])
def test_the_allocation_limit_sees_every_parameter_a_build_allocates(make):
    """The limit stands in for a parameter count: what it counts while a model is built must cover the model."""
    with AllocationLimit(MAX_PARAMS) as limit:
        model = HiTok(make())
    held = sum(t.numel() for t in [*model.parameters(), *model.buffers()])
    assert 0.99 * held <= limit.allocated <= 1.01 * held
    with pytest.raises(AllocationLimitExceeded), AllocationLimit(held // 2):
        HiTok(make())


@pytest.mark.parametrize("field,value,needle", [
    (("tokenizer", "dec_depth"), 10**9, "outside 0..64"),
    (("generator", "dim"), -4, "outside 0..8192"),
    (("tokenizer", "codebook_size"), 70000, "outside 0..65536"),
    (("generator", "mlp_ratio"), float("nan"), "finite number"),
    (("tokenizer", "conv_widths"), [8] * 100, "at most 16 entries"),
    (("generator", "depth"), "1", "must be an integer"),
])
def test_config_fields_are_held_to_their_types_and_limits(tmp_path, tiny_model_path, field, value, needle):
    def set_field(cfg):
        cfg[field[0]][field[1]] = value

    line = refused(edited(tiny_model_path, tmp_path / "m" / "f.safetensors", set_field), tmp_path)
    assert needle in line


def test_nan_weights_are_refused_at_add_and_at_load(tmp_path, tiny_model_path, user_models):
    def poison(state):
        name = next(k for k, v in sorted(state.items()) if v.is_floating_point())
        state[name] = state[name].clone()
        state[name].view(-1)[0] = float("nan")

    model = edited(tiny_model_path, tmp_path / "m" / "nan.safetensors", tensors=poison)
    added = hitok("models", "add", model)
    assert added.exit_code == 1 and "NaN or inf" in one_error_line(added)
    assert not user_models.exists() or files_in(user_models) == []
    assert "NaN or inf" in refused(model, tmp_path)


def test_the_shipped_presets_are_within_the_limits():
    for make in (presets.tiny, presets.small, lambda: presets.paper(vfm_weights="none")):
        cfg = make()
        assert parameter_count(cfg) <= MAX_PARAMS
        assert check_config(json.loads(json.dumps(dataclasses.asdict(cfg))), Path(".")) == cfg


def test_the_shipped_model_loads_as_untrusted():
    path = Path(__file__).resolve().parents[1] / "hitok" / "weights" / "default.safetensors"
    if not path.is_file():
        pytest.skip("no shipped model in this checkout")
    check_config(json.loads(read_metadata(path)["config"]), path.parent, untrusted=True)


def test_trusted_loading_keeps_vfm_weights_paths(tmp_path, tiny_vfm_path):
    """Training's own checkpoints may still name a backbone file anywhere (untrusted=False)."""
    backbone = tmp_path / "elsewhere" / "b.safetensors"
    backbone.parent.mkdir()

    def point(cfg):
        cfg["vfm"]["weights"] = str(backbone)

    model = edited(tiny_vfm_path, tmp_path / "m" / "t.safetensors", point)
    with pytest.raises(ModelFileError, match="in its own folder"):
        load_model_file(model, untrusted=True)
    with pytest.raises(ModelFileError, match="existing .safetensors"):  # the file is looked for, not refused
        load_model_file(model)
