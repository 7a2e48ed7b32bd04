"""The test-night report computed on a hand-made predictions table whose every figure is counted by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from gualta import evaluate as ev

# 10 meteor frames: (p_meteor, event, peak_snr). At 0.85: 7 detected (0.85 itself counts), 3 missed.
METEORS = [(0.99, "meteor", 40), (0.95, "meteor", 12), (0.90, "fireball", 80), (0.86, "meteor", 6),
           (0.85, "meteor", 4.5), (0.80, "meteor", 4), (0.60, "meteor", 2.5), (0.97, "meteor", 3.2),
           (0.88, "meteor", 7), (0.20, "meteor", 1.8)]
# 10 no-meteor frames: (p_meteor, event, clouds, night). At 0.85: 3 false positives.
OTHERS = [(0.92, "none", 0.5, "A"), (0.30, "none", 0.6, "A"), (0.10, "none", 0.25, "A"),
          (0.87, "satellite", 0.0, "B"), (0.40, "satellite", 0.0, "B"), (0.05, "plane", 0.1, "B"),
          (0.90, "insect", 0.0, "B"), (0.01, "none", 0.0, "A"), (0.02, "none", 0.1, "A"), (0.50, "none", 0.19, "A")]


@pytest.fixture
def pred() -> pd.DataFrame:
    rows = [{"fn": f"m{i}.png", "night": "A", "meteor": 1, "p_meteor": p, "event": event, "peak_snr": snr,
             "clouds": 0.0} for i, (p, event, snr) in enumerate(METEORS)]
    rows += [{"fn": f"n{i}.png", "night": night, "meteor": 0, "p_meteor": p, "event": event, "peak_snr": np.nan,
              "clouds": clouds} for i, (p, event, clouds, night) in enumerate(OTHERS)]
    return pd.DataFrame(rows)


def test_counts_recall_precision(pred):
    assert ev.confusion_counts(pred) == {"tp": 7, "fp": 3, "fn": 3, "tn": 7}
    assert ev.meteor_recall(pred) == pytest.approx(0.7)
    assert ev.precision(pred) == pytest.approx(0.7)
    assert ev.meteor_recall(pred, 0.95) == pytest.approx(0.3)
    assert ev.precision(pred, 0.999) is None                       # no detections at all


def test_misses_are_counted_apart_from_false_alarms(pred):
    """At 0.85 the fixture has 3 misses and 3 false alarms, so the confusion matrix could count one for the other
    unseen: at 0.95 three meteors are found, seven missed and no other frame is detected."""
    assert ev.confusion_counts(pred, 0.95) == {"tp": 3, "fp": 0, "fn": 7, "tn": 10}


def test_faint_and_brightness_bins(pred):
    assert ev.faint_recall(pred) == pytest.approx(2 / 5)           # snr 4.5 and 3.2 found; 4, 2.5, 1.8 missed
    by_bin = {row["bin"]: (row["n"], row["recall"]) for row in ev.recall_by_snr(pred)}
    assert by_bin == {"<3": (2, 0.0), "3-5": (3, pytest.approx(2 / 3)), "5-10": (2, 1.0), "10-30": (1, 1.0),
                      ">=30": (2, 1.0)}


def test_a_meteor_on_a_bin_edge_falls_in_the_bin_from_it():
    """Brightness bins are [low, high): a meteor at peak_snr 3 counted among "<3", and one at 0 in none."""
    edges = pd.DataFrame([{"fn": f"m{i}.png", "night": "A", "meteor": 1, "p_meteor": 0.9, "event": "meteor",
                           "peak_snr": snr, "clouds": 0.0} for i, snr in enumerate((0, 3, 5, 10, 30))])
    assert [(row["bin"], row["n"]) for row in ev.recall_by_snr(edges)] == [(label, 1) for label in ev.SNR_LABELS]


def test_false_positive_rates(pred):
    assert ev.cloud_fp_rate(pred) == pytest.approx(1 / 3)          # clouds 0.5 (FP), 0.6, 0.25; 0.19 is not cloudy
    assert ev.lookalike_fp_rates(pred) == {"satellite": 0.5, "plane": 0.0, "insect": 1.0, "all": 0.5}
    assert ev.fp_rate_by_night(pred) == {"A": pytest.approx(1 / 6), "B": pytest.approx(2 / 4)}


def test_faint_and_cloudy_boundaries(pred):
    """A meteor exactly at FAINT_SNR is not faint (faint is below it); a no-meteor frame exactly at CLOUDY cover is
    cloudy (cloudy is from it on)."""
    edge = pd.DataFrame([{"fn": "m10.png", "night": "A", "meteor": 1, "p_meteor": 0.1, "event": "meteor",
                          "peak_snr": ev.FAINT_SNR, "clouds": 0.0},
                         {"fn": "n10.png", "night": "A", "meteor": 0, "p_meteor": 0.9, "event": "none",
                          "peak_snr": np.nan, "clouds": ev.CLOUDY}])
    both = pd.concat([pred, edge], ignore_index=True)
    assert ev.faint_recall(both) == pytest.approx(2 / 5)           # the missed 5.0 is not among the faint
    assert ev.cloud_fp_rate(both) == pytest.approx(2 / 4)          # the detected 0.2 is among the cloudy
    summary = ev.summarize(both)
    assert summary["n_faint"] == 5 and summary["n_cloudy_no_meteor"] == 4


def test_a_meteor_without_brightness_leaves_the_faint_count_known(pred):
    """One meteor without a peak_snr (say, hand-added) made the whole test set's faint count n/a."""
    pred.loc[pred["fn"] == "m0.png", "peak_snr"] = np.nan
    assert ev.summarize(pred)["n_faint"] == 5


