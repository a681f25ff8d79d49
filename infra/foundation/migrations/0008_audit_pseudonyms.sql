-- Rollcall schema, version 8: no reversible hashes of erased people in the audit log.
-- depends: 0006_attendance_resolution
--
-- Erasures used to record an unsalted SHA-256 of the erased person's id ('subject_sha256'): anyone with
-- the database could re-identify a short id by hashing candidates. Erasures now record an HMAC-SHA256
-- under the site's pseudonym key (consumers/privacy.py, 'subject_hmac_sha256'). The old hashes cannot be
-- re-keyed without knowing the ids, so they are removed; the rows keep who erased, when, and the counts.

UPDATE audit_log
SET detail = (detail - 'subject_sha256') || '{"subject_sha256_removed": true}'::jsonb
WHERE action = 'person.erase' AND jsonb_exists(detail, 'subject_sha256');
