"""The room stage hands identities to people who come in side by side, from their clothes (pure logic on
drawn frames, real schemas): two people pass the door 0.1 s apart and enter the room together (transit
and order cannot tell them apart, whichever frame the tracker confirms each of them in); the door's
recognitions carry their clothing (recognition 1.1), the room stage describes each entering track from its
frames and the side of the doorway it came in on."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from processor.appearance import describe_below_face
from infra.foundation.config import EXAMPLE_CONFIG, load_config
from schemas.events import validate
from processor.frames import Frame
from processor.stages.persons import PersonDetection
from processor.stages.recognition_feed import DoorRecognition
from processor.stages.room import RoomStage

FPS = 4.0
RED, BLUE, GREEN = (40, 40, 200), (200, 80, 30), (60, 170, 60)


def _door_look(colour):
    image = np.full((720, 1280, 3), 180, np.uint8)
    image[200:320, 600:700] = (120, 150, 200)  # the face
    image[330:720, 560:740] = colour  # the shirt below it
    return describe_below_face(image, (600, 200, 700, 320))


def _boxes_at(t: float) -> list[tuple[tuple[float, float, float, float], tuple]]:
    """Two people, feet in the entry zone side by side at t=0 (left one a little ahead), walking apart
    into the room by t=3; the left one wears ``left``, the right one ``right``."""
    s = min(1.0, t / 3.0)
    out = []
    for start_x, end_x in ((110, 500), (250, 900)):
        fx, fy = start_x + s * (end_x - start_x), 440 + s * 200
        height = 230 + s * 70
        out.append((fx - 45, fy - height, fx + 45, fy))
    return out


def _run(left_colour, right_colour, door_looks):
    config = load_config(EXAMPLE_CONFIG, environ={})
    published: list[tuple[str, str, dict]] = []
    recognitions: asyncio.Queue = asyncio.Queue()
    stage = RoomStage(config, publish=lambda topic, key, event, **_: published.append((topic, key, event)) or True,
                      topic="presence", recognitions=recognitions)
    base = time.time() - 120.0
    for k, (person, look) in enumerate(door_looks):
        recognitions.put_nowait(DoorRecognition("door-a101", person, f"00000000-0000-4000-8000-00000000000{k + 1}",
                                                door_time=base - 6.5 + 0.1 * k, appearance=look))
    for n in range(int(16 * FPS)):
        t = n / FPS
        image = np.full((720, 1280, 3), 150, np.uint8)
        detections = []
        for (x1, y1, x2, y2), colour in zip(_boxes_at(t), (left_colour, right_colour)):
            x1, y1, x2, y2 = map(int, (x1, y1, x2, y2))
            image[y1:y1 + (y2 - y1) // 2, x1:x2] = colour
            image[y1 + (y2 - y1) // 2:y2, x1:x2] = (40, 40, 40)
            detections.append(PersonDetection((x1, y1, x2, y2), 0.9, 0))
        stage.handle([(Frame("room-a101", n, t, base + t, image), detections, [])])
    for _, _, event in published:
        validate(event, unpublished=True)
    identities = [e for _, _, e in published if e["kind"] == "identity"]
    enters = {e["track_id"]: e["box"]["x1"] for _, _, e in published if e["kind"] == "enter"}
    left_track = min(enters, key=enters.get)
    return {("left" if e["track_id"] == left_track else "right"): e for e in identities}


def test_a_pair_side_by_side_is_told_apart_by_clothing():
    # the door saw bob first (0.1 s ahead) but bob is on the right in the room, in blue
    got = _run(RED, BLUE, [("bob", _door_look(BLUE)), ("alice", _door_look(RED))])
    assert got["left"]["person_id"] == "alice" and got["right"]["person_id"] == "bob"
    assert not got["left"]["ambiguous"] and got["left"]["identity_source"] == "handoff"


def test_the_same_clothes_on_both_stay_unknown_and_ambiguous():
    got = _run(GREEN, GREEN, [("bob", _door_look(GREEN)), ("alice", _door_look(GREEN))])
    assert all(e["person_id"] is None and e["ambiguous"] for e in got.values()) and len(got) == 2


def test_recognitions_without_appearance_decide_as_before():
    got = _run(RED, BLUE, [("bob", None), ("alice", None)])
    assert all(e["person_id"] is None and e["ambiguous"] for e in got.values()) and len(got) == 2


def test_entry_side_is_relative_to_where_people_usually_come_in():
    stage = RoomStage(load_config(EXAMPLE_CONFIG, environ={}), publish=lambda *a, **k: True, topic="presence",
                      recognitions=asyncio.Queue())
    assert [stage._entry_side("A101-main", x, 80) for x in (170, 172, 168)] == [None, None, None]  # too few yet
    assert stage._entry_side("A101-main", 171, 80) is None  # in the middle: alone
    assert stage._entry_side("A101-main", 134, 80) == "left" and stage._entry_side("A101-main", 206, 80) == "right"
