"""The daily page: content, grouping, navigation, escaping, and how it looks in headless Chromium."""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from gualta import allsky, passes, payload, server, site, store
from gualta import ingest as ingest_module
from gualta.service_env import ServiceConfigError, ended_night
from helpers_service import KEYS, OBSERVATORIES, browser_page, detection, event, service_env

INGEST = server.load_handler("guAlta")
WEBSITE = server.load_handler("generateWebsite")
NIGHT = "20260916"


@pytest.fixture
def env(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("GUALTA_")]:
        monkeypatch.delenv(key)
    values = service_env(tmp_path / "store")
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def ingest(body, obs_id="obs01"):
    result = INGEST(event(body, KEYS[obs_id]), None)
    assert result["statusCode"] == 200, result["body"]


def frame(hhmmss: str, day: str = NIGHT) -> str:
    return f"{day}{hhmmss}"


@pytest.fixture
def night(env, tmp_path):
    """obs01: a lone meteor, a 3-frame satellite (30 s apart), a meteor after midnight; obs02: one; logs."""
    for i, (obs, fid, score) in enumerate([("obs01", frame("231507"), 0.97), ("obs01", frame("212000"), 0.88),
                                           ("obs01", frame("212030"), 0.91), ("obs01", frame("212100"), 0.86),
                                           ("obs01", "20260917031233", 0.99), ("obs02", frame("221500"), 0.90)]):
        ingest(detection(obs, fid, score, seed=i), obs)
    ingest(payload.build_log("start", "obs01", folder=NIGHT, processed="2026-09-16T20:00:03+02:00"))
    ingest(payload.build_log("end", "obs01", total=1440, folder=NIGHT, processed="2026-09-17T08:00:05+02:00"))
    return tmp_path / "store"


def test_page_lists_each_observatory_in_time_order_with_groups(night):
    summary = WEBSITE({"day": NIGHT}, None)
    assert summary == {"night": NIGHT, "detections": 6, "held_back": 0, "observatories": 2,
                       "written": [f"{NIGHT}.html", "index.html", "archive.html"]}
    html = (night / f"{NIGHT}.html").read_text()
    anchors = [f'id="obs01_{frame(t)}"' for t in ("212000", "212030", "212100", "231507")] + \
              ['id="obs01_20260917031233"', f'id="obs02_{frame("221500")}"']
    positions = [html.index(a) for a in anchors]
    assert positions == sorted(positions)
    assert html.count("Possible satellite/plane: 3 consecutive detections") == 1
    group = html[html.index("Possible satellite/plane"):]
    assert group.index(f"obs01_{frame('212100')}") < group.index("</div>\n      </div>") < group.index(
        f"obs01_{frame('231507')}")                                     # the lone meteor is outside the group
    assert "1,440 frames processed" in html and "no end-of-night log" in html      # obs01 has one, obs02 not
    assert "detection run started 2026-09-16 20:00, ended 2026-09-17 08:00" in html
    assert f'src="imgs/{NIGHT}/obs01_{frame("231507")}.jpeg"' in html
    assert ">0.97<" in html and ">03:12:33<" in html
    assert (night / "index.html").read_bytes() == (night / f"{NIGHT}.html").read_bytes()


def test_iss_passes_are_on_the_page(night):
    WEBSITE({"day": NIGHT}, None)
    html = (night / f"{NIGHT}.html").read_text()
    obs01 = html[html.index('id="obs-obs01"'):html.index('id="obs-obs02"')]
    assert "ISS passes above 10° in the dark (CEST)" in obs01 and "<td>sunlit</td>" in obs01
    assert "TLE epoch 2026-09-16 20:27 UTC" in obs01


def tle_moved(days: float) -> str:
    """The committed ISS TLE with its epoch moved `days` on (the same elements, its checksum redone)."""
    name, first, second = passes.DEFAULT_TLE.read_text().splitlines()[:3]
    epoch = float(first[20:32]) + days
    first = f"{first[:20]}{epoch:012.8f}{first[32:68]}"
    checksum = sum(int(c) if c.isdigit() else c == "-" for c in first) % 10
    return f"{name}\n{first}{checksum}\n{second}\n"


def test_a_night_rebuilt_weeks_later_keeps_the_passes_of_its_first_build(night, tmp_path, monkeypatch):
    """A night rebuilt weeks on (a late report after an outage, `site --day`) was given today's TLE, weeks from the
    night: its ISS table and tags were gone. Its first build keeps the TLE it used; a night never built with one near
    it shows none, and says a TLE from near the night is needed, not 'refresh'."""
    WEBSITE({"day": NIGHT}, None)
    kept = night / "pages" / "tle" / f"{NIGHT}.tle"
    assert kept.read_text() == passes.DEFAULT_TLE.read_text()
    later = tmp_path / "later.tle"
    later.write_text(tle_moved(60))
    assert passes.read_tle(later.read_text()).epoch.utc_datetime().date().isoformat() == "2026-11-15"
    monkeypatch.setenv("GUALTA_TLE_FILE", str(later))
    WEBSITE({"day": NIGHT}, None)
    html = (night / f"{NIGHT}.html").read_text()
    assert "ISS passes above 10° in the dark" in html and "<td>sunlit</td>" in html
    assert f"the TLE kept for this night (pages/tle/{NIGHT}.tle)" in html
    assert kept.read_text() == passes.DEFAULT_TLE.read_text()
    WEBSITE({"day": "20260915"}, None)
    earlier = (night / "20260915.html").read_text()
    assert "ISS passes not shown" in earlier and "give a TLE from near the night" in earlier
    assert not (night / "pages" / "tle" / "20260915.tle").exists()


def test_iss_passes_across_the_end_of_summer_time(env, tmp_path, monkeypatch):
    """On the night clocks go back, a pass from 02:59:44 CEST to 02:05:20 CET is shown with each time's zone (one
    caption zone made it end before it began), and a detection is matched to a pass as instants. (The committed
    TLE is 38 days from this night, too old to be shown: allowed here, where only the zones are checked.)"""
    monkeypatch.setattr(passes, "UNUSABLE_TLE_DAYS", 60)
    ingest(payload.build_log("end", "obs02", total=1440, folder="20261024"), "obs02")
    WEBSITE({"day": "20261024"}, None)
    html = (tmp_path / "store" / "20261024.html").read_text()
    obs02 = html[html.index('id="obs-obs02"'):]
    assert "ISS passes above 10° in the dark (CEST → CET)" in obs02
    assert "<td>02:59:44 CEST</td>" in obs02 and "<td>02:05:20 CET</td>" in obs02

    zone = ZoneInfo("Europe/Madrid")
    crossing = passes.Pass(datetime(2026, 10, 25, 2, 59, 36, tzinfo=zone),
                           datetime(2026, 10, 25, 2, 2, 27, fold=1, tzinfo=zone),
                           datetime(2026, 10, 25, 2, 5, 19, fold=1, tzinfo=zone), 40.0, True)
    rows = [site.Row("obs02", "in", datetime(2026, 10, 25, 2, 59, 50), 0.9, "i"),      # CEST, in the pass
            site.Row("obs02", "before", datetime(2026, 10, 25, 2, 57, 0), 0.9, "i")]
    site.mark_iss(rows, passes.PassReport("obs02", [crossing]), zone)
    assert [row.iss for row in rows] == [True, False]


def iss_pass(sunlit: bool) -> passes.PassReport:
    """obs01's one ISS pass, 23:00:00 to 23:06:00 CEST peaking at 23:03, 40° high."""
    zone = ZoneInfo("Europe/Madrid")
    crossing = passes.Pass(*(datetime(2026, 9, 16, 23, minute, tzinfo=zone) for minute in (0, 3, 6)), 40.0, sunlit)
    return passes.PassReport("obs01", [crossing], available=True)


def test_a_detection_during_an_iss_pass_in_earths_shadow_is_not_tagged():
    """A pass in Earth's shadow leaves no trail: a meteor seen during it is no ISS, and tagged so a reader would
    dismiss it."""
    rows = [site.Row("obs01", "in", datetime(2026, 9, 16, 23, 3), 0.9, "i")]
    site.mark_iss(rows, iss_pass(sunlit=False), ZoneInfo("Europe/Madrid"))
    assert not rows[0].iss
    site.mark_iss(rows, iss_pass(sunlit=True), ZoneInfo("Europe/Madrid"))
    assert rows[0].iss


def test_a_detection_within_a_minute_of_a_sunlit_iss_pass_is_tagged():
    """A pass is counted from 10° up and its times are predictions: a detection up to ISS_MARGIN_S (60 s) either side
    of a sunlit pass is tagged, one a second further is not."""
    stamps = [datetime(2026, 9, 16, 22, 59, 0), datetime(2026, 9, 16, 23, 7, 0),
              datetime(2026, 9, 16, 22, 58, 59), datetime(2026, 9, 16, 23, 7, 1)]
    rows = [site.Row("obs01", f"{i}", stamp, 0.9, "i") for i, stamp in enumerate(stamps)]
    site.mark_iss(rows, iss_pass(sunlit=True), ZoneInfo("Europe/Madrid"))
    assert [row.iss for row in rows] == [True, True, False, False]


def test_consecutive_grouping_boundary():
    start = datetime(2026, 9, 16, 22, 0, 0)
    rows = [site.Row("obs01", "x", start + timedelta(seconds=s), 0.9, "i") for s in (0, 60, 121, 150, 400)]
    assert [len(g) for g in site.group_consecutive(rows)] == [2, 2, 1]      # 60 s joins, 61 s splits


