"""`rollcall bench precision`: the room person detector at int8 against fp32 on the class-rush scenario's
room video. Here, beside the scenarios it renders, not in processor/: the processor's layer knows no
scenarios."""

from __future__ import annotations

import time

from infra.foundation.paths import PROJECT_ROOT
from infra.scenario.check import iou
from infra.scenario.mounts import render_cached
from infra.bench.common import load_frames
from infra.foundation.config import Config
from processor.stages.persons import PersonDetector

SPEC = PROJECT_ROOT / "infra" / "scenarios" / "class-rush.toml"


def bench_person_precision(config: Config, *, frames_count: int = 40, rounds: int = 3, say=lambda _m: None) -> dict:
    """The room person detector at fp32 (the baseline) and int8 on the same frames of the class-rush room
    video, interleaved round by round so both see the same machine: ms a frame, the speed-up, and how many
    fp32 detections (score >= 0.5) have an int8 twin (IoU >= 0.6)."""
    _spec, rendered = render_cached(SPEC)
    frames = load_frames(rendered.room_video, start_s=8.0, count=frames_count, every=5)
    detectors = {precision: PersonDetector(config.models.pack, score_threshold=config.thresholds.person_detection,
                                           max_side=config.tracking.person_input_px, precision=precision,
                                           providers=config.models.providers or None)
                 for precision in ("fp32", "int8")}
    found = {precision: [d.detect([f])[0] for f in frames] for precision, d in detectors.items()}  # warm-up too
    seconds = {precision: 0.0 for precision in detectors}
    for round_no in range(rounds):
        say(f"round {round_no + 1} of {rounds}: {len(frames)} frames each")
        for precision, detector in detectors.items():
            started = time.perf_counter()
            for frame in frames:
                detector.detect([frame])
            seconds[precision] += time.perf_counter() - started
    ms = {p: 1000.0 * s / (rounds * len(frames)) for p, s in seconds.items()}
    strong = [(i, d) for i, dets in enumerate(found["fp32"]) for d in dets if d.score >= 0.5]
    twins = sum(1 for i, d in strong if any(iou(d.box, e.box) >= 0.6 for e in found["int8"][i]))
    return {"frames": len(frames), "rounds": rounds, "fp32_ms_per_frame": round(ms["fp32"], 1),
            "int8_ms_per_frame": round(ms["int8"], 1), "int8_speedup": round(ms["fp32"] / ms["int8"], 2),
            "fp32_persons": len(strong), "int8_twins": twins,
            "int8_twin_share": round(twins / len(strong), 3) if strong else None}
