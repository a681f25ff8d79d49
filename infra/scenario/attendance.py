"""Attendance in `rollcall scenario run`: a one-off session for the scenario's room covering the run, the
writer (in-process) on the run's events, and the attendance rows scored against the ground truth.

The session is the spec's ``[session]`` in wall-clock time (the room video's first frame + start_s/end_s)
with a policy that matches the ground truth's rule: present when in the room at least ``min_presence_s``
within the session (no early-arrival window, no late or left-early distinction: those still count as
attended). The writer reads the run's own topics (infra/devstack/run_space.py) under a group of its own and writes
into the run's own database, so nothing of another run reaches it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Callable

import asyncpg

from consumers.sessions import close_session, open_session
from consumers.writer import AttendanceWriter

ATTENDED = ("present", "late", "left_early")


async def scenario_attendance(config, database_url: str, bootstrap: str, session_spec, room_origin: float | None,
                              say: Callable[[str], None], *, timeout_s: float = 90.0) -> list[dict] | None:
    """The attendance rows of the scenario's session after the writer processed the run's events (None:
    the room camera gave no frames, so the session cannot be placed in time)."""
    rows = await sessions_attendance(config, database_url, bootstrap, [(session_spec, room_origin)], say,
                                     timeout_s=timeout_s)
    return rows[0]


async def sessions_attendance(config, database_url: str, bootstrap: str, sessions: list[tuple[object, float | None]],
                              say: Callable[[str], None], *, timeout_s: float = 90.0) -> list[list[dict] | None]:
    """scenario_attendance for several scenario sessions (``(session_spec, room_origin)``, one room each) at
    once: every session opened, one writer run over the run's events, every session closed; each session's
    rows (None where its room gave no frames)."""
    if all(origin is None for _, origin in sessions):
        return [None] * len(sessions)
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        opened = [await _open_scenario_session(conn, spec, origin) if origin is not None else None
                  for spec, origin in sessions]
        await _write_attendance(config, database_url, bootstrap, say, timeout_s)
        out: list[list[dict] | None] = []
        for item in opened:
            if item is None:
                out.append(None)
                continue
            session, ends_at = item
            await close_session(conn, session["id"], actor="scenario", at=ends_at)
            rows = await conn.fetch("SELECT person_id, status, first_seen, last_seen, presence_s, evidence_event_ids "
                                    "FROM attendance WHERE session_id = $1 ORDER BY person_id", session["id"])
            out.append([dict(r, session_id=session["id"]) for r in rows])
        return out
    finally:
        await conn.close()


async def _open_scenario_session(conn, session_spec, room_origin: float):
    """The spec's session in wall-clock time, with the ground truth's rule as policy; (session, ends_at)."""
    starts_at = dt.datetime.fromtimestamp(room_origin + session_spec.start_s, dt.timezone.utc)
    ends_at = dt.datetime.fromtimestamp(room_origin + session_spec.end_s, dt.timezone.utc)
    length_s = int(session_spec.end_s - session_spec.start_s) + 1  # late / left early never apply
    session = await open_session(
        conn, course_id=session_spec.course, room_id=session_spec.room, actor="scenario", starts_at=starts_at,
        ends_at=ends_at, note="scenario run",
        policy_s={"early_arrival_s": 0, "late_after_s": length_s, "left_early_s": length_s,
                  "present_min_s": int(round(session_spec.min_presence_s))})
    return session, ends_at


async def _write_attendance(config, database_url: str, bootstrap: str, say, timeout_s: float) -> None:
    """The writer (a consumer group of its own) on the run's topics until it has caught up."""
    run_config = config.model_copy(update={"attendance": config.attendance.model_copy(update={
        "group_id": f"scenario-{uuid.uuid4().hex[:8]}", "session_timeout_ms": 2000,
        "heartbeat_interval_ms": 300, "rebalance_timeout_ms": 1000})})
    writer = AttendanceWriter(run_config, database_url=database_url, bootstrap_servers=bootstrap)
    task = asyncio.create_task(writer.run())
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not task.done():
            if await writer.caught_up():
                break
            await asyncio.sleep(0.3)
    finally:
        writer.stop()
        async with asyncio.timeout(30):
            await task
    say(f"attendance writer: {writer.stats.events} sightings stored, {writer.stats.dead_letters} dead letters")


def score_attendance(rows: list[dict] | None, truth: dict) -> dict:
    """Attendance rows of the scenario's session against the ground truth.

    precision = attended rows of expected people / attended rows; recall = expected people attended /
    expected people. Visitors must have no row; enrolled people who never enter (or too briefly) must be
    absent or have no row; so must enrolled people who never came at all (``absent``: attacks' targets).
    """
    if rows is None:
        return {"precision": None, "recall": None, "reason": "no room frames: the session cannot be placed in time"}
    expected = set(truth.get("expected_present", []))
    visitors = {p["id"] for p in truth.get("people", []) if not p.get("enrolled")}
    attended = {r["person_id"] for r in rows if r["status"] in ATTENDED}
    correct = attended & expected
    return {
        "precision": round(len(correct) / len(attended), 4) if attended else (1.0 if not expected else 0.0),
        "recall": round(len(correct) / len(expected), 4) if expected else None,
        "rows": {r["person_id"]: {"status": r["status"], "presence_s": round(float(r["presence_s"]), 1)} for r in rows},
        "expected_present": sorted(expected),
        "missed": sorted(expected - attended),
        "wrongly_present": sorted(attended - expected),
        "visitor_rows": sorted(visitors & {r["person_id"] for r in rows}),
        # enrolled people who never came (an attack pretended to be them): they must have no attended row
        "absent_attended": sorted({p["id"] for p in truth.get("absent", [])} & attended),
    }
