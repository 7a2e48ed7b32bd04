"""Batch night runs: the scores CSV contract, per-frame lines, bad frames, uploads to the embedded service, the
model download."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
import requests
from PIL import Image
from tqdm import tqdm

from gualta import allsky, cli, detect, model_update, report
from gualta.client_errors import ClientError, NightError
from gualta.detect import NightSummary, run_batch
from gualta.frames import FLAT_MIN_SEEN, NightFrames
from gualta.payload import build_detection, validate
from gualta.scores import CSV_COLUMNS, CsvRows, is_scores_csv, lock_exclusive, read_scores, scores_file, write_scores
from gualta.server import ChildServer
from helpers_client import (TINY_VERSION, as_ordinary_user, base_requirements, copy_night, only_installed_command,
                            publish, settings, tiny_onnx_model)
from helpers_nights import background, sensor_noise
from helpers_service import BUCKET, KEYS, RecordingServer, child_env, free_port, moto_s3, service_env

REPO = Path(__file__).resolve().parent.parent
KEY = KEYS["obs01"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The embedded central service on a local store: (url, store folder)."""
    store = tmp_path_factory.mktemp("store")
    with ChildServer(store, child_env(**service_env(store))) as child:
        yield child.url, store


def scores_of(tmp_path, night, model, **overrides):
    out = tmp_path / "scores.csv"
    summary = run_batch(settings(tmp_path, model, **overrides), night, out, upload=False, say=lambda line: None,
                        progress=False)
    return summary, read_scores(out)


def test_scores_csv_has_one_row_per_frame_and_the_first_is_skipped(client_night, tiny_model, tmp_path):
    summary, rows = scores_of(tmp_path, client_night, tiny_model, streak_check=False)   # labels follow the score
    frames = allsky.list_frames(client_night)
    assert list(rows[0]) == CSV_COLUMNS
    assert [row["file"] for row in rows] == [frame.name for frame in frames]
    first = rows[0]
    assert (first["score"], first["label"], first["detection"], first["flag"]) == ("", "", "0", "skipped")
    assert "first frame" in first["note"]
    for previous, row in zip(rows, rows[1:]):
        score = float(row["score"])
        assert 0 <= score <= 1 and row["previous"] == previous["file"]
        assert row["label"] == ("meteor" if score >= 0.85 else "no-meteor")
        assert row["detection"] == ("1" if row["label"] == "meteor" and row["flag"] == "" else "0")
        assert row["flag"] in ("", "satellite", "cloud") and (row["flag"] == "" or row["label"] == "meteor")
        if row["label"] == "meteor" and row["x1"]:
            assert 0 <= int(row["x1"]) <= 1304 and 0 <= int(row["y2"]) <= 976
    assert summary.frames == len(frames) and summary.scored == len(frames) - 1
    assert summary.detections == sum(row["detection"] == "1" for row in rows) > 0
    assert summary.flagged == sum(row["flag"] in ("satellite", "cloud") for row in rows)


def test_threshold_and_satellite_settings(client_night, tiny_model, tmp_path):
    _, default = scores_of(tmp_path, client_night, tiny_model)
    _, lenient = scores_of(tmp_path, client_night, tiny_model, threshold=0.0, satellite_check=False)
    assert all(row["label"] == "meteor" and row["flag"] == "" for row in lenient[1:])
    assert [row["score"] for row in lenient] == [row["score"] for row in default]
    _, flagged_too = scores_of(tmp_path, client_night, tiny_model, report_flagged=True)
    assert [row["flag"] for row in flagged_too] == [row["flag"] for row in default]
    assert all(row["detection"] == ("1" if row["label"] == "meteor" else "0") for row in flagged_too[1:])


def night_named_by_a_clock(client_night: Path, root: Path, night: str, first: datetime,
                           clock_zone: timezone | None = None) -> list[Path]:
    """The client night's frames as taken every 30 s from `first` (local time and its fold, or aware) and named by
    the camera's clock (local time, or `clock_zone`), their file times from the real clock; returned in the order
    they were taken."""
    folder = root / night
    folder.mkdir(parents=True)
    start, taken_order = first.timestamp(), []
    for i, frame in enumerate(allsky.list_frames(client_night)):
        taken = start + 30 * i
        copy = folder / f"image-{datetime.fromtimestamp(taken, clock_zone):%Y%m%d%H%M%S}.jpg"
        copy.write_bytes(frame.read_bytes())
        os.utime(copy, (taken + 2, taken + 2))               # written 2 s after the exposure starts
        taken_order.append(copy)
    return taken_order


def test_the_hour_named_twice_when_summer_time_ends_is_scored_in_the_order_it_was_taken(
        client_night, tiny_model, tmp_path, madrid_clock):
    """When the camera's clock goes back at the end of summer time, the repeated hour's frames interleave by name
    with those taken an hour before (every pair would compare skies an hour apart). Their file times tell the two
    passes apart, and the night is scored as it was taken: every frame against the one taken 30 s before, the same
    scores as the night named without a change. A copy whose files were all written at once keeps the name order."""
    taken = night_named_by_a_clock(client_night, tmp_path / "images", "20211030",
                                   datetime(2021, 10, 31, 2, 54, 5, fold=0))
    names = [frame.name for frame in taken]
    assert names[11:14] == ["image-20211031025935.jpg", "image-20211031020005.jpg", "image-20211031020035.jpg"]
    assert sorted(names) != names and allsky.list_frames(taken[0].parent) == taken
    _, continuous = scores_of(tmp_path, client_night, tiny_model)
    summary, rows = scores_of(tmp_path, taken[0].parent, tiny_model)
    assert [row["file"] for row in rows] == names and summary.scored == len(names) - 1
    assert rows[12]["previous"] == "image-20211031025935.jpg"
    assert [row["score"] for row in rows] == [row["score"] for row in continuous]
    assert [row["detection"] for row in rows] == [row["detection"] for row in continuous]

    for frame in taken:
        os.utime(frame, (0, 0))                            # a copy: nothing tells the two passes apart
    summary, rows = scores_of(tmp_path, taken[0].parent, tiny_model)
    assert [row["file"] for row in rows] == sorted(names)
    assert summary.scored == len(names) - 2 and "48 min earlier" in rows[12]["note"]     # 02:05:35 → 02:54:05


def test_summer_time_starting_is_no_gap_and_a_camera_without_summer_time_keeps_its_name_order(
        client_night, tiny_model, tmp_path, madrid_clock):
    """When summer time starts the names jump from 02:00 to 03:00, 30 s after the last frame: the frame after the
    jump is compared with it, the same scores as the night named without a change. A camera whose clock keeps UTC
    names frames in the hour this machine skips (and in the one it repeats) all the same; they keep their name
    order, never interleaved with the next hour's, and are not moved by the jump."""
    taken = night_named_by_a_clock(client_night, tmp_path / "images", "20220326", datetime(2022, 3, 27, 1, 55))
    names = [frame.name for frame in taken]
    assert names[9:11] == ["image-20220327015930.jpg", "image-20220327030000.jpg"]
    _, continuous = scores_of(tmp_path, client_night, tiny_model)
    summary, rows = scores_of(tmp_path, taken[0].parent, tiny_model)
    assert [row["file"] for row in rows] == names and summary.scored == len(taken) - 1
    assert rows[10]["previous"] == "image-20220327015930.jpg" and rows[10]["note"] == ""
    assert [row["score"] for row in rows] == [row["score"] for row in continuous]

    for night, first, hour in (("20220326", datetime(2022, 3, 27, 2, 54, tzinfo=timezone.utc), "03"),
                               ("20211030", datetime(2021, 10, 31, 1, 55, tzinfo=timezone.utc), "02")):
        named = night_named_by_a_clock(client_night, tmp_path / "utc", night, first, clock_zone=timezone.utc)
        assert named[12 if hour == "03" else 10].name == f"image-{first:%Y%m%d}{hour}0000.jpg"   # the camera's clock
        summary, rows = scores_of(tmp_path, named[0].parent, tiny_model)
        assert [row["file"] for row in rows] == sorted(frame.name for frame in named) == [f.name for f in named]
        assert summary.scored == len(named) - 1


def test_file_times_are_read_only_in_the_repeated_hour(client_night, tiny_model, tmp_path, madrid_clock):
    """Elsewhere a frame written long after its neighbours (re-saved, copied later) is compared as named."""
    night = copy_night(client_night, tmp_path / "copy")
    frames = allsky.list_frames(night)
    os.utime(frames[5], (frames[5].stat().st_mtime + 6 * 3600,) * 2)
    summary, rows = scores_of(tmp_path, night, tiny_model)
    assert summary.scored == len(frames) - 1 and rows[5]["score"] != "" and rows[6]["score"] != ""
    assert [row["file"] for row in rows] == [frame.name for frame in frames]


def test_scores_into_a_folder_get_one_csv_per_night(client_night, tiny_model, tmp_path):
    """`--scores DIR/` (or an existing folder) keeps every night's CSV, named after the night scored."""
    config = settings(tmp_path, tiny_model)
    summary = run_batch(config, client_night, f"{tmp_path / 'scores'}/", upload=False, say=lambda line: None,
                        progress=False)
    assert summary.scores == tmp_path / "scores" / "20211110.csv"
    assert len(read_scores(summary.scores)) == 24
    assert scores_file(tmp_path / "scores", "20211111") == tmp_path / "scores" / "20211111.csv"
    assert scores_file(tmp_path / "one.csv", "20211111") == tmp_path / "one.csv"
    assert scores_file(None, "20211111") is None


def test_catch_up_scores_the_recent_nights_not_scored_yet_oldest_first(client_night, tiny_model, tmp_path):
    """The machine was off, or a morning run failed: `--catch-up DAYS` scores the nights of the DAYS before the latest
    that have no whole CSV in the scores folder, oldest first, then the latest as usual. A CSV an older client left
    half written under its name (it wrote no .part) was taken for a night scored, and the rest never reported."""
    root, scores = tmp_path / "images", tmp_path / "scores"
    for night in ("20211101", "20211107", "20211108", "20211109", "20211110"):
        shutil.copytree(client_night, root / night)
    scores.mkdir()
    frames = [frame.name for frame in allsky.list_frames(client_night)]
    (scores / "20211107.csv").write_text("file,score\n" + "".join(f"{name},0.1\n" for name in frames))
    (scores / "20211108.csv").write_text("file,score\n" + "".join(f"{name},0.1\n" for name in frames[:10]))
    (scores / "20211109.csv.part").write_text("a run cut short\n")
    dawn = root / "20211107" / "image-20211108071500.jpg"                   # taken after the morning run scored
    shutil.copy(root / "20211107" / frames[-1], dawn)
    os.utime(dawn, (time.time() + 60, time.time() + 60))
    config = settings(tmp_path, tiny_model, main_folder=root)
    assert detect.catch_up_nights(config, scores, 7)[0] == [root / "20211108", root / "20211109"]
    assert detect.catch_up_nights(config, scores, 0) == ([], [])
    with pytest.raises(ClientError, match="--catch-up needs --scores DIR/"):
        detect.catch_up_nights(config, tmp_path / "one.csv", 7)

    command = [sys.executable, str(REPO / "guAlta.py"), "batch", "--main-folder", str(root), "--model", str(tiny_model),
               "--outbox", str(tmp_path / "outbox.sqlite"), "--threads", "1", "--no-upload"]
    run = subprocess.run([*command, "--catch-up", "7", "--scores", f"{scores}/"], capture_output=True, text=True,
                         timeout=300, env=child_env())
    assert run.returncode == 0, run.stderr
    said = [line for line in run.stdout.splitlines() if line.startswith("night ")]
    assert [line.split(":")[0] for line in said] == ["night 20211108", "night 20211109", "night 20211110"]
    assert "1 night already scored, skipped: 20211107" in run.stdout.splitlines()
    assert sorted(p.name for p in scores.iterdir()) == ["20211107.csv", "20211108.csv", "20211109.csv",
                                                        "20211110.csv"]
    assert len(read_scores(scores / "20211108.csv")) == 24
    run = subprocess.run([*command, "--catch-up", "7", "--scores", f"{scores}/", "--folder", str(root / "20211110")],
                         capture_output=True, text=True, timeout=120, env=child_env())
    assert run.returncode == 2 and "guAlta batch: --catch-up scores the nights under guAlta_main_folder" in run.stderr
    run = subprocess.run([*command, "--catch-up", "-2"], capture_output=True, text=True, timeout=60, env=child_env())
    assert run.returncode == 2 and "argument --catch-up: not a number of days: -2" in run.stderr


def test_catch_up_says_the_nights_it_skips_as_scored_already(client_night, tiny_model, tmp_path, capsys):
    """`--catch-up 7` over a week of folders scored fewer nights than there were, without a word why: the nights it
    skips as scored already are said in one line, a count and the first and last of them."""
    root, scores = tmp_path / "images", tmp_path / "scores"
    frames = [frame.name for frame in allsky.list_frames(client_night)]
    scores.mkdir()
    for night in ("20211105", "20211106", "20211107", "20211108", "20211109", "20211110"):
        shutil.copytree(client_night, root / night)
        if night != "20211110":
            (scores / f"{night}.csv").write_text("file,score\n" + "".join(f"{name},0.1\n" for name in frames))
    assert detect.run_nights(settings(tmp_path, tiny_model, main_folder=root), None, f"{scores}/", 7,
                             upload=False) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0] == "5 nights already scored, skipped: 20211105 … 20211109"
    assert [line.split(":")[0] for line in said if line.startswith("night ")] == ["night 20211110"]
    assert detect.scored_already_line([root / "20211107", root / "20211109"]) == \
        "2 nights already scored, skipped: 20211107, 20211109"


