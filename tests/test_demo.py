"""`make demo` end to end on a short night: simulate → embedded service → batch with uploads → daily page."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from gualta.demo import fresh_output, run_demo
from helpers_service import REPO


def test_demo_runs_the_product_end_to_end_and_is_idempotent(tmp_path, tiny_model, capsys):
    out = tmp_path / "demo"
    summary = run_demo(out, frames=14, seed=7, workers=1, model=tiny_model)
    printed = capsys.readouterr().out

    night = summary["night"]
    assert night.frames == 14 and night.scored == 13 and night.pending == 0   # everything delivered
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 14 and int(scores["detection"].fillna(0).sum()) == night.detections
    stored = sorted((out / "store" / "detections" / "20211110").glob("demo01_*.json"))
    assert len(stored) == night.detections                                    # one record per reported detection
    for record in stored:
        assert json.loads(record.read_text())["obs_id"] == "demo01"
    page = (out / "store" / "20211110.html").read_text()
    assert "demo01" in page and summary["page"] == out / "store" / "20211110.html"

    truth = summary["truth"]
    assert truth["meteor_frames"] == int((pd.read_csv(out / "images" / "20211110" / "ground_truth.csv")["label"]
                                          == "meteor").sum())
    for share in ("recall", "precision"):                         # None: nothing to count (a night without meteors)
        assert truth[share] is None or 0 <= truth[share] <= 1
    assert (truth["recall"] is None) == (truth["meteor_frames"] == 0)
    for line in ("frames", "detections", "speed", "truth", "daily page"):
        assert line in printed

    (out / "stale").mkdir()                                                    # left in the demo's folder
    again = run_demo(out, frames=14, seed=7, workers=1, model=tiny_model)       # same night, fresh store
    assert again["night"].detections == night.detections and not (out / "stale").exists()


def test_the_demo_replaces_only_its_own_output_folder(tmp_path):
    """`--out .` (or ~, or a night archive) was deleted whole, and the run then crashed in the vanished folder."""
    mine, demo_folder = tmp_path / "notes", tmp_path / "demo"
    (mine / "allsky_images").mkdir(parents=True)
    (mine / "thesis_notes.txt").write_text("mine")
    fresh_output(demo_folder)
    cases = {(".", mine): "is not an earlier demo's output (it holds allsky_images, thesis_notes.txt)",
             (str(mine), tmp_path): "is not an earlier demo's output",
             (str(mine / "thesis_notes.txt"), tmp_path): "is a file",
             (".", demo_folder): "holds the current folder"}
    for (out, cwd), reason in cases.items():
        result = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "demo", "--out", out, "--frames", "3"],
                                cwd=cwd, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and result.stderr.startswith("guAlta demo: --out "), result.stderr
        assert reason in result.stderr and "Traceback" not in result.stderr
    assert (mine / "thesis_notes.txt").read_text() == "mine" and (mine / "allsky_images").is_dir()
    assert (demo_folder / ".gualta-demo").is_file()

    elsewhere = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "demo", "--out", "mine", "--frames", "3"],
                               cwd=mine, capture_output=True, text=True, timeout=300)   # the shipped model, by default
    assert elsewhere.returncode == 0 and "frames       3" in elsewhere.stdout, elsewhere.stderr

    earlier = tmp_path / "earlier"                   # a demo's output from before the mark: still replaced
    (earlier / "store").mkdir(parents=True)
    for name in ("scores.csv", "outbox.sqlite", "outbox.sqlite-wal"):
        (earlier / name).write_text("")
    fresh_output(earlier)
    assert [entry.name for entry in earlier.iterdir()] == [".gualta-demo"]


def test_a_negative_seed_is_refused_before_the_earlier_output_is_emptied(tmp_path):
    """`demo --seed -1` emptied the earlier demo's output, then stopped with a numpy traceback."""
    earlier = tmp_path / "demo"
    fresh_output(earlier)
    (earlier / "scores.csv").write_text("file,score\n")
    result = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "demo", "--out", str(earlier), "--seed", "-1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "argument --seed: must be 0 or more: -1" in result.stderr, result.stderr
    assert (earlier / "scores.csv").is_file()


def test_the_comparison_with_truth_counts_meteors_fireballs_and_false_detections(tmp_path):
    from gualta.demo import compare_with_truth
    from gualta.detect import BELOW_THRESHOLD_NOTE, STREAK_NOTE

    pd.DataFrame({"file": ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"], "detection": [0, 1, 1, 1, 0],
                  "note": ["", STREAK_NOTE + BELOW_THRESHOLD_NOTE, "", STREAK_NOTE, ""]}).to_csv(
        tmp_path / "scores.csv", index=False)
    pd.DataFrame({"file": ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"],
                  "label": ["no-meteor", "meteor", "meteor", "no-meteor", "meteor"],
                  "event": ["none", "meteor", "fireball", "satellite", "fireball"]}).to_csv(
        tmp_path / "truth.csv", index=False)
    truth = compare_with_truth(tmp_path / "scores.csv", tmp_path / "truth.csv")
    assert (truth["meteor_frames"], truth["detections"], truth["found"]) == (3, 3, 2)
    assert (truth["fireballs"], truth["fireballs_found"]) == (2, 1)
    assert truth["found_by_streak_check"] == 1                  # d.jpg was a satellite
    assert truth["false_by_event"] == {"satellite": 1}
    assert abs(truth["recall"] - 2 / 3) < 1e-9 and abs(truth["precision"] - 2 / 3) < 1e-9
    pd.DataFrame({"file": ["a.jpg", "b.jpg"], "detection": [0, 0], "note": ["", ""]}).to_csv(
        tmp_path / "quiet.csv", index=False)                      # nothing reported: no precision, not 0.00
    truth = compare_with_truth(tmp_path / "quiet.csv", tmp_path / "truth.csv")
    assert (truth["detections"], truth["recall"], truth["precision"]) == (0, 0.0, None)
