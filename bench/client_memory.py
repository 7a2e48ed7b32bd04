"""The client's peak memory and speed by `guAlta_batch_size`: what a Raspberry Pi with little memory should set.

    python bench/client_memory.py [--night DIR | --frames 150] [--batch-sizes 16,8,4,1] [--repeats 3] [--threads 2]
                                  [--arena release,keep]

Each run is a fresh process scoring the night with the shipped model (`guAlta.py batch --no-upload`, the given
batch size); the batch sizes are run in turn, `--repeats` rounds. Prints the median peak RSS (the process's own
high-water mark, VmHWM), the memory in use once the night is scored and then 20 frames scored one at a time (VmRSS:
the watcher going on in real time after a backlog) and frames/s of each, and whether their decisions are the same;
figures to read, never asserted. `--arena` runs each batch size with ONNX Runtime's arena
giving its memory back after every run (`release`, the client's way) and keeping it (`keep`, as before), the ratio
of their speeds in the same rounds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import allsky  # noqa: E402
from gualta.cli import positive_int  # noqa: E402
from gualta.scores import read_scores  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from client import at_least_two, check_night, child_output, simulated_night  # noqa: E402

RUN = """
import sys, time
import numpy as np
sys.path.insert(0, {root!r})
from gualta.config import load_settings
from gualta.detect import run_batch
from gualta.model import load_model
settings = load_settings(overrides={{"threads": {threads}, "batch_size": {batch_size}}})
model = load_model({model!r}, {threads}, {batch_size}, release_arena={release})
summary = run_batch(settings, {night!r}, {scores!r}, upload=False, model=model, say=lambda line: None,
                    progress=False)
model.batch_size = 1
for _ in range(20):
    model.predict([np.zeros((400, 400), np.uint8)])
with open("/proc/self/status") as status:
    kb = {{line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmHWM:", "VmRSS:"))}}
print(kb["VmHWM"], kb["VmRSS"], summary.frames_per_s)
"""


def run(night: Path, batch_size: int, threads: int, scores: Path, release: bool) -> tuple[float, float, float]:
    """(peak RSS in MB, RSS after the night and 20 frames one at a time in MB, frames/s) of a fresh batch process."""
    code = RUN.format(root=str(ROOT), threads=threads, batch_size=batch_size, night=str(night), scores=str(scores),
                      model=str(ROOT / "models" / "guAlta.onnx"), release=release)
    peak_kb, end_kb, rate = child_output(code).split()[-3:]
    return int(peak_kb) / 1024, int(end_kb) / 1024, float(rate)


def batch_sizes(text: str) -> list[int]:
    """argparse type: comma-separated batch sizes, each at least 1 (16,8,4,1)."""
    try:
        return [positive_int(size) for size in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"not whole numbers of at least 1, comma-separated: {text}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--night", type=Path, help="night folder (default: simulate one)")
    parser.add_argument("--frames", type=at_least_two, default=150, help="frames to simulate")
    parser.add_argument("--batch-sizes", type=batch_sizes, default=[16, 8, 4, 1], help="comma-separated (16,8,4,1)")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arena", default="release", help="release, keep or both (release,keep)")
    args = parser.parse_args(argv)
    check_night(parser, args.night)
    arenas = args.arena.split(",")
    if not set(arenas) <= {"release", "keep"}:
        parser.error("--arena takes release, keep or release,keep")
    runs = [(size, arena) for size in args.batch_sizes for arena in arenas]

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        night = args.night or simulated_night(scratch / "nights", args.frames)
        results: dict[tuple[int, str], list[tuple[float, float, float]]] = {key: [] for key in runs}
        for _ in range(args.repeats):
            for size, arena in runs:
                results[size, arena].append(run(night, size, args.threads, scratch / f"{size}-{arena}.csv",
                                                arena == "release"))
        decisions = {key: [(row["file"], row["detection"], row["flag"])
                           for row in read_scores(scratch / f"{key[0]}-{key[1]}.csv")] for key in runs}
        frames = len(allsky.list_frames(night))          # counted while a simulated night is still there
    print(f"night {night.name}: {frames} frames, shipped model, {args.threads} model "
          f"thread(s), median of {args.repeats} fresh processes")
    median = {key: [statistics.median(figures) for figures in zip(*rounds)] for key, rounds in results.items()}
    base_memory, _, base_rate = median[runs[0]]
    for size, arena in runs:
        memory, end, rate = median[size, arena]
        print(f"batch size {size:3d}  arena {arena:7s}  peak memory {memory:5.0f} MB ({memory - base_memory:+5.0f})"
              f"  then one at a time {end:5.0f} MB  {rate:5.1f} frames/s ({rate / base_rate:.2f}×)")
    for size in dict.fromkeys(size for size, _ in runs):
        if len(arenas) == 2:
            ratios = [released[2] / kept[2] for released, kept in zip(results[size, "release"], results[size, "keep"])]
            print(f"batch size {size:3d}: speed with the arena released / kept, median of the rounds' ratios "
                  f"{statistics.median(ratios):.2f}×")
    same = all(decisions[key] == decisions[runs[0]] for key in runs)
    print(f"decisions (file, detection, flag) the same in every run: {same}")


if __name__ == "__main__":
    main()