def test_catch_up_line_names_runs_of_skipped_nights_not_one_span():
    """'4 nights already scored, skipped: 20211101 … 20211106' read as six nights skipped where 3 and 4 were
    scored in the run: each run of consecutive nights is named, a month's end and a leap day included, and past
    four runs those between are counted."""
    def line(*names):
        return detect.scored_already_line([Path(name) for name in names])

    assert line("20211101", "20211102", "20211105", "20211106") == \
        "4 nights already scored, skipped: 20211101, 20211102, 20211105, 20211106"
    assert line("20211130", "20211201", "20211202", "20211205") == \
        "4 nights already scored, skipped: 20211130 … 20211202, 20211205"
    assert line("20240228", "20240229", "20240301") == "3 nights already scored, skipped: 20240228 … 20240301"
    assert line("20230228", "20230301", "20230302") == "3 nights already scored, skipped: 20230228 … 20230302"
    assert line("20230227", "20230301") == "2 nights already scored, skipped: 20230227, 20230301"
    assert line("20211101") == "1 night already scored, skipped: 20211101"
    assert line(*(f"202111{day:02d}" for day in (1, 3, 5, 7, 9, 11))) == \
        "6 nights already scored, skipped: 20211101, 20211103, 20211105, 2 runs more, 20211111"


def test_catch_up_goes_on_past_a_night_it_cannot_list(client_night, tiny_model, tmp_path):
    """A night folder another account made unreadable stopped the run before last night, every morning for a week
    (the cron line catches up 7 nights): it is said, the other nights are scored, and the run exits 1."""
    root, scores = tmp_path / "images", tmp_path / "scores"
    for night in ("20211108", "20211109", "20211110"):
        shutil.copytree(client_night, root / night)
    (root / "20211109").chmod(0)
    try:
        run = subprocess.run(as_ordinary_user([
            sys.executable, str(REPO / "guAlta.py"), "batch", "--main-folder", str(root), "--model", str(tiny_model),
            "--outbox", str(tmp_path / "outbox.sqlite"), "--threads", "1", "--no-upload", "--catch-up", "3",
            "--scores", f"{scores}/"]), capture_output=True, text=True, timeout=300, env=child_env())
    finally:
        (root / "20211109").chmod(0o755)
    assert run.returncode == 1 and f"guAlta batch: cannot list {root / '20211109'}: Permission denied" in run.stderr
    assert sorted(p.name for p in scores.iterdir()) == ["20211108.csv", "20211110.csv"]


def test_the_night_folder_is_named_as_it_is_and_a_device_is_no_scores_csv(client_night, tiny_model, tmp_path):
    """`--folder .` scored a night named '' (its CSV '.csv', its uploads refused); `--scores /dev/null` as root would
    have replaced the device with the CSV (written beside as .part, then renamed over it)."""
    night = copy_night(client_night, tmp_path / "images")
    command = [sys.executable, str(REPO / "guAlta.py"), "batch", "--folder", ".", "--model", str(tiny_model),
               "--outbox", str(tmp_path / "outbox.sqlite"), "--threads", "1", "--no-upload"]
    run = subprocess.run([*command, "--scores", f"{tmp_path / 'scores'}/"], capture_output=True, text=True,
                         timeout=300, env=child_env(), cwd=night)
    assert run.returncode == 0 and "night 20211110: 24 frames" in run.stdout, run.stderr
    assert [p.name for p in (tmp_path / "scores").iterdir()] == ["20211110.csv"]
    (tmp_path / "links").mkdir()                                      # a night linked from elsewhere keeps its name
    os.symlink(night, tmp_path / "links" / "20211111")
    linked = subprocess.run([*command[:4], str(tmp_path / "links" / "20211111"), *command[5:], "--scores",
                             f"{tmp_path / 'scores'}/"], capture_output=True, text=True, timeout=300, env=child_env())
    assert linked.returncode == 0 and "night 20211111: 24 frames" in linked.stdout, linked.stderr
    fifo = tmp_path / "discard"
    os.mkfifo(fifo)
    run = subprocess.run([*command, "--scores", str(fifo)], capture_output=True, text=True, timeout=120,
                         env=child_env(), cwd=night)
    assert run.returncode == 1 and f"guAlta batch: --scores {fifo} is not a regular file" in run.stderr
    assert fifo.is_fifo() and not Path(f"{fifo}.part").exists()


def test_scores_never_replace_a_file_that_is_not_a_scores_csv(client_night, tiny_model, tmp_path):
    """`--scores` named by a slip of the keyboard (tab completion) replaced a camera frame, the model or the
    settings file with the CSV. A file that is not a scores CSV (nor empty) is refused and left as it is; an earlier
    scores CSV is still written over."""
    night = copy_night(client_night, tmp_path / "images")
    config = settings(tmp_path, tiny_model)
    frame = allsky.list_frames(night)[0]
    league = tmp_path / "league.csv"
    league.write_text("file,scoreboard,team\nx,1,2\n")                 # a CSV, not a scores CSV
    kept = {path: path.read_bytes() for path in (frame, tiny_model, league)}
    for path in kept:
        with pytest.raises(ClientError, match="is a file that is not a scores CSV, left as it is"):
            run_batch(config, night, path, upload=False, say=lambda line: None, progress=False)
    assert {path: path.read_bytes() for path in kept} == kept and not list(night.glob("*.part"))
    earlier = tmp_path / "scores.csv"
    for _ in range(2):
        run_batch(config, night, earlier, upload=False, say=lambda line: None, progress=False)
        assert len(read_scores(earlier)) == len(allsky.list_frames(night))


def test_frames_taken_in_daylight_are_not_scored(client_night, tiny_model, tmp_path, madrid_clock):
    """With AllSky's daytime capture on, the afternoon's and the morning's frames are in the night's folder and were
    scored as night frames: the sun's rays and daylit clouds made false meteors in some of them, used up the night's
    Telegram posts and doubled the run's time. With the camera's place set, a frame taken with the sun above
    guAlta_night_sun_altitude is skipped unread, its row saying so."""
    said = []

    def rows(name: str, **place) -> list[dict]:
        config = settings(tmp_path, tiny_model, threshold=0, faint_crossing_check=False, **place)  # not step 5's test
        run_batch(config, client_night, tmp_path / name, upload=False, say=said.append, progress=False)
        return read_scores(tmp_path / name)

    unset, madrid = rows("unset.csv"), rows("madrid.csv", latitude=40.42, longitude=-3.70)
    assert madrid == unset and sum(row["detection"] == "1" for row in madrid) > 0      # 22:00 in November: night
    sydney = rows("sydney.csv", latitude=-33.87, longitude=151.21)          # the same instants: 08:00 there
    assert all(row["flag"] == "skipped" and row["score"] == "" and row["detection"] == "0" for row in sydney)
    assert {re.sub(r"\d+", "N", row["note"]) for row in sydney} == {"daytime: the sun at N.N°, above -N°"}
    assert said[-1].startswith("night 20211110: 24 frames (0 scored, 0 skipped, 24 in daylight: the sun never went "
                               "below guAlta_night_sun_altitude at the camera's place")     # not 0 scored and no why
    dusk = rows("dusk.csv", latitude=0.0, longitude=-43.95)        # the sun passes -6° at 21:05 UTC, 22:05 here
    daylit = [row["file"] for row in dusk if row["note"].startswith("daytime")]
    assert daylit == [row["file"] for row in madrid[:11]]
    assert dusk[11]["note"] == "first frame after daylight: no predecessor" and dusk[11]["score"] == ""
    assert dusk[12:] == madrid[12:]                                # then the night as it always was
    assert "24 frames (12 scored, 1 skipped, 11 in daylight), " in said[-1]     # the first after daylight: no pair
    assert float(re.search(r"([\d.]+) s, ", said[-1]).group(1)) * float(
        re.search(r"([\d.]+) frames/s", said[-1]).group(1)) == pytest.approx(13, abs=1.5)     # frames read a second
    assert rows("utc.csv", latitude=0.0, longitude=-43.95, camera_timezone="UTC") == madrid   # named an hour later


def test_a_bad_first_frame_after_daylight_hands_its_afresh_start_to_the_next_good_frame(client_night, tiny_model,
                                                                                          tmp_path, madrid_clock):
    """The first frame after daylight is compared with none; when it was unreadable, the next frame was compared with
    the last daylit frame (its sky and the sun's glare made the difference) — so with a bad frame compared with none
    after a clock set back."""
    night = tmp_path / client_night.name
    shutil.copytree(client_night, night)
    frames = allsky.list_frames(night)
    frames[11].write_bytes(b"not a picture")                      # the first frame after daylight at this place
    run_batch(settings(tmp_path, tiny_model, threshold=0, latitude=0.0, longitude=-43.95), night,
              tmp_path / "dusk.csv", upload=False, say=lambda line: None, progress=False)
    dusk = read_scores(tmp_path / "dusk.csv")
    assert dusk[11]["note"].startswith("bad frame: ")
    assert dusk[12]["note"] == "first frame after daylight: no predecessor" and dusk[12]["score"] == ""
    assert dusk[13]["previous"] == frames[12].name and dusk[13]["score"] != ""


def test_extra_log_prints_the_thesis_line_per_frame(client_night, tiny_model, tmp_path):
    lines = []
    run_batch(settings(tmp_path, tiny_model, enable_extra_log=True), client_night, None, upload=False,
              say=lines.append, progress=False)
    per_frame = [line for line in lines if " , " in line]
    assert len(per_frame) == len(allsky.list_frames(client_night))
    pattern = re.compile(r"^(\S+image-\d{14}\.jpg) , (meteor|no-meteor) , (\d\.\d{4}) , (\d\.\d{4})$")
    for line in per_frame[1:]:
        path, _, p_meteor, p_other = pattern.match(line).groups()
        assert Path(path).parent == client_night and abs(float(p_meteor) + float(p_other) - 1) < 2e-4
    assert re.search(r"night 20211110: 24 frames \(23 scored, 1 skipped\), \d+ detections, \d+ flagged, "
                     r"[\d.]+ s, [\d.]+ frames/s; uploads off; model test-1", lines[-1])


def test_bad_frames_mid_night_are_logged_and_skipped(client_night, tiny_model, tmp_path, caplog):
    night = copy_night(client_night, tmp_path / "copy")
    frames = allsky.list_frames(night)
    frames[5].write_bytes(frames[5].read_bytes()[:5000])          # truncated JPEG
    frames[9].write_bytes(b"")                                    # empty file
    frames[10].write_bytes(b"this is not an image")
    for tiny in (13, 14):                                         # two icons in a row: a traceback in the streak check
        assert cv2.imwrite(str(frames[tiny]), np.random.default_rng(tiny).integers(0, 256, (40, 60, 3), np.uint8))
    (night / frames[3].name.replace(".jpg", ".JPG")).write_bytes(frames[3].read_bytes())   # not AllSky's name
    summary, rows = scores_of(tmp_path, night, tiny_model)
    by_file = {row["file"]: row for row in rows}
    for bad in (5, 9, 10, 13, 14):
        row = by_file[frames[bad].name]
        assert (row["score"], row["flag"], row["detection"]) == ("", "skipped", "0") and "bad frame" in row["note"]
    assert f"{frames[13].name}: 60×40 px, too small for a sky frame" in caplog.text
    assert by_file[frames[6].name]["previous"] == frames[4].name   # the last good frame before it
    assert by_file[frames[11].name]["previous"] == frames[8].name
    assert by_file[frames[15].name]["previous"] == frames[12].name
    assert summary.scored == len(frames) - 6
    assert frames[5].name in caplog.text and frames[9].name in caplog.text
    assert f"1 file(s) named like frames but not as AllSky names them ({frames[3].name[:-4]}.JPG) are left out" \
        in caplog.text


def test_the_frame_after_a_camera_stop_is_not_compared(client_night, tiny_model, tmp_path, caplog):
    """After the camera stopped for longer than allsky.LONG_GAP_S (a restart, a reboot), stars and clouds have moved:
    the first frame back is reported as skipped, like the first of the night, and the next one pairs with it; a
    shorter gap (frames missing) is bridged as before."""
    night = copy_night(client_night, tmp_path / "copy")
    frames = allsky.list_frames(night)

    def shift(first: int, seconds: int) -> None:
        for frame in reversed(allsky.list_frames(night)[first:]):
            later = allsky.frame_time(frame) + timedelta(seconds=seconds)
            frame.rename(frame.with_name(f"image-{later:%Y%m%d%H%M%S}.jpg"))

    shift(8, allsky.LONG_GAP_S - 60)                      # 4.5 min between frames 7 and 8: bridged
    shift(16, 20 * 60)                                    # 20.5 min between frames 15 and 16: not compared
    frames = allsky.list_frames(night)
    summary, rows = scores_of(tmp_path, night, tiny_model)
    assert rows[8]["previous"] == frames[7].name and rows[8]["score"] != ""
    back = rows[16]
    assert (back["score"], back["label"], back["detection"], back["flag"], back["previous"]) == (
        "", "", "0", "skipped", "")
    assert back["note"] == f"previous good frame {frames[15].name} is 20 min earlier: not compared"
    assert rows[17]["previous"] == frames[16].name and rows[17]["score"] != ""
    assert summary.scored == len(frames) - 2 and frames[16].name in caplog.text


