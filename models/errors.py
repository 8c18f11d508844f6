"""The errors hitok shows a user, in the lowest package: models/ reports them too (an unreadable model file, a
setting out of the model's range) and everything else (the library, train/, bench/, the CLI) imports models/,
never the other way round. No torch here: ``import hitok.imageio`` reaches this file and must stay light.

- :class:`UserError`: anything a user can get wrong and fix; its message is the one line to show. The library
  re-exports it as ``hitok.UserError``; the ``hitok`` command prints ``error: <message>`` and exits 1.
- :class:`SettingError`: a detail / fidelity value this model cannot take (a UserError and a ValueError).
- :class:`ModelFileError`: a model file hitok.models refuses.
- :func:`one_line`: any exception as one line of text, for every message and report.
"""

from __future__ import annotations

LIMIT = 300  # characters; some libraries put a whole report on one line


class UserError(Exception):
    """An error the user can fix; its message is the single line we print."""

    exit_code = 1


class SettingError(UserError, ValueError):
    """A detail or fidelity value out of a model's range (models/sr_model.py ``check_detail`` / ``check_fidelity``)."""


class ModelFileError(Exception):
    """A model file that cannot be used; str() is one line meant for the user."""


def one_line(exc: BaseException, with_type: bool = False) -> str:
    """``exc`` as one line: OS errors as ``filename: strerror``, others as the first non-blank line of their text
    (hub and decoder errors append pages of detail), whitespace collapsed, cut at :data:`LIMIT`; ``with_type``
    puts the exception's class name in front."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        lines = [" ".join(line.split()) for line in str(exc).splitlines()]
        text = next((line for line in lines if line), "")
    if len(text) > LIMIT:
        text = text[: LIMIT - 1] + "…"
    name = type(exc).__name__
    if not text:
        return name
    return f"{name}: {text}" if with_type else text
