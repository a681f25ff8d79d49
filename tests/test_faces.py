"""The face stage on the real open pack (YuNet + SFace) and the real sample portraits, no mocks:
detection (batched = single, two faces side by side, camera-sized frames), alignment + embeddings
(identification against a gallery of OTHER photos, strangers unknown), and the quality gate."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from processor import model_fetch
from processor import model_packs as mp
from processor.model_catalogue import PHOTOS_DIR
from infra.foundation.config import EXAMPLE_CONFIG, ThresholdsConfig, load_config
from processor.gallery import Gallery, match_settings
from processor.service import door_face_models
from processor.stages import faces as F

PORTRAITS = {
    "macron_2014.jpg": "macron", "macron_2025.jpg": "macron",
    "ardern_2018.jpg": "ardern", "ardern_2022.jpg": "ardern",
    "obama_senate.jpg": "obama", "obama_oval.jpg": "obama", "obama_congress.jpg": "obama", "obama_blueroom.jpg": "obama",
    "sunak.jpg": "sunak", "biden.jpg": "biden",
}


@pytest.fixture(scope="module")
def pack() -> mp.LoadedPack:
    model_fetch.fetch_pack("open")
    return mp.load_pack("open")


@pytest.fixture(scope="module")
def photos(pack) -> dict[str, np.ndarray]:
    return {name: cv2.imread(str(PHOTOS_DIR / name)) for name in PORTRAITS}


@pytest.fixture(scope="module")
def detector(pack) -> F.FaceDetector:
    return F.FaceDetector(pack, 0.6)


@pytest.fixture(scope="module")
def embedder(pack) -> F.FaceEmbedder:
    return F.FaceEmbedder(pack)


@pytest.fixture(scope="module")
def embeddings(photos, detector, embedder) -> dict[str, np.ndarray]:
    names = list(photos)
    found = detector.detect([photos[n] for n in names])
    crops = [F.align(photos[n], faces[0].landmarks) for n, faces in zip(names, found)]
    return dict(zip(names, embedder.embed(crops)))


def side_by_side(a: np.ndarray, b: np.ndarray, height: int = 480) -> np.ndarray:
    def fit(img):
        return cv2.resize(img, (round(img.shape[1] * height / img.shape[0]), height), interpolation=cv2.INTER_AREA)
    return np.hstack([fit(a), fit(b)])


def in_frame(photo: np.ndarray, x: int, y: int, height: int = 400, size=(1280, 720)) -> tuple[np.ndarray, float]:
    """A camera-sized frame (grey wall) with the portrait pasted at (x, y), scaled to ``height``."""
    frame = np.full((size[1], size[0], 3), 90, np.uint8)
    s = height / photo.shape[0]
    small = cv2.resize(photo, (round(photo.shape[1] * s), height), interpolation=cv2.INTER_AREA)
    frame[y:y + small.shape[0], x:x + small.shape[1]] = small
    return frame, s


# ------------------------------------------------------------------------------------------ detection

@pytest.mark.parametrize("input_size", [(640, 640), None], ids=["640x640", "auto"])
def test_one_face_per_portrait_and_batch_equals_single(pack, photos, input_size):
    det = F.FaceDetector(pack, 0.6, input_size)
    names = list(photos)
    singles = [det.detect([photos[n]])[0] for n in names]
    batch = det.detect([photos[n] for n in names])
    assert len(batch) == len(names)
    for name, one, many in zip(names, singles, batch):
        assert len(one) == 1 and len(many) == 1, (name, one, many)
        face = one[0]
        x1, y1, x2, y2 = face.box
        h, w = photos[name].shape[:2]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
        k = face.landmarks
        assert ((k >= [x1 - 2, y1 - 2]) & (k <= [x2 + 2, y2 + 2])).all(), name
        assert k[0, 0] < k[2, 0] < k[1, 0] and k[3, 0] < k[4, 0], name  # image-left eye, nose, image-right eye
        assert max(k[0, 1], k[1, 1]) < k[2, 1] < min(k[3, 1], k[4, 1]), name
        # A batch of N is N single runs (same input size per image with 640x640; auto pads the batch to its
        # largest image, which moves the numbers a little).
        tol = 1e-3 if input_size else 0.02
        assert abs(many[0].score - face.score) < tol, name
        np.testing.assert_allclose(many[0].landmarks, k, atol=0.05 if input_size else 0.02 * (x2 - x1))


def test_two_portraits_side_by_side_give_two_faces(photos, detector):
    pair = side_by_side(photos["macron_2025.jpg"], photos["sunak.jpg"])
    faces = detector.detect([pair])[0]
    assert len(faces) == 2, [f.score for f in faces]
    middle = photos["macron_2025.jpg"].shape[1] * 480 / photos["macron_2025.jpg"].shape[0]
    left, right = sorted(faces, key=lambda f: f.box[0])
    assert left.box[2] <= middle + 2 and right.box[0] >= middle - 2


def test_camera_frames_map_back_to_frame_pixels_and_batch(photos, pack):
    frames, where = [], []
    for i, name in enumerate(["ardern_2022.jpg", "obama_oval.jpg", "biden.jpg", "macron_2025.jpg"]):
        x, y = 100 + 250 * i, 60 + 40 * i
        frame, s = in_frame(photos[name], x, y, height=360 - 40 * i)
        ref = F.FaceDetector(pack, 0.6).detect([photos[name]])[0][0]
        where.append(np.array(ref.box) * s + [x, y, x, y])
        frames.append(frame)
    for input_size in [(640, 640), None]:
        det = F.FaceDetector(pack, 0.6, input_size)
        if input_size is None:
            assert det.canvas_for([f.shape[:2] for f in frames]) == (640, 384)
        det.detect(frames[:1])  # warm-up
        t0 = time.perf_counter()
        singles = [det.detect([f])[0] for f in frames]
        t1 = time.perf_counter()
        batch = det.detect(frames)
        t2 = time.perf_counter()
        print(f"detect 1280x720 at {input_size or 'auto 640x384'}: {(t1 - t0) / 4 * 1000:.1f} ms/frame at batch 1, "
              f"{(t2 - t1) / 4 * 1000:.1f} ms/frame at batch 4")
        for faces, faces_b, expected in zip(singles, batch, where):
            assert len(faces) == 1 and len(faces_b) == 1
            assert np.abs(np.array(faces[0].box) - expected).max() < 0.08 * (expected[2] - expected[0]), (faces[0].box, expected)
            np.testing.assert_allclose(faces_b[0].box, faces[0].box, atol=1e-2)


def test_nothing_on_a_blank_image_and_empty_batch(detector, embedder):
    assert detector.detect([np.full((480, 640, 3), 128, np.uint8)]) == [[]]
    assert detector.detect([]) == []
    assert embedder.embed([]).shape == (0, 128)


# ------------------------------------------------------------------------------------------ alignment + embedding

def test_align_embed_batch_equals_single_and_is_normalised(photos, detector, embedder):
    names = list(photos)
    found = detector.detect([photos[n] for n in names])
    crops = [F.align(photos[n], f[0].landmarks) for n, f in zip(names, found)]
    assert all(c.shape == (112, 112, 3) and c.dtype == np.uint8 for c in crops)
    # the aligned eyes land on the template
    m = F.alignment_matrix(found[0][0].landmarks)
    eyes = np.c_[found[0][0].landmarks[:2], np.ones(2)] @ m.T
    assert np.abs(eyes - F.ARCFACE_TEMPLATE[:2]).max() < 4
    embedder.embed(crops[:1])  # warm-up
    t0 = time.perf_counter()
    single = np.concatenate([embedder.embed([c]) for c in crops])
    t1 = time.perf_counter()
    batch = embedder.embed(crops)
    t2 = time.perf_counter()
    small = F.FaceEmbedder(embedder.pack, max_batch=3).embed(crops)  # chunked
    print(f"embed: {(t1 - t0) / len(crops) * 1000:.2f} ms/face at batch 1, {(t2 - t1) / len(crops) * 1000:.2f} ms/face "
          f"at batch {len(crops)}")
    assert batch.shape == (len(names), 128) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch, single, atol=1e-5)
    np.testing.assert_allclose(small, batch, atol=1e-5)


def test_one_thread_sessions_give_the_same_faces_and_embeddings(pack, photos, detector, embedder):
    """Sessions of one intra-op thread each (``[scheduling] inference_threads`` 1) run the same models: the
    same boxes and embeddings as sessions on every core."""
    names = list(photos)[:4]
    images = [photos[n] for n in names]
    one_detector = F.FaceDetector(pack, 0.6, threads=1)
    one_embedder = F.FaceEmbedder(pack, threads=1)
    assert one_detector.session.get_session_options().intra_op_num_threads == 1
    assert one_embedder.session.get_session_options().intra_op_num_threads == 1
    found, one_found = detector.detect(images), one_detector.detect(images)
    assert [len(faces) for faces in one_found] == [len(faces) for faces in found] == [1] * len(names)
    np.testing.assert_allclose([faces[0].box for faces in one_found], [faces[0].box for faces in found], atol=1e-2)
    crops = [F.align(img, faces[0].landmarks) for img, faces in zip(images, found)]
    np.testing.assert_allclose(one_embedder.embed(crops), embedder.embed(crops), atol=1e-5)


def test_inference_threads_reach_the_door_sessions():
    """``[scheduling] inference_threads`` is what each of the door's sessions runs a call on; 0, the default,
    leaves onnxruntime's own (every core), whatever ``inference_slots`` says."""
    config = load_config(EXAMPLE_CONFIG, environ={"ROLLCALL__SCHEDULING__INFERENCE_THREADS": "1"})
    assert config.scheduling.inference_slots == 2
    detector, embedder = door_face_models(config)
    assert detector.session.get_session_options().intra_op_num_threads == 1
    assert embedder.session.get_session_options().intra_op_num_threads == 1
    detector, embedder = door_face_models(load_config(EXAMPLE_CONFIG, environ={}))
    assert detector.session.get_session_options().intra_op_num_threads == 0  # not set: onnxruntime's default
    assert embedder.session.get_session_options().intra_op_num_threads == 0