def test_a_frozen_camera_s_repeated_pictures_are_skipped_and_the_next_new_one_compared_with_the_first(
        client_night, tiny_model, tmp_path):
    """A camera that froze saves one picture again and again, under a fresh watermark or as the same file: the
    repeats are skipped, and the first new picture is compared with the sky it followed — under a long freeze,
    minutes old, so not compared (a cloudy sky 6 min apart brightened and was reported 30 s after the last copy)."""
    night = copy_night(client_night, tmp_path / "images")
    frames = allsky.list_frames(night)
    stuck = cv2.imread(str(frames[4]))
    for frame in frames[4:16]:                      # frames 5–15 repeat frame 4's picture, each with its own time
        image = stuck.copy()
        cv2.putText(image, frame.stem, (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, (200, 200, 200), 2)
        cv2.imwrite(str(frame), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    for frame in frames[19:21]:                     # frames 19 and 20: the same file as frame 18
        shutil.copyfile(frames[18], frame)
    summary, rows = scores_of(tmp_path, night, tiny_model)
    for i, original in [(i, 4) for i in range(5, 16)] + [(19, 18), (20, 18)]:
        assert (rows[i]["flag"], rows[i]["note"]) == (
            "skipped", f"bad frame: repeated: the same picture as {frames[original].name} (camera frozen)"), i
    assert (rows[16]["previous"], rows[16]["score"], rows[16]["note"]) == (
        "", "", f"previous good frame {frames[4].name} is 6 min earlier: not compared")
    assert rows[4]["score"] != "" and rows[17]["previous"] == frames[16].name
    assert rows[21]["previous"] == frames[18].name and rows[21]["score"] != ""        # 90 s: compared
    assert summary.scored == len(frames) - 1 - 13 - 1
    assert summary.counts().startswith("24 frames (9 scored, 15 skipped: 13 frozen, 1 after a camera stop, 1 first "
                                       "of the night), ")


def frozen_and_blank(night: Path) -> list[Path]:
    """The night's frames 5–12 repeat frame 4's picture (a frozen camera), 14–18 and 21 to the end are black."""
    frames = allsky.list_frames(night)
    for frame in frames[5:13]:
        shutil.copyfile(frames[4], frame)
    for frame in frames[14:19] + frames[21:]:
        cv2.imwrite(str(frame), np.zeros((300, 400), np.uint8))
    return frames


def run_lines(frames: list[Path]) -> list[str]:
    """What the batch run and the watcher say of `frozen_and_blank`'s runs: each run's first frame, then a count."""
    stuck = f"the same picture as {frames[4].name} (camera frozen)"
    blank = "blank frame (a black or uniform image): skipped"
    return [f"{frames[5].name}: {stuck}: skipped", f"{frames[5].name}: 7 more frames {stuck}, until {frames[12].name}: "
            "skipped", f"{frames[14].name}: {blank}", f"{frames[14].name}: 4 more blank frames (a black or uniform "
            f"image), until {frames[18].name}: skipped", f"{frames[21].name}: {blank}", f"{frames[21].name}: 2 more "
            f"blank frames (a black or uniform image), until {frames[23].name}: skipped"]


def test_a_run_of_frozen_or_blank_frames_is_one_warning_and_one_count(client_night, tiny_model, tmp_path, caplog):
    """A frozen or black camera gave one WARNING a frame: a dead night ~1,400 lines, ~150 kB in batch.log. The first
    frame of a run is warned of, and one line counts the rest when the run ends (or the night does)."""
    frames = frozen_and_blank(copy_night(client_night, tmp_path / "images"))
    caplog.set_level(logging.WARNING)
    _, rows = scores_of(tmp_path, frames[0].parent, tiny_model)
    assert [record.getMessage() for record in caplog.records if record.filename == "frames.py"] == run_lines(frames)
    assert sum(row["note"].startswith("bad frame: ") for row in rows) == 8 + 5 + 3        # each still has its row


def test_the_night_summary_says_why_frames_were_skipped(tiny_model, tmp_path):
    """The summary said "5 skipped" and no more: a dead camera or a few corrupt files, the operator had to open the
    scores CSV to tell (and an odd-sized frame's note there said "no good earlier frame of the same size"). It counts
    them by why, most frequent first."""
    simulate = [sys.executable, str(REPO / "dataPreparation.py"), "simulate", "--out", str(tmp_path / "images"),
                "--nights", "1", "--frames", "12", "--seed", "3", "--workers", "1"]
    made = subprocess.run(simulate, capture_output=True, text=True, timeout=300, env=child_env())
    assert made.returncode == 0, made.stderr
    night = next((tmp_path / "images").iterdir())
    frames = allsky.list_frames(night)
    frames[4].write_bytes(frames[4].read_bytes()[:3000])                      # cut short: a half-written JPEG
    for frame in frames[7:9]:                                                 # the camera gave two black frames
        cv2.imwrite(str(frame), np.zeros((976, 1304), np.uint8))
    cv2.imwrite(str(frames[10]), cv2.resize(cv2.imread(str(frames[10])), (652, 488)))     # one of another size
    run = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "batch", "--folder", str(night), "--scores",
                          str(tmp_path / "scores.csv"), "--no-upload", "--model", str(tiny_model), "--threads", "1"],
                         capture_output=True, text=True, timeout=120, env=child_env())
    assert run.returncode == 0, run.stderr
    assert (f"night {night.name}: 12 frames (7 scored, 5 skipped: 2 blank, 1 unreadable, 1 wrong size, 1 first of the "
            "night), ") in run.stdout
    assert read_scores(tmp_path / "scores.csv")[10]["note"] == "odd-sized: 652×488 but the frames either side are " \
        "1304×976"


def test_a_moment_saved_both_as_jpeg_and_png_is_scored_once_and_the_copy_called_a_copy(
        client_night, tiny_model, tmp_path):
    """A camera set to save JPEG and PNG leaves one moment twice: the second is skipped as a copy of the same moment,
    not said to be a frozen camera."""
    night = copy_night(client_night, tmp_path / "images")
    frames = allsky.list_frames(night)
    cv2.imwrite(str(frames[6].with_suffix(".png")), cv2.imread(str(frames[6])))
    summary, rows = scores_of(tmp_path, night, tiny_model)
    copy = next(row for row in rows if row["file"] == frames[6].with_suffix(".png").name)
    assert (copy["flag"], copy["note"]) == (
        "skipped", f"bad frame: repeated: the same picture as {frames[6].name} (another copy of the same moment)")
    assert "camera frozen" not in " ".join(row["note"] for row in rows)
    assert summary.skips == {"copy": 1, "first of the night": 1}          # the summary says "1 copy", not "1 frozen"


def test_a_noiseless_picture_changed_only_by_a_streak_is_a_new_frame_not_a_repeat(tmp_path):
    """Under 1 % of pixels changed is a repeat only in a picture with noise, as every exposure has: a render without
    noise that differs from the last only by a meteor's streak is compared (it was skipped as a repeat); a copy of
    a noisy picture is still a repeat."""
    night = tmp_path / "20211110"
    night.mkdir()
    sky = background(400, 300)
    streaked = cv2.line(sky.copy(), (50, 40), (250, 200), 255, 2)
    noisy = streaked + sensor_noise(1, (400, 300))
    names = [night / f"image-2021111022{minute:02d}00.png" for minute in range(4)]
    for name, image in zip(names, (sky, streaked, noisy, noisy)):
        cv2.imwrite(str(name), image)
    frames = NightFrames(names)
    assert frames.pair(names[1]).previous == names[0] and frames.bad_reason(names[1]) == ""
    assert frames.pair(names[2]).previous == names[1]
    assert frames.pair(names[3]) is None and frames.bad_reason(names[3]).startswith("repeated: the same picture as")


def test_a_dark_sky_filling_the_frame_is_taken_as_the_cameras_picture(tmp_path, caplog):
    """A camera whose dark sky fills the whole frame (no black around a lens circle) looks flat, as a failed
    exposure does: once most recent frames look so it is the camera's picture, and a bright frame among them (a
    fireball's glow) is compared as usual; only the night's first frames are taken for failed exposures (judged
    pair by pair, one bright frame marked the frames before and after it blank, and so the rest of the night)."""
    night = tmp_path / "20211110"
    night.mkdir()
    names = [night / f"image-20211110{22 + minute // 60:02d}{minute % 60:02d}00.png" for minute in range(16)]
    for index, name in enumerate(names):
        frame = np.full((300, 400), 12, np.uint8) + sensor_noise(index, (400, 300))
        for star in ((40, 30), (300, 80), (120, 250), (380, 200)):
            cv2.circle(frame, star, 1, 200, -1)
        if index == 13:
            cv2.circle(frame, (200, 150), 120, 180, -1)                          # the glow
        cv2.imwrite(str(name), frame)
    frames = NightFrames(names)
    with caplog.at_level(logging.WARNING, "gualta.frames"):
        pairs = [frames.pair(name) for name in names]
    assert [bool(frames.bad_reason(name)) for name in names] == [True] * FLAT_MIN_SEEN + [False] * 6
    assert pairs[FLAT_MIN_SEEN] is None                                           # the first picture
    assert [pair.previous for pair in pairs[FLAT_MIN_SEEN + 1:]] == names[FLAT_MIN_SEEN:-1]


def test_the_latest_night_is_never_one_dated_ahead_of_tonight(client_night, tiny_model, tmp_path, caplog):
    """A folder the camera wrote while its clock ran ahead (a year, a day) was 'the latest night' every morning:
    the cron job scored it instead of last night's."""
    root = tmp_path / "images"
    night = copy_night(client_night, root)
    ahead = root / "20991231"
    ahead.mkdir()
    shutil.copyfile(allsky.list_frames(night)[0], ahead / "image-20991231220000.jpg")
    assert detect.resolve_night(settings(tmp_path, tiny_model, main_folder=root), None) == night
    assert "night folder(s) 20991231 dated after tonight" in caplog.text


def another_camera(night: Path, root: Path, mode: str, size: tuple[int, int] | None = None) -> Path:
    """The night as another camera would save it: colour ("RGB") or monochrome ("L") JPEGs, optionally resized."""
    out = root / mode / night.name
    out.mkdir(parents=True)
    for frame in allsky.list_frames(night):
        image = Image.open(frame).convert(mode)
        image = image.resize(size, Image.Resampling.BILINEAR) if size else image
        image.save(out / frame.name, quality=95)
    return out


def test_png_frames_are_scored_as_the_same_frames_in_jpeg(client_night, tiny_model, tmp_path):
    """A camera that saves PNG (AllSky's file name image.png) is read the same way: the night's frames written as
    PNG (the gray the client reads from each JPEG, pixel for pixel) get the same scores and decisions; a cut-off PNG
    is a bad frame."""
    night = tmp_path / "png" / client_night.name
    night.mkdir(parents=True)
    for frame in allsky.list_frames(client_night):
        cv2.imwrite(str(night / frame.with_suffix(".png").name), cv2.imread(str(frame), cv2.IMREAD_GRAYSCALE))
    _, jpeg_rows = scores_of(tmp_path, client_night, tiny_model)
    _, png_rows = scores_of(tmp_path, night, tiny_model)
    assert [row["file"] for row in png_rows] == [row["file"].replace(".jpg", ".png") for row in jpeg_rows]
    same = ("score", "label", "detection", "flag", "x1", "y1", "x2", "y2")
    assert [[row[k] for k in same] for row in png_rows] == [[row[k] for k in same] for row in jpeg_rows]
    cut = allsky.list_frames(night)[5]
    cut.write_bytes(cut.read_bytes()[:-12])
    _, rows = scores_of(tmp_path, night, tiny_model)
    assert rows[5]["flag"] == "skipped" and "bad frame" in rows[5]["note"]


def box_centre(row: dict) -> np.ndarray:
    """The centre (x, y) of a scores-CSV row's box, in frame pixels."""
    return np.array([float(row["x1"]) + float(row["x2"]), float(row["y1"]) + float(row["y2"])]) / 2


def test_other_cameras_monochrome_and_larger_frames(client_night, tiny_model, tmp_path):
    """Nothing assumes AllSky's 1304×976 colour frames: a monochrome camera's night and a 1920×1080 camera's get
    the colour night's decisions, each detection placed in its own frame."""
    decisions, centres = {}, {}
    for name, mode, size in (("colour", "RGB", None), ("mono", "L", None), ("hd", "RGB", (1920, 1080))):
        night = another_camera(client_night, tmp_path / name, mode, size)
        summary, rows = scores_of(tmp_path, night, tiny_model)
        assert summary.scored == len(allsky.list_frames(client_night)) - 1
        decisions[name] = {row["file"]: (row["detection"], row["flag"]) for row in rows}
        scale = np.divide(size or (1304, 976), (1304, 976))
        centres[name] = {row["file"]: box_centre(row) / scale for row in rows if row["detection"] == "1"}
    assert "satellite" in {flag for _, flag in decisions["colour"].values()}
    assert decisions["mono"] == decisions["colour"] == decisions["hd"]
    assert centres["colour"] and centres["hd"].keys() == centres["colour"].keys()
    for file, centre in centres["colour"].items():
        assert np.abs(centres["hd"][file] - centre).max() < 10, file


def test_cli_batch_contract(client_night, tiny_model, tmp_path):
    out = tmp_path / "out" / "scores.csv"
    result = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "batch", "--folder", str(client_night),
                             "--scores", str(out), "--no-upload", "--model", str(tiny_model), "--threads", "1"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, env=child_env())
    assert result.returncode == 0, result.stderr
    assert "night 20211110: 24 frames" in result.stdout
    assert [row["file"] for row in read_scores(out)] == [f.name for f in allsky.list_frames(client_night)]


def test_the_client_runs_on_the_base_install(client_night, tiny_model, tmp_path):
    """`pip install .` without extras is the observatory's install (README "Install"): batch with uploads, the
    outbox's flush, the real-time watcher's module and label-aid's contact sheet work with every other installed
    package unimportable."""
    store, out, base = tmp_path / "store", tmp_path / "scores.csv", base_requirements(REPO / "pyproject.toml")
    with ChildServer(store, child_env(**service_env(store))) as child:
        def client(*args):
            command, blocked = only_installed_command(base, REPO / "guAlta.py", *args, "--url", child.url,
                                                      "--api-key", KEY, "--outbox", str(tmp_path / "o.db"))
            assert {"torch", "fastai", "boto3", "telegram", "skyfield"} <= set(blocked.split(","))
            return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                                  env=child_env(GUALTA_TEST_BLOCKED=blocked))

        batch = client("batch", "--folder", str(client_night), "--scores", str(out), "--model", str(tiny_model))
        assert batch.returncode == 0, batch.stderr
        assert "all reports delivered" in batch.stdout or "report(s) pending in the outbox" in batch.stdout  # loaded
        flush = client("flush")
        assert flush.returncode == 0, flush.stderr
    reported = {f"obs01_{allsky.frame_id(row['file'])}.json" for row in read_scores(out) if row["detection"] == "1"}
    assert reported and {path.name for path in (store / "detections" / "20211110").iterdir()} == reported
    command, blocked = only_installed_command(base, REPO / "guAlta.py", "realtime", "--help")
    watcher = subprocess.run(command, capture_output=True, text=True, timeout=60, env=child_env(
        GUALTA_TEST_BLOCKED=blocked))
    assert watcher.returncode == 0 and "realtime" in watcher.stdout, watcher.stderr
    command, blocked = only_installed_command(base, REPO / "dataPreparation.py", "label-aid", "--night",
                                              str(client_night), "--out", str(tmp_path / "sheet"), "--scores", str(out))
    sheet = subprocess.run(command, capture_output=True, text=True, timeout=120, env=child_env(
        GUALTA_TEST_BLOCKED=blocked))                   # README offers operators the contact sheet of their night
    assert sheet.returncode == 0 and (tmp_path / "sheet" / "index.html").is_file(), sheet.stderr
    for modules, works in (("gualta.realtime, gualta.detect, gualta.report", True), ("torch", False)):
        (tmp_path / "probe.py").write_text(f"import {modules}\n")
        command, blocked = only_installed_command(base, tmp_path / "probe.py")
        probe = subprocess.run(command, capture_output=True, text=True, timeout=60,
                               env=child_env(GUALTA_TEST_BLOCKED=blocked))
        assert (probe.returncode == 0) == works and (works or "not installed here" in probe.stderr), probe.stderr


