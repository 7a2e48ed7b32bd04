"""The streak check: a thin, straight streak that brightened since the previous frame, read in the full-resolution
difference.

The thesis' difference image thresholds at 3.5 DN and averages the frame down to 400×400, so a short meteor (20–40 px
in a 1304×976 frame) is a few pixels there and a faint one a slightly denser patch of speckle; the model misses many
of both. The full-resolution difference still shows them:

    gray current − previous (saturating) → high-pass (minus its σ 4 px blur) → smoothed (σ 0.8 px: a meteor's
    width) → divided by the local noise (median absolute deviation in 64 px blocks) and by how much the previous
    frame's own edges change when the sky shifts a little (half its local gradient: the sky circle's rim, trees,
    cloud edges, the moon) → pixels ≥ 4 → connected pieces, each with its ends, length, elongation, width and mean
    signal.

A piece at least 12 px long, thin (length² / area ≥ 4: a line at most a quarter as wide as it is long; at most 3.5
px across at half its peak, 5 px when ≥ 10 on average: a fireball's glare widens it) and ≥ 8 on average is a streak.
Stars, hot pixels and noise are specks; clouds and insects are wide. A piece with a streak's length and shape but
only 6–8 on average is a faint streak: noise and faint satellites make those too, so the client counts one only
where the model scores the frame near its threshold. So is a glare streak: a line at least 60 px long, at most a
twelfth as wide as long (length² / area ≥ 12) and 5 px across, ≥ 6 on average — a fireball dimmed by cloud or a
bright sky, too wide for a streak of its brightness (an out-of-focus insect can look alike). A meteor lasts under a
second, so the client reports a frame for a streak only when neither adjacent difference `explains` it: a piece at
the same spot, at least a third as long (a twinkling star, a flickering light; a speck of noise beside a long meteor
is not it), one on the streak's line within 10× the longer one's length that is no speck of noise either (a third as
long, longer than noise leaves pieces — 18 px — or a streak's brightness), or its twin (as long, on the very line)
within 15× (a satellite or a plane, which cross the sky for minutes; under a short exposure its pieces lie far
apart). Coordinates are full-frame pixels.

A satellite or a plane also moves steadily, so whatever the shape of its pieces they lie evenly spaced: a piece
midway (within 4 px + 5 % of the step) between a piece of the previous and one of the next difference, each like it
(at most 2× longer or shorter, 3× brighter or fainter; a thin one lying along the step), is `on_track` — a slow
plane's round light under a 4 s exposure, too short and round for a streak. Under a 3–4 s exposure a satellite's
pieces are dashes: a streak's length and brightness but too round for one (length² / area 3–4); a dash that an
adjacent frame's dash or streak `follows` (as long and as bright, on its line as a twin is, within 10° of its
direction) is a satellite's too.

A streak also shows its light curve. A meteor flares up and fades within its streak; a satellite shines steadily
for the whole exposure, so its streak is a plateau that ends abruptly. A streak is `steady` when, read along its line
in the smoothed brightening (the brightest of five lines across its width, averaged over 5 px): at least 80 % of it
is within 60 % of its peak, each outer fifth is at least 0.7 × its middle, nothing continues beyond its ends (under
15 % of the peak there: no fading tail of a longer meteor; beyond the frame's edge nothing can be read, so a streak
leaving the frame ends there), and at most a fifth of it is clipped at the sensor's top (a saturated meteor is
flat-topped too; a few clipped pixels — a bright satellite's glint, a star on its line — flatten no light curve).
Thin pieces that continue one another (within 5° and 3 px of each other's line, at most 20 px apart: a streak broken
by a dip in the noise or by a star in the previous frame) are read as one streak, and all are steady or none. A
faint streak's light curve is read too when it spans at least 30 px (shorter, too few samples). The client holds a
steady streak for a satellite, even when no adjacent frame shows it, and one with a plane's red and green wingtip
lights beside it (`wingtips`, marked by `gualta.wingtips`) for a plane.

A train of satellites (a few days after a launch: tens of objects one behind another on one path) lights the same path
again and again, where a meteor never repeats its path: a streak is `relit` when the next frame's ridge along its line
(the line's median over the brighter of two lines 6 px to either side, in frames smoothed by σ 1 px) stands at least
half the streak's own light above the previous frame's ridge, and above its sides — unless the next frame's light
along the line follows the streak's own (`lingers`: a meteor's persistent train glowing on, a frame saved twice). The
client reads it for a candidate's streaks that the adjacent differences do not explain, once the next frame is there
(three frames decoded), and a relit streak's light tells a crossing as a steady one's does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from gualta.classical import WATERMARK, ignore_box
from gualta.preprocess import SATURATED_DN
from gualta.trails import Trail, angle_between, gap_between, offset_from_line, pixels_at, principal_span

HIGH_PASS_SIGMA = 4.0
SMOOTH_SIGMA = 0.8
NOISE_BLOCK_PX = 64           # local noise: median absolute deviation in blocks of this side, ...
NOISE_STRIDE = 2              # ... read on every other row and column (a quarter of the pixels: 4× faster)
NOISE_FLOOR = 0.25            # the smoothed difference's noise is never taken below this (DN): the black lens border
EDGE_SHARE = 0.5              # a previous-frame edge of gradient g (DN/px) may change by this × g
LEVEL = 4.0                   # a piece pixel is at least 4 × the noise above its surroundings
PIECE_MIN_PX = 8              # pieces smaller than this, or spanning fewer pixels, are specks
BOX_MARGIN_PX = 8             # edge_change reaches 4 + 1 + 2 px beyond a pixel (blur, Sobel, dilation)
PER_BOX_MAX = 8               # more candidate pieces than this (clouds): the edges of the whole frame, once
NEIGHBOUR_PIECES = 12         # a neighbour's most prominent pieces (length × mean signal, capped) that may explain
PROMINENCE_CAP = 20.0

MIN_LENGTH_PX = 12.0          # a streak: at least this long, ...
MIN_ELONGATION = 4.0          # ... length² / area at least this, ...
MAX_WIDTH_PX = 3.5            # ... at most this wide (full width at half maximum of its cross-section), ...
BRIGHT_MAX_WIDTH_PX = 5.0     # ... or this wide when at least BRIGHT_SIGNAL on average (a fireball's glare), ...
BRIGHT_SIGNAL = 10.0
MIN_SIGNAL = 8.0              # ... and this bright on average (× noise)
FAINT_SIGNAL = 6.0            # a faint streak: a streak's shape, at least this but under MIN_SIGNAL on average
FAINT_STEADY_MIN_LENGTH_PX = 30.0   # a faint streak's light curve is read from this length (shorter: too few samples)
GLARE_MIN_LENGTH_PX = 60.0    # a faint streak too: a line this long, ...
GLARE_MIN_ELONGATION = 12.0   # ... this elongated, at most BRIGHT_MAX_WIDTH_PX wide and at least FAINT_SIGNAL bright
SPECK_MAX_PX = 18.0           # noise leaves pieces up to this long, at any signal under MIN_SIGNAL (`is_noise_length`)
LONG_BRIGHT_PX = 24.0         # a streak this long and BRIGHT_SIGNAL bright: a crossing's leaves a piece beside

SAME_SPOT_PX = 15.0           # explained: a neighbour piece's centre this close to the streak's, ...
SAME_SPOT_MIN_SHARE = 1 / 3   # ... and at least a third as long, ...
MAX_ANGLE_DEG = 10.0          # ... or a neighbour piece within this angle of the streak, ...
MAX_OFFSET_PX = 6.0           # ... its centre within this (+2 % of the distance along) of the streak's line, ...
REACH = 10.0                  # ... at most 10× the longer one's length (+ 30 px) along it, and no speck of noise
REACH_SLACK_PX = 30.0
TWIN_MAX_ANGLE_DEG = 3.0      # or its twin: a piece as long (within 1.5×), within 3° and 4 px (+1 % of the distance
TWIN_MAX_OFFSET_PX = 4.0      # along) of the streak's line, up to 15× their length away: a satellite under a short
TWIN_LENGTH_RATIO = 1.5       # exposure (2–3 s on a moonlit night) leaves pieces 10× their length apart
TWIN_REACH = 15.0
TRACK_OFFSET_PX = 4.0         # or it lies on a track: within 4 px (+5 % of the step) of the midpoint between a piece
TRACK_OFFSET_SHARE = 0.05     # of the previous and one of the next difference, each at most 2× longer or shorter
TRACK_LENGTH_RATIO = 2.0      # and 3× brighter or fainter than it, a thin piece lying along the step: a satellite or
TRACK_SIGNAL_RATIO = 3.0      # a plane moves steadily, so its pieces lie evenly spaced however short or round
DASH_MIN_ELONGATION = 3.0     # a dash: a streak's length and brightness, length² / area 3–4 (see `follows`)
EXTENT_TO_FWHM = 2.355        # a Gaussian cross-section's full width at half maximum, in standard deviations

STEADY_ACROSS_PX = (-1.5, -0.75, 0.0, 0.75, 1.5)    # the light curve: the brightest of these lines along the streak,
STEADY_AVERAGE_PX = 5                               # ... averaged over this many px along it
STEADY_PLATEAU = 0.6          # steady: at least 80 % of the streak within 60 % of its peak (90th percentile), ...
STEADY_PLATEAU_SHARE = 0.8
STEADY_END_RATIO = 0.7        # ... each outer fifth at least 0.7 × the middle, ...
STEADY_TAIL = 0.15            # ... under 15 % of the peak beyond its ends (4 px to 30 % of its length + 5 px out), ...
STEADY_GAP_PX = 4.0
STEADY_REACH = 0.3
STEADY_CLIPPED_SHARE = 0.2    # ... and at most a fifth of its line saturated (at or above `preprocess.SATURATED_DN`)
CHAIN_MAX_ANGLE_DEG = 5.0     # thin pieces of one streak: within 5° of each other, ...
CHAIN_MAX_OFFSET_PX = 3.0     # ... each one's ends within 3 px of the other's line, ...
CHAIN_MAX_GAP_PX = 20.0       # ... and their nearest ends at most 20 px apart
RELIT_SMOOTH_SIGMA = 1.0      # relit: the frames smoothed this much (σ, px); a streak's ridge is its line's median ...
RELIT_SIDE_PX = 6.0           # ... over the brighter of two parallel lines this far beside it, ...
RELIT_SHARE = 0.5             # ... and the next frame's ridge over the previous frame's is at least half its own, ...
RELIT_AVERAGE_PX = 9          # ... unless the next frame's light along the line follows the streak's own (both over
RELIT_LINGERS = 0.9           # the previous frame's, averaged over 9 px along it, correlate at least 0.9)


@dataclass(frozen=True)
class Piece:
    """A connected piece of the normalised difference: ends, centre, length, area, width and mean signal."""
    x1: float
    y1: float
    x2: float
    y2: float
    cx: float
    cy: float
    length: float
    area: int
    width: float
    signal: float
    steady: bool = False      # a satellite's light curve (see the module docstring)
    wingtips: bool = False    # a plane's red and green wingtip lights beside it (`gualta.wingtips`)
    relit: bool = False       # the next frame lights its path again (`relit`: a train of satellites)

    @property
    def ends(self) -> tuple[int, int, int, int]:
        return round(self.x1), round(self.y1), round(self.x2), round(self.y2)

    @property
    def span(self) -> float:
        """The distance between its ends (`length` counts the end pixels too: one more)."""
        return math.dist((self.x1, self.y1), (self.x2, self.y2))

    @property
    def elongation(self) -> float:
        return self.length ** 2 / self.area

    @property
    def direction(self) -> np.ndarray:
        vector = np.array([self.x2 - self.x1, self.y2 - self.y1])
        return vector / max(float(np.linalg.norm(vector)), 1e-9)

    @property
    def own_light(self) -> bool:
        """Whether its own light tells a crossing: a satellite's steady light curve, a plane's wingtip lights, or its
        path lit again in the next frame (a train of satellites)."""
        return self.steady or self.wingtips or self.relit

    @property
    def is_thin(self) -> bool:
        return self.elongation >= MIN_ELONGATION and self.width <= MAX_WIDTH_PX

    @property
    def is_streak(self) -> bool:
        widest = BRIGHT_MAX_WIDTH_PX if self.signal >= BRIGHT_SIGNAL else MAX_WIDTH_PX
        return (self.length >= MIN_LENGTH_PX and self.elongation >= MIN_ELONGATION and self.width <= widest
                and self.signal >= MIN_SIGNAL)

    @property
    def is_faint_streak(self) -> bool:
        """A streak's length and shape, FAINT_SIGNAL–MIN_SIGNAL bright, or a glare streak (`is_glare_streak`): too
        uncertain to report alone (noise, faint satellites and insects make such pieces too), a meteor's trace where
        the model leans to one (see `gualta.detect`)."""
        return (self.length >= MIN_LENGTH_PX and self.is_thin and FAINT_SIGNAL <= self.signal < MIN_SIGNAL
                or self.is_glare_streak)

    @property
    def is_glare_streak(self) -> bool:
        """A long line too wide for a streak of its brightness but at most a fireball's width (GLARE_MIN_LENGTH_PX
        long, length² / area at least GLARE_MIN_ELONGATION, at most BRIGHT_MAX_WIDTH_PX across, at least FAINT_SIGNAL
        on average): a fireball dimmed by cloud or a bright sky, its glare widening it (an out-of-focus insect near
        the lens can look alike)."""
        return (self.length >= GLARE_MIN_LENGTH_PX and self.elongation >= GLARE_MIN_ELONGATION
                and self.width <= BRIGHT_MAX_WIDTH_PX and self.signal >= FAINT_SIGNAL and not self.is_streak)

    @property
    def is_long_and_bright(self) -> bool:
        """A streak at least LONG_BRIGHT_PX long and BRIGHT_SIGNAL bright on average: a satellite or a plane that
        bright and long leaves a piece in an adjacent frame that explains it (`explains`), unless it left the view."""
        return self.is_streak and self.length >= LONG_BRIGHT_PX and self.signal >= BRIGHT_SIGNAL

    @property
    def is_noise_length(self) -> bool:
        """Whether it is no longer than noise leaves pieces (SPECK_MAX_PX)."""
        return self.length <= SPECK_MAX_PX

    def is_speck_beside(self, streak: Piece) -> bool:
        """Whether it is a speck of noise beside the streak: under a third as long, no longer than SPECK_MAX_PX and
        under a streak's brightness (noise leaves such specks all over a difference, some on any line; 12–18 px ones,
        a streak's length, in one empty frame pair in seven)."""
        return self.length < SAME_SPOT_MIN_SHARE * streak.length and self.is_noise_length and self.signal < MIN_SIGNAL

    @property
    def prominence(self) -> float:
        return self.length * min(self.signal, PROMINENCE_CAP)


