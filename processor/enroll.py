"""Enrolment: photos of a person → face embeddings in ``face_enrolment`` (with consent and an expiry).

:func:`enroll_photos` enrols one person from some photos; :func:`enroll_from_dir` a folder holding one
sub-folder per person (folder name = person id, an optional ``name.txt`` with the display name, the
photos beside it). Each photo goes through the face stage (detect → align → quality gate → embed) and is
accepted or rejected with a reason, the others are still enrolled:

- ``unreadable``: the file cannot be read; ``not_an_image``: it does not decode as an image;
- ``no_face``: "no face found";
- ``several_faces``: "N faces found: use a photo of one person" (faces at least 40 % the size of the
  largest count; smaller background faces are ignored);
- the quality gate's reason: ``too_small``, ``low_score``, ``pose``, ``too_blurry`` ("too small: the face is
  23 px, needs 40 px (thresholds.min_face_px)");
- ``duplicate``: the same file (sha256) twice in one run; ``other_person``: this exact photo is already
  enrolled for someone else;
- folders only: ``bad_person_id`` (the sub-folder's name is not a valid person id),
  ``not_in_person_folder`` (a file directly in the folder), ``erased`` (the person was pseudonymised).

What is stored: the L2-normalised embedding, the photo's sha256, the quality score, ``consent_at`` (now),
``consent_by``, ``expires_at`` = now + ``privacy.enrolment_retention_days``, the source (``'cli'`` unless the
caller says otherwise, e.g. ``'dashboard'``); the photo
itself only when ``privacy.keep_enrolment_photos`` is set. Enrolling a photo that is already enrolled for
the same person renews its consent and expiry (reported as accepted, ``renewed``). Without consent
nothing is read or written: one-line ``RollcallError``. The person row is upserted (``display_name``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from infra.foundation.errors import RollcallError
from processor import model_packs as mp
from processor.stages.faces import AnalysedFace, FaceAnalyzer, FaceDetector, FaceEmbedder
from infra.foundation.db import describe_unreachable
from infra.foundation.config import PrivacyConfig, ThresholdsConfig

PERSON_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # the config's Slug
ENROLMENT_SOURCES = ("cli", "dashboard", "import")  # 'review' enrolments come from the review queue
NAME_FILE = "name.txt"
MAX_PHOTO_BYTES = 64_000_000
SIGNIFICANT_FACE = 0.4  # a face counts towards "several faces" when at least this fraction of the largest

Progress = Callable[[int, int, Path], None]  # (photos done, photos in all, the photo just done)


@dataclass(frozen=True)
class Accepted:
    path: Path
    person_id: str
    enrolment_id: int
    quality: float
    renewed: bool = False  # the same photo was enrolled already: consent and expiry renewed


@dataclass(frozen=True)
class Rejected:
    path: Path
    reason: str  # one line for people
    code: str  # for programs: see the module docstring
    person_id: str | None = None


@dataclass
class EnrolReport:
    model_pack: str
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def persons(self) -> list[str]:
        return sorted({a.person_id for a in self.accepted})

    def extend(self, other: "EnrolReport") -> None:
        self.accepted += other.accepted
        self.rejected += other.rejected

    def summary(self) -> str:
        renewed = sum(a.renewed for a in self.accepted)
        extra = f" ({renewed} already enrolled, renewed)" if renewed else ""
        return (f"enrolled {len(self.accepted)} photo(s){extra} of {len(self.persons)} person(s) "
                f"for model pack {self.model_pack!r}; rejected {len(self.rejected)}")


# ------------------------------------------------------------------------------------------ models

_models: dict[str, tuple[FaceDetector, FaceEmbedder]] = {}
_models_lock = threading.Lock()


def face_analyzer(pack: str | mp.LoadedPack, thresholds: Any) -> FaceAnalyzer:
    """Sessions are loaded once per pack and process; detectors per score threshold share them."""
    loaded = mp.load_pack(pack) if isinstance(pack, str) else pack
    with _models_lock:
        if loaded.name not in _models:
            _models[loaded.name] = (FaceDetector(loaded, thresholds.face_detection), FaceEmbedder(loaded))
        detector, embedder = _models[loaded.name]
    if detector.score_threshold != thresholds.face_detection:
        detector = (FaceDetector(loaded, thresholds.face_detection, detector.input_size, session=detector.session)
                    if detector.arch == "yunet" else FaceDetector(loaded, thresholds.face_detection))
    return FaceAnalyzer(loaded, thresholds, detector=detector, embedder=embedder)


# ------------------------------------------------------------------------------------------ checks

@dataclass
class _Candidate:
    path: Path
    sha256: str
    data: bytes
    embedding: np.ndarray
    quality: float


def _quality_reason(code: str, q: Any, det_score: float, t: Any) -> str:
    return {
        "too_small": f"too small: the face is {q.size_px:.0f} px, needs {t.min_face_px} px (thresholds.min_face_px)",
        "too_blurry": f"too blurry: sharpness {q.sharpness:.0f}, needs {t.min_sharpness:g} (thresholds.min_sharpness)",
        "pose": f"face turned away: yaw {q.yaw_deg:+.0f}°, at most {t.max_yaw_deg:g}° (thresholds.max_yaw_deg)",
        "low_score": f"face unclear: detector score {det_score:.2f}, needs {t.face_detection:g}",
    }[code]


def _check_photo(analyzer: FaceAnalyzer, path: Path, person_id: str | None) -> _Candidate | Rejected:
    """Read, decode and analyse one photo (blocking: runs in a worker thread)."""
    try:
        if path.stat().st_size > MAX_PHOTO_BYTES:
            return Rejected(path, f"too large for a photo ({path.stat().st_size / 1e6:.0f} MB, at most "
                                  f"{MAX_PHOTO_BYTES // 1_000_000} MB)", "unreadable", person_id)
        data = path.read_bytes()
    except IsADirectoryError:
        return Rejected(path, "a folder, not a photo", "unreadable", person_id)
    except OSError as exc:
        return Rejected(path, f"cannot read the file ({exc.strerror or type(exc).__name__})", "unreadable", person_id)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None or image.ndim != 3 or min(image.shape[:2]) < 8:
        return Rejected(path, "not an image (it does not decode as JPEG, PNG, WebP, …)", "not_an_image", person_id)
    face = one_good_face(analyzer.analyse([image])[0], analyzer.thresholds)
    if isinstance(face, tuple):
        return Rejected(path, face[1], face[0], person_id)
    return _Candidate(path, hashlib.sha256(data).hexdigest(), data, face.embedding, face.quality.score)


def one_good_face(faces: Sequence[AnalysedFace], thresholds: Any) -> AnalysedFace | tuple[str, str]:
    """The one face of an image fit to enrol (it has its embedding), or (code, reason) why there is none:
    the rule for a photo, used for a video's frames too (processor/enrol_frames.py)."""
    if not faces:
        return "no_face", "no face found"
    largest = max(faces, key=lambda f: f.detection.size_px)
    significant = [f for f in faces if f.detection.size_px >= SIGNIFICANT_FACE * largest.detection.size_px]
    if len(significant) > 1:
        return "several_faces", f"{len(significant)} faces found: use a photo of one person"
    q = largest.quality
    if q.reason is not None or largest.embedding is None:
        code = q.reason or "low_score"
        return code, _quality_reason(code, q, largest.detection.score, thresholds)
    return largest


