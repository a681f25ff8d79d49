"""`rollcall bench trace`: a room tracker's trace (``[tracking] trace_dir``) replayed offline.

The replay feeds the traced detections and looks to a new tracker built with the traced settings and this
code's defaults, and reports whether it decided the events the live tracker did (``faithful``; the first
difference when not: a tracker change, or a trace from another version). With ``--scenario`` it scores the
replay against the rendered scenario's ground truth as ``rollcall bench tracking`` does (the trace's stream
times are the video's), and says which tracks each person got and through which door the first came in.
``--window T0 T1`` prints each frame in that stretch: detections, the tracks seen, those unseen, events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from infra.bench.tracking import Replay, score, track_matches, tracks_by_person, truth_at
from infra.scenario.mounts import render_cached
from processor.stages.track_trace import event_row, read_trace, replay_trace


def _normalised(rows: list[dict], names: dict[str, str]) -> list[tuple]:
    """Events with track ids renamed in order of first mention (a replay's tracker has another run id)."""
    return [(r["kind"], names.setdefault(r["track_id"], f"#{len(names) + 1}"), round(r["pts_s"], 3),
             tuple(round(v) for v in r["box"]), r["entered_via"], r["exited_via"]) for r in rows]


def replay_report(path: Path, spec: Path | None = None, window: tuple[float, float] | None = None,
                  say: Callable[[str], None] = lambda _: None) -> dict:
    trace = read_trace(path)
    gt = render_cached(spec)[1].ground_truth if spec is not None else None
    recorded_names: dict[str, str] = {}
    replayed_names: dict[str, str] = {}
    run = Replay([], [], {})
    kinds: Counter = Counter()
    first_difference = None
    coasted = 0
    for row, events, tracker in replay_trace(trace):
        if row.get("coast"):
            coasted += 1
            continue
        replayed = [event_row(e) for e in events]
        kinds.update(e["kind"] for e in replayed)
        mine = _normalised(replayed, replayed_names)
        theirs = _normalised(row.get("events", []), recorded_names)
        if first_difference is None and mine != theirs:
            first_difference = {"pts_s": row["pts_s"], "recorded": theirs, "replayed": mine}
        for e in events:
            if e.kind == "appeared":
                run.entered_via[e.track_id] = e.entered_via
        seen = [t for t in tracker.open_tracks if t.state == "active" and t.last_pts_s == row["pts_s"]]
        run.times.append(row["pts_s"])
        run.tracked.append(([t.track_id for t in seen], np.array([t.box for t in seen], np.float64).reshape(-1, 4)))
        if window is not None and window[0] <= row["pts_s"] <= window[1]:
            say(_frame_lines(row, mine, seen, tracker, gt))
    report = {"trace": str(path), "camera_id": trace.header["camera_id"], "fps": trace.header["fps"],
              "frames": len(trace.rows), "detected": len(trace.rows) - coasted, "coasted": coasted,
              "span_s": [trace.rows[0]["pts_s"], trace.rows[-1]["pts_s"]] if trace.rows else None,
              "events": dict(kinds), "faithful": first_difference is None, "first_difference": first_difference}
    if gt is not None:
        report["scores"] = score(gt, run)
        report["people"] = _people(gt, run)
    return report


def _people(gt: dict, run: Replay) -> dict:
    """Per person of the scenario: the tracks that matched them most (in order) and the first one's door."""
    matched, first_seen = track_matches(gt, run)
    _, by_person = tracks_by_person(matched, first_seen)
    return {p["id"]: {"tracks": [f"{k.rsplit('-', 1)[-1]}@{first_seen[k]:.2f}s" for k in by_person.get(p["id"], [])],
                      "entered_via": run.entered_via.get(by_person[p["id"]][0]) if by_person.get(p["id"]) else None}
            for p in gt["people"] if p["room"]["t_enter_zone"] is not None}


def short(box) -> list[int]:
    return [int(v) for v in box]


def _frame_lines(row: dict, events: list[tuple], seen: list, tracker, gt: dict | None) -> str:
    lines = [f"t={row['pts_s']:.2f} detections: " + ", ".join(
        f"{score:.2f} {short(box)}" for box, score, _, _ in row["detections"])]
    lines.append("   seen: " + ", ".join(f"{t.track_id.rsplit('-', 1)[-1]} {short(t.box)}" for t in seen))
    unseen = [t for t in tracker.open_tracks if t not in seen]
    if unseen:
        lines.append("   unseen: " + ", ".join(f"{t.track_id.rsplit('-', 1)[-1]} {t.state} {short(t.box)}" for t in unseen))
    if events:
        lines.append("   events: " + ", ".join(f"{kind} {track} {via or ''}{out or ''}" for kind, track, _, _, via, out in events))
    if gt is not None:
        pids, boxes = truth_at(gt, row["pts_s"])
        lines.append("   truth: " + ", ".join(f"{p} {short(b)}" for p, b in zip(pids, boxes)))
    return "\n".join(lines)


def format_report(report: dict) -> str:
    lines = [f"{report['trace']}: camera {report['camera_id']} at {report['fps']} fps, {report['frames']} frames "
             f"({report['detected']} detected, {report['coasted']} coasted), events {report['events']}",
             "replay: the same events as traced" if report["faithful"] else
             f"replay: DIFFERS from the trace first at t={report['first_difference']['pts_s']:.2f}: "
             f"traced {report['first_difference']['recorded']}, replayed {report['first_difference']['replayed']}"]
    if "scores" in report:
        lines.append("scores: " + ", ".join(f"{k} {v}" for k, v in report["scores"].items()))
        for person, got in report["people"].items():
            lines.append(f"  {person}: tracks {', '.join(got['tracks']) or 'none'}; entered via {got['entered_via']}")
    return "\n".join(lines)
