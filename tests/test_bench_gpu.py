"""`rollcall bench gpu` (infra/bench/gpu.py) on a CPU with a tiny time box: the carried models folder (fits a
device command, float16-stored weights restored to the same graph), the run as a separate process that
imports nothing of the project but processor/ort_sessions.py, and the streams estimate's arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from infra.bench import gpu
from infra.bench.gpu_carry import CARRY_LIMIT_BYTES, prepare_carry
from infra.foundation.paths import PROJECT_ROOT
from processor import model_fetch
from processor import model_packs as mp

# what a bare GPU machine lacks: the project's other dependencies and its other modules
FOREIGN = ("infra", "consumers", "dashboard", "schemas", "pydantic", "av", "click", "cv2", "aiokafka")


@pytest.fixture(scope="module")
def carried(tmp_path_factory):
    model_fetch.fetch_pack("open")
    folder = tmp_path_factory.mktemp("carry")
    return folder, prepare_carry(folder)


def test_carried_folder_fits_a_device_command_and_restores_the_weights(carried):
    folder, entries = carried
    assert [e["role"] for e in entries] == ["face_detector", "face_embedder", "person_detector"]
    assert sum((folder / e["file"]).stat().st_size for e in entries) <= CARRY_LIMIT_BYTES
    assert json.loads((folder / gpu.SPEC_FILE).read_text())["models"] == entries
    restored = onnx.load_from_string(gpu.model_bytes(folder / "face_embedder.onnx"))
    original = onnx.load(mp.load_pack("open").path("face_embedder"))
    assert [n.op_type for n in restored.graph.node] == [n.op_type for n in original.graph.node]
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in restored.graph.initializer
               if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16))
    blob = np.random.default_rng(1).uniform(0, 255, (2, 3, 112, 112)).astype(np.float32)
    a = ort.InferenceSession(restored.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"data": blob})[0]
    b = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"data": blob})[0]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999  # only the weights' rounding differs


def test_runs_alone_on_a_cpu_within_its_time_box(carried, tmp_path):
    folder, _ = carried
    out = tmp_path / "bench.json"
    code = (f"import runpy, sys, json\nsys.argv = ['gpu.py', '--models', {str(folder)!r}, '--budget', '20', "
            f"'--seconds', '0.05', '--max-batch', '2', '--out', {str(out)!r}]\n"
            f"runpy.run_path({str(PROJECT_ROOT / 'infra/bench/gpu.py')!r}, run_name='__main__')\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FOREIGN!r} or "
            f"(m.startswith('processor.') and m != 'processor.ort_sessions'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    report = json.loads(out.read_text())
    assert [m["role"] for m in report["models"]] == ["face_detector", "face_embedder", "person_detector"]
    for model in report["models"]:
        assert model["provider"] == "CPUExecutionProvider"
        assert [r["batch"] for r in model["rows"]] == [1, 2] and all(r["items_per_s"] > 0 for r in model["rows"])
    assert report["streams"]["door_streams"] is not None and report["wall_s"] < 60
    assert "items/s" in done.stdout and "Streams per device" in done.stdout


def test_streams_estimate_and_best_rate():
    rates = {"face_detector": 100.0, "face_embedder": 400.0, "person_detector": 50.0}
    s = gpu.streams_estimate(rates, fps=5.0, faces=2.0, room_faces=False)
    # a door stream: 5/100 + 10/400 = 0.075 s a second; a room stream: 5/50 = 0.1; a pair 0.175
    assert (s["door_streams"], s["room_streams"], s["door_plus_room_pairs"]) == (13, 10, 5)
    assert gpu.streams_estimate({"face_detector": 100.0}, 5, 2, False)["door_streams"] is None
    rows = [{"batch": 1, "items_per_s": 10.0, "ms_per_call": 100.0},
            {"batch": 2, "items_per_s": 15.0, "ms_per_call": 133.0},
            {"batch": 4, "items_per_s": 16.0, "ms_per_call": 250.0}]
    assert gpu.best_rate(rows, 200.0)["batch"] == 2
    assert gpu.best_rate(rows, 50.0)["batch"] == 1  # none fits: the smallest batch
    assert gpu.best_rate([], 50.0) is None


def test_bad_options_and_folders_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match="--max-batch 1 to 64"):
        gpu.main(["--models", str(tmp_path), "--max-batch", "128"])
    with pytest.raises(SystemExit, match="no usable models.json"):
        gpu.main(["--models", str(tmp_path)])
