"""The real-time watcher: a writer copies a night frame by frame (some slowly, in pieces; one never finished) while
the watcher scores it; its rows equal the batch run's, it survives a restart without duplicates, it sends each
detection before the camera's next frame, it follows a new night (with a newer published model, if any), respects a
window across midnight and stops cleanly on SIGTERM."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import pytest

from gualta import allsky, detect, realtime
from gualta.client_errors import ClientError
from gualta.config import seconds_until
from gualta.detect import run_batch
from gualta.frames import NightFrames
from gualta.model import load_model
from gualta.realtime import FrameWatch, Watcher, first_night_not_ended, in_window, run_realtime
from gualta.report import ApiClient, Outbox, Sender
from gualta.scores import read_scores
from gualta.server import ChildServer
from conftest import CLIENT_FRAMES
from helpers_client import as_ordinary_user, copy_night, publish, settings, tiny_onnx_model
from helpers_service import KEYS, child_env, service_env

REPO = Path(__file__).resolve().parent.parent
KEY = KEYS["obs01"]
NIGHT = "20211110"
NEXT_NIGHT = "20211111"


def write_slowly(source: Path, target: Path, pieces: int = 3, pause_s: float = 0.6) -> None:
    """Write a file in pieces with pauses longer than the watcher's settle time."""
    data = source.read_bytes()
    step = len(data) // pieces + 1
    with open(target, "wb") as stream:
        for start in range(0, len(data), step):
            stream.write(data[start:start + step])
            stream.flush()
            time.sleep(pause_s)


class Writer:
    """Copies a night's frames into root/NIGHT (or root/folder_name) one by one; records when each was complete."""

    def __init__(self, night: Path, root: Path, spacing_s: float = 0.1, slow=(), unfinished=(),
                 folder_name: str | None = None):
        self.frames, self.folder = allsky.list_frames(night), root / (folder_name or night.name)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spacing_s, self.slow, self.unfinished = spacing_s, set(slow), set(unfinished)
        self.completed: dict[str, float] = {}

    def write(self, indices) -> None:
        for i in indices:
            source, target = self.frames[i], self.folder / self.frames[i].name
            if i in self.unfinished:
                target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])    # stays half-written
            elif i in self.slow:
                write_slowly(source, target)
            else:
                target.write_bytes(source.read_bytes())
            self.completed[target.name] = time.time()
            time.sleep(self.spacing_s)


def start_watcher(config, model, sender=None, **timing):
    stop, lines = threading.Event(), []
    timing = {"settle_s": 0.2, "grace_s": 2.0, "hold_s": 60.0, "night_recheck_s": 300.0, **timing}
    watcher = Watcher(config, model, stop, sender, say=lines.append, **timing)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    return stop, thread, lines


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def rows_in(outbox_path: Path, night: str = NIGHT) -> list[dict]:
    with Outbox(outbox_path) as outbox:
        return outbox.night_rows(night)


def start_next_night(night: Path, root: Path) -> None:
    """A new night folder with one frame: the watcher moves on and closes the previous night."""
    (root / NEXT_NIGHT).mkdir()
    (root / NEXT_NIGHT / "image-20211111200000.jpg").write_bytes(allsky.list_frames(night)[0].read_bytes())


def said_ended(summary: detect.NightSummary, scores: Path) -> str:
    """What the watcher with a sender says when it closes a client night: the batch run's counts of it, its reports
    delivered, its CSV and its last frame's time."""
    return (f"night {summary.night} ended: {summary.counts()}; all reports delivered; scores {scores}; last frame at "
            "22:11:30")


def same_rows(watched: list[dict], batch: list[dict]) -> None:
    assert [row["file"] for row in watched] == [row["file"] for row in batch]
    for mine, theirs in zip(watched, batch):
        assert {k: str(v) for k, v in mine.items() if k != "score"} == {k: v for k, v in theirs.items()
                                                                         if k != "score"}
        assert (mine["score"] == theirs["score"] == "") or abs(float(mine["score"]) - float(theirs["score"])) < 1e-5


@pytest.fixture
def live(tmp_path):
    store = tmp_path / "store"
    with ChildServer(store, child_env(**service_env(store))) as child:
        yield child.url, store


def test_watcher_equals_batch_through_slow_writes_bad_frames_and_a_restart(client_night, tiny_model, tmp_path,
                                                                           live):
    url, store = live
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, url=url, api_key=KEY, sleep_between_imgs=0.05,
                      start_time="0000", end_time="0000", enable_extra_log=True)
    model = load_model(tiny_model, threads=1)
    writer = Writer(client_night, root, slow=(3, 8, 15), unfinished=(11,))

    sender = Sender(config.outbox, ApiClient(url, KEY))
    stop, thread, first_lines = start_watcher(config, model, sender)
    writer.write(range(0, 13))
    wait_for(lambda: len(rows_in(config.outbox)) >= 10)
    stop.set()                                                       # "crash" mid-night: stop between frames
    thread.join(10)
    assert not thread.is_alive()
    sender.close(timeout=5)

    sender = Sender(config.outbox, ApiClient(url, KEY))
    stop, thread, second_lines = start_watcher(config, model, sender, scores=tmp_path / "scores")
    writer.write(range(13, len(writer.frames)))
    wait_for(lambda: len(rows_in(config.outbox)) >= len(writer.frames) - 1)
    start_next_night(client_night, root)
    wait_for(lambda: len(rows_in(config.outbox)) == len(writer.frames))
    wait_for(lambda: (store / "logs" / NIGHT / "obs01_end.json").exists(), 20)
    stop.set()
    thread.join(10)
    assert sender.close(timeout=10) == 0

    batch = tmp_path / "batch.csv"
    summary = run_batch(settings(tmp_path / "b", tiny_model), writer.folder, batch, upload=False,
                        say=lambda line: None, progress=False)
    batch_rows = read_scores(batch)
    same_rows(rows_in(config.outbox), batch_rows)
    same_rows(read_scores(tmp_path / "scores" / f"{NIGHT}.csv"), batch_rows)    # the night's CSV, as batch's
    assert said_ended(summary, tmp_path / "scores" / f"{NIGHT}.csv") in second_lines      # and its counts
    assert list((tmp_path / "scores").iterdir()) == [tmp_path / "scores" / f"{NIGHT}.csv"]    # tonight's: not yet
    assert "bad frame" in batch_rows[11]["note"] and batch_rows[12]["previous"] == batch_rows[10]["file"]

    per_frame = [line.split(" , ")[0] for line in first_lines + second_lines if " , " in line]
    night_frames = [str(writer.folder / row["file"]) for row in batch_rows]
    assert sorted(per_frame) == sorted(night_frames)                 # each frame scored once across the restart
    reported = sorted(f"obs01_{allsky.frame_id(row['file'])}.json" for row in batch_rows if row["detection"] == "1")
    assert reported and sorted(p.name for p in (store / "detections" / NIGHT).glob("*.json")) == reported
    with sqlite3.connect(config.outbox) as db:
        attempts = db.execute("SELECT key, attempts, state FROM outbox WHERE key LIKE 'detection/%'").fetchall()
    assert len(attempts) == len(reported) and all(a == 1 and s == "sent" for _, a, s in attempts)
    end = json.loads((store / "logs" / NIGHT / "obs01_end.json").read_text())
    assert end["total"] == sum(row["score"] != "" for row in batch_rows)


def test_the_watcher_skips_frames_taken_in_daylight(client_night, tiny_model, tmp_path, madrid_clock):
    """The watcher scored the afternoon's frames (AllSky's daytime capture) as a backlog when its window opened, the
    night's waiting behind them. With the camera's place set they are skipped unread, as in the batch run."""
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, sleep_between_imgs=0.05, start_time="0000",
                      end_time="0000", latitude=-33.87, longitude=151.21, threshold=0)   # 08:00 there: daylight
    writer = Writer(client_night, root, spacing_s=0)
    writer.write(range(len(writer.frames)))
    stop, thread, _ = start_watcher(config, load_model(tiny_model, threads=1))
    wait_for(lambda: len(rows_in(config.outbox)) >= len(writer.frames) - 1)
    stop.set()
    thread.join(10)
    rows = rows_in(config.outbox)
    assert rows and all(row["note"].startswith("daytime: the sun") and row["score"] == "" for row in rows)


def test_the_line_at_a_night_s_end_counts_its_frames_as_the_batch_run_s_summary_does(client_night, tiny_model,
                                                                                      tmp_path, madrid_clock):
    """The watcher's line at a night's end left out the frames skipped and those taken in daylight, which the batch
    run's summary counts: an operator reading both saw different counts of one night."""
    root, place = tmp_path / "images", {"latitude": 0.0, "longitude": -43.95, "threshold": 0}   # dusk at 22:05 here
    config = settings(tmp_path, tiny_model, main_folder=root, start_time="2000", end_time="0800", **place)
    Writer(client_night, root, spacing_s=0.0).write(range(CLIENT_FRAMES))
    clock, lines = [datetime(2021, 11, 10, 22, 0)], []
    watcher = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), say=lines.append, settle_s=0.0,
                      clock=lambda: clock[0])
    watcher.tick()
    clock[0] = datetime(2021, 11, 11, 8, 0)                          # the window closes: the night with it
    watcher.tick()
    watcher.outbox.close()
    summary = run_batch(settings(tmp_path / "b", tiny_model, **place), root / NIGHT, upload=False,
                        say=lambda line: None, progress=False)
    assert "24 frames (12 scored, 1 skipped, 11 in daylight), " in summary.text()
    assert lines[-1] == f"night {NIGHT} ended: {summary.counts()}; last frame at 22:11:30"


