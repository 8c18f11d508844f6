"""Stopping a run cleanly: SIGINT/SIGTERM ask the loop to finish the current step, checkpoint and return; a second
Ctrl-C aborts at once. The caller's handlers are restored on exit."""
from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger("hitok.train")


class StopFlag:
    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers only go on the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stop requested: finishing the current step, then saving a checkpoint (Ctrl-C again aborts)")

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
