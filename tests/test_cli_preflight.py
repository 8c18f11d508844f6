"""Mistakes found before the work, options that say what they do.

The model is never loaded where a test replaces ``model_store.load`` with :func:`no_model`: the
command must end with its one-line error before it would be needed.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cli_corpus import save_png, smooth_rgb
from cli_helpers import OUTPUT_MARKER, files_in, hitok, one_error_line, warnings_of
from hitok import fsutil, model_store
from hitok.upscaler import Upscaler

torch.set_num_threads(1)


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(model_store, "load", refuse)


def read_only(monkeypatch, folder: Path) -> None:
    """Make creating files in ``folder`` fail as on a read-only mount (root ignores chmod, so simulate it)."""
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(fsutil.os, "open", guarded)


# -- output and input problems before the model is loaded -------------------------------------------
def test_parent_that_is_a_file_fails_before_the_model(tmp_path, no_model):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    (tmp_path / "blocker").write_text("a file")
    result = hitok("upscale", src, "-o", tmp_path / "blocker" / "sub" / "out.png")
    assert result.exit_code == 1 and "blocker is a file, not a folder" in one_error_line(result)
    assert files_in(tmp_path) == ["blocker", "p.png"]


def test_read_only_folder_fails_before_the_model(tmp_path, no_model, monkeypatch):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    result = hitok("upscale", src, "-o", tmp_path / "ro" / "out.png")
    assert result.exit_code == 1 and "Read-only file system" in one_error_line(result)
    assert files_in(tmp_path) == ["p.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into 0o555 folders")
def test_chmod_read_only_folder_fails_before_the_model(tmp_path, no_model):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    (tmp_path / "ro").mkdir(mode=0o555)
    result = hitok("upscale", src, "-o", tmp_path / "ro" / "out.png")
    assert result.exit_code == 1 and "Permission denied" in one_error_line(result)


def test_full_disk_fails_before_the_model(tmp_path, no_model, monkeypatch):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.os, "write", full)
    result = hitok("upscale", src)
    monkeypatch.setattr(fsutil.os, "write", real_write)
    assert result.exit_code == 1 and "No space left on device" in one_error_line(result)
    assert files_in(tmp_path) == ["p.png"]


def test_non_image_fails_before_the_model(tmp_path, no_model):
    (tmp_path / "notes.jpg").write_text("not a photo")
    result = hitok("upscale", tmp_path / "notes.jpg")
    assert result.exit_code == 1 and "not an image" in one_error_line(result)
    truncated = tmp_path / "cut.png"
    data = (save_png(tmp_path / "whole.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
            .read_bytes())
    truncated.write_bytes(data[: len(data) // 2])
    result = hitok("upscale", truncated)
    assert result.exit_code == 1 and "truncated or corrupt" in one_error_line(result)


def test_low_disk_space_is_a_warning_up_front(tmp_path, tiny_model_path, monkeypatch):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    monkeypatch.setattr(fsutil.shutil, "disk_usage", lambda folder: SimpleNamespace(total=10**9, used=10**9, free=100))
    result = hitok("upscale", src, "--model", tiny_model_path)
    assert result.exit_code == 0 and any("MiB free" in w for w in warnings_of(result))


def test_batch_with_unwritable_out_dir_stops_before_the_model(tmp_path, no_model, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        save_png(src / f"p{i}.png", smooth_rgb(8, 8, seed=i))
    (tmp_path / "out").mkdir()
    read_only(monkeypatch, tmp_path / "out")
    result = hitok("batch", src, tmp_path / "out")
    assert result.exit_code == 1 and "Read-only file system" in one_error_line(result)
    assert files_in(tmp_path / "out") == []


def test_batch_unwritable_sub_folder_fails_its_files_before_computing_them(tmp_path, tiny_model_path, monkeypatch):
    src, dst = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    save_png(src / "a.png", smooth_rgb(8, 8))
    save_png(src / "sub" / "b.png", smooth_rgb(8, 8, seed=1))
    dst.mkdir()
    (dst / "sub").write_text("a file where the sub-folder goes")
    computed = []
    real = Upscaler.upscale_picture
    monkeypatch.setattr(Upscaler, "upscale_picture", lambda self, pic, *a, **k: computed.append(pic.size)
                        or real(self, pic, *a, **k))
    result = hitok("batch", src, dst, "-r", "--model", tiny_model_path, "--json")
    info = json.loads(result.stdout)
    assert result.exit_code == 1 and (info["done"], info["failed"]) == (1, 1)
    reasons = {f["file"]: f["reason"] for f in info["files"]}
    assert "is a file, not a folder" in reasons["sub/b.png"]
    assert len(computed) == 1  # b.png was never upscaled


def test_batch_non_images_fail_before_the_model(tmp_path, no_model):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_text("text")
    (src / "b.png").write_bytes(b"")
    result = hitok("batch", src, tmp_path / "out", "--json")
    info = json.loads(result.stdout)
    assert result.exit_code == 1 and info["failed"] == 2 and info["done"] == 0
    assert not (tmp_path / "out").exists()


# -- options and outputs that say what they do -------------------------------------------------------
def windowed_tiny_path(folder: Path) -> Path:
    """The tiny preset with 2-token attention windows: tiles go on a 4 LR pixel grid."""
    from hitok.models import HiTok, presets, save_model

    cfg = presets.tiny()
    cfg = replace(cfg, tokenizer=replace(cfg.tokenizer, window=2), generator=replace(cfg.generator, window=2))
    torch.manual_seed(0)
    model = HiTok(cfg)
    assert model.tile_align == 4
    save_model(model, folder / "windowed.safetensors")
    return folder / "windowed.safetensors"


def test_tile_off_the_window_grid_is_refused_with_the_right_alignment(tmp_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(16, 16))
    result = hitok("upscale", src, "--model", windowed_tiny_path(tmp_path), "--tile", 6)
    line = one_error_line(result)
    assert result.exit_code == 1 and "multiple of 4" in line and "attention windows" in line and "4 or 8" in line


def test_overlap_beyond_half_the_tile_is_refused(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(16, 16))
    result = hitok("upscale", src, "--model", tiny_model_path, "--tile", 8, "--overlap", 8)
    assert result.exit_code == 1 and "at most half the tile (4" in one_error_line(result)


def test_overlap_clamped_under_an_auto_tile_is_a_warning(tmp_path, tiny_model_path, monkeypatch):
    monkeypatch.setattr(Upscaler, "pick_tile", lambda self, shape: 16)
    src = save_png(tmp_path / "p.png", smooth_rgb(24, 40))
    result = hitok("upscale", src, "--model", tiny_model_path, "--overlap", 12, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["overlap"] == 8
    assert any("--overlap 12" in w for w in warnings_of(result))


def test_quality_for_png_is_a_warning(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    result = hitok("upscale", src, "--model", tiny_model_path, "--quality", 80)
    assert result.exit_code == 0 and any("ignored for PNG" in w for w in warnings_of(result))


def test_emulated_half_precision_on_cpu_is_a_warning(tmp_path, tiny_model_path, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    result = hitok("upscale", src, "--model", tiny_model_path, "--precision", "bf16", "--device", "cpu")
    assert result.exit_code == 0 and any("emulated" in w for w in warnings_of(result))


def test_output_into_an_existing_folder_takes_the_default_name(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    (tmp_path / "results").mkdir()
    result = hitok("upscale", src, "--model", tiny_model_path, "-o", tmp_path / "results")
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path / "results") == ["p_x4.png"]


def test_earlier_output_folder_inside_the_input_is_not_upscaled_again(tmp_path, tiny_model_path):
    src = tmp_path / "in"
    src.mkdir()
    save_png(src / "a.png", smooth_rgb(8, 8))
    assert hitok("batch", src, src / "up", "-r", "--model", tiny_model_path).exit_code == 0
    assert (src / "up" / OUTPUT_MARKER).is_file()
    again = hitok("batch", src, src / "up2", "-r", "--model", tiny_model_path)
    assert again.exit_code == 0 and files_in(src / "up2") == ["a.png"]  # not up/a.png (x16)


def test_name_collision_gives_both_files_an_output(tmp_path, tiny_model_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    save_png(src / "a.png", smooth_rgb(8, 8))
    Image.fromarray(smooth_rgb(8, 12, seed=1)).convert("P").save(src / "a.gif")
    result = hitok("batch", src, dst, "--model", tiny_model_path)
    assert result.exit_code == 0, result.output
    assert files_in(dst) == ["a.png", "a_gif.png"]
    assert Image.open(dst / "a.png").size == (32, 32) and Image.open(dst / "a_gif.png").size == (48, 32)
    assert "a_gif.png" in result.stderr


def test_a_file_another_run_is_making_is_skipped(tmp_path, tiny_model_path):
    import subprocess
    import sys

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    save_png(src / "a.png", smooth_rgb(8, 8))
    save_png(src / "b.png", smooth_rgb(8, 8, seed=1))
    dst.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (dst / ".a.png.hitok-lock").write_text(f"{fsutil._HOST} {other.pid}")
        result = hitok("batch", src, dst, "--model", tiny_model_path, "--json")
    finally:
        other.kill()
        other.wait()
    info = json.loads(result.stdout)
    assert result.exit_code == 0 and (info["done"], info["skipped"]) == (1, 1)
    assert "another hitok run" in {f["file"]: f["reason"] for f in info["files"]}["a.png"]
    assert files_in(dst) == [".a.png.hitok-lock", "b.png"]  # the other run's lock is not ours to remove


def test_a_file_another_run_finished_meanwhile_is_skipped(tmp_path, tiny_model_path, monkeypatch):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    save_png(src / "a.png", smooth_rgb(8, 8))
    save_png(src / "b.png", smooth_rgb(8, 8, seed=1))
    real = Upscaler.upscale_file

    def and_the_other_run_writes_b(self, inp, out, *args, **kwargs):
        result = real(self, inp, out, *args, **kwargs)
        (dst / "b.png").write_bytes((dst / "a.png").read_bytes())
        return result

    monkeypatch.setattr(Upscaler, "upscale_file", and_the_other_run_writes_b)
    result = hitok("batch", src, dst, "--model", tiny_model_path, "--json")
    info = json.loads(result.stdout)
    assert (info["done"], info["skipped"]) == (1, 1)
    assert "meanwhile" in {f["file"]: f["reason"] for f in info["files"]}["b.png"]


def test_thin_image_is_one_tile_not_many(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "thin.png", smooth_rgb(3, 300))
    result = hitok("upscale", src, "--model", tiny_model_path, "--json")
    info = json.loads(result.stdout)
    assert result.exit_code == 0 and info["tiles"] == 1 and info["output_size"] == [1200, 12]
