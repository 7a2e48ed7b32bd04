"""The training recipe: row selection and balancing by hand, the meteor-recall metric, and the recipe end to end on
a tiny simulated dataset (every report artefact), the CLI, and the raw-frame model with score fusion."""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gualta import cli, train
from gualta.train import TrainError, class_weights, training_rows
from conftest import TINY_SIZE

ARTEFACTS = ("model.pkl", "model.onnx", "config.json", "history.csv", "losses.csv", "predictions.csv",
             "metrics.json", "confusion_matrix.png", "loss_curves.png", "top_losses.png", "top_losses.csv", "cam.png")
METRIC_KEYS = {"threshold", "n_test", "n_meteor", "test_nights", "meteor_recall", "precision", "faint_recall",
               "cloud_fp_rate", "lookalike_fp_rate", "fp_rate_by_night", "confusion", "classification_report",
               "recall_by_event", "recall_by_snr", "threshold_for_recall", "roc_auc", "pr_auc", "model", "artefacts"}


def hand_index(meteors: int = 4, others: int = 16, test: int = 6) -> pd.DataFrame:
    rows = [{"fn": f"training_set/meteor/{i}.png", "dataset": "train", "meteor": 1} for i in range(meteors)]
    rows += [{"fn": f"training_set/no-meteor/{i}.png", "dataset": "train", "meteor": 0} for i in range(others)]
    rows += [{"fn": f"test_set/no-meteor/{i}.png", "dataset": "test", "meteor": i % 2} for i in range(test)]
    return pd.DataFrame(rows)


# --- rows, balancing, split -------------------------------------------------------------------------------------

def test_downsample_keeps_every_meteor_and_as_many_others():
    rows = training_rows(hand_index(), "downsample", valid_pct=0.25, seed=3)
    assert rows["label"].value_counts().to_dict() == {"meteor": 4, "no-meteor": 4}
    assert rows["fn"].str.startswith("training_set/").all()                     # never a test night
    assert rows["is_valid"].sum() == 2 and rows["fn"].is_unique
    again = training_rows(hand_index(), "downsample", valid_pct=0.25, seed=3)
    pd.testing.assert_frame_equal(rows, again)                                  # seeded
    others = {seed: set(training_rows(hand_index(), "downsample", 0.25, seed)["fn"]) for seed in range(5)}
    assert len({frozenset(s) for s in others.values()}) > 1                     # the seed decides the sample


def test_oversample_repeats_training_meteors_only():
    rows = training_rows(hand_index(), "oversample", valid_pct=0.2, seed=0)
    valid = rows[rows["is_valid"]]
    assert len(valid) == 4 and valid["fn"].is_unique                            # 20 % of the 20 train rows
    assert not set(valid["fn"]) & set(rows.loc[~rows["is_valid"], "fn"])        # no copy leaks into validation
    train_part = rows[~rows["is_valid"]]
    met, other = (train_part["label"] == "meteor").sum(), (train_part["label"] == "no-meteor").sum()
    assert abs(met - other) <= train_part.loc[train_part.label == "meteor", "fn"].nunique()
    assert met > 4 - valid["label"].eq("meteor").sum()


def test_weighted_and_none_keep_all_rows():
    rows = training_rows(hand_index(), "none", valid_pct=0.2, seed=0)
    assert len(rows) == 20 and rows["is_valid"].sum() == 4
    weights = class_weights(rows)
    train_part = rows[~rows["is_valid"]]
    n_met = (train_part["label"] == "meteor").sum()
    assert weights == pytest.approx([16 / (2 * n_met), 16 / (2 * (16 - n_met))])
    assert weights[0] > weights[1]                                             # the rare class weighs more


def test_invisible_training_meteors_are_left_out_but_test_rows_kept():
    index = hand_index(meteors=4, others=16, test=6)
    index["peak_snr"] = [1.5, 8.0, 20.0, 40.0] + [None] * 16 + [2.0] * 6
    index["length_px"] = [200.0, 25.0, 150.0, 90.0] + [None] * 16 + [30.0] * 6
    rows = training_rows(index, "none", valid_pct=0.2, seed=0, min_snr=3, min_length=40)
    meteors = set(rows.loc[rows["label"] == "meteor", "fn"])
    assert meteors == {"training_set/meteor/2.png", "training_set/meteor/3.png"}   # too faint / too short: out
    assert (rows["label"] == "no-meteor").sum() == 16                                 # negatives untouched
    assert len(training_rows(index, "none", 0.2, 0)) == 20                           # no thresholds: all kept
    kept = training_rows(index, "none", 0.2, 0, min_snr=3, min_length=40, short_min_snr=8)
    assert set(kept.loc[kept["label"] == "meteor", "fn"]) == {f"training_set/meteor/{i}.png" for i in (1, 2, 3)}
    assert len(training_rows(index, "none", 0.2, 0, min_snr=3, min_length=40, short_min_snr=9)) == 18
    real = hand_index().assign(meteor=lambda d: d["meteor"])                          # no ground-truth columns
    assert len(train.visible_meteors(real, 3, 40)) == len(real)


def test_one_class_refused():
    with pytest.raises(TrainError, match="both classes"):
        training_rows(hand_index(meteors=0))


def test_a_validation_draw_that_takes_every_meteor_is_refused():
    """With few training meteors the 20 % drawn for validation could take them all: fastai then learnt one class
    and failed on 'meteor' is not in list."""
    drawn = next(seed for seed in range(1000) if train.validation_mask(17, 0.2, seed)[0])    # the one meteor: row 0
    kept = next(seed for seed in range(1000) if not train.validation_mask(17, 0.2, seed)[0])
    with pytest.raises(TrainError, match=r"the validation draw took every meteor image of the training nights \(1\)"):
        training_rows(hand_index(meteors=1, others=16), "none", seed=drawn)
    assert len(training_rows(hand_index(meteors=1, others=16), "none", seed=kept)) == 17


def test_bad_options_refused(tmp_path):
    with pytest.raises(TrainError, match="balance"):
        train.TrainConfig(dataset=tmp_path, out=tmp_path, balance="smote")
    with pytest.raises(TrainError, match="index.csv"):
        train.read_index(tmp_path)


def test_meteor_recall_counts_the_meteor_class():
    import torch
    from fastai.metrics import Recall

    vocab = ["meteor", "no-meteor"]                  # fastai sorts the vocab: meteor is class 0
    targets = torch.tensor([0, 0, 0, 1])             # three meteors, one no-meteor
    predicted = torch.tensor([0, 1, 1, 1])           # one meteor found
    assert train.meteor_recall(vocab)(predicted, targets) == pytest.approx(1 / 3)
    assert Recall()(predicted, targets) == 1.0       # fastai's default pos_label=1 measures no-meteor instead
    assert train.meteor_recall(vocab).name == "meteor_recall"


