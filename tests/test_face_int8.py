"""The int8 face embedder's check on the real open pack and photo set: the variant is built and judged against
fp32; fp32 judged against itself is accepted; a damaged model that loses identities is refused in one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from processor import face_int8
from processor import model_fetch
from processor import model_packs as mp


@pytest.fixture(scope="module")
def pack() -> mp.LoadedPack:
    model_fetch.fetch_pack("open")
    return mp.load_pack("open")


def test_the_real_int8_variant_is_judged_on_the_photo_set(pack):
    verdict = face_int8.check_face_int8(pack)
    print(verdict.reason, verdict.figures)
    fp32, int8 = verdict.figures["fp32"], verdict.figures["int8"]
    assert fp32["faces"] >= 30 and fp32["probes"] >= 15 and fp32["correct"] == fp32["probes"]
    assert "\n" not in verdict.reason and verdict.reason.startswith("int8 face embedder")
    mixed = verdict.figures["int8_vs_fp32_enrolments"]  # int8 probes against fp32 enrolments, as a processor meets
    assert mixed["probes"] == fp32["probes"]
    threshold = verdict.figures["threshold"]
    keeps = all(figures["correct"] >= fp32["correct"]
                and threshold - figures["diff_max"] >= (threshold - fp32["diff_max"]) / 2 for figures in (int8, mixed))
    assert verdict.accepted == keeps


def test_fp32_against_itself_is_accepted(pack):
    verdict = face_int8.check_face_int8(pack, variant=pack.path("face_embedder").read_bytes())
    assert verdict.accepted, verdict.reason
    assert verdict.figures["min_cosine_to_fp32"] > 0.9999


def test_a_variant_that_loses_identities_is_refused(pack):
    model = onnx.load(pack.path("face_embedder"))
    rng = np.random.default_rng(0)
    for i, tensor in enumerate(model.graph.initializer):  # heavy noise on every large weight
        w = numpy_helper.to_array(tensor)
        if w.dtype == np.float32 and w.size > 1000:
            noisy = w + rng.normal(0, 1.5 * (w.std() + 1e-6), w.shape).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(noisy, tensor.name))
    verdict = face_int8.check_face_int8(pack, variant=model.SerializeToString())
    assert not verdict.accepted and verdict.reason.startswith("int8 face embedder refused")
    assert "\n" not in verdict.reason
