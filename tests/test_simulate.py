"""The night simulator: AllSky layout, reproducibility, sky geometry, exact ground truth and the look of the frames.

Single frames are rendered in memory with `NightRenderer(plan).render(i)`; only a few small nights are written to
disk. Events are planted by hand (a plan drawn with no random events, then a known `Event` appended) so their
geometry and brightness are known exactly. A frame's random streams depend only on (seed, frame index), so the same
frame rendered with and without a planted event differs only by the event's light (and its own shot noise): that
isolates an event from the sky, the stars and the sensor noise when a test needs its shape.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from gualta import allsky, preprocess
from gualta import simulate as sim
from gualta.simulate import (GT_COLUMNS, HEIGHT, MIN_VISIBLE_SNR, MOONLIT, SCENARIOS, SIDEREAL_DEG_PER_S, WIDTH, Event,
                             NightExists, NightRenderer, Rates, equatorial_to_horizontal, horizontal_to_equatorial,
                             plan_night, simulate_night, simulate_nights)

NO_EVENTS = Rates(0, 0, 0, 0, 0)
BUSY = Rates(meteor=0.25, fireball=0.03, satellite=0.08, plane=0.04, insect=0.08)
EVENING = datetime(2021, 11, 5, 22, 0)
FRAME_DEG = SIDEREAL_DEG_PER_S * allsky.FRAME_INTERVAL_S          # 0.1253° of sky rotation per frame


# ---------------------------------------------------------------------------------------------------- helpers

def quiet_plan(seed: int, frames: int = 12, start: datetime = EVENING, scenario: str = "clear") -> sim.NightPlan:
    """A planned night with no random events, no clouds and no moon: a clean stage for planted events."""
    plan = plan_night(seed, start, frames, scenario, rates=NO_EVENTS)
    plan.cloud_schedule[:] = 0
    plan.moon["phase"] = 0.0
    return plan


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as the camera does (the only form of a frame the detector ever sees)."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def watermark_box(plan: sim.NightPlan) -> tuple[slice, slice]:
    """The top-left region holding the four watermark lines (generous)."""
    step = int(28 * plan.camera.watermark_scale / 0.7)
    return slice(0, 26 + 4 * step), slice(0, 520)


def open_sky(renderer: NightRenderer) -> np.ndarray:
    """Pixels of open sky (above the skyline, inside the lens circle), watermark excluded."""
    mask = renderer.sky_mask > 0.99
    mask[watermark_box(renderer.plan)] = False
    return mask


def distance_to_segment(p0, p1) -> np.ndarray:
    """Distance (pixels) of every pixel centre to the segment p0–p1."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    d = p1 - p0
    t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / float(d @ d), 0, 1)
    return np.hypot(xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1]))


def segment(row) -> tuple[np.ndarray, np.ndarray]:
    return np.array([row["x1"], row["y1"]], float), np.array([row["x2"], row["y2"]], float)


