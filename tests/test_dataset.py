"""The thesis' folder dataset: layout, index.csv, balancing, versions, bad input, label aid, the researcher CLI."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from gualta import allsky, dataset, frames
from gualta.dataset import DatasetError, index_dataset, label_aid, prepare_dataset, split_nights
from gualta.preprocess import read_gray
from helpers_client import windows_imwrite
from helpers_nights import STREAK, dot_count, frame_path, make_night, sensor_noise

REPO = Path(__file__).resolve().parents[1]
FRAMES = 8
METEORS = {"20211110": (2, 5), "20211111": (3,), "20211112": (1, 4)}


@pytest.fixture
def nights(tmp_path) -> Path:
    """Three 8-frame nights under tmp_path/nights; meteors in the frames listed in METEORS."""
    root = tmp_path / "nights"
    for night, meteors in METEORS.items():
        make_night(root, night, FRAMES, meteors)
    return root


@pytest.fixture
def prepared(nights, tmp_path):
    """Nights 20211110 and 20211111 for training, 20211112 for testing, version v4."""
    out = tmp_path / "data"
    result = prepare_dataset([nights / "20211110", nights / "20211111"], [nights / "20211112"], out)
    return out, result


def load(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def warnings_of(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records
                     if r.name == "gualta.dataset" and r.levelno == logging.WARNING)


# --- layout and index -------------------------------------------------------------------------------------------

def position(night: Path, file: str) -> int:
    """Index of a frame in its night (0 = first)."""
    return [f.name for f in allsky.list_frames(night)].index(file)


def test_folder_layout_and_index(nights, prepared):
    out, result = prepared
    index = pd.read_csv(out / "index.csv")
    assert list(index.columns[:8]) == ["fn", "dataset", "meteor", "night", "file", "event", "peak_snr", "long_gap"]
    assert len(index) == 3 * (FRAMES - 1)               # the first frame of each night has no pair
    assert result.skipped == 0 and len(result.index) == len(index)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(index["fn"])

    for row in index.itertuples():
        split_folder = "training_set" if row.dataset == "train" else "test_set"
        label = "meteor" if row.meteor else "no-meteor"
        assert row.fn == f"{split_folder}/{label}/{row.night}_{allsky.frame_id(row.file)}.png"
        assert row.meteor == int(position(nights / str(row.night), row.file) in METEORS[str(row.night)])
        assert row.dataset == ("test" if str(row.night) == "20211112" else "train")
        assert not row.long_gap
    meteors = index[index["meteor"] == 1]
    assert set(meteors["event"]) == {"meteor"} and meteors["peak_snr"].notna().all()
    assert set(index.loc[index["meteor"] == 0, "event"]) == {"none"}
    assert index.loc[index["meteor"] == 0, "peak_snr"].isna().all()
    assert {"x1", "scenario"} <= set(index.columns)      # other ground-truth columns travel along
    assert "label" not in index.columns
    assert result.summary().startswith("14 train (3 meteor), 7 test (2 meteor), 0 pairs skipped")


def test_meteor_images_show_the_streak_and_others_are_black(prepared):
    out, _ = prepared
    index = pd.read_csv(out / "index.csv")
    (x1, y1, x2, y2), sx, sy = STREAK, 400 / 130, 400 / 98
    for row in index.itertuples():
        image = load(out / row.fn)
        assert image.shape == (400, 400) and image.dtype == np.uint8
        if row.meteor:
            ys, xs = np.nonzero(image > 128)
            assert len(xs) > 1000
            # every bright pixel lies on the streak, mapped to 400×400
            (ax, ay), (dx, dy) = (x1 * sx, y1 * sy), ((x2 - x1) * sx, (y2 - y1) * sy)
            distance = np.abs(dy * (xs - ax) - dx * (ys - ay)) / np.hypot(dx, dy)
            assert distance.max() < 12
            assert xs.min() < ax + 10 and xs.max() > ax + dx - 10
        else:
            assert image.max() < 30


def test_v2_images_are_pure_black_and_white(nights, tmp_path):
    out = tmp_path / "v2"
    prepare_dataset([nights / "20211110"], [nights / "20211112"], out, version="v2")
    images = [load(p) for p in out.rglob("*.png")]
    assert len(images) == 2 * (FRAMES - 1)
    assert all(image.shape == (224, 224) for image in images)
    assert set(np.unique(np.concatenate([image.ravel() for image in images]))) == {0, 255}


def test_unknown_version_is_refused(nights, tmp_path):
    with pytest.raises(DatasetError, match="v5"):
        prepare_dataset([nights / "20211110"], [nights / "20211112"], tmp_path / "out", version="v5")


def test_same_night_in_train_and_test_is_refused(nights, tmp_path):
    with pytest.raises(DatasetError, match="20211110"):
        prepare_dataset([nights / "20211110", nights / "20211111"], [nights / "20211110"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_night_given_twice_is_refused(nights, tmp_path):
    """A night named twice among the training nights would make each of its pairs twice."""
    with pytest.raises(DatasetError, match="night\\(s\\) given twice: 20211110"):
        prepare_dataset([nights / "20211110", nights / "20211110"], [nights / "20211112"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_dataset_is_not_mixed_with_a_new_one(prepared, nights):
    out, _ = prepared
    with pytest.raises(DatasetError, match="already holds a dataset"):
        prepare_dataset([nights / "20211111"], [nights / "20211112"], out)
    stale = out / "training_set" / "meteor" / "stale.png"
    stale.write_bytes(b"")
    prepare_dataset([nights / "20211111"], [nights / "20211112"], out, overwrite=True)
    assert not stale.exists()
    assert set(pd.read_csv(out / "index.csv")["night"]) == {20211111, 20211112}


def test_a_prepare_cut_short_is_refused_until_prepared_again(prepared, nights, monkeypatch):
    """prepare --overwrite killed partway left half a dataset, which `index` then turned into one that looked
    whole: train learnt from half the nights without a word."""
    from gualta.train import TrainError, read_index

    out, _ = prepared
    write_samples = dataset.write_samples

    def cut_short(samples, *options):                                  # killed after its first images
        write_samples(samples[:3], *options)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(dataset, "write_samples", cut_short)
        with pytest.raises(KeyboardInterrupt):
            prepare_dataset([nights / "20211111"], [nights / "20211112"], out, overwrite=True)
    with pytest.raises(DatasetError, match="a prepare was cut short .*: run dataPreparation.py prepare --overwrite"):
        index_dataset(out)
    with pytest.raises(TrainError, match="a prepare was cut short"):
        read_index(out)
    prepare_dataset([nights / "20211111"], [nights / "20211112"], out, overwrite=True)
    assert not (out / dataset.INCOMPLETE).exists() and len(index_dataset(out)) == len(read_index(out))


def test_a_prepare_whose_index_could_not_be_written_is_refused(nights, tmp_path, monkeypatch):
    """A disk full as prepare wrote index.csv must leave the dataset marked cut short: without the mark `index`
    would make an index of what was there and train take it for whole."""
    from gualta.train import TrainError, read_index

    out = tmp_path / "data"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(pd.DataFrame, "to_csv", disk_full)
        with pytest.raises(OSError, match="No space left"):
            prepare_dataset([nights / "20211111"], [nights / "20211112"], out)
    assert (out / dataset.INCOMPLETE).exists()
    with pytest.raises(DatasetError, match="a prepare was cut short .*: run dataPreparation.py prepare --overwrite"):
        index_dataset(out)
    with pytest.raises(TrainError, match="a prepare was cut short"):
        read_index(out)


def test_overwrite_over_a_raw_frame_dataset_makes_a_difference_dataset(prepared, nights):
    """prepare --overwrite over a raw-frame dataset (train raw-dataset --out) left raw_frames.json: the difference
    images then trained as a raw-frame model (ONNX metadata kind='raw')."""
    from gualta.train import dataset_kind

    out, _ = prepared
    (out / dataset.RAW_MARKER).write_text("{}")
    assert dataset_kind(out) == "raw"
    with pytest.raises(DatasetError, match="raw_frames.json"):
        prepare_dataset([nights / "20211111"], [nights / "20211112"], out)
    prepare_dataset([nights / "20211111"], [nights / "20211112"], out, overwrite=True)
    assert dataset_kind(out) == "diff"


# --- splits and balancing ---------------------------------------------------------------------------------------

def test_split_nights_whole_nights_deterministic():
    nights = [Path(f"/r/202111{d:02d}") for d in range(1, 9)]
    train, test = split_nights(list(reversed(nights)), 0.25, seed=3)
    assert len(test) == 2
    assert sorted(train + test) == nights and not set(train) & set(test)
    assert split_nights(nights, 0.25, seed=3) == (train, test)
    assert {tuple(split_nights(nights, 0.25, seed=s)[1]) for s in range(10)} != {tuple(test)}
    assert len(split_nights(nights[:2], 0.9)[0]) == 1          # never every night in test
    assert len(split_nights(nights[:2], 0.01)[1]) == 1         # always a test night
    with pytest.raises(DatasetError):
        split_nights(nights[:1], 0.5)
    with pytest.raises(DatasetError):
        split_nights(nights, 1.0)


def test_adding_a_night_moves_at_most_one_other_night_between_train_and_test():
    """--test-fraction drew the test nights anew whenever a night was added: in the retraining loop (label a night,
    prepare again, fine-tune with --init) nights the previous model trained on were then tested on. Each night's
    draw is its own: a night added moves at most one other, the one at the edge of the test set — into training, or,
    when the test set grows by one, into test."""
    nights = [Path(f"/r/2021{m:02d}{d:02d}") for m in (10, 11) for d in range(1, 29)]
    for seed in range(4):
        for count in range(4, len(nights)):
            before, after = split_nights(nights[:count], 0.25, seed), split_nights(nights[:count + 1], 0.25, seed)
            moved = (set(before[1]) ^ set(after[1])) - {nights[count]}
            assert len(moved) <= 1, (seed, count, moved)
            assert not moved & set(before[0]) or len(after[1]) > len(before[1]), (seed, count)
            assert len(after[1]) == round(0.25 * (count + 1)), (seed, count)


def test_test_nights_are_drawn_from_the_labelled_nights_only(tmp_path, caplog):
    """--test-fraction drew test nights from every night folder: with a few labelled nights in a large archive the
    test split was usually empty."""
    root = tmp_path / "nights"
    archive = [make_night(root, f"202111{day:02d}", 3, ground_truth=day in (3, 7)) for day in range(1, 9)]
    labels = tmp_path / "labels.csv"              # two other nights labelled by hand, in a labels CSV
    named = [frame_path(archive[i], 1).name for i in (1, 5)]
    pd.DataFrame({"file": named, "label": "meteor"}).to_csv(labels, index=False)

    with caplog.at_level(logging.INFO, "gualta.dataset"):
        for seed in range(6):
            train, test = dataset.split_labelled_nights(archive, 0.25, seed)
            assert len(test) == 1
            assert {night.name for night in train + test} == {"20211103", "20211107"}
            train, test = dataset.split_labelled_nights(archive, 0.25, seed, dataset.read_labels(labels))
            assert {night.name for night in train + test} == {"20211102", "20211103", "20211106", "20211107"}
            assert 1 <= len(test) < 4
    assert "6 of 8 nights have no labelled pairs and are left out: 20211101, 20211102, 20211104" in caplog.text
    with pytest.raises(DatasetError, match="at least two nights with labelled pairs .* got 1 of 4 nights"):
        dataset.split_labelled_nights(archive[:4], 0.25)


def test_a_night_whose_only_label_makes_no_pair_is_not_drawn(tmp_path):
    """A labels table naming other nights' pairs and only a night's first frame (no frame before it) counted that
    night as labelled: it could be drawn as a test night with nothing to test on."""
    root = tmp_path / "nights"
    archive = [make_night(root, f"202111{day:02d}", 3, ground_truth=False) for day in (1, 2, 3)]
    labels = pd.DataFrame({"file": [frame_path(archive[0], 1).name, frame_path(archive[1], 1).name,
                                    frame_path(archive[2], 0).name], "label": "meteor"}).set_index("file", drop=False)
    train, test = dataset.split_labelled_nights(archive, 0.5, labels=labels)
    assert sorted(night.name for night in train + test) == ["20211101", "20211102"]


def move_to_morning(night: Path, folder: Path) -> Path:
    """Move a make_night night's frames (from 21:00) to `folder`, named from 00:00 of the next day (the same night
    split by calendar date), their ground truth with them."""
    folder.mkdir()
    names = {}
    for frame in allsky.list_frames(night):
        names[frame.name] = allsky.frame_name(allsky.frame_time(frame) + timedelta(hours=3))
        frame.rename(folder / names[frame.name])
    truth = pd.read_csv(night / dataset.GROUND_TRUTH)
    truth.assign(file=truth["file"].map(names)).to_csv(folder / dataset.GROUND_TRUTH, index=False)
    shutil.rmtree(night)
    return folder


def test_a_night_split_across_date_folders_is_warned_of_and_kept_on_one_side(tmp_path, caplog):
    """A night split by calendar date (20210913/ until 23:59, 20210914/ from 00:00) could train and test at once."""
    root = tmp_path / "nights"
    evening = make_night(root, "20210913", 4, meteors=(1,))
    morning = move_to_morning(make_night(tmp_path / "tmp", "20210913", 4, meteors=(2,)), root / "20210914")
    other = make_night(root, "20210920", 4)
    caplog.set_level(logging.WARNING, "gualta.dataset")

    with pytest.raises(DatasetError, match=r"20210913 \(train folder\(s\) 20210913, test folder\(s\) 20210914\)"):
        prepare_dataset([evening], [morning], tmp_path / "data")
    assert not (tmp_path / "data").exists()
    assert "20210914 holds 4 frame(s) of night(s) 20210913" in warnings_of(caplog)

    result = prepare_dataset([evening, morning], [other], tmp_path / "data")
    assert set(result.index.loc[result.index["dataset"] == "train", "night"]) == {"20210913", "20210914"}


def test_prepare_with_a_test_fraction_reads_the_labels_once(tmp_path, monkeypatch):
    """`prepare --test-fraction` read the --labels CSVs to split the nights, then again to label their pairs."""
    monkeypatch.syspath_prepend(str(REPO))
    import dataPreparation

    root = tmp_path / "nights"
    archive = [make_night(root, f"202111{day:02d}", 4, meteors=(), ground_truth=False) for day in (1, 2, 3)]
    labels = tmp_path / "labels.csv"
    frames = [frame for night in archive for frame in allsky.list_frames(night)]
    pd.DataFrame({"file": [frame.name for frame in frames], "label": "no-meteor"}).to_csv(labels, index=False)
    read, reads = dataset.read_labels, []
    monkeypatch.setattr(dataset, "read_labels", lambda path: reads.append(Path(path)) or read(path))

    assert dataPreparation.main(["prepare", "--nights", str(root), "--test-fraction", "0.34", "--labels",
                                 str(labels), "--out", str(tmp_path / "data")]) == 0
    assert reads == [labels]
    index = pd.read_csv(tmp_path / "data" / "index.csv")
    assert len(index) == 3 * 3 and (index["dataset"] == "test").sum() == 3      # every pair labelled, one test night


def test_balancing_equal_counts_reproducible_and_test_untouched(tmp_path):
    root = tmp_path / "nights"
    train_nights = [make_night(root, "20211110", 12, (2, 7)), make_night(root, "20211111", 12, (4,))]
    test_night = make_night(root, "20211112", 12, (5,))

    def build(seed, name):
        result = prepare_dataset(train_nights, [test_night], tmp_path / name, balance=True, seed=seed)
        return result, pd.read_csv(tmp_path / name / "index.csv")

    result, index = build(1, "a")
    train = index[index["dataset"] == "train"]
    assert (train["meteor"] == 1).sum() == (train["meteor"] == 0).sum() == 3
    assert result.balanced_out == (22 - 3) - 3      # 19 no-meteor train pairs, 3 kept
    assert len(list((tmp_path / "a" / "training_set" / "no-meteor").glob("*.png"))) == 3
    test = index[index["dataset"] == "test"]
    assert len(test) == 11 and test["meteor"].sum() == 1
    assert sorted(build(1, "b")[1]["fn"]) == sorted(index["fn"])
    others = {frozenset(build(seed, f"s{seed}")[1]["fn"]) for seed in (2, 3)}
    assert others != {frozenset(index["fn"])}


def test_balancing_keeps_as_many_distinct_no_meteor_samples_as_meteors():
    """Drawn with replacement, a no-meteor sample could be drawn twice and kept once: fewer no-meteor than meteor
    samples in a "balanced" training set."""
    night = Path("nights/20211110")
    start = datetime(2021, 11, 10, 22, 0, 0)
    samples = [dataset.Sample(night, night / f"image-{start + timedelta(seconds=30 * i):%Y%m%d%H%M%S}.jpg",
                              "meteor" if i % 5 == 0 else "no-meteor", "train") for i in range(250)]
    for seed in range(5):
        kept = dataset.balance_samples(samples, seed)
        others = [s.fn for s in kept if s.label == "no-meteor"]
        assert sum(s.label == "meteor" for s in kept) == 50 and len(others) == len(set(others)) == 50


# --- bad input --------------------------------------------------------------------------------------------------

def dots_by_position(out: Path, night: Path) -> dict[int, int]:
    """{frame position: dots in its difference image} for a tally night's rows of a dataset."""
    index = pd.read_csv(out / "index.csv", dtype={"night": str})
    rows = index[index["night"] == night.name]
    return {position(night, row.file): dot_count(load(out / row.fn)) for row in rows.itertuples()}


