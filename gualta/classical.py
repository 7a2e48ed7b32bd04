"""Classical single-frame meteor detectors (Canny + Hough), the baselines guAlta is benchmarked against.

Written from the published parameters of what AllSky users would otherwise run, not from their code:

- allsky_detect(frame): AllSky's meteor module — Canny 100/200 on the gray frame, close the edges (dilate then
  erode), mask edge contours enclosing a large area (clouds, moon glare), ignore the watermark box, then
  HoughLinesP(rho 3, 1°, 100 votes, min length 100, max gap 10): a detection if a line longer than 100 px remains.
- indi_allsky_detect(frame): indi-allsky — Gaussian blur 5×5, Canny 15/50 inside a centred circle,
  HoughLinesP(rho 1, 1°, 125 votes, min length 40, max gap 20): a detection if any line is found.
- diff_hough_detect(current, previous): the thesis' v4 difference image (preprocess.difference_image, 400×400)
  searched for lines without a network: keep pixels > 170 (≥ 2/3 of the frame pixels behind them changed) in
  connected areas at least 10× longer than thick (not speckle, cloud fronts or the moon), HoughLinesP(rho 1, 1°,
  10 votes, min length 12, max gap 3) outside the watermark: a detection if a line of ≥ 12 px (of 400, ≈ 40 frame
  pixels) is found.

AllSky's and indi-allsky's published numbers are used as given; where they leave a choice (AllSky: 5×5 close
kernel, cloud contours above 5,000 px² masked with a 15 px margin, max gap 10; indi-allsky: circle radius 0.9 of
half the short side) the values are plain first choices, not tuned.

Each returns a Detection (detected, score, lines) that unpacks like a tuple. score is the longest line found as a
fraction of the searched image's diagonal (0–1), so it can be thresholded; lines are (x1, y1, x2, y2) in frame pixels,
longest first. Every detector takes an optional sky_mask (255 = search here), e.g. estimate_sky_mask's, as an operator
would draw once to hide the horizon, masts and the lens border; without one they search the whole frame.

The diff-Hough parameters were chosen on development nights only (simulator seeds 900, 901 and 910–917: ten nights,
770 frame pairs, clear, cloudy, moonlit and mixed skies, cameras with and without noise smoothing, meteor rate
0.3/frame), never on benchmark nights: of a grid (level 128–220, blob filter none / 5×5 top-hat / elongation 6–15,
votes 10–15, min length 12–20) the setting with the best meteor recall (0.46 there) whose false-positive rate on
no-meteor frames without events stayed ≤ 1 % overall and ≤ 15 % on the worst night (0 % and 0 % there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from gualta.preprocess import TRAIN_SIZE, difference_image, to_gray

WATERMARK = (0, 0, 400, 140)      # x, y, width, height of AllSky's top-left text, in frame pixels (1304×976)

SKY_LEVEL = 0.3                   # estimate_sky_mask: sky is brighter than 30 % of the way from dark to bright sky


class Detection(NamedTuple):
    """What a detector found in one frame."""
    detected: bool
    score: float                   # longest line / diagonal of the searched image, 0–1
    lines: np.ndarray              # (n, 4) int: x1, y1, x2, y2 in frame pixels, longest first


@dataclass(frozen=True)
class AllSkyParams:
    """AllSky meteor module settings."""
    canny_low: int = 100
    canny_high: int = 200
    close_kernel: int = 5          # dilate then erode the edges with a square kernel of this side
    cloud_area: float = 5000.0     # an edge contour enclosing more than this (px²) is cloud: masked out
    cloud_margin: int = 15         # the cloud mask is grown by this many pixels
    rho: float = 3.0
    theta: float = math.pi / 180
    votes: int = 100
    min_length: int = 100          # HoughLinesP minLineLength, and a detection needs a line longer than this
    max_gap: int = 10
    watermark: tuple[int, int, int, int] | None = WATERMARK


@dataclass(frozen=True)
class IndiAllSkyParams:
    """indi-allsky line detection settings."""
    blur: int = 5
    canny_low: int = 15
    canny_high: int = 50
    rho: float = 1.0
    theta: float = math.pi / 180
    votes: int = 125
    min_length: int = 40
    max_gap: int = 20
    region: float = 0.9            # centred circle searched, radius as a fraction of half the short side


@dataclass(frozen=True)
class DiffHoughParams:
    """Thesis difference image + Hough settings (chosen on development nights, see the module docstring)."""
    size: int = TRAIN_SIZE         # the v4 difference image side
    level: int = 170               # keep pixels brighter than this: ≥ 2/3 of the frame pixels behind them changed
    elongation: float = 10.0       # keep connected areas at least this many times longer than thick (not blobs)
    rho: float = 1.0
    theta: float = math.pi / 180
    votes: int = 10
    min_length: int = 12           # in 400×400 pixels (≈ 40 frame pixels across)
    max_gap: int = 3
    watermark: tuple[int, int, int, int] | None = WATERMARK


# --- shared pieces -----------------------------------------------------------------------------------------------

def line_lengths(lines: np.ndarray) -> np.ndarray:
    """Length of each (x1, y1, x2, y2) line."""
    lines = np.asarray(lines, np.float64).reshape(-1, 4)
    return np.hypot(lines[:, 2] - lines[:, 0], lines[:, 3] - lines[:, 1])


def hough_lines(binary: np.ndarray, rho: float, theta: float, votes: int, min_length: int,
                max_gap: int) -> np.ndarray:
    """cv2.HoughLinesP as an (n, 4) int array, longest first (empty when none)."""
    found = cv2.HoughLinesP(binary, rho, theta, votes, minLineLength=min_length, maxLineGap=max_gap)
    if found is None:
        return np.zeros((0, 4), np.int32)
    lines = found.reshape(-1, 4).astype(np.int32)
    return lines[np.argsort(-line_lengths(lines), kind="stable")]


def diagonal(shape: tuple[int, ...]) -> float:
    return math.hypot(shape[0], shape[1])


def ignore_box(image: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The image with the box (x, y, width, height) set to 0 (a copy when anything is blanked)."""
    if box is None:
        return image
    x, y, width, height = box
    image = image.copy()
    image[max(y, 0):max(y + height, 0), max(x, 0):max(x + width, 0)] = 0
    return image


