"""The AllSky folder layout: ROOT/YYYYMMDD/image-YYYYMMDDHHMMSS.jpg, one folder per night (the evening's date)."""
from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gualta import allsky, cli, site
from gualta.allsky import (FramePair, frame_id, frame_name, frame_pairs, frame_time, latest_night_by, list_frames,
                           night_folders, night_of)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8fake\xff\xd9")
    return path


# --- names ↔ timestamps ----------------------------------------------------------------------------------------

def test_frame_time_parses_name():
    assert frame_time("image-20210812233015.jpg") == datetime(2021, 8, 12, 23, 30, 15)
    assert frame_time(Path("/data/allsky/20210812/image-20210813020000.jpg")) == datetime(2021, 8, 13, 2, 0, 0)


@pytest.mark.parametrize("name", [
    "image-2021.jpg",                    # too short
    "foo.jpg",
    "image-20211310250000.jpg",          # month 13, hour 25: not a date
    "image-20210230120000.jpg",          # 30 February
    "image-202108122330150.jpg",         # 15 digits
    "image-20210812233015.jpeg",
    "image-20210812233015.jpg.txt",
    "thumb-image-20210812233015.jpg",
    "image-20210812233015-thumb.jpg",
    "keogram-20210812.jpg",
    "image-2021081223301a.jpg",
    "",
])
def test_frame_time_none_for_non_frames(name):
    assert frame_time(name) is None


def test_frame_id():
    assert frame_id("image-20210812233015.jpg") == "20210812233015"
    assert frame_id(Path("x/20210812/image-20210813020000.jpg")) == "20210813020000"


@pytest.mark.parametrize("name", ["foo.jpg", "image-20211310250000.jpg"])
def test_frame_id_rejects_non_frames(name):
    with pytest.raises(ValueError, match="not an AllSky frame name"):
        frame_id(name)


def test_frame_name_round_trip():
    stamp = datetime(2021, 1, 2, 3, 4, 5)
    name = frame_name(stamp)
    assert name == "image-20210102030405.jpg"
    assert frame_time(name) == stamp
    assert frame_id(name) == "20210102030405"
    assert frame_name(frame_time("image-20211231235959.jpg")) == "image-20211231235959.jpg"


@pytest.mark.parametrize("stamp, night", [
    (datetime(2021, 8, 13, 2, 0), "20210812"),     # after midnight → the previous evening's folder
    (datetime(2021, 8, 13, 21, 0), "20210813"),    # evening → same day
    (datetime(2021, 8, 13, 0, 0), "20210812"),
    (datetime(2021, 8, 13, 11, 59, 59), "20210812"),
    (datetime(2021, 8, 13, 12, 0), "20210813"),    # noon starts the new night's day
    (datetime(2022, 1, 1, 3, 0), "20211231"),      # across a year boundary
    (datetime(2021, 3, 1, 5, 0), "20210228"),      # across a month boundary
])
def test_night_of(stamp, night):
    assert night_of(stamp) == night


# --- night folders ---------------------------------------------------------------------------------------------

def test_night_folders_ignores_non_dates_and_files_and_sorts(tmp_path):
    for name in ["20210813", "20210101", "20210812", "20211231"]:
        (tmp_path / name).mkdir()
    for name in ["thumbnails", "keograms", "2021081", "202108120", "20211340", "2021081x"]:
        (tmp_path / name).mkdir()
    (tmp_path / "20220101").write_text("a file, not a folder")
    (tmp_path / "notes.txt").write_text("x")
    nights = night_folders(tmp_path)
    assert [p.name for p in nights] == ["20210101", "20210812", "20210813", "20211231"]
    assert all(p.parent == tmp_path for p in nights)
    assert night_folders(str(tmp_path)) == nights