def sky_of_size(width: int, height: int, exposure: int = 0) -> np.ndarray:
    """Exposure `exposure` of another size with a picture in it (a blank one is bad for being blank, a copy of the
    last one is a repeat)."""
    return np.tile(np.arange(width, dtype=np.uint8), (height, 1)) + sensor_noise(exposure, (width, height))


def test_bad_frames_are_skipped_and_neighbours_pair_with_the_last_good_frame(tmp_path, caplog):
    night = make_night(tmp_path / "nights", "20211110", 10, meteors=(), tally=True)
    test_night = make_night(tmp_path / "nights", "20211112", 4)
    frame_path(night, 3).write_bytes(b"")                                       # zero bytes
    frame_path(night, 5).write_bytes(frame_path(night, 5).read_bytes()[:300])   # truncated JPEG
    frame_path(night, 7).write_text("not an image\n")                          # text named like a frame
    cv2.imwrite(str(frame_path(night, 8)), sky_of_size(60, 40))                # odd size
    (night / "notes.txt").write_text("ignored")
    caplog.set_level(logging.WARNING, "gualta.dataset")

    result = prepare_dataset([night], [test_night], tmp_path / "data")

    # dots = frames since the predecessor: 4 pairs with 2, 6 with 4, 9 with 6 (3, 5, 7, 8 are bad)
    assert dots_by_position(tmp_path / "data", night) == {1: 1, 2: 1, 4: 2, 6: 2, 9: 3}
    assert result.skipped == 4
    warned = warnings_of(caplog)
    for i, reason in [(3, "empty file"), (5, "truncated"), (7, "not a decodable image"), (8, "60×40")]:
        line = next((w for w in warned.splitlines() if frame_path(night, i).name in w), "")
        assert reason in line, (i, warned)


