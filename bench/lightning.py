"""Lightning painted on copies of simulated nights: how many flash frames the client reports, and what it finds.

    python bench/lightning.py --nights ROOT_OR_NIGHT_DIR... --out DIR [--model MODEL] [--flashes 6] [--bolts 2]
                              [--seed 1] [--threads 2]

Each night (a folder with ground_truth.csv) is copied to DIR/painted/SETTINGS/YYYYMMDD (SETTINGS: the flashes, bolts and
seed) with lightning added to --flashes of its frames (one pair of them consecutive, as a storm flashes again): a
smooth, cloud-shaped region brightened by 10–80 DN (a large blurred blob, brighter where the frame is brighter: lit
cloud), and in --bolts of them also a bolt (a saturated jagged line with a faint glow), saved again as JPEG. The client
(`guAlta.py batch`'s own code, every check on, no upload) scores the undisturbed night into DIR/scores/undisturbed and
the painted one into DIR/scores/painted/SETTINGS (a scores CSV already there is read, not run again: delete it after
changing the client).
Printed, a row a night: flash frames without a meteor reported (with and without a bolt), other frames reported only
when painted, meteor frames found undisturbed → painted, and every flash frame's decision. Figures are printed, never
asserted.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import allsky, evaluate  # noqa: E402
from gualta.cli import non_negative_int  # noqa: E402
from gualta.config import load_settings  # noqa: E402
from gualta.dataset import GROUND_TRUTH  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from client_truth import decision, scores_of  # noqa: E402
from compare import labelled_nights  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "guAlta.onnx"
FLASH_DN = (10.0, 80.0)
JPEG_QUALITY = 90
PAINTED = "painted.json"                                          # in a copy: {frame: has a bolt}


def cloud_shaped_blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth blob, 0–1, of a cloud's ragged outline: low-frequency noise around a random centre, blurred."""
    cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
    radius = rng.uniform(0.12, 0.35) * height
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    core = np.exp(-(((xs - cx) / (radius * rng.uniform(0.7, 1.6))) ** 2 + ((ys - cy) / radius) ** 2))
    ragged = cv2.resize(rng.uniform(0.3, 1.0, (height // 64 + 1, width // 64 + 1)).astype(np.float32),
                        (width, height), interpolation=cv2.INTER_CUBIC)
    blob = cv2.GaussianBlur(np.clip(core * ragged * 1.6, 0, 1), (0, 0), radius / 6)
    return blob / max(float(blob.max()), 1e-6)


def bolt_mask(rng: np.random.Generator, height: int, width: int, blob: np.ndarray) -> np.ndarray:
    """A jagged bolt (0–1, 2–3 px wide) from the blob's brightest part downwards, with a branch."""
    y, x = np.unravel_index(np.argmax(blob), blob.shape)
    mask = np.zeros((height, width), np.float32)
    for branch in range(2):
        points, px, py = [], float(x), float(y)
        heading = rng.uniform(-0.6, 0.6) + (0.7 if branch else 0.0)
        for _ in range(rng.integers(8, 16)):
            heading += rng.normal(0, 0.5)
            step = rng.uniform(12, 30)
            px, py = px + step * np.sin(heading), py + step * abs(np.cos(heading))
            points.append((px, py))
        path = np.round(np.array([(x, y)] + points)).astype(np.int32)
        cv2.polylines(mask, [path], False, 1.0, 3 if branch == 0 else 2, cv2.LINE_AA)
    return mask


def paint_flash(image: np.ndarray, rng: np.random.Generator, bolt: bool) -> np.ndarray:
    """The frame (BGR) with a lightning flash lighting a cloud-shaped region, and a bolt if asked."""
    height, width = image.shape[:2]
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    smooth = cv2.GaussianBlur(gray, (0, 0), 15)
    dark = np.percentile(smooth, 5)
    sky = np.clip((smooth - dark - 4) / 8, 0, 1)                     # not the black around the lens circle
    lit = np.clip((smooth - np.percentile(smooth[sky > 0.5], 20)) / 40, 0, 1) if (sky > 0.5).any() else sky
    light = rng.uniform(*FLASH_DN) * cloud_shaped_blob(rng, height, width) * sky * (0.5 + 0.5 * lit)
    if bolt:
        line = bolt_mask(rng, height, width, light)
        glow = cv2.GaussianBlur(line, (0, 0), 6)
        light = light + (255 * line + 60 * glow / max(float(glow.max()), 1e-6)) * sky
    tint = np.array([1.05, 1.0, 0.95], np.float32)                   # BGR: a bluish white
    return np.clip(image.astype(np.float32) + light[..., None] * tint, 0, 255).astype(np.uint8)


def flash_frames(count: int, frames: int, rng: np.random.Generator) -> list[int]:
    """`count` frame indices away from the night's ends, spread out, one pair of them consecutive."""
    slots = np.linspace(5, frames - 6, count).astype(int) + rng.integers(-3, 4, count)
    picked = sorted(set(int(i) for i in np.clip(slots, 3, frames - 4)))
    if len(picked) >= 2:
        picked[-1] = picked[-2] + 1
    return picked


def painting(flashes: int, bolts: int, seed: int) -> str:
    """The painted copies' folder name: its settings, so a run with others never reads them."""
    return f"{flashes}-flashes-{bolts}-bolts-seed-{seed}"


def painted_copy(night: Path, out: Path, flashes: int, bolts: int, seed: int) -> dict[str, bool]:
    """Copy the night to out/NIGHT with lightning painted (once: an existing copy is kept); {frame: has a bolt} of the
    copy, written into it as painted.json and read back when it is kept."""
    target, rng = out / night.name, np.random.default_rng([seed, int(night.name)])
    if (target / PAINTED).is_file():
        return json.loads((target / PAINTED).read_text())
    frames = allsky.list_frames(night)
    chosen = flash_frames(flashes, len(frames), rng)
    with_bolt = set(rng.choice(chosen, size=min(bolts, len(chosen)), replace=False).tolist())
    painted = {frames[i].name: i in with_bolt for i in chosen}
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(night, partial)
    for i in chosen:
        image = cv2.imread(str(frames[i]), cv2.IMREAD_COLOR)
        cv2.imwrite(str(partial / frames[i].name), paint_flash(image, rng, i in with_bolt),
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    (partial / PAINTED).write_text(json.dumps(painted))
    shutil.rmtree(target, ignore_errors=True)                       # a copy of an earlier version, without painted.json
    partial.rename(target)
    return painted


def night_row(name: str, painted: dict[str, bool], before: pd.DataFrame, after: pd.DataFrame) -> tuple[str, list]:
    """A markdown row of one night and its flash frames' decisions."""
    reported = after.set_index("file")["detection"].eq(1)
    meteor = after.set_index("file")["meteor"].eq(1)
    flat = [f for f, bolt in painted.items() if not bolt and not meteor.get(f, False)]
    bolted = [f for f, bolt in painted.items() if bolt and not meteor.get(f, False)]
    was = before.set_index("file")["detection"].eq(1)
    added = [f for f in after["file"] if f not in painted and reported.get(f, False) and not was.get(f, False)]
    found = {when: int((table["meteor"].eq(1) & table["detection"].eq(1)).sum())
             for when, table in (("before", before), ("after", after))}
    row = (f"| {name} | {'/'.join(sorted(after['scenario'].astype(str).unique()))} "
           f"| {sum(reported.get(f, False) for f in flat)} of {len(flat)} "
           f"| {sum(reported.get(f, False) for f in bolted)} of {len(bolted)} | {len(added)} "
           f"| {found['before']} → {found['after']} of {int(after['meteor'].sum())} |")
    table = after.set_index("file")
    details = [f"| {name} | {f} | {'bolt' if bolt else 'flash'} | {table.at[f, 'event']} | {table.at[f, 'score']} "
               f"| {decision(table.at[f, 'detection'], table.at[f, 'flag'])} |" if f in table.index
               else f"| {name} | {f} | {'bolt' if bolt else 'flash'} | — | — | skipped |"
               for f, bolt in painted.items()]
    return row, details


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", nargs="+", required=True, help="night folders, or roots of YYYYMMDD folders")
    parser.add_argument("--out", type=Path, required=True, help="painted copies and scores CSVs go here")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"model file (default {DEFAULT_MODEL})")
    parser.add_argument("--flashes", type=int, default=6, help="flash frames a night")
    parser.add_argument("--bolts", type=int, default=2, help="of them, frames with a bolt too")
    parser.add_argument("--seed", type=non_negative_int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="model threads (0: one per CPU core)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    settings = load_settings(env={}, overrides={"model": args.model, "threads": args.threads})
    rows, details = [], []
    for night in labelled_nights(args.nights):
        copies = args.out / "painted" / painting(args.flashes, args.bolts, args.seed)
        painted = painted_copy(night, copies, args.flashes, args.bolts, args.seed)
        tables = {}
        for when, folder, scores_dir in (("undisturbed", night, args.out / "scores" / "undisturbed"),
                                         ("painted", copies / night.name,
                                          args.out / "scores" / "painted" / copies.name)):
            scores_dir.mkdir(parents=True, exist_ok=True)
            tables[when] = evaluate.client_predictions(scores_of(folder, scores_dir, settings), folder / GROUND_TRUTH)
        row, detail = night_row(night.name, painted, tables["undisturbed"], tables["painted"])
        rows.append(row)
        details += detail
    print("| night | sky | flash frames reported (no meteor in them) | with a bolt | other frames reported only "
          "painted | meteor frames found, undisturbed → painted |\n|---|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\n| night | frame | painted | event | score | decision |\n|---|---|---|---|---:|---|")
    print("\n".join(details))


if __name__ == "__main__":
    main()
