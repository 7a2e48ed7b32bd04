"""Two meteors of one shower in consecutive frames: does the client report both?

    python bench/shower_pair.py --work DIR [--seed 9741] [--offsets-deg 0,2,3,5,8,12] [--threads 1]

A shower's meteors all fly away from its radiant, so on a peak night two of them in consecutive frames sometimes lie
on one line through it — the way a satellite's pieces lie. Renders short clear nights (the simulator, no other event)
with a radiant in the sky: meteor A in frame 4, 120–230 px out from the radiant; meteor B 300–440 px out at a position
angle `offset` degrees from A's, in frame 5 (the next frame) or frame 6 (two frames on); and `opposite`: B 150–290 px
out on the other side of the radiant, on A's line. Each meteor peaks 25 × the noise; each is also rendered alone.
Runs the client on each night (`guAlta.py batch`'s code, the shipped model, every check on, no upload) and prints a
row a case: each meteor's score, whether it was reported, and its flag. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import simulate  # noqa: E402
from gualta.cli import non_negative_int  # noqa: E402
from gualta.config import load_settings  # noqa: E402
from gualta.detect import run_batch  # noqa: E402
from gualta.scores import read_scores  # noqa: E402

MODEL = ROOT / "models" / "guAlta.onnx"
START = datetime(2026, 8, 12, 23, 0)
FRAMES = 8
A_FRAME, A_ANGLE_DEG = 4, 30.0
SNR = 25.0


def meteor(radiant: np.ndarray, frame: int, angle_deg: float, out_px: float, length: float) -> simulate.Event:
    """A meteor flying away from the radiant, starting out_px from it at this position angle."""
    away = np.array([math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))], np.float32)
    return simulate.Event("meteor", [frame], radiant + out_px * away, np.zeros(2, np.float32), length, 1.1, SNR,
                          (0.9, 1.0, 0.9), direction=away)


def cases(offsets: list[float]) -> dict[str, list[tuple]]:
    """Case name → meteors as (frame, position angle, px out from the radiant, length)."""
    a = (A_FRAME, A_ANGLE_DEG, 120.0, 110.0)
    found = {"A alone": [a], "B alone": [(A_FRAME + 1, A_ANGLE_DEG + 1, 300.0, 140.0)]}
    for offset in offsets:
        found[f"next frame, {offset:g}°"] = [a, (A_FRAME + 1, A_ANGLE_DEG + offset, 300.0, 140.0)]
    found["two frames on, 1°"] = [a, (A_FRAME + 2, A_ANGLE_DEG + 1, 300.0, 140.0)]
    found["next frame, opposite"] = [a, (A_FRAME + 1, A_ANGLE_DEG + 180, 150.0, 140.0)]
    return found


def shower_night(out: Path, seed: int, meteors: list[tuple]) -> Path:
    """A short clear night with only these meteors, in AllSky layout with its ground truth."""
    no_events = simulate.Rates(meteor=0, fireball=0, satellite=0, plane=0, insect=0)
    plan = simulate.plan_night(seed, START, FRAMES, "clear", no_events)
    lens = plan.camera.fisheye
    radiant = np.array([lens.cx - 0.25 * lens.radius, lens.cy - 0.2 * lens.radius], np.float32)
    plan.events = [meteor(radiant, *spec) for spec in meteors]
    folder = out / START.strftime("%Y%m%d")
    folder.mkdir(parents=True, exist_ok=True)
    renderer = simulate.NightRenderer(plan)
    rows = []
    for index in range(FRAMES):
        image, row = renderer.render(index)
        cv2.imwrite(str(folder / row["file"]), image, [cv2.IMWRITE_JPEG_QUALITY, plan.camera.jpeg_quality])
        rows.append(row)
    pd.DataFrame(rows, columns=simulate.GT_COLUMNS).to_csv(folder / "ground_truth.csv", index=False)
    return folder


def decided_meteors(night: Path, work: Path, threads: int) -> list[str]:
    """How the client decided each meteor frame: 'score reported' or 'score held back (flag)'."""
    settings = load_settings(env={}, overrides={"model": MODEL, "outbox": work / "outbox.sqlite", "threads": threads,
                                                "main_folder": night.parent, "enable_telegram": False})
    scores = work / "scores.csv"
    run_batch(settings, night, scores, upload=False, say=lambda _: None, progress=False)
    truth = pd.read_csv(night / "ground_truth.csv")
    meteor_files = set(truth.loc[truth["label"] == "meteor", "file"])
    return [f"{float(row['score']):.2f} " + ("reported" if row["detection"] == "1" else f"held back ({row['flag']})")
            for row in read_scores(scores) if row["file"] in meteor_files]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the nights and scores")
    parser.add_argument("--seed", type=non_negative_int, default=9741)
    parser.add_argument("--offsets-deg", default="0,2,3,5,8,12", help="B's position angle from A's, degrees")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    offsets = [float(value) for value in args.offsets_deg.split(",")]
    print(f"seed {args.seed}; meteors peak {SNR:g} × the noise; A in frame {A_FRAME}, B after it\n")
    print("| case | A | B |\n|---|---|---|")
    for index, (name, meteors) in enumerate(cases(offsets).items()):
        work = args.work / f"case{index}"
        shutil.rmtree(work, ignore_errors=True)
        decided = decided_meteors(shower_night(work, args.seed, meteors), work, args.threads)
        first_is_a = meteors[0][0] == A_FRAME
        a, b = (decided[0], decided[1] if len(decided) > 1 else "—") if first_is_a else ("—", decided[0])
        print(f"| {name} | {a} | {b} |", flush=True)


if __name__ == "__main__":
    main()
