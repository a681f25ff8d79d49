-- Rollcall schema, version 3: the attendance writer (consumers/).
-- depends: 0002_review_and_gallery_notify
--
-- The writer turns presence and door-recognition events into attendance, exactly once: the raw event
-- log below doubles as the de-duplication ledger (event_id primary key), and the consumer's offsets
-- (consumer_offset, migration 0001) are written in the same transaction as everything here.

-- Per-session policy overrides, in seconds (NULL: the course's policy in minutes). A session opened by
-- hand or a one-off session may need its own rules (an exam, a short demo session).
ALTER TABLE class_session
    ADD COLUMN early_arrival_s integer CHECK (early_arrival_s >= 0),
    ADD COLUMN late_after_s    integer CHECK (late_after_s >= 0),
    ADD COLUMN present_min_s   integer CHECK (present_min_s >= 0),
    ADD COLUMN left_early_s    integer CHECK (left_early_s >= 0),
    ADD COLUMN note            text;

-- Raw sightings, kept for privacy.presence_event_retention_days (purged by `rollcall privacy purge`):
-- presence events of room tracks (kind enter/update/exit/identity) and door recognitions of known
-- people (kind 'recognition'). Only the fields attendance needs; boxes are not kept.
CREATE TABLE presence_event (
    event_id        uuid PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('enter', 'update', 'exit', 'identity', 'recognition')),
    room_id         text NOT NULL,
    camera_id       text NOT NULL,
    track_id        text NOT NULL,
    person_id       text,
    frame_time      timestamptz NOT NULL,
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    recognition_event_id uuid,               -- the door recognition a room track's identity came from
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX presence_event_frame_time_idx ON presence_event (frame_time);
CREATE INDEX presence_event_person_idx ON presence_event (person_id) WHERE person_id IS NOT NULL;

-- One row per track (room camera track, or a door face track) per session it was seen in: its extent
-- and current identity, folded from its events in offset order (a track's events share one partition):
-- first/last event, extent, the identity of its latest event, the first door recognition handed to it.
-- Any split of the event stream into batches gives the same rows.
CREATE TABLE presence_track (
    session_id      bigint NOT NULL REFERENCES class_session (id) ON DELETE CASCADE,
    camera_id       text NOT NULL,
    track_id        text NOT NULL,
    person_id       text,                      -- current identity (its latest event's); NULL: unknown
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    first_frame     timestamptz NOT NULL,
    first_event_id  uuid NOT NULL,
    last_frame      timestamptz NOT NULL,
    last_event_id   uuid NOT NULL,
    recognition_event_id uuid,
    PRIMARY KEY (session_id, camera_id, track_id)
);
CREATE INDEX presence_track_person_idx ON presence_track (session_id, person_id);
CREATE INDEX presence_track_person_only_idx ON presence_track (person_id);

-- Attendance changes waiting to be published on the attendance topic (transactional outbox: written
-- with the change, deleted once the broker acknowledged the event; delivery at least once).
CREATE TABLE attendance_outbox (
    id              bigserial PRIMARY KEY,
    event_id        uuid NOT NULL DEFAULT gen_random_uuid(),
    session_id      bigint NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Messages sent to the dead-letter topic, counted exactly once with the offsets.
CREATE TABLE consumer_dead_letter (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    count           bigint NOT NULL DEFAULT 0,
    last_reason     text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic)
);

CREATE INDEX class_session_state_idx ON class_session (state, ends_at);
CREATE INDEX attendance_session_idx ON attendance (session_id, status);
