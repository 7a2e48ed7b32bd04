"""Speed of the inference client on a batch night: frames/s end to end (decode + preprocess + model + decisions),
ResNet34 and ResNet18, ONNX Runtime vs PyTorch, beside plain JPEG decoding of the same frames (the floor), and the
client's peak memory. Figures are printed, never asserted.

    python bench/client.py [--night NIGHT_DIR] [--frames 150] [--repeats 3] [--threads 2] [--size S]

Without --night it simulates one. Speed does not depend on the weights, so untrained torchvision networks of each
architecture are exported to ONNX the way gualta.export does (legacy exporter, opset 17, softmax in the graph) at the
shipped model's input size (its ONNX metadata) unless --size says otherwise; the PyTorch runs score the same inputs
with torch eager (gualta.model.preprocess, no fastai). Untrained networks score nearly every frame a candidate, so
their runs also pay the satellite check on every frame (an upper bound); the shipped model's own run (at its size)
is the night as a user's client sees it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import allsky, wingtips  # noqa: E402
from gualta.cli import positive_int  # noqa: E402
from gualta.config import load_settings  # noqa: E402
from gualta.detect import run_batch  # noqa: E402
from gualta.export import quantize_onnx  # noqa: E402
from gualta.model import CLASSES, PREPROCESSING, load_model, preprocess  # noqa: E402
from gualta.fireball import bright_streak  # noqa: E402
from gualta.streak import pieces, smoothed_brightening, with_light_curves  # noqa: E402
from gualta.preprocess import difference_image, read_frame  # noqa: E402

ARCHS = ("resnet34", "resnet18")
SHIPPED_MODEL = ROOT / "models" / "guAlta.onnx"


def shipped_size() -> int:
    """The shipped model's input side (224 if it is missing)."""
    return load_model(SHIPPED_MODEL).info.size if SHIPPED_MODEL.is_file() else 224


def network(arch: str):
    """An untrained torchvision network with a 2-class head and a softmax: [N,3,S,S] → probabilities."""
    import torch
    import torchvision

    body = getattr(torchvision.models, arch)(weights=None, num_classes=len(CLASSES))
    return torch.nn.Sequential(body, torch.nn.Softmax(dim=1)).eval()


def export(arch: str, path: Path, size: int) -> Path:
    """The network as a self-describing ONNX file, like gualta.export.export_onnx writes."""
    import onnx
    import torch

    from gualta.export import OPSET

    torch.onnx.export(network(arch), torch.zeros(1, 3, size, size), str(path), dynamo=False, opset_version=OPSET,
                      input_names=["input"], output_names=["probabilities"],
                      dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}})
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {"classes": json.dumps(list(CLASSES)), "input_size": str(size),
                                        "input_kind": "diff", "arch": arch, "version": "bench",
                                        "preprocessing": PREPROCESSING})
    onnx.save(proto, str(path))
    return path


