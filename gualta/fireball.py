"""The fireball check: a streak far brighter than anything else the sky does in 30 s, in one frame only.

The thesis' difference image thresholds at 3.5 DN, so a fireball's saturated head, its glare and its flares all
become one fat white blob — the shape a brightening cloud takes — and the model may score it low. The
full-resolution difference still tells them apart:

    gray current − previous (saturating) → pixels ≥ 100 DN brighter → opened 3×3 (specks and thin strokes go) →
    regions ≥ 100 px, ≥ 30 px long, elongated, their brightest tenth ≥ 140 DN brighter, ≥ 5 % saturated in the frame

Clouds, moonlight and twilight brighten far less within 30 s, stars and hot pixels are specks, an out-of-focus insect
near the lens is soft and does not saturate; AllSky's watermark (its digits change every frame) is left out. A plane's
landing lights are as bright but stay for many frames, so the client reports a streak only when no adjacent frame's
bright streak lies on its line or goes on from its end (`gualta.detect.Decider.bright_again`). Coordinates are
full-frame pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from gualta.classical import WATERMARK, ignore_box
from gualta.preprocess import SATURATED_DN
from gualta.trails import component_points, principal_span

LEVEL_DN = 100               # a streak pixel is at least this much brighter than in the previous frame
MIN_AREA_PX = 100
MIN_LENGTH_PX = 30.0         # from end to end along the region's main axis
MIN_ELONGATION = 4.0         # length² / area: at least a 3:1 ellipse (a lit cloud or a flash is rounder)
CORE_DN = 140                # the brightest tenth of the region is at least this much brighter
MIN_SATURATED_SHARE = 0.05
WIGGLE_BIN_PX = 4            # `wiggle`'s centre line: the median across the streak every this many px along it
OPENING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


@dataclass(frozen=True)
class Streak:
    """A bright streak from (x1, y1) to (x2, y2), full-frame pixels, with its area in pixels, its `wiggle` and its
    region's (x, y) pixels."""
    x1: int
    y1: int
    x2: int
    y2: int
    area: int
    wiggle: float = 0.0      # px its centre line strays from a smooth course (`wiggle`): a bolt's far, a fireball's not
    points: np.ndarray | None = field(default=None, compare=False, repr=False)     # int16: a bolt's region

    @property
    def ends(self) -> tuple[int, int, int, int]:
        return self.x1, self.y1, self.x2, self.y2


def bright_regions(current: np.ndarray, previous: np.ndarray) -> list[np.ndarray]:
    """(x, y) pixels of each region at least LEVEL_DN brighter than before (8-bit gray frames), watermark left out."""
    mask = ignore_box((cv2.subtract(current, previous) >= LEVEL_DN).astype(np.uint8), WATERMARK)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, OPENING)
    if cv2.countNonZero(mask) < MIN_AREA_PX:               # most frames: labelling would cost 10× the rest
        return []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return [points for points, area in zip(component_points(labels, count), stats[1:, cv2.CC_STAT_AREA])
            if area >= MIN_AREA_PX]


def as_streak(points: np.ndarray) -> Streak | None:
    """The region as a streak between its extremes along its main axis, or None if it is too short or too round."""
    start, end, _ = principal_span(points)
    length = math.dist(start, end)
    if length < MIN_LENGTH_PX or length ** 2 / len(points) < MIN_ELONGATION:
        return None
    (x1, y1), (x2, y2) = np.rint([start, end]).astype(int)
    return Streak(int(x1), int(y1), int(x2), int(y2), len(points), wiggle(points, start, end),
                  points.astype(np.int16))


def wiggle(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> float:
    """How far (px) a region's centre line strays from a smooth course between start and end (its extremes along its
    principal axis): the region's (x, y) pixels binned along the axis (WIGGLE_BIN_PX a bin), each bin's median
    distance across it is the centre line there, and the wiggle is the spread (σ) of those medians about a parabola
    fitted along the axis — which follows a meteor's straight path even where the lens bends it into an arc. A round
    blob centred on the path (a fireball's terminal burst, a flare, a broad head) and ragged edges leave the centre line
    on the path; a lightning bolt's zigzags and branches move it (`gualta.lightning.BOLT_WIGGLE_PX`)."""
    length = math.dist(start, end)
    axis = (end - start) / length
    offsets = points - points.mean(axis=0)
    along, across = offsets @ axis, offsets @ np.array([-axis[1], axis[0]])
    bins = np.floor((along - along.min()) / WIGGLE_BIN_PX).astype(int)
    order = np.argsort(bins, kind="stable")
    edges = np.flatnonzero(np.diff(bins[order])) + 1
    middles = np.array([np.median(part) for part in np.split(along[order], edges)])
    medians = np.array([np.median(part) for part in np.split(across[order], edges)])
    if len(medians) < 4:
        return 0.0
    residual = medians - np.polyval(np.polyfit(middles, medians, 2), middles)
    return float(residual.std())


def is_fireball_like(points: np.ndarray, current: np.ndarray, previous: np.ndarray) -> bool:
    """A bright core (brightest tenth ≥ CORE_DN brighter) and partly saturated in the current frame."""
    xs, ys = points[:, 0], points[:, 1]
    brightening = current[ys, xs].astype(np.int16) - previous[ys, xs].astype(np.int16)
    saturated = np.mean(current[ys, xs] >= SATURATED_DN)
    return np.percentile(brightening, 90) >= CORE_DN and saturated >= MIN_SATURATED_SHARE


def bright_streak(current: np.ndarray, previous: np.ndarray) -> Streak | None:
    """The largest fireball-like streak of current over previous (8-bit gray frames of one size), if any."""
    streaks = [as_streak(points) for points in bright_regions(current, previous)
               if is_fireball_like(points, current, previous)]
    streaks = [streak for streak in streaks if streak is not None]
    return max(streaks, key=lambda streak: streak.area, default=None)