def profile_along(image: np.ndarray, p0, p1, step: float = 0.25) -> np.ndarray:
    """Bilinear samples of a single-channel float image along the segment p0–p1."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    length = float(np.hypot(*(p1 - p0)))
    s = np.arange(0, length, step)
    points = (p0[None] + s[:, None] * (p1 - p0)[None] / length).astype(np.float32)
    return cv2.remap(image.astype(np.float32), points[:, 0][None], points[:, 1][None], cv2.INTER_LINEAR)[0]


def separate_spots(profile: np.ndarray, half_window: int = 4, dip: float = 0.6) -> int:
    """How many distinct bright spots a brightness profile has: local maxima above half the peak, each separated
    from the previous one by a trough below `dip` × the smaller of the two."""
    peaks = [i for i in range(half_window, len(profile) - half_window)
             if profile[i] == profile[i - half_window:i + half_window + 1].max() and profile[i] > 0.5 * profile.max()]
    count, last = 0, None
    for i in peaks:
        if last is None or profile[last:i + 1].min() < dip * min(profile[last], profile[i]):
            count += 1
            last = i
        elif profile[i] > profile[last]:
            last = i
    return count


# ---------------------------------------------------------------------------------------------------- written nights

@pytest.fixture(scope="module")
def generated_night(tmp_path_factory) -> Path:
    """40 frames of a night with raised event rates, written by two worker processes."""
    root = tmp_path_factory.mktemp("nights")
    folders = simulate_nights(root, nights=1, frames=40, start="21:30", seed=1, workers=2, rates=BUSY)
    assert len(folders) == 1
    return folders[0]


def test_nights_written_whole_are_kept_when_asked_and_others_still_refused(tmp_path):
    """The training notebook, run again after it was cut short between simulating and building its dataset, stopped
    on the nights it had written itself (NightExists)."""
    first = simulate_nights(tmp_path, nights=2, frames=3, start="21:00", seed=8, workers=1)
    written = {path: path.stat().st_mtime_ns for path in first[0].iterdir()}
    (first[1] / "night.json").unlink()                                   # the second one cut short
    with pytest.raises(NightExists, match="GUALTA_NB_NIGHTS"):          # the way out a notebook's reader takes
        simulate_nights(tmp_path, nights=2, frames=3, start="21:00", seed=8, workers=1)
    with pytest.raises(NightExists):                                     # another request's nights: never reused
        simulate_nights(tmp_path, nights=1, frames=4, start="21:00", seed=8, workers=1, keep_whole=True)
    shutil.rmtree(first[1])
    again = simulate_nights(tmp_path, nights=2, frames=3, start="21:00", seed=8, workers=1, keep_whole=True)
    assert again == first and {path: path.stat().st_mtime_ns for path in first[0].iterdir()} == written
    assert len(pd.read_csv(again[1] / "ground_truth.csv")) == 3


@pytest.fixture(scope="module")
def small_nights(tmp_path_factory) -> dict[str, Path]:
    """Three 6-frame nights across midnight: seed 3 twice (1 and 2 workers) and seed 4."""
    root = tmp_path_factory.mktemp("small")
    common = dict(night_date="20211105", frames=6, start="23:58", scenario="mixed", rates=BUSY, progress=False)
    return {"a": simulate_night(root / "a", seed=3, workers=1, **common),
            "again": simulate_night(root / "again", seed=3, workers=2, **common),
            "other": simulate_night(root / "other", seed=4, workers=1, **common)}


def test_night_is_written_in_allsky_layout(generated_night):
    folder = generated_night
    evening = sim.default_first_date(1)
    assert folder.name == evening.strftime("%Y%m%d")
    assert allsky.is_night_folder(folder)

    frames = allsky.list_frames(folder)
    assert len(frames) == 40
    assert sorted(p.name for p in folder.iterdir()) == sorted([p.name for p in frames] + ["ground_truth.csv",
                                                                                          "night.json"])
    times = [allsky.frame_time(p) for p in frames]
    assert times[0] == evening.replace(hour=21, minute=30)                      # the start time is honoured
    assert {(b - a).total_seconds() for a, b in zip(times, times[1:])} == {30.0}
    assert all(allsky.night_of(t) == folder.name for t in times)
    assert [pair.gap_s for pair in allsky.frame_pairs(frames)] == [30.0] * 39

    for path in frames[::13]:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert path.read_bytes()[:2] == b"\xff\xd8"
        assert image.shape == (976, 1304, 3) and image.dtype == np.uint8
        # a colour frame, not gray stored as three equal channels
        assert np.mean(image[..., 0].astype(int) != image[..., 2].astype(int)) > 0.05

    truth = pd.read_csv(folder / "ground_truth.csv", keep_default_na=False)
    assert list(truth.columns) == GT_COLUMNS
    assert truth["file"].tolist() == [p.name for p in frames]
    assert [datetime.fromisoformat(t) for t in truth["time"]] == times

    summary = json.loads((folder / "night.json").read_text())
    assert summary["seed"] == 1 and summary["frames"] == 40 and summary["interval_s"] == 30
    assert datetime.fromisoformat(summary["start"]) == times[0]
    assert summary["scenario"] in SCENARIOS and summary["scenario"] != "mixed"
    assert summary["scenario_requested"] == "mixed" and summary["rates"] == asdict(BUSY)   # what to ask for again
    assert set(truth["scenario"]) == {summary["scenario"]}
    assert sum(summary["frames_by_event"].values()) == 40
    assert summary["frames_by_event"] == truth["event"].value_counts().to_dict()
    assert summary["meteor_frames"] == int((truth["label"] == "meteor").sum())


def test_ground_truth_rows_are_consistent(generated_night):
    truth = pd.read_csv(generated_night / "ground_truth.csv", keep_default_na=False, na_values=[""])
    events = set(truth["event"])
    assert "meteor" in events and events & {"satellite", "plane", "insect"}, "this seed should show several kinds"
    assert events <= {"none", "meteor", "fireball", "satellite", "plane", "insect"}   # hidden-meteor is never main
    assert set(truth["label"]) == {"meteor", "no-meteor"}
    assert ((truth["label"] == "meteor") == truth["event"].isin(["meteor", "fireball"])).all()

    with_event = truth[truth["event"] != "none"]
    without = truth[truth["event"] == "none"]
    geometry = ["x1", "y1", "x2", "y2", "length_px", "width_px", "peak_dn", "peak_snr"]
    assert with_event[geometry].notna().all().all()
    assert without[geometry].isna().all().all()
    assert (with_event["length_px"] > 0).all()
    assert (truth.loc[truth["label"] == "meteor", "peak_snr"] >= MIN_VISIBLE_SNR).all()
    # the main event is the most important one listed, and is listed
    priority = sim.EVENT_PRIORITY
    for _, row in with_event.iterrows():
        listed = row["events"].split(";")
        assert row["event"] in listed
        assert all(priority.index(row["event"]) <= priority.index(k) for k in listed if k in priority)
    for listed in without["events"].fillna(""):
        assert set(filter(None, listed.split(";"))) <= {"hidden-meteor"}
    assert truth["clouds"].between(0, 1).all()
    assert (truth["noise_dn"] > 0.5).all() and (truth["noise_dn"] < 15).all()
    assert (truth["exposure_s"] > 0).all() and (truth["exposure_s"] <= 30).all()


def test_frames_cross_midnight_in_the_evening_folder(small_nights):
    folder = small_nights["a"]
    assert folder.name == "20211105"
    names = [p.name for p in allsky.list_frames(folder)]
    assert names == ["image-20211105235800.jpg", "image-20211105235830.jpg", "image-20211105235900.jpg",
                     "image-20211105235930.jpg", "image-20211106000000.jpg", "image-20211106000030.jpg"]


def test_same_seed_gives_identical_nights_whatever_the_workers(small_nights):
    a, again = small_nights["a"], small_nights["again"]
    names = [p.name for p in allsky.list_frames(a)]
    assert names == [p.name for p in allsky.list_frames(again)]
    for name in names:
        assert (a / name).read_bytes() == (again / name).read_bytes(), name
    assert (a / "ground_truth.csv").read_text() == (again / "ground_truth.csv").read_text()
    assert (a / "night.json").read_text() == (again / "night.json").read_text()


def test_a_different_seed_gives_a_different_night(small_nights):
    a, other = small_nights["a"], small_nights["other"]
    for name in [p.name for p in allsky.list_frames(a)]:
        first = cv2.imread(str(a / name)).astype(np.int16)
        second = cv2.imread(str(other / name)).astype(np.int16)
        assert np.abs(first - second).mean() > 2.0, name
    assert json.loads((a / "night.json").read_text())["camera"] != json.loads((other / "night.json").read_text())[
        "camera"]


def test_plans_and_frames_are_reproducible_in_memory():
    one, two = plan_night(11, EVENING, 30, "mixed"), plan_night(11, EVENING, 30, "mixed")
    assert one.scenario == two.scenario and one.latitude == two.latitude
    np.testing.assert_array_equal(one.stars, two.stars)
    assert [(e.kind, e.frames, e.start.tolist()) for e in one.events] == [(e.kind, e.frames, e.start.tolist())
                                                                         for e in two.events]
    image_one, row_one = NightRenderer(one).render(7)
    image_two, row_two = NightRenderer(two).render(7)
    np.testing.assert_array_equal(image_one, image_two)
    assert row_one == row_two


def test_a_night_ends_at_eight_or_at_noon_and_never_runs_into_the_next_nights_folder():
    assert sim.night_frames(datetime(2021, 11, 10, 20, 0)) == 1440                      # 20:00 → 08:00
    assert sim.night_frames(datetime(2021, 11, 11, 1, 0)) == 840                        # 01:00 → 08:00
    assert sim.night_frames(datetime(2021, 11, 11, 8, 30)) == 420                       # a morning start: to noon
    sim.check_length(datetime(2021, 11, 11, 11, 59), 2)
    with pytest.raises(sim.SimulateError, match="3 frames from 2021-11-11 11:59 run past noon .*: at most 2"):
        sim.check_length(datetime(2021, 11, 11, 11, 59), 3)
    sim.check_length(datetime(2021, 11, 10, 12, 0), 2880)            # a whole day from noon, and no more
    with pytest.raises(sim.SimulateError, match="at most 2880"):
        sim.check_length(datetime(2021, 11, 10, 12, 0), 2881)


def test_a_start_after_midnight_belongs_to_the_given_night(tmp_path):
    folder = simulate_night(tmp_path, "20211105", frames=2, start="00:30", seed=3, rates=NO_EVENTS, workers=1,
                            progress=False)
    assert folder.name == "20211105"
    assert [p.name for p in allsky.list_frames(folder)] == ["image-20211106003000.jpg", "image-20211106003030.jpg"]


# ---------------------------------------------------------------------------------------------------- sky geometry

def test_fisheye_round_trip_and_horizon():
    lens = sim.Fisheye(cx=650.0, cy=490.0, radius=450.0, rotation=37.0, mirrored=True)
    alt = np.array([90.0, 60.0, 30.0, 5.0, 0.0])
    az = np.array([0.0, 45.0, 200.0, 300.0, 123.0])
    x, y = lens.project(alt, az)
    back_alt, back_az = lens.unproject(x, y)
    np.testing.assert_allclose(back_alt, alt, atol=1e-6)
    np.testing.assert_allclose(back_az[1:], az[1:], atol=1e-6)       # the zenith has no azimuth
    assert (x[0], y[0]) == (650.0, 490.0)
    assert math.hypot(x[-1] - 650, y[-1] - 490) == pytest.approx(450.0)
    # mirrored: 90° of azimuth (east) is 90° clockwise from north as seen on screen when not mirrored,
    # counter-clockwise when mirrored (looking up at the sky)
    plain = sim.Fisheye(cx=0.0, cy=0.0, radius=90.0, rotation=0.0, mirrored=False)
    looking_up = sim.Fisheye(cx=0.0, cy=0.0, radius=90.0, rotation=0.0, mirrored=True)
    assert np.allclose(plain.project(0.0, 0.0), (0.0, -90.0))              # north is up
    assert np.allclose(plain.project(0.0, 90.0), (90.0, 0.0))
    assert np.allclose(looking_up.project(0.0, 90.0), (-90.0, 0.0))        # east is left of north


def test_renderer_geometry_turns_the_sky_about_the_pole_at_the_sidereal_rate():
    plan = quiet_plan(5, frames=20)
    renderer = NightRenderer(plan)
    lens = plan.camera.fisheye
    assert FRAME_DEG == pytest.approx(0.1253, abs=1e-4)
    assert (renderer.lst(11) - renderer.lst(10)) % 360 == pytest.approx(FRAME_DEG, abs=1e-9)

    # the celestial pole stays put at altitude = latitude, due north, whatever the hour angle
    pole_alt, pole_az = equatorial_to_horizontal(np.array([0.0, 77.0, 190.0]), 90.0, plan.latitude)
    np.testing.assert_allclose(pole_alt, plan.latitude, atol=1e-6)
    assert np.all(np.minimum(pole_az % 360, 360 - pole_az % 360) < 1e-3)
    px, py = lens.project(plan.latitude, 0.0)

    # stars near the pole turn about its image position by 0.1253° per frame on average, all the same way
    stars = plan.stars[plan.stars[:, 1] > 70]
    assert len(stars) > 100

    def angles(index):
        alt, az = equatorial_to_horizontal(renderer.lst(index) - stars[:, 0], stars[:, 1], plan.latitude)
        x, y = lens.project(alt, az)
        return np.degrees(np.arctan2(-(y - py), x - px)), np.hypot(x - px, y - py)   # screen angle, y up

    before, radius_before = angles(10)
    after, radius_after = angles(11)
    turn = (after - before + 180) % 360 - 180
    assert np.all(np.sign(turn) == np.sign(turn[0]))
    assert abs(turn.mean()) == pytest.approx(FRAME_DEG, rel=0.05)
    # …along circles: the distance to the pole hardly changes next to the distance moved
    assert np.all(np.abs(radius_after - radius_before) < 0.3 * radius_before * np.radians(np.abs(turn)))
    # seen from below, stars circle the pole counter-clockwise; the mirrored (looking-up) image shows that
    assert np.sign(turn[0]) == (1 if lens.mirrored else -1)


def test_rendered_stars_sit_where_the_geometry_puts_them_and_turn_sidereally():
    plan = quiet_plan(7, frames=60)
    renderer = NightRenderer(plan)
    cam, lens = plan.camera, plan.camera.fisheye
    frames = {k: renderer.render(k) for k in (0, 1, 40)}
    images = {k: image.astype(np.float32).max(axis=2) for k, (image, _) in frames.items()}
    exposure = frames[0][1]["exposure_s"]
    assert exposure == cam.max_exposure_s                       # full night exposure

    stars = plan.stars

    def positions(index):
        alt, az = equatorial_to_horizontal(renderer.lst(index) - stars[:, 0], stars[:, 1], plan.latitude)
        x, y = lens.project(alt, az)
        return alt, np.asarray(x), np.asarray(y)

    alt, x, y = positions(0)
    peak = cam.star_zero_point * 10 ** (-0.4 * stars[:, 2]) * exposure / cam.max_exposure_s
    visible = (alt > 0) & (peak > 3)
    box_y, box_x = watermark_box(plan)
    chosen = [i for i in np.flatnonzero((alt > 25) & (peak > 40) & (peak < 200))    # bright but not saturated
              if np.sum(np.hypot(x[visible] - x[i], y[visible] - y[i]) < 8) == 1
              and not (x[i] < box_x.stop and y[i] < box_y.stop)]
    assert len(chosen) >= 8

    def centroid(image, cx, cy, half=4):
        ix, iy = int(round(cx)), int(round(cy))
        window = image[iy - half:iy + half + 1, ix - half:ix + half + 1]
        window = np.clip(window - np.median(image[iy - 12:iy + 13, ix - 12:ix + 13]), 0, None)
        yy, xx = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1]
        return (window * xx).sum() / window.sum(), (window * yy).sum() / window.sum()

    offsets, turn_1, turn_40, drift_dec = [], [], [], []
    for i in chosen:
        measured = {}
        for k in (0, 1, 40):
            _, xk, yk = positions(k)
            cx, cy = centroid(images[k], xk[i], yk[i])
            offsets.append(math.hypot(cx - xk[i], cy - yk[i]))
            star_alt, star_az = lens.unproject(cx, cy)
            measured[k] = horizontal_to_equatorial(star_alt, star_az, plan.latitude)    # hour angle, declination
        turn_1.append((measured[1][0] - measured[0][0] + 180) % 360 - 180)
        turn_40.append((measured[40][0] - measured[0][0] + 180) % 360 - 180)
        drift_dec.append(measured[40][1] - measured[0][1])

    assert np.median(offsets) < 0.35                                          # drawn where the geometry says
    assert np.median(turn_40) / 40 == pytest.approx(FRAME_DEG, abs=0.006)     # westward, 0.1253° per frame
    assert 0.09 < np.median(turn_1) < 0.16                                    # visible between two frames
    assert np.median(np.abs(drift_dec)) < 0.06                               # along circles of declination


# ---------------------------------------------------------------------------------------------------- meteors

def plant_meteor(plan, frame, start, length=150.0, snr=10.0, width=1.2) -> Event:
    event = Event("meteor", [frame], np.asarray(start, np.float32), np.zeros(2, np.float32), length, width, snr,
                  (1.0, 1.0, 1.0))
    plan.events.append(event)
    return event


@pytest.mark.parametrize("snr, band_share, contrast", [(10.0, 0.6, 4.0), (3.0, 0.3, 2.0)])
def test_planted_meteor_has_exact_truth_and_shows_in_the_difference_image(snr, band_share, contrast):
    plan = quiet_plan(4)
    lens = plan.camera.fisheye
    start = np.array([lens.cx - 40, lens.cy + 30], np.float32)
    event = plant_meteor(plan, 5, start, length=150.0, snr=snr)
    end = start + sim.event_direction(event) * 150.0
    renderer = NightRenderer(plan)
    previous, previous_row = renderer.render(4)
    current, row = renderer.render(5)

    assert previous_row["event"] == "none" and previous_row["label"] == "no-meteor"
    assert (row["label"], row["event"], row["events"]) == ("meteor", "meteor", "meteor")
    assert (row["x1"], row["y1"]) == pytest.approx(tuple(start), abs=0.01)
    assert (row["x2"], row["y2"]) == pytest.approx(tuple(end), abs=0.5)
    assert row["length_px"] == pytest.approx(150.0, abs=1.0)
    assert row["width_px"] == pytest.approx(1.2, abs=0.01)
    assert row["peak_snr"] >= MIN_VISIBLE_SNR
    assert row["peak_snr"] == pytest.approx(snr, rel=0.3)

    # the thesis' input: gray, saturating subtraction, threshold 3.5, on the JPEGs as written
    quality = plan.camera.jpeg_quality
    binary = preprocess.binary_difference(jpeg(current, quality), jpeg(previous, quality))
    distance = distance_to_segment(start, end)
    sky = open_sky(renderer)
    on_trail = binary[sky & (distance <= 1.5)] > 0
    elsewhere = binary[sky & (distance > 30)] > 0
    assert on_trail.size > 300
    assert on_trail.mean() > band_share
    assert on_trail.mean() > contrast * elsewhere.mean()


def test_a_meteor_given_its_direction_flies_that_way():
    """A shower's meteors fly away from their radiant: a meteor planted with a direction is drawn along it."""
    plan = quiet_plan(4)
    lens = plan.camera.fisheye
    start = np.array([lens.cx - 40, lens.cy + 30], np.float32)
    away = np.array([0.6, -0.8], np.float32)
    event = plant_meteor(plan, 2, start, length=150.0, snr=20.0)
    event.direction = away
    row = NightRenderer(plan).render(2)[1]

    assert (row["x1"], row["y1"]) == pytest.approx(tuple(start), abs=0.01)
    assert (row["x2"], row["y2"]) == pytest.approx(tuple(start + 150.0 * away), abs=0.5)