class TorchModel:
    """PyTorch eager scoring with the client's preprocessing (what a fastai .pkl runs, minus fastai's loader)."""

    def __init__(self, arch: str, threads: int, size: int, batch_size: int = 16):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.net, self.size, self.batch_size = torch, network(arch), size, batch_size

    def predict(self, images):
        import numpy as np

        images = list(images)
        out = []
        with self.torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = self.torch.from_numpy(preprocess(images[start:start + self.batch_size], self.size))
                out.append(self.net(batch)[:, 0].numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def decode_rate(frames: list[Path]) -> float:
    """Frames/s of plain grayscale JPEG decoding (one thread)."""
    started = time.perf_counter()
    for frame in frames:
        read_frame(frame)
    return len(frames) / (time.perf_counter() - started)


def model_rate(model, inputs: list) -> float:
    """Frames/s of the model alone on ready-made 400×400 inputs (what the pipeline overlaps with decoding)."""
    started = time.perf_counter()
    model.predict(inputs)
    return len(inputs) / (time.perf_counter() - started)


def gray_pairs(frames: list[Path]) -> list[tuple]:
    """(current, previous) decoded gray frames of each pair of consecutive frames."""
    images = [read_frame(frame) for frame in frames]
    return list(zip(images[1:], images))


def difference_inputs(frames: list[Path]) -> list:
    return [difference_image(current, previous) for current, previous in gray_pairs(frames)]


def after_warm_up(measure, repeats: int) -> float:
    """The median of `repeats` calls of measure(), after one call that is not counted (caches, first-run set-up)."""
    measure()
    return statistics.median(measure() for _ in range(repeats))


def median_ms(step, calls: list[tuple]) -> float:
    """Median milliseconds of step(*arguments) over the calls' arguments."""
    times = []
    for arguments in calls:
        started = time.perf_counter()
        step(*arguments)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def wingtip_reading(frames: list[Path], found: list[list]) -> tuple[int, float]:
    """How many pairs of consecutive frames hold a streak piece (`found`: each pair's pieces) worth reading for a
    plane's wingtip lights, and the median milliseconds of reading them (two colour decodes and `wingtips.marked`, as
    `gualta.detect.streak_pieces` does); 0.0 if none."""
    def read(current: Path, previous: Path, its: list) -> None:
        wingtips.marked(its, read_frame(current, colour=True), read_frame(previous, colour=True))

    calls = [(current, previous, its) for current, previous, its in zip(frames[1:], frames, found)
             if any(wingtips.worth_reading(piece) for piece in its)]
    return len(calls), median_ms(read, calls) if calls else 0.0


def batch_rate(settings, night: Path, model) -> float:
    """Frames/s of a batch run (no upload) of the night."""
    summary = run_batch(settings, night, upload=False, model=model, say=lambda line: None, progress=False)
    return summary.frames_per_s


PEAK_RSS = """
def peak_rss_kb():
    # VmHWM: this process's own high-water mark. ru_maxrss would also count the pages it shared with the
    # benchmark (torch loaded) when it was forked, because Linux keeps ru_maxrss across exec.
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""


def peak_memory_mb(night: Path, model_path: Path, threads: int) -> float:
    """Peak RSS (MB) of a fresh process running the client's batch on the night with an ONNX model."""
    code = (PEAK_RSS + "import sys; sys.path.insert(0, %r)\n"
            "from gualta.config import load_settings\nfrom gualta.detect import run_batch\n"
            "settings = load_settings(overrides={'threads': %d})\n"
            "run_batch(settings, %r, upload=False, model_path=%r, say=lambda line: None, progress=False)\n"
            "print(peak_rss_kb())") % (str(ROOT), threads, str(night), str(model_path))
    return int(child_output(code).strip().splitlines()[-1]) / 1024


def child_output(code: str) -> str:
    """The standard output of a fresh Python process running `code` in the repository; if it fails, the bench exits
    with the last lines the child wrote to its standard error."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        sys.exit(f"a bench process failed (exit status {run.returncode}):\n"
                 + "\n".join(run.stderr.strip().splitlines()[-15:]))
    return run.stdout


def simulated_night(root: Path, frames: int) -> Path:
    from gualta.simulate import simulate_night

    return simulate_night(root, "20211110", frames=frames, start="22:00", seed=7, scenario="mixed", progress=False)


def at_least_two(text: str) -> int:
    """argparse type: an integer ≥ 2 (frames of a night: at least one pair)."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (one pair of frames): {text}")
    return value


def check_night(parser: argparse.ArgumentParser, night: Path | None) -> None:
    """Stop with a usage error unless the --night given (if any) holds at least two frames."""
    if night is not None and len(allsky.list_frames(night)) < 2:
        parser.error(f"--night {night}: not a night folder with at least two frames (image-YYYYMMDDhhmmss.jpg)")