def test_missing_night_or_model_is_a_clear_error(tiny_model, tmp_path):
    with pytest.raises(ClientError, match="night folder not found"):
        run_batch(settings(tmp_path, tiny_model), tmp_path / "nope", upload=False)
    with pytest.raises(ClientError, match="not a folder: .*frame.jpg"):
        (tmp_path / "frame.jpg").write_bytes(b"")
        run_batch(settings(tmp_path, tiny_model), tmp_path / "frame.jpg", upload=False)
    with pytest.raises(ClientError, match=r"no night folder .*images: it does not exist \(a wrong path, or a share"):
        run_batch(settings(tmp_path, tiny_model), None, upload=False)       # guAlta_main_folder is not there
    (tmp_path / "images").mkdir()
    with pytest.raises(ClientError, match=r"no night folder .*images$"):
        run_batch(settings(tmp_path, tiny_model), None, upload=False)
    with pytest.raises(ClientError, match="model file not found"):
        run_batch(settings(tmp_path, tiny_model), tmp_path, upload=False, model_path=tmp_path / "x.onnx")


def test_uploads_need_a_night_folder_named_by_its_date(client_night, tiny_model, tmp_path):
    """The service files reports under the night's folder name (YYYYMMDD); a copy of a night under another name is
    scored without uploads, and with them is refused before anything is queued."""
    renamed = shutil.copytree(client_night, tmp_path / "my-night")
    config = settings(tmp_path, tiny_model, url=f"http://127.0.0.1:{free_port()}", api_key=KEY)
    with pytest.raises(ClientError, match="uploads name the night by its folder, YYYYMMDD .*: my-night is not one"):
        run_batch(config, renamed, say=lambda line: None, progress=False)
    assert not config.outbox.exists()
    assert run_batch(config, renamed, upload=False, say=lambda line: None, progress=False).frames == 24


