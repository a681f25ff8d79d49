"""The dashboard's reads of PostgreSQL (attendance, sessions, people, review queue) and the review
decisions. Every read takes the caller's scope (a set of course ids, or None for all)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

ATTENDED = ("present", "late", "left_early")


def _row(record) -> dict[str, Any]:
    out = {}
    for key, value in dict(record).items():
        if isinstance(value, (dt.datetime, dt.date)):
            value = value.isoformat()
        elif isinstance(value, dt.timedelta):
            value = value.total_seconds()
        out[key] = value
    return out


def _rate(attended: int, roster: int) -> float | None:
    return round(attended / roster, 4) if roster else None


SESSION_COLUMNS = """
    s.id, s.course_id, c.name AS course_name, s.room_id, s.starts_at, s.ends_at, s.state,
    s.opened_at, s.opened_by, s.closed_at, s.closed_by,
    (SELECT count(*) FROM course_member m WHERE m.course_id = s.course_id AND m.role = 'student') AS roster,
    count(a.person_id) FILTER (WHERE a.status IN ('present', 'late', 'left_early')) AS attended,
    count(a.person_id) FILTER (WHERE a.status = 'present') AS present,
    count(a.person_id) FILTER (WHERE a.status = 'late') AS late,
    count(a.person_id) FILTER (WHERE a.status = 'left_early') AS left_early,
    count(a.person_id) FILTER (WHERE a.status = 'unconfirmed') AS unconfirmed,
    count(a.person_id) FILTER (WHERE a.status = 'absent') AS absent
