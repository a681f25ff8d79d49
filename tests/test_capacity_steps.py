"""How `rollcall bench capacity` folds a step's repeated runs into one verdict, and which step is the answer
(pure logic; tests/test_bench_capacity.py runs the whole bench on the embedded stack)."""

from __future__ import annotations

from infra.bench.capacity import answer_note, combine_runs, largest_passed
from infra.bench.capacity_scores import _slowest


def _run(copies: int, passed: list[bool], door_ms: float, run_id: str) -> dict:
    per_copy = [{"copy": i, "passed": ok, "failed": [] if ok else [f"copy {i} missed someone"]}
                for i, ok in enumerate(passed, 1)]
    return {"copies": copies, "doors": copies, "rooms": copies, "passed": all(passed),
            "failed": [f"copy {c['copy']}: {r}" for c in per_copy for r in c["failed"]], "per_copy": per_copy,
            "processor_latency_p95_ms": {"door": door_ms, "room": None}, "load": None,
            "run": {"id": run_id, "left_behind": []}}


def test_one_run_is_the_step_as_it_was():
    run = _run(2, [True, True], 400.0, "a")
    step = combine_runs([run])
    assert step == dict(run, repeat=1, passed_runs=1)


def test_a_step_passes_only_when_every_run_passed():
    runs = [_run(4, [True] * 4, 500.0, "a"), _run(4, [True, False, True, True], 900.0, "b"),
            _run(4, [True] * 4, 700.0, "c")]
    step = combine_runs(runs)
    assert not step["passed"] and step["passed_runs"] == 2 and step["repeat"] == 3
    assert step["failed"] == ["run 2: copy 2: copy 2 missed someone"]
    assert len(step["per_copy"]) == 12 and [c["repeat_run"] for c in step["per_copy"]][::4] == [1, 2, 3]
    assert step["processor_latency_p95_ms"] == {"door": 900.0, "room": None}  # the worst run's
    assert step["run"]["id"] == ["a", "b", "c"] and step["runs"] == runs
    assert combine_runs(runs[:1] + runs[2:])["passed"]


def test_the_answer_is_the_largest_step_passed_with_every_smaller_one():
    def step(k: int, ok: bool) -> dict:
        return {"copies": k, "passed": ok}
    assert largest_passed([step(1, True), step(2, True), step(3, False), step(4, True)]) == 2
    assert largest_passed([step(1, False), step(2, True)]) == 0
    assert largest_passed([]) == 0
    # started at a later step (--from): the smaller ones were not run, so nothing is claimed
    assert largest_passed([step(3, True), step(4, True)]) == 0


def test_the_slowest_recognitions_of_enrolled_people_say_what_held_them():
    def event(person, last_seen, published, frames, liveness_frames=None):
        return {"person_id": person, "last_seen": f"2026-12-04T10:00:{last_seen:06.3f}+00:00",
                "published_at": f"2026-12-04T10:00:{published:06.3f}Z", "frames": frames,
                "liveness": {"decision": "live", "score": 1.0, "frames": liveness_frames} if liveness_frames else None}

    events = [event("hanks", 10.0, 11.2, 9, 11), event(None, 12.0, 13.5, 4), event("messi", 20.0, 20.3, 15, 18),
              event("collins", 30.0, 30.1, 12), event("obama", 40.0, 40.9, 20, 20)]
    slowest = _slowest(events)
    assert [row["person_id"] for row in slowest] == ["hanks", "obama", "messi"]  # the stranger is not counted
    assert slowest[0] == {"person_id": "hanks", "delay_ms": 1200.0, "frames": 9, "liveness_frames": 11}


def test_the_answer_says_what_bounds_it():
    def step(k: int, ok: bool) -> dict:
        return {"copies": k, "passed": ok}
    assert answer_note([step(1, True), step(2, False)], 1, 4, None) == "step 2 failed"
    # every step the pool allows passed: a floor, not the machine's capacity
    pool = answer_note([step(k, True) for k in (1, 2, 3, 4)], 1, 4, None)
    assert pool.startswith("every step passed up to 4, the most copies the identity pool allows") and "may carry more" in pool
    assert answer_note([step(1, True), step(2, True)], 1, 2, 2).startswith("every step passed up to --max 2")
    later = answer_note([step(4, True)], 4, 4, 4)
    assert later.endswith("steps 1 to 3 not run (--from 4), so no figure is claimed")
