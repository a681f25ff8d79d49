"""Supervision of the processor's stage tasks: a stage whose loop dies is restarted, a few times, and a
stage that keeps dying stops the processor.

Each stage (batcher, face stage, recognition stage, the room's) is one asyncio task running an endless
loop over its inbox. An exception escaping that loop is a bug or a broken model session, never a bad
frame or message: those are handled where they arise. Unsupervised, the task would just end, and the
processor would go on decoding its cameras with nothing analysing them. Here:

- the stage is started again on the same queues (and state) after an exponential delay (``first_s``
  doubling up to ``max_s``), at most ``max_restarts`` times in a row. A run that lasted
  ``healthy_after_s`` before failing counts as healthy: the count starts again (a rare failure a day
  apart does not add up to a stop). The policy is tenacity's, as for every retry in the project
  (:mod:`infra.foundation.retry`), with a bound.
- every restart is counted (``rollcall_stage_restarts_total{stage}``), the stage's state is a gauge
  (``rollcall_stage_up{stage}``: 1 running, 0 waiting to restart or given up) and :meth:`report` says
  it for the processor's ``/health`` (processor/health.py).
- one more failure than ``max_restarts`` gives up: :attr:`failure` is set to a :class:`StageFailed`
  with a one-line message, which ``Processor.run_forever`` raises (``rollcall run`` prints it and exits
  non-zero, so that the service manager restarts the process).

Fault injection (for tests and drills): ``ROLLCALL_INJECT_STAGE_FAULT=NAME[:COUNT]`` makes the stage
task NAME (e.g. ``recognition-stage``) raise :class:`InjectedFault` as its loop starts, on its first
COUNT runs (default: every run). It goes through the same path as a real failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential

from infra.foundation.errors import RollcallError
from infra.foundation.retry import connected
from processor import metrics

log = logging.getLogger("rollcall.processor")

FAULT_SETTING = "ROLLCALL_INJECT_STAGE_FAULT"

STAGE_RESTARTS = metrics.get_or_create(metrics.Counter, "rollcall_stage_restarts",
                                       "Stage tasks restarted after an exception escaped their loop",
                                       labelnames=["stage"])
STAGE_UP = metrics.get_or_create(metrics.Gauge, "rollcall_stage_up",
                                 "1 while a stage task runs; 0 while it waits to restart or has given up",
                                 labelnames=["stage"])


class StageFailed(RollcallError):
    """A stage kept dying: the processor stops (exit status 1) for its service manager to restart it."""

    exit_code = 1


class InjectedFault(RuntimeError):
    """The failure ``ROLLCALL_INJECT_STAGE_FAULT`` makes a stage raise."""


class StageReturned(RuntimeError):
    """A stage loop ended by itself: as dead as one that raised (they run until cancelled)."""


@dataclass
class _Stage:
    name: str
    state: str = "running"  # running | restarting | failed
    restarts: int = 0  # in all, since the processor started
    last_error: str | None = None


@dataclass
class FaultPlan:
    """Which stage fails on start, how many more times (None: always); from ``ROLLCALL_INJECT_STAGE_FAULT``."""

    stage: str
    remaining: int | None = None

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> "FaultPlan | None":
        value = (os.environ if environ is None else environ).get(FAULT_SETTING, "").strip()
        if not value:
            return None
        name, _, count = value.partition(":")
        if not name or (count and not count.isdigit()):
            raise RollcallError(f"{FAULT_SETTING}={value!r}: give a stage task name, optionally ':COUNT'")
        return cls(name, int(count) if count else None)

    def strike(self, stage: str) -> None:
        if stage != self.stage or self.remaining == 0:
            return
        if self.remaining is not None:
            self.remaining -= 1
        raise InjectedFault(f"injected by {FAULT_SETTING}")


@dataclass
class StageSupervisor:
    """Runs stage loops as tasks, restarting each a bounded number of times (see the module)."""

    max_restarts: int = 5
    first_s: float = 0.5
    max_s: float = 10.0
    healthy_after_s: float = 60.0
    faults: FaultPlan | None = field(default_factory=FaultPlan.from_environ)
    stages: dict[str, _Stage] = field(default_factory=dict)
    tasks: list[asyncio.Task] = field(default_factory=list)
    failure: StageFailed | None = None
    _failed: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, name: str, loop: Callable[[], Awaitable[Any]]) -> asyncio.Task:
        """Run ``loop()`` (a new coroutine of the stage's loop each time) as the supervised task ``name``."""
        self.stages[name] = _Stage(name)
        STAGE_UP.labels(name).set(1)
        STAGE_RESTARTS.labels(name)  # the series exists (at 0) from the start, for alerts on its rate
        task = asyncio.create_task(self._supervise(name, loop), name=name)
        self.tasks.append(task)
        return task

    async def wait_failed(self) -> StageFailed:
        await self._failed.wait()
        return self.failure

    def report(self) -> dict[str, dict[str, Any]]:
        """Stage name -> its state, restarts and last error, for /health."""
        return {s.name: {"state": s.state, "restarts": s.restarts, "last_error": s.last_error}
                for s in self.stages.values()}

    @property
    def healthy(self) -> bool:
        return all(s.state == "running" for s in self.stages.values())

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[Any]]) -> None:
        stage = self.stages[name]
        retrying = AsyncRetrying(retry=retry_if_exception_type(Exception),
                                 stop=stop_after_attempt(self.max_restarts + 1),
                                 wait=wait_exponential(multiplier=self.first_s, min=self.first_s, max=self.max_s),
                                 before_sleep=lambda state: self._restarting(stage, state), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    await self._run_once(stage, loop, attempt)
        except Exception as exc:  # noqa: BLE001 - given up: said once, and the processor stops
            self._give_up(stage, exc)

    async def _run_once(self, stage: _Stage, loop: Callable[[], Awaitable[Any]], attempt) -> None:
        started = time.monotonic()
        stage.state = "running"
        STAGE_UP.labels(stage.name).set(1)
        try:
            if self.faults is not None:
                self.faults.strike(stage.name)
            await loop()
            raise StageReturned("its loop returned")
        except Exception as exc:
            stage.last_error = describe(exc)
            STAGE_UP.labels(stage.name).set(0)
            if time.monotonic() - started >= self.healthy_after_s:
                connected(attempt)  # it had been running well: a fresh count, and the shortest delay
            raise

    def _restarting(self, stage: _Stage, state: RetryCallState) -> None:
        stage.state = "restarting"
        stage.restarts += 1
        STAGE_RESTARTS.labels(stage.name).inc()
        # a stage dying is a bug to fix: its traceback with the first failure of a streak (the next ones
        # are most likely the same, and would bury the log)
        first = state.attempt_number == 1
        log.error("stage %s died (%s); restart %d of %d in %.1f s", stage.name, stage.last_error,
                  state.attempt_number, self.max_restarts, state.next_action.sleep,
                  exc_info=state.outcome.exception() if first else None)

    def _give_up(self, stage: _Stage, exc: BaseException) -> None:
        stage.state = "failed"
        STAGE_UP.labels(stage.name).set(0)
        log.error("stage %s died again (%s) after %d restarts in a row; giving up", stage.name,
                  describe(exc), self.max_restarts)
        if self.failure is None:
            self.failure = StageFailed(f"processor stopped: its {stage.name} task kept failing "
                                       f"({self.max_restarts} restarts in a row), last with {describe(exc)}")
            self._failed.set()


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``: one line, whatever the exception holds."""
    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
