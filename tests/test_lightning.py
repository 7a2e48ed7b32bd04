"""The lightning check: a flash lighting a wide region of cloud in one frame, on drawn frames and on a simulated sky,
and the Decider holding such a model's candidate back, and a bolt in such a flash, while a fireball or a meteor beside
the flash stays reported."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from gualta import lightning
from gualta.detect import FIREBALL_NOTE, LIGHTNING, detection_line
from gualta.fireball import bright_regions, bright_streak, wiggle
from gualta.preprocess import binary_difference, resize_area
from gualta.streak import pieces
from gualta.trails import principal_span
from helpers_client import decide_in_order, frame_result

HEIGHT, WIDTH = 976, 1304
CENTRE, RADIUS = (WIDTH // 2, HEIGHT // 2), 470
FLASH_AT = (500, 380)
METEOR = ((880, 640), (1010, 720))          # frame pixels, far from the flash


def sky_frame(seed: int, draw=None, level: float = 40) -> np.ndarray:
    """A lens circle of sky at `level` DN (σ 3 DN noise) in a black frame (6 DN pedestal); `draw(layer)` adds light
    (DN, a float layer) inside the circle."""
    rng = np.random.default_rng(seed)
    image = np.full((HEIGHT, WIDTH), 6.0, np.float32)
    cv2.circle(image, CENTRE, RADIUS, level, -1)
    if draw:
        layer = np.zeros(image.shape, np.float32)
        draw(layer)
        inside = cv2.circle(np.zeros(image.shape, np.uint8), CENTRE, RADIUS, 1, -1)
        image += layer * inside
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def flash(layer: np.ndarray, dn: float = 30, centre=FLASH_AT, sigma: float = 120) -> None:
    """A lightning flash lighting the clouds: a smooth blob `dn` bright at its centre."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    layer += dn * np.exp(-(((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2)))


def meteor(layer: np.ndarray) -> None:
    cv2.line(layer, *METEOR, 60.0, 3)


def fireball(layer: np.ndarray) -> None:
    """A fireball: glow, then a saturated head and train (cv2.line paints over)."""
    cv2.line(layer, (600, 300), (800, 420), 60.0, 15)
    cv2.line(layer, (600, 300), (800, 420), 400.0, 5)


BOLT = [(560, 250), (590, 290), (570, 330), (612, 372), (596, 412), (640, 452), (624, 500)]
BRANCH = [(570, 330), (540, 370), (556, 402), (518, 444)]


def bolt(layer: np.ndarray) -> None:
    """A lightning bolt: a saturated, jagged line with a branch, in a glow (the flash lights the clouds too)."""
    for path in (BOLT, BRANCH):
        cv2.polylines(layer, [np.array(path, np.int32)], False, 60.0, 15)
    for path, width in ((BOLT, 4), (BRANCH, 3)):
        cv2.polylines(layer, [np.array(path, np.int32)], False, 400.0, width)


def arc(layer: np.ndarray) -> None:
    """A fireball's saturated streak bent by the lens: 300 px bowing 20 px from its chord."""
    xs = np.linspace(450, 750, 60)
    ys = 300 + 0.2 * (xs - 450) + 20 * (1 - ((xs - 600) / 150) ** 2)
    cv2.polylines(layer, [np.column_stack([xs, ys]).round().astype(np.int32)], False, 400.0, 5)


def terminal_burst(layer: np.ndarray) -> None:
    """A fireball ending in a burst: a round saturated blob 25 px in radius at its end."""
    fireball(layer)
    cv2.circle(layer, (800, 420), 25, 400.0, -1)


def flares(layer: np.ndarray) -> None:
    """A fireball flaring twice along its path: round saturated blobs 15 px in radius on it."""
    fireball(layer)
    for x in (650, 730):
        cv2.circle(layer, (x, 300 + round(0.6 * (x - 600))), 15, 400.0, -1)


def broad_head(layer: np.ndarray) -> None:
    """A fireball whose saturated trail widens to a head 40 px across."""
    cv2.line(layer, (600, 300), (800, 420), 60.0, 15)
    cv2.fillPoly(layer, [np.array([(600, 300), (817, 392), (783, 448)], np.int32)], 400.0)


FIREBALL_SHAPES = (fireball, arc, terminal_burst, flares, broad_head)


def second_fireball(layer: np.ndarray) -> None:
    """A short straight saturated streak far from the flash."""
    cv2.line(layer, *METEOR, 400.0, 4)


def cloud_bank(shift: int):
    """A lit cloud bank's edge, `shift` px further right: drifting cloud."""
    return lambda layer: cv2.rectangle(layer, (180 + shift, 20), (600 + shift, 960), 15.0, -1)


def lit(current: np.ndarray, previous: np.ndarray) -> np.ndarray | None:
    return lightning.lit_region(lightning.brightening(current, previous))