def crossing_rows(*streaks) -> list[site.Row]:
    """obs01's detections 30 s apart from 22:00 with these streaks (None: one sent without)."""
    start = datetime(2026, 9, 16, 22, 0, 0)
    return [site.Row("obs01", f"{i}", start + timedelta(seconds=30 * i), 0.9, "i", streak=streak)
            for i, streak in enumerate(streaks)]


def test_consecutive_detections_whose_streaks_cannot_be_one_crossing_are_not_grouped():
    """A meteor shower night put meteors in consecutive frames: 91 of 130 were boxed "possible satellite/plane". A
    crossing's pieces continue one line; two meteors' lie elsewhere or point elsewhere."""
    on_one_line = crossing_rows((100, 100, 300, 200), (420, 262, 620, 360), (740, 420, 940, 520))
    assert [len(g) for g in site.group_runs(on_one_line)] == [3]
    turned = crossing_rows((100, 100, 300, 200), (420, 260, 320, 460))            # 90° apart
    assert [len(g) for g in site.group_runs(turned)] == [1, 1]
    beside = crossing_rows((100, 100, 300, 200), (420, 420, 620, 520))            # parallel, 143 px off its line
    assert [len(g) for g in site.group_runs(beside)] == [1, 1]
    far_on = crossing_rows((100, 100, 130, 115), (1000, 550, 1030, 565))          # on its line, 30 lengths on
    assert [len(g) for g in site.group_runs(far_on)] == [1, 1]
    reversed_ends = crossing_rows((100, 100, 300, 200), (620, 360, 420, 262))     # ends in either order: one line
    assert [len(g) for g in site.group_runs(reversed_ends)] == [2]


def test_a_satellites_pieces_curving_on_a_fisheye_stay_one_crossing():
    """An all-sky lens draws a satellite's straight path as a curve: one passing 50° from the zenith at 0.5°/s, seen
    30 s of every 60, turns 18° from one piece to the next, and a rule for straight lines split each pair of its
    consecutive reports. Its pieces here: an equidistant fisheye of radius 480 px centred at (652, 488)."""
    def on_sky(along_deg: float) -> tuple[float, float]:
        zenith, along = math.radians(50), math.radians(along_deg)
        x, y, z = math.cos(along) * math.sin(zenith), math.sin(along), math.cos(along) * math.cos(zenith)
        radius = 480 * math.degrees(math.acos(z)) / 90
        return 652 + radius * x / math.hypot(x, y), 488 + radius * y / math.hypot(x, y)

    pieces = [tuple(round(v) for v in (*on_sky(start), *on_sky(start + 15))) for start in (-30, 0, 30)]
    assert [len(g) for g in site.group_runs(crossing_rows(*pieces))] == [3]


def test_a_detection_without_a_streak_is_grouped_by_time_alone():
    """Older clients send no streak, and records stored before it have none: such neighbours stay grouped."""
    assert [len(g) for g in site.group_runs(crossing_rows(None, (420, 260, 320, 460), None))] == [3]
    assert [len(g) for g in site.group_runs(crossing_rows((100, 100, 300, 200), None))] == [2]
    assert [len(g) for g in site.group_runs(crossing_rows((5, 5, 5, 5), (420, 260, 320, 460)))] == [2]


def test_a_streak_of_no_length_is_one_crossing_only_within_the_gap_a_crossing_leaves():
    """A streak of no length has no direction to compare, but its distance still tells: a point across the frame
    from a short streak is another object, one by its end is not."""
    assert [len(g) for g in site.group_runs(crossing_rows((100, 100, 130, 115), (1200, 900, 1200, 900)))] == [1, 1]
    assert [len(g) for g in site.group_runs(crossing_rows((100, 100, 130, 115), (150, 140, 150, 140)))] == [2]
    assert [len(g) for g in site.group_runs(crossing_rows((100, 100, 100, 100), (900, 700, 900, 700)))] == [1, 1]
    assert [len(g) for g in site.group_runs(crossing_rows((100, 100, 100, 100), (110, 120, 110, 120)))] == [2]


def test_a_long_run_stays_whole_whatever_its_streaks():
    """Over 15 minutes of detections is clouds, rain or a light, whose streaks point every way: one long run."""
    streaks = [(100, 100, 300, 200), (420, 260, 320, 460)] * 16 + [(100, 100, 300, 200)]
    assert [len(g) for g in site.group_runs(crossing_rows(*streaks))] == [33]
    assert [len(g) for g in site.group_runs(crossing_rows(*streaks[:30]))] == [1] * 30
    assert [len(g) for g in site.group_runs(crossing_rows(*streaks[:31]))] == [1] * 31     # 900 s exactly: not over


def test_a_run_of_exactly_fifteen_minutes_is_still_a_possible_satellite():
    """LONG_RUN_S is the longest a crossing may last: a run of exactly 900 s is counted a possible satellite/plane,
    as `group_runs` splits it, not a long run."""
    start = datetime(2026, 9, 16, 22, 0, 0)
    run = [site.Row("obs01", f"{i}", start + timedelta(seconds=60 * i), 0.9, "i") for i in range(16)]
    section = site.Section("obs01", groups=site.group_runs(run))
    assert [len(g) for g in section.groups] == [16] and not section.is_long(section.groups[0])
    assert (section.possible_satellites, section.long_runs) == (1, 0)


def test_consecutive_detections_across_the_start_of_summer_time():
    """01:59:30 and 03:00:00 on the night clocks jump an hour are consecutive frames, 30 s apart: one run (a
    possible satellite), as the clock runs in the camera's zone."""
    rows = [site.Row("obs01", f"{i}", datetime(2021, 3, 28, *hms), 0.9, "i")
            for i, hms in enumerate([(1, 59, 0), (1, 59, 30), (3, 0, 0), (3, 5, 0)])]
    assert [len(g) for g in site.group_consecutive(rows, zone=ZoneInfo("Europe/Madrid"))] == [3, 1]


def test_coincidences_across_observatories_in_their_own_zones():
    madrid, london = ZoneInfo("Europe/Madrid"), ZoneInfo("Europe/London")
    at = datetime(2026, 9, 16, 23, 15, 7)                                  # Madrid = London + 1 h
    rows = [site.Row("obs01", "a", at, 0.9, "i"), site.Row("obs01", "b", at + timedelta(seconds=20), 0.9, "i"),
            site.Row("obs02", "c", at + timedelta(seconds=30), 0.9, "i"),
            site.Row("obs03", "d", at - timedelta(hours=1, seconds=-12), 0.9, "i"),      # 23:15:19 in Madrid
            site.Row("obs04", "e", at + timedelta(seconds=61), 0.9, "i")]         # 31 s after c
    zones = {"obs01": madrid, "obs02": madrid, "obs03": london}               # obs04: the service's zone
    site.mark_coincidences(rows, lambda obs_id: zones.get(obs_id, madrid))
    seen = {row.id: sorted(other.id for other in row.seen_also) for row in rows}
    assert seen == {"a": ["c", "d"], "b": ["c", "d"], "c": ["a", "b", "d"], "d": ["a", "b", "c"], "e": []}


def test_coincidences_across_the_start_of_summer_time():
    """Clocks jump from 02:00 to 03:00: 01:59:55 and 03:00:02 that night are 7 s apart, not an hour."""
    rows = [site.Row("obs01", "a", datetime(2021, 3, 28, 1, 59, 55), 0.9, "i"),
            site.Row("obs02", "b", datetime(2021, 3, 28, 3, 0, 2), 0.9, "i"),
            site.Row("obs02", "c", datetime(2021, 3, 28, 3, 0, 40), 0.9, "i")]
    site.mark_coincidences(rows, lambda obs_id: ZoneInfo("Europe/Madrid"))
    assert {row.id: [other.id for other in row.seen_also] for row in rows} == {"a": ["b"], "b": ["a"], "c": []}


def test_camera_clock_zones_come_from_the_observatories_else_the_service():
    from gualta import coincidence

    places = json.dumps({"obs03": {"lat": 51.5, "lon": -0.1, "tz": "Europe/London"},
                         "obs04": {"lat": 0, "lon": 0}})                # placed, but no tz: the service's too
    zone_of = coincidence.zones_from_env({"GUALTA_TIMEZONE": "Europe/Madrid", "GUALTA_OBSERVATORIES": places})
    assert (zone_of("obs03"), zone_of("obs09")) == (ZoneInfo("Europe/London"), ZoneInfo("Europe/Madrid"))
    assert zone_of("obs04") == ZoneInfo("Europe/Madrid")                 # was UTC
    broken = coincidence.zones_from_env({"GUALTA_TIMEZONE": "Europe/Madrid", "GUALTA_OBSERVATORIES": "{not json"})
    assert broken("obs03") == ZoneInfo("Europe/Madrid")                  # never a failure on the ingest path


def test_a_meteor_seen_from_two_observatories_is_linked_on_the_page(night):
    ingest(detection("obs02", frame("231520"), 0.93, seed=9), "obs02")        # obs01's lone meteor: 231507
    WEBSITE({"day": NIGHT}, None)
    html = (night / f"{NIGHT}.html").read_text()
    obs01 = html[html.index('id="obs-obs01"'):html.index('id="obs-obs02"')]
    obs02 = html[html.index('id="obs-obs02"'):]
    assert obs01.count("also seen from") == 1 and obs02.count("also seen from") == 1
    assert f'href="#obs02_{frame("231520")}">also seen from obs02 at 23:15:20<' in obs01
    assert f'href="#obs01_{frame("231507")}">also seen from obs01 at 23:15:07<' in obs02
    assert html.count("1 also seen from another observatory") == 2


