"""A room camera learns how big a face its people can show: frames where nobody is tall enough for a face
that would pass the quality gate are not searched (they cannot change an identity), with a look every
``recheck_s`` so the bound keeps learning. Pure logic; the measured figures are in the module docstring."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from processor.frames import Frame
from processor.stages.persons import PersonDetection
from processor.stages.room_face_sizes import FaceSizeBound
from processor.stages.room_gating import PersonStage

SEATED = (100.0, 300.0, 180.0, 550.0)  # 250 px high
CLOSE = (600.0, 100.0, 760.0, 560.0)  # 460 px high: somebody near the camera


def _face_in(box, size):
    cx, top = (box[0] + box[2]) / 2, box[1] + 5
    return (cx - size / 2, top, cx + size / 2, top + size)


def test_every_frame_is_searched_until_the_camera_has_shown_enough_faces():
    bound = FaceSizeBound(40, min_samples=30, recheck_s=10.0)
    for n in range(29):
        assert bound.worth_searching(n * 0.2, [SEATED])
        bound.searched(n * 0.2, [SEATED], [_face_in(SEATED, 20)])  # faces 0.08 of the person's height
    assert bound.bound is None and bound.worth_searching(5.8, [SEATED])


def test_frames_of_people_too_small_for_a_usable_face_are_skipped_but_looked_at_again_in_time():
    bound = FaceSizeBound(40, min_samples=30, recheck_s=10.0)
    pts = 0.0
    for n in range(40):
        pts = n * 0.2
        bound.searched(pts, [SEATED, CLOSE], [_face_in(SEATED, 20), _face_in(CLOSE, 37)])
    assert 0.08 * 1.5 <= bound.bound <= 0.081 * 1.5  # the 99th percentile of what it saw, with a margin
    assert not bound.worth_searching(pts + 0.2, [SEATED])  # 250 px x 0.12: a face of at most 30 px
    assert bound.worth_searching(pts + 0.4, [SEATED, CLOSE])  # 460 px x 0.12: 55 px may pass the gate
    assert not bound.worth_searching(pts + 9.0, [SEATED]) and bound.skipped == 2
    assert bound.worth_searching(pts + 10.0, [SEATED])  # 10 s since the last search: look anyway
    assert bound.worth_searching(1.0, [SEATED])  # the stream restarted (its time went back)
    assert not bound.worth_searching(pts + 1.0, [])  # nobody in view: nobody's face


def test_a_face_belongs_to_the_smallest_box_holding_it_and_faces_outside_boxes_teach_nothing():
    bound = FaceSizeBound(40, min_samples=1, recheck_s=10.0)
    front = (110.0, 310.0, 170.0, 450.0)  # 140 px: in front of (inside) the seated person's box
    bound.searched(0.0, [SEATED, front], [_face_in(front, 28)])
    assert abs(bound.bound - 28 / 140 * 1.5) < 1e-9  # 0.2 of the nearer person, not 0.11 of the one behind
    bound.searched(0.2, [SEATED], [(900.0, 50.0, 990.0, 140.0)])  # a face on a poster, in nobody's box
    assert abs(bound.bound - 28 / 140 * 1.5) < 1e-9


class _Persons:
    def __init__(self):
        self.boxes = [SEATED]

    def detect(self, images, sides=None):
        return [[PersonDetection(box, 0.9, 0) for box in self.boxes] for _ in images]


class _Faces:
    """A face of 0.08 of each person's height in each person box (the room scenarios' far faces)."""

    thresholds = SimpleNamespace(min_face_px=40)

    def __init__(self, persons: _Persons):
        self.persons, self.searched = persons, 0

    def analyse(self, images):
        self.searched += len(images)
        faces = [SimpleNamespace(detection=SimpleNamespace(box=_face_in(b, 0.08 * (b[3] - b[1]))), embedding=None,
                                 quality=SimpleNamespace(score=0.0)) for b in self.persons.boxes]
        return [faces for _ in images]


def test_the_person_stage_stops_searching_a_room_of_far_faces_until_somebody_comes_close():
    persons = _Persons()
    faces = _Faces(persons)
    stage = PersonStage(persons, faces=faces)
    image = np.zeros((720, 1280, 3), np.uint8)
    for n in range(40):
        stage.process([Frame("room", n, n * 0.2, 1000.0 + n * 0.2, image)])
    assert faces.searched == 30 and stage.faces_skipped == 10  # learnt from 30 faces, then skipped
    persons.boxes = [SEATED, CLOSE]  # 460 px: a face of 0.08 x 1.5 of it may pass the gate
    stage.process([Frame("room", 40, 8.0, 1008.0, image)])
    assert faces.searched == 31
