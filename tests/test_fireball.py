"""The fireball check: bright, saturated streaks in the full-resolution difference, through the Decider the client
uses, and on a simulated night with ground truth where the model misses everything."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from gualta.detect import BELOW_THRESHOLD_NOTE, FIREBALL, FIREBALL_NOTE, detection_report
from gualta.fireball import Streak, bright_streak
from helpers_client import blind_detections, clear_night, decide_in_order, frame_result, piece, settings

HEIGHT, WIDTH = 976, 1304


def night_sky(seed: int = 0, level: int = 30) -> np.ndarray:
    """A dark 8-bit gray frame with camera noise."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(level, 3, (HEIGHT, WIDTH)), 0, 255).astype(np.uint8)


def brightened(frame: np.ndarray, draw) -> np.ndarray:
    """frame plus the light `draw(layer)` paints into a float layer (DN), clipped to 8 bits like a sensor."""
    layer = np.zeros(frame.shape, np.float32)
    draw(layer)
    return np.clip(frame + layer, 0, 255).astype(np.uint8)


def fireball_light(layer: np.ndarray, start=(600, 300), end=(800, 420)) -> None:
    cv2.line(layer, start, end, 60.0, 15)                                  # glow (cv2.line paints over)
    cv2.line(layer, start, end, 400.0, 5)                                  # saturated head and train


def test_a_saturated_streak_is_found_end_to_end():
    previous = night_sky(0)
    current = brightened(night_sky(1), fireball_light)
    streak = bright_streak(current, previous)
    assert streak is not None and streak.area >= 500
    ends = sorted([(streak.x1, streak.y1), (streak.x2, streak.y2)])
    assert np.allclose(ends, [(600, 300), (800, 420)], atol=12), ends



def test_a_fireball_over_a_moonlit_sky_is_found():
    """Over a sky at 100 DN its saturated core is only ≈ 155 DN brighter than before, yet it is a fireball (with the
    core's bar ≈ 20 % higher it was missed)."""
    streak = bright_streak(brightened(night_sky(1, level=100), fireball_light), night_sky(0, level=100))
    assert streak is not None
    assert np.allclose(sorted([(streak.x1, streak.y1), (streak.x2, streak.y2)]), [(600, 300), (800, 420)], atol=12)
@pytest.mark.parametrize("what, draw", [
    ("an out-of-focus insect: wide, soft, not saturated",
     lambda layer: layer.__setitem__(..., cv2.GaussianBlur(cv2.line(np.zeros_like(layer), (500, 500), (650, 560),
                                                                    160.0, 14), (0, 0), 4))),
    ("a faint thin meteor", lambda layer: cv2.line(layer, (300, 300), (500, 420), 40.0, 1)),
    ("a bright thin meteor, opened away", lambda layer: cv2.line(layer, (300, 300), (500, 420), 300.0, 1)),
    ("a star-sized saturated speck", lambda layer: cv2.circle(layer, (700, 500), 3, 400.0, -1)),
    ("moonlight brightening the whole sky by 60 DN", lambda layer: layer.__iadd__(60.0)),
    ("a flash lighting a cloud: round, saturated", lambda layer: cv2.circle(layer, (650, 500), 60, 400.0, -1)),
    ("a lit cloud 150 DN brighter but not saturated", lambda layer: cv2.ellipse(
        layer, (650, 500), (200, 80), 20, 0, 360, 150.0, -1)),
])
def test_what_is_no_fireball(what, draw):
    previous = night_sky(0)
    assert bright_streak(brightened(night_sky(1), draw), previous) is None, what


def test_the_watermark_is_left_out():
    previous = night_sky(0)
    digits = brightened(night_sky(1), lambda layer: cv2.rectangle(layer, (40, 40), (300, 90), 400.0, -1))
    assert bright_streak(digits, previous) is None
    in_the_corner = brightened(night_sky(1), lambda layer: fireball_light(layer, (60, 40), (300, 110)))
    assert bright_streak(in_the_corner, previous) is None