def test_meteors_nobody_could_see_are_hidden_and_labelled_no_meteor():
    for seed in range(4, 30):            # a night whose skyline has a tree or building big enough to hide behind
        plan = quiet_plan(seed)
        bare = NightRenderer(copy.deepcopy(plan))
        ground = (bare.sky_mask < 0.01) & (bare.inside > 0.99)
        depth = cv2.distanceTransform(ground.astype(np.uint8), cv2.DIST_L2, 5)
        deepest = np.unravel_index(np.argmax(depth), depth.shape)
        if depth[deepest] > 12:
            break
    assert depth[deepest] > 12
    behind_trees = np.array([deepest[1], deepest[0]], np.float32)
    outside_lens = np.array([8.0, HEIGHT - 12.0], np.float32)
    assert bare.inside[int(outside_lens[1]), int(outside_lens[0])] == 0
    plant_meteor(plan, 3, outside_lens, length=40.0, snr=30.0)
    plant_meteor(plan, 5, behind_trees, length=depth[deepest] - 4, snr=30.0)
    open_sky_point = np.array([plan.camera.fisheye.cx + 20, plan.camera.fisheye.cy - 10], np.float32)
    plant_meteor(plan, 7, open_sky_point, length=120.0, snr=0.8)          # in the open but fainter than visible
    renderer = NightRenderer(plan)

    for frame in (3, 5, 7):
        image, row = renderer.render(frame)
        assert row["events"] == "hidden-meteor", frame
        assert (row["label"], row["event"]) == ("no-meteor", "none"), frame
        assert row["peak_snr"] is None and row["x1"] is None
        if frame != 7:   # fully hidden: not a single pixel changes
            np.testing.assert_array_equal(image, bare.render(frame)[0])


