-- Rollcall schema, version 1: people and their face enrolments, the campus topology (rooms, cameras,
-- doors), courses with rosters and policies, the timetable and its sessions, attendance, the
-- consumers' offsets (stored with results, for exactly-once), and an audit log.
-- Applied by `rollcall db migrate` (yoyo-migrations records it in _yoyo_migration).

CREATE TABLE person (
    id              text PRIMARY KEY,
    display_name    text NOT NULL,
    kind            text NOT NULL DEFAULT 'student'
                    CHECK (kind IN ('student', 'faculty', 'staff', 'other')),
    external_ref    text,                      -- the campus directory's id, when there is one
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    pseudonymised_at timestamptz               -- set when erased but attendance kept by policy
);

-- Biometric data: embeddings, not photos (photo only when privacy.keep_enrolment_photos is on).
CREATE TABLE face_enrolment (
    id              bigserial PRIMARY KEY,
    person_id       text NOT NULL REFERENCES person (id) ON DELETE CASCADE ON UPDATE CASCADE,
    model_pack      text NOT NULL,             -- embeddings are only comparable within one pack
    embedding       real[] NOT NULL,           -- L2-normalised
    embedding_dim   integer NOT NULL CHECK (embedding_dim > 0),
    quality         real,
    source          text NOT NULL DEFAULT 'cli' CHECK (source IN ('cli', 'dashboard', 'review', 'import')),
    photo_sha256    text,                      -- which photo it came from, without keeping the photo
    photo           bytea,
    consent_at      timestamptz NOT NULL,      -- no consent, no enrolment
    consent_by      text,
    consent_note    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    CHECK (cardinality(embedding) = embedding_dim),
    CHECK (expires_at IS NULL OR expires_at > created_at)
);
CREATE INDEX face_enrolment_pack_idx ON face_enrolment (model_pack);
CREATE INDEX face_enrolment_person_idx ON face_enrolment (person_id);
CREATE INDEX face_enrolment_expiry_idx ON face_enrolment (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE room (
    id              text PRIMARY KEY,
    name            text NOT NULL DEFAULT '',
    capacity        integer CHECK (capacity IS NULL OR capacity > 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE camera (
    id              text PRIMARY KEY,
    name            text NOT NULL DEFAULT '',
    role            text NOT NULL CHECK (role IN ('door', 'room')),
    room_id         text NOT NULL REFERENCES room (id) ON UPDATE CASCADE,
    url             text NOT NULL,
    analysis_fps    real NOT NULL CHECK (analysis_fps > 0),
    enabled         boolean NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE door (
    id              text PRIMARY KEY,
    room_id         text NOT NULL REFERENCES room (id) ON UPDATE CASCADE,
    door_camera_id  text NOT NULL REFERENCES camera (id) ON UPDATE CASCADE,
    room_camera_id  text NOT NULL REFERENCES camera (id) ON UPDATE CASCADE,
    entry_zone      jsonb NOT NULL,            -- [[x, y], ...] on the room camera's image, pixels
    transit_min_s   real NOT NULL CHECK (transit_min_s >= 0),
    transit_max_s   real NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (transit_max_s > transit_min_s),
    CHECK (jsonb_typeof(entry_zone) = 'array' AND jsonb_array_length(entry_zone) >= 3)
);

CREATE TABLE course (
    id                  text PRIMARY KEY,
    name                text NOT NULL DEFAULT '',
    early_arrival_min   integer NOT NULL DEFAULT 15 CHECK (early_arrival_min >= 0),
    late_after_min      integer NOT NULL DEFAULT 10 CHECK (late_after_min >= 0),
    present_min_minutes integer NOT NULL DEFAULT 20 CHECK (present_min_minutes >= 0),
    left_early_min      integer NOT NULL DEFAULT 10 CHECK (left_early_min >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE course_member (
    course_id       text NOT NULL REFERENCES course (id) ON DELETE CASCADE ON UPDATE CASCADE,
    person_id       text NOT NULL REFERENCES person (id) ON DELETE CASCADE ON UPDATE CASCADE,
    role            text NOT NULL DEFAULT 'student' CHECK (role IN ('student', 'faculty')),
    PRIMARY KEY (course_id, person_id)
);
CREATE INDEX course_member_person_idx ON course_member (person_id);

-- Weekly recurring slots (weekday) or one-off sessions (on_date), in the site's time zone.
CREATE TABLE timetable_slot (
    id              bigserial PRIMARY KEY,
    course_id       text NOT NULL REFERENCES course (id) ON DELETE CASCADE ON UPDATE CASCADE,
    room_id         text NOT NULL REFERENCES room (id) ON UPDATE CASCADE,
    weekday         smallint CHECK (weekday BETWEEN 1 AND 7),   -- ISO: 1 = Monday
    on_date         date,
    start_time      time NOT NULL,
    end_time        time NOT NULL,
    timezone        text NOT NULL,
    valid_from      date,
    valid_until     date,
    CHECK ((weekday IS NULL) <> (on_date IS NULL)),
    CHECK (end_time > start_time)
);
CREATE UNIQUE INDEX timetable_slot_unique_idx
    ON timetable_slot (course_id, room_id, coalesce(weekday, 0), coalesce(on_date, 'epoch'::date), start_time);

-- A concrete occurrence of a slot (or a session opened by hand), with its own open/close state.
CREATE TABLE class_session (
    id              bigserial PRIMARY KEY,
    course_id       text NOT NULL REFERENCES course (id) ON DELETE CASCADE ON UPDATE CASCADE,
    room_id         text NOT NULL REFERENCES room (id) ON UPDATE CASCADE,
    slot_id         bigint REFERENCES timetable_slot (id) ON DELETE SET NULL,
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    state           text NOT NULL DEFAULT 'scheduled'
                    CHECK (state IN ('scheduled', 'open', 'closed', 'cancelled')),
    opened_at       timestamptz,
    opened_by       text,
    closed_at       timestamptz,
    closed_by       text,
    CHECK (ends_at > starts_at),
    UNIQUE (room_id, starts_at)
);
CREATE INDEX class_session_room_time_idx ON class_session (room_id, starts_at, ends_at);

CREATE TABLE attendance (
    session_id      bigint NOT NULL REFERENCES class_session (id) ON DELETE CASCADE,
    person_id       text NOT NULL REFERENCES person (id) ON DELETE CASCADE ON UPDATE CASCADE,
    status          text NOT NULL CHECK (status IN ('present', 'late', 'left_early', 'absent')),
    first_seen      timestamptz,
    last_seen       timestamptz,
    presence_s      double precision NOT NULL DEFAULT 0 CHECK (presence_s >= 0),
    evidence_event_ids text[] NOT NULL DEFAULT '{}',   -- the events that prove it
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, person_id)
);
CREATE INDEX attendance_person_idx ON attendance (person_id);

-- Kafka offsets committed in the same transaction as the results they produced (exactly-once
-- without Kafka transactions): on assignment a consumer seeks to next_offset.
CREATE TABLE consumer_offset (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL CHECK (partition >= 0),
    next_offset     bigint NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

CREATE TABLE audit_log (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    actor           text NOT NULL,
    action          text NOT NULL,
    subject         text,
    detail          jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_subject_idx ON audit_log (subject, at);
