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

from infra.foundation.errors import RollcallError
from infra.foundation.paths import PROJECT_ROOT
from infra.scenario import load_spec, render
from infra.scenario.attacks import held_picture
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
    "with an unknown id": (lambda s: s.replace("arrive_s = 2.5\n", 'arrive_s = 2.5\nwith = "zz"\n'),
                           "people[1].with: 'zz' is not another arrival's id"),
    "pair too far apart": (lambda s: s.replace("arrive_s = 2.5\n", 'arrive_s = 2.5\nwith = "a"\n'),
                           "people[1].with: 'a' arrives 1.5 s apart"),
    "pair on one side": (lambda s: s.replace("arrive_s = 2.5\n", 'arrive_s = 1.2\nwith = "a"\nside = "left"\n')
                         .replace("arrive_s = 1\n", 'arrive_s = 1\nside = "left"\n'), "people[1].side: same side as 'a'"),
    "side not left or right": (lambda s: s.replace("arrive_s = 2.5\n", 'arrive_s = 2.5\nside = "middle"\n'),
                               "people[1].side"),
    "behind too close": (lambda s: s.replace("arrive_s = 2.5\n", 'arrive_s = 1.5\nbehind = "a"\n'),
                         "people[1].behind: arrives 0.5 s after 'a'"),
    "turns back but leaves": (lambda s: s.replace("leave_s = 14\n", "leave_s = 14\nturns_back = true\n"),
                              "people[0].leave_s: someone who turns_back never enters the room"),
    "holds a picture of nobody enrolled": (lambda s: s.replace("arrive_s = 6", 'arrive_s = 6\nholds = { kind = "print", of = "zz" }'),
                                           "visitors[0].holds.of: 'zz' is not an enrolled person's id"),
    "holds a poster": (lambda s: s.replace("arrive_s = 6", 'arrive_s = 6\nholds = { kind = "poster", of = "a" }'),
                       "visitors[0].holds.kind"),
    "absent but arrives": (lambda s: s.replace("arrive_s = 2.5\n", "arrive_s = 2.5\nabsent = true\n"),
                           "people[1].arrive_s: an absent person never arrives"),
    "no free lane": (lambda s: s.replace("arrive_s = 6", "arrive_s = 1.5").replace("arrive_s = 2.5", "arrive_s = 2"),
                     "people[1].arrive_s: no free lane at the door camera at 2 s"),
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


def test_an_attack_spec_has_absent_students_and_visitors_holding_their_pictures(photos):
    spec = load_spec(PROJECT_ROOT / "infra" / "scenarios" / "spoof.toml")
    assert [a.id for a in spec.absent] == ["hanks", "collins"] and all(a.enroll for a in spec.absent)
    held = {a.id: a.holds for a in spec.arrivals if a.holds is not None}
    assert {k: (v[0], v[1], v[2].name) for k, v in held.items()} == {
        "attacker-print": ("print", "hanks", "hanks_door.png"), "attacker-phone": ("phone", "collins", "collins_door.png")}
    assert all(not a.enrolled for a in spec.arrivals if a.holds is not None)  # the holders are visitors


