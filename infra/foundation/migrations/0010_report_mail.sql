-- Rollcall schema, version 10: e-mail reports.
-- depends: 0009_camera_slots
--
-- A person's e-mail address (where the weekly course reports and absence notices go: consumers/reports.py),
-- set with their dashboard account. report_sent holds every report sent, one row per (kind, period,
-- subject, recipient): a report is claimed by inserting its row before it is sent (several writers run the
-- schedule; the one whose insert lands sends it) and the row is deleted again when sending fails, so the
-- next round retries it.

ALTER TABLE person ADD COLUMN email text CHECK (email IS NULL OR email ~ '^[^@\s]+@[^@\s]+$');

CREATE TABLE report_sent (
    kind            text NOT NULL CHECK (kind IN ('weekly', 'absences')),
    period          text NOT NULL,          -- the ISO week reported on, e.g. 2026-W49
    subject         text NOT NULL,          -- the course (weekly) or course/person (absences)
    recipient       text NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, period, subject, recipient)
);
