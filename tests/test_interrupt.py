"""Ctrl-C ends a long command even when a library swallows the cancellation it causes (infra.devstack.interrupt).
Each case runs in a process of its own: the test sends it a real SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys

from infra.foundation.paths import PROJECT_ROOT

SCRIPT = """
import asyncio, os, signal, sys
from infra.devstack.interrupt import run_interruptibly

async def main(swallow):
    asyncio.get_running_loop().call_later(0.3, os.kill, os.getpid(), signal.SIGINT)
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        print("cleaned up", flush=True)
        if not swallow:
            raise
    return "went on"

runner = asyncio.run if sys.argv[1] == "plain" else run_interruptibly
try:
    print(runner(main(sys.argv[2] == "swallow")))
except KeyboardInterrupt:
    print("interrupted")
"""


def _run(runner: str, behaviour: str, sigint=signal.SIG_DFL) -> list[str]:
    """The script's output lines; ``sigint``: how the child starts out treating SIGINT (SIG_DFL whatever
    this test process was started with: a CI job in the background of a script ignores it)."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, runner, behaviour], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=30, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[:-1]


def test_a_swallowed_cancellation_still_ends_the_run_as_interrupted():
    assert _run("plain", "swallow") == ["cleaned up", "went on"], "asyncio.run alone carries on (why this exists)"
    assert _run("guarded", "swallow") == ["cleaned up", "interrupted"]


def test_an_ordinary_interrupt_cleans_up_and_ends_interrupted():
    assert _run("guarded", "raise") == ["cleaned up", "interrupted"]


def test_a_process_started_with_sigint_ignored_keeps_ignoring_it():
    assert _run("guarded", "raise", sigint=signal.SIG_IGN) == ["went on"]  # as nohup and background jobs expect
