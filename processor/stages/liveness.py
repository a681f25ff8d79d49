"""Liveness of a door face track: a person, or a picture of one (a printed photo, a phone screen)?

A single frame says little; a door camera sees each passage for seconds, as the face grows from far to
near. :func:`measure` takes one face's cues in one frame (one 64x64 window, a small spectrum, a
Laplacian: 1-4 ms, so the recognition stage runs it in a worker thread, not on the event loop);
:class:`LivenessTrack` sums them over a track's frames (:meth:`LivenessTrack.add_cues`, cheap) and
:meth:`LivenessTrack.decide` turns them into a :class:`Liveness`: a score (1: live, 0: a picture) and
``live`` / ``suspect``.

Cues (measured on the scenario renderer's genuine arrivals and staged attacks, see the README's
"Liveness" section for the figures):

``frame`` (weighted: the decision)
    Straight edges that move with the face: the border of a print, the bezel of a phone, the edge of
    the picture. Each frame's window round the face (face-normalised: 3.2 face widths by 3 face heights)
    gives a signed edge profile: per column, the mean horizontal gradient over the face's rows (vertical
    lines beside the face). The track's profile is each column's median over its frames: an edge fixed to
    the face is there in most frames and stays, the corridor's own lines (door frames, tiles, a notice
    board) move relative to the face as it approaches and drop out (a median, not a mean: a strong line
    that crosses the window in a few frames moved a mean over the few frames a busy door analyses). The
    cue is the strongest pair of a vertical line right of the head (0.8 to 1.25 face widths out, beyond
    the head's own outline) and one at the mirrored place on the left (a picture has both sides; one
    background line or a photo's cut edge does not), in units of the window's mean gradient. (Horizontal
    lines above the face were tried: the hair line moves with a real head as well.)
    Another face beside this one (two people walking in side by side, as at a class-start rush) moves
    with it too, and its head's outline falls where a held picture's edge would: the
    columns another face covers in a frame are left out of that frame's profile, and the track's profile
    takes each column over the frames that saw it (a column seen in fewer than half of them counts as no
    edge). Replayed over every 2nd, 3rd and 4th face of each passage (a busy door), the median read
    genuine passages of 5 or more frames at most 0.28 and the pictures at least 0.45 (the mean: genuine up
    to 0.90, pictures from 0.66); a genuine passage seen in 3 frames can still read 0.56 (fail closed: a
    suspect goes to the review queue, where an operator can accept the student).
    Catches: any held picture whose edge is in view beside the face (print border, phone bezel, a tablet).
    Misses: a picture bigger than the window (a poster-sized print held close), a mask (no edge), edges cut
    away cleanly along the hair line, edges in view in fewer than half of the frames (the median), a
    picture held right beside its holder's own face (that side's edge is left out with the holder's head;
    the holder is on camera, and recognised, meanwhile); a genuine face
    seen in few frames can score high (a busy door: see above), and a genuine face framed by something
    straight that moves with it (a hood with straight edges) could score high.
``screen`` (weighted: it decides too)
    Periodic fine structure in the face: the strongest isolated peak of the face's high-passed spectrum
    against the spectrum's median (moiré of a pixel grid beating with the camera's pixels). Catches a
    screen filmed sharply enough for its grid to alias; misses prints, and screens whose grid the
    approach blur and the video codec smooth away (most frames at a door).
``sharpness`` (measured, reported; not weighted)
    Variance of the Laplacian of the aligned crop, the cue simple systems use (a print or a screen is
    softer than a face). Overlaps between genuine and picture faces: it mostly measures distance and blur.
``rigidity`` (measured, reported; not weighted)
    How far the 5 landmarks move away from one similarity transform between frames (RMS, in eye
    distances): a head that turns moves its nose against its eyes; a flat picture moves as one plane.
    On real footage this is evidence of life, never of a spoof (a person may walk straight in without
    turning); the scenario renderer draws genuine heads as flat sprites too, so it cannot be calibrated
    there and carries no weight until real footage or a trained model (the ``liveness`` model-pack
    entry) can.
Body under the face: the door cameras run no person detection (room cameras do), so it is not a cue
here; it would miss a picture held in front of the holder's own face anyway.

Pure functions (window, profiles, peaks, rigidity) are unit-tested; :class:`LivenessTrack` only sums them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

WINDOW = 64  # side of the face-normalised window, px
# the window round a face box (x, y, w, h): from cx - SPAN_X * w to cx + SPAN_X * w, y - ABOVE * h to y + BELOW * h
SPAN_X, ABOVE, BELOW = 1.6, 1.0, 2.0
FACE_HALF_WIDTH = 0.8  # side lines are searched outside the head itself (its outline is at ~0.65 face widths)
SIDE_REACH = 1.25  # ... out to this many face widths (a picture held over a face is about a head wide)
PAIR_SLACK = 4  # columns (0.2 face widths): how far off centre a held picture may be
NEIGHBOUR_MARGIN = 0.15  # another face's head outline reaches this many of its widths beyond its box
FRAME_LO, FRAME_HI = 0.32, 0.42  # the frame cue's evidence ramp (window mean gradients), from the measurements
SCREEN_LO, SCREEN_HI = 80.0, 140.0  # the screen cue's evidence ramp (peak over median), from the measurements
SUSPECT_BELOW = 0.5  # a liveness score below this is "suspect"
MAX_PROFILES = 256  # per track (a 256 B profile a frame): beyond it every other one is dropped


@dataclass(frozen=True)
class LivenessSettings:
    """The ``[liveness]`` configuration as the door's face tracks use it."""

    suspect_below: float = SUSPECT_BELOW
    min_frames: int = 20  # an early (known) decision needs this many frames of cues, live
    # ... or this many, with no picture edge at all in them (score 1.0). A passage whose face is found in few
    # frames (a small or hard face, a door short of CPU) never reaches min_frames and was decided only when its
    # track ended, 1.0-1.4 s after its last face (bench capacity's door limit is 1 s). The pictures measured
    # read a frame cue of 0.45 or more over every replayed subset of 5+ of their frames (every 2nd, 3rd, 4th),
    # 0.71 and 1.04 at their 12th; score 1.0 needs the cue at most FRAME_LO (0.32); genuine passages read at
    # most 0.30 at their 12th
    clear_frames: int = 12

    def new_track(self) -> "LivenessTrack":
        return LivenessTrack(suspect_below=self.suspect_below)


