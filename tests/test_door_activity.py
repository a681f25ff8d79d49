"""The recognition stage tells the camera when a face is in view (keyframe-only decoding while nobody is)
and the scheduler which rate the door is owed."""

from __future__ import annotations

import asyncio

import numpy as np

from infra.foundation.config import load_config
from processor.frames import Frame
from processor.pipeline import RecognitionStage
from processor.scheduler import Scheduler
from processor.service import Processor
from processor.stages.door_faces import FaceBatchResult
from processor.stages.face_tracks import FaceObservation, FaceTracker


class _NoEmbedder:
    def embed(self, crops):  # pragma: no cover - the faces here carry no crops
        raise AssertionError("nothing to embed")


def _stage(calls):
    scheduler = Scheduler()
    scheduler.register("door-1", "door", 5.0, idle=2.0)
    stage = RecognitionStage(embedder=_NoEmbedder(), cameras={}, doors_by_camera={}, gallery=lambda: None,
                             publish=lambda *a, **k: True, topic="t", model_pack="open", fps_of=lambda _c: 10.0,
                             scheduler=scheduler, on_activity=lambda camera, active: calls.append((camera, active)))
    return stage, scheduler


def _frame(seq):
    return Frame("door-1", seq, seq / 10, 0.0, np.zeros((72, 128, 3), np.uint8))


def test_a_detected_face_makes_the_door_active_and_its_absence_idle():
    calls = []
    stage, scheduler = _stage(calls)
    face = FaceObservation((40, 10, 80, 50), 0.9, 0.0, None)  # gated out, no crop: still a face in view
    asyncio.run(stage.handle([FaceBatchResult(_frame(0), [])]))
    assert calls[-1] == ("door-1", False)
    asyncio.run(stage.handle([FaceBatchResult(_frame(1), [face])]))
    assert calls[-1] == ("door-1", True)
    assert scheduler._cameras["door-1"].active
    # the face is gone, but its track stays open for lost_after_s: still active
    asyncio.run(stage.handle([FaceBatchResult(_frame(2), [])]))
    assert calls[-1] == ("door-1", stage.trackers["door-1"].open_tracks > 0)
    # long after: idle again
    asyncio.run(stage.handle([FaceBatchResult(_frame(40), [])]))
    assert calls[-1] == ("door-1", False)
    assert not scheduler._cameras["door-1"].active


class _Ingest:
    def __init__(self):
        self.idle = {}

    def set_idle(self, camera_id, idle):
        self.idle[camera_id] = idle

    def keyframe_rate(self, camera_id):
        return 1.0 if self.idle.get(camera_id) else None


def test_the_processor_turns_keyframe_only_decoding_on_and_off_by_config():
    config = load_config(None)
    for enabled in (True, False):
        scheduling = config.scheduling.model_copy(update={"door_idle_keyframes": enabled})
        processor = Processor(config.model_copy(update={"scheduling": scheduling}), database_url="unused",
                              kafka_bootstrap_servers="unused")
        processor.ingest = _Ingest()
        processor.scheduler = None
        processor._door_activity("door-1", active=False)
        assert processor.ingest.idle == {"door-1": enabled}
        processor._door_activity("door-1", active=True)
        assert processor.ingest.idle == {"door-1": False}


def test_a_door_stays_on_full_decoding_for_the_hold_after_its_last_face():
    config = load_config(None)
    scheduling = config.scheduling.model_copy(update={"door_idle_keyframes": True, "door_idle_hold_s": 3.0})
    processor = Processor(config.model_copy(update={"scheduling": scheduling}), database_url="unused",
                          kafka_bootstrap_servers="unused")
    processor.ingest = _Ingest()
    processor.scheduler = None
    processor._door_activity("door-1", active=True)
    processor._door_activity("door-1", active=False)  # the face lost for a moment, mid-passage
    assert processor.ingest.idle == {"door-1": False}
    processor._door_active_at["door-1"] -= 2.0  # 2 s on: still held
    processor._door_activity("door-1", active=False)
    assert processor.ingest.idle == {"door-1": False}
    processor._door_active_at["door-1"] -= 1.5  # 3.5 s after the last face: idle
    processor._door_activity("door-1", active=False)
    assert processor.ingest.idle == {"door-1": True}
    processor._door_activity("door-1", active=True)
    assert processor.ingest.idle == {"door-1": False}


def test_an_idle_door_on_keyframes_is_owed_no_more_than_its_keyframe_rate():
    scheduler = Scheduler()
    scheduler.register("door-1", "door", 5.0, idle=2.0)
    camera = scheduler._cameras["door-1"]
    assert camera.owed_rate() == 2.0
    scheduler.cap_idle("door-1", 1.0)
    assert camera.owed_rate() == 1.0
    scheduler.set_active("door-1", True)
    assert camera.owed_rate() == 5.0  # someone in view: the cap does not apply
    scheduler.set_active("door-1", False)
    scheduler.cap_idle("door-1", None)
    assert camera.owed_rate() == 2.0


class _CountingEmbedder:
    def __init__(self):
        self.calls: list[int] = []  # crops per call

    def embed(self, crops):
        self.calls.append(len(crops))
        return [np.full(128, 128 ** -0.5, np.float32) for _ in crops]


def test_embeddings_that_only_refine_an_answer_are_skipped_while_a_room_is_starved():
    """While a room camera is starved (frames waiting, none analysed for two spacings) the recognition stage
    still embeds a door track's first ``decide_after`` looks (what its decision needs), and none after them,
    not even a better look; once the room is served again, every look the track wants is embedded."""
    clock = {"now": 0.0}
    scheduler = Scheduler(window_s=4.0, clock=lambda: clock["now"])
    waiting = {"room": 1}
    scheduler.register("room", "room", 2.0, waiting=lambda: waiting["room"])
    scheduler.register("door-1", "door", 5.0, idle=2.0)
    clock["now"] = 1.5  # registered 1.5 s ago, nothing analysed: starved
    assert scheduler.rooms_starved()
    embedder = _CountingEmbedder()
    stage = RecognitionStage(embedder=embedder, cameras={}, doors_by_camera={}, gallery=lambda: None,
                             publish=lambda *a, **k: True, topic="t", model_pack="open", fps_of=lambda _c: 10.0,
                             scheduler=scheduler)
    stage.trackers["door-1"] = FaceTracker(camera_id="door-1", fps=10, decide_after=3, lost_after_s=0.5,
                                           embed_every=1)
    crop = np.zeros((112, 112, 3), np.uint8)
    embedded = []
    for i in range(12):
        if i == 8:
            waiting["room"] = 0  # the room's frames taken: no longer starved
        face = FaceObservation((100 + i * 10, 200, 180 + i * 10, 300), 0.9, 0.6 + 0.02 * i, None, crop)
        before = sum(embedder.calls)
        asyncio.run(stage.handle([FaceBatchResult(_frame(i), [face])]))
        if sum(embedder.calls) > before:
            embedded.append(i)
    first = embedded[0]
    assert embedded[:3] == [first, first + 1, first + 2] and first + 2 < 8  # the looks the decision needs
    assert embedded[3:] == [8, 9, 10, 11]  # nothing refined while starved; every (better) look after
    assert stage.refinements_skipped == 8 - (first + 3)
