"""Retrying a long-lived connection (a Kafka feed, a PostgreSQL listener, a camera): one policy for the
whole project, built on tenacity.

Usage::

    async for attempt in reconnecting(what="recognition feed", errors=(KafkaError, OSError), log=log):
        with attempt:
            consumer = await connect()
            connected(attempt)          # working again: the next failure waits the shortest delay
            await serve(consumer)       # runs until the connection fails

A failure raising one of ``errors`` is logged (one warning line with the delay) and retried after an
exponential delay, ``first_s`` doubling up to ``max_s``; with ``jitter`` the delay is drawn uniformly
between 0 and that ceiling ("full jitter", so many clients do not reconnect in step). Anything else,
cancellation included, ends the loop and propagates. It never gives up: a service whose broker is down
keeps trying until it is stopped.

A connection served by a thread rather than the event loop (a camera's decoder) uses
:func:`reconnecting_in_thread`, the same policy as a plain ``for`` loop, whose ``sleep`` may be a
``threading.Event``'s ``wait`` so that stopping cuts the delay short.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from tenacity import AsyncRetrying, AttemptManager, RetryCallState, Retrying, retry_if_exception_type, stop_never
from tenacity import wait_exponential, wait_random_exponential


def ceiling_s(attempt_number: int, first_s: float, max_s: float) -> float:
    """The longest delay before retry number ``attempt_number`` (1 = after the first failure)."""
    return min(max_s, first_s * 2 ** min(attempt_number - 1, 62))


def reconnecting(*, what: str, errors: tuple[type[BaseException], ...], log: logging.Logger | None = None,
                 first_s: float = 0.5, max_s: float = 30.0, jitter: bool = False,
                 on_retry: Callable[[RetryCallState], None] | None = None) -> AsyncRetrying:
    """The retry policy of a connection that should always be up (see the module's docstring).

    ``on_retry`` is called with tenacity's state before each sleep (``state.next_action.sleep`` is the
    delay, ``state.outcome.exception()`` the failure), e.g. to record a state change.
    """
    return AsyncRetrying(**_policy(what, errors, log, first_s, max_s, jitter, on_retry))


def reconnecting_in_thread(*, what: str, errors: tuple[type[BaseException], ...],
                           log: logging.Logger | None = None, first_s: float = 0.5, max_s: float = 30.0,
                           jitter: bool = False, on_retry: Callable[[RetryCallState], None] | None = None,
                           sleep: Callable[[float], Any] = time.sleep) -> Retrying:
    """:func:`reconnecting` for a connection served by a thread: ``for attempt in ...: with attempt: ...``.
    ``sleep`` waits between attempts (e.g. ``stop_event.wait``, so that stopping ends the wait)."""
    return Retrying(sleep=sleep, **_policy(what, errors, log, first_s, max_s, jitter, on_retry))


def _policy(what: str, errors: tuple[type[BaseException], ...], log: logging.Logger | None, first_s: float,
            max_s: float, jitter: bool, on_retry: Callable[[RetryCallState], None] | None) -> dict[str, Any]:
    """tenacity's arguments for the policy, shared by the asyncio and the thread flavours."""
    if first_s <= 0 or max_s < first_s:
        raise ValueError("reconnecting needs 0 < first_s <= max_s")
    wait = (wait_random_exponential(multiplier=first_s, max=max_s) if jitter
            else wait_exponential(multiplier=first_s, min=first_s, max=max_s))

    def before_sleep(state: RetryCallState) -> None:
        if log is not None:
            log.warning("%s: %s; retrying in %.1f s", what, _describe(state.outcome.exception()),
                        state.next_action.sleep)
        if on_retry is not None:
            on_retry(state)

    return dict(retry=retry_if_exception_type(errors), wait=wait, stop=stop_never, before_sleep=before_sleep,
                reraise=True)


def connected(attempt: AttemptManager) -> None:
    """Mark the connection as working: the next failure is retried after the shortest delay again."""
    attempt.retry_state.attempt_number = 1


def _describe(exc: BaseException | None) -> str:
    """``Type: message``, once: aiokafka's messages often start with their own type's name already."""
    if exc is None:
        return "failed"
    name, message = type(exc).__name__, str(exc).strip()
    if not message or message == name:
        return name
    return message if message.startswith(name) else f"{name}: {message}"
