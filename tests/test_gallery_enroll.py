"""Enrolment and the gallery on a real PostgreSQL (the session's embedded stack) with the real open pack and
the real sample portraits: photos checked one by one with reasons, consent enforced, embeddings stored
without photos, the gallery loaded per pack (expired and erased left out), and GalleryWatcher reloading on
NOTIFY without a restart, ignoring other packs, and surviving a lost connection."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import asyncpg
import cv2
import numpy as np
import pytest

from infra.foundation import db
from infra.foundation.errors import RollcallError
from processor import model_fetch
from processor import model_packs as mp
from processor.model_catalogue import PHOTOS_DIR
from infra.foundation.config import PrivacyConfig, ThresholdsConfig
from processor.enroll import enroll_from_dir, enroll_photos
from processor.gallery import CHANNEL, Gallery, GalleryWatcher, load_gallery
from processor.stages import faces as F

PHOTOS = PHOTOS_DIR


@pytest.fixture(scope="module")
def pack() -> mp.LoadedPack:
    model_fetch.fetch_pack("open")
    return mp.load_pack("open")


@pytest.fixture
def database(fresh_database) -> str:
    db.migrate(fresh_database)
    return fresh_database


def write_image(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def two_portraits(a: str, b: str, height: int = 480) -> np.ndarray:
    imgs = [cv2.imread(str(PHOTOS / n)) for n in (a, b)]
    return np.hstack([cv2.resize(i, (round(i.shape[1] * height / i.shape[0]), height)) for i in imgs])


def unit(seed: int, dim: int = 128) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).tolist()


async def insert_enrolment(conn, person: str, pack: str = "open", seed: int = 0, dim: int = 128,
                           expires: str = "now() + interval '1 day'") -> int:
    await conn.execute("INSERT INTO person (id, display_name) VALUES ($1, $1) ON CONFLICT DO NOTHING", person)
    return await conn.fetchval(
        f"""INSERT INTO face_enrolment (person_id, model_pack, embedding, embedding_dim, consent_at, expires_at)
            VALUES ($1, $2, $3::real[], $4, now() - interval '1 hour', {expires}) RETURNING id""",
        person, pack, unit(seed, dim), dim)


# ------------------------------------------------------------------------------------------ migration

async def test_migration_adds_review_queue_and_notify_trigger(database):
    conn = await asyncpg.connect(database)
    try:
        columns = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'review_face'")}
        assert {"id", "camera_id", "track_id", "event_id", "captured_at", "embedding", "model_pack", "crop_jpeg",
                "quality", "expires_at", "status", "decided_by", "decided_at", "person_id"} <= columns
        got: list[str] = []
        await conn.add_listener(CHANNEL, lambda *args: got.append(args[3]))
        other = await asyncpg.connect(database)
        try:
            await insert_enrolment(other, "p1", "open")
            await other.execute("UPDATE face_enrolment SET quality = 0.5")
            await insert_enrolment(other, "p1", "arcface", dim=512)
            await other.execute("UPDATE person SET pseudonymised_at = now() WHERE id = 'p1'")
            await other.execute("DELETE FROM face_enrolment")
        finally:
            await other.close()
        for _ in range(50):
            if len(got) >= 7:
                break
            await asyncio.sleep(0.02)
        assert got[:3] == ["open", "open", "arcface"] and sorted(got[3:5]) == ["arcface", "open"]
        assert sorted(got[5:]) == ["arcface", "open"]
        with pytest.raises(asyncpg.CheckViolationError):  # a decided review needs decided_at
            await conn.execute(
                """INSERT INTO review_face (camera_id, track_id, captured_at, model_pack, embedding, embedding_dim,
                   expires_at, status) VALUES ('door-1', '7', now(), 'open', $1::real[], 128, now() + interval '7 days',
                   'accepted')""", unit(1))
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------ enrolment

async def test_enrol_folder_accepts_good_photos_and_rejects_bad_ones_with_reasons(database, tmp_path, pack):
    root = tmp_path / "people"
    for person, files in {"macron": ["macron_2014.jpg"], "ardern": ["ardern_2018.jpg"],
                          "obama": ["obama_senate.jpg", "obama_oval.jpg"]}.items():
        (root / person).mkdir(parents=True)
        for f in files:
            shutil.copy(PHOTOS / f, root / person / f)
    (root / "macron" / "name.txt").write_text("Emmanuel Macron\n")
    (root / "ardern" / "name.txt").write_text("\nJacinda Ardern\n")
    (root / "ardern" / "notes.jpg").write_text("this is a text file, not a photo\n")
    write_image(root / "ardern" / "wall.png", cv2.imread(str(PHOTOS / "sunak.jpg"))[:160, :160])  # background only
    write_image(root / "ardern" / "blank.jpg", np.full((400, 300, 3), 200, np.uint8))
    write_image(root / "obama" / "with_biden.jpg", two_portraits("obama_oval.jpg", "biden.jpg"))
    sharp = cv2.imread(str(PHOTOS / "obama_congress.jpg"))
    write_image(root / "obama" / "tiny.jpg", cv2.resize(sharp, None, fx=0.08, fy=0.08, interpolation=cv2.INTER_AREA))
    write_image(root / "obama" / "blurred.jpg", cv2.GaussianBlur(sharp, (0, 0), 10))
    (root / "Bad Name!").mkdir()
    shutil.copy(PHOTOS / "sunak.jpg", root / "Bad Name!" / "sunak.jpg")
    (root / "loose.jpg").write_bytes((PHOTOS / "biden.jpg").read_bytes())

    ticks: list[tuple[int, int, str]] = []
    t0 = time.perf_counter()
    report = await enroll_from_dir(database, root, consent=True, consent_by="registrar", pack=pack,
                                   progress=lambda done, total, path: ticks.append((done, total, path.name)))
    print(f"enrolled folder in {time.perf_counter() - t0:.2f} s: {report.summary()}")
    for r in report.rejected:
        print(f"  rejected {r.path.relative_to(root)}: {r.reason} [{r.code}]")

    accepted = {(a.person_id, a.path.name) for a in report.accepted}
    assert accepted == {("macron", "macron_2014.jpg"), ("ardern", "ardern_2018.jpg"),
                        ("obama", "obama_senate.jpg"), ("obama", "obama_oval.jpg")}
    codes = {r.path.name: (r.code, r.reason) for r in report.rejected}
    assert codes["notes.jpg"][0] == "not_an_image" and "not an image" in codes["notes.jpg"][1]
    assert codes["wall.png"] == ("no_face", "no face found")
    assert codes["blank.jpg"] == ("no_face", "no face found")
    assert codes["with_biden.jpg"] == ("several_faces", "2 faces found: use a photo of one person")
    assert codes["tiny.jpg"][0] == "too_small" and codes["tiny.jpg"][1].startswith("too small")
    assert codes["blurred.jpg"][0] == "too_blurry" and codes["blurred.jpg"][1].startswith("too blurry")
    assert codes["sunak.jpg"][0] == "bad_person_id"
    assert codes["loose.jpg"][0] == "not_in_person_folder"
    assert len(report.rejected) == 8 and all("\n" not in r.reason for r in report.rejected)
    assert ticks[-1][:2] == (11, 11) and [t[0] for t in ticks] == list(range(1, 12))

    conn = await asyncpg.connect(database)
    try:
        people = {r["id"]: r["display_name"] for r in await conn.fetch("SELECT id, display_name FROM person")}
        assert people == {"macron": "Emmanuel Macron", "ardern": "Jacinda Ardern", "obama": "obama"}
        rows = await conn.fetch("SELECT * FROM face_enrolment ORDER BY id")
        assert len(rows) == 4
        for row in rows:
            assert row["photo"] is None and len(row["photo_sha256"]) == 64 and row["source"] == "cli"
            assert row["model_pack"] == "open" and row["embedding_dim"] == 128 and row["consent_by"] == "registrar"
            assert abs(np.linalg.norm(row["embedding"]) - 1) < 1e-4 and 0 < row["quality"] <= 1
            days = (row["expires_at"] - row["consent_at"]).total_seconds() / 86400
            assert days == pytest.approx(PrivacyConfig().enrolment_retention_days, abs=0.01)
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'enrol'") == 3

        # the enrolled gallery recognises the other photos and leaves strangers unknown
        gallery = await load_gallery(conn, "open", thresholds=ThresholdsConfig())
        assert gallery.persons == ("ardern", "macron", "obama") and len(gallery) == 4
    finally:
        await conn.close()
    probes = {"macron_2025.jpg": "macron", "ardern_2022.jpg": "ardern", "obama_congress.jpg": "obama",
              "obama_blueroom.jpg": "obama", "sunak.jpg": None, "biden.jpg": None}
    analyzer = F.FaceAnalyzer(pack, ThresholdsConfig())
    faces = analyzer.analyse([cv2.imread(str(PHOTOS / n)) for n in probes])
    matches = gallery.match(np.stack([f[0].embedding for f in faces]))
    assert [m.person_id for m in matches] == list(probes.values()), matches


async def test_enrol_needs_consent_and_a_reachable_database(database, tmp_path, free_port, pack):
    with pytest.raises(RollcallError, match="without consent") as err:
        await enroll_photos(database, "macron", "Emmanuel Macron", [PHOTOS / "macron_2014.jpg"], consent=False)
    assert "\n" not in str(err.value)
    with pytest.raises(RollcallError, match="without consent"):
        await enroll_from_dir(database, tmp_path, consent=False)
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM person") == 0
    finally:
        await conn.close()
    url = f"postgresql://rollcall@127.0.0.1:{free_port}/rollcall"
    with pytest.raises(RollcallError, match="cannot reach PostgreSQL") as err:
        await enroll_photos(url, "macron", None, [PHOTOS / "macron_2014.jpg"], consent=True, pack=pack)
    assert "\n" not in str(err.value) and "DATABASE_URL" in str(err.value)
    with pytest.raises(RollcallError, match="person id"):
        await enroll_photos(database, "no spaces", None, [PHOTOS / "macron_2014.jpg"], consent=True, pack=pack)


async def test_enrol_keeps_photo_when_asked_renews_duplicates_and_refuses_someone_elses_photo(database, pack):
    keep = PrivacyConfig(keep_enrolment_photos=True, enrolment_retention_days=30)
    photo = PHOTOS / "ardern_2018.jpg"
    first = await enroll_photos(database, "ardern", "Jacinda Ardern", [photo, photo], consent=True, pack=pack,
                                privacy=keep)
    assert len(first.accepted) == 1 and [r.code for r in first.rejected] == ["duplicate"]
    again = await enroll_photos(database, "ardern", None, [photo], consent=True, consent_by="desk", pack=pack)
    assert again.accepted[0].renewed and again.accepted[0].enrolment_id == first.accepted[0].enrolment_id
    other = await enroll_photos(database, "someone", "Someone Else", [photo], consent=True, pack=pack)
    assert not other.accepted and other.rejected[0].code == "other_person" and "'ardern'" in other.rejected[0].reason
    conn = await asyncpg.connect(database)
    try:
        row = await conn.fetchrow("SELECT * FROM face_enrolment")
        assert row["photo"] == photo.read_bytes() and row["consent_by"] == "desk"
        assert (row["expires_at"] - row["consent_at"]).days == 365  # renewed with the default retention
        assert await conn.fetchval("SELECT display_name FROM person WHERE id = 'ardern'") == "Jacinda Ardern"
        assert await conn.fetchval("SELECT count(*) FROM person WHERE id = 'someone'") == 0
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------ gallery

def test_gallery_match_is_open_set_over_persons():
    a, b, c = (np.array(unit(s)) for s in (1, 2, 3))
    g = Gallery("open", ["bob", "alice", "bob"], np.stack([b, a, c]), threshold=0.4, margin=0.1)
    assert g.persons == ("alice", "bob") and len(g) == 3
    close_to_c = c + 0.3 * a  # bob (his second enrolment), alice some way behind
    near_both = a + b  # equally alice and bob: refused on margin
    matches = g.match(np.stack([a, close_to_c, near_both, np.array(unit(9))]))
    assert matches[0].person_id == "alice" and matches[0].score == pytest.approx(1, abs=1e-5)
    assert matches[1].person_id == "bob" and matches[1].second_person_id == "alice" and matches[1].margin > 0.5
    assert matches[2].person_id is None and matches[2].score > 0.6 and abs(matches[2].margin) < 0.05
    assert matches[3].person_id is None and matches[3].score < 0.4
    assert matches[3].best_person_id in ("alice", "bob")
    one = Gallery("open", ["alice"], a[None], threshold=0.4, margin=0.1).match(a[None])[0]
    assert one.person_id == "alice" and one.second_person_id is None and one.margin == pytest.approx(1, abs=1e-5)
    empty = Gallery.empty("open", 128).match(np.stack([a, b]))
    assert [m.person_id for m in empty] == [None, None]
    # vectorised: 2000 queries x 5000 enrolments in one go
    rng = np.random.default_rng(0)
    big = Gallery("open", [f"p{i // 5}" for i in range(5000)], rng.standard_normal((5000, 128)), threshold=0.4)
    t0 = time.perf_counter()
    out = big.match(rng.standard_normal((2000, 128)))
    print(f"match 2000 x 5000 enrolments (1000 persons): {(time.perf_counter() - t0) * 1000:.0f} ms")
    assert len(out) == 2000


async def test_load_gallery_leaves_out_other_packs_expired_and_erased(database):
    conn = await asyncpg.connect(database)
    try:
        await insert_enrolment(conn, "alice", seed=1)
        await insert_enrolment(conn, "alice", seed=2, expires="NULL")
        await insert_enrolment(conn, "bob", seed=3)
        await insert_enrolment(conn, "carol", seed=4, expires="now() + interval '2 seconds'")
        await conn.execute("UPDATE face_enrolment SET created_at = now() - interval '2 days'")
        await insert_enrolment(conn, "dave", seed=5)
        await conn.execute("UPDATE face_enrolment SET expires_at = now() - interval '1 hour', "
                           "created_at = now() - interval '2 days' WHERE person_id = 'dave'")
        await insert_enrolment(conn, "erin", seed=6)
        await conn.execute("UPDATE person SET pseudonymised_at = now() WHERE id = 'erin'")
        await insert_enrolment(conn, "frank", pack="arcface", dim=512, seed=7)
        gallery = await load_gallery(conn, "open")
        assert gallery.persons == ("alice", "bob", "carol") and len(gallery) == 4 and gallery.dim == 128
        assert 0 < gallery.expires_in() <= 2
        assert gallery.threshold == 0.40 and gallery.margin == 0.08
        arc = await load_gallery(conn, "arcface", threshold=0.5)
        assert arc.persons == ("frank",) and arc.dim == 512 and arc.threshold == 0.5
        assert gallery.match(np.array([unit(2)]))[0].person_id == "alice"
    finally:
        await conn.close()


async def test_watcher_reloads_on_notify_ignores_other_packs_and_reconnects(database):
    conn = await asyncpg.connect(database)
    loads: list[int] = []
    try:
        await insert_enrolment(conn, "alice", seed=1)
        async with GalleryWatcher(database, "open", keepalive_s=0.5, backoff_s=(0.1, 0.5),
                                  on_reload=lambda g: loads.append(len(g))) as watcher:
            assert watcher.current.persons == ("alice",) and watcher.version == 1

            t0 = time.perf_counter()
            await insert_enrolment(conn, "bob", seed=2)
            gallery = await watcher.wait_for_version(2, timeout=2)
            print(f"reloaded {time.perf_counter() - t0:.3f} s after the commit")
            assert gallery.persons == ("alice", "bob") and watcher.current is gallery
            assert watcher.current.match(np.array([unit(2)]))[0].person_id == "bob"

            await insert_enrolment(conn, "frank", pack="arcface", dim=512, seed=3)
            await asyncio.sleep(0.5)
            assert watcher.version == 2  # another pack's enrolment: no reload

            # the server drops the watcher's connection: it reconnects, reloads, and keeps listening
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            await watcher.wait_for_version(3, timeout=5)
            assert watcher.reconnects >= 1 and watcher.current.persons == ("alice", "bob")
            await conn.execute("DELETE FROM face_enrolment WHERE person_id = 'alice'")
            gallery = await watcher.wait_for_version(4, timeout=2)
            assert gallery.persons == ("bob",) and watcher.connected
        assert loads[:4] == [1, 2, 2, 1]
    finally:
        await conn.close()


async def test_watcher_start_on_unreachable_database_is_one_line(free_port):
    watcher = GalleryWatcher(f"postgresql://rollcall@127.0.0.1:{free_port}/rollcall", "open", start_timeout=1.0,
                             backoff_s=(0.1, 0.2))
    with pytest.raises(RollcallError, match="cannot reach PostgreSQL") as err:
        await watcher.start()
    assert "\n" not in str(err.value)
