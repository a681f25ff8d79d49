"""`bench faces` places every offered frame in the looping video by its stream time (pure logic)."""

from infra.bench.faces import offered_indices


def test_each_camera_is_placed_by_the_shift_its_analysed_frames_show():
    fps, frames = 10.0, 750
    # camera a's stream started at video frame 100, b's at 740 (it wraps past the end of the video)
    analysed = [("a", 1.0), ("a", 2.5), ("b", 0.0), ("b", 3.0)]
    analysed_at = [110, 125, 740, (740 + 30) % frames]
    offered = [("a", 1.0), ("a", 1.1), ("b", 0.9), ("b", 70.0), ("c", 1.0)]
    order, placed = offered_indices(analysed, analysed_at, offered, frames, fps)
    assert order == [110, 111, (740 + 9) % frames, (740 + 700) % frames]  # c analysed nothing: not placed
    assert placed == 1.0


def test_a_frame_found_elsewhere_lowers_the_share_placed_and_is_outvoted():
    analysed = [("a", t / 10) for t in range(9)] + [("a", 0.9)]
    analysed_at = [50 + t for t in range(9)] + [300]  # one thumbnail matched a look-alike frame
    order, placed = offered_indices(analysed, analysed_at, [("a", 0.9)], 750, 10.0)
    assert order == [59]
    assert placed == 0.9