@dataclass(frozen=True)
class Liveness:
    decision: str  # "live" | "suspect"
    score: float  # 0 (a picture) .. 1 (live)
    frames: int  # frames whose cues went into it
    cues: dict[str, float]  # every cue's value, for the log, the review queue and calibration

    @property
    def suspect(self) -> bool:
        return self.decision == "suspect"

    def to_event(self) -> dict:
        return {"decision": self.decision, "score": round(self.score, 3), "frames": self.frames}


# ------------------------------------------------------------------------------------- pure cues
def face_window(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    """The face-normalised window round ``box`` (x1, y1, x2, y2) in a BGR frame, WINDOW x WINDOW gray
    float32 (area-averaged: no aliasing); None when the box is degenerate or out of the frame. Parts outside
    the frame are the nearest edge pixels."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if w < 4 or h < 4:
        return None
    cx = (x1 + x2) / 2
    left, top = int(np.floor(cx - SPAN_X * w)), int(np.floor(y1 - ABOVE * h))
    right, bottom = int(np.ceil(cx + SPAN_X * w)), int(np.ceil(y1 + BELOW * h))
    height, width = image.shape[:2]
    if left >= width or top >= height or right <= 0 or bottom <= 0:
        return None
    region = image[max(0, top):min(height, bottom), max(0, left):min(width, right)]
    pads = (max(0, -top), max(0, bottom - height), max(0, -left), max(0, right - width))
    if any(pads):
        region = cv2.copyMakeBorder(region, *pads, cv2.BORDER_REPLICATE)
    small = cv2.resize(region, (WINDOW, WINDOW), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)


def edge_profile(window: np.ndarray) -> np.ndarray:
    """The column profile of a window: per column the mean horizontal gradient over the face's rows, in
    units of the window's mean gradient magnitude. Signed: an edge that stays put across frames adds up."""
    gx = cv2.Sobel(window, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(window, cv2.CV_32F, 0, 1, ksize=3)
    norm = float(np.mean(np.hypot(gx, gy))) + 1e-3
    face_rows = slice(int(ABOVE / (ABOVE + BELOW) * WINDOW), int((ABOVE + 1.2) / (ABOVE + BELOW) * WINDOW))
    return gx[face_rows].mean(axis=0) / norm


def neighbour_columns(box: tuple[float, float, float, float],
                      others: Sequence[tuple[float, float, float, float]]) -> np.ndarray | None:
    """The columns of ``box``'s window (:func:`face_window`) that another face in the same frame covers
    (its box widened by NEIGHBOUR_MARGIN a side), counting only faces level with this one (their rows
    overlap its rows); None when no other face is in the window."""
    x1, y1, x2, y2 = box
    w = x2 - x1
    if w < 4:
        return None
    left = (x1 + x2) / 2 - SPAN_X * w
    scale = WINDOW / (2 * SPAN_X * w)  # window columns per image pixel
    covered = np.zeros(WINDOW, bool)
    for ox1, oy1, ox2, oy2 in others:
        if oy2 <= y1 or oy1 >= y2:
            continue
        margin = NEIGHBOUR_MARGIN * (ox2 - ox1)
        first = int(np.floor((ox1 - margin - left) * scale))
        last = int(np.ceil((ox2 + margin - left) * scale))
        if last >= 0 and first < WINDOW:
            covered[max(0, first):min(WINDOW, last + 1)] = True
    return covered if covered.any() else None


def frame_cue(column_profile: np.ndarray) -> float:
    """A picture's two side edges, from a column profile averaged over frames: for each column right of
    the face (between FACE_HALF_WIDTH and SIDE_REACH face widths out), the weaker of its edge and the
    strongest edge at the mirrored column on the left (give or take PAIR_SLACK: a picture is rarely held
    centred on the face); the strongest such pair. One straight line (a photo's cut edge, a door frame
    that happens to move along) does not make a pair."""
    smooth = np.abs(cv2.GaussianBlur(column_profile.reshape(1, -1).astype(np.float32), (0, 0), 0.8).ravel())
    centre = WINDOW // 2
    inner, outer = int(centre * FACE_HALF_WIDTH / SPAN_X), int(centre * SIDE_REACH / SPAN_X)
    best = 0.0
    for k in range(inner, outer + 1):
        mirrored = smooth[max(1, centre - k - PAIR_SLACK):centre - k + PAIR_SLACK + 1]
        best = max(best, min(float(smooth[min(WINDOW - 2, centre + k)]), float(mirrored.max())))
    return best


def spectral_peak(gray_face: np.ndarray) -> float:
    """Strongest isolated peak of the high-passed face's spectrum over its median (moiré: a periodic
    pattern), on the face box's inner part; 0 for faces too small to tell."""
    if min(gray_face.shape) < 24:
        return 0.0
    face = gray_face.astype(np.float32)
    high = face - cv2.GaussianBlur(face, (0, 0), 2.0)
    high *= np.outer(np.hanning(face.shape[0]), np.hanning(face.shape[1])).astype(np.float32)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(high)))
    h, w = spectrum.shape
    yy, xx = np.mgrid[0:h, 0:w]
    radius = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)
    band = spectrum[(radius > 0.12) & (radius < 0.5)]
    return float(band.max() / (np.median(band) + 1e-6)) if band.size else 0.0


