"""Privacy hardening on the real PostgreSQL, the real broker and the real dashboard over HTTP: erasure leaves
no review row that is the person's face, no account, no audit row naming them and no reversible hash (an
HMAC under the site's pseudonym key instead); retention runs on a schedule by default (the attendance
writer) and clears decided crops' images; the dashboard never serves an expired crop and audits crop views,
exports and logins (the helper)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import os
import stat

import asyncpg
import numpy as np
import pytest

from consumers.privacy import KEY_ENV, audit_login, erase_person, pseudonym_key, record_audit
from infra.foundation.db import MIGRATIONS_DIR
from infra.foundation.errors import RollcallError
from infra.foundation.config import Config, PrivacyConfig
from tests import dashboard_kit as kit
from tests.test_writer_kit import create_topics, prepare_database, wait_until, writer_config
from consumers.writer import AttendanceWriter
from infra.foundation.config import EXAMPLE_CONFIG, config_from_dict, load_config

KEY = "k" * 40


def _unit(*values: float) -> list[float]:
    vector = np.array(values, dtype=np.float64)
    return (vector / np.linalg.norm(vector)).tolist()


async def _review(conn, embedding, *, status="pending", person=None, best=None, expires_in_days=7) -> int:
    now = dt.datetime.now(dt.timezone.utc)
    decided = None if status == "pending" else now
    return await conn.fetchval(
        """INSERT INTO review_face (camera_id, track_id, captured_at, model_pack, embedding, embedding_dim, crop_jpeg,
           expires_at, status, decided_at, person_id, best_person_id)
           VALUES ('door', 't', $1, 'open', $2, $3, '\\xffd8', $4, $5, $6, $7, $8) RETURNING id""",
        now, embedding, len(embedding), now + dt.timedelta(days=expires_in_days), status, decided, person, best)


async def _enrol(conn, person: str, embedding) -> None:
    await conn.execute(
        """INSERT INTO face_enrolment (person_id, model_pack, embedding, embedding_dim, consent_at, expires_at)
           VALUES ($1, 'open', $2, $3, now(), now() + interval '365 days')""", person, embedding, len(embedding))


def test_erasure_leaves_nothing_naming_the_person(fresh_database, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    config = writer_config()

    async def main():
        await prepare_database(fresh_database, config)
        conn = await asyncpg.connect(fresh_database)
        try:
            await _enrol(conn, "s1", _unit(1, 0, 0))
            await _enrol(conn, "s2", _unit(0, 1, 0))
            own_face = await _review(conn, _unit(0.9, 0.3, 0.1))  # nearest: s1, below any threshold
            named = await _review(conn, _unit(0, 0.2, 1), best="s1")
            accepted = await _review(conn, _unit(1, 0.1, 0), status="accepted", person="s1")
            other = await _review(conn, _unit(0.2, 1, 0))  # nearest: s2
            await conn.execute("""INSERT INTO dashboard_user (username, password_hash, role, person_id)
                                  VALUES ('s1-login', '$argon2id$x', 'student', 's1')""")
            await record_audit(conn, "admin", "enrol", "s1", {"model_pack": "open"})
            await record_audit(conn, "prof", "attendance.resolve", "7/s1", {"status": "present"})
            await record_audit(conn, "admin", "attendance.export", "s1", {"kind": "student"})
            await audit_login(conn, "s1-login", ok=True, client="10.0.0.7")
            await record_audit(conn, "admin", "enrol", "s10", {})  # another person whose id starts alike
            report = await erase_person(conn, "s1", pseudonymise=False, actor="dpo")
            assert report["review_crops"] == 3 and report["accounts"] == 1 and report["audit_rows"] == 5
            left = {r["id"] for r in await conn.fetch("SELECT id FROM review_face")}
            assert left == {other} and not {own_face, named, accepted} & left
            assert await conn.fetchval("SELECT count(*) FROM dashboard_user") == 0
            dump = "\n".join(str(tuple(r)) for r in await conn.fetch("SELECT actor, subject, detail::text FROM audit_log"))
            assert "'s1'" not in dump and "/s1'" not in dump and "s1-login" not in dump, dump
            assert hashlib.sha256(b"s1").hexdigest() not in dump, "no unsalted hash of the id"
            row = await conn.fetchrow("SELECT detail FROM audit_log WHERE action = 'person.erase'")
            detail = json.loads(row["detail"])
            assert detail["subject_hmac_sha256"] == hmac.new(KEY.encode(), b"s1", hashlib.sha256).hexdigest()
            assert "subject_sha256" not in detail
            ref = detail["audit_ref"]
            subjects = [r["subject"] for r in await conn.fetch("SELECT subject FROM audit_log ORDER BY id")]
            assert subjects[:6] == [ref, f"7/{ref}", ref, ref, "s10", None]
        finally:
            await conn.close()

    asyncio.run(main())


def test_pseudonym_key_file_is_made_once_and_kept_private(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    privacy = PrivacyConfig(pseudonym_key_file=str(tmp_path / "keys" / "pseudonym.key"))
    first = pseudonym_key(privacy)
    path = tmp_path / "keys" / "pseudonym.key"
    assert len(first) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pseudonym_key(privacy) == first
    assert pseudonym_key(privacy, environ={KEY_ENV: KEY}) == KEY.encode()
    path.write_text("short\n")
    with pytest.raises(RollcallError, match="too short"):
        pseudonym_key(privacy)


def test_old_unsalted_hashes_are_removed_by_migration_0008(fresh_database):
    async def main():
        await prepare_database(fresh_database, writer_config())
        conn = await asyncpg.connect(fresh_database)
        try:
            await record_audit(conn, "dpo", "person.erase", None,
                               {"enrolments": 1, "subject_sha256": hashlib.sha256(b"s7").hexdigest()})
            await conn.execute((MIGRATIONS_DIR / "0008_audit_pseudonyms.sql").read_text())
            text = await conn.fetchval("SELECT detail::text FROM audit_log WHERE action = 'person.erase'")
            assert hashlib.sha256(b"s7").hexdigest() not in text and '"enrolments": 1' in text
        finally:
            await conn.close()

    asyncio.run(main())


def test_retention_runs_from_the_writer_by_default(stack, fresh_database):
    assert Config().attendance.purge_interval_s > 0, "the purge must be on by default"
    config = writer_config(purge_interval_s=1.0)

    async def main():

        await prepare_database(fresh_database, config)
        await create_topics(stack.kafka_bootstrap_servers, config)
        conn = await asyncpg.connect(fresh_database)
        try:
            expired = await _review(conn, _unit(1, 0), expires_in_days=-1)
            rejected = await _review(conn, _unit(0, 1), status="rejected")
            pending = await _review(conn, _unit(1, 1))
            writer = AttendanceWriter(config, database_url=fresh_database, bootstrap_servers=stack.kafka_bootstrap_servers)
            task = asyncio.create_task(writer.run())

            async def purged():
                if task.done():
                    task.result()
                rows = {r["id"]: r["crop_jpeg"] for r in await conn.fetch("SELECT id, crop_jpeg FROM review_face")}
                return expired not in rows and rows.get(rejected, b"") is None

            try:
                await wait_until(purged, 60, "the writer's scheduled purge")
            finally:
                writer.stop()
                await asyncio.wait_for(task, 30)
            assert await conn.fetchval("SELECT crop_jpeg FROM review_face WHERE id = $1", pending) is not None
            assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'privacy.purge'") >= 1
        finally:
            await conn.close()

    asyncio.run(main())


@pytest.fixture(scope="module")
def served(stack):

    raw = load_config(EXAMPLE_CONFIG, environ={}).model_dump(exclude={"source"})
    raw["dashboard"]["processor_metrics_urls"] = []
    config = config_from_dict(raw, environ={})
    with kit.served_dashboard(stack, config, "test_privacy_hard", secret_key="s" * 48) as server:
        yield server


def test_dashboard_crops_expire_are_audited_and_cleared_on_accept(served):
    expired = kit.db_call(served, lambda c: _review(c, _unit(1, 0, 0), expires_in_days=-1))
    fresh = kit.db_call(served, lambda c: _review(c, _unit(0, 1, 0)))
    admin = kit.login(served, "admin")
    assert admin.get(f"/api/review/{expired}/crop.jpg").status_code == 404, "an expired crop is never served"
    assert admin.get(f"/api/review/{fresh}/crop.jpg").status_code == 200
    views = kit.db(served, "SELECT actor, subject FROM audit_log WHERE action = 'review.crop_view'")
    assert [(r["actor"], r["subject"]) for r in views] == [("admin", str(fresh))]
    accepted = admin.post(f"/api/review/{fresh}/accept", json={"person_id": "visitor-x", "new_person": True,
                                                               "consent": "yes"})
    assert accepted.status_code == 200, accepted.text
    row = kit.db(served, "SELECT status, crop_jpeg, embedding_dim FROM review_face WHERE id = $1", fresh)[0]
    assert row["status"] == "accepted" and row["crop_jpeg"] is None, "the photo goes, the embedding stays"
    assert kit.db(served, "SELECT count(*) FROM face_enrolment WHERE person_id = 'visitor-x'")[0][0] == 1
    assert admin.get(f"/api/review/{fresh}/crop.jpg").status_code == 404


def test_dashboard_erasure_takes_the_account_and_the_face(served, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    kit.db_call(served, lambda c: _enrol(c, "ardern", _unit(0, 0, 1)))
    face = kit.db_call(served, lambda c: _review(c, _unit(0.1, 0.1, 1)))  # nearest enrolled face: ardern's
    ardern = kit.login(served, "ardern")
    kit.db_call(served, lambda c: audit_login(c, "ardern", ok=True, client="127.0.0.1"))
    assert ardern.get("/api/me").status_code == 200
    admin = kit.login(served, "admin")
    erased = admin.post("/api/people/ardern/erase")
    assert erased.status_code == 200, erased.text
    assert kit.db(served, "SELECT count(*) FROM review_face WHERE id = $1", face)[0][0] == 0
    assert kit.db(served, "SELECT count(*) FROM dashboard_user WHERE username = 'ardern'")[0][0] == 0
    named = kit.db(served, "SELECT action FROM audit_log WHERE actor = 'ardern' OR subject = 'ardern'")
    assert named == [], [r["action"] for r in named]
    logins = kit.db(served, "SELECT subject FROM audit_log WHERE action = 'auth.login'")
    assert logins and all(r["subject"] != "ardern" for r in logins)
    assert os.environ[KEY_ENV] == KEY
