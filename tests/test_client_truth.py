"""bench/client_truth.py: a night run once by the client's own code, then read back from its scores CSV."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def run_bench(night: Path, scores_dir: Path, model: Path, out: Path, *more: str) -> tuple[str, dict]:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "client_truth.py"), "--nights", str(night),
                           "--scores-dir", str(scores_dir), "--model", str(model), "--threads", "1",
                           "--json", str(out), *more], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(out.read_text())


def test_runs_the_client_once_then_reads_its_scores(client_night, tiny_model, tmp_path):
    scores_dir = tmp_path / "scores"
    text, summary = run_bench(client_night, scores_dir, tiny_model, tmp_path / "first.json")
    scores = pd.read_csv(scores_dir / f"{client_night.name}.csv")
    truth = pd.read_csv(client_night / "ground_truth.csv")
    table = scores[scores["score"].notna()].merge(truth[["file", "label"]], on="file")
    meteor, reported = table["label_y"].eq("meteor"), table["detection"].eq(1)
    everything = summary["all"]
    assert len(table) == len(truth) - 1                              # every frame but the first was scored
    assert everything["meteor_frames"] == int(meteor.sum()) > 0
    assert everything["found"] == int((meteor & reported).sum()) > 0
    assert everything["detections"] == int(reported.sum())
    assert summary["nights"][client_night.name]["found"] == everything["found"]
    assert f"| {client_night.name} | clear | {int(meteor.sum())} | {everything['found']} |" in text

    scores.assign(detection=0).to_csv(scores_dir / f"{client_night.name}.csv", index=False)
    _, again = run_bench(client_night, scores_dir, tiny_model, tmp_path / "again.json")
    assert again["all"]["found"] == 0 and again["all"]["detections"] == 0   # read back, not run again
    assert again["all"]["meteor_frames"] == everything["meteor_frames"]


def test_says_so_without_labelled_nights(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "client_truth.py"), "--nights", str(tmp_path),
                           "--scores-dir", str(tmp_path / "scores")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "no night folders with ground_truth.csv" in done.stderr


def test_refuses_two_nights_of_one_name(client_night, tmp_path):
    """One scores CSV and one table row a night name: two roots holding the same night would be mixed."""
    for root in ("a", "b"):
        shutil.copytree(client_night, tmp_path / root / client_night.name)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "client_truth.py"), "--nights", str(tmp_path / "a"),
                           str(tmp_path / "b"), "--scores-dir", str(tmp_path / "scores")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and f"nights of the same name under different roots: {client_night.name}" \
        in done.stderr
    assert not (tmp_path / "scores").exists()


def test_an_interrupted_run_is_not_read_as_a_night(client_night, tiny_model, tmp_path):
    scores_dir = tmp_path / "scores"
    scores_dir.mkdir()
    (scores_dir / f"{client_night.name}.partial").write_text("file,score\nimage-x.jpg,0.5\n")   # a run cut short
    _, summary = run_bench(client_night, scores_dir, tiny_model, tmp_path / "s.json")
    assert summary["all"]["scored"] == len(pd.read_csv(client_night / "ground_truth.csv")) - 1
    assert not (scores_dir / f"{client_night.name}.partial").exists()


def test_compares_with_another_client_s_scores_frame_by_frame(client_night, tiny_model, tmp_path):
    scores_dir, before_dir = tmp_path / "scores", tmp_path / "before"
    text, summary = run_bench(client_night, scores_dir, tiny_model, tmp_path / "s.json")
    scores = pd.read_csv(scores_dir / f"{client_night.name}.csv", dtype={"flag": str})
    truth = pd.read_csv(client_night / "ground_truth.csv").set_index("file")
    scored = scores[scores["score"].notna()]
    reported_meteor = scored[scored["detection"].eq(1) & scored["file"].map(truth["label"]).eq("meteor")].iloc[0]
    quiet_other = scored[scored["detection"].eq(0) & scored["flag"].isna()
                         & scored["file"].map(truth["label"]).eq("no-meteor")].iloc[0]
    before = scores.copy()
    before.loc[before["file"] == reported_meteor["file"], ["detection", "flag"]] = [0, "satellite"]
    before.loc[before["file"] == quiet_other["file"], ["detection", "flag"]] = [1, ""]
    skipped_meteor = scored[scored["file"].map(truth["label"]).eq("meteor")
                            & scored["file"].ne(reported_meteor["file"])].iloc[-1]     # scored by this client only
    before.loc[before["file"] == skipped_meteor["file"], ["score", "detection", "flag"]] = [None, 0, "skipped"]
    before[["x1", "y1", "x2", "y2"]] = None                                 # a client that gave no streaks
    before_dir.mkdir()
    before.to_csv(before_dir / f"{client_night.name}.csv", index=False)

    compared, _ = run_bench(client_night, scores_dir, tiny_model, tmp_path / "c.json", "--before", str(before_dir))
    found, false = summary["all"]["found"], summary["all"]["detections"] - summary["all"]["found"]
    found_before = found - 1 - int(skipped_meteor["detection"] == 1)
    assert (f"meteor frames found {found_before} of {summary['all']['meteor_frames'] - 1} → {found} of "
            f"{summary['all']['meteor_frames']}" in compared
            and f"false positives {false + 1} → {false}, " in compared)
    on_meteor = summary["all"]["streak_on_meteor"]
    assert f"streak on the meteor — → {'—' if on_meteor is None else f'{on_meteor:.3f}'}." in compared
    assert (f"| {client_night.name} | {reported_meteor['file']} | {truth.loc[reported_meteor['file'], 'event']} "
            f"| held back (satellite) | reported |") in compared
    assert (f"| {client_night.name} | {quiet_other['file']} | {truth.loc[quiet_other['file'], 'event']} "
            f"| reported | — |") in compared
    assert (f"| {client_night.name} | {skipped_meteor['file']} | {truth.loc[skipped_meteor['file'], 'event']} "
            f"| not scored | ") in compared
    assert compared.count(f"| {client_night.name} | image-") == 3                 # no other frame changed
    same, _ = run_bench(client_night, scores_dir, tiny_model, tmp_path / "d.json", "--before", str(scores_dir))
    assert "Every frame decided the same." in same


def test_says_which_nights_the_other_client_lacks(client_night, tiny_model, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "client_truth.py"), "--nights", str(client_night),
                           "--scores-dir", str(tmp_path / "scores"), "--model", str(tiny_model),
                           "--before", str(tmp_path / "nothing")], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and f"no scores CSV for {client_night.name}" in done.stderr


def test_reads_a_night_labelled_by_hand(client_night, tiny_model, tmp_path):
    """A night whose ground truth is a hand-made file,label table (no sky, event or brightness) stopped the report
    with a TypeError on its unknown sky."""
    night = tmp_path / "hand" / client_night.name
    shutil.copytree(client_night, night)
    pd.read_csv(night / "ground_truth.csv")[["file", "label"]].to_csv(night / "ground_truth.csv", index=False)
    text, summary = run_bench(night, tmp_path / "scores", tiny_model, tmp_path / "s.json")
    assert f"| {client_night.name} |  | {summary['all']['meteor_frames']} | {summary['all']['found']} |" in text
    false = summary["all"]["detections"] - summary["all"]["found"]
    assert summary["all"]["false_by_event"] == ({"unlabelled": false} if false else {})
    assert summary["all"]["n_faint"] is None
