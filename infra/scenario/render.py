"""Render a scenario spec into two camera videos and their ground truth.

``render(spec_path, out_dir)`` writes ``door.ts``, ``room.ts`` (H.264 in MPEG-TS) and
``ground_truth.json`` into ``out_dir``. It renders into a hidden folder beside ``out_dir`` and
swaps it in at the end, so ``out_dir`` only ever holds a complete render. A render is cached: when
``out_dir`` already holds one whose ``input_hash`` (renderer version and source + spec bytes + every
photo's bytes + the pedestrian clip's and face model's sha256) matches, nothing is done.

Ground truth (``ground_truth.json``; boxes are ``[x, y, w, h]`` in pixels, top-left origin; frame
``i`` shows time ``i / fps``)::

    format, renderer_version, input_hash, spec
    scenario: name, duration_s, fps, n_frames, seed, transit_s, door_passage_s,
              entry_walk_s, exit_walk_s, door_exit_s
    cameras.door: file, width, height
    cameras.room: file, width, height, door (polygon), entry_zone (polygon)
    session: course, room, start_s, end_s, min_presence_s
    expected_present_rule, expected_present: [ids]
    people: [ {id, name, enrolled, door_photo, enroll_photos, turns_back, with, behind, holds: {kind, of},
               clothing: {top_bgr, bottom_bgr},
               door: {t_start, t_pass, t_end, lane, frame_at_pass, face_box_at_pass,
                      face_boxes: [{frame, t, box, visible, back, torso_sample}]},  # every frame in view
               room: {figure, place, t_appear, t_enter_zone, t_leave_zone, t_seated,
                      leave_s, t_enter_zone_out, t_gone, present_from, present_to, hidden,
                      track: [{t, phase, foot, box, visible, face_box}]},  # every 0.5 s
               present_in_session_s, expected_present} ]    # arrivals in spec order, people then visitors
    (turns_back people: room keys all there but None / empty, expected_present false; door.back: the
    back of the head is turned to the camera; room face_box: where a small face is drawn, else None;
    holds: None, or the picture of an enrolled person they hold up at the door, infra/scenario/attacks.py)
    absent: [ {id, name, enroll_photos} ]   # enrolled people who never come (what attacks pretend to be)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infra.foundation.embedded import alive
from infra.foundation.errors import RollcallError
from infra.foundation.paths import scenarios_dir
from infra.scenario import clothing
from infra.scenario.attacks import held_picture
from infra.scenario.door import TORSO_SAMPLE, DoorScene
from infra.scenario.encode import TsWriter
from infra.scenario.faces import head_and_shoulders, head_only, small_face, yunet_sha256
from infra.scenario.figures import load_figures, pedestrian_video, sha256_file
from infra.scenario.room import RoomScene, RoomTrack
from infra.scenario.spec import (DOOR_EXIT_S, ENTRY_WALK_S, EXIT_WALK_S, TURN_BACK_S, ScenarioSpec, display_path,
                                 load_spec)

RENDERER_VERSION = "2"
GROUND_TRUTH = "ground_truth.json"
DOOR_VIDEO = "door.ts"
ROOM_VIDEO = "room.ts"
TRACK_STEP_S = 0.5

PRESENCE_RULE = (
    "an arrival is expected present when it is enrolled and its time in the room, from appearing in "
    "the doorway (room.present_from = t_appear) to vanishing through it (room.present_to = t_gone, or "
    "the end of the video), overlaps the session [start_s, end_s] by at least session.min_presence_s; "
    "someone who turns back at the door (turns_back) never enters the room and is not expected present"
)


@dataclass(frozen=True)
class RenderResult:
    out_dir: Path
    door_video: Path
    room_video: Path
    ground_truth_path: Path
    input_hash: str
    cached: bool  # True: an up-to-date render was already there, nothing was done
    seconds: float  # wall time of this call
    n_frames: int  # frames in each video
    ground_truth: dict[str, Any]


def default_out_dir(spec_path: str | os.PathLike) -> Path:
    """Where a spec renders by default: ``<state>/scenarios/<scenario name>``."""
    return scenarios_dir() / load_spec(spec_path).name


def _renderer_source_digest() -> str:
    """The renderer's own code, so an edited renderer never reuses a stale render (even unbumped)."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        if p.name != "check.py":
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def input_hash(spec: ScenarioSpec, *extra: str) -> str:
    h = hashlib.sha256()
    h.update(f"rollcall-scenario-renderer {RENDERER_VERSION} {_renderer_source_digest()}\n".encode())
    blob = spec.path.read_bytes()
    h.update(b"spec %d\n" % len(blob) + blob)
    for p in spec.photos:
        blob = p.read_bytes()
        h.update(b"photo %d\n" % len(blob) + blob)
    for e in extra:
        h.update(f"extra {e}\n".encode())
    return h.hexdigest()


