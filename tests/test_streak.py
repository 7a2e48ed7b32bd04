"""The streak check: thin, straight streaks in the full-resolution difference, what explains them away, through the
Decider the client uses, and on a simulated night with ground truth where the model misses everything."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pandas as pd
import pytest

from gualta.detect import (BELOW_THRESHOLD_NOTE, FAINT_NOTE, STREAK, STREAK_NOTE, Decider, detection_line,
                           detection_report)
from gualta.fireball import bright_streak
from gualta.frames import same_picture
from gualta.streak import (FAINT_STEADY_MIN_LENGTH_PX, LEVEL, MAX_WIDTH_PX, MIN_SIGNAL, PER_BOX_MAX, PIECE_MIN_PX,
                           STEADY_CLIPPED_SHARE, Piece, chains, clipped_share, explains, follows, is_steady,
                           large_components, median, on_track, pieces, relit, ridge_frame, signal_map,
                           unexplained_streaks)
from helpers_client import blind_detections, clear_night, decide_in_order, frame_result, piece, settings

HEIGHT, WIDTH = 976, 1304


def night_sky(seed: int, level: float = 30.0, sky=None) -> np.ndarray:
    """An 8-bit gray frame: `sky` (or a flat dark sky) with fresh camera noise (σ 3 DN)."""
    rng = np.random.default_rng(seed)
    base = np.full((HEIGHT, WIDTH), level, np.float32) if sky is None else sky
    return np.clip(base + rng.normal(0, 3, (HEIGHT, WIDTH)), 0, 255).astype(np.uint8)


def with_light(sky: np.ndarray, draw) -> np.ndarray:
    """The float sky plus the light `draw(layer)` paints, softened like a lens (σ 0.7 px: a 1 px line keeps ≈ 55 %
    of its level at its peak)."""
    layer = np.zeros(sky.shape, np.float32)
    draw(layer)
    return sky + cv2.GaussianBlur(layer, (0, 0), 0.7)


def frame_pair(*draws, sky=None) -> tuple[np.ndarray, np.ndarray]:
    """(current, previous): the current frame has the light of every drawing."""
    base = np.full((HEIGHT, WIDTH), 30.0, np.float32) if sky is None else sky
    return night_sky(1, sky=with_light(base, lambda layer: [draw(layer) for draw in draws])), night_sky(0, sky=base)


def streaks_of(draw, sky=None) -> list[Piece]:
    return [piece for piece in pieces(*frame_pair(draw, sky=sky)) if piece.is_streak]


@pytest.mark.parametrize("what, start, end, dn", [
    ("a meteor peaking ≈ 55 DN over a sky with 3 DN noise, 140 px", (300, 600), (420, 530), 100.0),
    ("a short one, 25 px, the size the model misses most", (900, 400), (918, 417), 100.0),
])
def test_a_thin_streak_is_found_with_its_ends(what, start, end, dn):
    found = streaks_of(lambda layer: cv2.line(layer, start, end, dn, 1))
    assert len(found) == 1, what
    ends = sorted([(found[0].x1, found[0].y1), (found[0].x2, found[0].y2)])
    assert np.allclose(ends, sorted([start, end]), atol=4), (what, ends)


@pytest.mark.parametrize("what, dn, thickness, streak", [
    ("a fireball's glare: ≈ 4.7 px wide, far above the noise", 255.0, 5, True),
    ("as wide and only ≈ 9 × the noise: a soft cloud edge, an insect", 30.0, 5, False),
    ("wider still (≈ 6 px), however bright", 255.0, 7, False),
])
def test_a_bright_streak_may_be_wider(what, dn, thickness, streak):
    found = pieces(*frame_pair(lambda layer: cv2.line(layer, (300, 600), (500, 520), dn, thickness)))
    assert len(found) == 1 and found[0].width > MAX_WIDTH_PX, what
    assert found[0].is_streak is streak, what


def light_along(start, end, curve, peak_dn: float, thickness: int = 1):
    """A drawing of a streak (1 px wide unless told) from start to end whose light follows curve(t), t = 0…1 along
    it (peak_dn at 1)."""
    def draw(layer):
        (x1, y1), (x2, y2), steps = start, end, 60
        for k in range(steps):
            a, b = k / steps, (k + 1) / steps
            cv2.line(layer, (round(x1 + a * (x2 - x1)), round(y1 + a * (y2 - y1))),
                     (round(x1 + b * (x2 - x1)), round(y1 + b * (y2 - y1))), peak_dn * curve((a + b) / 2), thickness)
    return draw


def satellite_light(t):
    """Steady for the whole exposure, a slight ripple (a tumbling body)."""
    return 0.9 + 0.1 * np.sin(9 * t)


def meteor_light(t):
    """Quick rise, peak late, faster fade."""
    return (t ** 1.5 * (1 - t) ** 0.7) / (0.68 ** 1.5 * 0.32 ** 0.7)


@pytest.mark.parametrize("what, curve, start, end, peak_dn, steady", [
    ("a satellite, 150 px", satellite_light, (300, 600), (440, 545), 100.0, True),
    ("a satellite, 40 px", satellite_light, (900, 400), (930, 374), 100.0, True),
    ("a meteor as bright, 150 px", meteor_light, (300, 600), (440, 545), 100.0, False),
    ("a meteor, 40 px", meteor_light, (900, 400), (930, 374), 100.0, False),
    ("a short meteor, 26 px, rounded: half as bright at its ends", lambda t: 0.45 + 0.55 * np.sin(np.pi * t),
     (700, 528), (691, 552), 100.0, False),
    ("a long meteor with a steady middle: its ends fade out beyond the piece",
     lambda t: np.clip(3 * np.minimum(t, 1 - t), 0, 1), (200, 500), (600, 380), 80.0, False),
    ("a satellite clipped at the sensor's top: a saturated meteor looks as flat", satellite_light,
     (300, 600), (440, 545), 600.0, False),
])
def test_a_satellite_s_steady_light_is_told_from_a_meteor_s_light_curve(what, curve, start, end, peak_dn, steady):
    found = streaks_of(light_along(start, end, curve, peak_dn))
    assert found and found[0].signal >= MIN_SIGNAL, what
    assert found[0].steady is steady, what



@pytest.mark.parametrize("tail, steady", [(0.0, True), (0.1, True), (0.17, False)])
def test_light_going_on_beyond_a_plateau_s_end_is_a_longer_meteor_s_fading_tail(tail, steady):
    """A plateau whose light goes on beyond its end at a sixth of its peak is the middle of a longer meteor, its faint
    ends below the piece's level (with the tail's bar 20 % higher such a meteor was held back as a satellite)."""
    along = np.arange(-40.0, 141.0)
    curve = np.where((along >= 0) & (along <= 100), 1.0 + 0.05 * np.sin(along / 7), 0.0)
    curve[along > 100] = tail
    assert is_steady(along, curve, 100.0) is steady


@pytest.mark.parametrize("what, curve, peak_dn, steady, mostly_clipped", [
    ("a satellite with a glint clipped over a few px of its line: still a plateau",
     lambda t: satellite_light(t) + (4.0 if 0.5 <= t < 0.56 else 0.0), 100.0, True, False),
    ("a bright meteor clipped over a few px at its peak: its rise and fade still show", meteor_light, 430.0, False,
     False),
    ("a satellite clipped along most of its line: unread, a saturated meteor is as flat", satellite_light, 600.0,
     False, True),
])
def test_a_few_clipped_pixels_leave_the_light_curve_readable(what, curve, peak_dn, steady, mostly_clipped):
    current, previous = frame_pair(light_along((300, 600), (440, 545), curve, peak_dn))
    found = [piece for piece in pieces(current, previous) if piece.is_streak]
    assert len(found) == 1, what
    clipped = clipped_share(found[0], current)
    assert clipped > 0 and (clipped > STEADY_CLIPPED_SHARE) is mostly_clipped, (what, clipped)
    assert found[0].steady is steady, what


def broken(draw_light, start, end, gap_at: float, gap_px: float):
    """A drawing of draw_light's streak from start to end with gap_px of it missing around gap_at (0…1 along it):
    a star's residual or a dip in the noise breaks one streak into two pieces."""
    def draw(layer):
        draw_light(layer)
        (x1, y1), (x2, y2) = start, end
        half = gap_px / 2 / np.hypot(x2 - x1, y2 - y1)
        a, b = gap_at - half, gap_at + half
        cv2.line(layer, (round(x1 + a * (x2 - x1)), round(y1 + a * (y2 - y1))),
                 (round(x1 + b * (x2 - x1)), round(y1 + b * (y2 - y1))), 0.0, 3)
    return draw


