"""The product as operators run it, against the simulator's ground truth: the client's figures of the model card.

    python bench/client_truth.py --nights ROOT_OR_NIGHT_DIR... --scores-dir DIR [--model MODEL] [--threshold 0.85]
                                 [--threads 2] [--json OUT.json] [--before BEFORE_DIR]

Each night (a folder with ground_truth.csv, given directly or as a root holding YYYYMMDD folders) is run once with
`guAlta.py batch`'s own code (every check on, no upload) into DIR/YYYYMMDD.csv; a night whose scores CSV is already
there is read, not run again, so a table can be rebuilt or extended without rescoring. Printed as markdown, one row
a night and one for all of them: meteor frames, found, recall, precision (false positives), faint recall (peak under
5 × the noise), recall from 5 × the noise, cloudy false positives (no-meteor frames with cloud cover ≥ 0.2),
fireball frames found, the share of found meteor frames whose reported streak lies on the meteor (both ends within
20 px of its true streak: the daily page groups crossings by it), and the model alone at the threshold on its own
scores. With --before, another client's scores CSVs of the same nights (an earlier commit's, run the same way) are
read as well, and the totals before → after are printed with every frame decided differently (its ground-truth
event, reported or not, flag). Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import evaluate  # noqa: E402
from gualta.config import load_settings  # noqa: E402
from gualta.dataset import GROUND_TRUTH  # noqa: E402
from gualta.detect import run_batch  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from compare import labelled_nights  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "guAlta.onnx"
HEADER = ("| night | sky | meteor frames | found | recall | precision (false) | faint recall | recall ≥ 5 × noise "
          "| cloudy FP | fireballs | streak on the meteor | model alone: recall / precision / cloudy FP |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")


def scores_of(night: Path, scores_dir: Path, settings) -> Path:
    """The night's scores CSV in scores_dir, from a client run unless it is already there (a run writes beside it
    and renames when the night is done, so an interrupted run is never read as a whole night)."""
    scores = scores_dir / f"{night.name}.csv"
    if not scores.is_file():
        partial = scores.with_suffix(".partial")
        run_batch(settings, night, partial, upload=False, say=lambda _: None)
        partial.replace(scores)
    return scores


def ratio(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def row(name: str, sky: str, summary: dict) -> str:
    """One markdown row of a client summary (`gualta.evaluate.client_summary`)."""
    model = summary["model_alone"]
    false = summary["detections"] - summary["found"]
    return (f"| {name} | {sky} | {summary['meteor_frames']} | {summary['found']} | {ratio(summary['recall'])} "
            f"| {ratio(summary['precision'])} ({false}) | {ratio(summary['faint_recall'])} "
            f"| {ratio(summary['bright_recall'])} | {percent(summary['cloud_fp_rate'])} "
            f"| {summary['fireballs_found']} of {summary['fireballs']} | {ratio(summary['streak_on_meteor'])} "
            f"| {ratio(model['recall'])} / "
            f"{ratio(model['precision'])} / {percent(model['cloud_fp_rate'])} |")


def report(tables: dict[str, pd.DataFrame], threshold: float) -> tuple[str, dict]:
    """The markdown table (a row a night, then all nights) and the summaries behind it."""
    summaries = {name: evaluate.client_summary(table, threshold) for name, table in tables.items()}
    everything = evaluate.client_summary(pd.concat(tables.values(), ignore_index=True), threshold)
    lines = [HEADER] + [row(name, "/".join(sorted(tables[name]["scenario"].dropna().astype(str).unique())), summary)
                        for name, summary in summaries.items()]
    lines.append(row("**all nights**", "", everything))
    false = ", ".join(f"{event} {count}" for event, count in everything["false_by_event"].items()) or "none"
    lines.append(f"\nFalse positives by event: {false}.")
    return "\n".join(lines), {"nights": summaries, "all": everything}


def decision(detection: float, flag) -> str:
    """What the client made of a frame: reported, held back (and why), nothing, or not scored (absent from its
    scores)."""
    if pd.isna(detection):
        return "not scored"
    flag = flag if isinstance(flag, str) else ""
    if detection == 1:
        return "reported" + (f" ({flag})" if flag else "")
    return f"held back ({flag})" if flag else "—"


def changed_decisions(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """The frames of one night (`evaluate.client_predictions` tables) that two clients decided differently: file,
    ground-truth event, before and after (`decision`)."""
    both = before.merge(after, on="file", how="outer", suffixes=("_before", "_after"))
    said = {when: pd.Series([decision(*pair) for pair in zip(both[f"detection_{when}"], both[f"flag_{when}"])],
                            index=both.index) for when in ("before", "after")}
    changed = said["before"] != said["after"]
    event = both["event_after"].combine_first(both["event_before"])
    return pd.DataFrame({"file": both.loc[changed, "file"], "event": event[changed],
                         "before": said["before"][changed], "after": said["after"][changed]})


def comparison(before: dict[str, pd.DataFrame], after: dict[str, pd.DataFrame], threshold: float) -> str:
    """Totals before → after (meteor frames found, precision, false positives) and every frame decided
    differently, as markdown."""
    old = evaluate.client_summary(pd.concat(before.values(), ignore_index=True), threshold)
    new = evaluate.client_summary(pd.concat(after.values(), ignore_index=True), threshold)
    lines = [f"\nBefore → after: meteor frames found {old['found']} of {old['meteor_frames']} → {new['found']} of "
             f"{new['meteor_frames']}, "
             f"precision {ratio(old['precision'])} → {ratio(new['precision'])}, false positives "
             f"{old['detections'] - old['found']} → {new['detections'] - new['found']}, streak on the meteor "
             f"{ratio(old['streak_on_meteor'])} → {ratio(new['streak_on_meteor'])}."]
    rows = [f"| {night} | {change.file} | {change.event} | {change.before} | {change.after} |"
            for night in after for change in changed_decisions(before[night], after[night]).itertuples()]
    if rows:
        lines += ["", "| night | frame | event | before | after |", "|---|---|---|---|---|", *rows]
    else:
        lines.append("Every frame decided the same.")
    return "\n".join(lines)


def before_tables(nights: list[Path], before_dir: Path) -> dict[str, pd.DataFrame]:
    """The other client's tables of the same nights; exits with the reason when one night's CSV is missing."""
    missing = [night.name for night in nights if not (before_dir / f"{night.name}.csv").is_file()]
    if missing:
        sys.exit(f"--before {before_dir}: no scores CSV for {', '.join(missing)}")
    return {night.name: evaluate.client_predictions(before_dir / f"{night.name}.csv", night / GROUND_TRUTH)
            for night in nights}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", nargs="+", required=True, help="night folders, or roots of YYYYMMDD folders")
    parser.add_argument("--scores-dir", type=Path, required=True, help="the client's scores CSVs, one a night")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"model file (default {DEFAULT_MODEL})")
    parser.add_argument("--threshold", type=float, default=evaluate.THRESHOLD, help="operating threshold")
    parser.add_argument("--threads", type=int, default=0, help="model threads (0: one per CPU core)")
    parser.add_argument("--json", type=Path, help="also write the summaries here")
    parser.add_argument("--before", type=Path, help="another client's scores CSVs of the same nights, to compare")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    nights = labelled_nights(args.nights)
    names = [night.name for night in nights]
    if len(set(names)) < len(names):        # one scores CSV and one table row a name: refuse to mix two nights
        twice = sorted({name for name in names if names.count(name) > 1})
        parser.error(f"nights of the same name under different roots: {', '.join(twice)} (score them apart)")
    args.scores_dir.mkdir(parents=True, exist_ok=True)
    settings = load_settings(env={}, overrides={"model": args.model, "threshold": args.threshold,
                                                "threads": args.threads})
    before = before_tables(nights, args.before) if args.before else None
    tables = {night.name: evaluate.client_predictions(scores_of(night, args.scores_dir, settings),
                                                      night / GROUND_TRUTH) for night in nights}
    text, summaries = report(tables, args.threshold)
    print(text)
    if before is not None:
        print(comparison(before, tables, args.threshold))
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
