"""An active aurora painted on copies of simulated nights: false reports and meteor frames found, and which check or
flag made or held back each decision, for one client or several.

    python bench/aurora.py --nights ROOT_OR_NIGHT_DIR... --work DIR [--clients CHECKOUT...] [--seed 1] [--threads 0]

Each night (a folder with ground_truth.csv) is copied to DIR/painted/seed-SEED/YYYYMMDD with an aurora in every frame,
as an all-sky camera at a high latitude sees it in 30 s exposures: an arc band low in the sky on one side (its lower
border sharp, its upper one soft, folded along its length), rays standing on it that point at the magnetic zenith (a
little off the lens centre, away from the arc; 9–24 px wide at half their peak, 15–45 % of the lens radius long) and a
few pulsating patches higher up. Everything evolves smoothly from one frame to the next: the arc creeps up and down, its
folds and rays drift along it, each ray brightens and fades on its own, the night's activity rises and falls, every
frame pulses a little at random and each patch takes a new brightness every frame. At its brightest it adds 25–60 DN (a
night's peak; 5–60 DN over the night) to the gray frame, green (green channel about twice the blue and the red), only
where the frame shows sky; frames are saved again as JPEG 90. Each client (a checkout of this repository; default: this
one) runs its own `guAlta.py batch` (the shipped model of this checkout, every check on, no upload) on the undisturbed
and on the painted night; a scores CSV already under DIR/scores (kept by the client's commit and the night folder) is
read, not run again. Printed, a row a client and night: false reports (reported frames without a meteor) and meteor
frames found, undisturbed and painted; then a row a night and run of the first client: what made each false report (the
model, or the fireball or streak check alone), what the flags held back (frames without a meteor, and meteor frames).
Figures are printed, never asserted.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import detect, evaluate  # noqa: E402
from gualta.dataset import GROUND_TRUTH  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from camera_shake import checkout_key, scores_path  # noqa: E402
from web_strand import painted_and_compared, painted_night, painting_arguments, sky_of, unit  # noqa: E402

PEAK_DN = (25.0, 60.0)        # a night's brightest aurora, gray DN
GREEN = np.array([0.45, 1.0, 0.5], np.float32)          # BGR
GRAY_OF_GREEN = float(np.dot(GREEN, [0.114, 0.587, 0.299]))
JPEG_QUALITY = 90
LOW = 4                       # the aurora is smooth: painted at 1/LOW resolution, then enlarged
ACTIVITY_KNOT_FRAMES = 16     # the night's activity takes a new level about this often (8 minutes)
ACTIVITY = (0.1, 1.0)
PULSE = 0.12                  # σ of a frame's own pulse (log brightness)
RAY_WIDTH_PX = (4.0, 10.0)    # σ across a ray
RAY_LENGTH = (0.15, 0.45)     # of the lens radius
ARC_CREEP = 0.006             # σ of the arc's move between frames, of the lens radius
RAY_DRIFT_RAD = 0.006         # σ of a ray's own drift along the arc between frames


def lens_circle(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (x, y) and radius of the frame's sky, from the area and middle of what `sky_of` calls sky."""
    ys, xs = np.nonzero(sky_of(image) > 0.5)
    return np.array([xs.mean(), ys.mean()]), float(np.sqrt(len(xs) / np.pi))


