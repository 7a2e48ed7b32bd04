"""What `make demo` runs: simulate a night, preprocess every pair, and show it beside the ground truth.

The classifier, client and central service are not built yet; until they are, the demo exercises the pipeline's
first half end to end — AllSky layout, simulator, the thesis' preprocessing — and writes a contact sheet to look at.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd

from gualta import dataset, simulate

DEMO_DATE = "20211110"


def run_demo(out_dir: str | Path = "demo_output", frames: int = 360, seed: int = 2021, workers: int | None = None) -> dict:
    """Simulate one mixed night into out_dir/images, write its label-aid sheet; return and print a summary."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)            # idempotent: every run starts from nothing
    started = time.perf_counter()
    night = simulate.simulate_night(out_dir / "images", DEMO_DATE, frames=frames, seed=seed, scenario="mixed",
                                    workers=workers)
    simulated = time.perf_counter() - started
    sheet = dataset.label_aid(night, out_dir / "label-aid")
    truth = pd.read_csv(night / "ground_truth.csv")
    summary = {"night": str(night), "frames": len(truth), "pairs": sheet.pairs, "skipped": sheet.skipped,
               "meteor_frames": int((truth["label"] == "meteor").sum()),
               "events": truth["event"].value_counts().to_dict(), "simulate_s": round(simulated, 1),
               "sheet": str(sheet.html)}
    print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    """The demo's report for a person."""
    events = ", ".join(f"{kind} {count}" for kind, count in summary["events"].items() if kind != "none")
    print(f"night      {summary['night']} ({summary['frames']} frames in {summary['simulate_s']} s)")
    print(f"events     {events or 'none'}; frames with a meteor: {summary['meteor_frames']}")
    print(f"pairs      {summary['pairs']} difference images (first frame skipped: no predecessor)")
    print(f"look at    {summary['sheet']}  (frame | difference | ground truth)")
    print("next       the classifier, inference client and central service are not built yet")
