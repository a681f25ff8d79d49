"""Sessions for an accelerator, checked on a CPU: the provider list (TensorRT FP16 + engine cache + batch
profile, CUDA, CPU) built from a faked list of available providers, the step-down when a provider fails to
start, and I/O binding giving exactly what a plain run gives (bound to host memory: the same code path)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from processor import model_fetch
from processor import model_packs as mp
from processor import ort_sessions as osx


@pytest.fixture(scope="module")
def pack() -> mp.LoadedPack:
    model_fetch.fetch_pack("open")
    return mp.load_pack("open")


def test_provider_list_on_a_tensorrt_machine(tmp_path):
    chosen = osx.provider_list([osx.TENSORRT, osx.CUDA, osx.CPU], tmp_path, [("data", ["N", 3, 112, 112])])
    assert [osx.provider_name(p) for p in chosen] == [osx.TENSORRT, osx.CUDA, osx.CPU]
    trt = chosen[0][1]
    assert trt["trt_fp16_enable"] and trt["trt_engine_cache_enable"] and trt["trt_timing_cache_enable"]
    assert trt["trt_engine_cache_path"] == str(tmp_path / "tensorrt") and (tmp_path / "tensorrt").is_dir()
    assert trt["trt_profile_min_shapes"] == "data:1x3x112x112"
    assert trt["trt_profile_max_shapes"] == f"data:{osx.MAX_BATCH}x3x112x112"
    assert chosen[1][1]["device_id"] == 0


def test_provider_list_without_a_gpu_and_profiles_only_for_batch_only_models(tmp_path):
    assert osx.provider_list([osx.CPU], tmp_path) == [osx.CPU]
    assert not (tmp_path / "tensorrt").exists()
    assert osx.provider_list(["AzureExecutionProvider", osx.CUDA, osx.CPU], None)[0][0] == osx.CUDA
    assert osx.batch_profile([("input", ["N", 3, "H", "W"])]) == {}  # YuNet: any size
    yunet = osx.provider_list([osx.TENSORRT, osx.CUDA, osx.CPU], None, [("input", ["N", 3, "H", "W"])])
    assert [osx.provider_name(p) for p in yunet] == [osx.CUDA, osx.CPU]  # no engine rebuilt per shape
    assert osx.batch_profile([("images", [1, 3, 640, 384])])["trt_profile_opt_shapes"] == "images:16x3x640x384"


class _FailingTensorRT:
    """A stand-in for the onnxruntime module whose TensorRT cannot start (its libraries missing)."""

    def __init__(self):
        self.asked: list[list[str]] = []

    def InferenceSession(self, model, options, providers):  # noqa: N802 - onnxruntime's name
        names = [osx.provider_name(p) for p in providers]
        self.asked.append(names)
        if names[0] == osx.TENSORRT:
            raise RuntimeError("libnvinfer.so.10: cannot open shared object file")
        return names


def test_a_provider_that_fails_steps_down_and_is_not_tried_again(monkeypatch):
    monkeypatch.setattr(osx, "_BROKEN", set())
    fake = _FailingTensorRT()
    chain = [(osx.TENSORRT, {}), (osx.CUDA, {}), osx.CPU]
    assert osx.open_session(fake, "m.onnx", None, chain) == [osx.CUDA, osx.CPU]
    assert fake.asked == [[osx.TENSORRT, osx.CUDA, osx.CPU], [osx.CUDA, osx.CPU]]
    assert [osx.provider_name(p) for p in osx.provider_list([osx.TENSORRT, osx.CUDA, osx.CPU], None)] == \
        [osx.CUDA, osx.CPU]


def test_cpu_sessions_are_not_wrapped(pack):
    session = mp.create_session(pack.path("face_embedder"))
    assert isinstance(session, ort.InferenceSession) and not osx.on_gpu(session)


@pytest.mark.parametrize("role", ["face_embedder", "face_detector"])
def test_io_binding_gives_what_a_plain_run_gives(pack, role):
    plain = mp.create_session(pack.path(role), providers=[osx.CPU])
    bound = osx.BoundSession(ort, plain, "cpu")
    assert bound.get_inputs()[0].name == plain.get_inputs()[0].name  # the rest is the session's own
    name = plain.get_inputs()[0].name
    rng = np.random.default_rng(3)
    sizes = [(1, 112, 112), (4, 112, 112), (1, 112, 112)] if role == "face_embedder" else \
        [(1, 160, 224), (3, 96, 128), (1, 160, 224)]
    for batch, h, w in sizes:  # a shape again reuses its buffer: new data must replace the old
        blob = rng.uniform(0, 255, (batch, 3, h, w)).astype(np.float32)
        want = plain.run(None, {name: blob})
        got = bound.run(None, {name: blob})
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    first = plain.get_outputs()[0].name
    strided = rng.uniform(0, 255, (2, 3, h, w * 2)).astype(np.float32)[..., ::2]  # not contiguous
    np.testing.assert_array_equal(bound.run([first], {name: strided})[0], plain.run([first], {name: strided})[0])
