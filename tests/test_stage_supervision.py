"""Stage supervision (processor/supervisor.py): a stage task that dies is restarted a bounded number of
times, counted and reported on /health; one that keeps dying stops the processor with a one-line error
and a non-zero exit. Unit tests on real asyncio tasks and a real HTTP server; then the processor itself,
on the test stack, with a stage made to fail through the documented ROLLCALL_INJECT_STAGE_FAULT."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY

from infra.devstack import stack as embedded
from infra.foundation import db
from infra.foundation.config import EXAMPLE_CONFIG, CameraConfig, load_config
from infra.foundation.errors import RollcallError
from infra.foundation.paths import PROJECT_ROOT
from infra.scenario.mounts import render_cached
from processor import health
from processor.service import Processor, _first_failure
from processor.supervisor import FaultPlan, StageFailed, StageSupervisor


def _fast(**kwargs) -> StageSupervisor:
    settings = dict(max_restarts=3, first_s=0.01, max_s=0.02, healthy_after_s=60.0, faults=None)
    return StageSupervisor(**{**settings, **kwargs})


def _restarts(stage: str) -> float:
    return REGISTRY.get_sample_value("rollcall_stage_restarts_total", {"stage": stage}) or 0.0


async def _until(condition, timeout_s: float = 10.0) -> None:
    """Wait for ``condition()``; a supervisor that does not restart fails here instead of hanging."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _up(stage: str) -> float | None:
    return REGISTRY.get_sample_value("rollcall_stage_up", {"stage": stage})


def test_a_dying_stage_is_restarted_and_goes_on_with_its_queue():
    async def scenario():
        inbox: asyncio.Queue = asyncio.Queue()
        handled, starts = [], []

        async def stage_loop():  # dies on its first two starts, after taking one item each time
            starts.append(1)
            while True:
                item = await inbox.get()
                handled.append(item)
                if len(starts) <= 2:
                    raise RuntimeError(f"broken on item {item}")

        supervisor = _fast()
        before = _restarts("unit-restart")
        supervisor.start("unit-restart", stage_loop)
        for item in range(5):
            inbox.put_nowait(item)
        await _until(lambda: len(handled) == 5)
        report = supervisor.report()["unit-restart"]
        for task in supervisor.tasks:
            task.cancel()
        await asyncio.gather(*supervisor.tasks, return_exceptions=True)
        return handled, report, _restarts("unit-restart") - before, supervisor

    handled, report, counted, supervisor = asyncio.run(scenario())
    assert handled == [0, 1, 2, 3, 4]
    assert report == {"state": "running", "restarts": 2, "last_error": "RuntimeError: broken on item 1"}
    assert counted == 2 and supervisor.failure is None
    assert _up("unit-restart") == 1


def test_a_stage_that_keeps_dying_gives_up_with_one_line():
    async def scenario():
        async def stage_loop():
            raise ValueError("model session broken\nsecond line of detail")

        supervisor = _fast(max_restarts=3)
        supervisor.start("unit-dying", stage_loop)
        states = set()
        waiting = asyncio.create_task(_first_failure(supervisor, []))
        deadline = time.monotonic() + 10
        while not waiting.done() and time.monotonic() < deadline:
            states.add(supervisor.report()["unit-dying"]["state"])
            await asyncio.sleep(0.001)
        with pytest.raises(StageFailed) as failed:
            await waiting
        return failed.value, supervisor, states

    error, supervisor, states = asyncio.run(scenario())
    assert "\n" not in str(error) and error.exit_code != 0
    assert str(error) == ("processor stopped: its unit-dying task kept failing (3 restarts in a row), "
                          "last with ValueError: model session broken")
    assert supervisor.report()["unit-dying"]["state"] == "failed" and supervisor.report()["unit-dying"]["restarts"] == 3
    assert "restarting" in states and not supervisor.healthy
    assert _up("unit-dying") == 0


def test_a_stage_that_ran_well_before_failing_starts_a_fresh_count():
    async def scenario():
        runs = []

        async def stage_loop():  # runs past healthy_after_s, then dies: six times
            runs.append(1)
            await asyncio.sleep(0.06)
            if len(runs) <= 6:
                raise RuntimeError("rare failure")
            await asyncio.Event().wait()

        supervisor = _fast(max_restarts=1, healthy_after_s=0.05)
        supervisor.start("unit-rare", stage_loop)
        await _until(lambda: len(runs) == 7)
        for task in supervisor.tasks:
            task.cancel()
        await asyncio.gather(*supervisor.tasks, return_exceptions=True)
        return supervisor

    supervisor = asyncio.run(scenario())
    assert supervisor.failure is None and supervisor.report()["unit-rare"]["restarts"] == 6


def test_cancelling_a_stage_is_no_failure_and_a_returning_loop_is_one():
    async def scenario():
        supervisor = _fast(max_restarts=1)
        returned = []

        async def returns():
            returned.append(1)

        supervisor.start("unit-cancelled", lambda: asyncio.Event().wait())
        supervisor.start("unit-returns", returns)
        await asyncio.sleep(0.1)
        supervisor.tasks[0].cancel()
        await asyncio.gather(*supervisor.tasks, return_exceptions=True)
        return supervisor, returned

    supervisor, returned = asyncio.run(scenario())
    assert supervisor.report()["unit-cancelled"]["restarts"] == 0
    assert len(returned) == 2 and supervisor.report()["unit-returns"]["state"] == "failed"
    assert "unit-returns task kept failing" in str(supervisor.failure) and "StageReturned" in str(supervisor.failure)


