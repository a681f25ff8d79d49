"""Privacy: erasing a person's personal data, the retention purge, the pseudonym key and the audit log.
Used by `rollcall person erase`, `rollcall privacy purge`, the writer (``[attendance] purge_interval_s``,
hourly by default), the exports and the dashboard (crop views, logins, erasure).

Erasing removes everything biometric about the person: face enrolments (embeddings and any kept photo),
every review crop accepted as them, named as their nearest match, or whose nearest enrolled face (same
model pack) is theirs (most likely their own face, seen before it was enrolled), the raw sightings naming
them, and their dashboard accounts. Their attendance is kept under a pseudonym (a random id; the person
row loses name and directory reference) when the policy says so, else deleted with the person. Audit rows
that name them (as subject, as ``session/person``, or their accounts as actor or subject) are rewritten to
the pseudonym (or ``erased:<keyed hash>`` when attendance is deleted). The erasure's own audit row holds an
HMAC-SHA256 of the old id under the site's pseudonym key: someone holding the key and the id can check it,
while the database alone (without the key) does not re-identify, however short the id.

The pseudonym key: ``ROLLCALL_PSEUDONYM_KEY`` (at least 32 characters) if set, else the file
``[privacy] pseudonym_key_file``, created (mode 0600) with a random key on first use. Keep it out of the
database and its backups, and give every host that erases people the same one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from infra.foundation.errors import RollcallError
from infra.foundation.paths import PROJECT_ROOT
from infra.foundation.config import PrivacyConfig

KEY_ENV = "ROLLCALL_PSEUDONYM_KEY"
MIN_KEY_CHARS = 32


# ------------------------------------------------------------------------------------ pseudonym key

def pseudonym_key_path(privacy: PrivacyConfig | None = None) -> Path:
    path = Path((privacy or PrivacyConfig()).pseudonym_key_file)
    return path if path.is_absolute() else PROJECT_ROOT / path


def pseudonym_key(privacy: PrivacyConfig | None = None, environ: dict[str, str] | None = None) -> bytes:
    """The key of the keyed hashes: the environment's, else the key file's (created when missing)."""
    environ = os.environ if environ is None else environ
    if environ.get(KEY_ENV):
        key = environ[KEY_ENV].strip()
        if len(key) < MIN_KEY_CHARS:
            raise RollcallError(f"{KEY_ENV} is too short (under {MIN_KEY_CHARS} characters): set a long random value")
        return key.encode()
    path = pseudonym_key_path(privacy)
    try:
        key = path.read_text(encoding="utf-8").strip()
        if len(key) < MIN_KEY_CHARS:
            raise RollcallError(f"{path}: the pseudonym key is too short (under {MIN_KEY_CHARS} characters): "
                                f"put a long random value in it or set {KEY_ENV}")
        return key.encode()
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise RollcallError(f"{path}: cannot read the pseudonym key ({type(exc).__name__}): fix it, set {KEY_ENV} "
                            "or point ROLLCALL__PRIVACY__PSEUDONYM_KEY_FILE elsewhere") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it just now
        return path.read_text(encoding="utf-8").strip().encode()
    except OSError as exc:
        raise RollcallError(f"{path}: cannot create the pseudonym key ({exc.strerror}): set {KEY_ENV} "
                            "or point ROLLCALL__PRIVACY__PSEUDONYM_KEY_FILE at a writable place") from None
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key.encode()


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 of ``value`` under ``key`` (hex): not reversible by trying ids without the key."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """Which key made a hash (for an auditor holding several), without saying anything about the key."""
    return hashlib.sha256(b"rollcall-pseudonym-key-id:" + key).hexdigest()[:12]


# ------------------------------------------------------------------------------------ audit log

async def record_audit(conn, actor: str, action: str, subject: str | None = None,
                       detail: dict[str, Any] | None = None) -> None:
    """One audit_log row. Put person ids in ``subject`` (erasure rewrites those), not in ``detail``."""
    await conn.execute("INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, $2, $3, $4::jsonb)",
                       actor, action, subject, json.dumps(detail or {}, default=str))


def _printable(text: str, limit: int = 64) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])


async def audit_login(conn, username: str, *, ok: bool, client: str | None = None, reason: str | None = None) -> None:
    """A dashboard login attempt: ``auth.login`` or ``auth.login_failed`` (actor and subject: the username
    as typed, at most 64 printable characters), with the client address and why it failed."""
    name = _printable(username or "") or "(empty)"
    detail: dict[str, Any] = {"client": _printable(client or "?", 128)}
    if reason:
        detail["reason"] = _printable(reason, 200)
    await record_audit(conn, name, "auth.login" if ok else "auth.login_failed", name, detail)


async def _pseudonymise_audit(conn, names: list[str], ref: str) -> int:
    """Rewrite the audit rows that name the person (id, ``session/id``, their accounts) to ``ref``."""
    changed = 0
    for name in dict.fromkeys(names):
        changed += _count(await conn.execute("UPDATE audit_log SET subject = $2 WHERE subject = $1", name, ref))
        changed += _count(await conn.execute(
            """UPDATE audit_log SET subject = left(subject, length(subject) - length($1)) || $2
               WHERE right(subject, length($1) + 1) = '/' || $1""", name, ref))
        changed += _count(await conn.execute("UPDATE audit_log SET actor = $2 WHERE actor = $1", name, ref))
    return changed


# ------------------------------------------------------------------------------------ erasure

async def _nearest_is(conn, person_id: str) -> set[int]:
    """Review rows (not accepted as someone else) whose nearest enrolled person (cosine similarity, same model
    pack) is ``person_id``."""
    found: set[int] = set()
    for pack in await conn.fetch("SELECT DISTINCT model_pack FROM face_enrolment WHERE person_id = $1", person_id):
        # a face accepted as someone else is theirs, however alike the two people's enrolments are
        reviews = await conn.fetch("""SELECT id, embedding FROM review_face WHERE model_pack = $1
                                      AND (person_id IS NULL OR person_id = $2)""", pack["model_pack"], person_id)
        gallery = await conn.fetch("SELECT person_id, embedding FROM face_enrolment WHERE model_pack = $1",
                                   pack["model_pack"])
        dims = {len(g["embedding"]) for g in gallery if g["person_id"] == person_id}
        for dim in dims:
            faces = [r for r in reviews if len(r["embedding"]) == dim]
            known = [g for g in gallery if len(g["embedding"]) == dim]
            if not faces:
                continue
            queries = _unit(np.array([r["embedding"] for r in faces], dtype=np.float32))
            enrolled = _unit(np.array([g["embedding"] for g in known], dtype=np.float32))
            nearest = (queries @ enrolled.T).argmax(axis=1)
            found |= {faces[i]["id"] for i, j in enumerate(nearest) if known[j]["person_id"] == person_id}
    return found


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


async def _erase_review_rows(conn, person_id: str) -> int:
    """Delete the review rows that are this person's face (before their enrolments go: they tell which)."""
    ids = {r["id"] for r in await conn.fetch(
        "SELECT id FROM review_face WHERE person_id = $1 OR best_person_id = $1", person_id)}
    ids |= await _nearest_is(conn, person_id)
    if ids:
        await conn.execute("DELETE FROM review_face WHERE id = ANY($1::bigint[])", sorted(ids))
    return len(ids)