@pytest.mark.parametrize("what, before, after, found", [
    ("nothing new: noise alone", None, None, False),
    ("a flash lighting the clouds", None, flash, True),
    ("a faint, wide flash (10 DN)", None, lambda layer: flash(layer, 10, sigma=200), True),
    ("a bright meteor", None, meteor, False),
    ("a fireball and its glow", None, fireball, False),
    ("a cloud bank drifting 25 px", cloud_bank(0), cloud_bank(25), False),
])
def test_a_wide_smooth_brightening_is_a_lit_region(what, before, after, found):
    region = lit(sky_frame(1, after), sky_frame(0, before))
    assert (region is not None) is found, what


def test_the_black_around_the_lens_is_not_lit_sky():
    """Stray light over the black around the lens circle is no flash."""
    current, previous = sky_frame(1), sky_frame(0)
    outside = cv2.circle(np.ones(current.shape, np.uint8), CENTRE, RADIUS + 10, 0, -1) > 0
    current[outside] += 20
    assert lit(current, previous) is None


def test_a_flash_falls_back_in_the_next_frame_and_a_lasting_brightening_does_not():
    dark, flashed = sky_frame(0), sky_frame(1, flash)
    region = lit(flashed, dark)
    assert region is not None and 0.1 < region.mean() < 0.5
    assert lightning.falls_back(region, lightning.brightening(sky_frame(2), flashed))
    assert not lightning.falls_back(region, lightning.brightening(sky_frame(2, flash), flashed))


def blob_model(diff: np.ndarray) -> float:
    """A stand-in for the model: p(meteor) high while 40+ pixels of the difference image are bright (≥ 200: solid
    brightening, not the noise's speckle)."""
    return 0.99 if np.count_nonzero(diff >= 200) >= 40 else 0.01


def scored(index: int, score: float, current: np.ndarray, previous: np.ndarray):
    """A FrameResult of the pair as the client prepares it (difference image, brightening, lit region, the streak and
    fireball checks' findings)."""
    change = lightning.brightening(current, previous)
    return frame_result(index, score, resize_area(binary_difference(current, previous)), brightening=change,
                        lit=lightning.lit_region(change), pieces=pieces(current, previous),
                        bright=bright_streak(current, previous))


def night(middle_light, after_light=None, score: float = 0.97) -> list:
    """Four frames: dark, dark, the middle (its light drawn by `middle_light`, scored `score`), then the next."""
    images = [sky_frame(0), sky_frame(1), sky_frame(2, middle_light), sky_frame(3, after_light)]
    return [frame_result(0, 0.02), scored(1, 0.02, images[1], images[0]), scored(2, score, images[2], images[1]),
            scored(3, 0.02, images[3], images[2])]


def middle(frames: list, **options):
    return decide_in_order(frames, **{"rescore": blob_model, **options})[2]


def test_a_model_s_candidate_lit_by_a_flash_is_held_back():
    decided = middle(night(flash))
    assert (decided.label, decided.flag, decided.detection) == ("meteor", LIGHTNING, False)
    assert "a flash" in detection_line(decided)
    assert middle(night(flash), report_flagged=True).detection                       # reported as asked
    assert middle(night(flash), lightning_check=False).detection                     # the check off


def test_a_sky_that_stays_lit_in_the_next_frame_is_no_flash():
    decided = middle(night(flash, after_light=flash))
    assert decided.detection and decided.flag == ""


def test_a_meteor_beside_the_flash_is_still_reported():
    """By its streak; and where the streak check has none, by what is left once the lit region is erased."""
    frames = night(lambda layer: (flash(layer), meteor(layer)))
    assert frames[2].pieces and middle(frames).detection
    frames = night(lambda layer: (flash(layer), meteor(layer)))
    frames[2].pieces = []
    decided = middle(frames)
    assert decided.detection and decided.flag == ""


def test_a_fireball_is_still_reported_though_its_light_fills_a_wide_region():
    """A fireball bright enough to light the sky around it: its bright streak keeps the frame."""
    decided = middle(night(lambda layer: (flash(layer, centre=(700, 360)), fireball(layer)), score=0.3))
    assert decided.bright is not None and decided.detection and decided.flag == ""
    assert decided.note.startswith(FIREBALL_NOTE)
    decided = middle(night(lambda layer: (flash(layer, centre=(700, 360)), fireball(layer))))
    assert decided.detection and decided.flag == ""                                 # the model's candidate too


def streak_wiggle(draw) -> float:
    """`fireball.wiggle` of the largest bright region a drawing leaves in the difference of two frames."""
    current, previous = sky_frame(1, draw), sky_frame(0)
    points = max(bright_regions(current, previous), key=len)
    start, end, _ = principal_span(points)
    return wiggle(points, start, end)


def in_a_flash(draw):
    """`draw`'s light with a flash lighting the clouds around it."""
    return lambda layer: (flash(layer, centre=(600, 380)), draw(layer))


def test_a_bolt_wiggles():
    """Its centre line's spread about a parabola along it: a bolt zigzags and branches."""
    assert streak_wiggle(bolt) >= 2 * lightning.BOLT_WIGGLE_PX


