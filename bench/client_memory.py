"""The client's peak memory and speed by `guAlta_batch_size`: what a Raspberry Pi with little memory should set.

    python bench/client_memory.py [--night DIR | --frames 150] [--batch-sizes 16,8,4,1] [--repeats 3] [--threads 2]

Each run is a fresh process scoring the night with the shipped model (`guAlta.py batch --no-upload`, the given
batch size); the batch sizes are run in turn, `--repeats` rounds. Prints the median peak RSS (the process's own
high-water mark, VmHWM) and frames/s of each, and whether their decisions are the same; figures to read, never
asserted.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import allsky  # noqa: E402
from gualta.cli import positive_int  # noqa: E402
from gualta.detect import read_scores  # noqa: E402

RUN = """
import sys, time
sys.path.insert(0, {root!r})
from gualta.config import load_settings
from gualta.detect import run_batch
settings = load_settings(overrides={{"threads": {threads}, "batch_size": {batch_size}}})
summary = run_batch(settings, {night!r}, {scores!r}, upload=False, model_path={model!r}, say=lambda line: None,
                    progress=False)
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(peak_kb, summary.frames_per_s)
"""


def run(night: Path, batch_size: int, threads: int, scores: Path) -> tuple[float, float]:
    """(peak RSS in MB, frames/s) of a fresh batch process."""
    code = RUN.format(root=str(ROOT), threads=threads, batch_size=batch_size, night=str(night), scores=str(scores),
                      model=str(ROOT / "models" / "guAlta.onnx"))
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    peak_kb, rate = output.stdout.split()[-2:]
    return int(peak_kb) / 1024, float(rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--night", type=Path, help="night folder (default: simulate one)")
    parser.add_argument("--frames", type=positive_int, default=150, help="frames to simulate")
    parser.add_argument("--batch-sizes", default="16,8,4,1")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(size) for size in args.batch_sizes.split(",")]

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        night = args.night
        if night is None:
            from gualta.simulate import simulate_night
            night = simulate_night(scratch / "nights", "20211110", frames=args.frames, start="22:00", seed=7,
                                   scenario="mixed", progress=False)
        results: dict[int, list[tuple[float, float]]] = {size: [] for size in sizes}
        for _ in range(args.repeats):
            for size in sizes:
                results[size].append(run(night, size, args.threads, scratch / f"{size}.csv"))
        decisions = {size: [(row["file"], row["detection"], row["flag"])
                            for row in read_scores(scratch / f"{size}.csv")] for size in sizes}
        frames = len(allsky.list_frames(night))          # counted while a simulated night is still there
    print(f"night {night.name}: {frames} frames, shipped model, {args.threads} model "
          f"thread(s), median of {args.repeats} fresh processes")
    base_memory = statistics.median(memory for memory, _ in results[sizes[0]])
    base_rate = statistics.median(rate for _, rate in results[sizes[0]])
    for size in sizes:
        memory = statistics.median(memory for memory, _ in results[size])
        rate = statistics.median(rate for _, rate in results[size])
        print(f"batch size {size:3d}   peak memory {memory:5.0f} MB ({memory - base_memory:+5.0f})   "
              f"{rate:5.1f} frames/s ({rate / base_rate:.2f}×)")
    same = all(decisions[size] == decisions[sizes[0]] for size in sizes)
    print(f"decisions (file, detection, flag) the same at every batch size: {same}")


if __name__ == "__main__":
    main()