def black_camera_watcher(client_night, tiny_model, tmp_path, stop: threading.Event, clock) -> tuple[Watcher, list]:
    """A watcher over a night whose camera went black from its 22nd frame, four rounds into it: (watcher, frames)."""
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, start_time="2000", end_time="0800")
    writer = Writer(client_night, root, spacing_s=0.0)
    writer.write(range(CLIENT_FRAMES))
    for frame in writer.frames[21:]:
        cv2.imwrite(str(writer.folder / frame.name), cv2.imread(str(frame)) * 0)
    watcher = Watcher(config, load_model(tiny_model, threads=1), stop, say=lambda line: None, settle_s=0.0,
                      clock=clock)
    ticked(watcher, 4)
    return watcher, writer.frames


def black_run_said(caplog, frames: list) -> bool:
    """Whether the log warned of the black run's first frame, then counted the other two, and said nothing else."""
    first, last = frames[21].name, frames[-1].name
    return [record.getMessage() for record in caplog.records if record.filename == "frames.py"] == [
        f"{first}: blank frame (a black or uniform image): skipped",
        f"{first}: 2 more blank frames (a black or uniform image), until {last}: skipped"]


def test_a_black_camera_to_the_night_s_end_is_one_warning_and_one_count_when_it_closes(client_night, tiny_model,
                                                                                       tmp_path, caplog):
    """A camera black until the window closed gave one WARNING a frame (~1,400 lines on a dead night): the watcher
    warns of the first and counts the rest when it closes the night, as the batch run does."""
    caplog.set_level(logging.WARNING)
    clock = [datetime(2021, 11, 10, 22, 0)]
    watcher, frames = black_camera_watcher(client_night, tiny_model, tmp_path, threading.Event(), lambda: clock[0])
    clock[0] = datetime(2021, 11, 11, 8, 0)                          # the window closes: the night with it
    watcher.tick()
    watcher.outbox.close()
    assert black_run_said(caplog, frames)


def test_a_run_of_black_frames_a_stop_cuts_is_counted_before_the_watcher_ends(client_night, tiny_model, tmp_path,
                                                                              caplog):
    """Stopped (systemctl stop) in the middle of a black camera's run, the watcher ended without counting it: the
    first black frame was warned of, the rest never said."""
    caplog.set_level(logging.WARNING)
    stop = threading.Event()
    watcher, frames = black_camera_watcher(client_night, tiny_model, tmp_path, stop,
                                           lambda: datetime(2021, 11, 10, 22, 0))
    stop.set()
    watcher.run()                                                    # stopped at once: only its ending runs
    assert black_run_said(caplog, frames)


def test_a_candidate_before_dawn_is_decided_while_daylight_frames_come(client_night, tiny_model, tmp_path,
                                                                     madrid_clock):
    """The hold of a candidate waiting for its successor started again with every frame that came: at dawn, with
    daylight frames never scored, the night's last candidate (and its report) waited until the camera stopped, hours
    later. It is decided hold_s after it began to wait."""
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, sleep_between_imgs=0.05, start_time="0000",
                      end_time="0000", latitude=0.0, longitude=123.45, threshold=0)   # -6° at 22:05:15 here
    night = Writer(client_night, root, spacing_s=0)
    night.write(range(11))
    stop, thread, _ = start_watcher(config, load_model(tiny_model, threads=1), hold_s=2.0)
    wait_for(lambda: len(rows_in(config.outbox)) >= 10)
    dawn = threading.Thread(target=Writer(client_night, root, spacing_s=0.7).write, args=(range(11, 24),))
    dawn.start()
    started = time.monotonic()
    wait_for(lambda: len(rows_in(config.outbox)) >= 11, timeout=30)
    decided_after = time.monotonic() - started
    dawn.join()
    stop.set()
    thread.join(10)
    assert decided_after < 6 and rows_in(config.outbox)[10]["file"] == night.frames[10].name


@pytest.mark.parametrize("night, first, after_change, previous", [
    ("20211030", datetime(2021, 10, 31, 2, 54, 5, fold=0), "image-20211031020005.jpg", "image-20211031025935.jpg"),
    ("20220326", datetime(2022, 3, 27, 1, 54, 5), "image-20220327030005.jpg", "image-20220327015935.jpg")])
def test_the_nights_summer_time_ends_and_starts_are_watched_as_they_are_taken(client_night, tiny_model, tmp_path,
                                                                             madrid_clock, night, first,
                                                                             after_change, previous):
    """At the end of summer time the camera names the frames of the second pass of 02:00–03:00 earlier than those
    already scored; the watcher takes them as they come (their files are written now, in the second pass) and
    decides the night as a batch run does. When summer time starts, the frame named 03:00:05 is compared with the
    one named 01:59:35, 30 s before it."""
    root = tmp_path / "images"
    (root / night).mkdir(parents=True)
    config = settings(tmp_path, tiny_model, main_folder=root, sleep_between_imgs=0.05, start_time="0000",
                      end_time="0000")
    stop, thread, lines = start_watcher(config, load_model(tiny_model, threads=1))
    start = first.timestamp()
    try:
        for i, frame in enumerate(allsky.list_frames(client_night)):
            taken = start + 30 * i
            partial = root / night / "writing.tmp"
            partial.write_bytes(frame.read_bytes())
            os.utime(partial, (taken + 2, taken + 2))            # the camera's clock, as it was then
            partial.rename(root / night / f"image-{datetime.fromtimestamp(taken):%Y%m%d%H%M%S}.jpg")
            time.sleep(0.1)
        wait_for(lambda: len(rows_in(config.outbox, night)) >= CLIENT_FRAMES - 1)
        start_next_night(client_night, root)
        wait_for(lambda: len(rows_in(config.outbox, night)) == CLIENT_FRAMES)
    finally:
        stop.set()
        thread.join(10)
    batch = tmp_path / "batch.csv"
    run_batch(settings(tmp_path / "b", tiny_model), root / night, batch, upload=False, say=lambda line: None,
              progress=False)
    watched = rows_in(config.outbox, night)
    same_rows(watched, read_scores(batch))
    assert watched[12]["file"] == after_change and watched[12]["previous"] == previous and watched[12]["note"] == ""
    assert not [line for line in lines if "arrived after" in line]


def test_a_frame_named_before_one_already_scored_gets_a_row_of_its_own(client_night, tiny_model, tmp_path):
    """The Pi's clock set back mid-night names a new frame before frames already scored: it is not scored (its
    predecessor is decided), but the night's CSV has its row, one per frame, as the batch run's does."""
    root = tmp_path / "images"
    writer = Writer(client_night, root, spacing_s=0.0)
    writer.write(range(6))
    config = settings(tmp_path, tiny_model, main_folder=root, start_time="0000", end_time="0000")
    watcher = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), say=lambda line: None,
                      settle_s=0.0)
    for _ in range(20):
        watcher.tick()
        if len(rows_in(config.outbox)) >= 5:
            break
        time.sleep(0.05)
    late = root / NIGHT / f"image-{allsky.frame_time(writer.frames[2]) + timedelta(seconds=5):%Y%m%d%H%M%S}.jpg"
    late.write_bytes(writer.frames[7].read_bytes())
    watcher.tick()
    watcher.outbox.close()
    rows = {row["file"]: row for row in rows_in(config.outbox)}
    assert (rows[late.name]["flag"], rows[late.name]["score"], rows[late.name]["note"]) == (
        "skipped", "", realtime.LATE_NOTE)


def test_a_frame_the_second_pass_wrote_over_keeps_the_time_it_was_scored_at(client_night, tmp_path, madrid_clock):
    """A camera whose second pass of the repeated hour reuses the first pass's names writes over frames already
    scored. The frame after them is not compared across the hour with the image read in the first pass."""
    folder, frames = tmp_path / "20211030", allsky.list_frames(client_night)
    folder.mkdir()

    def write(source: Path, when: datetime) -> Path:
        target = folder / f"image-{when:%Y%m%d%H%M%S}.jpg"
        target.write_bytes(source.read_bytes())
        os.utime(target, (when.timestamp() + 2,) * 2)
        return target

    first_pass = [write(frames[0], datetime(2021, 10, 31, 2, 59, 0)),
                  write(frames[1], datetime(2021, 10, 31, 2, 59, 30))]
    night = NightFrames(first_pass)
    assert night.pair(first_pass[1]).gap_s == 30 and night.image(first_pass[1]) is not None
    write(frames[2], datetime(2021, 10, 31, 2, 59, 30, fold=1))                      # written over, an hour later
    after = write(frames[3], datetime(2021, 10, 31, 3, 0, 0))
    night.append(after)
    assert night.pair(after).gap_s == 3630 and detect.not_comparable(night.pair(after)).endswith("not compared")


