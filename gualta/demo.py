"""What `make demo` runs: the whole product on one machine, on embedded defaults.

simulate a night (AllSky layout, ground truth) → start the embedded central service on 127.0.0.1 with a local
store → run the nightly batch with the shipped model, uploads on (through the outbox) → build the daily page →
stop the service → compare the detections with the simulator's ground truth.
"""
from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

import pandas as pd

from gualta import simulate
from gualta.config import load_settings
from gualta.detect import STREAK_NOTE, run_batch
from gualta.server import ChildServer, build_page

DEMO_DATE = "20211110"
DEMO_SEED = 2045          # a mixed night with clouds, meteors, fireballs, satellites and planes
DEMO_FRAMES = 600         # 20:00 → 01:00
OBS_ID = "demo01"
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "guAlta.onnx"
DEMO_MARK = ".gualta-demo"                  # in every output folder: only a demo's own folder is replaced
DEMO_ENTRIES = ("images", "store", "scores.csv", "outbox.sqlite")


class DemoError(Exception):
    """The demo cannot run as asked (the output folder is not its own)."""


def run_demo(out_dir: str | Path = "demo_output", frames: int = DEMO_FRAMES, seed: int = DEMO_SEED,
             workers: int | None = None, model: str | Path = SHIPPED_MODEL) -> dict:
    """Run the product end to end into out_dir (an earlier demo's output is replaced); print and return the
    summary."""
    out_dir = Path(out_dir).resolve()
    fresh_output(out_dir)                                 # idempotent: every run starts from nothing
    night = simulate.simulate_night(out_dir / "images", DEMO_DATE, frames=frames, seed=seed, scenario="mixed",
                                    workers=workers)
    store, key = out_dir / "store", secrets.token_hex(16)
    env = {**os.environ, "GUALTA_API_KEYS": f"{OBS_ID}:{key}"}
    with ChildServer(store, env) as service:
        settings = load_settings(env={}, overrides={
            "main_folder": out_dir / "images", "obs_id": OBS_ID, "url": service.url, "api_key": key,
            "enable_telegram": False, "model": Path(model), "outbox": out_dir / "outbox.sqlite"})
        night_summary = run_batch(settings, night, out_dir / "scores.csv", upload=True, say=lambda _: None)
        page = build_page(store, night.name)
    summary = {"night": night_summary, "page": store / f"{night.name}.html",
               "truth": compare_with_truth(out_dir / "scores.csv", night / "ground_truth.csv"),
               "page_result": page}
    print_summary(summary)
    return summary


def fresh_output(out_dir: Path) -> None:
    """Make out_dir a new, empty output folder: a missing or empty folder, or an earlier demo's output, replaced.
    Any other folder is refused (DemoError) and left as it is: `--out .` wiped the folder it was run in."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DemoError(f"--out {out_dir} is a file: give a folder")
    names = sorted(entry.name for entry in out_dir.iterdir()) if out_dir.exists() else []
    if names and not was_demo_output(names):
        listed = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        raise DemoError(f"--out {out_dir} is not an earlier demo's output (it holds {listed}): it is replaced on "
                        "every run, so give a new or empty folder")
    if Path.cwd().is_relative_to(out_dir):
        raise DemoError(f"--out {out_dir} holds the current folder: give a folder elsewhere")
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        out_dir.mkdir(parents=True)
        (out_dir / DEMO_MARK).write_text("guAlta demo output: `guAlta.py demo` replaces this folder on every run\n")
    except OSError as exc:                  # a folder this account cannot write into
        raise DemoError(f"--out {out_dir} cannot be made: {exc.strerror or exc}") from None


def was_demo_output(names: list[str]) -> bool:
    """Whether a folder's entries are a demo's: its mark, or (written before the mark) only what a demo writes."""
    written_by_demo = all(name.split("-")[0] in DEMO_ENTRIES for name in names)      # outbox.sqlite-wal too
    return DEMO_MARK in names or ("scores.csv" in names and written_by_demo)


def compare_with_truth(scores_csv: Path, truth_csv: Path) -> dict:
    """Detections against the simulator's labels: meteor frames found, detections that were meteors."""
    scores = pd.read_csv(scores_csv, dtype={"file": str})
    truth = pd.read_csv(truth_csv)[["file", "label", "event"]].rename(columns={"label": "truth"})
    table = scores.merge(truth, on="file", how="left")
    meteor = table["truth"].eq("meteor")
    detected = table["detection"].fillna(0).astype(int).eq(1)
    true_positives = int((meteor & detected).sum())
    fireball = table["event"].eq("fireball")
    by_streak = table["note"].fillna("").astype(str).str.startswith(STREAK_NOTE)
    return {"meteor_frames": int(meteor.sum()), "detections": int(detected.sum()), "found": true_positives,
            "fireballs": int(fireball.sum()), "fireballs_found": int((fireball & detected).sum()),
            "found_by_streak_check": int((meteor & detected & by_streak).sum()),
            "recall": true_positives / int(meteor.sum()) if meteor.any() else None,        # None: n/a
            "precision": true_positives / int(detected.sum()) if detected.any() else None,
            "false_by_event": table.loc[detected & ~meteor, "event"].value_counts().to_dict()}


def share(value: float | None) -> str:
    """A recall or precision as printed: n/a where nothing was there to count."""
    return "n/a" if value is None else f"{value:.2f}"


def print_summary(summary: dict) -> None:
    """The demo's report for a person."""
    night, truth = summary["night"], summary["truth"]
    false = ", ".join(f"{event} {count}" for event, count in truth["false_by_event"].items()) or "none"
    print(f"frames       {night.frames} ({night.scored} scored; the first frame has no predecessor)")
    print(f"detections   {night.detections} reported, {night.flagged} flagged (satellite/plane, cloud, lightning) "
          "and held back")
    print(f"speed        {night.frames_per_s:.1f} frames/s ({night.seconds:.1f} s for the night)")
    print(f"uploads      {'all delivered' if night.pending == 0 else f'{night.pending} pending in the outbox'}")
    print(f"truth        {truth['found']} of {truth['meteor_frames']} meteor frames found "
          f"(recall {share(truth['recall'])}); {truth['found']} of {truth['detections']} detections are meteors "
          f"(precision {share(truth['precision'])}); fireballs {truth['fireballs_found']} of {truth['fireballs']}; "
          f"{truth['found_by_streak_check']} found by the streak check alone; "
          f"false detections by event: {false}")
    print(f"daily page   {summary['page']}")


if __name__ == "__main__":
    run_demo(*sys.argv[1:2])
