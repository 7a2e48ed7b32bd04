"""Tiny synthetic AllSky nights for dataset tests: a static starry background, meteor streaks, tally marks."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gualta import allsky

WIDTH, HEIGHT = 130, 98
STREAK = (20, 20, 110, 75)                  # x1, y1, x2, y2 in frame pixels
TALLY_STEP = 16                             # one tally dot per frame, each in its own JPEG block
GT_COLUMNS = ["file", "time", "label", "event", "events", "x1", "y1", "x2", "y2", "length_px", "peak_snr",
              "peak_dn", "clouds", "scenario"]


def background(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A dark sky in the lens circle, black around it, with a few fixed stars (the same in every frame, so they
    cancel in differences)."""
    sky = cv2.circle(np.zeros((height, width), np.uint8), (width // 2, height // 2), height // 2, 12, -1)
    rng = np.random.default_rng(7)
    for x, y in zip(rng.integers(0, width, 15), rng.integers(0, height, 15)):
        cv2.circle(sky, (int(x), int(y)), 1, 200, -1)
    return sky


def sensor_noise(index: int, size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    """Exposure `index`'s noise: 0 or 1 DN a pixel (every exposure differs from the last, as a camera's do)."""
    return np.random.default_rng(1000 + index).integers(0, 2, (size[1], size[0]), dtype=np.uint8)


def tally_spot(index: int) -> tuple[int, int]:
    """Top-left corner of frame `index`'s tally dot (8×8-aligned, one JPEG block each)."""
    per_row = WIDTH // TALLY_STEP
    return (index % per_row) * TALLY_STEP + 2, (index // per_row) * TALLY_STEP + 2


def frame_image(index: int, meteor: bool, tally: bool, size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    """Frame `index`: background with its own 1 DN sensor noise (a new exposure, below the difference threshold),
    the streak if meteor, and (tally) dots 0..index, so that the difference of frames i and j shows i − j dots: the
    pairing can be read off the image."""
    image = background(*size) + sensor_noise(index, size)
    if tally:
        for k in range(index + 1):
            x, y = tally_spot(k)
            image[y:y + 4, x:x + 4] = 255
    if meteor:
        cv2.line(image, STREAK[:2], STREAK[2:], 255, 2)
    return image


def make_night(root: Path, night: str = "20211110", frames: int = 8, meteors: tuple[int, ...] = (3,),
               tally: bool = False, ground_truth: bool = True, event: str = "meteor") -> Path:
    """Write ROOT/NIGHT/image-*.jpg every 30 s from 21:00 plus ground_truth.csv; return the night folder."""
    folder = root / night
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime.strptime(night, allsky.NIGHT_FORMAT).replace(hour=21)
    rows = []
    for i in range(frames):
        stamp = start + timedelta(seconds=allsky.FRAME_INTERVAL_S * i)
        name = allsky.frame_name(stamp)
        meteor = i in meteors
        cv2.imwrite(str(folder / name), frame_image(i, meteor, tally), [cv2.IMWRITE_JPEG_QUALITY, 100])
        streak = STREAK if meteor else (None,) * 4
        rows.append({"file": name, "time": stamp.isoformat(), "label": "meteor" if meteor else "no-meteor",
                     "event": event if meteor else "none", "events": event if meteor else "",
                     "x1": streak[0], "y1": streak[1], "x2": streak[2], "y2": streak[3],
                     "length_px": 106.0 if meteor else None, "peak_snr": 40.0 + i if meteor else None,
                     "peak_dn": 255 if meteor else None, "clouds": 0.0, "scenario": "clear"})
    if ground_truth:
        pd.DataFrame(rows, columns=GT_COLUMNS).to_csv(folder / "ground_truth.csv", index=False)
    return folder


def frame_path(night: Path, index: int) -> Path:
    """Path of frame `index` of a night written by make_night."""
    return allsky.list_frames(night)[index]


def dot_count(image: np.ndarray) -> int:
    """Number of separate bright blobs in a difference image."""
    count, _ = cv2.connectedComponents((image > 64).astype(np.uint8))
    return count - 1
