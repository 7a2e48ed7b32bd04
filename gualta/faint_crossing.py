"""Faint crossings: a satellite or a plane too faint for any piece or faint line of the 400×400 difference image.

Step 5 of the satellite check (docs/CLIENT_CHECKS.md "Satellite / plane check", 5 "Faint crossings"). A satellite a few
times the camera noise is a slightly denser line in the thresholded difference — enough for the model to call it a
meteor, too little for the pieces and faint lines of `gualta.trails`. Read in the full-resolution signal map
(`streak.signal_map`, the difference in units of its local noise) and summed along its line, it stands out; and it goes
on, along the same line, in an adjacent frame — where the search need not find it on its own, only ask whether that line
is lit:

    signal map, clipped, outside the sky zeroed → half resolution → a ridge filter FILTER_PX long in DIRECTIONS
    directions, robust z over the sky → connected ridge pixels with a direction → each refined at full resolution
    (angle, offset, extent) and scored against a null of windows as long at random places and directions

    a line of the candidate (z ≥ LINE_Z, ≥ MIN_LENGTH_PX) continues in an adjacent signal map when a window as long
    as the line, on its extension (within ±2° and ±3 px of it, 0.6–15 × its length + 20 px away, at most
    REACH_MAX_PX), sums to z ≥ CONTINUE_Z against that map's null, beats the same search on two control lines
    CONTROL_PX to either side (turned about the best window's centre: turned about the line's middle, a control
    would sweep onto the extension far out), is lit over at least half its length (not one bright spot) and is 0.3–3
    × as bright as the line itself (the same object).

A meteor lasts under a second: the adjacent differences hold nothing along its line (the control lines and the
brightness ratio keep clutter from passing for it). The lines this explains are erased from the model's input and
the frame is scored again, as in the steps before.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from gualta import streak
from gualta.classical import estimate_sky_mask
from gualta.preprocess import TRAIN_SIZE

CLIP = (-3.0, 5.0)            # the signal map clipped: a star's residual or a bright piece weighs like a faint line
DIRECTIONS = 24
FILTER_PX = 15                # the ridge filter's length, at half resolution (30 px of the frame) ...
SIDE_PX = 2                   # ... minus the mean of two parallel lines this far to either side
PROFILE_SIDE_PX = 3.0         # the same at full resolution, along a line
SEED_Z = 5.0                  # ridge pixels: the best direction at least this robust z over the sky
SEEDS_READ = 40               # the biggest connected ridges read
LINES_KEPT = 6                # a candidate's strongest lines (merged) that may be explained
REFINE_ANGLES_DEG = np.arange(-3.0, 3.01, 0.75)
REFINE_OFFSETS_PX = np.arange(-2.0, 2.01, 0.5)
NULL_WINDOWS = 400            # random windows of a map: the spread of a line's sum by chance (fixed seed)
NULL_STEP_PX = 8              # ... centred on the sky's pixels on this grid
LINE_Z = 6.0                  # a candidate's line: its sum at least this z against its map's null, ...
MIN_LENGTH_PX = 20.0          # ... and at least this long
CONTINUE_ANGLES_DEG = (-2, -1, 0, 1, 2)          # its continuation: within these angles of its line, ...
CONTINUE_OFFSETS_PX = (-3.0, -1.5, 0.0, 1.5, 3.0)  # ... these offsets across it, ...
MIN_SHIFT = 0.6               # ... its centre at least 0.6 × the line's length from the line's centre, ...
REACH = 15.0                  # ... at most 15 × its length + REACH_SLACK_PX, and at most REACH_MAX_PX
REACH_SLACK_PX = 20.0
REACH_MAX_PX = 600.0
MIN_COVER = 0.7               # a window at least 70 % inside the sky
CONTINUE_Z = 8.0              # its sum at least this z, ...
CONTROL_PX = 25.0             # ... above the best window of the lines this far to either side of it, ...
MIN_FILL = 0.5                # ... lit over half its length (its 5 px mean ≥ 0.4 × the window's mean), ...
FILL_LEVEL = 0.4
BRIGHTNESS_RATIO = (0.3, 3.0)  # ... and 0.3–3 × the line's mean brightness
ERASE_WIDTH_PX = 5            # an explained line's width in the 400×400 mask


@dataclass(frozen=True)
class Line:
    """A straight line of a signal map: its centre, unit direction and extent along it (px from the centre), its z
    against the map's null and its mean ridge signal."""
    centre: tuple[float, float]
    direction: tuple[float, float]
    start: float
    end: float
    z: float = 0.0
    mean: float = 0.0

    @property
    def length(self) -> float:
        return self.end - self.start

    @property
    def window_px(self) -> int:
        """The length of the windows that look for it in an adjacent map (and of its null's)."""
        return max(int(round(self.length)), 10)

    @property
    def ends(self) -> tuple[tuple[float, float], tuple[float, float]]:
        (cx, cy), (ux, uy) = self.centre, self.direction
        return (cx + ux * self.start, cy + uy * self.start), (cx + ux * self.end, cy + uy * self.end)