def test_a_class_never_predicted_counts_0_in_the_learners_precision_without_a_warning(tmp_path):
    """On a 2-image validation split sklearn warned at every epoch that precision was ill-defined (0/0 for a class
    never predicted), and meteor recall on a split without a meteor. Each counts 0, said outright: a model that never
    says meteor earns no meteor precision."""
    import warnings

    import torch
    from gualta.dataset import write_image

    rows = pd.DataFrame({"fn": [f"{i}.png" for i in range(4)], "label": ["meteor", "no-meteor"] * 2,
                         "is_valid": [False, False, True, True]})
    for fn in rows["fn"]:
        write_image(tmp_path / fn, np.zeros((16, 16), np.uint8))
    learn = train.make_learner(train.make_dataloaders(tmp_path, rows, size=16, bs=2), "resnet18")
    precision = next(m for m in learn.metrics if m.name == "precision_score")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = precision(torch.tensor([1, 1]), torch.tensor([0, 1]))    # no-meteor twice: one meteor missed
    assert value == pytest.approx((0 + 1 / 2) / 2)                       # meteor 0, no-meteor 1 of 2
    recall = next(m for m in learn.metrics if m.name == "meteor_recall")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert recall(torch.tensor([1, 1]), torch.tensor([1, 1])) == 0     # a split without a meteor: 0/0 counts 0


# --- the recipe end to end --------------------------------------------------------------------------------------

def test_recipe_writes_every_artefact(tiny_run, tiny_dataset):
    run_dir = tiny_run.run_dir
    for name in ARTEFACTS:
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    assert not (run_dir / "checkpoints" / "best.pth").exists()

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    index = train.read_index(tiny_dataset[1])
    test = index[index["dataset"] == "test"]
    assert metrics["n_test"] == len(test) and metrics["n_meteor"] == int(test["meteor"].sum())
    assert metrics["test_nights"] == sorted(test["night"].unique())
    assert metrics["model"]["arch"] == "resnet18" and metrics["model"]["size"] == 64

    predictions = pd.read_csv(run_dir / "predictions.csv", dtype={"night": str})
    assert sorted(predictions["fn"]) == sorted(test["fn"])                   # test nights only, each once
    assert predictions["p_meteor"].between(0, 1).all()
    counts = metrics["confusion"]
    assert sum(counts.values()) == len(test)
    assert counts["tp"] + counts["fn"] == metrics["n_meteor"]

    top = pd.read_csv(run_dir / "top_losses.csv")
    assert {"fn", "meteor", "p_meteor", "event", "loss"} <= set(top.columns)
    assert top["loss"].is_monotonic_decreasing

    history = pd.read_csv(run_dir / "history.csv")
    assert list(history.columns[:3]) == ["epoch", "train_loss", "valid_loss"] and len(history) == 1
    assert "meteor_recall" in history.columns
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["arch"] == "resnet18" and config["data"]["vocab"] == ["meteor", "no-meteor"]
    train_meteors = int(index.loc[index["dataset"] == "train", "meteor"].sum())
    assert config["data"]["train_images"] + config["data"]["valid_images"] == 2 * train_meteors   # downsampled
    assert config["training"]["images_per_s"] > 0