def test_blank_frames_are_skipped_and_the_next_frame_compared_with_the_last_picture(client_night, tiny_model,
                                                                                   tmp_path):
    """A camera glitch's black or uniform frame holds no picture: the frame after it, compared with it, brightened
    as a whole and was reported (the streak check found the sky's edges in it too). An exposure that failed is
    still stamped by the camera software, and has its sensor's noise and hot pixels: blank all the same (it was
    not, and the frame after it was reported in 9 of 16 such pairs)."""
    night = copy_night(client_night, tmp_path / "images")
    frames = allsky.list_frames(night)
    for frame, level in ((frames[5], 0), (frames[9], 3)):
        cv2.imwrite(str(frame), np.full((976, 1304, 3), level, np.uint8))
    stamped = np.random.default_rng(3).integers(6, 8, (976, 1304, 3), dtype=np.uint8)     # black level and noise
    for line, text in enumerate(("2021-11-10 22:07:00", "Exposure 30.0 s  Gain 250", "Sensor 41.5 C")):
        cv2.putText(stamped, text, (12, 40 + 36 * line), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    stamped[[100, 400, 700], [200, 650, 1100]] = 255                                       # hot pixels
    for stamped_frame in (frames[0], frames[1], frames[14], frames[18], frames[19]):   # the night's first two, one,
        cv2.imwrite(str(stamped_frame), stamped, [cv2.IMWRITE_JPEG_QUALITY, 90])        # two in a row
    rows = {row["file"]: row for row in read_scores(
        run_batch(settings(tmp_path, tiny_model), night, tmp_path / "s.csv", upload=False, say=lambda _: None,
                  progress=False).scores)}
    for blank in (frames[1], frames[5], frames[9], frames[14], frames[18], frames[19]):    # frame 0: "first frame"
        assert (rows[blank.name]["flag"], rows[blank.name]["note"]) == (
            "skipped", "bad frame: blank: no picture (a black or uniform image)")
    assert rows[frames[6].name]["previous"] == frames[4].name and rows[frames[10].name]["previous"] == frames[8].name
    assert rows[frames[15].name]["previous"] == frames[13].name and rows[frames[20].name]["previous"] == frames[17].name
    assert rows[frames[2].name]["flag"] == "skipped" and rows[frames[3].name]["previous"] == frames[2].name
    assert rows[frames[6].name]["detection"] == rows[frames[10].name]["detection"] == "0"
    assert sum(row["flag"] == "skipped" for row in rows.values()) == 8            # the first picture besides


def test_a_frame_is_blank_only_if_its_pixels_lie_within_3_levels():
    """A black frame's JPEG ripples span a level or three: blank. The darkest sky's lens circle, 5 levels over the
    black around it, is a picture: not skipped."""
    from gualta.frames import is_blank

    black = np.random.default_rng(0).integers(0, 4, (40, 60), dtype=np.uint8)      # 0–3
    assert is_blank(black)
    darkest = np.zeros((40, 60), np.uint8)
    cv2.circle(darkest, (30, 20), 18, 5, -1)
    assert not is_blank(darkest)


def test_a_frame_ending_in_grey_rows_is_skipped_as_partly_written(client_night, tiny_model, tmp_path):
    """A picture whose writer stopped part way, saved as a complete JPEG (no truncation to find): its last rows one
    grey level. The edge of the grey was read as a meteor in 12 of 14 such frames. Skipped as a bad frame, the next
    compared with the picture before it; a sky darker at the bottom (a black border below the lens circle) is not."""
    night = copy_night(client_night, tmp_path / "images")
    frames = allsky.list_frames(night)
    for frame, cut, level in ((frames[6], 0.4, 128), (frames[12], 0.7, 200), (frames[16], 0.95, 0)):
        picture = cv2.imread(str(frame))
        picture[int(picture.shape[0] * cut):] = level
        cv2.imwrite(str(frame), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
    summary = run_batch(settings(tmp_path, tiny_model), night, tmp_path / "s.csv", upload=False, say=lambda _: None,
                        progress=False)
    rows = {row["file"]: row for row in read_scores(summary.scores)}
    for partly in (frames[6], frames[12]):
        assert (rows[partly.name]["flag"], rows[partly.name]["note"]) == (
            "skipped", "bad frame: partly written: its last rows are one grey level")
    assert summary.skips == {"partly written": 2, "first of the night": 1}
    assert rows[frames[7].name]["previous"] == frames[5].name and rows[frames[13].name]["previous"] == frames[11].name
    assert rows[frames[16].name]["score"] != "" and rows[frames[17].name]["previous"] == frames[16].name


def test_folders_that_cannot_be_listed_are_one_clear_error(client_night, tiny_model, tmp_path):
    """Permissions (a night folder made by another account, a share mounted without read access): said in one line,
    for the night named and for the latest one found under guAlta_main_folder."""
    root = tmp_path / "images"
    night = copy_night(client_night, root)
    base = [sys.executable, str(REPO / "guAlta.py"), "batch", "--no-upload", "--model", str(tiny_model),
            "--main-folder", str(root), "--outbox", str(tmp_path / "o.sqlite")]
    for locked, folder in ((night, ["--folder", str(night)]), (night, []), (root, [])):
        locked.chmod(0)
        try:
            run = subprocess.run(as_ordinary_user(base + folder), capture_output=True, text=True, timeout=120,
                                 cwd=tmp_path, env=child_env())
        finally:
            locked.chmod(0o755)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert f"guAlta batch: cannot list {locked}: Permission denied" in run.stderr


def decode(jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(jpeg))


def test_batch_uploads_exact_payloads_to_the_embedded_service(client_night, tiny_model, tmp_path, live):
    url, store = live
    out = tmp_path / "scores.csv"
    summary = run_batch(settings(tmp_path, tiny_model, url=url, api_key=KEY, report_flagged=False, streak_check=False),
                        client_night, out, say=lambda line: None, progress=False)       # no check's flag in payloads
    assert summary.pending == 0
    rows = read_scores(out)
    reported = [row for row in rows if row["detection"] == "1"]
    stored = sorted((store / "detections" / "20211110").glob("obs01_*.json"))
    assert [p.name for p in stored] == [f"obs01_{allsky.frame_id(row['file'])}.json" for row in reported]
    for row, path in zip(reported, stored):
        record = json.loads(path.read_text())
        frame_id = allsky.frame_id(row["file"])
        expected = {"obs_id": "obs01", "id": frame_id, "date": f"{frame_id[:4]}-{frame_id[4:6]}-{frame_id[6:8]}",
                    "time": f"{frame_id[8:10]}:{frame_id[10:12]}:{frame_id[12:]}", "telegram": False,
                    "folder": "20211110", "model": TINY_VERSION, "img": f"imgs/20211110/obs01_{frame_id}.jpeg",
                    "telegram_status": "not requested"}
        assert {k: record[k] for k in expected} == expected
        assert abs(record["score"] - float(row["score"])) < 1e-6
        ends = [int(row[end]) for end in ("x1", "y1", "x2", "y2")] if row["x1"] else None     # the file's pixels
        assert record.get("streak") == ends
        assert "flag" not in record and set(record) == set(expected) | {"score", "processed", "received"} | (
            {"streak"} if ends else set())
        image = decode((store / record["img"]).read_bytes())
        assert (image.format, image.mode, image.size) == ("JPEG", "L", (448, 224))
    start = json.loads((store / "logs" / "20211110" / "obs01_start.json").read_text())
    end = json.loads((store / "logs" / "20211110" / "obs01_end.json").read_text())
    assert (start["log"], start["folder"]) == ("start", "20211110")
    assert (end["log"], end["total"], end["folder"]) == ("end", 23, "20211110")


def full_disk_under(csv: Path) -> Path:
    """Make the CSV's .part file /dev/full, which answers every write with ENOSPC as a full disk does."""
    csv.parent.mkdir(parents=True, exist_ok=True)
    part = csv.with_name(csv.name + ".part")
    part.symlink_to("/dev/full")
    return csv


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to stand for a full disk")
def test_a_scores_csv_that_cannot_be_written_further_loses_no_report(client_night, tiny_model, tmp_path, live):
    """The disk fills up under the scores CSV: the night is scored and reported all the same, the summary says the
    CSV is incomplete, and no CSV takes the night's name (so `--catch-up` scores it again)."""
    url, store = live
    csv = full_disk_under(tmp_path / "scores" / "20211110.csv")
    config = settings(tmp_path, tiny_model, url=url, api_key=KEYS["obs03"], obs_id="obs03")
    summary = run_batch(config, client_night, f"{csv.parent}/", say=lambda line: None, progress=False)
    _, rows = scores_of(tmp_path, client_night, tiny_model)
    assert summary.scores_failed == "No space left on device" and "(incomplete: No space left" in summary.text()
    assert summary.scores == csv.with_name("20211110.csv.part") and not csv.exists()
    assert summary.scored == len(rows) - 1 and summary.pending == 0
    stored = sorted(p.name for p in (store / "detections" / "20211110").glob("obs03_*.json"))
    assert stored == [f"obs03_{allsky.frame_id(row['file'])}.json" for row in rows if row["detection"] == "1"]
    assert json.loads((store / "logs" / "20211110" / "obs03_end.json").read_text())["total"] == summary.scored


def test_two_runs_never_write_one_scores_csv_at_once(client_night, tiny_model, tmp_path, caplog):
    """A manual batch run while cron's (or the watcher closing the night) wrote the same CSV: both wrote one .part,
    and the CSV that took the night's name held rows of both, a duplicate and a cut row, with exit status 0. The
    .part is locked while a run writes it: a second run is refused before it scores; a .part a run cut short left
    (unlocked) is taken over at once."""
    csv = tmp_path / "scores" / "20211110.csv"
    first = CsvRows(csv)
    first.write({"file": "image-20211110220000.jpg"})
    with pytest.raises(ClientError, match=r"another run is writing the scores CSV .*20211110.csv \(20211110.csv.part "
                                          r"is locked\): run one at a time"):
        run_batch(settings(tmp_path, tiny_model), client_night, csv, upload=False, say=lambda _: None, progress=False)
    assert not write_scores(csv, [{"file": "image-20211110220030.jpg"}])       # the watcher's way: logged
    assert "another run is writing" in caplog.text
    first.finish()
    assert [row["file"] for row in read_scores(csv)] == ["image-20211110220000.jpg"]
    csv.with_name(csv.name + ".part").write_text("a run cut short, seconds ago: a longer line than the next run's\n")
    assert write_scores(csv, [{"file": "image-20211110220030.jpg"}])
    assert [row["file"] for row in read_scores(csv)] == ["image-20211110220030.jpg"]


def test_a_scores_csv_taken_over_from_a_longer_part_holds_only_the_new_rows(tmp_path):
    """A .part a run cut short left, longer than the new run's rows, was written over from its start only: the CSV
    that took the night's name ended in the old run's rows. The .part taken over is emptied first."""
    csv = tmp_path / "20211110.csv"
    stale = "".join(f"image-2021111022{minute:02d}00.jpg,0.5\n" for minute in range(40))
    csv.with_name(csv.name + ".part").write_text("file,score\n" + stale)
    assert write_scores(csv, [{"file": "image-20211110230000.jpg", "score": "0.1"}])
    assert [row["file"] for row in read_scores(csv)] == ["image-20211110230000.jpg"]


def test_a_scored_row_is_in_the_part_before_the_night_ends(tmp_path):
    """A run killed (or a machine that lost power) mid-night is to leave the rows it scored in the .part: a row
    written is flushed at once, readable from outside while the run goes on."""
    csv = tmp_path / "20211110.csv"
    rows = CsvRows(csv)
    try:
        rows.write({"file": "image-20211110220000.jpg", "score": "0.25"})
        assert [row["file"] for row in read_scores(csv.with_name(csv.name + ".part"))] == ["image-20211110220000.jpg"]
    finally:
        rows.close()


def test_an_empty_file_named_as_the_scores_csv_is_written(tmp_path):
    """A 0-byte scores CSV (left by a crash or a full disk, or made with `touch`) is no slip of the keyboard: it is
    taken as a scores CSV and written over, not refused as a file that is not one."""
    csv = tmp_path / "scores.csv"
    csv.touch()
    assert is_scores_csv(csv)
    assert write_scores(csv, [{"file": "image-20211110220000.jpg", "score": "0.25"}])
    assert [row["file"] for row in read_scores(csv)] == ["image-20211110220000.jpg"]


def test_a_single_nights_failure_is_raised_to_the_caller(client_night, tiny_model, tmp_path, capsys):
    """With one night to score, its NightError (here: another run writing its CSV) reaches the caller, who says it in
    one line; it is not printed and turned into a status as a failed night among several is."""
    csv = tmp_path / "scores" / "20211110.csv"
    other_run = CsvRows(csv)
    other_run.write({"file": "image-20211110220000.jpg"})
    try:
        with pytest.raises(NightError, match="another run is writing the scores CSV"):
            detect.run_nights(settings(tmp_path, tiny_model), client_night, csv, upload=False)
    finally:
        other_run.finish()
    assert capsys.readouterr().err == ""


def test_a_scores_csv_is_whole_under_its_name(client_night, tiny_model, tmp_path):
    """Rows go to <name>.part while the night is scored; the CSV takes its name at the end, replacing the last
    run's only then."""
    csv = tmp_path / "scores.csv"
    csv.write_text("file,score,label\nthe last run's rows\n")
    seen = []
    summary = run_batch(settings(tmp_path, tiny_model), client_night, csv, upload=False, progress=False,
                        say=lambda line: seen.append((csv.read_text(), csv.with_name("scores.csv.part").exists())))
    assert seen[0] == ("file,score,label\nthe last run's rows\n", True)   # while scoring
    assert summary.scores == csv and len(read_scores(csv)) == 24 and not csv.with_name("scores.csv.part").exists()


def started_as_from_a_terminal(command: list[str], **popen) -> subprocess.Popen:
    """Popen with SIGINT at its default action in the child, as a terminal starts a command: a background job of a
    shell without job control (a suite run with `&`) hands SIGINT on ignored, and Python then never raises
    KeyboardInterrupt for it. A handler (unlike SIG_IGN) goes back to the default action in the child's exec."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(command, **popen)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_is_one_line_and_keeps_what_was_queued(client_night, tiny_model, tmp_path):
    """Ctrl-C printed a Python traceback (from wherever the run was: ONNX Runtime, the outbox's wait). It says it
    was interrupted, exits 130, and the reports it queued stay in the outbox for the next run or `flush`."""
    scores, outbox = tmp_path / "scores.csv", tmp_path / "outbox.sqlite"
    silent = socket.create_server(("127.0.0.1", 0))      # takes connections, never answers: the run waits at its end
    command = [sys.executable, str(REPO / "guAlta.py"), "batch", "--folder", str(client_night), "--scores", str(scores),
               "--model", str(tiny_model), "--outbox", str(outbox), "--api-key", KEY, "--threshold", "0",
               "--url", f"http://127.0.0.1:{silent.getsockname()[1]}", "--no-model-update", "--threads", "1"]
    run = started_as_from_a_terminal(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=child_env(), start_new_session=True)
    deadline = time.monotonic() + 120
    while not scores.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # scored: the run is at its end, where the sender's close always makes a last delivery, which waits
    # report.TIMEOUT_S (15 s) for the service that never answers: it cannot end before this Ctrl-C
    assert run.poll() is None, run.communicate()[1]
    os.killpg(run.pid, signal.SIGINT)                                   # as Ctrl-C: the whole process group
    out, err = run.communicate(timeout=60)
    silent.close()
    assert run.returncode == 130, err
    assert "Traceback" not in err and "guAlta batch: interrupted; what it wrote and queued so far is kept" in err
    with report.Outbox(outbox) as kept:
        assert kept.pending() >= 2                                      # the start log and the detections


def test_a_scores_csv_that_cannot_be_written_is_one_clear_error(client_night, tiny_model, tmp_path):
    (tmp_path / "file").write_text("a file where the scores folder should be")
    run = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "batch", "--folder", str(client_night),
                          "--scores", str(tmp_path / "file" / "scores.csv"), "--model", str(tiny_model),
                          "--outbox", str(tmp_path / "outbox.sqlite"), "--url", f"http://127.0.0.1:{free_port()}",
                          "--api-key", KEY], capture_output=True, text=True, timeout=120, env=child_env())
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"guAlta batch: cannot write the scores CSV {tmp_path / 'file' / 'scores.csv'}: " in run.stderr
    assert not (tmp_path / "outbox.sqlite").exists()
    if Path("/dev/full").exists():                            # full on the way: the night goes on, exit status 1
        csv = full_disk_under(tmp_path / "full" / "scores.csv")
        run = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "batch", "--folder", str(client_night),
                              "--scores", str(csv), "--model", str(tiny_model), "--no-upload"],
                             capture_output=True, text=True, timeout=120, env=child_env())
        assert run.returncode == 1 and "Traceback" not in run.stderr
        assert run.stderr.count(f"cannot write the scores CSV {csv} (No space left on device)") == 1   # said once
        assert "23 scored" in run.stdout + run.stderr and "scores.csv.part (incomplete" in run.stdout


def test_flagged_detections_are_reported_with_their_flag_when_asked(client_night, tiny_model, tmp_path, live):
    url, store = live
    summary, rows = scores_of(tmp_path, client_night, tiny_model)
    flagged = [row for row in rows if row["flag"] == "satellite"]
    assert flagged, "the fixture night has a satellite the client flags: without one this test checks nothing"
    run_batch(settings(tmp_path, tiny_model, url=url, api_key=KEYS["obs02"], report_flagged=True, obs_id="obs02"),
              client_night, None, say=lambda line: None, progress=False)
    for row in flagged:
        record = json.loads((store / "detections" / "20211110" /
                             f"obs02_{allsky.frame_id(row['file'])}.json").read_text())
        assert record["flag"] == "satellite"


def test_missing_model_is_downloaded_verified_and_kept(tiny_model, tmp_path):
    store = tmp_path / "store"
    meta = publish(store, tiny_model, version=3)
    target = tmp_path / "models" / "guAlta.onnx"
    with ChildServer(store, child_env(**service_env(store))) as child:
        model = model_update.open_model(settings(tmp_path, target, url=child.url))
        assert target.read_bytes() == tiny_model.read_bytes()
        assert stat.S_IMODE(target.stat().st_mode) == 0o644           # readable by the watcher's account too
        assert json.loads(target.with_name("guAlta.onnx.json").read_text())["version"] == 3
        assert model.predict([np.zeros((400, 400), np.uint8)]).shape == (1,)
        typo = tmp_path / "modles" / "guAlta.onnx"
        named = ["--model", str(typo), "--url", child.url, "--main-folder", str(tmp_path)]
        (tmp_path / "20211110").mkdir()
        for command in (["batch", "--folder", str(tmp_path / "20211110")], ["realtime"]):   # a model named on the
            result = subprocess.run([sys.executable, str(REPO / "guAlta.py"), *command, *named],   # command line
                                    capture_output=True, text=True, timeout=60, cwd=tmp_path,    # is never
                                    env=child_env())                                             # downloaded over
            assert result.returncode != 0 and f"model file not found: {typo}" in result.stderr, result.stderr
            assert not typo.exists()
        target.unlink()
        meta["sha256"] = "0" * 64                                  # the published file no longer matches
        (store / "models" / "guAlta_latest_version.json").write_text(json.dumps(meta))
        with pytest.raises(ClientError, match="does not match"):
            model_update.open_model(settings(tmp_path, target, url=child.url))
        assert not target.exists() and not list(target.parent.glob("*.part"))
    with pytest.raises(ClientError, match="could not be downloaded: cannot reach"):
        model_update.open_model(settings(tmp_path, target, url=f"http://127.0.0.1:{free_port()}"))


def test_a_configured_model_that_does_not_load_says_what_to_do(tmp_path):
    """A configured model file cut short (a copy interrupted, a damaged card) was said as ONNX Runtime's parse error
    alone: the error names the file and what to do about it."""
    target = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=JANUARY)
    target.write_bytes(target.read_bytes()[:target.stat().st_size // 2])
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ClientError, match=rf"cannot load model {re.escape(str(target))}: InvalidProtobuf: .*parsing "
                                          rf"failed; replace it with a working model file, or delete it to download "
                                          rf"the latest from {url}$"):
        model_update.open_model(settings(tmp_path, target, url=url))
    with pytest.raises(ClientError, match=r"failed; replace it with a working model file \(the repository's "
                                          r"models/guAlta.onnx is the shipped one\)$"):
        model_update.open_model(settings(tmp_path, target, url=""))
    with pytest.raises(ClientError, match=r"parsing failed\.$"):               # one named with --model: another
        model_update.open_model(settings(tmp_path, tmp_path / "other.onnx"), target)


def large_camera_copy(night: Path, folder: Path, scale: int) -> Path:
    """The night as a camera with `scale` × the pixels each way would take it (a Pi HQ camera is 3.1 × the 1304 px
    reference): each frame enlarged and saved again as a JPEG."""
    folder.mkdir(parents=True)
    for frame in allsky.list_frames(night):
        image = cv2.imread(str(frame))
        large = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(folder / frame.name), large, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return folder


def test_a_large_camera_is_decided_as_the_reference_one(client_night, tmp_path):
    """At 3912×2928 the checks, whose sizes are in the reference camera's pixels, saw a meteor's streak 3 × too wide
    (no streak), bright meteors as fireballs, steady pieces as satellites: on simulated nights 46 instead of 54 of 79
    meteor frames were found, with 5 false. Frames wider than 1.25 × the reference are now read at its scale: the
    large camera's night is decided as the reference camera's, each streak placed in the large camera's pixels."""
    from gualta.demo import SHIPPED_MODEL

    large = large_camera_copy(client_night, tmp_path / "large" / client_night.name, 3)
    _, reference = scores_of(tmp_path / "reference", client_night, SHIPPED_MODEL)
    _, enlarged = scores_of(tmp_path / "enlarged", large, SHIPPED_MODEL)
    decided = [[(row["file"], row["detection"], row["flag"], row["note"].partition(":")[0]) for row in rows]
               for rows in (reference, enlarged)]
    assert decided[0] == decided[1]
    assert sum(row["detection"] == "1" for row in reference) >= 3
    placed = [(np.array([int(row[key]) for key in ("x1", "y1", "x2", "y2")]), np.array(
        [int(other[key]) for key in ("x1", "y1", "x2", "y2")])) for row, other in zip(reference, enlarged)
        if row["x1"] and other["x1"] and row["detection"] == "1" and not row["flag"]]          # the meteors
    assert len(placed) >= 2 and all(np.abs(3 * small - large).max() <= 12 for small, large in placed)


def test_a_change_to_a_larger_camera_is_a_change_though_both_read_alike(client_night, tiny_model, tmp_path,
                                                                          caplog):
    """1304×976 and 3912×2928 both read as 1304×976: the change went unnoticed and the pair across it was compared.
    Sizes are compared as the files have them, and said so."""
    night = tmp_path / "night" / client_night.name
    shutil.copytree(client_night, night)
    frames = allsky.list_frames(night)
    large = large_camera_copy(client_night, tmp_path / "large" / client_night.name, 3)
    for frame in frames[12:]:
        shutil.copy(large / frame.name, frame)
    caplog.set_level(logging.WARNING)
    summary, rows = scores_of(tmp_path, night, tiny_model)
    skipped = {row["file"] for row in rows if row["flag"] == "skipped"}
    assert skipped == {frames[0].name, frames[12].name}
    assert summary.skips == {"first of the night": 1, "size change": 1}
    assert "frame size changed from 1304×976 to 3912×2928" in caplog.text
    assert rows[12]["note"] == f"frame size changed from 1304×976 to 3912×2928: not compared with {frames[11].name}"


def test_downloads_cut_short_are_removed_by_the_next_one(tiny_model, tmp_path):
    """A power cut or a kill -9 during a model download left its .part (up to 44 MB) beside the model for good, one
    more each time: the next download removes those nothing has written to for STALE_PART_S, and leaves one another
    run is writing now."""
    store, target = tmp_path / "store", tmp_path / "models" / "guAlta.onnx"
    publish(store, tiny_model, version=3)
    target.parent.mkdir()
    stale = [target.with_name(f"guAlta.update.onnx.{name}.part") for name in ("k3x9a1", "p0wr2c")]
    for part in stale:
        part.write_bytes(b"\0" * 1000)
        old = time.time() - report.STALE_PART_S - 60
        os.utime(part, (old, old))
    live = target.with_name("guAlta.update.onnx.w7r1te.part")
    live.write_bytes(b"\0" * 1000)
    other = target.with_name("other.onnx.k3x9a1.part")                  # another model's: not this download's
    other.write_bytes(b"")
    os.utime(other, (0, 0))
    with ChildServer(store, child_env(**service_env(store))) as child:
        model_update.open_model(settings(tmp_path, target, url=child.url))
    assert target.read_bytes() == tiny_model.read_bytes()
    assert sorted(path.name for path in target.parent.glob("*.part")) == [live.name, other.name]


JANUARY, FEBRUARY, MARCH, APRIL = (f"2026-{month:02d}-01T00:00:00+00:00" for month in (1, 2, 3, 4))


def test_a_newer_published_model_replaces_the_configured_one(client_night, tmp_path):
    """Before a batch run with uploads the client installs a model the service published after its own was made,
    and scores the night with it; nothing published, an older publication, --no-upload, guAlta_model_update off
    or a model named on the command line leave the configured file as it is. A file the service gave follows the
    service's latest publication, a rollback too; an own model put in its place is replaced only by a later one."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=FEBRUARY)
    older = tiny_onnx_model(tmp_path / "published" / "older.onnx", bias=-2.0, version="test-0", created=JANUARY)
    newer = tiny_onnx_model(tmp_path / "published" / "newer.onnx", bias=-2.0, version="test-2", created=MARCH)
    original, scores = configured.read_bytes(), tmp_path / "scores.csv"
    store = tmp_path / "store"
    with ChildServer(store, child_env(**service_env(store))) as child:
        def batch(upload=True, model_path=None, **overrides):
            config = settings(tmp_path, configured, url=child.url, api_key=KEY, faint_crossing_check=False,
                              **overrides)                          # the model is what counts, not step 5
            summary = run_batch(config, client_night, scores, upload=upload, model_path=model_path,
                                say=lambda line: None, progress=False)
            models.append(summary.model)
            return [row["score"] for row in read_scores(scores)]

        models = []

        own_scores = batch()                                                  # nothing published yet
        publish(store, older, version=1, created=JANUARY)
        assert batch() == own_scores
        publish(store, newer, version=2, created=MARCH)
        assert batch(upload=False) == batch(model_update=False) == batch(model_path=configured) == own_scores
        assert configured.read_bytes() == original
        configured.chmod(0o640)
        updated_scores = batch()
        assert configured.read_bytes() == newer.read_bytes()
        assert stat.S_IMODE(configured.stat().st_mode) == 0o640           # the replaced file's permissions
        assert models[-2:] == [TINY_VERSION, "test-2"]                    # the summary names the model that scored
        assert json.loads(configured.with_name("guAlta.onnx.json").read_text())["version"] == 2
        publish(store, older, version=3, created=JANUARY)        # a rollback: the file the service gave follows it
        batch()
        assert configured.read_bytes() == older.read_bytes()
        own = tiny_onnx_model(configured, version="own", created=FEBRUARY)     # the operator's own model put there
        own_bytes = own.read_bytes()
        publish(store, newer, version=4, created=JANUARY)        # is replaced only by one made later than it
        batch()
        assert configured.read_bytes() == own_bytes
    assert updated_scores != own_scores
    assert updated_scores == [row["score"] for row in scores_of(tmp_path, client_night, newer,
                                                                  faint_crossing_check=False)[1]]


def mislabelled(model: Path, input_size: int) -> Path:
    """The model with metadata naming another input size than its graph takes (an ONNX made elsewhere)."""
    import onnx

    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        if prop.key == "input_size":
            prop.value = str(input_size)
    onnx.save(proto, str(model))
    return model


def fixed_batch(model: Path) -> Path:
    """The model with its input's batch size fixed at one (an export without a dynamic batch axis)."""
    import onnx

    proto = onnx.load(str(model))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(proto, str(model))
    return model


@pytest.mark.parametrize("spoiled, error", [(lambda model: mislabelled(model, input_size=96), "rank|dimensions"),
                                             (fixed_batch, "dimensions")], ids=["another-size", "one-at-a-time"])
def test_a_published_model_that_cannot_score_never_replaces_the_working_one(client_night, tmp_path, spoiled, error):
    """A publication that loads but fails on the first frames (its graph takes another size than it says, or its
    batch size was fixed at one and it passed a one-image trial) was installed, and every later run died on it
    with a traceback: it is tried on a batch of blank difference images first, refused, noted beside the model, and
    the night is scored with the model in use."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=FEBRUARY)
    broken = spoiled(tiny_onnx_model(tmp_path / "published" / "broken.onnx", version="test-2", created=MARCH))
    with pytest.raises(ClientError, match=f"cannot score a 400 px difference image: .*({error})"):
        model_update.open_model(settings(tmp_path, broken))
    original, store = configured.read_bytes(), tmp_path / "store"
    with ChildServer(store, child_env(**service_env(store))) as child:
        publish(store, broken, version=2, created=MARCH)
        summary = run_batch(settings(tmp_path, configured, url=child.url, api_key=KEY), client_night,
                            tmp_path / "s.csv", say=lambda line: None, progress=False)
    assert configured.read_bytes() == original and summary.model == TINY_VERSION and summary.scored > 0
    assert "cannot score" in json.loads(model_update.rejected_path(configured).read_text())["reason"]


def test_a_pkl_model_on_the_client_s_base_install_says_what_it_needs(tmp_path, monkeypatch):
    """A fastai .pkl on the client's base install (no torch) stopped with 'No module named torch' and no hint."""
    learner = tmp_path / "model.pkl"
    learner.write_bytes(b"a fastai learner")

    def without_torch(path, **options):
        raise ModuleNotFoundError("No module named 'torch'")

    monkeypatch.setattr(model_update, "load_model", without_torch)
    with pytest.raises(ClientError, match=re.escape('needs the training install, pip install -e ".[train]"')):
        model_update.open_model(settings(tmp_path, learner), learner)


def started_together(tmp_path: Path, store: Path, configured: Path, runs: int = 3) -> list:
    """What opening the model gave each of `runs` runs started at once with the model file missing (the model, or
    what the run would have stopped on), the store served by the embedded service."""
    import threading

    outcomes = []

    def start(config):
        try:
            outcomes.append(model_update.open_model(config))
        except Exception as exc:          # what the run would have stopped on
            outcomes.append(exc)

    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url, api_key=KEY)
        threads = [threading.Thread(target=start, args=(config,)) for _ in range(runs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    return outcomes


def test_two_runs_finding_the_model_missing_install_it_once(tmp_path, monkeypatch):
    """A cron batch and the watcher starting together on a machine without its model both downloaded it through the
    same staging file, and one stopped with a traceback (FileNotFoundError): the second waits for the first, and
    takes the model it installed (not a download of the whole model again per run)."""
    store, configured = tmp_path / "store", tmp_path / "models" / "guAlta.onnx"
    publish(store, tiny_onnx_model(tmp_path / "published" / "m.onnx", version="test-2", created=MARCH), version=2)
    locks, downloads = [], []
    locking, downloading = model_update.install_lock, model_update.download_model

    def download_once_all_wait(*args, **kwargs):               # the other runs are waiting for its install by then
        deadline = time.monotonic() + 20
        while len(locks) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        downloads.append(1)
        return downloading(*args, **kwargs)

    monkeypatch.setattr(model_update, "install_lock", lambda path: locks.append(path) or locking(path))
    monkeypatch.setattr(model_update, "download_model", download_once_all_wait)
    outcomes = started_together(tmp_path, store, configured)
    assert [outcome if isinstance(outcome, Exception) else model_update.model_version(outcome)
            for outcome in outcomes] == ["test-2"] * 3
    assert len(locks) == 3 and len(downloads) == 1
    assert not model_update.rejected_path(configured).exists()


def test_runs_waiting_for_an_install_that_failed_do_not_download_it_again(tmp_path, monkeypatch):
    """A publication the first run could not use is not fetched again by the runs that waited for it."""
    store, configured = tmp_path / "store", tmp_path / "models" / "guAlta.onnx"
    broken = tmp_path / "published" / "broken.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"\x08\x07" + bytes(range(256)) * 64)
    publish(store, broken, version=2, created=MARCH)
    downloads = []
    downloading = model_update.download_model
    monkeypatch.setattr(model_update, "download_model",
                        lambda *args, **kwargs: downloads.append(1) or downloading(*args, **kwargs))
    outcomes = started_together(tmp_path, store, configured)
    assert len(outcomes) == 3 and all(isinstance(outcome, ClientError) for outcome in outcomes), outcomes
    assert len(downloads) == 1


def test_an_install_lock_another_account_made_is_still_taken(tmp_path):
    """A root cron job's `<model>.lock` (rw-r--r--) could not be opened for writing by the observatory's account:
    every model update it tried was skipped with 'Permission denied'."""
    configured = tmp_path / "guAlta.onnx"
    lock = model_update.install_lock_path(configured)
    lock.touch()
    lock.chmod(0o444)
    run = subprocess.run(as_ordinary_user([sys.executable, "-c", (
        "import sys; from pathlib import Path; from gualta import model_update; from gualta.scores import "
        "lock_exclusive; print(lock_exclusive(model_update.install_lock(Path(sys.argv[1]))))"), str(configured)]),
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert (run.returncode, run.stdout.strip()) == (0, "True"), run.stderr


def test_a_model_folder_this_account_cannot_write_is_said_so(tmp_path):
    """A model folder root made (r-xr-xr-x) with no lock file in it: a model update or download said 'cannot write
    …: No such file or directory' of a folder that is there, the lock file's read-only fallback hiding why."""
    folder = tmp_path / "models"
    folder.mkdir()
    folder.chmod(0o555)
    run = subprocess.run(as_ordinary_user([sys.executable, "-c", (
        "import sys; from pathlib import Path; from gualta import model_update; "
        "model_update.install_lock(Path(sys.argv[1]))"), str(folder / "guAlta.onnx")]),
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 1 and "PermissionError" in run.stderr and "FileNotFoundError" not in run.stderr, \
        run.stderr


def test_a_model_file_another_run_replaced_is_loaded_again(tmp_path):
    """The watcher kept the model it loaded at start after a batch run installed the service's newer one in its
    file: at the next night it takes the file as it now is."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=FEBRUARY)
    config = settings(tmp_path, configured, url=f"http://127.0.0.1:{free_port()}")
    loaded = model_update.open_model(config)
    assert model_update.refreshed_model(config, loaded) is loaded                     # nothing changed
    installed = tiny_onnx_model(tmp_path / "models" / "guAlta.update.onnx", version="test-2", created=MARCH)
    os.replace(installed, configured)
    assert model_update.model_version(model_update.refreshed_model(config, loaded)) == "test-2"


def test_a_model_file_copied_over_in_place_is_loaded_again(tmp_path):
    """A retrained model of the same size copied over the model file (cp writes into the same file, its inode kept):
    told apart by inode and size alone, the watcher would score on with the model it loaded, never the new one."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=FEBRUARY)
    config = settings(tmp_path, configured, url=f"http://127.0.0.1:{free_port()}")
    loaded = model_update.open_model(config)
    retrained = tiny_onnx_model(tmp_path / "retrained.onnx", version="test-2", created=FEBRUARY)
    before = configured.stat()
    assert retrained.stat().st_size == before.st_size
    shutil.copyfile(retrained, configured)
    later = before.st_mtime_ns + 1_000_000_000                              # copied a second after it was loaded
    os.utime(configured, ns=(later, later))
    assert configured.stat().st_ino == before.st_ino
    assert model_update.model_version(model_update.refreshed_model(config, loaded)) == "test-2"


def test_a_refresh_lets_the_old_session_go_first_and_a_broken_model_scores_on_with_the_old_one(
        client_night, tmp_path, caplog, monkeypatch):
    """A refresh held the loaded model's session (its memory) while it opened and checked the publication: now it
    lets it go first; a publication that cannot be used opens the model file again (still in place), and the night
    is scored with it as before. A model a left night is still deciding with keeps its session."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=JANUARY)
    broken = tmp_path / "published" / "broken.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"\x08\x07" + bytes(range(256)) * 64)
    store = tmp_path / "store"
    publish(store, broken, version=2, created=MARCH)
    held_while_opening = []
    opening = model_update.open_model
    monkeypatch.setattr(model_update, "open_model", lambda config, path=None: held_while_opening.append(
        model.session is not None) or opening(config, path))
    caplog.set_level(logging.WARNING)
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url, api_key=KEY)
        model = opening(config)
        before = run_batch(config, client_night, tmp_path / "before.csv", upload=False, model=model,
                           say=lambda line: None, progress=False)
        assert model_update.refreshed_model(config, model) is model
        assert held_while_opening == [False]                       # let go before the publication was opened
        assert f"the model file {configured} ({TINY_VERSION}) opened again, scoring on" in caplog.text
        after = run_batch(config, client_night, tmp_path / "after.csv", upload=False, model=model,
                          say=lambda line: None, progress=False)
        assert after.model == TINY_VERSION and after.scored == before.scored > 0
        assert read_scores(tmp_path / "after.csv") == read_scores(tmp_path / "before.csv")
        model_update.rejected_path(configured).unlink()                   # tried again, while a left night uses it
        session = model.session
        assert model_update.refreshed_model(config, model, in_use=True) is model and model.session is session
        assert held_while_opening[1:] == [True]
        publish(store, tiny_onnx_model(tmp_path / "published" / "good.onnx", created=MARCH), version=3,
                created=MARCH)                                      # loads, but cannot take the file's place
        replace = model_update.os.replace

        def not_into_place(source, target):                         # downloaded beside it, not moved over it
            if Path(target) == configured:
                raise PermissionError(13, "no")
            replace(source, target)

        caplog.clear()
        with monkeypatch.context() as patched:
            patched.setattr(model_update.os, "replace", not_into_place)
            assert model_update.refreshed_model(config, model) is model and model.session is not None
        assert "published model version 3 not installed" in caplog.text
        again = run_batch(config, client_night, tmp_path / "again.csv", upload=False, model=model,
                          say=lambda line: None, progress=False)
        assert again.scored == before.scored

        def model_only(source, target):                             # the model moved into place, its metadata not
            if str(target).endswith(".json"):
                raise PermissionError(13, "no")
            replace(source, target)

        with monkeypatch.context() as patched:
            patched.setattr(model_update.os, "replace", model_only)
            installed = model_update.refreshed_model(config, model)
        assert installed is not model and installed.path == configured and installed.session is not None
        assert f"model {configured} installed, but not its metadata" in caplog.text


def broken_publication(tmp_path: Path, store: Path) -> None:
    """A publication of the right size and hash that does not load (not an ONNX network), version 2, made in March."""
    broken = tmp_path / "published" / "broken.onnx"
    broken.parent.mkdir(exist_ok=True)
    broken.write_bytes(b"\x08\x07" + bytes(range(256)) * 64)
    publish(store, broken, version=2, created=MARCH)


@pytest.mark.parametrize("operator", ["deleted", "replaced"])
def test_a_refresh_after_the_model_file_was_deleted_or_replaced_scores_on_with_the_loaded_model(
        client_night, tmp_path, caplog, operator):
    """The operator deleted the model file (or copied half a model over it) while the watcher ran: the refresh at
    the next night let the loaded model's session go, the publication did not load, and opening the file again
    raised ONNX Runtime's NoSuchFile (InvalidProtobuf) out of the watcher, its model left without a session. The
    session is let go only while the file it was loaded from is there to be opened again: the loaded model scores
    on, and the log says why."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=JANUARY)
    store = tmp_path / "store"
    broken_publication(tmp_path, store)
    caplog.set_level(logging.WARNING)
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url, api_key=KEY)
        model = model_update.open_model(config)
        before = run_batch(config, client_night, tmp_path / "before.csv", upload=False, model=model,
                           say=lambda line: None, progress=False)
        if operator == "deleted":
            configured.unlink()
        else:
            configured.write_bytes(configured.read_bytes()[:configured.stat().st_size // 2])
        assert model_update.refreshed_model(config, model) is model
        after = run_batch(config, client_night, tmp_path / "after.csv", upload=False, model=model,
                          say=lambda line: None, progress=False)
    assert after.scored == before.scored > 0
    assert read_scores(tmp_path / "after.csv") == read_scores(tmp_path / "before.csv")
    assert f"model file {configured} changed since it was loaded but cannot be used" in caplog.text
    assert f"model update skipped, {configured} kept: published model version 2 cannot be used here" in caplog.text


@pytest.mark.parametrize("operator", ["deleted", "replaced"])
def test_a_model_file_deleted_while_a_publication_is_tried_is_one_clear_error(tmp_path, monkeypatch, operator):
    """Deleted while the publication was loaded and tried (the loaded model's session let go meanwhile): ONNX
    Runtime's NoSuchFile came out of the refresh, and a file replaced then was opened under the loaded model's
    name and version. It is one error naming the file, what happened to it and what to do."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=JANUARY)
    store = tmp_path / "store"
    broken_publication(tmp_path, store)
    opening = model_update.open_model

    def meanwhile(config, path=None):
        configured.unlink(missing_ok=True)                      # the operator, just then
        if operator == "replaced":
            tiny_onnx_model(configured, version="test-other", created=MARCH)
        return opening(config, path)

    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url, api_key=KEY)
        model = opening(config)
        monkeypatch.setattr(model_update, "open_model", meanwhile)
        with pytest.raises(ClientError, match=f"the model file {re.escape(str(configured))} was {operator} while "
                                              "published model version 2 was tried: start again with a model file"):
            model_update.refreshed_model(config, model)


def test_a_model_the_watcher_installed_is_followed_by_one_another_run_installs(tmp_path):
    """The model a refresh installed named its staging file, so a later install by a batch run was never taken."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=FEBRUARY)
    store = tmp_path / "store"
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url)
        publish(store, tiny_onnx_model(tmp_path / "published" / "v2.onnx", version="test-2", created=MARCH),
                version=2, created=MARCH)
        installed = model_update.refreshed_model(config, model_update.open_model(config))
        assert model_update.model_version(installed) == "test-2" and Path(installed.path) == configured
        later = tiny_onnx_model(tmp_path / "models" / "by-batch.onnx", version="test-3", created=APRIL)
        os.replace(later, configured)                                         # a batch run's install
        assert model_update.model_version(model_update.refreshed_model(config, installed)) == "test-3"


def test_a_downloaded_model_deleted_since_is_put_back_by_the_next_publication(tmp_path):
    """A model file the service gave, deleted while the client ran: its hash could not be read, so every refresh
    was skipped (`No such file`) and the file never came back. A refresh installs the publication in its place."""
    configured = tmp_path / "models" / "guAlta.onnx"
    store = tmp_path / "store"
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url)
        publish(store, tiny_onnx_model(tmp_path / "published" / "v1.onnx", version="test-1", created=FEBRUARY),
                version=1, created=FEBRUARY)
        model = model_update.open_model(config)                       # downloaded, its metadata beside it
        configured.unlink()
        publish(store, tiny_onnx_model(tmp_path / "published" / "v2.onnx", version="test-2", created=MARCH),
                version=2, created=MARCH)
        installed = model_update.refreshed_model(config, model)
    assert model_update.model_version(installed) == "test-2" and configured.is_file()


def test_a_missing_model_whose_publication_cannot_be_used_is_not_downloaded_again(tmp_path, monkeypatch):
    """The model file missing and the service's latest publication unusable here: every start downloaded it again
    (a service manager restarting the client every 30 s: the whole model each time). It is noted once, and the next
    start says so without a download."""
    configured = tmp_path / "models" / "guAlta.onnx"
    store = tmp_path / "store"
    broken_publication(tmp_path, store)
    downloads = []
    download = model_update.download_model
    monkeypatch.setattr(model_update, "download_model",
                        lambda *args, **kw: downloads.append(1) or download(*args, **kw))
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url)
        with pytest.raises(ClientError, match="published model version 2 cannot be used here"):
            model_update.open_model(config)
        assert json.loads(model_update.rejected_path(configured).read_text())["version"] == 2
        with pytest.raises(ClientError, match="is missing, and the published version 2 could not be used here"):
            model_update.open_model(config)
    assert len(downloads) == 1 and not configured.exists()


def test_a_publication_another_run_is_installing_is_left_to_it(tmp_path, caplog):
    """A batch run and the watcher refreshing at once both staged the publication under one name: one moved the
    other's file into place, and the other noted a good publication as one that cannot be used here. The run that
    finds the install lock held keeps its model, and takes the file at its next refresh."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=FEBRUARY)
    store = tmp_path / "store"
    caplog.set_level(logging.INFO)
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url)
        publish(store, tiny_onnx_model(tmp_path / "published" / "v2.onnx", version="test-2", created=MARCH),
                version=2, created=MARCH)
        model = model_update.open_model(config)
        with open(model_update.install_lock_path(configured), "a+b") as other_run:
            assert lock_exclusive(other_run)
            assert model_update.refreshed_model(config, model) is model
            assert not list(configured.parent.glob("guAlta.update*"))             # nothing downloaded
            assert not model_update.rejected_path(configured).exists()
        assert "another run is installing a publication in its place" in caplog.text
        installed = model_update.refreshed_model(config, model)
    assert model_update.model_version(installed) == "test-2" and Path(installed.path) == configured


def test_a_publication_whose_metadata_cannot_be_moved_is_installed_without_it(tmp_path, monkeypatch, caplog):
    """The model is moved into place before its metadata: had the metadata gone first and the model's move failed,
    the metadata would name a publication that is not there and the refresh return a model named after a file that
    still holds the old one. The second move failing leaves the publication installed, without metadata (judged as
    an own model from then on: not installed again), and says so."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", version="own", created=FEBRUARY)
    store = tmp_path / "store"
    meta = publish(store, tiny_onnx_model(tmp_path / "published" / "v2.onnx", version="test-2", created=MARCH),
                   version=2, created=MARCH)
    moves, replace = [], os.replace

    def second_move_fails(source, target):                  # the download's own move into guAlta.update.onnx aside
        if ".update" not in Path(target).name:
            moves.append(Path(target).name)
            if len(moves) == 2:
                raise PermissionError(13, "Permission denied", str(target))
        replace(source, target)

    caplog.set_level(logging.WARNING)
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url)
        model = model_update.open_model(config)
        monkeypatch.setattr(model_update.os, "replace", second_move_fails)
        installed = model_update.refreshed_model(config, model)
    assert len(moves) == 2
    assert hashlib.sha256(configured.read_bytes()).hexdigest() == meta["sha256"]
    assert model_update.model_version(installed) == "test-2" and Path(installed.path) == configured
    assert not configured.with_name("guAlta.onnx.json").exists()
    assert f"model {configured} installed, but not its metadata" in caplog.text
    assert not model_update.takes_update(configured, installed, meta)


def test_frames_judged_bad_hold_no_memory(tmp_path):
    """Blank and undecodable frames were kept decoded (and their errors with the file's bytes) until the next good
    pair: a night with the dome shut held gigabytes."""
    night = tmp_path / "20211110"
    night.mkdir()
    names = [night / f"image-202111102{i // 60:01d}{i % 60:02d}00.png" for i in range(30)]
    cv2.imwrite(str(names[0]), np.zeros((976, 1304), np.uint8))
    for i, name in enumerate(names):
        if i % 2:
            name.write_bytes(b"\xff\xd8" + os.urandom(200_000))                # not an image
        elif i:
            shutil.copyfile(names[0], name)                                     # a black frame
    frames = NightFrames(names)
    tracemalloc.start()
    try:
        for name in names:
            assert frames.bad_reason(name)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 5_000_000, held                                  # 30 frames of 1.3 MB held before


def test_good_frames_paired_in_order_hold_two_images(tmp_path):
    """Every good frame stayed decoded once paired: a night of 800 frames held 1 GB and a Pi ran out of memory.
    Frames asked for in time order keep only the pair in hand."""
    night = tmp_path / "20211110"
    night.mkdir()
    names = [night / f"image-202111102{i // 60:01d}{i % 60:02d}00.png" for i in range(30)]
    for i, name in enumerate(names):
        cv2.imwrite(str(name), background(400, 300) + sensor_noise(i, (400, 300)))
    frames = NightFrames(names)
    tracemalloc.start()
    try:
        for name in names[1:]:
            pair = frames.pair(name)
            assert frames.image(pair.current) is not None and frames.image(pair.previous) is not None
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 1_000_000, held                                  # 3.6 MB (30 frames of 120 kB) held before


def test_a_lone_frame_of_another_size_costs_only_itself(tiny_model, tmp_path):
    """A lone frame of another size was the next frame's predecessor: that good frame was skipped too ('frame size
    changed … pair skipped'), never scored. Only the odd frame is skipped; the next pairs with the frame before it."""
    night = tmp_path / "20211110"
    night.mkdir()
    names = [night / f"image-2021111022{minute:02d}00.png" for minute in range(5)]
    for i, name in enumerate(names):
        size = (300, 240) if i == 2 else (400, 300)
        cv2.imwrite(str(name), background(*size) + sensor_noise(i, size))
    _, rows = scores_of(tmp_path, night, tiny_model)
    assert [row["file"] for row in rows if row["flag"] == "skipped"] == [names[0].name, names[2].name]
    assert all(row["score"] for row in rows[3:])
    assert NightFrames(names).pair(names[3]).previous == names[1]


def kept_scoring(refreshed, model) -> bool:
    """Whether a refresh gave back `model` still able to score (its session not let go for good)."""
    return refreshed is model and model.session is not None \
        and model.predict([np.zeros((400, 400), np.uint8)]).shape == (1,)


def test_nothing_published_yet_is_no_warning(tmp_path, caplog):
    """A service with no model published yet (HTTP 404 for the model's JSON: a new installation's usual state) is
    no failed update: it is said at INFO, not as a 'model update skipped' WARNING every night."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=FEBRUARY)
    store = tmp_path / "store"
    store.mkdir()
    caplog.set_level(logging.INFO)
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url)
        model = model_update.open_model(config)
        assert model_update.refreshed_model(config, model) is model
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert f"no model published at {child.url}: {configured} kept" in caplog.text


def test_a_model_update_that_fails_keeps_the_current_model(tmp_path):
    """A failed update keeps the model, and it scores on: had its session been let go before the download, a
    publication that does not match its metadata would leave the client a model without a session."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=JANUARY)
    model = model_update.open_model(settings(tmp_path, configured))
    unreachable = settings(tmp_path, configured, url=f"http://127.0.0.1:{free_port()}")
    assert kept_scoring(model_update.refreshed_model(unreachable, model), model)
    store = tmp_path / "store"
    meta = publish(store, tiny_onnx_model(tmp_path / "newer.onnx", bias=-2.0, created=MARCH), created=MARCH)
    meta["sha256"] = "0" * 64                                           # the file does not match its metadata
    (store / "models" / "guAlta_latest_version.json").write_text(json.dumps(meta))
    with ChildServer(store, child_env(**service_env(store))) as child:
        assert kept_scoring(model_update.refreshed_model(settings(tmp_path, configured, url=child.url), model), model)
        meta["sha256"] = hashlib.sha256((store / "models" / "guAlta_v1.onnx").read_bytes()).hexdigest()
        (store / "models" / "guAlta_latest_version.json").write_text(json.dumps(meta))
        (tmp_path / "blocker").write_text("a file where the model's folder should be")
        unwritable = settings(tmp_path, tmp_path / "blocker" / "guAlta.onnx", url=child.url)
        assert kept_scoring(model_update.refreshed_model(unwritable, model), model)      # an OSError is no crash
        with pytest.raises(ClientError, match="could not be downloaded: cannot write"):
            model_update.open_model(unwritable)
    assert configured.read_bytes() != (tmp_path / "newer.onnx").read_bytes()
    assert not list(configured.parent.glob("*.part"))


def test_an_own_model_is_not_replaced_by_a_publication_made_at_the_same_time(tmp_path):
    """An own model file (no service metadata beside it) is replaced only by a publication made after it: one created
    at the same instant — that same training run's export, published — was downloaded and installed over it."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", version="own", created=FEBRUARY)
    model = model_update.open_model(settings(tmp_path, configured))
    assert not model_update.takes_update(configured, model, {"sha256": "0" * 64, "created": FEBRUARY})
    assert model_update.takes_update(configured, model, {"sha256": "0" * 64, "created": MARCH})


def test_an_own_model_without_a_creation_time_is_kept_without_an_error(tmp_path):
    """An own model without a creation time (a .pkl, an ONNX exported elsewhere) has no date to compare: a newer
    publication would raise TypeError (None against a date) out of every refresh. It is kept, as documented."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", version="own")
    store = tmp_path / "store"
    publish(store, tiny_onnx_model(tmp_path / "published" / "v2.onnx", version="test-2", created=MARCH), version=2,
            created=MARCH)
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url)
        model = model_update.open_model(config)
        assert not model_update.takes_update(configured, model, {"sha256": "0" * 64, "created": MARCH})
        assert model_update.refreshed_model(config, model) is model
    assert model_update.model_version(model) == "own"


