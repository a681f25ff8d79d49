"""``[models] face_embedder_precision`` on the real open pack and photo set: int8 makes the processor's door
embedder the checked int8 variant (built once, then found in the cache); a variant the check refuses is never
used: the embedder stays fp32 with the one-line reason in a warning, the refusal is cached, and
`rollcall models quantize` fails with that line."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from infra.cli.main import main
from infra.foundation.config import EXAMPLE_CONFIG, load_config
from processor import face_int8, face_precision, model_fetch
from processor import model_packs as mp
from processor.service import door_face_models

INT8_ENV = {"ROLLCALL__MODELS__FACE_EMBEDDER_PRECISION": "int8"}


@pytest.fixture(scope="module")
def pack() -> mp.LoadedPack:
    model_fetch.fetch_pack("open")
    return mp.load_pack("open")


@pytest.fixture(scope="module")
def crops(pack) -> list[np.ndarray]:
    """Aligned 112x112 BGR faces of the photo set, as the door stage hands them to the embedder."""
    return [face.blob.transpose(1, 2, 0)[:, :, ::-1].astype(np.uint8) for face in face_int8.photo_faces(pack)]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A cache of this test's own: what is found there was built by the test."""
    monkeypatch.setattr(face_precision, "cache_dir", lambda: tmp_path)
    return tmp_path / "int8"


def damaged_embedder(pack: mp.LoadedPack) -> bytes:
    """The pack's embedder with heavy noise on every large weight: it loses identities."""
    model = onnx.load(pack.path("face_embedder"))
    rng = np.random.default_rng(0)
    for i, tensor in enumerate(model.graph.initializer):
        w = numpy_helper.to_array(tensor)
        if w.dtype == np.float32 and w.size > 1000:
            noisy = w + rng.normal(0, 1.5 * (w.std() + 1e-6), w.shape).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(noisy, tensor.name))
    return model.SerializeToString()


def test_the_setting_is_read_from_the_environment_and_defaults_to_fp32():
    assert load_config(EXAMPLE_CONFIG, environ={}).models.face_embedder_precision == "fp32"
    assert load_config(EXAMPLE_CONFIG, environ=INT8_ENV).models.face_embedder_precision == "int8"


def test_int8_makes_the_processors_embedder_the_checked_variant(pack, crops, cache):
    config = load_config(EXAMPLE_CONFIG, environ=INT8_ENV)
    _, embedder = door_face_models(config)
    variant, = cache.glob("face-*.onnx")
    verdict, = cache.glob("face-*.json")
    assert variant.stem == verdict.stem == f"face-{face_precision.variant_key(pack, config.thresholds)}"
    ops = {node.op_type for node in onnx.load_from_string(variant.read_bytes()).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_session = mp.create_session(variant.read_bytes())
    blob = np.stack(crops)[:, :, :, ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    expected = face_int8.session_embed(int8_session, embedder.input_name)(blob)
    got = embedder.embed(crops)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    fp32 = door_face_models(load_config(EXAMPLE_CONFIG, environ={}))[1].embed(crops)
    assert np.min(np.sum(got * fp32, axis=1)) < 0.9999  # not the fp32 model under another name
    # a second start finds the variant and its verdict: nothing is quantised or checked again
    built = variant.stat().st_mtime_ns
    again = face_precision.checked_int8(pack, config.thresholds)
    assert again.cached and again.model == variant.read_bytes() and variant.stat().st_mtime_ns == built


def test_a_refused_variant_is_never_used(pack, crops, cache, monkeypatch, caplog, capsys):
    monkeypatch.setattr(face_int8, "int8_embedder", lambda *_args: damaged_embedder(pack))
    config = load_config(EXAMPLE_CONFIG, environ=INT8_ENV)
    with caplog.at_level(logging.WARNING, logger="rollcall.processor"):
        _, embedder = door_face_models(config)
    warning, = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    reason = warning.split(": ", 1)[1]
    assert reason.startswith("int8 face embedder refused: loses") and "\n" not in warning
    fp32 = face_int8.session_embed(mp.create_session(pack.path("face_embedder")), embedder.input_name)
    blob = np.stack(crops)[:, :, :, ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    np.testing.assert_allclose(embedder.embed(crops), fp32(blob), atol=1e-5)
    assert not list(cache.glob("face-*.onnx"))  # a refused variant is not kept
    # the refusal is remembered: the next start and the command build nothing and give the same line
    monkeypatch.setattr(face_int8, "int8_embedder", lambda *_args: pytest.fail("built again"))
    assert face_precision.embedder_session(pack, "int8", config.thresholds) is None
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(EXAMPLE_CONFIG), "models", "quantize"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"rollcall: error: {reason}\n"


def test_the_cache_key_follows_what_the_verdict_depends_on(pack):
    config = load_config(EXAMPLE_CONFIG, environ={})
    stricter = load_config(EXAMPLE_CONFIG, environ={"ROLLCALL__THRESHOLDS__FACE_MATCH": "0.45"})
    assert face_precision.variant_key(pack, config.thresholds) == face_precision.variant_key(pack, config.thresholds)
    assert face_precision.variant_key(pack, config.thresholds) != face_precision.variant_key(pack, stricter.thresholds)


def test_an_unknown_precision_is_refused(pack):
    with pytest.raises(ValueError, match="one of fp32, int8"):
        face_precision.embedder_session(pack, "int4")
