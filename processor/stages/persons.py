"""Person detection on room-camera frames: batched, synchronous, free of asyncio.

:class:`PersonDetector` runs the model pack's YOLOv8 person detector (``person_detector`` role; the open
pack's is a fall-detection fine-tune whose classes Normal and Fall both mean "a person"). Every image of a
batch is letterboxed onto the fixed 640x640 input (aspect kept, centred, padding 114), the batch goes through
ONE onnxruntime call, and each image's ``[4 + num_classes, 8400]`` output is decoded: box cx, cy, w, h in
input pixels, score = max over the pack's person class ids, class-agnostic NMS (``cv2.dnn.NMSBoxes``), and
boxes mapped back to the image's own pixels and clipped. A batch of N gives the same detections as N single
calls (the graph has no cross-image ops).

As in :mod:`processor.stages.faces`, the asynchronous pipeline calls :meth:`PersonDetector.detect` from a
worker thread; onnxruntime sessions may be shared between threads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx

from infra.foundation.errors import RollcallError
from processor import model_packs as mp
from processor.model_catalogue import PERSON_INT8_CALIBRATION, PHOTOS_DIR
from processor import onnx_surgery, quantize
from processor.stages.base import require_bgr

log = logging.getLogger("rollcall.processor")

PAD_VALUE = 114
PRECISIONS = ("fp32", "int8", "auto")


@dataclass(frozen=True, slots=True)
class PersonDetection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the image's pixels
    score: float
    class_id: int  # the pack's class (open pack: 0 Normal, 1 Fall)

    @property
    def bottom_center(self) -> tuple[float, float]:
        """Where the person stands (the feet): what zones are tested with."""
        return (self.box[0] + self.box[2]) / 2.0, self.box[3]


@dataclass(frozen=True, slots=True)
class Letterbox:
    scale: float
    pad_x: float
    pad_y: float


def letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` into a ``width`` x ``height`` canvas, aspect kept, centred, padded with 114."""
    h, w = image.shape[:2]
    s = min(width / w, height / h)
    nw, nh = max(1, min(width, round(w * s))), max(1, min(height, round(h * s)))
    small = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (width - nw) // 2, (height - nh) // 2
    canvas = np.full((height, width, 3), PAD_VALUE, np.uint8)
    canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = small
    return canvas, Letterbox(s, float(pad_x), float(pad_y))


