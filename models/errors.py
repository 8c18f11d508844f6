"""One line of text for an exception, for every message hitok shows a user or writes into a report.

It lives here, in the lowest package, because models/ reports errors too (unreadable model or VFM files)
and everything else (the library, train/, bench/, the CLI) imports models/, never the other way round.
"""

from __future__ import annotations

LIMIT = 300  # characters; some libraries put a whole report on one line


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