def test_nights_the_watcher_stopped_in_or_missed_are_finished_beside_the_new_one(client_night, tiny_model,
                                                                                  tmp_path, live):
    """The watcher stops mid-night (a power cut) and comes back only two evenings later: it watches the new night
    at once and, between its frames, decides the rest of the night it left, as a batch run would, with its end log,
    then the night it missed. A first start does not go back over the nights already in the images folder."""
    url, store = live
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, url=url, api_key=KEY, sleep_between_imgs=0.05,
                      start_time="0000", end_time="0000")
    model = load_model(tiny_model, threads=1)
    writer = Writer(client_night, root, spacing_s=0.05)
    sender = Sender(config.outbox, ApiClient(url, KEY))
    stop, thread, _ = start_watcher(config, model, sender)
    writer.write(range(0, 10))
    wait_for(lambda: len(rows_in(config.outbox)) >= 8)
    stop.set()
    thread.join(10)
    sender.close(timeout=5)
    writer.write(range(10, len(writer.frames)))                     # the camera went on; the watcher was off
    shutil.copytree(client_night, root / NEXT_NIGHT)                 # and the next night too
    tonight = Writer(client_night, root, spacing_s=0.0, folder_name="20211112")
    tonight.write([0])

    sender = Sender(config.outbox, ApiClient(url, KEY))
    stop, thread, lines = start_watcher(config, model, sender, scores=tmp_path / "scores")
    wait_for(lambda: len(rows_in(config.outbox, "20211112")) == 1)
    assert len(rows_in(config.outbox, NEXT_NIGHT)) < CLIENT_FRAMES             # tonight first
    tonight.write([1, 2])                                            # tonight goes on meanwhile
    wait_for(lambda: any(line.startswith(f"night {NEXT_NIGHT} ended") for line in lines))
    wait_for(lambda: len(rows_in(config.outbox, "20211112")) == 3)
    stop.set()
    thread.join(10)
    assert sender.close(timeout=10) == 0
    ended = []
    for night in (NIGHT, NEXT_NIGHT):
        batch = tmp_path / f"{night}.csv"
        summary = run_batch(settings(tmp_path / "b", tiny_model), root / night, batch, upload=False,
                            say=lambda line: None, progress=False)
        ended.append(said_ended(summary, tmp_path / "scores" / f"{night}.csv"))
        same_rows(rows_in(config.outbox, night), read_scores(batch))
        same_rows(read_scores(tmp_path / "scores" / f"{night}.csv"), read_scores(batch))
        end = json.loads((store / "logs" / night / "obs01_end.json").read_text())
        assert end["total"] == CLIENT_FRAMES - 1
    assert lines.index(f"watching night {root / '20211112'} (model test-1)") < lines.index(ended[0]) \
        < lines.index(ended[1])
    assert not (tmp_path / "scores" / "20211112.csv").exists()
    assert f"night {NEXT_NIGHT} was not watched: deciding its frames now, tonight's first" in lines
    assert not (store / "logs" / "20211112" / "obs01_end.json").exists()

    fresh = settings(tmp_path / "fresh", tiny_model, main_folder=root, start_time="0000", end_time="0000")
    stop, thread, _ = start_watcher(fresh, model)
    wait_for(lambda: len(rows_in(fresh.outbox, "20211112")) == 3)
    stop.set()
    thread.join(10)
    with Outbox(fresh.outbox) as outbox:
        assert outbox.watched_nights() == ["20211112"]


def test_a_missed_night_is_decided_a_chunk_at_a_time_and_a_restart_goes_on(client_night, tiny_model, tmp_path,
                                                                           monkeypatch):
    """Deciding a whole missed night takes minutes on a Pi: it is decided a chunk at a time, only while tonight has
    no frame waiting (nor one being written or settling), and outside the window too; a stop (systemctl stop)
    between chunks leaves the rest to the next start, which goes on where it stopped."""
    monkeypatch.setattr(realtime, "CHUNK", 4)
    root = tmp_path / "images"
    clock = [datetime(2021, 11, 10, 21, 0)]
    config = settings(tmp_path, tiny_model, main_folder=root, start_time="2000", end_time="0700")
    model = load_model(tiny_model, threads=1)
    writer = Writer(client_night, root, spacing_s=0.0)
    writer.write(range(0, 3))

    def watcher() -> Watcher:
        return Watcher(config, model, threading.Event(), say=lambda line: None, settle_s=0.0,
                       clock=lambda: clock[0])

    first = watcher()
    for _ in range(3):
        first.tick()                                                 # watched the start of the night
    first.outbox.close()
    decided = len(rows_in(config.outbox))
    assert decided >= 1
    writer.write(range(3, len(writer.frames)))
    tonight = Writer(client_night, root, spacing_s=0.0, folder_name=NEXT_NIGHT)
    tonight.write(range(0, 10))

    clock[0] = datetime(2021, 11, 11, 21, 0)                         # the next evening
    second = watcher()
    assert second.tick() == realtime.FAST_POLL_S                     # tonight's frames seen, not yet steady: waited for
    assert rows_in(config.outbox, NEXT_NIGHT) == [] and len(rows_in(config.outbox)) == decided
    assert [second.tick() for _ in range(3)] == [0.0, 0.0, config.sleep_between_imgs]    # tonight's, 4 at a time
    assert len(rows_in(config.outbox, NEXT_NIGHT)) >= 9 and len(rows_in(config.outbox)) == decided
    assert second.tick() == 0.0                                      # nothing waiting: a chunk of the missed night
    assert len(rows_in(config.outbox)) == decided + 4
    second.outbox.close()                                            # stopped

    third = watcher()
    third.tick()
    clock[0] = datetime(2021, 11, 12, 8, 0)                          # the window closed: it goes on all the same
    while third.tick() == 0.0:
        pass
    third.outbox.close()
    assert len(rows_in(config.outbox, NEXT_NIGHT)) >= 9
    batch = tmp_path / "batch.csv"
    run_batch(settings(tmp_path / "b", tiny_model), writer.folder, batch, upload=False, say=lambda line: None,
              progress=False)
    same_rows(rows_in(config.outbox), read_scores(batch))


def windowed(client_night: Path, tiny_model: Path, tmp_path: Path, url: str, first: datetime):
    """For a watcher with the window 2000–0800 reporting to `url`: its images root, its clock (a one-item list
    that the test moves on, starting at `first`), settings, model and a writer of the client night."""
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, url=url, api_key=KEY, start_time="2000",
                      end_time="0800")
    return root, [first], config, load_model(tiny_model, threads=1), Writer(client_night, root, spacing_s=0.0)


def test_a_night_whose_window_closed_while_the_watcher_was_off_is_decided_when_it_is_back(client_night, tiny_model,
                                                                                          tmp_path, live):
    """A power cut from mid-night until after the window closed (08:00): back at 08:30, the watcher decides the
    rest of that night with its end log at once — before the morning's page — not when the next night starts. A
    night whose window has not opened yet (the camera began at dusk) is left to the window."""
    url, store = live
    root, clock, config, model, writer = windowed(client_night, tiny_model, tmp_path, url,
                                                  datetime(2021, 11, 10, 22, 10))
    writer.write(range(0, 5))

    def watch(ticks: int | None = None) -> None:
        """A watcher's ticks (until it sleeps, if `ticks` is None) and its stop."""
        sender = Sender(config.outbox, ApiClient(url, KEY))
        watcher = Watcher(config, model, threading.Event(), sender, say=lambda line: None, settle_s=0.0,
                          clock=lambda: clock[0])
        for _ in range(ticks or 10_000):
            if watcher.tick() > 0.0 and ticks is None:
                break
        watcher.outbox.close()
        assert sender.close(timeout=10) == 0

    watch(ticks=3)                                                   # the start of the night
    writer.write(range(5, len(writer.frames)))                       # the camera went on; the watcher was off
    tonight = Writer(client_night, root, spacing_s=0.0, folder_name=NEXT_NIGHT)
    clock[0] = datetime(2021, 11, 11, 8, 30)
    watch()
    batch = tmp_path / "batch.csv"
    run_batch(settings(tmp_path / "b", tiny_model), writer.folder, batch, upload=False, say=lambda line: None,
              progress=False)
    same_rows(rows_in(config.outbox), read_scores(batch))
    end = json.loads((store / "logs" / NIGHT / "obs01_end.json").read_text())
    assert end["total"] == CLIENT_FRAMES - 1

    tonight.write([0, 1])                                            # dusk, before the window
    clock[0] = datetime(2021, 11, 11, 19, 0)
    watch()
    assert rows_in(config.outbox, NEXT_NIGHT) == [] and not (store / "logs" / NEXT_NIGHT).exists()


