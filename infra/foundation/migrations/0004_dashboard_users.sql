-- Rollcall schema, version 4: dashboard accounts.
-- depends: 0002_review_and_gallery_notify
--
-- One row per person who logs in to the dashboard (dashboard/auth.py). role: 'admin' sees and does
-- everything; 'faculty' sees the courses the configuration lists them as faculty of (and those
-- courses' rooms and cameras); 'student' sees only their own attendance. Faculty and students are
-- people (person_id): erasing the person removes the account. Passwords are argon2id hashes only.

CREATE TABLE dashboard_user (
    username        text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$'),
    password_hash   text NOT NULL CHECK (password_hash LIKE '$argon2%'),
    role            text NOT NULL CHECK (role IN ('admin', 'faculty', 'student')),
    person_id       text REFERENCES person (id) ON DELETE CASCADE ON UPDATE CASCADE,
    disabled        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text,
    last_login_at   timestamptz,
    CHECK (role = 'admin' OR person_id IS NOT NULL)
);
CREATE INDEX dashboard_user_person_idx ON dashboard_user (person_id);