def test_a_meteor_on_a_burnt_out_sky_is_hidden():
    """Ground truth is measured on the exposed frame: where the sky already clips at 255 a meteor adds nothing."""
    plan = quiet_plan(4)
    lens = plan.camera.fisheye
    plant_meteor(plan, 5, np.array([lens.cx - 40, lens.cy + 30], np.float32), length=150.0, snr=30.0)
    renderer = NightRenderer(plan)
    assert renderer.render(5)[1]["label"] == "meteor"
    renderer.exposure = lambda sky_rate: 400.0          # a daytime frame: the whole sky saturates
    image, row = renderer.render(5)
    assert np.median(image[renderer.sky_mask > 0.99]) == 255
    assert (row["label"], row["event"], row["events"]) == ("no-meteor", "none", "hidden-meteor")


def test_a_meteor_the_difference_threshold_cannot_show_is_hidden():
    """Simulator 1.5: a meteor was labelled visible from its peak over the sensor noise alone, 1.5× of it: on a quiet
    camera that is under the thesis' difference threshold (> 3.5 DN), so the difference image showed nothing of it.
    Now a meteor adding no more than the threshold to the gray frame is a hidden meteor."""
    plan = quiet_plan(4)
    plan.camera.sky_noise, plan.camera.read_noise = 1.6, 1.0                   # a quiet camera: 2× its noise < 3.5 DN
    bare_plan = copy.deepcopy(plan)
    lens = plan.camera.fisheye
    start = np.array([lens.cx - 40, lens.cy + 30], np.float32)
    faint = plant_meteor(plan, 5, start, length=150.0, snr=2.0)
    plant_meteor(plan, 7, start, length=150.0, snr=4.0)                        # twice as bright: shows
    renderer, bare = NightRenderer(plan), NightRenderer(bare_plan)
    assert faint.peak_snr >= MIN_VISIBLE_SNR

    image, row = renderer.render(5)
    assert (row["label"], row["event"], row["events"]) == ("no-meteor", "none", "hidden-meteor")
    quality = plan.camera.jpeg_quality
    previous = jpeg(renderer.render(4)[0], quality)
    with_it = preprocess.binary_difference(jpeg(image, quality), previous) > 0
    without = preprocess.binary_difference(jpeg(bare.render(5)[0], quality), previous) > 0
    trail = open_sky(renderer) & (distance_to_segment(start, start + sim.event_direction(faint) * 150.0) <= 1.5)
    assert with_it[trail].mean() - without[trail].mean() < 0.1                # barely a speck more along its trail
    assert renderer.render(7)[1]["label"] == "meteor"


