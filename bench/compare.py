"""Detection quality and speed of guAlta's model(s) against classical Canny + Hough meteor detectors.

    python bench/compare.py --nights ROOT_OR_NIGHT_DIR... [--model MODEL.onnx|.pkl ...] [--no-model]
                            [--max-frames N] [--no-sky-mask] [--threads 1] [--out TABLE.md] [--csv FRAMES.csv]

On the same nights (folders with ground_truth.csv, given directly or as roots holding YYYYMMDD folders) every frame
is scored, against the last good frame before it (gualta.dataset.NightFrames; bad frames skipped), by:

  guAlta <model>   the model's meteor probability, a detection at ≥ 0.85 (guAlta_threshold); default model
                   models/guAlta.onnx when that file exists
  AllSky           gualta.classical.allsky_detect: Canny 100/200, close, cloud mask, HoughLinesP, line > 100 px
  indi-allsky      gualta.classical.indi_allsky_detect: blur 5×5, Canny 15/50, central circle, HoughLinesP
  diff + Hough     gualta.classical.diff_hough_detect: the thesis' v4 difference image and a line search, no network

The first frame of a night has no predecessor and is skipped. The classical detectors get each night's sky mask
(classical.estimate_sky_mask from the night's first five good frames: lens circle, horizon, masts), as an operator
would configure once; --no-sky-mask runs them on the whole frame (watermark box still ignored).

One table, printed as markdown (and written to --out): meteor recall (label meteor), faint recall (meteor frames
with peak_snr < 5), fireball recall, precision (detections that are meteor frames), false-positive rates on clear
no-meteor frames (clouds < 0.05, event none), cloudy no-meteor frames (clouds ≥ 0.2), satellite and plane frames,
and frames/s = 1 / median per-frame time of the method, measured in this run on already decoded frames (the model's
time includes its difference image; one frame per predict call). JPEG decoding, the same for every method, is
reported below the table as the floor. --csv (or --out's name with _frames.csv) keeps the per-frame results:
night, file, label, event, peak_snr, clouds, method, score, detected, seconds, decode_s.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gualta import allsky, classical  # noqa: E402
from gualta.cli import positive_int  # noqa: E402
from gualta.dataset import GROUND_TRUTH, LABELS, NightFrames, read_labels  # noqa: E402
from gualta.preprocess import BadFrame, read_gray  # noqa: E402

log = logging.getLogger("compare")

THRESHOLD = 0.85                  # guAlta_threshold: a model detection is p_meteor ≥ this
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "guAlta.onnx"
FAINT_SNR = 5.0                   # a meteor frame with peak_snr below this is faint
CLEAR = 0.05                      # clear: cloud cover below this
CLOUDY = 0.2                      # cloudy: cloud cover from this
MASK_FRAMES = 5                   # good frames of a night the sky mask is estimated from
FRAME_COLUMNS = ["night", "file", "label", "event", "peak_snr", "clouds", "method", "score", "detected", "seconds",
                 "decode_s"]


@dataclass
class Method:
    """A detector under test: score(current, previous, sky_mask) → (score, detected)."""
    name: str
    score: Callable[[np.ndarray, np.ndarray, np.ndarray | None], tuple[float, bool]]


# --- the methods -------------------------------------------------------------------------------------------------

def model_method(path: Path, threads: int, threshold: float = THRESHOLD) -> Method:
    """guAlta's model on the frame pair (its own input kind: v4 difference, or the raw frame)."""
    from gualta.model import load_model, model_input

    model = load_model(path, threads=threads)
    kind = getattr(getattr(model, "info", None), "kind", "diff")

    def score(current, previous, sky_mask):
        p_meteor = float(model.predict([model_input(current, previous, kind)])[0])
        return p_meteor, p_meteor >= threshold

    name = "guAlta" if path.stem == "guAlta" else f"guAlta {path.stem}"
    return Method(f"{name} (p ≥ {threshold})", score)


def classical_method(name: str, detect, pair: bool = False) -> Method:
    """A gualta.classical detector; pair detectors also get the previous frame."""
    def score(current, previous, sky_mask):
        found = detect(current, previous, sky_mask=sky_mask) if pair else detect(current, sky_mask=sky_mask)
        return found.score, found.detected
    return Method(name, score)