def test_creation_times_without_a_timezone_are_read_as_utc(tmp_path):
    """A model or publication stamped without a timezone ("2026-02-01T00:00:00") against one with it: comparing a
    naive and an aware time raises TypeError. A time without a zone is UTC."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", version="own", created="2026-02-01T00:00:00")
    model = model_update.open_model(settings(tmp_path, configured))
    assert model_update.takes_update(configured, model, {"sha256": "0" * 64, "created": MARCH})
    assert not model_update.takes_update(configured, model, {"sha256": "0" * 64, "created": JANUARY})
    west_of_utc = "2026-01-31T23:30:00-01:00"                             # 00:30 UTC: after the model's midnight
    assert model_update.takes_update(configured, model, {"sha256": "0" * 64, "created": west_of_utc})
    aware = tiny_onnx_model(tmp_path / "models" / "aware.onnx", version="own", created=FEBRUARY)
    model = model_update.open_model(settings(tmp_path, aware))
    assert model_update.takes_update(aware, model, {"sha256": "0" * 64, "created": "2026-03-01T00:00:00"})


def test_half_written_json_beside_the_model_is_no_crash(tmp_path):
    """A power cut while the model's metadata (`guAlta.onnx.json`) or its rejected note was written left `{"sha`:
    JSONDecodeError came out of every refresh. Such a file counts as none: the model is judged as an own one, and a
    later publication is installed with whole metadata."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=FEBRUARY)
    for half_written in (configured.with_name("guAlta.onnx.json"), model_update.rejected_path(configured)):
        half_written.write_text('{"sha')
    store = tmp_path / "store"
    publish(store, tiny_onnx_model(tmp_path / "published" / "v2.onnx", version="test-2", created=MARCH), version=2,
            created=MARCH)
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url)
        installed = model_update.refreshed_model(config, model_update.open_model(config))
    assert model_update.model_version(installed) == "test-2"
    assert json.loads(configured.with_name("guAlta.onnx.json").read_text())["version"] == 2