def apply_mask(image: np.ndarray, sky_mask: np.ndarray | None) -> np.ndarray:
    """The image where sky_mask is non-zero, 0 elsewhere; unchanged without a mask."""
    if sky_mask is None:
        return image
    if sky_mask.shape[:2] != image.shape[:2]:
        sky_mask = cv2.resize(sky_mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    return np.where(sky_mask > 0, image, 0).astype(image.dtype)


def estimate_sky_mask(frames: list[np.ndarray], margin: int = 12) -> np.ndarray:
    """uint8 mask (255 = sky) of a night, what an operator would draw once: inside the lens circle, above the
    horizon silhouettes and off masts. The median of a few gray frames (events and noise vanish) is split into
    dark (outside the lens, ground, poles) and sky at SKY_LEVEL of the way from the dark level (5th percentile) to
    the bright sky (90th); the largest sky region is kept, its holes filled, and shrunk by margin pixels so that
    the sky's own border leaves no edges."""
    stack = np.stack([to_gray(frame) for frame in frames])
    median = cv2.GaussianBlur(np.median(stack, axis=0).astype(np.uint8), (5, 5), 0)
    dark, bright = np.percentile(median, [5, 90])
    sky = np.where(median > dark + SKY_LEVEL * (bright - dark), 255, 0).astype(np.uint8)
    contours, _ = cv2.findContours(sky, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    sky = np.zeros_like(sky)
    if contours:                                   # the largest bright region is the sky; fill its dark holes
        cv2.drawContours(sky, [max(contours, key=cv2.contourArea)], -1, 255, thickness=cv2.FILLED)
    if margin > 0:
        sky = cv2.erode(sky, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8),
                        borderType=cv2.BORDER_CONSTANT, borderValue=0)     # off the frame's edges too
    return sky


def centre_circle(shape: tuple[int, ...], fraction: float) -> np.ndarray:
    """uint8 mask (255 inside) of a circle centred on the image, radius = fraction × half the short side."""
    mask = np.zeros(shape[:2], np.uint8)
    radius = int(round(fraction * min(shape[:2]) / 2))
    cv2.circle(mask, (shape[1] // 2, shape[0] // 2), radius, 255, -1)
    return mask


def result(lines: np.ndarray, searched_shape: tuple[int, ...], min_length: float,
           scale: tuple[float, float] = (1.0, 1.0)) -> Detection:
    """Detection from the lines found: detected if the longest reaches min_length; lines scaled to frame pixels."""
    longest = float(line_lengths(lines)[0]) if len(lines) else 0.0
    framed = np.rint(lines * np.array([scale[0], scale[1], scale[0], scale[1]])).astype(np.int32)
    return Detection(longest >= min_length, min(longest / diagonal(searched_shape), 1.0), framed)


# --- AllSky ------------------------------------------------------------------------------------------------------

def close_edges(edges: np.ndarray, kernel_side: int) -> np.ndarray:
    """Dilate then erode (a morphological close): joins broken edge pixels into solid bands."""
    kernel = np.ones((kernel_side, kernel_side), np.uint8)
    return cv2.erode(cv2.dilate(edges, kernel), kernel)


def cloud_mask(closed: np.ndarray, min_area: float, margin: int = 0) -> np.ndarray:
    """uint8 mask (255) of the edge contours enclosing more than min_area px² (clouds, moon), grown by margin."""
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    mask = np.zeros(closed.shape, np.uint8)
    big = [contour for contour in contours if cv2.contourArea(contour) > min_area]
    cv2.drawContours(mask, big, -1, 255, thickness=cv2.FILLED)
    if margin > 0 and big:
        mask = cv2.dilate(mask, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    return mask


def allsky_detect(frame: np.ndarray, params: AllSkyParams = AllSkyParams(),
                  sky_mask: np.ndarray | None = None) -> Detection:
    """AllSky meteor module: Canny, close, cloud mask, watermark/sky mask, HoughLinesP; a line > min_length px."""
    gray = to_gray(frame)
    edges = cv2.Canny(gray, params.canny_low, params.canny_high)
    closed = close_edges(edges, params.close_kernel)
    closed[cloud_mask(closed, params.cloud_area, params.cloud_margin) > 0] = 0
    closed = apply_mask(ignore_box(closed, params.watermark), sky_mask)
    lines = hough_lines(closed, params.rho, params.theta, params.votes, params.min_length, params.max_gap)
    lines = lines[line_lengths(lines) > params.min_length]
    return result(lines, gray.shape, params.min_length + 1e-9)


# --- indi-allsky -------------------------------------------------------------------------------------------------

def indi_allsky_detect(frame: np.ndarray, params: IndiAllSkyParams = IndiAllSkyParams(),
                       sky_mask: np.ndarray | None = None) -> Detection:
    """indi-allsky: Gaussian blur, Canny inside the central circle, HoughLinesP; any line is a detection."""
    gray = to_gray(frame)
    blurred = cv2.GaussianBlur(gray, (params.blur, params.blur), 0)
    edges = cv2.Canny(blurred, params.canny_low, params.canny_high)
    edges = apply_mask(apply_mask(edges, centre_circle(gray.shape, params.region)), sky_mask)
    lines = hough_lines(edges, params.rho, params.theta, params.votes, params.min_length, params.max_gap)
    return result(lines, gray.shape, params.min_length)


# --- thesis difference + Hough -----------------------------------------------------------------------------------

def elongated(binary: np.ndarray, min_elongation: float) -> np.ndarray:
    """The connected areas of a binary image that are streaks: length / thickness ≥ min_elongation, with length the
    longer side of the area's bounding box and thickness its area / length (so elongation = length² / area)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    length = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]).astype(np.float64)
    keep = length ** 2 >= min_elongation * stats[:, cv2.CC_STAT_AREA]
    keep[0] = False                                # the background
    return np.where(keep[labels], 255, 0).astype(np.uint8)


def diff_lines_image(difference: np.ndarray, params: DiffHoughParams = DiffHoughParams()) -> np.ndarray:
    """Binary image of the streaks in a v4 difference image: pixels above the level, in elongated areas only
    (speckle, cloud fronts and the moon's moving disc are compact and dropped)."""
    binary = np.where(difference > params.level, 255, 0).astype(np.uint8)
    return elongated(binary, params.elongation)


def diff_hough_detect(current: np.ndarray, previous: np.ndarray, params: DiffHoughParams = DiffHoughParams(),
                      sky_mask: np.ndarray | None = None) -> Detection:
    """The thesis' difference image (`preprocess.difference_image`: current − previous, the previous dilated where
    the camera moved, > 3.5, 400×400 INTER_AREA) and a line search in it."""
    difference = difference_image(current, previous, params.size)
    return search_difference(difference, current.shape, params, sky_mask)


def search_difference(difference: np.ndarray, frame_shape: tuple[int, ...],
                      params: DiffHoughParams = DiffHoughParams(), sky_mask: np.ndarray | None = None) -> Detection:
    """Line search in a v4 difference image of a frame of frame_shape (lines are returned in frame pixels)."""
    scale = (frame_shape[1] / difference.shape[1], frame_shape[0] / difference.shape[0])
    if params.watermark is not None:
        x, y, box_width, box_height = params.watermark
        difference = ignore_box(difference, (int(x / scale[0]), int(y / scale[1]),
                                             math.ceil(box_width / scale[0]), math.ceil(box_height / scale[1])))
    binary = apply_mask(diff_lines_image(difference, params), sky_mask)
    lines = hough_lines(binary, params.rho, params.theta, params.votes, params.min_length, params.max_gap)
    return result(lines, difference.shape, params.min_length, scale)
