"""How `rollcall scenario run` scores what the system published against the scenario's ground truth: the
door's recognition events by identity, and the room's tracks (each matched to the arrival its boxes overlap
best) by the identity they ended with. Attendance is scored in infra.scenario.attendance."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from infra.scenario.check import iou as box_iou


def score_recognitions(events: list[dict], truth: dict) -> dict:
    """Door recognitions against the ground truth, by identity.

    Each enrolled person must give exactly one event with their id, each visitor exactly one
    ``unknown`` event, and no event may carry the id of someone who did not pass the door.
    """
    people = truth.get("people", [])
    enrolled = [p["id"] for p in people if p.get("enrolled")]
    visitors = [p["id"] for p in people if not p.get("enrolled")]
    by_person: dict[str, int] = {}
    unknown = 0
    for event in events:
        if event.get("person_id"):
            by_person[event["person_id"]] = by_person.get(event["person_id"], 0) + 1
        else:
            unknown += 1
    recognised = [pid for pid in enrolled if by_person.get(pid, 0) >= 1]
    wrong = sorted(pid for pid in by_person if pid not in enrolled)
    duplicates = sum(max(0, n - 1) for pid, n in by_person.items() if pid in enrolled)
    visitors_unknown = min(unknown, len(visitors))
    passages = len(enrolled) + len(visitors)
    correct = len(recognised) + visitors_unknown
    return {
        "passages": passages,
        "events": len(events),
        "correct": correct,
        "accuracy": round(correct / passages, 4) if passages else None,
        "recognised": recognised,
        "missed": [pid for pid in enrolled if pid not in recognised],
        "wrong_ids": wrong,
        "duplicates": duplicates,
        "unknown_events": unknown,
        "visitors": len(visitors),
        "one_event_per_passage": len(events) == passages and duplicates == 0 and not wrong,
        "liveness": score_liveness(events),
    }


def score_liveness(events: list[dict]) -> dict:
    """Each recognition's liveness (recognition 1.2): the scores of the tracks found live, by identity
    (``unknown-N`` for the N-th unknown), and every suspected spoof with whom its picture matched."""
    live: dict[str, float] = {}
    suspect: list[dict] = []
    unknown = 0
    for event in sorted(events, key=lambda e: e.get("frame_time", "")):
        liveness = event.get("liveness")
        if liveness is None:
            continue
        if liveness["decision"] == "suspect":
            suspect.append({"pictured_person_id": liveness.get("pictured_person_id"), "score": liveness["score"],
                            "frames": liveness.get("frames"), "track_id": event["track_id"]})
            continue
        if event.get("person_id"):
            name = event["person_id"]
        else:
            unknown += 1
            name = f"unknown-{unknown}"
        live[name] = liveness["score"]
    return {"checked": sum(1 for e in events if e.get("liveness") is not None), "live_scores": live,
            "suspect": suspect}


def score_handoff(presence: list[dict], truth: dict, room_origin: float | None, *, tolerance_s: float = 0.3,
                  min_iou: float = 0.3) -> dict:
    """Room tracks against the ground truth. Each track is the arrival its boxes overlap best over its life:
    every presence event's box (the first sighting's on ``enter``) votes for the person whose ground-truth
    box (sampled every 0.5 s, interpolated; within ``tolerance_s`` of a sample) overlaps it best, at least
    ``min_iou``; most votes wins, a tie goes to the first box's vote. (The first box alone misread side-by-side
    arrivals: the partner's first box overlaps both people, and a visitor's track was taken for a student's
    second one.) Its identity is the last one its presence events gave it. ``accuracy`` = tracks of
    enrolled people with that person's identity / all tracks of enrolled people (a person whose track was
    split counts every piece); a visitor's track must stay unknown."""
    tracks = _tracks_of(presence)
    people = truth.get("people", [])
    if room_origin is None or not tracks:
        return {"tracks": len(tracks), "accuracy": None, "reason": "no room tracks" if not tracks else "no room frames"}
    owner = {track_id: _owner_of(track, people, room_origin, tolerance_s, min_iou)
             for track_id, track in tracks.items()}
    return _handoff_report(tracks, owner, people)


def _tracks_of(presence: list[dict]) -> dict[str, dict]:
    """Track id -> what its presence events say, in publication order: the first sighting, the boxes with
    their times, the event kinds, and the identity (with its source) of the last event."""
    tracks: dict[str, dict] = {}
    for event in sorted(presence, key=lambda e: e["published_at"]):
        track = tracks.setdefault(event["track_id"], {"first_seen": event["first_seen"], "person_id": None,
                                                      "source": "none", "ambiguous": False, "box": event["box"],
                                                      "kinds": [], "boxes": []})
        if event["kind"] == "enter":
            track["box"] = event["box"]
            track["boxes"].append((event["first_seen"], event["box"]))
        else:
            track["boxes"].append((event["frame_time"], event["box"]))
        track["kinds"].append(event["kind"])
        track["person_id"] = event["person_id"]
        track["source"] = event["identity_source"]
        track["ambiguous"] = track["ambiguous"] or event["ambiguous"]
    return tracks