def test_the_line_at_a_night_s_end_says_what_the_service_refused_and_what_is_pending(client_night, tiny_model,
                                                                                     tmp_path, live):
    """The line at a night's end said nothing of delivery: reports sat refused in the outbox (a wrong key) under
    `night 20211110 ended: 6 frames (5 scored, 1 skipped), …`. It says, as the batch run's summary does, why the
    service refused them and how many are pending; with the key right, that all were delivered."""
    url, _ = live
    lines = []
    refused = (r"the service refused the reports \(HTTP 401: .*; fix guAlta_api_key / guAlta_obs_id\); [2-9] "
               r"report\(s\) pending in the outbox")
    for key, said in [("wrong-key", refused), (KEY, r"all reports delivered")]:
        root, clock, config, model, writer = windowed(client_night, tiny_model, tmp_path / key, url,
                                                      datetime(2021, 11, 10, 22, 0))
        writer.write(range(6))
        sender = Sender(config.outbox, ApiClient(url, key))
        watcher = Watcher(config, model, threading.Event(), sender, say=lines.append, settle_s=0.0,
                          clock=lambda: clock[0])
        ticked(watcher, 3)
        wait_for(lambda: sender.refused or not watcher.outbox.pending(), 20)        # the start log tried
        clock[0] = datetime(2021, 11, 11, 8, 0)                      # the window closes: the night with it
        watcher.tick()
        watcher.outbox.close()
        sender.close(timeout=0)
        assert re.fullmatch(rf"night {NIGHT} ended: 6 frames \(5 scored, 1 skipped\), \d+ detections, \d+ flagged; "
                            rf"{said}; last frame at 22:02:30", lines[-1]), lines[-1]


def test_a_camera_that_stops_inside_the_window_is_said_once_and_its_return_too(client_night, tiny_model, tmp_path,
                                                                                caplog):
    """A camera (or the share) that stopped mid-night was never mentioned: 75 minutes of silence, then the night's
    end line. No new frame for 20 of its intervals (10 min) is warned of once, frames again are said, and the line at
    the night's end gives the last frame's time."""
    root, clock, config, model, writer = windowed(client_night, tiny_model, tmp_path, "",
                                                  datetime(2021, 11, 10, 22, 0))
    lines = []
    watcher = Watcher(config, model, threading.Event(), say=lines.append, settle_s=0.0, clock=lambda: clock[0])
    writer.write(range(6))
    caplog.set_level(logging.INFO, "gualta.realtime")
    ticked(watcher, 3)
    for minute in (5, 9, 10, 11, 40):                                # the camera stopped at 22:00
        clock[0] = datetime(2021, 11, 10, 22, minute)
        watcher.tick()
    writer.write(range(6, 8))
    ticked(watcher, 3)
    clock[0] = datetime(2021, 11, 11, 8, 0)                          # the window closes: the night with it
    watcher.tick()
    watcher.outbox.close()
    said = [(record.levelname, record.getMessage()) for record in caplog.records if "frame" in record.getMessage()]
    assert said == [("WARNING", f"no new frame in {NIGHT} for 10 min (last {writer.frames[5].name}): camera or share "
                                "stopped?"), ("INFO", f"frames in {NIGHT} again after 40 min without "
                                                      f"({writer.frames[6].name})")]
    assert lines[-1].startswith(f"night {NIGHT} ended: 8 frames (7 scored, 1 skipped), ")
    assert lines[-1].endswith("; last frame at 22:03:30")


def test_a_night_closed_at_the_windows_end_is_not_taken_up_again(client_night, tiny_model, tmp_path, live):
    """The camera goes on after the window (dawn after 08:00). The night the watcher closed at the window's end is
    neither watched again when the window opens before tonight's folder exists, nor decided as left unfinished when
    tonight starts: its end log is posted once, with what the watcher decided."""
    url, store = live
    root, clock, config, model, writer = windowed(client_night, tiny_model, tmp_path, url,
                                                  datetime(2021, 11, 10, 22, 0))
    sender = Sender(config.outbox, ApiClient(url, KEY))
    watcher = Watcher(config, model, threading.Event(), sender, say=lambda line: None, settle_s=0.0,
                      clock=lambda: clock[0])
    writer.write(range(0, 10))
    for _ in range(3):
        watcher.tick()
    clock[0] = datetime(2021, 11, 11, 8, 0)                          # the window closes: the night with it
    watcher.tick()
    assert watcher.current is None and len(rows_in(config.outbox)) == 10
    writer.write(range(10, len(writer.frames)))                      # dawn, after the window
    clock[0] = datetime(2021, 11, 11, 20, 0)                         # the window opens; tonight's folder not yet
    for _ in range(3):
        watcher.tick()
    assert watcher.current is None and len(rows_in(config.outbox)) == 10
    tonight = Writer(client_night, root, spacing_s=0.0, folder_name=NEXT_NIGHT)
    tonight.write([0])
    watcher.checked_at = -float("inf")                               # the 5-minute look for a new night
    for _ in range(3):
        watcher.tick()
    assert watcher.current.night == NEXT_NIGHT and not watcher.left_nights
    watcher.outbox.close()
    assert sender.close(timeout=10) == 0
    assert len(rows_in(config.outbox)) == 10
    end = json.loads((store / "logs" / NIGHT / "obs01_end.json").read_text())
    assert end["total"] == 9


def test_a_first_start_before_tonight_s_folder_waits_for_it_rather_than_take_up_last_night(client_night, tiny_model,
                                                                                           tmp_path, live):
    """Started for the first time at 20:05, before the camera made tonight's folder: last night's, whose window ended
    at 08:00, was taken as the newest night, scored whole and its logs posted to Telegram again. It waits for
    tonight's folder, and watches it alone."""
    url, store = live
    root, clock, config, model, writer = windowed(client_night, tiny_model, tmp_path, url,
                                                  datetime(2021, 11, 11, 20, 5))
    writer.write(range(0, 10))                                       # last night's, watched by another install
    sender, lines = Sender(config.outbox, ApiClient(url, KEY)), []
    watcher = Watcher(config, model, threading.Event(), sender, say=lines.append, settle_s=0.0,
                      clock=lambda: clock[0])
    ticked(watcher, 3)
    assert watcher.current is None and rows_in(config.outbox) == []
    assert [line for line in lines if "waiting for" in line] == [              # said once, not at every check
        f"night {NIGHT} is over (its window ended before this first start): waiting for night {NEXT_NIGHT}'s folder"]
    Writer(client_night, root, spacing_s=0.0, folder_name=NEXT_NIGHT).write(range(0, 3))
    ticked(watcher, 3)
    assert watcher.current.night == NEXT_NIGHT and not watcher.left_nights
    watcher.outbox.close()
    assert sender.close(timeout=10) == 0
    assert rows_in(config.outbox) == [] and len(rows_in(config.outbox, NEXT_NIGHT)) >= 2
    assert not (store / "logs" / NIGHT).exists() and (store / "logs" / NEXT_NIGHT / "obs01_start.json").exists()


def test_each_night_closed_gets_its_scores_csv_and_one_that_cannot_be_written_loses_nothing(
        client_night, tiny_model, tmp_path, caplog):
    """With a scores folder, a night closed at the window's end is written there as the batch run's CSV. When the
    folder cannot be written into by then (a share gone, a full card), that is logged and the night is closed all
    the same: its rows stay in the outbox, the watcher goes on."""
    root, clock, config, model, writer = windowed(client_night, tiny_model, tmp_path, "",
                                                  datetime(2021, 11, 10, 22, 0))
    scores, lines = tmp_path / "scores", []
    watcher = Watcher(config, model, threading.Event(), say=lines.append, settle_s=0.0, clock=lambda: clock[0],
                      scores=scores)
    writer.write(range(0, 10))
    for _ in range(3):
        watcher.tick()
    clock[0] = datetime(2021, 11, 11, 8, 0)                          # the window closes: the night with it
    watcher.tick()
    assert lines[-1].startswith(f"night {NIGHT} ended: 10 frames (9 scored, 1 skipped), ")
    assert lines[-1].endswith(f" flagged; scores {scores / f'{NIGHT}.csv'}; last frame at 22:04:30")
    assert read_scores(scores / f"{NIGHT}.csv") == [{k: str(v) for k, v in row.items()}
                                                     for row in rows_in(config.outbox)]
    assert len(rows_in(config.outbox)) == 10

    Writer(client_night, root, spacing_s=0.0, folder_name=NEXT_NIGHT).write(range(0, 6))
    clock[0] = datetime(2021, 11, 11, 22, 0)
    for _ in range(3):
        watcher.tick()
    shutil.rmtree(scores)
    scores.write_text("not a folder")                                # the folder is gone, a file in its place
    clock[0] = datetime(2021, 11, 12, 8, 0)
    with caplog.at_level(logging.ERROR, logger="gualta.scores"):
        watcher.tick()
    assert lines[-1].startswith(f"night {NEXT_NIGHT} ended: 6 frames (5 scored, 1 skipped), ")
    assert lines[-1].endswith(" flagged; last frame at 22:02:30") and "cannot write the scores CSV" in caplog.text
    assert watcher.current is None and NEXT_NIGHT in watcher.outbox.closed_nights()
    assert len(rows_in(config.outbox, NEXT_NIGHT)) == 6 and scores.read_text() == "not a folder"
    watcher.outbox.close()