def test_a_model_version_the_service_would_refuse_is_not_reported(tmp_path):
    """A model whose version the service does not take ("v 4", a space in it) named in every detection: each one
    would be refused as it was built, and no detection reported. The version is left out."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", version="v 4", created=FEBRUARY)
    version = model_update.model_version(model_update.open_model(settings(tmp_path, configured)))
    assert version is None
    payload = build_detection("20211110221500", 0.9, "obs01", np.zeros((224, 448), np.uint8), folder="20211110",
                              model=version)
    assert validate(payload).model is None


def test_a_published_model_this_client_cannot_load_is_never_installed(client_night, tmp_path, caplog):
    """A publication that downloads whole but does not load here (a broken export, a format this version does not
    read) leaves the configured file, and the next run, as they were; where no model was installed yet it leaves
    nothing, so the next run downloads again."""
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created=JANUARY)
    original = configured.read_bytes()
    store = tmp_path / "store"
    broken = tmp_path / "published" / "broken.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"\x08\x07" + bytes(range(256)) * 64)                # the right size and hash, not a network
    publish(store, broken, version=2, created=MARCH)
    caplog.set_level(logging.WARNING)
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, configured, url=child.url, api_key=KEY)
        model = model_update.open_model(config)
        assert model_update.refreshed_model(config, model) is model
        assert "published model version 2 cannot be used here" in caplog.text
        assert configured.read_bytes() == original
        assert sorted(path.name for path in configured.parent.iterdir()) == [
            "guAlta.onnx", "guAlta.onnx.lock", "guAlta.onnx.rejected.json"]      # the lock is kept, empty
        caplog.clear()
        caplog.set_level(logging.INFO)
        summary = run_batch(config, client_night, tmp_path / "scores.csv", say=lambda line: None, progress=False)
        assert summary.model == TINY_VERSION and configured.read_bytes() == original
        assert "the published version 2 could not be loaded here" in caplog.text    # not downloaded again
        assert "model update skipped" not in caplog.text
        note = json.loads((configured.parent / "guAlta.onnx.rejected.json").read_text())
        assert note["version"] == 2 and "cannot load model" in note["reason"]
        assert note["client"] == {"gualta": model_update.code_digest(), "onnxruntime": onnxruntime.__version__}
        note["client"]["gualta"] = "0.1.0"            # noted by a client before a `git pull` (same version number)
        (configured.parent / "guAlta.onnx.rejected.json").write_text(json.dumps(note))
        assert model_update.refreshed_model(config, model) is model
        assert "model update skipped" in caplog.text                    # an upgraded client tries again
        caplog.clear()
        note["client"] = model_update.client_versions()
        note["client"]["onnxruntime"] = "1.0.0"                          # ONNX Runtime upgraded likewise
        (configured.parent / "guAlta.onnx.rejected.json").write_text(json.dumps(note))
        assert model_update.refreshed_model(config, model) is model
        assert "model update skipped" in caplog.text
        missing = settings(tmp_path, tmp_path / "fresh" / "guAlta.onnx", url=child.url)    # a first install too
        with pytest.raises(ClientError, match="published model version 2 cannot be used here"):
            model_update.open_model(missing)
        assert sorted(path.name for path in (tmp_path / "fresh").iterdir()) == [              # only why (and the
            "guAlta.onnx.lock", "guAlta.onnx.rejected.json"]                              # empty install lock)
        publish(store, configured, version=3)                           # so a fixed publication is then taken
        assert model_update.open_model(missing).info.version == TINY_VERSION
        fixed = publish(store, tiny_onnx_model(tmp_path / "fixed.onnx", bias=-2.0, created=MARCH), version=4,
                        created=MARCH)
        model_update.refreshed_model(config, model)
        assert hashlib.sha256(configured.read_bytes()).hexdigest() == fixed["sha256"]
        assert sorted(path.name for path in configured.parent.iterdir()) == ["guAlta.onnx", "guAlta.onnx.json",
                                                                             "guAlta.onnx.lock"]


def test_a_bucket_answering_access_denied_says_what_it_may_mean(tmp_path, caplog):
    """S3 answers 403 AccessDenied, not 404, for a key it does not hold to a reader not allowed to list the bucket
    (the public models/ before the first publish) — and for every key of a bucket that refuses public reads: the
    warning says both (it read as an unexplained failed update)."""
    from gualta.report import NoModelPublished, latest_model_info

    answers = {"/models/guAlta_latest_version.json": (403, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>"
                                                       "<Code>AccessDenied</Code><Message>Access Denied</Message></Error>")}
    bucket = RecordingServer(lambda path, _headers, _body: answers.get(path, (404, "not found")))
    url = bucket.url
    try:
        caplog.set_level(logging.INFO)
        target = tmp_path / "client" / "guAlta.onnx"
        target.parent.mkdir()
        target.write_bytes(tiny_onnx_model(tmp_path / "shipped.onnx", created=JANUARY).read_bytes())
        config = settings(tmp_path, target, url="", model_url=url)
        model = model_update.open_model(config)
        assert model_update.refreshed_model(config, model) is model
        assert "model update skipped" in caplog.text and "no model published there yet" in caplog.text
        assert "or the bucket refuses public reads" in caplog.text
        answers["/models/guAlta_latest_version.json"] = (404, "not found")
        with pytest.raises(NoModelPublished):
            latest_model_info(url, timeout=10)
    finally:
        bucket.close()


def test_published_models_are_read_from_the_bucket(tmp_path):
    """On AWS the client reads models where `python -m gualta.train publish --store s3://…` wrote them, through the
    bucket's public address (guAlta_model_url): first the missing model, then a newer publication."""
    from gualta.export import publish_model

    with moto_s3() as (endpoint, client):
        client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",          # template.yaml's public read
             "Resource": f"arn:aws:s3:::{BUCKET}/models/*"}]}))
        location, public = f"s3://{BUCKET}", f"{endpoint}/{BUCKET}"
        publish_model(tiny_onnx_model(tmp_path / "first.onnx", created=JANUARY), location, s3_endpoint=endpoint)
        target = tmp_path / "client" / "guAlta.onnx"
        config = settings(tmp_path, target, url="", model_url=public)
        model = model_update.open_model(config)
        published = client.get_object(Bucket=BUCKET, Key="models/guAlta_v1.onnx")["Body"].read()
        assert target.read_bytes() == published and model.info.version == "1"
        assert model_update.refreshed_model(config, model) is model                     # nothing newer yet
        publish_model(tiny_onnx_model(tmp_path / "second.onnx", bias=-2.0, created=MARCH), location,
                      s3_endpoint=endpoint)
        assert model_update.refreshed_model(config, model).info.version == "2"
        client.put_object(Bucket=BUCKET, Key="detections/20211110/obs01_20211110220000.json", Body=b"{}")
        assert requests.get(f"{public}/detections/20211110/obs01_20211110220000.json", timeout=10).status_code == 403
    assert '!Sub "${Bucket.Arn}/models/*"' in (REPO / "aws_lambda" / "template.yaml").read_text()
    assert json.loads(target.with_name("guAlta.onnx.json").read_text())["version"] == 2