STREAK = Streak(600, 300, 800, 420, 900)


def test_a_streak_the_model_misses_is_reported_as_a_fireball(tmp_path):
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.20, bright=STREAK), frame_result(2, 0.01)])
    fireball = decided[1]
    assert [r.label for r in decided] == ["no-meteor", "meteor", "no-meteor"]
    assert fireball.detection and not fireball.flag
    assert fireball.note == FIREBALL_NOTE + BELOW_THRESHOLD_NOTE and fireball.streak == STREAK.ends
    _, payload = detection_report(fireball, settings(tmp_path, tmp_path / "m.onnx"), "20211110", None)
    assert payload["flag"] == FIREBALL and payload["score"] == pytest.approx(0.20)


def test_the_report_carries_the_streak_in_the_files_pixels(tmp_path):
    """The daily page tells one crossing from two meteors by the detections' streaks: a report carries its frame's
    streak in the file's pixels (a frame read at half size: doubled), an end read just off the frame on its edge; a
    detection without a streak carries none."""
    client = settings(tmp_path, tmp_path / "m.onnx")
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.20, bright=STREAK, scale=2.0),
                               frame_result(2, 0.01)])
    assert detection_report(decided[1], client, "20211110", None)[1]["streak"] == [2 * end for end in STREAK.ends]
    decided[1].streak = (-0.3, 10, 20.2, 30)
    assert detection_report(decided[1], client, "20211110", None)[1]["streak"] == [0, 20, 40, 60]
    model_only = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.97), frame_result(2, 0.01)])[1]
    assert model_only.detection and "streak" not in detection_report(model_only, client, "20211110", None)[1]


def test_a_streak_in_an_adjacent_frame_too_is_a_steady_light():
    for satellite_check in (True, False):
        decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.20, bright=STREAK),
                                   frame_result(2, 0.10, bright=STREAK), frame_result(3, 0.01)],
                                  satellite_check=satellite_check)
        assert [(r.flag, r.detection) for r in decided[1:3]] == [("satellite", False)] * 2, satellite_check


def test_two_fireballs_in_consecutive_frames_are_both_reported_and_landing_lights_are_not():
    """A bright streak in an adjacent frame is the same object on the candidate's line at any distance (a steady
    light; landing lights, far on under a short exposure) or going on from its end (a plane turning), and wherever it
    lies when it is a bolt's. Elsewhere it is another fireball (on fireball-rich nights 7 fireball frames had been
    flagged as one crossing)."""
    def decided_pair(later: Streak, earlier: Streak = STREAK) -> list[tuple[str, bool]]:
        decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.20, bright=earlier),
                                   frame_result(2, 0.10, bright=later), frame_result(3, 0.01)])
        return [(r.flag, r.detection) for r in decided[1:3]]

    assert decided_pair(Streak(300, 700, 330, 500, 900)) == [("", True)] * 2          # another place and direction
    flagged = [("satellite", False)] * 2
    assert decided_pair(Streak(820, 432, 1020, 552, 900)) == flagged                     # on its line, 23 px on
    short = Streak(600, 300, 660, 336, 300)                                              # a 4 s exposure's lights
    assert decided_pair(Streak(960, 516, 1020, 552, 300), short) == flagged             # on its line, 6 lengths on
    assert decided_pair(Streak(810, 425, 960, 470, 900)) == flagged                      # from its end, turned 14°
    assert decided_pair(Streak(300, 700, 330, 500, 900, wiggle=6.0)) == flagged          # a storm's bolt, anywhere


def with_line(start, end) -> np.ndarray:
    """A 400×400 difference image holding one drawn trail (model-input pixels)."""
    diff = np.zeros((400, 400), np.uint8)
    cv2.line(diff, start, end, 255, 2)
    return diff