def test_a_black_camera_to_the_nights_end_is_counted_when_the_dataset_is_made(tmp_path, caplog):
    """A night whose camera went black before its end: prepare and label-aid warned of its first black frame and
    never counted the rest (the run's count comes when another kind of frame does, and none came)."""
    night = make_night(tmp_path / "nights", "20211110", 8, meteors=())
    test_night = make_night(tmp_path / "nights", "20211112", 4)
    black = np.zeros_like(cv2.imread(str(frame_path(night, 0))))
    for i in (5, 6, 7):
        cv2.imwrite(str(frame_path(night, i)), black)
    caplog.set_level(logging.WARNING)
    prepare_dataset([night], [test_night], tmp_path / "data")
    label_aid(night, tmp_path / "aid")
    counted = [r.getMessage() for r in caplog.records if "more blank frames" in r.getMessage()]
    assert counted == [f"{frame_path(night, 5).name}: 2 more blank frames (a black or uniform image), until "
                       f"{frame_path(night, 7).name}: skipped"] * 2


def test_each_frame_is_decoded_once_and_balanced_out_frames_not_at_all(tmp_path, monkeypatch):
    night = make_night(tmp_path / "nights", "20211110", 12, meteors=(6,), tally=True)
    frame_path(night, 4).write_bytes(b"")
    decoded = []
    monkeypatch.setattr(frames, "read_gray", lambda path: decoded.append(Path(path).name) or read_gray(path))

    prepare_dataset([night], [], tmp_path / "all")
    assert sorted(decoded) == sorted(f.name for f in allsky.list_frames(night))

    decoded.clear()
    prepare_dataset([night], [], tmp_path / "balanced", balance=True)
    assert len(decoded) == len(set(decoded)) <= 7      # 2 pairs: the 2 frames and the one before (a repeat?), + a bad one


