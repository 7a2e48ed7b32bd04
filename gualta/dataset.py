"""The thesis' folder dataset: nights with ground truth → difference images in training_set|test_set/meteor|no-meteor.

Pipeline: each night's frames → (last good frame, frame) pairs labelled by the frame's ground truth → optional
balancing of the training pairs → the thesis' preprocessing of each pair (binary difference → dataset version)
→ a lossless PNG, listed in index.csv. Train and test pairs come from different nights. Bad frames (unreadable,
truncated, not an image, odd-sized) are logged and skipped; the next good frame pairs with the last good one.
"""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from gualta import allsky
from gualta.frames import NightFrames
from gualta.preprocess import VERSIONS, binary_difference, make_version, write_image_file

log = logging.getLogger(__name__)

LABELS = ("meteor", "no-meteor")
SPLIT_FOLDERS = {"train": "training_set", "test": "test_set"}
GROUND_TRUTH = "ground_truth.csv"
INDEX = "index.csv"
INCOMPLETE = ".prepare-incomplete" # while prepare writes a dataset: one it is left in was cut short
RAW_MARKER = "raw_frames.json"     # marks a dataset of raw frames (gualta.train.build_raw_dataset), not differences
INDEX_COLUMNS = ["fn", "dataset", "meteor", "night", "file", "event", "peak_snr", "long_gap"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SAMPLE_NAME = re.compile(r"^(?P<night>\d{8})_(?P<id>\d{14})$")     # <night>_<frame id>.png
THUMB_WIDTH = 320
SEPARATORS = (",", ";", "\t")      # of a labels CSV (Excel in a Spanish locale writes ;)
MAX_LISTED = 5                     # file names quoted in a per-night warning


class DatasetError(ValueError):
    """A request that cannot be carried out (missing folders, overlapping nights, bad labels file...)."""


@dataclass(frozen=True)
class Sample:
    """A labelled frame of a night; its image is the difference with the last good frame before it."""
    night: Path
    frame: Path
    label: str
    split: str
    truth: dict = field(default_factory=dict)      # the frame's other ground-truth columns

    @property
    def fn(self) -> str:
        """Image path relative to the dataset folder."""
        name = f"{self.night.name}_{allsky.frame_id(self.frame)}.png"
        return f"{SPLIT_FOLDERS[self.split]}/{self.label}/{name}"


@dataclass
class PreparedDataset:
    """What prepare_dataset wrote."""
    index: pd.DataFrame
    path: Path                      # index.csv
    skipped: int                    # pairs without an image: bad or unlabelled frames, no predecessor, no such frame
    balanced_out: int = 0           # no-meteor training pairs left out by balancing

    def summary(self) -> str:
        balanced = f", {self.balanced_out} no-meteor train pairs balanced out" if self.balanced_out else ""
        return f"{describe_index(self.index)}, {self.skipped} pairs skipped{balanced} → {self.path}"


@dataclass
class LabelSheet:
    """What label_aid wrote."""
    html: Path
    labels: Path
    pairs: int
    skipped: int

    def summary(self) -> str:
        return f"{self.pairs} pairs ({self.skipped} skipped) → {self.html}, edit {self.labels}"


def pair_difference(frames: NightFrames, pair: allsky.FramePair, version: str) -> np.ndarray:
    """The thesis' preprocessing of a pair: thresholded difference, then the dataset version."""
    binary = binary_difference(frames.image(pair.current), frames.image(pair.previous))
    return make_version(binary, version)


def write_image(path: Path, image: np.ndarray) -> None:
    """Write an image (format from the suffix), creating folders; raise OSError if it cannot (`write_image_file`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image_file(path, image)


# --- labels -----------------------------------------------------------------------------------------------------

def read_labels(path: str | Path) -> pd.DataFrame:
    """A labels CSV (at least `file,label`; extra columns are kept), one row per frame file name. A sheet edited by
    hand may be `;`-separated (a Spanish-locale Excel), cp1252-encoded, with headers in capitals and cells with
    spaces around them."""
    path = Path(path)
    try:
        table = read_sheet(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read labels {path}: {exc}") from exc
    table.columns = [str(column).strip().lower() for column in table.columns]
    missing = {"file", "label"} - set(table.columns)
    if missing:
        raise DatasetError(f"labels {path} lack the column(s) {', '.join(sorted(missing))} (its columns: "
                           f"{', '.join(table.columns)})")
    table["file"] = table["file"].map(lambda cell: str(cell).strip(), na_action="ignore")
    table["label"] = table["label"].map(lambda cell: str(cell).strip().lower(), na_action="ignore")
    table = table.drop_duplicates(["file", "label"], keep="last")
    repeated = table["file"].notna() & table["file"].duplicated(keep=False)
    conflicting = table.loc[repeated].drop_duplicates("file", keep="last")
    if len(conflicting):
        log.warning("labels %s: %d file(s) labelled differently in several rows, the last row's label kept: %s",
                    path, len(conflicting), listed_names([f"{row.file} (kept {row.label})"
                                                          for row in conflicting.itertuples()]))
    return table.drop_duplicates("file", keep="last").set_index("file", drop=False)


def read_sheet(path: Path) -> pd.DataFrame:
    """A CSV separated by what its header line holds most of (`,` `;` or tab; csv.Sniffer took the `l` of a lone
    `file` header for one); UTF-8 (with or without a BOM), else cp1252."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            with path.open(encoding=encoding, newline="") as sheet:
                header = sheet.readline()
            separator = max(SEPARATORS, key=header.count)           # ',' when none is there
            return pd.read_csv(path, sep=separator, encoding=encoding, keep_default_na=False, na_values=[""])
        except UnicodeDecodeError:
            if encoding == "cp1252":
                raise


def read_label_files(paths: str | Path | list[str | Path] | None) -> pd.DataFrame | None:
    """The labels of one or several CSVs in one table (a frame labelled in several: the last file's label)."""
    if paths is None:
        return None
    tables = [read_labels(path) for path in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if len(tables) < 2:
        return tables[0] if tables else None
    table = pd.concat(tables, ignore_index=True)
    return table.drop_duplicates("file", keep="last").set_index("file", drop=False)


def names_any_frame(labels: pd.DataFrame, night: Path) -> bool:
    """Whether the labels table names any of the night's frames."""
    return bool(labels.index.isin([frame.name for frame in allsky.list_frames(night)]).any())


def night_labels(night: Path, labels: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Labels of a night's frames: the given table when it names any of them, else the night's ground_truth.csv
    (a simulated night among labelled real ones); None if there are neither."""
    if labels is not None and names_any_frame(labels, night):
        return labels
    truth = night / GROUND_TRUTH
    return read_labels(truth) if truth.is_file() else None


def night_samples(night: Path, split: str, labels: pd.DataFrame | None = None) -> tuple[list[Sample], int]:
    """Labelled samples of a night's frame pairs, and how many pairs had no usable label (warned)."""
    allsky.say_lookalikes(night)
    frames = allsky.list_frames(night)
    if not frames:
        log.warning("night %s has no frames (image-YYYYMMDDHHMMSS.jpg): nothing to use", night)
        return [], 0
    if len(frames) == 1:
        log.warning("night %s has a single frame: no pairs", night)
        return [], 0
    table = night_labels(night, labels)
    current = [pair.current for pair in allsky.frame_pairs(frames)]
    if table is None:
        log.warning("night %s has no %s and no labels given name its frames: its %d pairs are skipped",
                    night, GROUND_TRUTH, len(current))
        return [], len(current)
    if labels is not None and table is not labels:
        log.info("night %s: the labels given name none of its frames: labelled by its %s", night.name, GROUND_TRUTH)
    samples, unlabelled = [], []
    for frame in current:
        label = table["label"].get(frame.name)
        if label not in LABELS:
            unlabelled.append(frame.name)
            continue
        truth = table.loc[frame.name].drop(["file", "label"]).to_dict()
        samples.append(Sample(night, frame, label, split, truth))
    if unlabelled:
        log.warning("night %s: %d frames missing from the labels or not labelled meteor/no-meteor, skipped: %s",
                    night.name, len(unlabelled), listed_names(unlabelled))
    return samples, len(unlabelled)


# --- nights and splits ------------------------------------------------------------------------------------------

def nights_under(root: str | Path) -> list[Path]:
    """The night folders (YYYYMMDD) under root, oldest first; DatasetError if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root}")
    nights = allsky.night_folders(root)
    if not nights:
        raise DatasetError(f"no night folders (YYYYMMDD) under {root}")
    return nights


def split_nights(nights: list[Path], test_fraction: float = 0.25, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Whole nights to train and test, sorted by name: round(fraction × nights) test nights (at least one, never
    all), those of the lowest `night_draw` — fixed for each night, so adding a night moves at most one other (the
    night at the edge of the test set) between train and test."""
    if not 0 < test_fraction < 1:
        raise DatasetError(f"the test fraction must be between 0 and 1, not {test_fraction}")
    nights = sorted(nights, key=lambda night: Path(night).name)
    if len(nights) < 2:
        raise DatasetError(f"need at least two nights to split into train and test, got {len(nights)}")
    test_count = min(max(1, round(test_fraction * len(nights))), len(nights) - 1)
    test = set(sorted(nights, key=lambda night: night_draw(Path(night).name, seed))[:test_count])
    return [night for night in nights if night not in test], [night for night in nights if night in test]


def night_draw(name: str, seed: int) -> float:
    """A number in [0, 1) fixed by the seed and the night's name (a hash: the same in every run and machine)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def split_labelled_nights(nights: list[Path], test_fraction: float = 0.25, seed: int = 0,
                          labels: pd.DataFrame | None = None) -> tuple[list[Path], list[Path]]:
    """split_nights among the nights with labelled pairs only (the labels table, else their ground_truth.csv): in a
    large archive with a few labelled nights, test nights drawn from all of them were seldom labelled ones."""
    labelled = [night for night in nights if has_labelled_pairs(Path(night), labels)]
    if len(labelled) < len(nights):
        log.info("%d of %d nights have no labelled pairs and are left out: %s", len(nights) - len(labelled),
                 len(nights), listed_names([Path(night).name for night in nights if night not in labelled]))
    if len(labelled) < 2:
        raise DatasetError(f"need at least two nights with labelled pairs to split into train and test, got "
                           f"{len(labelled)} of {len(nights)} nights")
    return split_nights(labelled, test_fraction, seed)


def has_labelled_pairs(night: Path, labels: pd.DataFrame | None = None) -> bool:
    """Whether a frame of the night that has a predecessor is labelled meteor or no-meteor."""
    table = night_labels(night, labels)
    if table is None:
        return False
    current = [pair.current.name for pair in allsky.frame_pairs(allsky.list_frames(night))]
    return bool(table["label"].reindex(current).isin(LABELS).any())


def listed_names(names: list[str]) -> str:
    """The first MAX_LISTED names, comma-separated, '...' if there are more."""
    return ", ".join(names[:MAX_LISTED]) + (", ..." if len(names) > MAX_LISTED else "")


def split_by_names(nights: list[Path], test_names: list[str]) -> tuple[list[Path], list[Path]]:
    """Train and test nights when the test nights are named (YYYYMMDD); DatasetError for unknown names."""
    unknown = set(test_names) - {Path(night).name for night in nights}
    if unknown:
        raise DatasetError(f"test night(s) not found: {', '.join(sorted(unknown))}")
    train = [night for night in nights if Path(night).name not in test_names]
    test = [night for night in nights if Path(night).name in test_names]
    return train, test


def check_nights(nights_train: list[Path], nights_test: list[Path]) -> None:
    """Every night exists, and no night is in both train and test (by folder name, or by its frames' time)."""
    for night in [*nights_train, *nights_test]:
        if not Path(night).is_dir():
            raise DatasetError(f"night folder not found: {night}")
    shared = {Path(n).name for n in nights_train} & {Path(n).name for n in nights_test}
    if shared:
        raise DatasetError(f"night(s) in both train and test: {', '.join(sorted(shared))}")
    names = [Path(n).name for n in [*nights_train, *nights_test]]
    repeated = {name for name in names if names.count(name) > 1}
    if repeated:
        raise DatasetError(f"night(s) given twice: {', '.join(sorted(repeated))}")
    check_split_nights(nights_train, nights_test)


def check_split_nights(nights_train: list[Path], nights_test: list[Path]) -> None:
    """Warn of a folder holding frames of another night (by their names' time: a night split by calendar date), and
    refuse a night whose frames would fall both in train and in test."""
    sides: dict[str, dict[str, list[str]]] = {}
    for split, folders in (("train", nights_train), ("test", nights_test)):
        for folder in map(Path, folders):
            held = [allsky.night_of(allsky.frame_time(frame)) for frame in allsky.list_frames(folder)]
            others = sorted(set(held) - {folder.name})
            if others:
                log.warning("folder %s holds %d frame(s) of night(s) %s (by their names' time; frames before noon "
                            "belong to the previous evening's night)", folder, sum(n != folder.name for n in held),
                            ", ".join(others))
            for night in set(held):
                sides.setdefault(night, {}).setdefault(split, []).append(folder.name)
    split_across = {night: folders for night, folders in sides.items() if len(folders) > 1}
    if split_across:
        raise DatasetError("night(s) in both train and test by their frames' time: " + "; ".join(
            f"{night} (train folder(s) {', '.join(folders['train'])}, test folder(s) {', '.join(folders['test'])})"
            for night, folders in sorted(split_across.items())) + ": put each night's frames in one folder")


# --- balancing --------------------------------------------------------------------------------------------------

def balance_samples(samples: list[Sample], seed: int = 0) -> list[Sample]:
    """Keep every meteor sample and as many no-meteor samples, drawn with a seeded RNG (the thesis' balancing)."""
    meteors = [s for s in samples if s.label == "meteor"]
    others = sorted((s for s in samples if s.label != "meteor"), key=lambda s: s.fn)
    if len(others) <= len(meteors):
        return samples
    if not meteors:
        log.warning("no meteor frames among the training nights: balancing leaves no training pairs")
    keep = np.random.default_rng(seed).choice(len(others), len(meteors), replace=False)
    kept = {others[i].fn for i in keep.tolist()}
    return [s for s in samples if s.label == "meteor" or s.fn in kept]


# --- writing a dataset ------------------------------------------------------------------------------------------

def write_night(samples: list[Sample], out_dir: Path, version: str, progress=None) -> tuple[list[dict], int]:
    """Write the images of one night's samples; return their index rows and how many were skipped."""
    if not samples:
        return [], 0
    frames = NightFrames(allsky.list_frames(samples[0].night), log)
    rows, skipped = [], 0
    for sample in sorted(samples, key=lambda s: allsky.taken_at(s.frame)):
        pair = frames.pair(sample.frame)
        if pair is None:
            skipped += 1
        else:
            write_image(out_dir / sample.fn, pair_difference(frames, pair, version))
            rows.append(index_row(sample, pair))
        if progress is not None:
            progress.update()
    frames.end_run()                                # a run of blank or frozen frames to the night's end: counted
    return rows, skipped


def index_row(sample: Sample, pair: allsky.FramePair) -> dict:
    """index.csv row of a written sample: the fixed columns, then the frame's other ground-truth columns."""
    fixed = {"fn": sample.fn, "dataset": sample.split, "meteor": int(sample.label == "meteor"),
             "night": sample.night.name, "file": sample.frame.name, "long_gap": pair.long_gap}
    carried = {key: value for key, value in sample.truth.items() if key not in fixed}
    return {**fixed, "event": None, "peak_snr": None, **carried}


def clear_dataset(out_dir: Path, overwrite: bool) -> None:
    """Make sure no earlier dataset in out_dir mixes with the new one: remove it if allowed, else refuse. Its kind
    marker goes too (differences over a raw-frame dataset trained as raw frames). Marks out_dir INCOMPLETE until the
    new index.csv is written: `index` would make a dataset cut short look whole."""
    old = [out_dir / folder for folder in SPLIT_FOLDERS.values()] + [out_dir / INDEX, out_dir / RAW_MARKER]
    present = [path for path in old if path.exists()]
    if present and not overwrite:
        raise DatasetError(f"{out_dir} already holds a dataset ({', '.join(p.name for p in present)}); "
                           "choose another folder or overwrite it (--overwrite)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INCOMPLETE).write_text("prepare is writing this dataset; still here: it was cut short\n")
    for path in present:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def refuse_incomplete(dataset_dir: Path, error: type[Exception]) -> None:
    """Raise `error` when a prepare into dataset_dir was cut short (its INCOMPLETE mark is still there)."""
    if (dataset_dir / INCOMPLETE).exists():
        raise error(f"{dataset_dir}: a prepare was cut short ({INCOMPLETE}): run dataPreparation.py prepare "
                    "--overwrite")


def prepare_dataset(nights_train: list[str | Path], nights_test: list[str | Path], out_dir: str | Path,
                    version: str = "v4", balance: bool = False, seed: int = 0,
                    labels: str | Path | list[str | Path] | pd.DataFrame | None = None, overwrite: bool = False,
                    workers: int = 1) -> PreparedDataset:
    """Build the thesis' folder dataset and its index.csv from train and test nights (never the same night).

    Each pair's image is the chosen version (v1–v4) of the thresholded difference of a frame and the last good frame
    before it, labelled by the frame. `labels` (one or several CSVs with file,label, or the table read_label_files
    made of them) replaces the ground_truth.csv of the nights whose frames they name.
    With balance, no-meteor training pairs are sampled down to the meteor count (the test set never is).
    """
    if version not in VERSIONS:
        raise DatasetError(f"unknown dataset version {version!r}; choose one of {', '.join(VERSIONS)}")
    nights_train, nights_test = [Path(n) for n in nights_train], [Path(n) for n in nights_test]
    check_nights(nights_train, nights_test)
    table = labels if isinstance(labels, pd.DataFrame) else read_label_files(labels)
    out_dir = Path(out_dir)
    samples, skipped = [], 0
    for split, nights in (("train", nights_train), ("test", nights_test)):
        for night in nights:
            night_list, unlabelled = night_samples(night, split, table)
            samples += night_list
            skipped += unlabelled
    unpaired = unpaired_meteors([*nights_train, *nights_test], table, samples)
    if not samples:
        raise DatasetError(f"no labelled frame pairs in the nights ({skipped} frames without a label"
                           + ("; does --labels name these nights' files?)" if table is not None else ")"))
    for split, role in (("train", "nothing to train on: a test set for evaluating a model only"),
                        ("test", "no test nights: a model trained on it is not evaluated")):
        if not any(sample.split == split for sample in samples):
            log.warning("the dataset has no %s pairs: %s", split, role)
    clear_dataset(out_dir, overwrite)               # only now: a request that makes nothing leaves the old dataset
    balanced_out = 0
    if balance:
        train = [s for s in samples if s.split == "train"]
        kept = balance_samples(train, seed)
        balanced_out = len(train) - len(kept)
        samples = kept + [s for s in samples if s.split == "test"]

    rows, failed = write_samples(samples, out_dir, version, workers)
    index = with_index_columns(pd.DataFrame(rows))
    out_dir.mkdir(parents=True, exist_ok=True)
    index.to_csv(out_dir / INDEX, index=False)
    (out_dir / INCOMPLETE).unlink()
    return PreparedDataset(index, out_dir / INDEX, skipped + len(unpaired) + failed, balanced_out)


def unpaired_meteors(nights: list[Path], labels: pd.DataFrame | None, samples: list[Sample]) -> list[str]:
    """The meteor-labelled files of the nights (the night their names' time falls in) that make no pair, warned with
    why: no such frame in the nights' folders, or a night's first frame. A bad frame is warned of where it is read."""
    names = {night.name for night in nights}
    tables = {id(table): table for table in (night_labels(night, labels) for night in nights) if table is not None}
    meteors = {file for table in tables.values() for file in table.loc[table["label"] == "meteor", "file"].dropna()
               if (stamp := allsky.frame_time(file)) is not None and allsky.night_of(stamp) in names}
    unpaired = meteors - {sample.frame.name for sample in samples}
    listed = [allsky.list_frames(night) for night in nights]
    present = {frame.name for frames in listed for frame in frames}
    reasons = {"no such frame in the nights' folders": sorted(unpaired - present),
               "a night's first frame (no frame before it)": sorted(unpaired & {frames[0].name for frames in listed
                                                                                if frames})}
    for why, files in reasons.items():
        if files:
            log.warning("%d meteor-labelled file(s) make no pair, %s: %s", len(files), why, listed_names(files))
    return [file for files in reasons.values() for file in files]


def write_samples(samples: list[Sample], out_dir: Path, version: str, workers: int = 1) -> tuple[list[dict], int]:
    """Write every sample's image, night by night (in parallel processes if workers > 1)."""
    by_night: dict[Path, list[Sample]] = {}
    for sample in samples:
        by_night.setdefault(sample.night, []).append(sample)
    rows, skipped = [], 0
    groups = list(by_night.values())
    with tqdm(total=len(samples), desc="prepare", unit="pair", disable=None) as bar:
        if workers <= 1 or len(groups) <= 1:
            for group in groups:
                night_rows, night_skipped = write_night(group, out_dir, version, bar)
                rows += night_rows
                skipped += night_skipped
        else:
            with ProcessPoolExecutor(workers) as pool:
                for night_rows, night_skipped in pool.map(write_night, groups, repeat(out_dir), repeat(version)):
                    rows += night_rows
                    skipped += night_skipped
                    bar.update(len(night_rows) + night_skipped)
    return rows, skipped


def with_index_columns(index: pd.DataFrame) -> pd.DataFrame:
    """The index with INDEX_COLUMNS first (added empty if missing), then any other columns."""
    return index.reindex(columns=INDEX_COLUMNS + [c for c in index.columns if c not in INDEX_COLUMNS])


def describe_index(index: pd.DataFrame) -> str:
    """'812 train (203 meteor), 270 test (61 meteor)'."""
    parts = []
    for split in SPLIT_FOLDERS:
        rows = index[index["dataset"] == split]
        parts.append(f"{len(rows)} {split} ({int(rows['meteor'].sum())} meteor)")
    return ", ".join(parts)


# --- indexing an existing folder dataset ------------------------------------------------------------------------

def index_dataset(out_dir: str | Path) -> pd.DataFrame:
    """Rebuild out_dir/index.csv from the folder layout (training_set|test_set/meteor|no-meteor/*.png).

    The folder an image lies in decides its split and label (so moving an image relabels it); an earlier index.csv
    gives night, file and its other columns for the images it lists, names like <night>_<frame id>.png the rest.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise DatasetError(f"not a folder: {out_dir}")
    refuse_incomplete(out_dir, DatasetError)
    rows = []
    for split, folder in SPLIT_FOLDERS.items():
        for label in LABELS:
            for image in sorted((out_dir / folder / label).glob("*")):
                if image.suffix.lower() in IMAGE_SUFFIXES:
                    rows.append({"fn": image.relative_to(out_dir).as_posix(), "dataset": split,
                                 "meteor": int(label == "meteor"), **names_of(image)})
    if not rows:
        raise DatasetError(f"no images in {out_dir}/{{{','.join(SPLIT_FOLDERS.values())}}}/{{{','.join(LABELS)}}}")
    index = pd.DataFrame(rows)
    previous = out_dir / INDEX
    if previous.is_file():
        index = carry_columns(index, readable_index(previous))
    index = with_index_columns(index)
    index.to_csv(previous, index=False)
    return index


def readable_index(path: Path) -> pd.DataFrame:
    """An earlier index.csv to carry columns from; an empty or unreadable one (a crash mid-write, another file
    saved over it) gives nothing, warned: the folders alone rebuild it."""
    try:
        return pd.read_csv(path, dtype={"night": str, "file": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        log.warning("%s cannot be read (%s): rebuilt from the folders alone", path, type(exc).__name__)
        return pd.DataFrame()


def names_of(image: Path) -> dict:
    """Night and frame file of a dataset image named <night>_<frame id>.png (empty if named otherwise)."""
    match = SAMPLE_NAME.match(image.stem)
    if not match:
        return {"night": None, "file": None}
    return {"night": match["night"], "file": f"image-{match['id']}.jpg"}


def carry_columns(index: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    """Add an earlier index's extra columns (event, peak_snr...) to the rebuilt index, matched by image name.

    Its night and file win over those read from the image's name, which cannot tell a .png frame from a .jpg one.
    """
    if "fn" not in previous.columns:
        return index
    known = [c for c in ("night", "file") if c in previous.columns]
    extra = [c for c in previous.columns if c not in ("fn", "dataset", "meteor", "night", "file")]
    previous = previous.assign(name=previous["fn"].map(lambda fn: Path(fn).name)).drop_duplicates("name")
    previous = previous[["name", *extra]].join(previous[known].add_prefix("earlier_"))
    index = index.assign(name=index["fn"].map(lambda fn: Path(fn).name)).merge(previous, on="name", how="left")
    for column in known:
        earlier = index.pop(f"earlier_{column}")
        index[column] = earlier.where(earlier.notna(), index[column])
    return index.drop(columns="name")


# --- labelling by eye -------------------------------------------------------------------------------------------

TEMPLATES = Path(__file__).parent / "templates"        # label_sheet.html, beside the site's pages


def thumbnail(image: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """The frame shrunk to `width` pixels wide, aspect kept."""
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def client_decisions(path: str | Path) -> pd.DataFrame:
    """The client's scores CSV (`guAlta.py batch --scores`), one row per frame file: score, detection, flag."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read scores {path}: {exc}") from exc
    missing = {"file", "score", "detection", "flag"} - set(table.columns)
    if missing:
        raise DatasetError(f"scores {path} lack the column(s) {', '.join(sorted(missing))}")
    return table.drop_duplicates("file", keep="last").set_index("file")


def client_view(decided) -> tuple[str, str, bool]:
    """(label the client implies, what it did, whether it was a candidate) for one scores row (None: not scored)."""
    if decided is None or decided["flag"] == "skipped":
        return "", "", False
    try:
        score = f" {float(decided['score']):.2f}" if decided["score"] else ""
    except ValueError:                              # a hand-edited file: show what it says
        score = f" {decided['score'][:12]}"
    if decided["detection"] == "1":
        return "meteor", f"reported{score}", True
    if decided["flag"]:
        return "no-meteor", f"held back ({decided['flag']}){score}", True
    return "no-meteor", f"no detection{score}", False


def label_aid(night_dir: str | Path, out_dir: str | Path, scores: str | Path | None = None) -> LabelSheet:
    """A contact sheet to label a night by eye: frame | v4 difference per pair in out_dir/index.html, plus
    out_dir/labels.csv (file,label) pre-filled from the night's ground truth when it has one, else from the
    client's `scores` CSV when given (its detections meteor, the rest no-meteor; its candidates marked), the
    pre-filled label also in column `prefilled`. Labels an earlier sheet's labels.csv holds that are not what it
    pre-filled are kept: given by hand (a rerun wiped a night's hand labelling); without `scores`, what it
    pre-filled from earlier scores stays, `client` column too (a rerun emptied the labels the operator confirmed by
    leaving them); its rows of other nights' frames are kept as they were."""
    night, out_dir = Path(night_dir), Path(out_dir)
    if not night.is_dir():
        raise DatasetError(f"night folder not found: {night}")
    if why := allsky.not_a_night(night):
        raise DatasetError(f"{night} {why}")
    allsky.say_lookalikes(night)
    frame_list = allsky.list_frames(night)
    if not frame_list:
        log.warning("night %s has no frames (image-YYYYMMDDHHMMSS.jpg)", night)
    truth = night_labels(night)
    client = client_decisions(scores) if scores is not None else None
    if client is not None and not client.index.isin([frame.name for frame in frame_list]).any():
        raise DatasetError(f"scores {scores} hold none of night {night.name}'s frames")
    labels = out_dir / "labels.csv"
    earlier = read_labels(labels) if labels.is_file() else None
    given = hand_labels(earlier) if earlier is not None else {}
    rows, skipped = label_rows(frame_list, out_dir, truth, client, earlier, given)
    html = write_label_page(out_dir, night.name, rows, client is not None)
    write_labels(labels, rows, earlier, given, frame_list, client is not None)
    return LabelSheet(html, labels, len(rows), skipped)


def label_rows(frame_list: list[Path], out_dir: Path, truth: pd.DataFrame | None, client: pd.DataFrame | None,
               earlier: pd.DataFrame | None, given: dict[str, str]) -> tuple[list[dict], int]:
    """One sheet row per pair, its difference and thumbnail written under out_dir, its label the one `given` by hand
    (`hand_labels`), else pre-filled from ground truth `truth`, else from the `client`'s scores (without them, what
    the `earlier` labels.csv pre-filled); also how many frames made no pair."""
    frames = NightFrames(frame_list, log)
    rows, skipped = [], 0
    for candidate in tqdm([p.current for p in allsky.frame_pairs(frame_list)], desc="label-aid", unit="pair",
                          disable=None):
        pair = frames.pair(candidate)
        if pair is None:
            skipped += 1
            continue
        frame_id = allsky.frame_id(candidate)
        write_image(out_dir / "diffs" / f"{frame_id}.png", pair_difference(frames, pair, "v4"))
        write_image(out_dir / "thumbs" / f"{frame_id}.jpg", thumbnail(frames.image(candidate)))
        known = truth.loc[candidate.name] if truth is not None and candidate.name in truth.index else {}
        implied, did, flagged = client_view(client.loc[candidate.name] if client is not None
                                            and candidate.name in client.index else None)
        if client is None:                          # no new scores: the earlier scores' pre-fill stands
            implied, did = (earlier_cell(earlier, candidate.name, "prefilled").lower(),
                            earlier_cell(earlier, candidate.name, "client"))
        prefilled = text_or_empty(known.get("label")) or implied
        rows.append({"id": frame_id, "file": candidate.name, "previous": pair.previous.name,
                     "gap_s": round(pair.gap_s), "long_gap": pair.long_gap,
                     "thumb": f"thumbs/{frame_id}.jpg", "diff": f"diffs/{frame_id}.png",
                     "label": given.get(candidate.name) or prefilled, "prefilled": prefilled,
                     "event": text_or_empty(known.get("event")), "client": did, "candidate": flagged})
    frames.end_run()
    return rows, skipped


def write_label_page(out_dir: Path, night: str, rows: list[dict], scored: bool) -> Path:
    """Write the contact sheet out_dir/index.html (templates/label_sheet.html); with the client's scores (`scored`)
    it lists their candidates."""
    import jinja2

    out_dir.mkdir(parents=True, exist_ok=True)
    page = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True).get_template(
        "label_sheet.html")
    html = out_dir / "index.html"
    html.write_text(page.render(night=night, rows=rows, candidates=[row for row in rows if row["candidate"]]
                                if scored else None), encoding="utf-8")
    return html


def write_labels(labels: Path, rows: list[dict], earlier: pd.DataFrame | None, given: dict[str, str],
                 frame_list: list[Path], scored: bool) -> None:
    """Write labels.csv: file, label, prefilled (and client, with the client's scores, `scored`, now or before) for
    the night's rows, after the `earlier` sheet's rows of other nights, as they were; the labels `given` by hand
    kept, and those pre-filled otherwise than before, are counted in the log."""
    if kept := sum(row["file"] in given for row in rows):
        log.info("%s: %d label(s) given by hand kept", labels, kept)
    if changed := sum(earlier_cell(earlier, row["file"], "label") not in ("", row["label"]) for row in rows):
        log.info("%s: %d label(s) pre-filled earlier now pre-filled otherwise (new scores or ground truth)",
                 labels, changed)
    has_client = scored or any(row["client"] for row in rows)
    columns = ["file", "label", "prefilled"] + (["client"] if has_client else [])
    sheet = pd.DataFrame(rows, columns=columns)
    others = other_nights_rows(earlier, frame_list)
    if len(others):
        log.info("%s: %d row(s) of other nights kept", labels, len(others))
        sheet = pd.concat([others, sheet], ignore_index=True)
    sheet.to_csv(labels, index=False)


def other_nights_rows(earlier: pd.DataFrame | None, frame_list: list[Path]) -> pd.DataFrame:
    """The rows of an earlier labels.csv that are not this night's frames, as they were (a second night labelled
    into the same folder deleted the first night's hand labels)."""
    if earlier is None:
        return pd.DataFrame(columns=["file", "label"])
    return earlier[~earlier["file"].isin([frame.name for frame in frame_list])].reset_index(drop=True)


def earlier_cell(earlier: pd.DataFrame | None, name: str, column: str) -> str:
    """A frame's cell in an earlier labels.csv (read_labels), stripped; '' where it has none."""
    if earlier is None or column not in earlier.columns or name not in earlier.index:
        return ""
    return text_or_empty(earlier.at[name, column]).strip()


def hand_labels(table: pd.DataFrame) -> dict[str, str]:
    """file → label of an earlier labels.csv's labels that are not what label-aid pre-filled (all of them in a
    sheet without a `prefilled` column)."""
    table = table[table["label"].notna()]
    if "prefilled" in table.columns:
        prefilled = table["prefilled"].astype(object).fillna("").astype(str).str.strip().str.lower()
        table = table[table["label"] != prefilled]
    return table["label"].to_dict()


def text_or_empty(value) -> str:
    """A table cell as text; missing values (None, NaN) as ''."""
    return "" if value is None or pd.isna(value) else str(value)
