"""The thesis' fastai recipe on a folder dataset (index.csv), from Python, the CLI and the notebooks.

    python -m gualta.train train   --dataset DATA --out RUN [--arch resnet34|resnet18] [--size S] [--epochs 35]
                                   [--lr 1e-3] [--bs 32] [--seed 42] [--pretrained|--no-pretrained] [--threads N]
                                   [--balance downsample|weighted|oversample|none] [--patience 5]
                                   [--kind diff|raw] [--workers 0] [--lr-find] [--no-evaluate] [--threshold 0.85]
                                   [--min-snr 0] [--min-length 0] [--short-min-snr S]
                                   [--init RUN/model.pkl|models/guAlta.onnx] [--head-only] [--mixed-precision]
    python -m gualta.train lr-find --dataset DATA --out RUN [the training options]
    python -m gualta.train evaluate --model RUN/model.pkl|.onnx --dataset DATA --out RUN [--threshold 0.85]
                                    [--threads 1]
    python -m gualta.train export  --model RUN/model.pkl --out RUN/model.onnx
    python -m gualta.train quantize --model RUN/model.onnx --night NIGHT --out RUN/model-int8.onnx [--pairs 64]
    python -m gualta.train halve   --model RUN/model.onnx --out RUN/model-half.onnx
    python -m gualta.train publish --model RUN/model.onnx --store STORE [--version N] [--metrics RUN/metrics.json]
    python -m gualta.train raw-dataset --dataset DATA --nights ROOT --out RAW_DATA [--workers 1]
    python -m gualta.train fusion  --diff RUN/predictions.csv --raw RAW_RUN/predictions.csv [--threshold 0.85]
                                   [--gate 0.5] [--out fusion.csv]

Recipe: training rows of index.csv (never the test nights) → balance (default: no-meteor sampled down to the meteor
count, seeded) → 20 % seeded validation split → ImageDataLoaders.from_df, Resize(size), dihedral + 180° rotation
(reflection padding, no warp, no zoom) + lighting, bs 32 → vision_learner(resnet34|resnet18) → with ImageNet
weights fine_tune(epochs, lr), from scratch unfreeze + fit_one_cycle(epochs, lr), head only fit_one_cycle on the
frozen body → EarlyStopping and SaveModel on valid_loss (from --init: its weights kept when no epoch beats them) →
model.pkl + model.onnx, history.csv, losses.csv, config.json in the run folder, then (unless --no-evaluate) the
test-night evaluation there.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from datetime import datetime, timezone
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from gualta.cli import (ignore_interrupt, non_negative_int, non_negative_number, positive_int, positive_number,
                        run_subcommand, unit_interval)
from gualta.dataset import INDEX, RAW_MARKER, refuse_incomplete, write_image
from gualta.model import CLASSES, INPUT_KINDS, night_names
from gualta.preprocess import TRAIN_SIZE, BadFrame, read_gray, resize_area

log = logging.getLogger(__name__)

ARCHS = ("resnet34", "resnet18")
BALANCES = ("downsample", "weighted", "oversample", "none")
LABEL = "label"
VALID = "is_valid"
CHECKPOINT = "best"
DEFAULT_SIZE = 224                  # the input side of a run that names none and starts from no model
LR_PLOT = "lr_find.png"


class TrainError(ValueError):
    """A training request that cannot be carried out (no dataset, one class only, weights unavailable...)."""


class Diverged(TrainError):
    """No epoch reached a finite validation loss."""


@dataclass
class TrainConfig:
    """Every option of a training run (saved as config.json in the run folder)."""
    dataset: Path
    out: Path
    arch: str = "resnet34"
    size: int | None = None          # input side, px; None: the init model's, else DEFAULT_SIZE (set by learner_for)
    epochs: int = 35
    lr: float = 1e-3
    bs: int = 32
    seed: int = 42
    pretrained: bool = True          # ImageNet weights (online); offline and CI: False
    threads: int | None = None
    balance: str = "downsample"
    patience: int = 5
    kind: str | None = None          # diff|raw; None: raw if the dataset was built by build_raw_dataset
    valid_pct: float = 0.2
    workers: int = 0                 # DataLoader processes
    lr_find: bool = False            # run lr_find first and train with its valley suggestion
    min_snr: float = 0.0             # training leaves out meteors fainter than this (ground-truth peak_snr)
    min_length: float = 0.0          # ... or shorter than this (ground-truth length_px, full-frame pixels)
    short_min_snr: float | None = None  # ... unless a short one reaches this peak_snr
    init: Path | None = None         # start from this model.pkl's or ONNX model's weights (same arch), e.g.
                                     # the shipped models/guAlta.onnx
    mixed_precision: bool = False    # bf16 autocast on a CUDA GPU (ignored on the CPU)
    head_only: bool = False          # train the head only, the body frozen as loaded (needs init or pretrained)

    def __post_init__(self):
        self.dataset, self.out = Path(self.dataset), Path(self.out)
        self.init = Path(self.init) if self.init else None
        for name, value, allowed in (("arch", self.arch, ARCHS), ("balance", self.balance, BALANCES),
                                     ("kind", self.kind, INPUT_KINDS + (None,))):
            if value not in allowed:
                raise TrainError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, allowed))}")
        if self.head_only and not (self.init or self.pretrained):
            raise TrainError("--head-only trains on a trained body: give --init MODEL or --pretrained")


@dataclass
class TrainResult:
    """What train() produced."""
    learn: object
    run_dir: Path
    history: pd.DataFrame
    seconds: float
    summary: dict = field(default_factory=dict)


# --- the data ---------------------------------------------------------------------------------------------------

def read_index(dataset_dir: str | Path) -> pd.DataFrame:
    """A dataset's index.csv (night and file kept as text)."""
    path = Path(dataset_dir) / INDEX
    refuse_incomplete(Path(dataset_dir), TrainError)
    if not path.is_file():
        raise TrainError(f"no {INDEX} in {dataset_dir}: build the dataset with dataPreparation.py prepare")
    try:
        index = pd.read_csv(path, dtype={"night": str, "file": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TrainError(f"{path} is not an index table ({type(exc).__name__}: {exc}): rebuild it with "
                         f"dataPreparation.py index") from None
    missing = {"fn", "dataset", "meteor"} - set(index.columns)
    if missing:
        raise TrainError(f"{path} lacks the column(s) {', '.join(sorted(missing))}: rebuild it with "
                         f"dataPreparation.py index")
    return index


def with_labels(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with a text label column (meteor|no-meteor) from the 1/0 meteor column."""
    return rows.assign(**{LABEL: np.where(rows["meteor"].astype(int) == 1, "meteor", "no-meteor")})


def downsample(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Every meteor row and as many no-meteor rows, drawn with a seeded RNG (the thesis' balancing)."""
    meteors, others = rows[rows["meteor"] == 1], rows[rows["meteor"] == 0]
    if len(others) > len(meteors):
        others = others.sample(n=len(meteors), random_state=seed)
    return pd.concat([meteors, others]).sort_index()


def validation_mask(count: int, valid_pct: float, seed: int) -> np.ndarray:
    """A seeded random choice of int(valid_pct × count) rows for validation."""
    mask = np.zeros(count, bool)
    mask[np.random.default_rng(seed).permutation(count)[:int(valid_pct * count)]] = True
    return mask


def oversample(rows: pd.DataFrame) -> pd.DataFrame:
    """Repeat the training meteor rows (validation untouched) until they about match the no-meteor rows."""
    train = rows[~rows[VALID]]
    meteors = train[train["meteor"] == 1]
    copies = int(round((train["meteor"] == 0).sum() / max(len(meteors), 1)))
    return pd.concat([rows] + [meteors] * max(copies - 1, 0), ignore_index=True)


def visible_meteors(rows: pd.DataFrame, min_snr: float = 0.0, min_length: float = 0.0,
                    short_min_snr: float | None = None) -> pd.DataFrame:
    """Leave out meteor rows too faint (peak_snr) or short (length_px) to show in a difference image — label noise
    for training; a short meteor stays if its peak_snr reaches short_min_snr (when given). Rows without those
    ground-truth columns (real, hand-labelled nights) are kept."""
    if not (min_snr or min_length) or "peak_snr" not in rows or "length_px" not in rows:
        return rows
    short = rows["length_px"] < min_length
    if short_min_snr is not None:
        short &= ~(rows["peak_snr"] >= short_min_snr)
    dropped = (rows["meteor"] == 1) & ((rows["peak_snr"] < min_snr) | short).fillna(False)
    log.info("training leaves out %d meteor frames below peak_snr %g or length %g px (short ones kept from "
             "peak_snr %s)", dropped.sum(), min_snr, min_length, short_min_snr)
    return rows[~dropped]


def training_rows(index: pd.DataFrame, balance: str = "downsample", valid_pct: float = 0.2,
                  seed: int = 42, min_snr: float = 0.0, min_length: float = 0.0,
                  short_min_snr: float | None = None) -> pd.DataFrame:
    """The train-night rows to learn from, labelled, balanced and split: columns fn, label, is_valid, ..."""
    rows = with_labels(visible_meteors(index[index["dataset"] == "train"], min_snr, min_length, short_min_snr))
    if set(rows[LABEL]) != set(CLASSES):
        raise TrainError(f"the training nights need both classes; found {sorted(set(rows[LABEL])) or 'none'}")
    if balance == "downsample":
        rows = downsample(rows, seed)
    rows = rows.reset_index(drop=True).assign(**{VALID: lambda r: validation_mask(len(r), valid_pct, seed)})
    learnt = set(rows.loc[~rows[VALID], LABEL])
    if learnt != set(CLASSES):
        missing = sorted(set(CLASSES) - learnt)
        raise TrainError(f"the validation draw took every {', '.join(missing)} image of the training nights "
                         f"({(rows[LABEL].isin(missing)).sum()}): too few to learn from; add nights or try another "
                         f"--seed")
    if balance == "oversample":
        rows = oversample(rows)
    return rows


def class_weights(rows: pd.DataFrame, classes=CLASSES) -> list[float]:
    """Inverse-frequency weights (n / (classes × n_class)) of the training part, in vocab order."""
    counts = rows.loc[~rows[VALID], LABEL].value_counts()
    return [len(rows[~rows[VALID]]) / (len(classes) * counts[c]) for c in classes]


def augmentations():
    """The thesis' batch augmentations: dihedral flips, any rotation (reflection padding), no warp or zoom,
    plus brightness/contrast."""
    from fastai.vision.augment import aug_transforms

    return aug_transforms(max_rotate=180, max_warp=0, min_zoom=1.0, max_zoom=1.0, pad_mode="reflection",
                          flip_vert=True, max_lighting=0.2)


def make_dataloaders(dataset_dir: str | Path, rows: pd.DataFrame, size: int = 224, bs: int = 32, seed: int = 42,
                     workers: int = 0):
    """ImageDataLoaders over the rows' PNGs (opened as RGB), split by their is_valid column."""
    from fastai.vision.all import ImageDataLoaders, Resize

    return ImageDataLoaders.from_df(rows, path=Path(dataset_dir), fn_col="fn", label_col=LABEL, valid_col=VALID,
                                    seed=seed, item_tfms=Resize(size), batch_tfms=augmentations(), bs=bs,
                                    num_workers=workers)


def meteor_recall(vocab):
    """Recall with meteor as the positive class (sklearn's pos_label is the class index in the vocab); a split
    without a meteor has 0/0 and counts 0, said here so it does not warn."""
    from fastai.metrics import skm_to_fastai
    from sklearn.metrics import recall_score

    return skm_to_fastai(recall_score, pos_label=list(vocab).index("meteor"), average="binary", zero_division=0,
                         name="meteor_recall")


def macro_precision():
    """Precision averaged over the classes; a class never predicted has 0/0 and counts 0 (sklearn's default, said
    here so it does not warn): a model that never says meteor earns no meteor precision."""
    from fastai.metrics import skm_to_fastai
    from sklearn.metrics import precision_score

    return skm_to_fastai(precision_score, average="macro", zero_division=0)


def make_learner(dls, arch: str = "resnet34", pretrained: bool = False, loss_weights: list[float] | None = None):
    """vision_learner with the thesis' metrics plus meteor recall; weighted cross-entropy if weights are given."""
    from fastai.vision.all import CrossEntropyLossFlat, F1Score, accuracy, error_rate, models, vision_learner
    from fastai.torch_core import default_device, tensor

    loss_func = (CrossEntropyLossFlat(weight=tensor(loss_weights).float().to(default_device()))
                 if loss_weights else None)
    metrics = [error_rate, accuracy, macro_precision(), F1Score(average="macro"), meteor_recall(dls.vocab)]
    try:
        return vision_learner(dls, getattr(models, arch), pretrained=pretrained, metrics=metrics,
                              loss_func=loss_func)
    except (OSError, RuntimeError) as exc:          # URLError is an OSError
        if pretrained:
            raise TrainError(f"cannot get the ImageNet weights of {arch} ({exc}); offline, use "
                             "--no-pretrained (PRETRAINED = False in the notebooks)")
        raise


def check_onnx_start(config: TrainConfig) -> None:
    """TrainError for an --init ONNX model this run cannot start from, before anything is built or downloaded."""
    from gualta.onnx_init import check_start

    try:
        check_start(config.init, config.arch, normalised=config.pretrained)
    except ValueError as exc:                       # OnnxInitError, or not a readable ONNX file
        raise TrainError(f"cannot start from {config.init}: {exc}") from None


def load_weights(learn, model: str | Path, arch: str) -> None:
    """Start learn from an earlier model's weights (fine-tuning): a fastai model.pkl, or an ONNX model such as the
    shipped models/guAlta.onnx (gualta.onnx_init rebuilds the network from it). The nights those weights learnt from
    join learn's `train_nights`: they are no test nights of the model either."""
    from fastai.learner import load_learner

    from gualta.export import props_of, read_onnx
    from gualta.model import learner_info
    from gualta.onnx_init import load_onnx_weights

    if Path(model).suffix == ".onnx":
        try:
            load_onnx_weights(learn, model, arch)
            learnt = props_of(read_onnx(model)).get("train_nights", "").split(",")
        except ValueError as exc:                   # OnnxInitError, or not a readable ONNX file
            raise TrainError(f"cannot start from {model}: {exc}") from None
        learn.train_nights = night_names([*learn.train_nights, *learnt])
        return
    try:
        source = load_learner(model, cpu=True)
    except FileNotFoundError:
        raise
    except Exception as exc:                        # a truncated or foreign pickle
        raise TrainError(f"cannot start from {model}: {type(exc).__name__}: {exc}") from None
    if (theirs := learner_info(source).arch) not in (arch, "unknown"):      # before a screenful of state_dict keys
        raise TrainError(f"cannot start from {model}: it is a {theirs}, this run trains a {arch}")
    try:
        learn.model.load_state_dict(source.model.state_dict())
    except RuntimeError as exc:
        raise TrainError(f"{model} does not fit {type(learn.model[0]).__name__} of this run: {exc}") from None
    if list(source.dls.vocab) != list(learn.dls.vocab):
        raise TrainError(f"{model} has classes {list(source.dls.vocab)}, this dataset {list(learn.dls.vocab)}")
    learn.train_nights = night_names([*learn.train_nights, *getattr(source, "train_nights", ())])


def init_size(model: Path) -> int | None:
    """The input side an --init model was trained at (ONNX metadata `input_size`, a .pkl's Resize); None where it
    does not read (load_weights then says why)."""
    from gualta.export import props_of, read_onnx
    from gualta.model import learner_info

    try:
        if model.suffix == ".onnx":
            return int(props_of(read_onnx(model))["input_size"])
        from fastai.learner import load_learner
        return learner_info(load_learner(model, cpu=True)).size
    except Exception:                               # unreadable, foreign, no metadata: load_weights' error to give
        return None


def input_size(config: TrainConfig) -> int:
    """--size, else the --init model's input side, else DEFAULT_SIZE; a --size other than the init's is warned of."""
    start = init_size(config.init) if config.init else None
    if config.size and start and config.size != start:
        log.warning("--size %d but %s was trained at %d px: it is measured, fine-tuned and (no epoch beating it) "
                    "kept at %d px; leave --size out to train at %d", config.size, config.init, start, config.size,
                    start)
    return config.size or start or DEFAULT_SIZE


def dataset_kind(dataset_dir: Path) -> str:
    """The input kind a dataset holds: raw if built by build_raw_dataset, else diff."""
    return "raw" if (Path(dataset_dir) / RAW_MARKER).is_file() else "diff"


def input_kind(config: TrainConfig) -> str:
    """The configured input kind, else the dataset's."""
    found = dataset_kind(config.dataset)
    if config.kind and config.kind != found:
        log.warning("--kind %s but %s looks like a %s dataset", config.kind, config.dataset, found)
    return config.kind or found


def learner_for(config: TrainConfig):
    """Seeded rows, DataLoaders and Learner for a config (CPU threads set first)."""
    import torch
    from fastai.torch_core import set_seed

    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed, reproducible=True)
    if config.init and Path(config.init).suffix == ".onnx":
        check_onnx_start(config)
    config.size = input_size(config)                # config.json records the side trained at
    rows = training_rows(read_index(config.dataset), config.balance, config.valid_pct, config.seed,
                         config.min_snr, config.min_length, config.short_min_snr)
    dls = make_dataloaders(config.dataset, rows, config.size, config.bs, config.seed, config.workers)
    if len(dls.train) == 0:                          # the training loader keeps full batches only
        raise TrainError(f"{len(dls.train_ds)} training images make no full batch of {config.bs}: lower --bs "
                         "or give the dataset more nights")
    weights = class_weights(rows, dls.vocab) if config.balance == "weighted" else None
    learn = make_learner(dls, config.arch, config.pretrained, weights)
    learn.path, learn.model_dir = config.out.absolute(), "checkpoints"
    learn.input_kind = input_kind(config)
    learn.image_size = read_gray(config.dataset / rows["fn"].iloc[0]).shape[0]     # 400: v4 or raw; 224: v1–v3
    learn.train_nights = night_names(rows["night"]) if "night" in rows else ()
    if config.init:
        load_weights(learn, config.init, config.arch)
    if config.head_only:
        learn.freeze()                              # before lr_find too: it suggests a rate for what will train
    if config.mixed_precision and torch.cuda.is_available():
        learn.to_bf16()
    return learn, rows


# --- training ---------------------------------------------------------------------------------------------------

SHORT_SWEEP = 100 // 10 + 5         # lr_find steps with a loss (of its 100) too few for fastai's valley: it drops the
                                    # first 10 % and the last 5


def find_lr(learn, out_dir: str | Path | None = None) -> float:
    """fastai lr_find; saves lr_find.png (loss against learning rate, valley marked) in out_dir if given; returns
    the valley suggestion. A sweep the loss ends at once (it diverges early, as from trained weights or on a handful
    of images) leaves fastai nothing to suggest from: TrainError."""
    import matplotlib.pyplot as plt

    with learn.no_bar():
        try:
            valley = float(learn.lr_find(show_plot=False).valley)
        except IndexError as exc:
            steps = sum(math.isfinite(float(loss)) for loss in learn.recorder.losses)
            if steps > SHORT_SWEEP:                         # not the empty suggestion: an error of its own
                raise
            raise TrainError(f"lr_find stopped after {steps} steps, too few to suggest a learning "
                             "rate (the loss diverged at once: trained starting weights or too few images); "
                             "give the learning rate instead of running lr_find") from exc
    if out_dir is not None:
        learn.recorder.plot_lr_find()
        plt.gca().axvline(valley, color="tab:orange", ls="--", label=f"valley {valley:.2g}")
        plt.gca().legend()
        plt.gcf().savefig(Path(out_dir) / LR_PLOT, dpi=100)
        plt.close("all")
    return valley


def fit(learn, epochs: int, lr: float, pretrained: bool, patience: int, head_only: bool = False) -> None:
    """fine_tune from ImageNet weights; from scratch, unfreeze + fit_one_cycle (fine_tune's frozen random body
    learns nothing); head_only, fit_one_cycle on the learner as learner_for froze it (the body's weights stay as
    loaded, its batch norms adapt, as fastai's freeze leaves them). Early stopping and best-model saving on
    valid_loss; the best epoch's weights are kept."""
    from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback

    callbacks = [EarlyStoppingCallback(monitor="valid_loss", patience=patience),
                 SaveModelCallback(monitor="valid_loss", fname=CHECKPOINT)]
    try:
        if head_only:
            learn.fit_one_cycle(epochs, lr, cbs=callbacks)
        elif pretrained:
            learn.fine_tune(epochs, lr, cbs=callbacks)
        else:
            learn.unfreeze()
            learn.fit_one_cycle(epochs, lr, cbs=callbacks)
    except FileNotFoundError as exc:                # SaveModelCallback never saw a finite loss to save
        if not str(exc.filename or "").endswith(f"{CHECKPOINT}.pth"):
            raise
        raise Diverged(f"training diverged: no epoch reached a finite validation loss; try a lower --lr than "
                       f"{lr:g}") from None


def starting_point(learn) -> tuple[float, dict]:
    """The validation loss of the weights a fine-tune starts from, and a copy of them."""
    import copy

    with learn.no_bar():
        loss = float(learn.validate()[0])
    return loss, copy.deepcopy(learn.model.state_dict())


def training_history(recorder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-epoch table (epoch, train_loss, valid_loss, metrics, iteration) and per-batch smoothed train loss of the
    last fit (with fine_tune: the unfrozen one)."""
    names = [n for n in recorder.metric_names if n not in ("epoch", "time")]
    history = pd.DataFrame([[float(v) for v in values] for values in recorder.values], columns=names)
    history.insert(0, "epoch", range(len(history)))
    history["iteration"] = recorder.iters[:len(history)]
    losses = pd.DataFrame({"iteration": range(len(recorder.losses)),
                           "train_loss": [float(loss) for loss in recorder.losses]})
    return history, losses


def best_epoch(history: pd.DataFrame) -> dict:
    """The history row with the lowest validation loss (the weights SaveModelCallback kept)."""
    finite = history["valid_loss"].dropna()
    return history.loc[finite.idxmin()].to_dict() if len(finite) else {}


def jsonable(config: TrainConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def clear_earlier(run_dir: Path, names) -> None:
    """Remove what a run trained before into run_dir left that this one does not replace: its checkpoint before
    training (fastai loads it as this run's best epoch, even after a divergence), its ONNX model, summary, evaluation
    and lr_find plot once training is done, before the new model is written (they would pass for the new model's; a
    run that fails in training leaves the earlier ones whole, but for an lr_find plot it drew itself)."""
    earlier = [run_dir / name for name in names if (run_dir / name).is_file()]
    for path in earlier:
        path.unlink()
    if earlier:
        log.warning("%s held an earlier run: %s removed", run_dir, ", ".join(p.name for p in earlier))


def earlier_lr_plot(run_dir: Path) -> list[str]:
    """[LR_PLOT] when run_dir's lr_find plot was drawn for the run that trained there before (it is older than that
    run's config.json); a plot drawn since (by this run, the lr-find command or a notebook's find_lr) is this run's.
    Told by the files' times: a folder copied without them, or a plot drawn by a run that then failed, reads as
    this run's."""
    plot, earlier_run = run_dir / LR_PLOT, run_dir / "config.json"
    drawn_before = (plot.is_file() and earlier_run.is_file()
                    and plot.stat().st_mtime_ns <= earlier_run.stat().st_mtime_ns)
    return [LR_PLOT] if drawn_before else []


def train(config: TrainConfig) -> TrainResult:
    """Train by the recipe and write model.pkl, model.onnx, history.csv, losses.csv and config.json to config.out."""
    import torch

    from gualta.evaluate import REPORT_FILES
    from gualta.export import export_onnx, export_pkl

    run_dir = config.out
    run_dir.mkdir(parents=True, exist_ok=True)
    clear_earlier(run_dir, [f"checkpoints/{CHECKPOINT}.pth"])
    learn, rows = learner_for(config)
    lr = find_lr(learn, run_dir) if config.lr_find else config.lr
    log.info("training %s (%s, %s) on %d images (%d validation), lr %.2g", config.arch,
             (f"from {config.init}" if config.init else "pretrained" if config.pretrained else "from scratch")
             + (", head only" if config.head_only else ""),
             learn.input_kind, (~rows[VALID]).sum(),
             rows[VALID].sum(), lr)
    start = starting_point(learn) if config.init else None
    started = time.perf_counter()
    try:
        fit(learn, config.epochs, lr, config.pretrained, config.patience, config.head_only)
    except Diverged:
        if start is None:
            raise
    seconds = time.perf_counter() - started
    history, losses = training_history(learn.recorder)
    kept_start = start is not None and not history["valid_loss"].min() < start[0]     # NaN: not better either
    if kept_start:                                  # a fine-tune that made it worse leaves the model as it was
        log.warning("no epoch beat the starting weights' validation loss %.4f: keeping them", start[0])
        learn.model.load_state_dict(start[1])
    history.to_csv(run_dir / "history.csv", index=False)
    losses.to_csv(run_dir / "losses.csv", index=False)

    learn.to_fp32()                                 # exports hold no autocast callback
    learn.created = datetime.now(timezone.utc).isoformat(timespec="seconds")       # the .pkl's and the ONNX's
    # the earlier run's model, summary and evaluation go before the new model is written: a run cut short while
    # exporting leaves no earlier model.onnx or metrics.json beside this run's model.pkl
    clear_earlier(run_dir, ["model.onnx", "config.json", *REPORT_FILES, *earlier_lr_plot(run_dir)])
    export_pkl(learn, run_dir / "model.pkl")
    export_onnx(learn, run_dir / "model.onnx")
    (run_dir / "checkpoints" / f"{CHECKPOINT}.pth").unlink(missing_ok=True)
    summary = {"config": {**jsonable(config), "lr_used": lr, "kind": learn.input_kind},
               "data": {"train_images": int((~rows[VALID]).sum()), "valid_images": int(rows[VALID].sum()),
                        "train_meteor": int(((~rows[VALID]) & (rows[LABEL] == "meteor")).sum()),
                        "vocab": list(learn.dls.vocab), "nights": list(learn.train_nights)},
               "training": {"seconds": round(seconds, 1), "epochs_run": len(history),
                            "images_per_s": round(len(history) * int((~rows[VALID]).sum()) / seconds, 2),
                            "device": str(next(learn.model.parameters()).device),
                            "threads": torch.get_num_threads()},
               "validation_best_epoch": best_epoch(history)}
    if start is not None:
        summary["init"] = {"valid_loss": round(start[0], 4), "kept_starting_weights": kept_start}
    (run_dir / "config.json").write_text(json.dumps(summary, indent=2, default=str))
    return TrainResult(learn, run_dir, history, seconds, summary)


def run(config: TrainConfig, evaluate: bool = True, threshold: float | None = None) -> TrainResult:
    """train(), then the test-night evaluation into the same run folder (metrics.json and figures)."""
    from gualta import evaluate as evaluation

    result = train(config)
    if evaluate and evaluation.test_rows(config.dataset).empty:
        log.warning("no test nights in %s: the model is not evaluated", config.dataset)
    elif evaluate:
        result.summary["test"] = evaluation.evaluate(
            result.learn, config.dataset, result.run_dir,
            threshold=evaluation.THRESHOLD if threshold is None else threshold)
    return result


# --- a second dataset on raw frames ----------------------------------------------------------------------------

def raw_image(frame_path: str | Path, size: int = TRAIN_SIZE) -> np.ndarray:
    """The raw-model input of a frame: grayscale, size×size INTER_AREA."""
    return resize_area(read_gray(frame_path), size)


def write_raw_image(frame_path: Path, image_path: Path) -> None:
    write_image(image_path, raw_image(frame_path))


def build_raw_dataset(dataset_dir: str | Path, nights_root: str | Path, out_dir: str | Path,
                      workers: int = 1) -> pd.DataFrame:
    """A parallel dataset of raw frames: for each row of the difference dataset's index.csv, its current frame
    (nights_root/night/file) as 400×400 gray at the same fn; the same index.csv, so fns match for fusion."""
    out_dir = Path(out_dir)
    if (out_dir / INDEX).exists():
        raise TrainError(f"{out_dir} already holds a dataset")
    index = read_index(dataset_dir)
    frames = [Path(nights_root) / night / file for night, file in zip(index["night"].astype(str), index["file"])]
    images = [out_dir / fn for fn in index["fn"]]
    with ProcessPoolExecutor(workers, initializer=ignore_interrupt) as pool:
        try:
            done = pool.map(write_raw_image, frames, images, chunksize=64)
            for _ in tqdm(done, total=len(index), desc="raw-dataset", unit="frame", disable=None):
                pass
        except KeyboardInterrupt:                   # stop now: the workers finish only the frames they hold
            pool.shutdown(cancel_futures=True)
            raise
    (out_dir / RAW_MARKER).write_text(json.dumps({"source": str(dataset_dir), "nights": str(nights_root),
                                                  "size": TRAIN_SIZE, "interpolation": "INTER_AREA"}))
    index.to_csv(out_dir / INDEX, index=False)      # last: a dataset with its index.csv is whole, its kind marked
    return index


# --- CLI --------------------------------------------------------------------------------------------------------

def config_from(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(dataset=args.dataset, out=args.out, arch=args.arch, size=args.size, epochs=args.epochs,
                       lr=args.lr, bs=args.bs, seed=args.seed, pretrained=args.pretrained, threads=args.threads,
                       balance=args.balance, patience=args.patience, kind=args.kind, workers=args.workers,
                       lr_find=getattr(args, "lr_find", False), min_snr=args.min_snr, min_length=args.min_length,
                       short_min_snr=args.short_min_snr, init=args.init, mixed_precision=args.mixed_precision,
                       head_only=args.head_only)


def cmd_train(args: argparse.Namespace) -> None:
    result = run(config_from(args), evaluate=not args.no_evaluate, threshold=args.threshold)
    training = result.summary["training"]
    print(f"train: {training['epochs_run']} epochs in {training['seconds']:.0f} s "
          f"({training['images_per_s']:.1f} img/s) → {result.run_dir}")
    if "test" in result.summary:
        from gualta.evaluate import format_summary
        print(format_summary(result.summary["test"]))


def cmd_lr_find(args: argparse.Namespace) -> None:
    config = config_from(args)
    config.out.mkdir(parents=True, exist_ok=True)
    learn, _ = learner_for(config)
    print(f"lr-find: valley {find_lr(learn, config.out):.2g} → {config.out / LR_PLOT}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from gualta.evaluate import evaluate, format_summary, test_rows

    rows = test_rows(args.dataset)
    if rows.empty:
        raise TrainError(f"no test nights in {args.dataset / INDEX}: prepare the dataset with --test-nights or "
                         "--test-fraction")
    model = opened_model(args.model, args.threads)
    probe_on(model, args.model, args.dataset / rows["fn"][0])
    metrics = evaluate(model, args.dataset, args.out, threshold=args.threshold)
    print(format_summary(metrics))


def probe_on(model, path: Path, image: Path) -> None:
    """Score one of the dataset's images before the run: a model that loads but cannot score them (another
    network's ONNX, another input size) is a TrainError with the reason's first line, not a traceback later."""
    from gualta.model import scoring_error

    frame = read_gray(image)
    try:
        model.predict([frame])
    except Exception as exc:
        raise TrainError(f"model {path} cannot score this dataset's images ({image.name}): {scoring_error(exc)}") \
            from None


def opened_model(path: Path, threads: int):
    """A model file loaded for evaluation; one that is missing says so, one that cannot be loaded is a TrainError
    with the reason (a truncated ONNX, a foreign pickle, another format)."""
    from gualta.model import load_model

    try:
        return load_model(path, threads=threads)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise TrainError(f"cannot load model {path}: {type(exc).__name__}: {exc}") from None


def cmd_export(args: argparse.Namespace) -> None:
    from gualta.export import export_onnx

    if args.model.suffix.lower() != ".pkl":
        raise TrainError(f"export reads a fastai .pkl (train writes model.pkl): {args.model}")
    path = export_onnx(opened_model(args.model, 1).learn, args.out)
    print(f"export: {path}")


def cmd_quantize(args: argparse.Namespace) -> None:
    from gualta.export import quantize_onnx

    if args.model.suffix.lower() != ".onnx":
        raise TrainError(f"quantize reads an ONNX model (export writes one): {args.model}")
    try:
        path = quantize_onnx(args.model, args.night, args.out, args.pairs)
    except ValueError as exc:
        raise TrainError(str(exc)) from exc
    print(f"quantize: {path} ({path.stat().st_size / 1e6:.1f} MB, from {args.model.stat().st_size / 1e6:.1f} MB)")


def cmd_halve(args: argparse.Namespace) -> None:
    from gualta.export import halve_onnx

    try:
        path = halve_onnx(args.model, args.out)
    except ValueError as exc:
        raise TrainError(str(exc)) from exc
    print(f"halve: {path} ({path.stat().st_size / 1e6:.1f} MB, from {args.model.stat().st_size / 1e6:.1f} MB)")


def cmd_publish(args: argparse.Namespace) -> None:
    from gualta.export import publish_model, read_metrics
    from gualta.store import StoreError

    try:
        metrics = read_metrics(args.metrics) if args.metrics else None
        info = publish_model(args.model, args.store, args.version, metrics,
                             s3_endpoint=os.environ.get("GUALTA_S3_ENDPOINT"))
    except (ValueError, StoreError) as exc:
        raise TrainError(str(exc)) from exc
    print(f"publish: version {info['version']} ({info['sha256'][:12]}, {info['size']} bytes) → "
          f"{args.store.rstrip('/')}/models")


def cmd_raw_dataset(args: argparse.Namespace) -> None:
    index = build_raw_dataset(args.dataset, args.nights, args.out, args.workers)
    print(f"raw-dataset: {len(index)} frames → {args.out}")


def cmd_fusion(args: argparse.Namespace) -> None:
    from gualta.evaluate import fusion_report, read_predictions

    try:
        report = fusion_report(read_predictions(args.diff), read_predictions(args.raw), args.threshold, args.gate)
    except (ValueError, pd.errors.EmptyDataError) as exc:
        raise TrainError(f"fusion: {exc}") from None
    if args.out:
        report.to_csv(args.out)
    print(report.to_string(float_format=lambda v: f"{v:.4f}"))


def add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, required=True, help="dataset folder with index.csv")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--arch", choices=ARCHS, default="resnet34", help="network (default: %(default)s)")
    parser.add_argument("--size", type=positive_int,
                        help=f"network input side, px (default: the --init model's, else {DEFAULT_SIZE})")
    parser.add_argument("--epochs", type=positive_int, default=35, help="epochs (default: %(default)s)")
    parser.add_argument("--lr", type=positive_number, default=1e-3,
                        help="(maximum) learning rate (default: %(default)s)")
    parser.add_argument("--bs", type=positive_int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                        help="start from ImageNet weights (default; needs internet once); offline: --no-pretrained")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads")
    parser.add_argument("--balance", choices=BALANCES, default="downsample",
                        help="class balance of the training set (default: %(default)s)")
    parser.add_argument("--patience", type=positive_int, default=5,
                        help="early-stopping patience, epochs (default: %(default)s)")
    parser.add_argument("--kind", choices=INPUT_KINDS, help="input kind (default: from the dataset)")
    parser.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader worker processes")
    parser.add_argument("--min-snr", type=non_negative_number, default=0.0,
                        help="leave out training meteors with ground-truth peak_snr below this")
    parser.add_argument("--min-length", type=non_negative_number, default=0.0,
                        help="leave out training meteors shorter than this (ground-truth length_px)")
    parser.add_argument("--short-min-snr", type=non_negative_number,
                        help="keep training meteors shorter than --min-length when their peak_snr reaches this")
    parser.add_argument("--init", type=Path, metavar="MODEL",
                        help="start from this model.pkl's or ONNX model's weights (same arch), e.g. models/guAlta.onnx")
    parser.add_argument("--mixed-precision", action="store_true", help="bf16 autocast when a CUDA GPU trains")
    parser.add_argument("--head-only", action="store_true",
                        help="train the head only, on the body --init or --pretrained loaded (its batch norms "
                             "adapt)")


def build_parser() -> argparse.ArgumentParser:
    """The training CLI: one subcommand per step, from a dataset to a published model."""
    parser = argparse.ArgumentParser(prog="python -m gualta.train", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_training_commands(commands)
    add_evaluate_command(commands)
    add_model_file_commands(commands)
    add_raw_frame_commands(commands)
    return parser


def add_training_commands(commands) -> None:
    """train (export and evaluation included) and lr-find, both with `add_training_options`."""
    train_cmd = commands.add_parser("train", help="train, export (pkl + ONNX) and evaluate on the test nights")
    add_training_options(train_cmd)
    train_cmd.add_argument("--lr-find", action="store_true", help="train with lr_find's valley suggestion")
    train_cmd.add_argument("--no-evaluate", action="store_true", help="skip the test-night evaluation")
    train_cmd.add_argument("--threshold", type=unit_interval, help="operating threshold (default 0.85)")
    train_cmd.set_defaults(run=cmd_train)

    lr_cmd = commands.add_parser("lr-find", help="fastai lr_find: plot and valley suggestion")
    add_training_options(lr_cmd)
    lr_cmd.set_defaults(run=cmd_lr_find)


def add_evaluate_command(commands) -> None:
    """evaluate: a model scored on the dataset's test nights."""
    evaluate_cmd = commands.add_parser("evaluate", help="score the test nights and write the report")
    evaluate_cmd.add_argument("--model", type=Path, required=True, help="model.pkl (all artefacts) or model.onnx")
    evaluate_cmd.add_argument("--dataset", type=Path, required=True)
    evaluate_cmd.add_argument("--out", type=Path, required=True, help="report folder")
    evaluate_cmd.add_argument("--threshold", type=unit_interval, default=0.85,
                              help="operating threshold (default: %(default)s)")
    evaluate_cmd.add_argument("--threads", type=positive_int, default=1)
    evaluate_cmd.set_defaults(run=cmd_evaluate)


def add_model_file_commands(commands) -> None:
    """What is done to a trained model's file: export (ONNX), quantize (int8), halve (float16), publish (to a
    store)."""
    export_cmd = commands.add_parser("export", help="ONNX from a fastai .pkl")
    export_cmd.add_argument("--model", type=Path, required=True)
    export_cmd.add_argument("--out", type=Path, required=True)
    export_cmd.set_defaults(run=cmd_export)

    quantize_cmd = commands.add_parser("quantize", help="an int8 copy of an ONNX model, calibrated on a night")
    quantize_cmd.add_argument("--model", type=Path, required=True, help="model.onnx")
    quantize_cmd.add_argument("--night", type=Path, required=True, help="a night folder of the camera's frames")
    quantize_cmd.add_argument("--out", type=Path, required=True)
    quantize_cmd.add_argument("--pairs", type=positive_int, default=64,
                              help="frame pairs to calibrate on, spread over the night")
    quantize_cmd.set_defaults(run=cmd_quantize)

    halve_cmd = commands.add_parser("halve", help="a copy of an ONNX model with its weights stored in float16")
    halve_cmd.add_argument("--model", type=Path, required=True, help="model.onnx")
    halve_cmd.add_argument("--out", type=Path, required=True)
    halve_cmd.set_defaults(run=cmd_halve)

    publish_cmd = commands.add_parser("publish", help="write an ONNX model to STORE/models with version and hash")
    publish_cmd.add_argument("--model", type=Path, required=True)
    publish_cmd.add_argument("--store", required=True, help="a store folder, or s3://bucket[/prefix] "
                             "(GUALTA_S3_ENDPOINT for a non-AWS endpoint)")
    publish_cmd.add_argument("--version", type=positive_int, help="default: the next version")
    publish_cmd.add_argument("--metrics", type=Path, help="the model's metrics.json (default: the one beside it, "
                             "when written after the model was trained)")
    publish_cmd.set_defaults(run=cmd_publish)


def add_raw_frame_commands(commands) -> None:
    """The second model, on raw frames: raw-dataset (its dataset) and fusion (its scores with the difference
    model's)."""
    raw_cmd = commands.add_parser("raw-dataset", help="the raw-frame twin of a difference dataset")
    raw_cmd.add_argument("--dataset", type=Path, required=True, help="difference dataset (its index.csv)")
    raw_cmd.add_argument("--nights", type=Path, required=True, help="root of the nights it was built from")
    raw_cmd.add_argument("--out", type=Path, required=True)
    raw_cmd.add_argument("--workers", type=positive_int, default=1, help="processes")
    raw_cmd.set_defaults(run=cmd_raw_dataset)

    fusion_cmd = commands.add_parser("fusion", help="compare rules fusing difference and raw-frame scores")
    fusion_cmd.add_argument("--diff", type=Path, required=True, help="predictions.csv of the difference model")
    fusion_cmd.add_argument("--raw", type=Path, required=True, help="predictions.csv of the raw-frame model")
    fusion_cmd.add_argument("--threshold", type=unit_interval, default=0.85,
                            help="operating threshold (default: %(default)s)")
    fusion_cmd.add_argument("--gate", type=unit_interval, default=0.5, help="raw score a gated detection needs")
    fusion_cmd.add_argument("--out", type=Path, help="CSV of the comparison")
    fusion_cmd.set_defaults(run=cmd_fusion)


def main(argv: list[str] | None = None) -> int:
    return run_subcommand(build_parser(), argv, (TrainError, BadFrame, FileNotFoundError))


if __name__ == "__main__":
    # run the imported module's main, so that its TrainError is the one gualta.evaluate raises (not __main__'s twin)
    from gualta import train as imported

    sys.exit(imported.main())
