"""`rollcall bench writer --writers N`: the writer's consumer group with N members, each in a process of its
own (as a deployment runs them: one `rollcall attendance writer` per process, on one machine or several), so
that they use more than one core between them.

Each member reports its counters to the benchmark through a pipe every few milliseconds (what the
benchmark times; the members themselves only share the topics and the database, as in production). The
span timed is the same as with one writer in the benchmark's own process: from the first batch any member
stored to the moment the members together have read every event. Members are started together; when the
broker gives the partitions to the first member before the second joined, the rebalance that follows is
inside the span (counted in ``rebalances``), as it would be for a group scaled out while it has a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from consumers.writer import AttendanceWriter
from infra.foundation.config import config_from_dict

REPORT_EVERY_S = 0.005
TIMEOUT_S = 600.0


@dataclass
class MemberReport:
    at: float  # time.monotonic() of the member's process (CLOCK_MONOTONIC: the same clock in every process)
    events: int
    duplicates: int
    batches: int
    partitions: int  # partitions assigned to the member now
    assignments: int  # assignments the member received so far


def _member(raw_config: dict, url: str, bootstrap: str, index: int, pipe: Connection) -> None:
    """A member's process: run one writer until the benchmark says stop, reporting its counters."""
    config = config_from_dict(raw_config, environ={})
    asyncio.run(_run_member(config, url, bootstrap, index, pipe))


async def _run_member(config, url: str, bootstrap: str, index: int, pipe: Connection) -> None:
    writer = AttendanceWriter(config, database_url=url, bootstrap_servers=bootstrap,
                              client_id=f"{config.kafka.client_id}-bench-writer-{index}")
    task = asyncio.create_task(writer.run())
    last: tuple | None = None
    while not task.done() and not pipe.poll():
        s = writer.stats
        counters = (s.events, s.duplicates, s.batches, s.partitions, s.assignments)
        if counters != last:
            pipe.send(MemberReport(time.monotonic(), *counters))
            last = counters
        await asyncio.sleep(REPORT_EVERY_S)
    writer.stop()
    await task  # a writer's failure ends the member's process with its traceback; the benchmark says so
    pipe.send(None)


async def time_members(raw_config: dict, url: str, bootstrap: str, total: int, members: int) -> dict:
    """Run ``members`` writers in processes of their own until they have read ``total`` events together:
    events/s from the first batch stored on, batches, and what each member did."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no event loop or sockets inherited
    pipes, processes = [], []
    for index in range(members):
        ours, theirs = context.Pipe()
        process = context.Process(target=_member, args=(raw_config, url, bootstrap, index, theirs),
                                  name=f"bench-writer-{index}", daemon=True)
        process.start()
        pipes.append(ours)
        processes.append(process)
    try:
        latest, first, finished = await _follow(pipes, processes, total)
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):  # a member that ended already
                pipe.send("stop")
        for process in processes:
            await asyncio.to_thread(process.join, 30)
            if process.is_alive():
                process.kill()
    events = sum(r.events for r in latest)
    return {
        "events_per_s": (events - first[1]) / max(finished - first[0], 1e-6),
        "batches": sum(r.batches for r in latest),
        "members": [{"events": r.events, "batches": r.batches, "partitions": r.partitions,
                     "assignments": r.assignments} for r in latest],
        "rebalances": max(r.assignments for r in latest) - 1,
    }


async def _follow(pipes: list[Connection], processes, total: int):
    """Read the members' reports until they have read ``total`` events together: (their last reports,
    (when the first batch was stored, events stored then), when the last event was read)."""
    latest = [MemberReport(0.0, 0, 0, 0, 0, 0) for _ in pipes]
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        for index, pipe in enumerate(pipes):
            while pipe.poll():
                report = pipe.recv()
                if report is None:
                    raise RuntimeError(f"writer member {index} stopped before the benchmark ended")
                latest[index] = report
                if first is None and report.batches:
                    first = (report.at, sum(r.events for r in latest))
        if sum(r.events + r.duplicates for r in latest) >= total:
            return latest, first, max(r.at for r in latest)
        for index, process in enumerate(processes):
            if not process.is_alive():
                raise RuntimeError(f"writer member {index} ended (exit code {process.exitcode}): see its output above")
        await asyncio.sleep(0.002)
    events = sum(r.events for r in latest)
    raise RuntimeError(f"the writers wrote {events} of {total} events in {TIMEOUT_S:.0f} s")
