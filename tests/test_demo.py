"""`make demo` end to end on a short night: simulate → embedded service → batch with uploads → daily page."""
from __future__ import annotations

import json

import pandas as pd

from gualta.demo import run_demo


def test_demo_runs_the_product_end_to_end_and_is_idempotent(tmp_path, tiny_model, capsys):
    out = tmp_path / "demo"
    (out / "stale").mkdir(parents=True)                                        # a previous run's leftovers
    summary = run_demo(out, frames=14, seed=7, workers=1, model=tiny_model)
    printed = capsys.readouterr().out
    assert not (out / "stale").exists()

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
    assert 0 <= truth["recall"] <= 1 and 0 <= truth["precision"] <= 1
    for line in ("frames", "detections", "speed", "truth", "daily page"):
        assert line in printed

    again = run_demo(out, frames=14, seed=7, workers=1, model=tiny_model)       # same night, fresh store
    assert again["night"].detections == night.detections


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