def test_parallel_nights_give_the_same_dataset(nights, tmp_path):
    train, test = [nights / "20211110", nights / "20211111"], [nights / "20211112"]
    serial = prepare_dataset(train, test, tmp_path / "serial").index
    parallel = prepare_dataset(train, test, tmp_path / "parallel", workers=2).index
    pd.testing.assert_frame_equal(serial.sort_values("fn", ignore_index=True),
                                  parallel.sort_values("fn", ignore_index=True))
    for fn in serial["fn"]:
        assert np.array_equal(load(tmp_path / "serial" / fn), load(tmp_path / "parallel" / fn))


def test_bad_first_frame_and_a_lasting_size_change(tmp_path, caplog):
    night = make_night(tmp_path / "nights", "20211110", 8, meteors=(), tally=True)
    frame_path(night, 0).write_bytes(b"")
    for i in (5, 6, 7):                                                         # the camera changed size
        cv2.imwrite(str(frame_path(night, i)), sky_of_size(80, 60, i))
    caplog.set_level(logging.WARNING, "gualta.dataset")

    result = prepare_dataset([night], [], tmp_path / "data")

    dots = dots_by_position(tmp_path / "data", night)
    assert dots == {2: 1, 3: 1, 4: 1, 6: 0, 7: 0}            # 1 has no good predecessor, 4 → 5 changes size
    assert result.skipped == 2
    warned = warnings_of(caplog)
    assert f"{frame_path(night, 1).name}: no earlier good frame" in warned
    assert "size changed from 130×98 to 80×60" in warned


def test_long_gaps_are_flagged(tmp_path):
    night = make_night(tmp_path / "nights", "20211110", 16, meteors=())
    for frame in allsky.list_frames(night)[3:13]:                      # 10 frames missing: a 330 s gap
        frame.unlink()
    index = prepare_dataset([night], [], tmp_path / "data").index
    assert dict(zip(index["file"], index["long_gap"])) == {
        frame.name: frame.name == frame_path(night, 3).name for frame in allsky.list_frames(night)[1:]}


def test_frames_missing_from_ground_truth_are_skipped_but_still_predecessors(tmp_path, caplog):
    night = make_night(tmp_path / "nights", "20211110", 6, meteors=(), tally=True)
    truth = pd.read_csv(night / "ground_truth.csv")
    truth.drop(index=3).to_csv(night / "ground_truth.csv", index=False)
    caplog.set_level(logging.WARNING, "gualta.dataset")

    result = prepare_dataset([night], [], tmp_path / "data")

    assert dots_by_position(tmp_path / "data", night) == {1: 1, 2: 1, 4: 1, 5: 1}
    assert result.skipped == 1
    assert "1 frames missing from the labels" in warnings_of(caplog)
    assert frame_path(night, 3).name in warnings_of(caplog)


def test_empty_night_and_night_without_ground_truth_do_not_crash(nights, tmp_path, caplog):
    empty = tmp_path / "nights" / "20211120"
    empty.mkdir()
    unlabelled = make_night(tmp_path / "nights", "20211121", 4, ground_truth=False)
    caplog.set_level(logging.WARNING, "gualta.dataset")

    result = prepare_dataset([nights / "20211110", empty], [unlabelled], tmp_path / "data")

    assert set(result.index["night"]) == {"20211110"}
    assert result.skipped == 3
    assert "20211120 has no frames" in warnings_of(caplog)
    assert "no ground_truth.csv" in warnings_of(caplog)
    assert "the dataset has no test pairs: no test nights" in warnings_of(caplog)   # the test night had no labels
    caplog.clear()
    prepare_dataset([], [nights / "20211110"], tmp_path / "test-only")              # every night named a test night
    assert "the dataset has no train pairs: nothing to train on" in warnings_of(caplog)


def test_meteor_labels_that_make_no_pair_are_named_and_counted(nights, tmp_path, caplog):
    """A meteor label naming no frame (a typo, a deleted file), the first frame of a night, or a file labelled twice
    differently made no image without a word ('0 pairs skipped')."""
    night = nights / "20211110"
    frame_path(night, 5).write_bytes(b"")                          # a bad meteor frame: warned and counted once
    rows = [(frame.name, "meteor" if i in (0, 2, 5) else "no-meteor")
            for i, frame in enumerate(allsky.list_frames(night))]
    rows += [("image-20211110213000.jpg", "meteor"),               # no such frame
             ("image-20211201210000.jpg", "meteor"),               # a night not given: not this run's business
             (frame_path(night, 2).name, "no-meteor"), (frame_path(night, 3).name, "no-meteor")]
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(labels, index=False)
    caplog.set_level(logging.WARNING, "gualta.dataset")

    result = prepare_dataset([night], [], tmp_path / "data", labels=labels)

    warned = warnings_of(caplog)
    assert f"1 file(s) labelled differently in several rows, the last row's label kept: {frame_path(night, 2).name} " \
           "(kept no-meteor)" in warned and frame_path(night, 3).name not in warned
    assert "1 meteor-labelled file(s) make no pair, no such frame in the nights' folders: image-20211110213000.jpg" \
           in warned
    assert f"1 meteor-labelled file(s) make no pair, a night's first frame (no frame before it): " \
           f"{frame_path(night, 0).name}" in warned
    assert "20211201" not in warned and warned.count(frame_path(night, 5).name) == 1
    assert result.skipped == 3 and result.summary().endswith(f"3 pairs skipped → {result.path}")


def test_labels_csv_replaces_ground_truth(nights, tmp_path):
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"file": [frame_path(nights / "20211110", i).name for i in range(FRAMES)],
                  "label": ["meteor" if i == 6 else "no-meteor" for i in range(FRAMES)],
                  "observer": "dr"}).to_csv(labels, index=False)

    result = prepare_dataset([nights / "20211110"], [], tmp_path / "data", labels=labels)

    meteors = result.index[result.index["meteor"] == 1]
    assert list(meteors["file"]) == [frame_path(nights / "20211110", 6).name]
    assert set(result.index["observer"]) == {"dr"}

    other = tmp_path / "other-night.csv"                    # labels of another night's files: nothing to make
    pd.DataFrame({"file": ["image-20200101220000.jpg"], "label": ["meteor"]}).to_csv(other, index=False)
    real = make_night(tmp_path / "real", "20211120", 4, ground_truth=False)
    with pytest.raises(DatasetError, match="no labelled frame pairs .*does --labels name these nights' files"):
        prepare_dataset([real], [], tmp_path / "data", labels=other, overwrite=True)
    assert (tmp_path / "data" / "index.csv").is_file()      # the dataset made before is left as it was


