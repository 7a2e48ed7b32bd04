"""ISS passes over an observatory during a night, computed offline with skyfield from a TLE file.

The thesis asked n2yo for passes (API key, internet). n2yo's pass endpoints only predict from *now* on, while the
daily page describes the night that just ended, so here n2yo, when GUALTA_N2YO_KEY is set, is the source of a fresh
TLE (its ``tle`` endpoint) and skyfield computes the passes either way. Without a key the TLE comes from
GUALTA_TLE_FILE or the packaged ``gualta/data/iss.tle`` (refresh it from CelesTrak, see README). Ephemeris and
timescale come from the ``skyfield-data`` package, so nothing is downloaded. When no TLE or no coordinates are
available the report says why instead of failing.
"""
from __future__ import annotations

import io
import json
import logging
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gualta import allsky, payload, service_env

log = logging.getLogger(__name__)

ISS_NORAD = 25544
DEFAULT_TLE = Path(__file__).parent / "data" / "iss.tle"
N2YO_API = "https://api.n2yo.com/rest/v1/satellite"
MIN_ALTITUDE_DEG = 10.0          # a pass counts from 10° above the horizon (the camera's useful sky)
DARK_SUN_ALT_DEG = -6.0          # an observatory's night by default: the sun below this (its night_sun_altitude)
STALE_TLE_DAYS = 7               # beyond this, predicted times drift by minutes: the page says so
UNUSABLE_TLE_DAYS = 14           # beyond this, by tens of minutes (a 40-day-old ISS TLE: 30 min): no passes shown
PASS_SAMPLES = 30                # instants a pass is read at for darkness and sunlight
NO_TLE = "no ISS TLE available (set GUALTA_N2YO_KEY or provide a TLE file)"


@dataclass(frozen=True)
class Observatory:
    """Where an observatory is; tz is the zone of its camera's clock (AllSky file names), '' for the service's."""
    obs_id: str
    lat: float
    lon: float
    elevation_m: float = 0.0
    name: str = ""
    tz: str = ""
    night_sun_altitude: float = DARK_SUN_ALT_DEG   # its night: the sun below this (its client's setting, AllSky's angle)

    @property
    def zone(self):
        return ZoneInfo(self.tz) if self.tz else service_env.timezone({})


@dataclass(frozen=True)
class Pass:
    """One pass above MIN_ALTITUDE_DEG, times in the observatory's zone."""
    start: datetime
    peak: datetime
    end: datetime
    max_alt_deg: float
    sunlit: bool                 # the ISS is in sunlight while the sky is dark, for some of the pass: a bright trail


@dataclass
class PassReport:
    """Passes for one observatory and night, or the reason there are none to show."""
    obs_id: str
    passes: list[Pass] = field(default_factory=list)
    source: str = ""
    note: str = ""
    available: bool = False


def observatories_from_env(env) -> dict[str, Observatory]:
    """GUALTA_OBSERVATORIES (JSON {obs_id: {lat, lon, elevation_m, name, tz, night_sun_altitude}}) → {obs_id:
    Observatory}; a camera without its tz keeps the service's (GUALTA_TIMEZONE)."""
    text = env.get("GUALTA_OBSERVATORIES") or "{}"
    try:
        raw = json.loads(text)
        service_zone = env.get("GUALTA_TIMEZONE") or ""             # a camera without its own tz: the service's
        return {obs_id: observatory(obs_id, {**entry, "tz": entry.get("tz") or service_zone})
                for obs_id, entry in raw.items()}
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise service_env.ServiceConfigError(f"GUALTA_OBSERVATORIES is not valid: {exc}") from None


