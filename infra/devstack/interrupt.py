"""Ctrl-C for long commands that run an event loop: it always ends the command as interrupted.

``asyncio.run`` turns a SIGINT into a cancellation of its main task and raises ``KeyboardInterrupt``
only if that task then ends cancelled. A library that swallows the cancellation (Python 3.11's
``asyncio.wait_for`` does when the awaited call completes in the same turn; seen once in CI: a
`rollcall scenario run` interrupted while enrolling carried on and exited 0) makes the run go on as if
nothing had happened. :func:`run_interruptibly` remembers the signal and raises ``KeyboardInterrupt``
once the main task has ended, however it ended; its ``finally`` blocks have run by then.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_interruptibly(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``; a SIGINT cancels ``main`` and ends in ``KeyboardInterrupt`` (a second one
    while it cleans up raises at once). A process that was started with SIGINT ignored (``nohup``, a
    background job of a script) or that handles it itself is left as it is, as asyncio.run leaves it."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return asyncio.run(main)
    interrupted = False

    async def guarded() -> T:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()

        def on_sigint() -> None:
            nonlocal interrupted
            if interrupted:  # impatient: stop cleaning up
                loop.remove_signal_handler(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
                return
            interrupted = True
            task.cancel()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            return await main
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        result = asyncio.run(guarded())
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    if interrupted:
        raise KeyboardInterrupt
    return result