@pytest.mark.parametrize("name, night", [("20211105", True), ("19991231", True), ("2021011", False),
                                         ("202111", False), ("0021105", False), ("20210230", False),
                                         ("2021-01-01", False), (" 20210101", False), ("２０２１０１０１", False),
                                         ("٢٠٢١١١٠٥", False)])
def test_a_night_name_is_judged_alike_everywhere(tmp_path, name, night):
    """dataPreparation's --date and --test-nights took 2021011 or 202111 (strptime reads them as 2021-01-01), names
    no night folder nor page is ever given."""
    (tmp_path / name).mkdir()
    assert allsky.is_night_folder(tmp_path / name) is night
    for check, refusal in ((site.check_night, ValueError), (cli.night_date, argparse.ArgumentTypeError)):
        if night:
            assert check(name) == name
        else:
            with pytest.raises(refusal):
                check(name)


@pytest.mark.parametrize("value", [20260916, b"20260916", bytearray(b"20260916"), 20260916.0])
def test_a_night_that_is_not_a_string_is_refused_plainly(tmp_path, value):
    """A page asked for with `{"day": 20260916}` (a number, as JSON allows) must be refused as not a night, never
    fail in a TypeError traceback nor build a page."""
    assert allsky.is_night_name(value) is False
    with pytest.raises(ValueError, match=r"not a night \(a real date YYYYMMDD\)"):
        site.handle({"day": value}, {"GUALTA_STORE": str(tmp_path)})
    assert not list(tmp_path.glob("*2026*"))


def test_latest_night_is_greatest_date_not_after_tonight(tmp_path):
    # created out of order; the 2020 December folder must not win over a 2021 January one
    for name in ["20210105", "20201231", "20210104", "20210301"]:
        (tmp_path / name).mkdir()
    (tmp_path / "99999999").mkdir()          # not a real date: ignored
    (tmp_path / "zzz").mkdir()
    assert latest_night_by(tmp_path, "20210228") == (tmp_path / "20210105", ["20210301"])
    assert latest_night_by(tmp_path, "20210301") == (tmp_path / "20210301", [])


def test_latest_night_none_on_empty_or_missing_root(tmp_path):
    assert latest_night_by(tmp_path, "20210105") == (None, [])
    assert latest_night_by(tmp_path / "does-not-exist", "20210105") == (None, [])
    assert night_folders(tmp_path / "does-not-exist") == []
    (tmp_path / "thumbnails").mkdir()
    (tmp_path / "20210106").mkdir()
    assert latest_night_by(tmp_path, "20210105") == (None, ["20210106"])


# --- frames of a night -----------------------------------------------------------------------------------------

def test_list_frames_time_order_ignores_other_files(tmp_path):
    night = tmp_path / "20210812"
    names = ["image-20210812233100.jpg", "image-20210812233000.jpg", "image-20210812233030.jpg"]
    for name in names:
        touch(night / name)
    touch(night / "thumbnails" / "image-20210812232930.jpg")       # a thumbnail in a subfolder
    touch(night / "keogram-20210812.jpg")
    touch(night / "startrails-20210812.jpg")
    (night / "image-20210812233000.txt").write_text("exposure info")
    (night / "image-20210812233130.jpg.tmp").write_text("being written")
    (night / "image-20210812233200.jpg").mkdir()                   # a directory with a frame's name
    frames = list_frames(night)
    assert [p.name for p in frames] == sorted(names)
    assert all(p.parent == night for p in frames)


def test_list_frames_empty_and_missing(tmp_path):
    assert list_frames(tmp_path) == []
    assert list_frames(tmp_path / "20210812") == []


