"""The writer's database work for one batch, set-based, in one transaction with the consumer offsets.

Per batch: one COPY of the batch's sightings into a temporary staging table; one statement that inserts
the new ones into ``presence_event`` (its ``event_id`` key is the de-duplication ledger: a redelivered or
duplicated event is not new, and only new events go further), finds each new event's session (the session
running in its room at its frame time), folds the events into their tracks and returns the (session,
person) pairs touched (the old identity of a corrected track too); one recompute of those pairs'
attendance (:data:`consumers.sessions.RECOMPUTE_SQL`); the offsets. Nothing per event.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from consumers.records import STAGE_COLUMNS
from consumers.sessions import materialise_days, recompute_attendance

_STAGE_TABLE = "writer_stage"
_CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE_TABLE} (
    seq integer NOT NULL, event_id uuid NOT NULL, kind text NOT NULL, room_id text NOT NULL, camera_id text NOT NULL,
    track_id text NOT NULL, person_id text, frame_time timestamptz NOT NULL, first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL, recognition_event_id uuid, identity_source text, topic text NOT NULL,
    kafka_partition integer NOT NULL, kafka_offset bigint NOT NULL
) ON COMMIT DELETE ROWS
"""

# The running session of each new event: a session made by hand first, then the latest start.
_FOLD_TRACKS = f"""
WITH inserted AS (
    INSERT INTO presence_event (event_id, kind, room_id, camera_id, track_id, person_id, frame_time, first_seen,
                                last_seen, recognition_event_id, identity_source, topic, kafka_partition, kafka_offset)
    SELECT event_id, kind, room_id, camera_id, track_id, person_id, frame_time, first_seen, last_seen,
           recognition_event_id, identity_source, topic, kafka_partition, kafka_offset
    FROM {_STAGE_TABLE}
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), counted AS (
    SELECT count(*) AS new FROM inserted
), ev AS (
    SELECT st.*, ses.id AS session_id
    FROM {_STAGE_TABLE} st JOIN inserted USING (event_id)
    JOIN LATERAL (
        SELECT cs.id FROM class_session cs JOIN course c ON c.id = cs.course_id
        WHERE cs.room_id = st.room_id AND cs.state <> 'cancelled'
          AND st.frame_time >= cs.starts_at - make_interval(secs => coalesce(cs.early_arrival_s, c.early_arrival_min * 60))
          AND st.frame_time <= least(cs.ends_at, coalesce(cs.closed_at, cs.ends_at))
        ORDER BY (cs.slot_id IS NULL) DESC, cs.starts_at DESC, cs.id DESC
        LIMIT 1
    ) ses ON true
), agg AS (
    SELECT session_id, camera_id, track_id,
           (array_agg(person_id ORDER BY seq DESC))[1] AS person_id,
           min(first_seen) AS first_seen, max(last_seen) AS last_seen,
           (array_agg(frame_time ORDER BY seq))[1] AS first_frame,
           (array_agg(event_id ORDER BY seq))[1] AS first_event_id,
           (array_agg(frame_time ORDER BY seq DESC))[1] AS last_frame,
           (array_agg(event_id ORDER BY seq DESC))[1] AS last_event_id,
           (array_agg(recognition_event_id ORDER BY seq) FILTER (WHERE recognition_event_id IS NOT NULL))[1]
               AS recognition_event_id,
           CASE WHEN bool_or(kind = 'recognition') THEN 'door' ELSE 'room' END AS source,
           (array_agg(person_id ORDER BY seq DESC) FILTER (WHERE identity_source = 'face'))[1] AS face_person_id
    FROM ev GROUP BY session_id, camera_id, track_id
), old AS (
    SELECT t.session_id, t.person_id FROM presence_track t JOIN agg a USING (session_id, camera_id, track_id)
), folded AS (
    -- A batch's events of a track always come after the ones applied before (one partition, offset order).
    INSERT INTO presence_track AS t (session_id, camera_id, track_id, person_id, first_seen, last_seen, first_frame,
                                     first_event_id, last_frame, last_event_id, recognition_event_id, source,
                                     face_person_id)
    SELECT session_id, camera_id, track_id, person_id, first_seen, last_seen, first_frame, first_event_id,
           last_frame, last_event_id, recognition_event_id, source, face_person_id FROM agg
    ON CONFLICT (session_id, camera_id, track_id) DO UPDATE
        SET person_id = EXCLUDED.person_id, first_seen = least(t.first_seen, EXCLUDED.first_seen),
            last_seen = greatest(t.last_seen, EXCLUDED.last_seen), last_frame = EXCLUDED.last_frame,
            last_event_id = EXCLUDED.last_event_id,
            recognition_event_id = coalesce(t.recognition_event_id, EXCLUDED.recognition_event_id),
            face_person_id = coalesce(EXCLUDED.face_person_id, t.face_person_id)
    RETURNING t.session_id, t.person_id
)
SELECT (SELECT new FROM counted) AS new, array_agg(session_id) AS sessions, array_agg(person_id) AS people
FROM (SELECT session_id, person_id FROM old WHERE person_id IS NOT NULL
      UNION
      SELECT session_id, person_id FROM folded WHERE person_id IS NOT NULL) AS touched
"""