def test_cli_weighted_then_evaluate_onnx(tiny_dataset, tmp_path, capsys):
    data = tiny_dataset[1]
    out = tmp_path / "cli"
    assert train.main(["train", "--dataset", str(data), "--out", str(out), "--arch", "resnet18", "--size", "32",
                       "--epochs", "1", "--bs", "8", "--threads", "1", "--balance", "weighted",
                       "--no-evaluate", "--no-pretrained", "--mixed-precision"]) == 0
    assert (out / "model.onnx").is_file() and not (out / "metrics.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["mixed_precision"] is True and config["training"]["device"] == "cpu"   # CPU: fp32
    index = train.read_index(data)
    assert config["data"]["train_images"] + config["data"]["valid_images"] == (index["dataset"] == "train").sum()

    report = tmp_path / "onnx-report"
    assert train.main(["evaluate", "--model", str(out / "model.onnx"), "--dataset", str(data),
                       "--out", str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["model"]["size"] == 32 and "cam" not in metrics["artefacts"]      # Grad-CAM needs fastai
    assert (report / "top_losses.png").is_file() and "meteor_recall" in capsys.readouterr().out


def test_cli_errors_exit_cleanly(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["train", "--dataset", str(tmp_path), "--out", str(tmp_path / "run"), "--no-pretrained"])
    assert exit_info.value.code == 2


def test_what_cannot_be_read_or_learnt_from_is_one_clear_error(tiny_run, tiny_dataset, tmp_path, capsys):
    """An empty or foreign index.csv, a training split left without meteors, a .pkl to quantize, a truncated .pkl
    to export or start from, tables fusion cannot pair: each was a traceback (or, for fusion, figures measured on
    the few images both tables shared)."""
    data = tiny_dataset[1]
    empty = copy_dataset(data, tmp_path / "empty", lambda index: index["fn"].notna())
    (empty / "index.csv").write_text("")
    foreign = copy_dataset(data, tmp_path / "foreign", lambda index: index["fn"].notna())
    train.read_index(foreign)[["fn", "meteor"]].to_csv(foreign / "index.csv", index=False)
    truncated = tmp_path / "half.pkl"
    truncated.write_bytes((tiny_run.run_dir / "model.pkl").read_bytes()[:3000])
    half_table = tmp_path / "half.csv"
    pd.read_csv(tiny_run.run_dir / "predictions.csv").head(5).to_csv(half_table, index=False)
    train_args = ["--out", str(tmp_path / "run"), "--arch", "resnet18", "--size", "32", "--epochs", "1", "--bs", "8",
                  "--threads", "1", "--no-pretrained", "--no-evaluate", "--balance", "none"]
    predictions = str(tiny_run.run_dir / "predictions.csv")
    for args, reason in (
            (["train", "--dataset", str(empty), *train_args], "is not an index table (EmptyDataError"),
            (["train", "--dataset", str(foreign), *train_args], "lacks the column(s) dataset"),
            (["evaluate", "--model", str(tiny_run.run_dir / "model.onnx"), "--dataset", str(foreign), "--out",
              str(tmp_path / "e")], "lacks the column(s) dataset"),
            (["train", "--dataset", str(data), *train_args, "--init", str(truncated)], "cannot start from"),
            (["export", "--model", str(truncated), "--out", str(tmp_path / "x.onnx")], "cannot load model"),
            (["quantize", "--model", str(tiny_run.run_dir / "model.pkl"), "--night", str(tiny_dataset[0]),
              "--out", str(tmp_path / "q.onnx")], "quantize reads an ONNX model"),
            (["fusion", "--diff", predictions, "--raw", str(half_table)], "the tables score different images"),
            (["fusion", "--diff", predictions, "--raw", str(empty / "index.csv")], "fusion: ")):
        try:
            train.main(args)
        except SystemExit as stop:
            error = capsys.readouterr().err
            assert stop.code == 2 and reason in error and "Traceback" not in error, (args[0], error)
        else:
            pytest.fail(f"{args[:3]} did not stop")


def test_the_module_run_as_a_script_says_its_errors_in_one_line(tmp_path):
    """`python -m gualta.train` (the README's command): a dataset without index.csv, found by gualta.evaluate, is
    the same one-line error as in-process, not a traceback."""
    done = subprocess.run([sys.executable, "-m", "gualta.train", "evaluate", "--model", str(tmp_path / "m.onnx"),
                           "--dataset", str(tmp_path), "--out", str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "evaluate: error: no index.csv in" in done.stderr


def copy_dataset(source: Path, target: Path, keep) -> Path:
    """A copy of a dataset holding only the index rows `keep` selects."""
    shutil.copytree(source, target)
    index = train.read_index(target)
    index[keep(index)].to_csv(target / "index.csv", index=False)
    return target


def test_a_dataset_without_test_nights_trains_unevaluated_and_cannot_be_evaluated(tiny_dataset, tmp_path, capsys,
                                                                                 caplog):
    data = copy_dataset(tiny_dataset[1], tmp_path / "no-test", lambda index: index["dataset"] != "test")
    out = tmp_path / "run"
    assert train.main(["train", "--dataset", str(data), "--out", str(out), "--arch", "resnet18", "--size", "32",
                       "--epochs", "1", "--bs", "8", "--threads", "1", "--no-pretrained"]) == 0
    assert (out / "model.onnx").is_file() and not (out / "metrics.json").exists()
    assert "no test nights" in caplog.text and "the model is not evaluated" in caplog.text
    with pytest.raises(SystemExit) as stop:
        train.main(["evaluate", "--model", str(out / "model.onnx"), "--dataset", str(data), "--out", str(out)])
    assert stop.value.code == 2 and "no test nights in" in capsys.readouterr().err


def test_evaluating_what_cannot_be_read_is_a_clear_error(tiny_run, tiny_dataset, tmp_path, capsys):
    data = tiny_dataset[1]
    truncated = tmp_path / "half-copied.onnx"
    truncated.write_bytes((tiny_run.run_dir / "model.onnx").read_bytes()[:4000])
    table = tmp_path / "scores.csv"
    table.write_text("a,b\n")
    missing_image = copy_dataset(data, tmp_path / "missing", lambda index: index["fn"].notna())
    test_image = train.read_index(missing_image).query("dataset == 'test'")["fn"].iloc[0]
    (missing_image / test_image).unlink()
    model = str(tiny_run.run_dir / "model.onnx")
    import onnx
    from onnx import TensorProto, helper

    identity = tmp_path / "another-network.onnx"                 # a valid ONNX that is no guAlta network
    onnx.save(helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])), identity)
    for args, reason in ((["--model", str(truncated), "--dataset", str(data)], "cannot load model"),
                         (["--model", str(table), "--dataset", str(data)], "unknown model format '.csv'"),
                         (["--model", str(identity), "--dataset", str(data)],
                          "cannot score this dataset's images"),             # was a traceback from onnxruntime
                         (["--model", model, "--dataset", str(missing_image)], f"{test_image}: cannot read")):
        with pytest.raises(SystemExit) as stop:
            train.main(["evaluate", *args, "--out", str(tmp_path / "report")])
        error = capsys.readouterr().err
        assert stop.value.code == 2 and reason in error, error
    with pytest.raises(SystemExit) as stop:
        train.main(["export", "--model", model, "--out", str(tmp_path / "again.onnx")])
    assert stop.value.code == 2 and "export reads a fastai .pkl" in capsys.readouterr().err


def test_a_hand_labelled_dataset_is_evaluated_without_the_simulators_figures(tiny_run, tiny_dataset, tmp_path):
    """A dataset built from hand labels (`prepare --labels`: no event, brightness or cloud cover) crashed the report
    (KeyError 'clouds'), and `train` with it after training, before metrics.json."""
    from gualta.evaluate import evaluate

    truth_only = ["event", "peak_snr", "clouds", "scenario", "length_px"]
    labelled = copy_dataset(tiny_dataset[1], tmp_path / "labelled", lambda index: index["fn"].notna())
    train.read_index(labelled).drop(columns=truth_only).to_csv(labelled / "index.csv", index=False)
    metrics = evaluate(tiny_run.run_dir / "model.pkl", labelled, tmp_path / "report", cam_per_group=1)
    assert metrics["cloud_fp_rate"] is None and metrics["faint_recall"] is None
    assert metrics["n_test"] == len(train.read_index(labelled).query("dataset == 'test'"))
    assert {"confusion_matrix", "top_losses", "cam"} <= set(metrics["artefacts"])
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["meteor_recall"] == metrics["meteor_recall"]


def test_evaluating_on_nights_the_model_learnt_from_is_said(tiny_run, tiny_dataset, tmp_path, caplog):
    """A dataset prepared again after nights were added moves nights between train and test: a model was scored on
    nights it had trained on without a word. Its training nights travel with it (config.json, the ONNX metadata, the
    .pkl) and the report names the test nights among them."""
    from gualta.evaluate import evaluate
    from gualta.model import load_model

    index = train.read_index(tiny_dataset[1])
    learnt = sorted(index.loc[index["dataset"] == "train", "night"].astype(str).unique())
    assert json.loads((tiny_run.run_dir / "config.json").read_text())["data"]["nights"] == learnt
    for name in ("model.onnx", "model.pkl"):
        assert load_model(tiny_run.run_dir / name).info.train_nights == tuple(learnt)
    honest = evaluate(tiny_run.run_dir / "model.onnx", tiny_dataset[1], tmp_path / "honest", cam_per_group=0)
    assert honest["test_nights_seen_in_training"] == [] and "training nights" not in caplog.text
    moved = copy_dataset(tiny_dataset[1], tmp_path / "moved", lambda rows: rows["fn"].notna())
    rows = train.read_index(moved)
    rows.loc[rows["night"].astype(str) == learnt[0], "dataset"] = "test"          # a training night now tested on
    rows.to_csv(moved / "index.csv", index=False)
    metrics = evaluate(tiny_run.run_dir / "model.onnx", moved, tmp_path / "report", cam_per_group=0)
    assert metrics["test_nights_seen_in_training"] == [learnt[0]]
    assert f"test night(s) {learnt[0]} were among the model's training nights" in caplog.text


def test_an_evaluation_cut_short_leaves_no_earlier_report_beside_its_predictions(tiny_run, tiny_dataset, tmp_path,
                                                                                 monkeypatch):
    """A second `evaluate --out RUN` stopped partway left its new predictions.csv beside the earlier report's
    metrics.json and figures, which passed for this model's."""
    from gualta import evaluate

    for name in ("metrics.json", "confusion_matrix.png", "top_losses.csv"):
        (tmp_path / name).write_text("earlier")

    def cut_short(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "write_figures", cut_short)
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate(tiny_run.run_dir / "model.onnx", tiny_dataset[1], tmp_path, cam_per_group=0)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["predictions.csv"]


@pytest.mark.parametrize("option", ["--epochs", "--bs", "--size", "--patience"])
def test_counts_below_one_are_refused_before_training(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train.main(["train", "--dataset", str(tmp_path), "--out", str(tmp_path / "run"), option, "0"])
    assert stop.value.code == 2 and f"argument {option}: must be at least 1: 0" in capsys.readouterr().err


def test_a_negative_seed_is_refused_before_training(tmp_path, capsys):
    """`train --seed -1` read the dataset, then stopped with a numpy traceback."""
    with pytest.raises(SystemExit) as stop:
        train.main(["train", "--dataset", str(tmp_path), "--out", str(tmp_path / "run"), "--seed", "-1"])
    assert stop.value.code == 2 and "argument --seed: must be 0 or more: -1" in capsys.readouterr().err


@pytest.mark.parametrize("parse, text", [(cli.positive_int, "x"), (cli.non_negative_int, "2.5"), (cli.days, "1e3"),
                                         (cli.port, "+80"), (cli.frame_count, "")])
def test_a_count_that_is_not_a_whole_number_says_so(parse, text):
    """`--epochs x` was refused as "invalid positive_int value", `--catch-up 1e3` as "not a number of days": the
    integer options now share one reading and one wording."""
    with pytest.raises(argparse.ArgumentTypeError, match=f"^not a whole number: {re.escape(text)}$"):
        parse(text)


@pytest.mark.parametrize("parse, text, value", [(cli.positive_int, "7", 7), (cli.non_negative_int, "0", 0),
                                                (cli.port, "65535", 65535), (cli.days, "30", 30)])
def test_a_count_in_range_is_read(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize("option, value, message", [
    ("--lr", "-1", "must be more than 0"), ("--lr", "0", "must be more than 0"), ("--lr", "nan", "not a finite"),
    ("--lr", "inf", "not a finite"), ("--min-snr", "-1", "must be 0 or more"), ("--min-length", "nan", "not a finite"),
    ("--short-min-snr", "-2", "must be 0 or more"), ("--workers", "-1", "must be 0 or more")])
def test_numbers_no_training_can_use_are_refused_before_it(option, value, message, tmp_path, capsys):
    """`--lr -1` trained and exited 0, nan, 0 and inf learning rates and negative or nan meteor minimums went
    unchecked, and `--workers -1` stopped with an AssertionError traceback."""
    with pytest.raises(SystemExit) as stop:
        train.main(["train", "--dataset", str(tmp_path), "--out", str(tmp_path / "run"), option, value])
    assert stop.value.code == 2 and f"argument {option}: {message}" in capsys.readouterr().err


def test_a_pkl_evaluated_elsewhere_draws_its_runs_loss_curves(tiny_run, tiny_dataset, tmp_path):
    report = tmp_path / "report"
    metrics = train.main(["evaluate", "--model", str(tiny_run.run_dir / "model.pkl"), "--dataset",
                          str(tiny_dataset[1]), "--out", str(report)])
    assert metrics == 0 and (report / "loss_curves.png").stat().st_size > 0
    assert json.loads((report / "metrics.json").read_text())["artefacts"]["loss_curves"] == "loss_curves.png"
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tiny_run.run_dir / "model.onnx", lone)
    assert train.main(["evaluate", "--model", str(lone / "model.onnx"), "--dataset", str(tiny_dataset[1]),
                       "--out", str(lone / "report")]) == 0
    assert not (lone / "report" / "loss_curves.png").exists()       # no history anywhere: no curves


def test_another_models_evaluation_in_a_run_folder_is_not_taken_for_its_own(tiny_run, tiny_dataset, tmp_path, caplog):
    """The shipped model evaluated into a new run's folder drew that run's loss curves, left its cam.png, and
    `publish` of the run's model then carried the other model's figures to every client."""
    import onnx

    from gualta.export import publish_model

    run = tmp_path / "run2"
    shutil.copytree(tiny_run.run_dir, run)
    other = tmp_path / "elsewhere" / "model.onnx"                   # the same network, exported at another time
    other.parent.mkdir()
    proto = onnx.load(str(tiny_run.run_dir / "model.onnx"))
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                        "created": "2020-01-01T00:00:00+00:00"})
    onnx.save(proto, str(other))
    assert (run / "cam.png").is_file() and (run / "loss_curves.png").is_file()
    assert train.main(["evaluate", "--model", str(other), "--dataset", str(tiny_dataset[1]), "--out", str(run)]) == 0
    report = json.loads((run / "metrics.json").read_text())
    assert report["model"]["path"] == str(other) and "loss_curves" not in report["artefacts"]
    assert not (run / "loss_curves.png").exists() and not (run / "cam.png").exists()
    with caplog.at_level(logging.WARNING, "gualta.export"):
        published = publish_model(run / "model.onnx", tmp_path / "store")
    assert published["metrics"] == {} and "is the evaluation of another model (training time differs)" in caplog.text
    assert publish_model(other, tmp_path / "store")["metrics"] == {}            # no metrics.json beside it
    shutil.copy(other, run / "model.onnx")                           # a run of 2020, and this run's .pkl evaluated
    (run / "model.pkl").touch()                                      # into it: its training time tells them apart
    assert train.main(["evaluate", "--model", str(tiny_run.run_dir / "model.pkl"), "--dataset", str(tiny_dataset[1]),
                       "--out", str(run)]) == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, "gualta.export"):
        assert publish_model(run / "model.onnx", tmp_path / "store")["metrics"] == {}
    assert "is the evaluation of another model (training time differs)" in caplog.text
    moved = tmp_path / "moved" / "run3"                              # a run folder copied to another machine
    shutil.copytree(tiny_run.run_dir, moved, copy_function=shutil.copy2)
    assert train.main(["evaluate", "--model", str(moved / "model.onnx"), "--dataset", str(tiny_dataset[1]), "--out",
                       str(moved)]) == 0
    shutil.move(moved, tmp_path / "renamed")
    assert publish_model(tmp_path / "renamed" / "model.onnx", tmp_path / "store")["metrics"]["n_test"] > 0


