"""Room tracking measured against a rendered scenario's ground truth, offline (``rollcall bench tracking``).

The real person detector runs ONCE over every room frame of the render and its detections are cached
beside the render (``var/scenarios/<name>.detections.npz``, keyed by the room video's sha256, the detector
file's sha256 and the score threshold), with each detection's torso colour signature (what the
tracker compares looks with), so no frame is decoded again. The cached detections are then replayed
through :class:`processor.stages.person_tracks.PersonTracker` at each analysis rate the way a loaded
processor delivers them: every ``video_fps / rate``-th frame, from several sampling phases, and once more
per phase with a fifth of those frames dropped at random. The tracker is built as production builds it
(the room camera's configured ``analysis_fps``, the config's ``[tracking]`` times): a camera configured
for 4 fps that gets 1 fps is exactly the loaded case.

Scores, per run, on the analysed frames only (ground truth interpolated between its 0.5 s samples):
``trackers.eval`` IDF1 / HOTA / MOTA / IDSW (IoU 0.5), and what attendance stands on: how many Rollcall
tracks each person was split into (a new track after the first has no identity), whether the person's
first track entered through the door (``entered_via``: the handoff's anchor), extra door entries
(a second entry for one person, or one for nobody), and tracks that carried one person's track over to
another (an identity handed to the wrong person).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from scipy.optimize import linear_sum_assignment
from trackers.eval import compute_clear_metrics, compute_hota_metrics, compute_identity_metrics

from infra.foundation.errors import RollcallError
from infra.foundation.registry_fetch import sha256_of
from infra.scenario.mounts import render_cached
from infra.foundation.config import Config
from processor.stages.person_track_parts import torso_look
from processor.stages.person_tracks import PersonTracker
from processor.stages.persons import PersonDetection, PersonDetector

CACHE_FILE = "detections.npz"
PARTIAL_FILE = "detections.partial.npz"
LOOK_SIZE = 128  # torso_look: 16 hue x 8 saturation bins
CACHE_FORMAT = "rollcall-room-detections/1"
DROP_FRACTION = 0.2
PHASES = 3
MIN_IOU = 0.5
GT_MIN_VISIBLE = 0.5  # not while fading in/out in the doorway


@dataclass
class DetectionCache:
    """Every room frame's detections: rows of ``boxes``/``scores``/``looks`` with their ``frame`` index."""

    key: str
    n_frames: int
    video_fps: float
    frame: np.ndarray  # (N,) int
    boxes: np.ndarray  # (N, 4) x1 y1 x2 y2
    scores: np.ndarray  # (N,)
    class_ids: np.ndarray  # (N,)
    looks: np.ndarray  # (N, L) torso signatures (NaN rows: box too small)

    def at(self, i: int) -> tuple[list[PersonDetection], list[np.ndarray | None]]:
        rows = np.flatnonzero(self.frame == i)
        dets = [PersonDetection(tuple(float(v) for v in self.boxes[r]), float(self.scores[r]), int(self.class_ids[r]))
                for r in rows]
        looks = [None if np.isnan(self.looks[r]).any() else self.looks[r] for r in rows]
        return dets, looks


def _cache_key(video: Path, detector: PersonDetector, frame_shape: tuple[int, int]) -> str:
    """What the cached detections depend on. An int8 detector's are its variant's: the quantisation is
    calibrated on the pack's sample photos, so a photo added to the pack makes other detections."""
    model = sha256_of(detector.pack.path("person_detector"))
    variant = ""
    if detector.precision == "int8":
        variant = f" variant={detector.int8_key(detector.input_size_for(frame_shape))}"
    precision = "" if detector.precision == "fp32" else f" precision={detector.precision}{variant}"
    return (f"{CACHE_FORMAT} video={sha256_of(video)} model={model} score>={detector.score_threshold:g} "
            f"input={detector.input_width}x{detector.input_height}" + precision)


def cache_paths(out_dir: Path, input_px: int = 640, precision: str = "fp32") -> tuple[Path, Path]:
    """Beside the render's folder, not in it (a new render replaces the folder whole): the cache and the
    partial cache of an unfinished detection run (one pair per detector input other than the default)."""
    stem = out_dir.name if (input_px, precision) == (640, "fp32") else f"{out_dir.name}.{input_px}px-{precision}"
    return out_dir.parent / f"{stem}.{CACHE_FILE}", out_dir.parent / f"{stem}.{PARTIAL_FILE}"


def read_cache(path: Path) -> DetectionCache:
    with np.load(path, allow_pickle=False) as z:
        return DetectionCache(str(z["key"]), int(z["n_frames"]), float(z["video_fps"]), z["frame"], z["boxes"],
                              z["scores"], z["class_ids"], z["looks"])


