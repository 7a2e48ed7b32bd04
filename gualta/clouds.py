"""The cross-frame cloud check: a model's candidate made by moving cloud rather than by a meteor.

Clouds that drift or change between frames leave fat bright blobs in the difference image (a cloud's edge that
brightened), and under the moon or light pollution the frame's noise fills the rest with dense speckle; the model
sometimes scores such a frame as a meteor. A meteor lasts under a second and never shows in an adjacent difference,
but a cloud keeps changing at about the same place for minutes, so the check explains away as the satellite check
does (`gualta.trails`):

    the candidate's fat blobs (`trails.bright_components`) lying mostly (CLOUD_SHARE of their pixels) within
    CLOUD_REACH_PX of an adjacent difference's fat blobs → erased → the frame scored again by the model: below the
    threshold, the candidate was cloud.

The client asks only about a model's candidate in which the streak check (`gualta.streak`) finds neither a streak
nor a faint streak: a meteor seen through a gap in the clouds keeps its frame by its streak whatever its
surroundings. Coordinates are model-input pixels (400×400).
"""
from __future__ import annotations

import cv2
import numpy as np

from gualta.trails import bright_components

CLOUD_REACH_PX = 8            # a neighbour's blob this close (a cloud drifts a few pixels between frames), ...
CLOUD_SHARE = 0.5             # ... under at least this share of a candidate's blob: the same cloud, changing


def blob_mask(diff: np.ndarray) -> np.ndarray:
    """Where a difference image has fat blobs (1), elsewhere 0."""
    labels, _, fat = bright_components(diff)
    return fat[labels].astype(np.uint8)


def near_blobs(neighbour_diffs: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Within CLOUD_REACH_PX of a fat blob of any neighbour difference (1), elsewhere 0."""
    near = np.zeros(shape, np.uint8)
    for diff in neighbour_diffs:
        near |= blob_mask(diff)
    size = 2 * CLOUD_REACH_PX + 1
    return cv2.dilate(near, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))


def cloud_mask(diff: np.ndarray, neighbour_diffs: list[np.ndarray]) -> np.ndarray:
    """The candidate's fat blobs that an adjacent difference's blobs explain (255; all 0 where none does)."""
    labels, area, fat = bright_components(diff)
    near = near_blobs(neighbour_diffs, diff.shape)
    shared = np.bincount(labels.ravel(), weights=near.ravel(), minlength=len(area)) / np.maximum(area, 1)
    cloudy = fat & (shared >= CLOUD_SHARE)
    return cloudy[labels].astype(np.uint8) * 255
