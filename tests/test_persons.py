"""Person detection and room-camera person tracks, on real video with the real model (no mocks).

Frames are decoded with PyAV from files. CPU cost dominates (the YOLOv8 person detector is ~170-220 ms
a 640x640 frame on 2 cores), so tracking runs at 5 fps (every other frame of these 10 fps videos): about
70 s on 2 cores (the scenario part ~45 s).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from infra.foundation.paths import PROJECT_ROOT
from processor import model_packs as mp
from processor.stages import persons as person_stage
from processor.stages.persons import PersonDetector
from processor.stages.person_tracks import PersonTracker
from infra.scenario.mounts import render_cached
from infra.scenario.check import iou
from processor import onnx_surgery, quantize
from processor.model_catalogue import PERSON_INT8_CALIBRATION, PHOTOS_DIR, pack_spec
from processor.photo_variants import VARIANTS
from infra.foundation.errors import RollcallError
from processor.quantize import float_head_nodes

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
DOOR = "door"


def _frames(path: Path, indices: range | list[int]):
    """(frame index, BGR image) for the wanted indices, decoded with PyAV."""
    import av

    wanted = set(indices)
    last = max(wanted)
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                yield i, frame.to_ndarray(format="bgr24")
            if i >= last:
                break


@pytest.fixture(scope="module")
def detector():

    mp.load_pack("open")  # fails with "run `rollcall models fetch open`" when `make setup` did not run
    return PersonDetector("open")


def _need(path: Path) -> None:
    assert path.exists(), f"{path} missing: `make setup` installs it (Debian opencv-doc)"


# --------------------------------------------------------------------------------------- detection

def test_detector_finds_pedestrians_and_batch_equals_singles(detector):
    """vtest.avi frames 0-300 show 3 to 8 walking people each (by eye: 3 at frame 0, 8 at frame 200) plus a
    yellow sheet on the lawn that the fall class also fires on."""
    _need(VTEST)
    images = [img for _, img in _frames(VTEST, [0, 100, 200, 300])]
    detector.detect(images[:1])  # warm-up
    t0 = time.perf_counter()
    singles = [detector.detect([img])[0] for img in images]
    t1 = time.perf_counter()
    batched = detector.detect(images)
    t2 = time.perf_counter()
    print(f"\nperson detection CPU: batch 1 {(t1 - t0) / 4 * 1000:.0f} ms/frame, "
          f"batch 4 {(t2 - t1) / 4 * 1000:.0f} ms/frame")
    h, w = images[0].shape[:2]
    for single, batch in zip(singles, batched):
        upright = [d for d in single if d.class_id == 0]
        assert len(upright) >= 3
        assert len(single) == len(batch)
        for a, b in zip(single, batch):
            assert a.class_id == b.class_id
            assert np.allclose(a.box, b.box, atol=0.5)
            assert abs(a.score - b.score) < 1e-3
        for d in single:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert d.score >= detector.score_threshold
    assert detector.detect([]) == []


# ---------------------------------------------------------------------------------------- tracking

def test_vtest_tracks(detector):
    """Frames 0-300 of vtest.avi (30 s), tracked at 5 fps.

    Hand count (frames looked at every 2.5 s): about 17 different pedestrians (+-3: several are tiny
    in the far background and come and go behind each other), plus the static yellow sheet that the
    detector's fall class reports. Fewer distinct tracks than people means a few far-away walkers are
    never detected steadily; many more would mean identity switches.
    """

    _need(VTEST)
    tracker = PersonTracker("vtest", fps=5.0, entry_zones={})
    events = []
    for i, img in _frames(VTEST, range(0, 301, 2)):
        events += tracker.update(i / 10.0, detector.detect([img])[0], img)  # with colour signatures
    events += tracker.flush(30.1)
    kinds = Counter(e.kind for e in events)
    distinct = len({e.track_id for e in events})
    stitched = tracker.silent_continuations + tracker.reacquired
    print(f"\nvtest 0-300 @5fps: {distinct} distinct track ids, {kinds['appeared']} appeared, "
          f"{tracker.silent_continuations} ByteTrack id switches stitched, {tracker.reacquired} reacquired after lost; "
          f"events {dict(kinds)}")
    assert distinct == kinds["appeared"] == tracker.tracks_started
    assert 8 <= distinct <= 30
    assert stitched <= 40
    assert kinds["exited"] == distinct  # flush ends everything, each track exactly once
    assert all(e.track_id.startswith(f"vtest-{tracker.run_id}-") for e in events)


def test_scenario_room_tracks(detector):
    """Default scenario room camera, 9-58 s at 5 fps, against ground_truth.json: each of the 5 arrivals
    appears once through the door zone near its t_appear, Obama's track exits through the door after he
    leaves, and nobody seated gets a new id (no other events at all). The same holds when the analysis
    falls behind and frames are dropped (every third one, and a burst of 0.8 s): a regression test for
    tracks that were all replaced after a single missing frame."""

    _, rendered = render_cached(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")  # cached: no work when rendered
    truth_path, video = rendered.ground_truth_path, rendered.room_video
    truth = json.loads(truth_path.read_text())
    fps = float(truth["scenario"]["fps"])
    detections = [(i / fps, detector.detect([img])[0])  # frame i shows t = i / fps
                  for i, img in _frames(video, range(int(9 * fps), int(58 * fps) + 1, 2))]
    _check_room_tracks(truth, detections, fps / 2)
    burst = (30.0, 30.8)
    thinned = [(t, d) for n, (t, d) in enumerate(detections) if n % 3 != 2 and not burst[0] <= t <= burst[1]]
    assert len(thinned) < 0.7 * len(detections)
    _check_room_tracks(truth, thinned, fps / 2)


def _check_room_tracks(truth: dict, detections: list, fps: float) -> None:

    room = truth["cameras"]["room"]
    tracker = PersonTracker("room", fps=fps, entry_zones={DOOR: room["entry_zone"]})
    events = []
    for t, found in detections:
        events += tracker.update(t, found)
    for e in events:
        print(e.kind, e.track_id, f"{e.pts_s:.1f}", e.entered_via, e.exited_via, [round(v) for v in e.box])

    appeared = [e for e in events if e.kind == "appeared"]
    assert len(appeared) == len(truth["people"]) == 5
    by_person = {}
    for person in truth["people"]:
        t = person["room"]["t_appear"]
        near = [e for e in appeared if abs(e.pts_s - t) <= 1.5 or abs(e.pts_s - person["room"]["t_enter_zone"]) <= 1.5]
        assert len(near) == 1, (person["id"], t, [e.pts_s for e in appeared])
        assert near[0].entered_via == DOOR
        by_person[person["id"]] = near[0].track_id
    assert len(set(by_person.values())) == 5

    obama = next(p for p in truth["people"] if p["id"] == "obama")
    exits = [e for e in events if e.kind == "exited"]
    assert [e.track_id for e in exits] == [by_person["obama"]]
    assert exits[0].exited_via == DOOR
    assert obama["room"]["t_enter_zone_out"] <= exits[0].pts_s <= obama["room"]["t_gone"] + 4.0
    # Seated people keep their tracks: nothing but the five arrivals and Obama's lost + exited.
    others = [e for e in events if e.kind not in ("appeared", "exited")]
    assert [(e.kind, e.track_id) for e in others] == [("lost", by_person["obama"])]
    assert {t.track_id for t in tracker.open_tracks} == set(by_person.values()) - {by_person["obama"]}


def test_input_fitted_to_the_frame_finds_the_same_people(detector):
    """A 16:9 frame goes to a 640 x 384 variant of the 640 x 640 export (anchor grid recomputed): the
    same pixels reach the model without the padding, and the same people come out (each box overlapping
    its twin by IoU >= 0.6, in practice within a few pixels; scores within 0.05) on the default scenario's room video and on vtest (4:3, 640 x 480)."""

    _need(VTEST)
    room = PROJECT_ROOT / "var" / "scenarios" / "default" / "room.ts"
    images = [img for _, img in _frames(VTEST, [100, 200])]
    if room.exists():  # rendered by the scenario tests; vtest alone still checks a second aspect
        images += [img for _, img in _frames(room, [150, 300, 450])]
    square = PersonDetector("open", fit_to_frame=False)
    sizes = {detector.input_size_for(img.shape) for img in images}
    assert (480, 640) in sizes and all(size != (640, 640) for size in sizes), sizes
    if room.exists():
        assert (384, 640) in sizes, sizes

    fitted, padded = detector.detect(images), square.detect(images)
    assert sum(map(len, padded)) >= 8
    for a, b in zip(fitted, padded):
        assert len(a) == len(b), (a, b)
        for da in a:  # the same object: at the image's edge the padding (now gone) shifts a box a little
            db = max(b, key=lambda d: iou(da.box, d.box))
            assert iou(da.box, db.box) >= 0.6 and abs(da.score - db.score) <= 0.05, (da, db)


