"""Model packs at run time: a fetched pack's files (validated against its manifest) and the onnxruntime
sessions that run them (the provider chosen for this machine: TensorRT, then CUDA, then CPU).

The catalogue of packs (what each holds, sources, licences) is ``processor.model_catalogue``; fetching
one is ``processor.model_fetch`` (``rollcall models fetch``).

API: ``load_pack(name)`` -> :class:`LoadedPack`, ``create_session(path, providers)``,
``open_insightface(pack)`` (arcface packs, real insightface loaders).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.foundation.errors import RollcallError
from infra.foundation.paths import cache_dir, models_dir
from infra.foundation.registry_fetch import sha256_of
from processor.model_catalogue import DEFAULT_PACK, MANIFEST, ModelSpec, PackSpec, pack_spec

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
    """An onnxruntime session on the best provider this onnxruntime has: TensorRT, then CUDA, then CPU.
    ``path`` may also be a serialised model (a variant built in memory, e.g. another input size).

    ``ROLLCALL_ORT_PROVIDERS`` (comma list, e.g. ``CUDAExecutionProvider,CPUExecutionProvider``) overrides the
    choice; a provider that fails to start falls back to CPU. ``threads`` sets intra-op threads (CPU)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        env = os.environ.get("ROLLCALL_ORT_PROVIDERS", "").strip()
        if env:
            providers = [p.strip() for p in env.split(",") if p.strip()]
        else:
            providers = []
            if "TensorrtExecutionProvider" in available:
                engines = cache_dir() / "tensorrt"
                engines.mkdir(parents=True, exist_ok=True)
                providers.append(("TensorrtExecutionProvider", {
                    "trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines), "trt_fp16_enable": True}))
            if "CUDAExecutionProvider" in available:
                providers.append("CUDAExecutionProvider")
            providers.append("CPUExecutionProvider")
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise RollcallError(f"onnxruntime here has no {', '.join(unknown)} (it has: {', '.join(available)})")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Several sessions (face detector, embedder, person detector) share the cores from worker threads:
    # idle intra-op threads must sleep, not spin, or they take CPU from the other sessions.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=list(providers))
    except Exception as exc:  # noqa: BLE001
        if names == ["CPUExecutionProvider"]:
            raise RollcallError(f"onnxruntime cannot load {_shown(path)} ({one_line(exc)})") from None
        return ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=["CPUExecutionProvider"])


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
