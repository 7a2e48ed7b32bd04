"""The AllSky folder layout: ROOT/YYYYMMDD/image-YYYYMMDDHHMMSS.jpg (or .png), one folder per night (the evening's
date)."""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)
FRAME_PATTERN = re.compile(r"^image-(\d{14})\.(?:jpg|png)$")      # AllSky's image.jpg, or image.png
NIGHT_PATTERN = re.compile(r"[0-9]{8}")           # ASCII digits: strptime alone takes 2021011 or 202111
TIME_FORMAT = "%Y%m%d%H%M%S"
NIGHT_FORMAT = "%Y%m%d"
FRAME_INTERVAL_S = 30
LONG_GAP_S = 300         # pairs further apart than this are flagged: the sky changed too much in between
NOON = 12                # frames before noon belong to the previous evening's night
NIGHT_ENDS_H = 8         # AllSky's night window ends at 08:00 (guAlta_end_time's default)


def frame_time(path: str | Path) -> datetime | None:
    """Timestamp encoded in an AllSky frame name, or None if the name does not match."""
    match = FRAME_PATTERN.match(Path(path).name)
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), TIME_FORMAT)
    except ValueError:
        return None


def frame_id(path: str | Path) -> str:
    """The YYYYMMDDHHMMSS id of a frame (the detection id)."""
    stamp = frame_time(path)
    if stamp is None:
        raise ValueError(f"not an AllSky frame name: {Path(path).name}")
    return stamp.strftime(TIME_FORMAT)


def frame_name(stamp: datetime) -> str:
    """AllSky file name for a frame taken at `stamp`."""
    return f"image-{stamp.strftime(TIME_FORMAT)}.jpg"


def night_of(stamp: datetime) -> str:
    """Night folder name (the evening's date) for a frame taken at `stamp`."""
    evening = stamp - timedelta(days=1) if stamp.hour < NOON else stamp
    return evening.strftime(NIGHT_FORMAT)


def ended_night(local: datetime, ends: timedelta = timedelta(hours=NIGHT_ENDS_H)) -> str:
    """The night that ended last by local time `local`, a night ending at `ends` after midnight (default the end of
    AllSky's night window): from noon on `night_of` is already tonight's, and before `ends` a night still observed."""
    return night_of(local - timedelta(hours=NOON) - ends)


def is_night_name(name) -> bool:
    """True for a string that is a real date YYYYMMDD: the one rule of night folders, pages and the research CLI."""
    if type(name) is not str or not NIGHT_PATTERN.fullmatch(name):
        return False
    try:
        datetime.strptime(name, NIGHT_FORMAT)
    except ValueError:
        return False
    return True


def is_night_folder(path: Path) -> bool:
    """True for a directory named like a real date YYYYMMDD (`is_night_name`)."""
    return is_night_name(path.name) and path.is_dir()