def test_cli_realtime_refuses_a_scores_folder_it_cannot_make(client_night, tiny_model, tmp_path):
    (tmp_path / "scores").write_text("a file")
    process = subprocess.run(
        [sys.executable, str(REPO / "guAlta.py"), "realtime", "--no-upload", "--main-folder", str(tmp_path),
         "--model", str(tiny_model), "--outbox", str(tmp_path / "o.sqlite"), "--scores", str(tmp_path / "scores")],
        capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=60)
    assert process.returncode == 1
    assert process.stderr.strip().endswith(f"guAlta realtime: cannot make the scores folder {tmp_path / 'scores'}: "
                                           "File exists")
    assert not (tmp_path / "o.sqlite").exists()


def test_each_detection_is_sent_before_the_frame_after_next_is_written(client_night, tiny_model, tmp_path, live):
    """No frame waits for more than its successor: once a frame's successor is written, the frame is decided and its
    detection sent while the camera has not taken another (the latency in seconds: bench/realtime_latency.py)."""
    url, store = live
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, url=url, api_key=KEY, sleep_between_imgs=0.2,
                      start_time="0000", end_time="0000", satellite_check=False)
    writer = Writer(client_night, root, spacing_s=0)
    sender = Sender(config.outbox, ApiClient(url, KEY))
    stop, thread, _ = start_watcher(config, load_model(tiny_model, threads=1), sender)      # holds a frame for 60 s

    def all_but_newest_sent(written: int) -> bool:
        with Outbox(config.outbox) as outbox:
            return len(outbox.night_rows(NIGHT)) >= written - 1 and outbox.pending() == 0

    try:
        for i in range(14):
            writer.write([i])
            wait_for(lambda: all_but_newest_sent(i + 1), timeout=30)   # well before the 60 s a frame is held
    finally:
        stop.set()
        thread.join(10)
        sender.close(timeout=5)
    with sqlite3.connect(config.outbox) as db:
        sent = db.execute("SELECT key FROM outbox WHERE key LIKE 'detection/%' AND state = 'sent'").fetchall()
    assert len(sent) >= 2                                   # the tiny model finds meteors in this night


def test_a_half_written_frame_waits_and_an_abandoned_one_is_handed_over(client_night, tmp_path):
    folder = tmp_path / NIGHT
    folder.mkdir()
    frames = allsky.list_frames(client_night)
    data = frames[0].read_bytes()
    (folder / frames[0].name).write_bytes(data[: len(data) // 2])
    watch = FrameWatch(folder, settle_s=0.1, grace_s=1.0)
    assert watch.ready() == []
    time.sleep(0.3)
    assert watch.ready() == []                                        # steady but no end-of-image marker yet
    (folder / frames[0].name).write_bytes(data)
    (folder / frames[1].name).write_bytes(frames[1].read_bytes()[:1000])
    assert watch.ready() == []                                        # size changed: the clock restarts
    time.sleep(0.2)
    assert [p.name for p in watch.ready()] == [frames[0].name]        # complete; frames[1] still unfinished
    time.sleep(1.1)
    assert [p.name for p in watch.ready()] == [frames[1].name]        # abandoned: handed over (then a bad frame)


def test_frames_already_there_are_handed_over_together_not_one_a_look(client_night, tmp_path):
    """A night folder that already holds frames (the watcher restarted mid-night, or the camera began before the
    window) is handed over at the second look, the first noting every size — not one frame a look, which with
    `guAlta_sleep_between_imgs = 10` took 10 s a frame and caught up 3 hours of frames in 1.5 hours. A frame still
    being written holds back those after it, and they follow together once it is done."""
    folder = tmp_path / NIGHT
    shutil.copytree(client_night, folder)
    frames = allsky.list_frames(folder)
    data = frames[12].read_bytes()
    frames[12].write_bytes(data[: len(data) // 2])
    watch = FrameWatch(folder, settle_s=0.1, grace_s=60.0)
    assert watch.ready() == []
    time.sleep(0.2)
    assert watch.ready() == frames[:12]
    frames[12].write_bytes(data)
    assert watch.ready() == []
    time.sleep(0.2)
    assert watch.ready(limit=5) == frames[12:17] and watch.ready() == frames[17:]


def test_a_half_written_png_frame_waits_too(client_night, tmp_path):
    """AllSky saves PNG frames when its file name is image.png: one is complete once its IEND chunk is written."""
    folder = tmp_path / NIGHT
    folder.mkdir()
    frame = allsky.list_frames(client_night)[0]
    data = cv2.imencode(".png", cv2.imread(str(frame)))[1].tobytes()
    png = folder / frame.with_suffix(".png").name
    png.write_bytes(data[:-12])                                      # all but the IEND chunk
    watch = FrameWatch(folder, settle_s=0.1, grace_s=5.0)
    assert watch.ready() == []
    time.sleep(0.3)
    assert watch.ready() == []                                        # steady, but not finished
    png.write_bytes(data)
    watch.ready()
    time.sleep(0.2)
    assert watch.ready() == [png]


def test_frames_named_otherwise_than_allsky_does_are_said_once_when_they_come(client_night, tmp_path, caplog):
    """`image-….JPG` files (another capture program, a copy) were left out without a word; those arriving after the
    night's start too."""
    folder = tmp_path / NIGHT
    folder.mkdir()
    first, *rest = allsky.list_frames(client_night)[:4]
    (folder / first.name).write_bytes(first.read_bytes())
    watch = FrameWatch(folder, settle_s=0.0)
    with caplog.at_level(logging.WARNING):
        watch.ready()
        assert "named like frames" not in caplog.text
        for frame in rest:
            (folder / frame.name.replace(".jpg", ".JPG")).write_bytes(frame.read_bytes())
            assert all(path.suffix == ".jpg" for path in watch.ready())                # never handed over
    assert caplog.text.count("named like frames but not as AllSky names them") == 1
    assert f"{folder}: 1 file(s) named like frames" in caplog.text          # the first .JPG, as it came


def test_a_folder_that_cannot_be_listed_is_said_once_until_it_is_back(client_night, tmp_path, caplog):
    """A night folder on a share that drops (or removed) is polled twice a second: one warning, not one a poll."""
    folder = tmp_path / NIGHT
    folder.mkdir()
    frame = allsky.list_frames(client_night)[0]
    watch = FrameWatch(folder, settle_s=0.0)
    folder.rmdir()
    with caplog.at_level(logging.INFO, logger="gualta.realtime"):
        assert [watch.ready() for _ in range(5)] == [[]] * 5
        folder.mkdir()
        (folder / frame.name).write_bytes(frame.read_bytes())
        watch.ready()
        assert watch.ready() == [folder / frame.name]
    said = [record.getMessage() for record in caplog.records]
    assert said == [f"cannot list {folder}: No such file or directory; trying again every 0.5 s",
                    f"{folder} can be listed again"]


def test_a_missing_images_root_is_said_once_and_its_arrival_too(client_night, tiny_model, tmp_path, caplog):
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, start_time="0000", end_time="0000")
    watcher = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), say=lambda line: None)
    with caplog.at_level(logging.INFO, logger="gualta.realtime"):
        for _ in range(4):
            watcher.tick()
        (root / NIGHT).mkdir(parents=True)
        watcher.tick()
    watcher.outbox.close()
    said = [record.getMessage() for record in caplog.records]
    assert said[:2] == [f"guAlta_main_folder {root} not found: waiting for it", f"guAlta_main_folder {root} found"]
    assert watcher.current is not None and watcher.current.night == NIGHT


def test_an_images_root_that_is_a_night_folder_or_a_file_is_said(client_night, tiny_model, tmp_path, caplog):
    """guAlta_main_folder set to a night folder (or a frame) was waited on in silence: no night folder under it,
    nothing said. It is said once, with the folder to give instead; the batch run says it too."""
    night = copy_night(client_night, tmp_path / "images")
    for root, why in [(night, f"holds frames: it is a night folder; guAlta_main_folder is the folder above it, "
                              f"{night.parent}"), (allsky.list_frames(night)[0], "is a file")]:
        caplog.clear()
        config = settings(tmp_path, tiny_model, main_folder=root, start_time="0000", end_time="0000")
        watcher = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), say=lambda line: None)
        with caplog.at_level(logging.INFO, logger="gualta.realtime"):
            for _ in range(3):
                watcher.tick()
        watcher.outbox.close()
        said = [record.getMessage() for record in caplog.records]
        assert len(said) == 1 and said[0].startswith(f"guAlta_main_folder {root} {why}")
        with pytest.raises(ClientError, match=re.escape(why)):
            run_batch(config, None, None, upload=False, say=lambda line: None, progress=False)
    with pytest.raises(ClientError, match=re.escape(f"{night.parent} holds night folders, not frames: name one (the "
                                                    f"latest is {night}), or leave --folder out")):
        run_batch(config, night.parent, None, upload=False, say=lambda line: None, progress=False)   # the other way


