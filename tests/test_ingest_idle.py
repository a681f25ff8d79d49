"""Keyframe-only decoding of an idle door (processor.ingest.idle.IdleDecode) on real H.264 streams: an idle
stretch decodes only keyframes; waking mid-GOP decodes that GOP again from its keyframe at once (no wait
for the next keyframe), and every picture handed out is exactly the one a full decode gives; every frame
carries its own packet's arrival; motion in the packet sizes wakes an idle door by itself."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from processor.ingest.idle import IdleDecode, MotionFromSizes
from tests.videos import make_numbered_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_numbered_video(tmp_path_factory.mktemp("idle") / "clip.ts", 320, 96, frames=60, fps=10)


def _decode(path, idle_for=lambda i: False, max_gap_s=2.0, thread_type="AUTO", **wake):
    """[(time, keyframe, picture, arrival of the frame's packet, packet index it came out at)], the
    IdleDecode; packet i arrives at i."""
    out, seen = [], set()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        idle = IdleDecode(stream.codec_context, max_gap_s, **({"wake_ratio": 0} | wake))
        for i, packet in enumerate(container.demux(stream)):
            idle.wanted = idle_for(i)
            for frame in idle.decode(packet, arrival=float(i)):
                if frame.pts in seen:
                    continue  # the camera's Timestamps drop a replayed keyframe handed out before
                seen.add(frame.pts)
                out.append((round(frame.time, 3), frame.key_frame, frame.to_ndarray(format="gray"),
                            idle.arrival_of(frame.pts), i))
    return out, idle


def test_idle_stretch_decodes_keyframes_only_and_wakes_mid_gop_exactly(clip):
    full, _ = _decode(clip)
    reference = {t: image for t, _, image, _, _ in full}
    # idle from packet 13 (mid-GOP) to packet 37 (mid-GOP), then active again
    mixed, idle = _decode(clip, idle_for=lambda i: 13 <= i < 37)
    assert idle.gap_s == pytest.approx(1.0)
    assert idle.switches == 2 and idle.replays == 1
    t0 = full[0][0]  # MPEG-TS streams do not start at 0
    times = [round(t - t0, 3) for t, _, _, _, _ in mixed]
    # packets 13..36 idle: past the decoder's few frames in flight, only the keyframes come out, each as its
    # packet is decoded (not when later pictures push it out of the reorder buffer)
    assert [t for t in times if 1.7 <= t < 3.0] == [2.0]
    came_out = {round(t - t0, 3): at for t, _, _, _, at in mixed}
    assert came_out[2.0] == 20 and came_out[3.0] == 30  # packets 20 and 30 are those keyframes
    # awake at packet 37: the GOP from its keyframe (3.0) is decoded again at once, not from the next one
    assert [t for t in times if 3.0 <= t < 4.2] == [3.0, 3.1, 3.2, 3.3, 3.4, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0, 4.1]
    for t, _, image, _, _ in mixed:  # every picture handed out is the one a full decode gives
        assert np.array_equal(image, reference[t])
    # every frame, replayed or live, carries its own packet's arrival (packet i arrived at i)
    arrivals = {round(t - t0, 3): arrival for t, _, _, arrival, _ in mixed}
    replayed = [arrivals[t] for t in (3.1, 3.2, 3.3, 3.4, 3.5)]
    assert all(a is not None and 30 <= a < 37 for a in replayed) and len(set(replayed)) == 5
    assert arrivals[4.1] == 41 and arrivals[1.0] == 10


@pytest.mark.parametrize("thread_type", ["AUTO", "SLICE"])
def test_every_frame_carries_its_own_packets_arrival_not_the_decoders_output_time(clip, thread_type):
    """The decoder hands a frame out packets after its own (B-frame reordering; frame threading adds more):
    each frame is paired with its own packet's arrival, so that wait shows in the latency figures."""
    with av.open(str(clip)) as container:  # packet i arrives at i: the pts of packet i, in stream seconds
        pts_of_packet = [round(float(p.pts * p.time_base), 3) for p in container.demux(video=0) if p.pts is not None]
    frames, _ = _decode(clip, thread_type=thread_type)
    assert len(frames) == 60
    lags = []
    for t, _, _, arrival, came_out_at in frames:
        assert arrival is not None and pts_of_packet[int(arrival)] == round(t, 3)  # its own packet
        lags.append(came_out_at - arrival)
    assert min(lags) >= 0 and max(lags) >= 1  # some frames do wait in the decoder


def test_waking_at_a_keyframe_needs_no_replay(clip):
    _, idle = _decode(clip, idle_for=lambda i: 13 <= i < 30)  # packet 30 is the keyframe at 3.0
    assert idle.switches == 2 and idle.replays == 0


def test_long_gop_is_decoded_in_full_even_when_idle(clip):
    decoded, idle = _decode(clip, idle_for=lambda i: True, max_gap_s=0.5)
    assert len(decoded) == 60 and not idle.keyframes_only


@pytest.fixture(scope="module")
def walk_in(tmp_path_factory):
    """A still, textured doorway (seconds 0-6), a block walking across it (6-7.5), still again (7.5-11)."""
    path = tmp_path_factory.mktemp("walk") / "walk.ts"
    rng = np.random.default_rng(3)
    scene = cv2.GaussianBlur(rng.integers(0, 255, (180, 320, 3), dtype=np.uint8), (5, 5), 0)
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.options = {"preset": "veryfast", "x264-params": "keyint=10:min-keyint=10:scenecut=0"}
        for i in range(110):
            picture = scene.copy()
            if 60 <= i < 75:
                x = 10 + (i - 60) * 18
                picture[30:170, x:x + 60] = (40 + 10 * (i % 3), 180, 220)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_motion_in_the_packet_sizes_wakes_an_idle_door_and_it_goes_back_after_the_hold(walk_in):
    clock = iter(i / 10 for i in range(10_000))  # one packet every 0.1 s
    out, idle = _decode(walk_in, idle_for=lambda i: True, wake_ratio=4.0, wake_min_bytes=300, wake_hold_s=1.0,
                        clock=lambda: next(clock))
    t0 = out[0][0]
    times = [round(t - t0, 3) for t, _, _, _, _ in out]
    assert idle.motion_wakes == 1 and idle.motion.threshold is not None
    # every frame is decoded until the still doorway is learnt (30 windows of P-frames), then keyframes only
    assert [t for t in times if t < 3.3] == [round(i / 10, 1) for i in range(33)]
    assert [t for t in times if 3.95 <= t < 6.0] == [4.0, 5.0]
    # the walk: every frame from the burst's GOP on (a replay from its keyframe), each as a full decode gives it
    assert [t for t in times if 6.0 <= t < 7.5] == [round(6.0 + i / 10, 1) for i in range(15)]
    assert idle.replays == 1
    assert [t for t in times if t >= 9.0] == [9.0, 10.0]  # the hold over: keyframes only again
    assert idle.keyframes_only and idle.switches == 3


def test_the_motion_threshold_learns_the_still_scene():
    motion = MotionFromSizes(ratio=4.0, min_bytes=100)
    assert not any(motion.moved(size, idle=True) for size in [200, 100, 300] * 11)
    assert motion.ready and motion.threshold == pytest.approx(4.0 * 600)  # 4 x the still bytes of 3 packets
    assert not motion.moved(2000, idle=True)  # one packet of a burst: 2000 + 100 + 300
    assert motion.moved(2000, idle=True)  # its window over the threshold: 2000 + 300 + 2000
    busy = MotionFromSizes(ratio=4.0, min_bytes=100)
    assert not any(busy.moved(size, idle=False) for size in [5000] * 40)  # not idle: nothing learnt, no wake
    assert busy.threshold is None and not busy.ready


def test_a_camera_started_while_someone_walks_in_still_learns_the_still_doorway():
    """The pipeline calls a door idle while the face is still too far to find: the first windows learnt
    may all be motion. The still part of the history sets the threshold, so the next walk-in wakes it."""
    motion = MotionFromSizes(ratio=4.0, min_bytes=100)
    for size in [3000] * 22 + [300] * 12:  # 20 windows of an approach, then the doorway still
        motion.moved(size, idle=True)
    assert motion.ready and motion.threshold == pytest.approx(4.0 * 900)  # not 4 x the approach's 9000
    assert not motion.moved(300, idle=True)
    assert motion.moved(3000, idle=False) or motion.moved(3000, idle=False)
