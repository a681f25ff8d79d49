"""Keyframe-only decoding of an idle door (processor.ingest.stream.IdleDecode) on a real H.264 stream:
the pictures decoded after switching back are exactly those of a full decode, and an idle stretch decodes
only keyframes."""

from __future__ import annotations

import av
import numpy as np
import pytest

from processor.ingest.stream import IdleDecode
from tests.videos import make_numbered_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_numbered_video(tmp_path_factory.mktemp("idle") / "clip.ts", 320, 96, frames=60, fps=10)


def _decode(path, idle_for=lambda i: False, max_gap_s=2.0):
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        idle = IdleDecode(stream.codec_context, max_gap_s)
        for i, packet in enumerate(container.demux(stream)):
            idle.wanted = idle_for(i)
            idle.before_decode(packet)
            for frame in packet.decode():
                out.append((round(frame.time, 3), frame.key_frame, frame.to_ndarray(format="gray")))
    return out, idle


def test_idle_stretch_decodes_keyframes_only_and_resumes_exactly(clip):
    full, _ = _decode(clip)
    reference = {t: image for t, _, image in full}
    # idle from packet 13 (mid-GOP) to packet 37 (mid-GOP), then active again
    mixed, idle = _decode(clip, idle_for=lambda i: 13 <= i < 37)
    assert idle.gap_s == pytest.approx(1.0)
    assert idle.switches == 2
    t0 = full[0][0]  # MPEG-TS streams do not start at 0
    times = [round(t - t0, 3) for t, _, _ in mixed]
    # packets 13..36 idle: past the decoder's few frames in flight, only the keyframes come out
    assert [t for t in times if 1.7 <= t < 4.0] == [2.0, 3.0]
    assert all(key for t, key, _ in mixed if 1.7 <= t - t0 < 4.0)
    # back to full decoding at the keyframe after the idle stretch, not mid-GOP
    assert 3.7 not in times and 4.0 in times and 4.1 in times
    for t, _, image in mixed:  # every picture handed out is the one a full decode gives
        assert np.array_equal(image, reference[t])


def test_long_gop_is_decoded_in_full_even_when_idle(clip):
    decoded, idle = _decode(clip, idle_for=lambda i: True, max_gap_s=0.5)
    assert len(decoded) == 60 and not idle.keyframes_only