@pytest.mark.parametrize("what, curve, steady", [
    ("a satellite", satellite_light, True),
    ("a meteor", meteor_light, False),
])
def test_a_streak_broken_in_two_is_read_whole(what, curve, steady):
    start, end = (300, 600), (500, 520)
    found = streaks_of(broken(light_along(start, end, curve, 100.0), start, end, 0.45, 10))
    assert len(found) == 2, what                        # each piece alone has the other beyond its end
    assert [piece.steady for piece in found] == [steady, steady], what


def test_a_broken_streak_s_pieces_are_one_chain_and_others_are_not():
    start, end = (300, 600), (500, 520)
    found = [piece for piece in pieces(*frame_pair(broken(light_along(start, end, satellite_light, 100.0),
                                                           start, end, 0.45, 10),
                                                    lambda layer: cv2.line(layer, (520, 700), (700, 640), 100.0, 1)))]
    grouped = sorted(len(chain) for chain in chains(found))
    assert grouped == [1, 2]


@pytest.mark.parametrize("what, curve, steady", [
    ("a satellite leaving the frame at its right edge", satellite_light, True),
    ("a meteor leaving the frame at its peak", lambda t: meteor_light(0.2 + 0.6 * t), False),
])
def test_the_frame_s_edge_ends_a_streak(what, curve, steady):
    start, end = (WIDTH - 160, 500), (WIDTH + 40, 490)    # cut by the frame's edge 40 px before its end
    found = streaks_of(light_along(start, end, curve, 100.0))
    assert found and max(found[0].x1, found[0].x2) > WIDTH - 5, what
    assert found[0].steady is steady, what


@pytest.mark.parametrize("what, curve, steady", [
    ("a satellite", satellite_light, True),
    ("a meteor", lambda t: meteor_light(0.2 + 0.6 * t), False),
])
def test_a_wide_streak_cut_by_the_frame_s_edge_at_a_shallow_angle_is_read(what, curve, steady):
    """Its fitted end lies about a pixel beyond the top edge, where nothing can be read."""
    found = streaks_of(light_along((640, 30), (840, -12), curve, 40.0, thickness=2))
    assert found and min(found[0].y1, found[0].y2) < -0.5, what
    assert found[0].steady is steady, what


def line_pieces(curve, peak_dn: float, end=(440, 545)) -> list[Piece]:
    """The pieces of a line from (300, 600) to `end` (by default 150 px long) with that light curve and peak."""
    return pieces(*frame_pair(light_along((300, 600), end, curve, peak_dn)))


@pytest.mark.parametrize("peak_dn, streak", [(60.0, True), (45.0, False)])
def test_every_streak_s_and_faint_streak_s_light_curve_is_judged(peak_dn, streak):
    found = line_pieces(satellite_light, peak_dn)
    assert len(found) == 1 and found[0].length > 140
    assert found[0].is_streak is streak and found[0].is_faint_streak is not streak
    assert found[0].signal < 1.25 * MIN_SIGNAL and found[0].steady


