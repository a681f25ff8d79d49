"""A bounded CPU hog beside a run (`rollcall scenario run --load CORES`): how does the system behave on a
machine that is busy with something else?

The hog is separate processes, so they compete for the cores like another program would (threads of this
process would share its GIL and its scheduling). ``cores`` may be fractional: 1.5 is one process spinning
all the time and one spinning half of every 100 ms period. They never outlive the run:

- they form their own process group, killed as a whole when the load stops (end, error, Ctrl-C);
- each asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``) and also checks, between
  periods, that its parent is still the one that started it (a SIGKILLed parent has no ``finally``);
- each stops by itself after ``max_seconds`` whatever happens.

``CpuLoad.burned_cores()`` reads the hogs' own CPU time from /proc, so a report says how much CPU the hog
really took, not only what it asked for.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

from infra.foundation.errors import RollcallError

MARKER = "rollcall-cpu-load"  # in each hog's command line: `pgrep -af rollcall-cpu-load` finds them
PERIOD_S = 0.1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The hog itself: argv = [MARKER, share, parent pid, max seconds]. Spins for share x PERIOD of every
# PERIOD, sleeps the rest, and exits as soon as its parent is gone.
HOG_SCRIPT = """
import ctypes, os, sys, time
share, parent, limit = float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL
except Exception:
    pass
period = %r
ends = time.monotonic() + limit
while os.getppid() == parent and time.monotonic() < ends:
    start = time.perf_counter()
    while time.perf_counter() - start < share * period:
        pass
    rest = period - (time.perf_counter() - start)
    if rest > 0:
        time.sleep(rest)
""" % PERIOD_S


def shares(cores: float) -> list[float]:
    """How ``cores`` is split over processes: whole cores first, the fraction last (1.5 -> [1.0, 0.5])."""
    whole = int(math.floor(cores + 1e-9))
    rest = round(cores - whole, 3)
    return [1.0] * whole + ([rest] if rest > 0 else [])


def check_cores(cores: float) -> float:
    """``cores`` if it is a load this machine can carry: 0 (none) up to its core count."""
    available = os.cpu_count() or 1
    if not (0 <= cores <= available):
        raise RollcallError(f"--load {cores:g}: give a number of cores from 0 to {available} "
                            "(this machine's core count), e.g. --load 1 or --load 0.5")
    return cores


class CpuLoad:
    """``with CpuLoad(1.5): ...`` keeps 1.5 cores busy in other processes for the block (0: no hog)."""

    def __init__(self, cores: float, *, max_seconds: float = 3600.0):
        self.cores = check_cores(cores)
        self.max_seconds = max_seconds
        self.processes: list[subprocess.Popen] = []
        self._started = 0.0
        self._burned_s = 0.0
        self._stopped_at: float | None = None

    def start(self) -> "CpuLoad":
        """Start the hogs. Call it from the thread that outlives them (the kernel's parent-death signal
        follows the thread that started a child, not the process)."""
        parent = os.getpid()
        group = 0  # the first hog starts a process group; the others join it
        self._started = time.monotonic()
        try:
            for share in shares(self.cores):
                process = subprocess.Popen(
                    [sys.executable, "-c", HOG_SCRIPT, MARKER, str(share), str(parent), str(self.max_seconds)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    process_group=group, close_fds=True)
                group = group or process.pid
                self.processes.append(process)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def burned_cores(self) -> float:
        """The hogs' CPU seconds per wall second since they started (until stop, when stopped)."""
        elapsed = (self._stopped_at or time.monotonic()) - self._started
        burned = self._burned_s if self._stopped_at else self._cpu_seconds()
        return burned / elapsed if elapsed > 0 else 0.0

    def stop(self) -> None:
        """Kill the whole process group and reap every hog. Idempotent."""
        if not self.processes or self._stopped_at is not None:
            return
        self._burned_s = self._cpu_seconds()
        self._stopped_at = time.monotonic()
        try:
            os.killpg(self.processes[0].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for process in self.processes:
            if process.poll() is None:
                try:
                    process.kill()  # a hog that somehow left the group
                except ProcessLookupError:
                    pass
            process.wait()

    def report(self) -> dict:
        """What the run's JSON records about the load."""
        return {"cores": self.cores, "processes": len(self.processes),
                "burned_cores": round(self.burned_cores(), 2)}

    def _cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / CLOCK_TICKS

    def __enter__(self) -> "CpuLoad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
