"""Enrolment frames from a short video or a webcam capture: the sharpest, most varied frames of one face,
picked automatically, as a photographer on class photo day keeps a few good shots of a burst.

:func:`analyse_frames` runs every sampled frame through the same face stage and the same rule as an
enrolment photo (one face, size, detector score, pose from the 5 landmarks, sharpness as the variance of
the Laplacian on the aligned crop: :func:`processor.enroll.one_good_face`); :func:`pick_frames` (pure) then
chooses at most ``k`` of the frames that passed. The chosen frames are enrolled like photos
(:func:`processor.enroll.enroll_photos`), so consent, duplicates and what is stored follow the photos' rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from processor import model_packs as mp
from processor.enroll import face_analyzer, one_good_face

ANALYSE_BATCH = 8  # frames per detector/embedder call: the batch a CPU handles without a long stall


@dataclass(frozen=True)
class FrameFace:
    """The one good face of a frame."""

    index: int  # the frame's number among those sampled
    time_s: float  # its time in the video
    sharpness: float  # variance of the Laplacian on the aligned face crop
    yaw_deg: float  # from the 5 landmarks
    quality: float  # the enrolment quality score (processor/stages/faces.py assess)
    embedding: np.ndarray  # L2-normalised


@dataclass(frozen=True)
class FrameRefusal:
    index: int
    time_s: float
    code: str
    reason: str  # one line for people


@dataclass
class FramePick:
    """What :func:`choose_frames` made of a video: the frames to enrol, and a reason for every other one."""

    sampled: int
    picked: list[FrameFace] = field(default_factory=list)
    refused: list[FrameRefusal] = field(default_factory=list)


def pick_frames(faces: Sequence[FrameFace], k: int, sharpness_floor: float = 0.5,
                min_distance: float = 0.02) -> tuple[list[FrameFace], list[FrameRefusal]]:
    """At most ``k`` of ``faces`` (each already passed the quality gate), and why each other one was left.

    The rule: (1) a frame less sharp than ``sharpness_floor`` times the median frame is left out (in a
    webcam burst the softer frames are motion blur or refocusing: never worth keeping for variety alone; the
    median, not the sharpest, because the Laplacian's variance also grows with noise and with a smaller,
    downscaled face, so one outlier must not push ordinary frames under the floor);
    (2) the sharpest frame is picked first; (3) then, greedily, the frame farthest from everything picked so
    far (farthest-point sampling on the face embedding, cosine distance: a turned head, another expression
    or another light moves the embedding, which is the variety recognition later needs), the sharper one on
    a tie; (4) it stops at ``k`` frames, or when the farthest frame is within ``min_distance`` of a picked
    one (a near copy adds nothing to the gallery). Deterministic: the same frames give the same pick.
    """
    if not faces or k < 1:
        return [], []
    median = float(np.median([f.sharpness for f in faces]))
    floor = sharpness_floor * median
    refused = [FrameRefusal(f.index, f.time_s, "less_sharp", f"blurred: sharpness {f.sharpness:.0f}, under "
                            f"{sharpness_floor:g} x the frames' median {median:.0f}") for f in faces if f.sharpness < floor]
    left = sorted((f for f in faces if f.sharpness >= floor), key=lambda f: (-f.sharpness, f.index))
    picked = [left.pop(0)]
    while left:
        picked_embeddings = np.stack([p.embedding for p in picked])
        nearest = 1.0 - (np.stack([f.embedding for f in left]) @ picked_embeddings.T)  # (left, picked) distances
        closest = nearest.min(axis=1)
        best = int(np.argmax(closest))  # left is sorted sharpest first: argmax keeps the sharper on a tie
        if len(picked) >= k or closest[best] < min_distance:
            break
        picked.append(left.pop(best))
    for f in left:
        distances = 1.0 - np.array([float(f.embedding @ p.embedding) for p in picked])
        twin = picked[int(np.argmin(distances))]
        refused.append(FrameRefusal(f.index, f.time_s, "not_picked", f"much like frame {twin.index} "
                                    f"({twin.time_s:.1f} s), which was kept: {len(picked)} varied frame(s) picked"))
    return picked, sorted(refused, key=lambda r: r.index)


def analyse_frames(frames: Sequence[tuple[float, np.ndarray]], pack: str | mp.LoadedPack,
                   thresholds: Any) -> tuple[list[FrameFace], list[FrameRefusal]]:
    """Each (time, BGR image) through the enrolment photo rule (blocking: run it in a worker thread)."""
    analyzer = face_analyzer(pack, thresholds)
    faces: list[FrameFace] = []
    refused: list[FrameRefusal] = []
    for start in range(0, len(frames), ANALYSE_BATCH):
        chunk = frames[start:start + ANALYSE_BATCH]
        for offset, found in enumerate(analyzer.analyse([image for _, image in chunk])):
            index, time_s = start + offset, chunk[offset][0]
            face = one_good_face(found, analyzer.thresholds)
            if isinstance(face, tuple):
                refused.append(FrameRefusal(index, time_s, *face))
            else:
                q = face.quality
                faces.append(FrameFace(index, time_s, q.sharpness, q.yaw_deg, q.score, face.embedding))
    return faces, refused


def choose_frames(frames: Sequence[tuple[float, np.ndarray]], k: int, *, pack: str | mp.LoadedPack,
                  thresholds: Any) -> FramePick:
    """The frames of a video to enrol (at most ``k``) and a reason for each of the others (blocking)."""
    faces, refused = analyse_frames(frames, pack, thresholds)
    picked, left = pick_frames(faces, k)
    return FramePick(len(frames), picked, sorted(refused + left, key=lambda r: r.index))
