"""`rollcall bench capacity` for real on the test stack: a short scenario (two enrolled people and a visitor,
40 s) as one copy, then as two copies at once in one processor (each its own room, cameras and people); every
score is checked against the copy's own ground truth (the rendered ground_truth.json, read here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from infra.foundation.paths import PROJECT_ROOT, scenarios_dir

PHOTOS = PROJECT_ROOT / "infra" / "scenarios" / "photos"
SHORT_SPEC = f"""
[scenario]
name = "capacity-short"
duration_s = 40
fps = 10
seed = 7

[[people]]
id = "macron"
name = "Emmanuel Macron"
enroll = ["{PHOTOS}/macron_2014.jpg"]
door_photo = "{PHOTOS}/macron_2025.jpg"
arrive_s = 3

[[people]]
id = "ardern"
name = "Jacinda Ardern"
enroll = ["{PHOTOS}/ardern_2018.jpg"]
door_photo = "{PHOTOS}/ardern_2022.jpg"
arrive_s = 9

[[visitors]]
id = "visitor-biden"
name = "Joe Biden (not enrolled)"
door_photo = "{PHOTOS}/biden.jpg"
arrive_s = 13

[session]
course = "CS101"
room = "A101"
start_s = 2
end_s = 38
min_presence_s = 10
"""


def _capacity(stack_dir, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROLLCALL_STACK_DIR": str(stack_dir)}
    return subprocess.run([sys.executable, "-m", "infra.cli.main", "bench", "capacity", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_capacity_two_steps_scored_per_copy(stack, stack_dir, tmp_path):
    spec = tmp_path / "capacity-short.toml"
    spec.write_text(SHORT_SPEC)
    result = _capacity(stack_dir, "--scenario", str(spec), "--max", "2", "--all-steps", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cpu_cores"] == os.cpu_count() and report["device"], report
    assert report["criteria"]["attendance_precision"] == 1.0 and report["criteria"]["attendance_recall_min"] == 0.98
    steps = report["steps"]
    assert [(s["copies"], s["doors"], s["rooms"]) for s in steps] == [(1, 1, 1), (2, 2, 2)], steps
    best = 0
    for step in steps:
        if not step["passed"]:
            break
        best = step["copies"]
    assert report["door_streams"] == report["room_streams"] == best, report
    failed = [s["copies"] for s in steps if not s["passed"]]
    assert report["answer"] == (f"step {failed[0]} failed" if failed else
                                "every step passed up to --max 2: this machine may carry more"), report["answer"]
    for step in steps:
        assert step["run"]["left_behind"] == [], step["run"]
        for copy in step["per_copy"]:
            _check_copy(copy, report["criteria"])
        assert step["passed"] == all(c["passed"] for c in step["per_copy"]), step
    # The two copies of step 2 have people of their own: nobody is expected in both rooms, and nobody
    # enrolled in one copy was recognised on the other's cameras.
    first, second = steps[1]["per_copy"]
    assert first["room"] != second["room"], (first["room"], second["room"])
    assert first["expected_present"] == ["ardern", "macron"], first
    assert second["expected_present"] and not set(first["expected_present"]) & set(second["expected_present"]), steps[1]
    assert not set(second["attended"]) & {"ardern", "macron"}, second


def _check_copy(copy: dict, criteria: dict) -> None:
    """A copy's figures recomputed from its own ground truth, and its verdict from the criteria."""
    truth = json.loads((scenarios_dir() / copy["scenario"] / "ground_truth.json").read_text())
    expected = set(truth["expected_present"])
    attended = set(copy["attended"])
    assert sorted(expected) == copy["expected_present"], copy
    assert copy["recall"] == round(len(attended & expected) / len(expected), 4), copy
    assert copy["precision"] == (round(len(attended & expected) / len(attended), 4) if attended else 0.0), copy
    assert copy["missed"] == sorted(expected - attended) and copy["wrongly_present"] == sorted(attended - expected)
    # latencies come from the copy's own events: about one door event per passage (door_events: the recognised
    # people's), presence events in the room
    passages = len(truth["people"])
    assert 1 <= copy["door_events"] <= copy["door_all_events"] <= passages + 2 and copy["room_events"] >= 1, copy
    for key in ("door_p50_ms", "door_p95_ms", "door_all_p95_ms", "room_p50_ms", "room_p95_ms"):
        assert isinstance(copy[key], float) and 0 < copy[key] < 60_000, (key, copy)
    assert copy["door_p50_ms"] <= copy["door_p95_ms"] and copy["room_p50_ms"] <= copy["room_p95_ms"], copy
    for role in ("door", "room"):
        frames = copy["frames"][role]
        assert frames["decoded"] > 0 and 0 < frames["analysed"] <= frames["decoded"], (role, frames)
        assert frames["dropped"] >= 0, (role, frames)
    passed = (copy["precision"] == criteria["attendance_precision"]
              and copy["recall"] >= criteria["attendance_recall_min"]
              and copy["door_p95_ms"] < criteria["door_p95_ms_below"]
              and copy["room_p95_ms"] < criteria["room_p95_ms_below"]
              and not copy["identities_of_other_copies"])
    assert copy["passed"] == passed and (copy["failed"] == []) == passed, copy


def test_capacity_bad_input_is_one_line(stack_dir, tmp_path):
    for args, words in ((["--max", "0"], "0 is not in the range"),
                        (["--max", "9"], "can run at most 5 copies at once"),
                        (["--max", "2", "--from", "3"], "--from 3: give a step from 1 to --max"),
                        (["--repeat", "0"], "0 is not in the range")):
        result = _capacity(stack_dir, *args, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], lines
