"""Scenario rendering on real files: real photos, real pedestrians, real H.264, no mocks.

Needs the test photos in infra/scenarios/photos/ (`rollcall models fetch open`) and Debian's
opencv-doc (vtest.avi). Renders small 640x360 scenarios, so the whole file runs in well under a
minute on 2 cores once the pedestrian figures are cached (first run: a few seconds more).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from infra.errors import RollcallError
from infra.paths import PROJECT_ROOT
from infra.scenario import load_spec, render
from infra.scenario.faces import detect_faces
from infra.scenario.spec import ENTRY_WALK_S, EXIT_WALK_S

PHOTOS = PROJECT_ROOT / "infra" / "scenarios" / "photos"
NEEDED = ["macron_2014.jpg", "macron_2025.jpg", "ardern_2018.jpg", "ardern_2022.jpg", "sunak.jpg",
          "obama_senate.jpg", "obama_oval.jpg", "obama_congress.jpg", "biden.jpg"]

SMALL = """
[scenario]
name = "small"
duration_s = 20
fps = 10
seed = 3
transit_s = 4
door_passage_s = 3.5

[cameras.door]
width = 640
height = 360
[cameras.room]
width = 640
height = 360

[[people]]
id = "a"
name = "Person A"
enroll = ["photos/macron_2014.jpg"]
door_photo = "photos/macron_2025.jpg"
arrive_s = 1
leave_s = 14

[[people]]
id = "b"
name = "Person B"
enroll = ["photos/ardern_2018.jpg"]
door_photo = "photos/ardern_2022.jpg"
arrive_s = 2.5

[[visitors]]
door_photo = "photos/sunak.jpg"
arrive_s = 6

[session]
course = "T100"
room = "R1"
start_s = 2
end_s = 18
min_presence_s = 9
"""


@pytest.fixture(scope="module")
def photos() -> Path:
    missing = [n for n in NEEDED if not (PHOTOS / n).is_file()]
    if missing:
        pytest.fail(f"test photos missing in {PHOTOS} ({', '.join(missing)}): run `rollcall models fetch open`")
    return PHOTOS


def write_spec(folder: Path, text: str, photos: Path, name: str = "spec.toml") -> Path:
    """A spec in ``folder`` with a photos/ copy beside it (paths in specs are relative to the spec)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "photos").exists():
        shutil.copytree(photos, folder / "photos", ignore=shutil.ignore_patterns("*.md"))
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("small")
    spec = write_spec(folder, SMALL, photos)
    started = time.monotonic()
    result = render(spec, folder / "out")
    return spec, result, time.monotonic() - started


def test_videos_decode_with_right_size_and_frame_count(small):
    _, result, _ = small
    assert not result.cached
    for path in (result.door_video, result.room_video):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert container.format.name == "mpegts"
            assert stream.codec_context.name == "h264"
            frames = keys = 0
            for packet in container.demux(stream):
                keys += bool(packet.is_keyframe and packet.size)
                for frame in packet.decode():
                    assert (frame.width, frame.height) == (640, 360)
                    assert frame.format.name == "yuv420p"
                    frames += 1
        assert abs(frames - 20 * 10) <= 1, path
        assert keys >= 19, f"{path}: {keys} keyframes in 20 s, want one a second"
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["door.ts", "ground_truth.json", "room.ts"]