def observatory(obs_id: str, entry: dict) -> Observatory:
    """One observatory from its settings dict, checked (lat −90…90, lon −180…180, elevation −500…9000 m, a known
    time zone, a night sun altitude −18…10)."""
    payload.check_obs_id(obs_id)
    if any(isinstance(entry.get(name), bool) for name in ("lat", "lon", "elevation_m")):
        raise ValueError(f"{obs_id}: lat, lon and elevation_m are numbers, not true/false")
    lat, lon = float(entry["lat"]), float(entry["lon"])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"{obs_id}: latitude/longitude out of range")
    elevation = float(entry.get("elevation_m", 0.0))
    if not -500 <= elevation <= 9000:
        raise ValueError(f"{obs_id}: elevation_m {elevation:g} is outside -500…9000 metres")
    tz = str(entry.get("tz") or "")
    try:
        if tz:
            ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):   # "Europe": a folder of zones
        raise ValueError(f"{obs_id}: unknown time zone {tz!r}") from None
    night_sun = float(entry.get("night_sun_altitude", DARK_SUN_ALT_DEG))
    if not -18 <= night_sun <= 10:
        raise ValueError(f"{obs_id}: night_sun_altitude {night_sun:g} is outside -18…10 degrees")
    return Observatory(obs_id, lat, lon, elevation, str(entry.get("name") or ""), tz, night_sun)


@lru_cache(maxsize=1)
def _sky():
    """Timescale and planetary ephemeris from skyfield-data (offline)."""
    import skyfield_data
    from skyfield.api import Loader

    with warnings.catch_warnings():          # finals2000A.all may be old; the builtin timescale is used
        warnings.simplefilter("ignore", RuntimeWarning)
        loader = Loader(skyfield_data.get_skyfield_data_path())
    return loader.timescale(builtin=True), loader("de421.bsp")


def read_tle(text: str, norad: int = ISS_NORAD):
    """The satellite with this catalogue number from TLE text, or None."""
    from skyfield.iokit import parse_tle_file

    timescale, _ = _sky()
    for satellite in parse_tle_file(io.BytesIO(text.encode("ascii", "replace")), timescale):
        if satellite.model.satnum == norad:
            return satellite
    return None


def n2yo_tle_url(api_key: str, norad: int = ISS_NORAD) -> str:
    """n2yo's TLE endpoint for a satellite."""
    return f"{N2YO_API}/tle/{norad}&apiKey={urllib.parse.quote(api_key, safe='')}"


def fetch_n2yo_tle(api_key: str, norad: int = ISS_NORAD, timeout_s: float = 10.0) -> str:
    """A current TLE from n2yo (internet); returns the two lines as text."""
    with urllib.request.urlopen(n2yo_tle_url(api_key, norad), timeout=timeout_s) as reply:   # noqa: S310
        data = json.load(reply)
    return data["tle"].replace("\r\n", "\n")


def night_window(night: str, zone) -> tuple[datetime, datetime]:
    """Noon of the night's date to noon of the next day, in the observatory's zone."""
    day = datetime.strptime(night, allsky.NIGHT_FORMAT).date()
    start = datetime.combine(day, time(12), zone)
    return start, start + timedelta(days=1)


def find_passes(satellite, obs: Observatory, night: str) -> list[Pass]:
    """Passes above MIN_ALTITUDE_DEG during the night with some of them in the observatory's dark (the sun below its
    night_sun_altitude); sunlit if the ISS is in sunlight at some instant of that dark part."""
    from skyfield.api import wgs84

    timescale, eph = _sky()
    place = wgs84.latlon(obs.lat, obs.lon, elevation_m=obs.elevation_m)
    start, end = night_window(night, obs.zone)
    times, events = satellite.find_events(place, timescale.from_datetime(start), timescale.from_datetime(end),
                                          altitude_degrees=MIN_ALTITUDE_DEG)
    observer = eph["earth"] + place
    found, current = [], {}
    for t, kind in zip(times, events):
        if kind == 0:
            current = {"start": t}
        elif kind == 1:
            current["peak"] = t
        elif "peak" in current and "start" in current:
            during = timescale.linspace(current["start"], t, PASS_SAMPLES)
            dark = observer.at(during).observe(eph["sun"]).apparent().altaz()[0].degrees < obs.night_sun_altitude
            if dark.any():
                peak = current["peak"]
                alt = (satellite - place).at(peak).altaz()[0].degrees
                sunlit = satellite.at(during).is_sunlit(eph) & dark
                found.append(Pass(*(x.utc_datetime().astimezone(obs.zone) for x in (current["start"], peak, t)),
                                  max_alt_deg=round(float(alt), 1), sunlit=bool(sunlit.any())))
            current = {}
        else:
            current = {}
    return found


