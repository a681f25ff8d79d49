"""`bench faces` places every offered frame in the looping video by its stream time (pure logic)."""

from types import SimpleNamespace

import numpy as np

from infra.bench import faces as bench_faces
from infra.bench.faces import offered_indices


def test_each_camera_is_placed_by_the_shift_its_analysed_frames_show():
    fps, frames = 10.0, 750
    # camera a's stream started at video frame 100, b's at 740 (it wraps past the end of the video)
    analysed = [("a", 1.0), ("a", 2.5), ("b", 0.0), ("b", 3.0)]
    analysed_at = [110, 125, 740, (740 + 30) % frames]
    offered = [("a", 1.0), ("a", 1.1), ("b", 0.9), ("b", 70.0), ("c", 1.0)]
    order, placed = offered_indices(analysed, analysed_at, offered, frames, fps)
    assert order == [110, 111, (740 + 9) % frames, (740 + 700) % frames]  # c analysed nothing: not placed
    assert placed == 1.0


def test_a_frame_found_elsewhere_lowers_the_share_placed_and_is_outvoted():
    analysed = [("a", t / 10) for t in range(9)] + [("a", 0.9)]
    analysed_at = [50 + t for t in range(9)] + [300]  # one thumbnail matched a look-alike frame
    order, placed = offered_indices(analysed, analysed_at, [("a", 0.9)], 750, 10.0)
    assert order == [59]
    assert placed == 0.9


class _FacesBySeq:
    """A face stage stand-in for counting only: frame i shows i % 3 faces (the detector is not under test)."""

    def __init__(self):
        self.batches = []

    def process(self, frames):
        self.batches.append([f.seq for f in frames])
        return [SimpleNamespace(faces=[None] * (f.seq % 3)) for f in frames]


def test_faces_are_counted_per_appearance_a_batch_at_a_time(monkeypatch):
    monkeypatch.setattr(bench_faces, "video_frames",
                        lambda _video, wanted: ((i, np.zeros((2, 2, 3), np.uint8)) for i in sorted(wanted)))
    stage = _FacesBySeq()
    order = [5, 1, 5, 2, 4, 5]  # frame 5 offered three times
    assert bench_faces.faces_on(stage, "video", order, batch=2) == 3 * 2 + 1 + 2 + 1
    assert stage.batches == [[1, 2], [4, 5]]  # each distinct frame analysed once, two at a time


def test_what_a_stream_sent_includes_the_frames_an_idle_door_never_decoded():
    # camera a decoded keyframes only between 2.0 and 4.0 (idle), b every frame; both sent every frame
    put = [("a", 1.8), ("a", 1.9), ("a", 2.0), ("a", 3.0), ("a", 4.0), ("a", 4.1), ("b", 0.5), ("b", 0.6)]
    sent = bench_faces.streamed(put, 10.0)
    a = sorted(round(t, 3) for camera, t in sent if camera == "a")
    assert a == [round(1.8 + k / 10, 3) for k in range(24)]  # 1.8 .. 4.1, the undecoded frames included
    assert sorted(round(t, 3) for camera, t in sent if camera == "b") == [0.5, 0.6]