def block_noise(image: np.ndarray, block: int = NOISE_BLOCK_PX, stride: int = NOISE_STRIDE) -> np.ndarray:
    """Robust noise (1.4826 × median absolute deviation) of each block×block tile, read on every `stride`-th row and
    column, interpolated to every pixel (blocks no larger than the image)."""
    height, width = image.shape
    block = min(block, height, width)
    rows, cols = max(height // block, 1), max(width // block, 1)
    tiles = image[:rows * block, :cols * block].reshape(rows, block, cols, block)[:, ::stride, :, ::stride]
    tiles = tiles.swapaxes(1, 2).reshape(rows, cols, -1)
    deviation = np.abs(tiles - median(tiles)[..., None])
    noise = 1.4826 * median(deviation).astype(np.float32)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)


def median(values: np.ndarray) -> np.ndarray:
    """np.median over the last axis, at half its cost: one partition at the lower middle value; with an even count,
    the upper middle value is the smallest above it."""
    count = values.shape[-1]
    middle = np.partition(values, (count - 1) // 2, axis=-1)
    lower = middle[..., (count - 1) // 2]
    return lower if count % 2 else (lower + middle[..., count // 2:].min(axis=-1)) / values.dtype.type(2)


def smoothed_brightening(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """current − previous (saturating), its σ 4 px surroundings subtracted, smoothed to a meteor's width."""
    brightening = cv2.subtract(current, previous).astype(np.float32)
    high_pass = brightening - cv2.GaussianBlur(brightening, (0, 0), HIGH_PASS_SIGMA)
    return cv2.GaussianBlur(high_pass, (0, 0), SMOOTH_SIGMA)


def edge_change(previous: np.ndarray) -> np.ndarray:
    """How much the previous frame's edges may change when the sky shifts a little: EDGE_SHARE × its local gradient
    (DN/px, the largest within 2 px)."""
    blurred = cv2.GaussianBlur(previous.astype(np.float32), (0, 0), 1.0)
    gradient = cv2.magnitude(cv2.Sobel(blurred, cv2.CV_32F, 1, 0), cv2.Sobel(blurred, cv2.CV_32F, 0, 1))
    return cv2.dilate(gradient, np.ones((5, 5), np.uint8)) * (EDGE_SHARE / 8)      # Sobel weighs a step 8×


def brightening_and_noise(current: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smoothed brightening and its local noise (at least NOISE_FLOOR)."""
    smooth = smoothed_brightening(current, previous)
    return smooth, np.maximum(block_noise(smooth), NOISE_FLOOR)


def normalised(smooth: np.ndarray, noise: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The brightening over the noise and the previous frame's edge change (the same window of all three)."""
    return smooth / cv2.magnitude(noise, edge_change(previous))


def signal_map(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """How far each pixel brightened beyond what noise and the previous frame's edges explain (8-bit gray frames),
    the watermark box left out. `pieces` computes the same only around pixels that can pass."""
    return ignore_box(normalised(*brightening_and_noise(current, previous), previous), WATERMARK)


def pieces(current: np.ndarray, previous: np.ndarray) -> list[Piece]:
    """The pieces of current over previous (`signal_map` above LEVEL), most prominent first.

    Noise alone bounds the signal from above (the edge term only lowers it), so the edges are weighed only in the
    boxes around pixels that pass on noise alone when there are few (most clear frames), else once for the whole
    frame."""
    smooth, noise = brightening_and_noise(current, previous)
    bound = ignore_box((smooth > LEVEL * noise).astype(np.uint8), WATERMARK)
    candidates = large_components(bound)
    found = []
    if len(candidates) > PER_BOX_MAX:                 # clouds, a changing sky: the whole frame's edges at once
        signal = normalised(smooth, noise, previous)
        found = pieces_of(bound & (signal > LEVEL).astype(np.uint8), signal)
    else:
        for points in candidates:
            box = box_around(*points.min(axis=0), *(points.max(axis=0) + 1))
            signal = normalised(smooth[box], noise[box], previous[box])
            oy, ox = box[0].start, box[1].start
            passing = np.zeros(signal.shape, np.uint8)
            passing[points[:, 1] - oy, points[:, 0] - ox] = 1
            found += pieces_of(passing & (signal > LEVEL).astype(np.uint8), signal, offset=(ox, oy))
    return ranked(with_light_curves(found, smooth, current))


def ranked(found: list[Piece]) -> list[Piece]:
    return sorted(found, key=lambda piece: -piece.prominence)


def box_around(left: int, top: int, right: int, bottom: int) -> tuple[slice, slice]:
    """Rows and columns of a component's box widened by BOX_MARGIN_PX (cut at the frame's top and left; numpy cuts
    the rest)."""
    return (slice(max(top - BOX_MARGIN_PX, 0), bottom + BOX_MARGIN_PX),
            slice(max(left - BOX_MARGIN_PX, 0), right + BOX_MARGIN_PX))


def large_components(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected components of mask with at least PIECE_MIN_PX pixels spanning at least PIECE_MIN_PX, each as
    its (x, y) pixels in raster order.

    Sizes and spans are read from the mask's own pixels, grouped by label: OpenCV's component statistics visit every
    pixel of the frame (several times the labelling's cost on a sparse mask)."""
    _, labels = cv2.connectedComponents(mask, connectivity=8)
    points = cv2.findNonZero(mask)
    if points is None:
        return []
    points = points.reshape(-1, 2)
    owner = labels[points[:, 1], points[:, 0]]
    order = np.argsort(owner, kind="stable")                  # by label, raster order within each component
    points, owner = points[order], owner[order]
    starts = np.flatnonzero(np.diff(owner, prepend=-1))
    ends = np.append(starts[1:], len(owner))
    width = np.maximum.reduceat(points[:, 0], starts) - np.minimum.reduceat(points[:, 0], starts) + 1
    height = points[ends - 1, 1] - points[starts, 1] + 1      # raster order: the first row first, the last last
    large = (ends - starts >= PIECE_MIN_PX) & (np.maximum(width, height) >= PIECE_MIN_PX)
    return [points[start:end] for start, end in zip(starts[large].tolist(), ends[large].tolist())]


def pieces_of(mask: np.ndarray, signal: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[Piece]:
    """The large components of mask as pieces, with their mean signal; offset places mask in the frame."""
    return [as_piece(points + offset, signal[points[:, 1], points[:, 0]]) for points in large_components(mask)]


def as_piece(points: np.ndarray, signal: np.ndarray) -> Piece:
    """A piece from its (x, y) pixels and their signal."""
    start, end, spread = principal_span(points.astype(float))
    centre_x, centre_y = points.mean(axis=0)
    return Piece(*start, *end, float(centre_x), float(centre_y), math.dist(start, end) + 1, len(points),
                 EXTENT_TO_FWHM * float(spread[1]) / math.sqrt(len(points)), float(signal.mean()))


def points_along(piece: Piece, along: np.ndarray, across: float = 0.0) -> np.ndarray:
    """(x, y) points `along` px from the piece's first end on its line, `across` px beside it."""
    start, direction = np.array([piece.x1, piece.y1]), piece.direction
    return start + along[:, None] * direction + across * np.array([-direction[1], direction[0]])


def pixels_along(piece: Piece, along: np.ndarray, shape: tuple[int, ...], across: float = 0.0) -> tuple:
    """(rows, columns) of `points_along` the piece, kept inside an image of this shape."""
    return pixels_at(points_along(piece, along, across), shape)


def in_image(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Whether each (x, y) point lies inside an image of this shape."""
    return ((points >= -0.5) & (points <= np.array([shape[1], shape[0]]) - 0.5)).all(axis=1)


def light_curve(piece: Piece, smooth: np.ndarray, beyond: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Positions along the piece (0 at its first end; `beyond` px past either end) and the smoothed brightening
    there: the brightest of the lines across its width, averaged over STEADY_AVERAGE_PX; NaN beyond the frame's
    edge (nothing can be read there)."""
    along = np.arange(-beyond, piece.span + beyond, 1.0)
    brightest = np.max([smooth[pixels_along(piece, along, smooth.shape, offset)] for offset in STEADY_ACROSS_PX],
                       axis=0)
    window = np.ones(STEADY_AVERAGE_PX) / STEADY_AVERAGE_PX
    curve = np.convolve(brightest, window, mode="same")
    return along, np.where(in_image(points_along(piece, along), smooth.shape), curve, np.nan)


def is_steady(along: np.ndarray, curve: np.ndarray, length: float) -> bool:
    """Whether a light curve (`light_curve` with some px beyond the ends) is a satellite's plateau. Samples off the
    frame are left out: a wide piece cut by the frame's edge at a shallow angle has its fitted end beyond it."""
    inside = curve[(along >= 0) & (along <= length)]
    inside = inside[~np.isnan(inside)]
    if len(inside) < 5:
        return False
    peak = max(float(np.percentile(inside, 90)), 1e-6)
    fifth = max(len(inside) // 5, 1)
    middle = max(float(inside[fifth:-fifth].mean()), 1e-6)
    ends = min(float(inside[:fifth].mean()), float(inside[-fifth:].mean()))
    before, after = curve[along < -STEADY_GAP_PX], curve[along > length + STEADY_GAP_PX]
    tail = max(mean_in_frame(before), mean_in_frame(after))
    return bool((inside >= STEADY_PLATEAU * peak).mean() >= STEADY_PLATEAU_SHARE and ends >= STEADY_END_RATIO * middle
                and tail <= STEADY_TAIL * peak)


def mean_in_frame(curve: np.ndarray) -> float:
    """The mean of a light curve's samples inside the frame; 0 when there are none (a streak that leaves the frame
    ends there as far as anyone can tell)."""
    inside = curve[~np.isnan(curve)]
    return float(inside.mean()) if len(inside) else 0.0


def clipped_share(piece: Piece, current: np.ndarray) -> float:
    """The share of the piece's line at the sensor's top in the current frame."""
    along = np.linspace(0.0, piece.span, max(int(piece.span), 1) + 1)
    return float((current[pixels_along(piece, along, current.shape)] >= SATURATED_DN).mean())


def has_steady_light(piece: Piece, smooth: np.ndarray, current: np.ndarray) -> bool:
    """Whether the piece is a streak, or a faint streak at least FAINT_STEADY_MIN_LENGTH_PX long, with a satellite's
    light curve, and at most STEADY_CLIPPED_SHARE of it saturated (beyond that its light curve is the sensor's)."""
    readable = piece.is_streak or (piece.is_faint_streak and piece.length >= FAINT_STEADY_MIN_LENGTH_PX)
    if not readable or clipped_share(piece, current) > STEADY_CLIPPED_SHARE:
        return False
    along, curve = light_curve(piece, smooth, beyond=STEADY_REACH * piece.span + STEADY_GAP_PX + 1)
    return is_steady(along, curve, piece.span)


def as_trail(piece: Piece) -> Trail:
    """The piece's line as a trail (in full-frame pixels), for the trail geometry of `gualta.trails`."""
    return Trail(piece.x1, piece.y1, piece.x2, piece.y2)


def chained(a: Piece, b: Piece) -> bool:
    """Whether two thin pieces continue each other: one streak that noise or a star broke in two."""
    first, second = as_trail(a), as_trail(b)
    return (angle_between(first, second) <= CHAIN_MAX_ANGLE_DEG and gap_between(first, second) <= CHAIN_MAX_GAP_PX
            and max(offset_from_line(first, second.ends), offset_from_line(second, first.ends)) <= CHAIN_MAX_OFFSET_PX)


def chains(found: list[Piece]) -> list[list[Piece]]:
    """The pieces grouped into chains of thin pieces that continue one another (most pieces alone)."""
    groups: list[list[Piece]] = []
    for piece in [piece for piece in found if piece.is_thin]:
        joined = [k for k, group in enumerate(groups) if any(chained(piece, other) for other in group)]
        groups = [group for k, group in enumerate(groups) if k not in joined] + [
            [piece] + [other for k in joined for other in groups[k]]]
    return groups + [[piece] for piece in found if not piece.is_thin]


def spanning(chain: list[Piece]) -> Piece:
    """One piece from a chain's outermost ends: its length, total area, widest width and area-weighted signal."""
    if len(chain) == 1:
        return chain[0]
    start, end, _ = principal_span(np.vstack([as_trail(piece).ends for piece in chain]))
    area = sum(piece.area for piece in chain)
    centre = sum(np.array([piece.cx, piece.cy]) * piece.area for piece in chain) / area
    return Piece(*start, *end, *centre.tolist(), math.dist(start, end) + 1, area, max(piece.width for piece in chain),
                 sum(piece.signal * piece.area for piece in chain) / area)


def with_light_curves(found: list[Piece], smooth: np.ndarray, current: np.ndarray) -> list[Piece]:
    """The pieces, those of a streak with a satellite's light curve marked `steady`; a streak broken into a chain of
    pieces is read whole."""
    marked = []
    for chain in chains(found):
        steady = has_steady_light(spanning(chain), smooth, current)
        marked += [replace(piece, steady=steady) for piece in chain]
    return marked


def along_and_across(other: Piece, piece: Piece) -> tuple[float, float]:
    """How far the other piece's centre lies from the piece's, along its line and beside it."""
    (dx, dy), (ux, uy) = (other.cx - piece.cx, other.cy - piece.cy), piece.direction
    return abs(float(dx * ux + dy * uy)), abs(float(dx * uy - dy * ux))


def explains(other: Piece, streak: Piece) -> bool:
    """Whether a piece of an adjacent frame accounts for the streak: at the same spot (a third as long), its twin, or
    on its line within reach (no speck of noise beside it)."""
    if other.length < PIECE_MIN_PX:
        return False
    if (math.dist((other.cx, other.cy), (streak.cx, streak.cy)) <= SAME_SPOT_PX
            and other.length >= SAME_SPOT_MIN_SHARE * streak.length):
        return True
    cosine = abs(float(other.direction @ streak.direction))
    along, across = along_and_across(other, streak)
    longer = max(streak.length, other.length)
    if (cosine >= math.cos(math.radians(TWIN_MAX_ANGLE_DEG)) and across <= TWIN_MAX_OFFSET_PX + 0.01 * along
            and longer <= TWIN_LENGTH_RATIO * min(streak.length, other.length)
            and along <= TWIN_REACH * longer + REACH_SLACK_PX):
        return True
    return bool(cosine >= math.cos(math.radians(MAX_ANGLE_DEG)) and across <= MAX_OFFSET_PX + 0.02 * along
                and along <= REACH * longer + REACH_SLACK_PX and not other.is_speck_beside(streak))


def alike(piece: Piece, other: Piece) -> bool:
    """Whether two pieces may be one moving light's in consecutive frames: lengths within TRACK_LENGTH_RATIO and mean
    signals within TRACK_SIGNAL_RATIO of each other."""
    return (max(piece.length, other.length) <= TRACK_LENGTH_RATIO * min(piece.length, other.length)
            and max(piece.signal, other.signal) <= TRACK_SIGNAL_RATIO * min(piece.signal, other.signal))


def midway(piece: Piece, before: Piece, after: Piece) -> bool:
    """Whether the piece lies midway between a previous and a next piece like it (a thin one along the step between
    them): one light moving steadily across three frames."""
    step_x, step_y = after.cx - before.cx, after.cy - before.cy
    distance = math.hypot(step_x, step_y)
    offset = math.dist((piece.cx, piece.cy), ((before.cx + after.cx) / 2, (before.cy + after.cy) / 2))
    if offset > TRACK_OFFSET_PX + TRACK_OFFSET_SHARE * distance or not (alike(piece, before) and alike(piece, after)):
        return False
    if not piece.is_thin or distance == 0:
        return True
    direction_x, direction_y = piece.direction
    return abs(step_x * direction_x + step_y * direction_y) >= math.cos(math.radians(MAX_ANGLE_DEG)) * distance


def is_dash(piece: Piece) -> bool:
    """A streak's length and brightness but too round for one (length² / area DASH_MIN_ELONGATION–MIN_ELONGATION): a
    satellite's piece under an exposure of a few seconds."""
    return (piece.length >= MIN_LENGTH_PX and piece.signal >= MIN_SIGNAL
            and DASH_MIN_ELONGATION <= piece.elongation < MIN_ELONGATION)


def follows(other: Piece, dash: Piece) -> bool:
    """Whether an adjacent frame's piece is the same satellite's next or last dash: a dash or a streak as long (within
    TWIN_LENGTH_RATIO) and as bright (`alike`), within MAX_ANGLE_DEG of its direction (a dash's is rough), its centre
    on the dash's line as a twin's is (TWIN_MAX_OFFSET_PX + 1 % of the distance along) and within TWIN_REACH × their
    length."""
    if not is_dash(dash) or not (is_dash(other) or other.is_streak):
        return False
    along, across = along_and_across(other, dash)
    longer = max(dash.length, other.length)
    return bool(longer <= TWIN_LENGTH_RATIO * min(dash.length, other.length) and alike(dash, other)
                and abs(float(other.direction @ dash.direction)) >= math.cos(math.radians(MAX_ANGLE_DEG))
                and across <= TWIN_MAX_OFFSET_PX + 0.01 * along and along <= TWIN_REACH * longer + REACH_SLACK_PX)


def on_track(piece: Piece, neighbour_pieces: list[list[Piece]]) -> bool:
    """Whether the piece lies midway between a prominent piece of the previous and one of the next difference
    (`midway`; needs both: `neighbour_pieces` in time order)."""
    if len(neighbour_pieces) != 2:
        return False
    before, after = (found[:NEIGHBOUR_PIECES] for found in neighbour_pieces)
    return any(midway(piece, first, last) for first in before for last in after)


def prominent(neighbour_pieces: list[list[Piece]]) -> list[Piece]:
    """The adjacent frames' pieces that may explain a streak: each frame's most prominent NEIGHBOUR_PIECES."""
    return [piece for found in neighbour_pieces for piece in found[:NEIGHBOUR_PIECES]]


def explained_by_adjacent(piece: Piece, neighbour_pieces: list[list[Piece]]) -> bool:
    """Whether the adjacent differences account for a streak (or a faint streak): a prominent piece of one explains
    it (`explains`), or it lies on a track (`on_track`; `neighbour_pieces` in time order)."""
    return on_track(piece, neighbour_pieces) or any(explains(other, piece) for other in prominent(neighbour_pieces))


def explained_streaks(frame_pieces: list[Piece], neighbour_pieces: list[list[Piece]]) -> list[Piece]:
    """The frame's pieces whose own light tells a crossing (`Piece.own_light`: a satellite's steady light, a plane's
    wingtip lights, a path lit again), its pieces on a track (`on_track`: a satellite's or a plane's dashes and dots),
    its dashes an adjacent frame's piece follows (`follows`) and its streaks and faint streaks that an adjacent frame's
    prominent pieces explain (`neighbour_pieces` in time order)."""
    others = prominent(neighbour_pieces)
    return [piece for piece in frame_pieces if piece.own_light or any(follows(other, piece) for other in others)
            or (explained_by_adjacent(piece, neighbour_pieces) if piece.is_streak or piece.is_faint_streak
                else on_track(piece, neighbour_pieces))]


def ridge_frame(frame: np.ndarray) -> np.ndarray:
    """A gray frame as `ridge` reads it: float32, smoothed (RELIT_SMOOTH_SIGMA)."""
    return cv2.GaussianBlur(frame.astype(np.float32), (0, 0), RELIT_SMOOTH_SIGMA)


def light_on_line(frame: np.ndarray, piece: Piece, across: float = 0.0) -> np.ndarray:
    """A `ridge_frame` read along the piece's line (`across` px beside it), a sample a pixel, inside the frame."""
    along = np.linspace(0.0, piece.span, max(2, math.ceil(piece.span) + 1))
    points = points_along(piece, along, across)
    points = points[in_image(points, frame.shape)].astype(np.float32)
    if not len(points):
        return np.zeros(0, np.float32)
    return cv2.remap(frame, points[:, 0][None], points[:, 1][None], cv2.INTER_LINEAR).ravel()


def ridge(frame: np.ndarray, piece: Piece) -> float:
    """How much brighter a `ridge_frame` is along the piece's line than beside it: the median along the line, a
    sample a pixel, minus the brighter of the medians along the two lines RELIT_SIDE_PX to either side (a cloud, the
    moon's glare or the sky's gradient lights a line and its sides alike)."""
    lines = [light_on_line(frame, piece, across) for across in (0.0, RELIT_SIDE_PX, -RELIT_SIDE_PX)]
    if not all(len(light) for light in lines):
        return 0.0
    along, *sides = (float(np.median(light)) for light in lines)
    return along - max(sides)


def lingers(piece: Piece, previous: np.ndarray, current: np.ndarray, following: np.ndarray) -> bool:
    """Whether the next frame's light along the streak's line follows the streak's own, a copy of the streak
    lingering (`ridge_frame`s of the previous, the current and the next frame): both over the previous frame's,
    averaged over RELIT_AVERAGE_PX along the line, correlate at least RELIT_LINGERS. A meteor's persistent train
    glowing on or a frame the camera saved twice follows it (0.92–1.0 on simulated nights' meteors); a train's next
    objects light the path each with its own light (under 0.9 for about five in six of its streaks on painted
    nights). A streak too short for RELIT_AVERAGE_PX averages of its own lingers: it cannot be told from a copy."""
    base = light_on_line(previous, piece)
    window = np.ones(RELIT_AVERAGE_PX, np.float32) / RELIT_AVERAGE_PX
    own, again = (np.convolve(light_on_line(frame, piece) - base, window, "valid") for frame in (current, following))
    if len(own) < RELIT_AVERAGE_PX or own.std() == 0 or again.std() == 0:
        return True
    return float(np.corrcoef(own, again)[0, 1]) >= RELIT_LINGERS


def relit(piece: Piece, previous: np.ndarray, current: np.ndarray, following: np.ndarray) -> bool:
    """Whether the next frame lights the streak's path again (`ridge_frame`s of the previous, the current and the
    next frame): its ridge there stands at least RELIT_SHARE of the streak's own light (its ridge over the previous
    frame's) above the previous frame's ridge and above its sides, and its light along the line does not follow the
    streak's own (`lingers`: a meteor's persistent train, a re-saved frame). A meteor never repeats its path; a train
    of satellites, one behind another on one path, lights it again."""
    before, again = ridge(previous, piece), ridge(following, piece)
    own = ridge(current, piece) - before
    return (own > 0 and min(again - before, again) >= RELIT_SHARE * own
            and not lingers(piece, previous, current, following))


def unexplained_streaks(frame_pieces: list[Piece], neighbour_pieces: list[list[Piece]]) -> list[Piece]:
    """The frame's streaks that neither their own light (`Piece.own_light`: a satellite's steady light, a plane's
    wingtip lights, a path lit again) nor the adjacent differences account for (`explained_by_adjacent`), longest
    first."""
    return unexplained([piece for piece in frame_pieces if piece.is_streak], neighbour_pieces)


def unexplained(streaks: list[Piece], neighbour_pieces: list[list[Piece]]) -> list[Piece]:
    """Those of `streaks` whose own light does not tell a crossing (`Piece.own_light`) and that the adjacent
    differences do not account for (`explained_by_adjacent`), longest first."""
    left = [piece for piece in streaks if not piece.own_light and not explained_by_adjacent(piece, neighbour_pieces)]
    return sorted(left, key=lambda piece: -piece.length)