def test_a_meteor_seen_from_a_camera_on_another_clock_says_which(night, monkeypatch):
    """A London camera's 22:15:20 is 23:15:20 in Madrid: linked as "also seen from obs03 at 22:15:20" beside a
    23:15:07 card, the two looked an hour apart. Where the linked clocks read otherwise, each says its zone."""
    places = {**OBSERVATORIES, "obs03": {"lat": 51.48, "lon": 0.0, "tz": "Europe/London"}}
    monkeypatch.setenv("GUALTA_OBSERVATORIES", json.dumps(places))
    ingest(detection("obs03", frame("221520"), 0.93, seed=9), "obs03")
    ingest(detection("obs02", frame("231510"), 0.93, seed=10), "obs02")
    WEBSITE({"day": NIGHT}, None)
    html = (night / f"{NIGHT}.html").read_text()
    obs01 = html[html.index('id="obs-obs01"'):html.index('id="obs-obs02"')]
    obs02 = html[html.index('id="obs-obs02"'):html.index('id="obs-obs03"')]
    obs03 = html[html.index('id="obs-obs03"'):]
    assert ">also seen from obs03 at 22:15:20 BST<" in obs01 and ">also seen from obs02 at 23:15:10<" in obs01
    assert ">also seen from obs03 at 22:15:20 BST<" in obs02 and ">also seen from obs01 at 23:15:07<" in obs02
    assert ">also seen from obs01 at 23:15:07 CEST<" in obs03 and ">also seen from obs02 at 23:15:10 CEST<" in obs03
    assert "2026-09-16 local time (CEST)" in obs01 and "2026-09-16 local time (CEST)" in obs02
    assert "2026-09-16 local time (BST)" in obs03
    assert html.count("local time (") == 3                 # the other cards, and clocks that read alike: as before


def test_a_meteor_filed_under_the_next_night_by_a_camera_on_utc_is_linked_both_ways(env, tmp_path, monkeypatch):
    """Tokyo's 20:30 is 11:30 UTC: a camera kept on UTC files it under the night before (AllSky's folder changes at
    noon on its clock), a camera on Tokyo's time under that night. Each page looked only at its own night's folder,
    so the meteor both saw was linked on neither."""
    tokyo = {"lat": 35.68, "lon": 139.69, "elevation_m": 40}
    monkeypatch.setenv("GUALTA_OBSERVATORIES", json.dumps({"obs01": {**tokyo, "tz": "Asia/Tokyo"},
                                                            "obs03": {**tokyo, "tz": "UTC"}}))
    root, schedule = tmp_path / "store", {"source": "gualta.schedule"}
    ingest(detection("obs03", "20260916113010", folder="20260915", seed=3), "obs03")
    ingest(detection("obs03", "20260916113110", folder="20260915", seed=4), "obs03")     # 50 s after obs01's
    site.handle({"day": "20260915"}, os.environ, nine_am(16))
    assert "also seen from" not in (root / "20260915.html").read_text()
    ingest(detection("obs01", "20260916203020", seed=5))
    summary = site.handle(schedule, os.environ, nine_am(17))
    assert (summary["night"], summary["refreshed"]) == ("20260916", ["20260915"])     # its links changed
    night, before = (root / "20260916.html").read_text(), (root / "20260915.html").read_text()
    assert night.count(">also seen from obs") == 1 and before.count(">also seen from obs") == 1
    assert 'href="20260915.html#obs03_20260916113010">also seen from obs03 at 11:30:10 UTC<' in night
    assert 'href="20260916.html#obs01_20260916203020">also seen from obs01 at 20:30:20 JST<' in before
    assert site.handle(schedule, os.environ, nine_am(17) + timedelta(hours=1))["refreshed"] == []


def test_a_late_report_filed_under_the_night_before_gets_its_link_on_the_next_nights_page(env, tmp_path, monkeypatch):
    """A camera on UTC back after 12 days files its meteor under the night before its partner's: that night was
    rebuilt (marked late) and linked it, but the partner's page, past the recent nights, never linked back."""
    tokyo = {"lat": 35.68, "lon": 139.69, "elevation_m": 40}
    monkeypatch.setenv("GUALTA_OBSERVATORIES", json.dumps({"obs01": {**tokyo, "tz": "Asia/Tokyo"},
                                                            "obs03": {**tokyo, "tz": "UTC"}}))
    root, later = tmp_path / "store", datetime(2026, 9, 28, 9, tzinfo=timezone.utc)
    ingest(detection("obs01", "20260916203020", seed=5))
    for day in range(15, 27):
        site.handle({"day": f"202609{day:02d}"}, os.environ, later)
    for marked in store.late_nights(store.LocalStore(root)):
        store.LocalStore(root).delete(store.late_key(marked))
    ingest(detection("obs03", "20260916113010", folder="20260915", seed=3), "obs03")        # 12 days late
    assert {"20260915", "20260916"} <= set(site.handle({"source": "gualta.schedule"}, os.environ, later)["refreshed"])
    assert ">also seen from obs01 at 20:30:20 JST<" in (root / "20260915.html").read_text()
    assert ">also seen from obs03 at 11:30:10 UTC<" in (root / "20260916.html").read_text()


@pytest.mark.parametrize("junk", [b"[]", b"null", b"3"])
def test_an_end_log_that_is_no_json_object_reads_as_none(env, tmp_path, junk):
    """An end-of-night log holding JSON but no object (written behind the ingest's back, cut short by hand) is read as
    no log: the page says so for that observatory and is built."""
    ingest(payload.build_log("start", "obs01", folder=NIGHT))
    store.LocalStore(tmp_path / "store").put(store.log_key(NIGHT, "obs01", "end"), junk)
    WEBSITE({"day": NIGHT}, None)
    html = (tmp_path / "store" / f"{NIGHT}.html").read_text()
    obs01 = html[html.index("<b>obs01</b>"):html.index("<b>obs02</b>")]
    assert "no end-of-night log" in obs01 and "did not report" not in obs01


def test_an_observatory_that_did_not_report_is_not_shown_as_a_quiet_night(env, tmp_path):
    """obs02 is configured but sent nothing this night (its client down): its section said "0 detections" and "No
    detections this night", as for a clear night watched to the end. It now says it did not report; obs03, which
    watched the night and found nothing, still says no detections."""
    ingest(detection("obs01", frame("231507"), 0.97))
    ingest(payload.build_log("start", "obs03", folder=NIGHT), "obs03")
    ingest(payload.build_log("end", "obs03", total=1440, folder=NIGHT), "obs03")
    WEBSITE({"day": NIGHT}, None)
    html = (tmp_path / "store" / f"{NIGHT}.html").read_text()
    obs02 = html[html.index('id="obs-obs02"'):html.index('id="obs-obs03"')]
    obs03 = html[html.index('id="obs-obs03"'):]
    assert "Did not report this night" in obs02 and "No detections this night" not in obs02
    assert "No detections this night" in obs03 and "Did not report" not in obs03
    summary = html[html.index('class="summary"'):html.index('id="obs-obs01"')]
    assert summary.count("did not report this night") == 1 and "1,440 frames processed" in summary
    assert "3 observatories (1 did not report)" in html


def test_a_run_longer_than_any_crossing_is_not_called_a_satellite(night):
    """33 detections 30 s apart (a sky misread for a quarter of an hour: clouds, rain on the dome) were grouped as one
    "possible satellite/plane": no satellite or plane takes that long to cross the sky. Such a run is called a long
    run; the three frames of obs01's satellite stay a possible satellite."""
    start = datetime(2026, 9, 17, 1, 0, 0)
    for i in range(33):
        ingest(detection("obs02", (start + timedelta(seconds=30 * i)).strftime("%Y%m%d%H%M%S"), 0.9, seed=i), "obs02")
    WEBSITE({"day": NIGHT}, None)
    html = (night / f"{NIGHT}.html").read_text()
    assert html.count("Long run: 33 consecutive detections over 16 minutes") == 1
    assert html.count("Possible satellite/plane: 3 consecutive detections") == 1
    summary = html[html.index('class="summary"'):html.index('id="obs-obs01"')]
    assert "1 possible satellite/plane" in summary and "1 long run" in summary
    assert summary.count("possible satellite/plane") == 1


def test_a_page_boxes_a_crossing_but_not_two_meteors_in_consecutive_frames(night):
    """The streaks the client sends reach the page: obs02's two meteors 30 s apart, pointing different ways, are two
    detections; its plane, two pieces on one line, one possible satellite/plane beside obs01's streakless three."""
    for i, (hhmmss, streak) in enumerate([("223000", (100, 100, 300, 200)), ("223030", (420, 260, 320, 460)),
                                         ("224000", (100, 100, 300, 200)), ("224030", (420, 262, 620, 360))]):
        ingest(detection("obs02", frame(hhmmss), 0.9, seed=10 + i, streak=streak), "obs02")
    WEBSITE({"day": NIGHT}, None)
    html = (night / f"{NIGHT}.html").read_text()
    assert html.count("Possible satellite/plane: 3 consecutive detections") == 1
    assert html.count("Possible satellite/plane: 2 consecutive detections") == 1
    assert "Possible satellite/plane: 2 consecutive" in html[html.index('id="obs-obs02"'):]
    summary = html[html.index('class="summary"'):html.index('id="obs-obs01"')]
    assert "5 detections · 1 possible satellite/plane" in summary