def test_ground_truth_matches_spec(small):
    _, result, _ = small
    gt = json.loads(result.ground_truth_path.read_text())
    assert gt == result.ground_truth
    assert gt["input_hash"] == result.input_hash and gt["renderer_version"]
    sc = gt["scenario"]
    assert (sc["name"], sc["fps"], sc["duration_s"], sc["n_frames"]) == ("small", 10, 20, 200)
    assert gt["cameras"]["door"]["width"] == 640 and gt["cameras"]["room"]["height"] == 360
    zone = gt["cameras"]["room"]["entry_zone"]
    assert len(zone) >= 3 and all(0 <= x <= 640 and 0 <= y <= 360 for x, y in zone)
    assert gt["session"] == {"course": "T100", "room": "R1", "start_s": 2, "end_s": 18, "min_presence_s": 9}

    people = {p["id"]: p for p in gt["people"]}
    assert list(people) == ["a", "b", "visitor-1"]
    assert [p["enrolled"] for p in people.values()] == [True, True, False]
    for pid, arrive in (("a", 1), ("b", 2.5), ("visitor-1", 6)):
        p = people[pid]
        door, room = p["door"], p["room"]
        assert door["t_start"] == arrive
        assert door["t_pass"] == pytest.approx(arrive + 3.5)
        assert room["t_appear"] == pytest.approx(door["t_pass"] + 4)  # transit_s
        assert room["t_seated"] == pytest.approx(room["t_appear"] + ENTRY_WALK_S)
        assert room["t_appear"] <= room["t_enter_zone"] < room["t_leave_zone"] < room["t_seated"]
        assert len(door["face_box_at_pass"]) == 4 and door["face_box_at_pass"][2] > 80
        for s in room["track"]:  # real figure sizes for a person detector (here at 360 px frame height)
            assert 0.25 * 360 <= s["box"][3] <= 0.45 * 360
    # a leaves at 14 s and is gone 5 s later; the others stay to the end
    assert people["a"]["room"]["leave_s"] == 14 and people["a"]["room"]["t_gone"] == pytest.approx(14 + EXIT_WALK_S)
    assert people["a"]["room"]["t_leave_zone"] < people["a"]["room"]["t_enter_zone_out"] < 14 + EXIT_WALK_S
    assert people["a"]["room"]["track"][-1]["phase"] == "walking-out"
    assert people["b"]["room"]["t_gone"] is None and people["b"]["room"]["present_to"] == 20
    # presence rule: a in the room 8.5..19 -> 9.5 s of the 2..18 session; b 10..20 -> 8 s (< 9)
    assert people["a"]["present_in_session_s"] == pytest.approx(9.5)
    assert people["b"]["present_in_session_s"] == pytest.approx(8.0)
    assert gt["expected_present"] == ["a"]
    assert not people["visitor-1"]["expected_present"]