def _owner_of(track: dict, people: list[dict], room_origin: float, tolerance_s: float, min_iou: float) -> str | None:
    """The arrival a track's boxes vote for most (a tie: the first box's vote), None when it matches nobody.
    Also notes the track's first sighting in video time (``video_t``)."""
    track["video_t"] = round(dt.datetime.fromisoformat(track["first_seen"]).timestamp() - room_origin, 2)
    votes = [_arrival_at(people, box, dt.datetime.fromisoformat(at).timestamp() - room_origin,
                         tolerance_s, min_iou) for at, box in track["boxes"]]
    counts = Counter(v for v in votes if v is not None)
    best = max(counts.values(), default=0)
    leaders = [pid for pid, n in counts.items() if n == best]
    return votes[0] if votes and votes[0] in leaders else (leaders[0] if leaders else None)


def _handoff_report(tracks: dict[str, dict], owner: dict[str, str | None], people: list[dict]) -> dict:
    """score_handoff's figures from the tracks and the arrival each belongs to (``owner``)."""
    enrolled = {p["id"] for p in people if p.get("enrolled")}
    by_person: dict[str, list[str]] = {}
    for track_id, pid in owner.items():
        if pid is not None:
            by_person.setdefault(pid, []).append(track_id)
    enrolled_tracks = [t for t, pid in owner.items() if pid in enrolled]
    correct = [t for t in enrolled_tracks if tracks[t]["person_id"] == owner[t]]
    return {
        "tracks": len(tracks),
        "enrolled_tracks": len(enrolled_tracks),
        "accuracy": round(len(correct) / len(enrolled_tracks), 4) if enrolled_tracks else None,
        "correct": sorted({owner[t] for t in correct}),
        # arrival id -> the identities its tracks ended with (None: stayed unknown)
        "wrong": {owner[t]: tracks[t]["person_id"] for t in enrolled_tracks if t not in correct},
        "tracks_per_person": {pid: len(ids) for pid, ids in sorted(by_person.items())},
        "identity_sources": {owner[t] or t: tracks[t]["source"] for t in tracks},
        "reacquired": sorted(owner[t] or t for t in tracks if "reacquired" == tracks[t]["source"]),
        "unmatched_arrivals": [p["id"] for p in people if p["id"] not in by_person],
        "unmatched_tracks": sum(1 for pid in owner.values() if pid is None),
        "visitors_given_an_identity": {owner[t]: tracks[t]["person_id"] for t in tracks
                                       if owner[t] is not None and owner[t] not in enrolled
                                       and tracks[t]["person_id"] is not None},
        "ambiguous_tracks": sum(1 for t in tracks.values() if t["ambiguous"]),
        # every room track, in order of appearance: who it was, when (video s), where, what it ended with
        "track_list": [_track_entry(t, tracks[t], owner[t]) for t in sorted(tracks, key=lambda t: tracks[t]["video_t"])],
    }


def _track_entry(track_id: str, track: dict, arrival: str | None) -> dict:
    """One room track in ``track_list``: who it was, when (video s), where its first box stood, what it ended with."""
    return {"track_id": track_id, "arrival": arrival, "first_seen_s": track["video_t"],
            "foot": [round((track["box"]["x1"] + track["box"]["x2"]) / 2), round(track["box"]["y2"])],
            "person_id": track["person_id"], "identity_source": track["source"],
            "events": "".join(k[0] for k in track["kinds"])}


def _arrival_at(people: list[dict], box: dict, video_t: float, tolerance_s: float, min_iou: float) -> str | None:
    """The person whose ground-truth box at ``video_t`` overlaps ``box`` best (at least ``min_iou``), or None."""
    best, best_iou = None, min_iou
    for person in people:
        truth_box = _box_at(person["room"].get("track", []), video_t, tolerance_s)
        if truth_box is None:
            continue
        iou = box_iou((box["x1"], box["y1"], box["x2"] - box["x1"], box["y2"] - box["y1"]), truth_box)
        if iou > best_iou:
            best, best_iou = person["id"], iou
    return best


def _box_at(samples: list[dict], t: float, tolerance_s: float):
    """The ground-truth box [x, y, w, h] at video time t, interpolated between the samples around it
    (people walk ~100 px between samples); None when the person is not in view then."""
    before = [s for s in samples if s["t"] <= t]
    after = [s for s in samples if s["t"] >= t]
    if before and after:
        a, b = before[-1], after[0]
        if b["t"] - a["t"] <= 1.0 + 1e-6:  # a gap: hidden (or gone) in between
            w = 0.0 if b["t"] == a["t"] else (t - a["t"]) / (b["t"] - a["t"])
            return [pa + w * (pb - pa) for pa, pb in zip(a["box"], b["box"])]
    nearest = min(samples, key=lambda s: abs(s["t"] - t), default=None)
    if nearest is None or abs(nearest["t"] - t) > tolerance_s:
        return None
    return nearest["box"]
