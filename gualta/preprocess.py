"""The thesis' frame operations: grayscale, saturating subtraction, threshold, resize.

A difference image keeps what moved or brightened between two consecutive frames (meteors, satellites, cloud edges)
and removes what stayed (stars, trees, the watermark); where the camera moved between them, the previous frame is
dilated by the movement first (`steady_previous`). The training/labelling input is version v4: the thresholded
difference stretched to 400×400 with INTER_AREA. Versions v1–v3 are the alternatives the thesis compared.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

THRESHOLD = 3.5          # difference > 3.5 DN → 255, else 0 (on integers: ≥ 4 survives, ≤ 3 vanishes)
TRAIN_SIZE = 400         # v4 side length, the labelling and training input
THESIS_SIZE = 224        # v1–v3 side length
SKY_MARGIN_DN = 8        # the sky: pixels this far above a frame's darkest 5 % (the black around the lens circle)
SATURATED_DN = 250       # a frame pixel at this level or above is saturated: nothing on it can brighten
REFERENCE_SIDE = 1304   # the camera every pixel size of the checks was set for (AllSky's ASI224, 1304×976)
MIN_FRAME_SIDE = 48      # a smaller image named like a frame is no camera's frame (an icon): a bad frame
LARGE_SIDE = 1630        # a frame longer than this (1.25 × the reference) is read shrunk to REFERENCE_SIDE
VERSIONS = ("v1", "v2", "v3", "v4")
SHAKE_PX = 0.3           # the camera moved this far between two frames (wind, a loose mount): compared allowing for it
EDGE_GRADIENT_DN = 10    # the strong edges the movement is measured on: this many DN a pixel (the rim, the skyline)
LASTING_EDGE_PX = 300    # ...in pieces this large: a star's ring, or two stars' run together, are smaller (stars move)
MIN_EDGE_PX = 500        # fewer lasting edge pixels than this (a sky filling the frame): no movement measured
MOTION_STEPS = 8         # least-squares steps at most, each from where the last one left the edges...
MOTION_SETTLED_PX = 0.01 # ...until one moves no edge this far
REMAP_ROW = 1024         # points read a row of cv2.remap's maps
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"       # AllSky saves PNG when named image.png


class BadFrame(ValueError):
    """A frame that cannot be used: unreadable, truncated, not an image, or of the wrong size."""


def read_gray(path: str | Path) -> np.ndarray:
    """Decode a JPEG straight to 8-bit grayscale (its luma, as `to_gray` weighs the colours), a PNG through colour
    and `to_gray` (libpng's own gray rounds 1 DN otherwise on a fifth of the pixels, which the 3.5 DN threshold
    turns into another difference image); raise BadFrame if it is empty, truncated or not an image."""
    image = read_image(path, cv2.IMREAD_GRAYSCALE, png_mode=cv2.IMREAD_COLOR)
    return to_gray(image)


def read_colour(path: str | Path) -> np.ndarray:
    """Decode a JPEG or PNG to 8-bit BGR (OpenCV's order); raise BadFrame as read_gray does."""
    return read_image(path, cv2.IMREAD_COLOR)


def read_frame(path: str | Path, colour: bool = False) -> np.ndarray:
    """A camera frame as the client and the dataset builder read it: 8-bit gray (or BGR), at the checks' scale
    (`to_reference_scale`). Raise BadFrame as read_image does, and for an image too small to be one
    (`sky_sized`)."""
    return to_reference_scale(sky_sized(read_colour(path) if colour else read_gray(path), path))


def sky_sized(image: np.ndarray, path: str | Path) -> np.ndarray:
    """The image, if it is large enough to be a sky frame; else BadFrame (an icon named like a frame)."""
    if min(image.shape[:2]) < MIN_FRAME_SIDE:
        raise BadFrame(f"{path}: {image.shape[1]}×{image.shape[0]} px, too small for a sky frame (under "
                       f"{MIN_FRAME_SIDE} px a side)")
    return image


def to_reference_scale(image: np.ndarray) -> np.ndarray:
    """An image whose longer side exceeds LARGE_SIDE (a Pi HQ camera's 4056×3040, an ASI178's 3096×2080, either
    way up) shrunk with INTER_AREA to REFERENCE_SIDE on that side, its aspect kept; others as they are. At full size a
    meteor's streak is too wide for the streak check, a bright one passes for a fireball, and twelve megapixels take
    twice the memory."""
    height, width = image.shape[:2]
    longer = max(height, width)
    if longer <= LARGE_SIDE:
        return image
    size = (round(width * REFERENCE_SIDE / longer), round(height * REFERENCE_SIDE / longer))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def unfinished(head: bytes, tail: bytes) -> str:
    """What a file that starts with `head` and ends with `tail` lacks as a JPEG or PNG ("" if nothing, or if it is
    neither): a file still being written, or cut off."""
    if head.startswith(JPEG_START) and not tail.rstrip(b"\x00").endswith(JPEG_END):
        return "truncated JPEG (no end-of-image marker)"
    if head.startswith(PNG_START) and not tail.endswith(PNG_END):
        return "truncated PNG (no IEND chunk)"
    return ""


def read_image(path: str | Path, mode: int, png_mode: int | None = None) -> np.ndarray:
    """Decode a JPEG (or PNG: with `png_mode` if given) with an OpenCV imread mode; raise BadFrame if it is empty,
    truncated or not an image."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadFrame(f"{path}: cannot read ({exc.strerror})") from exc
    if not data:
        raise BadFrame(f"{path}: empty file")
    problem = unfinished(data, data)
    if problem:
        raise BadFrame(f"{path}: {problem}")
    if png_mode is not None and data.startswith(PNG_START):
        mode = png_mode
    image = cv2.imdecode(np.frombuffer(data, np.uint8), mode)
    if image is None:
        raise BadFrame(f"{path}: not a decodable image")
    return image


def write_image_file(path: Path, image: np.ndarray) -> None:
    """Write `image` to `path` in the format its suffix names (.png, .jpg); OSError 'cannot write PATH' if OpenCV has
    no writer for it or the file cannot be written. Encoded here and written by Python, as frames are read: OpenCV's
    own imwrite cannot open a path with non-ASCII characters on Windows. Written to `<name>.part`, then renamed: one
    cut short (a kill, a full disk) leaves the file it replaces whole (a mask redrawn with `--replace`)."""
    try:
        ok, data = cv2.imencode(path.suffix, image)
    except cv2.error:                               # no encoder for that suffix
        ok = False
    if not ok:
        raise OSError(f"cannot write {path}")
    partial = path.with_name(path.name + ".part")
    try:
        partial.write_bytes(data.tobytes())
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}") from exc


def to_gray(image: np.ndarray) -> np.ndarray:
    """BGR (OpenCV order) to 8-bit grayscale; grayscale input is returned unchanged."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def subtract(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Saturating current − previous (cv2.subtract: negative → 0, never wraps)."""
    if current.shape != previous.shape:
        raise BadFrame(f"frame sizes differ: {current.shape} vs {previous.shape}")
    return cv2.subtract(current, previous)


def threshold(difference: np.ndarray, value: float = THRESHOLD) -> np.ndarray:
    """Binary image: 255 where difference > value, else 0."""
    return np.where(difference > value, 255, 0).astype(np.uint8)


def resize_area(image: np.ndarray, size: int = TRAIN_SIZE) -> np.ndarray:
    """Stretch to size×size with INTER_AREA (averages the binary image into gray levels)."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def binary_difference(current: np.ndarray, previous: np.ndarray, value: float = THRESHOLD) -> np.ndarray:
    """Full-resolution thresholded difference of two frames (colour or gray), the previous one as `steady_previous`
    gives it."""
    current = to_gray(current)
    return threshold(subtract(current, steady_previous(current, to_gray(previous))), value)


def lasting_edges(previous: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The previous gray frame's strong, lasting edges: their pixels' (x, y), the frame's gradient (gx, gy) and value
    there, N rows each; none where the frame has fewer than MIN_EDGE_PX of them (a sky filling the frame)."""
    gx, gy = (cv2.Sobel(previous, cv2.CV_16S, *order, ksize=3).astype(np.float32) for order in ((1, 0), (0, 1)))
    strong = cv2.compare(cv2.magnitude(gx, gy), 8 * EDGE_GRADIENT_DN, cv2.CMP_GE)      # Sobel's kernel weighs 8
    xs, ys = cv2.findNonZero(strong).reshape(-1, 2).T if strong.any() else (np.empty(0, int),) * 2
    piece = cv2.connectedComponents(strong, connectivity=8)[1][ys, xs]
    lasting = (np.bincount(piece) >= LASTING_EDGE_PX)[piece]
    if lasting.sum() < MIN_EDGE_PX:
        lasting[:] = False
    ys, xs = ys[lasting], xs[lasting]
    return (np.stack([xs, ys], 1).astype(np.float32), np.stack([gx[ys, xs], gy[ys, xs]], 1) / 8,
            previous[ys, xs].astype(np.float32))


def rigid_motion(dx: float, dy: float, turn: float, shape: tuple[int, ...]) -> np.ndarray:
    """The 2×3 matrix that turns a frame of this shape by `turn` radians about its centre (clockwise as the frame is
    seen, y pointing down) and then moves it by (dx, dy) px: cv2.warpAffine's, from the previous frame to the
    current one."""
    cx, cy = (shape[1] - 1) / 2, (shape[0] - 1) / 2
    cos, sin = np.cos(turn), np.sin(turn)
    return np.array([[cos, -sin, cx - cos * cx + sin * cy + dx], [sin, cos, cy - sin * cx - cos * cy + dy]])


def moved_by(motion: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How far each point (x, y) is moved by a 2×3 motion, in pixels."""
    return np.hypot(*(points @ motion[:, :2].T + motion[:, 2] - points).T)


def camera_motion(current: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, float]:
    """How the camera moved between two gray frames: the translation and rotation about the frame centre (a 2×3
    matrix, `rigid_motion`'s) that best explain the change along the previous frame's strong, lasting edges (least
    squares, as Lucas–Kanade's; the lens circle's rim, the skyline, the text — not the stars, which move on their
    own), and the most any of those edges moved, in pixels. A first step falls short of a movement of a pixel or
    more, so each next one starts from where the last left the edges (the current frame read there), until a step
    moves no edge MOTION_SETTLED_PX. Still frames measure under 0.2 px; no movement where the frames have too few
    such edges (a sky filling the frame)."""
    if current.shape != previous.shape:
        raise BadFrame(f"frame sizes differ: {current.shape} vs {previous.shape}")
    points, gradient, before = lasting_edges(previous)
    if not len(points):
        return rigid_motion(0, 0, 0, previous.shape), 0.0
    side = max(previous.shape)                                             # a turn in 1/side radians: pixels
    lever = (points - (np.array(previous.shape[::-1], np.float32) - 1) / 2) / side
    turning = gradient[:, 1] * lever[:, 0] - gradient[:, 0] * lever[:, 1]   # the change such a turn makes
    design = np.column_stack([gradient, turning]).astype(np.float64)
    inverse = np.linalg.pinv(design.T @ design, rcond=1e-6)                # a turn the edges cannot show stays 0
    frame, found = current.astype(np.float32), np.zeros(3)
    for _ in range(MOTION_STEPS):
        motion = rigid_motion(*found[:2], found[2] / side, previous.shape)
        there = (points @ motion[:, :2].T + motion[:, 2]).astype(np.float32)
        step = inverse @ (design.T @ (before - read_at(frame, there)).astype(np.float64))
        found += step
        if moved_by(rigid_motion(*step[:2], step[2] / side, previous.shape), points).max() < MOTION_SETTLED_PX:
            break
    motion = rigid_motion(*found[:2], found[2] / side, previous.shape)
    return motion, float(moved_by(motion, points).max())


def read_at(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The frame's values at points (x, y), N rows, bilinear (edges replicated): cv2.remap on the points laid out in
    rows of REMAP_ROW (its maps must have fewer than 32,767 rows; a busy frame has more lasting edge pixels)."""
    padded = np.zeros((-(-len(points) // REMAP_ROW) * REMAP_ROW, 2), np.float32)
    padded[:len(points)] = points
    xs, ys = (padded[:, axis].reshape(-1, REMAP_ROW) for axis in (0, 1))
    return cv2.remap(frame, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).ravel()[:len(points)]


def camera_shift(current: np.ndarray, previous: np.ndarray) -> float:
    """How far the camera moved between two gray frames, in pixels: the most any strong, lasting edge of the
    previous frame moved (`camera_motion`)."""
    return camera_motion(current, previous)[1]


def steady_previous(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The previous gray frame as the difference compares with it: itself — or, where the camera moved SHAKE_PX or
    more (`camera_shift`: the most any lasting edge moved, a turn counted with the translation), its brightest pixel
    within twice the movement measured (the measure can fall short of a movement of several pixels; at most 3 px),
    so that the rim, the skyline and the text do not light up as arcs the model takes for meteors (a shaking camera
    had 18–50 % of its empty frames reported)."""
    moved = camera_shift(current, previous)
    if moved < SHAKE_PX:
        return previous
    reach = 2 * min(int(np.ceil(2 * moved)), 3) + 1
    return cv2.dilate(previous, np.ones((reach, reach), np.uint8))


def difference_image(current: np.ndarray, previous: np.ndarray, size: int = TRAIN_SIZE,
                     value: float = THRESHOLD) -> np.ndarray:
    """The thesis' preprocessing, v4 (`binary_difference`): gray → subtract the previous frame as `steady_previous`
    gives it (dilated where the camera moved) → threshold → size×size INTER_AREA."""
    return resize_area(binary_difference(current, previous, value), size)


def washed_out_share(binary: np.ndarray, current: np.ndarray, previous: np.ndarray) -> float:
    """Share of the sky that brightened beyond the threshold (`binary`, full resolution) or is saturated in the
    current frame: near 1 when the whole sky brightens (dawn, dusk, an exposure change) or daylight washes it out.
    The sky is what the previous frame shows SKY_MARGIN_DN above its darkest 5 % (gray frames)."""
    sky = previous > np.percentile(previous[::4, ::4], 5) + SKY_MARGIN_DN
    if not sky.any():
        return 0.0
    return float(((binary[sky] > 0) | (current[sky] >= SATURATED_DN)).mean())


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Pad with black on the short side (centred) to make the image square."""
    height, width = image.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    return cv2.copyMakeBorder(image, top, side - height - top, left, side - width - left,
                              cv2.BORDER_CONSTANT, value=0)


def make_version(binary: np.ndarray, version: str = "v4", size: int | None = None) -> np.ndarray:
    """Turn a full-resolution binary difference into one of the thesis' dataset versions.

    v1: pad to square, INTER_AREA to 224 · v2: pad to square, nearest to 224 (pure black/white)
    v3: stretch, nearest to 224 · v4: stretch, INTER_AREA to 400 (the chosen one)
    """
    if version not in VERSIONS:
        raise ValueError(f"unknown dataset version {version!r}; choose one of {', '.join(VERSIONS)}")
    size = size or (TRAIN_SIZE if version == "v4" else THESIS_SIZE)
    padded = version in ("v1", "v2")
    interpolation = cv2.INTER_AREA if version in ("v1", "v4") else cv2.INTER_NEAREST
    source = pad_to_square(binary) if padded else binary
    return cv2.resize(source, (size, size), interpolation=interpolation)


def side_by_side(frame_gray: np.ndarray, processed: np.ndarray, height: int = 224) -> np.ndarray:
    """Original | processed at height×height each (the 448×224 image of a detection)."""
    left = cv2.resize(frame_gray, (height, height), interpolation=cv2.INTER_AREA)
    right = cv2.resize(processed, (height, height), interpolation=cv2.INTER_AREA)
    return np.hstack([left, right])
