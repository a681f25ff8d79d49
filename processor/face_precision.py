"""The face embedder at the precision ``[models] face_embedder_precision`` asks for: ``fp32`` as the pack
ships it, or ``int8``, the variant of processor/face_int8.py, used only when its check accepts it.

The variant is built and checked once, then kept under ``<cache>/int8`` with the check's verdict beside it,
keyed by everything the two depend on: the embedder file's and the photo set's sha256, the onnxruntime
version (its quantiser and kernels), the match threshold and margin the check judges with, and
:data:`CHECK_VERSION`. A start that finds both cached quantises and checks nothing; a variant the check
refused is remembered as refused.

A refused variant is never used: the processor falls back to fp32 with a warning that gives the check's
one-line reason. fp32 is the reference the check measures against, so the fallback keeps recognition as it
was and costs only int8's speed (1.0-1.2x here); stopping instead would leave the campus without attendance
because of, say, an onnxruntime upgrade. `rollcall models quantize` builds and checks ahead of time and
fails with the reason, for an operator who wants to know before the start.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.foundation.paths import cache_dir
from processor import face_int8
from processor import model_packs as mp
from processor.gallery import match_settings
from processor.model_catalogue import PHOTOS_DIR
from processor.photo_variants import VARIANTS

log = logging.getLogger("rollcall.processor")

PRECISIONS = ("fp32", "int8")
# Part of every cache key: change it when face_int8's build or check changes, so old verdicts go unused.
CHECK_VERSION = "face-int8-v2"


@dataclass(frozen=True)
class CheckedVariant:
    model: bytes | None  # the int8 embedder; None when the check refused it
    verdict: face_int8.Verdict
    cached: bool  # found under <cache>/int8 rather than built and checked now


def variant_key(pack: mp.LoadedPack, thresholds: Any = None) -> str:
    """The cache key of the pack's int8 embedder and its verdict (see the module)."""
    # Imported here, as processor.model_packs does: importing onnxruntime costs every `rollcall` command
    import onnxruntime

    threshold, margin = match_settings(pack.name, thresholds)
    detail = f"{CHECK_VERSION}\n{pack.name}\n{onnxruntime.__version__}\n{threshold!r} {margin!r}\n"
    digest = hashlib.sha256(detail.encode())
    for path in (pack.path("face_embedder"), *_photo_files(pack)):
        digest.update(path.name.encode())
        with open(path, "rb") as file:
            digest.update(hashlib.file_digest(file, "sha256").digest())
    return digest.hexdigest()[:24]


def _photo_files(pack: mp.LoadedPack) -> list[Path]:
    names = {p.name for p in pack.spec.photos} | {v.name for v in VARIANTS}
    return sorted(path for name in names if (path := PHOTOS_DIR / name).is_file())


def checked_int8(pack: mp.LoadedPack, thresholds: Any = None, *, rebuild: bool = False) -> CheckedVariant:
    """The pack's int8 embedder and the check's verdict on it: from the cache, else built, checked and cached."""
    key = variant_key(pack, thresholds)
    folder = cache_dir() / "int8"
    model_path, verdict_path = folder / f"face-{key}.onnx", folder / f"face-{key}.json"
    if not rebuild and verdict_path.is_file():
        saved = json.loads(verdict_path.read_text())
        verdict = face_int8.Verdict(saved["accepted"], saved["reason"], saved["figures"])
        if not verdict.accepted:
            return CheckedVariant(None, verdict, cached=True)
        if model_path.is_file():
            return CheckedVariant(model_path.read_bytes(), verdict, cached=True)
    data, verdict = face_int8.build_and_check(pack, thresholds)
    folder.mkdir(parents=True, exist_ok=True)
    if verdict.accepted:
        _write(model_path, data)
    saved = {"accepted": verdict.accepted, "reason": verdict.reason, "figures": verdict.figures}
    _write(verdict_path, json.dumps(saved, indent=1, sort_keys=True).encode())
    return CheckedVariant(data if verdict.accepted else None, verdict, cached=False)


def _write(path: Path, data: bytes) -> None:
    # whole or not at all: several processors on one machine may start together
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def embedder_session(pack: str | mp.LoadedPack, precision: str, thresholds: Any = None,
                     providers: Sequence[Any] | None = None, threads: int | None = None) -> Any | None:
    """The session a ``FaceEmbedder`` should run at ``precision``; None: its own fp32 session (fp32 asked for,
    or int8 refused by its check, with a warning saying why). ``threads``: onnxruntime's intra-op threads."""
    if precision not in PRECISIONS:
        raise ValueError(f"face embedder precision {precision!r}: one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    loaded = pack if isinstance(pack, mp.LoadedPack) else mp.load_pack(pack)
    variant = checked_int8(loaded, thresholds)
    if variant.model is None:
        log.warning("[models] face_embedder_precision = \"int8\" not used, the face embedder runs fp32: %s",
                    variant.verdict.reason)
        return None
    log.info("face embedder: int8 (%s; %s)", variant.verdict.reason, "cached" if variant.cached else "built now")
    return mp.create_session(variant.model, providers, threads)
