"""The cross-frame satellite/plane check: straight trails in difference images, and whether one continues another.

A meteor lasts under a second, so a 30 s frame cannot hold the same meteor twice; a satellite or a plane crosses the
sky for minutes and leaves a trail in several consecutive frames, each piece on the same straight line as the last
and starting about where it ended. The check works on the 400×400 difference image the model scores (v4: the
thresholded difference averaged down, so noise is a faint speckle and a trail is bright):

    pixels ≥ level → connected components, fat blobs (cloud edges) dropped → HoughLinesP → collinear pieces merged
    into trails → trails lying where an adjacent frame has the same trail are static (cloud edges, glare) and set
    aside → a frame whose other trails *all* continue a trail of the previous or next frame is a crossing.

"All" keeps a meteor that shares its frame with a satellite; two meteors in consecutive frames are not hidden by
this step unless they lie on one line and meet end to end (explaining away, below, reaches further along the line:
two meteors of a shower on one line through its radiant are held back, README "Satellite / plane check"). A meteor
never overlaps itself in an adjacent difference image (the subtraction removes it there), so setting static trails
aside cannot hide one. Coordinates are model-input pixels (400×400); `in_frame` maps them back to the full frame.

Trails are often too faint, short or broken for that (a satellite on a moonlit night, a plane's strobes), and a
frame also holds speckle and cloud-edge pieces that no neighbour explains. So the check also *explains away*:

    bright pieces of the frame lying beyond the end of a neighbour's line, along it (or whose own line reaches a
    neighbour's piece) → erased → the frame scored again by the model: below the threshold, the candidate was the
    crossing; still above it, something else in the frame (a meteor) keeps it a detection.

Under a short exposure (a moonlit night) a satellite's pieces are short and far apart, so a piece about as long as a
neighbour's line (its twin) is looked for further along that line (`FAR`). A satellite seen in one frame only (it
rose into view, or left it, between frames) is erased too when its streak's own light tells a crossing (the streak
check's `Piece.own_light`, read in the full-resolution difference: a steady light curve, a plane's wingtip lights, a
path lit again in the next frame), and so is a streak or a faint streak that a piece of an adjacent full-resolution
difference explains, and a piece on a steady mover's track or a dash that an adjacent dash follows
(`gualta.streak.explained_streaks`).

A faint satellite (a few times the camera noise, under a short exposure) never reaches the bright level: its trail is
only a denser line of speckle. When the candidate still scores as a meteor after the steps above, its *faint lines*
(`faint_lines_of`: a matched line filter in 24 directions on the difference in units of its local noise; a line is
where the best direction beats the median direction by `FAINT_CONTRAST`, so round blobs and wide cloud edges, which
answer every direction alike, are not lines) are explained by the neighbours' faint lines the same way, erased, and
the frame scored once more.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from gualta.preprocess import TRAIN_SIZE

LEVEL_MIN = 128               # a trail pixel is mostly above the threshold in the full frame
MIN_COMPONENT_PX = 5          # smaller specks (star residuals, hot pixels) are ignored
FAT_AREA_PER_PX = 4.0         # a component with more area than 4 px per pixel of its diagonal (+ 10) is a blob
HOUGH_VOTES = 12
MIN_TRAIL_PX = 15             # shortest trail considered, in model-input pixels (~45 px in a 1304×976 frame)
HOUGH_GAP_PX = 4              # bridges a plane's strobe dots
MERGE_GAP_PX = 10             # pieces on one line closer than this are one trail
MAX_ANGLE_DEG = 8.0           # continuation: directions within this angle
MAX_OFFSET_PX = 4.0           # ... each trail's ends within this distance of the other's line
GAP_PER_LENGTH = 1.5          # ... and the gap between them at most 1.5× the longer trail (+ GAP_SLACK_PX)
GAP_SLACK_PX = 10.0
STATIC_OVERLAP = 0.5          # collinear trails overlapping by half the shorter one: the same thing in both frames

PIECE_MIN_DIAG_PX = 6         # explaining away: bright pieces smaller than this are speckle, left as they are
LINE_PIECE_MIN_PX = 8         # a piece this long whose width is at most a third of its length has a direction
LINE_PIECE_THINNESS = 1 / 3
ZONE_BAND_PX = 3.0            # continuation zone of a line (see Zone): within 3 px of it at its ends, ...
ZONE_REACH_SLACK_PX = 20.0    # ... reaching Zone.reach × its length + 20 px beyond either end, at most 120 px,
ZONE_REACH_MAX_PX = 120.0
ZONE_OVERLAP = 0.2            # ... and 20 % of its length back over it
TWIN_LENGTH_RATIO = 2.0       # a piece and a neighbour's line at most 2× apart in length are one object's twins
EXPLAINED_SHARE = 0.7         # a piece is explained when 70 % of its pixels lie in a neighbour line's zone
EXPLAINED_MAX_ANGLE_DEG = 10.0
REACHED_MIN_SHARE = 1 / 3     # a neighbour's piece that a piece's own line reaches is at least a third as long, ...
EDGE_PX = 1                   # ... or touches the image's edge (a crossing leaving the view is cut short)
ERASE_MARGIN_PX = 2

FAINT_LENGTH_PX = 15          # faint lines: a matched filter 15 px long, ...
FAINT_DIRECTIONS = 24         # ... in 24 directions (7.5° apart), ...
FAINT_WINDOW_PX = 41          # ... on the difference in units of its noise over a 41 px window around each pixel;
FAINT_CONTRAST = 8.0          # a line pixel's best direction answers 8 noise units above its median direction
FAINT_MIN_PX = 8              # fewer line pixels than this are noise


@dataclass(frozen=True)
class Zone:
    """How far beyond a line's ends its continuation is looked for: `reach` × its length (+ slack, capped), within a
    band that widens by `band_growth` px per px beyond the end (trails bend on an all-sky image), at most `band_max`."""
    reach: float
    band_growth: float
    band_max: float


NEAR = Zone(reach=2.0, band_growth=0.1, band_max=8.0)
# A satellite's pieces in consecutive frames are equally long, and under a short exposure (4–6 s on a moonlit night,
# frames 30 s apart) the gap between them is several times their length: twins are also looked for 6× their length
# away, along a narrower band (the pieces lie on one line).
FAR = Zone(reach=6.0, band_growth=0.02, band_max=4.0)


@dataclass(frozen=True)
class Trail:
    """A straight trail from (x1, y1) to (x2, y2) in model-input pixels."""
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def length(self) -> float:
        return math.hypot(self.x2 - self.x1, self.y2 - self.y1)

    @property
    def direction(self) -> np.ndarray:
        return np.array([self.x2 - self.x1, self.y2 - self.y1]) / max(self.length, 1e-9)

    @property
    def ends(self) -> np.ndarray:
        return np.array([[self.x1, self.y1], [self.x2, self.y2]], dtype=float)

    def in_frame(self, width: int, height: int, size: int = TRAIN_SIZE) -> tuple[int, int, int, int]:
        """The trail's ends in a width×height frame (the model input is the frame stretched to size×size)."""
        sx, sy = width / size, height / size
        return (round(self.x1 * sx), round(self.y1 * sy), round(self.x2 * sx), round(self.y2 * sy))

    @classmethod
    def from_frame(cls, ends: tuple[int, int, int, int], width: int, height: int, size: int = TRAIN_SIZE) -> Trail:
        """The trail of a streak with these ends in a width×height frame (the inverse of `in_frame`)."""
        x1, y1, x2, y2 = ends
        sx, sy = size / width, size / height
        return cls(x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def bright_components(diff: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The difference image's bright components (pixels ≥ level, 8-connected): their labels, the area of each label
    and which are fat blobs (cloud edges: more area than FAT_AREA_PER_PX per pixel of their diagonal + 10). Label 0, the
    background, is never a blob."""
    level = max(LEVEL_MIN, (255 + float(np.median(diff))) / 2)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((diff >= level).astype(np.uint8), connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA].astype(float)
    diagonal = np.hypot(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    fat = area > FAT_AREA_PER_PX * diagonal + 10
    fat[0] = False
    return labels, area, fat


def line_mask(diff: np.ndarray) -> np.ndarray:
    """Bright, thin structures of a difference image (255), without specks and fat blobs."""
    labels, area, fat = bright_components(diff)
    keep = (area >= MIN_COMPONENT_PX) & ~fat
    keep[0] = False
    return keep[labels].astype(np.uint8) * 255


def find_trails(diff: np.ndarray) -> list[Trail]:
    """The straight trails of a 400×400 difference image, longest first."""
    lines = cv2.HoughLinesP(line_mask(diff), 1, np.pi / 180, HOUGH_VOTES, minLineLength=MIN_TRAIL_PX,
                            maxLineGap=HOUGH_GAP_PX)
    if lines is None:
        return []
    pieces = sorted((Trail(*map(float, line)) for line in lines.reshape(-1, 4)), key=lambda t: -t.length)
    trails: list[Trail] = []
    for piece in pieces:
        for k, trail in enumerate(trails):
            if collinear(trail, piece) and gap_between(trail, piece) <= MERGE_GAP_PX:
                trails[k] = merged(trail, piece)
                break
        else:
            trails.append(piece)
    return trails


def angle_between(a: Trail, b: Trail) -> float:
    """Angle between two trails' lines in degrees (0–90; direction of travel ignored)."""
    cosine = abs(float(np.dot(a.direction, b.direction)))
    return math.degrees(math.acos(min(cosine, 1.0)))


def offset_from_line(trail: Trail, points: np.ndarray) -> float:
    """Largest perpendicular distance of points from the trail's line."""
    normal = np.array([-trail.direction[1], trail.direction[0]])
    return float(np.abs((points - trail.ends[0]) @ normal).max())


def collinear(a: Trail, b: Trail) -> bool:
    """Same direction and on the same line (each one's ends near the other's line)."""
    return (angle_between(a, b) <= MAX_ANGLE_DEG and offset_from_line(a, b.ends) <= MAX_OFFSET_PX
            and offset_from_line(b, a.ends) <= MAX_OFFSET_PX)


def gap_between(a: Trail, b: Trail) -> float:
    """Distance along a's line between the two trails (negative when they overlap)."""
    along_a = sorted((a.ends - a.ends[0]) @ a.direction)
    along_b = sorted((b.ends - a.ends[0]) @ a.direction)
    return max(along_b[0] - along_a[1], along_a[0] - along_b[1])


def merged(a: Trail, b: Trail) -> Trail:
    """One trail spanning two collinear ones (along a's direction)."""
    points = np.vstack([a.ends, b.ends])
    along = (points - a.ends[0]) @ a.direction
    first, last = points[int(np.argmin(along))], points[int(np.argmax(along))]
    return Trail(*first, *last)


def overlaps(a: Trail, b: Trail) -> bool:
    """a and b lie on one line over much of their length: a structure that stayed (cloud edge), not a mover."""
    return collinear(a, b) and gap_between(a, b) < -STATIC_OVERLAP * min(a.length, b.length)


def continues(a: Trail, b: Trail) -> bool:
    """b could be the same moving object as a one frame apart: collinear, and one starts about where the other
    ends (a small overlap or a gap up to 1.5× the longer trail + 10 px)."""
    gap = gap_between(a, b)
    return (collinear(a, b) and -STATIC_OVERLAP * min(a.length, b.length) <= gap
            <= GAP_PER_LENGTH * max(a.length, b.length) + GAP_SLACK_PX)


def ends_meet(a: Trail, b: Trail) -> bool:
    """One starts where the other ends, whatever their directions: nearest ends within GAP_SLACK_PX."""
    return min(float(np.hypot(*(p - q))) for p in a.ends for q in b.ends) <= GAP_SLACK_PX


def is_crossing(trails: list[Trail], neighbour_trails: list[Trail]) -> bool:
    """True if the frame's moving trails (those not lying where a neighbour has the same one: static structures)
    exist and every one continues a trail of an adjacent frame (satellite, plane)."""
    moving = [trail for trail in trails if not any(overlaps(trail, other) for other in neighbour_trails)]
    return bool(moving) and all(any(continues(trail, other) for other in neighbour_trails) for trail in moving)


# --- explaining away ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """A straight structure of a frame: a trail and, when it is a fitted bright piece, that piece's points."""
    trail: Trail
    points: np.ndarray | None = None


def component_points(labels: np.ndarray, count: int) -> list[np.ndarray]:
    """(x, y) pixels of each labelled component 1 … count − 1, in raster order, grouped by label in one pass over
    the image."""
    ys, xs = np.nonzero(labels)
    owner = labels[ys, xs]
    order = np.argsort(owner, kind="stable")
    points = np.column_stack([xs[order], ys[order]])
    ends = np.cumsum(np.bincount(owner, minlength=count))
    return [points[start:end] for start, end in zip(ends[:-1], ends[1:])]


def bright_pieces(diff: np.ndarray) -> list[np.ndarray]:
    """(x, y) pixels of each bright thin piece of a difference image (`line_mask`), speckle left out."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(line_mask(diff), connectivity=8)
    diagonal = np.hypot(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    return [points.astype(float) for points, span in zip(component_points(labels, count), diagonal[1:])
            if span >= PIECE_MIN_DIAG_PX]


def principal_span(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two extreme points of (x, y) points along their principal axis, and their spread (the singular values:
    along, across)."""
    centre = points.mean(axis=0)
    _, spread, axes = np.linalg.svd(points - centre, full_matrices=False)
    along = (points - centre) @ axes[0]
    return centre + along.min() * axes[0], centre + along.max() * axes[0], spread


def fitted_line(points: np.ndarray) -> Trail | None:
    """The trail along a piece's principal axis, spanning it; None if the piece is too short or too wide."""
    start, end, spread = principal_span(points)
    if math.dist(start, end) < LINE_PIECE_MIN_PX or spread[1] > LINE_PIECE_THINNESS * spread[0]:
        return None
    return Trail(*start, *end)


def lines_of(diff: np.ndarray) -> list[Line]:
    """A frame's straight structures: its Hough trails and its fitted thin pieces."""
    fitted = [Line(trail, points) for points in bright_pieces(diff) if (trail := fitted_line(points)) is not None]
    return [Line(trail) for trail in find_trails(diff)] + fitted


def in_continuation(trail: Trail, points: np.ndarray, zone: Zone = NEAR) -> np.ndarray:
    """Which points lie on the trail's line beyond either end (its continuation zone)."""
    start, direction = trail.ends[0], trail.direction
    along = (points - start) @ direction
    across = np.abs((points - start) @ np.array([-direction[1], direction[0]]))
    beyond = np.maximum(along - trail.length, -along).clip(min=0)
    reach = min(zone.reach * max(trail.length, LINE_PIECE_MIN_PX) + ZONE_REACH_SLACK_PX, ZONE_REACH_MAX_PX)
    back = ZONE_OVERLAP * trail.length
    ahead = ((along >= trail.length - back) & (along <= trail.length + reach)) | ((along <= back) & (along >= -reach))
    return ahead & (across <= np.minimum(ZONE_BAND_PX + zone.band_growth * beyond, zone.band_max))


def twins(a: Trail, b: Trail) -> bool:
    """Two trails of about the same length."""
    return max(a.length, b.length) <= TWIN_LENGTH_RATIO * min(a.length, b.length)


def reaches_as_piece(line: Line, own: Trail, size: int = TRAIN_SIZE) -> bool:
    """Whether a neighbour's fitted piece can be the next piece of a trail `own`: at least a third as long, or cut
    short by the edge of the size × size image."""
    return (line.trail.length >= REACHED_MIN_SHARE * own.length
            or line.points.min() <= EDGE_PX or line.points.max() >= size - 1 - EDGE_PX)


def explained(points: np.ndarray, neighbour_lines: list[Line]) -> bool:
    """A piece lies in the continuation zone of a neighbour's line, or a neighbour's piece at least a third as long
    (a speck of noise is not a satellite's next piece) or cut short by the image's edge lies in the piece's; a
    line-like piece about as long as the neighbour's line is also looked for in the far zone."""
    own = fitted_line(points)
    for line in neighbour_lines:
        if own is not None and angle_between(own, line.trail) > EXPLAINED_MAX_ANGLE_DEG:
            continue
        zones = (NEAR, FAR) if own is not None and twins(own, line.trail) else (NEAR,)
        for zone in zones:
            if in_continuation(line.trail, points, zone).mean() >= EXPLAINED_SHARE:
                return True
            if (own is not None and line.points is not None and reaches_as_piece(line, own)
                    and in_continuation(own, line.points, zone).mean() >= EXPLAINED_SHARE):
                return True
    return False


def explained_mask(diff: np.ndarray, neighbour_lines: list[Line], streaks: list[Trail] = (),
                   pieces: list[np.ndarray] | None = None) -> np.ndarray:
    """Where explaining away erases: every piece the neighbours explain (`pieces`, by default the difference image's
    bright pieces) and every streak explained otherwise (its own light or an adjacent frame's piece:
    `gualta.streak.explained_streaks`), widened by ERASE_MARGIN_PX (255; all 0 where nothing is explained)."""
    mask = np.zeros(diff.shape, np.uint8)
    for points in bright_pieces(diff) if pieces is None else pieces:
        if explained(points, neighbour_lines):
            mask[points[:, 1].astype(int), points[:, 0].astype(int)] = 255
    for trail in streaks:
        cv2.line(mask, (round(trail.x1), round(trail.y1)), (round(trail.x2), round(trail.y2)), 255, 1)
    size = 2 * ERASE_MARGIN_PX + 1
    return cv2.dilate(mask, np.ones((size, size), np.uint8))


def erased(diff: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The difference image with the mask's pixels set to its background (its median)."""
    out = diff.copy()
    out[mask > 0] = np.uint8(np.median(diff))
    return out


def pixels_at(points: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the pixels nearest to (x, y) points, kept inside an image of this shape."""
    xs = np.clip(np.rint(points[:, 0]).astype(int), 0, shape[1] - 1)
    ys = np.clip(np.rint(points[:, 1]).astype(int), 0, shape[0] - 1)
    return ys, xs


def share_in(mask: np.ndarray, trail: Trail) -> float:
    """The share of a trail's length (sampled every pixel) lying where the mask is set."""
    t = np.linspace(0.0, 1.0, max(round(trail.length), 1) + 1)[:, None]
    return float((mask[pixels_at(trail.ends[0] + t * (trail.ends[1] - trail.ends[0]), mask.shape)] > 0).mean())


# --- faint lines -------------------------------------------------------------------------------------------------

def line_kernel(angle_deg: float, length: int = FAINT_LENGTH_PX) -> np.ndarray:
    """A centred, anti-aliased line `length` px long at this angle, scaled to unit energy (a matched filter whose
    answer to white noise of unit variance has unit variance)."""
    kernel = np.zeros((length, length), np.float32)
    centre, half, shift = (length - 1) / 2, (length - 1) / 2, 4                  # ends in 1/16 px
    dx, dy = half * math.cos(math.radians(angle_deg)), half * math.sin(math.radians(angle_deg))
    ends = [(round((centre + sign * dx) * 2 ** shift), round((centre + sign * dy) * 2 ** shift)) for sign in (-1, 1)]
    cv2.line(kernel, ends[0], ends[1], 1.0, 1, cv2.LINE_AA, shift)
    return kernel / np.sqrt(np.square(kernel).sum())


LINE_KERNELS = [line_kernel(k * 180 / FAINT_DIRECTIONS) for k in range(FAINT_DIRECTIONS)]


def in_noise_units(diff: np.ndarray) -> np.ndarray:
    """The difference image less its local mean, over its local spread (FAINT_WINDOW_PX windows)."""
    window = (FAINT_WINDOW_PX, FAINT_WINDOW_PX)
    image = diff.astype(np.float32)
    residual = image - cv2.blur(image, window)
    spread = np.sqrt(np.maximum(cv2.blur(residual * residual, window), 0)) + 1.0
    return residual / spread


def line_contrast(diff: np.ndarray) -> np.ndarray:
    """For each pixel: how far the matched line filter's best direction answers above its median direction, in
    noise units (a line answers along itself only; a blob, an edge wider than the filter or noise answer alike)."""
    units = in_noise_units(diff)          # sorted: the median of 24 answers, several times faster than np.median
    answers = np.sort(np.stack([cv2.filter2D(units, -1, kernel) for kernel in LINE_KERNELS]), axis=0)
    middle = len(LINE_KERNELS) // 2
    return answers[-1] - (answers[middle - 1] + answers[middle]) / 2


def faint_lines_of(diff: np.ndarray) -> list[Line]:
    """A difference image's faint straight structures: connected pixels of high line contrast, long and thin
    enough to have a direction (`fitted_line`), with their pixels."""
    count, labels = cv2.connectedComponents((line_contrast(diff) >= FAINT_CONTRAST).astype(np.uint8), connectivity=8)
    groups = [points.astype(float) for points in component_points(labels, count) if len(points) >= FAINT_MIN_PX]
    return [Line(trail, points) for points in groups if (trail := fitted_line(points)) is not None]
