"""Pure logic of the camera and door set-up pages: the transit window suggested from confident single
arrivals, the entry-zone and door forms, and a running room stage taking a redrawn entry zone (the processor
side of a zone saved in the dashboard: processor/stages/room.py reconfigure)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dashboard.camera_forms import CameraForm, DoorForm, ZoneForm
from dashboard.forms import parse
from dashboard.services import Problem
from dashboard.transit import MIN_ARRIVALS, single_arrival_transits, suggest
from infra.foundation.config import EXAMPLE_CONFIG, load_config
from processor.stages.room import RoomStage


def test_only_lone_arrivals_followed_by_one_entry_count():
    recognitions = [100.0, 300.0, 305.0, 500.0, 700.0]
    # 100 -> entry at 104 (counted); 300 and 305: two people together (neither counted); 500 -> two entries
    # (not counted); 700 -> an entry 3 s before it (someone ahead, not counted) and one after
    entries = [104.0, 309.0, 312.0, 506.0, 509.0, 697.0, 706.0]
    assert single_arrival_transits(recognitions, entries) == [4.0]


def test_the_suggestion_covers_the_middle_of_the_transits_with_margins():
    transits = [3.0 + 0.1 * i for i in range(40)] + [30.0]  # one outlier (somebody who stopped to talk)
    s = suggest(transits)
    assert s.arrivals == 41 and s.median_s == 5.0
    assert 2.5 <= s.min_s <= 3.0 and 7.0 <= s.max_s <= 8.5, s  # the outlier does not stretch the window


def test_too_few_arrivals_give_a_reason_instead_of_a_window():
    s = suggest([4.0] * (MIN_ARRIVALS - 1))
    assert s.min_s is None and str(MIN_ARRIVALS) in s.reason


@pytest.mark.parametrize("zone, message", [
    ([[0, 0], [10, 10]], "3 to 64"),
    ([[0, 0], [10, 10], [20, 20]], "no area"),
    ([[0, 0], [10, 0], [10, -5]], "outside any picture"),
    ("0,0 1,1 2,2", "3 to 64"),
    ([["a", 0], [10, 0], [10, 10]], "zone"),
])
def test_bad_zones_are_refused_with_the_reason(zone, message):
    with pytest.raises(Problem) as refused:
        parse(ZoneForm, {"zone": zone})
    assert refused.value.status == 400 and message in refused.value.message


@pytest.mark.parametrize("fields, message", [
    ({"door_camera": "d", "room_camera": "r", "transit_min_s": "5", "transit_max_s": "2"}, "must be above"),
    ({"door_camera": "d", "room_camera": "r", "transit_min_s": "x", "transit_max_s": "2"}, "not a number"),
    ({"door_camera": "", "room_camera": "r", "transit_min_s": "0", "transit_max_s": "2"}, "choose both"),
])
def test_bad_door_forms_are_refused(fields, message):
    with pytest.raises(Problem) as refused:
        parse(DoorForm, fields)
    assert message in refused.value.message


@pytest.mark.parametrize("fields, message", [
    ({"id": "c1", "role": "door", "room": "A101", "url": "ftp://x"}, "url"),
    ({"id": "c 1", "role": "door", "room": "A101", "url": "rtsp://x/y"}, "id"),
    ({"id": "c1", "role": "hall", "room": "A101", "url": "rtsp://x/y"}, "role"),
    ({"id": "c1", "role": "door", "room": "A101", "url": "rtsp://x/y", "analysis_fps": "900"}, "analysis_fps"),
])
def test_bad_cameras_are_refused_naming_the_field(fields, message):
    with pytest.raises(Problem) as refused:
        parse(CameraForm, fields).camera()
    assert refused.value.message.startswith(message)


def test_an_unticked_enabled_box_disables_the_camera():
    camera = parse(CameraForm, {"id": "c1", "role": "room", "room": "A101", "url": "embedded:x/room"}).camera()
    assert camera.enabled is False and camera.analysis_fps == 5.0


def test_a_running_room_stage_takes_a_redrawn_entry_zone():
    config = load_config(EXAMPLE_CONFIG, environ={})
    door = config.doors[0]
    stage = RoomStage(config, publish=lambda *a, **k: True, topic="presence", recognitions=asyncio.Queue())
    tracker = stage._tracker(door.room_camera)
    far_corner = np.array([[1100.0, 500.0, 1180.0, 700.0]])  # feet at (1140, 700): outside the file's zone
    assert tracker.zone_of(far_corner) == [None]
    redrawn = [(1000.0, 600.0), (1280.0, 600.0), (1280.0, 720.0), (1000.0, 720.0)]
    doors = [d.model_copy(update={"entry_zone": redrawn}) if d.id == door.id else d for d in config.doors]
    stage.reconfigure(config.model_copy(update={"doors": doors}))
    assert stage._tracker(door.room_camera) is tracker  # the same tracker (its tracks stay), its zone new
    assert tracker.zone_of(far_corner) == [door.id]