def test_int8_detector_finds_the_same_people(detector):
    """The int8 variant (processor/quantize.py, calibrated on the pack's sample photos) against fp32 on
    frames it was not calibrated on: vtest's pedestrians and a real photo of people. Nine in ten fp32
    persons (score >= 0.5) have an int8 twin (IoU >= 0.6; the misses are weak, distant ones), and int8
    adds almost none of its own; the
    detection head's decoding stayed float (quantised whole, the model finds nobody)."""
    import cv2
    import onnx


    _need(VTEST)
    # precision auto (the configuration's default): int8 on a CPU (this machine), the float
    # export where the session runs on a GPU or the input is the export's own square
    assert PersonDetector("open", precision="auto", providers=["CPUExecutionProvider"]).precision == "int8"
    assert PersonDetector("open", precision="auto", fit_to_frame=False).precision == "fp32"
    images = [img for _, img in _frames(VTEST, [0, 60, 120, 180, 240, 300])]
    images.append(cv2.imread(str(PHOTOS_DIR / "ultralytics_zidane.jpg")))
    int8 = PersonDetector("open", precision="int8")
    size = int8.input_size_for(images[0].shape)
    for shape in {image.shape for image in images}:  # built here and now when not cached (else the float model
        int8.int8_model(int8.input_size_for(shape))  # would answer meanwhile)
    plain, small = detector.detect(images), int8.detect(images)
    assert not int8.int8_pending
    strong = [(i, d) for i, found in enumerate(plain) for d in found if d.score >= 0.5]
    assert len(strong) >= 20, len(strong)
    twins = sum(1 for i, d in strong if any(iou(d.box, e.box) >= 0.6 for e in small[i]))
    assert twins >= 0.9 * len(strong), (twins, len(strong))  # measured: 22 of 24
    extra = sum(1 for i, found in enumerate(small) for e in found
                if e.score >= 0.5 and not any(iou(e.box, d.box) >= 0.5 for d in plain[i]))
    assert extra <= 0.05 * len(strong), extra
    model = onnx_surgery.yolov8_input_size(onnx.load(str(int8.pack.path("person_detector"))), *size)
    head = float_head_nodes(model)
    assert any("/dfl/" in name for name in head) and not any(name.endswith("cv2.0.0/conv/Conv") for name in head)
    quantised = onnx.load_from_string(int8.int8_model(size))
    float_ops = {n.name for n in quantised.graph.node if n.op_type == "Conv"} & set(head)
    assert "QuantizeLinear" in {n.op_type for n in quantised.graph.node} and float_ops
    # built ahead (`rollcall models quantize --person`): a size already cached is not built again
    assert int8.prebuild_int8([size]) == [(size, False)]
    assert int8.input_sizes((720, 1280), [640, 576, 320]) == [(384, 640), (352, 576), (192, 320)]


