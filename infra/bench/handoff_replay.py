"""Measure the handoff's cues on rendered scenarios, without the live system.

    .venv/bin/python -m infra.bench.handoff_replay infra/scenarios/class-rush.toml [--renders DIR] [--seeds 10]

(heavy: renders when needed and decodes the videos; run it under the shared CPU lock.)

1. Clothing descriptors from the rendered frames with the ground truth's boxes: at the door, the chest
   below the largest frontal face of each passage (:func:`processor.appearance.describe_below_face`, as
   the door camera's face tracks do); in the room, the body in the first 4 samples walking in that no
   other person's box overlaps (:func:`processor.appearance.describe_person`, averaged, as the room stage
   does). Prints the same-person and different-person distance distributions and, for the people who
   walk in side by side, the appearance part of a swap's cost.
2. A progressive replay of :class:`processor.handoff.HandoffMatcher` on the ground truth: each
   recognition published when the door would decide it (a known face 1 s after it appears, an unknown one
   when its track ends), door time the face's first sighting plus noise, each entry at its in-zone time
   plus noise rounded up to the room's analysis rate, ``assign`` every 0.25 s; with and without the
   clothing (``--drop``: the door misses that share of passages, as a loaded machine does). Prints
   accuracy (enrolled people's entries that got their identity), ambiguous entries and wrong identities
   per run, over several noise seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import av
import numpy as np

from infra.foundation.paths import scenarios_dir
from infra.scenario.render import render
from infra.scenario.spec import load_spec
from processor import appearance as ap
from processor.handoff import HandoffMatcher

ROOM_LOOKS = 4  # as RoomStage.looks_per_entry


def _xyxy(box) -> tuple[float, float, float, float]:
    x, y, w, h = box
    return (x, y, x + w, y + h)


def _overlap(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="bgr24")
            if i >= max(wanted):
                break
    return out


def _door_faces(gt: dict) -> dict[str, dict]:
    """Each passage's largest frontal face (the door pipeline's best frame is about that one)."""
    picks = {}
    for person in gt["people"]:
        faces = [b for b in person["door"]["face_boxes"] if b.get("visible", 1) > 0.9 and not b.get("back")]
        if faces:
            picks[person["id"]] = max(faces, key=lambda b: b["box"][2])
    return picks


def _room_samples(gt: dict) -> dict[str, list[tuple[int, tuple]]]:
    """Each person's first ROOM_LOOKS samples walking in with nobody overlapping (else touching ones)."""
    fps = gt["scenario"]["fps"]
    at: dict[float, list] = {}
    for person in gt["people"]:
        for s in person["room"].get("track") or []:
            if s["box"]:
                at.setdefault(round(s["t"], 2), []).append((person["id"], _xyxy(s["box"])))
    out = {}
    for person in gt["people"]:
        apart, touching = [], []
        for s in person["room"].get("track") or []:
            if not s["box"] or s["phase"] != "walking-in" or not s.get("visible", 1):
                continue
            box = _xyxy(s["box"])
            others = [b for pid, b in at.get(round(s["t"], 2), []) if pid != person["id"]]
            (touching if any(_overlap(box, b) for b in others) else apart).append((int(round(s["t"] * fps)), box))
        if apart or touching:
            out[person["id"]] = (apart or touching)[:ROOM_LOOKS]
    return out


def descriptors(folder: Path, gt: dict) -> tuple[dict, dict]:
    """(door descriptors, room descriptors) by person id."""
    faces, samples = _door_faces(gt), _room_samples(gt)
    door_frames = _frames(folder / "door.ts", {b["frame"] for b in faces.values()})
    room_frames = _frames(folder / "room.ts", {f for v in samples.values() for f, _ in v})
    door = {pid: ap.describe_below_face(door_frames[b["frame"]], _xyxy(b["box"])) for pid, b in faces.items()}
    room = {}
    for pid, shots in samples.items():
        looks = [d for f, box in shots if (d := ap.describe_person(room_frames[f], box)) is not None]
        room[pid] = ap.mean(looks) if looks else None
    return {k: v for k, v in door.items() if v is not None}, {k: v for k, v in room.items() if v is not None}


def _quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    return "/".join(f"{v:.3f}" for v in np.percentile(values, [0, 10, 50, 90, 100]))


