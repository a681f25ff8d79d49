-- Rollcall schema, version 11: suspected spoofs in the review queue.
-- depends: 0010_report_mail
--
-- A door face track whose liveness check found a picture of a face (a printed photo, a phone screen:
-- processor/stages/liveness.py) gives nobody's identity; it goes to the review queue like an unknown face,
-- marked: liveness 'suspect', its score, and in best_person_id whom the picture matched (who was being
-- passed off as present). NULL: no liveness check ran (older rows, or the check is off).

ALTER TABLE review_face ADD COLUMN liveness text CHECK (liveness IN ('live', 'suspect'));
ALTER TABLE review_face ADD COLUMN liveness_score real CHECK (liveness_score BETWEEN 0 AND 1);