def test_training_again_into_a_run_folder_starts_from_nothing_it_left(tiny_dataset, tmp_path, caplog, capsys):
    """A checkpoint an interrupted run left became the next run's model (fastai loads best.pth at the end, even
    after a divergence), and the earlier run's evaluation stayed beside the new model; a run that fails leaves the
    earlier evaluation as it was."""
    out, evaluation = tmp_path / "run", ("metrics.json", "predictions.csv", "cam.png")
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "best.pth").write_bytes(b"an interrupted run's weights")
    for name in evaluation:
        (out / name).write_text("earlier")
    options = ["train", "--dataset", str(tiny_dataset[1]), "--out", str(out), "--arch", "resnet18", "--size", "32",
               "--epochs", "1", "--bs", "8", "--threads", "1", "--no-pretrained", "--no-evaluate"]
    with pytest.raises(SystemExit) as stop, caplog.at_level(logging.WARNING, "gualta.train"):
        train.main([*options, "--lr", "1e9"])
    assert stop.value.code == 2 and "training diverged" in capsys.readouterr().err
    assert not (out / "checkpoints" / "best.pth").exists() and not (out / "model.onnx").exists()
    assert all((out / name).read_text() == "earlier" for name in evaluation)
    assert "held an earlier run: best.pth removed" in caplog.text
    caplog.clear()
    (out / "lr_find.png").write_bytes(b"the earlier run's plot")               # drawn before that run finished
    (out / "model.onnx").write_bytes(b"the earlier run's model")
    (out / "config.json").write_text("{}")
    os.utime(out / "lr_find.png", ns=(1, (out / "config.json").stat().st_mtime_ns - 10**9))
    with caplog.at_level(logging.WARNING, "gualta.train"):
        assert train.main(options) == 0                              # without --lr-find: no plot of its own
    assert (out / "model.onnx").is_file() and not any((out / name).exists() for name in evaluation)
    assert not (out / "lr_find.png").exists()
    assert ("held an earlier run: model.onnx, config.json, metrics.json, predictions.csv, cam.png, lr_find.png removed"
            in caplog.text)


