"""The shipped default model: present as package data, self-describing, small, and usable offline."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hitok.cli import model_store
from hitok.cli.imageio import Picture
from hitok.cli.upscale import Upscaler
from hitok.models import read_metadata

from cli_corpus import smooth_rgb

PATH = model_store.default_model_path()
pytestmark = pytest.mark.skipif(not PATH.is_file(), reason="no shipped default in this checkout")


def test_shipped_default_is_a_small_fp16_bundle_under_60_mb():
    assert PATH.stat().st_size <= 60 * 2**20
    meta = read_metadata(PATH)
    assert meta["preset"] == "small" and meta["exported_half"] == "true" and meta["vfm"] == "none"


def test_shipped_default_upscales_close_to_the_input():
    loaded = model_store.load(None, torch.device("cpu"))
    assert loaded.model.config.name == "small" and loaded.model.has_encoder  # tokenize --source hr works
    rgb = smooth_rgb(32, 48, seed=4)
    up = Upscaler(loaded.model, torch.device("cpu"), torch.float32)
    out, _ = up.upscale_picture(Picture(pixels=rgb))
    assert out.pixels.shape == (128, 192, 3) and out.pixels.dtype == np.uint8
    # a trained model keeps a smooth photo's content: its 4x4 block means stay near the input
    means = out.pixels.astype(np.float32).reshape(32, 4, 48, 4, 3).mean(axis=(1, 3))
    assert np.abs(means - rgb).mean() < 6
