"""Issue 19 ("Trust, round two"), the command line: batch never skips a photo in silence nor keeps an output made
otherwise, ``-o folder/`` is a folder, names with dots are names, and every refusal is one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_corpus import save_png, smooth_rgb
from cli_helpers import OUTPUT_MARKER, files_in, hitok, one_error_line, warnings_of
from hitok import model_store

torch.set_num_threads(1)


def photos(folder: Path, *names: str, side: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        im = Image.fromarray(smooth_rgb(side, side, seed=i))
        im.convert("P").save(folder / name) if name.endswith(".gif") else im.save(folder / name)
    return folder


def summary(result) -> dict:
    info = json.loads(result.stdout)
    info["reasons"] = {f["file"]: f["reason"] for f in info["files"]}
    return info


# -- 2: a batch's output folder does not hide the photos kept in it -------------------------------------------
def test_photos_beside_an_earlier_batchs_results_are_upscaled(tmp_path, tiny_model_path):
    lib = tmp_path / "lib"
    photos(lib / "scans", "scan1.png")
    photos(lib / "photos", "holiday1.png", "holiday2.png")
    assert hitok("batch", lib / "scans", lib / "photos", "-m", tiny_model_path).exit_code == 0
    result = hitok("batch", lib, tmp_path / "big", "-r", "-m", tiny_model_path, "--json")
    assert result.exit_code == 0, result.output
    info = summary(result)
    assert files_in(tmp_path / "big") == ["photos/holiday1.png", "photos/holiday2.png", "scans/scan1.png"]
    assert info["skipped"] == 1 and "result of an earlier hitok batch" in info["reasons"]["photos/scan1.png"]


def test_a_folder_marked_by_an_older_hitok_is_reported_not_hidden(tmp_path, tiny_model_path):
    lib = photos(tmp_path / "lib", "a.png")
    photos(lib / "old", "x.png")
    (lib / "old" / OUTPUT_MARKER).write_text("hitok batch results: `hitok batch` does not take this folder as input\n")
    info = summary(hitok("batch", lib, tmp_path / "big", "-r", "-m", tiny_model_path, "--json"))
    assert info["done"] == 1 and "delete old/.hitok-output" in info["reasons"]["old/x.png"]


def test_skipped_files_are_named_with_the_reason(tmp_path, tiny_model_path):
    src = photos(tmp_path / "in", "a.png", ".hidden.png")
    (src / "raw.heic").write_bytes(b"not read by hitok")
    (src / "gone.png").symlink_to(src / "missing.png")
    info = summary(hitok("batch", src, tmp_path / "out", "-m", tiny_model_path, "--json"))
    assert info["done"] == 1 and info["failed"] == 1 and info["skipped"] == 2
    assert "hidden" in info["reasons"][".hidden.png"] and "HEIC" in info["reasons"]["raw.heic"]
    assert "missing file" in info["reasons"]["gone.png"]


# -- 3: resume trusts only outputs made with the same settings --------------------------------------------------
def test_resume_does_not_keep_outputs_made_with_other_settings(tmp_path, tiny_model_path):
    src, dst = photos(tmp_path / "in", "a.png", "b.png"), tmp_path / "out"
    assert hitok("batch", src, dst, "--outscale", 1, "-m", tiny_model_path).exit_code == 0
    refused = hitok("batch", src, dst, "--skip-existing", "-m", tiny_model_path)
    line = one_error_line(refused)
    assert refused.exit_code == 1 and "out/a.png" in line and "outscale 1 (now default)" in line
    assert "--overwrite" in line and Image.open(dst / "a.png").size == (8, 8)
    redo = hitok("batch", src, dst, "--skip-existing", "--overwrite", "-m", tiny_model_path, "--json")
    info = summary(redo)
    assert redo.exit_code == 0 and info["done"] == 2 and Image.open(dst / "a.png").size == (32, 32)
    assert "replaced a.png: it was made with outscale 1" in info["files"][0]["warnings"][0]
    again = summary(hitok("batch", src, dst, "--skip-existing", "-m", tiny_model_path, "--json"))
    assert (again["done"], again["skipped"]) == (0, 2)


def test_resume_does_not_trust_an_output_it_has_no_record_of(tmp_path, tiny_model_path):
    src, dst = photos(tmp_path / "in", "a.png"), tmp_path / "out"
    photos(dst, "a.png", side=4)  # not made by hitok
    refused = hitok("batch", src, dst, "--skip-existing", "-m", tiny_model_path)
    assert refused.exit_code == 1 and "no record of how it was made" in one_error_line(refused)
    assert Image.open(dst / "a.png").size == (4, 4)


# -- 6: -o results/ is a folder -------------------------------------------------------------------------------------
def test_output_with_a_trailing_slash_is_a_folder(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    result = hitok("upscale", src, "-m", tiny_model_path, "-o", f"{tmp_path / 'results'}/")
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path / "results") == ["p_x4.png"]


# -- 7: a model name with a dot -------------------------------------------------------------------------------------
def test_model_named_with_a_dot_is_found(tmp_path, tiny_model_path, user_models):
    assert hitok("models", "add", tiny_model_path, "--name", "v1.2").exit_code == 0
    assert "v1.2" in hitok("models", "list").stdout
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    result = hitok("upscale", src, "-m", "v1.2")
    assert result.exit_code == 0, result.output


# -- 8: OUT_DIR above IN_DIR -----------------------------------------------------------------------------------------
def test_output_folder_above_the_input_folder(tmp_path, tiny_model_path):
    root = tmp_path / "photos"
    photos(root / "new", "a.png", "b.png")
    result = hitok("batch", root / "new", root, "-m", tiny_model_path)
    assert result.exit_code == 0, result.output
    assert files_in(root) == ["a.png", "b.png", "new/a.png", "new/b.png"]


def test_outputs_that_would_land_among_the_inputs_are_refused(tmp_path, tiny_model_path):
    root = tmp_path / "photos"
    photos(root / "new" / "new", "a.png")
    photos(root / "new", "b.png")
    info = summary(hitok("batch", root / "new", root, "-r", "-m", tiny_model_path, "--json"))
    assert info["done"] == 1 and "inside IN_DIR" in info["reasons"]["new/a.png"]
    assert files_in(root) == ["b.png", "new/b.png", "new/new/a.png"]


# -- 12: Ctrl-C while Python is still importing ------------------------------------------------------------------
def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path):
    code = textwrap.dedent("""
        import os, signal, sys, threading
        from hitok.cli.entry import main  # light: torch and the commands load inside main()
        sys.argv = ["hitok", "upscale", "missing.png"]
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()  # torch takes longer to import
        main()
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert proc.returncode == 130, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.strip() == "error: interrupted"