def test_rates_by_event(pred):
    events = ev.rates_by_event(pred)
    assert events["meteor"] == {"n": 9, "n_meteor": 9, "detected": pytest.approx(6 / 9)}
    assert events["fireball"] == {"n": 1, "n_meteor": 1, "detected": 1.0}
    assert events["none"] == {"n": 6, "n_meteor": 0, "detected": pytest.approx(1 / 6)}
    assert events["satellite"]["detected"] == 0.5 and events["insect"]["detected"] == 1.0


def test_threshold_reaching_recall(pred):
    assert ev.threshold_for_recall(pred, 0.98) == 0.20             # 10 meteors: all needed, the lowest is 0.20
    assert ev.threshold_for_recall(pred, 0.7) == 0.85              # 7 needed: the 7th highest
    assert ev.threshold_for_recall(pred, 0.8) == 0.80
    for target in (0.7, 0.8, 0.98):                                # and it is the highest such threshold
        found = ev.threshold_for_recall(pred, target)
        assert ev.meteor_recall(pred, found) >= target
        assert ev.meteor_recall(pred, np.nextafter(found, 1)) < target
    assert ev.threshold_for_recall(pred[pred["meteor"] == 0]) is None


def test_frames_without_a_score_are_never_detected_nor_ranked(pred, caplog):
    """A NaN score sorted to the top: the threshold 'reaching' recall 0.98 was one that reaches less; and the AUCs
    stopped the report with sklearn's 'Input contains NaN' (no metrics.json)."""
    broken = pred.copy()
    broken.loc[broken["fn"] == "m0.png", "p_meteor"] = np.nan
    assert ev.threshold_for_recall(broken, 0.98) is None                 # 9 of 10 at most: 0.9
    assert ev.threshold_for_recall(broken, 0.9) == 0.20
    assert ev.ranking_scores(broken) == ev.ranking_scores(pred.drop(index=0))       # the AUCs of the scored ones
    assert "1 frames have no score (NaN), m0.png first" in caplog.text
    json.dumps(ev.summarize(broken))                                                  # metrics.json is written


def test_classification_report_and_auc(pred):
    report = ev.classification_report(pred)
    assert report["meteor"]["precision"] == pytest.approx(0.7) and report["meteor"]["recall"] == pytest.approx(0.7)
    assert report["no-meteor"]["recall"] == pytest.approx(0.7) and report["no-meteor"]["support"] == 10
    pairs = [(m, o) for m in pred.loc[pred.meteor == 1, "p_meteor"] for o in pred.loc[pred.meteor == 0, "p_meteor"]]
    expected_auc = sum(1.0 if m > o else 0.5 if m == o else 0.0 for m, o in pairs) / len(pairs)
    assert ev.ranking_scores(pred)["roc_auc"] == pytest.approx(expected_auc)
    assert ev.ranking_scores(pred[pred.meteor == 1]) == {"roc_auc": None, "pr_auc": None}


def test_summary_is_json_ready(pred):
    summary = ev.summarize(pred)
    json.dumps(summary)
    assert summary["n_test"] == 20 and summary["n_meteor"] == 10 and summary["n_faint"] == 5
    assert summary["n_cloudy_no_meteor"] == 3 and summary["test_nights"] == ["A", "B"]
    assert summary["threshold_for_recall"] == {"target": 0.98, "threshold": 0.20, "precision": pytest.approx(10 / 16)}
    headline = ev.metrics_summary(summary)
    assert headline["meteor_recall"] == pytest.approx(0.7) and headline["lookalike_fp_rate"] == 0.5
    assert headline["threshold_for_recall_0.98"] == 0.20


