"""A plane's wingtip lights: beside its white strobes a plane carries a steady red light on one wingtip and a green one
on the other, which draw a red line along one side of its trail and a green line along the other. A meteor's or a
satellite's trail has one colour across its width.

A streak piece (`worth_reading`: a streak's length and brightness, length² / area at least a dash's) has wingtip lights
when, in the colour difference current − previous averaged along its line (a chain of pieces, `streak.chains`, along the
whole chain) at 1–3 px on either side, one side is red (its red above both its green and its blue) and the other green
(its green above both its red and its blue), the smaller of the two excesses at least MIN_NOISE × the noise of such an
average (the red − green difference's spread on lines 10 and 12 px beside the piece, over √length) and MIN_SHARE of the
piece's own brightening. A fisheye lens' lateral chromatic aberration fringes a white line red on one side but blue, not
green, on the other, so the green side must be greener than blue as well as red. The client holds a streak with wingtip
lights for a plane, as it holds a steady one for a satellite (`streak.Piece.own_light`).
"""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from gualta.streak import DASH_MIN_ELONGATION, MIN_LENGTH_PX, MIN_SIGNAL, Piece, chains, points_along, spanning

SIDE_PX = (1.0, 1.5, 2.0, 2.5, 3.0)     # where the lights are read, this far either side of the piece's line
CORE_PX = (-0.5, 0.0, 0.5)              # the piece's own brightening: the brightest of these lines
NOISE_PX = (10.0, 12.0)                 # the noise: lines this far either side
NOISE_FLOOR_DN = 1.0                    # a spread never taken below this (a flat, saturated sky)
MIN_NOISE = 6.0                         # the weaker light at least this × the noise of its average ...
MIN_SHARE = 0.02                        # ... and this share of the piece's brightening
BLUE, GREEN, RED = 0, 1, 2              # OpenCV's channel order


def worth_reading(piece: Piece) -> bool:
    """A piece that could show a plane's lights: a streak's length and brightness, and at least a dash's
    elongation (a plane's strobes under a short exposure)."""
    return (piece.length >= MIN_LENGTH_PX and piece.signal >= MIN_SIGNAL
            and piece.elongation >= DASH_MIN_ELONGATION)


def colour_difference(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """current − previous of two BGR frames, signed, in float32."""
    return current.astype(np.float32) - previous.astype(np.float32)


def along_line(difference: np.ndarray, piece: Piece, across: tuple[float, ...]) -> np.ndarray:
    """The difference sampled (bilinear) every pixel along the piece's line at each `across` offset: shape
    (offsets, samples, channels); the frame's edge is repeated beyond it."""
    along = np.arange(0.0, piece.span + 1.0)
    points = np.stack([points_along(piece, along, offset) for offset in across]).astype(np.float32)
    sampled = cv2.remap(difference, points[..., 0], points[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(len(across), len(along), -1)


def excess(side: np.ndarray, colour: int) -> float:
    """How far one colour stands above both others on one side: the largest, over the side's offsets, of that
    channel's mean minus the larger of the other two (side: offsets × channels)."""
    others = np.delete(side, colour, axis=1).max(axis=1)
    return float((side[:, colour] - others).max())


def light_contrast(difference: np.ndarray, piece: Piece) -> float:
    """Red on one side of the piece and green on the other: the smaller of the two excesses, for the better of the
    two ways round (negative when the sides are not red and green)."""
    left = along_line(difference, piece, tuple(-x for x in SIDE_PX)).mean(axis=1)
    right = along_line(difference, piece, SIDE_PX).mean(axis=1)
    return max(min(excess(left, RED), excess(right, GREEN)), min(excess(left, GREEN), excess(right, RED)))


def average_noise(difference: np.ndarray, piece: Piece) -> float:
    """The noise of a red − green average along the piece: the spread on lines NOISE_PX either side, over
    √samples."""
    beside = along_line(difference, piece, tuple(x for d in NOISE_PX for x in (-d, d)))
    spread = max(float((beside[..., RED] - beside[..., GREEN]).std()), NOISE_FLOOR_DN)
    return spread / np.sqrt(beside.shape[1])


def brightening(difference: np.ndarray, piece: Piece) -> float:
    """The piece's own brightening: the mean over its length of the channels' mean, on the brightest core line."""
    return float(along_line(difference, piece, CORE_PX).mean(axis=(1, 2)).max())


def has_lights(difference: np.ndarray, piece: Piece) -> bool:
    """Whether a plane's red and green wingtip lights run beside the piece (see the module docstring)."""
    contrast = light_contrast(difference, piece)
    return (contrast >= MIN_NOISE * average_noise(difference, piece)
            and contrast >= MIN_SHARE * max(brightening(difference, piece), 0.0))


def marked(pieces: list[Piece], current: np.ndarray, previous: np.ndarray) -> list[Piece]:
    """The pieces in their order, those of a trail with wingtip lights marked `wingtips` (current, previous: BGR). A
    trail broken into a chain of pieces (a plane's strobe flashes, `streak.chains`) is read whole, if any of its
    pieces is worth reading."""
    difference = colour_difference(current, previous)
    lit = {id(piece) for chain in chains(pieces) if any(worth_reading(piece) for piece in chain)
           and has_lights(difference, spanning(chain)) for piece in chain}
    return [replace(piece, wingtips=True) if id(piece) in lit else piece for piece in pieces]
