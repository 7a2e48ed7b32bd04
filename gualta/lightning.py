"""The lightning check: a model's candidate made by a flash lighting up the clouds rather than by a meteor.

A flash from a storm beyond the horizon lights a wide, smooth region of cloud for a fraction of a second: in the
thresholded difference it is one large white blob, which the model may score as a meteor, and neither neighbour
shows it (the flash is over by the next frame), so the cloud check cannot explain it. Nothing else the sky does in
30 s brightens so wide a region so evenly — drifting clouds brighten along their edges and darken beside them, a
meteor or a fireball's glare is narrow — and the flash falls back in the next frame:

    gray current − previous, each shrunk BLOCK_PX times (INTER_AREA) and median-filtered over MEDIAN_BLOCKS blocks
    (stars, meteors and a fireball's streak go) → the brightening map; its largest region of the sky ≥ LIT_DN
    brighter, covering ≥ LIT_SHARE of the sky, is the lit region → the next frame's brightening ≤ −FALL_DN over
    ≥ FALL_SHARE of it: a flash → the lit region and its fading edge (≥ EDGE_DN) erased from the difference image
    and the frame scored again by the model: below the threshold, the candidate was the flash.

A meteor elsewhere in the frame keeps its score once the lit region is erased; one seen inside it keeps its frame
by its streak, as the client asks only about a candidate with no bright streak and no streak that the adjacent
differences do not account for (`gualta.detect.Decider.lit_by_lightning`). A bolt is a bright streak of its own: a
saturated line in one frame, as a fireball's is, but jagged and branched where a fireball's path is straight (a lens
bends it into a smooth arc at most; a burst, a flare or a broad head is round about it). A bright streak whose
centre line wiggles (`fireball.wiggle` ≥ BOLT_WIGGLE_PX) in a frame with a lit region that falls back is a bolt, and
explains its candidate unless the frame has a streak beside it that the neighbours do not account for or, for a
model's candidate, the frame still scores as a meteor once the bolt's region (`bolt_mask`) and the lit region are
erased (`gualta.detect.Decider.bolt_in_a_flash`). The sky is what the previous frame shows SKY_MARGIN_DN above its
darkest 5 % (not the black around the lens circle).
"""
from __future__ import annotations

import cv2
import numpy as np

from gualta import trails
from gualta.fireball import Streak
from gualta.preprocess import SKY_MARGIN_DN

BLOCK_PX = 8                 # the brightening map's pixel: 8×8 frame pixels
MEDIAN_BLOCKS = 5            # median over 5×5 blocks (40 px): thin and narrow things do not survive it
LIT_DN = 6                   # a lit block is at least this much brighter than in the previous frame
LIT_SHARE = 0.05             # the lit region covers at least this share of the sky (drifting clouds ≤ 0.003)
FALL_DN = 3                  # the next frame is at least this much darker there ...
FALL_SHARE = 0.5             # ... over at least this share of the lit region: the flash is over
EDGE_DN = 2                  # the lit region's fading edge, erased with it, is at least this much brighter
BOLT_WIGGLE_PX = 1.0         # a bolt's bright streak's centre line strays at least this far from a smooth course
BOLT_MARGIN_PX = 10          # a bolt's region: its bright pixels and this far around them (its glow), full frame


def shrunk(frame: np.ndarray) -> np.ndarray:
    """A gray frame shrunk BLOCK_PX times (INTER_AREA): a block a pixel, as the brightening map and the cloud check's
    restless sky (`gualta.clouds.restless_mask`) read it."""
    size = (max(1, frame.shape[1] // BLOCK_PX), max(1, frame.shape[0] // BLOCK_PX))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def brightening(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """How much each BLOCK_PX block of the sky brightened since the previous frame (DN, float32, median-filtered;
    NaN outside the sky)."""
    return shrunk_brightening(shrunk(current), shrunk(previous))


def shrunk_brightening(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """`brightening` of two frames already `shrunk`."""
    now, before = current.astype(np.float32), previous.astype(np.float32)
    change = cv2.medianBlur(now - before, MEDIAN_BLOCKS)
    sky = before > np.percentile(before, 5) + SKY_MARGIN_DN
    return np.where(sky, change, np.nan).astype(np.float32)


def lit_region(change: np.ndarray) -> np.ndarray | None:
    """The brightening map's largest region ≥ LIT_DN brighter (bool, its shape) when it covers at least LIT_SHARE of
    the sky (the map's blocks that are not NaN), else None."""
    lit = (change >= LIT_DN).astype(np.uint8)
    sky = np.count_nonzero(~np.isnan(change))
    if sky == 0 or np.count_nonzero(lit) < LIT_SHARE * sky:
        return None
    _, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < LIT_SHARE * sky:
        return None
    return labels == largest


def falls_back(region: np.ndarray, next_change: np.ndarray) -> bool:
    """Whether the next frame's brightening map (the same shape) is ≤ −FALL_DN over at least FALL_SHARE of the lit
    region: the light was gone by the next exposure."""
    return next_change.shape == region.shape and np.mean(next_change[region] <= -FALL_DN) >= FALL_SHARE


def lit_mask(change: np.ndarray, region: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The lit region with its fading edge (the blocks ≥ EDGE_DN brighter connected to it: the thresholded difference
    holds those too), grown by a block, as a mask of a difference image of `shape` (255 inside; the frame is stretched
    to it as the difference image is)."""
    labels = cv2.connectedComponents((change >= EDGE_DN).astype(np.uint8), connectivity=8)[1]
    edged = np.isin(labels, np.unique(labels[region])) & (labels > 0)
    grown = cv2.dilate(edged.astype(np.uint8), np.ones((3, 3), np.uint8))
    return cv2.resize(grown, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) * 255


def is_bolt(streak: Streak) -> bool:
    """Whether the fireball check's bright streak strays from a smooth course as a lightning bolt's jagged, branched
    path does (a fireball's streak follows one: `fireball.wiggle`)."""
    return streak.wiggle >= BOLT_WIGGLE_PX


def bolt_mask(bolt: Streak, frame_size: tuple[int, int]) -> np.ndarray:
    """The bolt's region — its bright streak's pixels (`Streak.points`) and BOLT_MARGIN_PX around them — in its
    width×height frame (`frame_size`): 255 there, else 0."""
    width, height = frame_size
    mask = np.zeros((height, width), np.uint8)
    mask[bolt.points[:, 1], bolt.points[:, 0]] = 255   # a bolt has its points: one known by its ends has no wiggle
    size = 2 * BOLT_MARGIN_PX + 1
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))


def scaled_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A frame's 0/255 mask in an image of `shape` over that frame: 255 wherever it covers any of a pixel."""
    if mask.shape != tuple(shape[:2]):
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return np.where(mask > 0, 255, 0).astype(np.uint8)


def on_bolt(ends: tuple[float, float, float, float], mask: np.ndarray) -> bool:
    """Whether a streak with these full-frame ends lies on a bolt: its ends and its middle in the bolt's region
    (`bolt_mask`)."""
    x1, y1, x2, y2 = ends
    points = np.array([(x1, y1), ((x1 + x2) / 2, (y1 + y2) / 2), (x2, y2)])
    return bool((mask[trails.pixels_at(points, mask.shape)] > 0).all())
