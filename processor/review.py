"""The unknown-face review queue: the best crop of each unknown face track, for an operator to accept
as a person or reject. A track the liveness check found to be a picture of a face comes here too, marked
(``liveness`` 'suspect', its score, and whom the picture matched in ``best_person_id``). Only with ``[privacy] review_unknown_faces = true``; rows expire after
``review_crop_retention_days``. Writing happens off the frame path through a bounded queue: when
PostgreSQL is slow or away, items wait (and the oldest are dropped, counted, past ``max_pending``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque

import cv2
from tenacity import RetryCallState

from infra.foundation.db import describe_unreachable
from infra.foundation.retry import connected, reconnecting
from processor.stages.face_tracks import TrackDecision

log = logging.getLogger("rollcall.review")


class ReviewQueue:
    def __init__(self, database_url: str, model_pack: str, *, retention_days: int, max_pending: int = 200):
        self.database_url = database_url
        self.model_pack = model_pack
        self.retention = dt.timedelta(days=retention_days)
        self._pending: deque[tuple[TrackDecision, dict]] = deque(maxlen=max_pending)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_written: tuple[TrackDecision, dict] | None = None
        self.written = 0
        self.suspected_spoofs_written = 0
        self.dropped = 0
        self.failures = 0

    def submit(self, decision: TrackDecision, event: dict) -> None:
        """Called from the recognition stage; never blocks."""
        if decision.crop is None:
            return
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append((decision, event))
        self._wakeup.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="review-writer")

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self._task is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._pending and asyncio.get_running_loop().time() < deadline and self.failures == 0:
            await asyncio.sleep(0.05)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        import asyncpg

        # A failed write keeps its item at the front of the queue and is retried on a new connection.
        errors = (OSError, asyncpg.PostgresError, TimeoutError)
        async for attempt in reconnecting(what="review queue", errors=errors, on_retry=self._on_write_failed):
            with attempt:
                conn = None
                try:
                    while True:
                        if not self._pending:
                            self._wakeup.clear()
                            await self._wakeup.wait()
                            continue
                        if conn is None or conn.is_closed():
                            conn = await asyncpg.connect(self.database_url, timeout=10)
                        await self._write(conn, *self._pending[0])
                        self._last_written = self._pending.popleft()
                        self.written += 1
                        self.suspected_spoofs_written += _suspect(self._last_written)
                        connected(attempt)
                except asyncio.CancelledError:
                    if conn is not None:
                        await conn.close()
                    raise

    async def _write(self, conn, decision: TrackDecision, event: dict) -> None:
        ok, jpeg = await asyncio.to_thread(cv2.imencode, ".jpg", decision.crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
        captured = dt.datetime.fromtimestamp(decision.captured_at, dt.timezone.utc)
        liveness = decision.liveness
        # best_person_id: whom a suspected picture showed (NULL for an unknown face); a person
        # deleted meanwhile is left out rather than failing the insert (and blocking the queue) on the key
        await conn.execute(
            """INSERT INTO review_face (camera_id, track_id, event_id, captured_at, model_pack, embedding,
               embedding_dim, crop_jpeg, quality, best_score, expires_at, liveness, liveness_score, best_person_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, (SELECT id FROM person WHERE id = $14))
               ON CONFLICT (event_id) DO NOTHING""",
            decision.camera_id, decision.track_id, event["event_id"], captured, self.model_pack,
            [float(v) for v in decision.embedding], int(decision.embedding.shape[0]),
            jpeg.tobytes() if ok else None, decision.quality, decision.score, captured + self.retention,
            liveness.decision if liveness is not None else None, liveness.score if liveness is not None else None,
            decision.pictured_person_id)

    def _on_write_failed(self, state: RetryCallState) -> None:
        self.failures += 1
        log.warning("%s; retrying in %.1f s", describe_unreachable(self.database_url, state.outcome.exception()),
                    state.next_action.sleep)


def _suspect(item: tuple[TrackDecision, dict] | None) -> int:
    return int(item is not None and item[0].liveness is not None and item[0].liveness.suspect)
