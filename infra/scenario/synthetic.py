"""Synthetic presence and recognition events for the writer's tests and benchmark: people walking into a
room during a session, staying (periodic updates), some leaving early, tracks that fragment, visitors
that stay unknown, identity corrections, door recognitions. Deterministic for a seed."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import uuid
from dataclasses import dataclass, field

from schemas.events import build_event, utc_timestamp, validate


@dataclass
class Stream:
    """Events in publication order, each with its message key (the camera)."""

    messages: list[tuple[str, dict]] = field(default_factory=list)

    def add(self, key: str, event: dict) -> None:
        self.messages.append((key, event))


def presence_event(*, kind: str, room_id: str, camera_id: str, track_id: str, person_id: str | None,
                   frame_time: float, first_seen: float, recognition_event_id: str | None = None,
                   previous_person_id: str | None = None, check: bool = False) -> dict:
    """A presence event; ``check=True`` validates it against the schema (slow: for tests)."""
    event = {
        "event_id": str(uuid.uuid4()), "event_type": "presence", "schema_version": "1.0",
        "published_at": utc_timestamp(frame_time + 0.05), "kind": kind, "room_id": room_id, "camera_id": camera_id,
        "track_id": track_id, "identity": "known" if person_id else "unknown", "person_id": person_id,
        "identity_source": ("handoff" if recognition_event_id else "reacquired") if person_id else "none",
        "handoff": ({"door_id": f"door-{room_id}", "recognition_event_id": recognition_event_id, "transit_s": 4.0}
                    if person_id and recognition_event_id else None),
        "ambiguous": False, "previous_person_id": previous_person_id if kind == "identity" else None,
        "frame_time": utc_timestamp(frame_time), "first_seen": utc_timestamp(first_seen),
        "last_seen": utc_timestamp(frame_time), "dwell_s": round(frame_time - first_seen, 3),
        "box": {"x1": 100.0, "y1": 100.0, "x2": 180.0, "y2": 300.0}, "frame_size": {"width": 1280, "height": 720},
    }
    if check:
        validate(event)
    return event


def recognition_event(*, room_id: str, camera_id: str, track_id: str, person_id: str | None, frame_time: float) -> dict:
    event = build_event("recognition", {
        "camera_id": camera_id, "room_id": room_id, "door_id": f"door-{room_id}", "track_id": track_id,
        "identity": "known" if person_id else "unknown", "person_id": person_id, "score": 0.7 if person_id else 0.1,
        "margin": 0.3, "quality": 0.8, "frames": 5, "frame_time": frame_time, "first_seen": frame_time - 1.0,
        "last_seen": frame_time + 0.5, "box": (10, 10, 60, 60), "frame_size": (1280, 720), "model_pack": "open"})
    event["published_at"] = utc_timestamp(frame_time + 0.1)
    return event


def classroom(*, room_id: str, start: dt.datetime, minutes: float, people: list[str], visitors: int = 1,
              seed: int = 1, update_s: float = 10.0, check: bool = False, with_recognitions: bool = True,
              corrections: bool = True) -> tuple[Stream, Stream]:
    """A session's worth of events in one room: (presence stream, recognition stream).

    Each person arrives between 5 minutes early and 20 minutes late, some leave early, some tracks break
    in two; visitors stay unknown; with ``corrections`` one person's track is first given to someone
    else and then corrected by an 'identity' event.
    """
    rng = random.Random(seed)
    t0 = start.timestamp()
    end = t0 + minutes * 60
    room_camera, door_camera = f"room-{room_id}", f"door-{room_id}"
    timeline: list[tuple[float, int, str, dict]] = []  # (time, order of making, stream, event)
    order = itertools.count(1)
    walkers = [(p, True) for p in people] + [(f"visitor-{i}", False) for i in range(visitors)]
    for index, (who, known) in enumerate(walkers):
        arrive = t0 + rng.uniform(-300, 1200)
        leave = end - rng.uniform(0, 1800) if rng.random() < 0.3 else end + 60
        leave = max(leave, arrive + 60)
        person = who if known else None
        recognition_id = None
        if with_recognitions:
            rec = recognition_event(room_id=room_id, camera_id=door_camera, track_id=f"{door_camera}-face-{index}",
                                    person_id=person, frame_time=arrive - 4.0)
            recognition_id = rec["event_id"] if person else None
            timeline.append((arrive - 4.0, next(order), "rec", rec))
        # A track may break in two (tracking at low frame rates); the second part is reacquired.
        cut = arrive + (leave - arrive) * rng.uniform(0.3, 0.7) if rng.random() < 0.3 and leave - arrive > 300 else None
        parts = [(arrive, cut - 20), (cut, leave)] if cut else [(arrive, leave)]
        wrong_first = corrections and known and index == 0 and len(people) > 1
        for part, (a, b) in enumerate(parts):
            timeline += _track_events(
                room_id=room_id, camera=room_camera, track=f"{room_camera}-run{seed}-{index}-{part}", a=a, b=b,
                person=person, wrong_person=people[1] if (wrong_first and part == 0) else None,
                recognition_id=recognition_id if part == 0 else None, update_s=update_s, check=check, order=order)
    presence, recognitions = Stream(), Stream()
    for _, _, stream, event in sorted(timeline, key=lambda item: (item[0], item[1])):
        (recognitions if stream == "rec" else presence).add(event["camera_id"], event)
    return presence, recognitions


def _track_events(*, room_id: str, camera: str, track: str, a: float, b: float, person: str | None,
                  wrong_person: str | None, recognition_id: str | None, update_s: float, check: bool,
                  order) -> list[tuple[float, int, str, dict]]:
    """One room track from ``a`` to ``b``: enter, an update every ``update_s``, exit. With ``wrong_person``
    the track is first given to them, then corrected to ``person`` by an 'identity' event at a + 2 updates."""
    first_person = wrong_person if wrong_person is not None else person
    events: list[tuple[float, int, str, dict]] = []
    t = a
    kind = "enter"
    while t < b:
        current = first_person
        if wrong_person is not None and t >= a + update_s * 2:
            current = person
        events.append((t, next(order), "presence", presence_event(
            kind=kind, room_id=room_id, camera_id=camera, track_id=track, person_id=current,
            frame_time=t, first_seen=a, recognition_event_id=recognition_id, check=check)))
        kind = "update"
        nxt = t + update_s
        if wrong_person is not None and t < a + update_s * 2 <= nxt:
            # the correction: an identity event between two updates
            ti = a + update_s * 2
            events.append((ti, next(order), "presence", presence_event(
                kind="identity", room_id=room_id, camera_id=camera, track_id=track, person_id=person,
                previous_person_id=first_person, frame_time=ti, first_seen=a,
                recognition_event_id=recognition_id, check=check)))
        t = nxt
    events.append((b, next(order), "presence", presence_event(
        kind="exit", room_id=room_id, camera_id=camera, track_id=track, person_id=person,
        frame_time=b, first_seen=a, recognition_event_id=recognition_id, check=check)))
    return events
