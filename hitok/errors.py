"""Errors a user can cause: the library raises :class:`UserError`, whose message is one line to show as is.

Anything a user can get wrong (a bad path, an unreadable image, a missing model, an output that already
exists, an option out of range) is a :class:`UserError`; a Python caller catches it, the ``hitok`` command
prints ``error: <message>`` and exits 1 (hitok_cli/errors.py). The classes and ``one_line`` live in
models/errors.py, the lowest package, so that models/ raises the same ones (a detail or fidelity out of the
model's range is a ``SettingError``, a UserError); importing them pulls no torch.

:class:`Interrupted` (a UserError) is a run that Ctrl-C or SIGTERM stopped with nothing partial left (hitok.batch
reports it as ``run.stopped``); :class:`Terminated` is SIGTERM raised where Ctrl-C would be (the command installs it).
"""

from __future__ import annotations

import signal

from hitok.models.errors import ModelFileError, SettingError, UserError, one_line

__all__ = ["UserError", "SettingError", "ModelFileError", "Interrupted", "Terminated", "one_line"]


class Interrupted(UserError):
    """Ctrl-C or SIGTERM: nothing partial was left behind; 130 / 143 are the shell's 128 + signal."""

    exit_code = 130

    def __init__(self, message: str, terminated: bool = False):
        super().__init__(message)
        if terminated:
            self.exit_code = Terminated.exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that every cleanup path for Ctrl-C runs for it too."""

    exit_code = 128 + signal.SIGTERM
