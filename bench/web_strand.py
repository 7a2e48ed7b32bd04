"""A spider-web strand swaying on the camera dome, painted on copies of simulated nights: false reports and meteor
frames found, for one client or several.

    python bench/web_strand.py --nights ROOT_OR_NIGHT_DIR... --work DIR [--clients CHECKOUT...] [--seed 1]
                               [--threads 0]

Each night (a folder with ground_truth.csv) is copied to DIR/painted/seed-SEED/YYYYMMDD with a strand in every frame: a
thin, slightly curved line (1–2 px wide, 3–15 DN above the sky: brighter when the moon lights it), 150–500 px long, that
sways 1–3 px at its middle from one frame to the next (less towards its anchored ends) while the whole of it drifts a
little, its brightness flickering ±25 % as it turns; on some nights one end runs off the frame or beyond the lens circle
(only the sky is lit), saved again as JPEG at the camera's quality. Each client (a checkout of this repository; default:
this one) runs its own `guAlta.py batch` (the shipped model of this checkout, every check on, no upload) on the
undisturbed and on the painted night; a scores CSV already under DIR/scores (kept by the client's commit and the night
folder) is read, not run again. Printed, a row a client and night: false reports (reported frames without a meteor) and
meteor frames found, undisturbed and painted, and for several clients whether the undisturbed nights' scores CSVs are
the same, byte for byte. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import allsky  # noqa: E402
from gualta.cli import non_negative_int  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from camera_shake import compare_clients  # noqa: E402
from compare import labelled_nights  # noqa: E402

UNLIT_DN, MOONLIT_DN = (3.0, 7.0), (8.0, 15.0)
SWAY_PX = (1.0, 3.0)          # the middle's move between frames
SWAY_LIMIT_PX = 8.0           # the middle stays within this of its rest
DRIFT_PX = 0.4                # σ of the whole strand's move between frames
FLICKER = 0.25
SAMPLES = 64                  # points along the drawn curve


def moonlit(night: Path) -> bool:
    """Whether the night's scenario has the moon up (a strand then shines brighter)."""
    scenario = json.loads((night / "night.json").read_text()).get("scenario", "")
    return "moon" in scenario


def strand_geometry(rng: np.random.Generator, height: int, width: int) -> dict:
    """A strand's rest line (two ends, a sag) and its width: 150–500 px across the sky from near the lens' centre, or
    (one night in three) longer, one end beyond the lens circle or the frame."""
    out_of_view = rng.random() < 1 / 3
    centre = np.array([width / 2, height / 2])
    start = centre + rng.uniform(0, 0.25 * height) * unit(rng.uniform(0, 2 * np.pi))
    length = rng.uniform(0.55, 0.8) * height if out_of_view else rng.uniform(150, 500)
    end = start + length * unit(rng.uniform(0, 2 * np.pi))
    return {"start": start, "end": end, "sag": rng.uniform(5, 25) * rng.choice([-1, 1]),
            "width": int(rng.integers(1, 3)), "out_of_view": out_of_view}


def unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def strand_points(geometry: dict, sway: float, drift: np.ndarray) -> np.ndarray:
    """The strand's curve: its rest line bowed by sag + sway (most at the middle), moved by drift."""
    start, end = geometry["start"], geometry["end"]
    along = np.linspace(0.0, 1.0, SAMPLES)[:, None]
    direction = (end - start) / np.linalg.norm(end - start)
    normal = np.array([-direction[1], direction[0]])
    bow = (geometry["sag"] + sway) * np.sin(np.pi * along)
    return start + along * (end - start) + bow * normal + drift


def sky_of(image: np.ndarray) -> np.ndarray:
    """0–1: where the frame shows sky (not the black around the lens circle)."""
    gray = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 5)
    return np.clip((gray - np.percentile(gray, 5) - 4) / 8, 0, 1)