def night_folders(root: str | Path) -> list[Path]:
    """Night folders under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if is_night_folder(p)), key=lambda p: p.name)


def latest_night_by(root: str | Path, tonight: str) -> tuple[Path | None, list[str]]:
    """The latest night folder not dated after `tonight`, and the names of those that are (a camera whose clock ran
    ahead wrote them), from one listing."""
    nights = night_folders(root)
    up_to = [night for night in nights if night.name <= tonight]
    return (up_to[-1] if up_to else None), [night.name for night in nights if night.name > tonight]


def sun_altitude(when: datetime, latitude: float, longitude: float) -> float:
    """The sun's altitude in degrees at an aware time and place (east longitude positive): NOAA's low-precision
    formulas (equation of time, declination), good to a few tenths of a degree — enough to tell day from night."""
    utc = when.astimezone(timezone.utc)
    hours = utc.hour + utc.minute / 60 + utc.second / 3600
    gamma = 2 * math.pi / 365 * (utc.timetuple().tm_yday - 1 + (hours - 12) / 24)
    equation_min = 229.18 * (0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
                             - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma))
    declination = (0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma)
                   - 0.006758 * math.cos(2 * gamma) + 0.000907 * math.sin(2 * gamma)
                   - 0.002697 * math.cos(3 * gamma) + 0.00148 * math.sin(3 * gamma))
    hour_angle = math.radians((hours * 60 + equation_min + 4 * longitude) / 4 - 180)
    lat = math.radians(latitude)
    cos_zenith = (math.sin(lat) * math.sin(declination)
                  + math.cos(lat) * math.cos(declination) * math.cos(hour_angle))
    return 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))


def sun_up(when: datetime, latitude: float, longitude: float, night_sun_altitude: float) -> str:
    """Why a time and place are not night ("the sun at 23.4°, above -6°"), or '' when the sun is no higher than
    night_sun_altitude (the client's daytime rule and the service's daylight rule say it alike)."""
    altitude = sun_altitude(when, latitude, longitude)
    return "" if altitude <= night_sun_altitude else f"the sun at {altitude:.1f}°, above {night_sun_altitude:g}°"


def not_a_night(folder: str | Path) -> str:
    """Why a folder given as a night is not one — it holds night folders and no frames: the images root — else ''."""
    nights = night_folders(folder)
    if nights and not list_frames(folder):
        return f"holds night folders, not frames: name one (the latest is {nights[-1]})"
    return ""


def not_an_images_root(folder: str | Path) -> str:
    """Why a folder given as the images root (guAlta_main_folder) is not one — missing, a file, or a night folder:
    it holds frames — else ''."""
    folder = Path(folder)
    if not folder.exists():
        return "does not exist (a wrong path, or a share not mounted?)"
    if folder.is_file():
        return "is a file, not the folder of the night folders"
    if folder.is_dir() and list_frames(folder):
        return f"holds frames: it is a night folder; guAlta_main_folder is the folder above it, {folder.parent}"
    return ""


def list_frames(night: str | Path) -> list[Path]:
    """AllSky frames of a night folder in the order they were taken (`taken_at`); other files are ignored."""
    night = Path(night)
    if not night.is_dir():
        return []
    frames = [p for p in night.iterdir() if p.is_file() and frame_time(p) is not None]
    return sorted(frames, key=taken_at)


LOOKALIKE_PATTERN = re.compile(r"^image-\d{14}\.(?:jpe?g|png)$", re.IGNORECASE)   # .JPG, .jpeg: copies


def is_lookalike(name: str) -> bool:
    """Whether a file name reads as a frame's but not as AllSky writes it (`image-….JPG`, `.jpeg`): left out, so
    worth saying."""
    return bool(LOOKALIKE_PATTERN.match(name)) and not FRAME_PATTERN.match(name)


def lookalike_frames(night: str | Path) -> list[str]:
    """The names in a night folder that are `is_lookalike`."""
    try:
        return sorted(entry.name for entry in os.scandir(night) if is_lookalike(entry.name))
    except OSError:
        return []


def say_lookalikes(night: Path) -> None:
    """Warn of files named like frames but not as AllSky names them, which are left out (`lookalike_frames`)."""
    names = lookalike_frames(night)
    if names:
        log.warning("%s: %d file(s) named like frames but not as AllSky names them (%s%s) are left out: rename them "
                    "image-YYYYMMDDHHMMSS.jpg (or .png)", night, len(names), names[0], ", …" if len(names) > 1 else "")


def taken_at(path: str | Path) -> float:
    """Seconds that order a night's frames as they were taken, and whose differences are the time between them.

    AllSky names frames by the camera's clock in local time (this machine's time zone must be the camera's). When
    summer time ends the clock goes back an hour and names that hour twice, so by name its two passes interleave:
    a frame named after the clock went back counts that hour once more, and a frame named in the repeated hour
    belongs to the pass its file was written in (its modification time within half an hour of it; a file written
    at neither, a copy, counts as the first pass). File times are read only there: everywhere else the name alone
    says when. When summer time starts the names jump an hour ahead: a frame named after the jump counts that hour
    less, unless its folder holds a frame named in the skipped hour (a camera whose clock is not this machine's,
    such as one on UTC, names its frames on without a jump).
    """
    path = Path(path)
    stamp = frame_time(path)
    if stamp is None:
        raise ValueError(f"not an AllSky frame name: {path.name}")
    evening = (stamp - timedelta(days=1 if stamp.hour < NOON else 0)).replace(hour=NOON, minute=0, second=0)
    set_back = utc_offset_s(evening) - utc_offset_s(stamp.replace(fold=pass_of(path, stamp)))
    if set_back < 0 and names_a_skipped_time(path.parent):
        set_back = 0.0
    return stamp.replace(tzinfo=timezone.utc).timestamp() + set_back


def utc_offset_s(stamp: datetime) -> float:
    """This machine's UTC offset at a local wall-clock time (its fold says which pass of a repeated hour)."""
    return stamp.astimezone().utcoffset().total_seconds()


def pass_of(path: Path, stamp: datetime) -> int:
    """The fold of a frame named `stamp`: 1 if it is named in the hour this machine's clock repeats when summer time
    ends and its file was written in that hour's second pass (by its modification time), else 0."""
    first, second = stamp.replace(fold=0).timestamp(), stamp.replace(fold=1).timestamp()
    if first >= second:                 # a wall-clock time that happens once (or, skipped in spring, never)
        return 0
    try:
        written = path.stat().st_mtime
    except OSError:
        return 0
    return int(abs(written - second) < min(abs(written - first), (second - first) / 2))


def names_a_skipped_time(folder: Path) -> bool:
    """Whether a frame in `folder` is named at a wall-clock time this machine's clock skips when summer time starts
    (so the camera's clock does not keep this machine's summer time)."""
    try:
        changed = folder.stat().st_mtime_ns
    except OSError:
        return False
    return skipped_names_in(str(folder), changed)


@lru_cache(maxsize=8)
def skipped_names_in(folder: str, changed_ns: int) -> bool:
    """`names_a_skipped_time` for the folder as it was at `changed_ns` (its modification time: a new frame in it
    changes that)."""
    for name in os.listdir(folder):
        stamp = frame_time(name)
        if stamp is not None and stamp.replace(fold=0).timestamp() > stamp.replace(fold=1).timestamp():
            return True
    return False


@dataclass(frozen=True)
class FramePair:
    """A frame and the frame it is compared with (its predecessor)."""
    previous: Path
    current: Path
    gap_s: float

    @property
    def long_gap(self) -> bool:
        """The frames are far enough apart that the difference is unreliable."""
        return self.gap_s > LONG_GAP_S


def frame_pairs(frames: list[Path]) -> list[FramePair]:
    """Pair each frame with its predecessor (the last existing one across gaps).

    The first frame of a night has no predecessor and gets no pair: it is reported as skipped.
    """
    taken = {frame: taken_at(frame) for frame in frames}
    ordered = sorted(frames, key=taken.get)
    return [FramePair(prev, cur, taken[cur] - taken[prev]) for prev, cur in zip(ordered, ordered[1:])]
