"""A plane's wingtip lights (`gualta.wingtips`): red along one side of its trail and green along the other, told from
a meteor's one colour and a lens' colour fringes; read from JPEG frames by the client and held back like a
satellite's steady light."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from gualta import wingtips
from gualta.detect import FrameResult, detection_line, prepare_batch, streak_pieces
from gualta.frames import NightFrames
from gualta.preprocess import to_gray
from gualta.streak import explained_streaks, pieces, unexplained_streaks
from helpers_client import decide_in_order, frame_result, piece

HEIGHT, WIDTH = 976, 1304
START, END = (300, 400), (520, 470)          # a trail 230 px long, not along a row or a column
WHITE, RED, GREEN, BLUE = (1.0, 1.0, 1.0), (0.1, 0.15, 1.0), (0.2, 1.0, 0.3), (1.0, 0.2, 0.1)    # BGR
METEOR_TINT = (0.85, 1.0, 0.8)
CYAN = (1.0, 0.6, 0.1)                       # BGR: a lens' blue-green fringe


def sky(seed: int) -> np.ndarray:
    """A dark BGR sky in the lens circle, black around it, with fresh camera noise (σ 3 DN in each channel)."""
    rng = np.random.default_rng(seed)
    circle = cv2.circle(np.zeros((HEIGHT, WIDTH), np.float32), (WIDTH // 2, HEIGHT // 2), HEIGHT // 2, 30.0, -1)
    return circle[..., None] + rng.normal(0, 3, (HEIGHT, WIDTH, 3)).astype(np.float32)


def steady(t: float) -> float:
    return 1.0


def strobes(t: float) -> float:
    """A plane's white light: a strobe flash every tenth of its trail over a dim steady glow."""
    return 1.0 if (10 * t) % 1 < 0.2 else 0.1


def meteor_light(t: float) -> float:
    """A meteor flares up and fades within its streak."""
    return float(np.sin(np.pi * t) ** 2)


def line_beside(layer: np.ndarray, across: float, colour, dn: float, light=steady) -> None:
    """A 1 px line of `colour` × dn × light(t) (t = 0…1 along it) from START to END, shifted `across` px to its left
    (negative: right)."""
    (x1, y1), (x2, y2) = START, END
    length = np.hypot(x2 - x1, y2 - y1)
    nx, ny = (y2 - y1) / length * across, -(x2 - x1) / length * across
    shift, steps = 4, 60                        # cv2.line's fixed-point bits: sub-pixel positions
    at = lambda t: (round((x1 + t * (x2 - x1) + nx) * 2 ** shift), round((y1 + t * (y2 - y1) + ny) * 2 ** shift))
    for k in range(steps):
        a, b = k / steps, (k + 1) / steps
        cv2.line(layer, at(a), at(b), tuple(dn * light((a + b) / 2) * c for c in colour), 1, cv2.LINE_AA, shift)


def frame_with(*lines) -> np.ndarray:
    """An 8-bit BGR frame: sky(1) plus the lines (across, colour, dn[, light]), softened like a lens (σ 0.7 px)."""
    layer = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    for line in lines:
        line_beside(layer, *line)
    return np.clip(sky(1) + cv2.GaussianBlur(layer, (0, 0), 0.7), 0, 255).astype(np.uint8)


def empty_frame(seed: int = 0) -> np.ndarray:
    return np.clip(sky(seed), 0, 255).astype(np.uint8)


PLANE = [(0.0, WHITE, 60.0), (1.5, RED, 25.0), (-1.5, GREEN, 25.0)]


def marked_pieces(current: np.ndarray, previous: np.ndarray) -> list:
    """The streak check's pieces of the pair (read in gray), marked by the colour frames."""
    return wingtips.marked(pieces(to_gray(current), to_gray(previous)), current, previous)


def the_trail(found: list):
    """The one piece worth reading, most of the drawn trail (a meteor's faint ends do not show)."""
    trail = [p for p in found if wingtips.worth_reading(p)]
    assert len(trail) == 1 and trail[0].length > 150, found
    return trail[0]


@pytest.mark.parametrize("what, lines, lights", [
    ("a plane: red on one side, green on the other", PLANE, True),
    ("a plane flying the other way", [(0.0, WHITE, 60.0), (-1.5, RED, 25.0), (1.5, GREEN, 25.0)], True),
    ("a meteor, one tint across its width", [(0.0, METEOR_TINT, 60.0)], False),
    ("a white line with a lens' colour fringes: red one side, blue the other",
     [(0.0, WHITE, 60.0), (1.5, RED, 25.0), (-1.5, BLUE, 25.0)], False),
    ("... or red one side, cyan the other: greener than red but bluer than green, no green light",
     [(0.0, WHITE, 60.0), (1.5, RED, 25.0), (-1.5, CYAN, 25.0)], False),
    ("red on both sides", [(0.0, WHITE, 60.0), (1.5, RED, 25.0), (-1.5, RED, 25.0)], False),
    ("lights too faint for the noise", [(0.0, WHITE, 60.0), (1.5, RED, 0.4), (-1.5, GREEN, 0.4)], False),
])
def test_wingtip_lights_are_red_on_one_side_and_green_on_the_other(what, lines, lights):
    assert the_trail(marked_pieces(frame_with(*lines), empty_frame())).wingtips is lights, what