def test_a_meteor_under_one_and_a_half_times_the_noise_is_hidden_even_on_a_noisy_camera():
    """A meteor is labelled visible from 1.5× the local noise (MIN_VISIBLE_SNR): on a noisy camera, where the
    difference threshold lets fainter light through, the ground truth called a meteor at 1.2× the noise a meteor,
    one no person labelling the night could see."""
    plan = quiet_plan(4)
    plan.camera.sky_noise, plan.camera.read_noise = 6.0, 3.0            # 1.2× the noise is over the 3.5 DN threshold
    lens = plan.camera.fisheye
    start = np.array([lens.cx - 40, lens.cy + 30], np.float32)
    plant_meteor(plan, 5, start, length=150.0, snr=1.2)
    plant_meteor(plan, 7, start, length=150.0, snr=1.8)
    renderer = NightRenderer(plan)
    faint, shown = renderer.render(5)[1], renderer.render(7)[1]
    assert (faint["label"], faint["events"]) == ("no-meteor", "hidden-meteor")
    assert shown["label"] == "meteor" and MIN_VISIBLE_SNR <= shown["peak_snr"] < 2.5


def test_a_meteor_crossing_the_saturated_moon_shows_beside_it():
    """Simulator 1.5: a meteor was measured at its brightest point only; where that lay on the saturated moon it was
    labelled no-meteor, though its path beside the moon lit hundreds of difference pixels. Now what the 8-bit clip
    leaves is measured over all its light."""
    plan = plan_night(303, datetime(2021, 11, 22, 20), 3, "moon", rates=NO_EVENTS)
    renderer = NightRenderer(copy.deepcopy(plan))
    moon_x, moon_y = plan.camera.fisheye.project(*renderer.moon_position(1))
    start = np.array([moon_x - 0.7 * 120, moon_y], np.float32)          # its light curve peaks about 0.7 along
    event = plant_meteor(plan, 1, start, length=120.0, snr=12.0)
    event.direction = np.array([1.0, 0.0], np.float32)
    quality = plan.camera.jpeg_quality
    previous, bare = (jpeg(renderer.render(k)[0], quality) for k in (0, 1))
    image, row = NightRenderer(plan).render(1)

    assert image[round(moon_y), round(moon_x)].min() == 255                    # the moon saturates under its peak
    assert row["label"] == "meteor" and row["peak_snr"] >= MIN_VISIBLE_SNR
    new = (preprocess.binary_difference(jpeg(image, quality), previous) > 0) & ~(
        preprocess.binary_difference(bare, previous) > 0)
    assert new.sum() > 150


def light_curve(t):
    """A meteor's rise and fade without flares, peak 1 (the simulator's)."""
    curve = lambda u: u ** 1.5 * (1 - u) ** 0.7
    return curve(np.asarray(t)) / curve(1.5 / 2.2)


def test_a_meteor_in_a_short_exposure_shows_only_what_it_flew_while_the_shutter_was_open():
    """Simulator 1.4: a meteor was drawn whole in every frame, even one exposed 32 µs in bright twilight. Now a frame
    exposed shorter than the meteor's flight shows the part flown while the shutter was open, at the same brightness
    per pixel (its light curve that part's), and a frame too short for 3 px of flight shows and records nothing."""
    plan = quiet_plan(4)
    bare_plan = copy.deepcopy(plan)
    lens = plan.camera.fisheye
    start = np.array([lens.cx - 40, lens.cy + 30], np.float32)
    event = plant_meteor(plan, 5, start, length=150.0, snr=20.0)
    end = start + sim.event_direction(event) * 150.0
    duration = sim.flight_duration(event)
    assert 0.2 <= duration <= 2.0
    renderer, bare = NightRenderer(plan), NightRenderer(bare_plan)

    row = renderer.render(5)[1]                                    # full exposure: the whole path, as before
    assert row["exposure_s"] == plan.camera.max_exposure_s and row["label"] == "meteor"
    assert (row["x1"], row["y1"], row["x2"], row["y2"]) == pytest.approx((*start, *end), abs=0.5)
    assert row["length_px"] == pytest.approx(150.0, abs=1.0)

    for each in (renderer, bare):
        each.exposure = lambda sky_rate: 0.2 * duration           # a fifth of the flight: 30 px of it
    image, row = renderer.render(5)
    assert row["label"] == "meteor" and row["length_px"] == pytest.approx(30.0, abs=1.0)
    first, last = segment(row)
    begin = math.dist(start, first) / 150.0
    for point in (first, last):                                   # a stretch of the path, wherever along it
        assert distance_to_segment(start, end)[round(point[1]), round(point[0])] < 1.0
    changed = np.abs(image.astype(int) - bare.render(5)[0]).max(axis=2) > 0
    near = distance_to_segment(first, last)
    assert changed[near <= 1].mean() > 0.5
    assert not changed[near > 8].any()                            # nothing drawn beyond what it flew
    assert row["peak_snr"] == pytest.approx(20.0 * light_curve(np.linspace(begin, begin + 0.2, 50)).max(), rel=0.3)

    for each in (renderer, bare):
        each.exposure = lambda sky_rate: 100e-6                   # 0.01 px of flight: a dot at most
    image, row = renderer.render(5)
    assert (row["label"], row["event"], row["events"]) == ("no-meteor", "none", "")
    assert row["x1"] is None and row["peak_snr"] is None
    np.testing.assert_array_equal(image, bare.render(5)[0])


def test_meteors_fly_for_a_fraction_of_a_second_and_fireballs_longer():
    plan = plan_night(5, EVENING, 200, "clear", rates=BUSY)
    meteors = [sim.flight_duration(e) for e in plan.events if e.kind == "meteor"]
    fireballs = [sim.flight_duration(e) for e in plan.events if e.kind == "fireball"]
    assert len(meteors) > 20 and len(fireballs) > 2
    assert 0.2 <= min(meteors) and max(meteors) <= 2.0 and min(meteors) < 0.5 and max(meteors) > 1.0
    assert 1.0 <= min(fireballs) and max(fireballs) <= 5.0
    assert np.median(fireballs) > np.median(meteors)
    again = plan_night(5, EVENING, 200, "clear", rates=BUSY)
    assert [sim.flight_duration(e) for e in again.events if e.kind == "meteor"] == meteors


