"""Offline edits of ONNX graphs so that the shipped models run well on onnxruntime.

Two edits, both done once when a model pack is fetched, never at run time:

* ``fold_constant_dequantize``: OpenCV Zoo's ``*_int8bq.onnx`` files keep their weights as int8 blocks
  (``DequantizeLinear`` with ``block_size``, opset 21) followed by a ``Reshape`` to the conv kernel shape.
  onnxruntime's CPU kernel rejects that ("block_size must be 0 for per-tensor quantization"), so the
  weights are dequantized here with numpy and stored as fp32 initializers; the quantize/reshape nodes go.
  The numbers are exactly what DequantizeLinear would compute, so the model's accuracy is unchanged.
* ``make_dynamic``: exporters bake batch 1 into the graph, both in the input/output shapes and in the
  constant shape tensors fed to ``Reshape`` (``[1, -1, 4]``). The graph inputs get symbolic axes, and the
  leading ``1`` of those shape constants becomes ``0`` ("copy this axis from the input"), so a batch of N
  really runs as N images.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer}


def dequantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
               axis: int = 1, block_size: int = 0) -> np.ndarray:
    """numpy DequantizeLinear (opset 21): per-tensor, per-axis or blocked along ``axis``."""
    xf = x.astype(np.float32)
    scale = scale.astype(np.float32)
    zp = np.zeros_like(scale) if zero_point is None else zero_point.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1 and block_size == 0:
        return (xf - zp.reshape(())) * scale.reshape(())
    axis = axis % x.ndim
    if block_size == 0:  # one scale per slice along axis
        shape = [1] * x.ndim
        shape[axis] = -1
        return (xf - zp.reshape(shape)) * scale.reshape(shape)
    # blocked: scale has x's shape except along axis, where it has ceil(n / block_size) entries
    scale_full = np.repeat(scale, block_size, axis=axis)
    zp_full = np.repeat(zp, block_size, axis=axis)
    index = [slice(None)] * x.ndim
    index[axis] = slice(0, x.shape[axis])
    return (xf - zp_full[tuple(index)]) * scale_full[tuple(index)]


def fold_constant_dequantize(model: onnx.ModelProto) -> int:
    """Replace every DequantizeLinear fed only by initializers (and Reshapes of the result) by an fp32
    initializer. Returns the number of nodes removed. Edits ``model`` in place."""
    graph = model.graph
    known: dict[str, np.ndarray] = {name: numpy_helper.to_array(t) for name, t in _initializers(graph).items()}
    folded: dict[str, np.ndarray] = {}
    keep: list[onnx.NodeProto] = []
    removed = 0
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "DequantizeLinear" and all(i in known for i in inputs):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            x, scale = known[node.input[0]], known[node.input[1]]
            zp = known[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            folded[node.output[0]] = known[node.output[0]] = dequantize(
                x, scale, zp, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
            removed += 1
            continue
        if node.op_type == "Reshape" and node.input[0] in folded and node.input[1] in known:
            data, shape = folded[node.input[0]], known[node.input[1]].astype(np.int64)
            target = tuple(int(data.shape[i]) if s == 0 else int(s) for i, s in enumerate(shape))  # 0: keep axis
            folded[node.output[0]] = known[node.output[0]] = data.reshape(target)
            removed += 1
            continue
        keep.append(node)
    if not removed:
        return 0
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for name, value in folded.items():
        if name in used:
            graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    _drop_unused(model)
    return removed


def _drop_unused(model: onnx.ModelProto) -> None:
    """Remove initializers nobody reads, and graph inputs that are initializers or unread (old exporters list
    every weight as a graph input too, which keeps the runtime from treating them as constants)."""
    graph = model.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    init_names = {t.name for t in inits}
    inputs = [i for i in graph.input if i.name in used and i.name not in init_names]
    del graph.input[:]
    graph.input.extend(inputs)
    vis = [v for v in graph.value_info if v.name in used]
    del graph.value_info[:]
    graph.value_info.extend(vis)


def _set_dims(value: onnx.ValueInfoProto, dims: Mapping[int, int | str]) -> None:
    shape = value.type.tensor_type.shape
    for index, dim in dims.items():
        target = shape.dim[index]
        if isinstance(dim, str):
            target.ClearField("dim_value")
            target.dim_param = dim
        else:
            target.ClearField("dim_param")
            target.dim_value = int(dim)


def make_dynamic(model: onnx.ModelProto, batch: str = "N",
                 input_dims: Mapping[int, int | str] | None = None,
                 output_dims: Mapping[str, Mapping[int, int | str]] | None = None) -> list[str]:
    """Make axis 0 of every graph input and output symbolic (``batch``), optionally other input axes
    (``input_dims``, e.g. ``{2: "H", 3: "W"}``) and output axes (``output_dims`` by output name).

    Every ``Reshape`` whose shape is a constant starting with 1 and whose data is an activation gets that
    1 replaced by 0 (copy axis 0 from its input), which is what a batch-agnostic export writes.
    Returns the names of the Reshape nodes changed.
    """
    graph = model.graph
    for value in graph.input:
        _set_dims(value, {0: batch, **(input_dims or {})})
    for value in graph.output:
        _set_dims(value, {0: batch, **((output_dims or {}).get(value.name, {}))})
    del graph.value_info[:]  # stale fixed shapes of intermediate tensors
    inits = _initializers(graph)
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    changed: list[str] = []
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits or node.input[0] in inits:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue
        shape = numpy_helper.to_array(inits[node.input[1]]).astype(np.int64)
        if shape.ndim != 1 or shape.size < 2 or shape[0] != 1:
            continue
        new = shape.copy()
        new[0] = 0
        name = node.input[1]
        if readers.get(name, 0) > 1:  # shared shape constant: give this node its own copy
            name = f"{name}__batch0_{len(changed)}"
            node.input[1] = name
            graph.initializer.append(numpy_helper.from_array(new, name))
        else:
            inits[name].CopyFrom(numpy_helper.from_array(new, name))
        changed.append(node.name or node.output[0])
    _drop_unused(model)
    return changed


def finalize(model: onnx.ModelProto, check: bool = True) -> onnx.ModelProto:
    """Set the lowest IR version the opsets allow, check the graph and run strict shape inference."""
    model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(list(model.opset_import)))
    if check:
        onnx.checker.check_model(model, full_check=False)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return model


def describe_io(model: onnx.ModelProto) -> dict[str, list[tuple[str, list[int | str]]]]:
    def dims(value: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {"inputs": [(v.name, dims(v)) for v in model.graph.input],
            "outputs": [(v.name, dims(v)) for v in model.graph.output]}


def yolov8_input_size(model: onnx.ModelProto, height: int, width: int) -> onnx.ModelProto:
    """A copy of a YOLOv8 detection export that takes ``height`` x ``width`` input (multiples of 32).

    Exports with a fixed size bake the anchor grid (points ``[1, 2, A]`` and strides ``[1, A]`` for the
    feature maps at strides 8, 16, 32) and the anchor count ``A`` into the graph; everything before the
    head is convolutional. The grid is recomputed for the new size (as ultralytics' ``make_anchors``
    does: x fastest, then y, stride by stride) and the head's reshapes take ``A`` from their input.
    A 16:9 camera letterboxed to 640 x 384 instead of 640 x 640 costs 40 % less for the same pixels.
    """
    if height % 32 or width % 32 or height <= 0 or width <= 0:
        raise ValueError(f"YOLOv8 input must be multiples of 32, got {height}x{width}")
    model = copy.deepcopy(model)
    graph = model.graph
    inits = _initializers(graph)
    old_h, old_w = (d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[2:4])
    old_anchors = sum((old_h // s) * (old_w // s) for s in (8, 16, 32))
    points, strides = [], []
    for stride in (8, 16, 32):
        ys, xs = np.meshgrid(np.arange(height // stride) + 0.5, np.arange(width // stride) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full(xs.size, float(stride)))
    grid, stride_row = np.concatenate(points, 1), np.concatenate(strides)
    anchors = grid.shape[1]
    for name, tensor in inits.items():
        dims = list(tensor.dims)
        if not dims or dims[-1] != old_anchors:
            continue
        value = numpy_helper.to_array(tensor)
        if dims == [1, 2, old_anchors]:
            new = grid[None].astype(value.dtype)
        elif dims == [1, old_anchors]:
            new = stride_row[None].astype(value.dtype)
        else:
            raise ValueError(f"unexpected anchor-sized constant {name} {dims}")
        tensor.CopyFrom(numpy_helper.from_array(new, name))
    for tensor in inits.values():  # the head's reshape shapes: [0, 4, 16, A] and [0, 4, A]
        value = numpy_helper.to_array(tensor)
        if value.dtype == np.int64 and value.ndim == 1 and old_anchors in value.tolist():
            tensor.CopyFrom(numpy_helper.from_array(np.where(value == old_anchors, anchors, value), tensor.name))
    _set_dims(graph.input[0], {2: height, 3: width})
    _set_dims(graph.output[0], {2: anchors})
    del graph.value_info[:]
    return model