def test_an_int8_variant_key_follows_its_calibration_photos(monkeypatch):
    """The int8 variant is calibrated on the pack's sample photos: a photo added to them (a new test identity)
    makes another variant, so whatever is cached from a variant's detections (bench tracking) must not be
    reused under the old key."""
    size = (384, 640)
    photos = person_stage.calibration_photos()
    assert len(photos) > 2
    before = PersonDetector("open", precision="int8").int8_key(size)
    monkeypatch.setattr(person_stage, "calibration_photos", lambda: photos[:-1])
    fewer = PersonDetector("open", precision="int8")
    assert fewer.int8_key(size) != before
    assert fewer.int8_key((256, 448)) != fewer.int8_key(size)


def test_the_int8_calibration_set_is_named_not_whatever_the_photo_folder_holds(monkeypatch, tmp_path):
    """A photo added to the sample folder (a test identity, a file an operator drops there) must not re-quantise
    the detector every camera runs: the calibration set is the named list, each a photo the catalogue pins or
    derives, and a listed photo missing is a one-line error that says how to get it."""
    declared = {p.name for p in pack_spec("open").photos} | {v.name for v in VARIANTS}
    assert set(PERSON_INT8_CALIBRATION) <= declared and len(PERSON_INT8_CALIBRATION) >= quantize.MIN_CALIBRATION_IMAGES
    size = (384, 640)
    before = PersonDetector("open", precision="int8").int8_key(size)
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in PHOTOS_DIR.iterdir():
        (folder / photo.name).symlink_to(photo)
    (folder / "zz_new_identity.png").write_bytes((PHOTOS_DIR / "hopper.png").read_bytes())
    monkeypatch.setattr(person_stage, "PHOTOS_DIR", folder)
    assert [p.name for p in person_stage.calibration_photos()] == sorted(PERSON_INT8_CALIBRATION)
    assert PersonDetector("open", precision="int8").int8_key(size) == before
    (folder / "bus_a.png").unlink()
    with pytest.raises(RollcallError, match=r"1 calibration photo\(s\) missing .*\(bus_a\.png\): run `rollcall models fetch`"):
        person_stage.calibration_photos()