def methods(models: list[Path], threads: int) -> list[Method]:
    return [*(model_method(path, threads) for path in models),
            classical_method("AllSky meteor (Canny 100/200 + Hough)", classical.allsky_detect),
            classical_method("indi-allsky (Canny 15/50 + Hough)", classical.indi_allsky_detect),
            classical_method("thesis diff + Hough (no network)", classical.diff_hough_detect, pair=True)]


# --- scoring nights ----------------------------------------------------------------------------------------------

def find_nights(paths: list[str]) -> list[Path]:
    """Night folders with ground truth: each path is such a night, or a root whose YYYYMMDD folders are."""
    nights = []
    for path in map(Path, paths):
        if (path / GROUND_TRUTH).is_file():
            nights.append(path)
        else:
            nights += [night for night in allsky.night_folders(path) if (night / GROUND_TRUTH).is_file()]
    return nights


def labelled_nights(paths: list[str]) -> list[Path]:
    """find_nights, or exit with a clear message when there is none."""
    nights = find_nights(paths)
    if not nights:
        sys.exit(f"no night folders with {GROUND_TRUTH} in: {' '.join(paths)}")
    return nights


def sky_mask_of(frames: list[Path]) -> np.ndarray | None:
    """The night's sky mask from its first good frames (None when none decodes)."""
    images = []
    for frame in frames:
        try:
            images.append(read_gray(frame))
        except BadFrame:
            continue
        if len(images) == MASK_FRAMES:
            break
    shapes = {image.shape for image in images}
    return classical.estimate_sky_mask(images) if images and len(shapes) == 1 else None


def score_night(night: Path, tested: list[Method], max_frames: int | None, use_mask: bool,
                bar: tqdm) -> tuple[list[dict], int]:
    """Per-frame rows (one per frame and method) of a night, and how many frames were skipped."""
    truth = read_labels(night / GROUND_TRUTH)
    frames = NightFrames(allsky.list_frames(night))
    mask = sky_mask_of(frames.frames) if use_mask else None
    rows, skipped = [], 0
    for frame in frames.frames[1:][:max_frames]:          # the first frame has no predecessor
        bar.update()
        if frame.name not in truth.index or truth.at[frame.name, "label"] not in LABELS:
            skipped += 1
            continue
        started = time.perf_counter()
        pair = frames.pair(frame)
        current = frames.image(frame) if pair else None
        decode_s = time.perf_counter() - started
        if pair is None or current is None:
            skipped += 1
            continue
        previous = frames.image(pair.previous)
        known = truth.loc[frame.name]
        base = {"night": night.name, "file": frame.name, "label": known["label"], "event": known.get("event"),
                "peak_snr": known.get("peak_snr"), "clouds": known.get("clouds"), "decode_s": decode_s}
        for method in tested:
            started = time.perf_counter()
            score, detected = method.score(current, previous, mask)
            rows.append({**base, "method": method.name, "score": float(score), "detected": int(bool(detected)),
                         "seconds": time.perf_counter() - started})
    return rows, skipped


# --- the table ---------------------------------------------------------------------------------------------------

def frame_groups(frames: pd.DataFrame) -> dict[str, pd.Series]:
    """Boolean masks over per-frame rows: the frame sets each column of the table is measured on."""
    meteor = frames["label"] == "meteor"
    event = frames["event"].fillna("none")
    snr = pd.to_numeric(frames["peak_snr"], errors="coerce")
    clouds = pd.to_numeric(frames["clouds"], errors="coerce")
    return {"meteor recall": meteor,
            f"faint recall (SNR < {FAINT_SNR:g})": meteor & (snr < FAINT_SNR),
            "fireball recall": meteor & (event == "fireball"),
            f"FP clear (clouds < {CLEAR:g})": ~meteor & (event == "none") & (clouds < CLEAR),
            f"FP cloudy (clouds ≥ {CLOUDY:g})": ~meteor & (clouds >= CLOUDY),
            "FP satellite": ~meteor & (event == "satellite"),
            "FP plane": ~meteor & (event == "plane")}


def rate(detected: pd.Series) -> float | None:
    return float(detected.mean()) if len(detected) else None


