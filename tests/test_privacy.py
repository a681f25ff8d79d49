"""Privacy on the real PostgreSQL: erasing a person (biometrics gone everywhere, attendance pseudonymised
or deleted, audit log), and the retention purge with --dry-run."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from consumers import store
from consumers.privacy import erase_person, purge
from tests.test_attendance import _row
from tests.test_writer_kit import prepare_database, writer_config


async def _enrol(conn, person: str, *, expired: bool = False) -> None:
    created = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400 if expired else 0)
    await conn.execute(
        """INSERT INTO face_enrolment (person_id, model_pack, embedding, embedding_dim, photo, consent_at, created_at,
           expires_at) VALUES ($1, 'open', $2, 2, $3, $4, $4, $5)""",
        person, [0.6, 0.8], b"jpeg", created, created + dt.timedelta(days=365))
    await conn.execute(
        """INSERT INTO review_face (camera_id, track_id, captured_at, model_pack, embedding, embedding_dim, crop_jpeg,
           expires_at, status, decided_at, person_id) VALUES ('door', 't', $1, 'open', '{1,0}', 2, 'x', $2,
           'accepted', $1, $3)""", created, created + dt.timedelta(days=7), person)


def test_erase_person_pseudonymised_or_deleted_and_purge(fresh_database):
    config = writer_config()

    async def main():
        await prepare_database(fresh_database, config)
        conn = await asyncpg.connect(fresh_database)
        await store.prepare(conn)
        try:
            await store.write_batch(conn, "g", [_row("s1", "a", 0, 90), _row("s2", "b", 0, 90)], {}, {},
                                    store.TimetableCache())
            for person in ("s1", "s2"):
                await _enrol(conn, person)
            kept = await erase_person(conn, "s1", pseudonymise=True, actor="dpo")
            assert kept["enrolments"] == 1 and kept["review_crops"] == 1 and kept["sightings"] == 1
            pseudonym = kept["pseudonym"]
            assert await conn.fetchval("SELECT count(*) FROM face_enrolment WHERE person_id IN ('s1', $1)", pseudonym) == 0
            assert await conn.fetchval("SELECT count(*) FROM presence_event WHERE person_id = 's1'") == 0
            assert await conn.fetchval("SELECT count(*) FROM attendance WHERE person_id = 's1'") == 0
            assert await conn.fetchval("SELECT status FROM attendance WHERE person_id = $1", pseudonym) == "present"
            person = await conn.fetchrow("SELECT display_name, pseudonymised_at FROM person WHERE id = $1", pseudonym)
            assert person["display_name"] == pseudonym and person["pseudonymised_at"] is not None

            gone = await erase_person(conn, "s2", pseudonymise=False, actor="dpo")
            assert gone["attendance_deleted"] == 1 and gone["pseudonym"] is None
            assert await conn.fetchval("SELECT count(*) FROM person WHERE id = 's2'") == 0
            assert await conn.fetchval("SELECT count(*) FROM presence_track WHERE person_id = 's2'") == 0
            audit = await conn.fetch("SELECT actor, action, subject, detail FROM audit_log WHERE action = 'person.erase'")
            assert [(a["actor"], a["subject"]) for a in audit] == [("dpo", pseudonym), ("dpo", None)]
            assert "s1" not in audit[0]["detail"]

            # retention: old sightings, expired enrolments and crops go; dry run first
            await _enrol(conn, "s3", expired=True)
            await conn.execute("UPDATE presence_event SET frame_time = now() - interval '40 days'")
            dry = await purge(conn, config, dry_run=True)
            assert dry["presence_events"] == 0 + await conn.fetchval("SELECT count(*) FROM presence_event")
            assert dry["enrolments"] == 1 and dry["review_crops"] == 1
            assert await conn.fetchval("SELECT count(*) FROM face_enrolment") == 1, "a dry run deletes nothing"
            done = await purge(conn, config, dry_run=False, actor="test")
            assert (done["presence_events"], done["enrolments"], done["review_crops"]) == (
                dry["presence_events"], 1, 1)
            assert await conn.fetchval("SELECT count(*) FROM face_enrolment") == 0
            after = await purge(conn, config, dry_run=True)
            assert (after["presence_events"], after["enrolments"], after["review_crops"]) == (0, 0, 0)
            assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'privacy.purge'") == 1
        finally:
            await conn.close()

    asyncio.run(main())
