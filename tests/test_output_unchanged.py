"""`hitok upscale` on the shipped model writes the same picture it wrote when the reference was stored.

Refactors (file moves, renames, torch parts in place of hand-written ones) must not change what users get.
The reference `data/shipped_output_x4.png` was written by `hitok upscale data/shipped_input.png --precision fp32`
(an 80x60 crop of docs/sample.png) from the model whose id is `REFERENCE_MODEL_ID`. Replacing the shipped
weights changes the output on purpose: rewrite the reference with the command above and update the id.

Tolerance: fp32 kernels differ slightly between CPUs (AVX2 / AVX-512 / AMX) and torch versions, which can
flip the rounding of a few pixels; a real change to the model path moves many pixels by more than one level.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hitok import model_store
from hitok.cli.app import app

DATA = Path(__file__).parent / "data"
REFERENCE_MODEL_ID = "fb12888823c5"  # 6549bb3ef0eb wrote the same reference (same faithful restorer)

pytestmark = pytest.mark.skipif(not model_store.default_model_path().is_file(),
                                reason="no shipped default in this checkout")


def test_reference_belongs_to_the_shipped_model():
    assert model_store.model_id(model_store.default_model_path()) == REFERENCE_MODEL_ID, (
        "the shipped weights changed: rewrite tests/data/shipped_output_x4.png (see this file's docstring)")


def test_cli_output_matches_reference(tmp_path):
    out = tmp_path / "out.png"
    result = CliRunner().invoke(app, ["upscale", str(DATA / "shipped_input.png"), "-o", str(out),
                                      "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    got = np.asarray(Image.open(out).convert("RGB")).astype(np.int16)
    ref = np.asarray(Image.open(DATA / "shipped_output_x4.png").convert("RGB")).astype(np.int16)
    assert got.shape == ref.shape
    diff = np.abs(got - ref)
    assert diff.max() <= 2, f"max difference {diff.max()} levels"
    assert (diff > 0).mean() <= 0.005, f"{(diff > 0).mean():.2%} of values differ"