@pytest.mark.parametrize("enrolled", [
    {"macron": "macron_2014.jpg", "ardern": "ardern_2018.jpg", "obama": "obama_senate.jpg"},
    {"macron": "macron_2025.jpg", "ardern": "ardern_2022.jpg", "obama": "obama_blueroom.jpg"},
], ids=["older-photos-enrolled", "newer-photos-enrolled"])
def test_identify_against_the_other_photo_and_strangers_are_unknown(embeddings, enrolled):
    threshold, margin = match_settings("open", ThresholdsConfig())
    gallery = Gallery("open", list(enrolled), np.stack([embeddings[f] for f in enrolled.values()]),
                      threshold=threshold, margin=margin)
    probes = [n for n in PORTRAITS if n not in enrolled.values()]
    matches = gallery.match(np.stack([embeddings[n] for n in probes]))
    for name, m in zip(probes, matches):
        print(f"  {name:20} -> {m.person_id or 'unknown':8} score {m.score:.3f} margin {m.margin:.3f} "
              f"(nearest {m.best_person_id}, second {m.second_person_id})")
        truth = PORTRAITS[name]
        if truth in enrolled:
            assert m.person_id == truth, (name, m)
            assert m.margin >= margin
        else:
            assert m.person_id is None, (name, m)
            assert m.score < threshold
        assert m.second_person_id is not None and m.second_person_id != m.best_person_id


