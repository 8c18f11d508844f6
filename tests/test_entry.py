"""The `hitok` executable (hitok_cli/entry.py): start-up imports without the cyclic garbage collector; a command
that succeeded leaves without Python's teardown, its output flushed; one that failed, or that leaves a thread
running, exits as usual, with its code."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

# atexit handlers run in Python's teardown: printing from one shows whether the teardown ran
CODE = ("import atexit, gc, sys, threading, time\n"
        "atexit.register(lambda: print('TEARDOWN', gc.isenabled(), gc.get_freeze_count(), flush=True))\n"
        "if sys.argv[1] == 'thread':\n"
        "    sys.argv.pop(1)\n"
        "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "sys.argv = ['hitok'] + sys.argv[1:]\n"
        "from hitok.cli.entry import main\n"
        "main()\n")


def hitok_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_command_that_succeeded_skips_the_teardown_with_its_output_flushed():
    done = hitok_process("models", "list", "--json")
    assert done.returncode == 0 and "TEARDOWN" not in done.stdout
    assert isinstance(json.loads(done.stdout), list)  # all of it came out


@pytest.mark.slow
def test_a_command_that_failed_or_left_a_thread_running_exits_as_usual(tmp_path):
    failed = hitok_process("upscale", str(tmp_path / "missing.png"))
    assert failed.returncode == 1 and "TEARDOWN" in failed.stdout and "no such file" in failed.stderr
    # the start-up imports ran with the garbage collector off; it is on again, their objects frozen out of its way
    _, enabled, frozen = failed.stdout.split()
    assert enabled == "True" and int(frozen) > 100_000
    threaded = hitok_process("thread", "models", "list", "--json")
    assert threaded.returncode == 0 and "TEARDOWN" in threaded.stdout
