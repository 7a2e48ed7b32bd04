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


def zones_from_env(env) -> Callable[[str], tzinfo]:
    """obs_id → the zone of its camera's clock; an unreadable GUALTA_OBSERVATORIES leaves the service's zone."""
    default = service_env.timezone(env)
    try:
        places = passes.observatories_from_env(env)
    except service_env.ConfigError:
        places = {}
    zones = {obs_id: place.zone for obs_id, place in places.items()}
    return lambda obs_id: zones.get(obs_id, default)


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
