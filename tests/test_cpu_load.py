"""infra/devstack/cpu_load.py: the hog really burns about the cores it was asked for (measured from /proc, not taken
from its own word), and nothing of it survives: not a normal stop, an error in the block, nor a parent
killed with SIGKILL (which runs no cleanup at all)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.devstack.cpu_load import CLOCK_TICKS, CpuLoad, check_cores, shares
from infra.foundation.errors import RollcallError


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by someone else counts as gone: it burns nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def measured_cores(load: CpuLoad, seconds: float) -> float:
    """CPU seconds the hogs took per wall second over ``seconds``, read from /proc by the test itself."""
    before = sum(cpu_seconds(pid) for pid in load.pids)
    started = time.monotonic()
    time.sleep(seconds)
    return (sum(cpu_seconds(pid) for pid in load.pids) - before) / (time.monotonic() - started)


def test_shares_split_whole_cores_and_the_fraction():
    assert shares(1) == [1.0]
    assert shares(0.5) == [0.5]
    assert shares(1.5) == [1.0, 0.5]
    assert shares(2) == [1.0, 1.0]
    assert shares(0) == []


@pytest.mark.parametrize("cores", [-0.5, -1, 1000])
def test_impossible_load_is_one_line_error(cores):
    with pytest.raises(RollcallError, match="--load"):
        check_cores(cores)


@pytest.mark.parametrize("cores, low, high", [(1.0, 0.75, 1.1), (0.5, 0.3, 0.65)])
def test_hog_burns_about_the_cores_asked_and_is_gone_after(cores, low, high):
    with CpuLoad(cores) as load:
        time.sleep(0.3)  # interpreter start-up
        burned = measured_cores(load, 2.0)
        pids = load.pids
        assert all(alive(pid) for pid in pids)
    assert low <= burned <= high, f"asked {cores} cores, the hog took {burned:.2f}"
    assert 0.6 * low <= load.report()["burned_cores"] <= high, load.report()
    assert not any(alive(pid) for pid in pids)


def test_hog_is_killed_when_the_block_fails():
    with pytest.raises(RuntimeError):
        with CpuLoad(0.2) as load:
            pids = load.pids
            raise RuntimeError("the run failed")
    assert not any(alive(pid) for pid in pids)


def test_hog_dies_with_a_parent_killed_without_cleanup(tmp_path: Path):
    """SIGKILL leaves no chance for `finally`: the kernel's parent-death signal and the hog's own parent
    check must end it."""
    pid_file = tmp_path / "pids"
    script = ("import sys, time; from infra.devstack.cpu_load import CpuLoad\n"
              "load = CpuLoad(0.3).start()\n"
              f"open({str(pid_file)!r}, 'w').write(' '.join(map(str, load.pids)))\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [int(p) for p in pid_file.read_text().split()]
        assert pids and all(alive(pid) for pid in pids)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 3
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)
