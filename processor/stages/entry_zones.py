"""A room camera's entry zones: which door's zone holds a person's feet, and which door a newcomer's
path leads back to (used by :class:`processor.stages.person_tracks.PersonTracker` for ``entered_via``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np
import supervision as sv

from processor.stages.person_track_parts import Box, foot


class EntryZones:
    """The doors' entry-zone polygons on one room camera (image pixels)."""

    def __init__(self, entry_zones: Mapping[str, Sequence[tuple[float, float]]], *,
                 door_reach_heights: float = 0.35, backdate_s: float = 1.5):
        self.door_reach_heights = float(door_reach_heights)
        self.backdate_s = float(backdate_s)
        self.polygons = {door: [tuple(map(float, point)) for point in poly] for door, poly in entry_zones.items()}
        self._contours = {door: np.asarray(poly, np.float32).reshape(-1, 1, 2) for door, poly in entry_zones.items()}
        self._zones = {door: sv.PolygonZone(np.round(np.asarray(poly, np.float64)).astype(np.int64),
                                            triggering_anchors=(sv.Position.BOTTOM_CENTER,))
                       for door, poly in entry_zones.items()}

    def zone_of(self, boxes: np.ndarray) -> list[str | None]:
        """The door whose entry zone holds each box's bottom centre (first match), else None."""
        result: list[str | None] = [None] * len(boxes)
        if not len(boxes) or not self._zones:
            return result
        dets = sv.Detections(xyxy=np.asarray(boxes, np.float32).reshape(-1, 4))
        for door, zone in self._zones.items():
            for i, hit in enumerate(zone.trigger(dets)):
                if hit and result[i] is None:
                    result[i] = door
        return result

    def door_behind(self, frame_times: Iterable[float], first_pts: float, first_box: Box, pts_s: float,
                    box: Box) -> tuple[str | None, float]:
        """The door whose entry zone the feet's path crosses when followed backwards from the first
        sighting for up to ``backdate_s`` (at the speed and heading from the first to this sighting), and
        the time they were last in it; (None, first_pts) when the path does not lead back to a door.
        ``frame_times`` are the stream times of the camera's last analysed frames."""
        if pts_s <= first_pts or not self._zones:
            return None, first_pts
        (x0, y0), (x1, y1) = foot(first_box), foot(box)
        vx, vy = (x1 - x0) / (pts_s - first_pts), (y1 - y0) / (pts_s - first_pts)
        height = max(1.0, first_box[3] - first_box[1])
        if np.hypot(vx, vy) < 0.2 * height:  # standing: the path says nothing about where they came from
            return None, first_pts
        # as far back as the analysis did not look (a walker crosses the zone in a second), at least backdate_s
        before = [t for t in frame_times if t < first_pts]
        reach_s = min(max(self.backdate_s, first_pts - before[-1] + 0.5 if before else 0.0), 2 * self.backdate_s)
        back = np.arange(1, int(reach_s * 10) + 1) / 10.0  # seconds before the first sighting
        near = self.door_reach_heights * height
        for seconds in back:
            x, y = x0 - vx * seconds, y0 - vy * seconds
            for door, contour in self._contours.items():
                # within reach of the zone: people turn from the doorway into the aisle, and two sightings
                # a second or more apart give a straight line that cuts the corner
                if cv2.pointPolygonTest(contour, (float(x), float(y)), True) >= -near:
                    return door, first_pts - float(seconds)
        return None, first_pts