def test_several_labels_files_and_ground_truth_where_they_name_no_frame(nights, tmp_path, caplog):
    """--labels replaced every night's ground truth: a simulated night mixed with real labelled nights was dropped
    ('frames missing from the labels'), and of two --labels files only the last was used."""
    real = [make_night(tmp_path / "real", night, 4, meteors=(), ground_truth=False) for night in ("20211120",
                                                                                                    "20211121")]
    sheets = []
    for night in real:
        sheets.append(tmp_path / f"{night.name}.csv")
        pd.DataFrame({"file": [frame.name for frame in allsky.list_frames(night)],
                      "label": ["no-meteor", "meteor", "no-meteor", "no-meteor"]}).to_csv(sheets[-1], index=False)
    simulated = nights / "20211110"
    caplog.set_level(logging.INFO, "gualta.dataset")

    result = prepare_dataset([real[0], simulated], [real[1]], tmp_path / "data", labels=sheets)

    index = result.index.set_index("file")
    assert set(index["night"]) == {"20211110", "20211120", "20211121"} and result.skipped == 0
    assert index.loc[frame_path(real[1], 1).name, "meteor"] == 1
    assert list(index.loc[index["night"] == "20211110", "meteor"]) == [int(i in METEORS["20211110"])
                                                                       for i in range(1, FRAMES)]
    assert "night 20211110: the labels given name none of its frames: labelled by its ground_truth.csv" in caplog.text
    done = cli("prepare", "--nights", str(tmp_path / "real"), "--test-nights", "20211121", "--out",
               str(tmp_path / "cli"), "--labels", str(sheets[0]), "--labels", str(sheets[1]))
    assert done.returncode == 0, done.stderr
    assert "prepare: 3 train (1 meteor), 3 test (1 meteor), 0 pairs skipped" in done.stdout


@pytest.mark.parametrize("sheet, encoding", [
    ("file;label;notes\r\n{0};no-meteor;\r\n{1};meteor;estela débil\r\n", "utf-8"),   # Excel, Spanish locale
    ("file,label\n{0} ,no-meteor\n {1},Meteor \n", "utf-8"),                            # spaces around names
    ("File,Label\n{0},no-meteor\n{1},meteor\n", "utf-8"),                                # headers in capitals
    ("file,label,notes\r\n{0},no-meteor,\r\n{1},meteor,estela débil\r\n", "cp1252"),  # Excel on Windows
    ("\ufefffile,label\r\n{0},no-meteor\r\n{1},meteor\r\n", "utf-8"),                   # UTF-8 with a BOM
])
def test_labels_edited_in_a_spreadsheet_are_read(nights, tmp_path, sheet, encoding):
    """Hand-edited label sheets were refused ('lack the column(s) file, label' for ';' or 'File,Label'), failed
    (UnicodeDecodeError for cp1252) or matched no frame (file names with spaces around them)."""
    night = nights / "20211110"
    labels = tmp_path / "labels.csv"
    labels.write_bytes(sheet.format(frame_path(night, 1).name, frame_path(night, 2).name).encode(encoding))

    table = dataset.read_labels(labels)

    assert list(table[["file", "label"]].itertuples(index=False, name=None)) == [
        (frame_path(night, 1).name, "no-meteor"), (frame_path(night, 2).name, "meteor")]
    result = prepare_dataset([night], [], tmp_path / "data", labels=labels)
    assert list(result.index["meteor"]) == [0, 1]


def test_a_file_labelled_differently_twice_keeps_the_last_label(tmp_path, caplog):
    """The warning said the last row's label was kept, and the table must hold that one (not the first)."""
    (tmp_path / "labels.csv").write_text("file,label\na.jpg,meteor\nb.jpg,meteor\na.jpg,no-meteor\n")
    table = dataset.read_labels(tmp_path / "labels.csv")
    assert table["label"].to_dict() == {"a.jpg": "no-meteor", "b.jpg": "meteor"}
    assert "the last row's label kept: a.jpg (kept no-meteor)" in warnings_of(caplog)


def test_labels_without_the_columns_name_those_found(tmp_path):
    """A sheet without file,label said which columns it lacked, not which it had (a misspelt header, a lone one)."""
    (tmp_path / "labels.csv").write_text("fichero,etiqueta\nimage-20211110210000.jpg,meteor\n")
    with pytest.raises(DatasetError, match=r"lack the column\(s\) file, label \(its columns: fichero, etiqueta\)"):
        dataset.read_labels(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("file\nimage-20211110210000.jpg\n")
    with pytest.raises(DatasetError, match=r"lack the column\(s\) label \(its columns: file\)"):
        dataset.read_labels(tmp_path / "labels.csv")


# --- index ------------------------------------------------------------------------------------------------------

def test_index_rebuilds_from_folders_and_follows_moved_images(prepared):
    out, _ = prepared
    before = pd.read_csv(out / "index.csv")
    moved = before[before["meteor"] == 0].iloc[0]
    source = out / moved["fn"]
    source.rename(out / "training_set" / "meteor" / source.name)

    index = index_dataset(out)

    assert len(index) == len(before)
    row = index[index["file"] == moved["file"]].iloc[0]
    assert row["meteor"] == 1 and row["fn"].startswith("training_set/meteor/")
    assert row["event"] == "none"                          # carried from the earlier index
    assert pd.read_csv(out / "index.csv")["meteor"].sum() == before["meteor"].sum() + 1

    for broken in (None, b"", b"\x89PNG\r\n\x1a\n\x00\xff\xfe"):   # gone, empty (a crash mid-write), overwritten
        if broken is None:
            (out / "index.csv").unlink()
        else:
            (out / "index.csv").write_bytes(broken)                # the command meant to mend it stopped on it
        rebuilt = index_dataset(out)
        assert list(rebuilt.columns) == dataset.INDEX_COLUMNS
        assert rebuilt["night"].notna().all() and rebuilt["event"].isna().all()
        assert sorted(rebuilt["fn"]) == sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))


def test_index_rebuilt_keeps_the_frame_names_of_a_png_camera(tmp_path):
    """A camera writing image.png: the rebuilt index still names the .png frames the earlier index listed."""
    night = make_night(tmp_path / "nights", "20211110", 6, meteors=(2,))
    for frame in allsky.list_frames(night):
        frame.with_suffix(".png").write_bytes(cv2.imencode(".png", cv2.imread(str(frame)))[1].tobytes())
        frame.unlink()
    truth = pd.read_csv(night / "ground_truth.csv")
    truth.assign(file=truth["file"].str.replace(".jpg", ".png")).to_csv(night / "ground_truth.csv", index=False)
    out = tmp_path / "data"
    before = prepare_dataset([night], [], out).index

    rebuilt = index_dataset(out)

    assert before["file"].str.endswith(".png").all()
    assert sorted(rebuilt["file"]) == sorted(before["file"])
    assert rebuilt["night"].tolist() == ["20211110"] * len(before)


# --- label aid --------------------------------------------------------------------------------------------------

class ParsedPage(HTMLParser):
    """The tags and the text of an HTML page."""

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text += data


def test_label_aid_writes_escaped_sheet_images_and_labels(tmp_path):
    night = make_night(tmp_path / "nights", "20211110", 6, meteors=(2,), event='<script>alert("x")</script>&')
    frame_path(night, 4).write_bytes(b"")

    sheet = label_aid(night, tmp_path / "aid")

    page = (tmp_path / "aid" / "index.html").read_text()
    assert page.count('<tr class="pair"') == sheet.pairs == 4      # 5 pairs less the bad frame 4; 5 pairs with 3
    assert sheet.skipped == 1
    parsed = ParsedPage()
    parsed.feed(page)
    assert "script" not in parsed.tags                              # the event text stayed text
    assert 'event: <script>alert("x")</script>&' in parsed.text
    assert frame_path(night, 2).name in page
    diff = load(tmp_path / "aid" / "diffs" / f"{allsky.frame_id(frame_path(night, 2))}.png")
    assert diff.shape == (400, 400) and diff.max() == 255
    thumb = load(tmp_path / "aid" / "thumbs" / f"{allsky.frame_id(frame_path(night, 2))}.jpg")
    assert thumb.ndim == 2 and thumb.shape[1] == dataset.THUMB_WIDTH
    labels = pd.read_csv(tmp_path / "aid" / "labels.csv")
    assert list(labels.columns) == ["file", "label", "prefilled"]
    assert dict(zip(labels["file"], labels["label"])) == {
        frame_path(night, 1).name: "no-meteor", frame_path(night, 2).name: "meteor",
        frame_path(night, 3).name: "no-meteor", frame_path(night, 5).name: "no-meteor"}