def test_counts_name_what_the_page_shows_held_back_candidates_apart(night):
    """obs01's satellite in three frames and a lone satellite it held back both carry "possible satellite/plane",
    but its summary said "1 possible satellite/plane"; and the candidates held back (satellites, clouds) were
    counted with the detections ("10 detections", read as ten meteors), on the page and in the archive. A lone
    flagged satellite counts as one more, a boxed run of flagged ones once; held-back candidates are counted apart,
    in the archive too (a count kept as one number by an earlier version stays what its page was built with)."""
    ingest(detection("obs01", frame("224500"), 0.97, seed=20, flag="satellite"))
    for i, (hhmmss, flag) in enumerate([("223000", "satellite"), ("223030", "satellite"), ("200000", "cloud")]):
        ingest(detection("obs02", frame(hhmmss), 0.9, seed=21 + i, flag=flag), "obs02")
    summary = WEBSITE({"day": NIGHT}, None)
    assert (summary["detections"], summary["held_back"]) == (6, 4)
    html = (night / f"{NIGHT}.html").read_text()
    assert "6 detections · 4 held back · 2 observatories" in html
    boxes = html[html.index('class="summary"'):html.index('id="obs-obs01"')].split('class="stat"')[1:]
    assert "5 detections · 1 held back · 2 possible satellite/plane" in boxes[0]
    assert "1 detection · 3 held back · 1 possible satellite/plane" in boxes[1]
    assert "2026-09-16</a> · 6 detections · 4 held back" in (night / "archive.html").read_text()
    (night / store.ARCHIVE_COUNTS).write_text(json.dumps({NIGHT: 10}))             # kept by an earlier version,
    made = json.loads((night / store.page_inputs_key(NIGHT)).read_text())          # whose page kept no counts
    (night / store.page_inputs_key(NIGHT)).write_text(json.dumps({k: v for k, v in made.items() if k != "counts"}))
    WEBSITE({"day": "20260915"}, None)
    assert "2026-09-16</a> · 10 detections</li>" in (night / "archive.html").read_text()


def test_each_card_says_what_became_of_its_telegram_post(night):
    """Cards showed the service's internal status ("Telegram: not requested" on every card of an observatory without
    a channel, "Telegram: not posted: over 50 this night"). They say what happened to the post, and nothing where
    none was asked for."""
    statuses = {frame("212000"): "sent", frame("212030"): "failed: RetryAfter", frame("212100"): "pending",
                frame("231507"): "not posted: over 50 this night", "20260917031233": "not requested"}
    for frame_id, status in statuses.items():
        path = night / "detections" / NIGHT / f"obs01_{frame_id}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "telegram_status": status}))
    WEBSITE({"day": NIGHT}, None)
    html = (night / f"{NIGHT}.html").read_text()
    details = {frame_id: html[html.index(f'id="obs01_{frame_id}"'):].split("</article>")[0]
               for frame_id in statuses}
    assert "· posted to Telegram" in details[frame("212000")]
    assert "· Telegram post failed (RetryAfter)" in details[frame("212030")]
    assert "· not posted to Telegram yet" in details[frame("212100")]
    assert "· not posted to Telegram (over 50 this night)" in details[frame("231507")]
    assert "Telegram" not in details["20260917031233"] and "Telegram:" not in html


def test_observatories_are_in_name_order_whatever_the_case(night, monkeypatch):
    monkeypatch.setenv("GUALTA_API_KEYS", f"{os.environ['GUALTA_API_KEYS']},Obs015:key-upper-obs-12345")
    assert INGEST(event(detection("Obs015", frame("224000"), 0.95, seed=11), "key-upper-obs-12345"),
                  None)["statusCode"] == 200
    WEBSITE({"day": NIGHT}, None)
    html = (night / f"{NIGHT}.html").read_text()
    assert html.index('id="obs-obs01"') < html.index('id="obs-Obs015"') < html.index('id="obs-obs02"')


def test_navigation_and_index_follow_the_latest_night(env, tmp_path):
    root = tmp_path / "store"
    for day in ("20260914", "20260915", "20260916", "20260915"):        # a past night rebuilt last
        WEBSITE({"day": day}, None)
    html = (root / "20260916.html").read_text()
    assert '<a href="20260915.html">← 2026-09-15</a>' in html
    assert html.index('href="20260915.html">2026-09-15') < html.index('href="20260914.html">2026-09-14')
    assert 'href="20260916.html">2026-09-16 →' in (root / "20260915.html").read_text()
    # 20260915 was rebuilt last but is not the latest night: index stays on 20260916
    assert (root / "index.html").read_bytes() == (root / "20260916.html").read_bytes()


def test_every_build_writes_the_page_for_addresses_not_made_yet(env, tmp_path):
    """404.html, the S3 website's error document: a post's link followed before the morning's page finds it."""
    missing = tmp_path / "store" / store.MISSING_PAGE
    for event in ({"day": "20260916"}, {"source": "gualta.schedule"}):
        missing.unlink(missing_ok=True)
        WEBSITE(event, None)
        assert "No page here yet" in missing.read_text() and 'href="archive.html"' in missing.read_text()


def test_schedule_event_builds_the_night_that_just_ended(env, monkeypatch):
    madrid_9am = datetime(2026, 9, 17, 7, 0, tzinfo=timezone.utc)          # 09:00 CEST
    assert site.default_night(madrid_9am, os.environ) == "20260916"
    assert site.default_night(madrid_9am.replace(hour=20), os.environ) == "20260917"
    for hour in (6, 7, 11, 12, 15, 21):        # 08:00 … 23:00 in Madrid: whenever the page is scheduled
        assert ended_night(madrid_9am.replace(hour=hour), os.environ) == "20260916", hour
    for hour in (0, 3, 5):                     # 02:00 … 07:00: the night of the 16th is still being observed
        assert ended_night(madrid_9am.replace(hour=hour), os.environ) == "20260915", hour
    assert ended_night(madrid_9am.replace(day=16, hour=22), os.environ) == "20260915"     # midnight
    assert WEBSITE({"source": "gualta.schedule"}, None)["night"] == allsky.ended_night(   # now, whatever the hour
        datetime.now(timezone.utc).astimezone(ZoneInfo("Europe/Madrid")))                 # (it was off 00:00–08:00)


def test_a_page_scheduled_before_08_00_builds_last_night_when_the_night_ends_earlier(env, night, monkeypatch):
    """A page at 07:00 built the night before last (the 08:00 end was fixed in): GUALTA_NIGHT_END sets the end."""
    madrid_7am = datetime(2026, 9, 18, 5, 0, tzinfo=timezone.utc)          # 07:00 CEST on the 18th
    assert ended_night(madrid_7am, os.environ) == NIGHT            # by 08:00, the 17th is still observed
    monkeypatch.setenv("GUALTA_NIGHT_END", "06:30")
    assert ended_night(madrid_7am, os.environ) == "20260917"
    assert ended_night(madrid_7am.replace(hour=4), os.environ) == NIGHT      # 06:00: not ended yet
    assert site.handle({"source": "gualta.schedule"}, now=madrid_7am)["night"] == "20260917"
    for wrong in ("1200", "0860", "8"):
        monkeypatch.setenv("GUALTA_NIGHT_END", wrong)
        with pytest.raises(ServiceConfigError, match="GUALTA_NIGHT_END"):
            ended_night(madrid_7am, os.environ)


def test_a_page_scheduled_in_the_afternoon_is_last_nights(env, tmp_path):
    """PageSchedule or --site-at after noon: the night that ended that morning, its failed posts tried again — not
    tonight's empty page made the latest (last night's then never got one)."""
    ingest(detection("obs01", "20260916231507"))
    summary = site.handle({"source": "gualta.schedule"}, os.environ, datetime(2026, 9, 17, 13, 0, tzinfo=timezone.utc))
    assert (summary["night"], summary["detections"]) == ("20260916", 1)
    assert (tmp_path / "store" / "index.html").read_bytes() == (tmp_path / "store" / "20260916.html").read_bytes()
    assert not (tmp_path / "store" / "20260917.html").exists()
    with pytest.raises(ValueError):
        WEBSITE({"day": "20261340"}, None)


def nine_am(day: int) -> datetime:
    """09:00 in Madrid (the service's zone in these tests) on 2026-09-`day`."""
    return datetime(2026, 9, day, 7, 0, tzinfo=timezone.utc)


def test_a_scheduled_build_brings_recent_pages_up_to_date(env, tmp_path):
    """Reports an observatory delivers late (after an outage) reach their night's page at the next scheduled build,
    and each page gains its link to the next night; a page whose inputs did not change is left as it is."""
    root, schedule = tmp_path / "store", {"source": "gualta.schedule"}
    ingest(detection("obs01", "20260915231507"))
    assert site.handle(schedule, os.environ, nine_am(16))["refreshed"] == []
    assert "2026-09-16 →" not in (root / "20260915.html").read_text()
    ingest(detection("obs02", "20260915221500", seed=2), "obs02")                 # obs02's night, delivered late
    ingest(payload.build_log("end", "obs02", total=1440, folder="20260915"), "obs02")
    ingest(detection("obs01", "20260916231507"))
    summary = site.handle(schedule, os.environ, nine_am(17))
    assert (summary["night"], summary["refreshed"]) == ("20260916", ["20260915"])
    page = (root / "20260915.html").read_text()
    assert 'id="obs02_20260915221500"' in page and "1,440 frames processed" in page
    assert '<a href="20260916.html">2026-09-16 →</a>' in page
    before = (root / "20260915.html").read_bytes()
    assert site.handle(schedule, os.environ, nine_am(17) + timedelta(hours=2))["refreshed"] == []
    assert (root / "20260915.html").read_bytes() == before                     # not rebuilt (its time would change)
    ingest(payload.build_log("end", "obs02", total=1500, folder="20260915"), "obs02")   # the night reported again
    assert site.handle(schedule, os.environ, nine_am(17) + timedelta(hours=2.5))["refreshed"] == ["20260915"]
    assert "1,500 frames processed" in (root / "20260915.html").read_text()
    assert json.loads((root / "pages" / "20260915.json").read_text())["next"] == ["20260916"]


