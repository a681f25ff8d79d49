"""onnxruntime sessions for whatever accelerator this machine has: the provider list (TensorRT with FP16 and
an engine cache, then CUDA, then CPU), a step-down when a provider fails to start, and I/O binding.

Standard library only at import, and no other project module: ``infra/bench/gpu.py`` carries this file to a
bare GPU machine (its own Python, none of the project's dependencies) and runs the models exactly as the
processor does. ``processor.model_packs.create_session`` is the processor's way in.

* TensorRT (``trt_fp16_enable``, ``trt_engine_cache_enable`` and a timing cache under ``<cache>/tensorrt``):
  building an engine takes seconds to minutes per model and input-shape profile; the cache makes the second
  start instant. Models whose only free axis is the batch get one profile, batch 1 to :data:`MAX_BATCH`, so a
  new batch size never rebuilds the engine; a model with free spatial axes (the face detector sized per
  batch) runs on CUDA instead.
* CUDA: the cuDNN algorithm search is done once per shape (EXHAUSTIVE pays for long-lived sessions), the
  memory arena grows by what is asked (not doubling: several sessions share the card).
* I/O binding (:class:`BoundSession`): on a GPU each input goes host to device once into a buffer kept per
  input shape, outputs stay on the device until copied out once; a plain ``run`` allocates both every call.
  On a CPU the session is returned as it is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("rollcall.models")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
MAX_BATCH = 64  # the largest batch a TensorRT profile covers (the batchers' caps stay below it)
OPT_BATCH = 16  # the batch TensorRT tunes its kernels for

# providers that failed to start once in this process: not tried again (a TensorRT without its libraries
# would otherwise fail, and log, for every session of every input size)
_BROKEN: set[str] = set()
_BROKEN_LOCK = threading.Lock()


def batch_profile(inputs: Sequence[tuple[str, Sequence[Any]]], max_batch: int = MAX_BATCH,
                  opt_batch: int = OPT_BATCH) -> dict[str, str]:
    """TensorRT profile options for a model whose only symbolic axis is the leading batch axis (one engine
    for batch 1..max_batch); empty for any other model (TensorRT then builds per shape, cached)."""
    shapes = []
    for name, shape in inputs:
        rest = list(shape[1:])
        if not shape or any(not isinstance(d, int) or d <= 0 for d in rest) or ":" in name or "," in name:
            return {}
        shapes.append((name, rest))
    if not shapes:
        return {}

    def spec(batch: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in [batch, *rest])}" for name, rest in shapes)

    return {"trt_profile_min_shapes": spec(1), "trt_profile_opt_shapes": spec(min(opt_batch, max_batch)),
            "trt_profile_max_shapes": spec(max_batch)}


def provider_list(available: Sequence[str], cache: Path | None, inputs: Sequence[tuple[str, Sequence[Any]]] = (),
                  device_id: int = 0) -> list[Any]:
    """The providers to ask for, best first, with their options: TensorRT (FP16, engine and timing cache under
    ``cache``/tensorrt, batch profile), CUDA, then CPU; only those ``available`` and not seen failing.

    ``inputs`` (name, shape) of the model: one with a free axis besides the batch (YuNet's any-size input) skips
    TensorRT, which would build a new engine, for seconds, at every input shape outside the one it has."""
    chosen: list[Any] = []
    profile = batch_profile(inputs)
    if TENSORRT in available and TENSORRT not in _BROKEN and (profile or not inputs):
        options: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": True}
        if cache is not None:
            engines = Path(cache) / "tensorrt"
            engines.mkdir(parents=True, exist_ok=True)
            options.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines),
                            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(engines)})
        options.update(profile)
        chosen.append((TENSORRT, options))
    if CUDA in available and CUDA not in _BROKEN:
        chosen.append((CUDA, {"device_id": device_id, "cudnn_conv_algo_search": "EXHAUSTIVE",
                              "arena_extend_strategy": "kSameAsRequested", "do_copy_in_default_stream": True}))
    chosen.append(CPU)
    return chosen


def provider_name(provider: Any) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def open_session(ort: Any, model: str | bytes, options: Any, providers: Sequence[Any]) -> Any:
    """``ort.InferenceSession`` on ``providers``; a GPU provider that fails to start is dropped (and remembered
    for this process) and the session opened on the rest, down to CPU. A CPU failure is raised."""
    remaining = list(providers)
    while True:
        try:
            return ort.InferenceSession(model, options, providers=remaining)
        except Exception as exc:  # noqa: BLE001 - which provider broke is only in the message
            first = provider_name(remaining[0]) if remaining else CPU
            if first == CPU or len(remaining) < 2:
                raise
            with _BROKEN_LOCK:
                _BROKEN.add(first)
            log.warning("onnxruntime: %s does not start here (%s); using %s", first,
                        " ".join(str(exc).split())[:200], ", ".join(provider_name(p) for p in remaining[1:]))
            remaining = remaining[1:]


def on_gpu(session: Any) -> bool:
    """Whether ``session`` runs on a GPU provider (its first provider)."""
    providers = session.get_providers()
    return bool(providers) and providers[0] in GPU_PROVIDERS


def bind_io(ort: Any, session: Any) -> Any:
    """``session`` wrapped in :class:`BoundSession` when it runs on a GPU, else ``session`` itself."""
    return BoundSession(ort, session, "cuda") if on_gpu(session) else session


class BoundSession:
    """An onnxruntime session whose ``run`` goes through I/O binding: inputs copied once into device buffers
    kept per (input, shape, dtype), outputs left on the device by the run and copied out once. Everything else
    (``get_inputs``, ``get_providers``...) is the wrapped session's. ``device`` "cpu" binds host memory: the
    same code path, for tests on machines without a GPU."""

    def __init__(self, ort: Any, session: Any, device: str = "cuda", device_id: int = 0):
        self._ort, self._session, self._device, self._device_id = ort, session, device, device_id
        self._outputs = [o.name for o in session.get_outputs()]
        self._buffers: dict[tuple[str, tuple[int, ...], str], Any] = {}
        self._lock = threading.Lock()  # buffers are reused: one run at a time per session

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    @property
    def session(self) -> Any:
        return self._session

    def _input_value(self, name: str, array: Any) -> Any:
        key = (name, tuple(array.shape), str(array.dtype))
        value = self._buffers.get(key)
        if value is None:
            if len(self._buffers) > 32:  # many shapes (a detector sized per batch): keep the recent ones
                self._buffers.clear()
            value = self._buffers[key] = self._ort.OrtValue.ortvalue_from_numpy(array, self._device, self._device_id)
        else:
            value.update_inplace(array)
        return value

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, Any], run_options: Any = None) -> list[Any]:
        names = list(output_names) if output_names else self._outputs
        with self._lock:
            binding = self._session.io_binding()
            for name, array in input_feed.items():
                binding.bind_ortvalue_input(name, self._input_value(name, _contiguous(array)))
            for name in names:
                binding.bind_output(name, self._device, self._device_id)
            self._session.run_with_iobinding(binding, run_options)
            return binding.copy_outputs_to_cpu()


def _contiguous(array: Any) -> Any:
    flags = getattr(array, "flags", None)
    if flags is not None and flags["C_CONTIGUOUS"]:
        return array
    return array.copy(order="C")