def test_recall_and_precision_are_reported_under_their_own_names(pred):
    """At 0.85 the fixture's recall and precision are both 0.7, so the report could give each under the other's
    name unseen: at 0.9 four of ten meteors are found among six detections."""
    summary = ev.summarize(pred, 0.9)
    assert summary["meteor_recall"] == pytest.approx(0.4) and summary["precision"] == pytest.approx(4 / 6)
    headline = ev.metrics_summary(summary)
    assert headline["meteor_recall"] == pytest.approx(0.4) and headline["precision"] == pytest.approx(4 / 6)
    printed = ev.format_summary(summary).splitlines()
    assert "  meteor_recall: 0.4000" in printed and "  precision: 0.6667" in printed


def test_hand_labelled_test_set_reports_unknowns_as_unknown(pred):
    """On hand labels (no event type, peak_snr or clouds) the report showed event "none" with meteors in it and 0
    faint meteors and 0 cloudy frames, as if measured."""
    hand = pred.assign(event=np.nan, peak_snr=np.nan, clouds=np.nan)
    summary = ev.summarize(hand)
    assert summary["recall_by_event"] == {"unlabelled": {"n": 20, "n_meteor": 10, "detected": 0.5}}
    assert summary["n_faint"] is None and summary["n_cloudy_no_meteor"] is None
    assert summary["faint_recall"] is None and summary["cloud_fp_rate"] is None
    json.dumps(summary)


def test_zero_meteor_summary_prints_the_false_positives(pred):
    """A test set of no-meteor nights printed recall and precision n/a and nothing of its false positives."""
    printed = ev.format_summary(ev.summarize(pred[pred["meteor"] == 0]))
    assert "no_meteor_fp_rate: 0.3000 (no meteors in the test set; by night: A 0.1667, B 0.5000)" in printed
    assert "no_meteor_fp_rate" not in ev.format_summary(ev.summarize(pred))


def test_top_losses_order(pred):
    worst = ev.top_losses(pred, 4)
    assert list(worst["p_meteor"]) == [0.92, 0.90, 0.87, 0.20]     # three confident false alarms, then a miss
    assert worst["loss"].iloc[0] == pytest.approx(-math.log(0.08))


def test_cam_sample_groups(pred):
    pred = pred.assign(clouds=np.where(pred["fn"] == "n3.png", 0.4, pred["clouds"]))
    sample = ev.cam_sample(pred, per_group=2)
    assert sample.groupby("group").size().to_dict() == {"cloud": 2, "meteor": 2, "satellite": 2}
    assert list(sample.loc[sample.group == "cloud", "p_meteor"]) == [0.92, 0.87]   # highest-scored first
    assert (sample.loc[sample.group == "meteor", "meteor"] == 1).all()


def test_fusion_report(pred):
    raw = pred[["fn"]].assign(p_meteor=0.05)
    raw.loc[pred["meteor"] == 1, "p_meteor"] = 0.99
    raw.loc[pred["event"] == "fireball", "p_meteor"] = 0.3
    raw.loc[pred["fn"] == "n3.png", "p_meteor"] = 0.95           # the detected satellite looks real to both
    raw.loc[pred["fn"] == "n0.png", "p_meteor"] = 0.1            # the cloud false positive doesn't
    raw.loc[pred["fn"] == "n6.png", "p_meteor"] = 0.2            # nor the insect
    report = ev.fusion_report(pred, raw.sample(frac=1.0, random_state=1))   # row order must not matter
    assert report.loc["diff", "meteor_recall"] == pytest.approx(0.7)
    assert report.loc["raw", "meteor_recall"] == pytest.approx(0.9)
    assert report.loc["raw", "precision"] == pytest.approx(0.9)
    assert report.loc["gated", "meteor_recall"] == pytest.approx(0.6)          # the fireball is gated out
    assert report.loc["gated", "precision"] == pytest.approx(6 / 7)
    assert report.loc["gated", "cloud_fp_rate"] == 0.0 and report.loc["diff", "cloud_fp_rate"] == pytest.approx(1 / 3)
    assert report.loc["product", "meteor_recall"] == pytest.approx(0.5)        # 0.85 × 0.99 falls below 0.85
    assert report.loc["product", "precision"] == 1.0
    both = pred.merge(raw, on="fn", suffixes=("", "_raw"))
    mean = pred.assign(p_meteor=((both["p_meteor"] + both["p_meteor_raw"]) / 2).to_numpy())   # the mean, by hand
    assert report.loc["mean", "meteor_recall"] == pytest.approx(ev.meteor_recall(mean, ev.THRESHOLD)) == 0.7
    assert report.loc["mean", "precision"] == pytest.approx(ev.precision(mean, ev.THRESHOLD))
    assert set(report.index) == set(ev.FUSION_RULES)


