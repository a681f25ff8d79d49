"""A short video for enrolment (an upload, or the browser's webcam recording), decoded with PyAV and
sampled into frames for :func:`processor.api.choose_frames`.

What refuses the video (:class:`VideoRefused`, a 4xx with one line): not a video (nothing FFmpeg can
open, or no video stream), frames over ``dashboard.max_image_pixels``, longer than
``dashboard.max_enrol_video_s``. The length is checked on the frames' own times as they decode, not only
on the container's header: a browser's MediaRecorder WebM declares no duration at all. Frames are kept
at most ``enrol_video_sample_fps`` a second (consecutive frames of a webcam are near copies; sampling
keeps the work bounded by the length, never by the frame rate a file claims).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO

import av
import numpy as np

from dashboard.limits import UploadRefused

VIDEO_TYPES = (".mp4", ".webm", ".mov", ".mkv", ".m4v")  # what the upload form offers; FFmpeg decides


class VideoRefused(UploadRefused):
    """The whole video is refused (one line, a 4xx)."""


@dataclass(frozen=True)
class VideoLimits:
    seconds: float
    sample_fps: float
    image_pixels: int


def _open(file: IO[bytes]):
    try:
        container = av.open(file, mode="r")
    except (av.error.FFmpegError, ValueError, OSError, EOFError):
        raise VideoRefused("the upload is not a video FFmpeg can read: send an MP4, WebM or MOV") from None
    if not container.streams.video:
        container.close()
        raise VideoRefused("the file has no video stream: send an MP4, WebM or MOV of the person's face")
    return container


def _check_header(stream, limits: VideoLimits) -> None:
    width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
    if width * height > limits.image_pixels:
        raise VideoRefused(f"the video is {width}x{height}: at most {limits.image_pixels} pixels a frame "
                           "(dashboard.max_image_pixels)", 413)
    if stream.duration is not None and stream.time_base is not None:
        declared = float(stream.duration * stream.time_base)
        if declared > limits.seconds + 0.5:
            raise VideoRefused(_too_long(declared, limits), 413)


def _too_long(seconds: float, limits: VideoLimits) -> str:
    return (f"the video is {seconds:.1f} s long: at most {limits.seconds:g} s (dashboard.max_enrol_video_s); "
            "a few seconds of the face, turning a little, are enough")


def sample_frames(file: IO[bytes], limits: VideoLimits) -> list[tuple[float, np.ndarray]]:
    """(time in seconds, BGR frame) for at most ``sample_fps`` frames a second of the video in ``file``
    (blocking: run it in a worker thread). Raises :class:`VideoRefused`."""
    container = _open(file)
    frames: list[tuple[float, np.ndarray]] = []
    try:
        stream = container.streams.video[0]
        _check_header(stream, limits)
        stream.thread_type = "AUTO"
        step, next_time, first = 1.0 / limits.sample_fps, 0.0, None
        for index, frame in enumerate(container.decode(stream)):
            at = float(frame.time) if frame.time is not None else index / float(stream.average_rate or 25)
            first = at if first is None else first
            at -= first  # a recording may start at any timestamp
            if at > limits.seconds + 0.5:
                raise VideoRefused(_too_long(at, limits), 413)
            if at + 1e-6 >= next_time:
                frames.append((round(at, 3), frame.to_ndarray(format="bgr24")))
                next_time = at + step
    except av.error.FFmpegError as exc:
        if not frames:
            raise VideoRefused(f"the video cannot be decoded ({str(exc)[:100]}): send an MP4, WebM or MOV") from None
        # a damaged tail (a recording cut short) leaves the frames decoded so far
    finally:
        container.close()
    if not frames:
        raise VideoRefused("the video has no frames")
    return frames