def test_the_wait_for_the_window_runs_as_the_clock_does_on_a_change_of_summer_time(madrid_clock):
    """The time to a local HH:MM (the watcher's wait for its window, napping at most a minute at a time; the
    service's daily page) is the two instants' difference, not the wall clock's, which is an hour off on the nights
    summer time ends or starts: on this machine's clock as on a named zone's."""
    assert seconds_until(datetime(2021, 10, 30, 20, 0), "0900") == 14 * 3600      # 03:00 summer time → 02:00
    assert seconds_until(datetime(2022, 3, 26, 20, 0), "0900") == 12 * 3600       # 02:00 → 03:00 summer time
    assert seconds_until(datetime(2021, 10, 31, 1, 0), "2000") == 20 * 3600
    madrid = datetime(2021, 10, 30, 20, 0, tzinfo=ZoneInfo("Europe/Madrid"))
    assert seconds_until(madrid, "0900") == 14 * 3600 and seconds_until(madrid, "2000") == 25 * 3600


@pytest.mark.parametrize("now, inside", [("19:59", False), ("20:00", True), ("23:59", True), ("00:00", True),
                                         ("03:30", True), ("07:59", True), ("08:00", False), ("12:00", False)])
def test_window_across_midnight(now, inside):
    assert in_window(datetime.strptime(f"20211110 {now}", "%Y%m%d %H:%M"), "2000", "0800") is inside


def test_window_within_a_day_and_always():
    at = lambda hhmm: datetime.strptime(f"20211110 {hhmm}", "%Y%m%d %H%M")     # noqa: E731
    assert in_window(at("0130"), "0100", "0500") and not in_window(at("0600"), "0100", "0500")
    assert all(in_window(at(t), "0000", "0000") for t in ("0000", "1200", "2359"))
    assert seconds_until(at("1959"), "2000") == 60 and seconds_until(at("2001"), "2000") == 86340


@pytest.mark.parametrize("now, night", [("20211111 0759", "20211110"), ("20211111 0800", "20211111"),
                                        ("20211111 1200", "20211111"), ("20211111 2359", "20211111")])
def test_the_first_night_not_ended_is_the_night_of_the_next_window_end(now, night):
    assert first_night_not_ended(datetime.strptime(now, "%Y%m%d %H%M"), "0800") == night


def test_watcher_sleeps_outside_the_window_and_watches_inside(client_night, tiny_model, tmp_path):
    root = tmp_path / "images"
    Writer(client_night, root).write(range(3))
    config = settings(tmp_path, tiny_model, main_folder=root, start_time="2000", end_time="0800")
    with Outbox(config.outbox) as outbox:                              # rows kept from nights a month before
        for night in ("20211010", "20211011"):
            outbox.record_frame(night, {"file": f"image-{night}220000.jpg"})
    clock = {"now": datetime(2021, 11, 10, 12, 0)}
    watcher = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), clock=lambda: clock["now"],
                      say=lambda line: None, settle_s=0.0)
    assert watcher.tick() == 60 and watcher.current is None           # noon before: outside, naps at most a minute
    assert rows_in(config.outbox) == []                              # the night's window has not opened yet
    clock["now"] = datetime(2021, 11, 11, 0, 30)                       # after midnight: inside
    watcher.tick()
    assert watcher.current is not None and watcher.current.night == NIGHT
    with Outbox(config.outbox) as outbox:                              # a night starts: over 30 days before it go
        assert (outbox.night_rows("20211010"), len(outbox.night_rows("20211011"))) == ([], 1)
    wait_for(lambda: watcher.tick() is not None and len(rows_in(config.outbox)) == 3, 10)
    clock["now"] = datetime(2021, 11, 11, 8, 0)                        # window over: the night is closed
    watcher.tick()
    assert watcher.current is None


def test_cli_realtime_stops_cleanly_on_sigterm(client_night, tiny_model, tmp_path):
    root = tmp_path / "images"
    Writer(client_night, root).write(range(4))
    process = subprocess.Popen(
        [sys.executable, str(REPO / "guAlta.py"), "realtime", "--no-upload", "--main-folder", str(root),
         "--model", str(tiny_model), "--outbox", str(tmp_path / "o.sqlite"), "--threads", "1",
         "--start-time", "0000", "--end-time", "0000", "--sleep-between-imgs", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(), cwd=tmp_path)
    try:
        wait_for(lambda: len(rows_in(tmp_path / "o.sqlite")) >= 3 if (tmp_path / "o.sqlite").exists() else False,
                 60)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert f"watching night {root / NIGHT} (model test-1)" in output and output.rstrip().endswith("stopped")
    assert "stopping once the frames being decided are done" in output         # said at once, not only when done


def test_a_second_stop_signal_stops_at_once():
    """Ctrl-C waited, silently, for the frames being decided (half a minute on a Raspberry Pi), and a second one
    did nothing: an operator took the watcher for hung and killed it."""
    stop = threading.Event()
    handler = realtime.stop_on_signal(stop)
    handler(signal.SIGINT, None)
    assert stop.is_set()
    with pytest.raises(KeyboardInterrupt):
        handler(signal.SIGINT, None)


def test_folders_that_cannot_be_listed_are_waited_for(client_night, tiny_model, tmp_path):
    """Permissions the watcher cannot get past — the images root, then tonight's folder — are said once each and
    waited out (a traceback here was a service restarted by systemd every 30 s)."""
    root = tmp_path / "images"
    Writer(client_night, root).write(range(4))
    log_file = tmp_path / "watcher.log"
    said = lambda: log_file.read_text()                                             # noqa: E731
    (root / NIGHT).chmod(0)
    root.chmod(0)
    with log_file.open("w") as output:
        process = subprocess.Popen(as_ordinary_user(
            [sys.executable, str(REPO / "guAlta.py"), "realtime", "--no-upload", "--main-folder", str(root),
             "--model", str(tiny_model), "--outbox", str(tmp_path / "o.sqlite"), "--threads", "1",
             "--start-time", "0000", "--end-time", "0000", "--sleep-between-imgs", "0.1"]),
            stdout=output, stderr=subprocess.STDOUT, text=True, env=child_env(), cwd=tmp_path)
    try:
        wait_for(lambda: "cannot be listed (Permission denied): waiting for it" in said(), 60)
        time.sleep(1.0)
        root.chmod(0o755)
        wait_for(lambda: f"cannot list {root / NIGHT}: Permission denied; trying again" in said(), 60)
        time.sleep(1.0)
        (root / NIGHT).chmod(0o755)
        wait_for(lambda: len(rows_in(tmp_path / "o.sqlite")) >= 3, 60)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    finally:
        root.chmod(0o755)
        (root / NIGHT).chmod(0o755)
        process.kill()
    output = said()
    assert process.returncode == 0 and "Traceback" not in output, output
    assert output.count("cannot be listed (Permission denied)") == 1 and f"{root} found" in output
    assert f"watching night {root / NIGHT}" in output and f"{root / NIGHT} can be listed again" in output
    assert output.count(f"cannot list {root / NIGHT}: Permission denied; trying again") == 1


def test_a_new_night_starts_with_a_newer_published_model(client_night, tmp_path, live):
    """The watcher checks for a newer model when a night starts: the first night is scored with the configured
    model, the next, after the service publishes a newer one, with that one, installed in its place."""
    url, store = live
    root = tmp_path / "images"
    configured = tiny_onnx_model(tmp_path / "models" / "guAlta.onnx", created="2026-01-01T00:00:00+00:00")
    newer = tiny_onnx_model(tmp_path / "newer.onnx", bias=-2.0, version="test-2", created="2026-03-01T00:00:00+00:00")
    original = tmp_path / "original.onnx"
    original.write_bytes(configured.read_bytes())
    config = settings(tmp_path, configured, main_folder=root, url=url, api_key=KEY, sleep_between_imgs=0.05,
                      start_time="0000", end_time="0000", faint_crossing_check=False)     # the model is what counts
    stop = threading.Event()
    lines = []
    thread = threading.Thread(target=run_realtime, args=(config,), kwargs={"stop": stop, "say": lines.append},
                              daemon=True)
    thread.start()
    try:
        first = Writer(client_night, root)
        first.write(range(len(first.frames)))
        wait_for(lambda: len(rows_in(config.outbox)) >= len(first.frames) - 1)     # the last may wait for its next
        publish(store, newer, version=2, created="2026-03-01T00:00:00+00:00")
        second = root / NEXT_NIGHT
        second.mkdir()
        for frame in first.frames:                                      # the same sky, a night later
            (second / frame.name.replace(NIGHT, NEXT_NIGHT, 1)).write_bytes(frame.read_bytes())
        wait_for(lambda: len(rows_in(config.outbox)) == len(first.frames))         # the first night ended
        wait_for(lambda: len(rows_in(config.outbox, NEXT_NIGHT)) >= len(first.frames) - 1)
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive() and configured.read_bytes() == newer.read_bytes()
    assert [line.rpartition(" (")[2] for line in lines if line.startswith("watching night")] == [
        "model test-1)", "model test-2)"]
    for night, model in ((first.folder, original), (second, newer)):
        batch = tmp_path / f"{night.name}.csv"
        run_batch(settings(tmp_path / night.name, model, faint_crossing_check=False), night, batch, upload=False,
                  say=lambda line: None, progress=False)              # as the watcher was set
        watched = rows_in(config.outbox, night.name)      # the second night's last frame waits for its next
        same_rows(watched, read_scores(batch)[:len(watched)])


def ticked(watcher: Watcher, ticks: int = 12) -> None:
    for _ in range(ticks):
        watcher.tick()


def test_an_edited_settings_file_is_said_to_need_a_restart(client_night, tiny_model, tmp_path, caplog):
    """Settings are read at start: a threshold or window edited while the watcher runs was silently never applied.
    The next night's start says so, once an edit."""
    root, settings_file = tmp_path / "images", tmp_path / "guAltaConfig.py"
    settings_file.write_text("guAlta_threshold = 0.85\n")
    config = dataclasses.replace(settings(tmp_path, tiny_model, main_folder=root, start_time="0000", end_time="0000"),
                                 source=str(settings_file))
    watcher = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), say=lambda line: None,
                      settle_s=0.0)
    Writer(client_night, root, spacing_s=0.0).write(range(4))
    caplog.set_level(logging.WARNING)
    ticked(watcher, 4)
    assert "settings file" not in caplog.text
    settings_file.write_text("guAlta_threshold = 0.7\n")
    os.utime(settings_file, (time.time() + 5, time.time() + 5))
    for night in (NEXT_NIGHT, "20211112"):
        Writer(client_night, root, spacing_s=0.0, folder_name=night).write(range(4))
        ticked(watcher, 8)
    assert watcher.current.night == "20211112"
    assert caplog.text.count(f"settings file {settings_file} changed since the watcher read it: restart it") == 1


