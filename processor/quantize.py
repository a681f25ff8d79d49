"""An int8 variant of the YOLOv8 person detector, for CPUs (``[models] person_precision = "int8"``).

On a CPU the room camera's person detector is most of the processor's work (measured: about 85 % of the
inference gate's time in a loaded class-start scenario), and the rate it can run at is what room
tracking stands on. Static int8 quantisation (onnxruntime's ``quantize_static``, QDQ format, per-channel
weights, MinMax calibration) makes it about 1.6x faster on this AVX2 machine with nearly the same
detections (``rollcall bench persons`` shows the figures).

What is not quantised: the detection head's last convolutions and its box decoding (the distribution
focal loss, anchors, strides and the final concat of box pixels 0-640 with class scores 0-1). One int8
scale for that concat leaves no resolution for the scores: quantised whole, the model finds nobody.

Calibration uses real photographs of people: the model pack's sample photos (group photos, a bus stop,
portraits; ``rollcall models fetch``), letterboxed exactly as the detector feeds its input. The variant is
built once per model, input size and calibration set, and cached (``<cache>/int8``); a change of any of
them builds a new one. The cache key is made of file digests (:func:`variant_key`), so a start that finds
its variant cached letterboxes nothing and quantises nothing.

A running processor never builds a variant in the cameras' way (:class:`BackgroundBuilds`): building one
takes ~7 s of both cores of this machine, and a room camera meeting an input size with no variant yet used
to wait for it, with the doors starved beside it (a first `scenario run class-rush --load 2` with int8 on a
fresh machine, three sizes built as the cameras met them: recognitions 6 of 18, attendance recall 0.4). The
size is built in a process of its own at the lowest CPU priority (``python -m processor.int8_build``) while
the float model serves it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import onnx

from infra.foundation.errors import RollcallError
from infra.foundation.paths import cache_dir

log = logging.getLogger("rollcall.processor")

MIN_CALIBRATION_IMAGES = 8
# Part of every cache key: change it when int8_variant's settings or the way the detector letterboxes and
# normalises the calibration photos change (what the key's file digests do not see), so old variants go unused.
VARIANT_VERSION = "int8-v2"
# YOLOv8's detection head: its first two convolutions per branch are quantised like the rest of the
# network; its last convolution per branch and everything after (box decoding) stay float.
_HEAD_CONVS_QUANTISED = re.compile(r"/cv[23]\.\d+/cv[23]\.\d+\.[01]/")


def head_prefix(model: onnx.ModelProto) -> str:
    """The name prefix of the module that produces the model's output (``/model.22/`` for YOLOv8)."""
    output = model.graph.output[0].name
    producer = next((n for n in model.graph.node if output in n.output), None)
    match = re.match(r"(/[^/]+/)", producer.name if producer is not None else "")
    if match is None:
        raise RollcallError("int8 person detector: the model's output node has no module name to find its "
                            "detection head by (not a YOLOv8 export?)")
    return match.group(1)


def float_head_nodes(model: onnx.ModelProto) -> list[str]:
    prefix = head_prefix(model)
    return [n.name for n in model.graph.node
            if n.name.startswith(prefix) and not _HEAD_CONVS_QUANTISED.search(n.name)]


def int8_variant(model: onnx.ModelProto, input_name: str, calibration: Sequence[np.ndarray]) -> bytes:
    """The serialised int8 model, calibrated on ``calibration`` (one NCHW float32 blob per image)."""
    # Imported here: onnxruntime.quantization is heavy (56 more modules, onnx's reference evaluator among them,
    # ~60 ms) and only building a new int8 variant needs it: not an fp32 detector, nor a start whose variant is
    # cached.
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) < MIN_CALIBRATION_IMAGES:
        raise RollcallError(f"int8 person detector: {len(calibration)} calibration photos, at least "
                            f"{MIN_CALIBRATION_IMAGES} needed (run `rollcall models fetch` for the sample photos)")

    class Blobs(CalibrationDataReader):
        def __init__(self) -> None:
            self._blobs = iter(calibration)

        def get_next(self):
            blob = next(self._blobs, None)
            return None if blob is None else {input_name: blob}

    with tempfile.TemporaryDirectory(prefix="rollcall-int8-") as tmp:
        plain, prepared, quantised = (Path(tmp) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(model, plain)
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantised), Blobs(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=float_head_nodes(model))
        return quantised.read_bytes()