def load_or_detect(out_dir: Path, gt: dict, detector: PersonDetector, say: Callable[[str], None] = lambda _: None,
                   budget_s: float | None = None) -> DetectionCache:
    """The render's cached detections, or run the detector over every room frame and cache them. With
    ``budget_s``, stop after about that long and keep what was done (``detections.partial.npz``): the next
    call goes on from there (a long render's detection split into runs that each hold the CPU briefly)."""
    video = out_dir / gt["cameras"]["room"]["file"]
    room = gt["cameras"]["room"]
    # the room video itself: a render that changed only the door keeps it
    key = _cache_key(video, detector, (int(room["height"]), int(room["width"])))
    path, partial = cache_paths(out_dir, max(detector.input_width, detector.input_height), detector.precision)
    if path.is_file() and (cache := read_cache(path)).key == key:
        return cache
    rows: list[tuple[int, np.ndarray, float, int, np.ndarray]] = []  # frame, box, score, class, look
    start = 0
    if partial.is_file() and (done := read_cache(partial)).key == key:
        rows = [(int(done.frame[r]), done.boxes[r], float(done.scores[r]), int(done.class_ids[r]), done.looks[r])
                for r in range(len(done.frame))]
        start = done.n_frames
    say(f"detecting persons in every frame of {video} from frame {start} (cached afterwards)")
    started = time.monotonic()
    n, finished = start, True
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i < start:
                continue
            if budget_s is not None and time.monotonic() - started > budget_s:
                finished = False
                break
            image = frame.to_ndarray(format="bgr24")
            for det in detector.detect([image])[0]:
                look = torso_look(image, det.box)
                rows.append((i, np.asarray(det.box), det.score, det.class_id,
                             look if look is not None else np.full(LOOK_SIZE, np.nan, np.float32)))
            n = i + 1
            if n % 100 == 0:
                say(f"  {n} frames, {time.monotonic() - started:.0f} s")
    cache = DetectionCache(
        key, n, float(gt["scenario"]["fps"]), np.array([r[0] for r in rows], np.int32),
        np.array([r[1] for r in rows], np.float32).reshape(-1, 4), np.array([r[2] for r in rows], np.float32),
        np.array([r[3] for r in rows], np.int32), np.array([r[4] for r in rows], np.float32).reshape(-1, LOOK_SIZE))
    _write_cache(path if finished else partial, cache)
    if not finished:
        raise RollcallError(f"{video}: person detections cached for {n} frames so far; run again to go on")
    partial.unlink(missing_ok=True)
    return cache


def _write_cache(path: Path, cache: DetectionCache) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, key=np.array(cache.key), n_frames=cache.n_frames, video_fps=cache.video_fps,
                        frame=cache.frame, boxes=cache.boxes, scores=cache.scores, class_ids=cache.class_ids,
                        looks=cache.looks)
    tmp.replace(path)


# --- ground truth --------------------------------------------------------------------------------------------

def truth_at(gt: dict, t: float) -> tuple[list[str], np.ndarray]:
    """Person ids and xyxy boxes in view at video time ``t``: the 0.5 s samples interpolated (a gap of more
    than a second between samples: hidden then)."""
    ids, boxes = [], []
    for person in gt["people"]:
        samples = person["room"]["track"]
        times = [s["t"] for s in samples]
        k = int(np.searchsorted(times, t, side="right"))  # samples[k-1].t <= t < samples[k].t
        if k == 0:
            continue
        a = samples[k - 1]
        if k == len(samples):
            if t - a["t"] > 1e-6:
                continue
            b = a
        else:
            b = samples[k]
            if b["t"] - a["t"] > 1.0 + 1e-6:
                continue
        w = 0.0 if b["t"] == a["t"] else (t - a["t"]) / (b["t"] - a["t"])
        if (1 - w) * a["visible"] + w * b["visible"] < GT_MIN_VISIBLE:
            continue
        x, y, bw, bh = ((1 - w) * pa + w * pb for pa, pb in zip(a["box"], b["box"]))
        if bw > 1 and bh > 1:
            ids.append(person["id"])
            boxes.append((x, y, x + bw, y + bh))
    return ids, np.array(boxes, np.float64).reshape(-1, 4)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# --- one replay ------------------------------------------------------------------------------------------------

@dataclass
class Replay:
    times: list[float]
    tracked: list[tuple[list[str], np.ndarray]]  # per analysed frame: track ids and boxes seen in it
    entered_via: dict[str, str | None]  # track id -> door of its 'appeared' event