def test_a_night_folder_dated_ahead_of_tonight_is_not_watched_until_its_night(client_night, tiny_model, tmp_path,
                                                                              caplog):
    """The camera's clock ran a day ahead for one frame: its folder was taken for the next night, tonight's was
    closed with 8 of its frames and the rest never scored in real time (a folder a year ahead stayed 'newest' for
    good)."""
    root, clock = tmp_path / "images", [datetime(2021, 11, 10, 22, 30)]
    config = settings(tmp_path, tiny_model, main_folder=root, start_time="2000", end_time="0700")
    writer = Writer(client_night, root, spacing_s=0.0)
    writer.write(range(8))
    watcher = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), say=lambda line: None,
                      settle_s=0.0, clock=lambda: clock[0], night_recheck_s=0.0)
    ticked(watcher)
    start_next_night(client_night, root)
    writer.write(range(8, len(writer.frames)))
    ticked(watcher)
    assert len(rows_in(config.outbox)) >= len(writer.frames) - 1                  # the last may await its successor
    assert NIGHT not in watcher.outbox.closed_nights() and rows_in(config.outbox, NEXT_NIGHT) == []
    assert f"night folder(s) {NEXT_NIGHT} dated after tonight ({NIGHT}): not watched" in caplog.text
    assert "or this machine's is behind" in caplog.text           # a Pi without a real-time clock, before NTP
    clock[0] = datetime(2021, 11, 11, 20, 0)                                       # its night has come
    ticked(watcher, 3)
    watcher.outbox.close()
    assert len(rows_in(config.outbox)) == len(writer.frames) and len(rows_in(config.outbox, NEXT_NIGHT)) == 1


def renamed_copy(source: Path, folder: Path, when: datetime) -> Path:
    target = folder / f"image-{when:%Y%m%d%H%M%S}.jpg"
    target.write_bytes(source.read_bytes())
    return target


def watching(client_night, tiny_model, tmp_path, first: int) -> tuple:
    """A watcher always inside its window, its night's first frames written: (settings, writer, watcher)."""
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, start_time="0000", end_time="0000")
    writer = Writer(client_night, root, spacing_s=0.0)
    writer.write(range(first))
    watcher = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), say=lambda line: None,
                      settle_s=0.0)
    return config, writer, watcher


def test_after_the_clock_is_set_back_the_first_new_frame_is_not_compared_across_it(client_night, tiny_model,
                                                                                    tmp_path, monkeypatch):
    """The Pi's clock set back 290 s: the frames named before those scored get their late rows, and the first one
    named after them was paired with a frame named 10 s before it but taken 5 minutes earlier (scored 0.99999 and
    reported). The watcher saw it complete minutes after that frame: it is compared with nothing; the next pairs
    with it. (SEEN_GAP_S, 5 minutes, is 0.5 s here.)"""
    monkeypatch.setattr(realtime, "SEEN_GAP_S", 0.5)
    config, writer, watcher = watching(client_night, tiny_model, tmp_path, 10)
    ticked(watcher)
    time.sleep(0.6)
    last = allsky.frame_time(writer.frames[9])
    named = [renamed_copy(writer.frames[10 + k], writer.folder, last + timedelta(seconds=30 * (k + 1) - 290))
             for k in range(11)]                                  # 9 named before frame 9, then 2 after it
    ticked(watcher)
    watcher.outbox.close()
    rows = {row["file"]: row for row in rows_in(config.outbox)}
    assert [rows[frame.name]["note"] for frame in named[:9]] == [realtime.LATE_NOTE] * 9
    first = rows[named[9].name]
    assert (first["flag"], first["score"], first["previous"]) == ("skipped", "", "")
    assert re.fullmatch(r"complete 0 min after the frame before it, though named 10 s after it \(the camera's clock "
                        r"set back\?\): not compared", first["note"])
    assert rows[named[10].name]["previous"] == named[9].name and rows[named[10].name]["score"] != ""


def test_a_copy_tools_next_batch_is_compared_and_a_set_back_by_whole_frames_is_not(client_night, tiny_model,
                                                                                    tmp_path, monkeypatch):
    """Frames a copy tool brings every few minutes arrive long after the last one, in order: compared as usual
    (one frame a batch would be lost). A clock set back by whole frames writes new frames over the last ones
    scored, then names one after them: that one is not compared. (SEEN_GAP_S, 5 minutes, is 0.5 s here.)"""
    monkeypatch.setattr(realtime, "SEEN_GAP_S", 0.5)
    config, writer, watcher = watching(client_night, tiny_model, tmp_path, 6)
    ticked(watcher)
    time.sleep(0.6)
    writer.write([6, 7])                                                        # the next batch
    ticked(watcher)
    time.sleep(0.6)
    frames = writer.frames
    for old, new in ((6, 8), (7, 9)):                                           # named as the last two, over them
        (writer.folder / frames[old].name).write_bytes(frames[new].read_bytes())
    after = renamed_copy(frames[10], writer.folder, allsky.frame_time(frames[7]) + timedelta(seconds=30))
    ticked(watcher)
    watcher.outbox.close()
    rows = {row["file"]: row for row in rows_in(config.outbox)}
    assert rows[frames[6].name]["previous"] == frames[5].name and rows[frames[6].name]["score"] != ""
    assert (rows[after.name]["previous"], rows[after.name]["score"]) == ("", "")
    assert "(the camera's clock set back?): not compared" in rows[after.name]["note"]
    assert detect.skip_word(rows[after.name]["note"]) == "clock set back"           # as the night's summary counts it


def test_one_frame_arriving_late_costs_no_other_frame(client_night, tiny_model, tmp_path):
    """A frame a sync tool brought after its successor gets its late row; the next frame, complete 30 s after the
    last one scored, is compared with it as usual (it was left unscored too)."""
    config, writer, watcher = watching(client_night, tiny_model, tmp_path, 6)
    ticked(watcher)
    late = renamed_copy(writer.frames[6], writer.folder, allsky.frame_time(writer.frames[4]) + timedelta(seconds=10))
    ticked(watcher, 2)
    writer.write([6])
    ticked(watcher)
    watcher.outbox.close()
    rows = {row["file"]: row for row in rows_in(config.outbox)}
    assert rows[late.name]["note"] == realtime.LATE_NOTE
    after = rows[writer.frames[6].name]
    assert after["previous"] == writer.frames[5].name and after["score"] != ""


