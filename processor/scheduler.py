"""Who gets the cores next: each camera's minimum first, extras only from what is left.

A campus runs its machines near capacity, and every model call of every camera competes for the same
cores. Attendance stands on room tracking (a tracker that sees the room too seldom splits tracks and
misses entries), and on the door seeing each face often enough to recognise it. So model calls go
through one :class:`InferenceGate` with ``[scheduling] inference_slots`` calls at a time (2: on 2 CPU cores,
one call at a time on every core left a quarter to half a core idle in a rush of door faces, and a
detection beside an embedding uses it; README, Benchmarks), and a waiting call is served by priority:

``OWED`` (0)
    frames a camera is owed: a room camera below its minimum tracking rate (``min_tracking_fps``,
    default ``[scheduling] room_min_fps``); a door camera below the rate recognition needs
    (``door_active_fps`` while a face not decided yet is in view, ``door_idle_fps`` otherwise, so that
    someone arriving is still noticed), or a door whose last analysed frame is older than that rate's
    spacing (a door is owed its frames evenly, not only on average over the window).
``RECOGNISING`` (1)
    frames of a door with a face whose track is not decided yet, beyond what it is owed: each of them
    may be the one that completes the decision, and the recognition event (and the room's identity for
    that person, which waits on it) is late by as long as they wait, so they go ahead of room extras.
``EXTRA`` (2)
    everything beyond: room frames above the minimum. Room-camera faces and overlay events are extras
    too: skipped for a camera while it is behind.
``SPARE`` (3)
    frames of doors nobody is at, or whose faces are all decided already, beyond their idle rate: they
    can only show that still nobody new is there (the idle rate already notices an arrival), so they get
    what the room cameras and busy doors leave. Measured with `rollcall bench capacity` at two copies of
    the default scenario: idle doors took the cores' spare time FIFO with the room cameras' extras, and
    the rooms fell to 2.2 fps with p95 2.3 s.

A turn asked with ``first`` goes ahead of the others of its priority: the embeddings of a door's undecided
face tracks finish frames whose detection is already paid for, and a recognition waits on them (bench
capacity at four copies: the deciding frame waited 0.7 s at the gate for its embedding, FIFO behind room
frames and the next face batch).

Rates are frames analysed per wall-clock second over the last ``window_s``. A room camera that gets
less than its minimum even with everything else deferred is a planning fact, not a silent failure:
:meth:`Scheduler.check` sets ``rollcall_tracking_rate_fps`` / ``rollcall_tracking_shortfall_fps`` (the
health page shows them) and logs one line naming the camera and the shortfall when it starts (and one
when it ends).

The scheduler holds counters only; frames still flow sources -> batcher -> stages -> publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from processor import metrics

log = logging.getLogger("rollcall.scheduler")

OWED = 0
RECOGNISING = 1
EXTRA = 2
SPARE = 3
# Calls are not pre-empted: once an extra call has started, an owed camera waits for it to end. Serving
# cameras first until they are a quarter above their minimum keeps them at it on average.
PRIORITY_HEADROOM = 1.25

TRACKING_RATE = metrics.get_or_create(metrics.Gauge, "rollcall_tracking_rate_fps",
                                      "Frames a camera's analysis got per second over the last window",
                                      labelnames=["camera", "role"])
MIN_RATE = metrics.get_or_create(metrics.Gauge, "rollcall_tracking_min_fps",
                                 "The rate a camera is owed before any extra work (room: min_tracking_fps)",
                                 labelnames=["camera", "role"])
SHORTFALL = metrics.get_or_create(metrics.Gauge, "rollcall_tracking_shortfall_fps",
                                  "How far a room camera's tracking rate is below its minimum (0 when met)",
                                  labelnames=["camera"])
GATE_WAIT = metrics.get_or_create(metrics.Histogram, "rollcall_inference_wait_seconds",
                                  "Time a batch waited for the inference gate, by priority",
                                  labelnames=["priority"], buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
EXTRAS_SKIPPED = metrics.get_or_create(metrics.Counter, "rollcall_extras_skipped",
                                       "Extra work skipped for a camera that was behind its minimum",
                                       labelnames=["camera", "what"])


_PRIORITY_NAMES = {OWED: "owed", RECOGNISING: "recognising", EXTRA: "extra", SPARE: "spare"}


class InferenceGate:
    """``slots`` model calls at a time. A waiter's priority is a number or a function giving it, asked
    again each time a slot frees (a camera behind when it asked may have caught up since, and the
    other way round); the lowest number goes first, then those asked ``first``, FIFO within those.

    ``hold_extra`` (optional) says, given a waiter's ``cameras`` (owed cameras of their roles do not count),
    that owed work is about to ask (an owed camera has frames waiting but its stage is between batches): a
    free slot is then held back from that waiter, unless it is ``OWED`` itself, for up to ``max_hold_s``,
    or a stage that asks again right after its last call would never be first in line."""

    def __init__(self, slots: int = 1, *, hold_extra: Callable[[frozenset[str]], bool] | None = None,
                 max_hold_s: float = 0.25):
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self._free = slots
        # (order, priority, granted, first, cameras)
        self._waiters: list[tuple[int, Callable[[], int], asyncio.Future, bool, frozenset[str]]] = []
        self._order = itertools.count()
        self.hold_extra = hold_extra
        self.max_hold_s = max_hold_s
        self._holding_since: float | None = None
        self._recheck: asyncio.TimerHandle | None = None

    @contextlib.asynccontextmanager
    async def turn(self, priority: int | Callable[[], int], *, first: bool = False,
                   cameras: Iterable[str] = ()):
        """``cameras``: owed cameras of their roles do not hold this call back (``hold_extra`` is asked
        about them; none: any owed camera does)."""
        started = time.perf_counter()
        priority_of = priority if callable(priority) else (lambda: priority)
        await self._acquire(priority_of, first, frozenset(cameras))
        GATE_WAIT.labels(_PRIORITY_NAMES[priority_of()]).observe(time.perf_counter() - started)
        try:
            yield
        finally:
            self._free += 1
            self._dispatch()

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter[2].done())

    async def _acquire(self, priority_of: Callable[[], int], first: bool, cameras: frozenset[str]) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((next(self._order), priority_of, future, first, cameras))
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._free += 1  # granted in the same turn as the cancel: pass it on
                self._dispatch()
            raise

    def _dispatch(self) -> None:
        self._waiters = [w for w in self._waiters if not w[2].done()]  # cancelled while waiting
        while self._free > 0 and self._waiters:
            best = min(self._waiters, key=lambda w: (w[1](), not w[3], w[0]))
            if best[1]() != OWED and self._hold(best[4]):
                return
            self._waiters.remove(best)
            self._free -= 1
            best[2].set_result(None)
        self._holding_since = None

    def _hold(self, cameras: frozenset[str]) -> bool:
        """Keep the free slot for owed work of another stage that is about to ask; look again shortly."""
        if self.hold_extra is None or not self.hold_extra(cameras):
            self._holding_since = None
            return False
        now = time.monotonic()
        if self._holding_since is None:
            self._holding_since = now
        elif now - self._holding_since >= self.max_hold_s:
            return False
        loop = asyncio.get_running_loop()
        if self._recheck is None or self._recheck.when() <= loop.time():
            self._recheck = loop.call_later(0.01, self._dispatch)
        return True


@dataclass
class _CameraRate:
    role: str
    minimum: float  # room: the minimum tracking rate; door: the rate recognition needs while active
    idle: float = 0.0  # door: the rate owed while no face is in view (or all in view are decided)
    active: bool = False  # door: a face whose track is not decided yet is in view
    since: float = field(default_factory=time.monotonic)
    times: deque = field(default_factory=deque)  # monotonic times of analysed frames
    short: bool = False  # in a reported shortfall
    met_since: float | None = None  # in a shortfall: since when the minimum has been met again
    waiting: Callable[[], int] | None = None  # frames waiting in its buffer
    idle_cap: float | None = None  # door: the most an idle door delivers (keyframe rate, keyframe-only decoding)

    def owed_rate(self) -> float:
        if self.role == "room" or self.active:
            return self.minimum
        return self.idle if self.idle_cap is None else min(self.idle, self.idle_cap)


class Scheduler:
    """Per-camera rate accounting and the priority of each batch; one per processor, on its event loop."""

    def __init__(self, *, window_s: float = 4.0, gate: InferenceGate | None = None, clock=time.monotonic):
        self.window_s = window_s
        self.gate = gate or InferenceGate()
        if self.gate.hold_extra is None:
            self.gate.hold_extra = self.owed_waiting
        self._clock = clock
        self._cameras: dict[str, _CameraRate] = {}

    def register(self, camera_id: str, role: str, minimum: float, idle: float = 0.0,
                 waiting: Callable[[], int] | None = None) -> None:
        """``waiting``: how many of the camera's frames wait in its buffer (lets owed work keep its place)."""
        current = self._cameras.get(camera_id)
        if current is None or (current.role, current.minimum, current.idle) != (role, minimum, idle):
            self._cameras[camera_id] = current = _CameraRate(role, minimum, idle, since=self._clock())
            MIN_RATE.labels(camera_id, role).set(minimum)
        current.waiting = waiting

    @property
    def cameras(self) -> set[str]:
        return set(self._cameras)

    def forget(self, camera_id: str) -> None:
        self._cameras.pop(camera_id, None)

    def analysed(self, camera_id: str, frames: int = 1) -> None:
        camera = self._cameras.get(camera_id)
        if camera is not None:
            now = self._clock()
            camera.times.extend([now] * frames)
            self._trim(camera, now)

    def set_active(self, camera_id: str, active: bool) -> None:
        """A door: whether a face whose track is not decided yet is in view (a decided one needs no more
        than the idle rate: frames enough to notice the next arrival)."""
        camera = self._cameras.get(camera_id)
        if camera is not None:
            camera.active = active

    def cap_idle(self, camera_id: str, fps: float | None) -> None:
        """An idle door decoding keyframes only delivers at most ``fps``: it is owed no more (None: no cap)."""
        camera = self._cameras.get(camera_id)
        if camera is not None:
            camera.idle_cap = fps

    def rate(self, camera_id: str) -> float | None:
        camera = self._cameras.get(camera_id)
        if camera is None:
            return None
        now = self._clock()
        self._trim(camera, now)
        # a camera younger than the window is measured over its age (at least a second)
        span = min(self.window_s, max(1.0, now - camera.since))
        return len(camera.times) / span

    def behind(self, camera_id: str, headroom: float = 1.0) -> bool:
        """The camera got less than ``headroom`` times what it is owed over the last window; or it is a door
        whose last analysed frame is older than the spacing of what it is owed (see :meth:`_door_gap`)."""
        camera = self._cameras.get(camera_id)
        if camera is None:
            return False
        return self.rate(camera_id) < camera.owed_rate() * headroom or self._door_gap(camera)

    def _door_gap(self, camera: _CameraRate) -> bool:
        """A door is owed its frames evenly, not on average: someone arriving is noticed only on a frame
        analysed while their face is in view. Measured with `rollcall bench capacity` at four copies: an
        idle door that had taken 10 fps of spare time got nothing for 1.4 s (its 4 s rate stayed above its
        idle 2 fps) while three other doors recognised, and a student's whole approach fell in that gap."""
        owed = camera.owed_rate()
        if camera.role != "door" or owed <= 0:
            return False
        return self._clock() - self._last_analysed(camera) > 1.0 / owed

    @staticmethod
    def _last_analysed(camera: _CameraRate) -> float:
        """When the camera's last frame was analysed (its registration, before any)."""
        return camera.times[-1] if camera.times else camera.since

    def rooms_starved(self) -> bool:
        """A room camera with frames waiting that is behind its minimum, or whose last analysed frame is more
        than two minimum spacings old (a room that ran well above its minimum keeps a good average for seconds
        while it gets nothing; measured with `rollcall bench capacity` at five copies and one core busy: while
        the five doors recognised at once the rooms got one frame every 2 s, a walking student's track was
        lost and split, and two copies lost attendance). Door work that only refines an answer is skipped
        then (:meth:`~processor.stages.face_tracks.FaceTracker.wants_embedding`)."""
        now = self._clock()
        for camera_id, camera in self._cameras.items():
            if camera.role != "room" or camera.waiting is None or camera.waiting() <= 0:
                continue
            if self.behind(camera_id) or now - self._last_analysed(camera) > 2.0 / camera.minimum:
                return True
        return False

    def owed_waiting(self, besides: Iterable[str] = ()) -> bool:
        """A camera behind its minimum has frames waiting: its stage is about to ask for the gate. Only
        cameras of another role than those ``besides`` count (a role's cameras share one stage): the person
        stage waiting at the gate with rooms that are not owed is the very stage that would bring an owed
        room's frames, and its batcher does not take owed rooms first, so holding it back (up to the gate's
        ``max_hold_s``) only delays them (:attr:`BatchStage.held_for_own_role`)."""
        own_roles = {self._cameras[c].role for c in besides if c in self._cameras}
        return any(camera.role not in own_roles and camera.waiting is not None and camera.waiting() > 0
                   and self.behind(camera_id, PRIORITY_HEADROOM)
                   for camera_id, camera in self._cameras.items())

    def priority(self, camera_ids: Iterable[str]) -> int:
        """OWED if any camera of the batch is behind; RECOGNISING if any is a door with an undecided face;
        SPARE if all are doors with no undecided face; else EXTRA."""
        cameras = set(camera_ids)
        if any(self.behind(c, PRIORITY_HEADROOM) for c in cameras):
            return OWED
        if any(self._recognising_door(c) for c in cameras):
            return RECOGNISING
        return SPARE if cameras and all(self._idle_door(c) for c in cameras) else EXTRA

    def best_priority(self, camera_ids: Iterable[str]) -> int | None:
        """The best (lowest) priority any one of these cameras has on its own; None for no cameras."""
        return min((self.priority([camera_id]) for camera_id in camera_ids), default=None)

    def _recognising_door(self, camera_id: str) -> bool:
        camera = self._cameras.get(camera_id)
        return camera is not None and camera.role == "door" and camera.active

    def _idle_door(self, camera_id: str) -> bool:
        camera = self._cameras.get(camera_id)
        return camera is not None and camera.role == "door" and not camera.active

    def extras_allowed(self, camera_id: str, what: str) -> bool:
        """Room faces, overlays: only for a camera that is not behind its minimum."""
        if self.behind(camera_id):
            EXTRAS_SKIPPED.labels(camera_id, what).inc()
            return False
        return True

    def check(self, shed: Mapping[str, int] | None = None) -> list[str]:
        """Update the gauges; log (and return) one line per room camera that starts or ends a shortfall.

        ``shed``: frames each camera's buffer dropped since the last check. A room camera is short only
        when frames were there to analyse and were shed (a camera that is down is the ingest's to report).
        """
        lines = []
        now = self._clock()
        for camera_id, camera in self._cameras.items():
            rate = self.rate(camera_id)
            TRACKING_RATE.labels(camera_id, camera.role).set(rate)
            if camera.role != "room" or now - camera.since < self.window_s:
                continue  # doors are owed only while someone is there; a new camera has no rate yet
            line = self._shortfall_change(camera_id, camera, rate, now,
                                          starved=shed is None or shed.get(camera_id, 0) > 0)
            SHORTFALL.labels(camera_id).set(max(0.0, camera.minimum - rate) if camera.short else 0.0)
            if line:
                lines.append(line)
        return lines

    def _shortfall_change(self, camera_id: str, camera: _CameraRate, rate: float, now: float, *, starved: bool) -> str | None:
        """Start a shortfall when the rate is below the minimum while frames are shed; end it only after
        a whole window at or above the minimum (a rate wavering around the minimum is one shortfall, not
        a line every second)."""
        if not camera.short:
            if rate < camera.minimum and starved:
                camera.short, camera.met_since = True, None
                line = (f"camera {camera_id}: tracking at {rate:.1f} fps, below its minimum {camera.minimum:.1f} fps "
                        f"(short by {camera.minimum - rate:.1f} fps): this machine cannot carry its cameras; "
                        "move cameras to another processor or lower analysis rates")
                log.warning(line)
                return line
            return None
        if rate < camera.minimum:
            camera.met_since = None
            return None
        camera.met_since = camera.met_since if camera.met_since is not None else now
        if now - camera.met_since < self.window_s:
            return None
        camera.short, camera.met_since = False, None
        line = f"camera {camera_id}: tracking at {rate:.1f} fps again, its minimum {camera.minimum:.1f} fps is met"
        log.info(line)
        return line

    def _trim(self, camera: _CameraRate, now: float) -> None:
        while camera.times and now - camera.times[0] > self.window_s:
            camera.times.popleft()