def test_lookalike_frames_are_warned_of_by_prepare_and_label_aid(nights, tmp_path, caplog):
    """`image-….JPG` and `.jpeg` files were left out of datasets and label sheets without a word."""
    night = nights / "20211110"
    for name in ("image-20211110220000.JPG", "image-20211110220030.jpeg"):
        shutil.copy(frame_path(night, 1), night / name)
    caplog.set_level(logging.WARNING)
    warning = "2 file(s) named like frames but not as AllSky names them"

    prepare_dataset([night], [nights / "20211111"], tmp_path / "data")
    assert caplog.text.count(warning) == 1 and "(image-20211110220000.JPG, …)" in caplog.text
    caplog.clear()
    label_aid(night, tmp_path / "aid")
    assert caplog.text.count(warning) == 1


def test_a_one_frame_night_says_it_has_no_pairs(tmp_path, caplog):
    """A one-frame night without labels logged 'its 0 pairs are skipped'."""
    single = make_night(tmp_path / "nights", "20211120", 1, ground_truth=False)
    caplog.set_level(logging.WARNING, "gualta.dataset")
    assert dataset.night_samples(single, "train") == ([], 0)
    assert "20211120 has a single frame: no pairs" in warnings_of(caplog)
    assert "0 pairs" not in warnings_of(caplog)


def test_label_aid_without_ground_truth_leaves_labels_empty(tmp_path):
    night = make_night(tmp_path / "nights", "20211110", 3, ground_truth=False)
    sheet = label_aid(night, tmp_path / "aid")
    labels = pd.read_csv(tmp_path / "aid" / "labels.csv")
    assert sheet.pairs == 2 and len(labels) == 2 and labels["label"].isna().all()


def test_label_aid_again_keeps_the_labels_already_given(tmp_path, caplog):
    """Rerunning label-aid into the same folder (say, to add --scores) emptied every hand-filled label; what it
    pre-filled itself follows the new scores."""
    night = make_night(tmp_path / "nights", "20211110", 5, ground_truth=False)
    label_aid(night, tmp_path / "aid")
    sheet = pd.read_csv(tmp_path / "aid" / "labels.csv", dtype=str)
    sheet.loc[[0, 2], "label"] = ["meteor", "meteor"]          # the operator's work (the client missed frame 3)
    sheet.to_csv(tmp_path / "aid" / "labels.csv", index=False)
    scores = tmp_path / "scores.csv"
    client_scores(night, [("", False, "skipped"), (0.1, False, ""), (0.2, False, ""), (0.3, False, ""),
                          (0.95, True, "")]).to_csv(scores, index=False)
    with caplog.at_level(logging.INFO, "gualta.dataset"):
        label_aid(night, tmp_path / "aid", scores)
    labels = pd.read_csv(tmp_path / "aid" / "labels.csv", keep_default_na=False)
    assert list(labels["label"]) == ["meteor", "no-meteor", "meteor", "meteor"]      # kept, then pre-filled
    assert "2 label(s) given by hand kept" in caplog.text
    client_scores(night, [("", False, "skipped"), (0.1, False, ""), (0.9, True, ""), (0.3, False, ""),
                          (0.2, False, "")]).to_csv(scores, index=False)             # a better model's run
    label_aid(night, tmp_path / "aid", scores)
    labels = pd.read_csv(tmp_path / "aid" / "labels.csv", keep_default_na=False)
    assert list(labels["label"]) == ["meteor", "meteor", "meteor", "no-meteor"]      # hand labels kept, the rest new


def test_label_aid_for_another_night_into_the_same_folder_keeps_the_first_nights_labels(tmp_path, caplog):
    """label-aid for a second night into the same --out deleted the first night's hand labels from labels.csv (the
    only message: '0 label(s) given by hand kept')."""
    first = make_night(tmp_path / "nights", "20211110", 4, ground_truth=False)
    second = make_night(tmp_path / "nights", "20211111", 3, ground_truth=False)
    label_aid(first, tmp_path / "aid")
    sheet = pd.read_csv(tmp_path / "aid" / "labels.csv", dtype=str)
    sheet["label"] = ["no-meteor", "meteor", "no-meteor"]                     # the first night labelled by hand
    sheet.to_csv(tmp_path / "aid" / "labels.csv", index=False)
    with caplog.at_level(logging.INFO, "gualta.dataset"):
        label_aid(second, tmp_path / "aid")
    labels = pd.read_csv(tmp_path / "aid" / "labels.csv", keep_default_na=False)
    assert dict(zip(labels["file"], labels["label"])) == {
        **dict(zip(sheet["file"], sheet["label"])), frame_path(second, 1).name: "", frame_path(second, 2).name: ""}
    assert "3 row(s) of other nights kept" in caplog.text and "given by hand kept" not in caplog.text
    label_aid(first, tmp_path / "aid")                                         # and the first night again
    labels = pd.read_csv(tmp_path / "aid" / "labels.csv", keep_default_na=False).set_index("file")
    assert len(labels) == 5 and labels.loc[frame_path(first, 2).name, "label"] == "meteor"


def client_scores(night, rows) -> pd.DataFrame:
    """A scores CSV as `guAlta.py batch --scores` writes it, for frames i: (score, detection, flag)."""
    names = [frame_path(night, i).name for i in range(len(rows))]
    return pd.DataFrame({"file": names, "score": [score for score, _, _ in rows],
                         "label": ["meteor" if detection or flag else "no-meteor" for _, detection, flag in rows],
                         "detection": [int(detection) for _, detection, _ in rows],
                         "flag": [flag for _, _, flag in rows], "note": ""})


def test_label_aid_prefills_a_real_night_from_the_clients_scores(tmp_path):
    """The operator's review loop: the client's decisions pre-fill a real night's labels and its candidates are
    marked; the labels then build a dataset."""
    night = make_night(tmp_path / "nights", "20211110", 6, meteors=(2,), ground_truth=False)
    scores = tmp_path / "scores.csv"
    client_scores(night, [("", False, "skipped"), (0.12, False, ""), (0.93, True, ""), (0.91, False, "satellite"),
                          (0.40, False, ""), (0.97, True, "")]).to_csv(scores, index=False)
    sheet = label_aid(night, tmp_path / "aid", scores)
    labels = pd.read_csv(tmp_path / "aid" / "labels.csv", keep_default_na=False)
    assert sheet.pairs == 5 and list(labels.columns) == ["file", "label", "prefilled", "client"]
    assert list(labels["label"]) == ["no-meteor", "meteor", "no-meteor", "no-meteor", "meteor"]
    assert list(labels["client"]) == ["no detection 0.12", "reported 0.93", "held back (satellite) 0.91",
                                      "no detection 0.40", "reported 0.97"]
    page = (tmp_path / "aid" / "index.html").read_text()
    assert page.count('class="pair candidate"') == 3 and "Check its 3 candidates" in page
    for i in (2, 3, 5):
        assert f'href="#{allsky.frame_id(frame_path(night, i))}"' in page

    labels.loc[labels["file"] == frame_path(night, 5).name, "label"] = "no-meteor"      # the operator's verdict
    labels.to_csv(tmp_path / "aid" / "labels.csv", index=False)
    result = prepare_dataset([night], [], tmp_path / "data", labels=tmp_path / "aid" / "labels.csv")
    assert list(result.index.loc[result.index["meteor"] == 1, "file"]) == [frame_path(night, 2).name]