def test_midnight_crossing_night_is_ordered_by_time(tmp_path):
    night = tmp_path / "20211231"
    stamps = [datetime(2021, 12, 31, 23, 59, 0) + timedelta(seconds=30 * i) for i in range(6)]
    # create in an order where the hour string would sort the early-morning frames first
    for stamp in sorted(stamps, key=lambda s: s.strftime("%H%M%S")):
        touch(night / frame_name(stamp))
    frames = list_frames(night)
    assert [frame_time(p) for p in frames] == stamps
    assert frames[0].name == "image-20211231235900.jpg"
    assert frames[-1].name == "image-20220101000130.jpg"
    pairs = frame_pairs(frames)
    assert [p.gap_s for p in pairs] == [30.0] * 5
    crossing = pairs[1]
    assert (crossing.previous.name, crossing.current.name) == ("image-20211231235930.jpg",
                                                               "image-20220101000000.jpg")


# --- consecutive pairs -----------------------------------------------------------------------------------------

T0 = datetime(2021, 8, 12, 23, 0, 0)


def frames_at(root: Path, offsets_s: list[int]) -> list[Path]:
    return [touch(root / "20210812" / frame_name(T0 + timedelta(seconds=s))) for s in offsets_s]


def test_frame_pairs_pairs_each_frame_with_its_predecessor(tmp_path):
    frames = frames_at(tmp_path, [0, 30, 60, 90])
    pairs = frame_pairs(frames)
    assert len(pairs) == 3
    assert [(p.previous, p.current) for p in pairs] == list(zip(frames, frames[1:]))
    assert all(p.gap_s == 30 for p in pairs)
    assert not any(p.long_gap for p in pairs)
    assert all(isinstance(p, FramePair) for p in pairs)


def test_first_frame_has_no_pair(tmp_path):
    frames = frames_at(tmp_path, [0, 30, 60])
    pairs = frame_pairs(frames)
    assert frames[0] not in [p.current for p in pairs]
    assert [p.current for p in pairs] == frames[1:]
    assert frame_pairs(frames[:1]) == []
    assert frame_pairs([]) == []


def test_frame_pairs_tolerates_gaps(tmp_path):
    # 90 s missing; then exactly 300 s (not long); then 301 s (long)
    offsets = [0, 30, 60, 120, 420, 721]
    frames = frames_at(tmp_path, offsets)
    pairs = frame_pairs(frames)
    assert [p.current for p in pairs] == frames[1:]
    assert [p.previous for p in pairs] == frames[:-1]
    assert [p.gap_s for p in pairs] == [30, 30, 60, 300, 301]
    assert [p.long_gap for p in pairs] == [False, False, False, False, True]
    missing = pairs[2]
    assert missing.previous.name == "image-20210812230100.jpg"    # the last existing frame, 60 s earlier
    assert missing.current.name == "image-20210812230200.jpg"
    assert allsky.LONG_GAP_S == 300


def test_frame_pairs_sorts_its_input(tmp_path):
    frames = frames_at(tmp_path, [0, 30, 60])
    pairs = frame_pairs([frames[2], frames[0], frames[1]])
    assert [(p.previous, p.current) for p in pairs] == [(frames[0], frames[1]), (frames[1], frames[2])]
    assert all(p.gap_s > 0 for p in pairs)


def test_list_frames_then_pairs_with_a_missing_file(tmp_path):
    night = tmp_path / "20210812"
    frames_at(tmp_path, [0, 30, 90, 120])                      # the 60 s frame never arrived
    pairs = frame_pairs(list_frames(night))
    assert [(p.previous.name[-10:-4], p.current.name[-10:-4]) for p in pairs] == [
        ("230000", "230030"), ("230030", "230130"), ("230130", "230200")]
    assert [p.gap_s for p in pairs] == [30, 60, 30]