def tle_age_days(satellite, night: str) -> float:
    """Days from the TLE's epoch to the middle of the night (negative: the epoch is later)."""
    middle = datetime.strptime(night, allsky.NIGHT_FORMAT).replace(tzinfo=timezone.utc) + timedelta(days=1)
    return (middle - satellite.epoch.utc_datetime()).total_seconds() / 86400


def tle_note(satellite, night: str) -> str:
    """Where the TLE stands relative to the night; warns when predictions are no longer reliable."""
    age = tle_age_days(satellite, night)
    text = f"TLE epoch {satellite.epoch.utc_datetime():%Y-%m-%d %H:%M} UTC"
    if abs(age) > STALE_TLE_DAYS:
        advice = "refresh the TLE" if age > 0 else "give a TLE from near the night (GUALTA_TLE_FILE)"
        return f"{text}, {abs(age):.0f} days {'before' if age > 0 else 'after'} this night: times may be off by " \
               f"{'tens of ' if abs(age) > UNUSABLE_TLE_DAYS else ''}minutes — {advice}"
    return text


def load_tle(env) -> tuple[object | None, str]:
    """The ISS from n2yo (key set) or the TLE file, with a description of the source; (None, reason) if neither."""
    text, source = load_tle_text(env)
    return (read_tle(text) if text else None), source


def load_tle_text(env) -> tuple[str | None, str]:
    """The ISS TLE text from n2yo (key set) or the TLE file, with a description of the source; (None, reason) if
    neither holds one."""
    try:
        key = service_env.secret(env, "GUALTA_N2YO_KEY")
    except service_env.ServiceConfigError as exc:
        log.warning("n2yo key unavailable (%s); trying the TLE file", exc)
        key = ""
    if key:
        try:
            text = fetch_n2yo_tle(key)
            if read_tle(text) is not None:
                return text, "n2yo TLE"
        except (OSError, ValueError, KeyError) as exc:
            log.warning("n2yo TLE unavailable (%s); trying the TLE file", type(exc).__name__)
    path = Path(env.get("GUALTA_TLE_FILE") or DEFAULT_TLE)
    try:
        text = path.read_text("ascii", "replace")
    except OSError:
        return None, NO_TLE
    return (text, f"TLE file {path.name}") if read_tle(text) is not None else (None, NO_TLE)


def night_passes(obs_ids, night: str, env, iss: tuple[object | None, str] | None = None) -> dict[str, PassReport]:
    """A PassReport per obs_id for the night, from `iss` (satellite, source; `load_tle`'s if not given);
    observatories without coordinates get a note, never an error."""
    observatories = observatories_from_env(env)
    if iss is None:
        iss = load_tle(env) if any(o in observatories for o in obs_ids) else (None, "")
    satellite, source = iss
    reports = {}
    for obs_id in obs_ids:
        obs = observatories.get(obs_id)
        if obs is None:
            reports[obs_id] = PassReport(obs_id, note="ISS passes unavailable: no coordinates configured for "
                                                      "this observatory")
        elif satellite is None:
            reports[obs_id] = PassReport(obs_id, note=f"ISS passes unavailable: {source}")
        elif abs(tle_age_days(satellite, night)) > UNUSABLE_TLE_DAYS:
            reports[obs_id] = PassReport(obs_id, source=source, note=f"ISS passes not shown: {source}, "
                                                                     f"{tle_note(satellite, night)}")
        else:
            reports[obs_id] = PassReport(obs_id, find_passes(satellite, obs, night), source,
                                         tle_note(satellite, night), available=True)
    return reports
