"""Evaluation on the test nights only (index.csv dataset == test; never the validation split).

A model scores every test image into a predictions table (fn, night, file, meteor, event, peak_snr, clouds, ...,
p_meteor). Pure functions turn that table into the report; a frame is a detection when p_meteor ≥ threshold
(the operating threshold, 0.85 like the thesis and guAltaConfig.guAlta_threshold). The run folder gets:

    predictions.csv, metrics.json, confusion_matrix.png, loss_curves.png (from the run's history.csv/losses.csv),
    top_losses.png + top_losses.csv (the thesis' dataset curation), cam.png (Grad-CAM on meteor, cloud and
    satellite frames; fastai models only)
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from gualta.preprocess import read_gray

log = logging.getLogger(__name__)

THRESHOLD = 0.85
TARGET_RECALL = 0.98
FAINT_SNR = 5.0                   # a meteor with peak_snr below this is faint
UNLABELLED = "unlabelled"          # rates_by_event's name for frames without an event type (hand labels)
CLOUDY = 0.2                      # cloud cover from which a frame counts as cloudy
CAM_CLOUDY = 0.3
LOOKALIKES = ("satellite", "plane", "insect")
SNR_BINS = (0, 3, 5, 10, 30, math.inf)
SNR_LABELS = ("<3", "3-5", "5-10", "10-30", ">=30")
PREDICTION_COLUMNS = ["fn", "night", "file", "meteor", "event", "peak_snr", "clouds", "scenario", "long_gap",
                      "length_px"]
LABELS = ("meteor", "no-meteor")
REPORT_FILES = ("metrics.json", "predictions.csv", "confusion_matrix.png", "loss_curves.png", "top_losses.png",
                "top_losses.csv", "cam.png")                     # what `evaluate` writes into its folder


# --- pure metrics on a predictions table ------------------------------------------------------------------------

def detected(pred: pd.DataFrame, threshold: float = THRESHOLD) -> pd.Series:
    return pred["p_meteor"] >= threshold


def fraction(mask: pd.Series) -> float | None:
    """Mean of a boolean series, None when it is empty."""
    return float(mask.mean()) if len(mask) else None


def meteors(pred: pd.DataFrame) -> pd.DataFrame:
    return pred[pred["meteor"] == 1]


def non_meteors(pred: pd.DataFrame) -> pd.DataFrame:
    return pred[pred["meteor"] == 0]


def meteor_recall(pred: pd.DataFrame, threshold: float = THRESHOLD) -> float | None:
    return fraction(detected(meteors(pred), threshold))


def precision(pred: pd.DataFrame, threshold: float = THRESHOLD) -> float | None:
    """Fraction of detections that are meteors (None without detections)."""
    return fraction(pred.loc[detected(pred, threshold), "meteor"] == 1)


def faint_recall(pred: pd.DataFrame, threshold: float = THRESHOLD, faint_snr: float = FAINT_SNR) -> float | None:
    """Recall on meteors fainter than faint_snr (peak over the local noise)."""
    faint = meteors(pred)
    return fraction(detected(faint[faint["peak_snr"] < faint_snr], threshold))


def recall_by_snr(pred: pd.DataFrame, threshold: float = THRESHOLD) -> list[dict]:
    """Meteor recall per brightness bin of peak_snr: [{bin, n, recall}]."""
    found = meteors(pred).assign(hit=detected(meteors(pred), threshold),
                                 bin=pd.cut(meteors(pred)["peak_snr"], SNR_BINS, right=False, labels=SNR_LABELS))
    groups = found.groupby("bin", observed=False)["hit"]
    return [{"bin": str(name), "n": int(hits.size), "recall": fraction(hits)} for name, hits in groups]


def rates_by_event(pred: pd.DataFrame, threshold: float = THRESHOLD) -> dict[str, dict]:
    """Per event type: frames, meteor frames among them, and the fraction detected (recall for meteor and
    fireball, false-positive rate for satellite, plane, insect, none...); frames of no known event type (labelled
    by hand) as "unlabelled" (they were "none", meteors among them)."""
    table = pred.assign(hit=detected(pred, threshold), event=pred["event"].astype(object).fillna(UNLABELLED))
    return {str(event): {"n": len(rows), "n_meteor": int(rows["meteor"].sum()), "detected": fraction(rows["hit"])}
            for event, rows in table.groupby("event")}


def cloudy_non_meteors(pred: pd.DataFrame, min_clouds: float = CLOUDY) -> pd.DataFrame:
    """The no-meteor frames with cloud cover ≥ min_clouds."""
    others = non_meteors(pred)
    return others[others["clouds"] >= min_clouds]


def cloud_fp_rate(pred: pd.DataFrame, threshold: float = THRESHOLD, min_clouds: float = CLOUDY) -> float | None:
    """False-positive rate on no-meteor frames with cloud cover ≥ min_clouds."""
    return fraction(detected(cloudy_non_meteors(pred, min_clouds), threshold))


def lookalike_fp_rates(pred: pd.DataFrame, threshold: float = THRESHOLD) -> dict[str, float | None]:
    """False-positive rate on no-meteor frames showing a satellite, plane or insect: per event and together."""
    others = non_meteors(pred)
    rates = {event: fraction(detected(others[others["event"] == event], threshold)) for event in LOOKALIKES}
    rates["all"] = fraction(detected(others[others["event"].isin(LOOKALIKES)], threshold))
    return rates


def fp_rate_by_night(pred: pd.DataFrame, threshold: float = THRESHOLD) -> dict[str, float]:
    """False positives per no-meteor frame, night by night (the thesis measured 0.2–4.6 % a night)."""
    others = non_meteors(pred)
    return {str(night): float(hits.mean())
            for night, hits in detected(others, threshold).groupby(others["night"].astype(str))}


def threshold_for_recall(pred: pd.DataFrame, target: float = TARGET_RECALL) -> float | None:
    """The highest threshold at which meteor recall is still ≥ target (detection: p_meteor ≥ threshold)."""
    scores = -np.sort(-meteors(pred)["p_meteor"].to_numpy(float))         # highest first, NaN (never detected) last
    if not len(scores):
        return None
    needed = max(math.ceil(target * len(scores) - 1e-9), 1)
    return float(scores[needed - 1]) if needed <= np.isfinite(scores).sum() else None


def confusion_counts(pred: pd.DataFrame, threshold: float = THRESHOLD) -> dict[str, int]:
    """tp, fp, fn, tn with meteor as the positive class."""
    hit, truth = detected(pred, threshold), pred["meteor"] == 1
    return {"tp": int((hit & truth).sum()), "fp": int((hit & ~truth).sum()),
            "fn": int((~hit & truth).sum()), "tn": int((~hit & ~truth).sum())}


def predicted_labels(pred: pd.DataFrame, threshold: float = THRESHOLD) -> np.ndarray:
    return np.where(detected(pred, threshold), "meteor", "no-meteor")


def true_labels(pred: pd.DataFrame) -> np.ndarray:
    return np.where(pred["meteor"] == 1, "meteor", "no-meteor")


def classification_report(pred: pd.DataFrame, threshold: float = THRESHOLD) -> dict:
    """sklearn's per-class precision/recall/F1/support at the threshold."""
    from sklearn.metrics import classification_report as report

    return report(true_labels(pred), predicted_labels(pred, threshold), labels=list(LABELS), output_dict=True,
                  zero_division=0)


