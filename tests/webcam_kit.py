"""Helpers of the tests of enrolment from a webcam or a video: a rendered clip of one person (for Chromium's
fake camera or as an upload), Chromium with that fake camera, and whom the enrolled gallery recognises in a
photo."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from infra.scenario.faces import head_and_shoulders
from infra.scenario.webcam import webcam_frames, write_video, write_y4m
from processor.enroll import face_analyzer, one_good_face
from processor.gallery import Match, load_gallery
from processor.model_catalogue import PHOTOS_DIR as PHOTOS
from tests import dashboard_kit as kit

FAKE_CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def webcam_clip(photo: str, path: Path, seconds: float = 4.0) -> Path:
    """A webcam clip of the person in ``photo`` (infra/scenario/webcam.py): .y4m for Chromium's fake camera,
    else an ordinary video file (.mp4: H.264)."""
    frames = webcam_frames(head_and_shoulders(PHOTOS / photo, f"test clip of {photo}"), seconds=seconds)
    return write_y4m(frames, path) if path.suffix == ".y4m" else write_video(frames, path)


def noise_video(path: Path, seconds: float, fps: int = 2) -> Path:
    """A video of nobody (grey noise): decodes fine, shows no face."""
    rng = np.random.default_rng(3)
    frames = (rng.integers(90, 110, (480, 640, 3), np.uint8) for _ in range(int(seconds * fps)))
    return write_video(frames, path, fps=fps, codec="mpeg4")


def chromium_with_fake_camera(browser_type, executable: str, args: list[str], clip: Path):
    """A Chromium whose camera plays ``clip`` (y4m), with the camera permission granted."""
    return browser_type.launch(executable_path=executable,
                               args=[*args, *FAKE_CAMERA_ARGS, f"--use-file-for-fake-video-capture={clip}"])


def recognised_in(served, config, photo: str) -> Match:
    """The enrolled gallery's match (the processor's own Gallery and thresholds) for the face in ``photo``."""
    pack = config.models.pack
    face = one_good_face(face_analyzer(pack, config.thresholds).analyse([cv2.imread(str(PHOTOS / photo))])[0],
                         config.thresholds)
    assert not isinstance(face, tuple), f"{photo}: {face}"
    gallery = kit.db_call(served, lambda conn: load_gallery(conn, pack, thresholds=config.thresholds))
    return gallery.match(face.embedding[None])[0]
