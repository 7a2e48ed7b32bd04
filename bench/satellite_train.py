"""A train of freshly launched satellites painted on copies of simulated nights: false reports and meteor frames found,
and which check or flag made or held back each decision, for one client or several.

    python bench/satellite_train.py --nights ROOT_OR_NIGHT_DIR... --work DIR [--clients CHECKOUT...] [--seed 1]
                                    [--threads 0]

Each night (a folder with ground_truth.csv) is copied to DIR/painted/seed-SEED/YYYYMMDD with one or two trains, as an
all-sky camera sees a train of satellites a few days after launch: 10–40 sunlit objects one behind another on one great
circle of the sky (its highest point 25–90° up), 2–8 minutes from the first to the last (some close together, some a
minute apart), each crossing at 0.4–1.3° a second (60–200 px in a 30 s exposure near the zenith, on the equidistant lens
measured from the frame), so that within one exposure each draws a trail and the trails of one frame line up on one
curve, often overlapping into one long dashed or continuous line. Each object has its own brightness (peak 5–30 × the
frame's noise, spread about the train's level; one in seven flares 2–5 × for a few seconds), dims towards the horizon
and, on most trains, fades out over 5–15° where the path enters Earth's shadow. A train is placed where every frame it
lights has the sun 12° or more below the horizon (dark, never washed out), lights only where the frame shows sky and is
drawn over each frame's own exposure; frames are saved again at the night's JPEG quality. Each client (a checkout of
this repository; default: this one) runs its own `guAlta.py batch` (the shipped model of this checkout, every check on,
no upload) on the undisturbed and on the painted night; a scores CSV already under DIR/scores is read, not run again.
Printed, a row a client and night: false reports (reported frames without a meteor) and meteor frames found, undisturbed
and painted; a row a night and run of the first client: what made each false report, what the flags held back; and a row
a night: the frames a train lit, and how many of them the first client reported without a meteor. Figures are printed,
never asserted.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import allsky, evaluate  # noqa: E402
from gualta.dataset import GROUND_TRUTH  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from aurora import decisions, lens_circle  # noqa: E402
from camera_shake import checkout_key, scores_path  # noqa: E402
from web_strand import painted_and_compared, painted_night, painting_arguments, sky_of  # noqa: E402

OBJECTS = (10, 40)
TRAIN_SPAN_S = (120.0, 480.0)        # first object to last
TRAIL_PX = (60.0, 200.0)             # a 30 s trail near the zenith
PEAK_SNR = (5.0, 30.0)               # the train's level, × the frame's noise
SPREAD = 0.5                         # σ of an object's log brightness about the train's level
FLARE_SHARE = 1 / 7
FLARE = (2.0, 5.0)
FLARE_S = (1.5, 4.0)                 # σ of a flare in time
SHADOW_SHARE = 0.7                   # trains that fade into Earth's shadow on the way
SHADOW_FADE_DEG = (5.0, 15.0)
HORIZON_FADE_DEG = 12.0              # dimmer through more air low in the sky
DARK_SUN_ALT = -12.0
SIGMA_PX = 0.8                       # the trail's width (σ across it)
STEP_PX = 0.5                        # points along a trail
FRAME_S = allsky.FRAME_INTERVAL_S


def path_axes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two orthonormal directions (east, north, up) spanning the train's great circle: `rise` on the horizon where
    it comes into view, `top` the circle's highest point (25–90° up)."""
    top_alt, heading = np.radians(rng.uniform(25, 90)), rng.uniform(0, 2 * np.pi)
    top = np.array([np.cos(top_alt) * np.sin(heading), np.cos(top_alt) * np.cos(heading), np.sin(top_alt)])
    rise = np.array([np.cos(heading), -np.sin(heading), 0.0])             # horizontal, ⟂ top
    return rise, top