def variant_key(model_file: Path, photos: Sequence[Path], detail: str) -> str:
    """The cache key of an int8 variant: the sha256 of the model file's bytes and of each calibration photo
    file's, ``detail`` (the input size and preprocessing the blobs are made with) and :data:`VARIANT_VERSION`."""
    digest = hashlib.sha256(f"{VARIANT_VERSION}\n{detail}\n".encode())
    for path in (model_file, *photos):
        with open(path, "rb") as file:
            digest.update(hashlib.file_digest(file, "sha256").digest())
    return digest.hexdigest()[:24]


def variants_dir() -> Path:
    """Where int8 variants are cached."""
    return cache_dir() / "int8"


def int8_variant_cached(key: str, folder: Path | None = None) -> bool:
    """Whether :func:`cached_int8_variant` would find ``key`` built already (in ``folder``, default
    :func:`variants_dir`)."""
    return ((folder or variants_dir()) / f"{key}.onnx").is_file()


def cached_int8_variant(key: str, model: Callable[[], onnx.ModelProto], input_name: str,
                        calibration: Callable[[], Sequence[np.ndarray]], folder: Path | None = None) -> bytes:
    """:func:`int8_variant` of ``model()`` calibrated on ``calibration()``, built once per ``key``
    (:func:`variant_key`) and kept in ``folder`` (default :func:`variants_dir`); both are called only to
    build one."""
    path = (folder or variants_dir()) / f"{key}.onnx"
    if path.is_file():
        return path.read_bytes()
    data = int8_variant(model(), input_name, calibration())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")  # a build in another process may write the same key
    partial.write_bytes(data)
    partial.replace(path)
    return data


class BackgroundBuilds:
    """int8 variants built in processes of their own at the lowest CPU priority, each key once at a time:
    what a running processor uses so that no camera waits for a build (the float model serves meanwhile).

    A process, not a thread: quantising is largely Python (the graph's rewriting, the calibration's
    bookkeeping), and a low-priority thread of the processor holding the GIL while the CPU is busy elsewhere
    stalls every other thread of it (tried: under a two-core hog the event loop froze long enough for a
    database connection to time out). A build still running when the processor exits finishes on its own
    (the variant is cached for the next start)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, tuple[subprocess.Popen, IO[bytes]]] = {}  # key -> the build, its stderr
        self.failed: dict[str, str] = {}  # key -> why its build failed (not tried again: the float model stays)

    def ready(self, key: str, command: Sequence[str], folder: Path, what: str) -> bool:
        """True when the variant ``key`` is cached in ``folder``; otherwise False, and its build (``command``,
        which caches it there) is started unless it runs or failed already. ``what``: the variant in words."""
        with self._lock:
            build = self._running.get(key)
            if build is not None and build[0].poll() is not None:
                self._ended(key, folder, what)
                build = None
            if int8_variant_cached(key, folder):
                return True
            if build is not None or key in self.failed:
                return False
            log.warning("%s: no int8 variant on this machine yet; building it in a process of its own at the "
                        "lowest CPU priority, the float model runs meanwhile (`rollcall models quantize "
                        "--person` builds them ahead)", what)
            errors = tempfile.TemporaryFile()
            self._running[key] = (subprocess.Popen([sys.executable, *command], stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.DEVNULL, stderr=errors), errors)
        return False

    def _ended(self, key: str, folder: Path, what: str) -> None:
        build, errors = self._running.pop(key)
        errors.seek(0)
        said = errors.read().decode("utf-8", "replace").strip().splitlines()
        errors.close()
        if int8_variant_cached(key, folder):
            log.info("%s: int8 variant built; it takes over from the float model", what)
            return
        self.failed[key] = (said[-1] if said else f"exit status {build.returncode}")[:300]
        log.error("%s: building its int8 variant failed (%s); the float model goes on serving it", what,
                  self.failed[key])

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the builds running now; True when none is left running."""
        with self._lock:
            builds = [build for build, _ in self._running.values()]
        for build in builds:
            with contextlib.suppress(subprocess.TimeoutExpired):
                build.wait(timeout_s)
        with self._lock:
            return all(build.poll() is not None for build, _ in self._running.values())