def test_only_the_last_nights_are_refreshed(env, tmp_path):
    for day in range(1, 10):                                    # built one by one: none knew the next night then
        site.handle({"day": f"202609{day:02d}"}, os.environ, nine_am(day + 1))
    summary = site.handle({"source": "gualta.schedule"}, os.environ, nine_am(11))
    assert summary["night"] == "20260910"
    assert summary["refreshed"] == [f"202609{day:02d}" for day in range(10 - site.REFRESH_NIGHTS, 10)]
    assert "2026-09-02 →" not in (tmp_path / "store" / "20260901.html").read_text()
    assert "2026-09-04 →" in (tmp_path / "store" / "20260903.html").read_text()


class CountingStore(store.LocalStore):
    """A local store that counts its listings (by prefix) and reads (by key), as a reviewer's wrapper on S3 did."""

    def __init__(self, root):
        super().__init__(root)
        self.listed, self.read = Counter(), Counter()

    def keys(self, prefix: str = "", recursive: bool = True) -> list[str]:
        self.listed[prefix] += 1
        return super().keys(prefix, recursive)

    def get(self, key: str) -> bytes | None:
        self.read[key] += 1
        return super().get(key)


def reported_nights(days: range) -> None:
    """A detection and an end log from each of two observatories every night of `days`, and each night's page (built
    newest first: each links to the next)."""
    for day in days:
        live = datetime(2026, 9, day, 21, 20, tzinfo=timezone.utc)
        for i, obs_id in enumerate(("obs01", "obs02")):
            ingest_module.handle(event(detection(obs_id, f"202609{day:02d}2315{i:02d}", seed=i), KEYS[obs_id]),
                                 os.environ, live)
            ingest_module.handle(event(payload.build_log("end", obs_id, total=1440, folder=f"202609{day:02d}"),
                                       KEYS[obs_id]), os.environ, live)
    for day in reversed(days):
        site.handle({"day": f"202609{day:02d}"}, os.environ, nine_am(days[-1] + 1))


def earlier_records_read(counting: CountingStore) -> dict[str, int]:
    """{key: reads} of the detection records read but the night built (the 10th: `reported_nights(range(1, 11))`)."""
    return {key: times for key, times in counting.read.items()
            if key.startswith("detections/") and not key.startswith("detections/20260910/")}


def test_a_build_that_changes_nothing_lists_each_night_and_reads_each_page_record_once(env, tmp_path, monkeypatch):
    """Since pages link across nights, each recent page's staleness check listed its night and both neighbours (the
    same night again for the next page) and each archive write read up to 31 page records again: 10 nights, 2
    observatories, nothing new — LIST 23 -> 49, GET 10 -> 19 store calls (20-50 ms each on S3). The nights with a
    page were listed 3 times (the build's own page, rewritten, dropped the listing) and the night's end logs read
    twice (for what the page was made from, then for the page): once each now."""
    reported_nights(range(1, 11))
    counting = CountingStore(tmp_path / "store")
    monkeypatch.setattr(store, "store_from_env", lambda env: counting)
    assert site.handle({"source": "gualta.schedule"}, os.environ, nine_am(11))["refreshed"] == []
    nights = {prefix: times for prefix, times in counting.listed.items() if store.NIGHT_FOLDER.fullmatch(prefix)}
    records = {key: times for key, times in counting.read.items() if store.PAGE_RECORD.fullmatch(key)}
    assert {f"detections/202609{day:02d}/" for day in range(2, 12)} <= nights.keys()   # the checks' neighbours too
    assert max(nights.values()) == 1, nights
    assert len(records) == 9 and max(records.values()) == 1, records
    assert counting.listed[""] == 1                                                  # the nights with a page
    logs = {key: times for key, times in counting.read.items() if store.NIGHT_LOG.fullmatch(key)}
    assert {"logs/20260910/obs01_end.json", "logs/20260910/obs02_end.json"} <= logs.keys()
    assert max(logs.values()) == 1, logs
    assert earlier_records_read(counting) == {}                      # none of the nights it does not rebuild


def test_a_page_showing_a_post_not_made_yet_is_rebuilt_once_it_is_made(env, tmp_path, monkeypatch):
    """A page built while one of its detections was being posted said "not posted to Telegram yet" until something
    else of its night changed: the post made, nothing it was made from had. The next builds read that record alone
    again (no other of the nights they do not rebuild) and rebuild the page once its post is made."""
    reported_nights(range(1, 11))
    in_flight = tmp_path / "store" / "detections" / "20260905" / "obs01_20260905231500.json"
    in_flight.write_text(json.dumps({**json.loads(in_flight.read_text()), "telegram": True,
                                     "telegram_status": "pending"}))
    site.handle({"day": "20260905"}, os.environ, nine_am(11))
    counting = CountingStore(tmp_path / "store")
    monkeypatch.setattr(store, "store_from_env", lambda env: counting)
    assert site.handle({"source": "gualta.schedule"}, os.environ, nine_am(11))["refreshed"] == []
    assert earlier_records_read(counting) == {"detections/20260905/" + in_flight.name: 1}
    in_flight.write_text(json.dumps({**json.loads(in_flight.read_text()), "telegram_status": "sent"}))
    assert site.handle({"source": "gualta.schedule"}, os.environ, nine_am(11))["refreshed"] == ["20260905"]
    page = (tmp_path / "store" / "20260905.html").read_text()
    assert "posted to Telegram" in page and "not posted to Telegram yet" not in page
    counting.read.clear()
    assert site.handle({"source": "gualta.schedule"}, os.environ, nine_am(11))["refreshed"] == []
    assert earlier_records_read(counting) == {}


def test_a_page_built_before_pages_kept_their_unsent_posts_is_rebuilt_once(env, tmp_path):
    """A page record written before pages kept the posts they showed failed (no 'unsent') was never found out of
    date by a post made later: the page said "Telegram post failed" for good, though posting again marked its night
    late. Such a page is rebuilt once."""
    reported_nights(range(1, 11))
    failed = tmp_path / "store" / "detections" / "20260905" / "obs01_20260905231500.json"
    failed.write_text(json.dumps({**json.loads(failed.read_text()), "telegram": True,
                                  "telegram_status": "failed: HTTP 502"}))
    site.handle({"day": "20260905"}, os.environ, nine_am(11))
    record = tmp_path / "store" / store.page_inputs_key("20260905")
    made = json.loads(record.read_text())
    del made["unsent"]                                                          # as an earlier release wrote it
    record.write_text(json.dumps(made))
    failed.write_text(json.dumps({**json.loads(failed.read_text()), "telegram_status": "sent"}))
    store.LocalStore(tmp_path / "store").put(store.late_key("20260905"), b"")   # as posting again marks it
    assert site.handle({"source": "gualta.schedule"}, os.environ, nine_am(11))["refreshed"] == ["20260905"]
    assert "Telegram post failed" not in (tmp_path / "store" / "20260905.html").read_text()
    assert site.handle({"source": "gualta.schedule"}, os.environ, nine_am(11))["refreshed"] == []


def test_a_refreshing_build_lists_the_nights_with_a_page_once(env, tmp_path, monkeypatch):
    """A build that refreshed two pages (one of a night marked late) listed the nights with a page 7 times: at the
    missed nights, its own page, the refresh, each page rebuilt, the late mark and the archive. Once now; a page it
    writes for a night that had none is linked all the same (its write drops the listing)."""
    reported_nights(range(1, 11))
    for key in ("20260907.html", store.page_inputs_key("20260907")):              # a morning's build missed
        (tmp_path / "store" / key).unlink()
    for day in (8, 9):                                                             # delivered late
        ingest_module.handle(event(detection("obs01", f"202609{day:02d}231600", seed=7), KEYS["obs01"]), os.environ,
                             nine_am(10))
    counting = CountingStore(tmp_path / "store")
    monkeypatch.setattr(store, "store_from_env", lambda env: counting)
    assert site.handle({"source": "gualta.schedule"}, os.environ, nine_am(11))["refreshed"] == [
        "20260906", "20260907", "20260908", "20260909"]
    assert counting.listed[""] == 2                                 # again after the missed night's page was written
    assert '<a href="20260907.html">2026-09-07 →</a>' in (tmp_path / "store" / "20260906.html").read_text()
    assert "2026-09-07" in (tmp_path / "store" / store.ARCHIVE_PAGE).read_text()
    counting.listed.clear()
    for day in (8, 9):
        ingest_module.handle(event(detection("obs02", f"202609{day:02d}231700", seed=8), KEYS["obs02"]), os.environ,
                             nine_am(10))
    assert site.handle({"source": "gualta.schedule"}, os.environ, nine_am(11))["refreshed"] == ["20260908",
                                                                                                "20260909"]
    assert counting.listed[""] == 1


def test_a_build_sees_what_was_stored_after_the_build_before(env, tmp_path):
    """A build lists each night and reads each page's record once; the next build, a warm Lambda's included, lists
    and reads them again: a report delivered late in between reaches its page."""
    reported_nights(range(1, 5))
    assert site.handle({"source": "gualta.schedule"}, os.environ, nine_am(5))["refreshed"] == []
    ingest_module.handle(event(detection("obs02", "20260903231600", seed=5), KEYS["obs02"]), os.environ, nine_am(4))
    assert site.handle({"source": "gualta.schedule"}, os.environ, nine_am(5))["refreshed"] == ["20260903"]
    assert 'id="obs02_20260903231600"' in (tmp_path / "store" / "20260903.html").read_text()


