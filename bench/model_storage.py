"""What storing a model's weights in float16 (`python -m gualta.train halve`) costs the client: file size, session
load time, model-alone speed and peak memory of a float32 ResNet34 ONNX file against its float16-stored copy, and
how far their scores differ. Figures are printed, never asserted.

    python bench/model_storage.py [--night NIGHT_DIR] [--frames 150] [--repeats 5] [--threads 2] [--size S]

Speed does not depend on the weights, so the network is an untrained ResNet34 exported as bench/client.py does, at
the shipped model's input size unless --size says otherwise. The two files are timed alternately, medians reported.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from client import (add_night_options, check_night, difference_inputs, export, model_rate, peak_memory_mb,
                    shipped_size, simulated_night)

from gualta import allsky
from gualta.export import halve_onnx
from gualta.model import load_model


FULL, HALF = "float32", "float16-stored"


def load_ms(path: Path, threads: int) -> float:
    started = time.perf_counter()
    load_model(path, threads=threads)
    return 1000 * (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_night_options(parser, repeats=5)
    args = parser.parse_args(argv)
    check_night(parser, args.night)
    size = args.size or shipped_size()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        night = args.night or simulated_night(scratch / "nights", args.frames)
        frames = allsky.list_frames(night)
        full = export("resnet34", scratch / "float32.onnx", size)
        half = halve_onnx(full, scratch / "float16.onnx")
        paths = {FULL: full, HALF: half}
        print(f"night {night.name}: {len(frames)} frames, resnet34 at {size} px, {args.threads} model thread(s), "
              f"median of {args.repeats}, the two files alternately")
        inputs = difference_inputs(frames[:65])
        models = {name: load_model(path, threads=args.threads) for name, path in paths.items()}
        loads, rates = {name: [] for name in paths}, {name: [] for name in paths}
        for _ in range(args.repeats):
            for name, path in paths.items():
                loads[name].append(load_ms(path, args.threads))
                rates[name].append(model_rate(models[name], inputs))
        scores = {name: model.predict(inputs) for name, model in models.items()}
        size_mb = {name: path.stat().st_size / 1e6 for name, path in paths.items()}
        load = {name: statistics.median(times) for name, times in loads.items()}
        rate = {name: statistics.median(values) for name, values in rates.items()}
        for name in paths:
            print(f"{name:18s} file {size_mb[name]:6.1f} MB   load {load[name]:6.0f} ms   model alone "
                  f"{rate[name]:6.1f} frames/s")
        print(f"{'float16 / float32':18s} file {size_mb[HALF] / size_mb[FULL]:6.2f}×     load "
              f"{load[HALF] / load[FULL]:6.2f}×      model alone {rate[HALF] / rate[FULL]:6.2f}×")
        difference = np.abs(scores[HALF] - scores[FULL])
        print(f"score difference on {len(inputs)} pairs: median {np.median(difference):.1e}, "
              f"max {difference.max():.1e}")
        for name, path in paths.items():
            print(f"{'peak memory, ' + name:30s} {peak_memory_mb(night, path, args.threads):6.0f} MB "
                  f"(peak RSS of a fresh batch process)")


if __name__ == "__main__":
    main()
