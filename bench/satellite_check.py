"""How well the cross-frame satellite/plane check works, on simulated nights with ground truth.

Without a model the check is measured independent of the classifier: every frame whose main ground-truth event is a
meteor, fireball, satellite or plane is treated as a detection (score 1, every other frame 0) and decided by the
client's own Decider on trail geometry alone. Caught = satellite/plane frames flagged; lost = meteor/fireball frames
flagged; both also among the frames whose event trail the check found at all (the ground truth's trail within
15 px of a found trail: fainter events the classifier would rarely report either).

With --model the frames are scored by that model and its candidates (score ≥ --threshold) are decided twice in the same
run: by trail geometry alone (the baseline) and as the client decides them, explaining away with the model's second
opinion; the time the decisions take (trail search, explaining away and its extra model calls, not the first scoring) is
printed per frame: the median over the frames, and the mean. The bright and the faint line searches are also timed
alone, on difference images of the last night, and the faint-crossing search (step 5, the costliest: full resolution,
three frame pairs) on a few candidates' frames of it. Figures are printed, never asserted.

    python bench/satellite_check.py [--nights 4] [--frames 150] [--seed 500] [--out DIR]
    python bench/satellite_check.py --night-dirs DIR [DIR ...]      # nights that already exist
    python bench/satellite_check.py --night-dirs DIR [DIR ...] --model models/guAlta.onnx
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import allsky, faint_crossing, trails  # noqa: E402
from gualta.cli import non_negative_int, positive_int  # noqa: E402
from gualta.detect import Decider, Scorer, prepare, rescorer  # noqa: E402
from gualta.frames import NightFrames  # noqa: E402
from gualta.model import load_model  # noqa: E402
from gualta.preprocess import BadFrame, read_frame  # noqa: E402
from gualta.simulate import Rates, simulate_night  # noqa: E402

RATES = Rates(meteor=0.1, fireball=0.005, satellite=0.05, plane=0.015, insect=0.0)
SCENARIOS = ("clear", "cloudy", "moon", "mixed")
KIND = {"meteor": "meteor", "fireball": "meteor", "satellite": "crossing", "plane": "crossing"}
VISIBLE_PX = 15
SEARCH_TIMED = 60              # difference images the line searches are timed on
CROSSINGS_TIMED = 10           # candidates the faint-crossing search is timed on


def scored_frames(night: Path, model) -> list:
    """The night's frame results: scored by the model, or 1 for meteor/fireball/satellite/plane frames without one."""
    files = allsky.list_frames(night)
    frames = NightFrames(files)
    if model is not None:
        return list(Scorer(model, frames).score(files))
    truth = pd.read_csv(night / "ground_truth.csv").set_index("file")
    results = [prepare(frames, file)[0] for file in files]
    for result in results:
        if result.diff is not None:
            event = truth.loc[result.file.name, "event"] if result.file.name in truth.index else "none"
            result.score = 1.0 if event in KIND else 0.0
    return results


def night_outcomes(night: Path, results: list, decider: Decider) -> tuple[list[dict], list[float]]:
    """Per candidate event frame: its kind, whether the check saw a trail in it, and whether it was flagged; and the
    seconds the decider took on each frame (the last frame's with the decider's finish)."""
    truth = pd.read_csv(night / "ground_truth.csv").set_index("file")
    outcomes, seconds = [], []
    for result in (dataclasses.replace(r) for r in results):
        started = time.perf_counter()
        decided = decider.push(result)
        seconds.append(time.perf_counter() - started)
        outcomes += [row for frame in decided for row in outcome(frame, truth, decider.threshold)]
    started = time.perf_counter()
    decided = decider.finish()
    if seconds:
        seconds[-1] += time.perf_counter() - started
    outcomes += [row for frame in decided for row in outcome(frame, truth, decider.threshold)]
    return outcomes, seconds


def visible(result, row: pd.Series) -> bool:
    """Whether the check found the event's own trail: a trail whose middle is within VISIBLE_PX of the ground
    truth's (in 400×400 model-input pixels; the truth is in the file's pixels, `frame_size` as the frame was read)."""
    if not result.trails or pd.isna(row["x1"]) or not result.frame_size:
        return False
    width, height = (side * result.scale for side in result.frame_size)
    middle = np.array([(row["x1"] + row["x2"]) / 2 * 400 / width, (row["y1"] + row["y2"]) / 2 * 400 / height])
    return min(np.linalg.norm(trail.ends.mean(axis=0) - middle) for trail in result.trails) <= VISIBLE_PX


def outcome(result, truth: pd.DataFrame, threshold: float) -> list[dict]:
    row = truth.loc[result.file.name]
    if result.score is None or result.score < threshold or row["event"] not in KIND:
        return []
    return [{"kind": KIND[row["event"]], "event": row["event"], "visible": visible(result, row),
             "flagged": result.flag == "satellite",
             "with_crossing": any(e in str(row["events"]) for e in ("satellite", "plane"))}]


