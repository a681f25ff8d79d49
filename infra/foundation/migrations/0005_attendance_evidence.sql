-- Rollcall schema, version 5: the evidence behind each attendance row, and the door-only policy.
-- depends: 0003_attendance_writer
--
-- Someone recognised at a room's door during a session must not end up 'absent' only because the room
-- camera lost them. An attendance row now says what evidence it stands on (door recognitions, room tracks
-- and their duration, a face seen by the room camera), and the course's door_only policy says what a
-- person recognised at the door with too little room presence gets once the session closes:
--   'unconfirmed' (default): a status of its own, for faculty to resolve; it does not count as attended
--                            (a student who is recognised at the door and turns back is not marked present);
--   'present':               door evidence alone makes the person present (or late, by arrival time);
--   'absent':                the rule before this migration.

ALTER TABLE course
    ADD COLUMN door_only text NOT NULL DEFAULT 'unconfirmed' CHECK (door_only IN ('present', 'unconfirmed', 'absent'));

-- Where a room track's identity came from (presence.v1 identity_source); NULL for door recognitions.
ALTER TABLE presence_event ADD COLUMN identity_source text;

-- source: 'door' for a door recognition (zero-length sighting at the door), 'room' for a room camera track.
-- face_person_id: the identity a face seen by the room camera last gave the track (identity_source 'face').
ALTER TABLE presence_track
    ADD COLUMN source text NOT NULL DEFAULT 'room' CHECK (source IN ('door', 'room')),
    ADD COLUMN face_person_id text;
UPDATE presence_track t SET source = 'door'
WHERE EXISTS (SELECT 1 FROM presence_event e WHERE e.kind = 'recognition' AND e.camera_id = t.camera_id
                                               AND e.track_id = t.track_id)
   OR EXISTS (SELECT 1 FROM camera c WHERE c.id = t.camera_id AND c.role = 'door');

-- The evidence of a row (within the session's window): door recognitions (door face tracks) and the
-- first of them, room tracks, and whether a room face confirmed the person. Room presence in seconds is
-- presence_s, as before.
ALTER TABLE attendance DROP CONSTRAINT attendance_status_check;
ALTER TABLE attendance
    ADD CONSTRAINT attendance_status_check
        CHECK (status IN ('present', 'late', 'left_early', 'absent', 'unconfirmed')),
    ADD COLUMN door_recognitions integer NOT NULL DEFAULT 0 CHECK (door_recognitions >= 0),
    ADD COLUMN first_door_at     timestamptz,
    ADD COLUMN room_tracks       integer NOT NULL DEFAULT 0 CHECK (room_tracks >= 0),
    ADD COLUMN room_face         boolean NOT NULL DEFAULT false;

-- Rows written before: their door and room evidence from the tracks kept (statuses are left as they were).
UPDATE attendance a
SET door_recognitions = ev.door_n, first_door_at = ev.first_door, room_tracks = ev.room_n
FROM (
    SELECT t.session_id, t.person_id,
           count(*) FILTER (WHERE t.source = 'door') AS door_n,
           min(greatest(t.first_seen, w.open_from)) FILTER (WHERE t.source = 'door') AS first_door,
           count(*) FILTER (WHERE t.source = 'room') AS room_n
    FROM presence_track t
    JOIN (SELECT cs.id AS session_id,
                 cs.starts_at - make_interval(secs => coalesce(cs.early_arrival_s, c.early_arrival_min * 60)) AS open_from,
                 least(cs.ends_at, coalesce(cs.closed_at, cs.ends_at)) AS open_until
          FROM class_session cs JOIN course c ON c.id = cs.course_id) w USING (session_id)
    WHERE t.person_id IS NOT NULL
      AND least(t.last_seen, w.open_until) >= greatest(t.first_seen, w.open_from)
    GROUP BY t.session_id, t.person_id
) ev
WHERE a.session_id = ev.session_id AND a.person_id = ev.person_id;