@pytest.mark.parametrize("shape", FIREBALL_SHAPES, ids=lambda shape: shape.__name__)
def test_a_fireball_s_streak_does_not_wiggle_though_the_lens_bends_it_or_it_bursts(shape):
    """A fireball's arc is smooth, and a burst, a flare or a broad head is round about its path: its centre line
    stays on the path, where its pixels' spread strays as far as a bolt's."""
    assert streak_wiggle(shape) < lightning.BOLT_WIGGLE_PX / 2


def test_a_bolt_in_a_flash_is_held_back():
    """A bolt is a bright, saturated streak in one frame, as a fireball is, but jagged and branched: with a flash that
    falls back in the next frame it is lightning, whether the model scores it a meteor or not."""
    for score in (0.3, 0.97):
        decided = middle(night(in_a_flash(bolt), score=score))
        assert decided.bright is not None and decided.lit is not None
        assert (decided.label, decided.flag, decided.detection) == ("meteor", LIGHTNING, False), score
        assert middle(night(in_a_flash(bolt), score=score), lightning_check=False).detection   # the check off
    decided = middle(night(bolt, score=0.3))                                           # no flash: no lightning told
    assert decided.lit is None and decided.detection and decided.flag == ""


def test_a_bolt_s_region_is_built_once_for_its_frame(monkeypatch):
    """The bolt's region (a dilation over the whole frame) serves the check for a streak beside the bolt and, scaled
    to the difference image, the rescore of a model's candidate: it was built for each."""
    frames = night(in_a_flash(bolt))                     # scored 0.97: a model's candidate, rescored without the bolt
    built, build = [], lightning.bolt_mask
    monkeypatch.setattr(lightning, "bolt_mask", lambda *args: built.append(args) or build(*args))
    assert middle(frames).flag == LIGHTNING
    assert len(built) == 1


@pytest.mark.parametrize("shape", FIREBALL_SHAPES, ids=lambda shape: shape.__name__)
def test_a_fireball_in_the_same_flash_is_reported(shape):
    """Its streak, bent by the lens or with a burst, a flare or a broad head, is no bolt."""
    for score in (0.3, 0.97):
        decided = middle(night(in_a_flash(shape), score=score))
        assert decided.bright is not None and decided.lit is not None
        assert decided.detection and decided.flag == "", score
        assert decided.note.startswith(FIREBALL_NOTE)


@pytest.mark.parametrize("beside", [meteor, second_fireball])
def test_a_bolt_s_frame_is_still_reported_with_a_meteor_or_a_second_fireball_beside_it(beside):
    """The bolt explains itself, not a streak elsewhere in its frame: one that the neighbours do not account for keeps
    the frame, whether the model scores it a meteor or not."""
    for score in (0.3, 0.97):
        decided = middle(night(lambda layer: (in_a_flash(bolt)(layer), beside(layer)), score=score))
        assert decided.bright is not None and lightning.is_bolt(decided.bright) and decided.lit is not None
        assert decided.detection and decided.flag == "", score


def meteor_from_the_bolt_s_tip(layer: np.ndarray) -> None:
    """A meteor starting a few px beyond the bolt's lower end and running away from it."""
    cv2.line(layer, (628, 512), (760, 590), 60.0, 3)


def test_a_meteor_starting_at_the_bolt_s_tip_is_still_reported():
    """Only a streak lying on the bolt (its ends and middle in the bolt's region) is the bolt's: one with an end in
    its glow and the rest beyond was held back as lightning, the meteor lost."""
    for score in (0.3, 0.97):
        decided = middle(night(lambda layer: (in_a_flash(bolt)(layer), meteor_from_the_bolt_s_tip(layer)),
                               score=score))
        assert decided.bright is not None and lightning.is_bolt(decided.bright)
        assert decided.detection and decided.flag == "", score


def test_a_model_s_candidate_with_a_bolt_is_reported_when_it_still_scores_as_a_meteor_without_it():
    """A model's candidate whose streak the streak check missed: held back only when what the model sees is the bolt
    and its flash."""
    frames = night(lambda layer: (in_a_flash(bolt)(layer), meteor(layer)))
    frames[2].pieces = []
    decided = middle(frames)
    assert decided.detection and decided.flag == ""
    frames = night(in_a_flash(bolt))
    frames[2].pieces = []
    assert middle(frames).flag == LIGHTNING


def test_on_a_simulated_sky_only_the_flash_frame_has_a_lit_region(tmp_path):
    """Frames of a simulated cloudy night: no pair has a lit region until a flash is drawn into one frame."""
    from gualta.preprocess import read_frame
    from gualta.simulate import Rates, simulate_night

    folder = simulate_night(tmp_path, "20211029", 6, "22:00", 9700, "cloudy", Rates(fireball=0.0), 2, False)
    frames = [read_frame(path) for path in sorted(folder.glob("*.jpg"))]
    assert all(lit(current, previous) is None for previous, current in zip(frames, frames[1:]))
    layer = np.zeros(frames[3].shape, np.float32)
    flash(layer, 25, centre=(650, 500), sigma=150)
    flashed = np.clip(frames[3] + layer * (frames[3] > 12), 0, 255).astype(np.uint8)
    region = lit(flashed, frames[2])
    assert region is not None
    assert lightning.falls_back(region, lightning.brightening(frames[4], flashed))
