"""Face stage compute: detect → align → quality gate → embed, batched, synchronous, free of asyncio.

The asynchronous pipeline calls these from a worker thread (``asyncio.to_thread``); onnxruntime sessions
may be shared between threads (``InferenceSession.run`` is thread-safe).

``open`` pack (YuNet + SFace, both with a dynamic batch axis)
    :class:`FaceDetector` resizes every image of a batch into one common input (top-left placement, zero
    padding right/bottom, H and W multiples of 32), runs ONE onnxruntime call for the whole batch, decodes
    YuNet's per-stride outputs (score = sqrt(cls * obj); box centre (col, row + d) * stride, size
    exp(d) * stride; landmarks (col, row + d) * stride), applies NMS (``cv2.dnn.NMSBoxes``) per image and
    maps boxes and landmarks back to each image's own pixels. :class:`FaceEmbedder` runs ONE call per
    chunk of up to ``max_batch`` aligned crops and L2-normalises the output.
``arcface`` / ``arcface-s`` (insightface SCRFD + ArcFace, through ``model_packs.open_insightface``)
    SCRFD as shipped has a static batch of 1, so :meth:`FaceDetector.detect` loops over the images there
    (one call per image); the ArcFace embedder is batched like SFace.

:func:`align` warps a face onto the ArcFace 5-point 112x112 template (similarity transform from
``cv2.estimateAffinePartial2D`` with LMEDS, as insightface's ``norm_crop``); :func:`assess` is the quality
gate before embedding. :class:`FaceAnalyzer` strings the four together for callers that want all of it
(enrolment, the door stage).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from processor import model_packs as mp
from processor.stages.base import require_bgr
from infra.foundation.config import ThresholdsConfig

# ArcFace 5-point template in a 112x112 crop: right eye, left eye (image left to right), nose, mouth corners.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
CROP_SIZE = 112
YUNET_STRIDES = (8, 16, 32)
QUALITY_REASONS = ("too_small", "low_score", "pose", "too_blurry")
# Nose-tip depth in front of the eyes, as a fraction of the eye distance (adult faces: ~0.5); used by the
# landmark yaw estimate of :func:`estimate_yaw`.
NOSE_DEPTH_RATIO = 0.5


def _as_pack(pack: str | mp.LoadedPack) -> mp.LoadedPack:
    return mp.load_pack(pack) if isinstance(pack, str) else pack


def _ceil_to(value: float, multiple: int) -> int:
    return max(multiple, int(math.ceil(value / multiple)) * multiple)


# ------------------------------------------------------------------------------------------ detection

@dataclass(frozen=True, slots=True)
class FaceDetection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the image's pixels
    score: float
    landmarks: np.ndarray  # (5, 2) float32: right eye, left eye, nose, right mouth, left mouth (image left first)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size_px(self) -> float:
        """The face's size for the quality gate: the smaller side of its box."""
        return min(self.width, self.height)