def test_label_aid_again_without_scores_keeps_what_earlier_scores_pre_filled(tmp_path, caplog):
    """A rerun without --scores emptied the labels pre-filled from earlier scores that the operator confirmed by
    leaving them (prepare --labels then skipped them); new scores that change pre-filled labels are counted."""
    night = make_night(tmp_path / "nights", "20211110", 5, meteors=(2,), ground_truth=False)
    scores = tmp_path / "scores.csv"
    client_scores(night, [("", False, "skipped"), (0.1, False, ""), (0.9, True, ""), (0.2, False, ""),
                          (0.95, True, "")]).to_csv(scores, index=False)
    label_aid(night, tmp_path / "aid", scores)
    sheet = pd.read_csv(tmp_path / "aid" / "labels.csv", dtype=str, keep_default_na=False)
    sheet.loc[3, "label"] = "no-meteor"                        # the operator's verdict on frame 4; the rest confirmed
    sheet.to_csv(tmp_path / "aid" / "labels.csv", index=False)
    label_aid(night, tmp_path / "aid")
    again = pd.read_csv(tmp_path / "aid" / "labels.csv", dtype=str, keep_default_na=False)
    assert again.equals(sheet)
    result = prepare_dataset([night], [], tmp_path / "data", labels=tmp_path / "aid" / "labels.csv")
    assert len(result.index) == 4 and list(result.index.loc[result.index["meteor"] == 1, "file"]) == [
        frame_path(night, 2).name]
    client_scores(night, [("", False, "skipped"), (0.6, True, ""), (0.9, True, ""), (0.2, False, ""),
                          (0.1, False, "")]).to_csv(scores, index=False)          # a new model's run
    with caplog.at_level(logging.INFO, "gualta.dataset"):
        label_aid(night, tmp_path / "aid", scores)
    labels = pd.read_csv(tmp_path / "aid" / "labels.csv", keep_default_na=False)
    assert list(labels["label"]) == ["meteor", "meteor", "no-meteor", "no-meteor"]
    assert "1 label(s) given by hand kept" in caplog.text
    assert "1 label(s) pre-filled earlier now pre-filled otherwise" in caplog.text


def test_label_aid_keeps_ground_truth_over_the_client_and_refuses_another_nights_scores(tmp_path):
    night = make_night(tmp_path / "nights", "20211110", 4, meteors=(2,))
    scores = tmp_path / "scores.csv"
    client_scores(night, [("", False, "skipped"), (0.95, True, ""), (0.2, False, ""), (0.1, False, "")]).to_csv(
        scores, index=False)
    label_aid(night, tmp_path / "aid", scores)
    labels = pd.read_csv(tmp_path / "aid" / "labels.csv")
    assert list(labels["label"]) == ["no-meteor", "meteor", "no-meteor"]          # the truth, not the client
    other = make_night(tmp_path / "nights", "20211111", 3, ground_truth=False)
    with pytest.raises(DatasetError, match="hold none of night 20211111's frames"):
        label_aid(other, tmp_path / "aid2", scores)
    (tmp_path / "bad.csv").write_text("file,score\nx,1\n")
    with pytest.raises(DatasetError, match="lack the column"):
        label_aid(night, tmp_path / "aid3", tmp_path / "bad.csv")