_SAVE_OFFSETS = """
INSERT INTO consumer_offset (consumer_group, topic, partition, next_offset)
SELECT $1, topic, partition, next_offset FROM unnest($2::text[], $3::int[], $4::bigint[]) AS o (topic, partition, next_offset)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
    SET next_offset = greatest(consumer_offset.next_offset, EXCLUDED.next_offset), updated_at = now()
"""

_COUNT_DEAD_LETTERS = """
INSERT INTO consumer_dead_letter (consumer_group, topic, count, last_reason)
SELECT $1, topic, n, reason FROM unnest($2::text[], $3::bigint[], $4::text[]) AS d (topic, n, reason)
ON CONFLICT (consumer_group, topic) DO UPDATE
    SET count = consumer_dead_letter.count + EXCLUDED.count, last_reason = EXCLUDED.last_reason, updated_at = now()
"""


@dataclass
class BatchResult:
    events: int = 0  # sightings in the batch (after in-batch de-duplication)
    new: int = 0  # of which not seen before
    pairs: int = 0  # (session, person) pairs recomputed
    changed: int = 0  # attendance rows changed


@dataclass
class TimetableCache:
    """Which days' timetable sessions this process made, and when (re-made after ``ttl_s``: slots change)."""

    ttl_s: float = 60.0
    done: dict[dt.date, float] = field(default_factory=dict)

    def missing(self, days: Iterable[dt.date]) -> list[dt.date]:
        now = time.monotonic()
        return [d for d in days if now - self.done.get(d, -1e9) > self.ttl_s]

    def mark(self, days: Iterable[dt.date]) -> None:
        now = time.monotonic()
        self.done.update({d: now for d in days})


async def prepare(conn) -> None:
    """Per connection: the temporary staging table, and custom plans only: asyncpg prepares every
    statement, and PostgreSQL's generic plan for the batch statements (after 5 runs) is ~10x slower
    because it cannot see how many pairs an array holds."""
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    await conn.execute(_CREATE_STAGE)


async def write_batch(conn, group: str, rows: Sequence[tuple], next_offsets: dict[tuple[str, int], int],
                      dead_letters: dict[str, tuple[int, str]], timetable: TimetableCache) -> BatchResult:
    """Apply one batch and store the offsets, in one transaction. ``rows`` are staging rows without
    ``seq`` in offset order, de-duplicated on event_id; ``dead_letters`` is {topic: (count, last reason)}."""
    result = BatchResult(events=len(rows))
    async with conn.transaction():
        if rows:
            days = _days_around(rows)
            missing = timetable.missing(days)
            if missing:
                await materialise_days(conn, missing)
            await conn.copy_records_to_table(_STAGE_TABLE, records=[(i, *row) for i, row in enumerate(rows)],
                                             columns=STAGE_COLUMNS)
            folded = await conn.fetchrow(_FOLD_TRACKS)
            result.new = int(folded["new"])
            pairs = list(zip(folded["sessions"] or [], folded["people"] or []))
            result.pairs = len(pairs)
            result.changed = await recompute_attendance(conn, pairs)
        if dead_letters:
            topics = list(dead_letters)
            await conn.execute(_COUNT_DEAD_LETTERS, group, topics, [dead_letters[t][0] for t in topics],
                               [dead_letters[t][1] for t in topics])
        if next_offsets:
            keys = list(next_offsets)
            await conn.execute(_SAVE_OFFSETS, group, [k[0] for k in keys], [k[1] for k in keys],
                               [next_offsets[k] for k in keys])
    if rows:  # only once committed: a batch rolled back (PostgreSQL away at commit) made no sessions
        timetable.mark(_days_around(rows))
    return result


def _days_around(rows: Sequence[tuple]) -> list[dt.date]:
    """The dates the rows' frame times fall on, each +-1 day (a local date may be the UTC date +-1). Only
    those: two events far apart must not make sessions for every day between them."""
    days = set()
    for date in {row[6].date() for row in rows}:  # frame_time is column 6 of a row without seq
        for shift in (-1, 0, 1):
            with contextlib.suppress(OverflowError):  # 0001-01-01 / 9999-12-31 (the reader rejects those)
                days.add(date + dt.timedelta(days=shift))
    return sorted(days)


async def stored_offsets(conn, group: str, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    wanted = list(partitions)
    rows = await conn.fetch(
        """SELECT topic, partition, next_offset FROM consumer_offset
           WHERE consumer_group = $1 AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::int[]))""",
        group, [t for t, _ in wanted], [p for _, p in wanted])
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def forget_offset(conn, group: str, topic: str, partition: int, stored: int, log_end: int) -> None:
    """The broker's log of a partition ends before the offset stored for it (the log was lost, or the topic
    deleted and made again): forget the stored offset (the partition is read again from its beginning) and
    record that in ``audit_log``, in one transaction."""
    async with conn.transaction():
        await conn.execute("DELETE FROM consumer_offset WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
                           group, topic, partition)
        await conn.execute(
            "INSERT INTO audit_log (actor, action, subject, detail) VALUES ('attendance-writer', 'writer.log_lost', "
            "$1, $2::jsonb)", f"{topic}[{partition}]",
            json.dumps({"consumer_group": group, "stored_next_offset": stored, "log_end": log_end,
                        "policy": "read again from the beginning of the log"}))