@pytest.mark.parametrize("what, curve, peak_dn, steady", [
    ("a faint satellite, ≈ 7 × the noise", satellite_light, 45.0, True),
    ("a meteor as faint", meteor_light, 45.0, False),
    ("a faint meteor, rounded: half as bright at its ends", lambda t: 0.45 + 0.55 * np.sin(np.pi * t), 45.0, False),
    ("a satellite fainter than a faint streak (< 6 × the noise): not judged", satellite_light, 30.0, False),
])
def test_a_faint_satellite_s_steady_light_is_told_from_a_faint_meteor_s(what, curve, peak_dn, steady):
    found = line_pieces(curve, peak_dn)
    assert found and not any(piece.is_streak for piece in found), what
    assert any(piece.is_faint_streak for piece in found) is (peak_dn > 30.0), what
    assert any(piece.steady for piece in found) is steady, what


def test_a_short_faint_streak_s_light_curve_is_not_judged_but_a_broken_one_is_read_whole():
    short = line_pieces(satellite_light, 35.0, end=(318, 590))
    assert len(short) == 1 and short[0].is_faint_streak and short[0].length < FAINT_STEADY_MIN_LENGTH_PX
    assert not short[0].steady                                  # too few samples along 22 px
    broken_faint = line_pieces(satellite_light, 35.0, end=(340, 578))
    assert len(broken_faint) == 2 and all(piece.length < FAINT_STEADY_MIN_LENGTH_PX for piece in broken_faint)
    assert all(piece.is_faint_streak and piece.steady for piece in broken_faint)   # one chain, 46 px


@pytest.mark.parametrize("what, curve, reported", [
    ("a faint meteor", meteor_light, True),
    ("a faint satellite, seen in this frame only", satellite_light, False),
])
def test_a_faint_streak_candidate_is_held_back_for_a_satellite_s_steady_light(what, curve, reported):
    found = line_pieces(curve, 45.0)
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.70, pieces=found), frame_result(2, 0.01)])
    assert decided[1].label == "meteor", what
    assert (decided[1].detection, decided[1].flag) == ((True, "") if reported else (False, "satellite")), what