def test_the_fault_setting_is_parsed_and_a_bad_one_is_one_line():
    assert FaultPlan.from_environ({}) is None
    plan = FaultPlan.from_environ({"ROLLCALL_INJECT_STAGE_FAULT": "face-stage:2"})
    assert (plan.stage, plan.remaining) == ("face-stage", 2)
    plan.strike("recognition-stage")  # another stage: untouched
    for _ in range(2):
        with pytest.raises(RuntimeError, match="injected"):
            plan.strike("face-stage")
    plan.strike("face-stage")  # spent
    assert FaultPlan.from_environ({"ROLLCALL_INJECT_STAGE_FAULT": "batcher"}).remaining is None
    with pytest.raises(RollcallError, match="ROLLCALL_INJECT_STAGE_FAULT"):
        FaultPlan.from_environ({"ROLLCALL_INJECT_STAGE_FAULT": "face-stage:often"})


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_health_is_503_while_a_stage_restarts_and_200_when_all_run():
    async def scenario():
        processor = Processor(load_config(None), database_url="unused", kafka_bootstrap_servers="unused")
        processor.supervisor = _fast(max_restarts=3, first_s=0.5, max_s=0.5)
        gate = asyncio.Event()

        async def flaky():
            if not gate.is_set():
                raise RuntimeError("first start fails")
            await asyncio.Event().wait()

        port = await asyncio.to_thread(health.serve, 0, processor.health)
        url = f"http://127.0.0.1:{port}"
        starting = await asyncio.to_thread(_get, f"{url}/health")
        processor.started.set()
        processor.supervisor.start("unit-http", flaky)
        await asyncio.sleep(0.1)
        degraded = await asyncio.to_thread(_get, f"{url}/health")
        gate.set()
        await asyncio.sleep(0.6)
        ok = await asyncio.to_thread(_get, f"{url}/health")
        metrics_page = await asyncio.to_thread(_get, f"{url}/metrics")
        for task in processor.supervisor.tasks:
            task.cancel()
        await asyncio.gather(*processor.supervisor.tasks, return_exceptions=True)
        return starting, degraded, ok, metrics_page

    starting, degraded, ok, metrics_page = asyncio.run(scenario())
    assert starting[0] == 503 and json.loads(starting[1])["state"] == "starting"
    assert degraded[0] == 503 and json.loads(degraded[1])["state"] == "degraded"
    assert json.loads(degraded[1])["stages"]["unit-http"]["state"] == "restarting"
    assert ok[0] == 200 and json.loads(ok[1])["stages"]["unit-http"] == {
        "state": "running", "restarts": 1, "last_error": "RuntimeError: first start fails"}
    assert metrics_page[0] == 200 and 'rollcall_stage_restarts_total{stage="unit-http"} 1.0' in metrics_page[1]


# --- the processor on the test stack -----------------------------------------------------------------


async def test_the_processor_recovers_from_a_recognition_stage_that_died_twice(stack, fresh_database, monkeypatch):
    """The recognition stage dies on its first two starts; restarted, it recognises the door's faces (the
    review queue gets the unknown ones, as in test_processor.py) and /health ends ok with 2 restarts."""
    monkeypatch.setenv("ROLLCALL_INJECT_STAGE_FAULT", "recognition-stage:2")
    _, rendered = render_cached(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")
    db.migrate(fresh_database)
    mounts = embedded.read_rtsp_mounts()
    embedded.set_rtsp_mounts({**mounts, "/supervision-test/door": rendered.door_video})
    config = load_config(EXAMPLE_CONFIG, environ={})
    camera = CameraConfig(id="door-supervised", url=stack.rtsp_url("supervision-test/door"), role="door",
                          room="A101", analysis_fps=10)
    config = config.model_copy(update={"cameras": [camera], "doors": []})
    processor = Processor(config, database_url=fresh_database, kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
                          metrics_port=0)
    before = _restarts("recognition-stage")
    interval_before = sys.getswitchinterval()
    try:
        await processor.start()
        interval_running = sys.getswitchinterval()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and processor.review.written < 1:
            await asyncio.sleep(0.5)
        status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{processor.metrics_port}/health")
    finally:
        await processor.stop()
        embedded.set_rtsp_mounts(mounts)
    assert processor.review.written >= 1
    assert status == 200, body
    assert json.loads(body)["stages"]["recognition-stage"]["restarts"] == 2
    assert _restarts("recognition-stage") - before == 2
    # the thread switch interval is the processor's while it runs (`[scheduling] gil_switch_interval_ms`), and
    # the process's own again once it stopped
    assert interval_running == pytest.approx(config.scheduling.gil_switch_interval_ms / 1000.0)
    assert interval_running != pytest.approx(interval_before)
    assert sys.getswitchinterval() == pytest.approx(interval_before)


def test_rollcall_run_exits_non_zero_with_one_line_when_a_stage_keeps_dying(stack, stack_dir, fresh_database):
    """`rollcall run` whose face stage fails on every start: five restarts (0.5 + 1 + 2 + 4 + 8 s), then
    one error line and exit status 1, for systemd's Restart=on-failure."""
    db.migrate(fresh_database)
    env = {**os.environ, "ROLLCALL_STACK_DIR": str(stack_dir), "DATABASE_URL": fresh_database,
           "ROLLCALL_INJECT_STAGE_FAULT": "face-stage"}
    command = [sys.executable, "-m", "infra.cli.main", "--config", str(EXAMPLE_CONFIG), "run", "--metrics-port", "0"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, cwd=PROJECT_ROOT)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == ("rollcall: error: processor stopped: its face-stage task kept failing (5 restarts in a row), "
                    "last with InjectedFault: injected by ROLLCALL_INJECT_STAGE_FAULT"), result.stderr[-3000:]
    # the log says each restart; the stage's traceback once, with its first failure
    assert result.stderr.count("Traceback") == 1 and result.stderr.count("restart ") == 5, result.stderr[-3000:]
