"""Fixtures every test module may use without importing them (pytest finds this file).

Helpers that are plain functions (generated images in cli_corpus.py, CliRunner calls in cli_helpers.py) are
imported by name as usual; only fixtures live here. The ``slow`` marker is registered in pyproject.toml."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def user_models(tmp_path, monkeypatch) -> Path:
    """Never touch the real user data folder: every test gets an empty one of its own."""
    folder = tmp_path / "user-models"
    monkeypatch.setenv("HITOK_MODELS_DIR", str(folder))
    monkeypatch.delenv("HITOK_MODEL", raising=False)
    return folder


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A randomly initialised tiny HiTok saved once per session (no trained weights needed)."""
    from hitok.models import HiTok, presets, save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(HiTok(presets.tiny()), path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    from hitok.models import load_model_file

    return load_model_file(tiny_model_path)


@pytest.fixture
def windowed_tiny():
    """The tiny preset with 2x2-token windows in the generator (2 blocks, one shifted) and the decoder."""
    from hitok.models import HiTok, presets

    cfg = presets.tiny()
    cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, window=2),
                              generator=dataclasses.replace(cfg.generator, window=2, depth=2))
    torch.manual_seed(0)
    return HiTok(cfg, with_encoder=False).eval()


@pytest.fixture()
def photos(tmp_path) -> Path:
    """Three 96 px sinusoid photos (restorer training runs)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        y, x = np.mgrid[0:96, 0:96]
        img = 127 + 100 * np.sin(x * rng.uniform(0.05, 0.3) + y * rng.uniform(0.05, 0.3))[..., None] * np.ones(3)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder
