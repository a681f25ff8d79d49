"""The face gallery: who is enrolled, as one matrix per model pack, matched open-set; reloaded on change.

:class:`Gallery` holds the live enrolments of ONE model pack (embeddings from different packs are not
comparable) as an L2-normalised (N_enrolments x D) float32 matrix, rows grouped by person.
:meth:`Gallery.match` scores M query embeddings against it in one matrix product, keeps each person's best
enrolment (``np.maximum.reduceat``), and answers open-set: a face is someone only when the best person's
cosine similarity reaches ``threshold`` AND leads the second-best person by at least ``margin``; otherwise
it is unknown (``person_id`` None, the nearest person still reported as ``best_person_id``).

:func:`load_gallery` reads one pack's enrolments, leaving out expired ones (``expires_at <= now()``) and
those of pseudonymised (erased) people. :class:`GalleryWatcher` keeps a gallery current without a restart:
it LISTENs on ``rollcall_gallery`` (migration 0002's triggers NOTIFY the pack's name on every change to
``face_enrolment`` and on pseudonymisation), reloads on a notification for its pack, at the next expiry and
every ``refresh_s``, swaps ``.current`` atomically, and reconnects with exponential backoff when the
database goes away (keeping the last gallery meanwhile).

Threshold calibration (``open`` pack: YuNet → ArcFace-template alignment → SFace 128-d), 2026-11:

* Still photos, the 10 sample portraits (5 people) through FaceDetector(640x640) → align → FaceEmbedder,
  all 45 pairs: same person (8 pairs) 0.611-0.847 (Macron 2014/2025 0.611, Ardern 2018/2022 0.769,
  Obama pairs 0.719-0.847); different people (37 pairs) -0.034-0.281 (highest: Obama/Biden 0.281,
  Macron 2025/Sunak 0.249).
* Door camera, the rendered default scenario (``var/scenarios/default/door.ts``, 1280x720, faces
  40→200 px with motion blur, noise and lighting changes): the 200 ground-truth faces, detected in full
  frames (193 found), gated with the default thresholds (141 passed), each compared with every sample
  photo except the one its sprite was cut from: same person n=138, mean 0.657, sd 0.063, min 0.479;
  different people n=1131, mean 0.107, sd 0.072, max 0.296 (99th percentile 0.267).
* The threshold with equal distance in standard deviations from both door-camera distributions is
  0.400 (4.1 sd from each mean); per-frame false rejects 0 and false accepts 0 on this data, the nearest
  errors 0.08 (false reject at 0.479) and 0.10 (false accept at 0.296) away. Chosen: **threshold 0.40**.
* Margin (best person minus second-best person, gallery = every other photo): genuine faces lead by
  0.297 at least (5th percentile 0.318). The config default **margin 0.08** is kept: it only bites when
  two enrolled people both look like the face, which is what it is for.

OpenCV's own SFace threshold (0.363, on LFW) sits inside the same gap. With larger galleries the chance
that some stranger crosses 0.40 grows with the number of enrolled people; a campus should re-measure on
its own cameras (``[thresholds] face_match`` overrides the pack default).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tenacity import RetryCallState

from infra.foundation.db import describe_unreachable
from infra.foundation.errors import RollcallError
from infra.foundation.retry import connected, reconnecting
from processor import model_catalogue

log = logging.getLogger("rollcall.gallery")

CHANNEL = "rollcall_gallery"
DEFAULT_MARGIN = 0.08


def default_threshold(model_pack: str) -> float:
    """The pack's calibrated match threshold (model_catalogue.PackSpec.match_threshold)."""

    return float(model_catalogue.pack_spec(model_pack).match_threshold)


def match_settings(model_pack: str, thresholds: Any = None) -> tuple[float, float]:
    """(threshold, margin): ``[thresholds] face_match`` / ``face_margin`` where set, else the pack's defaults."""
    threshold = getattr(thresholds, "face_match", None)
    if threshold is None:
        threshold = default_threshold(model_pack)
    margin = getattr(thresholds, "face_margin", None)
    if margin is None:
        margin = DEFAULT_MARGIN
    return float(threshold), float(margin)


@dataclass(frozen=True, slots=True)
class Match:
    person_id: str | None  # None: unknown (below threshold, or too close to a second person)
    score: float  # cosine similarity to the best person (their best enrolment); 0.0 with an empty gallery
    margin: float  # score minus the second-best person's score (minus 0.0 when there is no second person)
    second_person_id: str | None
    best_person_id: str | None = None  # the nearest person even when refused: for logs and the review queue