def test_pages_refreshed_together_write_the_archive_once_with_their_counts(env, tmp_path, monkeypatch):
    """A refresh of many pages read and wrote the archive (1 GET, 2 PUTs) once per page: once after them now, with
    every refreshed night's count."""
    for day in range(1, 5):
        site.handle({"day": f"202609{day:02d}"}, os.environ, nine_am(day + 1))
    for day in (2, 3):                                               # delivered late
        ingest(detection("obs01", f"202609{day:02d}231507", seed=day))
    archive_writes, put = [], store.LocalStore.put
    monkeypatch.setattr(store.LocalStore, "put", lambda self, key, data: (
        archive_writes.append(key) if key in (store.ARCHIVE_PAGE, store.ARCHIVE_COUNTS) else None,
        put(self, key, data))[1])
    summary = site.handle({"source": "gualta.schedule"}, os.environ, nine_am(6))
    assert summary["refreshed"] == ["20260901", "20260902", "20260903", "20260904"]     # each gains its next night
    assert sorted(archive_writes) == sorted([store.ARCHIVE_PAGE, store.ARCHIVE_COUNTS] * 2)  # tonight's, the refresh's
    counts = json.loads((tmp_path / "store" / store.ARCHIVE_COUNTS).read_text())
    assert {night: count["detections"] for night, count in counts.items()} == {
        "20260901": 0, "20260902": 1, "20260903": 1, "20260904": 0, "20260905": 0}


def test_reports_delivered_after_a_long_outage_reach_their_pages(env, tmp_path):
    """An observatory back after three weeks: its reports for nights older than the refresh window, or for a night
    that never had a page, were posted to Telegram with a link to a page that never showed them. The ingest marks
    each ended night it stores into; the next scheduled build brings those pages up to date, once."""
    root, schedule = tmp_path / "store", {"source": "gualta.schedule"}
    for day in range(2, 17):                                                    # a page every morning
        site.handle(schedule, os.environ, nine_am(day))
    back = datetime(2026, 9, 17, 6, 30, tzinfo=timezone.utc)                   # 08:30 in Madrid on the 17th
    for fid in ("20260905231507", "20260820231507", "20260916231507"):
        assert ingest_module.handle(event(detection("obs02", fid), KEYS["obs02"]), os.environ, back)["statusCode"] == 200
    tonight = datetime(2026, 9, 17, 21, 0, tzinfo=timezone.utc)
    assert ingest_module.handle(event(detection("obs01", "20260917225000")), os.environ, tonight)["statusCode"] == 200
    assert store.late_nights(store.LocalStore(root)) == ["20260820", "20260905"]   # not the night just ended, nor tonight

    summary = site.handle(schedule, os.environ, nine_am(17))
    assert (summary["night"], summary["refreshed"]) == ("20260916", ["20260820", "20260905", "20260915"])
    assert 'id="obs02_20260905231507"' in (root / "20260905.html").read_text()
    assert 'id="obs02_20260820231507"' in (root / "20260820.html").read_text()
    assert 'id="obs02_20260916231507"' in (root / "20260916.html").read_text()
    assert store.late_nights(store.LocalStore(root)) == []                     # marks taken off: not looked at again
    assert site.handle(schedule, os.environ, nine_am(17) + timedelta(hours=1))["refreshed"] == []


def test_pages_rebuilt_together_after_an_outage_each_link_to_the_next(env, tmp_path):
    """Eleven nights reported on the morning the service came back are built together, oldest first: each page
    linked "next" to the night the service came back — the later ones had no page yet — and kept that link for good
    past the refresh window (a reader going forward skipped ten nights). Each now links to the night after it."""
    root, schedule = tmp_path / "store", {"source": "gualta.schedule"}
    for day in (2, 3):
        site.handle(schedule, os.environ, nine_am(day))                         # the pages of the 1st and the 2nd
    back = datetime(2026, 9, 15, 6, 30, tzinfo=timezone.utc)
    for day in range(3, 14):
        fid = f"202609{day:02d}231507"
        assert ingest_module.handle(event(detection("obs02", fid), KEYS["obs02"]), os.environ, back)["statusCode"] \
            == 200
    assert site.handle(schedule, os.environ, nine_am(15))["night"] == "20260914"
    for day in range(1, 14):
        night, following = f"202609{day:02d}", f"202609{day + 1:02d}"
        assert json.loads((root / "pages" / f"{night}.json").read_text())["next"] == [following], night
        assert f'<a href="{following}.html">' in (root / f"{night}.html").read_text()


def test_a_late_page_that_could_not_be_rebuilt_stays_marked(env, tmp_path, monkeypatch):
    root = tmp_path / "store"
    site.handle({"day": "20260905"}, os.environ, nine_am(6))
    back = datetime(2026, 9, 17, 6, 30, tzinfo=timezone.utc)
    ingest_module.handle(event(detection("obs02", "20260905231507"), KEYS["obs02"]), os.environ, back)
    built = site.build_day

    def failing(target, night, *args, **kwargs):
        if night == "20260905":
            raise store.StoreError("S3 put_object failed: SlowDown")
        return built(target, night, *args, **kwargs)

    monkeypatch.setattr(site, "build_day", failing)
    with pytest.raises(store.StoreError):
        site.handle({"source": "gualta.schedule"}, os.environ, nine_am(17))
    assert store.late_nights(store.LocalStore(root)) == ["20260905"]           # tried again next time


def cut_off_at(monkeypatch, night: str):
    """Make the page build stop at `night` as the Lambda's time running out does (no Python exception caught);
    returns the real `site.build_day`."""
    built = site.build_day

    def cut_off(target, building, *args, **kwargs):
        if building == night:
            raise SystemExit("the Lambda's time is up")
        return built(target, building, *args, **kwargs)

    monkeypatch.setattr(site, "build_day", cut_off)
    return built


def test_a_build_cut_off_or_capped_leaves_the_other_late_nights_marked(env, tmp_path, monkeypatch):
    """Every late mark was taken off before any page was rebuilt: a build cut off (the Lambda's time up, no Python
    exception to put them back) lost the marks of the pages it had not reached, for good once they were past the
    refresh window, and a client's backlog of many nights was all one build's to do. A mark goes once its page is
    up to date, and a build takes the latest LATE_PER_BUILD marked nights."""
    root = store.LocalStore(tmp_path / "store")
    for night in ["2026080" + str(day) for day in range(1, 6)] + [f"202609{day:02d}" for day in range(5, 13)]:
        site.handle({"day": night}, os.environ, nine_am(14))          # the last 8 fill the refresh window
    back = datetime(2026, 9, 17, 6, 30, tzinfo=timezone.utc)
    for i, night in enumerate(("20260801", "20260803", "20260805")):
        ingest_module.handle(event(detection("obs02", f"{night}231507", seed=i), KEYS["obs02"]), os.environ, back)
    monkeypatch.setattr(site, "LATE_PER_BUILD", 2)
    built = cut_off_at(monkeypatch, "20260805")
    with pytest.raises(SystemExit):
        site.handle({"source": "gualta.schedule"}, os.environ, nine_am(17))
    assert store.late_nights(root) == ["20260801", "20260805"]    # 20260803 rebuilt; 20260801 past the cap
    monkeypatch.setattr(site, "build_day", built)
    refreshed = site.handle({"source": "gualta.schedule"}, os.environ, nine_am(17))["refreshed"]
    assert {"20260801", "20260805"} <= set(refreshed) and "20260803" not in refreshed
    assert store.late_nights(root) == []
    for night in ("20260801", "20260803", "20260805"):
        assert f"obs02_{night}231507" in (tmp_path / "store" / f"{night}.html").read_text()


def test_late_pages_built_together_lose_their_marks_in_that_build(env, tmp_path, monkeypatch):
    """Three nights with no page delivered late together: the build made each page linking the next, but the marks of
    all but the last came back, each checked before the next night's page existed — and a second build rebuilt
    nothing. They go in the build that brings the pages up to date; a build cut off keeps those it did not reach."""
    root, schedule, now = store.LocalStore(tmp_path / "store"), {"source": "gualta.schedule"}, \
        datetime(2026, 9, 20, 10, 0, tzinfo=timezone.utc)
    late = ["20260916", "20260917", "20260918"]
    for i, night in enumerate(late):
        ingest_module.handle(event(detection("obs01", f"{night}231507", seed=i)), os.environ, now)
    assert store.late_nights(root) == late
    summary = site.handle(schedule, os.environ, now)
    assert (summary["night"], summary["refreshed"]) == ("20260919", late)
    assert store.late_nights(root) == []
    ingest_module.handle(event(detection("obs01", "20260916231607", seed=3)), os.environ, now)
    ingest_module.handle(event(detection("obs01", "20260917231607", seed=4)), os.environ, now)
    cut_off_at(monkeypatch, "20260917")
    with pytest.raises(SystemExit):
        site.handle(schedule, os.environ, now)
    assert store.late_nights(root) == ["20260917"]


def test_a_late_page_linking_a_page_the_cut_off_build_never_wrote_keeps_its_mark(env, tmp_path, monkeypatch):
    """Late nights with no page yet, the build cut off before the second: the first page was written linking the
    second as its next, and its mark went though that page was never made (its link a 404 till a later report)."""
    root, now = store.LocalStore(tmp_path / "store"), datetime(2026, 9, 20, 10, 0, tzinfo=timezone.utc)
    late = ["20260916", "20260917", "20260918"]
    for i, night in enumerate(late):
        ingest_module.handle(event(detection("obs01", f"{night}231507", seed=i)), os.environ, now)
    cut_off_at(monkeypatch, "20260917")
    with pytest.raises(SystemExit):
        site.handle({"source": "gualta.schedule"}, os.environ, now)
    assert root.get("20260916.html") is not None and root.get("20260917.html") is None
    assert store.late_nights(root) == late


