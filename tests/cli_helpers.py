"""Running the ``hitok`` command line in tests: CliRunner calls, the one-line error check, files left behind."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from hitok.cli.app import app
from hitok.batch import OUTPUT_MARKER

runner = CliRunner()


def hitok(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, progress_bar: bool = False) -> str:
    """The single ``error: ...`` line on stderr (and no traceback anywhere)."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    if progress_bar:  # batch keeps its overall bar on stderr; the error is still one line
        lines = [ln for ln in lines if not ln.startswith("upscaling")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def warnings_of(result) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]


def files_in(folder: Path) -> list[str]:
    """Every file below ``folder`` (hidden temp and lock files included), but batch's OUT_DIR marker."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != OUTPUT_MARKER)


def interrupt_on_tile(monkeypatch, call: int = 2) -> None:
    """Make the upscaler's ``call``-th tile raise KeyboardInterrupt (a Ctrl-C in the middle of a batch)."""
    from hitok.upscaler import Upscaler

    real = Upscaler.tile_fn
    calls = {"n": 0}

    def tile_fn(self, lr, origin=(0, 0)):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(self, lr, origin)

    monkeypatch.setattr(Upscaler, "tile_fn", tile_fn)
