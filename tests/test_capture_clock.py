"""The capture clock of a live stream (processor.ingest.stream.CaptureClock), pure logic: capture times
follow the stream's own clock, offset by the least delay seen, so B-frame reordering and jitter never make
a frame look captured later than a frame shown before it, and never after its own packet came."""

from __future__ import annotations

import pytest

from processor.ingest.stream import CaptureClock


def _ipbb_arrivals(frames: int, step: float = 0.1, delay: float = 0.05):
    """(pts, arrival) in decode order of a stream coded P B B (each P sent once it is captured, its two
    B-frames after it): a B-frame's packet comes two frames after its capture."""
    out = []
    for group in range(frames // 3):
        p = (group * 3 + 2) * step
        sent = p + delay
        out.append((p, sent))
        out += [((group * 3) * step, sent + 0.01), ((group * 3 + 1) * step, sent + 0.02)]
    return out


def test_b_frames_are_dated_by_the_stream_clock_not_by_their_late_packets():
    clock = CaptureClock()
    by_pts = dict(_ipbb_arrivals(30))
    captured = [clock.captured(pts, by_pts[pts]) for pts in sorted(by_pts)]  # frames come out in pts order
    steady = captured[6:]
    assert all(b > a for a, b in zip(steady, steady[1:]))  # never back in time
    for pts, at in zip(sorted(by_pts)[6:], steady):
        assert at <= by_pts[pts] + 1e-9  # never after its packet came
        assert at == pytest.approx(pts + 0.05)  # the P-frames' delay: the least seen


def test_a_burst_at_connect_is_dated_by_its_arrival_until_live_frames_teach_the_clock():
    clock = CaptureClock()
    # a server sends the GOP so far at once on connect (frames 0..9 arrive at t=100.0 .. 100.009), then live
    burst = [clock.captured(k / 10, 100.0 + k * 0.001) for k in range(10)]
    live = [clock.captured(k / 10, 99.05 + k / 10) for k in range(10, 40)]
    # online, the burst's frames can be dated no earlier than the least delay seen so far allows: each at
    # its own arrival (an undercount of their wait, for the first second of a connection only)
    assert burst == pytest.approx([100.0 + k * 0.001 for k in range(10)])
    assert live == pytest.approx([99.05 + k / 10 for k in range(10, 40)])


def test_the_window_follows_a_drifting_camera_clock_and_a_restart_resets_it():
    clock = CaptureClock(window_s=5.0)
    for k in range(200):  # the camera's clock runs 1 % fast against ours
        last = clock.captured(k / 10, 50.0 + k / 10 / 1.01 + 0.03)
    assert last == pytest.approx(50.0 + 19.9 / 1.01 + 0.03, abs=0.06)
    # the stream time goes back (the camera restarted): the offset is learnt again, not kept
    assert clock.captured(0.0, 80.0) == pytest.approx(80.0)
