"""Coasted room frames cost no BGR conversion and no turn at the inference gate: the person stage's motion
gates decide on a grey copy scaled from the decoded picture (processor.frames.Frame.grey), before the gate,
and only the frames the detector runs on are converted."""

from __future__ import annotations

import asyncio
import contextlib

import av
import cv2
import numpy as np
import pytest

from processor.frames import Frame
from processor.stages.motion import MotionGate
from processor.stages.room_gating import PersonStage, RoomGating
from tests.test_room_gating import SEATED, SETTINGS, CountingDetector, _gated_config, room


def decoded(image: np.ndarray):
    """The picture as a software decoder hands it out (YUV 4:2:0), not yet converted to BGR."""
    return av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")


def test_the_grey_copy_of_a_decoded_picture_is_the_bgr_paths_within_a_few_levels():
    image = room([SEATED], noise_seed=3)
    frame = Frame("cam", 0, 0.0, 1000.0, decoded=decoded(image))
    assert frame.size == (1280, 720) and not frame.converted  # the size needs no conversion
    grey = frame.grey(160, 90)
    assert grey.shape == (90, 160) and not frame.converted
    bgr_path = cv2.cvtColor(cv2.resize(image, (160, 90), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    assert np.abs(grey.astype(int) - bgr_path.astype(int)).max() <= 3  # far below the 25-level threshold
    assert Frame("cam", 0, 0.0, 1000.0, image).grey(160, 90) is None  # a given image: scale it instead


def test_a_gate_on_decoded_pictures_decides_as_on_bgr_images():
    people = [[SEATED]] * 6 + [[SEATED, (100, 200, 140, 300)]] * 3 + [[(100, 200, 140, 300)]] * 3  # walks off
    on_bgr, on_decoded = MotionGate(SETTINGS), MotionGate(SETTINGS)
    gating = RoomGating(_gated_config(), 640)
    expected, got = [], []
    for n, boxes in enumerate(people):
        image = room(boxes, noise_seed=n)
        expected.append(on_bgr.decide(image, n * 0.2).reason)
        frame = Frame("cam", n, n * 0.2, 1000.0 + n * 0.2, decoded=decoded(image))
        got.append(gating._decide(on_decoded, frame).reason)
        assert not frame.converted
        on_bgr.boxes = on_decoded.boxes = (SEATED,)
    assert got == expected
    assert {"still", "free", "track"} <= set(got)


def test_only_the_frames_the_detector_runs_on_are_converted():
    config = _gated_config()
    camera = next(c.id for c in config.cameras if c.role == "room")
    gating = RoomGating(config, 640)
    stage = PersonStage(CountingDetector(), gating=gating)
    frames, needs_models = [], []
    for n in range(12):
        frame = Frame(camera, n, n * 0.2, 1000.0 + n * 0.2, decoded=decoded(room([SEATED], noise_seed=n)))
        batch = [frame]
        needs_models.append(stage.prepare(batch))
        (result,) = stage.process(batch)
        gating.observe(camera, [SEATED], faces_wanted=False)
        assert (result[1] is not None) == needs_models[-1] == frame.converted
        frames.append(frame)
    assert needs_models == [True] + [False] * 9 + [True, False]  # the first frame, then max_skip_s later
    assert stage.detected == 2 and stage.coasted == 10


class RecordingScheduler:
    """The scheduler's part the stage loop uses: the gate's turns and the frames analysed per camera."""

    def __init__(self):
        self.turns, self.analysed_frames = 0, []
        scheduler = self

        class Gate:
            @contextlib.asynccontextmanager
            async def turn(self, _priority, *, cameras=()):
                scheduler.turns += 1
                yield

        self.gate = Gate()

    def priority(self, cameras):
        return 0

    def extras_allowed(self, camera_id, work):
        return True

    def analysed(self, camera_id):
        self.analysed_frames.append(camera_id)


@pytest.mark.parametrize("in_flight", [1, 2])
def test_a_batch_that_only_coasts_takes_no_turn_at_the_gate(in_flight):
    config = _gated_config()
    camera = next(c.id for c in config.cameras if c.role == "room")
    stage = PersonStage(CountingDetector(), gating=RoomGating(config, 640))
    stage.scheduler = scheduler = RecordingScheduler()
    stage.in_flight = in_flight  # two: the camera's rounds still one after the other

    async def run(count: int):
        inbox, outbox = asyncio.Queue(), asyncio.Queue()
        for n in range(count):
            await inbox.put([Frame(camera, n, n * 0.2, 1000.0 + n * 0.2, decoded=decoded(room([SEATED])))])
        task = asyncio.create_task(stage.run(inbox, outbox))
        results = [await outbox.get() for _ in range(count)]
        task.cancel()
        return results

    results = asyncio.run(run(5))
    assert [r[0][1] is not None for r in results] == [True, False, False, False, False]
    assert scheduler.turns == 1  # the first frame's detector call; the coasted ones went straight through
    assert scheduler.analysed_frames == [camera] * 5  # every frame counts toward the camera's rate
