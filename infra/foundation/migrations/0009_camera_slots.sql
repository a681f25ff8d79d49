-- Rollcall schema, version 9: cameras spread over a group of processors.
-- depends: 0007_dashboard_sessions 0008_audit_pseudonyms
--
-- A processor group (`rollcall run --group`) assigns cameras to its members through the partitions of a
-- control topic: camera slot N is partition N. A camera keeps its slot for life (allocated on first sight by
-- a member, the least used slot), so the group's sticky assignment keeps it where it runs. Several cameras
-- share a slot only when there are more cameras than slots. min_tracking_fps is the camera's own minimum
-- tracking rate (room cameras; NULL: the site default), so the table describes a camera completely.

ALTER TABLE camera ADD COLUMN slot integer CHECK (slot >= 0);
ALTER TABLE camera ADD COLUMN min_tracking_fps real CHECK (min_tracking_fps > 0);
CREATE INDEX camera_slot ON camera (slot);
