"""ISS passes computed offline with skyfield from the committed TLE; n2yo only as a URL (no network in tests)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from gualta import passes, service_env
from helpers_service import OBSERVATORIES

ENV = {"GUALTA_OBSERVATORIES": json.dumps(OBSERVATORIES)}
NIGHT = "20260916"                  # the committed TLE's epoch is 2026-09-16 20:27 UTC


@pytest.fixture(scope="module")
def report():
    return passes.night_passes(["obs01"], NIGHT, ENV)["obs01"]


def test_passes_are_found_in_the_dark_part_of_the_night(report):
    assert report.available and report.source == "TLE file iss.tle"
    assert "TLE epoch 2026-09-16 20:27 UTC" == report.note
    assert 2 <= len(report.passes) <= 8                   # ~15.5 orbits a day, a few cross a given sky at night
    for p in report.passes:
        assert p.start < p.peak < p.end and timedelta(minutes=1) < p.end - p.start < timedelta(minutes=12)
        assert p.max_alt_deg >= passes.MIN_ALTITUDE_DEG
        assert str(p.start.tzinfo) == "Europe/Madrid"
        assert p.start.hour >= 20 or p.start.hour < 7      # sun below −6° at Montseny in mid-September


def test_pass_geometry_checked_independently(report):
    """Recompute the altitude at each reported peak and a minute outside each pass with plain skyfield."""
    from skyfield.api import wgs84

    timescale, _ = passes._sky()
    iss = passes.read_tle(passes.DEFAULT_TLE.read_text())
    place = wgs84.latlon(41.60, 1.84, elevation_m=700)
    for p in report.passes:
        altitude = lambda when: (iss - place).at(timescale.from_datetime(when)).altaz()[0].degrees  # noqa: E731
        assert altitude(p.peak) == pytest.approx(p.max_alt_deg, abs=0.1)
        assert altitude(p.start) == pytest.approx(10, abs=0.3) and altitude(p.end) == pytest.approx(10, abs=0.3)
        assert altitude(p.start - timedelta(minutes=1)) < 10 and altitude(p.peak) > altitude(p.start)


def test_early_evening_pass_is_sunlit_and_late_ones_are_not(report):
    # After dusk the ISS is still in sunlight; around local midnight it is in Earth's shadow (mid-latitudes).
    early = [p for p in report.passes if p.peak.hour in (20, 21)]
    midnight = [p for p in report.passes if p.peak.hour in (0, 1)]
    assert early and all(p.sunlit for p in early)
    assert midnight and not any(p.sunlit for p in midnight)


def test_a_pass_sunlit_for_part_of_it_is_sunlit():
    """The ISS often enters Earth's shadow during a pass. Read at its highest only, this 45° pass, sunlit for its
    first third, was 'in shadow', and detections of its bright trail went untagged."""
    from skyfield.api import wgs84

    seen = passes.night_passes(["obs01"], "20260907", ENV)["obs01"]
    bright = next(p for p in seen.passes if p.start.strftime("%H:%M") == "21:52")
    timescale, eph = passes._sky()
    iss = passes.read_tle(passes.DEFAULT_TLE.read_text())
    assert not iss.at(timescale.from_datetime(bright.peak)).is_sunlit(eph)
    assert iss.at(timescale.from_datetime(bright.start)).is_sunlit(eph) and bright.sunlit
    place = wgs84.latlon(41.60, 1.84, elevation_m=700)
    during = timescale.linspace(timescale.from_datetime(bright.start), timescale.from_datetime(bright.end), 60)
    assert 0.1 < iss.at(during).is_sunlit(eph).mean() < 0.6
    assert (iss - place).at(during).altaz()[0].degrees.min() > 9.7


def test_passes_follow_the_observatory_night_sun_altitude():
    """A camera whose night starts with the sun at −3° (its client's setting) sees the ISS in that twilight too: the
    passes with the sun between −3° and −6° were left off, and detections of them went untagged."""
    place = {"lat": 57.0, "lon": -3.2, "tz": "Europe/London"}
    starts = {}
    for sun in (-6, -3):
        env = {"GUALTA_OBSERVATORIES": json.dumps({"obs05": {**place, "night_sun_altitude": sun}})}
        starts[sun] = [p.start.strftime("%H:%M") for p in passes.night_passes(["obs05"], "20260921", env)["obs05"]
                       .passes]
    assert "19:28" in starts[-3] and "19:28" not in starts[-6] and set(starts[-6]) < set(starts[-3])


def test_a_camera_on_utc_east_of_greenwich_keeps_its_passes_before_18_00():
    """The night is read from noon on the camera's clock: at Dubai (UTC+4) on a UTC clock the sun is down by 15:00,
    and a sunlit pass at 15:58 must be there for the detections it leaves to be tagged."""
    env = {"GUALTA_OBSERVATORIES": json.dumps({"obs07": {"lat": 25.2, "lon": 55.3, "tz": "UTC"}})}
    seen = passes.night_passes(["obs07"], "20260908", env)["obs07"].passes
    early = next(p for p in seen if p.start.strftime("%H:%M") == "15:58")
    assert early.sunlit and str(early.start.tzinfo) == "UTC"


def test_a_pass_sunlit_only_in_the_twilight_a_camera_does_not_watch_is_not_sunlit():
    """A camera whose night starts with the sun at −18° sees the 21:00 pass of 15 September only at its end, the ISS
    then in Earth's shadow: sunlit while the sun was higher, it was called sunlit, and a meteor at its end tagged
    ISS. At −6° the same pass is sunlit in the camera's night."""
    from skyfield.api import wgs84

    place = {"lat": 50.0, "lon": 0.0, "tz": "Europe/London"}
    seen = {}
    for sun in (-18, -6):
        env = {"GUALTA_OBSERVATORIES": json.dumps({"obs05": {**place, "night_sun_altitude": sun}})}
        seen[sun] = next(p for p in passes.night_passes(["obs05"], "20260915", env)["obs05"].passes
                         if p.start.strftime("%H:%M") == "21:00")
    assert not seen[-18].sunlit and seen[-6].sunlit
    timescale, eph = passes._sky()
    iss = passes.read_tle(passes.DEFAULT_TLE.read_text())
    observer = eph["earth"] + wgs84.latlon(50.0, 0.0)

    def sun_and_iss(when):
        instant = timescale.from_datetime(when)
        return observer.at(instant).observe(eph["sun"]).apparent().altaz()[0].degrees, iss.at(instant).is_sunlit(eph)

    (sun_first, lit_first), (sun_last, lit_last) = sun_and_iss(seen[-18].start), sun_and_iss(seen[-18].end)
    assert sun_first > -18 > sun_last and lit_first and not lit_last


def test_stale_tle_is_flagged_and_an_old_one_shows_no_passes():
    """A TLE 65 days old puts the ISS tens of minutes off: its passes were shown, and detections tagged by them."""
    aged = passes.night_passes(["obs01"], "20260926", ENV)["obs01"]
    assert aged.available and aged.passes and "10 days before this night: times may be off by minutes" in aged.note
    far = passes.night_passes(["obs01"], "20261120", ENV)["obs01"]
    assert not far.available and not far.passes
    assert "65 days before this night: times may be off by tens of minutes — refresh the TLE" in far.note


def test_missing_coordinates_or_tle_are_explained_not_raised(tmp_path):
    reports = passes.night_passes(["obs01", "obs09"], NIGHT, ENV)
    assert not reports["obs09"].available and "no coordinates configured" in reports["obs09"].note
    none = passes.night_passes(["obs01"], NIGHT, {**ENV, "GUALTA_TLE_FILE": str(tmp_path / "missing.tle")})["obs01"]
    assert not none.available and "no ISS TLE available" in none.note
    (tmp_path / "other.tle").write_text("HUBBLE\n" + "\n".join(passes.DEFAULT_TLE.read_text().splitlines()[1:])
                                        .replace("25544", "20580"))
    wrong = passes.night_passes(["obs01"], NIGHT, {**ENV, "GUALTA_TLE_FILE": str(tmp_path / "other.tle")})
    assert not wrong["obs01"].available


def test_n2yo_url_and_fallback(monkeypatch):
    assert passes.n2yo_tle_url("AB C/&") == "https://api.n2yo.com/rest/v1/satellite/tle/25544&apiKey=AB%20C%2F%26"
    lines = passes.DEFAULT_TLE.read_text().splitlines()
    monkeypatch.setattr(passes, "fetch_n2yo_tle", lambda key: "\r\n".join(lines[1:]))
    assert passes.night_passes(["obs01"], NIGHT, {**ENV, "GUALTA_N2YO_KEY": "k"})["obs01"].source == "n2yo TLE"

    def offline(key):
        raise OSError("no network")
    monkeypatch.setattr(passes, "fetch_n2yo_tle", offline)
    fallback = passes.night_passes(["obs01"], NIGHT, {**ENV, "GUALTA_N2YO_KEY": "k"})["obs01"]
    assert fallback.available and fallback.source == "TLE file iss.tle"


def test_the_n2yo_key_is_read_from_ssm_on_aws(monkeypatch):
    """On AWS the key was a plain Lambda variable (readable with the function's configuration): it now comes from the
    SSM SecureString the stack names, as the other secrets do; an unreadable parameter falls back to the file."""
    import boto3

    from helpers_service import moto_s3

    lines, used = passes.DEFAULT_TLE.read_text().splitlines(), []
    monkeypatch.setattr(passes, "fetch_n2yo_tle", lambda key: used.append(key) or "\r\n".join(lines[1:]))
    with moto_s3() as (endpoint, _):
        boto3.client("ssm", endpoint_url=endpoint).put_parameter(Name="/gualta/n2yo-key", Value="n2yo-secret-1",
                                                                 Type="SecureString")
        monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", endpoint)
        service_env._cache.clear()
        from_ssm = passes.night_passes(["obs01"], NIGHT, {**ENV, "GUALTA_N2YO_KEY_PARAM": "/gualta/n2yo-key"})
        missing = passes.night_passes(["obs01"], NIGHT, {**ENV, "GUALTA_N2YO_KEY_PARAM": "/gualta/none"})
        service_env._cache.clear()
    assert from_ssm["obs01"].source == "n2yo TLE" and used == ["n2yo-secret-1"]
    assert missing["obs01"].available and missing["obs01"].source == "TLE file iss.tle" and len(used) == 1


@pytest.mark.parametrize("bad", ['{"obs01": {"lat": 95, "lon": 0}}', '{"obs01": {"lon": 0}}', "[1]", "{",
                                 '{"<script>": {"lat": 1, "lon": 1}}', '{"obs01": {"lat": 1, "lon": 1, "tz": "Mars"}}',
                                 '{"obs01": {"lat": 1, "lon": 1, "elevation_m": NaN}}',
                                 '{"obs01": {"lat": true, "lon": 1}}',
                                 '{"obs01": {"lat": 1, "lon": 1, "elevation_m": 1e9}}'])
def test_bad_observatory_settings_are_config_errors(bad):
    with pytest.raises(service_env.ServiceConfigError):
        passes.observatories_from_env({"GUALTA_OBSERVATORIES": bad})


def test_an_observatory_name_left_null_is_no_name():
    """`"name": null` in GUALTA_OBSERVATORIES showed as "None" beside the obs_id on the page."""
    found = passes.observatories_from_env({"GUALTA_OBSERVATORIES": '{"obs01": {"lat": 1, "lon": 2, "name": null}}'})
    assert found["obs01"].name == ""
