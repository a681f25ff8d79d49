"""Keyframe-only decoding of an idle door camera, and waking it without waiting for a keyframe.

While nobody is at a door its camera decodes keyframes only: H.264 P-frames cannot be skipped without
breaking the pictures that reference them, but FFmpeg's ``skip_frame = "NONKEY"`` leaves them undecoded
altogether (a door camera is idle most of the day: most of its decoding goes). Two things wake it:

- the pipeline (someone's face in view: ``wanted`` goes False);
- motion seen in the compressed stream: a burst of P-frame bytes well over what the idle scene gives
  (``MotionFromSizes``; a person walking in makes the encoder spend several times the bytes of a still
  doorway, and reading a packet's size costs nothing). The camera then decodes every frame for
  ``wake_hold_s`` even if the pipeline still calls it idle, so the approach is seen before a face is.

While idle, each keyframe is drained out of the decoder as soon as it is decoded (then the decoder is
flushed: only keyframes follow). Without that a stream with B-frames (the decoder's reorder buffer) or a
frame-threaded decoder would hand the keyframe out only when later pictures push it: with nothing but
keyframes decoded, two GOPs later, so an idle door saw its doorway two seconds late.

Waking does not wait for the next keyframe (up to a GOP without any picture: a passage split in two, a
face first seen late): the packets since the last keyframe are kept, and on waking the decoder is flushed
and given them again from that keyframe, so the picture of now is decoded at once; the pictures are those a
full decode gives. Keyframe-only decoding is used only while keyframes come at most ``max_gap_s`` apart (a
long GOP would hide an arrival).

Every frame, replayed or not, is paired with the time its own packet arrived (``arrival_of``), not the
time it left the decoder: the decoder hands a frame out packets after its own (B-frame reordering; a
frame-threaded decoder adds thread count - 1 more), and that wait is the pipeline's. The camera turns the
arrivals into capture times (``processor.ingest.stream.CaptureClock``)."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any

MAX_HELD_PACKETS = 600  # a GOP longer than this is not kept (waking then waits for the next keyframe)
# packets whose frame has not come out yet (a skipped one's never does: the oldest go); a replay holds a GOP
MAX_PENDING_ARRIVALS = MAX_HELD_PACKETS + 64


class MotionFromSizes:
    """Motion from the sizes of a stream's non-keyframe packets: the bytes of the last ``window`` of them
    against the ``still_quantile`` of the same sum while nobody was at the door.

    "Nobody at the door" is the pipeline's word (no face in view), and someone still far down the corridor,
    walking in, has no face in view yet either: a camera started as a student walks in learnt from their
    approach. With the median of its first 20 windows, the door of `rollcall scenario run` (its first
    arrival 3 s in, the scenario cameras sending no B-frames) learnt a threshold of 19.6 KB, never woke for
    motion, and saw the student's face only from the keyframe after it was in view: 6 frames, whose
    liveness cues read "a picture", so a genuine student was missed. A low quantile of a longer history
    takes the still part of what was learnt, and :attr:`ready` (nothing decided before ``learn_min``
    windows) keeps the door decoding every frame until then."""

    def __init__(self, ratio: float, min_bytes: int, window: int = 3, history: int = 300, learn_min: int = 30,
                 still_quantile: float = 0.25):
        self.ratio = ratio
        self.min_bytes = min_bytes
        self._recent: deque[int] = deque(maxlen=window)
        self._idle_sums: deque[int] = deque(maxlen=history)
        self._learn_min = learn_min
        self._still_quantile = still_quantile
        self._threshold: float | None = None
        self._since_update = 0

    def moved(self, size: int, *, idle: bool) -> bool:
        """Take the size of the next non-keyframe packet; True when its window is a burst of motion.
        ``idle``: nobody is at the door now (the window then also teaches what a still scene gives)."""
        self._recent.append(size)
        if len(self._recent) < self._recent.maxlen:
            return False
        burst = sum(self._recent)
        moved = self._threshold is not None and burst > self._threshold
        if idle and not moved:
            self._idle_sums.append(burst)
            self._since_update += 1
            if len(self._idle_sums) >= self._learn_min and (self._threshold is None or self._since_update >= 10):
                ordered = sorted(self._idle_sums)
                still = ordered[int(self._still_quantile * (len(ordered) - 1))]
                self._threshold = max(self.ratio * still, float(self.min_bytes))
                self._since_update = 0
        return moved

    @property
    def threshold(self) -> float | None:
        return self._threshold

    @property
    def ready(self) -> bool:
        """Learnt what a still doorway gives: it can be trusted to wake the door."""
        return self._threshold is not None


class IdleDecode:
    """A camera's decoding, packet by packet in its ingest thread (:meth:`decode`): every frame, or, for a
    door nobody is at, keyframes only."""

    def __init__(self, codec: Any, max_gap_s: float, *, wake_ratio: float = 4.0, wake_min_bytes: int = 1500,
                 wake_hold_s: float = 2.0, clock=time.monotonic):
        self._codec = codec
        self.max_gap_s = max_gap_s
        self.wake_hold_s = wake_hold_s
        self.motion = MotionFromSizes(wake_ratio, wake_min_bytes) if wake_ratio > 0 else None
        self._clock = clock
        self.wanted = False  # set from the event loop: nobody is at the door
        self.keyframes_only = False  # what the decoder is doing now
        self.gap_s: float | None = None  # measured keyframe interval, stream time
        self._last_key_pts: float | None = None
        self._gop: list[tuple[Any, float]] = []  # (packet, arrival wall time) since the last keyframe
        self._gop_whole = False  # _gop starts at a keyframe and nothing of it was dropped
        self._awake_until = 0.0  # motion: decode in full until then (monotonic)
        self._arrivals: OrderedDict[int, float] = OrderedDict()  # pts of a packet whose frame is to come -> arrival
        self.switches = 0
        self.motion_wakes = 0
        self.replays = 0  # wakes that decoded the GOP so far instead of waiting for a keyframe

    def decode(self, packet: Any, arrival: float | None = None) -> list[Any]:
        """Decode the stream's next packet (``arrival``: when it was read, wall clock; default now) in the
        mode of the moment: the frames that come out (raises what PyAV raises)."""
        arrival = time.time() if arrival is None else arrival
        packets = self._before_decode(packet, arrival)
        self._arrived(packet, arrival)
        frames = [frame for now in packets for frame in now.decode()]
        if self.keyframes_only and packet.is_keyframe:
            drained = self._codec.decode(None)  # drain: the keyframe now, not when two more push it out
            for frame in drained:
                frame.time_base = packet.time_base  # as packet.decode() sets it
            frames += drained
            self._codec.flush_buffers()  # ready for the next keyframe (nothing else is decoded meanwhile)
        return frames

    def _before_decode(self, packet: Any, arrival: float) -> list[Any]:
        """Switch modes where that is safe; the packets to decode now, in order: ``[packet]``, or on waking
        mid-GOP the GOP's packets from its keyframe on (the decoder flushed first), then ``packet``."""
        now = self._clock()
        if packet.is_keyframe:
            self._keyframe(packet)
        elif self.motion is not None and packet.size and self.motion.moved(packet.size, idle=self.wanted):
            if now >= self._awake_until:
                self.motion_wakes += 1
            self._awake_until = now + self.wake_hold_s
        short_gop = self.gap_s is not None and self.gap_s <= self.max_gap_s
        # keyframes only once motion can wake the door (the threshold learnt), or when motion is not watched
        motion_ready = self.motion is None or self.motion.ready
        idle = self.wanted and short_gop and now >= self._awake_until and motion_ready
        out = [packet]
        if idle and not self.keyframes_only:
            self._codec.skip_frame = "NONKEY"  # at once: nothing after this needs the skipped pictures
            self.keyframes_only = True
            self.switches += 1
        elif self.keyframes_only and not idle:
            if packet.is_keyframe or self._gop_whole:
                out = self._wake(packet)
        self._hold(packet, arrival)
        return out

    def arrival_of(self, pts: int | None) -> float | None:
        """When the packet a frame came from arrived (wall clock; None when unknown: no pts, or one the
        decoder made up)."""
        if pts is None:
            return None
        return self._arrivals.pop(pts, None)

    def _arrived(self, packet: Any, arrival: float) -> None:
        if packet.pts is None:
            return
        arrivals = self._arrivals
        arrivals[packet.pts] = arrival
        arrivals.move_to_end(packet.pts)
        if len(arrivals) > MAX_PENDING_ARRIVALS:
            arrivals.popitem(last=False)

    def _keyframe(self, packet: Any) -> None:
        if packet.pts is not None and packet.time_base is not None:
            pts = float(packet.pts * packet.time_base)
            if self._last_key_pts is not None and pts > self._last_key_pts:
                self.gap_s = pts - self._last_key_pts
            self._last_key_pts = pts
        self._gop.clear()
        self._gop_whole = True

    def _hold(self, packet: Any, arrival: float) -> None:
        if not self._gop_whole:
            return
        if len(self._gop) >= MAX_HELD_PACKETS:
            self._gop.clear()
            self._gop_whole = False
            return
        self._gop.append((packet, arrival))

    def _wake(self, packet: Any) -> list[Any]:
        """Full decoding again. At a keyframe: from it. Mid-GOP: the decoder is flushed and given the GOP's
        packets again from its keyframe (their pictures after the keyframe were never decoded)."""
        self._codec.skip_frame = "DEFAULT"
        self.keyframes_only = False
        self.switches += 1
        if packet.is_keyframe:
            return [packet]
        self._codec.flush_buffers()
        self.replays += 1
        for held, at in self._gop:  # the replayed frames: when their packets first came
            if held.pts is not None:
                self._arrivals[held.pts] = at
        return [held for held, _ in self._gop] + [packet]
