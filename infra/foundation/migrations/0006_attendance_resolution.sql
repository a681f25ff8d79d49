-- Rollcall schema, version 6: faculty resolve an 'unconfirmed' attendance record by hand.
-- depends: 0005_attendance_evidence
--
-- An 'unconfirmed' record (recognised at the room's door, too little presence in the room: migration 0005)
-- is a question for faculty. Their answer is kept beside the computed figures: the attendance rules go
-- on recomputing the evidence, and the record's status is the faculty's decision from then on (a human
-- decision is not undone by a later recomputation; it is written to audit_log).
ALTER TABLE attendance
    ADD COLUMN resolved_status text CHECK (resolved_status IN ('present', 'late', 'absent')),
    ADD COLUMN resolved_by     text,
    ADD COLUMN resolved_at     timestamptz,
    ADD CHECK ((resolved_status IS NULL) = (resolved_by IS NULL) AND (resolved_status IS NULL) = (resolved_at IS NULL));