class FaceDetector:
    """Batched face detection.

    ``input_size`` (width, height), multiples of 32: every image is resized to fit it (aspect kept,
    top-left, zero padding). ``None`` chooses the size per batch: each image scaled so its longer side is
    ``max_side``, the input the smallest multiple-of-32 canvas that holds them all (a 1280x720 frame runs
    at 640x384, a portrait 900x716 at 512x640): no compute spent on padding for uniform camera frames.
    """

    def __init__(self, pack: str | mp.LoadedPack = mp.DEFAULT_PACK, score_threshold: float | None = None,
                 input_size: tuple[int, int] | None = (640, 640), *, max_side: int = 640,
                 nms_iou: float | None = None, providers: Sequence[Any] | None = None, session: Any = None,
                 threads: int | None = None):
        self.pack = _as_pack(pack)
        spec = self.pack.model("face_detector")
        self.arch = spec.arch
        self.multiple = spec.size_multiple or 32
        self.score_threshold = float(score_threshold if score_threshold is not None else self.pack.spec.face_score_threshold)
        self.nms_iou = float(nms_iou if nms_iou is not None else self.pack.spec.face_nms_iou)
        if input_size is not None and (input_size[0] % self.multiple or input_size[1] % self.multiple):
            raise ValueError(f"input_size {input_size} must be multiples of {self.multiple}")
        self.input_size = tuple(input_size) if input_size is not None else None
        self.max_side = max_side
        if self.arch == "yunet":
            self.session = session or mp.create_session(self.pack.path("face_detector"), providers, threads)
            self.input_name = self.session.get_inputs()[0].name
            self.output_names = [o.name for o in self.session.get_outputs()]
            self._scrfd = None
        elif self.arch == "scrfd":
            self._scrfd, _ = mp.open_insightface(self.pack, providers)
            self._scrfd.prepare(0, det_thresh=self.score_threshold, nms_thresh=self.nms_iou)
            self.session = self._scrfd.session
        else:
            raise ValueError(f"no face detector decoding for arch {self.arch!r}")

    # -- geometry

    def canvas_for(self, shapes: Sequence[tuple[int, int]]) -> tuple[int, int]:
        """(width, height) of the network input for images of these (height, width) shapes."""
        if self.input_size is not None:
            return self.input_size
        w_max = h_max = 0
        for h, w in shapes:
            s = self.max_side / max(h, w)
            w_max, h_max = max(w_max, round(w * s)), max(h_max, round(h * s))
        return _ceil_to(w_max, self.multiple), _ceil_to(h_max, self.multiple)

    @staticmethod
    def _fit(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float]:
        h, w = image.shape[:2]
        s = min(width / w, height / h)
        nw, nh = max(1, min(width, round(w * s))), max(1, min(height, round(h * s)))
        if (nw, nh) == (w, h):
            return image, 1.0
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        return cv2.resize(image, (nw, nh), interpolation=interp), s

    # -- detection

    def detect(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection]]:
        """Faces in each BGR image, best score first, in that image's own pixel coordinates."""
        if not len(images):
            return []
        require_bgr(images)
        if self._scrfd is not None:
            return [self._detect_scrfd(img) for img in images]
        width, height = self.canvas_for([img.shape[:2] for img in images])
        blob = np.zeros((len(images), 3, height, width), np.float32)
        scales = []
        for i, img in enumerate(images):
            small, s = self._fit(img, width, height)
            blob[i, :, : small.shape[0], : small.shape[1]] = small.transpose(2, 0, 1)
            scales.append(s)
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: blob})))
        return [self._decode_yunet(outputs, i, width, scales[i], img.shape[:2]) for i, img in enumerate(images)]

    def _decode_yunet(self, out: dict[str, np.ndarray], b: int, width: int, scale: float,
                      shape: tuple[int, int]) -> list[FaceDetection]:
        boxes, scores, kpss = [], [], []
        for stride in YUNET_STRIDES:
            cols = width // stride
            cls = np.clip(out[f"cls_{stride}"][b, :, 0], 0.0, 1.0)
            obj = np.clip(out[f"obj_{stride}"][b, :, 0], 0.0, 1.0)
            score = np.sqrt(cls * obj)
            idx = np.flatnonzero(score >= self.score_threshold)
            if not idx.size:
                continue
            col, row = (idx % cols).astype(np.float32), (idx // cols).astype(np.float32)
            d = out[f"bbox_{stride}"][b, idx]
            cx, cy = (col + d[:, 0]) * stride, (row + d[:, 1]) * stride
            w, h = np.exp(d[:, 2]) * stride, np.exp(d[:, 3]) * stride
            k = out[f"kps_{stride}"][b, idx].reshape(-1, 5, 2)
            kpss.append((k + np.stack([col, row], 1)[:, None, :]) * stride)
            boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], 1))
            scores.append(score[idx])
        if not boxes:
            return []
        xywh = np.concatenate(boxes) / scale
        score_a = np.concatenate(scores)
        kps = np.concatenate(kpss) / scale
        keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), score_a.tolist(), self.score_threshold, self.nms_iou),
                          int).ravel()
        keep = keep[np.argsort(-score_a[keep], kind="stable")]
        h_img, w_img = shape
        found = []
        for i in keep:
            x, y, w, h = xywh[i]
            box = (max(0.0, float(x)), max(0.0, float(y)), min(float(w_img), float(x + w)), min(float(h_img), float(y + h)))
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            found.append(FaceDetection(box, float(score_a[i]), kps[i].astype(np.float32)))
        return found

    def _detect_scrfd(self, image: np.ndarray) -> list[FaceDetection]:
        size = self.canvas_for([image.shape[:2]])
        det, kpss = self._scrfd.detect(image, input_size=size, det_thresh=self.score_threshold)
        found = []
        for i in np.argsort(-det[:, 4], kind="stable"):
            x1, y1, x2, y2, score = det[i].tolist()
            h, w = image.shape[:2]
            found.append(FaceDetection((max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)), score,
                                       np.asarray(kpss[i], np.float32)))
        return found