def replay(cache: DetectionCache, frames: Sequence[int], make_tracker: Callable[[], PersonTracker]) -> Replay:
    tracker = make_tracker()
    out = Replay([], [], {})
    for i in frames:
        t = i / cache.video_fps
        dets, looks = cache.at(i)
        for event in tracker.update(t, dets, looks=looks):
            if event.kind == "appeared":
                out.entered_via[event.track_id] = event.entered_via
        seen = [tr for tr in tracker.open_tracks if tr.state == "active" and tr.last_pts_s == t]
        out.times.append(t)
        out.tracked.append(([tr.track_id for tr in seen], np.array([tr.box for tr in seen], np.float64).reshape(-1, 4)))
    return out


def score(gt: dict, run: Replay) -> dict:
    """trackers.eval metrics plus the attendance counts of one replay."""
    person_ix: dict[str, int] = {}
    track_ix: dict[str, int] = {}
    gt_ids, tr_ids, sims = [], [], []
    for t, (tids, tboxes) in zip(run.times, run.tracked):
        pids, pboxes = truth_at(gt, t)
        gt_ids.append(np.array([person_ix.setdefault(p, len(person_ix)) for p in pids], int))
        tr_ids.append(np.array([track_ix.setdefault(k, len(track_ix)) for k in tids], int))
        sims.append(iou_matrix(pboxes, tboxes))
    matched, first_seen = track_matches(gt, run)
    identity = compute_identity_metrics(gt_ids, tr_ids, sims, threshold=MIN_IOU)
    hota = compute_hota_metrics(gt_ids, tr_ids, sims)
    clear = compute_clear_metrics(gt_ids, tr_ids, sims, threshold=MIN_IOU)
    return {"IDF1": round(float(identity["IDF1"]), 4), "HOTA": round(float(hota["HOTA"]), 4),
            "AssA": round(float(hota["AssA"]), 4), "MOTA": round(float(clear["MOTA"]), 4), "IDSW": int(clear["IDSW"]),
            **_attendance_counts(gt, run, matched, first_seen)}


def track_matches(gt: dict, run: Replay) -> tuple[dict[str, Counter], dict[str, float]]:
    """Per track, the frames it matched each person on (optimal assignment, IoU >= 0.5), and when each
    track was first seen."""
    matched: dict[str, Counter] = defaultdict(Counter)
    first_seen: dict[str, float] = {}
    for t, (tids, tboxes) in zip(run.times, run.tracked):
        pids, pboxes = truth_at(gt, t)
        sim = iou_matrix(pboxes, tboxes)
        for k in tids:
            first_seen.setdefault(k, t)
        if sim.size:
            for r, c in zip(*linear_sum_assignment(sim, maximize=True)):
                if sim[r, c] >= MIN_IOU:
                    matched[tids[c]][pids[r]] += 1
    return matched, first_seen


def tracks_by_person(matched: dict[str, Counter], first_seen: dict[str, float]) \
        -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each track's person (the one it matched most, on at least 2 frames), and each person's tracks in the
    order they were first seen."""
    owner = {k: c.most_common(1)[0][0] for k, c in matched.items() if c.most_common(1)[0][1] >= 2}
    by_person: dict[str, list[str]] = defaultdict(list)
    for k in sorted(owner, key=lambda k: first_seen[k]):
        by_person[owner[k]].append(k)
    return owner, by_person


def _attendance_counts(gt: dict, run: Replay, matched: dict[str, Counter], first_seen: dict[str, float]) -> dict:
    """Tracks per person (a track counts for the person it matched most, on at least 2 frames), entries."""
    owner, by_person = tracks_by_person(matched, first_seen)
    people = [p["id"] for p in gt["people"] if p["room"]["t_enter_zone"] is not None]
    seen_people = [p for p in people if by_person.get(p)]
    entries_ok = sum(1 for p in seen_people if run.entered_via.get(by_person[p][0]) is not None)
    extra_entries = sum(1 for k, door in run.entered_via.items()
                        if door is not None and (k not in owner or by_person[owner[k]][0] != k))
    carried = sum(1 for c in matched.values() if sum(1 for n in c.values() if n >= 2) >= 2)
    tracks = [len(by_person.get(p, [])) for p in people]
    return {"people": len(people), "tracks_per_person": round(sum(tracks) / max(1, len(people)), 3),
            "split_people": sum(1 for n in tracks if n > 1), "missed_people": sum(1 for n in tracks if n == 0),
            "entries_ok": entries_ok, "extra_entries": extra_entries, "carried_over": carried}


# --- the benchmark ------------------------------------------------------------------------------------------

def sampling_runs(n_frames: int, video_fps: float, rate: float, phases: int = PHASES,
                  drop: float = DROP_FRACTION) -> list[tuple[str, list[int]]]:
    """(label, frame indices) of each replay at ``rate`` analysed frames a second: the frames nearest to
    ``offset + k / rate`` for ``phases`` offsets spread over one period, each also with ``drop`` of them lost."""
    runs = []
    duration = n_frames / video_fps
    for j in range(phases):
        offset = j / (phases * rate)
        frames = sorted({int(round((offset + k / rate) * video_fps)) for k in range(int(duration * rate) + 1)}
                        - {n_frames})
        frames = [i for i in frames if i < n_frames]
        runs.append((f"phase {offset:.2f}s", frames))
        rng = np.random.default_rng(1000 + j)
        runs.append((f"phase {offset:.2f}s drop {drop:.0%}", [i for i in frames if rng.random() >= drop]))
    return runs


def room_camera(config: Config, gt: dict):
    """The configured room camera of the scenario's session room (its analysis rate builds the tracker)."""
    room = gt["session"]["room"]
    for camera in config.cameras:
        if camera.role == "room" and camera.room == room:
            return camera
    raise ValueError(f"the config has no room camera for room {room!r}")


