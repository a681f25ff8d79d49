"""The door camera: a corridor seen from the classroom door, faces walking up to the camera.

Each arrival's head and shoulders (cut from their real door photo) comes out of the doorway at the
far end of the corridor and approaches the camera over ``door_passage_s``: the face grows
exponentially from ~40 px to ~200 px wide (at 720 px frame height), drifting out to its lane's side
(two lanes, so people at the door at the same time never overlap), with head sway, a walking bob,
motion blur and the corridor lighting changing brightness and contrast. At ``t_pass`` (largest)
the person passes the door: over the next ``DOOR_EXIT_S`` the face keeps moving out and fades. Someone
who turns back turns round at ``t_pass`` (the back of their head from then on) and walks back to the
far end over ``TURN_BACK_S``.

The camera sees the whole person: under the head (cut from the photo, neck included) it draws their
clothing, the same colours the room camera's figure wears (``clothing.py``). Geometry, from the face
box (x, y, w, h) and its centre cx = x + w/2, unrotated (the head sways +-3 degrees, the body does not):
shoulders at y + 1.25 h (rounded, 2.5 w wide), torso [cx - 1.15 w, cx + 1.15 w] x [y + 1.3 h, y + 4.3 h]
in the top colour, narrowing to +-1.0 w at the waist, legs [cx - 0.85 w, cx + 0.85 w] x
[y + 4.3 h, y + 8.0 h] in the bottom colour (cut by the frame's bottom edge when near). ``TORSO_SAMPLE``
is a box well inside the torso for appearance descriptors; the ground truth gives it per frame.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from infra.scenario.clothing import Clothing
from infra.scenario.draw import SensorNoise, motion_kernel, texture, vignette
from infra.scenario.faces import Sprite
from infra.scenario.spec import DOOR_EXIT_S, TURN_BACK_S, Arrival

FACE_START_PX = 40  # face width at the start of the approach, for a 720 px tall frame
FACE_PASS_PX = 200  # face width at t_pass, for a 720 px tall frame
Z_FAR = 5.5  # depth of the corridor's far wall (near plane = 1)
# (x0, x1, y0, y1) in face widths from cx / face heights from the face box's top: inside the torso
TORSO_SAMPLE = (-0.8, 0.8, 1.7, 3.9)


@dataclass
class FacePose:
    visible: float  # 0..1 opacity
    cx: float  # face centre in the frame
    cy: float
    width: float  # face width, px
    angle: float  # degrees
    gain: float  # brightness multiplier
    contrast: float
    blur: tuple[float, float]  # motion during the exposure, px
    back: bool = False  # turned round: the back of the head


class DoorScene:
    def __init__(self, width: int, height: int, seed: int):
        self.W, self.H = width, height
        rng = np.random.default_rng([seed, 1])
        self.vp = (0.5 * width, 0.40 * height)
        self.background = self._background(rng)
        self.noise = SensorNoise((height, width), rng)

    def proj(self, xn: float, yn: float, z: float) -> tuple[float, float]:
        """A point given on the near plane (frame coordinates), pushed to depth z."""
        return self.vp[0] + (xn - self.vp[0]) / z, self.vp[1] + (yn - self.vp[1]) / z

    def _quad(self, img, pts, colour) -> None:
        cv2.fillPoly(img, [np.round(np.array(pts)).astype(np.int32)], colour, lineType=cv2.LINE_AA)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        W, H = self.W, self.H
        img = np.zeros((H, W, 3), np.float32)
        P = self.proj
        far = [P(0, 0, Z_FAR), P(W, 0, Z_FAR), P(W, H, Z_FAR), P(0, H, Z_FAR)]
        self._quad(img, [(0, 0), (W, 0), far[1], far[0]], (222, 224, 220))  # ceiling
        self._quad(img, [(0, H), (W, H), far[2], far[3]], (92, 104, 118))  # floor (BGR)
        self._quad(img, [(0, 0), far[0], far[3], (0, H)], (168, 190, 206))  # left wall
        self._quad(img, [(W, 0), far[1], far[2], (W, H)], (160, 183, 200))  # right wall
        self._quad(img, far, (150, 170, 185))  # end wall
        # doorway at the end of the corridor, daylight behind it
        d = [P(0.44 * W, 0.05 * H, Z_FAR), P(0.56 * W, 0.05 * H, Z_FAR), P(0.56 * W, H, Z_FAR), P(0.44 * W, H, Z_FAR)]
        self._quad(img, d, (235, 238, 240))
        cv2.polylines(img, [np.round(np.array(d)).astype(np.int32)], True, (70, 80, 90), max(1, W // 400), cv2.LINE_AA)
        # floor tiles: lines to the vanishing point and across at depths
        for k in range(-6, 7):
            xn = W / 2 + k * W / 8
            cv2.line(img, tuple(map(round, P(xn, H, 1))), tuple(map(round, P(xn, H, Z_FAR))), (80, 90, 102), 1, cv2.LINE_AA)
        for z in np.geomspace(1.1, Z_FAR, 9):
            cv2.line(img, tuple(map(round, P(0, H, z))), tuple(map(round, P(W, H, z))), (80, 90, 102), 1, cv2.LINE_AA)
        # skirting boards
        for side in (0, W):
            cv2.line(img, tuple(map(round, P(side, H * 0.97, 1))), tuple(map(round, P(side, H * 0.97, Z_FAR))),
                     (70, 80, 90), max(1, H // 200), cv2.LINE_AA)
        # ceiling light panels
        for z in (1.3, 1.9, 2.8, 4.2):
            pts = [P(0.40 * W, 0, z), P(0.60 * W, 0, z), P(0.60 * W, 0, z + 0.25), P(0.40 * W, 0, z + 0.25)]
            self._quad(img, pts, (250, 252, 252))
        # doors and a notice board on the side walls
        for z0, side, colour in ((1.5, 0, (60, 85, 120)), (3.0, 0, (60, 85, 120)), (2.2, W, (62, 88, 125))):
            pts = [P(side, 0.22 * H, z0), P(side, 0.22 * H, z0 + 0.45), P(side, H, z0 + 0.45), P(side, H, z0)]
            self._quad(img, pts, colour)
        pts = [P(W, 0.30 * H, 1.2), P(W, 0.30 * H, 1.7), P(W, 0.58 * H, 1.7), P(W, 0.58 * H, 1.2)]
        self._quad(img, pts, (110, 140, 170))
        for k in range(4):  # notes pinned on it
            a, b = 1.25 + 0.1 * k, 1.31 + 0.1 * k
            pts = [P(W, 0.34 * H, a), P(W, 0.34 * H, b), P(W, 0.42 * H, b), P(W, 0.42 * H, a)]
            self._quad(img, pts, (225, 235, 240))
        # texture, vignetting, a little softness
        img *= texture((H, W), rng, 60, 0.025)[..., None]
        img *= texture((H, W), rng, 3, 0.02)[..., None]
        img *= vignette((H, W), 0.35)[..., None]
        img = cv2.GaussianBlur(img, (0, 0), 0.7)
        return np.clip(img, 0, 255).astype(np.uint8)

    # ---- people -------------------------------------------------------------------------------
    def pose(self, arrival: Arrival, t: float, passage_s: float, fps: float) -> FacePose | None:
        """Where the face is at time t (None: not in view)."""
        if t < arrival.arrive_s or t >= arrival.t_door_end:
            return None
        pose = self._pose_at(arrival, t, passage_s)
        prev = self._pose_at(arrival, t - 0.5 / fps, passage_s)  # exposure: half a frame
        pose.blur = (pose.cx - prev.cx, pose.cy - prev.cy)
        return pose

    def _pose_at(self, arrival: Arrival, t: float, passage_s: float) -> FacePose:
        W, H = self.W, self.H
        k = H / 720
        s0, s1 = FACE_START_PX * k, FACE_PASS_PX * k
        side = -1 if arrival.door_lane % 2 == 0 else 1
        phase = (zlib.crc32(arrival.id.encode()) % 1000) / 1000 * 2 * math.pi
        u = (t - arrival.arrive_s) / passage_s
        visible = 1.0
        back = False
        if u <= 1:
            width = s0 * (s1 / s0) ** max(0.0, u)
            visible = min(1.0, max(0.0, u) / 0.08 + 0.15)
        elif arrival.turns_back:  # turned round: walking back the way they came, fading at the far end
            v = min(1.0, (t - arrival.t_pass) / TURN_BACK_S)
            width = s1 * (s0 / s1) ** v
            visible = min(1.0, (1 - v) / 0.25)
            back = v > 0.12
            u = 1.0
        else:  # passing the door: a little closer and out to the side, fading
            v = (t - arrival.t_pass) / DOOR_EXIT_S
            width = s1 * (1 + 0.25 * v)
            visible = max(0.0, 1 - v)
        z = s1 / width  # 1 at t_pass
        xn = W / 2 + side * 0.22 * W
        if u > 1:
            xn += side * 0.25 * W * (u - 1) * passage_s / DOOR_EXIT_S
        cx, cy = self.proj(xn, 0.45 * H, z)
        cx += 0.08 * width * math.sin(2 * math.pi * 0.9 * t + phase)  # head sway
        cy -= 0.05 * width * abs(math.sin(2 * math.pi * 0.95 * t + 2 * phase))  # walking bob
        angle = 3.0 * math.sin(2 * math.pi * 0.7 * t + 3 * phase)
        uu = min(1.0, max(0.0, u))
        lights = 0.06 * math.sin(2 * math.pi * (1.6 * uu + phase))  # passing under ceiling panels
        gain = 0.72 + 0.33 * uu + lights
        contrast = 0.82 + 0.18 * uu
        return FacePose(visible, cx, cy, width, angle, gain, contrast, (0.0, 0.0), back)

    def draw(self, frame: np.ndarray, sprite: Sprite, pose: FacePose, clothing: Clothing) -> tuple[float, float, float, float]:
        """Composite the body in ``clothing`` and the head sprite at ``pose``; returns the face box (x, y, w, h)."""
        fx, fy, fw, fh = sprite.face
        s = pose.width / fw
        size = (max(2, round(sprite.image.shape[1] * s)), max(2, round(sprite.image.shape[0] * s)))
        img = cv2.resize(sprite.image, size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(sprite.alpha, size, interpolation=cv2.INTER_AREA)
        sx, sy = size[0] / sprite.image.shape[1], size[1] / sprite.image.shape[0]
        centre = ((fx + fw / 2) * sx, (fy + fh / 2) * sy)
        M = cv2.getRotationMatrix2D(centre, pose.angle, 1.0)
        M[:, 2] += (pose.cx - centre[0], pose.cy - centre[1])
        corners = np.array([[0, 0, 1], [size[0], 0, 1], [0, size[1], 1], [size[0], size[1], 1]], np.float64) @ M.T
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 6
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 6
        x0c, y0c, x1c, y1c = max(0, x0), max(0, y0), min(self.W, x1), min(self.H, y1)
        face = np.array([[fx * sx, fy * sy, 1], [(fx + fw) * sx, fy * sy, 1],
                         [fx * sx, (fy + fh) * sy, 1], [(fx + fw) * sx, (fy + fh) * sy, 1]]) @ M.T
        box = (float(face[:, 0].min()), float(face[:, 1].min()),
               float(face[:, 0].max() - face[:, 0].min()), float(face[:, 1].max() - face[:, 1].min()))
        if pose.visible <= 0:
            return box
        self._draw_body(frame, box, clothing, pose)
        if x1c <= x0c or y1c <= y0c:
            return box
        Mr = M.copy()
        Mr[:, 2] -= (x0c, y0c)
        roi_size = (x1c - x0c, y1c - y0c)
        warped = cv2.warpAffine(img, Mr, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        a = cv2.warpAffine(alpha, Mr, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        kernel = motion_kernel(*pose.blur)
        if kernel is not None:
            warped = cv2.filter2D(warped, -1, kernel)
            a = cv2.filter2D(a, -1, kernel)
        if pose.back:  # the back of the head: hair, no face
            hair = np.median(sprite.image[:max(1, round(sprite.face[1])), :].reshape(-1, 3), axis=0)
            warped = np.broadcast_to(np.minimum(hair, 90).astype(np.uint8), warped.shape)
        col = (warped.astype(np.float32) - 128) * pose.contrast + 128
        col *= pose.gain
        a = a[..., None] * pose.visible
        roi = frame[y0c:y1c, x0c:x1c]
        roi[:] = np.clip(roi * (1 - a) + col * a + 0.5, 0, 255).astype(np.uint8)
        return box

    def _draw_body(self, frame: np.ndarray, face: tuple[float, float, float, float], clothing: Clothing,
                   pose: FacePose) -> None:
        """Torso and legs under the face box, in the person's clothing (geometry: module docstring)."""
        x, y, w, h = face
        cx = x + w / 2
        x0, x1 = max(0, int(cx - 1.4 * w)), min(self.W, int(cx + 1.4 * w) + 1)
        y0, y1 = max(0, int(y + 1.0 * h)), min(self.H, int(y + 8.0 * h) + 1)
        if x1 <= x0 or y1 <= y0:
            return
        top = np.zeros((y1 - y0, x1 - x0), np.float32)
        legs = np.zeros_like(top)

        def pts(*xy: tuple[float, float]) -> np.ndarray:
            return np.round(np.array([(cx + a * w - x0, y + b * h - y0) for a, b in xy]) * 4).astype(np.int32)

        shift = 2  # 2 fractional bits: smooth edges at any size
        cv2.ellipse(top, (round((cx - x0) * 4), round((y + 1.75 * h - y0) * 4)), (round(1.25 * w * 4), round(0.5 * h * 4)),
                    0, 180, 360, 1.0, -1, cv2.LINE_AA, shift)
        cv2.fillPoly(top, [pts((-1.25, 1.75), (1.25, 1.75), (1.0, 4.3), (-1.0, 4.3))], 1.0, cv2.LINE_AA, shift)
        cv2.fillPoly(legs, [pts((-0.85, 4.25), (-0.05, 4.25), (-0.1, 8.0), (-0.75, 8.0))], 1.0, cv2.LINE_AA, shift)
        cv2.fillPoly(legs, [pts((0.05, 4.25), (0.85, 4.25), (0.75, 8.0), (0.1, 8.0))], 1.0, cv2.LINE_AA, shift)
        # cloth shading: round body (darker at the sides), a few folds
        xs = (np.arange(x0, x1, dtype=np.float32) - cx) / (1.3 * w)
        shade = (1.02 - 0.28 * np.clip(xs, -1, 1) ** 2)[None, :]
        ys = (np.arange(y0, y1, dtype=np.float32) - y) / h
        folds = (1 + 0.05 * np.sin(ys * 5.1 + 1.3)[:, None] * np.sin(xs * 7.3)[None, :])
        col = (top[..., None] * np.array(clothing.top, np.float32) + legs[..., None] * np.array(clothing.bottom, np.float32))
        col *= (shade * folds)[..., None]
        col = (col - 128) * pose.contrast + 128
        col *= pose.gain
        a = np.clip(top + legs, 0, 1)
        kernel = motion_kernel(*pose.blur)
        if kernel is not None:
            col = cv2.filter2D(col, -1, kernel)
            a = cv2.filter2D(a, -1, kernel)
        a = a[..., None] * pose.visible
        roi = frame[y0:y1, x0:x1]
        roi[:] = np.clip(roi * (1 - a) + col * a + 0.5, 0, 255).astype(np.uint8)