# ------------------------------------------------------------------------------------------ database

async def _connect(database_url: str):
    import asyncpg


    try:
        conn = await asyncpg.connect(database_url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError, asyncpg.InterfaceError) as exc:
        raise describe_unreachable(database_url, exc) from None
    try:
        if await conn.fetchval("SELECT to_regclass('public.face_enrolment')") is None:
            raise RollcallError("the database has no face_enrolment table: run `rollcall db migrate` first")
    except BaseException:
        await conn.close()
        raise
    return conn


class _PersonRefused(Exception):
    pass


async def _check_photos(analyzer: FaceAnalyzer, person_id: str, photos: Sequence[Path], report: EnrolReport,
                        tick: Callable[[Path], None]) -> list[_Candidate]:
    """The photos fit to enrol, each once; the others (and repeats of a photo) go to ``report.rejected``."""
    candidates: list[_Candidate] = []
    seen: dict[str, Path] = {}
    for path in photos:
        result = await asyncio.to_thread(_check_photo, analyzer, path, person_id)
        if isinstance(result, _Candidate):
            if result.sha256 in seen:
                result = Rejected(path, f"the same photo as {seen[result.sha256].name}", "duplicate", person_id)
            else:
                seen[result.sha256] = path
                candidates.append(result)
        if isinstance(result, Rejected):
            report.rejected.append(result)
        tick(path)
    return candidates