def paint_strand(image: np.ndarray, points: np.ndarray, width: int, brightness: float) -> np.ndarray:
    """The frame (BGR) with the strand drawn anti-aliased at sub-pixel places, `brightness` DN over the sky."""
    mask = np.zeros(image.shape[:2], np.float32)
    cv2.polylines(mask, [np.round(points * 16).astype(np.int32)], False, 1.0, width, cv2.LINE_AA, shift=4)
    light = brightness * cv2.GaussianBlur(mask, (0, 0), 0.5) * sky_of(image)
    return np.clip(image.astype(np.float32) + light[..., None], 0, 255).astype(np.uint8)


def painted_night(night: Path, out: Path, seed: int, paint: Callable[[np.random.Generator, list[Path], Path], None]
                  ) -> Path:
    """Copy the night to out/seed-SEED/NIGHT, `paint(rng, frames, copy)` writing its frames painted into the copy (once
    a seed: an existing copy is kept; one cut short is made again)."""
    target = out / f"seed-{seed}" / night.name
    if target.is_dir():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(night, partial)
    paint(np.random.default_rng([seed, int(night.name)]), allsky.list_frames(night), partial)
    partial.rename(target)
    return target


def painted_copy(night: Path, out: Path, seed: int) -> Path:
    """Copy the night to out/NIGHT with a swaying strand in every frame (once: an existing copy is kept)."""
    return painted_night(night, out, seed, lambda rng, frames, copy: paint_strand_night(night, rng, frames, copy))


def paint_strand_night(night: Path, rng: np.random.Generator, frames: list[Path], copy: Path) -> None:
    """A strand swaying and drifting a little from frame to frame, its brightness flickering, over the night's frames,
    written into `copy` at the night's JPEG quality."""
    quality = int(json.loads((night / "night.json").read_text()).get("camera", {}).get("jpeg_quality", 90))
    height, width = cv2.imread(str(frames[0]), cv2.IMREAD_GRAYSCALE).shape
    geometry = strand_geometry(rng, height, width)
    brightness = rng.uniform(*(MOONLIT_DN if moonlit(night) else UNLIT_DN))
    sway, drift = 0.0, np.zeros(2)
    for path in frames:
        step = rng.uniform(*SWAY_PX) * rng.choice([-1, 1])
        sway = sway + step if abs(sway + step) <= SWAY_LIMIT_PX else sway - step
        drift = np.clip(drift + rng.normal(0, DRIFT_PX, 2), -3, 3)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        shine = brightness * (1 + rng.uniform(-FLICKER, FLICKER))
        painted = paint_strand(image, strand_points(geometry, sway, drift), geometry["width"], shine)
        cv2.imwrite(str(copy / path.name), painted, [cv2.IMWRITE_JPEG_QUALITY, quality])


def painting_arguments(description: str, argv: list[str] | None) -> argparse.Namespace:
    """The options of a bench that paints a disturbance on copies of simulated nights and runs clients on both."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--nights", nargs="+", required=True, help="night folders, or roots of YYYYMMDD folders")
    parser.add_argument("--work", type=Path, required=True, help="painted copies and scores CSVs go here")
    parser.add_argument("--clients", type=Path, nargs="+", default=[ROOT], help="checkouts of this repository")
    parser.add_argument("--seed", type=non_negative_int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="model threads (0: one per CPU core)")
    return parser.parse_args(argv)


def painted_and_compared(args: argparse.Namespace, copy: Callable[[Path, Path, int], Path], what: str
                         ) -> tuple[list[Path], list[Path]]:
    """A painting bench's run: each night of --nights copied with `what` painted on it (`copy(night, out, seed)`),
    every client run on both and compared; the nights and their painted copies."""
    nights = labelled_nights(args.nights)
    painted = [copy(night, args.work / "painted", args.seed) for night in nights]
    print(f"{len(nights)} nights, {what} painted on each\n")
    compare_clients(args.clients, nights, painted, "painted", args.work, args.threads)
    return nights, painted


def main(argv: list[str] | None = None) -> None:
    painted_and_compared(painting_arguments(__doc__.splitlines()[0], argv), painted_copy, "a swaying strand")


if __name__ == "__main__":
    main()