def test_a_report_stored_while_a_late_mark_is_taken_off_keeps_it(env, tmp_path, monkeypatch):
    """A report stored between the check that a late page is up to date and the removal of its mark lost the mark:
    the night, past the refresh window, stayed out of date for good."""
    root = store.LocalStore(tmp_path / "store")
    for night in ["20260801"] + [f"202609{day:02d}" for day in range(5, 13)]:
        site.handle({"day": night}, os.environ, nine_am(14))
    back = datetime(2026, 9, 17, 6, 30, tzinfo=timezone.utc)
    ingest_module.handle(event(detection("obs02", "20260801231507"), KEYS["obs02"]), os.environ, back)
    built, is_stale, stored = site.build_day, site.page_is_stale, []

    def building(target, night, *args, **kwargs):
        if night == "20260801":
            stored.append(None)
        return built(target, night, *args, **kwargs)

    def a_report_right_after_the_check(target, night, *args):
        answer = is_stale(target, night, *args)
        if night == "20260801" and len(stored) == 1:            # its page just rebuilt, found up to date
            stored.append(None)
            ingest_module.handle(event(detection("obs02", "20260801231607", seed=1), KEYS["obs02"]), os.environ,
                                 back)
        return answer

    monkeypatch.setattr(site, "build_day", building)
    monkeypatch.setattr(site, "page_is_stale", a_report_right_after_the_check)
    site.handle({"source": "gualta.schedule"}, os.environ, nine_am(17))
    assert store.late_nights(root) == ["20260801"]
    site.handle({"source": "gualta.schedule"}, os.environ, nine_am(17))
    assert "obs02_20260801231607" in (tmp_path / "store" / "20260801.html").read_text()
    assert store.late_nights(root) == []


def test_a_report_stored_after_a_late_page_is_built_keeps_its_mark(env, tmp_path, monkeypatch):
    """A report stored after a late night's page was built, before its mark came off, lost the mark: the check that
    the page is up to date read the night's folder as the build had listed it, and that report never reached it."""
    root = store.LocalStore(tmp_path / "store")
    for night in ["20260801"] + [f"202609{day:02d}" for day in range(5, 13)]:
        site.handle({"day": night}, os.environ, nine_am(14))
    back = datetime(2026, 9, 17, 6, 30, tzinfo=timezone.utc)
    ingest_module.handle(event(detection("obs02", "20260801231507"), KEYS["obs02"]), os.environ, back)
    built = site.build_day

    def a_report_right_after_the_build(target, night, *args, **kwargs):
        summary = built(target, night, *args, **kwargs)
        if night == "20260801":
            ingest_module.handle(event(detection("obs02", "20260801231607", seed=1), KEYS["obs02"]), os.environ,
                                 back)
        return summary

    monkeypatch.setattr(site, "build_day", a_report_right_after_the_build)
    site.handle({"source": "gualta.schedule"}, os.environ, nine_am(17))
    assert store.late_nights(root) == ["20260801"]
    monkeypatch.setattr(site, "build_day", built)
    site.handle({"source": "gualta.schedule"}, os.environ, nine_am(17))
    assert "obs02_20260801231607" in (tmp_path / "store" / "20260801.html").read_text()


def test_index_stays_on_the_latest_night_that_has_begun(env, tmp_path):
    """A page asked for tonight's night before it began (allowed: a camera east of the service starts earlier) made
    index.html an empty night, and last night's page built after it was no longer the latest."""
    root = tmp_path / "store"
    ingest(detection("obs01", "20260916231507"))
    morning = datetime(2026, 9, 17, 6, 30, tzinfo=timezone.utc)                # 08:30 in Madrid: night of the 16th
    assert site.handle({"day": "20260917"}, os.environ, morning)["written"] == ["20260917.html", "archive.html"]
    assert site.handle({"source": "gualta.schedule"}, os.environ, nine_am(17))["written"] == [
        "20260916.html", "index.html", "archive.html"]
    assert (root / "index.html").read_bytes() == (root / "20260916.html").read_bytes()
    evening = datetime(2026, 9, 17, 19, 0, tzinfo=timezone.utc)                # 21:00: tonight has begun
    assert site.handle({"day": "20260917"}, os.environ, evening)["written"] == ["20260917.html", "index.html",
                                                                                 "archive.html"]


def test_stored_text_is_escaped(env, tmp_path):
    root = tmp_path / "store"
    ingest(detection())
    key = f"detections/{NIGHT}/obs01_{frame('231507')}.json"
    record = json.loads((root / key).read_text())
    record.update(flag="<img src=x onerror=alert(1)>", model="\"><script>alert(2)</script>", score="<b>")
    store.write_json(store.LocalStore(root), key, record)
    WEBSITE({"day": NIGHT}, None)
    html = (root / f"{NIGHT}.html").read_text()
    assert "<img src=x" not in html and "<script>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert '<span class="vh">meteor score unknown</span><span aria-hidden="true">?</span>' in html   # not a number


def looks(page, path, width, height, shot):
    page.set_viewport_size({"width": width, "height": height})
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")  # lazy ones a jump
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=10_000)   # skipped never loaded
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shot), full_page=True)
    return page.evaluate("""() => ({
        overflow: document.documentElement.scrollWidth - window.innerWidth,
        images: [...document.images].map(i => [i.naturalWidth, i.getBoundingClientRect().width]),
        cards: [...document.querySelectorAll('.card')].map(c => c.getBoundingClientRect().width),
        title: document.title})""")


def test_the_longest_obs_id_fits_a_small_phone(night, tmp_path, monkeypatch):
    """An obs_id may be 32 characters without a break: the navigation and headings wrap it, the page does not
    scroll sideways at 320 px. The ISS passes' table fits its box too (it overflowed by 31 px, its 'trail' column
    cut to "in shadov", seen only by swiping the box sideways)."""
    long_id = "W" * 32
    monkeypatch.setenv("GUALTA_API_KEYS", f"{os.environ['GUALTA_API_KEYS']},{long_id}:key-long-obs-12345")
    assert INGEST(event(detection(long_id, frame("224000"), 0.95, seed=11), "key-long-obs-12345"),
                  None)["statusCode"] == 200
    WEBSITE({"day": NIGHT}, None)
    with browser_page(320, 640) as page:
        for width in (320, 360):
            view = looks(page, night / f"{NIGHT}.html", width, 640, tmp_path / f"long-{width}.png")
            assert view["overflow"] <= 0, f"horizontal scrolling at {width} px: {view['overflow']} px"
            boxes = page.evaluate("""() => [...document.querySelectorAll('.passes')].filter(box =>
                box.querySelector('table')).map(box => box.scrollWidth - box.clientWidth)""")     # swiped sideways
            assert boxes and max(boxes) <= 0, f"ISS passes wider than their box at {width} px: {boxes}"


def test_flags_are_named_for_the_reader_and_held_back_candidates_look_so(night, tmp_path):
    """A flag is shown as what it means, explained in the page's legend: a fireball as one; a candidate the
    observatory held back (a satellite, clouds: reported only because it was asked to) in grey and without the high
    score's green, though the classifier scored it 0.97 (it was an orange "satellite" tag beside a green 0.97); a
    flag the service does not know as it is."""
    ingest(detection("obs02", frame("223000"), 0.97, seed=12, flag="satellite"), "obs02")
    ingest(detection("obs02", frame("224500"), 0.98, seed=13, flag="fireball"), "obs02")
    ingest(detection("obs02", frame("225800"), 0.40, seed=14, flag="sprite"), "obs02")
    WEBSITE({"day": NIGHT}, None)
    with browser_page(390, 844) as page:
        view = looks(page, night / f"{NIGHT}.html", 390, 844, tmp_path / "flags.png")
        cards = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.card')].map(c => [c.id, {
            tags: [...c.querySelectorAll('.tag')].map(t => [t.textContent, t.className]),
            high: c.querySelector('.score.high') !== null}]))""")
        legend = page.evaluate("() => [...document.querySelectorAll('.legend dt')].map(d => d.textContent)")
    assert view["overflow"] <= 0
    assert cards[f"obs02_{frame('223000')}"] == {"tags": [["held back: possible satellite/plane", "tag held"]],
                                                 "high": False}
    assert cards[f"obs02_{frame('224500')}"] == {"tags": [["fireball", "tag"]], "high": True}
    assert cards[f"obs02_{frame('225800')}"] == {"tags": [["sprite", "tag"]], "high": False}
    assert cards[f"obs01_{frame('231507')}"] == {"tags": [], "high": True}
    assert legend == ["fireball", "possible satellite/plane"]


def test_what_a_screen_reader_or_a_keyboard_user_gets_from_the_page(night, tmp_path):
    """Read by ear or tabbed through, the page lost what its looks said: the focus ring on a card's image link was
    never drawn (an inline link round a block image has no box), a score was a bare number, a held-back candidate
    was told by its grey alone, a satellite's run was not a group, "also seen from" links were 17 px tall, below
    the 24 px a finger needs, and the page for an address not made yet named "all nights" without linking it."""
    ingest(detection("obs02", frame("231520"), 0.93, seed=9), "obs02")                          # seen from both
    ingest(detection("obs02", frame("223000"), 0.97, seed=12, flag="satellite"), "obs02")       # held back
    WEBSITE({"day": NIGHT}, None)
    with browser_page(390, 844) as page:
        looks(page, night / f"{NIGHT}.html", 390, 844, tmp_path / "page.png")
        card = page.locator(".card").first
        card.scroll_into_view_if_needed()
        unfocused = card.screenshot()
        page.focus(".card > a")
        focused = card.screenshot()
        read = page.evaluate("""() => ({
            link: [...document.querySelectorAll('.card > a')].map(a => a.getBoundingClientRect().height)[0],
            seen: [...document.querySelectorAll('.tag.seen')].map(a => a.getBoundingClientRect().height),
            underlined: getComputedStyle(document.querySelector('.tag.seen')).textDecorationLine,
            scores: [...document.querySelectorAll('.score')].map(s => s.textContent),
            held: [...document.querySelectorAll('.tag.held')].map(t => t.textContent),
            groups: [...document.querySelectorAll('[role=group]')].map(g =>
                document.getElementById(g.getAttribute('aria-labelledby')).textContent.split(':')[0]),
            cards: [...document.querySelectorAll('.card')].map(c => c.getAttribute('aria-label')).slice(0, 2),
            stats: document.querySelectorAll('ul.summary > li.stat').length})""")
        page.goto((night / "404.html").as_uri())
        missing_links = page.evaluate("() => [...document.querySelectorAll('main a')].map(a => a.textContent)")
    assert focused != unfocused and read["link"] > 100                  # a ring drawn round the image
    assert len(read["seen"]) == 2 and min(read["seen"]) >= 24 and read["underlined"] == "underline"
    assert "meteor score 0.97" in read["scores"] and all(score.startswith("meteor score") for score in read["scores"])
    assert read["held"] == ["held back: possible satellite/plane"]
    assert read["groups"] == ["Possible satellite/plane"] and read["stats"] == 2
    assert read["cards"] == ["obs01 at 21:20:00", "obs01 at 21:20:30"]
    assert missing_links == ["all nights"]


def test_start_and_end_times_are_on_each_cameras_clock(night):
    """A log's time as the camera's clock reads it, whatever offset it came with: a UTC `processed`, or the
    service's UTC `received` when a sender left `processed` out (shown as UTC, the page said local time)."""
    target = store.LocalStore(night)
    store.write_json(target, f"logs/{NIGHT}/obs02_start.json", {"log": "start", "obs_id": "obs02", "folder": NIGHT,
                                                                 "received": "2026-09-16T18:00:02+00:00"})
    store.write_json(target, f"logs/{NIGHT}/obs02_end.json", {"log": "end", "obs_id": "obs02", "folder": NIGHT,
                                                               "total": 1440, "processed": "2026-09-17T06:00:05Z"})
    WEBSITE({"day": NIGHT}, None)
    html = (night / f"{NIGHT}.html").read_text()
    assert html.count("detection run started 2026-09-16 20:00, ended 2026-09-17 08:00") == 2        # obs01's and obs02's


