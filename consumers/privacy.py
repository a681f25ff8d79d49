"""Privacy: erasing a person's biometric data, and the retention purge. Used by `rollcall person erase`,
`rollcall privacy purge`, the writer (``[attendance] purge_interval_s``) and the dashboard.

Erasing removes everything biometric about the person: face enrolments (embeddings and any kept photo),
review crops accepted as them (their face), and the raw sightings naming them. Their attendance is kept
under a pseudonym (a random id; the person row loses name and directory reference) when the policy says
so, else deleted with the person. Every erasure writes an audit_log entry, which names the pseudonym and a
SHA-256 of the old id (an auditor who knows the id can check it; the log alone does not re-identify).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from typing import Any

from infra.errors import RollcallError


async def erase_person(conn, person_id: str, *, pseudonymise: bool, actor: str) -> dict[str, Any]:
    """Erase a person's biometric data everywhere; returns what was removed (counts) and the pseudonym."""
    async with conn.transaction():
        person = await conn.fetchrow("SELECT id, pseudonymised_at FROM person WHERE id = $1 FOR UPDATE", person_id)
        if person is None:
            raise RollcallError(f"person {person_id!r} does not exist: check the id")
        report: dict[str, Any] = {"person_id": person_id}
        report["enrolments"] = _count(await conn.execute("DELETE FROM face_enrolment WHERE person_id = $1", person_id))
        report["review_crops"] = _count(await conn.execute("DELETE FROM review_face WHERE person_id = $1", person_id))
        await conn.execute("UPDATE review_face SET best_person_id = NULL WHERE best_person_id = $1", person_id)
        report["sightings"] = _count(await conn.execute("DELETE FROM presence_event WHERE person_id = $1", person_id))
        sessions = await conn.fetchval("SELECT count(*) FROM attendance WHERE person_id = $1", person_id)
        if pseudonymise:
            pseudonym = f"erased-{secrets.token_hex(8)}"
            # ON UPDATE CASCADE carries the new id into attendance and course_member
            await conn.execute(
                """UPDATE person SET id = $2, display_name = $2, external_ref = NULL, pseudonymised_at = now(),
                   updated_at = now() WHERE id = $1""", person_id, pseudonym)
            await conn.execute("UPDATE presence_track SET person_id = $2 WHERE person_id = $1", person_id, pseudonym)
            await conn.execute("UPDATE presence_track SET face_person_id = $2 WHERE face_person_id = $1", person_id,
                               pseudonym)
            report.update(pseudonym=pseudonym, attendance_kept=int(sessions), attendance_deleted=0)
        else:
            await conn.execute("DELETE FROM presence_track WHERE person_id = $1", person_id)
            await conn.execute("UPDATE presence_track SET face_person_id = NULL WHERE face_person_id = $1", person_id)
            await conn.execute("DELETE FROM person WHERE id = $1", person_id)  # cascades attendance, rosters
            report.update(pseudonym=None, attendance_kept=0, attendance_deleted=int(sessions))
        detail = {k: v for k, v in report.items() if k != "person_id"}
        detail["subject_sha256"] = hashlib.sha256(person_id.encode()).hexdigest()
        await conn.execute("INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, 'person.erase', $2, $3::jsonb)",
                           actor, report["pseudonym"], json.dumps(detail))
    return report


async def purge(conn, config, *, dry_run: bool, actor: str = "retention") -> dict[str, Any]:
    """Delete what is past its retention: raw sightings older than ``presence_event_retention_days``,
    review crops and face enrolments past their ``expires_at``. ``dry_run`` counts without deleting."""
    privacy = config.privacy
    now = await conn.fetchval("SELECT now()")
    sightings_before = now - dt.timedelta(days=privacy.presence_event_retention_days)
    targets = {
        "presence_events": ("presence_event", "frame_time < $1", sightings_before),
        "review_crops": ("review_face", "expires_at < $1", now),
        "enrolments": ("face_enrolment", "expires_at < $1", now),
    }
    report: dict[str, Any] = {"dry_run": dry_run, "presence_events_before": sightings_before.isoformat()}
    async with conn.transaction():
        for name, (table, condition, bound) in targets.items():
            if dry_run:
                report[name] = int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {condition}", bound))
            else:
                report[name] = _count(await conn.execute(f"DELETE FROM {table} WHERE {condition}", bound))
        if not dry_run and any(report[name] for name in targets):
            await conn.execute("INSERT INTO audit_log (actor, action, detail) VALUES ($1, 'privacy.purge', $2::jsonb)",
                               actor, json.dumps(report))
    return report


def _count(status: str) -> int:
    return int(status.split()[-1])