def signal(current: np.ndarray, previous: np.ndarray, sky: np.ndarray) -> np.ndarray:
    """The clipped signal map of a gray pair (`streak.signal_map`), zero outside the sky."""
    clipped = np.clip(streak.signal_map(current, previous), *CLIP).astype(np.float32)
    clipped[sky == 0] = 0.0
    return clipped


def ridge_strength(signal_map: np.ndarray, sky: np.ndarray) -> np.ndarray:
    """At half resolution, each pixel's strongest answer to a line filter over DIRECTIONS directions (the mean along
    FILTER_PX minus that of two parallel lines SIDE_PX aside), as a robust z over the sky."""
    half = cv2.resize(signal_map, (signal_map.shape[1] // 2, signal_map.shape[0] // 2), interpolation=cv2.INTER_AREA)
    height, width = half.shape
    side = int(math.ceil(math.hypot(height, width))) + 4
    in_sky = cv2.resize(sky, (width, height), interpolation=cv2.INTER_NEAREST)[::4, ::4] > 0
    best = np.full((height, width), -np.inf, np.float32)
    for k in range(DIRECTIONS):
        rotation = cv2.getRotationMatrix2D((width / 2, height / 2), k * 180.0 / DIRECTIONS, 1.0)
        rotation[0, 2] += (side - width) / 2
        rotation[1, 2] += (side - height) / 2
        turned = cv2.warpAffine(half, rotation, (side, side), flags=cv2.INTER_LINEAR, borderValue=0)
        along = cv2.blur(turned, (FILTER_PX, 1))
        ridge = along - 0.5 * (np.roll(along, SIDE_PX, 0) + np.roll(along, -SIDE_PX, 0))
        back = cv2.warpAffine(ridge, rotation, (width, height), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
        sample = back[::4, ::4][in_sky] if in_sky.any() else back[::4, ::4].ravel()
        middle = float(np.median(sample))
        spread = 1.4826 * float(np.median(np.abs(sample - middle))) + 1e-6
        np.maximum(best, (back - middle) / spread, out=best)
    return best


def sample_line(image: np.ndarray, centre, direction, ts: np.ndarray, offset=0.0) -> np.ndarray:
    """`image` along a line (NaN outside it): at `ts` px from `centre` along `direction`, `offset` px across. With
    centres, directions or offsets as (n, 1) arrays, n lines at once (an n × len(ts) array)."""
    (cx, cy), (ux, uy) = centre, direction
    xs, ys = cx + ux * ts - uy * offset, cy + uy * ts + ux * offset
    sampled = cv2.remap(image, np.atleast_2d(xs).astype(np.float32), np.atleast_2d(ys).astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    return sampled if np.ndim(xs) == 2 else sampled[0]


def ridge_profile(signal_map: np.ndarray, centre, direction, ts: np.ndarray, offset=0.0) -> np.ndarray:
    """The map along a line minus the mean of two lines PROFILE_SIDE_PX to either side (a wide glow cancels)."""
    sides = sample_line(signal_map, centre, direction, ts, offset + PROFILE_SIDE_PX) \
        + sample_line(signal_map, centre, direction, ts, offset - PROFILE_SIDE_PX)
    return sample_line(signal_map, centre, direction, ts, offset) - 0.5 * sides


def null_of(signal_map: np.ndarray, sky: np.ndarray, length: int) -> tuple[float, float]:
    """Median and robust spread of a ridge profile's sum over `length` px at NULL_WINDOWS random places of the sky
    and directions (seeded: the same map gives the same null)."""
    rng = np.random.default_rng(0)
    ys, xs = np.nonzero(sky[::NULL_STEP_PX, ::NULL_STEP_PX])
    if not len(xs):
        ys, xs = np.nonzero(np.ones_like(sky[::NULL_STEP_PX, ::NULL_STEP_PX]))
    picked = rng.integers(0, len(xs), NULL_WINDOWS)
    angles = rng.uniform(0, math.pi, NULL_WINDOWS)[:, None]
    centres = (xs[picked, None] * float(NULL_STEP_PX), ys[picked, None] * float(NULL_STEP_PX))
    ts = np.arange(length, dtype=np.float32) - length / 2
    sums = np.nansum(ridge_profile(signal_map, centres, (np.cos(angles), np.sin(angles)), ts), axis=1)
    middle = float(np.median(sums))
    return middle, 1.4826 * float(np.median(np.abs(sums - middle))) + 1e-6


def seeds(strength: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Connected ridge pixels (strength > SEED_Z, the SEEDS_READ biggest) long and thin enough to have a direction, as
    (centre, direction, start, end) in full-resolution px, their ends lengthened by the filter's reach."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats((strength > SEED_Z).astype(np.uint8), connectivity=8)
    found = []
    for label in np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:SEEDS_READ] + 1:
        if stats[label, cv2.CC_STAT_AREA] < 5:
            continue
        ys, xs = np.nonzero(labels == label)
        weights = strength[ys, xs].astype(float)
        points = np.stack([xs, ys], 1).astype(float) * 2 + 0.5
        centre = (points * weights[:, None]).sum(0) / weights.sum()
        offsets = points - centre
        values, vectors = np.linalg.eigh((offsets * weights[:, None]).T @ offsets / weights.sum())
        direction = vectors[:, 1]
        along = offsets @ direction
        start, end = along.min(), along.max()
        if end - start < 6 or math.sqrt(max(values[0], 0.0)) > 0.35 * (end - start) + 1.5:
            continue                                    # a blob, not a line
        found.append((centre, direction, start - FILTER_PX, end + FILTER_PX))
    return found


def refined(signal_map: np.ndarray, centre, direction, start: float, end: float) -> Line:
    """The seed's best line at full resolution (angle within 3°, offset within 2 px) and its extent: the stretch
    along it with the largest sum of the ridge minus 0.4 × its mean over the seed."""
    span = end - start
    ts = np.arange(start - span - 40, end + span + 40, 1.0, dtype=np.float32)
    inside = (ts >= start) & (ts <= end)
    turns, offsets = np.meshgrid(math.atan2(direction[1], direction[0]) + np.radians(REFINE_ANGLES_DEG),
                                 REFINE_OFFSETS_PX, indexing="ij")
    turns, offsets = turns.reshape(-1, 1), offsets.reshape(-1, 1)
    profiles = ridge_profile(signal_map, centre, (np.cos(turns), np.sin(turns)), ts, offsets)
    seen = np.isfinite(profiles[:, inside])
    values = np.where(seen.any(axis=1), np.nansum(profiles[:, inside], axis=1) / np.maximum(seen.sum(axis=1), 1),
                      -np.inf)
    best = int(np.argmax(values))                       # the first of the best, angle by angle
    ux, uy, offset, profile = math.cos(turns[best, 0]), math.sin(turns[best, 0]), offsets[best, 0], profiles[best]
    profile = np.nan_to_num(profile, nan=0.0)
    level = 0.4 * max(float(np.mean(profile[inside])), 0.5)
    running = np.concatenate([[0.0], np.cumsum(profile - level)])
    last = int(np.argmax(running - np.minimum.accumulate(running)))
    first = int(np.argmin(running[:last + 1]))
    moved = (centre[0] - uy * offset, centre[1] + ux * offset)
    return Line(moved, (ux, uy), float(ts[first]), float(ts[max(last - 1, first)]))


def same_line(a: Line, b: Line, max_angle_deg: float = 5.0, max_offset_px: float = 4.0) -> bool:
    """Whether two lines lie on one line and overlap (the same ridge found twice)."""
    cosine = min(1.0, abs(float(np.dot(a.direction, b.direction))))
    (ax, ay), (bx, by) = (np.mean(a.ends, axis=0), np.mean(b.ends, axis=0))
    between = np.array([bx - ax, by - ay])
    across = abs(float(between @ np.array([-a.direction[1], a.direction[0]])))
    along = abs(float(between @ np.array(a.direction)))
    return math.degrees(math.acos(cosine)) <= max_angle_deg and across <= max_offset_px \
        and along < (a.length + b.length) / 2


def lines_of(signal_map: np.ndarray, sky: np.ndarray) -> list[Line]:
    """The map's LINES_KEPT strongest straight lines, at least MIN_LENGTH_PX long, strongest first."""
    found = []
    for seed in seeds(ridge_strength(signal_map, sky)):
        line = refined(signal_map, *seed)
        if line.length < MIN_LENGTH_PX:
            continue
        ts = np.arange(line.start, line.end, 1.0, dtype=np.float32)
        profile = ridge_profile(signal_map, line.centre, line.direction, ts)
        middle, spread = null_of(signal_map, sky, int(line.length))
        found.append(Line(line.centre, line.direction, line.start, line.end,
                          (float(np.nansum(profile)) - middle) / spread, float(np.nanmean(profile))))
    found.sort(key=lambda line: -line.z)
    kept = []
    for line in found:
        if not any(same_line(other, line) for other in kept):
            kept.append(line)
    return kept[:LINES_KEPT]


@dataclass(frozen=True)
class Window:
    """The best window on a line's extension in an adjacent map: its z, mean, lit share, angle to the line (°) and
    centre (px along the line from the line's centre point)."""
    z: float
    mean: float = 0.0
    fill: float = 0.0
    turn: float = 0.0
    centre: float = 0.0


def best_window(line: Line, neighbour: np.ndarray, sky: np.ndarray, null: tuple[float, float], top: float,
                around: Window | None = None, control: float = 0.0) -> Window:
    """The best window as long as `line` on its extension in the neighbour map, turned by CONTINUE_ANGLES_DEG about
    the line's middle — or, `around` a window found so, about that window's centre on its line — and `control` px
    aside: its ridge profile clipped to [-2, top] and summed, against `null` (`null_of` the map clipped alike)."""
    length = line.window_px
    middle = (line.start + line.end) / 2
    reach = min(REACH * length + REACH_SLACK_PX, REACH_MAX_PX)
    ts = np.arange(middle - reach - length / 2, middle + reach + length / 2, 1.0, dtype=np.float32)
    centres = ts[:len(ts) - length + 1] + length / 2            # window i spans ts[i:i + length]
    far_enough = np.abs(centres - middle) >= MIN_SHIFT * length
    base = math.atan2(line.direction[1], line.direction[0])
    first_turn = around.turn if around else 0.0
    pivot = around.centre if around else middle                 # where the turned lines cross the line's path
    turns_deg = first_turn + np.array(CONTINUE_ANGLES_DEG, dtype=float)
    turns, offsets = np.meshgrid(base + np.radians(turns_deg), np.array(CONTINUE_OFFSETS_PX) + control, indexing="ij")
    turns, offsets = turns.reshape(-1, 1), offsets.reshape(-1, 1)
    directions = (np.cos(turns), np.sin(turns))
    along = pivot - middle
    anchor = (line.centre[0] + line.direction[0] * middle + math.cos(base + math.radians(first_turn)) * along,
              line.centre[1] + line.direction[1] * middle + math.sin(base + math.radians(first_turn)) * along)
    starts = (anchor[0] - directions[0] * pivot, anchor[1] - directions[1] * pivot)
    profiles = ridge_profile(neighbour, starts, directions, ts, offsets)
    usable = (sample_line(np.asarray(sky, np.float32), starts, directions, ts, offsets) > 127) & np.isfinite(profiles)
    values = np.where(usable, np.clip(profiles, -2.0, top), 0.0)
    sums = window_sums(values, length)
    cover = window_sums(usable.astype(float), length) / length
    null_middle, null_spread = null
    zs = np.where(far_enough & (cover > MIN_COVER), (sums - null_middle * cover) / null_spread, -np.inf)
    row, i = np.unravel_index(int(np.argmax(zs)), zs.shape)    # the first of the best, angle by angle
    if not np.isfinite(zs[row, i]):
        return Window(-np.inf)
    smooth = np.convolve(values[row], np.ones(5) / 5, mode="same")[i:i + length]
    mean = float(sums[row, i] / max(cover[row, i] * length, 1.0))
    lit = float(np.mean(smooth > FILL_LEVEL * mean))
    return Window(float(zs[row, i]), mean, lit, float(turns_deg[row // len(CONTINUE_OFFSETS_PX)]), float(centres[i]))


def window_sums(values: np.ndarray, length: int) -> np.ndarray:
    """Each row's sums over every window of `length` consecutive values."""
    running = np.concatenate([np.zeros((len(values), 1)), np.cumsum(values, axis=1)], axis=1)
    return running[:, length:] - running[:, :-length]


def continues_in(line: Line, neighbour: np.ndarray, sky: np.ndarray) -> bool:
    """Whether `line` goes on along its own line in an adjacent signal map (`neighbour`): see the module's doc."""
    top = max(2.0 * line.mean, 3.0)                  # a neighbour's brighter piece weighs like a twice brighter line
    null = null_of(np.clip(neighbour, -2.0, top), sky, line.window_px)
    window = best_window(line, neighbour, sky, null, top)
    low, high = BRIGHTNESS_RATIO
    if window.z < CONTINUE_Z or window.fill < MIN_FILL or not low * line.mean <= window.mean <= high * line.mean:
        return False
    return all(window.z >= best_window(line, neighbour, sky, null, top, window, control).z
               for control in (-CONTROL_PX, CONTROL_PX))


class Search:
    """One candidate's search for faint crossings, which the satellite check may ask for more than once (with the
    previous frame, with both neighbours, with the frame two back): its sky and its lines are found once, and each
    adjacent pair's signal map is made once (None for frames that could not be read: no lines)."""

    def __init__(self, current: np.ndarray | None, previous: np.ndarray | None):
        self.shape, self.maps = (None if current is None else current.shape), {}
        if current is None or previous is None or previous.shape != current.shape:
            self.sky, self.lines = None, []           # unreadable, or a camera changed: nothing to follow
            return
        self.sky = estimate_sky_mask([current, previous]).astype(np.float32)   # 255: the sky, 0: lens border, ground
        self.lines = [line for line in lines_of(signal(current, previous, self.sky), self.sky)
                      if line.z >= LINE_Z]                    # `lines_of` keeps those MIN_LENGTH_PX long

    def neighbour(self, key, frames: Callable[[], tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
        """The signal map of an adjacent pair of gray frames (`frames()`: current, previous; read only the first
        time), made once under `key`; None for frames of another size (a camera changed), or with no line to follow
        into it."""
        if key not in self.maps:
            current, previous = frames()
            same = self.lines and current.shape == previous.shape == self.shape
            self.maps[key] = signal(current, previous, self.sky) if same else None
        return self.maps[key]

    def explained(self, neighbours: list[np.ndarray]) -> list[Line]:
        """Its lines that go on in one of these adjacent signal maps."""
        return [line for line in self.lines if any(continues_in(line, other, self.sky) for other in neighbours)]


def explained_lines(current: np.ndarray, previous: np.ndarray,
                    neighbours: list[tuple[np.ndarray, np.ndarray]]) -> list[Line]:
    """The lines of the pair (`current`, `previous`: gray frames) that go on in an adjacent pair's difference
    (`neighbours`: (current, previous) gray pairs, the previous frame's and the next)."""
    search = Search(current, previous)
    maps = [search.neighbour(index, lambda: pair) for index, pair in enumerate(neighbours)]
    return search.explained([m for m in maps if m is not None])


def erase_mask(lines: list[Line], frame_size: tuple[int, int], size: int = TRAIN_SIZE) -> np.ndarray:
    """The lines (of a frame of `frame_size`: width, height) drawn ERASE_WIDTH_PX wide into a mask of the model's
    size×size difference image (255; 0 elsewhere)."""
    mask = np.zeros((size, size), np.uint8)
    width, height = frame_size
    for (x1, y1), (x2, y2) in (line.ends for line in lines):
        cv2.line(mask, (round(x1 * size / width), round(y1 * size / height)),
                 (round(x2 * size / width), round(y2 * size / height)), 255, ERASE_WIDTH_PX)
    return mask