def train_plan(rng: np.random.Generator, radius: float) -> dict:
    """A train: its path, its objects' entry times, brightness and flares, its speed and where it enters shadow."""
    count = int(rng.integers(*OBJECTS, endpoint=True))
    gaps = rng.dirichlet(np.full(count - 1, 0.7)) * rng.uniform(*TRAIN_SPAN_S)
    deg_per_s = rng.uniform(*TRAIL_PX) / (radius / 90.0) / FRAME_S
    flares = rng.random(count) < FLARE_SHARE
    shadow = rng.uniform(70, 200) if rng.random() < SHADOW_SHARE else 1e9         # degrees along the path
    return {"axes": path_axes(rng), "entry_s": np.concatenate([[0.0], np.cumsum(gaps)]), "deg_per_s": deg_per_s,
            "snr": rng.uniform(*PEAK_SNR) * np.exp(rng.normal(0, SPREAD, count)), "shadow_deg": shadow,
            "shadow_fade": rng.uniform(*SHADOW_FADE_DEG),
            "flare": np.where(flares, rng.uniform(*FLARE, count) - 1, 0.0),
            "flare_at_s": rng.uniform(0, 180 / deg_per_s, count), "flare_s": rng.uniform(*FLARE_S, count)}


def train_frames(plan: dict) -> int:
    """How many 30 s frames the train takes to cross, from its first object rising to its last setting."""
    return int(np.ceil((plan["entry_s"][-1] + 180 / plan["deg_per_s"]) / FRAME_S)) + 1