def report(outcomes: list[dict]) -> None:
    if not outcomes:
        print("no candidate satellite/plane or meteor frames: nothing to report (more frames or nights?)")
        return
    table = pd.DataFrame(outcomes)
    for kind, label in (("crossing", "satellite/plane frames caught"), ("meteor", "meteor/fireball frames lost")):
        rows = table[table["kind"] == kind]
        seen = rows[rows["visible"]]
        flagged, flagged_seen = int(rows["flagged"].sum()), int(seen["flagged"].sum())
        print(f"{label:30s} {flagged:4d} of {len(rows):4d} ({flagged / max(len(rows), 1):6.1%}); "
              f"of those whose own trail the check found: {flagged_seen} of {len(seen)} "
              f"({flagged_seen / max(len(seen), 1):6.1%})")
    for event, count in Counter(table["event"]).items():
        rows = table[table["event"] == event]
        print(f"  {event:10s} frames {count:4d}, flagged {int(rows['flagged'].sum()):4d}")
    shared = table[(table["kind"] == "meteor") & table["with_crossing"]]
    print(f"meteor frames that also hold a satellite/plane: {len(shared)}, flagged {int(shared['flagged'].sum())}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--night-dirs", type=Path, nargs="+", help="existing simulated nights")
    parser.add_argument("--nights", type=positive_int, default=4, help="nights to simulate (one per sky scenario)")
    parser.add_argument("--frames", type=positive_int, default=150)
    parser.add_argument("--seed", type=non_negative_int, default=500)
    parser.add_argument("--out", type=Path, help="keep simulated nights here (default: a temporary folder)")
    parser.add_argument("--model", type=Path, help="score with this model and explain away with it")
    parser.add_argument("--threshold", type=float, default=0.85, help="candidate threshold with --model")
    args = parser.parse_args(argv)

    model = load_model(args.model, threads=0) if args.model else None
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        nights = args.night_dirs or [
            simulate_night(root, f"{datetime(2021, 11, 10) + timedelta(days=i):%Y%m%d}", frames=args.frames,
                           start="21:00", seed=args.seed + i,
                           scenario=SCENARIOS[i % len(SCENARIOS)], rates=RATES, progress=False)
            for i in range(args.nights)]
        deciders = {"trail geometry": lambda: Decider(0.5)}
        if model is not None:
            deciders = {"trail geometry": lambda: Decider(args.threshold),
                        "with explaining away": lambda: Decider(args.threshold, rescore=rescorer(model),
                                                                cloud_check=False, read_gray=read_frame)}
        outcomes, seconds = {name: [] for name in deciders}, {name: [] for name in deciders}
        for night in nights:
            results = scored_frames(night, model)
            for name, decider in deciders.items():
                night_rows, frame_seconds = night_outcomes(night, results, decider())
                seconds[name] += frame_seconds
                outcomes[name] += night_rows
            print(f"night {night.name} ({pd.read_json(night / 'night.json', typ='series')['scenario']}): "
                  f"{len(night_rows)} candidate event frames")
        for name, rows in outcomes.items():
            print(f"-- {name}: deciding {1000 * float(np.median(seconds[name] or [0.0])):.2f} ms a frame (median of "
                  f"{len(seconds[name])} frames; mean {1000 * float(np.mean(seconds[name] or [0.0])):.2f})")
            report(rows)
        print_search_times([r.diff for r in results if r.diff is not None][:SEARCH_TIMED])
        print_crossing_times(allsky.list_frames(nights[-1]))


def median_ms(search, images: list) -> float:
    times = []
    for image in images:
        started = time.perf_counter()
        search(image)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def print_search_times(images: list) -> None:
    """Median time per difference image of the bright-line search (steps 1–2) and the faint-line search (step 4)."""
    if not images:
        return
    bright, faint = median_ms(trails.lines_of, images), median_ms(trails.faint_lines_of, images)
    print(f"per difference image ({len(images)} of the last night, median): bright lines {bright:.1f} ms, "
          f"faint lines {faint:.1f} ms ({faint / max(bright, 1e-9):.1f} ×)")


def print_crossing_times(files: list[Path]) -> None:
    """Median time of the faint-crossing search (step 5) for a candidate: its frame, the previous two and the next
    read, the sky estimated, its lines searched and followed into both adjacent differences — on CROSSINGS_TIMED
    frames spread over the night (the client runs it only for candidates steps 1–4 leave standing)."""
    if len(files) < 4:
        return
    times = []
    for i in np.linspace(2, len(files) - 2, CROSSINGS_TIMED).astype(int):
        started = time.perf_counter()
        try:
            frames = [read_frame(path) for path in files[i - 2:i + 2]]
        except BadFrame as exc:
            print(f"not timed: {exc}")
            continue
        faint_crossing.explained_lines(frames[2], frames[1], [(frames[1], frames[0]), (frames[3], frames[2])])
        times.append(time.perf_counter() - started)
    if times:
        print(f"faint-crossing search per candidate ({len(times)} frames of the last night, median): "
              f"{float(np.median(times)):.2f} s")


if __name__ == "__main__":
    main()
