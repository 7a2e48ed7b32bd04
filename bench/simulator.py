"""Simulator benchmark: seconds for a whole night, and the white-pixel share of difference images per sky.

    python bench/simulator.py [--frames 1000] [--workers 2] [--repeats 1] [--nights-per-scenario 6]

Prints the time to write a night (frames/s) with 1 worker and with all workers (same frames, same run; with --repeats
the worker counts in turn, median of the rounds; by default one run each, said so beside the figures), and for
clear, cloudy and moonlit nights the share of sky pixels above the thesis' 3.5 threshold in the difference of
consecutive frames (before and after the 400×400 INTER_AREA resize), which sets how speckled a difference image looks.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gualta import preprocess, simulate  # noqa: E402
from gualta.cli import positive_int  # noqa: E402


def time_night(frames: int, workers: int, seed: int) -> float:
    """Seconds to write a night of `frames` frames."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        simulate.simulate_night(out, "20211110", frames=frames, seed=seed, scenario="mixed", workers=workers,
                                progress=False)
        return time.perf_counter() - started


def white_share(seed: int, scenario: str, frame: int = 500) -> tuple[float, float, float, float]:
    """(share > 3.5 at full resolution, mean gray/255 after resize, noise DN, cloud cover) for one pair of frames."""
    plan = simulate.plan_night(seed, datetime(2021, 11, 10, 20, 0), 1440, scenario, rates=simulate.Rates(0, 0, 0, 0, 0))
    renderer = simulate.NightRenderer(plan)
    quality = [cv2.IMWRITE_JPEG_QUALITY, plan.camera.jpeg_quality]
    pair = []
    for index in (frame - 1, frame):
        image, row = renderer.render(index)
        pair.append(cv2.imdecode(cv2.imencode(".jpg", image, quality)[1], cv2.IMREAD_GRAYSCALE))
    binary = preprocess.threshold(preprocess.subtract(pair[1], pair[0]))
    sky = renderer.sky_mask > 0.99
    resized = preprocess.resize_area(binary)
    sky_small = preprocess.resize_area((sky * 255).astype(np.uint8)) > 250
    return float((binary[sky] > 0).mean()), float(resized[sky_small].mean() / 255), row["noise_dn"], row["clouds"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=positive_int, default=1000)
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.add_argument("--repeats", type=positive_int, default=1, help="rounds of night timings (a night is slow)")
    parser.add_argument("--nights-per-scenario", type=positive_int, default=6)
    args = parser.parse_args(argv)

    counts = sorted({1, args.workers})
    rounds = [[time_night(args.frames, workers, seed=7) for workers in counts] for _ in range(args.repeats)]
    timed = "one run each: a single timing, not a median" if args.repeats == 1 else f"median of {args.repeats} rounds"
    print(f"## Night of {args.frames} frames (1304×976 JPEG, ground truth), {timed}")
    for workers, times in zip(counts, zip(*rounds)):
        seconds = statistics.median(times)
        print(f"workers={workers}: {seconds:6.1f} s  {args.frames / seconds:5.1f} frames/s")

    print("\n## Share of sky pixels > 3.5 in the difference of consecutive frames (seeded nights, frame 500)")
    print(f"{'sky':8s} {'median':>7s} {'min':>6s} {'max':>6s}   resized-mean   noise DN   cloud cover")
    for scenario in ("clear", "cloudy", "moon"):
        rows = [white_share(1000 + i, scenario) for i in range(args.nights_per_scenario)]
        shares, resized, noise, clouds = (list(column) for column in zip(*rows))
        print(f"{scenario:8s} {statistics.median(shares):7.1%} {min(shares):6.1%} {max(shares):6.1%}   "
              f"{statistics.median(resized):12.1%}   {statistics.median(noise):8.2f}   {statistics.median(clouds):11.2f}")


if __name__ == "__main__":
    main()
