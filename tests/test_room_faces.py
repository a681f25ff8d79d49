"""Faces seen by a room camera confirm or correct a track's identity: real models on real photographs
(a different photo than the enrolment one), the room stage's real logic, real event schemas."""

from __future__ import annotations

import asyncio
import time

import cv2
import numpy as np
import pytest

from infra.foundation.paths import PROJECT_ROOT
from infra.foundation.config import EXAMPLE_CONFIG, load_config
from schemas.events import validate
from processor.frames import Frame
from processor.gallery import Gallery
from processor.stages.persons import PersonDetection
from processor.stages.recognition_feed import DoorRecognition
from processor.stages.room import RoomStage
from processor.stages.room_gating import PersonStage
from processor.stages.faces import FaceAnalyzer

PHOTOS = PROJECT_ROOT / "infra" / "scenarios" / "photos"
FPS = 5.0
BOX = (100.0, 20.0, 240.0, 420.0)  # a person standing with their feet in the example door's entry zone


class _NoPersons:
    """The person boxes are given (this test is about faces); faces come from the real face models."""

    def detect(self, images):
        return [[] for _ in images]


@pytest.fixture(scope="module")
def analyzer():

    for name in ("macron_2014.jpg", "macron_2025.jpg", "ardern_2018.jpg"):
        if not (PHOTOS / name).exists():
            pytest.fail(f"{PHOTOS / name} is missing: `make setup` (rollcall models fetch open) fetches it")
    return FaceAnalyzer("open")


@pytest.fixture(scope="module")
def gallery(analyzer):
    embeddings = []
    for name in ("macron_2014.jpg", "ardern_2018.jpg"):
        faces = analyzer.analyse([cv2.imread(str(PHOTOS / name))])[0]
        assert len(faces) == 1 and faces[0].embedding is not None, name
        embeddings.append(faces[0].embedding)
    return Gallery("open", ["macron", "ardern"], np.stack(embeddings), threshold=0.40, margin=0.08)


def _frame_with_face(photo: np.ndarray | None) -> np.ndarray:
    canvas = np.full((720, 1280, 3), 90, np.uint8)
    if photo is not None:
        x1, y1, x2 = int(BOX[0]), int(BOX[1]), int(BOX[2])
        h = int(photo.shape[0] * (x2 - x1) / photo.shape[1])
        canvas[y1:y1 + h, x1:x2] = cv2.resize(photo, (x2 - x1, h), interpolation=cv2.INTER_AREA)
    return canvas


def _run(stage: RoomStage, analyzer, face_from_s: float, seconds: float, base: float) -> list[dict]:
    published: list[dict] = []
    stage.publish = lambda topic, key, event, **_: published.append(event) or True
    persons = PersonStage(_NoPersons(), faces=analyzer)
    photo = cv2.imread(str(PHOTOS / "macron_2025.jpg"))  # not the enrolment photo
    for n in range(int(seconds * FPS)):
        t = n / FPS
        image = _frame_with_face(photo if t >= face_from_s else None)
        ((frame, _, faces),) = persons.process([Frame("room-a101", n, t, base + t, image)])
        stage.handle([(frame, [PersonDetection(BOX, 0.9, 0)], faces)])
    for event in published:
        validate(event, unpublished=True)
    return published


def _stage(gallery) -> RoomStage:
    return RoomStage(load_config(EXAMPLE_CONFIG, environ={}), publish=lambda *a, **k: True, topic="presence",
                     recognitions=asyncio.Queue(), gallery=lambda: gallery)


def test_room_face_corrects_a_wrong_handoff(analyzer, gallery):
    stage = _stage(gallery)
    base = time.time() - 120.0
    # The door said Ardern (a wrong recognition, or Ardern's handoff went to the wrong track) ...
    stage.recognitions.put_nowait(DoorRecognition("door-a101", "ardern", "00000000-0000-4000-8000-00000000000a",
                                                  door_time=base - 6.5))
    # ... and from 7 s on the room camera sees this track's face: Macron.
    events = _run(stage, analyzer, face_from_s=7.0, seconds=10.0, base=base)
    identity = [(e["person_id"], e["identity_source"], e["previous_person_id"]) for e in events if e["kind"] == "identity"]
    assert identity == [("ardern", "handoff", None), ("macron", "face", "ardern")], identity
    assert events[-1]["person_id"] == "macron" and events[-1]["identity_source"] == "face"
    assert stage.matcher.live_tracks("room-a101") == {events[-1]["track_id"]: "macron"}


def test_room_face_names_an_unknown_track_and_outranks_a_later_handoff(analyzer, gallery):
    stage = _stage(gallery)
    base = time.time() - 120.0  # no recognition at the door: the handoff will say nobody
    events = _run(stage, analyzer, face_from_s=0.0, seconds=6.0, base=base)
    kinds = [(e["kind"], e["person_id"], e["identity_source"]) for e in events]
    assert kinds[0] == ("enter", None, "none")
    assert ("identity", "macron", "face") in kinds
    assert kinds[-1][1:] == ("macron", "face"), kinds  # the handoff decided later ("no recognition") changes nothing


def test_room_face_of_nobody_enrolled_changes_nothing(analyzer):
    only_ardern = Gallery("open", ["ardern"], analyzer.analyse([cv2.imread(str(PHOTOS / "ardern_2018.jpg"))])[0][0]
                          .embedding[None, :], threshold=0.40, margin=0.08)
    stage = _stage(only_ardern)
    events = _run(stage, analyzer, face_from_s=0.0, seconds=4.0, base=time.time() - 120.0)
    assert all(e["person_id"] is None and e["identity_source"] == "none" for e in events), events