def test_a_run_cut_short_while_exporting_leaves_no_earlier_model_beside_its_own(tiny_dataset, tmp_path, monkeypatch):
    """A second `train` into a run folder stopped once its model.pkl was written left the earlier run's model.onnx,
    config.json and metrics.json beside it: `publish --model RUN/model.onnx` published the old network."""
    from gualta import export

    earlier = ("model.onnx", "config.json", "metrics.json", "cam.png")
    for name in earlier:
        (tmp_path / name).write_text("earlier")

    def cut_short(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "export_pkl", cut_short)
    config = train.TrainConfig(dataset=tiny_dataset[1], out=tmp_path, arch="resnet18", size=32, epochs=1, bs=8,
                               threads=1, pretrained=False)
    with pytest.raises(KeyboardInterrupt):
        train.train(config)
    assert not any((tmp_path / name).exists() for name in earlier)


def test_an_onnx_export_cut_short_leaves_no_model_at_its_name(tiny_run, tmp_path, monkeypatch):
    """export_onnx wrote the graph to its name, then again with its metadata: one stopped between left a valid ONNX
    without metadata, which the client loaded as a 224 px difference model."""
    import onnx
    from fastai.learner import load_learner

    from gualta.export import export_onnx

    def cut_short(*_):
        raise KeyboardInterrupt

    learn = load_learner(tiny_run.run_dir / "model.pkl", cpu=True)
    monkeypatch.setattr(onnx.helper, "set_model_props", cut_short)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(learn, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_an_lr_find_plot_drawn_since_the_earlier_run_is_this_runs(tmp_path):
    """`lr-find` (or a notebook's find_lr) then `train --lr` into the same folder: the plot is the one the rate was
    read from, newer than the earlier run's config.json, and stays; one older than it was that run's."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "lr_find.png").write_bytes(b"drawn for this run")
    os.utime(tmp_path / "lr_find.png", ns=(1, (tmp_path / "config.json").stat().st_mtime_ns + 10**9))
    assert train.earlier_lr_plot(tmp_path) == []
    os.utime(tmp_path / "lr_find.png", ns=(1, (tmp_path / "config.json").stat().st_mtime_ns - 10**9))
    assert train.earlier_lr_plot(tmp_path) == ["lr_find.png"]
    (tmp_path / "config.json").unlink()                             # no run trained there before
    assert train.earlier_lr_plot(tmp_path) == []


def test_a_model_of_a_thesis_version_other_than_v4_is_kept_from_clients(tiny_dataset, tiny_run, tmp_path):
    """The thesis compared dataset versions v1–v4; only v4 (400 px, stretched) is what the client computes. A model
    that learnt from v1's 224 px padded images says so in its metadata, and neither `publish` nor the client takes
    it."""
    from gualta.client_errors import ClientError
    from gualta.dataset import prepare_dataset
    from gualta.export import publish_model
    from gualta.model import load_model
    from gualta.model_update import open_model
    from helpers_client import settings

    nights = sorted(p for p in tiny_dataset[0].iterdir() if p.is_dir())
    prepare_dataset(nights[:-1], nights[-1:], tmp_path / "v1", version="v1")
    result = train.run(train.TrainConfig(dataset=tmp_path / "v1", out=tmp_path / "v1-run", arch="resnet18", size=32,
                                         epochs=1, bs=8, threads=1, pretrained=False), evaluate=False)
    model = result.run_dir / "model.onnx"
    assert load_model(model).info.image_size == 224 and not load_model(model).info.client_ready
    with pytest.raises(ValueError, match="learnt from 224 px images .*train on a v4 dataset to publish"):
        publish_model(model, tmp_path / "store")
    assert not (tmp_path / "store").exists()
    with pytest.raises(ClientError, match="learnt from 224 px images .*use a model trained on v4"):
        open_model(settings(tmp_path, model))
    v4 = load_model(tiny_run.run_dir / "model.onnx").info
    assert v4.image_size == 400 and v4.client_ready


def test_evaluating_on_another_dataset_version_is_warned_of(tiny_dataset, tiny_run, tmp_path, caplog):
    """A v4 model (400 px images) evaluated on a v1 dataset (224 px) gave figures without a word."""
    from gualta import evaluate
    from gualta.dataset import prepare_dataset
    from gualta.model import load_model

    nights = sorted(p for p in tiny_dataset[0].iterdir() if p.is_dir())
    prepare_dataset(nights[:-1], nights[-1:], tmp_path / "v1", version="v1")
    model = load_model(tiny_run.run_dir / "model.onnx")
    with caplog.at_level(logging.WARNING, logger="gualta.evaluate"):
        evaluate.evaluate(model, tmp_path / "v1", tmp_path / "eval")
        assert f"the model learnt from 400 px images but {tmp_path / 'v1'} holds 224 px images" in caplog.text
        caplog.clear()
        evaluate.warn_if_images_differ(model, tiny_dataset[1])                  # its own version: no word
    assert "px images" not in caplog.text


def test_a_raw_dataset_cut_short_before_its_marker_has_no_index(tiny_dataset, tmp_path):
    """raw-dataset wrote index.csv before raw_frames.json: one stopped between looked whole, a difference dataset."""
    from gualta.dataset import INDEX, RAW_MARKER

    (tmp_path / "raw" / RAW_MARKER).mkdir(parents=True)                 # the marker cannot be written
    with pytest.raises(OSError):
        train.build_raw_dataset(tiny_dataset[1], tiny_dataset[0], tmp_path / "raw")
    assert not (tmp_path / "raw" / INDEX).exists()


def test_raw_frame_model_and_fusion(tiny_dataset, tiny_run, tmp_path, caplog):
    from gualta.evaluate import fusion_report, read_predictions
    from gualta.model import load_model
    from gualta.preprocess import read_gray

    nights, data = tiny_dataset
    raw_data = tmp_path / "raw"
    index = train.build_raw_dataset(data, nights, raw_data, workers=2)
    first = index.iloc[0]
    image = read_gray(raw_data / first["fn"])
    assert image.shape == (400, 400)
    assert np.array_equal(image, train.raw_image(nights / first["night"] / first["file"]))
    assert pd.read_csv(raw_data / "index.csv")["fn"].tolist() == index["fn"].tolist()

    result = train.run(train.TrainConfig(dataset=raw_data, out=tmp_path / "raw-run", arch="resnet18", size=32,
                                         epochs=1, bs=8, threads=1, pretrained=False), threshold=0.0)
    assert load_model(result.run_dir / "model.onnx").info.kind == "raw"       # detected from the dataset
    assert json.loads((result.run_dir / "metrics.json").read_text())["threshold"] == 0.0     # 0 was taken as 0.85
    report = fusion_report(read_predictions(tiny_run.run_dir / "predictions.csv"),
                           read_predictions(result.run_dir / "predictions.csv"))
    assert list(report.index) == ["diff", "raw", "product", "mean", "gated"]
    diff_metrics = json.loads((tiny_run.run_dir / "metrics.json").read_text())
    assert report.loc["diff", "meteor_recall"] == diff_metrics["meteor_recall"]
    assert report.loc["diff", "cloud_fp_rate"] == diff_metrics["cloud_fp_rate"]
    with caplog.at_level(logging.WARNING, "gualta.evaluate"):                # a model fed what it never learnt
        train.main(["evaluate", "--model", str(tiny_run.run_dir / "model.onnx"), "--dataset", str(raw_data),
                    "--out", str(tmp_path / "mismatch")])
    assert f"the model scores diff images but {raw_data} holds raw images" in caplog.text


def test_init_starts_from_an_earlier_runs_weights(tiny_run, tiny_dataset, tmp_path):
    import torch
    from fastai.learner import load_learner

    config = train.TrainConfig(dataset=tiny_dataset[1], out=tmp_path / "fine-tune", arch="resnet18", size=64,
                               bs=8, threads=1, pretrained=False, init=tiny_run.run_dir / "model.pkl")
    learn, _ = train.learner_for(config)
    source = load_learner(tiny_run.run_dir / "model.pkl", cpu=True).model.state_dict()
    target = learn.model.state_dict()
    assert source.keys() == target.keys()
    assert all(torch.equal(source[k], target[k].cpu()) for k in source)

    with pytest.raises(train.TrainError, match="model.pkl: it is a resnet18, this run trains a resnet34$") as error:
        train.learner_for(replace(config, arch="resnet34"))         # not 2.7 KB of state_dict keys
    assert len(str(error.value)) < 300
    with pytest.raises(train.TrainError, match=r"\d+ training images make no full batch of 4096: lower --bs"):
        train.learner_for(replace(config, bs=4096))             # before --init would calibrate on no batch


def test_a_fine_tune_trains_at_its_starting_models_size_unless_told(tiny_run, tiny_dataset, tmp_path, caplog):
    """--init without --size trained at 224 px whatever the model's size (the shipped one: 320): its starting loss
    was measured, and its weights kept, at the wrong size. Now the init's size is the default; another is warned of."""
    from gualta.model import learner_info

    args = train.build_parser().parse_args(["train", "--dataset", str(tiny_dataset[1]), "--out", str(tmp_path),
                                            "--no-pretrained", "--init", str(tiny_run.run_dir / "model.onnx")])
    assert train.config_from(args).size is None
    for init in ("model.pkl", "model.onnx"):
        config = train.TrainConfig(dataset=tiny_dataset[1], out=tmp_path / "tune", arch="resnet18", bs=8, threads=1,
                                   pretrained=False, init=tiny_run.run_dir / init)
        learn, _ = train.learner_for(config)
        assert learner_info(learn).size == TINY_SIZE == train.jsonable(config)["size"]
    assert "--size" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="gualta.train"):
        learn, _ = train.learner_for(replace(config, size=32))
    assert learner_info(learn).size == 32
    assert f"--size 32 but {config.init} was trained at {TINY_SIZE} px" in caplog.text
    assert train.input_size(replace(config, init=None, size=None)) == train.DEFAULT_SIZE


