"""Coincidences: detections of different observatories at the same moment — their 30 s exposures overlap — such as
a meteor seen from two sites (or a satellite seen from both). Each camera's clock (the AllSky file names) is read in
its observatory's zone (GUALTA_OBSERVATORIES), else in the service's (GUALTA_TIMEZONE)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo
from typing import Callable

from gualta import allsky, passes, service_env, store

WINDOW_S = 30                     # two observatories' detections this close: their exposures overlap, one event
DETECTION_NAME = re.compile(r"([A-Za-z0-9_-]{1,32})_([0-9]{14})\.json")


class ClockZones:
    """obs_id → the zone its camera's clock is read in: its observatory's (GUALTA_OBSERVATORIES), else the service's
    (`default`); `zones`: every zone a clock is read in."""

    def __init__(self, by_obs_id: dict[str, tzinfo], default: tzinfo):
        self.by_obs_id, self.default = by_obs_id, default

    def __call__(self, obs_id: str) -> tzinfo:
        return self.by_obs_id.get(obs_id, self.default)

    @property
    def zones(self) -> list[tzinfo]:
        return [self.default, *self.by_obs_id.values()]


def zones_from_env(env) -> ClockZones:
    """obs_id → the zone of its camera's clock; an unreadable GUALTA_OBSERVATORIES leaves the service's zone."""
    default = service_env.timezone(env)
    try:
        places = passes.observatories_from_env(env)
    except service_env.ServiceConfigError:
        places = {}
    return ClockZones({obs_id: place.zone for obs_id, place in places.items()}, default)


def stored_detections(target: store.Store, night: str) -> list[tuple[str, str, datetime]]:
    """(obs_id, frame id, camera-clock time) of the night's stored detections, from their keys alone."""
    found = []
    for key in target.keys(f"detections/{night}/"):
        match = DETECTION_NAME.fullmatch(key.rpartition("/")[2])
        stamp = allsky.frame_time(f"image-{match.group(2)}.jpg") if match else None
        if stamp is not None:
            found.append((match.group(1), match.group(2), stamp))
    return found


def nights_either_side(night: str) -> list[str]:
    """The nights before and after `night` (YYYYMMDD), whose folders may hold its coincidences: a camera whose clock
    keeps another zone's date (UTC far from Greenwich) files part of a night under the previous or the next night's
    folder (AllSky's folder changes at noon on its clock)."""
    day = datetime.strptime(night, allsky.NIGHT_FORMAT)
    return [(day + timedelta(days=step)).strftime(allsky.NIGHT_FORMAT) for step in (-1, 1)]


def neighbours_filing(night: str, stamp: datetime, zone: tzinfo, zones: list[tzinfo],
                      window_s: float = WINDOW_S) -> list[str]:
    """Those of the nights either side of `night` (`nights_either_side`) under which another camera may have filed a
    detection of the moment `stamp` (on a clock in `zone`): AllSky files a frame under the night of its clock
    (`allsky.night_of`, the folder changes at noon), and a clock in one of `zones` reads the moment, give or take
    window_s, as the evening of another date only near noon on one of them (a camera on UTC far from Greenwich)."""
    moment = instant(stamp, zone)
    filed = {allsky.night_of(datetime.fromtimestamp(moment + step, other).replace(tzinfo=None))
             for other in zones for step in (-window_s, window_s)}
    return [other for other in nights_either_side(night) if other in filed]


def together(first: tuple[str, datetime], second: tuple[str, datetime], zone_of, window_s: float = WINDOW_S) -> bool:
    """Whether two (obs_id, camera-clock time) detections are of different observatories, at most window_s apart."""
    (obs_a, at_a), (obs_b, at_b) = first, second
    return obs_a != obs_b and abs(instant(at_a, zone_of(obs_a)) - instant(at_b, zone_of(obs_b))) <= window_s


def instant(stamp: datetime, zone: tzinfo) -> float:
    """POSIX seconds of a camera-clock time in its zone (differences of these run as the clock does, also across a
    change of summer time, unlike wall-clock differences)."""
    return stamp.replace(tzinfo=zone).timestamp()


def zone_label(stamp: datetime, zone: tzinfo, other: tzinfo) -> str:
    """' BST': the abbreviation of a camera clock's zone at `stamp`, when a clock in zone `other` reads otherwise
    then (the same moment is 22:15 in London, 23:15 in Madrid); '' when both read the same."""
    moment = stamp.replace(tzinfo=zone)
    return "" if moment.utcoffset() == moment.astimezone(other).utcoffset() else f" {moment.strftime('%Z')}"


def zone_named(stamp: datetime, zone: tzinfo, others: list[tzinfo]) -> str:
    """'CEST': the abbreviation of a camera clock's zone at `stamp`, when a clock in one of the `others` zones reads
    otherwise then (so the times of a moment seen from several zones can be told apart); '' when all read alike."""
    return next((label.strip() for other in others if (label := zone_label(stamp, zone, other))), "")


def coinciding(detections: list[tuple[str, str, datetime]], obs_id: str, stamp: datetime,
               zone_of) -> list[tuple[str, str, datetime]]:
    """Those of `detections` (obs_id, frame id, camera-clock time) that are of other observatories at the same moment
    as this one, in order."""
    return sorted(found for found in detections if together((obs_id, stamp), (found[0], found[2]), zone_of))