def rigidity_residual(previous: np.ndarray, current: np.ndarray) -> float | None:
    """RMS distance (in eye distances) of the 5 landmarks from the best similarity transform taking the
    previous frame's onto these; None when it cannot be fitted."""
    prev, cur = np.asarray(previous, np.float32).reshape(5, 2), np.asarray(current, np.float32).reshape(5, 2)
    eyes = float(np.hypot(*(cur[1] - cur[0])))
    if eyes < 4:
        return None
    matrix, _ = cv2.estimateAffinePartial2D(prev, cur, method=cv2.LMEDS)
    if matrix is None:
        return None
    moved = prev @ matrix[:, :2].T + matrix[:, 2]
    return float(np.sqrt(np.mean(np.sum((moved - cur) ** 2, axis=1))) / eyes)


def median_profile(profiles: Sequence[np.ndarray]) -> np.ndarray:
    """Per column, the median over frames of the column's edge (frames where another face covered it left
    out); 0 for a column seen in under half of the frames (another face stood there: it says nothing).
    A median, not a mean: one frame's strong but passing line (a door frame crossing the window behind the
    face, a sleeve) moves a mean over a few frames and a median not, while a picture's edge is there in
    most frames. README "Liveness" has the figures over whole and thinned passages. (Sorted, not
    ``np.nanmedian``: the same values in a quarter of the time, and it runs on every analysed frame of a
    track waiting for an early decision.)"""
    stacked = np.sort(np.vstack(profiles), axis=0)  # per column: the seen values first, the NaNs last
    seen = np.count_nonzero(~np.isnan(stacked), axis=0)
    lower = np.take_along_axis(stacked, (np.maximum(seen - 1, 0) // 2)[None], axis=0)[0]
    upper = np.take_along_axis(stacked, (seen // 2)[None], axis=0)[0]
    enough = (seen * 2 >= len(profiles)) & (seen > 0)
    return np.where(enough, (lower + upper) / 2, 0.0).astype(np.float32)


def ramp(value: float, lo: float, hi: float) -> float:
    """0 at or below ``lo``, 1 at or above ``hi``, linear between."""
    return float(np.clip((value - lo) / max(hi - lo, 1e-9), 0.0, 1.0))


def liveness_score(cues: dict[str, float]) -> float:
    """1 - the strongest spoof evidence of the weighted cues (``frame`` and ``screen``: module docstring)."""
    return 1.0 - max(ramp(cues.get("frame", 0.0), FRAME_LO, FRAME_HI),
                     ramp(cues.get("screen", 0.0), SCREEN_LO, SCREEN_HI))


# ------------------------------------------------------------------------------- one face, one frame
@dataclass(frozen=True)
class FaceCues:
    """One face's measurements in one frame: the costly part of the cues (1-4 ms a face), which needs
    no track state, so the recognition stage measures it in a worker thread (processor/pipeline.py) and
    the track only sums it (:meth:`LivenessTrack.add_cues`)."""

    profile: np.ndarray | None  # the window's edge profile, NaN where another face covers it; None: no window
    peak: float | None = None  # spectral_peak of the face's inner part
    sharpness: float | None = None  # variance of the Laplacian of the aligned crop


def measure(image: np.ndarray, box: tuple[float, float, float, float], crop: np.ndarray | None = None,
            others: Sequence[tuple[float, float, float, float]] = ()) -> FaceCues:
    """The cues of a face ``box`` (x1, y1, x2, y2) in the BGR ``image`` (and its aligned ``crop``, if any);
    ``others``: the boxes of the frame's other faces (their columns are NaN in the profile: module docstring)."""
    window = face_window(image, box)
    if window is None:
        return FaceCues(None)
    profile = edge_profile(window)
    covered = neighbour_columns(box, others)
    if covered is not None:
        profile[covered] = np.nan
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    inner_w, inner_h = (x2 - x1) // 5, (y2 - y1) // 5
    face = image[max(0, y1 + inner_h):max(0, y2 - inner_h), max(0, x1 + inner_w):max(0, x2 - inner_w)]
    peak = spectral_peak(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)) if face.size else None
    sharpness = (float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())
                 if crop is not None else None)
    return FaceCues(profile, peak, sharpness)


# ------------------------------------------------------------------------------------ accumulator
@dataclass
class LivenessTrack:
    """The cues of one door face track, summed frame by frame."""

    suspect_below: float = SUSPECT_BELOW
    frames: int = 0
    # each frame's edge profile (NaN where another face covered it), at most MAX_PROFILES of them: a face that
    # stays at the door for minutes keeps every _stride-th (doubled when full), the whole stay evenly covered
    _profiles: list[np.ndarray] = field(default_factory=list)
    _stride: int = 1
    _peaks: list[float] = field(default_factory=list)
    _sharpness: list[float] = field(default_factory=list)
    _residuals: list[float] = field(default_factory=list)
    _last_landmarks: np.ndarray | None = None

    def add(self, image: np.ndarray, box: tuple[float, float, float, float], landmarks: np.ndarray | None = None,
            crop: np.ndarray | None = None, others: Sequence[tuple[float, float, float, float]] = ()) -> None:
        """One frame's face: ``box`` (x1, y1, x2, y2) in the BGR ``image``; its landmarks and aligned
        crop when it has them; the frame's other faces. Measured here, on the caller's thread
        (:func:`measure` ahead, elsewhere, and :meth:`add_cues` is the same)."""
        self.add_cues(measure(image, box, crop, others), landmarks)

    def add_cues(self, cues: FaceCues, landmarks: np.ndarray | None = None) -> None:
        """One frame's face, measured already (:func:`measure`); its landmarks when it has them (the
        rigidity cue compares them with the track's previous frame: cheap, and track state)."""
        if cues.profile is None:
            return
        if self.frames % self._stride == 0:  # frames 0, s, 2s, ...: evenly over the whole stay
            self._profiles.append(np.asarray(cues.profile, np.float32))
            if len(self._profiles) > MAX_PROFILES:
                self._profiles, self._stride = self._profiles[::2], self._stride * 2
        self.frames += 1
        if cues.peak is not None:
            self._peaks.append(cues.peak)
        if cues.sharpness is not None:
            self._sharpness.append(cues.sharpness)
        if landmarks is not None:
            if self._last_landmarks is not None:
                residual = rigidity_residual(self._last_landmarks, landmarks)
                if residual is not None:
                    self._residuals.append(residual)
            self._last_landmarks = np.asarray(landmarks, np.float32)

    def cues(self) -> dict[str, float]:
        if not self.frames:
            return {}
        out = {"frame": frame_cue(median_profile(self._profiles))}
        for name, values in (("screen", self._peaks), ("sharpness", self._sharpness), ("rigidity", self._residuals)):
            if values:
                out[name] = float(np.median(values))
        return {k: round(v, 4) for k, v in out.items()}

    def decide(self) -> Liveness:
        cues = self.cues()
        score = liveness_score(cues) if cues else 1.0
        return Liveness("suspect" if score < self.suspect_below else "live", round(score, 4), self.frames, cues)
