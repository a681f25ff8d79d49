"""The room camera: a classroom with a door on the left, real pedestrians walking in to a place.

Layout (fractions of the frame, so any size from 640x360 up works): the back wall meets the floor
at y = 0.50 H; the door is on the back wall's left end; the entry zone is the floor in front of it.
An arrival appears in the dark doorway ``transit_s`` after passing the door camera (fading in
over 0.3 s), walks through the entry zone, along the aisle and to a free place (two rows, seven
places), stands there, and if it leaves walks the same way back out. Walking takes
``ENTRY_WALK_S`` / ``EXIT_WALK_S`` whatever the distance. People are drawn far to near, so nearer
people hide farther ones, and are scaled with depth: ~195 px tall at the door, ~275 px in the front
row (720 px frame height).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from infra.scenario.clothing import Clothing, dress
from infra.scenario.draw import SensorNoise, blend, texture, vignette
from infra.scenario.figures import REF_HEIGHT, Figure
from infra.scenario.spec import ENTRY_WALK_S, EXIT_WALK_S, ROOM_PLACES, Arrival

FLOOR_Y = 0.50
DOOR = (0.075, 0.16, 0.19, FLOOR_Y)  # x0, y0, x1, y1 of the door opening
ENTRY_ZONE = ((0.035, 0.49), (0.235, 0.49), (0.27, 0.68), (0.005, 0.68))
AISLE_Y = 0.75
# places (feet positions), in the order they are handed out: spread out first
SPOTS = ((0.56, 0.62), (0.80, 0.88), (0.88, 0.62), (0.48, 0.88), (0.40, 0.62), (0.72, 0.62), (0.64, 0.88),
         # a full class: a back row between the others, a middle row just in front of the aisle, the front's ends
         (0.48, 0.555), (0.80, 0.555), (0.64, 0.555), (0.34, 0.70), (0.60, 0.70), (0.86, 0.70),
         (0.32, 0.88), (0.96, 0.88), (0.30, 0.555), (0.47, 0.70), (0.73, 0.70))
assert len(SPOTS) == ROOM_PLACES
SOURCE_FPS = 10.0  # vtest.avi's frame rate: walk cycles play at this rate
FADE_S = 0.3
FACE_W = 0.085  # a room face's width, as a share of the person's height
FACE_Y = 0.075  # its centre below the top of the head, same unit
PAIR_SHIFT = (0.028, 0.015)  # a pair walks this far (x, y; frame shares) either side of the path


def person_height(foot_y: float, H: int) -> float:
    return H * (0.27 + 0.30 * (foot_y / H - FLOOR_Y))


@dataclass
class RoomTrack:
    arrival: Arrival
    figure: Figure  # already dressed in the person's clothing
    spot: tuple[float, float]
    path_in: list[tuple[float, float]]
    end_s: float  # end of the video
    clothing: Clothing | None = None
    face: tuple[np.ndarray, np.ndarray] | None = None  # small frontal face (BGR, alpha), drawn when facing us
    standing_frame: int = 0
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # alpha>0.5 box per figure frame
    heads: list[float] = field(default_factory=list)  # head centre x per figure frame (figure pixels)

    def __post_init__(self) -> None:
        widths = []
        for a in self.figure.alphas:
            ys, xs = np.nonzero(a > 0.5)
            self.boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
            widths.append(xs.max() - xs.min())
            head = ys < ys.min() + 0.12 * (ys.max() - ys.min())
            self.heads.append(float(xs[head].mean()))
        self.standing_frame = int(np.argmin(widths))  # legs together

    def facing_camera(self, t: float) -> bool:
        """In place (students face the front, where the camera is) or walking towards the camera."""
        st = self.state(t)
        if st is None:
            return False
        if st[0] == "in-place":
            return True
        later = self.state(t + 0.1)
        return later is not None and later[2] - st[2] > 0.5 * abs(later[1] - st[1]) + 0.05

    def face_box(self, t: float, H: int) -> tuple[float, float, float, float] | None:
        """Where the small face is drawn at t (x, y, w, h), or None when the camera sees no face."""
        p = self.placement(t, H)
        if self.face is None or p is None or not self.facing_camera(t):
            return None
        _, x, y, _, k, flipped, scale, box = p
        img = self.figure.frames[k]
        hx = self.heads[k] if not flipped else img.shape[1] - self.heads[k]
        height = box[3]
        w = FACE_W * height
        h = w * self.face[0].shape[0] / self.face[0].shape[1]
        cx, cy = x - img.shape[1] * scale / 2 + hx * scale, box[1] + FACE_Y * height
        return (cx - w / 2, cy - h / 2, w, h)

    @property
    def t_last(self) -> float:
        return self.arrival.t_gone if self.arrival.t_gone is not None else self.end_s

    def state(self, t: float) -> tuple[str, float, float, float, int, bool] | None:
        """(phase, foot x, foot y, opacity, figure frame, flipped) at time t; None when not in the room."""
        a = self.arrival
        if t < a.t_appear or t >= self.t_last or any(h0 <= t < h1 for h0, h1 in a.hidden):
            return None
        if t < a.t_seated:
            phase, s, path, t0 = "walking-in", (t - a.t_appear) / ENTRY_WALK_S, self.path_in, a.t_appear
        elif a.leave_s is None or t < a.leave_s:
            phase, s, path, t0 = "in-place", 1.0, self.path_in, None
        else:
            phase, s, path, t0 = "walking-out", (t - a.leave_s) / EXIT_WALK_S, self.path_in[::-1], a.leave_s
        x, y, dx = _along(path, min(1.0, max(0.0, s)))
        if phase == "in-place":
            dx = 1.0 if self.spot[0] > path[-2][0] else -1.0
            frame = self.standing_frame
        else:
            frame = int((t - t0) * SOURCE_FPS) % len(self.figure.frames)
        opacity = min(1.0, (t - a.t_appear) / FADE_S)
        if a.t_gone is not None:
            opacity = min(opacity, (a.t_gone - t) / FADE_S)
        flipped = (dx > 0) != self.figure.faces_right
        return phase, x, y, max(0.0, opacity), frame, flipped

    def placement(self, t: float, H: int):
        st = self.state(t)
        if st is None:
            return None
        phase, x, y, opacity, k, flipped = st
        scale = person_height(y, H) / REF_HEIGHT
        img, alpha = self.figure.frames[k], self.figure.alphas[k]
        w, h = img.shape[1] * scale, img.shape[0] * scale
        x0, y0 = x - w / 2, y - h
        bx0, by0, bx1, by1 = self.boxes[k]
        if flipped:
            bx0, bx1 = img.shape[1] - bx1, img.shape[1] - bx0
        box = (x0 + bx0 * scale, y0 + by0 * scale, (bx1 - bx0) * scale, (by1 - by0) * scale)
        return phase, x, y, opacity, k, flipped, scale, box


def _along(path: list[tuple[float, float]], s: float) -> tuple[float, float, float]:
    """Point at fraction s of the polyline's length, and the x direction of travel there."""
    pts = np.array(path, np.float64)
    seg = np.hypot(*np.diff(pts, axis=0).T)
    total = seg.sum()
    d = s * total
    for i, length in enumerate(seg):
        if d <= length or i == len(seg) - 1:
            f = 0.0 if length == 0 else min(1.0, d / length)
            p = pts[i] + f * (pts[i + 1] - pts[i])
            dx = pts[i + 1][0] - pts[i][0]
            if abs(dx) < 1e-6:  # walking straight towards/away: keep the last sideways direction
                dx = next((pts[j + 1][0] - pts[j][0] for j in range(i - 1, -1, -1) if abs(pts[j + 1][0] - pts[j][0]) > 1e-6), 1.0)
            return float(p[0]), float(p[1]), float(np.sign(dx))
        d -= length
    return float(pts[-1][0]), float(pts[-1][1]), 1.0