def ranking_scores(pred: pd.DataFrame) -> dict[str, float | None]:
    """ROC-AUC and PR-AUC (average precision) of p_meteor; None with a single class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    unscored = pred.loc[pred["p_meteor"].isna(), "fn"]
    if len(unscored):
        log.warning("%d frames have no score (NaN), %s first: the model gives no number for them; they count as not "
                    "detected, and the AUCs leave them out", len(unscored), unscored.iloc[0])
        pred = pred[pred["p_meteor"].notna()]
    if pred["meteor"].nunique() < 2:
        return {"roc_auc": None, "pr_auc": None}
    return {"roc_auc": float(roc_auc_score(pred["meteor"], pred["p_meteor"])),
            "pr_auc": float(average_precision_score(pred["meteor"], pred["p_meteor"]))}


def known_count(count: int, rows: pd.DataFrame, column: str) -> int | None:
    """A count of rows by a ground-truth column, None if no row has a value there (hand labels give no peak_snr
    or clouds: 0 faint meteors or cloudy frames read as measured)."""
    return count if rows.empty or rows[column].notna().any() else None


def summarize(pred: pd.DataFrame, threshold: float = THRESHOLD) -> dict:
    """Every test-night figure of the report (metrics.json without the model and file details)."""
    at_target = threshold_for_recall(pred)
    faint = meteors(pred)["peak_snr"] < FAINT_SNR
    return {"threshold": threshold, "n_test": len(pred), "n_meteor": len(meteors(pred)),
            "test_nights": sorted(pred["night"].astype(str).unique().tolist()),
            "meteor_recall": meteor_recall(pred, threshold), "precision": precision(pred, threshold),
            "faint_snr": FAINT_SNR, "n_faint": known_count(int(faint.sum()), meteors(pred), "peak_snr"),
            "faint_recall": faint_recall(pred, threshold), "cloudy_from": CLOUDY,
            "n_cloudy_no_meteor": known_count(len(cloudy_non_meteors(pred)), non_meteors(pred), "clouds"),
            "cloud_fp_rate": cloud_fp_rate(pred, threshold), "lookalike_fp_rate": lookalike_fp_rates(pred, threshold),
            "fp_rate_by_night": fp_rate_by_night(pred, threshold),
            "confusion": confusion_counts(pred, threshold),
            "classification_report": classification_report(pred, threshold),
            "recall_by_event": rates_by_event(pred, threshold), "recall_by_snr": recall_by_snr(pred, threshold),
            "threshold_for_recall": {"target": TARGET_RECALL, "threshold": at_target,
                                     "precision": None if at_target is None else precision(pred, at_target)},
            **ranking_scores(pred)}


def metrics_summary(metrics: dict) -> dict:
    """The headline figures of a metrics.json (for a published model's JSON and the model card)."""
    keys = ("threshold", "n_test", "n_meteor", "meteor_recall", "precision", "faint_recall", "cloud_fp_rate",
            "roc_auc", "pr_auc")
    summary = {key: metrics.get(key) for key in keys}
    summary["lookalike_fp_rate"] = (metrics.get("lookalike_fp_rate") or {}).get("all")
    summary["threshold_for_recall_0.98"] = (metrics.get("threshold_for_recall") or {}).get("threshold")
    return summary


def format_summary(metrics: dict) -> str:
    """One line per headline figure, for the CLI; with no meteor in the test set, whose recall and precision say
    nothing, the false positives per no-meteor frame too, overall and night by night."""
    def text(value):
        return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
    lines = [f"  {key}: {text(value)}" for key, value in metrics_summary(metrics).items()]
    if metrics.get("n_meteor") == 0 and metrics.get("confusion"):
        counts = metrics["confusion"]
        rate = counts["fp"] / (counts["fp"] + counts["tn"]) if counts["fp"] + counts["tn"] else None
        by_night = ", ".join(f"{night} {text(float(value))}" for night, value in
                             (metrics.get("fp_rate_by_night") or {}).items())
        lines.append(f"  no_meteor_fp_rate: {text(rate)} (no meteors in the test set; by night: {by_night or 'n/a'})")
    return "\n".join(lines)


def top_losses(pred: pd.DataFrame, count: int = 16) -> pd.DataFrame:
    """The `count` test images with the highest cross-entropy −log p(true class): what to look at and relabel."""
    truth_p = np.where(pred["meteor"] == 1, pred["p_meteor"], 1 - pred["p_meteor"])
    table = pred.assign(loss=-np.log(np.clip(truth_p, 1e-7, 1.0)))
    return table.sort_values("loss", ascending=False).head(count)


def cam_sample(pred: pd.DataFrame, per_group: int = 4, seed: int = 0) -> pd.DataFrame:
    """Frames to explain: random meteors, and the highest-scored cloudy (clouds ≥ 0.3) and satellite no-meteor
    frames (what fools the model). Column `group` names the row's group."""
    others = non_meteors(pred)
    groups = {"meteor": meteors(pred).sample(frac=1.0, random_state=seed),
              "cloud": others[others["clouds"] >= CAM_CLOUDY].sort_values("p_meteor", ascending=False),
              "satellite": others[others["event"] == "satellite"].sort_values("p_meteor", ascending=False)}
    return pd.concat([rows.head(per_group).assign(group=name) for name, rows in groups.items()], ignore_index=True)


def fusion_scores(pred_diff: pd.DataFrame, pred_raw: pd.DataFrame, gate: float = 0.5) -> pd.DataFrame:
    """The difference-model table with both scores (p_diff, p_raw) and one score column per fusion rule. The two
    tables must score the same test images (ValueError otherwise: rules measured on a subset would mislead)."""
    for name, table, needed in (("diff", pred_diff, {"fn", "meteor", "p_meteor"}),
                                ("raw", pred_raw, {"fn", "p_meteor"})):
        if not needed <= set(table.columns):
            raise ValueError(f"the {name} table is not a predictions table ({', '.join(sorted(needed))}, ...)")
    shared = len(set(pred_diff["fn"]) & set(pred_raw["fn"]))
    if not shared == len(pred_diff) == len(pred_raw):
        raise ValueError(f"the tables score different images ({len(pred_diff)} diff, {len(pred_raw)} raw, {shared} "
                         f"shared): evaluate both models on the same test nights")
    both = pred_diff.merge(pred_raw[["fn", "p_meteor"]], on="fn", suffixes=("", "_raw"), validate="one_to_one")
    p_diff, p_raw = both["p_meteor"], both["p_meteor_raw"]
    return both.assign(p_diff=p_diff, p_raw=p_raw, product=p_diff * p_raw, mean=(p_diff + p_raw) / 2,
                       gated=np.where(p_raw >= gate, p_diff, 0.0))


FUSION_RULES = {"diff": "p_diff", "raw": "p_raw", "product": "product", "mean": "mean", "gated": "gated"}


def fusion_report(pred_diff: pd.DataFrame, pred_raw: pd.DataFrame, threshold: float = THRESHOLD,
                  gate: float = 0.5) -> pd.DataFrame:
    """Per fusion rule (diff alone, raw alone, product, mean, diff gated by raw ≥ gate): meteor recall, faint
    recall, precision and false-positive rates on cloudy and look-alike frames at the threshold."""
    scores = fusion_scores(pred_diff, pred_raw, gate)
    rows = {}
    for rule, column in FUSION_RULES.items():
        table = scores.assign(p_meteor=scores[column])
        rows[rule] = {"meteor_recall": meteor_recall(table, threshold), "faint_recall": faint_recall(table, threshold),
                      "precision": precision(table, threshold), "cloud_fp_rate": cloud_fp_rate(table, threshold),
                      "lookalike_fp_rate": lookalike_fp_rates(table, threshold)["all"],
                      "threshold_for_recall_0.98": threshold_for_recall(table)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("rule")


# --- scoring the test nights ------------------------------------------------------------------------------------

def test_rows(dataset_dir: str | Path) -> pd.DataFrame:
    """The test-night rows of a dataset's index.csv."""
    from gualta.train import read_index

    index = read_index(dataset_dir)
    return index[index["dataset"] == "test"].reset_index(drop=True)


def predict_test(model, dataset_dir: str | Path, batch: int = 64) -> pd.DataFrame:
    """Score every test image of the dataset with a gualta.model model: the predictions table."""
    rows = test_rows(dataset_dir)
    if rows.empty:
        raise ValueError(f"no test rows in {Path(dataset_dir) / 'index.csv'}")
    scores = []
    for start in tqdm(range(0, len(rows), batch), desc="evaluate", unit="batch", disable=None):
        images = [read_gray(Path(dataset_dir) / fn) for fn in rows["fn"][start:start + batch]]
        scores.append(model.predict(images))
    # a dataset labelled by hand has no simulator truth (event, brightness, clouds): those figures come out n/a
    return rows.reindex(columns=PREDICTION_COLUMNS).astype({"event": object}).assign(p_meteor=np.concatenate(scores))


def read_predictions(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"night": str, "file": str})


# --- the client against the simulator's ground truth ------------------------------------------------------------
# A client run (`guAlta.py batch --scores CSV`) on a simulated night becomes a predictions table whose p_meteor is
# 1 for a reported frame and 0 otherwise, so the metrics above measure the product as operators run it; the
# model's own score stays in `score`.

REPORTED = 0.5        # threshold on that p_meteor: a reported frame
STREAK_ENDS = ["x1", "y1", "x2", "y2"]       # a streak's ends in the frame's pixels: the client's, and the truth's
TRUE_ENDS = [f"true_{end}" for end in STREAK_ENDS]
STREAK_TOLERANCE_PX = 20.0    # a reported streak is on the meteor when both its ends lie this near the true streak


def client_predictions(scores_csv: str | Path, truth_csv: str | Path) -> pd.DataFrame:
    """A client's scores CSV joined with the night's ground_truth.csv, one row per scored frame (skipped frames and
    frames without truth left out); the client's streak (x1…y2, empty without one or in an older client's CSV) beside
    the main event's (true_x1…true_y2)."""
    scores = pd.read_csv(scores_csv, dtype={"file": str, "flag": str, "note": str})
    scores = scores.reindex(columns=[*scores.columns, *(end for end in STREAK_ENDS if end not in scores)])
    truth = pd.read_csv(truth_csv, dtype={"file": str})
    truth = truth.reindex(columns=["file", "label", "event", "peak_snr", "clouds", "scenario", *STREAK_ENDS])
    table = scores[scores["score"].notna()].merge(
        truth.rename(columns={"label": "truth", **dict(zip(STREAK_ENDS, TRUE_ENDS))}), on="file", how="inner")
    return table.assign(night=Path(truth_csv).parent.name, meteor=table["truth"].eq("meteor").astype(int),
                        p_meteor=table["detection"].fillna(0).astype(float))


def client_summary(pred: pd.DataFrame, threshold: float = THRESHOLD) -> dict:
    """What the client found (recall, faint and bright recall, precision, cloudy false positives, fireballs, false
    positives by event, the share of its streaks on the meteor: `streak_share`) and, for comparison, the model alone
    at `threshold` on its own scores."""
    found, found_meteors = detected(pred, REPORTED), detected(meteors(pred), REPORTED)
    bright, faint = (meteors(pred)["peak_snr"] >= FAINT_SNR), (meteors(pred)["peak_snr"] < FAINT_SNR)
    fireballs = pred["event"].eq("fireball") & pred["meteor"].eq(1)
    false_events = pred.loc[found & pred["meteor"].eq(0), "event"].astype(object).fillna(UNLABELLED)
    model = pred.assign(p_meteor=pred["score"])
    return {"nights": sorted(pred["night"].astype(str).unique().tolist()), "scored": len(pred),
            "meteor_frames": len(meteors(pred)), "found": int(found_meteors.sum()), "detections": int(found.sum()),
            "recall": meteor_recall(pred, REPORTED), "precision": precision(pred, REPORTED),
            "faint_recall": faint_recall(pred, REPORTED),
            "n_faint": known_count(int(faint.sum()), meteors(pred), "peak_snr"),
            "bright_recall": fraction(found_meteors[bright]),
            "cloud_fp_rate": cloud_fp_rate(pred, REPORTED),
            "n_cloudy_no_meteor": len(cloudy_non_meteors(pred)),
            "fireballs": int(fireballs.sum()), "fireballs_found": int((fireballs & found).sum()),
            "false_by_event": false_events.value_counts().to_dict(),
            "streak_on_meteor": streak_share(pred, found_meteors),
            "model_alone": {"threshold": threshold, "recall": meteor_recall(model, threshold),
                            "precision": precision(model, threshold),
                            "cloud_fp_rate": cloud_fp_rate(model, threshold)}}


def streak_share(pred: pd.DataFrame, found_meteors: pd.Series) -> float | None:
    """The share of found meteor frames whose reported streak lies on the meteor (`streak_on_meteor`); None when the
    table holds no streak to compare (an older client's scores CSV, a ground truth without streaks)."""
    if pred[STREAK_ENDS].isna().all(axis=None) or pred[TRUE_ENDS].isna().all(axis=None):
        return None
    return fraction(streak_on_meteor(meteors(pred)[found_meteors]))


def streak_on_meteor(pred: pd.DataFrame, tolerance: float = STREAK_TOLERANCE_PX) -> pd.Series:
    """Whether each row's reported streak lies on its true streak: both ends within `tolerance` pixels of the true
    segment (a piece of the meteor counts; a satellite's streak beside it, a longer line or no streak does not)."""
    ends = pred[STREAK_ENDS].to_numpy(float).reshape(-1, 2, 2)
    start, stop = (pred[TRUE_ENDS].to_numpy(float).reshape(-1, 2, 2)[:, i, None, :] for i in (0, 1))
    along = stop - start
    length2 = np.maximum((along ** 2).sum(axis=-1), 1e-9)
    t = np.clip(((ends - start) * along).sum(axis=-1) / length2, 0.0, 1.0)
    distance = np.hypot(*np.moveaxis(ends - (start + t[..., None] * along), -1, 0))
    return pd.Series((distance <= tolerance).all(axis=1), index=pred.index)     # NaN compares False: no streak


# --- figures ----------------------------------------------------------------------------------------------------

def figure(width: float, height: float):
    """A matplotlib Figure not attached to pyplot (no display needed, nothing left open)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_confusion(pred: pd.DataFrame, path: Path, threshold: float = THRESHOLD) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    fig = figure(4.5, 4)
    ConfusionMatrixDisplay.from_predictions(true_labels(pred), predicted_labels(pred, threshold),
                                            labels=list(LABELS), ax=fig.add_subplot(), colorbar=False,
                                            cmap="Blues")
    fig.suptitle(f"test nights, threshold {threshold}")
    fig.savefig(path, dpi=100)


def plot_loss_curves(history: pd.DataFrame, losses: pd.DataFrame, path: Path) -> None:
    """Smoothed train loss per batch and validation loss at each epoch end."""
    ax = (fig := figure(6, 4)).add_subplot()
    ax.plot(losses["iteration"], losses["train_loss"], label="train")
    ax.plot(history["iteration"], history["valid_loss"], "o-", label="valid")
    ax.set_xlabel("batches")
    ax.set_ylabel("loss")
    ax.legend()
    fig.savefig(path, dpi=100)


def plot_grid(images: list[np.ndarray], titles: list[str], path: Path, columns: int = 4,
              heatmaps: list[np.ndarray] | None = None) -> None:
    """Gray images in a grid with titles, optionally with a heatmap (0–1) laid over each."""
    rows = max(1, math.ceil(len(images) / columns))
    fig = figure(3 * columns, 3.2 * rows)
    for i, (image, title) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        if heatmaps is not None:
            ax.imshow(heatmaps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1,
                      extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.savefig(path, dpi=80)


def grad_cam(learn, images: list[np.ndarray]) -> np.ndarray:
    """Grad-CAM of the meteor class on the last convolutional block (the body's output): [N, h, w] in [0, 1]."""
    import torch
    from fastai.callback.hook import hook_output

    from gualta.export import inference_network
    from gualta.model import learner_info, preprocess

    info = learner_info(learn)
    logits = inference_network(learn)[:-1]                    # without the softmax
    body = logits[-1][0]
    x = torch.from_numpy(preprocess(images, info.size)).requires_grad_(True)
    with hook_output(body, detach=False) as activations:
        score = logits(x)[:, info.meteor_index].sum()
    acts = activations.stored
    grads, = torch.autograd.grad(score, acts)
    acts, grads = acts.detach(), grads.detach()
    cams = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1).relu()
    peak = cams.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return (cams / peak[:, None, None]).numpy()


# --- the whole report -------------------------------------------------------------------------------------------

def as_model(model, threads: int | None = None):
    """A gualta.model model from a path, a fastai Learner or a model object."""
    from gualta.model import FastaiModel, load_model

    if isinstance(model, (str, Path)):
        return load_model(model, threads=threads or 1)
    if hasattr(model, "predict") and hasattr(model, "info"):
        return model
    return FastaiModel(model)


def training_run(out_dir: Path, model_path: str | Path | None) -> Path | None:
    """The run folder whose training history (history.csv, losses.csv) the loss curves show: the evaluated model
    file's folder, else (a Learner: train evaluates into its run) the report folder; None when it has none (another
    run's history in the report folder is not this model's)."""
    folder = Path(model_path).parent if model_path else out_dir
    return folder if (folder / "history.csv").is_file() and (folder / "losses.csv").is_file() else None


def model_path(model) -> str:
    """The absolute path of the file a model was loaded from ('' for a Learner in memory)."""
    path = getattr(model, "path", None)
    return str(Path(path).resolve()) if path else ""


def warn_if_kind_differs(model, dataset_dir: Path) -> None:
    """Log when a model learnt from another input than the dataset holds (raw frames vs differences)."""
    from gualta.train import dataset_kind

    holds = dataset_kind(dataset_dir)
    if model.info.kind != holds:
        log.warning("the model scores %s images but %s holds %s images: its figures say nothing of it",
                    model.info.kind, dataset_dir, holds)


def warn_if_images_differ(model, dataset_dir: Path) -> None:
    """Log when a model learnt from images of another side than the dataset's test images (another dataset
    version: 400 px v4 or raw, 224 px v1–v3)."""
    rows = test_rows(dataset_dir)
    if rows.empty:                                  # predict_test says so
        return
    holds = read_gray(dataset_dir / rows["fn"].iloc[0]).shape[0]
    if model.info.image_size != holds:
        log.warning("the model learnt from %d px images but %s holds %d px images (another dataset version): its "
                    "figures say nothing of it", model.info.image_size, dataset_dir, holds)


def seen_in_training(model, pred: pd.DataFrame) -> list[str]:
    """The test nights the model learnt from (its `train_nights`), warned of: a dataset prepared again after nights
    were added moves nights between train and test, and the figures there are no test."""
    seen = sorted(set(pred["night"].dropna().astype(str)) & set(model.info.train_nights))
    if seen:
        log.warning("test night(s) %s were among the model's training nights: its figures there are no test "
                    "(prepare the dataset with --test-nights naming nights it has not seen)", ", ".join(seen))
    return seen


def write_figures(pred: pd.DataFrame, model, dataset_dir: Path, out_dir: Path, threshold: float,
                  top_n: int, cam_per_group: int) -> dict[str, str]:
    """confusion_matrix.png, loss_curves.png (if the run has a history), top_losses.png/.csv, cam.png (fastai)."""
    written = {}
    plot_confusion(pred, out_dir / "confusion_matrix.png", threshold)
    written["confusion_matrix"] = "confusion_matrix.png"
    run_dir = training_run(out_dir, getattr(model, "path", None))
    if run_dir is not None:
        plot_loss_curves(pd.read_csv(run_dir / "history.csv"), pd.read_csv(run_dir / "losses.csv"),
                         out_dir / "loss_curves.png")
        written["loss_curves"] = "loss_curves.png"
    worst = top_losses(pred, top_n)
    worst.to_csv(out_dir / "top_losses.csv", index=False)
    plot_grid([read_gray(dataset_dir / fn) for fn in worst["fn"]],
              [f"{'meteor' if r.meteor else 'no-meteor'} · {r.event}\np={r.p_meteor:.3f} loss={r.loss:.2f}"
               for r in worst.itertuples()], out_dir / "top_losses.png")
    written.update(top_losses_csv="top_losses.csv", top_losses="top_losses.png")
    learn = getattr(model, "learn", None)
    sample = cam_sample(pred, cam_per_group)
    if learn is not None and len(sample):
        images = [read_gray(dataset_dir / fn) for fn in sample["fn"]]
        plot_grid(images, [f"{r.group} · {r.event} · p={r.p_meteor:.3f}" for r in sample.itertuples()],
                  out_dir / "cam.png", columns=cam_per_group, heatmaps=list(grad_cam(learn, images)))
        written["cam"] = "cam.png"
    for stale in {"loss_curves.png", "cam.png"} - set(written.values()):     # an earlier report's, another model's
        (out_dir / stale).unlink(missing_ok=True)
    return written


def evaluate(model, dataset_dir: str | Path, out_dir: str | Path, threshold: float = THRESHOLD,
             threads: int | None = None, top_n: int = 16, cam_per_group: int = 4) -> dict:
    """Score the test nights and write predictions.csv, metrics.json and the figures to out_dir; return metrics.

    `model`: a .pkl/.onnx path, a fastai Learner, or a gualta.model model. Grad-CAM needs a fastai model.
    """
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = as_model(model, threads)
    warn_if_kind_differs(model, dataset_dir)
    warn_if_images_differ(model, dataset_dir)
    pred = predict_test(model, dataset_dir)
    for earlier in REPORT_FILES:                    # an earlier report's files must not pass for this one's
        (out_dir / earlier).unlink(missing_ok=True)
    pred.to_csv(out_dir / "predictions.csv", index=False)
    metrics = {**summarize(pred, threshold),
               "model": {"path": model_path(model), **vars(model.info)},
               "dataset": str(dataset_dir), "test_nights_seen_in_training": seen_in_training(model, pred)}
    metrics["artefacts"] = {"predictions": "predictions.csv",
                            **write_figures(pred, model, dataset_dir, out_dir, threshold, top_n, cam_per_group)}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return metrics