async def _not_enrolled_for_others(conn: Any, pack: str, person_id: str, candidates: list[_Candidate],
                                   report: EnrolReport) -> list[tuple[_Candidate, Any]]:
    """(candidate, its enrolment row for this person or None); a photo already enrolled for someone else is
    rejected."""
    existing = {r["photo_sha256"]: r for r in await conn.fetch(
        "SELECT id, person_id, photo_sha256 FROM face_enrolment WHERE model_pack = $1 AND photo_sha256 = ANY($2::text[])",
        pack, [c.sha256 for c in candidates])} if candidates else {}
    todo = []
    for c in candidates:
        old = existing.get(c.sha256)
        if old is not None and old["person_id"] != person_id:
            report.rejected.append(Rejected(c.path, f"this photo is already enrolled for {old['person_id']!r}",
                                            "other_person", person_id))
        else:
            todo.append((c, old))
    return todo


async def _enrol_person(conn: Any, analyzer: FaceAnalyzer, person_id: str, name: str | None, photos: Sequence[Path],
                        consent_by: str | None, privacy: Any, report: EnrolReport, tick: Callable[[Path], None],
                        source: str = "cli") -> None:
    pack = analyzer.pack.name
    row = await conn.fetchrow("SELECT display_name, pseudonymised_at FROM person WHERE id = $1", person_id)
    if row is not None and row["pseudonymised_at"] is not None:
        raise _PersonRefused(f"person {person_id!r} was erased (pseudonymised {row['pseudonymised_at']:%Y-%m-%d}): "
                             "enrol them under a new id")
    candidates = await _check_photos(analyzer, person_id, photos, report, tick)
    todo = await _not_enrolled_for_others(conn, pack, person_id, candidates, report)
    if not todo:
        return
    days = int(privacy.enrolment_retention_days)
    done: list[Accepted] = []
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO person (id, display_name) VALUES ($1, coalesce($2, $1))
               ON CONFLICT (id) DO UPDATE SET display_name = coalesce($2, person.display_name), updated_at = now()""",
            person_id, name)
        for c, old in todo:
            if old is not None:
                await conn.execute(
                    """UPDATE face_enrolment SET consent_at = now(), consent_by = $2,
                       expires_at = now() + make_interval(days => $3) WHERE id = $1""",
                    old["id"], consent_by, days)
                done.append(Accepted(c.path, person_id, old["id"], c.quality, renewed=True))
                continue
            enrolment_id = await conn.fetchval(
                """INSERT INTO face_enrolment (person_id, model_pack, embedding, embedding_dim, quality, source,
                       photo_sha256, photo, consent_at, consent_by, expires_at)
                   VALUES ($1, $2, $3::real[], $4, $5, $10, $6, $7, now(), $8, now() + make_interval(days => $9))
                   RETURNING id""",
                person_id, pack, c.embedding.astype(float).tolist(), int(c.embedding.shape[0]), c.quality, c.sha256,
                c.data if privacy.keep_enrolment_photos else None, consent_by, days, source)
            done.append(Accepted(c.path, person_id, enrolment_id, c.quality))
        await conn.execute(
            "INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, 'enrol', $2, $3::jsonb)",
            consent_by or source, person_id,
            json.dumps({"model_pack": pack, "enrolments": [a.enrolment_id for a in done],
                        "renewed": sum(a.renewed for a in done), "photos_kept": bool(privacy.keep_enrolment_photos)}))
    report.accepted += done


def _defaults(thresholds: Any, privacy: Any) -> tuple[Any, Any]:

    return thresholds if thresholds is not None else ThresholdsConfig(), privacy if privacy is not None else PrivacyConfig()


def _require_consent(consent: bool, who: str) -> None:
    if not consent:
        raise RollcallError(f"refusing to enrol {who} without consent: confirm the person agreed to face "
                            "recognition and pass --consent (recorded with the time and --consent-by)")


def _check_person_id(person_id: str) -> None:
    if not PERSON_ID.match(person_id or ""):
        raise RollcallError(f"person id {person_id!r} is not valid: use letters, digits, '_', '.', '-' "
                            "(up to 64, starting with a letter or digit)")


# ------------------------------------------------------------------------------------------ API

async def enroll_photos(database_url: str, person_id: str, name: str | None, photos: Sequence[Path | str], *,
                        consent: bool, consent_by: str | None = None, pack: str | mp.LoadedPack = mp.DEFAULT_PACK,
                        thresholds: Any = None, privacy: Any = None, progress: Progress | None = None,
                        source: str = "cli") -> EnrolReport:
    """Enrol ``person_id`` (display name ``name``; None keeps the current one) from ``photos``; ``source``
    records where the enrolment came from ('cli', 'dashboard', 'import')."""
    if source not in ENROLMENT_SOURCES:
        raise ValueError(f"source must be one of {', '.join(ENROLMENT_SOURCES)}")
    _require_consent(consent, repr(person_id))
    _check_person_id(person_id)
    thresholds, privacy = _defaults(thresholds, privacy)
    paths = [Path(p) for p in photos]
    if not paths:
        raise RollcallError(f"no photos given for {person_id!r}")
    analyzer = face_analyzer(pack, thresholds)
    report = EnrolReport(analyzer.pack.name)
    done = 0

    def tick(path: Path) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, len(paths), path)

    conn = await _connect(database_url)
    try:
        await _enrol_person(conn, analyzer, person_id, name, paths, consent_by, privacy, report, tick, source)
    except _PersonRefused as exc:
        raise RollcallError(str(exc)) from None
    finally:
        await conn.close()
    return report


async def enroll_from_dir(database_url: str, folder: Path | str, *, consent: bool, consent_by: str | None = None,
                          pack: str | mp.LoadedPack = mp.DEFAULT_PACK, thresholds: Any = None, privacy: Any = None,
                          progress: Progress | None = None) -> EnrolReport:
    """Enrol every ``folder/<person id>/`` (photos, optional ``name.txt``); one report for all of them."""
    folder = Path(folder)
    _require_consent(consent, f"the people in {folder}")
    if not folder.is_dir():
        raise RollcallError(f"{folder} is not a folder: give a folder with one sub-folder per person")
    thresholds, privacy = _defaults(thresholds, privacy)
    people: list[tuple[Path, list[Path]]] = []
    loose: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = sorted(p for p in entry.iterdir() if not p.name.startswith(".") and p.name != NAME_FILE)
            people.append((entry, files))
        else:
            loose.append(entry)
    if not people:
        raise RollcallError(f"no person folders in {folder}: expected {folder}/<person id>/<photos> "
                            f"(and an optional {NAME_FILE})")
    analyzer = face_analyzer(pack, thresholds)
    report = EnrolReport(analyzer.pack.name)
    report.rejected += [Rejected(p, "not in a person's folder: put photos in <folder>/<person id>/", "not_in_person_folder")
                        for p in loose]
    total = sum(len(files) for _, files in people)
    done = 0

    def tick(path: Path) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, path)

    conn = await _connect(database_url)
    try:
        for person_dir, files in people:
            person_id = person_dir.name
            if not PERSON_ID.match(person_id):
                for path in files:
                    report.rejected.append(Rejected(path, f"folder name {person_id!r} is not a valid person id",
                                                    "bad_person_id", None))
                    tick(path)
                continue
            name_file = person_dir / NAME_FILE
            name = None
            if name_file.is_file():
                lines = [ln.strip() for ln in name_file.read_text(encoding="utf-8", errors="replace").splitlines()]
                name = next((ln for ln in lines if ln), None)
            try:
                await _enrol_person(conn, analyzer, person_id, name, files, consent_by, privacy, report, tick)
            except _PersonRefused as exc:
                for path in files:
                    report.rejected.append(Rejected(path, str(exc), "erased", person_id))
                    tick(path)
    finally:
        await conn.close()
    return report


# ------------------------------------------------------------------------------------------ CLI help

class RichProgress:
    """A ``rich`` progress bar as a :data:`Progress` callback: ``with RichProgress("enrolling") as bar:``.
    It appears with the first photo done, so an early error prints no empty bar."""

    def __init__(self, description: str = "enrolling", console: Any = None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[photo]}"), TimeElapsedColumn(), console=console)
        self._task = self._progress.add_task(description, total=None, photo="")
        self._started = False

    def __enter__(self) -> "RichProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._progress.stop()

    def __call__(self, done: int, total: int, path: Path) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        self._progress.update(self._task, completed=done, total=total, photo=path.name)
