"""The ``hitok`` executable. Importing the command line loads torch and the model code, a second or more in which
Ctrl-C would otherwise print a long traceback and kill Python by SIGINT: here it is the same one line and exit
code 130 as Ctrl-C at any later point (errors.py).

Start-up imports run without the cyclic garbage collector, and a command that succeeded leaves without Python's
teardown: once torch is loaded, freeing its modules and libraries at exit takes 0.3-0.4 s (a fifth of a whole
`hitok upscale` of a small photo on 2 CPU cores) and does nothing the operating system does not do anyway."""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import threading


def main() -> None:
    # Importing torch makes some 170 000 objects that the cyclic garbage collector tracks, and the allocation
    # count sets it scanning them again and again for cycles that are not there: 15 % of the import. So it is
    # off for the imports; then the imported objects, alive until exit, are moved out of its sight (freeze).
    gc.disable()
    try:
        from .app import app  # torch, timm, Pillow and the model code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    finally:
        gc.freeze()
        gc.enable()
    try:
        app()
    except SystemExit as exc:
        if exc.code in (0, None) and _nothing_left_running():
            _leave_now()
        raise


def _nothing_left_running() -> bool:
    """No thread or child process that a normal exit would wait for (batch's workers, training's processes):
    then teardown only frees memory."""
    return threading.active_count() == 1 and not multiprocessing.active_children()


def _leave_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`hitok ... --json | head`), a closed stream
            pass
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
