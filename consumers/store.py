"""The writer's database work for one batch, set-based, in one transaction with the consumer offsets.

Per batch: one COPY of the batch's sightings straight into ``presence_event`` (its ``event_id`` key is the
de-duplication ledger); the sessions the sightings can belong to, read once; the new sightings folded into
their tracks in Python and written with one statement that returns the (session, person) pairs touched
(:mod:`consumers.tracks`); one recompute of those pairs' attendance (:data:`consumers.sessions.RECOMPUTE_SQL`);
the offsets. Nothing per event.

A batch holding an event stored before (a redelivery, a producer's retry, or another writer storing it at
the same time) makes the COPY fail on the ledger's key: the transaction is rolled back and the batch is
written again through a temporary staging table whose rows are inserted with ``ON CONFLICT DO NOTHING``;
only the events new to the ledger go further. A redelivered or duplicated event changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import asyncpg

from consumers.records import STAGE_COLUMNS
from consumers.sessions import materialise_days, recompute_attendance
from consumers.tracks import batch_sessions, fold_tracks, upsert_tracks

log = logging.getLogger("rollcall.writer")

_EVENT_COLUMNS = STAGE_COLUMNS[1:]  # presence_event's columns (its received_at is its default)
_LEDGER_KEY = "presence_event_pkey"

_STAGE_TABLE = "writer_stage"
_CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE_TABLE} (
    seq integer NOT NULL, event_id uuid NOT NULL, kind text NOT NULL, room_id text NOT NULL, camera_id text NOT NULL,
    track_id text NOT NULL, person_id text, frame_time timestamptz NOT NULL, first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL, recognition_event_id uuid, identity_source text, topic text NOT NULL,
    kafka_partition integer NOT NULL, kafka_offset bigint NOT NULL
) ON COMMIT DELETE ROWS
"""

# The staged events new to the ledger (the first of several with one event_id), by their place in the batch.
_INSERT_NEW = f"""
WITH inserted AS (
    INSERT INTO presence_event ({", ".join(_EVENT_COLUMNS)})
    SELECT {", ".join(_EVENT_COLUMNS)} FROM {_STAGE_TABLE} ORDER BY seq
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
SELECT DISTINCT ON (st.event_id) st.seq FROM {_STAGE_TABLE} st JOIN inserted USING (event_id) ORDER BY st.event_id, st.seq
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
    try:
        return await _write(conn, group, rows, next_offsets, dead_letters, timetable, stored_before=False)
    except asyncpg.UniqueViolationError as exc:
        if getattr(exc, "constraint_name", None) != _LEDGER_KEY:
            raise
        log.debug("a batch of %d events holds events stored before: writing the new ones", len(rows))
        return await _write(conn, group, rows, next_offsets, dead_letters, timetable, stored_before=True)


async def _write(conn, group: str, rows: Sequence[tuple], next_offsets: dict[tuple[str, int], int],
                 dead_letters: dict[str, tuple[int, str]], timetable: TimetableCache, *,
                 stored_before: bool) -> BatchResult:
    """:func:`write_batch`; ``stored_before``: some of ``rows`` may be in the ledger already (only the new
    ones are inserted and folded), else they are COPYed straight in (and any one stored before fails it)."""
    result = BatchResult(events=len(rows))
    async with conn.transaction():
        if rows:
            days = _days_around(rows)
            missing = timetable.missing(days)
            if missing:
                await materialise_days(conn, missing)
            new = await _insert_new(conn, rows) if stored_before else rows
            if not stored_before:
                await conn.copy_records_to_table("presence_event", records=rows, columns=_EVENT_COLUMNS)
            result.new = len(new)
            pairs = await upsert_tracks(conn, fold_tracks(new, await batch_sessions(conn, new))) if new else []
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


async def _insert_new(conn, rows: Sequence[tuple]) -> list[tuple]:
    """Insert the rows not in the ledger yet (through the staging table); those rows, in batch order."""
    await conn.copy_records_to_table(_STAGE_TABLE, records=[(i, *row) for i, row in enumerate(rows)],
                                     columns=STAGE_COLUMNS)
    seqs = sorted(r["seq"] for r in await conn.fetch(_INSERT_NEW))
    return [rows[i] for i in seqs]


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