def test_truth_describes_the_streak_over_open_sky_and_the_brightest_meteor():
    """Simulator 1.3: a streak's ends and length were those of its whole path, out of the lens circle and past the
    frame's edge too (15 % of meteor frames had a tenth of their streak where nothing is drawn), and of two meteors
    in one frame the one planted first was recorded, however faint."""
    plan = quiet_plan(4)
    lens = plan.camera.fisheye
    centre = np.array([lens.cx, lens.cy], np.float32)
    long_one = plant_meteor(plan, 5, centre, length=1500.0, snr=20.0)             # runs out of the lens circle
    plant_meteor(plan, 7, centre + 60, length=120.0, snr=2.5)                      # faint, planted first
    bright = plant_meteor(plan, 7, centre - 200, length=120.0, snr=25.0)
    renderer = NightRenderer(plan)

    row = renderer.render(5)[1]
    ends = [(row["x1"], row["y1"]), (row["x2"], row["y2"])]
    for x, y in ends:
        assert 0 <= x < WIDTH and 0 <= y < HEIGHT and renderer.sky_mask[round(y), round(x)] >= 0.5
    assert ends[0] == pytest.approx(tuple(centre), abs=0.01)
    assert 100 < row["length_px"] < 0.8 * long_one.length
    assert row["length_px"] == pytest.approx(math.dist(*ends), rel=0.01)

    row = renderer.render(7)[1]
    assert row["events"] == "meteor;meteor" and (row["x1"], row["y1"]) == pytest.approx(tuple(bright.start), abs=0.01)
    assert row["peak_snr"] == pytest.approx(25.0, rel=0.3)


def test_an_insect_near_the_lens_is_drawn_in_front_of_the_trees():
    """Simulator 1.5: an insect's light was erased below the skyline, while its ground truth described it there. An
    insect near the lens is in front of the trees: it is drawn over them, where its truth says it is."""
    for seed in range(4, 30):            # a night whose skyline has a tree or building to fly in front of
        plan = quiet_plan(seed)
        bare = NightRenderer(copy.deepcopy(plan))
        ground = (bare.sky_mask < 0.01) & (bare.inside > 0.99)
        ground[[0, -1], :] = ground[:, [0, -1]] = False                         # the frame's edge is no tree's
        depth = cv2.distanceTransform(ground.astype(np.uint8), cv2.DIST_L2, 5)
        deepest = np.unravel_index(np.argmax(depth), depth.shape)
        if depth[deepest] > 12:
            break
    end = np.array([deepest[1], deepest[0]], np.float32)
    inward = np.array([plan.camera.fisheye.cx, plan.camera.fisheye.cy], np.float32) - end
    inward /= np.hypot(*inward)
    start = end + inward * (depth[deepest] + 25)                                # in the open sky above the trees
    assert bare.sky_mask[round(start[1]), round(start[0])] > 0.99
    plan.events.append(Event("insect", [3], start, np.zeros(2, np.float32), float(np.hypot(*(end - start))), 4.0,
                             30.0, (1.0, 1.0, 0.9), direction=-inward))
    image, row = NightRenderer(plan).render(3)

    assert row["event"] == "insect" and (row["x2"], row["y2"]) == pytest.approx(tuple(end), abs=0.5)
    added = gray(image).astype(int) - gray(bare.render(3)[0])
    x, y = round(end[0]), round(end[1])
    assert bare.sky_mask[y, x] < 0.01 and added[y - 2:y + 3, x - 2:x + 3].mean() > 10     # over the trees


# ---------------------------------------------------------------------------------------------------- crossings

@pytest.fixture(scope="module")
def crossings():
    """A satellite over frames 3–5 and a blinking plane over frames 7–9 through the middle of the sky."""
    plan = quiet_plan(4)
    lens = plan.camera.fisheye
    velocity = np.array([90.0, 40.0], np.float32)
    plan.events.append(Event("satellite", [3, 4, 5], np.array([lens.cx, lens.cy], np.float32) - 1.5 * velocity,
                             velocity, 0.0, 1.0, 12.0, (1.0, 1.0, 1.0)))
    plane_speed = 120.0        # px per frame interval, strobe every 1.6 s: within what the simulator draws
    plane_velocity = np.array([0.6, 0.8], np.float32) * plane_speed
    plan.events.append(Event("plane", [7, 8, 9], np.array([lens.cx - 50, lens.cy - 150], np.float32),
                             plane_velocity, 0.0, 1.0, 20.0, (1.0, 1.0, 1.0),
                             blink_period_px=plane_speed / 30 * 1.6))
    renderer = NightRenderer(plan)
    frames = {k: renderer.render(k) for k in range(2, 11)}
    without = copy.deepcopy(plan)
    without.events = []
    return plan, frames, NightRenderer(without).render(8)[0]


def test_a_crossing_on_a_burnt_out_sky_is_not_recorded(crossings):
    """Its visibility was judged before the 8-bit clip: on a saturated (daytime) sky satellites that add nothing to
    the frame were recorded as events."""
    plan, frames, _ = crossings
    assert frames[4][1]["events"] == "satellite"
    renderer = NightRenderer(plan)
    renderer.exposure = lambda sky_rate: 400.0          # a daytime frame: the whole sky saturates
    image, row = renderer.render(4)
    assert np.median(image[renderer.sky_mask > 0.99]) == 255
    assert (row["event"], row["events"]) == ("none", "")


def assert_continues_along_one_line(rows, velocity):
    speed = float(np.hypot(*velocity))
    for first, second in zip(rows, rows[1:]):
        a0, a1 = segment(first)
        b0, b1 = segment(second)
        da, db = (a1 - a0) / np.hypot(*(a1 - a0)), (b1 - b0) / np.hypot(*(b1 - b0))
        assert da @ db > 0.999                                          # same direction
        normal = np.array([-da[1], da[0]])
        assert abs((b0 - a0) @ normal) < 1.0                            # on the same line
        gap = (b0 - a1) @ da
        assert 0 <= gap < 0.5 * speed                                   # starts a little after the previous ended
        assert np.hypot(*(b0 - a0)) == pytest.approx(speed, abs=0.5)    # one frame interval further on


def test_satellite_continues_over_consecutive_frames(crossings):
    plan, frames, _ = crossings
    rows = [frames[k][1] for k in (3, 4, 5)]
    for row in rows:
        assert (row["label"], row["event"], row["events"]) == ("no-meteor", "satellite", "satellite")
        # trails for the exposed part of the 30 s interval
        exposed = (row["exposure_s"] + 0.5) / 30
        assert row["length_px"] == pytest.approx(np.hypot(90, 40) * exposed, abs=1.0)
    assert frames[2][1]["event"] == "none" and frames[6][1]["event"] == "none"
    assert_continues_along_one_line(rows, plan.events[0].velocity)


