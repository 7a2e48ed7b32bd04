"""Camera shake painted on simulated nights: false reports and meteor frames found, for one client or several.

    python bench/camera_shake.py --work DIR [--frames 160] [--skies clear,cloudy,moon,moonlit-clouds] [--seed 9900]
                                 [--shift-px 0.7] [--rotation-deg 0.08] [--clients CHECKOUT...] [--threads 0]

Simulates one night a sky (kept in DIR/nights/SKY-FRAMES-frames-seed-SEED: a rerun with the same settings reuses them),
paints a copy of each with shake (kept by its settings too) — every frame moved by its own random translation (σ
shift-px on each axis) and rotation (σ rotation-deg about the frame centre) with cv2.warpAffine, saved again as JPEG —
and runs each client (a checkout of this repository; default: this one) with its own `guAlta.py batch` (the shipped
model of this checkout, every check on, no upload) on the undisturbed and the shaken nights. Prints a row a client and
night: false reports and meteor frames found, undisturbed and shaken; whether the undisturbed nights' scores CSVs are
the same for every client, byte for byte; and each client's median ms a pair of `binary_difference` (its
gualta/preprocess.py loaded alone, timed interleaved with the others') on still and on shaken pairs. Scores CSVs are
kept under DIR/scores by the client's commit (and its uncommitted changes) and the night folder, and read, not run
again, by a later run. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import filecmp
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import allsky, evaluate, simulate  # noqa: E402
from gualta.cli import non_negative_int  # noqa: E402
from gualta.dataset import GROUND_TRUTH  # noqa: E402

MODEL = ROOT / "models" / "guAlta.onnx"
FIRST_DATE = "20261110"
TIMED_PAIRS = 30                                                # pairs a night timed per client


def undisturbed_nights(work: Path, skies: list[str], frames: int, seed: int) -> list[Path]:
    """One simulated night a sky, written once under work/nights in a folder named by its sky, frames and seed
    (22:00 on, one date a sky)."""
    nights = []
    for i, sky in enumerate(skies):
        date = (pd.Timestamp(FIRST_DATE) + pd.Timedelta(days=i)).strftime(allsky.NIGHT_FORMAT)
        root = work / "nights" / f"{sky}-{frames}-frames-seed-{seed + i}"
        folder = root / date
        if not (folder / "night.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            simulate.simulate_night(root, date, frames=frames, start="22:00", seed=seed + i, scenario=sky, workers=2,
                                    progress=False)
        nights.append(folder)
    return nights


def shaken(image: np.ndarray, dx: float, dy: float, degrees: float) -> np.ndarray:
    """The picture turned by `degrees` about the frame centre and moved by (dx, dy) px (bilinear)."""
    height, width = image.shape[:2]
    move = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    move[:, 2] += (dx, dy)
    return cv2.warpAffine(image, move, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def shake_night(night: Path, out: Path, shift_px: float, rotation_deg: float, seed: int) -> Path:
    """A copy of the night with every frame shaken on its own (the camera's JPEG quality), its truth copied."""
    folder = out / night.parent.name / night.name
    if (folder / GROUND_TRUTH).is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    quality = json.loads((night / "night.json").read_text()).get("camera", {}).get("jpeg_quality", 90)
    rng = np.random.default_rng(seed)
    for path in allsky.list_frames(night):
        dx, dy = rng.normal(0, shift_px, 2)
        image = shaken(cv2.imread(str(path), cv2.IMREAD_COLOR), dx, dy, rng.normal(0, rotation_deg))
        cv2.imwrite(str(folder / path.name), image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    shutil.copy(night / GROUND_TRUTH, folder / GROUND_TRUTH)
    return folder


def git(checkout: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, check=True).stdout


def checkout_key(checkout: Path) -> str:
    """A checkout's name among the kept scores: its commit, with a digest of its uncommitted changes if it has any
    (the folder's name if it is not a git checkout)."""
    try:
        commit, changes = git(checkout, "rev-parse", "HEAD").strip(), git(checkout, "diff", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return checkout.resolve().name
    return commit[:12] + (f"-changed-{hashlib.sha1(changes.encode()).hexdigest()[:8]}" if changes else "")


def scores_path(work: Path, client: str, night: Path) -> Path:
    """Where the scores CSV of a client (its `checkout_key`) on a night folder is kept: under work/scores by the client
    and the folder's place (under work, else its full path), so other settings or clients never read it."""
    folder = night.resolve()
    place = folder.relative_to(work.resolve()) if folder.is_relative_to(work.resolve()) else Path(*folder.parts[1:])
    return work / "scores" / client / place.parent / f"{place.name}.csv"


def run_client(checkout: Path, night: Path, scores: Path, threads: int) -> pd.DataFrame:
    """The checkout's `guAlta.py batch` on a night (every check on, no upload) into `scores` (kept: a later run
    reads it), joined with the truth."""
    if not scores.is_file():
        scores.parent.mkdir(parents=True, exist_ok=True)
        partial = scores.with_suffix(".partial")
        env = {key: value for key, value in os.environ.items() if not key.startswith("GUALTA_")}
        subprocess.run([sys.executable, str(checkout / "guAlta.py"), "batch", "--folder", str(night), "--scores",
                        str(partial), "--no-upload", "--model", str(MODEL), "--threads", str(threads)],
                       cwd=checkout, env=env, check=True, capture_output=True)
        partial.replace(scores)
    return evaluate.client_predictions(scores, night / GROUND_TRUTH)


def figures(table: pd.DataFrame) -> str:
    """False reports and meteor frames found of one night's client table."""
    summary = evaluate.client_summary(table)
    return f"{summary['detections'] - summary['found']:3d} false, {summary['found']:2d} / {summary['meteor_frames']}"


def compare_clients(clients: list[Path], nights: list[Path], disturbed: list[Path], kind: str, work: Path,
                    threads: int) -> None:
    """Each checkout's client on each undisturbed night and its `kind` (e.g. "shaken") copy: a table row of false
    reports and meteor frames found each, then whether the undisturbed scores CSVs are the same byte for byte."""
    print(f"| client | night | sky | undisturbed: false, found / meteor frames | {kind} |\n|---|---|---|---|---|")
    keys = [checkout_key(checkout) for checkout in clients]
    for checkout, key in zip(clients, keys):
        for night, disturbed_night in zip(nights, disturbed):
            runs = [run_client(checkout, folder, scores_path(work, key, folder), threads)
                    for folder in (night, disturbed_night)]
            print(f"| {checkout} | {night.name} | {runs[0]['scenario'].iloc[0]} | {figures(runs[0])} "
                  f"| {figures(runs[1])} |", flush=True)
    for checkout, key in zip(clients[1:], keys[1:]):
        alike = [filecmp.cmp(scores_path(work, keys[0], night), scores_path(work, key, night), shallow=False)
                 for night in nights]
        print(f"\nundisturbed scores CSVs of {checkout} the same as {clients[0]}'s, byte for byte: "
              f"{sum(alike)} of {len(nights)} nights")


def preprocess_of(checkout: Path, index: int):
    """The checkout's gualta/preprocess.py as a module of its own (it needs only numpy and OpenCV)."""
    spec = importlib.util.spec_from_file_location(f"preprocess_{index}", checkout / "gualta" / "preprocess.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pair_ms(modules: list, nights: list[Path]) -> list[float]:
    """Each module's median ms of binary_difference over the nights' first pairs, timed in turn pair by pair."""
    times = [[] for _ in modules]
    for night in nights:
        frames = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in allsky.list_frames(night)[:TIMED_PAIRS + 1]]
        for previous, current in zip(frames, frames[1:]):
            for module, spent in zip(modules, times):
                started = time.perf_counter()
                module.binary_difference(current, previous)
                spent.append(1000 * (time.perf_counter() - started))
    return [statistics.median(spent) for spent in times]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="nights and scores are kept here")
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--skies", default="clear,cloudy,moon,moonlit-clouds", help="one night a sky")
    parser.add_argument("--seed", type=non_negative_int, default=9900)
    parser.add_argument("--shift-px", type=float, default=0.7, help="σ of each frame's translation on each axis")
    parser.add_argument("--rotation-deg", type=float, default=0.08, help="σ of each frame's rotation")
    parser.add_argument("--clients", type=Path, nargs="+", default=[ROOT], help="checkouts of this repository")
    parser.add_argument("--threads", type=int, default=0, help="model threads (0: one per CPU core)")
    args = parser.parse_args(argv)

    nights = undisturbed_nights(args.work, args.skies.split(","), args.frames, args.seed)
    label = f"shaken-{args.shift_px}px-{args.rotation_deg}deg"
    painted = [shake_night(night, args.work / label, args.shift_px, args.rotation_deg, args.seed + 100 + i)
               for i, night in enumerate(nights)]
    print(f"{len(nights)} nights of {args.frames} frames; shake σ {args.shift_px} px a axis and {args.rotation_deg}°\n")
    compare_clients(args.clients, nights, painted, "shaken", args.work, args.threads)
    modules = [preprocess_of(checkout, index) for index, checkout in enumerate(args.clients)]
    for kind, folders in (("still", nights), ("shaken", painted)):
        spent = ", ".join(f"{checkout}: {ms:.1f}" for checkout, ms in zip(args.clients, pair_ms(modules, folders)))
        print(f"binary_difference, median ms a {kind} pair (up to {TIMED_PAIRS} a night): {spent}")


if __name__ == "__main__":
    main()
