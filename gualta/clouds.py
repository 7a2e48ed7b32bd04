"""The cross-frame cloud check: a model's candidate made by moving cloud rather than by a meteor.

Clouds that drift or change between frames leave bright pieces in the difference image where a cloud's edge
brightened — fat blobs, or under the moon tangles of thin filaments — and the frame's noise fills the rest with
dense speckle; the model sometimes scores such a frame as a meteor. A meteor lasts under a second and never shows in
an adjacent difference, but a cloud keeps changing at about the same place for minutes, so the check explains away
as the satellite check does (`gualta.trails`):

    the candidate's bright pieces of at least CLOUD_PIECE_MIN_PX (`trails.bright_components`, whatever their shape)
    lying mostly (CLOUD_SHARE of their pixels) within CLOUD_REACH_PX of an adjacent difference's bright pieces of
    that size → erased → the frame scored again by the model: below the threshold, the candidate was cloud.

In a sky of dense speckle (a noisy camera, twilight) pieces of that size lie everywhere and nearness means nothing:
where the neighbours' pieces lie near more than CLOUD_NEAR_MAX of the image, only fat blobs (more area than
`trails.FAT_AREA_PER_PX` per pixel of their diagonal) count, on both sides.

The client asks only about a model's candidate in which the streak check (`gualta.streak`) finds no streak or
faint streak that the adjacent differences do not account for, and the fireball check no bright streak: a meteor
seen through a gap in the clouds keeps its frame by its streak whatever its surroundings, while a satellite or a
plane crossing the clouds, whose streak an adjacent difference's piece explains, has that streak erased with the
clouds. Coordinates are model-input pixels (400×400).
"""
from __future__ import annotations

import cv2
import numpy as np

from gualta.trails import bright_components

CLOUD_REACH_PX = 8            # a neighbour's piece this close (a cloud drifts a few pixels between frames), ...
CLOUD_SHARE = 0.5             # ... under at least this share of a candidate's piece: the same cloud, changing
CLOUD_PIECE_MIN_PX = 10       # smaller bright pieces (speckle, star residuals) are neither cloud nor its evidence
CLOUD_NEAR_MAX = 0.3          # neighbours' pieces near more of the image than this: speckle, fat blobs alone count


def cloud_pieces(diff: np.ndarray, fat_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A difference image's bright components: their labels, areas and which count as cloud — pieces of at least
    CLOUD_PIECE_MIN_PX, or only fat blobs (label 0, the background, never counts)."""
    labels, area, fat = bright_components(diff)
    chosen = fat if fat_only else area >= CLOUD_PIECE_MIN_PX
    chosen[0] = False
    return labels, area, chosen


def near_pieces(neighbour_diffs: list[np.ndarray], shape: tuple[int, ...], fat_only: bool = False) -> np.ndarray:
    """Within CLOUD_REACH_PX of a cloud piece of any neighbour difference (1), elsewhere 0."""
    near = np.zeros(shape, np.uint8)
    for diff in neighbour_diffs:
        labels, _, chosen = cloud_pieces(diff, fat_only)
        near |= chosen[labels].astype(np.uint8)
    size = 2 * CLOUD_REACH_PX + 1
    return cv2.dilate(near, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))


def cloud_mask(diff: np.ndarray, neighbour_diffs: list[np.ndarray]) -> np.ndarray:
    """The candidate's cloud pieces that an adjacent difference's pieces explain (255; all 0 where none does). Where
    the neighbours' pieces lie near more than CLOUD_NEAR_MAX of the image (a sky of dense speckle, where anything lies
    near something), only fat blobs count."""
    near = near_pieces(neighbour_diffs, diff.shape)
    fat_only = near.mean() > CLOUD_NEAR_MAX
    if fat_only:
        near = near_pieces(neighbour_diffs, diff.shape, fat_only=True)
    labels, area, chosen = cloud_pieces(diff, fat_only)
    shared = np.bincount(labels.ravel(), weights=near.ravel(), minlength=len(area)) / np.maximum(area, 1)
    cloudy = chosen & (shared >= CLOUD_SHARE)
    return cloudy[labels].astype(np.uint8) * 255