def test_face_in_door_video_at_t_pass_is_where_ground_truth_says(small):
    _, result, _ = small
    gt = result.ground_truth
    wanted = {p["door"]["frame_at_pass"]: p for p in gt["people"]}
    seen = set()
    with av.open(str(result.door_video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i not in wanted:
                continue
            x, y, w, h = wanted[i]["door"]["face_box_at_pass"]
            faces = detect_faces(frame.to_ndarray(format="bgr24"))
            best = max((_iou((x, y, w, h), (f.x, f.y, f.w, f.h)) for f in faces), default=0.0)
            assert best >= 0.5, f"{wanted[i]['id']}: no face found at the ground-truth box at frame {i}"
            seen.add(wanted[i]["id"])
    assert seen == {"a", "b", "visitor-1"}


def test_second_render_is_cached_and_a_changed_spec_renders_again(small, photos):
    spec, result, first_seconds = small
    mtime = result.door_video.stat().st_mtime_ns
    again = render(spec, result.out_dir)
    assert again.cached and again.input_hash == result.input_hash
    assert again.seconds < max(1.0, first_seconds / 4)
    assert result.door_video.stat().st_mtime_ns == mtime

    folder = spec.parent / "changed"
    changed = write_spec(folder, SMALL.replace("duration_s = 20", "duration_s = 19"), photos)
    shutil.copytree(result.out_dir, folder / "out")
    (folder / ".out.rendering-999999999-dead").mkdir()  # left by a killed render
    third = render(changed, folder / "out")
    assert not third.cached and third.input_hash != result.input_hash
    assert third.ground_truth["scenario"]["n_frames"] == 190
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp, old or stale folders left


BAD = {
    "missing photo": (lambda s: s.replace("photos/ardern_2022.jpg", "photos/nobody.jpg"),
                      "people[1].door_photo: file photos/nobody.jpg does not exist"),
    "not an image": (lambda s: s.replace("photos/sunak.jpg", "photos/notes.jpg"),
                     "visitors[0].door_photo: file photos/notes.jpg is not an image"),
    "malformed toml": (lambda s: s.replace('course = "T100"', 'course = "T100'), "malformed TOML"),
    "missing key": (lambda s: s.replace("arrive_s = 2.5\n", ""), "people[1].arrive_s: missing"),
    "unknown key": (lambda s: s.replace("arrive_s = 2.5", "arive_s = 2.5"), "people[1].arive_s: unknown key"),
    "wrong type": (lambda s: s.replace("fps = 10", 'fps = "ten"'), "scenario.fps"),
    "arrival after the end": (lambda s: s.replace("arrive_s = 6", "arrive_s = 25"),
                              "visitors[0].arrive_s: 25 s is outside the scenario [0, 20)"),
    "negative arrival": (lambda s: s.replace("arrive_s = 6", "arrive_s = -1"), "visitors[0].arrive_s"),
    "leave before arrive": (lambda s: s.replace("leave_s = 14", "leave_s = 0.5"),
                            "people[0].leave_s: 0.5 s is before the person is in place"),
    "session ends before it starts": (lambda s: s.replace("end_s = 18", "end_s = 1"),
                                      "session.end_s: 1 s is not after session.start_s"),
    "duplicate id": (lambda s: s.replace('id = "b"', 'id = "a"'), "people[1].id: duplicate id 'a'"),
    "door photo is an enrolment photo": (lambda s: s.replace("photos/ardern_2022.jpg", "photos/ardern_2018.jpg"),
                                         "people[1].door_photo: same photo as people[1].enroll[0]"),
    "no face in the door photo": (lambda s: s.replace("photos/sunak.jpg", "photos/wall.png"),
                                  "visitors[0].door_photo: no face found in photos/wall.png"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_error_and_leaves_nothing(case, tmp_path, photos):
    change, expected = BAD[case]
    spec = write_spec(tmp_path, change(SMALL), photos)
    (tmp_path / "photos" / "notes.jpg").write_text("shopping list: milk, eggs\n")
    rng = np.random.default_rng(0)
    wall = cv2.GaussianBlur(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8), (0, 0), 9)
    cv2.imwrite(str(tmp_path / "photos" / "wall.png"), wall)
    with pytest.raises(RollcallError) as err:
        render(spec, tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(spec)), message
    assert expected in message, message
    assert "—" in message  # says what to do
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_malformed_toml_names_line_and_column(tmp_path, photos):
    spec = write_spec(tmp_path, SMALL.replace("fps = 10", "fps = = 10"), photos)
    with pytest.raises(RollcallError, match=r"line 5, column"):
        load_spec(spec)


def test_out_dir_that_is_not_a_render_is_left_alone(tmp_path, photos):
    spec = write_spec(tmp_path, SMALL, photos)
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(RollcallError, match="is not a rendered scenario"):
        render(spec, out)
    assert (out / "thesis.tex").read_text() == "precious"


def test_default_scenario_spec_is_valid(photos):
    spec = load_spec(PROJECT_ROOT / "infra" / "scenarios" / "default.toml")
    ids = [a.id for a in spec.arrivals]
    assert {"macron", "ardern", "obama"} <= set(ids) and len(ids) == 5
    assert sum(not a.enrolled for a in spec.arrivals) == 2
    assert any(a.leave_s is not None for a in spec.arrivals)
    assert min(a.arrive_s for a in spec.arrivals) >= 2.5
    for a in spec.arrivals:
        assert a.door_photo not in a.enroll


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)