def rim_sky() -> np.ndarray:
    """A bright sky circle on the black lens border, as on a moonlit night."""
    sky = np.zeros((HEIGHT, WIDTH), np.float32)
    cv2.circle(sky, (WIDTH // 2, HEIGHT // 2), 470, 180.0, -1)
    return cv2.GaussianBlur(sky, (0, 0), 1.5)


@pytest.mark.parametrize("what, draw, sky", [
    ("noise only", lambda layer: None, None),
    ("a twinkling star", lambda layer: cv2.circle(layer, (700, 500), 2, 60.0, -1), None),
    ("an out-of-focus insect: wide and soft", lambda layer: layer.__iadd__(
        cv2.GaussianBlur(cv2.line(np.zeros_like(layer), (500, 500), (650, 560), 60.0, 12), (0, 0), 3)), None),
    ("a streak peaking ≈ 10 DN: left to the model", lambda layer: cv2.line(layer, (300, 600), (420, 530), 18.0, 1),
     None),
    ("the sky brightening 2 % over the rim of the sky circle", lambda layer: layer.__iadd__(0.02 * rim_sky()),
     rim_sky()),
    ("a streak in the watermark box", lambda layer: cv2.line(layer, (40, 60), (300, 90), 80.0, 1), None),
])
def test_what_is_no_streak(what, draw, sky):
    assert streaks_of(draw, sky) == [], what


def pieces_of_the_whole_map(current: np.ndarray, previous: np.ndarray) -> list[tuple[int, float]]:
    """(area, mean signal) of each piece, read from the whole frame's signal map."""
    signal = signal_map(current, previous)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((signal > LEVEL).astype(np.uint8), connectivity=8)
    return sorted((int(stats[k, 4]), round(float(signal[labels == k].mean()), 4)) for k in range(1, count)
                  if stats[k, 4] >= PIECE_MIN_PX and max(stats[k, 2], stats[k, 3]) >= PIECE_MIN_PX)


@pytest.mark.parametrize("specks", [3, 40])      # few candidates: box by box; many (clouds): the whole frame at once
def test_pieces_are_those_of_the_whole_signal_map(specks):
    rng = np.random.default_rng(specks)
    base = rim_sky() * 0.3 + 20

    def draw(layer):
        cv2.line(layer, (300, 600), (420, 530), 100.0, 1)
        for x, y in rng.integers((450, 200), (1100, 800), (specks, 2)):
            cv2.ellipse(layer, (int(x), int(y)), (6, 2), float(rng.uniform(0, 180)), 0, 360, 40.0, -1)

    previous, current = night_sky(0, sky=base), night_sky(1, sky=with_light(base, draw))
    found = pieces(current, previous)
    assert (len(found) > PER_BOX_MAX) is (specks > PER_BOX_MAX)
    assert sorted((p.area, round(p.signal, 4)) for p in found) == pieces_of_the_whole_map(current, previous)


def test_large_components_match_opencvs_statistics():
    rng = np.random.default_rng(5)
    mask = (rng.random((HEIGHT, WIDTH)) < 0.1).astype(np.uint8)            # specks, a few dozen of them large
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    expected = [np.column_stack(np.nonzero(labels == k)[::-1]) for k in range(1, count)
                if stats[k, 4] >= PIECE_MIN_PX and max(stats[k, 2], stats[k, 3]) >= PIECE_MIN_PX]
    found = large_components(mask)
    assert len(expected) > 10 and len(found) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(found, expected))      # same order, same pixels in raster order
    assert large_components(np.zeros((20, 30), np.uint8)) == []


@pytest.mark.parametrize("shape", [(3, 4, 1024), (5, 7), (2, 1), (4, 2)])
def test_median_is_numpys(shape):
    values = np.random.default_rng(len(shape)).normal(size=shape).astype(np.float32)
    assert np.array_equal(median(values), np.median(values, axis=-1))


THIN = piece(600, 300, 640, 300)


@pytest.mark.parametrize("other, explained", [
    (piece(612, 292, 628, 292), True),            # the same spot: a twinkling star, a flickering light
    (piece(700, 302, 740, 302), True),            # further along the line: a satellite's next piece
    (piece(820, 303, 860, 303), True),            # ... a few of its lengths away (a short exposure)
    (piece(700, 330, 740, 330), False),           # parallel but off the line
    (piece(700, 250, 740, 350), False),           # across it
    (piece(1060, 300, 1100, 300), True),          # its twin, 11× its length away: a satellite under a short exposure
    (piece(1060, 300, 1080, 300), False),         # ... but half as long, that far: not its twin
    (piece(1060, 312, 1100, 312), False),         # ... or beside the line
    (piece(1300, 300, 1340, 300), False),         # on the line but far beyond reach
])
def test_what_a_neighbour_explains(other, explained):
    assert explains(other, THIN) is explained
    assert (unexplained_streaks([THIN], [[other]]) == []) is explained


LONG = piece(600, 300, 764, 300)                  # a long meteor, 165 px


@pytest.mark.parametrize("other, explained", [
    (piece(678, 294, 685, 297), False),           # a speck of noise at its centre (across its line) is not it
    (piece(670, 290, 693, 300), False),           # ... nor a piece under a third of its length there
    (piece(655, 285, 709, 309), True),            # a third as long or more, at the same spot: it is
])
def test_a_long_streak_is_explained_at_its_spot_only_by_a_piece_of_comparable_length(other, explained):
    assert explains(other, LONG) is explained
    assert (unexplained_streaks([LONG], [[other]]) == []) is explained


@pytest.mark.parametrize("other, explained", [
    (piece(900, 301, 910, 301, signal=5.0), False),   # a speck of noise on its line, further along, is not its next piece
    (piece(900, 301, 913, 301, signal=4.5), False),   # ... nor a 14 px one: noise leaves pieces up to 18 px long
    (piece(900, 301, 910, 301), True),                # ... a short bright one is (a plane's strobe: a light, not noise)
    (piece(800, 301, 830, 301, signal=5.0), True),    # ... and so is a faint one longer than noise leaves pieces
    (piece(660, 301, 670, 301, signal=5.0), False),   # ... nor is the speck at the streak's own spot
])
def test_a_long_streak_is_explained_along_its_line_by_no_speck_of_noise(other, explained):
    assert explains(other, LONG) is explained
    assert (unexplained_streaks([LONG], [[other]]) == []) is explained


def test_a_short_streak_is_explained_along_its_line_by_a_piece_a_third_as_long():
    short = piece(600, 300, 629, 300)             # 30 px: a faint 11 px piece is a third as long, so no mere speck
    assert explains(piece(650, 301, 660, 301, signal=5.0), short)
    assert not explains(piece(650, 301, 660, 301, signal=5.0), LONG)


def dot(cx: float, cy: float, signal: float = 30.0) -> Piece:
    """A plane's light under a short exposure: a round 12 px blob, no streak (not thin)."""
    return Piece(cx - 6, cy, cx + 5, cy, cx, cy, 12.0, 60, 6.0, signal)


DOT = dot(381, 766)


@pytest.mark.parametrize("before, after, tracked", [
    (dot(340, 729), dot(422, 803), True),             # evenly spaced: one light moving steadily
    (dot(340, 729), dot(450, 803), False),            # the middle one 14 px off the midpoint
    (dot(340, 729), dot(422, 803, signal=5.0), False),    # the next one 6× fainter: not the same light
    (dot(340, 729), piece(395, 790, 450, 816), False),    # ... or 5× longer
])
def test_a_piece_midway_between_pieces_like_it_in_both_neighbours_is_on_a_track(before, after, tracked):
    assert on_track(DOT, [[before], [after]]) is tracked
    assert not on_track(DOT, [[before]])              # one neighbour: no track


def test_a_thin_piece_is_on_a_track_only_along_it():
    step = ([piece(330, 720, 346, 734)], [piece(416, 798, 432, 812)])     # dashes along a 42° step
    assert on_track(piece(373, 759, 389, 773), list(step))                # along the step
    assert not on_track(piece(373, 766, 389, 766), list(step))            # across it: no track


def test_a_short_exposure_satellite_s_dash_on_a_track_is_not_reported():
    """Under a 1 s exposure a satellite leaves 16 px dashes 400 px apart: beyond any twin's reach, but evenly spaced."""
    dashes = [piece(200 + 400 * k, 300, 215 + 400 * k, 300) for k in range(3)]
    assert not explains(dashes[0], dashes[1]) and not explains(dashes[2], dashes[1])
    decided = decide_in_order([frame_result(k, 0.02 if k != 1 else 0.10, pieces=[dashes[k]]) for k in range(3)])
    assert (decided[1].flag, decided[1].detection) == ("satellite", False)
    alone = decide_in_order([frame_result(0, 0.02, pieces=[dashes[0]]), frame_result(1, 0.10, pieces=[dashes[1]]),
                             frame_result(2, 0.01)])
    assert (alone[1].flag, alone[1].detection) == ("", True)


def dash(cx: float, cy: float, signal: float = 20.0, length: float = 15.0, area: int = 60,
         direction=(0.47, 0.88)) -> Piece:
    """A satellite's piece under a 3.6 s exposure: 15 px, length² / area 3.75 (too round for a streak)."""
    dx, dy = (length - 1) / 2 * direction[0], (length - 1) / 2 * direction[1]
    return Piece(cx - dx, cy - dy, cx + dx, cy + dy, cx, cy, length, area, 2.9, signal)


DASH = dash(797, 529)


@pytest.mark.parametrize("other, follows_it", [
    (dash(754, 448), True),                        # 92 px further along its line: the satellite's next dash
    (dash(743, 454), False),                       # ... 12 px beside the line
    (dash(754, 448, direction=(0.88, -0.47)), False),     # ... across it
    (dash(754, 448, length=30.0, area=240), False),       # ... twice as long
    (dash(754, 448, signal=6.0), False),           # ... a faint piece of noise
    (dash(754, 448, signal=70.0), False),          # ... 3.5× brighter: another light (a meteor's dash)
    (dash(754, 448, area=94), False),              # ... a round blob (a twinkling star)
    (dash(754 - 43 * 20, 448 - 81 * 20), False),   # ... beyond reach
])
def test_a_dash_is_followed_by_an_adjacent_frame_s_dash_alike_on_its_line(other, follows_it):
    assert not DASH.is_streak
    assert follows(other, DASH) is follows_it
    assert not follows(other, THIN)                # a streak is left to `explains`


@pytest.mark.parametrize("speck_end", [1010, 1013])     # 11 and 14 px: noise leaves both
def test_a_bright_meteor_is_reported_though_a_speck_lies_on_its_line_in_the_previous_frame(speck_end):
    speck = piece(1000, 302, speck_end, 302, signal=5.5)
    meteor = piece(400, 300, 600, 300, signal=60.0)
    decided = decide_in_order([frame_result(0, 0.02, pieces=[speck]), frame_result(1, 0.10, pieces=[meteor]),
                               frame_result(2, 0.01)])
    assert [(r.flag, r.detection) for r in decided][1] == ("", True) and decided[1].streak == meteor.ends


def test_a_bright_meteor_is_reported_though_a_speck_lies_on_its_line_two_frames_back():
    speck = piece(800, 883, 813, 883, signal=4.4)         # a 14 px speck of noise, 200 px along the meteor's line
    meteor = piece(1000, 881, 1118, 885, signal=17.0)
    decided = decide_in_order([frame_result(0, 0.02, pieces=[speck]), frame_result(1, 0.02), frame_result(2, 0.10,
                               pieces=[meteor]), frame_result(3, 0.01)])
    assert [(r.flag, r.detection) for r in decided][2] == ("", True) and decided[2].streak == meteor.ends


def test_a_model_candidate_too_short_for_a_trail_is_placed_by_its_streak():
    """A short meteor the model finds leaves no trail in the 400×400 difference image: its scores row and its report
    had no place (a fifth of a shower night's detections), so the daily page could not tell it from a satellite's
    next piece. Its most prominent streak places it; a faint streak does not (noise makes those too)."""
    short = piece(700, 300, 725, 310, signal=12.0)
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.95, pieces=[piece(200, 500, 230, 500,
                               signal=7.0), short]), frame_result(2, 0.01), frame_result(3, 0.95, pieces=[FAINT]),
                               frame_result(4, 0.01)])
    assert [(r.detection, r.flag) for r in decided][1] == (True, "") and decided[1].streak == short.ends
    assert decided[3].detection and decided[3].streak is None


