"""A door whose faces in view are all recognised is glanced at first (processor/stages/door_faces.py): on the
real open pack and real portraits placed in camera-sized frames, decoded pictures as PyAV hands them over.
The glance finds the faces the full side finds, in the full frame's pixels, without converting the frame
or giving a crop to embed; a door with a face still undecided, or with nobody there (an arrival's first,
far looks), is detected at the full side, and so is a glanced frame that shows more faces than the door's
last frame did; a face on no decided track in a glanced frame makes the door recognising, so its next
frame is at the full side."""

from __future__ import annotations

import asyncio

import av
import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from infra.foundation.config import ThresholdsConfig, load_config
from infra.foundation.config_model import SchedulingConfig
from processor import model_fetch
from processor import model_packs as mp
from processor.frames import Frame
from processor.model_catalogue import PHOTOS_DIR
from processor.pipeline import RecognitionStage
from processor.scheduler import Scheduler
from processor.service import glance_detector
from processor.stages.door_faces import FaceStage
from processor.stages.faces import FaceDetector

RECOGNISED, RECOGNISING, EMPTY = "door-recognised", "door-recognising", "door-empty"


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    model_fetch.fetch_pack("open")
    return FaceDetector(mp.load_pack("open"), input_size=None)


def _door_frame(name: str, x: int, height: int = 220) -> np.ndarray:
    """A 1280x720 grey wall with the portrait pasted at x: a face ~80-110 px wide, as at a door."""
    photo = cv2.imread(str(PHOTOS_DIR / name))
    frame = np.full((720, 1280, 3), 90, np.uint8)
    s = height / photo.shape[0]
    small = cv2.resize(photo, (round(photo.shape[1] * s), height), interpolation=cv2.INTER_AREA)
    frame[200:200 + small.shape[0], x:x + small.shape[1]] = small
    return frame


def _decoded(camera_id: str, seq: int, image: np.ndarray) -> Frame:
    """A frame as ingest hands it over: a decoded YUV picture, not converted yet."""
    picture = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
    return Frame(camera_id, seq, seq / 10, 0.0, decoded=picture)


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def _scheduler() -> Scheduler:
    scheduler = Scheduler()
    for camera_id in (RECOGNISED, RECOGNISING, EMPTY):
        scheduler.register(camera_id, "door", 5.0, idle=2.0)
    scheduler.set_active(RECOGNISED, False, faces=1)  # one face in view, decided
    scheduler.set_active(RECOGNISING, True)  # a face not decided yet in view
    return scheduler


def _stage(detector: FaceDetector, scheduler: Scheduler | None) -> FaceStage:
    config = load_config(None)
    stage = FaceStage(detector, ThresholdsConfig(), glance=glance_detector(detector, config))
    stage.scheduler = scheduler
    return stage


def test_a_settled_doors_frame_is_glanced_at_without_converting_it_unless_somebody_arrived(detector):
    stage = _stage(detector, _scheduler())
    assert stage.glance is not None and stage.glance.max_side == 448
    images = [_door_frame("obama_senate.jpg", 300), _door_frame("ardern_2018.jpg", 700),
              _door_frame("macron_2014.jpg", 500)]
    batch = [_decoded(RECOGNISED, 0, images[0]), _decoded(RECOGNISING, 0, images[1]), _decoded(EMPTY, 0, images[2])]
    assert stage.prepare(batch)
    glanced, full, arrival = stage.process(batch)
    assert not batch[0].converted, "a glanced frame is never converted to BGR"
    assert batch[1].converted and batch[2].converted
    # the recognising door's face, and the empty door's arrival: landmarks, the quality gate, a crop to embed
    for result in (full, arrival):
        assert len(result.faces) == 1 and result.faces[0].crop is not None and result.faces[0].quality > 0
    # the recognised door's face: its box only, where the full side finds it, in the full frame's pixels
    reference = detector.detect([images[0]])[0]
    assert len(glanced.faces) == len(reference) == 1
    face = glanced.faces[0]
    assert _iou(face.box, reference[0].box) > 0.8
    assert face.crop is None and face.quality == 0.0 and face.landmarks is None and face.embedding is None
    assert stage.gate_reasons == {"glance": 1, "accepted": 2}
    empty = _decoded(EMPTY, 1, np.full((720, 1280, 3), 90, np.uint8))
    stage.prepare([empty])
    assert empty.converted, "an empty door is never glanced at"


def test_without_a_scheduler_or_with_the_setting_off_every_frame_is_detected_at_full_side(detector):
    image = _door_frame("obama_senate.jpg", 300)
    stage = _stage(detector, None)
    frame = _decoded(RECOGNISED, 0, image)
    assert stage.prepare([frame]) and stage.process([frame])[0].faces[0].crop is not None
    config = load_config(None)
    off = config.scheduling.model_copy(update={"door_glance_side": 0})
    assert glance_detector(detector, config.model_copy(update={"scheduling": off})) is None
    at_full = config.scheduling.model_copy(update={"door_glance_side": 640})
    assert glance_detector(detector, config.model_copy(update={"scheduling": at_full})) is None


class _Embedder:
    def __init__(self):
        self.crops = 0

    def embed(self, crops):
        self.crops += len(crops)
        return [np.ones(128, np.float32) / np.sqrt(128) for _ in crops]


def test_a_second_face_beside_the_recognised_one_is_detected_at_the_full_side(detector):
    stage = _stage(detector, _scheduler())
    pair = _door_frame("obama_senate.jpg", 200)
    pair[:, 700:] = _door_frame("ardern_2018.jpg", 100)[:, 100:680]
    frame = _decoded(RECOGNISED, 0, pair)
    stage.prepare([frame])
    faces = stage.process([frame])[0].faces
    assert len(faces) == 2 and all(face.crop is not None for face in faces)
    assert frame.converted and "glance" not in stage.gate_reasons


def test_a_face_on_no_decided_track_in_a_glanced_frame_makes_the_next_frame_full(detector):
    """The door showed one face, all decided: the next frame is glanced at and shows one face (here on no
    track: the stage cannot tell faces apart, the recognition stage can); the recognition stage then tells
    the scheduler that a face is undecided, and the frames after are detected at the full side and embedded."""
    scheduler = _scheduler()
    stage = _stage(detector, scheduler)
    embedder = _Embedder()
    recognition = RecognitionStage(embedder=embedder, cameras={}, doors_by_camera={}, gallery=lambda: None,
                                   publish=lambda *a, **k: True, topic="t", model_pack="open",
                                   fps_of=lambda _c: 10.0, scheduler=scheduler)
    image = _door_frame("obama_senate.jpg", 300)
    for seq, expect_glance in enumerate([True, False, False]):
        frame = _decoded(RECOGNISED, seq, image)
        assert scheduler.door_settled(RECOGNISED) == expect_glance
        stage.prepare([frame])
        results = stage.process([frame])
        assert (results[0].faces[0].crop is None) == expect_glance
        asyncio.run(recognition.handle(results))
    assert embedder.crops == 2  # the two full-side frames; the glanced one had nothing to embed
    assert scheduler.faces_in_view(RECOGNISED) == 1


def test_a_glance_side_too_small_to_find_a_door_face_is_refused():
    assert SchedulingConfig(door_glance_side=0).door_glance_side == 0
    with pytest.raises(ValidationError, match="at least 160"):
        SchedulingConfig(door_glance_side=100)