def path_points(plan: dict, along_deg: np.ndarray, centre: np.ndarray, radius: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Image x, y of points `along_deg` from the rising point on the path (equidistant lens about `centre`), and
    their altitudes in degrees."""
    rise, top = plan["axes"]
    angle = np.radians(along_deg)[:, None]
    east, north, up = (np.cos(angle) * rise + np.sin(angle) * top).T
    alt = np.degrees(np.arcsin(np.clip(up, -1, 1)))
    r = radius * (90 - alt) / 90
    azimuth = np.arctan2(east, north)
    return np.stack([centre[0] + r * np.sin(azimuth), centre[1] - r * np.cos(azimuth)], axis=1), alt


def object_light(plan: dict, index: int, seconds: np.ndarray, along_deg: np.ndarray, alt: np.ndarray) -> np.ndarray:
    """The object's brightness (× noise) at those times: its level, its flare, the air near the horizon, the shadow."""
    flare = 1 + plan["flare"][index] * np.exp(-0.5 * ((seconds - plan["entry_s"][index] - plan["flare_at_s"][index])
                                                      / plan["flare_s"][index]) ** 2)
    air = np.clip(alt / HORIZON_FADE_DEG, 0, 1)
    shadow = np.clip((plan["shadow_deg"] - along_deg) / plan["shadow_fade"], 0, 1)
    return plan["snr"][index] * flare * air * shadow


def train_dn(plan: dict, start_s: float, exposure_s: float, noise_dn: float, centre: np.ndarray, radius: float,
             shape: tuple[int, int]) -> np.ndarray:
    """The light (gray DN) the train adds to a frame exposed from `start_s` (seconds after its first object rose)
    for `exposure_s`: each object's trail, sampled every STEP_PX and spread to a line SIGMA_PX wide."""
    height, width = shape
    accumulated = np.zeros((height + 2, width + 2), np.float32)
    step_s = STEP_PX / (radius / 90.0) / plan["deg_per_s"]
    seconds = np.arange(start_s, start_s + exposure_s, step_s)
    for index, entry in enumerate(plan["entry_s"]):
        along = (seconds - entry) * plan["deg_per_s"]
        shown = (along > 0) & (along < 180)
        if not shown.any():
            continue
        points, alt = path_points(plan, along[shown], centre, radius)
        light = object_light(plan, index, seconds[shown], along[shown], alt) * noise_dn
        inside = (points[:, 0] >= 0) & (points[:, 0] < width - 1) & (points[:, 1] >= 0) & (points[:, 1] < height - 1)
        splat(accumulated, points[inside], light[inside] * STEP_PX * np.sqrt(2 * np.pi) * SIGMA_PX)
    return cv2.GaussianBlur(accumulated[1:-1, 1:-1], (0, 0), SIGMA_PX)


def splat(accumulated: np.ndarray, points: np.ndarray, weights: np.ndarray) -> None:
    """Add each weight at its sub-pixel point, shared bilinearly among its four pixels (the array has a 1 px margin)."""
    x, y = points[:, 0] + 1, points[:, 1] + 1
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    for dx, dy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(accumulated, (y0 + dy, x0 + dx), weights * share)


def dark_starts(truth: pd.DataFrame, length: int) -> np.ndarray:
    """Frame indices where a train lasting `length` frames finds the sun 12° or more below the horizon throughout."""
    dark = truth["sun_alt"].to_numpy() <= DARK_SUN_ALT
    return np.array([start for start in range(len(dark) - length + 1) if dark[start:start + length].all()], int)


def placed_trains(rng: np.random.Generator, truth: pd.DataFrame, radius: float) -> list[tuple[int, dict]]:
    """One or two trains (first frame, plan), the second starting after the first has set."""
    trains, free_from = [], 0
    for _ in range(int(rng.integers(1, 3))):
        plan = train_plan(rng, radius)
        starts = dark_starts(truth, train_frames(plan))
        starts = starts[(starts >= free_from) & (starts <= free_from + (len(truth) - free_from) // 2)]
        if len(starts):
            first = int(rng.choice(starts))
            trains.append((first, plan))
            free_from = first + train_frames(plan)
    return trains


def painted_copy(night: Path, out: Path, seed: int) -> Path:
    """Copy the night to out/NIGHT with one or two satellite trains (once: an existing copy is kept)."""
    return painted_night(night, out, seed, lambda rng, frames, copy: paint_train_night(night, rng, frames, copy))


def paint_train_night(night: Path, rng: np.random.Generator, frames: list[Path], copy: Path) -> None:
    """The night's trains drawn over each frame's exposure, where the frame shows sky, written into `copy` at the
    night's JPEG quality; the frames each train lit are listed in copy/trains.json."""
    quality = int(json.loads((night / "night.json").read_text()).get("camera", {}).get("jpeg_quality", 90))
    truth = pd.read_csv(night / GROUND_TRUTH).set_index("file").loc[[path.name for path in frames]].reset_index()
    centre, radius = lens_circle(cv2.imread(str(frames[0]), cv2.IMREAD_COLOR))
    trains = placed_trains(rng, truth, radius)
    lit: list[list[str]] = [[] for _ in trains]
    for index, path in enumerate(frames):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        dn = np.zeros(image.shape[:2], np.float32)
        for number, (first, plan) in enumerate(trains):
            if first <= index < first + train_frames(plan):
                light = train_dn(plan, (index - first) * FRAME_S, float(truth["exposure_s"][index]),
                                 float(truth["noise_dn"][index]), centre, radius, image.shape[:2])
                if light.max() >= 1.0:
                    lit[number].append(path.name)
                dn += light
        if dn.any():
            painted = np.clip(image.astype(np.float32) + (dn * sky_of(image))[..., None], 0, 255).astype(np.uint8)
            cv2.imwrite(str(copy / path.name), painted, [cv2.IMWRITE_JPEG_QUALITY, quality])
    (copy / "trains.json").write_text(json.dumps([{"first_frame": first, "objects": len(plan["entry_s"]),
                                                   "frames": names} for (first, plan), names in zip(trains, lit)]))


def train_rows(clients: list[Path], nights: list[Path], painted: list[Path], work: Path) -> None:
    """A row a night: the frames the trains lit, and those the first client reported without a meteor (undisturbed
    and painted), with their scores and notes."""
    print("\n| night | trains (objects) | frames lit | of them reported without a meteor: undisturbed, painted "
          "| painted reports: time, score, note |\n|---|---|---:|---:|---|")
    client = checkout_key(clients[0])
    for night, painted_night_dir in zip(nights, painted):
        trains = json.loads((painted_night_dir / "trains.json").read_text())
        lit = {name for train in trains for name in train["frames"]}
        false = [false_reports(scores_path(work, client, folder), night / GROUND_TRUTH, lit)
                 for folder in (night, painted_night_dir)]
        notes = "; ".join(f"{row.file[-10:-4]} {row.score:.2f} {row.note if isinstance(row.note, str) else ''}"
                          for row in false[1].itertuples())
        print(f"| {night.name} | {len(trains)} ({', '.join(str(train['objects']) for train in trains)}) "
              f"| {len(lit)} | {len(false[0])}, {len(false[1])} | {notes} |")


def false_reports(scores: Path, truth: Path, files: set[str]) -> pd.DataFrame:
    """The client's reports without a meteor among `files`."""
    table = evaluate.client_predictions(scores, truth)
    return table[table["file"].isin(files) & table["detection"].eq(1) & table["meteor"].eq(0)]


def main(argv: list[str] | None = None) -> None:
    args = painting_arguments(__doc__.splitlines()[0], argv)
    nights, painted = painted_and_compared(args, painted_copy, "one or two satellite trains")
    decisions(args.clients, nights, painted, args.work)
    train_rows(args.clients, nights, painted, args.work)


if __name__ == "__main__":
    main()