class RoomScene:
    def __init__(self, width: int, height: int, seed: int):
        self.W, self.H = width, height
        rng = np.random.default_rng([seed, 2])
        self.entry_zone = [(round(x * width), round(y * height)) for x, y in ENTRY_ZONE]
        x0, y0, x1, y1 = DOOR
        self.door = [(round(x0 * width), round(y0 * height)), (round(x1 * width), round(y0 * height)),
                     (round(x1 * width), round(y1 * height)), (round(x0 * width), round(y1 * height))]
        self.background = self._background(rng)
        self.noise = SensorNoise((height, width), rng)

    def in_entry_zone(self, x: float, y: float) -> bool:
        return cv2.pointPolygonTest(np.array(self.entry_zone, np.float32), (float(x), float(y)), False) >= 0

    def plan(self, arrivals: list[Arrival], figures: list[Figure], seed: int, end_s: float,
             outfits: dict[str, Clothing], faces: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[RoomTrack]:
        """Who walks where with which figure (``arrivals``: those who enter the room)."""
        W, H = self.W, self.H
        order = np.random.default_rng([seed, 3]).permutation(len(figures))
        busy: list[list[tuple[float, float]]] = [[] for _ in SPOTS]
        tracks = []
        for n, a in enumerate(sorted(arrivals, key=lambda a: (a.t_appear, a.key))):
            span = (a.t_appear, a.t_gone if a.t_gone is not None else float("inf"))
            free = [i for i in range(len(SPOTS)) if all(span[1] <= s or span[0] >= e for s, e in busy[i])]
            spot_i = free[0]  # the spec check guarantees one (ROOM_PLACES)
            busy[spot_i].append(span)
            sx, sy = SPOTS[spot_i][0] * W, SPOTS[spot_i][1] * H
            door_x = (DOOR[0] + DOOR[2]) / 2 * W
            ox, oy = a.room_shift * PAIR_SHIFT[0] * W, a.room_shift * PAIR_SHIFT[1] * H
            path = [(door_x + ox, (FLOOR_Y + 0.005) * H + max(0.0, oy)), (0.15 * W + ox, 0.63 * H + oy),
                    (0.26 * W + ox, AISLE_Y * H + oy), (sx + ox, AISLE_Y * H + oy), (sx, sy)]
            figure = dress(figures[int(order[n % len(figures)])], outfits[a.id])
            tracks.append(RoomTrack(a, figure, (sx, sy), path, end_s, outfits[a.id], faces.get(a.id)))
        return tracks

    def draw(self, frame: np.ndarray, tracks: list[RoomTrack], t: float) -> None:
        placed = [(p, tr) for tr in tracks if (p := tr.placement(t, self.H)) is not None]
        placed.sort(key=lambda item: item[0][2])  # far (small foot y) first
        for (phase, x, y, opacity, k, flipped, scale, _), tr in placed:
            img, alpha = tr.figure.frames[k], tr.figure.alphas[k]
            if flipped:
                img, alpha = img[:, ::-1], alpha[:, ::-1]
            w, h = max(2, round(img.shape[1] * scale)), max(2, round(img.shape[0] * scale))
            img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_CUBIC)
            alpha = np.clip(cv2.resize(np.ascontiguousarray(alpha), (w, h), interpolation=cv2.INTER_LINEAR), 0, 1)
            x0, y0 = round(x - w / 2), round(y - h)
            self._shadow(frame, x, y, h, opacity)
            blend(frame, img, alpha * opacity, x0, y0)
            if (fb := tr.face_box(t, self.H)) is not None:
                fw, fh = max(2, round(fb[2])), max(2, round(fb[3]))
                face = cv2.resize(tr.face[0], (fw, fh), interpolation=cv2.INTER_AREA)
                fa = cv2.resize(tr.face[1], (fw, fh), interpolation=cv2.INTER_AREA)
                blend(frame, face, fa * opacity, round(fb[0]), round(fb[1]))

    def _shadow(self, frame: np.ndarray, x: float, y: float, h: float, opacity: float) -> None:
        ax, ay = max(2, round(0.2 * h)), max(1, round(0.035 * h))
        size = (2 * ax + 9, 2 * ay + 9)
        m = np.zeros((size[1], size[0]), np.float32)
        cv2.ellipse(m, (size[0] // 2, size[1] // 2), (ax, ay), 0, 0, 360, 1.0, -1)
        m = cv2.GaussianBlur(m, (0, 0), 2.5) * 0.35 * opacity
        blend(frame, np.zeros((*m.shape, 3), np.uint8), m, round(x) - size[0] // 2, round(y - 2) - size[1] // 2)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        W, H = self.W, self.H
        fy = round(FLOOR_Y * H)
        img = np.zeros((H, W, 3), np.float32)
        # back wall with a soft vertical gradient, ceiling band
        grad = np.linspace(1.05, 0.92, fy, dtype=np.float32)[:, None, None]
        img[:fy] = np.array((196, 210, 222), np.float32) * grad
        img[: round(0.05 * H)] = (228, 230, 230)
        # carpet floor, darker near the camera, perspective seams
        fgrad = np.linspace(1.0, 0.82, H - fy, dtype=np.float32)[:, None, None]
        img[fy:] = np.array((150, 152, 148), np.float32) * fgrad  # light grey lino
        vp = (0.55 * W, 0.20 * H)
        for k in range(-8, 19):
            x_at_floor = k * W / 10
            t = (H - vp[1]) / (fy - vp[1])
            cv2.line(img, (round(x_at_floor), fy), (round(vp[0] + (x_at_floor - vp[0]) * t), H), (132, 134, 130), 1, cv2.LINE_AA)
        for y in np.geomspace(1, (H - fy), 7)[1:]:
            cv2.line(img, (0, fy + round(y)), (W, fy + round(y)), (136, 138, 134), 1, cv2.LINE_AA)
        cv2.line(img, (0, fy), (W, fy), (70, 78, 85), max(2, H // 120))  # skirting
        # windows on the right of the back wall
        for i in range(3):
            wx0, wx1 = round((0.62 + i * 0.115) * W), round((0.725 + i * 0.115) * W)
            wy0, wy1 = round(0.11 * H), round(0.40 * H)
            sky = np.linspace(1.0, 0.85, wy1 - wy0, dtype=np.float32)[:, None, None] * np.array((235, 215, 185), np.float32)
            img[wy0:wy1, wx0:wx1] = sky
            img[round(0.30 * H):wy1, wx0:wx1] = (120, 150, 120)  # trees outside
            cv2.rectangle(img, (wx0, wy0), (wx1, wy1), (235, 235, 235), max(2, W // 200))
            cv2.line(img, ((wx0 + wx1) // 2, wy0), ((wx0 + wx1) // 2, wy1), (235, 235, 235), max(2, W // 300))
        # whiteboard with some writing
        bx0, bx1, by0, by1 = round(0.27 * W), round(0.55 * W), round(0.12 * H), round(0.36 * H)
        img[by0:by1, bx0:bx1] = (240, 242, 242)
        cv2.rectangle(img, (bx0, by0), (bx1, by1), (150, 150, 150), max(2, W // 300))
        for k in range(5):
            yy = by0 + round((0.18 + 0.15 * k) * (by1 - by0))
            xx1 = bx0 + round((0.25 + 0.6 * rng.random()) * (bx1 - bx0))
            cv2.line(img, (bx0 + round(0.06 * (bx1 - bx0)), yy), (xx1, yy), (150, 90, 60), max(1, H // 300), cv2.LINE_AA)
        # clock
        cv2.circle(img, (round(0.585 * W), round(0.14 * H)), round(0.025 * H), (245, 245, 245), -1, cv2.LINE_AA)
        cv2.circle(img, (round(0.585 * W), round(0.14 * H)), round(0.025 * H), (40, 40, 40), 2, cv2.LINE_AA)
        # the door: dark opening (a dim corridor behind), frame, open leaf against the wall
        (dx0, dy0), (dx1, _), _, (_, dy1) = self.door
        corridor = np.linspace(0.55, 0.35, dy1 - dy0, dtype=np.float32)[:, None, None] * np.array((120, 125, 130), np.float32)
        img[dy0:dy1, dx0:dx1] = corridor
        leaf = np.array([(dx0, dy0), (round(dx0 - 0.05 * W), round(dy0 - 0.03 * H)),
                         (round(dx0 - 0.05 * W), round(dy1 + 0.04 * H)), (dx0, dy1)], np.int32)
        cv2.fillPoly(img, [leaf], (45, 72, 110), cv2.LINE_AA)
        cv2.rectangle(img, (dx0, dy0), (dx1, dy1), (40, 60, 90), max(3, W // 160))
        # a door mat in the entry zone
        mat = np.array([(round(0.07 * W), round(0.515 * H)), (round(0.205 * W), round(0.515 * H)),
                        (round(0.215 * W), round(0.585 * H)), (round(0.06 * W), round(0.585 * H))], np.int32)
        cv2.fillPoly(img, [mat], (70, 75, 80), cv2.LINE_AA)
        img *= texture((H, W), rng, 60, 0.025)[..., None]
        img *= texture((H, W), rng, 2.5, 0.025)[..., None]
        img *= vignette((H, W), 0.3)[..., None]
        img = cv2.GaussianBlur(img, (0, 0), 0.7)
        return np.clip(img, 0, 255).astype(np.uint8)