class PersonDetector:
    """Batched YOLOv8 person detection (one onnxruntime call per batch)."""

    def __init__(self, pack: str | mp.LoadedPack = mp.DEFAULT_PACK, score_threshold: float | None = None,
                 nms_iou: float | None = None, providers: Sequence[Any] | None = None, session: Any = None,
                 fit_to_frame: bool = True, max_side: int | None = None, precision: str = "fp32",
                 threads: int | None = None):
        self.pack = mp.load_pack(pack) if isinstance(pack, str) else pack
        spec = self.pack.model("person_detector")
        if spec.arch != "yolov8":
            raise ValueError(f"no person detector decoding for arch {spec.arch!r}")
        self.input_width, self.input_height = spec.input_size or spec.default_size
        if max_side is not None:
            # a smaller input than the export's: cheaper (cost ~ pixels), at the price of far, small people
            if max_side < 64 or max_side % 32:
                raise ValueError(f"person detector input side {max_side} must be a multiple of 32, at least 64")
            scale = min(1.0, max_side / max(self.input_width, self.input_height))
            self.input_width, self.input_height = _ceil32(self.input_width * scale), _ceil32(self.input_height * scale)
        self.swap_rb = spec.color.upper() == "RGB"
        self.mean, self.std = float(spec.mean), float(spec.std)
        self.class_ids = tuple(int(c) for c in self.pack.spec.person_class_ids)
        self.score_threshold = float(score_threshold if score_threshold is not None
                                     else self.pack.spec.person_score_threshold)
        self.nms_iou = float(nms_iou if nms_iou is not None else self.pack.spec.person_nms_iou)
        self.providers = providers
        self.threads = threads  # onnxruntime intra-op threads per call (None: its default, every core)
        # fit_to_frame: letterbox to the frame's aspect (640 x 384 for 16:9) instead of the export's square,
        # with a session per input size; the same pixels reach the model, without the padding's cost
        self.fit_to_frame = fit_to_frame and session is None and spec.arch == "yolov8"
        export_size = tuple(spec.input_size or spec.default_size)
        if (self.input_width, self.input_height) != export_size and not self.fit_to_frame:
            raise ValueError("a person detector input other than the export's needs fit_to_frame")
        # int8 (processor/quantize.py): every input size gets its own quantised variant, the export's too
        self.precision = self._open(session, precision)
        self._sessions: dict[tuple[int, int], Any] = (
            {(export_size[1], export_size[0]): self.session} if self.precision == "fp32" else {})
        self._meanwhile: dict[tuple[int, int], Any] = {}  # int8: float sessions of sizes whose variant is building
        self._keys: dict[tuple[int, int], tuple[str, Sequence[Path]]] = {}
        self._builds = quantize.BackgroundBuilds()

    def _open(self, session: Any, precision: str) -> str:
        """Sets ``session`` (the export's fp32 session: the one given, a new one, or None for int8) and the
        model's input and output names; returns ``precision`` with auto resolved."""
        if precision not in PRECISIONS:
            raise ValueError(f"person detector precision {precision!r}: one of {', '.join(PRECISIONS)}")
        if precision == "int8" and session is not None:
            raise ValueError("a person detector given a session runs it as it is (precision fp32)")
        model_file = self.pack.path("person_detector")
        # int8 opens sessions of its own, one per input size: no fp32 one just for the names. auto opens it to
        # learn where sessions run (create_session's choice: CPU too when a GPU provider fails to start).
        self.session = session or (None if precision == "int8" else
                                   mp.create_session(model_file, self.providers, self.threads))
        if self.session is None:
            self.input_name, self.output_name = _io_names(model_file)
        else:
            self.input_name, self.output_name = self.session.get_inputs()[0].name, self.session.get_outputs()[0].name
        if precision == "auto":
            # int8 where it pays: the CPU (1.6-1.9x measured); a GPU runs the export's float as it is
            on_cpu = self.session.get_providers()[0] == "CPUExecutionProvider"
            precision = "int8" if on_cpu and session is None and self.fit_to_frame else "fp32"
            if precision == "int8":
                self.session = None  # it answered where sessions run; the int8 ones do the work
        return precision

    def input_size_for(self, shape: tuple[int, ...], side: int | None = None) -> tuple[int, int]:
        """(height, width) of the model input for a frame of this shape: the export's, or fitted to the frame;
        ``side`` (a multiple of 32, fitted frames only) caps the input's long side below the detector's own."""
        if not self.fit_to_frame:
            return self.input_height, self.input_width
        width, height = self.input_width, self.input_height
        if side is not None and side < max(width, height):
            shrink = side / max(width, height)
            width, height = _ceil32(width * shrink), _ceil32(height * shrink)
        h, w = shape[:2]
        scale = min(width / w, height / h)
        return min(height, _ceil32(h * scale)), min(width, _ceil32(w * scale))

    @property
    def input_side(self) -> int:
        """The long side of the detector's own input (the most a per-image ``side`` can ask for)."""
        return max(self.input_width, self.input_height)

    def _session(self, size: tuple[int, int]):
        session = self._sessions.get(size)
        if session is not None:
            return session
        if self.precision == "int8":
            key, photos = self._int8_keyed(size)
            folder = quantize.variants_dir()
            command = ["-m", "processor.int8_build", self.pack.name, str(size[0]), str(size[1]), str(folder)]
            if not self._builds.ready(key, command, folder, f"person detector {size[1]}x{size[0]}"):
                return self._float_meanwhile(size)  # its variant is being built (quantize.BackgroundBuilds)
            data = self._int8_variant(size, key, photos, folder)  # cached now: read, not built
        else:
            data = self._sized_model(size).SerializeToString()
        session = self._sessions[size] = mp.create_session(data, self.providers, self.threads)
        self._meanwhile.pop(size, None)
        return session

    def _float_meanwhile(self, size: tuple[int, int]):
        """The float model at ``size``: what serves an int8 detector's size until its variant is built."""
        session = self._meanwhile.get(size)
        if session is None:
            data = self._sized_model(size).SerializeToString()
            session = self._meanwhile[size] = mp.create_session(data, self.providers, self.threads)
        return session

    def _sized_model(self, size: tuple[int, int]) -> onnx.ModelProto:
        return onnx_surgery.yolov8_input_size(onnx.load(self.pack.path("person_detector")), *size)

    def _int8_keyed(self, size: tuple[int, int]) -> tuple[str, Sequence[Path]]:
        """(the cache key of ``size``'s int8 variant, its calibration photos): the key hashes the model and the
        photos, so it is made once per size, not per batch."""
        keyed = self._keys.get(size)
        if keyed is None:
            photos = calibration_photos()
            keyed = self._keys[size] = (self._int8_key(size, photos), photos)
        return keyed

    def int8_key(self, size: tuple[int, int]) -> str:
        """The cache key of the int8 variant for ``size`` (height, width): it changes with the model and with
        the calibration photos."""
        return self._int8_keyed(size)[0]

    def int8_model(self, size: tuple[int, int], folder: Path | None = None) -> bytes:
        """The serialised int8 variant for ``size`` (height, width): from the cache (``folder``, default
        :func:`~processor.quantize.variants_dir`), or built here and now, and cached."""
        return self._int8_variant(size, *self._int8_keyed(size), folder)

    @property
    def int8_pending(self) -> bool:
        """Some input size is served by the float model while its int8 variant is built."""
        return bool(self._meanwhile)

    def wait_for_int8(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the int8 variants being built; True when none is left to build."""
        return self._builds.wait(timeout_s)

    def _int8_variant(self, size: tuple[int, int], key: str, photos: Sequence[Path],
                      folder: Path | None = None) -> bytes:
        return quantize.cached_int8_variant(key, lambda: self._sized_model(size), self.input_name,
                                            lambda: self._calibration(size, photos), folder)

    def _int8_key(self, size: tuple[int, int], photos: Sequence[Path]) -> str:
        # what the calibration blobs are made with besides the photos' bytes (the version covers the code)
        detail = (f"{size[0]}x{size[1]} {self.input_name} rgb={self.swap_rb} mean={self.mean} std={self.std} "
                  f"pad={PAD_VALUE}")
        return quantize.variant_key(self.pack.path("person_detector"), photos, detail)

    def input_sizes(self, frame_shape: tuple[int, int], sides: Sequence[int]) -> list[tuple[int, int]]:
        """The distinct model inputs (height, width) a frame of ``frame_shape`` (height, width) gets at these
        long sides (what :class:`~processor.stages.input_size.InputSizeChooser` may pick)."""
        return sorted({self.input_size_for(frame_shape, side) for side in sides}, reverse=True)

    def prebuild_int8(self, sizes: Sequence[tuple[int, int]]) -> list[tuple[tuple[int, int], bool]]:
        """Build (unless cached) the int8 variant of each size; (size, True if built now) for each."""
        done = []
        for size in sizes:
            key, photos = self._int8_keyed(size)
            built = not quantize.int8_variant_cached(key)
            if built:
                self._int8_variant(size, key, photos)
            done.append((size, built))
        return done

    def _calibration(self, size: tuple[int, int], photos: Sequence[Path] | None = None) -> list[np.ndarray]:
        """The model pack's sample photos of people, as this detector feeds them at ``size``."""
        images = [image for image in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in photos or calibration_photos())
                  if image is not None]
        return [self.preprocess([image], size)[0] for image in images]

    def preprocess(self, images: Sequence[np.ndarray],
                   size: tuple[int, int] | None = None) -> tuple[np.ndarray, list[Letterbox]]:
        """The NCHW float32 blob of the batch at ``size`` (height, width; default: the export's) and each
        image's letterbox transform."""
        height, width = size or (self.input_height, self.input_width)
        blob = np.empty((len(images), 3, height, width), np.float32)
        boxes = []
        for i, img in enumerate(images):
            canvas, lb = letterbox(img, width, height)
            if self.swap_rb:
                canvas = canvas[:, :, ::-1]
            blob[i] = canvas.transpose(2, 0, 1)
            boxes.append(lb)
        if self.mean:
            blob -= self.mean
        if self.std != 1.0:
            blob /= self.std
        return blob, boxes

    def detect(self, images: Sequence[np.ndarray],
               sides: Sequence[int | None] | None = None) -> list[list[PersonDetection]]:
        """Persons in each BGR image, best score first, in that image's own pixel coordinates. ``sides``: per
        image, a smaller input long side to run it at (see :meth:`input_size_for`), or None."""
        if not len(images):
            return []
        require_bgr(images)
        found: list[list[PersonDetection]] = [[] for _ in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            side = sides[i] if sides is not None else None
            groups.setdefault(self.input_size_for(img.shape, side), []).append(i)
        for size, members in groups.items():
            blob, boxes = self.preprocess([images[i] for i in members], size)
            (output,) = self._session(size).run([self.output_name], {self.input_name: blob})
            for k, i in enumerate(members):
                found[i] = self._decode(output[k], boxes[k], images[i].shape[:2])
        return found

    def _decode(self, out: np.ndarray, lb: Letterbox, shape: tuple[int, int]) -> list[PersonDetection]:
        # out: [4 + num_classes, anchors]
        scores_all = out[4:][list(self.class_ids)]  # [len(class_ids), anchors]
        best = scores_all.argmax(0)
        score = scores_all[best, np.arange(scores_all.shape[1])]
        idx = np.flatnonzero(score >= self.score_threshold)
        if not idx.size:
            return []
        cx, cy, w, h = (out[k, idx] for k in range(4))
        x = (cx - w / 2 - lb.pad_x) / lb.scale
        y = (cy - h / 2 - lb.pad_y) / lb.scale
        xywh = np.stack([x, y, w / lb.scale, h / lb.scale], 1).astype(np.float64)
        score_a = score[idx].astype(np.float64)
        keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), score_a.tolist(), self.score_threshold, self.nms_iou),
                          int).ravel()
        keep = keep[np.argsort(-score_a[keep], kind="stable")]
        h_img, w_img = shape
        found = []
        for i in keep:
            bx, by, bw, bh = xywh[i]
            box = (max(0.0, float(bx)), max(0.0, float(by)),
                   min(float(w_img), float(bx + bw)), min(float(h_img), float(by + bh)))
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            found.append(PersonDetection(box, float(score_a[i]), int(self.class_ids[int(best[idx[i]])])))
        return found


def calibration_photos() -> list[Path]:
    """The int8 variant's calibration set: the sample photos named in
    :data:`~processor.model_catalogue.PERSON_INT8_CALIBRATION` (``rollcall models fetch`` puts them in place),
    whatever else the folder holds."""
    photos = [PHOTOS_DIR / name for name in sorted(PERSON_INT8_CALIBRATION)]
    missing = [p.name for p in photos if not p.is_file()]
    if missing:
        raise RollcallError(f"int8 person detector: {len(missing)} calibration photo(s) missing from {PHOTOS_DIR} "
                            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): run `rollcall models fetch`")
    return photos


def _io_names(model_file: Path) -> tuple[str, str]:
    """The model's (input, output) names, from its graph: what its sessions will be fed and asked for."""
    graph = onnx.load(str(model_file), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return next(i.name for i in graph.input if i.name not in weights), graph.output[0].name


def _ceil32(value: float) -> int:
    return max(32, int(np.ceil(value / 32.0)) * 32)