def test_lights_too_weak_beside_a_bright_trail_are_not_a_plane_s():
    """Lights under 2 % of the trail's brightening pass the noise (a long average) but not the share."""
    current = frame_with((0.0, WHITE, 400.0), (1.5, RED, 8.0), (-1.5, GREEN, 8.0))
    trail = the_trail(pieces(to_gray(current), to_gray(empty_frame())))
    difference = wingtips.colour_difference(current, empty_frame())
    contrast = wingtips.light_contrast(difference, trail)
    assert contrast >= wingtips.MIN_NOISE * wingtips.average_noise(difference, trail)
    assert contrast < wingtips.MIN_SHARE * wingtips.brightening(difference, trail)
    assert not wingtips.has_lights(difference, trail)


def test_only_pieces_worth_reading_are_read():
    assert wingtips.worth_reading(piece(300, 400, 340, 400, signal=20.0))
    assert not wingtips.worth_reading(piece(300, 400, 305, 400, signal=20.0))      # a speck
    assert not wingtips.worth_reading(piece(300, 400, 340, 400, signal=6.0))       # too faint for lights to show


def write(folder, frames: list[np.ndarray]) -> list:
    """The frames as a night's JPEGs (quality 90, the camera's chroma subsampling), 30 s apart."""
    paths = []
    for k, image in enumerate(frames):
        path = folder / f"image-20211110{22 + (k * 30) // 3600:02d}{(k * 30) // 60 % 60:02d}{k * 30 % 60:02d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


@pytest.mark.parametrize("what, lines, flag, reported", [
    ("a plane the model misses", [(0.0, WHITE, 150.0, strobes), (1.5, RED, 25.0), (-1.5, GREEN, 25.0)],
     "satellite", False),
    ("a meteor the model misses", [(0.0, METEOR_TINT, 90.0, meteor_light)], "", True),
])
def test_the_client_reads_the_lights_from_the_jpegs_and_holds_a_plane_back(tmp_path, what, lines, flag, reported):
    paths = write(tmp_path, [empty_frame(0), frame_with(*lines), empty_frame(2)])
    prepared = prepare_batch(NightFrames(paths), paths, "diff")
    results = [result for result, _ in prepared]
    for result in results:
        result.score = 0.0 if result.previous is None else 0.05
    trail = [p for p in results[1].pieces if wingtips.worth_reading(p)]    # a strobed trail comes in pieces
    assert trail and {(p.wingtips, p.steady) for p in trail} == {(not reported, False)}, what   # lights alone
    decided = decide_in_order(results[1:])
    assert (decided[0].flag, decided[0].detection) == (flag, reported), what


def test_a_frame_whose_colour_cannot_be_read_keeps_its_pieces_unmarked(tmp_path, caplog):
    current, previous = frame_with(*PLANE), empty_frame()
    result = FrameResult(tmp_path / "image-20211110220030.jpg", tmp_path / "image-20211110220000.jpg")
    with caplog.at_level(logging.WARNING):
        found = streak_pieces(result, to_gray(current), to_gray(previous))
    assert not any(p.wingtips for p in found) and any(wingtips.worth_reading(p) for p in found)
    assert "wingtip lights not read" in caplog.text and "image-20211110220030.jpg" in caplog.text


PLANE_PIECE = dataclasses.replace(piece(600, 300, 700, 320, signal=25.0), wingtips=True)
METEOR_PIECE = piece(200, 700, 260, 680, signal=25.0)


def test_a_streak_with_wingtip_lights_is_explained_by_its_own_light():
    assert explained_streaks([PLANE_PIECE, METEOR_PIECE], [[], []]) == [PLANE_PIECE]
    assert unexplained_streaks([PLANE_PIECE, METEOR_PIECE], [[], []]) == [METEOR_PIECE]


def test_a_plane_alone_is_held_back_and_a_meteor_beside_it_is_still_reported():
    alone = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.10, pieces=[PLANE_PIECE]),
                             frame_result(2, 0.01)])
    assert (alone[1].label, alone[1].flag, alone[1].detection) == ("meteor", "satellite", False)
    assert detection_line(alone[1]).endswith("[satellite: a satellite or a plane: it continues in an adjacent frame "
                                             "(or two back) or its own light shows it]")
    beside = decide_in_order([frame_result(0, 0.02), frame_result(1, 0.10, pieces=[PLANE_PIECE, METEOR_PIECE]),
                              frame_result(2, 0.01)])
    assert (beside[1].flag, beside[1].detection, beside[1].streak) == ("", True, METEOR_PIECE.ends)


def test_the_client_benchmark_times_the_reading_only_where_a_piece_is_worth_it(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "bench"))
    import client as bench_client

    paths = write(tmp_path, [empty_frame(0), frame_with(*PLANE), empty_frame(2)])
    found = [pieces(*pair) for pair in bench_client.gray_pairs(paths)]
    read, ms = bench_client.wingtip_reading(paths, found)
    assert read == 1 and ms > 0          # the plane brightens the second pair only (the difference saturates at 0)