class Gallery:
    """Immutable: a reload builds a new one and swaps it in."""

    def __init__(self, model_pack: str, person_ids: Sequence[str], embeddings: np.ndarray, *,
                 threshold: float, margin: float = DEFAULT_MARGIN, enrolment_ids: Sequence[int] | None = None,
                 next_expiry_s: float | None = None):
        emb = np.asarray(embeddings, np.float32)
        n = len(person_ids)
        if emb.ndim != 2 or emb.shape[0] != n:
            if n == 0 and emb.size == 0:
                emb = emb.reshape(0, emb.shape[-1] if emb.ndim == 2 else 0)
            else:
                raise ValueError(f"embeddings {emb.shape} do not match {n} person ids")
        order = np.argsort(np.asarray(person_ids, dtype=object).astype(str), kind="stable") if n else np.zeros(0, int)
        pids = np.asarray(person_ids, dtype=object)[order].astype(str) if n else np.zeros(0, str)
        emb = emb[order]
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb / np.maximum(norms, 1e-12)
        emb.setflags(write=False)
        self.model_pack = model_pack
        self.threshold = float(threshold)
        self.margin = float(margin)
        self.embeddings = emb
        self.enrolment_person = tuple(pids.tolist())
        self.enrolment_ids = tuple(np.asarray(enrolment_ids)[order].tolist()) if enrolment_ids is not None else ()
        starts = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]]) if n else np.zeros(0, int)
        self._starts = starts
        self.persons: tuple[str, ...] = tuple(pids[starts].tolist()) if n else ()
        self.next_expiry_s = next_expiry_s  # seconds from load until the first enrolment expires
        self.loaded_at = time.time()
        self._loaded_mono = time.monotonic()

    @classmethod
    def empty(cls, model_pack: str, dim: int = 0, *, threshold: float | None = None,
              margin: float = DEFAULT_MARGIN) -> "Gallery":
        return cls(model_pack, [], np.zeros((0, dim), np.float32),
                   threshold=default_threshold(model_pack) if threshold is None else threshold, margin=margin)

    def __len__(self) -> int:
        return len(self.enrolment_person)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __repr__(self) -> str:
        return (f"Gallery({self.model_pack!r}, {len(self.persons)} persons, {len(self)} enrolments, "
                f"threshold={self.threshold}, margin={self.margin})")

    def expires_in(self) -> float | None:
        """Seconds until its first enrolment expires (then it should be reloaded), or None."""
        if self.next_expiry_s is None:
            return None
        return self.next_expiry_s - (time.monotonic() - self._loaded_mono)

    def person_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(M, persons) cosine similarity of each query to each person's best enrolment."""
        q = np.asarray(embeddings, np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if not self.persons:
            return np.zeros((len(q), 0), np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"query embeddings are {q.shape[1]}-d, gallery {self.model_pack!r} is {self.dim}-d")
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        return np.maximum.reduceat(q @ self.embeddings.T, self._starts, axis=1)

    def match(self, embeddings: np.ndarray) -> list[Match]:
        scores = self.person_scores(embeddings)
        m, p = scores.shape
        if p == 0:
            return [Match(None, 0.0, 0.0, None, None) for _ in range(m)]
        rows = np.arange(m)
        if p == 1:
            best_i = np.zeros(m, int)
            best = scores[:, 0]
            second = np.zeros(m, np.float32)
            second_i = np.full(m, -1)
        else:
            top2 = np.argpartition(-scores, 1, axis=1)[:, :2]
            s2 = scores[rows[:, None], top2]
            swap = s2[:, 1] > s2[:, 0]
            best_i = np.where(swap, top2[:, 1], top2[:, 0])
            second_i = np.where(swap, top2[:, 0], top2[:, 1])
            best, second = scores[rows, best_i], scores[rows, second_i]
        margin = best - second
        accept = (best >= self.threshold) & (margin >= self.margin)
        persons = self.persons
        return [Match(persons[best_i[k]] if accept[k] else None, float(best[k]), float(margin[k]),
                      persons[second_i[k]] if second_i[k] >= 0 else None, persons[best_i[k]])
                for k in range(m)]


# ------------------------------------------------------------------------------------------- loading

_QUERY = """
SELECT e.id, e.person_id, e.embedding, e.embedding_dim,
       extract(epoch FROM e.expires_at - now())::float8 AS expires_in_s
FROM face_enrolment e JOIN person p ON p.id = e.person_id
WHERE e.model_pack = $1
  AND (e.expires_at IS NULL OR e.expires_at > now())
  AND p.pseudonymised_at IS NULL
ORDER BY e.person_id, e.id
"""


def _expected_dim(model_pack: str) -> int | None:

    try:
        return model_catalogue.pack_spec(model_pack).embedding_dim
    except (KeyError, RollcallError):
        return None


def _build(model_pack: str, rows: Sequence[Any], threshold: float, margin: float) -> Gallery:
    dim = _expected_dim(model_pack)
    if dim is None and rows:
        dims = [r["embedding_dim"] for r in rows]
        dim = max(set(dims), key=dims.count)
    good = [r for r in rows if r["embedding_dim"] == dim and len(r["embedding"]) == dim]
    if len(good) < len(rows):
        log.warning("gallery %s: %d enrolment(s) with another embedding size than %s left out",
                    model_pack, len(rows) - len(good), dim)
    emb = np.array([r["embedding"] for r in good], np.float32).reshape(len(good), dim or 0)
    expiries = [r["expires_in_s"] for r in good if r["expires_in_s"] is not None]
    return Gallery(model_pack, [r["person_id"] for r in good], emb, threshold=threshold, margin=margin,
                   enrolment_ids=[r["id"] for r in good], next_expiry_s=min(expiries) if expiries else None)


async def load_gallery(conn_or_pool: Any, model_pack: str, *, threshold: float | None = None,
                       margin: float | None = None, thresholds: Any = None) -> Gallery:
    """The live enrolments of ``model_pack`` from an asyncpg connection or pool.

    ``threshold``/``margin`` default to :func:`match_settings` (``thresholds`` = config.ThresholdsConfig)."""
    t, m = match_settings(model_pack, thresholds)
    threshold = t if threshold is None else threshold
    margin = m if margin is None else margin
    rows = await conn_or_pool.fetch(_QUERY, model_pack)
    if len(rows) > 2000:  # building a big matrix from Python lists: off the event loop
        return await asyncio.to_thread(_build, model_pack, rows, threshold, margin)
    return _build(model_pack, rows, threshold, margin)


# ------------------------------------------------------------------------------------------- watcher

class GalleryWatcher:
    """Keeps ``.current`` (a :class:`Gallery`) up to date, as an asyncio task.

    ::

        async with GalleryWatcher(url, "open", thresholds=config.thresholds) as watcher:
            matches = watcher.current.match(embeddings)

    ``start()`` waits for the first load (``RollcallError`` in one line if the database cannot be reached
    within ``start_timeout``); afterwards a lost connection is retried with exponential backoff
    (``backoff_s``: first delay, longest delay) while the last gallery stays in use. ``version`` counts loads;
    ``on_reload(gallery)`` is called after each one.
    """

    def __init__(self, database_url: str, model_pack: str, *, threshold: float | None = None,
                 margin: float | None = None, thresholds: Any = None, refresh_s: float = 600.0,
                 keepalive_s: float = 15.0, debounce_s: float = 0.05, backoff_s: tuple[float, float] = (0.5, 30.0),
                 start_timeout: float = 15.0, on_reload: Callable[[Gallery], None] | None = None):
        self.database_url = database_url
        self.model_pack = model_pack
        t, m = match_settings(model_pack, thresholds)
        self.threshold = t if threshold is None else float(threshold)
        self.margin = m if margin is None else float(margin)
        self.refresh_s = refresh_s
        self.keepalive_s = keepalive_s
        self.debounce_s = debounce_s
        self.backoff_s = backoff_s
        self.start_timeout = start_timeout
        self.on_reload = on_reload
        self._current = Gallery.empty(model_pack, _expected_dim(model_pack) or 0, threshold=self.threshold,
                                      margin=self.margin)
        self.version = 0
        self.reconnects = 0
        self.connected = False
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._loaded: asyncio.Condition | None = None
        self._lost = False

    @property
    def current(self) -> Gallery:
        return self._current

    async def __aenter__(self) -> "GalleryWatcher":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, wait: bool = True) -> "GalleryWatcher":
        if self._task is not None:
            return self
        self._wake = asyncio.Event()
        self._loaded = asyncio.Condition()
        self._task = asyncio.create_task(self._run(), name=f"gallery-watcher-{self.model_pack}")
        if wait:
            try:
                await self.wait_for_version(1, timeout=self.start_timeout)
            except TimeoutError:
                error = self.last_error or "no answer"
                await self.stop()

                raise describe_unreachable(self.database_url, RuntimeError(error)) from None
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.connected = False

    async def wait_for_version(self, version: int, timeout: float | None = None) -> Gallery:
        """Wait until at least ``version`` loads have happened; the gallery then current."""
        assert self._loaded is not None, "start() first"

        async with asyncio.timeout(timeout), self._loaded:
            await self._loaded.wait_for(lambda: self.version >= version)
            return self._current

    # -- internals

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == self.model_pack and self._wake is not None:
            self._wake.set()

    def _on_terminate(self, _conn: Any) -> None:
        self._lost = True
        if self._wake is not None:
            self._wake.set()

    async def _reload(self, conn: Any) -> None:
        gallery = await load_gallery(conn, self.model_pack, threshold=self.threshold, margin=self.margin)
        self._current = gallery  # one reference assignment: readers see the old or the new, never a mix
        assert self._loaded is not None
        async with self._loaded:
            self.version += 1
            self._loaded.notify_all()
        log.info("gallery %s loaded: %d persons, %d enrolments (version %d)",
                 self.model_pack, len(gallery.persons), len(gallery), self.version)
        if self.on_reload is not None:
            try:
                self.on_reload(gallery)
            except Exception:  # noqa: BLE001 - a callback must not stop the watcher
                log.exception("gallery on_reload callback failed")

    def _next_timeout(self, next_refresh: float) -> float:
        now = time.monotonic()
        wait = min(self.keepalive_s, max(0.0, next_refresh - now))
        expiry = self._current.expires_in()
        if expiry is not None:
            wait = min(wait, max(0.0, expiry + 0.05))
        return wait

    async def _run(self) -> None:
        import asyncpg

        assert self._wake is not None
        first_s, max_s = self.backoff_s
        async for attempt in reconnecting(what=f"gallery {self.model_pack}", errors=(Exception,), first_s=first_s,
                                          max_s=max_s, on_retry=self._on_retry):
            with attempt:
                conn = None
                try:
                    self._lost = False
                    conn = await asyncpg.connect(self.database_url, timeout=10)
                    conn.add_termination_listener(self._on_terminate)
                    await conn.add_listener(CHANNEL, self._on_notify)  # LISTEN before loading: no change slips by
                    self._wake.clear()
                    await self._reload(conn)
                    self.connected, self.last_error = True, None
                    connected(attempt)
                    await self._watch(conn)
                except Exception as exc:  # noqa: BLE001 - any failure: back off and reconnect
                    self.connected = False
                    self.last_error = " ".join(str(exc).split()) or type(exc).__name__
                    self.reconnects += 1
                    raise
                finally:
                    if conn is not None and not conn.is_closed():
                        try:
                            async with asyncio.timeout(2):
                                await conn.close()
                        except Exception:  # noqa: BLE001
                            conn.terminate()

    async def _watch(self, conn: Any) -> None:
        """Reload on a notification, at the next expiry and every ``refresh_s``; raise when the connection
        is lost."""
        assert self._wake is not None
        next_refresh = time.monotonic() + self.refresh_s
        while True:
            try:
                async with asyncio.timeout(self._next_timeout(next_refresh)):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._lost or conn.is_closed():
                raise ConnectionError("connection to PostgreSQL lost")
            expiry = self._current.expires_in()
            if self._wake.is_set():
                await asyncio.sleep(self.debounce_s)  # fold a burst of changes into one reload
                self._wake.clear()
                if self._lost:
                    raise ConnectionError("connection to PostgreSQL lost")
            elif time.monotonic() < next_refresh and (expiry is None or expiry > 0):
                await conn.fetchval("SELECT 1", timeout=5)  # keepalive: notices a dead server
                continue
            await self._reload(conn)
            next_refresh = time.monotonic() + self.refresh_s

    def _on_retry(self, state: RetryCallState) -> None:
        log.warning("gallery %s: %s; reconnecting in %.1f s", self.model_pack, self.last_error, state.next_action.sleep)