def _int8_builds(folder: Path) -> list[int]:
    """The pids of this process's children building int8 variants into ``folder`` (processor.int8_build)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            command = (status.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(os.getpid()) and b"processor.int8_build" in command \
                and str(folder).encode() in command:
            found.append(int(status.parent.name))
    return sorted(found)


def test_int8_size_without_its_variant_runs_the_float_model_while_it_is_built(detector, tmp_path, monkeypatch):
    """A running processor never waits for an int8 variant to be built (~7 s of both cores; on a fresh
    machine the first class-rush run under load lost 12 of 18 recognitions to three sizes built as the
    cameras met them): the float model answers at once, the variant is built in a process of its own at
    the lowest CPU priority, and takes over once it is cached."""
    _need(VTEST)
    monkeypatch.setattr(quantize, "cache_dir", lambda: tmp_path)  # nothing built yet
    images = [img for _, img in _frames(VTEST, [0, 90])]
    int8 = PersonDetector("open", precision="int8")
    started = time.monotonic()
    first = int8.detect(images)
    assert int8.int8_pending and time.monotonic() - started < 5
    for found, plain in zip(first, detector.detect(images)):  # the float model's answer, as it is
        assert [(*d.box, d.score) for d in found] == [pytest.approx((*d.box, d.score), abs=1e-3) for d in plain]
    builds = _int8_builds(tmp_path / "int8")
    assert len(builds) == 1  # one build for the one size, however many batches meet it
    int8.detect(images)
    assert _int8_builds(tmp_path / "int8") == builds
    deadline = time.monotonic() + 30  # the build lowers its own priority first thing
    while os.getpriority(os.PRIO_PROCESS, builds[0]) != 19 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.getpriority(os.PRIO_PROCESS, builds[0]) == 19  # a process of its own, at the lowest priority
    assert int8.wait_for_int8(300)
    later = int8.detect(images)
    assert not int8.int8_pending and list((tmp_path / "int8").glob("*.onnx"))
    scores = lambda batch: [round(d.score, 4) for found in batch for d in found]  # noqa: E731
    assert scores(later) != scores(first)  # the int8 model's answer now (its scores differ from the float's)
