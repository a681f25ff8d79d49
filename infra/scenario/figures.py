"""Real walking people for the room camera, cut out of OpenCV's ``vtest.avi`` pedestrian clip.

Debian's ``opencv-doc`` ships ``vtest.avi`` (768x576, 795 frames at 10 fps, people walking across a
campus square; Apache-2.0/BSD). The camera is static, so the median of frames is the empty scene; a
pedestrian is where a frame differs from it. Blobs are linked frame to frame into tracks, and from
each track the longest run of frames where it is one isolated person (tall and narrow, not at the
border, not behind the lamp post) becomes a *figure*: a short walk cycle of colour crops with soft
alpha masks, anchored at the feet and normalised in height.

Extraction takes a few seconds; the result is cached under the state folder, keyed by the clip's
sha256 and :data:`FIGURES_VERSION`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from infra.foundation.errors import RollcallError
from infra.foundation.paths import cache_dir

FIGURES_VERSION = 2
VTEST_PATH = Path(os.environ.get("ROLLCALL_PEDESTRIAN_VIDEO", "/usr/share/doc/opencv-doc/examples/data/vtest.avi"))
REF_HEIGHT = 100  # every figure frame is stored scaled so that the person is this tall (px)
_POLE_X = (412, 446)  # the lamp post in vtest.avi (x range, full resolution) hides people behind it
_POLE_MAX_Y = 395
MAX_FIGURES = 12
MIN_RUN = 12
MAX_RUN = 24


@dataclass(frozen=True)
class Figure:
    """One person's walk cycle: frames of BGR crops and alpha masks, feet at the bottom centre."""

    index: int
    frames: tuple[np.ndarray, ...]  # HxWx3 uint8
    alphas: tuple[np.ndarray, ...]  # HxW float32 0..1
    faces_right: bool  # walking direction in the source clip
    source_frames: tuple[int, int]  # first and last frame used from vtest.avi


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pedestrian_video() -> Path:
    if not VTEST_PATH.is_file():
        raise RollcallError(
            f"{VTEST_PATH} not found (real pedestrians for the room camera) — install Debian's opencv-doc "
            "(apt-get install opencv-doc) or set ROLLCALL_PEDESTRIAN_VIDEO to a copy of vtest.avi")
    return VTEST_PATH


def load_figures(video_sha: str | None = None) -> list[Figure]:
    """The figure bank, from the cache or extracted now (a few seconds) and cached."""
    video = pedestrian_video()
    sha = video_sha or sha256_file(video)
    cache = cache_dir() / "scenario" / f"figures-v{FIGURES_VERSION}-{sha[:16]}.npz"
    if cache.is_file():
        try:
            return _from_npz(cache)
        except Exception:  # a damaged cache is rebuilt
            cache.unlink(missing_ok=True)
    figures = extract_figures(video)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.name + f".{os.getpid()}.partial.npz")
    _to_npz(figures, partial)
    partial.replace(cache)
    return figures


