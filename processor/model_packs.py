"""Model packs at run time: a fetched pack's files (validated against its manifest) and the onnxruntime
sessions that run them (the provider chosen for this machine: TensorRT, then CUDA, then CPU).

The catalogue of packs (what each holds, sources, licences) is ``processor.model_catalogue``; fetching
one is ``processor.model_fetch`` (``rollcall models fetch``).

API: ``load_pack(name)`` -> :class:`LoadedPack`, ``create_session(path, providers)``,
``open_insightface(pack)`` (arcface packs, real insightface loaders).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from infra.foundation.errors import RollcallError
from infra.foundation.paths import cache_dir, models_dir
from infra.foundation.registry_fetch import sha256_of
from processor import ort_sessions
from processor.model_catalogue import DEFAULT_PACK, LIVENESS_MODEL, MANIFEST, ModelSpec, PackSpec, pack_spec

log = logging.getLogger("rollcall.models")

# DEFAULT_PACK is the catalogue's: the pack load_pack and the stages use when none is named
__all__ = ["DEFAULT_PACK", "LoadedPack", "create_session", "load_pack", "one_line", "open_insightface",
           "read_manifest"]


@dataclass(frozen=True)
class LoadedPack:
    name: str
    dir: Path
    spec: PackSpec
    paths: dict[str, Path]  # role -> file
    manifest: dict[str, Any] | None = field(default=None, compare=False)  # None: copied in by hand, never fetched

    def path(self, role: str) -> Path:
        return self.paths[role]

    def model(self, role: str) -> ModelSpec:
        return self.spec.model(role)

    def optional(self, role: str) -> tuple[ModelSpec, Path] | None:
        """An optional role's model (``liveness``) and its file, when a campus copied one into the pack's
        folder; None otherwise (none ships)."""
        spec = {LIVENESS_MODEL.role: LIVENESS_MODEL}.get(role)
        if spec is None:
            raise KeyError(role)
        path = self.dir / spec.filename
        return (spec, path) if path.is_file() else None

    @property
    def embedding_dim(self) -> int:
        return self.spec.embedding_dim

    @property
    def person_class_ids(self) -> tuple[int, ...]:
        return self.spec.person_class_ids

    @property
    def match_threshold(self) -> float:
        return self.spec.match_threshold


def load_pack(name: str = DEFAULT_PACK, verify: bool = False) -> LoadedPack:
    """Validated paths and metadata of a fetched (or hand-copied) pack. ``verify`` re-hashes the files."""
    spec = pack_spec(name)
    folder = models_dir() / spec.name
    missing = [m.filename for m in spec.models if not (folder / m.filename).is_file()]
    if missing:
        hint = f"run `rollcall models fetch {spec.name}`"
        if len(missing) < len(spec.models):
            hint += f" (missing in {folder}: {', '.join(missing)})"
        raise RollcallError(f"model pack '{spec.name}' is not fetched: {hint}")
    manifest = read_manifest(folder)
    if manifest is not None:
        listed = {f["file"]: f for f in manifest.get("files", [])}
        for m in spec.models:
            entry = listed.get(m.filename)
            path = folder / m.filename
            if entry is None or entry.get("bytes") != path.stat().st_size or (verify and sha256_of(path) != entry.get("sha256")):
                raise RollcallError(f"model pack '{spec.name}': {m.filename} does not match its manifest; "
                                    f"run `rollcall models fetch {spec.name}` again")
    return LoadedPack(spec.name, folder, spec, {m.role: folder / m.filename for m in spec.models}, manifest)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def one_line(exc: BaseException) -> str:
    """An exception as a short single line; network failures say so plainly."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    host = re.search(r"host='([^']+)'", text)
    where = f" {host.group(1)}" if host else ""
    if "NameResolution" in text or "Failed to resolve" in text or "Name or service not known" in text:
        return f"no network: cannot resolve{where}"
    if "timed out" in text.lower():
        return f"no network: connection to{where or ' the server'} timed out"
    if "Connection refused" in text or "Network is unreachable" in text:
        return f"no network: cannot connect to{where or ' the server'}"
    return f"{type(exc).__name__}: {text[:160]}"
# ------------------------------------------------------------------------------------------- runtime

