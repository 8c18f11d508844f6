"""Issue 19's own hunt: what a hostile user or script tried beyond the fifteen cases of the issue, each found broken
on the landed main and fixed (the closing note has the table of everything tried).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hitok
from cli_corpus import save_png, smooth_rgb
from cli_helpers import OUTPUT_MARKER, files_in, hitok as run, one_error_line
from hitok.errors import UserError
from hitok.imageio import Picture, write_image

torch.set_num_threads(1)


def folder_of(root: Path, *names: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        save_png(root / name, smooth_rgb(8, 8, seed=i))
    return root


# -- command line -------------------------------------------------------------------------------------------------
def test_a_newline_in_a_file_name_keeps_the_error_on_one_line(tmp_path):
    result = run("upscale", tmp_path / "bad\nname.png")
    assert result.exit_code == 1 and "bad\\nname.png: no such file" in one_error_line(result)


def test_a_closed_pipe_ends_quietly(monkeypatch):
    from hitok.cli import app as app_module

    def closed(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(app_module, "print", closed, raising=False)
    result = run("models", "list", "--json")
    assert result.exit_code == 141 and "error" not in result.stderr


def test_a_damaged_png_is_corrupt_not_foreign(tmp_path):
    good = save_png(tmp_path / "ok.png", smooth_rgb(8, 8)).read_bytes()
    bad = tmp_path / "bad.png"
    bad.write_bytes(good[:30] + bytes([good[30] ^ 0xFF]) + good[31:])  # IHDR's CRC no longer matches
    assert "truncated or corrupt (a PNG file" in one_error_line(run("upscale", bad))


def test_a_link_to_nothing_is_named_so(tmp_path):
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    assert "a link to a missing file" in one_error_line(run("upscale", tmp_path / "link.png"))


def test_model_errors_name_a_folder_and_the_environment(tmp_path, tiny_model_path, monkeypatch):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    (tmp_path / "models").mkdir()
    assert "is a folder" in one_error_line(run("upscale", src, "-m", tmp_path / "models"))
    assert "is a folder" in one_error_line(run("models", "add", tmp_path / "models"))
    assert "up to 64" in one_error_line(run("models", "add", tiny_model_path, "--name", "a" * 65))
    monkeypatch.setenv("HITOK_MODEL", str(tmp_path / "nope.safetensors"))
    assert one_error_line(run("upscale", src)).startswith("error: HITOK_MODEL=")


@pytest.mark.parametrize("kind", ["folder", "link"])
def test_a_marker_that_is_no_file_is_refused_and_nothing_is_appended(tmp_path, tiny_model_path, kind):
    src, dst = folder_of(tmp_path / "in", "a.png"), tmp_path / "out"
    dst.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    (dst / OUTPUT_MARKER).mkdir() if kind == "folder" else (dst / OUTPUT_MARKER).symlink_to(victim)
    result = run("batch", src, dst, "-m", tiny_model_path)
    assert result.exit_code == 1 and "not hitok's record of results" in one_error_line(result)
    assert victim.read_text() == "mine\n"


def test_a_hostile_marker_line_is_ignored(tmp_path, tiny_model_path):
    src, dst = folder_of(tmp_path / "in", "a.png"), tmp_path / "out"
    dst.mkdir()
    (dst / OUTPUT_MARKER).write_text("hitok batch results\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    result = run("batch", src, dst, "-m", tiny_model_path)
    assert result.exit_code == 0, result.output


def test_a_folder_in_the_way_of_an_output_is_named(tmp_path, tiny_model_path):
    src, dst = folder_of(tmp_path / "in", "a.png", "b.png"), tmp_path / "out"
    (dst / "a.png").mkdir(parents=True)
    result = run("batch", src, dst, "-m", tiny_model_path, "--json")
    info = json.loads(result.stdout)
    assert result.exit_code == 1 and (info["done"], info["failed"]) == (1, 1)
    assert "a folder is where its output" in info["files"][0]["reason"]


def test_an_unreadable_sub_folder_is_reported(tmp_path, tiny_model_path, monkeypatch):
    src = folder_of(tmp_path / "in", "a.png")
    folder_of(src / "locked", "b.png")
    real = os.scandir

    def scandir(path="."):
        if Path(path) == src / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    info = json.loads(run("batch", src, tmp_path / "out", "-r", "-m", tiny_model_path, "--json").stdout)
    assert info["done"] == 1 and info["files"][0]["file"] == "locked"
    assert "cannot read this folder (Permission denied)" in info["files"][0]["reason"]


def test_a_token_dump_that_decodes_to_a_giant_is_refused_before_the_model(tmp_path, tiny_model_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = save_png(tmp_path / "p.png", smooth_rgb(16, 16))
    codes = tmp_path / "c.safetensors"
    assert run("tokenize", src, "--out", codes, "-m", tiny_model_path).exit_code == 0
    with safe_open(str(codes), "pt") as f:
        meta = f.metadata()
    giant = tmp_path / "giant.safetensors"  # 2 x 1500 x 1500 tokens: 18 MB on disk, 144 Mpx decoded
    save_file({"indices": torch.zeros(2, 1500, 1500, dtype=torch.uint16)}, str(giant),
              metadata={**meta, "image_width": "12000", "image_height": "12000"})
    result = run("detokenize", giant, "-m", tiny_model_path)
    assert result.exit_code == 1 and "--max-pixels 144000000" in one_error_line(result)
    assert run("detokenize", codes, "-m", tiny_model_path, "--max-pixels", 256).exit_code == 0


# -- library -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tile,overlap", [(-2, None), (2.5, None), ("4", None), (None, -4), (4, 1.5)])
def test_tile_and_overlap_from_python_are_checked(tiny_model, tile, overlap):
    up = hitok.Upscaler(tiny_model, "cpu", "fp32")
    with pytest.raises(UserError, match="whole number of input pixels"):
        up.upscale(Image.fromarray(smooth_rgb(8, 8)), tile=tile, overlap=overlap)


def test_write_image_takes_format_spellings_and_refuses_the_rest(tmp_path):
    rgba = Picture(pixels=smooth_rgb(4, 4), alpha=np.zeros((4, 4), np.uint8))
    warnings = write_image(tmp_path / "o.jpg", rgba, "jpeg")  # lower case: still flattened onto white
    assert any("flattened onto white" in w for w in warnings)
    assert np.asarray(Image.open(tmp_path / "o.jpg")).min() > 240
    with pytest.raises(UserError, match="hitok writes"):
        write_image(tmp_path / "o.gif", rgba, "GIF")
    with pytest.raises(UserError, match="quality 500"):
        write_image(tmp_path / "q.jpg", rgba, "JPEG", quality=500)


def test_an_output_that_appears_meanwhile_is_kept(tmp_path, tiny_model, monkeypatch):
    from hitok import upscaler as upscaler_module

    src, out = save_png(tmp_path / "in.png", smooth_rgb(8, 8)), tmp_path / "out.png"
    up = hitok.Upscaler(tiny_model, "cpu", "fp32")
    real = upscaler_module.resize_picture

    def and_another_program_writes_out(pic, size):
        out.write_text("another program's file")
        return real(pic, size)

    monkeypatch.setattr(upscaler_module, "resize_picture", and_another_program_writes_out)
    with pytest.raises(UserError, match="appeared while hitok worked"):
        up.upscale_file(src, out, "PNG")
    assert out.read_text() == "another program's file"
    assert files_in(tmp_path) == ["in.png", "out.png"]  # no temp file left
    up.upscale_file(src, out, "PNG", overwrite=True)
    assert Image.open(out).size == (32, 32)


def test_upscaler_takes_a_model_not_a_name():
    with pytest.raises(UserError, match="takes a loaded model"):
        hitok.Upscaler("default")


def test_many_tiles_leave_no_blank_line_on_a_pipe(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(24, 24))
    result = run("upscale", src, "-m", tiny_model_path, "--tile", 8, "--overlap", 2, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["tiles"] > 1
    assert result.stderr == ""