# -- 13: batch renaming never takes a name another input keeps ----------------------------------------------------
def test_renamed_output_does_not_take_another_files_name(tmp_path, tiny_model_path):
    src, dst = photos(tmp_path / "in", "a.gif", "a.png", "a_gif.png"), tmp_path / "out"
    result = hitok("batch", src, dst, "-m", tiny_model_path, "--json")
    assert result.exit_code == 0, result.output
    assert files_in(dst) == ["a.png", "a_gif.png", "a_gif_2.png"]
    outputs = {Path(f["output"]).name: f["file"] for f in json.loads(result.stdout)["files"]}
    assert outputs == {"a.png": "a.png", "a_gif.png": "a_gif.png", "a_gif_2.png": "a.gif"}


# -- 15: the annoyances ------------------------------------------------------------------------------------------
def test_outscale_below_a_pixel_is_refused_before_the_model(tmp_path):
    src = save_png(tmp_path / "small.png", smooth_rgb(16, 20))
    result = hitok("upscale", src, "--outscale", 0.01, "-m", "nosuch")
    assert result.exit_code == 1 and "less than one pixel" in one_error_line(result)
    assert files_in(tmp_path) == ["small.png"]


def test_tile_off_the_grid_is_refused_before_the_model_loads(tmp_path, tiny_model_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(model_store, "load", refuse)
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    for command in (["upscale", src], ["batch", tmp_path, tmp_path / "out"]):
        result = hitok(*command, "--tile", 7, "-m", tiny_model_path)
        assert result.exit_code == 1 and "--tile 7: must be a multiple of 2" in one_error_line(result)


def test_model_load_shows_a_status_on_a_terminal(tmp_path, tiny_model_path, monkeypatch):
    from rich.console import Console

    from hitok.cli import app as app_module

    screen = io_buffer = __import__("io").StringIO()
    monkeypatch.setattr(app_module, "err", Console(file=screen, force_terminal=True, width=100))
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    assert hitok("upscale", src, "-m", tiny_model_path).exit_code == 0
    assert "loading the model" in io_buffer.getvalue()


def test_flags_show_no_value_and_refuse_one_in_one_line(tmp_path):
    assert "<bool>" not in hitok("upscale", "--help").output
    result = hitok("upscale", tmp_path / "p.png", "--overwrite", "true")
    assert result.exit_code == 2
    assert "--overwrite takes no value" in one_error_line(result)


def option_help(*command: str) -> dict[str, str]:
    import typer

    from hitok.cli.app import app

    cmd = typer.main.get_command(app)
    for name in command:
        cmd = cmd.commands[name]
    return {p.opts[0]: p.help for p in cmd.params if getattr(p, "help", None)}


def test_help_speaks_of_the_picture_first():
    helps = option_help("upscale")
    assert "pieces" in helps["--tile"] and "seam" in helps["--overlap"] and "texture" in helps["--detail"]
    for option in ("--tile", "--overlap", "--detail"):
        first = helps[option].split(".")[0]  # what it does to the picture comes first, the model's terms after
        assert "LR pixels" not in first and "token" not in first, first
    assert option_help("models", "add")["--overwrite"].startswith("Replace an installed model")


def test_batch_json_lists_each_files_warnings(tmp_path, tiny_model_path):
    src = photos(tmp_path / "in", "a.png", "a.gif")
    info = json.loads(hitok("batch", src, tmp_path / "out", "-m", tiny_model_path, "--json").stdout)
    warned = {f["file"]: f["warnings"] for f in info["files"]}
    assert any("named a_gif.png" in w for w in warned["a.gif"]) and warned["a.png"] == []


def test_16_bit_photo_to_jpeg_says_it_loses_bits(tmp_path, tiny_model_path):
    from cli_corpus import png16

    src, _ = png16(tmp_path / "deep.png")
    result = hitok("upscale", src, "-m", tiny_model_path, "--format", "jpg")
    assert result.exit_code == 0 and any("8 bits" in w for w in warnings_of(result))
