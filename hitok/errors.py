"""Errors a user can cause: the library raises :class:`UserError`, whose message is one line to show as is.

Anything a user can get wrong (a bad path, an unreadable image, a missing model, an output that already
exists, an option out of range) is a :class:`UserError`; a Python caller catches it, the ``hitok`` command
prints ``error: <message>`` and exits 1 (hitok_cli/errors.py). ``one_line`` (models/errors.py, the lowest
package, so that models/ can use it too) turns any other exception into one line of text, and
``ModelFileError`` is what hitok.models raises for a model file it refuses.
"""

from __future__ import annotations

from hitok.models.errors import one_line
from hitok.models.io import ModelFileError

__all__ = ["UserError", "ModelFileError", "one_line"]


class UserError(Exception):
    """An error the user can fix; its message is the single line we print."""

    exit_code = 1
