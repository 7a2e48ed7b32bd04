"""The satellite check's faint lines: a faint trail is only a denser line of speckle in the difference image,
below the bright level the trail geometry and the bright pieces read. Realistic difference images are made the
client's way (`preprocess.difference_image`) from noisy frame pairs with trails drawn into the current frame; the
Decider's cases use dim lines drawn into a 400×400 speckle background, below the bright level by construction."""
from __future__ import annotations

import cv2
import numpy as np

from gualta.preprocess import difference_image
from gualta.trails import LEVEL_MIN, Trail, angle_between, faint_lines_of, find_trails, lines_of
from helpers_client import along_line, decide_in_order, explained_away, frame_result, speckle

NOISE_DN = 3.0
DIM = 100                # a dim trail's value in the difference image, below the bright level
assert DIM < LEVEL_MIN


def pair_difference(*segments, dn: float = 6.5, seed: int = 0, disk: tuple | None = None) -> np.ndarray:
    """The 400×400 difference image of a 1304×976 frame pair with 3 DN of sky noise; `segments` (model-input
    pixels) drawn 2 px wide and `disk` ((x, y), radius in frame pixels) filled, `dn` brighter in the current frame."""
    rng = np.random.default_rng(seed)
    light = np.zeros((976, 1304), np.float32)
    for (x1, y1), (x2, y2) in segments:
        fx1, fy1, fx2, fy2 = Trail(x1, y1, x2, y2).in_frame(1304, 976)
        cv2.line(light, (fx1, fy1), (fx2, fy2), dn, 2)
    if disk is not None:
        (x, y), radius = disk
        cv2.circle(light, Trail(x, y, x, y).in_frame(1304, 976)[:2], radius, dn, -1)

    def frame(extra) -> np.ndarray:
        return np.clip(np.round(40 + rng.normal(0, NOISE_DN, light.shape) + extra), 0, 255).astype(np.uint8)

    previous = frame(0)
    return difference_image(frame(light), previous)


def dim_difference(*segments, seed: int = 0) -> np.ndarray:
    """A 400×400 speckle background with dim trails (2 px wide, DIM) at `segments`."""
    image = speckle(seed)
    for (x1, y1), (x2, y2) in segments:
        cv2.line(image, (x1, y1), (x2, y2), DIM, 2)
    return image


FIRST, NEXT = along_line(0, 70), along_line(80, 70)          # a faint satellite in two consecutive frames
METEOR = ((250, 300), (290, 230))


def on_segment(trail: Trail, segment, tolerance: float = 3.0) -> bool:
    (x1, y1), (x2, y2) = segment
    drawn = Trail(x1, y1, x2, y2)
    normal = np.array([-drawn.direction[1], drawn.direction[0]])
    along_drawn = (trail.ends - drawn.ends[0]) @ drawn.direction
    return (angle_between(trail, drawn) <= 8 and np.abs((trail.ends - drawn.ends[0]) @ normal).max() <= tolerance
            and along_drawn.min() >= -tolerance and along_drawn.max() <= drawn.length + tolerance)


def test_a_faint_trail_in_camera_noise_is_found_where_it_is_drawn():
    for seed in range(3):
        found = faint_lines_of(pair_difference(FIRST, seed=seed))
        assert found and all(on_segment(line.trail, FIRST) for line in found), seed


def test_noise_and_blobs_are_not_lines():
    for seed in range(4):
        assert faint_lines_of(pair_difference(seed=10 + seed)) == []
    assert faint_lines_of(pair_difference(disk=((200, 200), 60), seed=2)) == []        # a brightening cloud patch
    assert faint_lines_of(pair_difference(disk=((200, 200), 250), dn=30, seed=3)) == []
    assert faint_lines_of(speckle(4)) == []                                            # isolated specks


def test_a_dim_trail_is_found_only_as_a_faint_line():
    diff = dim_difference(FIRST)
    assert lines_of(diff) == []                                      # below the bright level
    found = faint_lines_of(diff)
    assert found and all(on_segment(line.trail, FIRST) for line in found)
    assert sum(line.trail.length for line in found) >= 0.8 * Trail(*FIRST[0], *FIRST[1]).length


def faint_pieces(diff: np.ndarray) -> list[np.ndarray]:
    return [line.points for line in faint_lines_of(diff)]


def test_a_faint_piece_on_a_neighbour_s_faint_line_is_erased_and_a_meteor_beside_it_kept():
    neighbour = faint_lines_of(dim_difference(FIRST))
    frame = dim_difference(NEXT, METEOR, seed=1)
    assert explained_away(frame, lines_of(dim_difference(FIRST))) is None              # the bright step sees nothing
    erased = explained_away(frame, neighbour, pieces=faint_pieces(frame))
    assert erased is not None
    remaining = faint_lines_of(erased)
    assert len(remaining) == 1 and on_segment(remaining[0].trail, METEOR)              # the meteor is untouched
    for segment in (along_line(80, 70, aside=12), METEOR):                             # off the line; across it
        other = dim_difference(segment, seed=1)
        assert explained_away(other, neighbour, pieces=faint_pieces(other)) is None


def drawn_segment_model(*segments):
    """A stand-in for the model: p(meteor) high while any of these segments is still clearly above the image's
    median."""
    def score(diff: np.ndarray) -> float:
        for (x1, y1), (x2, y2) in segments:
            mask = np.zeros(diff.shape, np.uint8)
            cv2.line(mask, (x1, y1), (x2, y2), 255, 1)
            if diff[mask > 0].mean() > np.median(diff) + DIM / 2:
                return 0.99
        return 0.01
    return score


def test_a_faint_satellite_is_flagged_and_a_faint_meteor_beside_it_reported():
    def night(*middle_frames, **options) -> list:
        results = [frame_result(k + 1, 0.99, dim_difference(*segments, seed=k + 1))
                   for k, segments in enumerate(middle_frames)]
        quiet = [frame_result(0, 0.02, speckle(10)), frame_result(len(results) + 1, 0.02, speckle(13))]
        return decide_in_order([quiet[0], *results, quiet[1]], **options)[1:-1]

    model = drawn_segment_model(FIRST, NEXT, METEOR)
    assert [r.flag for r in night([FIRST], [NEXT], rescore=model)] == ["satellite", "satellite"]
    assert [r.flag for r in night([FIRST], [NEXT])] == ["", ""]                  # no model to ask again: reported
    shared = night([FIRST], [NEXT, METEOR], rescore=model)
    assert [(r.flag, r.detection) for r in shared] == [("satellite", False), ("", True)]
    apart = night([FIRST], [METEOR], rescore=model)                               # nothing continues the trail
    assert [(r.flag, r.detection) for r in apart] == [("", True), ("", True)]


def test_a_model_candidate_with_only_a_faint_line_is_placed_by_it():
    """A faint meteor the model finds may leave neither a trail nor a streak; its longest faint line places it in
    the scores row and the report (else the daily page groups it by time alone)."""
    diff = pair_difference(METEOR, dn=6.0, seed=2)
    assert find_trails(diff) == [] and faint_lines_of(diff)
    decided = decide_in_order([frame_result(0, 0.02, speckle(0)), frame_result(1, 0.95, diff),
                               frame_result(2, 0.02, speckle(2))])
    assert decided[1].detection and decided[1].streak is not None
    assert on_segment(Trail.from_frame(decided[1].streak, 1304, 976), METEOR, tolerance=4.0)
    nothing = decide_in_order([frame_result(0, 0.02, speckle(0)), frame_result(1, 0.95, speckle(1)),
                               frame_result(2, 0.02, speckle(2))])[1]
    assert nothing.detection and nothing.streak is None