def test_fusion_gate_lets_a_raw_score_at_the_gate_through(pred):
    """The gated rule keeps the difference score where the raw model's is ≥ the gate: exactly at it counts."""
    raw = pred[["fn"]].assign(p_meteor=0.5)
    diff = pred.assign(p_meteor=0.9)
    assert set(ev.fusion_scores(diff, raw, gate=0.5)["gated"]) == {0.9}
    assert set(ev.fusion_scores(diff, raw.assign(p_meteor=0.49), gate=0.5)["gated"]) == {0.0}


def test_confusion_matrix_figure_puts_the_truth_first(pred, tmp_path, monkeypatch):
    """confusion_matrix.png drawn with predictions as the truth swaps its misses and false alarms."""
    from sklearn.metrics import ConfusionMatrixDisplay

    drawn = []
    monkeypatch.setattr(ConfusionMatrixDisplay, "from_predictions",
                        lambda y_true, y_pred, **options: drawn.append((list(y_true), list(y_pred))))
    ev.plot_confusion(pred, tmp_path / "confusion_matrix.png", 0.95)
    assert drawn == [(list(ev.true_labels(pred)), list(ev.predicted_labels(pred, 0.95)))]
    assert drawn[0][0] != drawn[0][1]


def test_plot_grid_with_a_part_row_writes_it(tmp_path):
    """5 images in 4 columns need a second row: the grid must not run out of places."""
    images = [np.full((20, 20), 40 * i, np.uint8) for i in range(5)]
    ev.plot_grid(images, [str(i) for i in range(5)], tmp_path / "grid.png", columns=4)
    assert (tmp_path / "grid.png").stat().st_size > 0


# --- the client against ground truth: a hand-made scores CSV and ground_truth.csv --------------------------------
# (file, model score, reported, truth label, event, peak_snr, clouds); the first frame is skipped by the client.
CLIENT_ROWS = [("f00", None, 0, "no-meteor", "none", None, 0.0),
               ("f01", 0.95, 1, "meteor", "meteor", 12.0, 0.0),      # found, bright
               ("f02", 0.40, 1, "meteor", "meteor", 3.0, 0.0),       # found by a check, faint
               ("f03", 0.90, 0, "meteor", "meteor", 8.0, 0.3),       # flagged by a check: missed, bright
               ("f04", 0.30, 0, "meteor", "meteor", 2.0, 0.0),       # missed, faint
               ("f05", 0.70, 1, "meteor", "fireball", 60.0, 0.0),    # found fireball
               ("f06", 0.92, 1, "no-meteor", "satellite", 9.0, 0.0), # false positive
               ("f07", 0.88, 0, "no-meteor", "none", None, 0.5),     # cloudy, held back
               ("f08", 0.10, 1, "no-meteor", "none", None, 0.4),     # cloudy false positive
               ("f09", 0.05, 0, "no-meteor", "none", None, 0.6),
               ("f10", 0.02, 0, "no-meteor", "fireball", None, 0.9)] # a fireball behind clouds: no meteor


TRUE_STREAK = (100, 100, 300, 200)                     # every meteor's, in the ground truth
REPORTED_STREAKS = {"f01": (140, 122, 260, 178),        # a piece of the meteor (ends within a few pixels)
                    "f02": (100, 140, 300, 240)}        # a parallel streak 40 px off: not the meteor; f05 has none


def write_client_night(folder):
    folder.mkdir(parents=True)
    pd.DataFrame([{"file": f, "score": s, "label": "meteor" if s is not None and s >= 0.85 else "no-meteor",
                   "detection": d, "flag": "skipped" if s is None else "", "note": "",
                   **dict(zip(ev.STREAK_ENDS, REPORTED_STREAKS.get(f, [None] * 4)))}
                  for f, s, d, *_ in CLIENT_ROWS]).to_csv(folder / "scores.csv", index=False)
    pd.DataFrame([{"file": f, "label": label, "event": event, "peak_snr": snr, "clouds": clouds, "scenario": "mixed",
                   **dict(zip(ev.STREAK_ENDS, TRUE_STREAK if label == "meteor" else [None] * 4))}
                  for f, _, _, label, event, snr, clouds in CLIENT_ROWS]).to_csv(folder / "ground_truth.csv",
                                                                                  index=False)
    return folder / "scores.csv", folder / "ground_truth.csv"


