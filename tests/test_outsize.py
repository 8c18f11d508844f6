"""--outscale and --width / --height on upscale and batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cli_corpus import save_png, smooth_rgb
from cli_helpers import files_in, hitok, one_error_line
from hitok.errors import UserError
from hitok.imageio import Picture
from hitok.outsize import OutputSize, resize_picture

torch.set_num_threads(1)


@pytest.mark.parametrize("size,target,tag", [
    (OutputSize(), (112, 80), "x4"),
    (OutputSize(outscale=2), (56, 40), "x2"),
    (OutputSize(outscale=1.5), (42, 30), "x1.5"),
    (OutputSize(outscale=3), (84, 60), "x3"),
    (OutputSize(width=1000), (1000, 714), "w1000"),
    (OutputSize(height=50), (70, 50), "h50"),
    (OutputSize(width=64, height=64), (64, 64), "64x64"),
])
def test_targets_and_names(size, target, tag):
    assert size.target(28, 20) == target and size.tag() == tag


@pytest.mark.parametrize("kwargs,needle", [
    (dict(outscale=0.0), "above 0"),
    (dict(outscale=-2.0), "above 0"),
    (dict(outscale=float("inf")), "above 0"),
    (dict(outscale=2.0, width=100), "either --outscale or --width/--height"),
])
def test_bad_sizes_are_user_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        OutputSize(**kwargs)


def test_downscaling_is_antialiased():
    """A 1-pixel checkerboard halved must come out flat grey (aliasing would keep a pattern)."""
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    pic = Picture(pixels=np.repeat(board[..., None], 3, axis=2))
    small = resize_picture(pic, (32, 32)).pixels.astype(int)
    assert np.abs(small[4:-4, 4:-4] - 127.5).max() < 8
    deep = Picture(pixels=(pic.pixels.astype(np.uint16) * 257), alpha=np.full((64, 64), 65535, np.uint16))
    out = resize_picture(deep, (32, 48))
    assert out.pixels.dtype == np.uint16 and out.pixels.shape == (48, 32, 3) and out.alpha.shape == (48, 32)
    assert (out.alpha == 65535).all()


def test_upscale_outscale_2_names_and_sizes_the_output(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(20, 28))
    result = hitok("upscale", src, "--model", tiny_model_path, "--outscale", 2, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["output"].endswith("p_x2.png") and info["output_size"] == [56, 40] and info["outscale"] == 2
    assert Image.open(tmp_path / "p_x2.png").size == (56, 40)
    # the x2 output is the x4 output resized: close to it, not to a bicubic of the input
    assert hitok("upscale", src, "--model", tiny_model_path).exit_code == 0
    x4 = Image.open(tmp_path / "p_x4.png").resize((56, 40), Image.LANCZOS)
    assert np.abs(np.asarray(x4, float) - np.asarray(Image.open(tmp_path / "p_x2.png"), float)).max() <= 1


def test_upscale_width_keeps_the_aspect_ratio(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(20, 28))
    result = hitok("upscale", src, "--model", tiny_model_path, "--width", 1000, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["output_size"] == [1000, 714] and info["width"] == 1000 and info["height"] is None
    assert Image.open(tmp_path / "p_w1000.png").size == (1000, 714)
    both = hitok("upscale", src, "--model", tiny_model_path, "--width", 50, "--height", 50)
    assert both.exit_code == 0 and Image.open(tmp_path / "p_50x50.png").size == (50, 50)


def test_batch_outscale_and_width(tmp_path, tiny_model_path):
    src = tmp_path / "in"
    src.mkdir()
    save_png(src / "a.png", smooth_rgb(20, 28))
    save_png(src / "b.png", smooth_rgb(12, 12, seed=1))
    result = hitok("batch", src, tmp_path / "x2", "--model", tiny_model_path, "--outscale", 2, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["outscale"] == 2 and {f["file"]: f["output_size"] for f in info["files"]} == {
        "a.png": [56, 40], "b.png": [24, 24]}
    assert files_in(tmp_path / "x2") == ["a.png", "b.png"]  # a mirrored tree keeps the names
    result = hitok("batch", src, tmp_path / "w", "--model", tiny_model_path, "--width", 1000)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "w" / "a.png").size == (1000, 714)
    assert Image.open(tmp_path / "w" / "b.png").size == (1000, 1000)


def test_size_options_are_documented_and_checked(tmp_path, tiny_model_path):
    for cmd in ("upscale", "batch"):
        text = hitok(cmd, "--help").output
        assert "--outscale" in text and "--width" in text and "--height" in text
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    both = hitok("upscale", src, "--model", tiny_model_path, "--outscale", 2, "--width", 10)
    assert both.exit_code == 1 and "either --outscale" in one_error_line(both)
    huge = hitok("upscale", src, "--model", tiny_model_path, "--outscale", 10**5, "--max-pixels", 64)
    assert huge.exit_code == 1 and "ask for a smaller size" in one_error_line(huge)
    assert files_in(tmp_path) == ["p.png"]
