"""`rollcall bench face-precision`: the face embedder at int8 (``[models] face_embedder_precision``, the
variant processor/face_precision.py checks and caches) against fp32 (the baseline, same run) on the aligned
faces of the photo set, at batch 1 and 8."""

from __future__ import annotations

import itertools
import statistics
import time

import numpy as np

from infra.foundation.config import Config
from infra.foundation.errors import RollcallError
from processor import face_int8, face_precision
from processor import model_packs as mp
from processor.stages.faces import FaceEmbedder


def bench_face_precision(config: Config, *, rounds: int = 7, batches: tuple[int, ...] = (1, 8), faces: int = 40,
                         say=lambda _m: None) -> dict:
    """ms a face for fp32 and int8 at each batch size: every round times both on the same faces, in turns
    (fp32 first in odd rounds, int8 first in even ones, so neither always runs on a warmer machine); medians over
    the rounds, and the median of the rounds' own int8 speed-ups."""
    pack = mp.load_pack(config.models.pack)
    variant = face_precision.checked_int8(pack, config.thresholds)
    if variant.model is None:
        raise RollcallError(variant.verdict.reason)
    providers = config.models.providers or None
    embedders = {"fp32": FaceEmbedder(pack, providers=providers),
                 "int8": FaceEmbedder(pack, providers=providers, session=mp.create_session(variant.model, providers))}
    photo = [f.blob.transpose(1, 2, 0)[:, :, ::-1].astype(np.uint8) for f in face_int8.photo_faces(pack)]
    crops = list(itertools.islice(itertools.cycle(photo), faces))
    for embedder in embedders.values():  # warm-up: first runs allocate
        embedder.embed(crops[:8])
    ms = {(p, b): [] for p in embedders for b in batches}
    for round_no in range(rounds):
        say(f"round {round_no + 1} of {rounds}: {faces} faces at batch {', '.join(map(str, batches))}")
        for batch in batches:
            order = list(embedders) if round_no % 2 == 0 else list(reversed(embedders))
            for precision in order:
                started = time.perf_counter()
                for start in range(0, faces, batch):
                    embedders[precision].embed(crops[start:start + batch])
                ms[precision, batch].append(1000.0 * (time.perf_counter() - started) / faces)
    result = {"faces": faces, "photo_faces": len(photo), "rounds": rounds, "check": variant.verdict.reason}
    for batch in batches:
        fp32, int8 = ms["fp32", batch], ms["int8", batch]
        result[f"batch{batch}_fp32_ms_per_face"] = round(statistics.median(fp32), 2)
        result[f"batch{batch}_int8_ms_per_face"] = round(statistics.median(int8), 2)
        result[f"batch{batch}_int8_speedup"] = round(statistics.median(a / b for a, b in zip(fp32, int8)), 2)
        result[f"batch{batch}_int8_speedup_rounds"] = [round(a / b, 2) for a, b in zip(fp32, int8)]
    return result
