-- Rollcall schema, version 2: the face gallery announces its changes, and the unknown-face review queue.
-- depends: 0001_initial
--
-- Every INSERT/UPDATE/DELETE on face_enrolment (and erasing or pseudonymising a person) sends
-- NOTIFY rollcall_gallery with the model pack as payload; processors LISTEN and reload that pack's
-- gallery without a restart (processor.gallery.GalleryWatcher). PostgreSQL delivers notifications on
-- commit and folds identical ones of one transaction into one.

CREATE FUNCTION rollcall_gallery_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('rollcall_gallery', OLD.model_pack);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('rollcall_gallery', NEW.model_pack);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER face_enrolment_gallery_notify
    AFTER INSERT OR UPDATE OR DELETE ON face_enrolment
    FOR EACH ROW EXECUTE FUNCTION rollcall_gallery_notify();

-- Pseudonymising (or renaming the id of) a person changes which enrolments a gallery holds.
CREATE FUNCTION rollcall_gallery_notify_person() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pack text;
BEGIN
    FOR pack IN SELECT DISTINCT model_pack FROM face_enrolment WHERE person_id IN (OLD.id, NEW.id) LOOP
        PERFORM pg_notify('rollcall_gallery', pack);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER person_gallery_notify
    AFTER UPDATE OF pseudonymised_at, id ON person
    FOR EACH ROW
    WHEN (OLD.pseudonymised_at IS DISTINCT FROM NEW.pseudonymised_at OR OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION rollcall_gallery_notify_person();

-- Faces a door camera saw but could not identify, for an operator to accept (as a person, which may
-- enrol the embedding with source 'review') or reject. One row per face track: its best crop only, kept
-- until expires_at (privacy.review_crop_retention_days), then deleted by the retention job.
CREATE TABLE review_face (
    id              bigserial PRIMARY KEY,
    camera_id       text NOT NULL,             -- no foreign key: cameras come and go with the config
    track_id        text NOT NULL,             -- the face track on that camera
    event_id        text UNIQUE,               -- the recognition event that reported it unknown
    captured_at     timestamptz NOT NULL,      -- when the best crop was taken
    model_pack      text NOT NULL,
    embedding       real[] NOT NULL,           -- L2-normalised, of the best crop
    embedding_dim   integer NOT NULL CHECK (embedding_dim > 0),
    crop_jpeg       bytea,                     -- the aligned best crop only, never the frame
    quality         real,
    best_person_id  text REFERENCES person (id) ON DELETE SET NULL ON UPDATE CASCADE,  -- nearest, below threshold
    best_score      real,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    decided_by      text,
    decided_at      timestamptz,
    person_id       text REFERENCES person (id) ON DELETE SET NULL ON UPDATE CASCADE,  -- who it was, when accepted
    CHECK (cardinality(embedding) = embedding_dim),
    CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE INDEX review_face_pending_idx ON review_face (captured_at) WHERE status = 'pending';
CREATE INDEX review_face_camera_track_idx ON review_face (camera_id, track_id);
CREATE INDEX review_face_expiry_idx ON review_face (expires_at);