# --- the researcher CLI -----------------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "dataPreparation.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_research_commands_run_with_stderr_closed(nights, tmp_path):
    """`simulate ... 2>&-` (or Windows' pythonw, whose stderr is None) wrote no frame and `prepare` no pair: their
    progress bars wrote to a stderr that is None (AttributeError), and the descriptor left free went to the next file
    opened. Both now run to the end, their stderr on the null device."""
    closed = ["bash", "-c", 'exec "$@" 2>&-', "bash", sys.executable, "dataPreparation.py"]
    done = subprocess.run([*closed, "simulate", "--out", str(tmp_path / "sim"), "--nights", "1", "--frames", "2",
                           "--date", "20211110", "--seed", "1", "--workers", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "simulate: 1 night (20211110)" in done.stdout, done.stdout
    assert len(list((tmp_path / "sim" / "20211110").glob("image-*.jpg"))) == 2
    done = subprocess.run([*closed, "prepare", "--nights", str(nights), "--test-nights", "20211112", "--out",
                           str(tmp_path / "data")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "prepare: " in done.stdout, done.stdout
    assert (tmp_path / "data" / "index.csv").exists()


def test_a_closed_standard_stream_keeps_its_descriptor(tmp_path):
    """With stderr closed at start, the first file a command opened took descriptor 2, where a library's warning (or
    a log line) would have been written into that file."""
    opened = subprocess.run(["bash", "-c", 'exec "$@" 2>&-', "bash", sys.executable, "-c",
                             "from gualta.cli import tolerant_console; tolerant_console(); import sys; "
                             f"print(open({str(tmp_path / 'f')!r}, 'w').fileno(), sys.stderr.name)"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    descriptor, stderr_name = opened.stdout.split()
    assert int(descriptor) > 2 and stderr_name == os.devnull


def test_cli_prepare_index_and_label_aid(nights, tmp_path):
    out = tmp_path / "data"
    done = cli("prepare", "--nights", str(nights), "--test-nights", "20211112", "--out", str(out),
               "--version", "v3", "--balance", "--seed", "4")
    assert done.returncode == 0, done.stderr
    assert "prepare: 6 train (3 meteor), 7 test (2 meteor), 0 pairs skipped" in done.stdout
    index = pd.read_csv(out / "index.csv", dtype={"night": str})
    assert set(index.loc[index["dataset"] == "test", "night"]) == {"20211112"}
    assert all(load(out / fn).shape == (224, 224) for fn in index["fn"])

    done = cli("index", "--dataset", str(out))
    assert done.returncode == 0, done.stderr
    assert "index: 6 train (3 meteor), 7 test (2 meteor)" in done.stdout

    done = cli("label-aid", "--night", str(nights / "20211111"), "--out", str(tmp_path / "aid"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "aid" / "index.html").is_file()
    done = cli("label-aid", "--night", str(nights), "--out", str(tmp_path / "root"))      # the root, not a night
    assert done.returncode == 2 and not (tmp_path / "root").exists()          # an empty sheet and exit 0 before
    assert f"{nights} holds night folders, not frames: name one (the latest is {nights / '20211112'})" in done.stderr
    scores = tmp_path / "scores.csv"
    client_scores(nights / "20211111", [("", False, "skipped")] + [(0.1, False, "")] * 4).to_csv(scores, index=False)
    done = cli("label-aid", "--night", str(nights / "20211111"), "--out", str(tmp_path / "aid"), "--scores",
               str(scores))
    assert done.returncode == 0, done.stderr
    assert "Check its 0 candidates" in (tmp_path / "aid" / "index.html").read_text()

    done = cli("prepare", "--nights", str(nights), "--test-fraction", "0.34", "--out", str(tmp_path / "split"))
    assert done.returncode == 0, done.stderr
    assert len(set(pd.read_csv(tmp_path / "split" / "index.csv")["night"])) == 3


def test_cli_simulate_then_prepare(tmp_path):
    pytest.importorskip("gualta.simulate")
    done = cli("simulate", "--out", str(tmp_path / "sim"), "--nights", "2", "--frames", "3", "--date", "20211110",
               "--seed", "1", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "simulate: 2 nights (20211110, 20211111)" in done.stdout
    before = sorted(p.name for p in (tmp_path / "sim").rglob("*"))
    done = cli("simulate", "--out", str(tmp_path / "sim"), "--nights", "2", "--frames", "2", "--date", "20211109",
               "--seed", "5", "--workers", "1")        # its second night is 20211110: the first would be written
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{tmp_path / 'sim' / '20211110'} already holds frames" in done.stderr
    assert sorted(p.name for p in (tmp_path / "sim").rglob("*")) == before     # neither night written
    done = cli("prepare", "--nights", str(tmp_path / "sim"), "--test-nights", "20211111", "--out", str(tmp_path / "d"))
    assert done.returncode == 0, done.stderr
    index = pd.read_csv(tmp_path / "d" / "index.csv", dtype={"night": str})
    assert list(index["night"]) == ["20211110"] * 2 + ["20211111"] * 2
    truth = pd.concat(pd.read_csv(night / "ground_truth.csv") for night in sorted((tmp_path / "sim").iterdir()))
    truth = truth.set_index("file").loc[index["file"]]
    assert list(index["meteor"]) == list((truth["label"] == "meteor").astype(int))
    assert list(index["event"]) == list(truth["event"])


def test_cli_simulate_cut_short_goes_on_when_run_again(tmp_path):
    """`simulate --nights 2` cut short during its second night could not be run again: the rerun refused the whole
    first night with the words it has for another request's nights, and the half-written one the same way."""
    pytest.importorskip("gualta.simulate")
    options = ["simulate", "--out", str(tmp_path), "--nights", "2", "--frames", "2", "--date", "20211110", "--seed",
               "1", "--workers", "1"]
    assert cli(*options).returncode == 0
    first = {path: path.stat().st_mtime_ns for path in (tmp_path / "20211110").iterdir()}
    (tmp_path / "20211111" / "night.json").unlink()                     # the second night cut short
    done = cli(*options)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{tmp_path / '20211111'} holds a night cut short (no night.json): remove it and run again" in done.stderr
    shutil.rmtree(tmp_path / "20211111")
    done = cli(*options)
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / '20211110'} kept (already simulated)" in done.stderr
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "20211110").iterdir()} == first
    assert (tmp_path / "20211111" / "night.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["prepare", "--nights", "/no/such/folder", "--out", "x"], "not a folder: /no/such/folder"),
    (["prepare", "--nights", "{nights}", "--test-nights", "20991231", "--out", "{tmp}/o"], "20991231"),
    (["prepare", "--nights", "{tmp}", "--out", "{tmp}/o"], "no night folders"),
    (["prepare", "--nights", "{nights}", "--out", "{tmp}/o", "--version", "v9"], "invalid choice"),
    (["label-aid", "--night", "/no/such/night", "--out", "x"], "not a folder"),
    (["label-aid", "--night", "{nights}/20211110", "--out", "{tmp}/file/aid"],
     "argument --out: not a folder: {tmp}/file/aid ({tmp}/file is a file)"),
    (["label-aid", "--night", "{nights}/20211110", "--out", "{tmp}/file"], "argument --out: not a folder: {tmp}/file"),
    (["prepare", "--nights", "{nights}", "--out", "{tmp}/file"], "argument --out: not a folder: {tmp}/file"),
    (["simulate", "--out", "{tmp}/file", "--nights", "1", "--frames", "2", "--date", "20211110"],
     "Not a directory: {tmp}/file/20211110"),
    (["simulate", "--out", "{tmp}/sim", "--nights", "1", "--frames", "4", "--date", "20211110", "--start", "11:59"],
     "4 frames from 2021-11-11 11:59 run past noon into the next night's folder: at most 2"),
    (["simulate", "--out", "{tmp}/sim", "--nights", "1", "--rates", "meteor=nan"], "rate must be from 0 to 10"),
    (["simulate", "--out", "{tmp}/sim", "--nights", "1", "--rates", "meteor=inf"], "rate must be from 0 to 10"),
    (["simulate", "--out", "{tmp}/sim", "--nights", "1", "--seed", "-1"], "argument --seed: must be 0 or more: -1"),
    (["prepare", "--nights", "{nights}", "--out", "{tmp}/o", "--seed", "-1"], "argument --seed: must be 0 or more"),
])
def test_cli_bad_arguments_exit_non_zero_with_a_message(nights, tmp_path, args, message):
    """Bad arguments, and an output folder where a file is (as a full disk or no permission would), are one line;
    prepare and label-aid --out FILE worked through every night before failing 'Not a directory'."""
    (tmp_path / "file").write_text("in the way")
    message = message.format(tmp=tmp_path)
    done = cli(*(a.format(nights=nights, tmp=tmp_path) for a in args))
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_reexports_the_thesis_preprocessing():
    sys.path.insert(0, str(REPO))
    try:
        import dataPreparation
    finally:
        sys.path.remove(str(REPO))
    from gualta import preprocess
    for name in ("to_gray", "subtract", "threshold", "resize_area", "difference_image", "make_version"):
        assert getattr(dataPreparation, name) is getattr(preprocess, name)


def test_images_are_written_into_a_folder_named_in_any_language(nights, tmp_path, monkeypatch):
    """prepare, label-aid and raw-dataset wrote through OpenCV's imwrite, which on Windows cannot open a non-ASCII
    path: a dataset or contact sheet under 'Cámara Иван' stopped at its first image. They are encoded by OpenCV and
    written by Python, as frames are read; an unknown suffix is still 'cannot write PATH'."""
    windows_imwrite(monkeypatch)
    folder = tmp_path / "Cámara Иван"
    image = np.random.default_rng(1).integers(0, 256, (40, 60), np.uint8)
    dataset.write_image(folder / "diff.png", image)
    assert np.array_equal(read_gray(folder / "diff.png"), image)                 # PNG: the same pixels
    with pytest.raises(OSError, match=f"^cannot write {folder / 'diff.xyz'}$"):
        dataset.write_image(folder / "diff.xyz", image)
    label_aid(nights / "20211110", folder / "aid")
    written = sorted((folder / "aid").rglob("*.*g"))
    assert {path.suffix for path in written} == {".png", ".jpg"}
    assert all(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED) is not None for path in written)