def _existing(out: Path, digest: str) -> dict[str, Any] | None:
    try:
        gt = json.loads((out / GROUND_TRUTH).read_text())
    except (OSError, ValueError):
        return None
    if gt.get("input_hash") != digest:
        return None
    if not all((out / name).is_file() and (out / name).stat().st_size > 0 for name in (DOOR_VIDEO, ROOM_VIDEO)):
        return None
    return gt


def render(spec_path: str | os.PathLike, out_dir: str | os.PathLike) -> RenderResult:
    started = time.monotonic()
    spec = load_spec(spec_path)
    where = display_path(spec.path)
    out = Path(out_dir).expanduser().absolute()
    video = pedestrian_video()
    video_sha = sha256_file(video)
    digest = input_hash(spec, f"pedestrians {video_sha}", f"yunet {yunet_sha256()}")

    def result(gt: dict[str, Any], cached: bool) -> RenderResult:
        return RenderResult(out, out / DOOR_VIDEO, out / ROOM_VIDEO, out / GROUND_TRUTH, digest, cached,
                            time.monotonic() - started, spec.n_frames, gt)

    if (gt := _existing(out, digest)) is not None:
        return result(gt, True)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / GROUND_TRUTH).is_file())):
        raise RollcallError(f"{display_path(out)}: exists and is not a rendered scenario — "
                            "choose another --out folder or remove it")

    # everything that can fail on the inputs happens before anything is written
    photos = {a.id: head_and_shoulders(a.door_photo, f"{where}: {a.key}.door_photo",
                                       _relative(a.door_photo, spec.path.parent)) for a in spec.arrivals}
    sprites = {pid: head_only(sprite) for pid, sprite in photos.items()}
    for a in spec.arrivals:  # an attack: the door camera sees the picture they hold, not their head
        if a.holds is not None:
            sprites[a.id] = held_picture(a.holds[0], a.holds[2], f"{where}: {a.key}.holds")
    faces = {pid: small_face(sprite) for pid, sprite in photos.items()}
    figures = load_figures(video_sha)
    sc, cams = spec.raw.scenario, spec.raw.cameras
    outfits = clothing.assign([a.id for a in spec.arrivals], sc.seed)
    door = DoorScene(cams.door.width, cams.door.height, sc.seed)
    room = RoomScene(cams.room.width, cams.room.height, sc.seed)
    entering = [a for a in spec.arrivals if not a.turns_back]
    tracks = room.plan(entering, figures, sc.seed, spec.n_frames / spec.fps, outfits, faces)

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = out.parent / f".{out.name}.rendering-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        with ThreadPoolExecutor(2) as pool:
            door_job = pool.submit(_render_door, spec, door, sprites, outfits, tmp / DOOR_VIDEO)
            room_job = pool.submit(_render_room, spec, room, tracks, tmp / ROOM_VIDEO)
            face_boxes = door_job.result()
            room_job.result()
        gt = _ground_truth(spec, digest, door, room, tracks, face_boxes, outfits)
        (tmp / GROUND_TRUTH).write_text(json.dumps(gt, indent=1))
        _swap(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return result(gt, False)


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def _remove_stale(out: Path) -> None:
    """Temp folders beside ``out`` left by a render that was killed (its process is gone)."""
    for p in out.parent.glob(f".{out.name}.*"):
        kind, _, rest = p.name[len(out.name) + 2:].partition("-")
        if kind == "old" or (kind == "rendering" and not alive(int(rest.split("-")[0]) if rest[:1].isdigit() else 0)):
            shutil.rmtree(p, ignore_errors=True)


def _swap(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _render_door(spec: ScenarioSpec, scene: DoorScene, sprites, outfits, path: Path) -> dict[str, list[dict[str, Any]]]:
    fps, passage = spec.fps, spec.raw.scenario.door_passage_s
    boxes: dict[str, list[dict[str, Any]]] = {a.id: [] for a in spec.arrivals}
    with TsWriter(path, scene.W, scene.H, fps) as writer:
        for i in range(spec.n_frames):
            t = i / fps
            frame = scene.background.copy()
            posed = [(a, p) for a in spec.arrivals if (p := scene.pose(a, t, passage, fps)) is not None]
            for a, pose in sorted(posed, key=lambda item: item[1].width):  # nearer (bigger) on top
                box = scene.draw(frame, sprites[a.id], pose, outfits[a.id])
                boxes[a.id].append({"frame": i, "t": round(t, 3), "box": _clip_box(box, scene.W, scene.H),
                                    "visible": round(pose.visible, 3), "back": pose.back,
                                    "torso_sample": _clip_box(_torso_sample(box), scene.W, scene.H)})
            writer.write(scene.noise.apply(frame, i))
    return boxes


def _render_room(spec: ScenarioSpec, scene: RoomScene, tracks: list[RoomTrack], path: Path) -> None:
    fps = spec.fps
    with TsWriter(path, scene.W, scene.H, fps) as writer:
        for i in range(spec.n_frames):
            frame = scene.background.copy()
            scene.draw(frame, tracks, i / fps)
            writer.write(scene.noise.apply(frame, i))


def _torso_sample(face) -> tuple[float, float, float, float]:
    x, y, w, h = face
    a0, a1, b0, b1 = TORSO_SAMPLE
    return (x + w / 2 + a0 * w, y + b0 * h, (a1 - a0) * w, (b1 - b0) * h)


def _clip_box(box, W: int, H: int) -> list[float]:
    x, y, w, h = box
    x0, y0, x1, y1 = max(0.0, x), max(0.0, y), min(float(W), x + w), min(float(H), y + h)
    return [round(x0, 1), round(y0, 1), round(max(0.0, x1 - x0), 1), round(max(0.0, y1 - y0), 1)]


def _ground_truth(spec: ScenarioSpec, digest: str, door: DoorScene, room: RoomScene, tracks: list[RoomTrack],
                  face_boxes: dict[str, list[dict[str, Any]]], outfits: dict[str, clothing.Clothing]) -> dict[str, Any]:
    sc, cams, se = spec.raw.scenario, spec.raw.cameras, spec.raw.session
    end = spec.n_frames / spec.fps
    by_id = {tr.arrival.id: tr for tr in tracks}
    spec_dir = spec.path.parent

    def rel(p: Path) -> str:
        return _relative(p, spec_dir)

    people = []
    for a in spec.arrivals:
        pass_frame = min(spec.n_frames - 1, int(round(a.t_pass * spec.fps)))
        boxes = face_boxes[a.id]
        at_pass = next((b["box"] for b in boxes if b["frame"] == pass_frame), None)
        tr = by_id.get(a.id)
        room_gt, overlap = (_room_truth(a, tr, room, end, se) if tr is not None else (_no_room(a), 0.0))
        people.append({
            "id": a.id, "name": a.name, "enrolled": a.enrolled,
            "door_photo": rel(a.door_photo), "enroll_photos": [rel(p) for p in a.enroll],
            "turns_back": a.turns_back, "with": a.partner, "behind": a.behind,
            "holds": None if a.holds is None else {"kind": a.holds[0], "of": a.holds[1]},
            "clothing": {"top_bgr": list(outfits[a.id].top), "bottom_bgr": list(outfits[a.id].bottom)},
            "door": {"t_start": a.arrive_s, "t_pass": round(a.t_pass, 3), "t_end": round(a.t_door_end, 3),
                     "lane": a.door_lane, "frame_at_pass": pass_frame, "face_box_at_pass": at_pass,
                     "face_boxes": boxes},
            "room": room_gt,
            "present_in_session_s": round(overlap, 3),
            "expected_present": bool(a.enrolled and tr is not None and overlap >= se.min_presence_s),
        })
    return {
        "format": "rollcall-scenario-ground-truth/1",
        "renderer_version": RENDERER_VERSION,
        "input_hash": digest,
        "spec": str(spec.path),
        "boxes": "[x, y, w, h] in pixels, top-left origin; frame i shows t = i / fps",
        "scenario": {"name": sc.name, "duration_s": sc.duration_s, "fps": sc.fps, "n_frames": spec.n_frames,
                     "seed": sc.seed, "transit_s": sc.transit_s, "door_passage_s": sc.door_passage_s,
                     "entry_walk_s": ENTRY_WALK_S, "exit_walk_s": EXIT_WALK_S, "door_exit_s": DOOR_EXIT_S,
                     "turn_back_s": TURN_BACK_S},
        "cameras": {
            "door": {"file": DOOR_VIDEO, "width": cams.door.width, "height": cams.door.height},
            "room": {"file": ROOM_VIDEO, "width": cams.room.width, "height": cams.room.height,
                     "door": [list(p) for p in room.door], "entry_zone": [list(p) for p in room.entry_zone]},
        },
        "session": {"course": se.course, "room": se.room, "start_s": se.start_s, "end_s": se.end_s,
                    "min_presence_s": se.min_presence_s},
        "expected_present_rule": PRESENCE_RULE,
        "expected_present": [p["id"] for p in people if p["expected_present"]],
        "people": people,
        # enrolled, never came: an attack's target (a recognition of them is wrong, an attendance row too)
        "absent": [{"id": a.id, "name": a.name, "enroll_photos": [rel(p) for p in a.enroll]} for a in spec.absent],
    }


def _room_truth(a, tr: RoomTrack, room: RoomScene, end: float, se) -> tuple[dict[str, Any], float]:
    zone = _zone_times(room, tr, end)
    present_to = a.t_gone if a.t_gone is not None else end
    overlap = max(0.0, min(present_to, se.end_s) - max(a.t_appear, se.start_s))
    track = []
    t = a.t_appear
    while t < tr.t_last - 1e-9:
        p = tr.placement(t, room.H)
        if p is not None:
            phase, x, y, opacity, *_, box = p
            fb = tr.face_box(t, room.H)
            track.append({"t": round(t, 3), "phase": phase, "foot": [round(x, 1), round(y, 1)],
                          "box": _clip_box(box, room.W, room.H), "visible": round(opacity, 3),
                          "face_box": None if fb is None else _clip_box(fb, room.W, room.H)})
        t += TRACK_STEP_S
    return {"figure": tr.figure.index, "figure_source_frames": list(tr.figure.source_frames),
            "place": [round(tr.spot[0], 1), round(tr.spot[1], 1)],
            "t_appear": round(a.t_appear, 3), **zone, "t_seated": round(a.t_seated, 3),
            "leave_s": a.leave_s, "t_gone": None if a.t_gone is None else round(a.t_gone, 3),
            "present_from": round(a.t_appear, 3), "present_to": round(present_to, 3),
            "hidden": [list(h) for h in a.hidden], "track": track}, overlap


def _no_room(a) -> dict[str, Any]:
    """Someone who turned back at the door: every room key is there, empty."""
    return {"figure": None, "figure_source_frames": [], "place": None, "t_appear": None, "t_enter_zone": None,
            "t_leave_zone": None, "t_enter_zone_out": None, "t_seated": None, "leave_s": None, "t_gone": None,
            "present_from": None, "present_to": None, "hidden": [], "track": []}


def _zone_times(room: RoomScene, tr: RoomTrack, end: float) -> dict[str, float | None]:
    """When the feet enter and leave the entry zone, on the way in and (if leaving) out."""
    a = tr.arrival
    out: dict[str, float | None] = {"t_enter_zone": None, "t_leave_zone": None, "t_enter_zone_out": None}
    step = 0.01
    inside_prev = False
    for t in np.arange(a.t_appear, min(a.t_seated, end), step):
        st = tr.state(float(t))
        if st is None:
            continue
        inside = room.in_entry_zone(st[1], st[2])
        if inside and out["t_enter_zone"] is None:
            out["t_enter_zone"] = round(float(t), 2)
        if inside_prev and not inside and out["t_leave_zone"] is None:
            out["t_leave_zone"] = round(float(t), 2)
        inside_prev = inside
    if a.leave_s is not None:
        for t in np.arange(a.leave_s, min(tr.t_last, end), step):
            st = tr.state(float(t))
            if st is not None and room.in_entry_zone(st[1], st[2]):
                out["t_enter_zone_out"] = round(float(t), 2)
                break
    return out
