"""User-facing errors: one clear line on stderr and a non-zero exit, never a traceback.

The library (``hitok``) raises :class:`hitok.errors.UserError` for anything a user can cause (a bad
path, an unreadable image, a missing model, an output that already exists). The Typer commands
are wrapped with :func:`user_errors`, which turns such an error into ``error: <message>`` and
exit code 1. Unexpected exceptions are also reduced to one line (with a hint) unless the user
asked for the traceback with ``hitok --debug ...`` or ``HITOK_DEBUG=1``.

Mistakes in the command line itself (an unknown option, a missing argument, a value where an on/off option
takes none) are one line too, with exit code 2 (:class:`OneLineErrors`), and Ctrl-C while Python is still
importing (the first second or so) exits 130 with one line (entry.py).

Commands that write files also take SIGTERM (what ``kill``, systemd and container runtimes send)
the way they take Ctrl-C (:func:`sigterm_as_interrupt`): the exception unwinds through the atomic
writers, so no hidden temp file is left behind, and the exit code is 143 (128 + SIGTERM).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import sys
import threading
from typing import Callable, TypeVar

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer 0.29 (pinned) vendors click
from typer.core import TyperGroup

from hitok.errors import Interrupted, Terminated, UserError, one_line

F = TypeVar("F", bound=Callable)

# Set by the app callback (`hitok --debug`); the environment variable covers sub-apps and tests.
_debug = False


def set_debug(flag: bool) -> None:
    global _debug
    _debug = bool(flag)


def debug_enabled() -> bool:
    return _debug or os.environ.get("HITOK_DEBUG", "") not in ("", "0")


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}


def printable(message: str) -> str:
    """``message`` on one line: control characters (a newline in a file name) written as escapes."""
    return message.translate(_CONTROL)


def print_error(message: str) -> None:
    # Plain print, not Rich: a path with [brackets] must not be parsed as markup.
    print(f"error: {printable(message)}", file=sys.stderr, flush=True)


def user_errors(fn: F) -> F:
    """Decorator for Typer commands: UserError -> one line + exit code, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except UserError as exc:
            if debug_enabled():
                raise
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:  # the reader went away (`hitok ... --json | head`): nobody to tell, 128 + SIGPIPE
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            raise typer.Exit(141) from None
        except KeyboardInterrupt as exc:
            if debug_enabled():
                raise
            terminated = isinstance(exc, Terminated)
            print_error("terminated" if terminated else "interrupted")
            raise typer.Exit(Terminated.exit_code if terminated else Interrupted.exit_code) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            if debug_enabled():
                raise
            print_error(f"{one_line(exc, with_type=True)} (run `hitok --debug ...` for the traceback)")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _raise_terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise Terminated()


def sigterm_as_interrupt(fn: F) -> F:
    """Decorator for commands that write files: SIGTERM raises :class:`Terminated` for the command's duration."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
            return fn(*args, **kwargs)
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


_ON_OFF_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def usage_error_line(exc: ClickException, args: list[str]) -> str:
    """A command-line mistake as one line that says how to write it instead."""
    message = exc.format_message().rstrip(".")
    extra = re.match(r"Got unexpected extra argument(?:s|\(s\))? \(([^ )]+)", message)
    if extra and extra[1].lower() in _ON_OFF_WORDS and extra[1] in args:
        i = args.index(extra[1])
        flag = args[i - 1] if i > 0 and args[i - 1].startswith("-") else "an on/off option"
        return f"{flag} takes no value (got {extra[1]!r}): write {flag} alone to turn it on, or leave it out"
    ctx = getattr(exc, "ctx", None)
    where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
    return f"{message}{where}"


class OneLineErrors(TyperGroup):
    """The root command group: command-line mistakes end in one ``error:`` line and exit code 2, as click's
    usage errors do, without the usage block and a framed panel around them."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # `hitok` alone: the help, as before
            exc.show()
            code = exc.exit_code
        except ClickException as exc:
            if debug_enabled():
                raise
            print_error(usage_error_line(exc, args))
            code = exc.exit_code
        except typer.Abort:
            print_error("interrupted")
            code = Interrupted.exit_code
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)