def test_a_streak_the_model_misses_is_reported_once_unexplained(tmp_path):
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.10, pieces=[THIN]),
                               frame_result(2, 0.01)])
    assert [(r.label, r.detection) for r in decided] == [("no-meteor", False), ("meteor", True), ("no-meteor", False)]
    assert decided[1].note == STREAK_NOTE + BELOW_THRESHOLD_NOTE and decided[1].streak == THIN.ends
    _, payload = detection_report(decided[1], settings(tmp_path, tmp_path / "m.onnx"), "20211110", None)
    assert payload["flag"] == STREAK and payload["score"] == pytest.approx(0.10)
    assert detection_line(decided[1]).endswith(f"score 0.100 [{STREAK_NOTE + BELOW_THRESHOLD_NOTE}]")


def test_a_satellite_s_pieces_in_consecutive_frames_are_flagged_not_reported():
    frames = [frame_result(k, 0.10, pieces=[piece(600 + 60 * k, 300, 640 + 60 * k, 300)]) for k in range(3)]
    assert [(r.flag, r.detection) for r in decide_in_order(frames)] == [("satellite", False)] * 3


def test_a_model_detection_is_unchanged_and_the_check_can_be_turned_off():
    frames = [frame_result(0, 0.02), frame_result(1, 0.10, pieces=[THIN]), frame_result(2, 0.97, pieces=[THIN])]
    decided = decide_in_order(frames, streak_check=False)
    assert [(r.label, r.detection) for r in decided] == [("no-meteor", False), ("no-meteor", False), ("meteor", True)]
    assert decided[2].note == ""
    checked = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.10, pieces=[THIN]), frame_result(2, 0.97)])
    assert [(r.detection, r.note) for r in checked[1:]] == [(True, STREAK_NOTE + BELOW_THRESHOLD_NOTE), (True, "")]


def test_a_steady_streak_alone_is_a_satellite_not_a_report():
    steady = dataclasses.replace(THIN, steady=True)
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.10, pieces=[steady]), frame_result(2, 0.01)])
    assert [(r.label, r.flag, r.detection) for r in decided][1] == ("meteor", "satellite", False)
    beside = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.10, pieces=[steady, piece(200, 700, 240, 690)]),
                              frame_result(2, 0.01)])
    assert (beside[1].flag, beside[1].detection) == ("", True)       # a meteor beside it is still reported
    assert beside[1].streak == piece(200, 700, 240, 690).ends


def test_a_piece_that_is_no_streak_makes_no_candidate():
    wide = piece(600, 300, 640, 300, width=6.0)
    faint = piece(600, 300, 640, 300, signal=5.0)
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.10, pieces=[wide, faint]),
                               frame_result(2, 0.01)])
    assert [r.label for r in decided] == ["no-meteor"] * 3


FAINT = piece(600, 300, 640, 300, signal=7.0)       # a streak's shape at 7 × the noise


@pytest.mark.parametrize("score, reported", [(0.70, True), (0.30, True), (0.24, False), (0.02, False)])
def test_a_faint_streak_is_reported_only_where_the_model_sees_something(score, reported, tmp_path):
    assert FAINT.is_faint_streak and not FAINT.is_streak
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, score, pieces=[FAINT]), frame_result(2, 0.01)])
    assert (decided[1].label, decided[1].detection) == (("meteor", True) if reported else ("no-meteor", False))
    if reported:
        assert decided[1].note == STREAK_NOTE + FAINT_NOTE and decided[1].streak == FAINT.ends
        _, payload = detection_report(decided[1], settings(tmp_path, tmp_path / "m.onnx"), "20211110", None)
        assert payload["flag"] == STREAK