def test_plane_blinks_and_continues_over_consecutive_frames(crossings):
    plan, frames, without_plane = crossings
    rows = [frames[k][1] for k in (7, 8, 9)]
    for row in rows:
        assert (row["label"], row["event"]) == ("no-meteor", "plane")
    assert frames[10][1]["event"] == "none"
    assert_continues_along_one_line(rows, plan.events[1].velocity)

    # same seed and frame with and without the plane: the difference is the plane's light alone
    light = gray(frames[8][0]).astype(np.float32) - gray(without_plane).astype(np.float32)
    p0, p1 = segment(rows[1])
    profile = cv2.GaussianBlur(profile_along(light, p0, p1)[None], (0, 0), 1.0)[0]
    length = float(np.hypot(*(p1 - p0)))
    period = plan.events[1].blink_period_px
    assert separate_spots(profile) >= 0.6 * length / period >= 5              # a dashed line, not a streak
    assert profile.max() > 1.8 * np.percentile(profile, 20)


# ---------------------------------------------------------------------------------------------------- clouds

def test_clouds_drift_and_evolve_smoothly():
    plan = plan_night(0, EVENING, 200, "cloudy", rates=NO_EVENTS)
    renderer = NightRenderer(plan)
    assert not renderer.clouds(10, 0.0).any()
    cover = 0.6
    fields = {k: renderer.clouds(k, cover) for k in (10, 11, 70)}
    assert fields[10].shape == renderer.low_shape
    assert 0 <= fields[10].min() and fields[10].max() <= 1
    assert 0.3 < np.mean(fields[10] > 0.3) < 0.8                             # about the requested cover

    def correlation(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    assert np.abs(fields[11] - fields[10]).mean() > 0.005                   # they move every frame...
    assert correlation(fields[10], fields[11]) > 0.9                        # ...but are the same clouds
    assert correlation(fields[10], fields[70]) < 0.6                        # half an hour later: other clouds
    shares = [np.mean(renderer.clouds(10, c) > 0.3) for c in (0.2, 0.5, 0.9)]
    assert shares[0] < shares[1] < shares[2]
    # the cover itself changes slowly from frame to frame
    assert np.abs(np.diff(plan.cloud_schedule)).max() < 0.05


def test_cloud_cover_follows_the_scenario():
    with pytest.raises(ValueError, match="unknown scenario"):
        plan_night(0, EVENING, 10, "foggy")
    clear = [plan_night(seed, EVENING, 300, "clear").cloud_schedule.mean() for seed in range(8)]
    cloudy = [plan_night(seed, EVENING, 300, "cloudy").cloud_schedule.mean() for seed in range(8)]
    assert max(clear) < min(cloudy)
    assert np.mean(cloudy) > 0.4 > 0.1 > np.mean(clear)
    mixed = {plan_night(seed, EVENING, 10, "mixed").scenario for seed in range(20)}
    assert mixed <= set(SCENARIOS) and len(mixed) >= 3


def test_training_nights_rotate_through_the_chosen_skies(tmp_path):
    """models/simulate_training_nights.sh: seeds from FIRST_SEED, one date each, a new sky from SKIES every 6 nights."""
    env = dict(os.environ, PYTHON=sys.executable, SKIES="moonlit-clouds clear", TRAIN_NIGHTS="7", TRAIN_FRAMES="1",
               TEST_NIGHTS="0", FIRST_SEED="5000", PROCS="2")
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(["bash", "models/simulate_training_nights.sh", str(tmp_path)], cwd=repo, env=env, check=True,
                   capture_output=True)
    nights = [json.loads(path.read_text()) for path in sorted((tmp_path / "train").glob("*/night.json"))]
    assert sorted(night["seed"] for night in nights) == list(range(5000, 5007))
    skies = {night["seed"]: night["scenario"] for night in nights}
    assert {skies[seed] for seed in range(5000, 5006)} == {"moonlit-clouds"} and skies[5006] == "clear"
    assert not (tmp_path / "test").exists()


def test_moonlit_clouds_come_and_go_for_most_of_the_night():
    moon = [plan_night(seed, EVENING, 1440, "moon").cloud_schedule for seed in range(8)]
    moonlit = [plan_night(seed, EVENING, 1440, "moonlit-clouds").cloud_schedule for seed in range(8)]
    cloudy = [plan_night(seed, EVENING, 1440, "cloudy").cloud_schedule for seed in range(8)]
    mean_cover = [np.mean([c.mean() for c in nights]) for nights in (moon, moonlit, cloudy)]
    assert mean_cover == sorted(mean_cover)
    assert min(np.mean(c > 0.1) for c in moonlit) > 0.6           # clouds for most of the night...
    assert max(c.min() for c in moonlit) < 0.3 < min(c.max() for c in moonlit)  # ...thin at times, broken at others


# ---------------------------------------------------------------------------------------------------- the camera

def test_watermark_changes_every_frame_and_hot_pixels_stay_put():
    # a camera without noise reduction, so that hot pixels stay single pixels
    plan = next(p for p in (plan_night(seed, EVENING, 12, "clear", rates=NO_EVENTS) for seed in range(30))
                if p.camera.smoothing == 0)
    cam = plan.camera
    renderer = NightRenderer(plan)
    first, second = renderer.render(3)[0], renderer.render(4)[0]
    box = watermark_box(plan)
    outside = renderer.inside == 0                                            # no sky, no stars: black level
    in_box = np.zeros_like(outside)
    in_box[box] = True
    label, rest = in_box & outside, outside & ~in_box

    change = np.abs(gray(first).astype(int) - gray(second).astype(int))
    text = gray(first)[label] > 0.6 * cam.watermark_colour[0]
    assert text.sum() > 300                                                   # the text is there
    assert (change[label] > 60).sum() > 30                                    # and it changed (time, temperature)
    assert (change[rest] > 60).sum() == 0                                     # nothing else outside the lens did

    def hot_pixels(image):
        brightest = image.astype(np.int16).max(axis=2)
        local = cv2.medianBlur(image, 5).astype(np.int16).max(axis=2)
        return rest & (brightest - local > 20)

    hot_first, hot_second = hot_pixels(first), hot_pixels(second)
    assert hot_first.sum() >= 10
    assert (hot_first & hot_second).sum() >= 0.9 * max(hot_first.sum(), hot_second.sum())
    planned = np.zeros_like(outside)
    planned[cam.hot_pixels[:, 1].astype(int), cam.hot_pixels[:, 0].astype(int)] = True
    assert not (hot_first & ~planned).any()                                   # only the camera's hot pixels
    other_night = NightRenderer(plan_night(plan.seed + 1, EVENING, 12, "clear", rates=NO_EVENTS))
    assert (hot_pixels(other_night.render(3)[0]) & hot_first).sum() <= 2      # another camera, other pixels


def test_difference_noise_spans_the_calibrated_range():
    """Share of sky pixels surviving the thesis' threshold in two consecutive clear frames (JPEG round trip):
    real cameras go from a few percent to about 20 %."""
    shares = []
    for seed in range(6):
        plan = plan_night(seed, datetime(2021, 11, 5, 23, 30), 4, "clear", rates=NO_EVENTS)
        plan.cloud_schedule[:] = 0
        renderer = NightRenderer(plan)
        quality = plan.camera.jpeg_quality
        binary = preprocess.binary_difference(jpeg(renderer.render(2)[0], quality),
                                              jpeg(renderer.render(1)[0], quality))
        shares.append(float(np.mean(binary[open_sky(renderer)] > 0)))
    assert all(0.005 < share < 0.35 for share in shares), shares
    assert min(shares) < 0.08 and max(shares) > 0.12, shares


# ---------------------------------------------------------------------------------------------------- sun and moon

def test_twilight_is_bright_toward_the_sun_and_shortens_the_exposure():
    plan = quiet_plan(1, frames=16 * 120, start=datetime(2021, 11, 5, 16, 30))
    renderer = NightRenderer(plan)
    sun = np.array([sim.sun_position(renderer.time_of(i), plan.latitude, plan.utc_offset_h)
                    for i in range(plan.frames)])
    dusk = int(np.argmin(np.abs(sun[: plan.frames // 2, 0] + 8)))
    midnight = int(np.argmin(sun[:, 0]))
    twilight_image, twilight = renderer.render(dusk)
    night_image, night = renderer.render(midnight)
    assert twilight["sun_alt"] == pytest.approx(-8, abs=0.3)
    assert night["sun_alt"] < -30

    assert night["exposure_s"] == plan.camera.max_exposure_s
    assert twilight["exposure_s"] < 0.01 * night["exposure_s"]            # auto-exposure reacts
    sky = open_sky(renderer)
    black = plan.camera.black_level

    def light_per_second(image, row):
        return (np.median(gray(image)[sky]) - black) / row["exposure_s"]

    assert light_per_second(twilight_image, twilight) > 300 * light_per_second(night_image, night)

    alt, az = plan.camera.fisheye.unproject(*np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT)))
    facing = np.cos(np.radians(az - sun[dusk, 1]))
    toward, away, zenith = sky & (facing > 0.7) & (alt < 30), sky & (facing < -0.7) & (alt < 30), sky & (alt > 70)

    def gradient(image):
        g = gray(image).astype(float)
        return (np.median(g[toward]) - black) / (np.median(g[away]) - black)

    assert gradient(twilight_image) > 1.6                                  # the glow sits over the set sun
    assert gradient(twilight_image) > gradient(night_image) + 0.5
    assert np.median(gray(twilight_image)[zenith]) > np.median(gray(night_image)[zenith])


def test_a_daylight_frame_is_exposed_no_shorter_than_the_camera_can():
    """Auto-exposure stops at the camera's shortest exposure: without that floor a frame at midday was exposed for
    a few microseconds, its watermark and ground truth naming an exposure no camera makes, and its sky not burnt
    out as AllSky's daytime frames are."""
    plan = quiet_plan(4, frames=1, start=datetime(2021, 6, 21, 13, 0))
    image, row = NightRenderer(plan).render(0)
    assert row["sun_alt"] > 50 and row["exposure_s"] == sim.MIN_EXPOSURE_S


def test_dawn_brightens_smoothly_through_astronomical_twilight():
    plan = quiet_plan(1, frames=1440, start=datetime(2021, 11, 5, 20, 0))
    renderer = NightRenderer(plan)
    sun = np.array([sim.sun_position(renderer.time_of(i), plan.latitude, plan.utc_offset_h)[0]
                    for i in range(plan.frames)])
    first_above = int(np.argmax((sun > -18) & (np.arange(plan.frames) > plan.frames // 2)))
    assert sun[first_above - 1] <= -18 < sun[first_above]
    quality = plan.camera.jpeg_quality
    before, after = (jpeg(renderer.render(i)[0], quality) for i in (first_above - 1, first_above))
    share = np.mean(preprocess.binary_difference(after, before)[open_sky(renderer)] > 0)
    assert share < 0.4          # a night's worth of noise and slow brightening, not a whole white sky


@pytest.mark.parametrize("scenario", MOONLIT)
def test_moon_nights_have_a_bright_moon_up_for_much_of_the_night(scenario):
    up = []
    for seed in range(6):
        plan = plan_night(seed, datetime(2021, 11, 5, 20, 0), 1200, scenario, rates=NO_EVENTS)
        renderer = NightRenderer(plan)
        altitudes = np.array([renderer.moon_position(i)[0] for i in range(0, plan.frames, 10)])
        assert plan.moon["phase"] >= 0.45
        up.append(np.mean(altitudes > 0))
    assert min(up) >= 0.5 and np.mean(up) >= 0.7, up


def test_moonlight_brightens_the_sky_and_the_moon_glares():
    plan = plan_night(0, datetime(2021, 11, 5, 20, 0), 1200, "moon", rates=NO_EVENTS)
    plan.cloud_schedule[:] = 0
    renderer = NightRenderer(plan)
    altitudes = [renderer.moon_position(i)[0] for i in range(0, plan.frames, 10)]
    frame = 10 * int(np.argmax(altitudes))
    moonlit, row = renderer.render(frame)
    moonless_plan = copy.deepcopy(plan)
    moonless_plan.moon["phase"] = 0.0
    moonless, dark_row = NightRenderer(moonless_plan).render(frame)

    assert row["moon_alt"] > 30 and dark_row["sun_alt"] < -18
    sky = open_sky(renderer)
    black = plan.camera.black_level
    assert row["exposure_s"] < dark_row["exposure_s"]
    lit = (np.median(gray(moonlit)[sky]) - black) / row["exposure_s"]
    dark = (np.median(gray(moonless)[sky]) - black) / dark_row["exposure_s"]
    assert lit > 3 * dark

    x, y = plan.camera.fisheye.project(row["moon_alt"], renderer.moon_position(frame)[1])
    assert gray(moonlit)[int(round(y)), int(round(x))] >= 250                  # the disk saturates
    distance = np.hypot(*np.meshgrid(np.arange(WIDTH) - x, np.arange(HEIGHT) - y))
    near, far = sky & (distance > 15) & (distance < 60), sky & (distance > 350)
    assert np.median(gray(moonlit)[near]) > np.median(gray(moonlit)[far]) + 15     # glare around it


def test_sidereal_time_puts_the_season_s_sky_overhead():
    """At local midnight on the March equinox the sky overhead is RA ≈ 12 h; in late September, RA ≈ 0 h."""
    march = sim.local_sidereal_time(datetime(2021, 3, 21, 0, 0), utc_offset_h=0.0)
    september = sim.local_sidereal_time(datetime(2021, 9, 22, 0, 0), utc_offset_h=0.0)
    assert abs(march - 180) < 3
    assert min(september, 360 - september) < 3


def test_channel_mean_is_numpy_s_mean_bit_for_bit():
    image = np.random.default_rng(3).uniform(-5, 300, (40, 52, 3)).astype(np.float32)
    fast = sim.channel_mean(image)
    assert fast.dtype == np.float32
    np.testing.assert_array_equal(fast, image.mean(axis=2))