def test_a_stop_while_a_night_is_being_finished_leaves_the_rest_to_the_next_start(client_night, tiny_model,
                                                                                  tmp_path, monkeypatch):
    """A backlog when the next night begins (or the window ends) was decided to the end before a stop was heard:
    minutes on a Pi, past systemd's stop timeout. It stops between chunks; the next start decides the rest."""
    monkeypatch.setattr(realtime, "CHUNK", 4)
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, start_time="0000", end_time="0000")
    model = load_model(tiny_model, threads=1)
    writer = Writer(client_night, root, spacing_s=0.0)
    writer.write(range(3))
    stop = threading.Event()
    first = Watcher(config, model, stop, say=lambda line: None, settle_s=0.0)
    ticked(first, 4)
    writer.write(range(3, len(writer.frames)))
    start_next_night(client_night, root)
    stop.set()                                                     # systemctl stop, as the next night is taken up
    first.tick()
    first.outbox.close()
    assert len(rows_in(config.outbox)) < len(writer.frames) and NIGHT not in Outbox(config.outbox).closed_nights()
    second = Watcher(config, model, threading.Event(), say=lambda line: None, settle_s=0.0)
    ticked(second, 20)
    second.outbox.close()
    assert len(rows_in(config.outbox)) == len(writer.frames) and NIGHT in Outbox(config.outbox).closed_nights()


def test_frames_copied_in_out_of_order_are_all_scored_in_order(client_night, tiny_model, tmp_path, monkeypatch):
    """A sync tool (Syncthing pulls in random order) brings a backlog's newest frame first: it was handed over at
    once and the 11 before it were left unscored as 'late'. A frame after a gap in the names now waits a
    moment for the gap's frames; the night is scored as a batch run scores it."""
    monkeypatch.setattr(realtime, "REORDER_S", 1.0)
    config, writer, watcher = watching(client_night, tiny_model, tmp_path, 4)
    ticked(watcher, 4)
    for i in [15] + list(range(4, 15)):                     # the newest complete first, the others a moment later
        writer.write([i])
        for _ in range(3 if i == 15 else 1):
            watcher.tick()
            time.sleep(0.05)
    deadline = time.monotonic() + 20
    while len(rows_in(config.outbox)) < 15 and time.monotonic() < deadline:       # the last may await the next
        watcher.tick()
        time.sleep(0.05)
    watcher.outbox.close()
    rows = rows_in(config.outbox)
    assert [row["file"] for row in rows] == [frame.name for frame in writer.frames[:len(rows)]] and len(rows) >= 15
    assert not [row for row in rows if row["note"] == realtime.LATE_NOTE]
    assert all(row["score"] != "" for row in rows[1:])


def stopped_after_four_frames(client_night: Path, tiny_model: Path, tmp_path: Path, refreshes: list):
    """A night's first 4 frames decided by a watcher, stopped since; returns a maker of watchers like it (each model
    refresh noted in `refreshes`: whether the model was in use by a left night), the night's writer and the
    settings."""
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, start_time="0000", end_time="0000")
    model = load_model(tiny_model, threads=1)
    writer = Writer(client_night, root, spacing_s=0.0)
    writer.write(range(4))

    def watcher() -> Watcher:
        return Watcher(config, model, threading.Event(), say=lambda line: None, settle_s=0.0,
                       refresh=lambda current, in_use: refreshes.append(in_use) or current)

    first = watcher()
    ticked(first, 4)
    first.outbox.close()
    return watcher, writer, config


def test_a_refresh_while_a_left_night_is_decided_keeps_that_night_s_model_in_use(client_night, tiny_model, tmp_path):
    """A refresh lets the old model's session go, unless a night left over is still being decided with it (its
    watch would then score with no session): the refresh is told so."""
    in_use = []
    watcher, writer, config = stopped_after_four_frames(client_night, tiny_model, tmp_path, in_use)
    writer.write(range(4, CLIENT_FRAMES))                               # the camera went on; the watcher was off
    start_next_night(client_night, config.main_folder)
    second = watcher()
    ticked(second, 3)                           # tonight's frame first, then the left night, 16 frames a tick
    assert second.catching_up is not None and second.catching_up.night == client_night.name
    (config.main_folder / "20211112").mkdir()                           # the next night begins meanwhile
    (config.main_folder / "20211112" / "image-20211112200000.jpg").write_bytes(writer.frames[0].read_bytes())
    ticked(second, 1)
    second.outbox.close()
    assert second.current.night == "20211112" and in_use == [False, False, True]


def test_a_watcher_restarted_mid_night_keeps_one_model_for_the_night(client_night, tiny_model, tmp_path):
    """A restart mid-night installed a newer publication and scored the rest of the night with it, the night's
    summary and CSV naming neither: a model update waits for a night the watcher has not decided frames of."""
    refreshed = []
    watcher, _, config = stopped_after_four_frames(client_night, tiny_model, tmp_path, refreshed)
    assert len(refreshed) == 1 and rows_in(config.outbox)
    second = watcher()                                                  # restarted mid-night
    ticked(second, 4)
    assert len(refreshed) == 1
    start_next_night(client_night, config.main_folder)
    ticked(second, 2)
    second.outbox.close()
    assert len(refreshed) == 2                                          # the next night's start


def test_a_restart_goes_on_with_the_two_frames_the_decider_had_and_their_own_pairs(client_night, tiny_model,
                                                                                      tmp_path):
    """After a restart the decider had the last scored frame only (a satellite that clouds hid in the previous frame
    was no longer flagged by the frame two back, as a batch run flags it), and that frame paired with a frame ignored
    as late, named between it and its predecessor, rather than with the predecessor it was scored against."""
    config, writer, watcher = watching(client_night, tiny_model, tmp_path, 8)
    ticked(watcher)
    scored = [row for row in rows_in(config.outbox) if row["score"] != ""]
    last, before_last = scored[-1], scored[-2]
    late = renamed_copy(writer.frames[0], writer.folder, allsky.frame_time(writer.folder / last["file"])
                        - timedelta(seconds=10))
    ticked(watcher, 2)
    watcher.outbox.close()
    assert {row["file"]: row for row in rows_in(config.outbox)}[late.name]["note"] == realtime.LATE_NOTE
    restarted = realtime.NightWatch(writer.folder, config, load_model(tiny_model, threads=1), Outbox(config.outbox),
                                    False, lambda line: None)
    decider = restarted.decider
    assert (decider.before.file.name, decider.before.previous.name) == (last["file"], last["previous"])
    assert decider.earlier is not None and decider.earlier.file.name == before_last["file"]


def test_a_night_taken_up_again_after_a_crash_at_its_close_sends_its_new_end_log(client_night, tiny_model,
                                                                                   tmp_path, monkeypatch):
    """A crash (a power cut) after a night's end log was queued but before the night was recorded closed: the next
    start takes the night up again and decides the frames the camera wrote since, and its end log must count them
    — the stale end log queued first, with the smaller total, must not be the one kept and sent."""
    config = settings(tmp_path, tiny_model, main_folder=tmp_path / "images", streak_check=False)
    model, writer = load_model(tiny_model, threads=1), Writer(client_night, tmp_path / "images", spacing_s=0.0)

    def night_closed() -> int:
        """A watch of the night as its frames are now, closed: the totals of the end logs queued."""
        with Outbox(config.outbox) as outbox:
            watch = realtime.NightWatch(writer.folder, config, model, outbox, True, lambda line: None)
            watch.step(force=True)
            watch.close()
            logs = [json.loads(item.body) for item in outbox.due()]
            return [body["total"] for body in logs if body.get("log") == "end"]

    def power_cut(outbox, night):
        raise SystemExit("power cut")

    writer.write(range(4))
    with monkeypatch.context() as crash:
        crash.setattr(Outbox, "close_night", power_cut)
        with pytest.raises(SystemExit):
            night_closed()
    writer.write(range(4, 8))                                            # the camera went on
    assert night_closed() == [7]


@pytest.mark.parametrize("bad_first", [False, True])
def test_a_restart_after_daylight_frames_compares_the_first_night_frame_with_none(client_night, tiny_model,
                                                                                   tmp_path, madrid_clock, bad_first):
    """Restarted at dusk, the watcher compared the first frame taken after daylight with the last daylight frame
    (scored against the bright sky and reported); a batch run, and a watcher running on, compares it with none — the
    first good one when the first was bad (a black exposure)."""
    root = tmp_path / "images"
    config = settings(tmp_path, tiny_model, main_folder=root, start_time="0000", end_time="0000", latitude=0.0,
                      longitude=-43.5)                                    # frames 0–6 taken in daylight here
    writer = Writer(client_night, root, spacing_s=0.0)
    writer.write(range(7))
    if bad_first:
        black = cv2.imread(str(client_night / writer.frames[7].name)) * 0
        cv2.imwrite(str(writer.folder / writer.frames[7].name), black)
    first = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), say=lambda line: None,
                    settle_s=0.0)
    ticked(first)
    first.outbox.close()
    notes = [row["note"] for row in rows_in(config.outbox)]
    assert [note.startswith("daytime: ") for note in notes[:7]] == [True] * 7
    assert notes[7:] == (["bad frame: blank: no picture (a black or uniform image)"] if bad_first else [])
    writer.write(range(8 if bad_first else 7, 10))
    second = Watcher(config, load_model(tiny_model, threads=1), threading.Event(), say=lambda line: None,
                     settle_s=0.0)
    ticked(second)
    second.outbox.close()
    after_daylight = rows_in(config.outbox)[8 if bad_first else 7]
    assert (after_daylight["score"], after_daylight["previous"], after_daylight["note"]) == \
        ("", "", "first frame after daylight: no predecessor")