@pytest.mark.parametrize("end, reported", [(619, True), (616, False), (612, False)])    # 20, 17 and 13 px long
def test_a_faint_streak_no_longer_than_noise_leaves_pieces_is_no_candidate(end, reported):
    short = piece(600, 300, end, 300, signal=7.0)
    assert short.is_faint_streak
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.80, pieces=[short]), frame_result(2, 0.01)])
    assert decided[1].detection is reported


def test_a_faint_streak_is_held_back_like_a_streak():
    """Explained by a neighbour's piece (a satellite), in a washed-out sky (the score means nothing), or beside a
    streak that a neighbour explains (the streak decides)."""
    explained = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.70, pieces=[FAINT]),
                                 frame_result(2, 0.01, pieces=[piece(700, 302, 740, 302, signal=6.5)])])
    assert (explained[1].flag, explained[1].detection) == ("satellite", False)
    washed = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.70, pieces=[FAINT], washed_out=True),
                              frame_result(2, 0.01)])
    assert (washed[1].label, washed[1].detection) == ("no-meteor", False)
    elsewhere = piece(200, 700, 240, 690, signal=7.0)
    beside = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.70, pieces=[THIN, elsewhere]),
                              frame_result(2, 0.01, pieces=[piece(700, 302, 740, 302)])])
    assert (beside[1].flag, beside[1].detection) == ("satellite", False)


@pytest.mark.parametrize("what, start, end, dn, thickness, glare", [
    ("a fireball dimmed by cloud: ≈ 4.7 px wide, ≈ 9 × the noise, 215 px", (300, 600), (500, 520), 30.0, 5, True),
    ("as wide, 45 px: too short for glare (a soft cloud edge)", (300, 600), (340, 584), 30.0, 5, False),
    ("215 px but ≈ 6 px wide", (300, 600), (500, 520), 30.0, 7, False),
    ("215 px, ≈ 4.7 px wide and far above the noise: a streak", (300, 600), (500, 520), 255.0, 5, False),
])
def test_a_long_line_too_wide_for_a_streak_is_a_glare_streak(what, start, end, dn, thickness, glare):
    found = pieces(*frame_pair(lambda layer: cv2.line(layer, start, end, dn, thickness)))
    assert len(found) == 1 and found[0].width > MAX_WIDTH_PX, what
    assert found[0].is_glare_streak is glare and found[0].is_faint_streak is glare, what


GLARE = piece(500, 300, 600, 300, signal=9.0, width=4.5)     # a 101 px line, 4.5 px wide, at 9 × the noise


@pytest.mark.parametrize("score, reported", [(0.70, True), (0.30, True), (0.24, False)])
def test_a_glare_streak_is_reported_like_a_faint_one(score, reported):
    assert GLARE.is_glare_streak and not GLARE.is_streak
    assert not dataclasses.replace(GLARE, x2=550.0, length=51.0, area=127).is_glare_streak     # half as long
    decided = decide_in_order([frame_result(0, 0.02), frame_result(1, score, pieces=[GLARE]), frame_result(2, 0.01)])
    assert (decided[1].label, decided[1].detection) == (("meteor", True) if reported else ("no-meteor", False))
    if reported:
        assert decided[1].note == STREAK_NOTE + FAINT_NOTE and decided[1].streak == GLARE.ends
    twin = decide_in_order([frame_result(0, 0.02), frame_result(1, score, pieces=[GLARE]),
                            frame_result(2, 0.01, pieces=[piece(700, 301, 800, 301, signal=9.0, width=4.5)])])
    assert twin[1].detection is False                    # its twin in the next frame: a satellite


def test_a_line_at_7_times_the_noise_is_a_faint_streak_and_empty_sky_has_none():
    faint = [p for p in pieces(*frame_pair(lambda layer: cv2.line(layer, (300, 600), (420, 530), 45.0, 1)))
             if p.is_faint_streak or p.is_streak]
    assert len(faint) == 1 and faint[0].is_faint_streak and not faint[0].is_streak, faint
    assert 6.0 <= faint[0].signal < MIN_SIGNAL and faint[0].length > 100
    bright = streaks_of(lambda layer: cv2.line(layer, (300, 600), (420, 530), 100.0, 1))
    assert len(bright) == 1 and not bright[0].is_faint_streak
    for seed in (10, 11, 12):
        assert not [p for p in pieces(night_sky(seed), night_sky(seed + 10)) if p.is_faint_streak or p.is_streak]


@pytest.fixture(scope="module")
def meteor_night(tmp_path_factory):
    """A 20-frame clear simulated night rich in meteors, with satellites, planes and insects."""
    return clear_night(tmp_path_factory.mktemp("streaks") / "nights", "20211113", frames=20, seed=43,
                       meteor=0.5, satellite=0.15, plane=0.05, insect=0.15)


def test_on_a_simulated_night_a_model_that_misses_everything_still_reports_meteors(meteor_night, tmp_path):
    """Satellites here are five times as frequent as on a real night; one that shows in a single frame (entering and
    leaving the sky circle within it) is reported like a meteor, as the model alone would."""
    truth = pd.read_csv(meteor_night / "ground_truth.csv").set_index("file")
    assert blind_detections(tmp_path, meteor_night, streak_check=False, fireball_check=False) == []
    rows = blind_detections(tmp_path, meteor_night, streak_check=True, fireball_check=False)
    found = [row["file"] for row in rows]
    meteors = [name for name in found if truth.loc[name, "label"] == "meteor"]
    assert len(meteors) >= 4 and len(meteors) >= 0.75 * len(found), truth.loc[found, "events"]
    assert all(row["note"] == STREAK_NOTE + BELOW_THRESHOLD_NOTE and row["x1"] for row in rows)