def summarise(results: pd.DataFrame) -> list[dict]:
    """One row per method: the rates of frame_groups, precision and frames/s (None where there are no frames)."""
    table = []
    for name, rows in results.groupby("method", sort=False):
        groups = frame_groups(rows)
        hits = rows["detected"] == 1
        row = {"method": name, **{column: rate(hits[mask]) for column, mask in groups.items()}}
        row["precision"] = rate(rows.loc[hits, "label"] == "meteor")
        row["frames/s"] = 1.0 / statistics.median(rows["seconds"])
        table.append(row)
    return table


def counts(results: pd.DataFrame) -> dict[str, int]:
    """Frames in each group (the same for every method)."""
    first = results[results["method"] == results["method"].iloc[0]]
    return {column: int(mask.sum()) for column, mask in frame_groups(first).items()}


def markdown_table(results: pd.DataFrame) -> str:
    """The comparison table in markdown: methods × rates (n frames in each header), precision, frames/s."""
    rows, n = summarise(results), counts(results)
    rate_columns = list(n)
    header = ["method", *(f"{column} (n={n[column]})" for column in rate_columns[:3]), "precision",
              *(f"{column} (n={n[column]})" for column in rate_columns[3:]), "frames/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        cells = [row["method"], *(cell(row[c]) for c in rate_columns[:3]), cell(row["precision"]),
                 *(cell(row[c]) for c in rate_columns[3:]), f"{row['frames/s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def report(results: pd.DataFrame, nights: list[Path], skipped: int, use_mask: bool) -> str:
    """The table with what it was measured on and the decode floor."""
    frames = results.drop_duplicates(["night", "file"])
    decode = statistics.median(frames["decode_s"])
    return "\n".join([
        f"Nights: {', '.join(night.name for night in nights)} · {len(frames)} frames scored "
        f"({int((frames['label'] == 'meteor').sum())} meteor), {skipped} skipped (first frame of each night not "
        f"counted) · classical sky mask: {'per night (estimate_sky_mask)' if use_mask else 'none'}",
        "",
        markdown_table(results),
        "",
        f"JPEG decode to gray, common to every method and not in the rates above (the floor): "
        f"{1 / decode:.1f} frames/s (median {decode * 1000:.1f} ms). Frames/s: 1 / median per-frame time in this run.",
    ])


# --- command line ------------------------------------------------------------------------------------------------

def chosen_models(args: argparse.Namespace) -> list[Path]:
    if args.no_model:
        return []
    if args.model:
        missing = [path for path in args.model if not Path(path).is_file()]
        if missing:
            sys.exit(f"model file(s) not found: {', '.join(map(str, missing))}")
        return [Path(path) for path in args.model]
    if DEFAULT_MODEL.is_file():
        return [DEFAULT_MODEL]
    log.warning("no model at %s: comparing the classical detectors only", DEFAULT_MODEL)
    return []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", nargs="+", required=True, help="night folders, or roots of YYYYMMDD folders")
    parser.add_argument("--model", nargs="+", type=Path, help=f"model file(s); default {DEFAULT_MODEL} if present")
    parser.add_argument("--no-model", action="store_true", help="compare the classical detectors only")
    parser.add_argument("--max-frames", type=positive_int, help="score at most N frames of each night")
    parser.add_argument("--no-sky-mask", action="store_true", help="classical detectors search the whole frame")
    parser.add_argument("--threads", type=int, default=1, help="model inference threads (default 1)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown), and FILE_frames.csv per frame")
    parser.add_argument("--csv", type=Path, help="write the per-frame results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    nights = labelled_nights(args.nights)
    tested = methods(chosen_models(args), args.threads)
    total = sum(len(allsky.list_frames(night)[1:][:args.max_frames]) for night in nights)
    rows, skipped = [], 0
    with tqdm(total=total, desc="compare", unit="frame", disable=None) as bar:
        for night in nights:
            night_rows, night_skipped = score_night(night, tested, args.max_frames, not args.no_sky_mask, bar)
            rows += night_rows
            skipped += night_skipped
    if not rows:
        sys.exit("no frame could be scored (no labelled frame pairs)")
    results = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    text = report(results, nights, skipped, not args.no_sky_mask)
    print(text)
    csv = args.csv or (args.out.with_name(f"{args.out.stem}_frames.csv") if args.out else None)   # never the table
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    if csv:
        csv.parent.mkdir(parents=True, exist_ok=True)
        results.to_csv(csv, index=False)


if __name__ == "__main__":
    main()
