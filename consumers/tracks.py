"""A batch's new sightings folded into their tracks, in Python, and written with one statement.

Each sighting belongs to the session running in its room at its frame time (a session opened by hand
first, then the latest start, then the highest id): the sessions that can hold any of the batch's
sightings are read once (:func:`batch_sessions`) and matched here. Per (session, camera, track) the
sightings are folded in offset order (:func:`fold_tracks`): the identity of the latest one, the extent,
the first and the last sighting, the first door recognition handed to the track, whether it is a door
recognition, the identity a room-camera face last gave it. :data:`UPSERT_TRACKS_SQL` folds that into
``presence_track`` (a batch's sightings of a track always come after those applied before: one
partition, offset order) and returns the (session, person) pairs whose attendance is to be recomputed.

This was one SQL statement (a lateral session lookup and ordered aggregates per sighting); the same rules
in Python cost a microsecond a sighting, where PostgreSQL (the writer's bottleneck) spent about five.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

# The sessions of these rooms that can hold a sighting between $2 and $3, in the order a sighting picks
# among several: made by hand first, then the latest start, then the highest id. (ends_at >= $2 holds for
# every one of them, as open_until <= ends_at: it only spares reading a room's past sessions.)
_SESSIONS_SQL = """
SELECT room_id, id, open_from, open_until FROM (
    SELECT cs.id, cs.room_id, cs.slot_id, cs.starts_at,
           cs.starts_at - make_interval(secs => coalesce(cs.early_arrival_s, c.early_arrival_min * 60)) AS open_from,
           least(cs.ends_at, coalesce(cs.closed_at, cs.ends_at)) AS open_until
    FROM class_session cs JOIN course c ON c.id = cs.course_id
    WHERE cs.room_id = ANY($1::text[]) AND cs.state <> 'cancelled' AND cs.ends_at >= $2
) s
WHERE open_from <= $3 AND open_until >= $2
ORDER BY (slot_id IS NULL) DESC, starts_at DESC, id DESC
"""

UPSERT_TRACKS_SQL = """
WITH agg AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],
                         $7::timestamptz[], $8::uuid[], $9::timestamptz[], $10::uuid[], $11::uuid[], $12::text[],
                         $13::text[])
        AS a (session_id, camera_id, track_id, person_id, first_seen, last_seen, first_frame, first_event_id,
              last_frame, last_event_id, recognition_event_id, source, face_person_id)
), old AS (
    SELECT t.session_id, t.person_id FROM presence_track t JOIN agg a USING (session_id, camera_id, track_id)
), folded AS (
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
SELECT array_agg(session_id) AS sessions, array_agg(person_id) AS people
FROM (SELECT session_id, person_id FROM old WHERE person_id IS NOT NULL
      UNION
      SELECT session_id, person_id FROM folded WHERE person_id IS NOT NULL) AS touched
"""

# Staging rows (STAGE_COLUMNS without seq): where the fields the fold reads are.
_EVENT_ID, _KIND, _ROOM, _CAMERA, _TRACK, _PERSON, _FRAME, _FIRST, _LAST, _RECOGNITION, _SOURCE = range(11)

Sessions = dict[str, list[tuple[int, dt.datetime, dt.datetime]]]  # room -> [(id, open_from, open_until)], in order


async def batch_sessions(conn, rows: Sequence[tuple]) -> Sessions:
    """The sessions any of ``rows`` can belong to, per room, in the order a sighting picks among them."""
    rooms = sorted({row[_ROOM] for row in rows})
    frames = [row[_FRAME] for row in rows]
    found = await conn.fetch(_SESSIONS_SQL, rooms, min(frames), max(frames))
    sessions: Sessions = {}
    for room_id, session_id, open_from, open_until in found:
        sessions.setdefault(room_id, []).append((session_id, open_from, open_until))
    return sessions


def fold_tracks(rows: Sequence[tuple], sessions: Sessions) -> list[list]:
    """Fold ``rows`` (new sightings, offset order) into one row per (session, camera, track), each the
    columns of :data:`UPSERT_TRACKS_SQL`'s ``agg`` in order; a sighting in no session is in no track."""
    tracks: dict[tuple, list] = {}
    for row in rows:
        frame_time = row[_FRAME]
        session_id = None
        for candidate, open_from, open_until in sessions.get(row[_ROOM], ()):
            if open_from <= frame_time <= open_until:
                session_id = candidate
                break
        if session_id is None:
            continue
        key = (session_id, row[_CAMERA], row[_TRACK])
        person_id, event_id = row[_PERSON], row[_EVENT_ID]
        track = tracks.get(key)
        if track is None:
            tracks[key] = [session_id, row[_CAMERA], row[_TRACK], person_id, row[_FIRST], row[_LAST], frame_time,
                           event_id, frame_time, event_id, row[_RECOGNITION],
                           "door" if row[_KIND] == "recognition" else "room",
                           person_id if row[_SOURCE] == "face" else None]
            continue
        track[3] = person_id  # the identity of the latest sighting
        if row[_FIRST] < track[4]:
            track[4] = row[_FIRST]
        if row[_LAST] > track[5]:
            track[5] = row[_LAST]
        track[8], track[9] = frame_time, event_id
        if track[10] is None:  # the first door recognition handed to the track
            track[10] = row[_RECOGNITION]
        if row[_KIND] == "recognition":
            track[11] = "door"
        if row[_SOURCE] == "face":  # the identity a face last gave it (None: an unknown face)
            track[12] = person_id
    return list(tracks.values())


async def upsert_tracks(conn, tracks: list[list]) -> list[tuple[int, str]]:
    """Fold ``tracks`` into ``presence_track``; the (session, person) pairs touched (a corrected track's
    old identity too)."""
    if not tracks:
        return []
    columns = list(zip(*tracks))
    touched = await conn.fetchrow(UPSERT_TRACKS_SQL, *columns)
    return list(zip(touched["sessions"] or [], touched["people"] or []))