def test_page_in_chromium_on_desktop_and_phone(night, tmp_path):
    """(The dark page declared no colour scheme: the browser drew a bright white scrollbar down it on desktop.)"""
    ingest(detection("obs02", frame("231520"), 0.93, seed=9), "obs02")        # seen from both: linked
    WEBSITE({"day": NIGHT}, None)
    page_file = night / f"{NIGHT}.html"
    with browser_page(1280, 900) as page:
        desktop = looks(page, page_file, 1280, 900, tmp_path / "desktop.png")
        scheme = page.evaluate("() => getComputedStyle(document.documentElement).colorScheme")
        phone = looks(page, page_file, 390, 844, tmp_path / "phone.png")
        page.click("text=also seen from obs02 at 23:15:20")
        target = page.evaluate("""() => [location.hash,
            document.querySelector(location.hash).getBoundingClientRect().top, window.innerHeight,
            getComputedStyle(document.querySelector(location.hash)).outlineStyle]""")
        for _ in range(20):                                      # Tab to the first card's image link
            page.keyboard.press("Tab")
            if page.evaluate("() => !!document.activeElement.closest('.card')"):
                break
        focus = page.evaluate("""() => { const style = getComputedStyle(document.activeElement);
            return [document.activeElement.closest('.card') !== null, style.outlineStyle, style.outlineWidth,
                    style.outlineOffset]; }""")
    assert target[0] == f"#obs02_{frame('231520')}" and 0 <= target[1] < target[2]     # scrolled to that card
    assert target[3] == "solid"                                # and marked: three cards a row, near-identical times
    assert focus == [True, "solid", "3px", "-3px"]             # a focus ring inside the card, which clips its edges
    assert scheme == "dark"                                    # dark scrollbars and form controls
    for view, width in ((desktop, 1280), (phone, 390)):
        assert view["title"] == "guAlta · night of 2026-09-16"
        assert view["overflow"] <= 0, "horizontal scrolling"
        assert len(view["images"]) == 7 and all(natural == 448 for natural, _ in view["images"])   # all loaded
        assert all(shown <= width for _, shown in view["images"])
    assert max(desktop["cards"]) < 450 and min(phone["cards"]) > 300      # several per row vs one full-width
    assert (tmp_path / "desktop.png").stat().st_size > 20_000 and (tmp_path / "phone.png").stat().st_size > 20_000


def test_a_night_whose_morning_build_was_missed_gets_its_page_at_the_next_one(env, tmp_path):
    """The service down at 09:00 one morning: that night's reports had arrived in time (no late mark), and no later
    build looked at a night without a page — it never got one, the page before it linking straight past it."""
    root, schedule = tmp_path / "store", {"source": "gualta.schedule"}
    for day in (15, 16, 17):
        live = datetime(2026, 9, day, 21, 20, tzinfo=timezone.utc)                 # reported as it happened
        answer = ingest_module.handle(event(detection("obs01", f"202609{day}231507")), os.environ, live)
        assert answer["statusCode"] == 200 and not list((root / "pages").glob("late/*"))
    site.handle(schedule, os.environ, nine_am(16))
    site.handle(schedule, os.environ, nine_am(18))                                 # 09:00 on the 17th missed
    assert sorted(page.name for page in root.glob("2026*.html")) == ["20260915.html", "20260916.html",
                                                                     "20260917.html"]
    assert '<a href="20260916.html">2026-09-16 →</a>' in (root / "20260915.html").read_text()
    assert 'id="obs01_20260916231507"' in (root / "20260916.html").read_text()
    assert '<a href="20260916.html">← 2026-09-16</a>' in (root / "20260917.html").read_text()    # not past it


def test_a_count_lost_to_two_builds_at_once_is_mended_by_the_next_build(env, tmp_path):
    """Two builds at once (`guAlta.py site --day` beside the schedule, two Lambda runs) each wrote the archive's
    counts as read before the other wrote: one night's new count was lost, and its page, up to date, was never built
    again, so the archive kept the old count for good."""
    root = tmp_path / "store"
    ingest(detection("obs01", "20260915231507"))
    WEBSITE({"day": "20260915"}, None)
    raced = (root / "pages" / "archive.json").read_bytes()                  # read by the other build: 1 detection
    ingest(detection("obs01", "20260915231607", seed=1))
    WEBSITE({"day": "20260915"}, None)
    assert "2026-09-15</a> · 2 detections" in (root / "archive.html").read_text()
    (root / "pages" / "archive.json").write_bytes(raced)                    # the other build wrote last
    site.write_archive(store.LocalStore(root), {}, ["20260915"], datetime.now(timezone.utc))
    assert "2026-09-15</a> · 2 detections" in (root / "archive.html").read_text()
    assert json.loads((root / "pages" / "archive.json").read_text())["20260915"]["detections"] == 2


def test_counts_made_from_a_pages_record_are_its_detections_not_its_logs(env, tmp_path):
    """A page's record lists its logs beside its detections (`page_inputs`); a night's count made from it counts the
    detections alone, and a log, read as no record, was one detection more in the archive."""
    target = store.LocalStore(tmp_path / "store")
    ingest(detection("obs01", frame("231507")))
    store.write_json(target, store.page_inputs_key(NIGHT), {
        "inputs": [store.detection_key(NIGHT, "obs01", frame("231507")), f"logs/{NIGHT}/obs01_end.json 0123abcd"],
        "next": []})
    assert site.counts_made_from(target, [NIGHT]) == {NIGHT: {"detections": 1, "held_back": 0}}


def test_every_night_with_a_page_is_listed_by_month_with_its_detections(env, tmp_path):
    """After a year the pages linked only the last 30 nights: a night of January was eight pages' footers away.
    archive.html lists every night with a page by month, newest first, with its detections, linked from every page."""
    root = tmp_path / "store"
    for night, detections in (("20260830", 2), ("20260901", 0), ("20260916", 1)):
        for i in range(detections):
            ingest(detection("obs01", f"{night}23{i:02d}00", seed=i))
        WEBSITE({"day": night}, None)
    archive = (root / "archive.html").read_text()
    with browser_page(390, 844) as page:
        page.goto((root / "archive.html").as_uri())
        listed = page.evaluate("""() => [...document.querySelectorAll('main section')].map(section =>
            [section.querySelector('h2').textContent, [...section.querySelectorAll('li')].map(li => li.textContent),
             [...section.querySelectorAll('a')].map(a => a.getAttribute('href'))])""")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert listed == [["September 2026", ["2026-09-16 · 1 detection", "2026-09-01 · 0 detections"],
                       ["20260916.html", "20260901.html"]],
                      ["August 2026", ["2026-08-30 · 2 detections"], ["20260830.html"]]]
    assert overflow <= 0 and "3 nights with a page" in archive
    assert '<a href="archive.html">all nights</a>' in (root / "20260830.html").read_text()
    ingest(detection("obs01", "20260830230500", seed=7))                       # delivered late: counted when rebuilt
    WEBSITE({"day": "20260830"}, None)
    assert "2026-08-30</a> · 3 detections" in (root / "archive.html").read_text()
    (root / "pages" / "archive.json").unlink()              # pages built before the archive kept counts: an upgrade
    WEBSITE({"day": "20260917"}, None)
    archive = (root / "archive.html").read_text()
    assert all(text in archive for text in ("2026-08-30</a> · 3 detections", "2026-09-01</a> · 0 detections",
                                            "2026-09-16</a> · 1 detection", "2026-09-17</a> · 0 detections"))
