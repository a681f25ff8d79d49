"""The folder ``infra/bench/gpu.py`` measures: the pack's three models as the processor runs them on a 720p
camera (face detector at 640x384, embedder at 112x112, person detector resized to 640x384), with a
``models.json``, small enough to travel with a device command (64 MiB in all, working tree included).

The open pack's fp32 files are 84 MB; their float32 weights are stored here as float16 (42 MB) and turned
back into float32 when ``gpu.py`` loads them: the graphs and the arithmetic are the fp32 models', only the
weights are rounded (throughput is what is measured here, not accuracy).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from infra.bench.gpu import FP16_WEIGHTS_KEY, SPEC_FILE
from infra.foundation.errors import RollcallError
from processor import model_packs as mp
from processor import onnx_surgery

CARRY_LIMIT_BYTES = 60 * 1024 * 1024  # of the 64 MiB a device command carries, the working tree takes ~2
FRAME_HW = (384, 640)  # a 16:9 camera frame fitted into 640 (the processor's default for 720p)
SMALL_ENOUGH = 1_000_000  # models under this many bytes travel as they are


def store_weights_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every float32 initializer stored as float16, their names in the model's metadata (gpu.py restores)."""
    names = []
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.data_type == onnx.TensorProto.FLOAT and int(np.prod(tensor.dims)) > 16:
            half = numpy_helper.to_array(tensor).astype(np.float16)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(half, tensor.name))
            names.append(tensor.name)
    model.metadata_props.add(key=FP16_WEIGHTS_KEY, value=",".join(names))
    return model


def _input_shape(model: onnx.ModelProto, name: str) -> list:
    graph_input = next(i for i in model.graph.input if i.name == name)
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in graph_input.type.tensor_type.shape.dim]


def prepare_carry(dest: Path, pack_name: str = mp.DEFAULT_PACK) -> list[dict]:
    """Write the models and ``models.json`` into ``dest``; refuse a pack that would not fit a device command."""
    pack = mp.load_pack(pack_name)
    if pack.model("person_detector").arch != "yolov8" or pack.model("face_detector").arch != "yunet":
        raise RollcallError(f"bench gpu --prepare: pack '{pack.name}' is not the open pack's kind (YuNet, SFace, "
                            "YOLOv8); only that is prepared here")
    dest.mkdir(parents=True, exist_ok=True)
    height, width = FRAME_HW
    person = onnx_surgery.yolov8_input_size(onnx.load(pack.path("person_detector")), height, width)
    plan = [
        ("face_detector", onnx.load(pack.path("face_detector")), [3, height, width], "frames"),
        ("face_embedder", onnx.load(pack.path("face_embedder")), [3, 112, 112], "faces"),
        ("person_detector", person, [3, height, width], "frames"),
    ]
    entries = []
    for role, model, item_shape, per in plan:
        if model.ByteSize() > SMALL_ENOUGH:
            model = store_weights_fp16(model)
        file = f"{role}.onnx"
        onnx.save(model, dest / file)
        entries.append({"role": role, "file": file, "input": pack.model(role).input_name, "item_shape": item_shape,
                        "graph_input_shape": _input_shape(model, pack.model(role).input_name), "per": per})
    (dest / SPEC_FILE).write_text(json.dumps({"pack": pack.name, "models": entries}, indent=2))
    total = sum((dest / e["file"]).stat().st_size for e in entries)
    if total > CARRY_LIMIT_BYTES:
        raise RollcallError(f"bench gpu --prepare: {total / 2**20:.1f} MiB of models, more than the "
                            f"{CARRY_LIMIT_BYTES / 2**20:.0f} MiB a device command carries")
    return entries
