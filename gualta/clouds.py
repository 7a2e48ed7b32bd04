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

A sky that keeps changing everywhere (an active aurora: rays brightening and fading, pulsating patches) brightens in
places that neither adjacent difference shows — a ray dimmed in the frame before, or dims in the next — so no
neighbour's piece lies near and the score stays up. For a candidate the neighbours leave unexplained, the check also
erases its pieces where the sky was restless before it:

    the candidate's three earlier frames, gray, shrunk `lightning.BLOCK_PX` times (INTER_AREA) → each
    block's brightness range over them ≥ RESTLESS_DN, median-filtered over 3 × 3 blocks, grown by one block: the
    restless sky → the candidate's bright pieces of at least CLOUD_PIECE_MIN_PX lying mostly (CLOUD_SHARE) in it,
    erased with the cloud pieces → the frame scored again by the model: below the threshold, the candidate was the sky.

A calm sky's blocks vary by a DN or two from frame to frame; a meteor lasts one frame and is not in the earlier ones.
A sky changing as a whole (dusk, dawn, the moon setting, an exposure step) is not restless: each frame's median change
over the sky is taken out first.
Only pieces are erased, never whole blocks: a meteor the model scores just above the threshold drops below it once
small restless spots elsewhere (an earlier meteor's or satellite's light) are blanked.
"""
from __future__ import annotations

import cv2
import numpy as np

from gualta.preprocess import SKY_MARGIN_DN
from gualta.trails import bright_components

CLOUD_REACH_PX = 8            # a neighbour's piece this close (a cloud drifts a few pixels between frames), ...
CLOUD_SHARE = 0.5             # ... under at least this share of a candidate's piece: the same cloud, changing
CLOUD_PIECE_MIN_PX = 10       # smaller bright pieces (speckle, star residuals) are neither cloud nor its evidence
CLOUD_NEAR_MAX = 0.3          # neighbours' pieces near more of the image than this: speckle, fat blobs alone count
RESTLESS_DN = 3               # a block whose brightness ranged this much over the candidate's three earlier frames
                              # is restless (a calm sky: 1–2)


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


def restless_blocks(earlier: list[np.ndarray]) -> np.ndarray:
    """The sky blocks of `earlier` (gray frames shrunk alike: `lightning.shrunk`; `sky_blocks` of the first) whose
    brightness ranged at least RESTLESS_DN over them once each frame's change of the sky as a whole (its median over
    the sky: dusk and dawn, the moon setting or rising, an exposure step) is taken out, median-filtered over 3 × 3
    blocks and grown by one block (1, elsewhere 0)."""
    sky = sky_blocks(earlier[0])
    stack = np.stack(earlier).astype(np.float32)
    stack -= np.median(stack[:, sky] - stack[0][sky], axis=1)[:, None, None]
    spread = np.where(sky, np.rint(np.clip(stack.max(axis=0) - stack.min(axis=0), 0, 255)), 0).astype(np.uint8)
    return cv2.dilate((cv2.medianBlur(spread, 3) >= RESTLESS_DN).astype(np.uint8), np.ones((3, 3), np.uint8))


def sky_blocks(frame: np.ndarray) -> np.ndarray:
    """The blocks of sky in a shrunk gray frame: those SKY_MARGIN_DN above its darkest 5 % when they are most of it
    (the lens circle's), else every block (a frame filled with sky)."""
    sky = frame > np.percentile(frame, 5) + SKY_MARGIN_DN
    return sky if np.count_nonzero(sky) >= sky.size / 2 else np.ones_like(sky)


def restless_mask(earlier: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """`restless_blocks` as a mask of a difference image of `shape` (255 inside; the frame is stretched to it as the
    difference image is)."""
    return cv2.resize(restless_blocks(earlier), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) * 255


def restless_pieces(diff: np.ndarray, earlier: list[np.ndarray]) -> np.ndarray:
    """The candidate's cloud pieces (at least CLOUD_PIECE_MIN_PX) lying mostly (CLOUD_SHARE of their pixels) where the
    sky was restless over `earlier` (`restless_mask`): 255, elsewhere 0."""
    restless = restless_mask(earlier, diff.shape) > 0
    labels, area, chosen = cloud_pieces(diff)
    shared = np.bincount(labels.ravel(), weights=restless.ravel(), minlength=len(area)) / np.maximum(area, 1)
    return (chosen & (shared >= CLOUD_SHARE))[labels].astype(np.uint8) * 255
