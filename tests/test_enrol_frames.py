"""The frame picker of enrolment from a video (processor/enrol_frames.py, pure) and the video sampler that
feeds it (dashboard/enrol_video.py): which frames are kept and why the others are not; what video is refused."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from dashboard.enrol_video import VideoLimits, VideoRefused, sample_frames
from infra.scenario.webcam import SIZE, write_video
from processor.enrol_frames import FrameFace, pick_frames


def _unit(*values: float) -> np.ndarray:
    v = np.zeros(8, np.float32)
    v[:len(values)] = values
    return v / np.linalg.norm(v)


def _face(index: int, sharpness: float, embedding: np.ndarray) -> FrameFace:
    return FrameFace(index, index / 4, sharpness, 0.0, 0.9, embedding)


def test_the_sharpest_frame_comes_first_then_the_most_different_ones():
    same = _unit(1, 0)
    faces = [_face(0, 180, same), _face(1, 300, _unit(1, 0.01)), _face(2, 200, _unit(0, 1)),
             _face(3, 250, _unit(1, 1)), _face(4, 290, _unit(1, 0.02))]
    picked, refused = pick_frames(faces, k=3)
    # 1 is the sharpest; 2 is the farthest from it; then 3 (halfway) is farther from both than 0 or 4
    assert [f.index for f in picked] == [1, 2, 3]
    assert {r.index: r.code for r in refused} == {0: "not_picked", 4: "not_picked"}
    assert "much like frame 1" in next(r.reason for r in refused if r.index == 4)


def test_frames_under_the_sharpness_floor_are_never_picked_for_variety():
    faces = [_face(0, 900, _unit(1, 0)), _face(1, 120, _unit(0, 1)), _face(2, 250, _unit(1, 0.3)),
             _face(3, 260, _unit(1, -0.3))]
    picked, refused = pick_frames(faces, k=5, sharpness_floor=0.5)
    # 1 is the most different but under half the median (255); 2 and 3 are far under the sharpest and stay
    assert [f.index for f in picked] == [0, 3, 2]
    assert [(r.index, r.code) for r in refused] == [(1, "less_sharp")]
    assert "sharpness 120, under 0.5 x the frames' median 255" in refused[0].reason


def test_near_copies_stop_the_pick_before_k():
    faces = [_face(i, 200 + i, _unit(1, 0.001 * i)) for i in range(6)]
    picked, refused = pick_frames(faces, k=4, min_distance=0.02)
    assert [f.index for f in picked] == [5]
    assert len(refused) == 5 and all(r.code == "not_picked" for r in refused)


def test_ties_in_distance_go_to_the_sharper_frame_and_nothing_means_nothing():
    a, b = _unit(1, 0), _unit(0, 1)
    picked, _ = pick_frames([_face(0, 300, a), _face(1, 200, b), _face(2, 250, b)], k=2)
    assert [f.index for f in picked] == [0, 2]
    assert pick_frames([], k=3) == ([], [])


def _video(folder: Path, seconds: float, fps: int = 10) -> io.BytesIO:
    rng = np.random.default_rng(1)
    frames = (rng.integers(0, 255, (SIZE[1], SIZE[0], 3), np.uint8) for _ in range(int(seconds * fps)))
    return io.BytesIO(write_video(frames, folder / "clip.mp4", fps=fps, codec="mpeg4").read_bytes())


def test_a_video_is_sampled_at_the_set_rate(tmp_path):
    frames = sample_frames(_video(tmp_path, 2.0), VideoLimits(seconds=10, sample_fps=2, image_pixels=10_000_000))
    assert [t for t, _ in frames] == [0.0, 0.5, 1.0, 1.5]
    assert frames[0][1].shape == (SIZE[1], SIZE[0], 3)


@pytest.mark.parametrize("data, limits, status, words", [
    (b"not a video at all" * 100, VideoLimits(10, 2, 10_000_000), 400, "not a video"),
    (None, VideoLimits(1.0, 2, 10_000_000), 413, "at most 1 s"),
    (None, VideoLimits(10, 2, 100_000), 413, "pixels a frame"),
])
def test_bad_videos_are_refused_with_the_reason(tmp_path, data, limits, status, words):
    with pytest.raises(VideoRefused) as refused:
        sample_frames(io.BytesIO(data) if data else _video(tmp_path, 2.0), limits)
    assert refused.value.status == status and words in str(refused.value)