def test_calibrated_threshold_separates_all_photo_pairs(embeddings):
    names = list(embeddings)
    e = np.stack([embeddings[n] for n in names])
    cos = e @ e.T
    same = [cos[i, j] for i in range(len(names)) for j in range(i + 1, len(names)) if PORTRAITS[names[i]] == PORTRAITS[names[j]]]
    diff = [cos[i, j] for i in range(len(names)) for j in range(i + 1, len(names)) if PORTRAITS[names[i]] != PORTRAITS[names[j]]]
    threshold, _ = match_settings("open")
    print(f"same person {min(same):.3f}..{max(same):.3f} ({len(same)} pairs), "
          f"different {min(diff):.3f}..{max(diff):.3f} ({len(diff)} pairs), threshold {threshold}")
    assert max(diff) + 0.08 < threshold < min(same) - 0.15


# ------------------------------------------------------------------------------------------ quality gate

def test_quality_gate_reasons(photos, detector):
    t = ThresholdsConfig()
    img = photos["ardern_2018.jpg"]
    face = detector.detect([img])[0][0]
    q = F.assess(img, face, F.align(img, face.landmarks), t)
    assert q.reason is None and q.ok and 0.5 < q.score <= 1 and q.sharpness > 200 and abs(q.yaw_deg) < 15

    tiny = cv2.resize(img, None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA)
    (face,) = detector.detect([tiny])[0]
    q = F.assess(tiny, face, F.align(tiny, face.landmarks), t)
    assert q.reason == "too_small" and q.size_px < t.min_face_px, q

    blurred = cv2.GaussianBlur(img, (0, 0), 10)
    (face,) = detector.detect([blurred])[0]
    q = F.assess(blurred, face, F.align(blurred, face.landmarks), t)
    assert q.reason == "too_blurry" and q.sharpness < t.min_sharpness, q

    low = F.FaceDetection(face.box, 0.5, face.landmarks)
    assert F.assess(blurred, low, F.align(blurred, face.landmarks), t).reason == "low_score"


def test_yaw_from_landmarks(photos, detector):
    img = photos["obama_congress.jpg"]  # head turned towards image left
    faces = detector.detect([img, img[:, ::-1].copy()])
    yaw, yaw_mirrored = (F.estimate_yaw(f[0].landmarks) for f in faces)
    assert yaw < -12 and yaw_mirrored > 12
    # the nose right under an eye: a profile-like pose
    k = F.ARCFACE_TEMPLATE.copy()
    k[2, 0] = k[1, 0]
    assert F.estimate_yaw(k) == pytest.approx(45, abs=1)
    crop = F.align(img, faces[0][0].landmarks)
    turned = F.FaceDetection(faces[0][0].box, 0.95, k * 3)
    assert F.assess(img, turned, crop, ThresholdsConfig()).reason == "pose"


def test_analyzer_runs_the_whole_chain(pack, photos):
    analyzer = F.FaceAnalyzer(pack, ThresholdsConfig())
    tiny = cv2.resize(photos["sunak.jpg"], None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA)
    out = analyzer.analyse([photos["biden.jpg"], tiny])
    (good,), (small,) = out
    assert good.quality.ok and good.embedding.shape == (128,)
    assert small.quality.reason == "too_small" and small.embedding is None