def test_the_summary_of_a_night_reporting_flagged_candidates_says_they_are_among_the_reported():
    """With --report-flagged the summary said "51 detections, 32 flagged": 83 candidates, or 51 with 32 of them
    flagged? It says "51 reported (32 of them flagged)"; a night that held the flagged back keeps its wording."""
    reported_too, held_back = NightSummary("20211110"), NightSummary("20211110")
    for summary, report_flagged in ((reported_too, True), (held_back, False)):
        for flag in [""] * 19 + ["satellite"] * 20 + ["cloud"] * 12:
            summary.tally(True, False, not flag or report_flagged, flag)
        summary.tally(False, False, False, "skipped", detect.FIRST_NOTE)
    assert reported_too.counts() == "52 frames (51 scored, 1 skipped), 51 reported (32 of them flagged)"
    assert held_back.counts() == "52 frames (51 scored, 1 skipped), 19 detections, 32 flagged"
    reported_too.tally(True, False, False, "satellite")          # the setting turned off during a watched night
    assert reported_too.counts().endswith("51 reported (32 of them flagged), 1 flagged not reported")


def test_a_console_that_cannot_spell_a_character_does_not_stop_the_run(client_night, tiny_model, tmp_path):
    """Under a Latin-1 locale (or Windows output redirected to a file, cp1252) `--help` crashed on the '→' of
    demo's help, and batch wrote the CSV, then crashed on the summary naming `--scores Иван/` and exited 1. What the
    console cannot encode is now written as backslash escapes."""
    env = child_env(PYTHONIOENCODING="latin-1")
    usage = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "--help"], capture_output=True, timeout=60,
                           env=env)
    assert usage.returncode == 0 and b"\\u2192" in usage.stdout, usage.stderr
    run = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "batch", "--folder", str(client_night), "--scores",
                          f"{tmp_path / 'Иван'}/", "--no-upload", "--model", str(tiny_model), "--threads", "1"],
                         capture_output=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert b"night 20211110: 24 frames" in run.stdout and b"\\u0418\\u0432\\u0430\\u043d" in run.stdout
    assert len(read_scores(tmp_path / "Иван" / "20211110.csv")) == 24


def test_a_console_that_cannot_be_written_leaves_the_night_scored(client_night, tiny_model, tmp_path):
    """`batch ... > /dev/full` (stdout on a full disk, a terminal gone away) stopped the night at its first detection
    line with a traceback and left the CSV as .part. It is one warning on stderr and the night is scored to the end."""
    scores = tmp_path / "scores.csv"
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, str(REPO / "guAlta.py"), "batch", "--folder", str(client_night),
                              "--scores", str(scores), "--no-upload", "--model", str(tiny_model), "--threads", "1"],
                             stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, env=child_env())
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("cannot write to the console ([Errno 28] No space left on device)") == 1
    assert len(read_scores(scores)) == 24 and not Path(f"{scores}.part").exists()


class FullOnFlush(io.StringIO):
    """A console whose lines are taken in but cannot be flushed: a full disk found when the buffer is written."""

    def flush(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_console_that_takes_a_line_but_cannot_flush_it_is_warned_of_once(monkeypatch, caplog):
    """stdout on a full disk takes each line into its buffer: the failure came at exit, after the last line (exit
    status 120 and a traceback, the night's lines lost unsaid). The flush after each line finds it at the first."""
    console = FullOnFlush()
    monkeypatch.setattr(sys, "stdout", console)
    monkeypatch.setattr(cli.ConsoleLines, "failed_stdout", None)
    say = cli.ConsoleLines()
    for line in ("night 20211110: first", "night 20211110: second"):
        say(line)
    assert console.getvalue() == "night 20211110: first\n"
    warned = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warned == ["cannot write to the console ([Errno 28] No space left on device): its lines are left out "
                      "from here on"]


@pytest.mark.parametrize("write", [print, tqdm.write])
def test_lines_for_a_stdout_that_is_none_are_left_out(monkeypatch, write):
    """Under pythonw (or with stdout closed, in a library use with no `tolerant_console`) sys.stdout is None: after
    another console had failed, a line stopped the run with an AttributeError on its flush."""
    monkeypatch.setattr(cli.ConsoleLines, "failed_stdout", FullOnFlush())       # a console that failed before
    monkeypatch.setattr(sys, "stdout", None)
    cli.ConsoleLines(write)("night 20211110: 24 frames")


def test_a_strict_stream_put_in_stderr_s_place_escapes_what_it_cannot_spell(monkeypatch):
    """CPython's own stderr escapes what it cannot encode (even under PYTHONIOENCODING=latin-1:strict), a stream a
    host program put in its place need not: a log line or error naming 'Иван' was a UnicodeEncodeError there."""
    streams = {name: io.TextIOWrapper(io.BytesIO(), encoding="latin-1", errors="strict") for name in
               ("stdout", "stderr")}
    for name, stream in streams.items():
        monkeypatch.setattr(sys, name, stream)
    cli.tolerant_console()
    for name, stream in streams.items():
        print("cannot list Иван", file=stream, flush=True)
        assert stream.buffer.getvalue() == b"cannot list \\u0418\\u0432\\u0430\\u043d\n", name


def test_a_closed_stderr_does_not_stop_the_night(client_night, tiny_model, tmp_path):
    """`batch ... 2>&-` (or Windows' pythonw, whose stderr is None) stopped before scoring a frame: the progress bar
    wrote to a stderr that is None (AttributeError). The bar is left out and the night scored."""
    scores = tmp_path / "scores.csv"
    command = [sys.executable, str(REPO / "guAlta.py"), "batch", "--folder", str(client_night), "--scores",
               str(scores), "--no-upload", "--model", str(tiny_model), "--threads", "1"]
    run = subprocess.run(["bash", "-c", 'exec "$@" 2>&-', "bash", *command], stdout=subprocess.PIPE, text=True,
                         timeout=120, env=child_env(), close_fds=True)
    assert run.returncode == 0 and "night 20211110: 24 frames" in run.stdout
    assert len(read_scores(scores)) == 24