def add_night_options(parser: argparse.ArgumentParser, repeats: int) -> None:
    """The bench night, repetitions, model threads and input size, as the client benchmarks take them."""
    parser.add_argument("--night", type=Path, help="night folder (default: simulate one)")
    parser.add_argument("--frames", type=at_least_two, default=150, help="frames to simulate")
    parser.add_argument("--repeats", type=positive_int, default=repeats)
    parser.add_argument("--threads", type=int, default=2, help="model threads (the client's guAlta_threads)")
    parser.add_argument("--size", type=int, help="network input side (default: the shipped model's)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_night_options(parser, repeats=3)
    args = parser.parse_args(argv)
    check_night(parser, args.night)
    shipped_side = shipped_size()
    size = args.size or shipped_side

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        night = args.night or simulated_night(scratch / "nights", args.frames)
        frames = allsky.list_frames(night)
        settings = load_settings(overrides={"threads": args.threads})
        print(f"night {night.name}: {len(frames)} frames {read_frame(frames[0]).shape[::-1]}, model input {size}, "
              f"batch {settings.batch_size}, {args.threads} model thread(s), median of {args.repeats} after a "
              f"warm-up run")
        floor = after_warm_up(lambda: decode_rate(frames), args.repeats)
        print(f"{'JPEG decode only (floor)':34s} {floor:7.1f} frames/s")
        pairs = gray_pairs(frames)
        difference_ms = median_ms(difference_image, pairs)
        fireball_ms = median_ms(bright_streak, pairs)
        print(f"{'v4 difference image':34s} {difference_ms:7.2f} ms/pair")
        print(f"{'fireball check':34s} {fireball_ms:7.2f} ms/pair ({fireball_ms / difference_ms:.2f}× the difference)")
        streak_ms = median_ms(pieces, pairs)
        print(f"{'streak check':34s} {streak_ms:7.2f} ms/pair ({streak_ms / difference_ms:.2f}× the difference)")
        found = [pieces(*pair) for pair in pairs]
        light_ms = median_ms(with_light_curves,          # the steady-light reading alone, its pieces already found
                             [(its, smoothed_brightening(*pair), pair[0]) for its, pair in zip(found, pairs)])
        print(f"{'  of it: light curves, chains':34s} {light_ms:7.2f} ms/pair ({light_ms / streak_ms:.1%} of the check)")
        read, lights_ms = wingtip_reading(frames, found)
        print(f"{'wingtip lights':34s} {lights_ms:7.2f} ms/pair read ({read} of {len(pairs)} pairs hold a piece worth "
              f"reading: {lights_ms * read / len(pairs):.2f} ms/pair on average)")
        inputs = difference_inputs(frames[: settings.batch_size * 4 + 1])
        results = {}
        for arch in ARCHS:
            onnx_path = export(arch, scratch / f"{arch}.onnx", size)
            for backend, model in (("onnx", load_model(onnx_path, threads=args.threads)),
                                   ("pytorch", TorchModel(arch, args.threads, size))):
                alone = after_warm_up(lambda: model_rate(model, inputs), args.repeats)
                rate = after_warm_up(lambda: batch_rate(settings, night, model), args.repeats)
                results[arch, backend] = rate
                print(f"{arch + ' ' + backend + ' end to end':34s} {rate:7.1f} frames/s  (model alone "
                      f"{alone:5.1f}/s; decode floor {floor / rate:4.1f}× faster)")
            print(f"{arch + ' onnx / pytorch':34s} {results[arch, 'onnx'] / results[arch, 'pytorch']:7.2f}×")
        if SHIPPED_MODEL.is_file() and size == shipped_side:
            shipped = load_model(SHIPPED_MODEL, threads=args.threads)
            rate = after_warm_up(lambda: batch_rate(settings, night, shipped), args.repeats)
            print(f"{'shipped model end to end':34s} {rate:7.1f} frames/s  (its own scores: the satellite check "
                  f"runs on its candidates only)")
            int8 = load_model(quantize_onnx(SHIPPED_MODEL, night, scratch / "int8.onnx"), threads=args.threads)
            quantized = after_warm_up(lambda: batch_rate(settings, night, int8), args.repeats)
            print(f"{'shipped model int8 end to end':34s} {quantized:7.1f} frames/s  ({quantized / rate:.2f}× the "
                  f"shipped model; python -m gualta.train quantize)")
        memory = peak_memory_mb(night, scratch / "resnet34.onnx", args.threads)
        print(f"{'client peak memory (resnet34 onnx)':34s} {memory:7.0f} MB (peak RSS of a fresh batch process)")
        target = results["resnet34", "onnx"]
        verdict = "met" if target >= 20 else "NOT met"
        print(f"target ≥ 20 frames/s for resnet34 via ONNX at {size} px: {verdict} ({target:.1f})")


if __name__ == "__main__":
    main()