def test_a_fireball_sharing_its_frame_with_a_satellite_is_reported_and_a_plane_s_strobe_line_is_not():
    satellite = [with_line((40 + 70 * k, 300), (100 + 70 * k, 300)) for k in range(3)]
    frames = [frame_result(k, 0.95, diff) for k, diff in enumerate(satellite)]
    frames[1].bright = STREAK                                # elsewhere in the frame, another direction
    decided = decide_in_order(frames)
    assert [(r.flag, r.detection) for r in decided] == [("satellite", False), ("", True), ("satellite", False)]
    strobes = Streak(round(170 * WIDTH / 400), round(300 * HEIGHT / 400), round(230 * WIDTH / 400),
                     round(300 * HEIGHT / 400), 400)        # the middle piece itself, bright
    frames = [frame_result(k, 0.95 if k != 1 else 0.3, diff) for k, diff in enumerate(satellite)]
    frames[1].bright = strobes
    assert [r.flag for r in decide_in_order(frames)] == ["satellite"] * 3


def test_a_fireball_in_cloud_clutter_is_reported_though_its_streak_continues_a_neighbour_s_trail():
    clutter = [with_line((40 + 70 * k, 300), (100 + 70 * k, 300)) for k in range(3)]     # cloud edges, by chance
    head = Streak(round(170 * WIDTH / 400), round(300 * HEIGHT / 400), round(230 * WIDTH / 400),
                  round(300 * HEIGHT / 400), 400)
    own = piece(head.x1, head.y1, head.x2, head.y2, signal=30.0)         # a long bright streak of its own
    frames = [frame_result(k, 0.95 if k != 1 else 0.3, diff) for k, diff in enumerate(clutter)]
    frames[1].bright, frames[1].pieces = head, [own]
    assert [r.flag for r in decide_in_order(frames)] == ["satellite", "", "satellite"]
    frames = [frame_result(k, 0.95 if k != 1 else 0.3, diff) for k, diff in enumerate(clutter)]
    frames[1].bright, frames[1].pieces = head, [own]
    frames[0].pieces = [piece(round(40 * WIDTH / 400), head.y1, round(100 * WIDTH / 400), head.y1, signal=30.0)]
    assert [r.flag for r in decide_in_order(frames)] == ["satellite"] * 3     # its twin before it: a crossing


def test_a_meteor_the_model_finds_keeps_its_score_and_gets_the_fireball_tag():
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.97, bright=STREAK), frame_result(2, 0.01)])
    assert decided[1].detection and decided[1].note == FIREBALL_NOTE


def test_with_the_check_off_streaks_are_ignored(tmp_path):
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.20, bright=STREAK),
                               frame_result(2, 0.97, bright=STREAK)], fireball_check=False)
    assert [(r.label, r.detection) for r in decided] == [("no-meteor", False), ("no-meteor", False), ("meteor", True)]
    _, payload = detection_report(decided[2], settings(tmp_path, tmp_path / "m.onnx"), "20211110", None)
    assert "flag" not in payload and decided[2].note == ""


@pytest.fixture(scope="module")
def fireball_night(tmp_path_factory):
    """A 16-frame clear simulated night rich in fireballs, with insects, meteors, satellites and planes."""
    return clear_night(tmp_path_factory.mktemp("fireballs") / "nights", "20211112", frames=16, seed=41,
                       meteor=0.3, fireball=0.3, satellite=0.1, plane=0.05, insect=0.3)


def test_on_a_simulated_night_a_model_that_misses_everything_still_reports_the_fireballs(fireball_night, tmp_path):
    truth = pd.read_csv(fireball_night / "ground_truth.csv").set_index("file")
    assert blind_detections(tmp_path, fireball_night, fireball_check=False, streak_check=False) == []
    rows = blind_detections(tmp_path, fireball_night, fireball_check=True, streak_check=False)
    found = [row["file"] for row in rows]
    assert found and all(truth.loc[name, "label"] == "meteor" for name in found), truth.loc[found, "events"]
    assert any("fireball" in str(truth.loc[name, "events"]) for name in found)
    assert all(BELOW_THRESHOLD_NOTE in row["note"] and row["x1"] for row in rows)