def line(start, end, dn: float):
    """A drawing: a 1 px line of `dn` from `start` to `end`."""
    return lambda layer: cv2.line(layer, start, end, dn, 1, cv2.LINE_AA)


def cloud(layer):
    """A drawing: a soft cloud 60 px across, 25 DN at its middle."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    layer += 25 * np.exp(-((xs - 640) ** 2 + (ys - 400) ** 2) / 60 ** 2)


TRAIN_START, TRAIN_END = (560, 430), (720, 370)     # one object's trail in the candidate frame


def climbing(t):
    """Brightening along its trail, as a train's first object climbing out of the haze low in the sky (or a
    meteor): no satellite's steady light."""
    return 0.3 + 0.7 * t


def cloud_bank_beside(layer):
    """A drawing: a lit cloud bank 40 DN bright along one side of the trail, from 5 to 27 px off it, its edge soft
    (σ 3 px)."""
    (x1, y1), (x2, y2) = TRAIN_START, TRAIN_END
    normal = np.array([y1 - y2, x2 - x1]) / np.hypot(x2 - x1, y2 - y1)
    start, end = (tuple(int(v) for v in np.round(np.array(point) + 16 * normal)) for point in (TRAIN_START, TRAIN_END))
    bank = np.zeros_like(layer)
    cv2.line(bank, start, end, 40.0, 21)
    layer += cv2.GaussianBlur(bank, (0, 0), 3)


def three_frames(*following, beside=None):
    """(previous, current, next) gray frames: the current one holds a streak brightening along it; the next one
    what `following` draws; the previous and the current one what `beside` draws."""
    sky = np.full((HEIGHT, WIDTH), 30.0, np.float32)
    earlier = sky if beside is None else with_light(sky, beside)
    trail = light_along(TRAIN_START, TRAIN_END, climbing, 100.0)
    return (night_sky(0, sky=earlier), night_sky(1, sky=with_light(earlier, trail)),
            night_sky(2, sky=with_light(sky, lambda layer: [draw(layer) for draw in following])))


def persistent_train(share: float, thickness: int = 1):
    """A drawing: a meteor's persistent train glowing on along the streak of `three_frames`, `share` of its light,
    `thickness` px wide."""
    return light_along(TRAIN_START, TRAIN_END, climbing, 100.0 * share, thickness)


def saved_again(frame: np.ndarray, quality: int) -> np.ndarray:
    """The frame as a camera saving it as JPEG at this quality writes it."""
    return cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)


@pytest.mark.parametrize("what, following, lit_again", [
    ("the next objects of a train light the same path", [line(TRAIN_START, TRAIN_END, 80.0)], True),
    ("a fainter one lights most of it", [line((580, 422), TRAIN_END, 60.0)], True),
    ("a meteor: the path is dark again", [], False),
    ("the light moved on along its line (a lone satellite)", [line((760, 355), (920, 295), 100.0)], False),
    ("a cloud drifts over the path", [cloud], False),
    ("a lit cloud bank beside the path drifts off: its sides darken, the path does not stand out", [], False),
    ("a meteor's persistent train glows on: 0.6 of its light, 1 px wide", [persistent_train(0.6)], False),
    ("... a fifth of it, 3 px wide", [persistent_train(0.2, 3)], False),
    ("... 0.3 of it, 3 px wide", [persistent_train(0.3, 3)], False),
])
def test_a_streak_s_path_lit_again_in_the_next_frame_is_a_train_s(what, following, lit_again):
    previous, current, nxt = three_frames(*following, beside=cloud_bank_beside if "beside" in what else None)
    [trail] = [found for found in pieces(current, previous) if found.is_streak or found.is_faint_streak]
    assert relit(trail, *(ridge_frame(frame) for frame in (previous, current, nxt))) is lit_again


def test_a_streak_too_short_to_compare_its_light_with_the_next_frame_s_is_never_relit():
    """Under RELIT_AVERAGE_PX averages along its line a streak's light cannot be told from a lingering copy of it:
    it is not marked relit, as a meteor with a persistent train is not."""
    trail = the_streak(*three_frames()[:2])
    step_x, step_y = (trail.x2 - trail.x1) / trail.span, (trail.y2 - trail.y1) / trail.span
    short = dataclasses.replace(trail, x2=trail.x1 + 14 * step_x, y2=trail.y1 + 14 * step_y)
    dimming = light_along((round(trail.x1), round(trail.y1)), (round(short.x2), round(short.y2)), lambda t: 1 - 0.8 * t,
                          120.0)                                     # the next light fades along it: no copy
    frames = [ridge_frame(frame) for frame in three_frames(dimming)]
    assert not relit(short, *frames)


def test_a_frame_saved_twice_does_not_light_its_streak_s_path_again():
    previous, current, _ = three_frames()
    current = saved_again(current, 95)
    again = saved_again(current, 90)                                # the same exposure, compressed afresh
    assert not same_picture(again, current)
    [trail] = [found for found in pieces(current, previous) if found.is_streak or found.is_faint_streak]
    assert not relit(trail, *(ridge_frame(frame) for frame in (previous, current, again)))


def frames_on_disk(tmp_path, frames) -> list:
    """Scored frames written as PNG, the first of `frames` twice (a candidate among them scored 0.02 like the rest),
    each scored against the one before."""
    results = [frame_result(k, 0.02) for k in range(len(frames) + 1)]
    files = [tmp_path / result.file.name for result in results]
    for file, frame in zip(files, (frames[0], *frames)):
        cv2.imwrite(str(file), frame)
    return [dataclasses.replace(result, file=file, previous=files[k - 1] if k else None)
            for k, (result, file) in enumerate(zip(results, files))]


def the_streak(previous: np.ndarray, current: np.ndarray) -> Piece:
    [trail] = [found for found in pieces(current, previous) if found.is_streak]
    return trail