@pytest.mark.parametrize("when, latitude, longitude, altitude", [
    (datetime(2021, 6, 21, 14, 14, tzinfo=ZoneInfo("Europe/Madrid")), 40.42, -3.70, 73.0),    # noon, summer
    (datetime(2021, 6, 21, 21, 48, tzinfo=ZoneInfo("Europe/Madrid")), 40.42, -3.70, -0.83),   # sunset
    (datetime(2021, 12, 21, 5, 41, tzinfo=ZoneInfo("Australia/Sydney")), -33.87, 151.21, -0.83),  # sunrise
    (datetime(2021, 12, 21, 10, 42, tzinfo=timezone.utc), 69.65, 18.96, -3.1),   # polar night: noon, 90 − 69.65 − 23.44
])
def test_the_suns_altitude_matches_the_almanac(when, latitude, longitude, altitude):
    """Sunrise and sunset are the sun's centre 0.83° below the horizon (refraction and its radius)."""
    assert allsky.sun_altitude(when, latitude, longitude) == pytest.approx(altitude, abs=0.4)



# --- the command lines' argparse types (gualta.cli) ------------------------------------------------------------

RATES_KNOWN = "choose from fireball, insect, meteor, plane, satellite"


@pytest.mark.parametrize("parse, text, value", [
    (cli.port, "65535", 65535), (cli.port, "0", 0), (cli.clock_time, "23:59", "23:59"),
    (cli.night_list, "20211110, 20211112,", ["20211110", "20211112"]), (cli.unit_interval, "0", 0.0),
    (cli.unit_interval, "1", 1.0), (cli.positive_number, "1e-9", 1e-9), (cli.non_negative_number, "0", 0.0),
    (cli.finite_number, "1e308", 1e308)])
def test_each_option_type_reads_its_edges(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize("parse, text, message", [
    (cli.port, "65536", "not a port (0–65535): 65536"), (cli.port, "-1", "not a port (0–65535): -1"),
    (cli.positive_int, "²", "not a whole number: ²"), (cli.frame_count, "0", "not a number of frames (1 or more): 0"),
    (cli.clock_time, "24:00", "not an HH:MM time: 24:00"), (cli.clock_time, "12:60", "not an HH:MM time: 12:60"),
    (cli.clock_time, "2000", "not an HH:MM time: 2000"), (cli.clock_time, "", "not an HH:MM time: "),
    (cli.event_rates, "meteor=-0.1", "rate must be from 0 to 10 (events a frame): meteor=-0.1"),
    (cli.event_rates, "meteor=nan", "rate must be from 0 to 10 (events a frame): meteor=nan"),
    (cli.event_rates, "meteor=11", "rate must be from 0 to 10 (events a frame): meteor=11"),
    (cli.event_rates, "meteor=", "not a rate: meteor="),
    (cli.event_rates, "comet=0.1", f"unknown event 'comet'; {RATES_KNOWN}"),
    (cli.event_rates, "meteor 0.1", f"unknown event 'meteor 0.1'; {RATES_KNOWN}"),
    (cli.night_list, "20211110,2021111", "not a YYYYMMDD date: 2021111"),
    (cli.unit_interval, "85", "must be from 0 to 1 (a score, such as 0.85): 85"),
    (cli.unit_interval, "-0.01", "must be from 0 to 1 (a score, such as 0.85): -0.01"),
    (cli.unit_interval, "nan", "not a finite number: nan"), (cli.positive_number, "0", "must be more than 0: 0"),
    (cli.positive_number, "-inf", "not a finite number: -inf"),
    (cli.non_negative_number, "-0.5", "must be 0 or more: -0.5"),
    (cli.finite_number, "1e309", "not a finite number: 1e309"), (cli.finite_number, "0x10", "not a number: 0x10")])
def test_each_option_type_says_why_it_refuses(parse, text, message):
    """Only a few integers' refusals were tested: a change to a range or a wording went unnoticed."""
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{re.escape(message)}$"):
        parse(text)


@pytest.mark.parametrize("text", ["", " , "])
def test_a_list_of_nights_naming_none_is_refused(text):
    """`prepare --test-nights "$TEST_NIGHTS"` with the variable unset named no night: the dataset was split at
    random (--test-fraction's default) without a word."""
    with pytest.raises(argparse.ArgumentTypeError, match=f"^no YYYYMMDD date named: {re.escape(text)}$"):
        cli.night_list(text)