def bench_tracking(spec_path: Path, config: Config, rates: Sequence[float] = (4.0, 2.0, 1.0),
                   say: Callable[[str], None] = lambda _: None, tracker_class: type = PersonTracker,
                   detect_budget_s: float | None = None) -> dict:
    """Render the scenario (cached), detect (cached), replay at each rate; the report (``format_table``)."""
    spec, render = render_cached(spec_path)
    gt = render.ground_truth
    detector = PersonDetector(config.models.pack, score_threshold=config.thresholds.person_detection,
                              max_side=config.tracking.person_input_px,
                              precision=config.models.person_precision,
                              providers=config.models.providers or None)
    cache = load_or_detect(render.out_dir, gt, detector, say, budget_s=detect_budget_s)
    return evaluate(gt, cache, config, rates, tracker_class)


def evaluate(gt: dict, cache: DetectionCache, config: Config, rates: Sequence[float] = (4.0, 2.0, 1.0),
             tracker_class: type = PersonTracker) -> dict:
    """Replay ``cache`` through trackers built as production builds them, at each rate, and score it."""
    camera = room_camera(config, gt)
    zones = {"door": [tuple(p) for p in gt["cameras"]["room"]["entry_zone"]]}
    tracking = config.tracking

    def make_tracker() -> PersonTracker:
        return tracker_class(camera.id, camera.analysis_fps, zones, lost_after_s=tracking.lost_after_s,
                             reacquire_s=tracking.reacquire_s, reacquire_heights=tracking.reacquire_heights)

    report = {"scenario": gt["scenario"]["name"], "people": len(gt["people"]), "video_fps": cache.video_fps,
              "frames": cache.n_frames, "tracker_fps": camera.analysis_fps, "rates": {}}
    for rate in rates:
        runs = [{"run": label, "frames": len(frames), **score(gt, replay(cache, frames, make_tracker))}
                for label, frames in sampling_runs(cache.n_frames, cache.video_fps, rate)]
        report["rates"][f"{rate:g}"] = {"summary": summarise(runs), "runs": runs}
    return report


def summarise(runs: list[dict]) -> dict:
    def mean(key: str) -> float:
        return round(float(np.mean([r[key] for r in runs])), 4)

    return {"IDF1": mean("IDF1"), "IDF1_min": min(r["IDF1"] for r in runs), "HOTA": mean("HOTA"),
            "MOTA": mean("MOTA"), "IDSW": sum(r["IDSW"] for r in runs), "tracks_per_person": mean("tracks_per_person"),
            "split_people": sum(r["split_people"] for r in runs), "missed_people": sum(r["missed_people"] for r in runs),
            "entries_ok": sum(r["entries_ok"] for r in runs), "entries_of": sum(r["people"] for r in runs),
            "extra_entries": sum(r["extra_entries"] for r in runs), "carried_over": sum(r["carried_over"] for r in runs),
            "runs": len(runs)}


COLUMNS = ("IDF1", "IDF1_min", "HOTA", "MOTA", "IDSW", "tracks_per_person", "split_people", "entries",
           "extra_entries", "carried_over")


def format_table(report: dict) -> str:
    """One row per analysis rate: means over the runs (IDF1_min: the worst run), counts summed over them."""
    head = ["fps", *COLUMNS]
    rows = []
    for rate, block in report["rates"].items():
        s = dict(block["summary"])
        s["entries"] = f"{s['entries_ok']}/{s['entries_of']}"
        rows.append([rate, *(str(s[c]) for c in COLUMNS)])
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(head)]
    lines = [f"{report['scenario']}: {report['people']} people, {report['frames']} frames at {report['video_fps']:g} fps, "
             f"tracker configured for {report['tracker_fps']:g} fps; {block['summary']['runs']} runs per rate "
             f"({PHASES} sampling phases, each also with {DROP_FRACTION:.0%} of frames dropped)"]
    lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def to_json(report: dict) -> str:
    return json.dumps(report, indent=1)
