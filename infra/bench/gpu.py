"""`rollcall bench gpu`, and the same file run by itself on a bare GPU machine: the model stages' throughput at
batch 1, 2, 4 ... 64 on the best onnxruntime provider (TensorRT FP16, CUDA, or CPU), and an estimate of the
camera streams one such device serves.

Self-contained: standard library, numpy and onnxruntime (onnx only for a carried folder whose weights were
stored as float16 to fit the 64 MiB a device command carries), plus ``processor/ort_sessions.py`` (standard
library only), so the sessions are opened exactly as the processor opens them. The models come from a folder
with a ``models.json`` (``infra/bench/gpu_carry.py`` writes one: ``rollcall bench gpu --prepare DIR``):

    python3 infra/bench/gpu.py --models DIR [--budget 420] [--seconds 4] [--out gpu-bench.json]

Each (model, batch) is timed for ``--seconds`` after one warm-up call (TensorRT builds its engine there, once
per model: the batch profile covers 1..64); the whole run stops starting new measurements after ``--budget``
seconds, so it ends in about that time. The table is printed last; details go to the JSON file.

Streams per device (an estimate, not a measurement of the pipeline): a door stream costs ``fps`` detector
frames and ``fps * faces`` embeddings a second, a room stream ``fps`` person-detector frames (and the face
detector on the same frames when ``--room-faces``); each stage at its best rate among batches whose call stays
under ``--latency-ms``; stages one after another on the device (no overlap counted), decoding (NVDEC) and the
CPU's letterboxing not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Run as a file on a machine with none of the project's dependencies: the repository root on the path for
# processor/ort_sessions.py (standard library only, its package's __init__ is empty).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from processor import ort_sessions  # noqa: E402

SPEC_FILE = "models.json"
BATCHES = (1, 2, 4, 8, 16, 32, 64)
FP16_WEIGHTS_KEY = "rollcall_fp16_weights"  # model metadata: initializers stored as float16 to be restored


def load_spec(folder: Path) -> list[dict[str, Any]]:
    """The folder's models: role, file, input name, one item's input shape (C, H, W), the graph's input shape
    (free axes by name: what the provider choice looks at), what an item is."""
    try:
        spec = json.loads((folder / SPEC_FILE).read_text())
        models = spec["models"]
        for m in models:
            if not (folder / m["file"]).is_file():
                raise FileNotFoundError(folder / m["file"])
            m["item_shape"] = [int(d) for d in m["item_shape"]]
            m.setdefault("graph_input_shape", ["N", *m["item_shape"]])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"bench gpu: {folder}: no usable {SPEC_FILE} with its model files ({exc}); "
                         "make one with `rollcall bench gpu --prepare DIR`") from None
    return models


def model_bytes(path: Path) -> bytes:
    """The model file, its float16-stored weights turned back to float32 (needs the onnx package)."""
    data = path.read_bytes()
    if FP16_WEIGHTS_KEY.encode() not in data:
        return data
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise SystemExit(f"bench gpu: {path.name} has float16-stored weights; restoring them needs the onnx "
                         "package") from None
    model = onnx.load_from_string(data)
    names = set(next(p.value for p in model.metadata_props if p.key == FP16_WEIGHTS_KEY).split(","))
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.name in names:
            model.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    return model.SerializeToString()


def open_model(ort: Any, data: bytes, providers: list[Any]) -> Any:
    options = ort.SessionOptions()
    session = ort_sessions.open_session(ort, data, options, providers)
    return ort_sessions.bind_io(ort, session)


def time_batches(session: Any, m: dict[str, Any], batches: list[int], seconds: float, deadline: float,
                 say) -> list[dict[str, Any]]:
    """items/s and ms a call at each batch size: a warm-up call, then calls for ``seconds``."""
    rows = []
    rng = np.random.default_rng(0)
    for batch in batches:
        if time.monotonic() >= deadline:
            say(f"  {m['role']}: time budget spent, batch {batch} and above not measured")
            break
        blob = rng.uniform(0, 255, (batch, *m["item_shape"])).astype(np.float32)
        feed = {m["input"]: blob}
        started = time.perf_counter()
        session.run(None, feed)  # warm-up: TensorRT engine build, cuDNN algorithm search
        warm_s = time.perf_counter() - started
        calls, started = 0, time.perf_counter()
        while True:
            session.run(None, feed)
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= seconds or time.monotonic() >= deadline:
                break
        ms = 1000.0 * elapsed / calls
        rows.append({"batch": batch, "calls": calls, "ms_per_call": round(ms, 3),
                     "items_per_s": round(batch * calls / elapsed, 1), "warmup_s": round(warm_s, 2)})
        say(f"  {m['role']:<16} batch {batch:>3}: {rows[-1]['items_per_s']:>9.1f} {m['per']}/s, {ms:8.2f} ms a call")
    return rows


def best_rate(rows: list[dict[str, Any]], latency_ms: float) -> dict[str, Any] | None:
    """The fastest batch whose call stays within ``latency_ms`` (the smallest batch when none does)."""
    fitting = [r for r in rows if r["ms_per_call"] <= latency_ms] or rows[:1]
    return max(fitting, key=lambda r: r["items_per_s"]) if fitting else None


def streams_estimate(rates: dict[str, float], fps: float, faces: float, room_faces: bool) -> dict[str, Any]:
    """Streams one device serves from the stages' best rates (items a second), stages run one after another."""
    def cost(parts: dict[str, float]) -> float | None:
        if any(role not in rates or rates[role] <= 0 for role in parts):
            return None
        return sum(items / rates[role] for role, items in parts.items())

    door = cost({"face_detector": fps, "face_embedder": fps * faces})
    room_parts = {"person_detector": fps, **({"face_detector": fps} if room_faces else {})}
    room = cost(room_parts)
    pair = door + room if door is not None and room is not None else None
    return {"fps": fps, "faces_per_door_frame": faces, "room_faces": room_faces,
            "door_streams": int(1 / door) if door else None, "room_streams": int(1 / room) if room else None,
            "door_plus_room_pairs": int(1 / pair) if pair else None}