"""

# What an attendance row stands on (migration 0005): door recognitions, room tracks, a room face.
EVIDENCE_COLUMNS = "a.door_recognitions, a.first_door_at, a.room_tracks, a.room_face, a.resolved_by, a.resolved_at"


async def sessions(conn, *, courses: frozenset[str] | None, course: str | None = None, state: str | None = None,
                   room: str | None = None, date_from: dt.date | None = None, date_to: dt.date | None = None,
                   timezone: str = "UTC", limit: int = 500) -> list[dict]:
    rows = await conn.fetch(
        f"""SELECT {SESSION_COLUMNS}
            FROM class_session s JOIN course c ON c.id = s.course_id
            LEFT JOIN attendance a ON a.session_id = s.id
            WHERE ($1::text[] IS NULL OR s.course_id = ANY($1::text[]))
              AND ($2::text IS NULL OR s.course_id = $2) AND ($3::text IS NULL OR s.state = $3)
              AND ($4::text IS NULL OR s.room_id = $4)
              AND ($5::date IS NULL OR (s.starts_at AT TIME ZONE $7)::date >= $5)
              AND ($6::date IS NULL OR (s.starts_at AT TIME ZONE $7)::date <= $6)
            GROUP BY s.id, c.name ORDER BY s.starts_at DESC LIMIT $8""",
        list(courses) if courses is not None else None, course, state, room, date_from, date_to, timezone, limit)
    out = []
    for r in rows:
        item = _row(r)
        item["rate"] = _rate(r["attended"], r["roster"])
        out.append(item)
    return out


async def session(conn, session_id: int) -> dict | None:
    row = await conn.fetchrow(
        f"""SELECT {SESSION_COLUMNS} FROM class_session s JOIN course c ON c.id = s.course_id
            LEFT JOIN attendance a ON a.session_id = s.id WHERE s.id = $1 GROUP BY s.id, c.name""", session_id)
    if row is None:
        return None
    item = _row(row)
    item["rate"] = _rate(row["attended"], row["roster"])
    records = await conn.fetch(
        f"""SELECT coalesce(a.person_id, m.person_id) AS person_id, p.display_name, p.pseudonymised_at IS NOT NULL AS erased,
                  a.status, a.first_seen, a.last_seen, a.presence_s, a.updated_at, {EVIDENCE_COLUMNS},
                  (m.person_id IS NOT NULL) AS on_roster
           FROM (SELECT * FROM attendance WHERE session_id = $1) a
           FULL JOIN (SELECT person_id FROM course_member WHERE course_id = $2 AND role = 'student') m
                ON m.person_id = a.person_id
           JOIN person p ON p.id = coalesce(a.person_id, m.person_id)
           ORDER BY p.display_name, 1""", session_id, row["course_id"])
    item["attendance"] = [_row(r) for r in records]
    return item


async def course_summary(conn, course_id: str, *, date_from=None, date_to=None, timezone="UTC") -> dict | None:
    course = await conn.fetchrow("SELECT id, name FROM course WHERE id = $1", course_id)
    if course is None:
        return None
    sessions_ = await sessions(conn, courses=None, course=course_id, date_from=date_from, date_to=date_to,
                               timezone=timezone)
    students = await conn.fetch(
        """SELECT m.person_id, p.display_name,
                  count(a.session_id) FILTER (WHERE a.status IN ('present', 'late', 'left_early')) AS attended,
                  count(a.session_id) FILTER (WHERE a.status = 'late') AS late,
                  count(a.session_id) FILTER (WHERE a.status = 'left_early') AS left_early
           FROM course_member m JOIN person p ON p.id = m.person_id
           LEFT JOIN attendance a ON a.person_id = m.person_id
                AND a.session_id = ANY($2::bigint[])
           WHERE m.course_id = $1 AND m.role = 'student'
           GROUP BY m.person_id, p.display_name ORDER BY p.display_name""",
        course_id, [s["id"] for s in sessions_ if s["state"] in ("open", "closed")])
    held = sum(1 for s in sessions_ if s["state"] in ("open", "closed"))
    return {"id": course["id"], "name": course["name"], "sessions": sessions_, "sessions_held": held,
            "students": [{**_row(s), "rate": _rate(s["attended"], held)} for s in students]}


async def student_record(conn, person_id: str, *, courses: frozenset[str] | None, course: str | None = None,
                         date_from=None, date_to=None, timezone="UTC") -> dict | None:
    person = await conn.fetchrow("SELECT id, display_name, kind, pseudonymised_at FROM person WHERE id = $1",
                                 person_id)
    if person is None:
        return None
    rows = await conn.fetch(
        f"""SELECT s.id AS session_id, s.course_id, c.name AS course_name, s.room_id, s.starts_at, s.ends_at,
                  s.state, coalesce(a.status, CASE WHEN s.state = 'closed' THEN 'absent' END) AS status,
                  a.status IS NULL AS no_record, a.first_seen, a.last_seen, a.presence_s, {EVIDENCE_COLUMNS}
           FROM class_session s JOIN course c ON c.id = s.course_id
           LEFT JOIN attendance a ON a.session_id = s.id AND a.person_id = $1
           WHERE (a.person_id IS NOT NULL OR s.course_id IN
                  (SELECT course_id FROM course_member WHERE person_id = $1 AND role = 'student'))
             AND s.state IN ('open', 'closed')
             AND ($2::text[] IS NULL OR s.course_id = ANY($2::text[])) AND ($3::text IS NULL OR s.course_id = $3)
             AND ($4::date IS NULL OR (s.starts_at AT TIME ZONE $6)::date >= $4)
             AND ($5::date IS NULL OR (s.starts_at AT TIME ZONE $6)::date <= $5)
           ORDER BY s.starts_at DESC""",
        person_id, list(courses) if courses is not None else None, course, date_from, date_to, timezone)
    records = [_row(r) for r in rows]
    attended = sum(1 for r in records if r["status"] in ATTENDED)
    return {"person_id": person["id"], "display_name": person["display_name"], "kind": person["kind"],
            "erased": person["pseudonymised_at"] is not None, "records": records,
            "sessions": len(records), "attended": attended, "rate": _rate(attended, len(records))}


async def student_in_courses(conn, person_id: str, courses: frozenset[str]) -> bool:
    return bool(await conn.fetchval(
        "SELECT 1 FROM course_member WHERE person_id = $1 AND course_id = ANY($2::text[]) LIMIT 1",
        person_id, list(courses)))


async def attendance_rates(conn, *, courses: frozenset[str] | None, timezone: str = "UTC") -> dict:
    """Per session (time series) and per course per week."""
    per_session = await sessions(conn, courses=courses, timezone=timezone, limit=2000)
    per_session = [s for s in per_session if s["state"] in ("open", "closed")]
    weeks: dict[tuple[str, str], list[int]] = {}
    for s in per_session:
        week = dt.datetime.fromisoformat(s["starts_at"]).date()
        week = (week - dt.timedelta(days=week.weekday())).isoformat()
        acc = weeks.setdefault((s["course_id"], week), [0, 0])
        acc[0] += s["attended"]
        acc[1] += s["roster"]
    per_course: dict[str, list[dict]] = {}
    for (course_id, week), (attended, roster) in sorted(weeks.items()):
        per_course.setdefault(course_id, []).append({"week": week, "rate": _rate(attended, roster)})
    return {"sessions": [{"id": s["id"], "course_id": s["course_id"], "starts_at": s["starts_at"],
                          "rate": s["rate"], "attended": s["attended"], "roster": s["roster"]}
                         for s in reversed(per_session)],
            "courses": per_course}


# ------------------------------------------------------------------------------------------ people

async def people(conn, *, search: str | None = None, limit: int = 1000) -> list[dict]:
    rows = await conn.fetch(
        """SELECT p.id, p.display_name, p.kind, p.created_at, p.pseudonymised_at,
                  count(f.id) FILTER (WHERE f.expires_at IS NULL OR f.expires_at > now()) AS enrolments,
                  max(f.created_at) AS last_enrolled,
                  (SELECT array_agg(course_id ORDER BY course_id) FROM course_member m WHERE m.person_id = p.id) AS courses,
                  (SELECT array_agg(username ORDER BY username) FROM dashboard_user u WHERE u.person_id = p.id) AS accounts
           FROM person p LEFT JOIN face_enrolment f ON f.person_id = p.id
           WHERE ($1::text IS NULL OR p.id ILIKE '%' || $1 || '%' OR p.display_name ILIKE '%' || $1 || '%')
           GROUP BY p.id ORDER BY p.display_name, p.id LIMIT $2""", search, limit)
    return [_row(r) for r in rows]


async def display_names(conn) -> dict[str, str]:
    return {r["id"]: r["display_name"] for r in await conn.fetch("SELECT id, display_name FROM person")}


# ------------------------------------------------------------------------------------------ review

async def review_queue(conn, *, status: str = "pending", limit: int = 200) -> list[dict]:
    rows = await conn.fetch(
        """SELECT r.id, r.camera_id, r.track_id, r.event_id, r.captured_at, r.model_pack, r.quality,
                  r.best_person_id, bp.display_name AS best_person_name, r.best_score, r.expires_at, r.status,
                  r.decided_by, r.decided_at, r.person_id, r.crop_jpeg IS NOT NULL AS has_crop,
                  coalesce(r.liveness = 'suspect', false) AS suspected_spoof, r.liveness_score
           FROM review_face r LEFT JOIN person bp ON bp.id = r.best_person_id
           WHERE r.status = $1 AND r.expires_at > now() ORDER BY r.captured_at DESC LIMIT $2""", status, limit)
    return [_row(r) for r in rows]


async def review_crop(conn, review_id: int) -> bytes | None:
    # never serve an expired crop, whether or not the retention purge has run yet
    return await conn.fetchval("SELECT crop_jpeg FROM review_face WHERE id = $1 AND expires_at > now()", review_id)


class ReviewProblem(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


async def accept_review(conn, review_id: int, *, person_id: str, name: str | None, new_person: bool, actor: str,
                        consent_note: str | None, retention_days: int) -> dict:
    """The face becomes a face_enrolment of ``person_id`` (a new person, or an existing one)."""
    async with conn.transaction():
        row = await conn.fetchrow("SELECT * FROM review_face WHERE id = $1 FOR UPDATE", review_id)
        if row is None:
            raise ReviewProblem(f"no review item {review_id}", 404)
        if row["status"] != "pending":
            raise ReviewProblem(f"review item {review_id} was {row['status']} already by {row['decided_by']}", 409)
        person = await conn.fetchrow("SELECT id, pseudonymised_at FROM person WHERE id = $1", person_id)
        if new_person:
            if person is not None:
                raise ReviewProblem(f"person {person_id!r} exists already: choose 'existing person' to add this face "
                                    "to them, or another id", 409)
            await conn.execute("INSERT INTO person (id, display_name) VALUES ($1, coalesce($2, $1))",
                               person_id, name or None)
        else:
            if person is None:
                raise ReviewProblem(f"no person {person_id!r}: choose 'new person' to create them", 404)
            if person["pseudonymised_at"] is not None:
                raise ReviewProblem(f"person {person_id!r} was erased: enrol them under a new id", 409)
        enrolment_id = await conn.fetchval(
            """INSERT INTO face_enrolment (person_id, model_pack, embedding, embedding_dim, quality, source,
                   consent_at, consent_by, consent_note, expires_at)
               VALUES ($1, $2, $3, $4, $5, 'review', now(), $6, $7, now() + make_interval(days => $8)) RETURNING id""",
            person_id, row["model_pack"], row["embedding"], row["embedding_dim"], row["quality"], actor,
            consent_note, retention_days)
        await conn.execute(
            # the face lives on as the enrolment's embedding: the photo is not kept (privacy)
            """UPDATE review_face SET status = 'accepted', decided_by = $2, decided_at = now(), person_id = $3,
               crop_jpeg = NULL WHERE id = $1""", review_id, actor, person_id)
        await conn.execute(
            "INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, 'review.accept', $2, $3::jsonb)",
            actor, person_id, json.dumps({"review_id": review_id, "enrolment_id": enrolment_id,
                                          "new_person": new_person, "camera_id": row["camera_id"]}))
    return {"review_id": review_id, "person_id": person_id, "enrolment_id": enrolment_id, "new_person": new_person}


async def reject_review(conn, review_id: int, *, actor: str) -> dict:
    async with conn.transaction():
        row = await conn.fetchrow("SELECT status, decided_by FROM review_face WHERE id = $1 FOR UPDATE", review_id)
        if row is None:
            raise ReviewProblem(f"no review item {review_id}", 404)
        if row["status"] != "pending":
            raise ReviewProblem(f"review item {review_id} was {row['status']} already by {row['decided_by']}", 409)
        # Rejected: the crop is not needed any more (privacy); the embedding stays until the row expires.
        await conn.execute("""UPDATE review_face SET status = 'rejected', decided_by = $2, decided_at = now(),
                              crop_jpeg = NULL WHERE id = $1""", review_id, actor)
        await conn.execute("INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, 'review.reject', $2, '{}')",
                           actor, str(review_id))
    return {"review_id": review_id, "status": "rejected"}


# ------------------------------------------------------------------------------------------ live scope

async def live_sessions(conn, courses: frozenset[str]) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    """Rooms where one of ``courses`` has a session now (scheduled or open, within its window: from its
    start less the early arrival, to its end or closing), with that window."""
    rows = await conn.fetch(
        """SELECT cs.room_id,
                  min(cs.starts_at - make_interval(secs => coalesce(cs.early_arrival_s, c.early_arrival_min * 60))) AS since,
                  max(least(cs.ends_at, coalesce(cs.closed_at, cs.ends_at))) AS until
           FROM class_session cs JOIN course c ON c.id = cs.course_id
           WHERE cs.course_id = ANY($1::text[]) AND cs.state IN ('scheduled', 'open')
             AND now() >= cs.starts_at - make_interval(secs => coalesce(cs.early_arrival_s, c.early_arrival_min * 60))
             AND now() <= least(cs.ends_at, coalesce(cs.closed_at, cs.ends_at))
           GROUP BY cs.room_id""", list(courses))
    return {r["room_id"]: (r["since"], r["until"]) for r in rows}


async def other_sessions_in_room(conn, room_id: str, course_id: str, start: dt.datetime,
                                 end: dt.datetime) -> list[dict]:
    """Sessions of other courses in ``room_id`` (scheduled or open) overlapping [start, end]."""
    rows = await conn.fetch(
        """SELECT id, course_id, starts_at, least(ends_at, coalesce(closed_at, ends_at)) AS ends_at, state
           FROM class_session
           WHERE room_id = $1 AND course_id <> $2 AND state IN ('scheduled', 'open')
             AND starts_at < $4 AND least(ends_at, coalesce(closed_at, ends_at)) > $3
           ORDER BY starts_at""", room_id, course_id, start, end)
    return [_row(r) for r in rows]


async def ping(conn) -> None:
    await conn.fetchval("SELECT 1")


async def person_exists(conn, person_id: str) -> bool:
    return await conn.fetchval("SELECT 1 FROM person WHERE id = $1", person_id) is not None


async def record_login(conn, username: str) -> None:
    await conn.execute("UPDATE dashboard_user SET last_login_at = now() WHERE username = $1", username)
