"""The door cameras' face stage: one detector call per batch of frames, then alignment and the quality gate
(:class:`FaceStage`), handing :class:`FaceBatchResult` to the recognition stage (processor/pipeline.py)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from processor import metrics
from processor.frames import Frame, materialise
from processor.stages.base import BatchStage
from processor.stages.face_tracks import FaceObservation
from processor.stages.faces import align, assess


@dataclass
class FaceBatchResult:
    frame: Frame
    faces: list[FaceObservation]


class FaceStage(BatchStage):
    """Door cameras: one detector call per batch of frames, then alignment and the quality gate.

    With ``glance`` (a detector at a smaller side, sharing the full one's session) and a scheduler, the frames
    of a door whose faces in view are all recognised already (:meth:`~processor.scheduler.Scheduler.door_settled`
    with faces in its last frame) are glanced at first: detected on a small copy scaled straight from the
    decoded picture (the full frame is not converted), for the boxes alone. Such a frame can only show that
    the people decided are still there, that they left, or that somebody new arrived. When the glance finds
    no more faces than the door's last frame showed, its boxes are the frame's answer (counted as ``glance``,
    gated out: nothing to embed, no landmarks for the liveness check's rigidity cue): the face tracks follow
    the people decided on them. When it finds more, somebody arrived, and the frame is detected again at the
    full side, whose landmarks the embeddings are aligned on (at 448 px instead of 640 they move by ~6 % of
    the face's width). An empty door is never glanced at: the glance misses the small, far faces an arrival
    first shows (`bench capacity` lost a short passage's student that way, twice), and a short passage
    needs every one of its looks."""

    name = "faces"
    prepare_always = True  # prepare() plans which frames are glanced at, before the gate

    def __init__(self, detector, thresholds, glance=None):
        self.detector = detector
        self.glance = glance  # a FaceDetector at the glance side (None: every frame at the full side)
        self.thresholds = thresholds
        self.gate_reasons: dict[str, int] = {}
        self._prepared: tuple[list[Frame], list[np.ndarray | None]] | None = None

    def prepare(self, batch: list[Frame]) -> bool:
        """Before the turn at the gate (worker thread): the frames detected at the full side converted to
        BGR, the glanced ones scaled to the glance side (their full frame is not converted)."""
        small = self._glances(batch)
        materialise(frame for frame, copy in zip(batch, small) if copy is None)
        self._prepared = (batch, small)
        return True

    def _glances(self, batch: list[Frame]) -> list[np.ndarray | None]:
        """Per frame, its glance copy, or None: detected at the full side."""
        if self.glance is None or self.scheduler is None:
            return [None] * len(batch)
        small: list[np.ndarray | None] = []
        for frame in batch:
            copy = None
            camera_id = frame.camera_id
            if self.scheduler.door_settled(camera_id) and self.scheduler.faces_in_view(camera_id) > 0:
                width, height = self.glance.canvas_for([frame.size[::-1]])
                fit = min(width / frame.size[0], height / frame.size[1])
                size = (round(frame.size[0] * fit), round(frame.size[1] * fit))
                copy = frame.scaled(*size)
                if copy is None:  # converted already (or given as an image): scale that
                    copy = cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA)
            small.append(copy)
        return small

    def process(self, batch: list[Frame], extras_for: frozenset[str] | None = None) -> list[FaceBatchResult]:
        prepared, self._prepared = self._prepared, None
        small = prepared[1] if prepared is not None and prepared[0] is batch else self._glances(batch)
        glanced = [i for i, copy in enumerate(small) if copy is not None]
        detections: list[list] = [[] for _ in batch]
        full = [i for i, copy in enumerate(small) if copy is None]
        if glanced:
            found_small = self.glance.detect([small[i] for i in glanced], [batch[i].size[::-1] for i in glanced])
            for i, found in zip(glanced, found_small):
                if len(found) > self.scheduler.faces_in_view(batch[i].camera_id):
                    full.append(i)  # somebody arrived: their first looks at the full side
                else:
                    detections[i] = self._glanced(batch[i], found)
        for i, found in zip(full, self.detector.detect([batch[i].image for i in full])):
            detections[i] = self._observed(batch[i], found)
        return [FaceBatchResult(frame, faces) for frame, faces in zip(batch, detections)]

    def _observed(self, frame: Frame, found: list) -> list[FaceObservation]:
        """A full-side frame's faces: aligned and through the quality gate."""
        observations = []
        for detection in found:
            crop = align(frame.image, detection.landmarks)
            quality = assess(frame.image, detection, crop, self.thresholds)
            accepted = quality.reason is None
            self._count(frame.camera_id, quality.reason or "accepted")
            observations.append(FaceObservation(
                box=tuple(float(v) for v in detection.box), score=float(detection.score),
                quality=float(quality.score) if accepted else 0.0, embedding=None,
                crop=crop if accepted else None, landmarks=detection.landmarks))
        return observations

    def _glanced(self, frame: Frame, found: list) -> list[FaceObservation]:
        """A glanced frame's faces: boxes only (gated out; their landmarks are too coarse for alignment or
        the liveness check's rigidity cue)."""
        for _ in found:
            self._count(frame.camera_id, "glance")
        return [FaceObservation(box=tuple(float(v) for v in detection.box), score=float(detection.score),
                                quality=0.0, embedding=None) for detection in found]

    def _count(self, camera_id: str, outcome: str) -> None:
        self.gate_reasons[outcome] = self.gate_reasons.get(outcome, 0) + 1
        metrics.FACES.labels(camera_id, outcome).inc()
