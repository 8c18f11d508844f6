"""Runs that stop early say what they did and leave no hidden temp file.

Ctrl-C (KeyboardInterrupt) and a full disk go through CliRunner; SIGTERM needs a real process, so
those tests run ``hitok`` in a subprocess whose image encoder stalls mid-write, then kill it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cli_corpus import save_png, smooth_rgb
from cli_helpers import files_in, hitok, interrupt_on_tile, one_error_line
from hitok import fsutil
from hitok.upscaler import Upscaler

torch.set_num_threads(1)


def three_photos(root: Path) -> Path:
    src = root / "in"
    src.mkdir()
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        save_png(src / name, smooth_rgb(8, 8, seed=i))
    return src


# -- the summary after Ctrl-C ---------------------------------------------------------------------
def test_ctrl_c_summary_lists_the_files_already_written(tmp_path, tiny_model_path, monkeypatch):
    src, dst = three_photos(tmp_path), tmp_path / "out"
    interrupt_on_tile(monkeypatch, call=2)
    result = hitok("batch", src, dst, "--tile", 64, "--model", tiny_model_path, "--json")
    assert result.exit_code == 130 and "interrupted after 1 of 3" in one_error_line(result, progress_bar=True)
    info = json.loads(result.stdout)
    assert info["done"] == 1 and [f["file"] for f in info["files"]] == ["a.png"]
    assert info["stopped"].startswith("interrupted")
    assert files_in(dst) == ["a.png"]
    plain = hitok("batch", src, dst, "--skip-existing", "--model", tiny_model_path)  # and the table form
    assert "skipped 1" in plain.stdout and "done 2" in plain.stdout


# -- a write error every later file would hit stops the batch ---------------------------------------
def test_full_disk_stops_the_batch_after_the_first_failure(tmp_path, tiny_model_path, monkeypatch):
    src, dst = three_photos(tmp_path), tmp_path / "out"
    computed = []
    real = Upscaler.upscale_picture

    def count(self, pic, *args, **kwargs):
        computed.append(pic.size)
        return real(self, pic, *args, **kwargs)

    def disk_full(self, fp, *args, **kwargs):
        fp.write(b"half a png")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Upscaler, "upscale_picture", count)
    monkeypatch.setattr("PIL.Image.Image.save", disk_full)
    result = hitok("batch", src, dst, "--model", tiny_model_path, "--json")
    assert result.exit_code == 1 and "No space left on device" in one_error_line(result, progress_bar=True)
    info = json.loads(result.stdout)
    assert (info["done"], info["failed"]) == (0, 1) and "stopped" in info["stopped"]
    assert len(computed) == 1 and files_in(dst) == []  # not three hours of work for three failures


# -- SIGTERM and killed runs leave no temp file ---------------------------------------------------
STALLING_HITOK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from PIL import Image

    def stalling_save(self, fp, *args, **kwargs):  # the encoder has written half of b's output when the signal comes
        if Path(str(getattr(fp, "name", ""))).name.startswith(".b"):
            fp.write(b"half a png")
            fp.flush()
            print("WRITING", flush=True)
            time.sleep(60)
        return real_save(self, fp, *args, **kwargs)

    real_save, Image.Image.save = Image.Image.save, stalling_save
    from hitok.cli.app import app
    sys.argv = ["hitok"] + sys.argv[1:]
    app()
""")


def run_until_writing(args: list, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HITOK_MODELS_DIR": str(cwd / "user-models")}
    proc = subprocess.Popen([sys.executable, "-c", STALLING_HITOK, *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.strip() == "WRITING" or (not line and proc.poll() is not None):
            break
    assert lines[-1].strip() == "WRITING", "".join(lines) + proc.stderr.read()
    return proc


@pytest.mark.slow
def test_sigterm_during_upscale_removes_the_temp_file(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "b.png", smooth_rgb(8, 8))
    proc = run_until_writing(["upscale", src, "--model", tiny_model_path], tmp_path)
    assert any(fsutil.is_temp_name(p.name) for p in tmp_path.iterdir())  # caught in the act
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "error: terminated"
    assert files_in(tmp_path) == ["b.png"]


@pytest.mark.slow
def test_sigterm_during_batch_reports_what_was_done(tmp_path, tiny_model_path):
    src, dst = three_photos(tmp_path), tmp_path / "out"
    proc = run_until_writing(["batch", src, dst, "--model", tiny_model_path], tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "done 1" in out
    assert "interrupted after 1 of 3" in err.strip().splitlines()[-1]
    assert files_in(dst) == ["a.png"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_killed_runs_are_swept_by_the_next_run(tmp_path, tiny_model_path):
    src, dst = three_photos(tmp_path), tmp_path / "out"
    dst.mkdir()
    killed = dst / f".a.png.{fsutil._HOST}-{dead_pid()}-0123abcd{fsutil.TEMP_SUFFIX}"  # SIGKILL-ed writer
    legacy = dst / f".b.png.89abcdef{fsutil.TEMP_SUFFIX}"  # an older hitok's name, hours old
    foreign = dst / f".c.png.00000000-{os.getpid()}-0123abcd{fsutil.TEMP_SUFFIX}"  # another machine's
    for path in (killed, legacy, foreign):
        path.write_bytes(b"partial")
    os.utime(legacy, (time.time() - 2 * fsutil.UNOWNED_STALE_S,) * 2)
    result = hitok("batch", src, dst, "--model", tiny_model_path)
    assert result.exit_code == 0, result.output
    assert files_in(dst) == [foreign.name, "a.png", "b.png", "c.png"]


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    mine = tmp_path / f".x.png.{fsutil._HOST}-{os.getpid()}-0123abcd{fsutil.TEMP_SUFFIX}"
    mine.write_bytes(b"in progress")
    assert fsutil.sweep_stale_temps(tmp_path) == 0 and mine.exists()


@pytest.mark.parametrize("name", ["photo [1].png", "a*b?.png"])
def test_sweeping_takes_names_literally(tmp_path, name):
    stale = tmp_path / f".{name}.{fsutil._HOST}-{dead_pid()}-0123abcd{fsutil.TEMP_SUFFIX}"
    stale.write_bytes(b"partial")
    with fsutil.atomic_write(tmp_path / name) as fp:
        fp.write(b"done")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