async def _keep_under_pseudonym(conn, person_id: str) -> str:
    pseudonym = f"erased-{secrets.token_hex(8)}"
    # ON UPDATE CASCADE carries the new id into attendance and course_member
    await conn.execute(
        """UPDATE person SET id = $2, display_name = $2, external_ref = NULL, pseudonymised_at = now(),
           updated_at = now() WHERE id = $1""", person_id, pseudonym)
    await conn.execute("UPDATE presence_track SET person_id = $2 WHERE person_id = $1", person_id, pseudonym)
    await conn.execute("UPDATE presence_track SET face_person_id = $2 WHERE face_person_id = $1", person_id, pseudonym)
    return pseudonym


async def _delete_person(conn, person_id: str) -> None:
    await conn.execute("DELETE FROM presence_track WHERE person_id = $1", person_id)
    await conn.execute("UPDATE presence_track SET face_person_id = NULL WHERE face_person_id = $1", person_id)
    await conn.execute("DELETE FROM person WHERE id = $1", person_id)  # cascades attendance, rosters


async def erase_person(conn, person_id: str, *, pseudonymise: bool, actor: str,
                       privacy: PrivacyConfig | None = None) -> dict[str, Any]:
    """Erase a person's personal data everywhere; returns what was removed (counts) and the pseudonym."""
    key = pseudonym_key(privacy)  # first: a key problem must stop the erasure before anything changes
    async with conn.transaction():
        person = await conn.fetchrow("SELECT id, pseudonymised_at FROM person WHERE id = $1 FOR UPDATE", person_id)
        if person is None:
            raise RollcallError(f"person {person_id!r} does not exist: check the id")
        report: dict[str, Any] = {"person_id": person_id}
        report["review_crops"] = await _erase_review_rows(conn, person_id)
        report["enrolments"] = _count(await conn.execute("DELETE FROM face_enrolment WHERE person_id = $1", person_id))
        report["sightings"] = _count(await conn.execute("DELETE FROM presence_event WHERE person_id = $1", person_id))
        accounts = [r["username"] for r in await conn.fetch(
            "DELETE FROM dashboard_user WHERE person_id = $1 RETURNING username", person_id)]
        report["accounts"] = len(accounts)
        sessions = int(await conn.fetchval("SELECT count(*) FROM attendance WHERE person_id = $1", person_id))
        if pseudonymise:
            pseudonym = await _keep_under_pseudonym(conn, person_id)
            report.update(pseudonym=pseudonym, attendance_kept=sessions, attendance_deleted=0)
        else:
            await _delete_person(conn, person_id)
            report.update(pseudonym=None, attendance_kept=0, attendance_deleted=sessions)
        digest = keyed_hash(key, person_id)
        ref = report["pseudonym"] or f"erased:{digest[:24]}"
        report["audit_rows"] = await _pseudonymise_audit(conn, [person_id, *accounts], ref)
        detail = {k: v for k, v in report.items() if k != "person_id"}
        detail.update(subject_hmac_sha256=digest, key_id=key_id(key), audit_ref=ref)
        await record_audit(conn, actor, "person.erase", report["pseudonym"], detail)
    return report