def test_a_fine_tuned_model_keeps_the_nights_its_starting_weights_learnt_from(tiny_run, tiny_dataset, tmp_path):
    """A model fine-tuned from another (the shipped one, an earlier run) learnt from that model's nights too: they
    were dropped, and an evaluation on one of them went without a warning."""
    import onnx
    from fastai.learner import load_learner

    earlier = load_learner(tiny_run.run_dir / "model.pkl", cpu=True)
    earlier.train_nights = ("19990101",)
    earlier.export(tmp_path / "earlier.pkl")
    proto = onnx.load(str(tiny_run.run_dir / "model.onnx"))
    onnx.helper.set_model_props(proto, {**{prop.key: prop.value for prop in proto.metadata_props},
                                        "train_nights": "19990102,19990103"})
    onnx.save(proto, str(tmp_path / "earlier.onnx"))
    own = set(train.read_index(tiny_dataset[1]).query("dataset == 'train'")["night"].astype(str))
    for init, theirs in (("earlier.pkl", {"19990101"}), ("earlier.onnx", {"19990102", "19990103"})):
        config = train.TrainConfig(dataset=tiny_dataset[1], out=tmp_path / "fine-tune", arch="resnet18", size=64,
                                   bs=8, threads=1, pretrained=False, init=tmp_path / init)
        learn, _ = train.learner_for(config)
        assert set(learn.train_nights) == own | theirs


def test_images_not_named_by_night_leave_no_blank_among_the_training_nights(tiny_dataset, tmp_path):
    """`dataPreparation.py index` leaves the night blank for an image not named <night>_<frame id>: training went
    through every epoch, then died exporting (TypeError: expected str instance, float found) with an ONNX model
    lacking its metadata."""
    from gualta.export import onnx_metadata

    data = copy_dataset(tiny_dataset[1], tmp_path / "unnamed", lambda rows: rows["fn"].notna())
    rows = train.read_index(data)
    named = sorted(rows.loc[rows["dataset"] == "train", "night"].unique())
    rows.loc[rows["night"] == named[0], "night"] = None
    rows.to_csv(data / "index.csv", index=False)
    config = train.TrainConfig(dataset=data, out=tmp_path / "run", arch="resnet18", size=32, bs=8, threads=1,
                               pretrained=False)
    learn, _ = train.learner_for(config)
    assert learn.train_nights == tuple(named[1:])
    assert onnx_metadata(learn)["train_nights"] == ",".join(named[1:])