def device_name() -> str:
    """What runs the models: the GPU's name from nvidia-smi when there is one, else the CPU."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
            if out:
                return out.splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def providers_for(ort: Any, args: argparse.Namespace, m: dict[str, Any]) -> list[Any]:
    """The processor's provider list for the model (from its graph's input shape, free axes by name), or only
    ``--providers`` (and CPU)."""
    available = ort.get_available_providers()
    chosen = ort_sessions.provider_list(available, args.cache, [(m["input"], m["graph_input_shape"])])
    if args.providers == "best":
        return chosen
    target = {"trt": ort_sessions.TENSORRT, "cuda": ort_sessions.CUDA, "cpu": ort_sessions.CPU}[args.providers]
    if target not in available:
        raise SystemExit(f"bench gpu: onnxruntime here has no {target} (it has: {', '.join(available)})")
    if target == ort_sessions.TENSORRT and not any(ort_sessions.provider_name(p) == target for p in chosen):
        fixed = [(m["input"], ["N", *m["item_shape"]])]  # asked for, not the processor's choice: one shape
        chosen = ort_sessions.provider_list(available, args.cache, fixed)
    picked = [p for p in chosen if ort_sessions.provider_name(p) == target]
    return picked + ([] if target == ort_sessions.CPU else [ort_sessions.CPU])


def run(args: argparse.Namespace, say=print) -> dict[str, Any]:
    import onnxruntime as ort

    started = time.monotonic()
    deadline = started + args.budget
    models = load_spec(args.models)
    batches = [b for b in BATCHES if b <= args.max_batch]
    report: dict[str, Any] = {"device": device_name(), "onnxruntime": ort.__version__,
                              "available_providers": ort.get_available_providers(), "models": []}
    say(f"bench gpu on {report['device']}; providers {', '.join(ort.get_available_providers())}")
    for m in models:
        if time.monotonic() >= deadline:
            say(f"  {m['role']}: time budget spent, not measured")
            continue
        opened = time.perf_counter()
        session = open_model(ort, model_bytes(args.models / m["file"]), providers_for(ort, args, m))
        used = session.get_providers()[0]
        say(f"{m['role']} ({m['file']}, item {'x'.join(map(str, m['item_shape']))}) on {used}, "
            f"opened in {time.perf_counter() - opened:.1f} s")
        rows = time_batches(session, m, batches, args.seconds, deadline, say)
        report["models"].append({**m, "provider": used, "rows": rows})
    rates = {}
    for entry in report["models"]:
        best = best_rate(entry["rows"], args.latency_ms)
        entry["best"] = best
        if best:
            rates[entry["role"]] = best["items_per_s"]
    report["streams"] = streams_estimate(rates, args.fps, args.faces, args.room_faces)
    report["latency_ms"] = args.latency_ms
    report["wall_s"] = round(time.monotonic() - started, 1)
    return report


def format_table(report: dict[str, Any]) -> str:
    lines = [f"device: {report['device']} (onnxruntime {report['onnxruntime']})",
             f"{'provider':<26} {'model':<16} {'batch':>5} {'items/s':>10} {'ms/batch':>9}"]
    for entry in report["models"]:
        for r in entry["rows"]:
            mark = " *" if entry.get("best") is r else ""
            lines.append(f"{entry['provider']:<26} {entry['role']:<16} {r['batch']:>5} {r['items_per_s']:>10.1f} "
                         f"{r['ms_per_call']:>9.2f}{mark}")
    s = report["streams"]
    lines.append(f"* best rate within {report['latency_ms']:g} ms a call. Streams per device at {s['fps']:g} fps "
                 f"({s['faces_per_door_frame']:g} faces a door frame{', room faces too' if s['room_faces'] else ''}): "
                 f"door {s['door_streams']}, room {s['room_streams']}, door+room pairs {s['door_plus_room_pairs']} "
                 f"(models only, stages in turn; {report['wall_s']:g} s)")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu.py (rollcall bench gpu)",
                                description="Model-stage throughput at batch 1..64 and streams per device.")
    p.add_argument("--models", type=Path, required=True, help=f"folder with {SPEC_FILE} and the models")
    p.add_argument("--providers", choices=("best", "trt", "cuda", "cpu"), default="best")
    p.add_argument("--budget", type=float, default=420.0, help="seconds; no measurement starts after it")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per model and batch")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--latency-ms", type=float, default=200.0, help="longest model call counted for the estimate")
    p.add_argument("--fps", type=float, default=5.0, help="analysis rate of each stream")
    p.add_argument("--faces", type=float, default=2.0, help="faces in a door frame, on average")
    p.add_argument("--room-faces", action="store_true", help="room frames go through the face detector too")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "rollcall-trt-cache",
                   help="TensorRT engine and timing cache (kept out of $OUT: engines are large)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ".") / "gpu-bench.json")
    return p


def check_args(args: argparse.Namespace) -> None:
    if not (args.budget > 0 and args.seconds > 0 and args.latency_ms > 0 and args.fps > 0 and args.faces >= 0
            and 1 <= args.max_batch <= 64):
        raise SystemExit("bench gpu: --budget, --seconds, --latency-ms, --fps must be positive, --faces at least 0, "
                         "--max-batch 1 to 64")


def main(argv: list[str] | None = None, say=print) -> dict[str, Any]:
    args = parser().parse_args(argv)
    check_args(args)
    report = run(args, say)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    say(format_table(report))
    say(f"details: {args.out}")
    return report


if __name__ == "__main__":
    main()