def report_distances(name: str, gt: dict, door: dict, room: dict) -> None:
    ids = [i for i in door if i in room]
    same = [ap.distance(door[i], room[i]) for i in ids]
    diff = [ap.distance(door[i], room[j]) for i in ids for j in ids if i != j]
    nearest = sum(min(ids, key=lambda j: ap.distance(door[i], room[j])) == i for i in ids)
    print(f"{name}: {len(ids)} people; door-vs-room distance min/p10/median/p90/max: same person {_quantiles(same)}, "
          f"different people {_quantiles(diff)}; own room track the nearest for {nearest}/{len(ids)}")
    for person in gt["people"]:
        a, b = person["id"], person.get("with")
        if b and a < b and {a, b} <= set(ids):
            swap = (ap.distance(door[a], room[b]) + ap.distance(door[b], room[a])
                    - ap.distance(door[a], room[a]) - ap.distance(door[b], room[b]))
            print(f"  side by side {a} + {b}: a swap's appearance cost {swap:.3f}")


def replay(gt: dict, door: dict | None, room: dict | None, seed: int, *, fps: float = 4.0, noise_s: float = 0.15,
           window: tuple[float, float] = (1.0, 12.0), drop: float = 0.0) -> tuple[float, int, int]:
    """(accuracy, ambiguous entries, wrong identities) of one progressive replay (see the module)."""
    rng = np.random.default_rng(seed)
    matcher = HandoffMatcher([("d", "door", "room", *window)], ambiguity_s=0.5, recognition_delay_s=3.0)
    events = []
    for person in gt["people"]:
        faces = [b for b in person["door"]["face_boxes"] if b.get("visible", 1) >= 0.5 and not b.get("back")]
        if faces and rng.random() >= drop:  # drop: the door camera missed the face
            door_time = faces[0]["t"] + rng.normal(0, noise_s)
            published = door_time + 1.0 if person["enrolled"] else faces[-1]["t"] + 1.0
            events.append((published, "recognition", person, door_time))
        if person["room"].get("t_enter_zone") is not None:
            entry = float(np.ceil((person["room"]["t_enter_zone"] + rng.normal(0, noise_s)) * fps) / fps)
            events.append((entry, "entry", person, entry))
    decided = {}
    now = 0.0
    for at, kind, person, when in sorted(events, key=lambda e: e[0]):
        while now + 0.25 <= at:
            now += 0.25
            decided.update({a.track_id: a for a in matcher.assign(now)})
        pid = person["id"]
        if kind == "recognition":
            matcher.add_recognition("d", pid if person["enrolled"] else None, pid, when,
                                    appearance=(door or {}).get(pid))
        else:
            matcher.add_entry("d", pid, when, appearance=(room or {}).get(pid))
    decided.update({a.track_id: a for a in matcher.assign(1e12)})
    enrolled = [p["id"] for p in gt["people"] if p["enrolled"] and p["id"] in decided]
    right = sum(decided[i].person_id == i for i in enrolled)
    wrong = sum(a.person_id not in (None, t) for t, a in decided.items())
    return right / max(1, len(enrolled)), sum(a.ambiguous for a in decided.values()), wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="+", type=Path)
    parser.add_argument("--renders", type=Path, default=None, help="render folder (default var/scenarios)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--drop", type=float, default=0.0, help="share of passages the door misses (0-1)")
    args = parser.parse_args()
    for spec_path in args.specs:
        spec = load_spec(spec_path)
        folder = (args.renders or scenarios_dir()) / spec.name
        render(spec_path, folder)  # cached
        gt = json.loads((folder / "ground_truth.json").read_text())
        door, room = descriptors(folder, gt)
        report_distances(spec.name, gt, door, room)
        for label, d, r in (("transit and order", None, None), ("with clothing", door, room)):
            runs = [replay(gt, d, r, seed, drop=args.drop) for seed in range(args.seeds)]
            print(f"  replay {label:>17}: accuracy mean {np.mean([x[0] for x in runs]):.3f} "
                  f"min {min(x[0] for x in runs):.3f}, ambiguous {np.mean([x[1] for x in runs]):.1f} "
                  f"and wrong identities {np.mean([x[2] for x in runs]):.1f} a run ({args.seeds} runs)")


if __name__ == "__main__":
    main()