def create_session(path: Path | str | bytes, providers: Sequence[Any] | None = None, threads: int | None = None):
    """An onnxruntime session on the best provider this onnxruntime has: TensorRT (FP16, engine cache under
    ``<cache>/tensorrt``), then CUDA, then CPU (``processor.ort_sessions``). ``path`` may also be a serialised
    model (a variant built in memory, e.g. another input size).

    ``ROLLCALL_ORT_PROVIDERS`` (comma list, e.g. ``CUDAExecutionProvider,CPUExecutionProvider``) overrides the
    choice; a GPU provider that fails to start is dropped for the rest of the process (TensorRT to CUDA to
    CPU). On a GPU the session comes wrapped for I/O binding (:class:`~processor.ort_sessions.BoundSession`,
    same ``run``). ``threads`` sets intra-op threads (CPU)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        env = os.environ.get("ROLLCALL_ORT_PROVIDERS", "").strip()
        providers = [p.strip() for p in env.split(",") if p.strip()] if env else None
    if providers is None:
        inputs = _graph_inputs(path) if ort_sessions.TENSORRT in available else ()
        providers = ort_sessions.provider_list(available, cache_dir(), inputs)
    names = [ort_sessions.provider_name(p) for p in providers]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise RollcallError(f"onnxruntime here has no {', '.join(unknown)} (it has: {', '.join(available)})")
    if any(n in ort_sessions.GPU_PROVIDERS for n in names) and hasattr(ort, "preload_dlls"):
        _preload_cuda_libraries(ort)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Several sessions (face detector, embedder, person detector) share the cores from worker threads:
    # idle intra-op threads must sleep, not spin, or they take CPU from the other sessions.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = path if isinstance(path, bytes) else str(path)
    chain = list(providers) + ([] if ort_sessions.CPU in names else [ort_sessions.CPU])  # the last resort
    try:
        session = ort_sessions.open_session(ort, model, options, chain)
    except Exception as exc:  # noqa: BLE001
        raise RollcallError(f"onnxruntime cannot load {_shown(path)} ({one_line(exc)})") from None
    return ort_sessions.bind_io(ort, session)


_PRELOADED: list[bool] = []


def _preload_cuda_libraries(ort: Any) -> None:
    """CUDA and cuDNN from the nvidia-* wheels, when installed (``make setup`` on a GPU machine with
    ``ROLLCALL_GPU_LIBS=pip``); system libraries are found by the loader anyway. Once per process."""
    if _PRELOADED:
        return
    _PRELOADED.append(True)
    try:
        ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001 - the system's libraries may still be there
        log.info("onnxruntime.preload_dlls: %s", one_line(exc))


def _graph_inputs(path: Path | str | bytes) -> list[tuple[str, list[Any]]]:
    """(name, shape) of each graph input that is not a weight; symbolic axes as their names."""
    model = onnx.load_from_string(path) if isinstance(path, bytes) else onnx.load(str(path), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    return [(i.name, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                      for d in i.type.tensor_type.shape.dim])
            for i in model.graph.input if i.name not in weights]


def _shown(path: Path | str | bytes) -> str:
    return f"a model built in memory ({len(path)} bytes)" if isinstance(path, bytes) else str(path)


def open_insightface(pack: LoadedPack, providers: Sequence[Any] | None = None) -> tuple[Any, Any]:
    """(detector, embedder) of an arcface pack as insightface's own ``model_zoo.SCRFD`` / ``ArcFaceONNX``."""
    if pack.model("face_detector").arch != "scrfd":
        raise RollcallError(f"model pack '{pack.name}' is not an insightface pack")
    try:
        from insightface.model_zoo import ArcFaceONNX, SCRFD
    except Exception as exc:  # noqa: BLE001
        raise RollcallError(f"model pack '{pack.name}' needs insightface ({one_line(exc)}); install it with "
                            "`pip install --no-deps insightface==2.1 scikit-image lazy-loader`") from None
    det_path, rec_path = pack.path("face_detector"), pack.path("face_embedder")
    detector = SCRFD(model_file=str(det_path), session=create_session(det_path, providers))
    embedder = ArcFaceONNX(model_file=str(rec_path), session=create_session(rec_path, providers))
    return detector, embedder