@pytest.mark.parametrize("kind", ["print", "phone"])
def test_a_held_picture_shows_the_face_where_it_says_inside_an_opaque_rectangle(kind):

    sprite = held_picture(kind, PHOTOS / "hanks_door.png", "test")
    fx, fy, fw, fh = sprite.face
    # as the door camera sees it, scaled down (at full size a phone's pixel grid hides the face from YuNet; the
    # grid's moire makes it come and go with the scale, as it does in the door video): found at some door sizes
    found = []
    for scale in (0.5, 0.35, 0.25, 0.18):
        small = cv2.resize(sprite.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found += [(f.x / scale, f.y / scale, f.w / scale) for f in detect_faces(small)]
    assert found, "no face in the picture"
    x, y, w = found[0]
    assert abs(x - fx) < 0.15 * fw and abs(y - fy) < 0.2 * fh and abs(w - fw) < 0.2 * fw, (found[0], sprite.face)
    # opaque all over the face and round it (the picture), see-through at the canvas corners (the hand aside)
    assert sprite.alpha[int(fy):int(fy + fh), int(fx):int(fx + fw)].min() > 0.99
    assert sprite.alpha[0, 0] == 0 and sprite.alpha[-1, -1] == 0


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


RUSH = """
[scenario]
name = "rush"
duration_s = 17
fps = 10
seed = 5
transit_s = 1.5
door_passage_s = 3.0

[[people]]
id = "a"
name = "A"
enroll = ["photos/macron_2014.jpg"]
door_photo = "photos/macron_2025.jpg"
arrive_s = 0.5

[[people]]
id = "b"
name = "B"
enroll = ["photos/ardern_2018.jpg"]
door_photo = "photos/ardern_2022.jpg"
arrive_s = 0.7
with = "a"

[[people]]
id = "c"
name = "C"
enroll = ["photos/obama_senate.jpg"]
door_photo = "photos/obama_congress.jpg"
arrive_s = 2.6
turns_back = true

[[visitors]]
id = "tail"
door_photo = "photos/sunak.jpg"
arrive_s = 2.0
behind = "a"

[session]
course = "T100"
room = "R1"
start_s = 0
end_s = 17
min_presence_s = 5
"""


@pytest.fixture(scope="module")
def rush(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("rush")
    return render(write_spec(folder, RUSH, photos), folder / "out")


def test_rush_ground_truth_pairs_tailgater_and_turning_back(rush):
    gt = rush.ground_truth
    people = {p["id"]: p for p in gt["people"]}
    a, b, c, tail = people["a"], people["b"], people["c"], people["tail"]
    assert (a["with"], b["with"], tail["behind"]) == ("b", "a", "a")
    assert a["door"]["lane"] != b["door"]["lane"] and tail["door"]["lane"] == a["door"]["lane"]
    at_once = {pid for pid, p in people.items() for box in p["door"]["face_boxes"] if box["frame"] == 30}
    assert at_once == {"a", "b", "c", "tail"}  # four people in the door camera's view at 3.0 s
    # c turns back: seen at the door (the back of the head at the end), never in the room, not expected
    assert c["turns_back"] and c["room"]["track"] == [] and c["room"]["t_appear"] is None
    assert c["door"]["face_boxes"][-1]["back"] and not c["door"]["face_boxes"][0]["back"]
    assert c["door"]["t_end"] == pytest.approx(c["door"]["t_pass"] + gt["scenario"]["turn_back_s"])
    assert "c" not in gt["expected_present"] and {"a", "b"} <= set(gt["expected_present"])
    # the pair walks into the room side by side: same time, apart sideways
    ta, tb = a["room"]["track"][0], b["room"]["track"][0]
    assert ta["t"] == pytest.approx(tb["t"], abs=0.25) and abs(ta["foot"][0] - tb["foot"][0]) > 40
    assert len({tuple(p["clothing"]["top_bgr"]) for p in people.values()}) == 4


def _mean_chroma(img: np.ndarray, box) -> np.ndarray:
    x, y, w, h = (int(round(v)) for v in box)
    patch = img[y:y + h, x:x + w].reshape(-1, 3).astype(np.float64)
    mean = patch.mean(axis=0)
    return mean / mean.sum()


def test_door_torso_wears_the_room_figures_clothing(rush):
    """The clothing cue is real: the colour under the face at the door matches the same person's torso in
    the room better than anybody else's."""
    gt = rush.ground_truth
    entering = [p for p in gt["people"] if not p["turns_back"]]
    door, room = _frames(rush.door_video), _frames(rush.room_video)
    fps = gt["scenario"]["fps"]
    at_door, in_room = {}, {}
    for p in entering:
        sample = next(b for b in p["door"]["face_boxes"] if b["frame"] == p["door"]["frame_at_pass"] - 5)
        at_door[p["id"]] = _mean_chroma(door[sample["frame"]], sample["torso_sample"])
        s = next(s for s in p["room"]["track"] if s["phase"] == "in-place")
        x, y, w, h = s["box"]  # the top's band of the figure: 0.22 .. 0.45 of its height, middle half
        in_room[p["id"]] = _mean_chroma(room[int(round(s["t"] * fps))], (x + w / 4, y + 0.22 * h, w / 2, 0.23 * h))
    for pid, colour in at_door.items():
        nearest = min(in_room, key=lambda other: np.abs(in_room[other] - colour).sum())
        assert nearest == pid, (pid, colour, in_room)


def test_room_figures_show_a_face_when_facing_the_camera(rush):
    gt = rush.ground_truth
    room = _frames(rush.room_video)
    fps = gt["scenario"]["fps"]
    samples = [(int(round(s["t"] * fps)), s["face_box"]) for p in gt["people"] for s in p["room"]["track"]
               if s["face_box"] is not None and s["visible"] >= 0.99]
    assert len(samples) >= 10
    found = 0
    for frame, box in samples:
        faces = detect_faces(room[frame], score=0.5)
        found += max((_iou(box, (f.x, f.y, f.w, f.h)) for f in faces), default=0.0) >= 0.3
    assert found >= 0.5 * len(samples), f"YuNet found {found} of {len(samples)} room faces"


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def test_class_rush_spec_is_a_class_start(photos):
    spec = load_spec(PROJECT_ROOT / "infra" / "scenarios" / "class-rush.toml")
    enrolled = [a for a in spec.arrivals if a.enrolled]
    assert len(enrolled) >= 16 and spec.duration_s <= 130
    assert max(a.arrive_s for a in enrolled) - min(a.arrive_s for a in enrolled) <= 120
    pairs = [(a, b) for a in spec.arrivals for b in spec.arrivals if a.partner == b.id and a.arrive_s < b.arrive_s]
    assert len(pairs) >= 2 and all(b.arrive_s - a.arrive_s < 0.3 for a, b in pairs)
    assert any(a.behind and not a.enrolled for a in spec.arrivals)  # a tailgating visitor
    assert any(a.turns_back and a.enrolled for a in spec.arrivals)
    assert any(a.leave_s is not None for a in spec.arrivals)
    assert any(a.arrive_s > spec.raw.session.start_s + 30 for a in enrolled)  # a late student
    assert len({a.id for a in spec.arrivals}) == len({a.door_photo for a in spec.arrivals})