def train_frames_on_disk(tmp_path, lit_again: bool) -> tuple[list, Piece]:
    """Four scored frames written as PNG (the candidate third, scored 0.02 like the rest) and the candidate's streak:
    the next frame lights its path again, or not (a meteor)."""
    frames = three_frames(*([line(TRAIN_START, TRAIN_END, 80.0)] if lit_again else []))
    trail = the_streak(*frames[:2])
    assert not trail.own_light                                      # no steady light: the streak check reports it
    return frames_on_disk(tmp_path, frames), trail


@pytest.mark.parametrize("lit_again, flag, reported", [(True, "satellite", False), (False, "", True)])
def test_a_streak_candidate_whose_path_the_next_frame_lights_again_is_held_back(tmp_path, lit_again, flag, reported):
    results, trail = train_frames_on_disk(tmp_path, lit_again)
    results[2] = dataclasses.replace(results[2], score=0.10, pieces=[trail])
    decided = decide_in_order(results)
    assert (decided[2].flag, decided[2].detection) == (flag, reported)


@pytest.mark.parametrize("lit_again, flag, reported", [(True, "satellite", False), (False, "", True)])
def test_a_model_candidate_is_held_back_once_the_streak_whose_path_is_lit_again_is_erased(tmp_path, lit_again, flag,
                                                                                          reported):
    results, trail = train_frames_on_disk(tmp_path, lit_again)
    diff = np.zeros((400, 400), np.uint8)
    (x1, y1), (x2, y2) = ((round(x * 400 / WIDTH), round(y * 400 / HEIGHT)) for x, y in (TRAIN_START, TRAIN_END))
    cv2.line(diff, (x1, y1), (x2, y2), 255, 2)
    results[2] = dataclasses.replace(results[2], score=0.97, diff=diff, pieces=[trail])
    decided = decide_in_order(results, rescore=lambda image: 0.97 if image.any() else 0.2)
    assert (decided[2].flag, decided[2].detection) == (flag, reported)


@pytest.mark.parametrize("what", ["a persistent train glows on in the next frame", "the camera saved its frame twice"])
def test_a_meteor_whose_copy_lingers_in_the_next_frame_is_reported(tmp_path, what):
    previous, current, following = three_frames(persistent_train(0.6))
    if "twice" in what:
        current = saved_again(current, 95)
        following = saved_again(current, 90)
    results = frames_on_disk(tmp_path, (previous, current, following))
    results[2] = dataclasses.replace(results[2], score=0.10, pieces=[the_streak(previous, current)])
    decided = decide_in_order(results)
    assert (decided[2].flag, decided[2].detection) == ("", True), what


def lit_again_candidate(tmp_path) -> list:
    """`train_frames_on_disk` with its path lit again, the third frame a thin-streak candidate."""
    results, trail = train_frames_on_disk(tmp_path, lit_again=True)
    results[2] = dataclasses.replace(results[2], score=0.10, pieces=[trail])
    return results


def test_a_washed_out_next_frame_does_not_light_a_path_again(tmp_path):
    results = lit_again_candidate(tmp_path)
    results[3] = dataclasses.replace(results[3], washed_out=True)   # an exposure change: every line brightens
    decided = decide_in_order(results)
    assert (decided[2].flag, decided[2].detection) == ("", True)


def test_only_the_very_next_frame_lights_a_path_again(tmp_path):
    frames = three_frames(line(TRAIN_START, TRAIN_END, 80.0))
    results = frames_on_disk(tmp_path, (*frames[:2], frames[0], frames[2]))
    results[2] = dataclasses.replace(results[2], score=0.10, pieces=[the_streak(*frames[:2])])
    results[3] = dataclasses.replace(results[3], score=None, flag="skipped")   # not scored: a frame between
    decided = decide_in_order(results)
    assert (decided[2].flag, decided[2].detection) == ("", True)


def test_a_frame_that_cannot_be_read_leaves_the_path_unjudged(tmp_path, caplog):
    results = lit_again_candidate(tmp_path)
    results[1].file.write_bytes(b"not a JPEG")                       # the candidate's previous frame
    decided = decide_in_order(results)
    assert (decided[2].flag, decided[2].detection) == ("", True)
    assert "the next frame's light on its streaks not read" in caplog.text


def fireball_frames() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(previous, current, next): a saturated fireball along the streak of `three_frames`, and in the next frame a
    train lighting its path and beyond, 200 DN bright, 3 px wide."""
    sky = np.full((HEIGHT, WIDTH), 30.0, np.float32)
    return (night_sky(0, sky=sky),
            night_sky(1, sky=with_light(sky, lambda layer: cv2.line(layer, TRAIN_START, TRAIN_END, 255.0, 5))),
            night_sky(2, sky=with_light(sky, lambda layer: cv2.line(layer, (520, 445), (760, 355), 200.0, 3))))


@pytest.mark.parametrize("fireball_check", [True, False])
def test_a_fireball_s_path_lit_again_is_left_to_the_fireball_check_on_or_off(tmp_path, fireball_check):
    frames = fireball_frames()
    [trail] = [found for found in pieces(*frames[1::-1]) if found.is_streak]
    assert relit(trail, *(ridge_frame(frame) for frame in frames))     # lit again, as a train would light it
    results = frames_on_disk(tmp_path, frames)
    results[2] = dataclasses.replace(results[2], score=0.10, pieces=[trail], bright=bright_streak(*frames[1::-1]))
    assert results[2].bright is not None
    candidate = results[2] if fireball_check else dataclasses.replace(results[2], bright=None)   # off: not kept
    marked = Decider(0.85, fireball_check=fireball_check).marked_relit(candidate, results[3], [])
    assert not any(piece.relit for piece in marked)


def test_with_the_fireball_check_off_a_fireball_whose_path_is_lit_again_is_reported(tmp_path):
    frames = fireball_frames()
    results = frames_on_disk(tmp_path, frames)
    results[2] = dataclasses.replace(results[2], score=0.10, pieces=[the_streak(*frames[:2])],
                                     bright=bright_streak(*frames[1::-1]))
    decided = decide_in_order(results, fireball_check=False)
    assert (decided[2].flag, decided[2].detection) == ("", True)
