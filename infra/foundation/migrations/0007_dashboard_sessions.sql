-- Rollcall schema, version 7: dashboard sessions kept on the server, so that they can be ended.
-- depends: 0004_dashboard_users
--
-- The session cookie (signed) carries a random session id; this table holds its SHA-256 only (a copy of
-- the table lets nobody log in). A request is let in only while its row exists, is not revoked and has
-- not expired: logging out revokes the row, a password change revokes every other session of the account,
-- and removing the account removes its sessions.

CREATE TABLE dashboard_session (
    id_sha256       bytea PRIMARY KEY CHECK (octet_length(id_sha256) = 32),
    username        text NOT NULL REFERENCES dashboard_user (username) ON DELETE CASCADE ON UPDATE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    client          text
);
CREATE INDEX dashboard_session_user_idx ON dashboard_session (username) WHERE revoked_at IS NULL;
CREATE INDEX dashboard_session_expiry_idx ON dashboard_session (expires_at);