def _to_npz(figures: list[Figure], path: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for f in figures:
        for k, (img, a) in enumerate(zip(f.frames, f.alphas)):
            arrays[f"f{f.index}_{k}"] = img
            arrays[f"a{f.index}_{k}"] = (a * 255).astype(np.uint8)
        meta.append([f.index, len(f.frames), int(f.faces_right), *f.source_frames])
    arrays["meta"] = np.array(meta, dtype=np.int64)
    np.savez(path, **arrays)


def _from_npz(path: Path) -> list[Figure]:
    with np.load(path) as z:
        out = []
        for index, n, right, s0, s1 in z["meta"]:
            frames = tuple(z[f"f{index}_{k}"] for k in range(n))
            alphas = tuple(z[f"a{index}_{k}"].astype(np.float32) / 255 for k in range(n))
            out.append(Figure(int(index), frames, alphas, bool(right), (int(s0), int(s1))))
    if not out:
        raise ValueError("empty figure cache")
    return out


def _read_frames(video: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if len(frames) < 50:
        raise RollcallError(f"{video}: could not read enough frames ({len(frames)}) — reinstall opencv-doc")
    return frames


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


Box = tuple[int, int, int, int]  # x, y, w, h in full-resolution pixels
Run = list[tuple[int, Box]]  # (frame index, box) of one person over consecutive frames


def extract_figures(video: Path) -> list[Figure]:
    frames = _read_frames(video)
    H, W = frames[0].shape[:2]
    bg = np.median(np.stack(frames[:: max(1, len(frames) // 60)]), axis=0).astype(np.uint8)
    bg_blur = cv2.GaussianBlur(bg, (5, 5), 0).astype(np.int16)
    per_frame = _blobs_per_frame(frames, bg_blur)
    tracks = _link_tracks(per_frame)
    chosen = _choose_runs([run for track in tracks if (run := _longest_clean_run(track, per_frame, W, H))])
    figures = []
    for run in chosen:
        figure = _figure_from_run(len(figures), run, frames, bg_blur)
        if figure is not None:
            figures.append(figure)
    if len(figures) < 3:
        raise RollcallError(f"{video}: found only {len(figures)} usable pedestrians — is this OpenCV's vtest.avi?")
    return figures


def _blobs_per_frame(frames: list[np.ndarray], bg_blur: np.ndarray) -> list[list[Box]]:
    """Step 1: each frame's blobs (where it differs from the empty scene), found at half resolution."""
    H, W = frames[0].shape[:2]
    small_bg = cv2.resize(bg_blur.astype(np.uint8), (W // 2, H // 2), interpolation=cv2.INTER_AREA).astype(np.int16)
    close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4, 6))
    per_frame: list[list[Box]] = []
    for frame in frames:
        small = cv2.resize(frame, (W // 2, H // 2), interpolation=cv2.INTER_AREA).astype(np.int16)
        diff = np.abs(cv2.GaussianBlur(small, (3, 3), 0) - small_bg).max(axis=2)
        mask = (diff > 30).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, close)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        boxes = [tuple(int(v) * 2 for v in stats[k, :4]) for k in range(1, n) if stats[k, 4] * 4 >= 250]
        per_frame.append(boxes)
    return per_frame


def _link_tracks(per_frame: list[list[Box]]) -> list[Run]:
    """Step 2: tracks by greedy IoU linking of each frame's blobs to the tracks of the frame before."""
    tracks: list[Run] = []
    active: list[Run] = []
    for fi, boxes in enumerate(per_frame):
        used: set[int] = set()
        still = []
        for tr in active:
            best, best_iou = None, 0.3
            for j, b in enumerate(boxes):
                if j not in used and (v := _iou(tr[-1][1], b)) > best_iou:
                    best, best_iou = j, v
            if best is None:
                tracks.append(tr)
            else:
                used.add(best)
                tr.append((fi, boxes[best]))
                still.append(tr)
        still += [[(fi, b)] for j, b in enumerate(boxes) if j not in used]
        active = still
    return tracks + active


def _is_clean(fi: int, b: Box, per_frame: list[list[Box]], W: int, H: int) -> bool:
    """One isolated person: tall and narrow, not at the border, not behind the lamp post, no blob close by."""
    x, y, w, h = b
    if not (60 <= h <= 140 and 0.22 <= w / h <= 0.55):
        return False
    if x <= 4 or y <= 4 or x + w >= W - 4 or y + h >= H - 4:
        return False
    if x < _POLE_X[1] and x + w > _POLE_X[0] and y < _POLE_MAX_Y:
        return False
    for o in per_frame[fi]:
        if o != b and o[3] >= 20:  # another blob close by: not isolated
            if o[0] < x + w + 12 and o[0] + o[2] > x - 12 and o[1] < y + h + 12 and o[1] + o[3] > y - 12:
                return False
    return True


def _longest_clean_run(track: Run, per_frame: list[list[Box]], W: int, H: int) -> Run | None:
    """Step 3a: a track's longest run of clean consecutive frames (at most MAX_RUN); None below MIN_RUN."""
    best: Run = []
    cur: Run = []
    for fi, b in track:
        if _is_clean(fi, b, per_frame, W, H) and (not cur or cur[-1][0] == fi - 1):
            cur.append((fi, b))
        else:
            cur = [(fi, b)] if _is_clean(fi, b, per_frame, W, H) else []
        if len(cur) > len(best):
            best = list(cur)
    return best[:MAX_RUN] if len(best) >= MIN_RUN else None


def _choose_runs(runs: list[Run]) -> list[Run]:
    """Step 3b: up to MAX_FIGURES runs, bigger and longer first, skipping a run that continues one already
    taken (same person); in the clip's order."""
    runs = sorted(runs, key=lambda r: (-np.median([b[3] for _, b in r]) * min(len(r), MAX_RUN), r[0][0]))
    chosen: list[Run] = []
    for r in runs:
        if any(abs(r[0][0] - c[-1][0]) < 40 and abs(r[0][1][0] - c[-1][1][0]) < 120 or
               abs(c[0][0] - r[-1][0]) < 40 and abs(c[0][1][0] - r[-1][1][0]) < 120 for c in chosen):
            continue
        chosen.append(r)
        if len(chosen) == MAX_FIGURES:
            break
    chosen.sort(key=lambda r: r[0][0])
    return chosen


def _figure_from_run(index: int, run: Run, frames: list[np.ndarray], bg_blur: np.ndarray) -> Figure | None:
    """Step 4: full-resolution soft-masked cut-outs of a run's frames, scaled to REF_HEIGHT along the run's
    height trend; None when too few frames give a clean cut-out."""
    hs = np.array([b[3] for _, b in run], dtype=np.float64)
    trend = np.polyval(np.polyfit(np.arange(len(hs)), hs, 1), np.arange(len(hs)))
    crops, alphas = [], []
    for k, (fi, box) in enumerate(run):
        cut = _cut_out(frames[fi], bg_blur, box)
        if cut is None:
            continue
        crop, acrop = cut
        scale = REF_HEIGHT / max(trend[k], 30.0)
        size = (max(4, int(round(crop.shape[1] * scale))), max(8, int(round(crop.shape[0] * scale))))
        crops.append(cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC))
        alphas.append(np.clip(cv2.resize(acrop, size, interpolation=cv2.INTER_LINEAR), 0, 1))
    if crops:  # drop frames whose cut-out is far wider or narrower than the run's (a merged blob)
        widths = np.array([c.shape[1] for c in crops], dtype=np.float64)
        med = float(np.median(widths))
        keep_k = [k for k, w in enumerate(widths) if 0.65 * med <= w <= 1.35 * med]
        crops, alphas = [crops[k] for k in keep_k], [alphas[k] for k in keep_k]
    if len(crops) < MIN_RUN // 2:
        return None
    dx = run[-1][1][0] + run[-1][1][2] / 2 - run[0][1][0] - run[0][1][2] / 2
    return Figure(index, tuple(crops), tuple(alphas), dx > 0, (run[0][0], run[-1][0]))


def _cut_out(frame: np.ndarray, bg_blur: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray] | None:
    """The person in ``box``: a colour crop and its soft alpha mask (holes filled), centred on the body's
    centre of mass so the feet stay put; None when no clear silhouette is there."""
    H, W = frame.shape[:2]
    x, y, w, h = box
    pad = 8
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(W, x + w + pad), min(H, y + h + pad)
    img = frame[y0:y1, x0:x1]
    diff = np.abs(cv2.GaussianBlur(img, (5, 5), 0).astype(np.int16) - bg_blur[y0:y1, x0:x1]).max(axis=2)
    hard = (diff > 28).astype(np.uint8)
    hard = cv2.morphologyEx(hard, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 9)))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(hard)
    if n < 2:
        return None
    keep = 1 + int(np.argmax(stats[1:, 4]))
    body = (lab == keep).astype(np.uint8)
    # fill holes inside the silhouette
    flood = body.copy()
    cv2.floodFill(flood, np.zeros((flood.shape[0] + 2, flood.shape[1] + 2), np.uint8), (0, 0), 1)
    body = body | (1 - flood)
    soft = np.clip((diff.astype(np.float32) - 20) / 20, 0, 1)
    region = cv2.dilate(body, np.ones((3, 3), np.uint8)).astype(np.float32)
    alpha = cv2.GaussianBlur(np.maximum(soft, body.astype(np.float32)) * region, (3, 3), 0)
    ys, xs = np.nonzero(alpha > 0.5)
    if len(ys) < 50:
        return None
    ty0, ty1, tx0, tx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    # horizontal crop centred on the body's centre of mass so feet stay put
    cx = int(round(np.average(np.nonzero(body)[1])))
    half = max(cx - tx0, tx1 - cx) + 2
    crop = np.zeros((ty1 - ty0, 2 * half, 3), np.uint8)
    acrop = np.zeros((ty1 - ty0, 2 * half), np.float32)
    sx0, sx1 = max(0, cx - half), min(img.shape[1], cx + half)
    crop[:, sx0 - (cx - half):sx1 - (cx - half)] = img[ty0:ty1, sx0:sx1]
    acrop[:, sx0 - (cx - half):sx1 - (cx - half)] = alpha[ty0:ty1, sx0:sx1]
    return crop, acrop
