"""The ``hitok`` executable. Importing the command line loads torch and the model code, a second or more in which
Ctrl-C would otherwise print a long traceback and kill Python by SIGINT: here it is the same one line and exit
code 130 as Ctrl-C at any later point (errors.py)."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .app import app  # torch, timm, Pillow and the model code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
