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