def test_client_predictions_join_scores_and_truth(tmp_path):
    pred = ev.client_predictions(*write_client_night(tmp_path / "20211110"))
    assert len(pred) == 10 and "f00" not in set(pred["file"])         # the skipped first frame is left out
    assert set(pred["night"]) == {"20211110"}
    assert pred.set_index("file")["meteor"].to_dict() == {f: int(label == "meteor")
                                                          for f, _, _, label, *_ in CLIENT_ROWS[1:]}
    assert pred.set_index("file").loc["f03", "p_meteor"] == 0.0         # reported, not scored, is what counts


def test_streak_on_meteor_by_geometry():
    rows = [(0, 0, 100, 0, True),          # the whole streak
            (30, 25, 70, -25, False),      # across it
            (20, 5, 60, -5, True),         # a piece, off by 5 px
            (-15, 0, 100, 0, True),        # a little past its start
            (-60, 0, 100, 0, False),       # a longer line
            (0, 30, 100, 30, False),       # parallel, 30 px away
            (None, None, None, None, False)]
    pred = pd.DataFrame([dict(zip(ev.STREAK_ENDS + ev.TRUE_ENDS, (*ends, 0, 0, 100, 0))) for *ends, _ in rows])
    assert ev.streak_on_meteor(pred).tolist() == [on for *_, on in rows]
    assert ev.streak_on_meteor(pred, tolerance=35).tolist()[5]


def test_client_predictions_read_a_csv_without_streaks(tmp_path):
    scores, truth = write_client_night(tmp_path / "20211110")
    pd.read_csv(scores).drop(columns=ev.STREAK_ENDS).to_csv(scores, index=False)      # an older client's CSV
    summary = ev.client_summary(ev.client_predictions(scores, truth))
    assert summary["found"] == 3 and summary["streak_on_meteor"] is None           # unknown, not "all wrong"


def test_client_summary_counts_by_hand(tmp_path):
    summary = ev.client_summary(ev.client_predictions(*write_client_night(tmp_path / "20211110")))
    assert (summary["meteor_frames"], summary["found"], summary["detections"]) == (5, 3, 5)
    assert summary["recall"] == pytest.approx(3 / 5) and summary["precision"] == pytest.approx(3 / 5)
    assert summary["faint_recall"] == pytest.approx(1 / 2) and summary["n_faint"] == 2
    assert summary["bright_recall"] == pytest.approx(2 / 3)
    assert summary["cloud_fp_rate"] == pytest.approx(1 / 4) and summary["n_cloudy_no_meteor"] == 4
    assert (summary["fireballs"], summary["fireballs_found"]) == (1, 1)  # the hidden one is not a meteor frame
    assert summary["false_by_event"] == {"satellite": 1, "none": 1}
    assert summary["streak_on_meteor"] == pytest.approx(1 / 3)    # of f01, f02, f05: f01's is on the meteor
    model = summary["model_alone"]                         # scores ≥ 0.85: f01 and f03 (meteors), f06, f07 (cloudy)
    assert model["recall"] == pytest.approx(2 / 5) and model["precision"] == pytest.approx(2 / 4)
    assert model["cloud_fp_rate"] == pytest.approx(1 / 4)
    json.dumps(summary)


def test_a_found_meteor_at_the_faint_limit_counts_bright():
    """A meteor exactly at FAINT_SNR is not faint (faint is below it), so it counts in the bright recall."""
    pred = pd.DataFrame([{"file": "f01", "score": 0.9, "detection": 1, "p_meteor": 1.0, "meteor": 1, "truth": "meteor",
                          "event": "meteor", "peak_snr": ev.FAINT_SNR, "clouds": 0.0, "night": "20211110",
                          **dict.fromkeys(ev.STREAK_ENDS + ev.TRUE_ENDS, np.nan)}])
    summary = ev.client_summary(pred)
    assert summary["bright_recall"] == 1.0 and summary["n_faint"] == 0


def test_client_summary_on_hand_labels_says_what_it_does_not_know(tmp_path):
    """A night labelled by hand (file,label only): its false positives were dropped from the count by event ("none"
    said with precision 0.6) and every meteor counted faint."""
    scores, truth = write_client_night(tmp_path / "20211110")
    pd.read_csv(truth)[["file", "label"]].to_csv(truth, index=False)
    summary = ev.client_summary(ev.client_predictions(scores, truth))
    assert summary["false_by_event"] == {"unlabelled": 2} and summary["precision"] == pytest.approx(3 / 5)
    assert summary["n_faint"] is None and summary["faint_recall"] is None
    json.dumps(summary)