def test_a_pkl_holding_a_blank_training_night_still_exports(tiny_run):
    """A model.pkl trained before blank nights were left out holds NaN among its nights: `train export` failed on
    it with a TypeError."""
    from fastai.learner import load_learner

    from gualta.export import onnx_metadata

    learn = load_learner(tiny_run.run_dir / "model.pkl", cpu=True)
    learn.train_nights = (float("nan"), "20211110", "")
    assert onnx_metadata(learn)["train_nights"] == "20211110"


def test_init_from_an_onnx_model_rebuilds_its_network(tiny_run, tiny_dataset, tmp_path):
    """The shipped model is an ONNX file with batch norms folded into its convolutions: fine-tuning from it rebuilds
    the fastai network (scores as the file's) with batch-norm statistics that training mode agrees with."""
    import torch

    from gualta.export import halve_onnx
    from gualta.model import FastaiModel, load_model
    from test_model import dataset_images

    images = dataset_images(tiny_dataset[1])
    onnx_path = tiny_run.run_dir / "model.onnx"
    half = halve_onnx(onnx_path, tmp_path / "half.onnx")
    for source in (onnx_path, half):
        config = train.TrainConfig(dataset=tiny_dataset[1], out=tmp_path / "fine-tune", arch="resnet18", size=64,
                                   bs=8, threads=1, pretrained=False, init=source)
        learn, _ = train.learner_for(config)
        scores = FastaiModel(learn).predict(images)
        assert np.abs(scores - load_model(source).predict(images)).max() < 1e-4
        fresh, _ = train.learner_for(replace(config, init=None))
        assert np.abs(FastaiModel(fresh).predict(images) - scores).max() > 1e-2     # the weights came from the file

    # the body's batch norms hold their convolutions' statistics: on the batch they were calibrated on, normalising
    # by batch statistics (training mode) computes what normalising by running statistics (eval mode) does
    from gualta.onnx_init import load_onnx_weights, training_batches

    batch = torch.cat(training_batches(learn, 2))
    assert load_onnx_weights(learn, onnx_path, "resnet18", [batch]) < 1e-4
    norms = [m for m in learn.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        evaluated = torch.softmax(learn.model.eval()(batch), 1)
        for norm in norms:
            norm.train()
        trained = torch.softmax(learn.model(batch), 1)
    assert float((evaluated - trained).abs().max()) < 1e-3

    result = train.train(replace(config, init=half, epochs=1, out=tmp_path / "tuned"))     # and it trains on
    assert (result.run_dir / "model.onnx").is_file() and len(result.history) == 1
    assert result.summary["init"]["valid_loss"] > 0
    # a fine-tune that makes the model worse (a wild learning rate) leaves it as it started
    wild = train.train(replace(config, init=half, epochs=1, lr=10.0, out=tmp_path / "wild"))
    assert wild.summary["init"]["kept_starting_weights"] is True
    assert np.abs(load_model(wild.run_dir / "model.onnx").predict(images) - load_model(half).predict(images)).max() < 1e-4

    with pytest.raises(TrainError, match="cannot start from .*resnet18, this run trains a resnet34"):
        train.learner_for(replace(config, arch="resnet34"))
    from fastai.vision.all import Normalize, imagenet_stats

    from gualta.onnx_init import OnnxInitError

    learn.dls.add_tfms([Normalize.from_stats(*imagenet_stats)], "after_batch")     # as a --pretrained run's
    with pytest.raises(OnnxInitError, match="normalises its input differently .* train with --no-pretrained"):
        load_onnx_weights(learn, onnx_path, "resnet18")
    import onnx
    import torchvision

    plain = torch.nn.Sequential(torchvision.models.resnet18(weights=None, num_classes=2), torch.nn.Softmax(1)).eval()
    torch.onnx.export(plain, torch.zeros(1, 3, 64, 64), str(tmp_path / "plain.onnx"), dynamo=False, opset_version=17)
    proto = onnx.load(str(tmp_path / "plain.onnx"))                     # a torchvision ResNet18, not a fastai one
    onnx.helper.set_model_props(proto, {"arch": "resnet18", "classes": json.dumps(["meteor", "no-meteor"])})
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    with pytest.raises(TrainError, match="the ONNX model has 0 unfolded batch norms, this network 2"):
        train.learner_for(replace(config, init=tmp_path / "plain.onnx"))
    (tmp_path / "broken.onnx").write_bytes(onnx_path.read_bytes()[:5000])
    with pytest.raises(TrainError, match="cannot start from .*broken.onnx"):
        train.learner_for(replace(config, init=tmp_path / "broken.onnx"))


def test_init_from_a_normalising_model_is_checked_on_the_input_it_takes(tiny_run, tiny_dataset, tmp_path):
    """A --pretrained run's ONNX normalises its input in the graph: checking the rebuilt network against it on the
    batch the learner had normalised already would normalise twice and refuse a start that is right."""
    import torch
    from fastai.vision.all import Normalize, imagenet_stats

    from gualta.export import export_onnx
    from gualta.model import preprocess
    from gualta.onnx_init import PARITY_TOLERANCE, load_onnx_weights
    from test_model import dataset_images, sharpened_learner

    images = dataset_images(tiny_dataset[1], 12)
    learn = sharpened_learner(tiny_run.run_dir / "model.pkl", images)
    normalize = Normalize.from_stats(*imagenet_stats, cuda=False)
    learn.dls.add_tfms([normalize], "after_batch")                      # as a --pretrained run's
    learn.pretrained = True
    export_onnx(learn, tmp_path / "normalised.onnx")
    batch = (torch.from_numpy(preprocess(images, TINY_SIZE)) - normalize.mean) / normalize.std   # what it trains on
    assert load_onnx_weights(learn, tmp_path / "normalised.onnx", "resnet18", [batch]) < PARITY_TOLERANCE


def test_an_int8_model_is_refused_as_a_start(tiny_run, tiny_dataset, tmp_path):
    """--init an int8 (quantized) ONNX: its rounded weights and quantize nodes are no network to fine-tune; the
    refusal names the cause, by its metadata or by its graph."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    noted = tmp_path / "noted.onnx"
    proto = onnx.load(str(tiny_run.run_dir / "model.onnx"))
    onnx.helper.set_model_props(proto, {**{prop.key: prop.value for prop in proto.metadata_props},
                                        "quantized": "int8 static"})
    onnx.save(proto, str(noted))
    quantize_dynamic(str(tiny_run.run_dir / "model.onnx"), str(tmp_path / "int8.onnx"))
    config = train.TrainConfig(dataset=tiny_dataset[1], out=tmp_path / "tune", arch="resnet18", bs=8, threads=1,
                               pretrained=False)
    for model in (noted, tmp_path / "int8.onnx"):
        with pytest.raises(TrainError, match=f"{model} is an int8 .quantized. model: start from the float model"):
            train.learner_for(replace(config, init=model))


def test_head_only_trains_the_head_on_the_body_as_loaded(tiny_run, tiny_dataset, tmp_path):
    """--head-only: the body's convolutions stay as --init loaded them while the head learns; a full fine-tune moves
    both. A random body cannot be the start of one."""
    import torch

    config = train.TrainConfig(dataset=tiny_dataset[1], out=tmp_path / "head", arch="resnet18", size=64, bs=8,
                               threads=1, pretrained=False, init=tiny_run.run_dir / "model.pkl", head_only=True)

    def changed(head_only: bool) -> tuple[bool, bool]:
        learn, _ = train.learner_for(config)
        before = {k: v.clone() for k, v in learn.model.state_dict().items()}
        train.fit(learn, 1, 1e-2, pretrained=False, patience=1, head_only=head_only)
        after = learn.model.state_dict()
        convolutions = [k for k in before if k.startswith("0.") and before[k].dim() == 4]
        linears = [k for k in before if k.startswith("1.") and before[k].dim() == 2]
        assert convolutions and linears
        return (any(not torch.equal(before[k], after[k]) for k in convolutions),
                any(not torch.equal(before[k], after[k]) for k in linears))

    assert changed(head_only=True) == (False, True)
    assert changed(head_only=False) == (True, True)
    with pytest.raises(TrainError, match="--head-only trains on a trained body"):
        replace(config, init=None)
    args = train.build_parser().parse_args(["train", "--dataset", str(config.dataset), "--out", str(config.out),
                                            "--no-pretrained", "--init", str(config.init), "--head-only"])
    assert train.config_from(args).head_only


def test_the_shipped_model_rebuilds_for_fine_tuning_at_another_size(tiny_dataset, tmp_path):
    """`--init models/guAlta.onnx` (ResNet34, weights stored in float16, input 320 px) in a run at 64 px: the rebuilt
    network scores the client's own 320 px inputs as the shipped file does."""
    import torch

    from gualta.model import load_model, preprocess
    from test_model import REPO, dataset_images

    shipped = REPO / "models" / "guAlta.onnx"
    config = train.TrainConfig(dataset=tiny_dataset[1], out=tmp_path / "tune", arch="resnet34", size=64, bs=8,
                               threads=1, pretrained=False, init=shipped)
    learn, _ = train.learner_for(config)
    images = dataset_images(tiny_dataset[1])
    with torch.no_grad():
        rebuilt = torch.softmax(learn.model.eval()(torch.from_numpy(preprocess(images, 320))), 1)[:, 0].numpy()
    expected = load_model(shipped).predict(images)
    assert expected.max() > 0.5 > expected.min()                                   # meteors and not
    assert np.abs(rebuilt - expected).max() < 1e-4


def test_an_onnx_init_a_run_cannot_start_from_is_refused_before_anything_is_built(tiny_dataset, tmp_path, monkeypatch):
    """`--init models/guAlta.onnx` without --no-pretrained built the learner first, fetching ImageNet's 83 MB of
    weights online (or failing on them offline), and was refused for its normalisation only after."""
    from test_model import REPO

    def no_learner(*args, **kwargs):
        raise AssertionError("a learner was built")

    monkeypatch.setattr(train, "make_learner", no_learner)
    config = train.TrainConfig(dataset=tiny_dataset[1], out=tmp_path / "tune", arch="resnet34", size=64, bs=8,
                               threads=1, pretrained=True, init=REPO / "models" / "guAlta.onnx")
    with pytest.raises(train.TrainError, match="normalises its input differently.*--no-pretrained"):
        train.learner_for(config)
    config.pretrained, config.arch = False, "resnet18"
    with pytest.raises(train.TrainError, match="is a resnet34, this run trains a resnet18"):
        train.learner_for(config)


def test_the_shipped_models_recipe_runs_end_to_end(tmp_path):
    """models/build_shipped_model.sh, the script a GPU run executes, at a toy size: training nights simulated,
    dataset built, ResNet34 trained and shipped in float16 storage where SHIP_TO says."""
    import os
    import subprocess
    import sys

    from gualta.model import load_model
    from test_model import REPO

    ship = tmp_path / "guAlta.onnx"
    env = {**os.environ, "PYTHON": sys.executable, "PROCS": "2", "TRAIN_NIGHTS": "2", "TRAIN_FRAMES": "24",
           "TEST_NIGHTS": "0", "EPOCHS": "1", "SIZE": "32", "BS": "4", "SHIP_TO": str(ship)}
    done = subprocess.run(["bash", "models/build_shipped_model.sh", str(tmp_path / "work")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "work" / "nights" / "train").iterdir()) == ["20210801", "20210804"]
    index = pd.read_csv(tmp_path / "work" / "ds_train" / "index.csv")
    assert set(index["meteor"]) == {0, 1} and set(index["dataset"]) == {"train"}
    shipped = load_model(ship)
    assert (shipped.info.arch, shipped.info.size) == ("resnet34", 32)
    assert shipped.predict([np.zeros((400, 400), np.uint8)]).shape == (1,)
    assert ship.stat().st_size < 0.6 * (tmp_path / "work" / "run" / "model.onnx").stat().st_size    # float16 storage


@pytest.mark.parametrize("command", [["evaluate", "--model", "m.onnx", "--dataset", "d", "--out", "o"],
                                     ["train", "--dataset", "d", "--out", "o"],
                                     ["fusion", "--diff", "a.csv", "--raw", "b.csv"]])
def test_a_threshold_is_a_score_from_0_to_1(command, capsys):
    """`--threshold 85` was taken: metrics.json then said threshold 85.0 and recall 0 (the client refuses 85)."""
    with pytest.raises(SystemExit) as refused:
        train.build_parser().parse_args([*command, "--threshold", "85"])
    assert refused.value.code == 2 and "must be from 0 to 1 (a score, such as 0.85): 85" in capsys.readouterr().err
    assert train.build_parser().parse_args([*command, "--threshold", "0.9"]).threshold == 0.9


def test_find_lr_names_a_sweep_too_short_to_suggest():
    """fastai's lr_find raised a bare IndexError when its loss diverged within a few steps (seen fine-tuning the
    shipped model on a small dataset): a TrainError now says what happened and what to do."""
    import contextlib

    class Learner:
        recorder = type("Recorder", (), {"losses": [0.7, 2.5, 40.0] + [float("nan")] * 20})()

        def no_bar(self):
            return contextlib.nullcontext()

        def lr_find(self, show_plot):
            raise IndexError("index 0 is out of bounds for dimension 0 with size 0")

    with pytest.raises(train.TrainError, match="lr_find stopped after 3 steps.*give the learning rate"):
        train.find_lr(Learner())
    Learner.recorder.losses = [0.7] * 100                               # a whole sweep: an error of its own
    with pytest.raises(IndexError):
        train.find_lr(Learner())


def test_importing_the_training_module_leaves_tqdm_auto_unloaded():
    """tqdm.auto, loaded by the command line's log redirection, warned in every training notebook (no ipywidgets):
    importing gualta.train, as the notebooks do, must not load it."""
    code = "import sys, gualta.train, gualta.cli; print('tqdm.auto' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
