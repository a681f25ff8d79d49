"""The door cameras' face stage: one detector call per batch of frames, then alignment and the quality gate
(:class:`FaceStage`), handing :class:`FaceBatchResult` to the recognition stage (processor/pipeline.py)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from processor import metrics
from processor.frames import Frame
from processor.stages.base import BatchStage
from processor.stages.face_tracks import FaceObservation
from processor.stages.faces import align, assess


@dataclass
class FaceBatchResult:
    frame: Frame
    faces: list[FaceObservation]


class FaceStage(BatchStage):
    """Door cameras: one detector call per batch of frames, then alignment and the quality gate."""

    name = "faces"

    def __init__(self, detector, thresholds):
        self.detector = detector
        self.thresholds = thresholds
        self.gate_reasons: dict[str, int] = {}
        # batches in flight (BatchStage.in_flight) run process() in worker threads side by side
        self._counting = threading.Lock()

    def process(self, batch: list[Frame], extras_for: frozenset[str] | None = None) -> list[FaceBatchResult]:
        detections = self.detector.detect([frame.image for frame in batch])
        results: list[FaceBatchResult] = []
        for frame, faces in zip(batch, detections):
            observations = []
            for detection in faces:
                crop = align(frame.image, detection.landmarks)
                quality = assess(frame.image, detection, crop, self.thresholds)
                outcome = quality.reason or "accepted"
                with self._counting:
                    self.gate_reasons[outcome] = self.gate_reasons.get(outcome, 0) + 1
                metrics.FACES.labels(frame.camera_id, outcome).inc()
                accepted = quality.reason is None
                observations.append(FaceObservation(
                    box=tuple(float(v) for v in detection.box), score=float(detection.score),
                    quality=float(quality.score) if accepted else 0.0, embedding=None,
                    crop=crop if accepted else None, landmarks=detection.landmarks))
            results.append(FaceBatchResult(frame, observations))
        return results