# ------------------------------------------------------------------------------------------ alignment

def alignment_matrix(landmarks: np.ndarray) -> np.ndarray:
    """2x3 similarity transform taking the 5 landmarks onto the ArcFace 112x112 template."""
    src = np.asarray(landmarks, np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(src, ARCFACE_TEMPLATE, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks (all on one point): fall back to a plain scale + shift
        scale = CROP_SIZE / max(1e-3, float(np.ptp(src[:, 0])) * 3)
        matrix = np.array([[scale, 0, CROP_SIZE / 2 - scale * src[:, 0].mean()],
                           [0, scale, CROP_SIZE / 2 - scale * src[:, 1].mean()]], np.float64)
    return matrix


def align(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """112x112x3 BGR crop of the face, aligned to the ArcFace template (insightface ``norm_crop``)."""
    return cv2.warpAffine(image, alignment_matrix(landmarks), (CROP_SIZE, CROP_SIZE), borderValue=0.0)


# -------------------------------------------------------------------------------------------- quality

@dataclass(frozen=True, slots=True)
class FaceQuality:
    score: float  # 0..1, higher is better: used to pick a track's best crop
    size_px: float  # smaller side of the detection box, image pixels
    sharpness: float  # variance of the Laplacian on the aligned crop's gray image
    yaw_deg: float  # estimated from the landmarks; + = face turned towards image right
    reason: str | None  # None: passed; else "too_small" | "low_score" | "pose" | "too_blurry"

    @property
    def ok(self) -> bool:
        return self.reason is None


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the (aligned) crop in gray: low = blurred or up-scaled."""
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def estimate_yaw(landmarks: np.ndarray) -> float:
    """Yaw in degrees from the nose's offset off the eyes' midpoint along the eye line.

    With the eyes d apart and the nose tip ``NOSE_DEPTH_RATIO * d`` in front of them, turning the head by
    yaw moves the nose by p*sin(yaw) while the eyes come d*cos(yaw) apart in the image, so
    yaw = atan(offset / eye_distance / NOSE_DEPTH_RATIO). In-plane roll is removed by measuring along the eye
    line. A rough estimate (±10° on frontal portraits), enough to drop profiles.
    """
    k = np.asarray(landmarks, np.float64)
    eye_r, eye_l, nose = k[0], k[1], k[2]
    axis = eye_l - eye_r
    dist = float(np.hypot(*axis))
    if dist < 1e-6:
        return 90.0
    offset = float(np.dot(nose - (eye_r + eye_l) / 2, axis / dist))
    return math.degrees(math.atan(offset / dist / NOSE_DEPTH_RATIO))


def assess(image: np.ndarray | None, detection: FaceDetection, crop: np.ndarray, thresholds: Any) -> FaceQuality:
    """The quality gate before embedding. ``thresholds`` is a ``config.ThresholdsConfig`` (or anything with
    ``min_face_px``, ``face_detection``, ``max_yaw_deg``, ``min_sharpness``). The first failing check gives
    the reason, in this order: too_small, low_score, pose, too_blurry. ``image`` is not needed by the
    current checks (kept for checks on the full frame, e.g. exposure)."""
    del image
    size = float(detection.size_px)
    sharp = sharpness(crop)
    yaw = estimate_yaw(detection.landmarks)
    min_px = float(thresholds.min_face_px)
    min_sharp = float(thresholds.min_sharpness)
    max_yaw = float(thresholds.max_yaw_deg)
    if size < min_px:
        reason = "too_small"
    elif detection.score < float(thresholds.face_detection):
        reason = "low_score"
    elif abs(yaw) > max_yaw:
        reason = "pose"
    elif sharp < min_sharp:
        reason = "too_blurry"
    else:
        reason = None
    # Score: detector confidence x how comfortably each gate is passed (each factor saturates at 2x the
    # gate's own threshold, pose falls linearly to 0 at 2x max_yaw).
    f_size = min(1.0, size / (2 * min_px)) if min_px > 0 else 1.0
    f_sharp = min(1.0, sharp / (2 * min_sharp)) if min_sharp > 0 else 1.0
    f_pose = max(0.0, 1.0 - abs(yaw) / (2 * max_yaw))
    score = float(np.clip(detection.score, 0.0, 1.0)) * f_size * f_sharp * f_pose
    return FaceQuality(round(score, 4), size, sharp, yaw, reason)


# ------------------------------------------------------------------------------------------ embedding

class FaceEmbedder:
    """Batched face embeddings: aligned 112x112 BGR crops → (N, D) float32, rows L2-normalised."""

    def __init__(self, pack: str | mp.LoadedPack = mp.DEFAULT_PACK, *, max_batch: int = 64,
                 providers: Sequence[Any] | None = None, session: Any = None, threads: int | None = None):
        self.pack = _as_pack(pack)
        spec = self.pack.model("face_embedder")
        self.arch = spec.arch
        self.dim = self.pack.embedding_dim
        self.max_batch = max(1, int(max_batch))
        if spec.arch == "sface":
            self.session = session or mp.create_session(self.pack.path("face_embedder"), providers, threads)
            self.input_name = self.session.get_inputs()[0].name
            self._arcface = None
        elif spec.arch == "arcface":
            _, self._arcface = mp.open_insightface(self.pack, providers)
            self.session = self._arcface.session
        else:
            raise ValueError(f"no face embedder for arch {spec.arch!r}")

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        for c in crops:
            if c.shape != (CROP_SIZE, CROP_SIZE, 3):
                raise ValueError(f"expected {CROP_SIZE}x{CROP_SIZE}x3 aligned crops, got {c.shape}")
        parts = []
        for start in range(0, len(crops), self.max_batch):
            chunk = list(crops[start:start + self.max_batch])
            if self._arcface is not None:
                feats = self._arcface.get_feat(chunk)  # one session call, (x - 127.5) / 127.5, RGB
            else:
                blob = np.stack(chunk)[:, :, :, ::-1].transpose(0, 3, 1, 2).astype(np.float32)  # BGR→RGB, 0..255
                feats = self.session.run(None, {self.input_name: blob})[0]
            parts.append(np.asarray(feats, np.float32).reshape(len(chunk), -1))
        return l2_normalise(np.concatenate(parts))


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


# --------------------------------------------------------------------------------------- all together

@dataclass(slots=True)
class AnalysedFace:
    detection: FaceDetection
    crop: np.ndarray  # 112x112x3 BGR, aligned
    quality: FaceQuality
    embedding: np.ndarray | None = field(default=None)  # (D,) L2-normalised; None when the gate refused it


class FaceAnalyzer:
    """detect → align → assess → embed for a batch of images, with one detector and one embedder call
    (per chunk) for the whole batch. Faces that fail the gate get no embedding unless ``embed_all``."""

    def __init__(self, pack: str | mp.LoadedPack = mp.DEFAULT_PACK, thresholds: Any = None, *,
                 input_size: tuple[int, int] | None = (640, 640), max_side: int = 640, max_batch: int = 64,
                 providers: Sequence[Any] | None = None, detector: FaceDetector | None = None,
                 embedder: FaceEmbedder | None = None):

        self.pack = _as_pack(pack)
        self.thresholds = thresholds if thresholds is not None else ThresholdsConfig()
        self.detector = detector or FaceDetector(self.pack, self.thresholds.face_detection, input_size,
                                                 max_side=max_side, providers=providers)
        self.embedder = embedder or FaceEmbedder(self.pack, max_batch=max_batch, providers=providers)

    def analyse(self, images: Sequence[np.ndarray], embed_all: bool = False) -> list[list[AnalysedFace]]:
        per_image: list[list[AnalysedFace]] = []
        todo: list[AnalysedFace] = []
        for img, detections in zip(images, self.detector.detect(images)):
            faces = []
            for det in detections:
                crop = align(img, det.landmarks)
                face = AnalysedFace(det, crop, assess(img, det, crop, self.thresholds))
                faces.append(face)
                if embed_all or face.quality.ok:
                    todo.append(face)
            per_image.append(faces)
        for face, emb in zip(todo, self.embedder.embed([f.crop for f in todo])):
            face.embedding = emb
        return per_image
