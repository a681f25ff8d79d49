"""The liveness cues of every arrival of a scenario, without the stack: how the README's "Liveness" table
was measured (``python -m infra.bench.liveness_cues infra/scenarios/spoof.toml [more specs]``).

Door frames are drawn in-process exactly as the renderer draws them (sensor noise included), passed
through a JPEG round trip at quality 80 (a stand-in for the video codec: no encode, no RTSP), and the open
pack's face detector runs on each. Each detected face goes to the ground-truth arrival whose face box
holds its centre, and to that arrival's :class:`~processor.stages.liveness.LivenessTrack`, every face
(gated or not, with its crop only when the quality gate passed it), as the processor's face tracks feed
theirs (the frame's other faces left out of each profile, as there). One JSON line per arrival: whether it
holds a picture, frames, every cue, the score and decision; and the ``frame`` cue and score after its first
``--early`` frames. ``--every 2,3,4`` adds a line per arrival and offset over every K-th face only, as a
door short of CPU sees a passage (``every``, ``offset``).
"""

from __future__ import annotations

import argparse
import json

import cv2

from infra.foundation.config import ThresholdsConfig
from infra.scenario import clothing
from infra.scenario.attacks import held_picture
from infra.scenario.door import DoorScene
from infra.scenario.faces import head_and_shoulders, head_only
from infra.scenario.spec import load_spec
from processor.stages.faces import FaceDetector, align, assess
from processor.stages.liveness import LivenessTrack, measure as measure_face


def measure(spec_path: str, early: int = 20, every: tuple[int, ...] = ()) -> list[dict]:
    """One row per arrival (its whole track), then, for each k in ``every``, one row per arrival and offset
    with every k-th of its faces only: a busy door analyses fewer frames of a passage."""
    spec = load_spec(spec_path)
    seen = _faces_by_arrival(spec)
    rows = []
    for a in spec.arrivals:
        faces, track, first = seen[a.id], LivenessTrack(), None
        for cues, landmarks in faces:
            track.add_cues(cues, landmarks)
            if track.frames == early:
                first = track.decide()
        rows.append({**_row(spec, a, track.decide()),
                     f"frame_at_{early}": first.cues.get("frame") if first else None,
                     f"score_at_{early}": first.score if first else None})
        for k in every:
            for offset in range(k):
                sampled = LivenessTrack()
                for cues, landmarks in faces[offset::k]:
                    sampled.add_cues(cues, landmarks)
                rows.append({**_row(spec, a, sampled.decide()), "every": k, "offset": offset})
    return rows


def _row(spec, arrival, verdict) -> dict:
    return {"scenario": spec.name, "id": arrival.id, "holds": arrival.holds[0] if arrival.holds else None,
            "frames": verdict.frames, "score": verdict.score, "decision": verdict.decision, **verdict.cues}


def _faces_by_arrival(spec) -> dict[str, list]:
    """Each arrival's faces in frame order, measured: (FaceCues, landmarks), the frame's other faces left
    out of each profile as the processor does."""
    sc, cams = spec.raw.scenario, spec.raw.cameras
    scene = DoorScene(cams.door.width, cams.door.height, sc.seed)
    outfits = clothing.assign([a.id for a in spec.arrivals], sc.seed)
    sprites = {a.id: held_picture(a.holds[0], a.holds[2], a.key) if a.holds is not None
               else head_only(head_and_shoulders(a.door_photo, a.key)) for a in spec.arrivals}
    detector, thresholds = FaceDetector("open", 0.6, None, max_side=640), ThresholdsConfig()
    seen: dict[str, list] = {a.id: [] for a in spec.arrivals}
    for i in range(spec.n_frames):
        t = i / sc.fps
        posed = [(a, p) for a in spec.arrivals if (p := scene.pose(a, t, sc.door_passage_s, sc.fps)) is not None]
        if not posed:
            continue
        frame, boxes = scene.background.copy(), {}
        for a, pose in sorted(posed, key=lambda item: item[1].width):
            x, y, w, h = scene.draw(frame, sprites[a.id], pose, outfits[a.id])
            boxes[a.id] = (x, y, x + w, y + h)
        frame = scene.noise.apply(frame, i)
        frame = cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1], cv2.IMREAD_COLOR)
        faces = detector.detect([frame])[0]
        for face in faces:
            cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
            owner = next((aid for aid, b in boxes.items() if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]), None)
            if owner is None:
                continue
            crop = align(frame, face.landmarks)
            passed = assess(frame, face, crop, thresholds).reason is None
            others = [other.box for other in faces if other is not face]
            seen[owner].append((measure_face(frame, face.box, crop if passed else None, others), face.landmarks))
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--early", type=int, default=20, help="also report the cues after this many frames")
    parser.add_argument("--every", type=lambda text: [int(k) for k in text.split(",")], default=[],
                        help="K[,K...]: also report each arrival's cues over every K-th of its faces (each offset)")
    args = parser.parse_args()
    for spec in args.specs:
        for row in measure(spec, args.early, tuple(args.every)):
            print(json.dumps(row))


if __name__ == "__main__":
    main()