# ------------------------------------------------------------------------------------ retention

async def purge(conn, config, *, dry_run: bool, actor: str = "retention") -> dict[str, Any]:
    """Delete what is past its retention: raw sightings older than ``presence_event_retention_days``,
    review crops and face enrolments past their ``expires_at``; clear the images of decided review crops
    (an accepted face lives on as an embedding, a rejected one is not needed). ``dry_run`` counts only."""
    privacy = config.privacy
    now = await conn.fetchval("SELECT now()")
    sightings_before = now - dt.timedelta(days=privacy.presence_event_retention_days)
    targets = {
        "presence_events": ("presence_event", "frame_time < $1", sightings_before),
        "review_crops": ("review_face", "expires_at < $1", now),
        "enrolments": ("face_enrolment", "expires_at < $1", now),
    }
    decided = "status <> 'pending' AND crop_jpeg IS NOT NULL"
    report: dict[str, Any] = {"dry_run": dry_run, "presence_events_before": sightings_before.isoformat()}
    async with conn.transaction():
        for name, (table, condition, bound) in targets.items():
            if dry_run:
                report[name] = int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {condition}", bound))
            else:
                report[name] = _count(await conn.execute(f"DELETE FROM {table} WHERE {condition}", bound))
        if dry_run:
            report["decided_crop_images"] = int(await conn.fetchval(f"SELECT count(*) FROM review_face WHERE {decided}"))
        else:
            report["decided_crop_images"] = _count(await conn.execute(
                f"UPDATE review_face SET crop_jpeg = NULL WHERE {decided}"))
        if not dry_run and any(report[name] for name in [*targets, "decided_crop_images"]):
            await record_audit(conn, actor, "privacy.purge", None, report)
    return report


def _count(status: str) -> int:
    return int(status.split()[-1])
