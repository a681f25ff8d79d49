"""Body appearance descriptors (processor.appearance): synthetic checks and real pedestrians."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from processor import appearance
from processor.appearance import Appearance, describe_below_face, describe_person, distance


def _figure(shirt, trousers=(40, 40, 40), *, height=200, background=(128, 128, 128), gain=1.0, noise=3.0, seed=0):
    """A frame with one figure (shirt, trousers) standing on a plain background; returns (image, box)."""
    rng = np.random.default_rng(seed)
    image = np.full((height + 60, height, 3), background, np.float32)
    x1, x2, y1 = height // 4, 3 * height // 4, 30
    image[y1:y1 + height // 2, x1:x2] = np.asarray(shirt, np.float32) * gain
    image[y1 + height // 2:y1 + height, x1:x2] = np.asarray(trousers, np.float32) * gain
    image += rng.normal(0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), (x1, y1, x2, y1 + height)


RED, BLUE, WHITE, BLACK = (40, 40, 200), (200, 80, 30), (235, 235, 235), (25, 25, 25)


def test_same_clothes_are_close_across_scale_and_lighting():
    near = describe_person(*_figure(RED, height=300, gain=1.0, seed=1))
    far = describe_person(*_figure(RED, height=80, gain=0.7, background=(90, 110, 100), seed=2))
    assert set(near.parts) == {"upper", "lower"} and near.parts["upper"].shape == (appearance.PART_BINS,)
    assert abs(float(near.parts["upper"].sum()) - 1.0) < 1e-5
    assert distance(near, far) < 0.2


def test_different_clothes_are_far_black_and_white_too():
    red, blue = describe_person(*_figure(RED)), describe_person(*_figure(BLUE))
    white, black = describe_person(*_figure(WHITE)), describe_person(*_figure(BLACK))
    assert distance(red, blue) > 0.45  # the tops differ completely, the (dark) trousers are alike
    assert distance(Appearance({"upper": red.parts["upper"]}), Appearance({"upper": blue.parts["upper"]})) > 0.9
    # a hue-saturation histogram alone would call these the same (no saturation in either)
    assert distance(white, black) > 0.3


def test_torso_below_a_face_matches_the_room_body():
    image = np.full((400, 300, 3), 200, np.uint8)
    cv2.rectangle(image, (110, 60), (190, 160), (120, 150, 200), -1)  # face
    cv2.rectangle(image, (60, 170), (240, 400), BLUE, -1)  # shirt below it
    door = describe_below_face(image, (110, 60, 190, 160))
    assert set(door.parts) == {"upper"}
    x1, y1, x2, y2 = door.box
    assert y1 > 160 and 100 < (x1 + x2) / 2 < 200
    assert distance(door, describe_person(*_figure(BLUE))) < 0.2
    assert distance(door, describe_person(*_figure(RED))) > 0.5
    # a face at the bottom edge of the frame has no torso in view
    assert describe_below_face(image, (110, 330, 190, 400)) is None


def test_event_form_round_trips_and_missing_parts_compare_on_what_is_common():
    full = describe_person(*_figure(RED))
    event = full.to_event()
    assert event["kind"] == appearance.KIND and len(event["upper"]) == appearance.PART_BINS
    back = Appearance.from_event(event)
    assert distance(full, back) < 0.02
    upper_only = Appearance({"upper": full.parts["upper"]})
    assert distance(upper_only, full) == pytest.approx(0.0, abs=1e-6)
    assert distance(None, full) is None and distance(Appearance({"lower": full.parts["lower"]}), upper_only) is None
    assert Appearance.from_event({"kind": "something-newer", "upper": [1.0]}) is None
    assert Appearance.from_event(None) is None


def test_mean_of_several_frames():
    looks = [describe_person(*_figure(RED, seed=k)) for k in range(3)] + [describe_person(*_figure(BLUE))]
    avg = appearance.mean(looks)
    assert distance(avg, looks[0]) < distance(looks[3], looks[0])
    assert appearance.mean([]) is None


def test_real_pedestrians_are_closer_to_themselves_than_to_others():
    """vtest.avi's pedestrians (the renderer's figure bank): each person at two moments of their walk,
    at two scales and exposures on two backgrounds, against every other person."""
    figures_mod = pytest.importorskip("infra.scenario.figures")
    figures = figures_mod.load_figures()
    rng = np.random.default_rng(0)

    def shot(fig, k, gain, scale, background):
        img = cv2.resize(fig.frames[k], None, fx=scale, fy=scale)
        alpha = cv2.resize(fig.alphas[k], None, fx=scale, fy=scale)[..., None]
        out = np.asarray(background, np.float32) * (1 - alpha) + img.astype(np.float32) * gain * alpha
        out = np.clip(out + rng.normal(0, 3, out.shape), 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(alpha[..., 0] > 0.5)
        return describe_person(out, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))

    looks = [(shot(f, 0, 1.0, 2.0, (120, 130, 140)), shot(f, len(f.frames) // 2, 0.8, 3.0, (90, 100, 95)))
             for f in figures]
    same = np.array([distance(a, b) for a, b in looks])
    others = np.array([distance(a[0], b[1]) for a, b in itertools.permutations(looks, 2)])
    assert np.median(same) + 0.15 < np.median(others)
    # each person's own second look is nearer than most other people are
    ranks = [np.mean([distance(looks[i][0], looks[j][1]) > same[i] for j in range(len(looks)) if j != i])
             for i in range(len(looks))]
    assert np.median(ranks) >= 0.8
