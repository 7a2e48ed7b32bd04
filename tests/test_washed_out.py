"""A washed-out sky (dawn, dusk, an exposure change, daylight): the share of the sky that brightened or saturated,
on drawn frames and on a simulated sunrise, and the Decider not trusting the model's score there."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from gualta.detect import BELOW_THRESHOLD_NOTE, STREAK_NOTE, WASHED_OUT_NOTE, WASHED_OUT_SHARE, prepare
from gualta.frames import NightFrames
from gualta.preprocess import binary_difference, washed_out_share
from helpers_client import decide_in_order, frame_result, piece

HEIGHT, WIDTH = 976, 1304
THIN = piece(600, 300, 640, 300)     # a thin streak the streak check found


def sky_frame(seed: int, level: float, draw=None) -> np.ndarray:
    """A lens circle of sky at `level` DN (σ 3 DN noise) in a black frame (6 DN pedestal); `draw(image)` adds light."""
    rng = np.random.default_rng(seed)
    image = np.full((HEIGHT, WIDTH), 6.0, np.float32)
    cv2.circle(image, (WIDTH // 2, HEIGHT // 2), 470, level, -1)
    if draw:
        draw(image)
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def share(current: np.ndarray, previous: np.ndarray) -> float:
    return washed_out_share(binary_difference(current, previous), current, previous)


@pytest.mark.parametrize("what, level, draw, washed", [
    ("nothing new: noise alone", 40, None, False),
    ("a bright meteor", 40, lambda image: cv2.line(image, (400, 300), (700, 520), 120, 2), False),
    ("a cloud bank brightening a third of the sky", 40,
     lambda image: cv2.rectangle(image, (180, 20), (600, 960), 55, -1), False),
    ("the whole sky 12 DN brighter: dawn, a longer exposure", 52, None, True),
    ("a saturated sky: daylight", 255, None, True),
])
def test_the_share_of_the_sky_that_brightened_or_saturated(what, level, draw, washed):
    previous = sky_frame(0, 255 if level == 255 else 40)
    current = sky_frame(1, level, draw)
    assert (share(current, previous) >= WASHED_OUT_SHARE) is washed, (what, share(current, previous))


def test_the_black_around_the_lens_is_not_sky():
    """Stray light over the black around the lens circle (~45 % of the frame) is not the sky brightening."""
    def glow_outside(image):
        outside = np.ones(image.shape, np.uint8)
        cv2.circle(outside, (WIDTH // 2, HEIGHT // 2), 470, 0, -1)
        image[outside > 0] += 10
    current, previous = sky_frame(1, 40, glow_outside), sky_frame(0, 40)
    assert binary_difference(current, previous).mean() / 255 > 0.5
    assert share(current, previous) < 0.3


def test_a_simulated_sunrise_washes_the_sky_out(tmp_path):
    """Frames across sunrise: the sky is told as washed out once the sun is at the horizon, never before."""
    from gualta.simulate import simulate_night

    night = simulate_night(tmp_path, "20220212", 24, "07:32", 9202, "moon", None, 2, False)
    truth = pd.read_csv(night / "ground_truth.csv")
    files = sorted(night.glob("*.jpg"))
    frames = NightFrames(files)
    washed = [prepare(frames, frame)[0].washed_out for frame in files[1:]]
    sun = truth["sun_alt"].to_numpy()[1:]
    assert not any(w for w, alt in zip(washed, sun) if alt < -0.5)
    assert all(w for w, alt in zip(washed, sun) if alt > 0.0)


def test_the_model_s_score_is_not_used_on_a_washed_out_sky():
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.97, washed_out=True), frame_result(2, 0.02),
                               frame_result(3, 0.97), frame_result(4, 0.02)], satellite_check=False)
    assert [(r.label, r.detection) for r in decided][1] == ("no-meteor", False)
    assert decided[1].note == WASHED_OUT_NOTE
    assert [(r.label, r.detection, r.note) for r in decided][3] == ("meteor", True, "")


def test_the_streak_check_still_looks_at_a_washed_out_sky():
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.97, washed_out=True, pieces=[THIN]),
                               frame_result(2, 0.02)])
    assert (decided[1].label, decided[1].detection, decided[1].streak) == ("meteor", True, THIN.ends)
    assert decided[1].note == STREAK_NOTE + "; " + WASHED_OUT_NOTE
    assert BELOW_THRESHOLD_NOTE not in decided[1].note