def aurora_plan(rng: np.random.Generator, centre: np.ndarray, radius: float, frames: int) -> dict:
    """What is drawn once a night: where the arc stands, its shape, the magnetic zenith, the night's activity."""
    pole = rng.uniform(0, 2 * np.pi)                           # the direction where the arc stands low
    knots = rng.uniform(*ACTIVITY, frames // ACTIVITY_KNOT_FRAMES + 2)
    activity = np.interp(np.arange(frames) / ACTIVITY_KNOT_FRAMES, np.arange(len(knots)), knots)
    return {"centre": centre, "radius": radius, "pole": pole, "span": rng.uniform(0.9, 1.4),
            "zenith": centre + rng.uniform(0.1, 0.25) * radius * unit(pole + np.pi),
            "lower_px": rng.uniform(8, 16), "upper_px": rng.uniform(30, 60), "peak": rng.uniform(*PEAK_DN),
            "activity": np.convolve(np.pad(activity, 4, mode="edge"), np.ones(9) / 9, "valid"),
            "drift": rng.uniform(-0.01, 0.01), "patches": int(rng.integers(0, 4))}


def first_state(rng: np.random.Generator, plan: dict) -> dict:
    """The aurora's first frame: the arc's height, its folds, its rays and the patches."""
    rays = int(rng.integers(6, 16))
    return {"arc": rng.uniform(0.7, 0.88), "folds": rng.uniform(0, 2 * np.pi, 3),
            "ray_at": plan["pole"] + rng.uniform(-1, 1, rays) * plan["span"],
            "ray_light": rng.uniform(0, 1, rays), "ray_width": rng.uniform(*RAY_WIDTH_PX, rays),
            "ray_length": rng.uniform(*RAY_LENGTH, rays) * plan["radius"],
            "patch_at": plan["centre"] + rng.uniform(-0.4, 0.4, (plan["patches"], 2)) * plan["radius"],
            "patch_px": rng.uniform(25, 70, plan["patches"]), "patch_light": rng.uniform(0, 1, plan["patches"])}


def next_state(rng: np.random.Generator, plan: dict, state: dict) -> dict:
    """The aurora 30 s later: the arc creeps, folds and rays drift along it, each ray brightens or fades, patches
    pulse (a new brightness each frame) and wander."""
    rays = len(state["ray_at"])
    along = state["ray_at"] - plan["pole"] + plan["drift"] + rng.normal(0, RAY_DRIFT_RAD, rays)
    along = (along + plan["span"]) % (2 * plan["span"]) - plan["span"]          # a ray leaving the arc comes back
    return {**state, "arc": float(np.clip(state["arc"] + rng.normal(0, ARC_CREEP), 0.55, 0.92)),
            "folds": state["folds"] + rng.normal(0, 0.15, 3) + plan["drift"] * np.array([2, 3, 5]),
            "ray_at": plan["pole"] + along,
            "ray_light": np.clip(state["ray_light"] + rng.normal(0, 0.2, rays), 0, 1),
            "patch_at": state["patch_at"] + rng.normal(0, 2, state["patch_at"].shape),
            "patch_light": rng.uniform(0, 1, plan["patches"])}


def arc_light(plan: dict, state: dict, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """0–1: the folded arc band, sharp below (towards the horizon), soft above, fading towards its ends."""
    dx, dy = xs - plan["centre"][0], ys - plan["centre"][1]
    below = np.hypot(dx, dy) - state["arc"] * plan["radius"]
    across = np.exp(-(below / np.where(below > 0, plan["lower_px"], plan["upper_px"])) ** 2)
    angle = np.arctan2(dy, dx)
    off = np.angle(np.exp(1j * (angle - plan["pole"]))) / plan["span"]
    ends = np.cos(np.clip(off, -1, 1) * np.pi / 2) ** 2
    folds = 0.6 + 0.4 * np.mean([np.cos(k * angle + phase) for k, phase in zip((3, 7, 13), state["folds"])], axis=0)
    return across * ends * folds


def ray_light(plan: dict, state: dict, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """0–1: rays standing on the arc's lower border, pointing at the magnetic zenith, brightest at their foot."""
    light = np.zeros_like(xs)
    for at, shine, width, length in zip(state["ray_at"], state["ray_light"], state["ray_width"], state["ray_length"]):
        foot = plan["centre"] + state["arc"] * plan["radius"] * unit(at)
        up = (plan["zenith"] - foot) / np.linalg.norm(plan["zenith"] - foot)
        along = (xs - foot[0]) * up[0] + (ys - foot[1]) * up[1]
        aside = (xs - foot[0]) * up[1] - (ys - foot[1]) * up[0]
        top = np.linalg.norm(plan["zenith"] - foot)                           # rays end short of the zenith
        height = np.where(along > 0, np.exp(-along / length) * np.clip((top - along) / (0.3 * top), 0, 1),
                          np.exp(-(along / plan["lower_px"]) ** 2))
        light = np.maximum(light, shine * height * np.exp(-0.5 * (aside / width) ** 2))
    return light


def patch_light(state: dict, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """0–1: the pulsating patches, soft round blobs."""
    light = np.zeros_like(xs)
    for (x, y), size, shine in zip(state["patch_at"], state["patch_px"], state["patch_light"]):
        light = np.maximum(light, shine * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / size ** 2))
    return light


def aurora_dn(plan: dict, state: dict, frame: int, pulse: float, shape: tuple[int, int]) -> np.ndarray:
    """The aurora's gray DN over a frame of `shape` (painted at 1/LOW resolution, enlarged)."""
    height, width = shape
    ys, xs = np.mgrid[0:height:LOW, 0:width:LOW].astype(np.float32) + (LOW - 1) / 2
    shape_01 = np.clip(0.7 * arc_light(plan, state, xs, ys) + ray_light(plan, state, xs, ys)
                       + 0.5 * patch_light(state, xs, ys), 0, 1)
    low = (plan["peak"] * plan["activity"][frame] * pulse * shape_01).astype(np.float32)
    return np.clip(cv2.resize(low, (width, height), interpolation=cv2.INTER_LINEAR), 0, None)


def paint_aurora(image: np.ndarray, dn: np.ndarray) -> np.ndarray:
    """The frame (BGR) with `dn` gray DN of green light added where it shows sky."""
    light = dn * sky_of(image)
    return np.clip(image.astype(np.float32) + light[..., None] * (GREEN / GRAY_OF_GREEN), 0, 255).astype(np.uint8)


def painted_copy(night: Path, out: Path, seed: int) -> Path:
    """Copy the night to out/NIGHT with an aurora in every frame (once: an existing copy is kept)."""
    return painted_night(night, out, seed, paint_aurora_night)


def paint_aurora_night(rng: np.random.Generator, frames: list[Path], copy: Path) -> None:
    """An aurora evolving from frame to frame over the night's frames, written into `copy`."""
    first = cv2.imread(str(frames[0]), cv2.IMREAD_COLOR)
    plan = aurora_plan(rng, *lens_circle(first), len(frames))
    state = first_state(rng, plan)
    for index, path in enumerate(frames):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        dn = aurora_dn(plan, state, index, float(np.exp(rng.normal(0, PULSE))), image.shape[:2])
        cv2.imwrite(str(copy / path.name), paint_aurora(image, dn), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        state = next_state(rng, plan, state)


def cause(row) -> str:
    """What made a reported frame a detection: the model (with a bright streak too: `model+fireball`), or the fireball
    or the streak check alone."""
    note = row.note if isinstance(row.note, str) else ""
    alone = detect.BELOW_THRESHOLD_NOTE in note or detect.FAINT_NOTE in note or detect.WASHED_OUT_NOTE in note
    if note.startswith(detect.FIREBALL_NOTE):
        return "fireball check" if alone else "model+fireball"
    if note.startswith(detect.STREAK_NOTE):
        return "streak check (faint)" if detect.FAINT_NOTE in note else "streak check"
    return "shared streak" if note.startswith(detect.SHARED_NOTE) else "model"


def counted(labels) -> str:
    return ", ".join(f"{label} {count}" for label, count in Counter(labels).most_common()) or "none"


def decisions_row(name: str, run: str, table: pd.DataFrame) -> str:
    """A markdown row: what made the false reports, what the flags held back (no meteor / meteor frames)."""
    false = table[table["detection"].eq(1) & table["meteor"].eq(0)]
    held = table[table["detection"].eq(0) & table["flag"].notna() & table["flag"].ne(detect.SKIPPED)]
    washed = table[table["score"].ge(evaluate.THRESHOLD) & table["note"].fillna("").str.startswith(
        detect.WASHED_OUT_NOTE) & table["detection"].eq(0)]
    held_back = [counted(list(held.loc[held["meteor"].eq(meteor), "flag"])
                         + ["washed out"] * int(washed["meteor"].eq(meteor).sum())) for meteor in (0, 1)]
    return (f"| {name} | {run} | {len(false)}: {counted(cause(row) for row in false.itertuples())} "
            f"| {held_back[0]} | {held_back[1]} |")


def decisions(clients: list[Path], nights: list[Path], painted: list[Path], work: Path) -> None:
    """The first client's decisions a night and run, read back from the scores CSVs `compare_clients` wrote."""
    print(f"\n{clients[0]}: what made the false reports, and what the flags held back\n"
          "| night | run | false reports: made by | held back, no meteor | held back, meteor frames |\n"
          "|---|---|---|---|---|")
    client = checkout_key(clients[0])
    for night, painted_night in zip(nights, painted):
        for run, folder in (("undisturbed", night), ("painted", painted_night)):
            table = evaluate.client_predictions(scores_path(work, client, folder), folder / GROUND_TRUTH)
            print(decisions_row(night.name, run, table))


def main(argv: list[str] | None = None) -> None:
    args = painting_arguments(__doc__.splitlines()[0], argv)
    nights, painted = painted_and_compared(args, painted_copy, "an aurora")
    decisions(args.clients, nights, painted, args.work)


if __name__ == "__main__":
    main()
