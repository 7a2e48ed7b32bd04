"""The daily page — the implementation behind the generateWebsite Lambda and ``guAlta.py site``.

For a night it reads the store's detections and logs and writes ``YYYYMMDD.html`` (and ``index.html`` when it is the
latest night that has begun, and ``archive.html``, every night by month): per observatory, the detections in time order
with image, local time and score; consecutive detections (≤ 60 s apart) grouped as "possible satellite/plane" — split
where their streaks cannot be one crossing (two meteors of a shower in consecutive frames), and a run lasting over
15 min kept whole as a "long run" (clouds, rain or a light); detections of different observatories at the same moment
(within one 30 s exposure) linked as "also seen from", also to those filed under the nights either side (a camera kept
on another zone's date); frames processed from the end log; the ISS passes of that night. Rendered with Jinja2 with
autoescaping on: every stored value is text, never markup. Each page keeps what it was made from
(``pages/YYYYMMDD.json``): a scheduled build also rebuilds the recent nights, and the older ones marked late (by the
ingest, or by posting again), whose detections, logs, next night, links to the nights either side or posts it showed not
made yet or failed changed since — reports an observatory delivered late, after its outage, and posts made after the
page reach their page — and first posts again the night's detections and end logs whose Telegram post failed, and those
of earlier nights marked unsent.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path

from jinja2 import Environment, FileSystemLoader

from gualta import allsky, coincidence, ingest, passes, payload, service_env, store

log = logging.getLogger(__name__)

GROUP_GAP_S = 60
LONG_RUN_S = 900                  # a run of detections lasting longer is no satellite or plane crossing the sky
MAX_TURN_DEG = 10.0               # a crossing's next streak: its direction within this angle of the last one's, and
TURN_PER_PX = 0.05                # this many degrees more per px between their centres (a fisheye curves its path), ...
LINE_SLACK_PX = 10.0              # ... its centre within this distance of the last one's line, plus this share of
LINE_SLACK_SHARE = 0.2            # the distance between their centres, ...
GAP_LENGTHS = 6.0                 # ... and their nearest ends at most this many times the longer one's length apart
GAP_SLACK_PX = 30.0               # (+ this): a short exposure's dead time leaves a gap up to 5 × the piece
ISS_MARGIN_S = 60                 # a detection this close to a sunlit ISS pass is marked
PAGE_NAME = re.compile(r"([0-9]{8})\.html")
MAX_NAV_NIGHTS = 30
REFRESH_NIGHTS = 7                # a scheduled build brings this many earlier nights' pages up to date
LATE_PER_BUILD = 60               # late-marked nights a scheduled build brings up to date (the rest at the next)
RECOUNT_NIGHTS = 31               # the archive takes the latest nights' counts from their pages' own records
TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Row:
    """One detection as the page shows it; obs_id and id come from the store key, the rest from the record."""
    obs_id: str
    id: str
    stamp: datetime
    score: float | None
    img: str
    flag: str = ""
    model: str = ""
    telegram_status: str = ""
    streak: tuple[int, int, int, int] | None = None       # its ends in the frame's pixels, where the client sent them
    iss: bool = False
    seen_also: list["Row"] = field(default_factory=list)    # other observatories' detections of the same moment
    clock: tzinfo = timezone.utc                            # its camera clock's zone
    night: str = ""                 # the night whose page shows it, where that is not this page's (`neighbour_rows`)

    @property
    def anchor(self) -> str:
        return f"{self.obs_id}_{self.id}"

    @property
    def href(self) -> str:
        """Where a link to it leads: its card on this page, or on its own night's page."""
        return f"{self.night}.html#{self.anchor}" if self.night else f"#{self.anchor}"

    @property
    def tag(self) -> str:
        """The flag as the page names it (payload.FLAG_MEANINGS; an unknown flag as it is)."""
        return payload.FLAG_MEANINGS[self.flag][1] if self.flag in payload.FLAG_MEANINGS else self.flag

    @property
    def zone(self) -> str:
        """Its clock's zone ("CEST") when the clock of a detection it is linked to reads otherwise, else ''."""
        return coincidence.zone_named(self.stamp, self.clock, [other.clock for other in self.seen_also])

    def time_of(self, other: "Row") -> str:
        """A linked detection's time on its own clock, naming its zone where this one's reads otherwise."""
        return other.stamp.strftime("%H:%M:%S") + coincidence.zone_label(other.stamp, other.clock, self.clock)

    @property
    def telegram(self) -> str:
        """The Telegram post's outcome as the operator reads it; '' where nothing was to be posted."""
        status = self.telegram_status
        if status == "sent":
            return "posted to Telegram"
        if status.startswith("failed"):
            return f"Telegram post failed ({status.partition(':')[2].strip() or 'no reason given'})"
        if status.startswith("not posted"):
            return f"not posted to Telegram ({status.partition(':')[2].strip()})"
        return "not posted to Telegram yet" if status == "pending" else ""

    @property
    def held_back(self) -> bool:
        """Whether the observatory judged it no meteor (a flagged candidate it was asked to report anyway)."""
        return self.flag in payload.NOT_METEOR_FLAGS


@dataclass
class Section:
    """One observatory's part of the page."""
    obs_id: str
    name: str = ""
    groups: list[list[Row]] = field(default_factory=list)
    frames: int | None = None
    started: str = ""
    ended: str = ""
    report: passes.PassReport | None = None
    reported: bool = True       # False: configured, but neither a detection nor a log of this night came from it
    clock: tzinfo = timezone.utc   # its camera clock's zone

    @property
    def detections(self) -> int:
        """Its detections but the candidates it held back (a reader takes "7 detections" for 7 meteors)."""
        return sum(1 for group in self.groups for row in group if not row.held_back)

    @property
    def held_back(self) -> int:
        """The candidates it held back and reported as asked (flagged satellite, clouds, lightning)."""
        return sum(1 for group in self.groups for row in group if row.held_back)

    @property
    def possible_satellites(self) -> int:
        """What the page labels "possible satellite/plane": its boxed runs, and each detection flagged so outside
        them (a satellite the observatory held back, alone)."""
        boxed = [len(group) > 1 and not self.is_long(group) for group in self.groups]
        return sum(boxed) + sum(1 for group, box in zip(self.groups, boxed) if not box
                                for row in group if row.flag == payload.SATELLITE)

    @property
    def long_runs(self) -> int:
        return sum(1 for group in self.groups if self.is_long(group))

    def seconds(self, group: list[Row]) -> float:
        """How long a run of detections lasts, as the clock runs."""
        return run_seconds(group, self.clock)

    def minutes(self, group: list[Row]) -> int:
        """How long a run of detections lasts, in whole minutes."""
        return round(self.seconds(group) / 60)

    def is_long(self, group: list[Row]) -> bool:
        """A run longer than LONG_RUN_S: clouds, rain or a light rather than a satellite or a plane."""
        return self.seconds(group) > LONG_RUN_S

    @property
    def seen_elsewhere(self) -> int:
        return sum(1 for group in self.groups for row in group if row.seen_also)


def check_night(value) -> str:
    """A real YYYYMMDD date (`allsky.is_night_name`), else ValueError."""
    if not allsky.is_night_name(value):
        raise ValueError("not a night (a real date YYYYMMDD)")
    return value


def check_page_night(value, now: datetime, env) -> str:
    """A night a page may be asked for: a real date from payload.FIRST_YEAR to the night after tonight's (a camera
    east of the service's zone starts its night earlier), else ValueError. A night further ahead would stay the
    latest for good: index.html and the navigation would show it instead of tonight's."""
    night = check_night(value)
    tomorrow = (datetime.strptime(default_night(now, env), allsky.NIGHT_FORMAT) + timedelta(days=1)).strftime(
        allsky.NIGHT_FORMAT)
    if not f"{payload.FIRST_YEAR}0101" <= night <= tomorrow:
        raise ValueError(f"no page for night {night}: nights from {payload.FIRST_YEAR}0101 to {tomorrow}")
    return night


def _text(value, limit: int = 64) -> str:
    return str(value)[:limit] if value is not None else ""


def _score(value) -> float | None:
    return float(value) if type(value) in (int, float) and 0 <= value <= 1 else None


def _streak(value) -> tuple[int, int, int, int] | None:
    return tuple(value) if payload.is_streak(value) else None


def night_records(target: store.Store, night: str) -> dict:
    """{key: record} of the night's stored detections, read concurrently."""
    return store.read_json_many(target, [store.detection_key(night, obs_id, frame)
                                         for obs_id, frame, _ in coincidence.stored_detections(target, night)])


def read_rows(target: store.Store, night: str, known: dict | None = None) -> list[Row]:
    """The night's detection records in time order, read concurrently but for those `known` holds (read already);
    malformed records show with what can be read."""
    stored = coincidence.stored_detections(target, night)
    keys = [store.detection_key(night, obs_id, frame) for obs_id, frame, _ in stored]
    known = known or {}
    records = {**store.read_json_many(target, [key for key in keys if key not in known]), **known}
    rows = []
    for (obs_id, frame, stamp), key in zip(stored, keys):
        record = records.get(key)
        record = record if isinstance(record, dict) else {}
        rows.append(Row(obs_id, frame, stamp, _score(record.get("score")), store.image_key(night, obs_id, frame),
                        _text(record.get("flag")), _text(record.get("model")),
                        _text(record.get("telegram_status")), _streak(record.get("streak"))))
    return sorted(rows, key=lambda row: (row.obs_id, row.stamp))


def group_consecutive(rows: list[Row], gap_s: float = GROUP_GAP_S, zone: tzinfo = timezone.utc) -> list[list[Row]]:
    """Split one observatory's time-ordered rows into runs whose neighbours are at most gap_s apart (as the clock
    runs in its camera's zone: across the start of summer time 01:59:30 and 03:00:00 are 30 s apart)."""
    groups: list[list[Row]] = []
    for row in rows:
        if groups and (coincidence.instant(row.stamp, zone) - coincidence.instant(groups[-1][-1].stamp, zone)
                       <= gap_s):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def run_seconds(group: list[Row], zone: tzinfo) -> float:
    """How long a run of detections lasts, as the clock runs in its camera's zone."""
    return coincidence.instant(group[-1].stamp, zone) - coincidence.instant(group[0].stamp, zone)


def continues(earlier: tuple[int, int, int, int], later: tuple[int, int, int, int]) -> bool:
    """Whether a streak may be the next piece of one object's crossing after an earlier one, its path curving as a
    fisheye lens draws it: directions within MAX_TURN_DEG (+ TURN_PER_PX × the distance between their centres), its
    centre near the earlier one's line (LINE_SLACK_PX + LINE_SLACK_SHARE × that distance), their nearest ends within
    GAP_LENGTHS × the longer one's length (+ GAP_SLACK_PX). A streak of no length has no direction to tell by: only
    the gap is read."""
    ex, ey, lx, ly = earlier[2] - earlier[0], earlier[3] - earlier[1], later[2] - later[0], later[3] - later[1]
    earlier_length, later_length = math.hypot(ex, ey), math.hypot(lx, ly)
    gap = min(math.dist(earlier[i:i + 2], later[j:j + 2]) for i in (0, 2) for j in (0, 2))
    within_gap = gap <= GAP_LENGTHS * max(earlier_length, later_length) + GAP_SLACK_PX
    if not earlier_length or not later_length:
        return within_gap
    cosine = min(abs(ex * lx + ey * ly) / (earlier_length * later_length), 1.0)
    dx, dy = (later[0] + later[2] - earlier[0] - earlier[2]) / 2, (later[1] + later[3] - earlier[1] - earlier[3]) / 2
    distance = math.hypot(dx, dy)
    return (math.degrees(math.acos(cosine)) <= MAX_TURN_DEG + TURN_PER_PX * distance
            and abs(dx * ey - dy * ex) / earlier_length <= LINE_SLACK_PX + LINE_SLACK_SHARE * distance and within_gap)


def may_be_one_crossing(earlier: Row, later: Row) -> bool:
    """Whether consecutive detections may be one satellite's or plane's: unless both carry a streak (older clients
    send none) and the later one's does not continue the earlier one's."""
    return earlier.streak is None or later.streak is None or continues(earlier.streak, later.streak)


def split_crossings(run: list[Row]) -> list[list[Row]]:
    """Split a run of detections between neighbours that cannot be one crossing (`may_be_one_crossing`)."""
    parts = [run[:1]]
    for earlier, later in zip(run, run[1:]):
        if may_be_one_crossing(earlier, later):
            parts[-1].append(later)
        else:
            parts.append([later])
    return parts


def group_runs(rows: list[Row], zone: tzinfo = timezone.utc) -> list[list[Row]]:
    """One observatory's time-ordered rows as the page groups them: consecutive ones (`group_consecutive`), a run
    lasting over LONG_RUN_S kept whole (a long run: clouds, rain or a light), a shorter one split where the streaks
    show different objects (`split_crossings`: two meteors of a shower in consecutive frames)."""
    return [part for run in group_consecutive(rows, zone=zone)
            for part in ([run] if run_seconds(run, zone) > LONG_RUN_S else split_crossings(run))]


def read_logs(target: store.Store, night: str) -> dict[str, dict]:
    """{obs_id: {"start": record, "end": record}} from the night's logs."""
    logs: dict[str, dict] = {}
    for key, record in store.read_json_many(target, target.keys(f"logs/{night}/")).items():
        obs_id, _, kind = key.rpartition("/")[2].removesuffix(".json").rpartition("_")
        if payload.OBS_ID.fullmatch(obs_id) and kind in payload.LOG_KINDS and isinstance(record, dict):
            logs.setdefault(obs_id, {})[kind] = record
    return logs


def mark_iss(rows: list[Row], report: passes.PassReport, zone: tzinfo) -> None:
    """Flag rows taken during a sunlit ISS pass, compared as instants (camera clock = observatory zone; a pass
    across a change of summer time ends, on the wall clock, before it starts)."""
    windows = [(p.start.timestamp() - ISS_MARGIN_S, p.end.timestamp() + ISS_MARGIN_S)
               for p in report.passes if p.sunlit]
    for row in rows:
        when = coincidence.instant(row.stamp, zone)
        row.iss = any(start <= when <= end for start, end in windows)


def neighbour_rows(target: store.Store, night: str) -> list[Row]:
    """The detections stored under the nights either side of `night` (`coincidence.nights_either_side`: a camera on
    UTC far from Greenwich files part of a night there), from their keys alone, as rows that link to their own
    night's page."""
    rows = []
    for other in coincidence.nights_either_side(night):
        rows += [Row(obs_id, frame, stamp, None, store.image_key(other, obs_id, frame), night=other)
                 for obs_id, frame, stamp in coincidence.stored_detections(target, other)]
    return rows


def linked_elsewhere(rows: list[Row]) -> list[str]:
    """The store keys of the other nights' detections these rows are linked to (`mark_coincidences`)."""
    return sorted({store.detection_key(other.night, other.obs_id, other.id)
                   for row in rows for other in row.seen_also if other.night})


def links_elsewhere(target: store.Store, night: str, env) -> list[str]:
    """The other nights' detections a night's page links to now, from the stored keys alone."""
    rows = [Row(obs_id, frame, stamp, None, "")
            for obs_id, frame, stamp in coincidence.stored_detections(target, night)]
    mark_coincidences(rows + neighbour_rows(target, night), coincidence.zones_from_env(env))
    return linked_elsewhere(rows)


def mark_coincidences(rows: list[Row], zone_of) -> None:
    """Link each detection to the other observatories' detections of the same moment (`coincidence.together`)."""
    for row in rows:
        row.clock = zone_of(row.obs_id)
    moments = sorted(((coincidence.instant(row.stamp, row.clock), row) for row in rows), key=lambda moment: moment[0])
    for i, (when, row) in enumerate(moments):
        for later, other in moments[i + 1:]:
            if later - when > coincidence.WINDOW_S:
                break
            if coincidence.together((row.obs_id, row.stamp), (other.obs_id, other.stamp), zone_of):
                row.seen_also.append(other)
                other.seen_also.append(row)


def sections(target: store.Store, night: str, env, records: dict | None = None) -> list[Section]:
    """Every observatory seen this night (detections, logs or configuration), in obs_id order (whatever the case)."""
    rows = read_rows(target, night, records)
    logs = read_logs(target, night)
    configured = passes.observatories_from_env(env)
    zone_of = coincidence.zones_from_env(env)
    mark_coincidences(rows + neighbour_rows(target, night), zone_of)
    obs_ids = sorted({row.obs_id for row in rows} | logs.keys() | configured.keys(), key=lambda obs_id: (
        obs_id.casefold(), obs_id))                                 # as a reader orders names: obs01 before Obs02
    iss = night_iss(target, night, env) if any(obs_id in configured for obs_id in obs_ids) else None
    reports = passes.night_passes(obs_ids, night, env, iss)
    result = []
    for obs_id in obs_ids:
        own, zone = [row for row in rows if row.obs_id == obs_id], zone_of(obs_id)
        mark_iss(own, reports[obs_id], zone)
        end, start = logs.get(obs_id, {}).get("end", {}), logs.get(obs_id, {}).get("start", {})
        total = end.get("total")
        result.append(Section(obs_id, configured[obs_id].name if obs_id in configured else "",
                              group_runs(own, zone), total if type(total) is int else None,
                              _text(on_clock(start.get("processed") or start.get("received"), zone)),
                              _text(on_clock(end.get("processed") or end.get("received"), zone)), reports[obs_id],
                              bool(own) or obs_id in logs, zone))
    return result


def night_iss(target: store.Store, night: str, env) -> tuple[object | None, str]:
    """The ISS of a night's passes, (satellite, source), from a TLE: of the one kept by an earlier build of the night
    (`store.night_tle_key`) and today's (`passes.load_tle_text`), the one whose epoch is nearest the night — kept for
    later builds where it is fit to use: a rebuild weeks on (a late report) shows the passes its first build did, where
    today's TLE, far from the night, would show none."""
    key = store.night_tle_key(night)
    kept = (target.get(key) or b"").decode("ascii", "replace")
    fresh, source = passes.load_tle_text(env)
    known = [(text, name, satellite) for text, name in ((kept, f"the TLE kept for this night ({key})"), (fresh, source))
             if text and (satellite := passes.read_tle(text)) is not None]
    if not known:
        return None, source
    text, name, satellite = min(known, key=lambda tle: abs(passes.tle_age_days(tle[2], night)))
    if text != kept and abs(passes.tle_age_days(satellite, night)) <= passes.UNUSABLE_TLE_DAYS:
        try:
            target.put(key, text.encode("ascii", "replace"))
        except store.StoreError as exc:
            log.warning("cannot keep the TLE of night %s: %s", night, exc)
    return satellite, name


def on_clock(stamp, zone: tzinfo):
    """An ISO-8601 time with an offset as the observatory's clock reads it (the page's times are each camera's
    local time; `received` is the service's UTC); anything else as it is."""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (AttributeError, TypeError, ValueError):
        return stamp
    return moment.astimezone(zone).isoformat() if moment.tzinfo else stamp


def page_nights(target: store.Store) -> list[str]:
    """Nights that have a page, oldest first."""
    names = (PAGE_NAME.fullmatch(key) for key in target.keys("", recursive=False))
    return sorted(match.group(1) for match in names if match)


def environment() -> Environment:
    """Jinja2 with autoescaping always on."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["night_date"] = lambda night: datetime.strptime(night, allsky.NIGHT_FORMAT).strftime("%Y-%m-%d")
    env.filters["when"] = short_time
    env.filters["zones"] = zone_names
    env.filters["clock"] = lambda moment, zones: moment.strftime("%H:%M:%S" + (" %Z" if len(zones) > 1 else ""))
    return env


def zone_names(found: list[passes.Pass]) -> list[str]:
    """The zone abbreviations of the passes' times, in order (two on a night summer time ends or starts)."""
    names = [moment.strftime("%Z") for p in found for moment in (p.start, p.peak, p.end)]
    return list(dict.fromkeys(names))


def short_time(text: str) -> str:
    """An ISO-8601 time as 'YYYY-MM-DD HH:MM' in its own offset; other text unchanged (it is escaped anyway)."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text


def flags_shown(parts: list[Section]) -> list[tuple[str, str]]:
    """(tag, why) of the known flags the page's detections carry, for its legend."""
    flags = {row.flag for part in parts for group in part.groups for row in group}
    return [meaning[1:] for flag, meaning in payload.FLAG_MEANINGS.items() if flag in flags]


def night_counts(parts: list[Section]) -> dict[str, int]:
    """A night's counts as its page heads them and the archive lists them: {"detections", "held_back"}."""
    return {"detections": sum(part.detections for part in parts), "held_back": sum(part.held_back for part in parts)}


def render_day(night: str, parts: list[Section], earlier: list[str], later: list[str], generated: datetime) -> str:
    """The HTML of a night's page."""
    return environment().get_template("day.html").render(
        night=night, sections=parts, earlier=earlier[::-1][:MAX_NAV_NIGHTS], later=later[:1],
        generated=generated.strftime("%Y-%m-%d %H:%M %Z").strip(), flags=flags_shown(parts),
        counts=night_counts(parts), gap_s=GROUP_GAP_S, coincidence_s=coincidence.WINDOW_S)


def archive_count(value) -> dict[str, int] | None:
    """A night's counts as the archive keeps them ({"detections", "held_back"}, `night_counts`); a bare number, kept
    before held-back candidates were counted apart, stays what that night's page heads (reading every old night's
    records again could outlast the page function); None for anything else (counted again: `write_archive`)."""
    if isinstance(value, dict) and all(type(value.get(key)) is int for key in ("detections", "held_back")):
        return {"detections": value["detections"], "held_back": value["held_back"]}
    return {"detections": value, "held_back": 0} if type(value) is int else None


def render_archive(nights: list[str], counts: dict, generated: datetime) -> str:
    """The HTML of the page listing every night with a page, by month, newest first, with its counts."""
    newest_first = sorted(nights, reverse=True)
    months = [(datetime.strptime(month, "%Y%m").strftime("%B %Y"),
               [(night, archive_count(counts.get(night))) for night in days])
              for month, days in itertools.groupby(newest_first, key=lambda night: night[:6])]
    return environment().get_template("archive.html").render(
        months=months, nights=len(newest_first), generated=generated.strftime("%Y-%m-%d %H:%M %Z").strip())


def write_archive(target: store.Store, built: dict[str, dict], nights: list[str], generated: datetime) -> None:
    """Keep the nights' counts ({night: `night_counts`} of the pages just built, `store.ARCHIVE_COUNTS`) and write
    archive.html (`render_archive`): after a year of nights the pages' links reach only the last MAX_NAV_NIGHTS.
    Two builds at once each write what they read before the other wrote: the latest RECOUNT_NIGHTS nights' counts
    are taken from what each page was made from (`pages/YYYYMMDD.json`), so the next build mends a count lost so."""
    kept = store.read_json(target, store.ARCHIVE_COUNTS)
    kept = {night: archive_count(value) for night, value in (kept.items() if isinstance(kept, dict) else ())}
    counts = {**{night: value for night, value in kept.items() if value is not None}, **built}
    counts.update(counts_kept_with_pages(target, [night for night in nights[-RECOUNT_NIGHTS:] if night not in built]))
    counts.update(counts_made_from(target, [earlier for earlier in nights if earlier not in counts]))
    store.write_json(target, store.ARCHIVE_COUNTS, counts)
    target.put(store.ARCHIVE_PAGE, render_archive(nights, counts, generated).encode("utf-8"))


def render_missing() -> str:
    """The HTML answered for a page not made yet: a post's link to its night's page, followed before the morning."""
    return environment().get_template("missing.html").render()


def write_missing_page(target: store.Store) -> None:
    """Write `store.MISSING_PAGE` (the S3 website's error document) as `render_missing` makes it: a build makes it
    on a new service and keeps it as this version words it."""
    target.put(store.MISSING_PAGE, render_missing().encode("utf-8"))


def counts_kept_with_pages(target: store.Store, nights: list[str]) -> dict[str, dict]:
    """The counts each night's page was built with, where its `pages/YYYYMMDD.json` keeps them."""
    made = store.read_json_many(target, [store.page_inputs_key(night) for night in nights])
    counts = {night: archive_count(record.get("counts")) for night in nights
              if isinstance(record := made.get(store.page_inputs_key(night)), dict)}
    return {night: value for night, value in counts.items() if value is not None}


def counts_made_from(target: store.Store, nights: list[str]) -> dict[str, dict]:
    """The counts (`night_counts`) of nights the archive has none of (pages built before it kept them, a count lost
    to two builds at once), from the detection records each page was made of (`page_inputs`); nights without that
    record are left out."""
    made = store.read_json_many(target, [store.page_inputs_key(night) for night in nights])
    inputs = {night: [key for key in record["inputs"] if str(key).startswith("detections/")]
              for night, record in ((night, made[store.page_inputs_key(night)]) for night in nights)
              if isinstance(record, dict) and isinstance(record.get("inputs"), list)}
    records = store.read_json_many(target, [key for keys in inputs.values() for key in keys])
    return {night: payload.tally(records.get(key) for key in keys) for night, keys in inputs.items()}


def build_day(target: store.Store, night: str, env, now: datetime | None = None, records: dict | None = None,
              coming: tuple[str, ...] = (), archive: bool = True) -> dict:
    """Write night's page (and index.html if it is the latest that has begun: a page asked for tomorrow's night would
    show an empty night there, last night's page built after it no longer the latest) and what it was made from, and
    the archive with it unless `archive` is False (pages built together: written once after them); return a summary.
    `records`: detection records read already ({key: record}), not read again; `coming`: nights whose pages are
    being built with it (linked as if they had one already)."""
    check_night(night)
    now = now or datetime.now(timezone.utc)
    made_from = page_inputs(target, night)            # listed first: whatever lands during the build is seen later
    parts = sections(target, night, env, records)
    linked = linked_elsewhere([row for part in parts for group in part.groups for row in group])
    known = sorted(set(page_nights(target)) | {night} | set(coming))
    later, generated = [n for n in known if n > night], now.astimezone(service_env.timezone(env))
    data = render_day(night, parts, [n for n in known if n < night], later, generated).encode("utf-8")
    written = [store.page_key(night)]
    target.put(written[0], data)
    counts = night_counts(parts)
    store.write_json(target, store.page_inputs_key(night), {"inputs": made_from, "next": later[:1], "linked": linked,
                                                            "counts": counts, "unsent": unsent_shown(night, parts)})
    if night == max((n for n in known if n <= default_night(now, env)), default=None):
        target.put("index.html", data)
        written.append("index.html")
    if archive:
        write_archive(target, {night: counts}, known, generated)
        written.append(store.ARCHIVE_PAGE)
    log.info("daily page %s: %d detections, %d held back, %d observatories", night, counts["detections"],
             counts["held_back"], len(parts))
    return {"night": night, **counts, "observatories": len(parts), "written": written}


def unsent_shown(night: str, parts: list[Section]) -> dict[str, str]:
    """{key: telegram_status} of the detections a page shows not posted yet or failed: their post may be made after
    the page is (in flight while it was built, posted again by a later build)."""
    return {store.detection_key(night, row.obs_id, row.id): row.telegram_status
            for part in parts for group in part.groups for row in group
            if row.telegram_status == "pending" or row.telegram_status.startswith("failed")}


def posts_changed(target: store.Store, shown) -> bool:
    """Whether a detection a page showed not posted yet or failed (`unsent_shown`) has another Telegram status now:
    only those records are read (none where the page showed every post settled)."""
    if not isinstance(shown, dict) or not shown:
        return False
    records = store.read_json_many(target, list(shown))
    return any(_text((record if isinstance(record, dict) else {}).get("telegram_status")) != shown[key]
               for key, record in records.items())


def page_inputs(target: store.Store, night: str) -> list[str]:
    """What a night's page is made from: its detections' keys, and its logs' keys with a digest of their content (a
    log is replaced under its key when a night is reported again)."""
    logs = [f"{key} {hashlib.sha256(data or b'').hexdigest()[:16]}"
            for key, data in sorted(store.get_many(target, target.keys(f"logs/{night}/")).items())]
    return sorted(target.keys(f"detections/{night}/")) + logs


def stale_nights(target: store.Store, night: str, late: list[str], env, missed: list[str] | None = None) -> list[str]:
    """The nights before `night` whose page is out of date (`page_is_stale`) or missing, oldest first, among: the
    last REFRESH_NIGHTS with a page, the REFRESH_NIGHTS calendar nights before `night` that have reports but no page
    (`missed`, else listed here: a morning's build missed, the service down then), and the `late` ones (marked by the
    ingest: a client back after a long outage), with the pages either side of each (their links to it)."""
    nights = page_nights(target)
    recent = [n for n in nights if n < night][-REFRESH_NIGHTS:]
    missed = missed_nights(target, night, nights) if missed is None else missed
    beside_late = [max((n for n in nights if n < late_night), default=None) for late_night in late] + \
        [min((n for n in nights if n > late_night), default=None) for late_night in late]   # linking to it
    candidates = sorted(set(recent) | set(missed) | set(late) | set(filter(None, beside_late)))
    return [earlier for earlier in candidates if page_is_stale(target, earlier, nights, env)]


def missed_nights(target: store.Store, night: str, nights: list[str] | None = None) -> list[str]:
    """The REFRESH_NIGHTS calendar nights before `night` that have reports but no page (among `nights`, else those
    of the store): a morning's build missed, the service down then."""
    nights = page_nights(target) if nights is None else nights
    return [n for n in calendar_nights_before(night, REFRESH_NIGHTS) if n not in nights and has_reports(target, n)]


def calendar_nights_before(night: str, count: int) -> list[str]:
    """The `count` nights (dates) before `night`, oldest first."""
    day = datetime.strptime(night, allsky.NIGHT_FORMAT)
    return [(day - timedelta(days=back)).strftime(allsky.NIGHT_FORMAT) for back in range(count, 0, -1)]


def has_reports(target: store.Store, night: str) -> bool:
    """Whether the store holds detections or logs of the night."""
    return bool(target.keys(f"detections/{night}/") or target.keys(f"logs/{night}/"))


def refresh_stale(target: store.Store, night: str, env, now: datetime, missed: list[str] | None = None) -> list[str]:
    """Rebuild the pages out of date before `night` (`stale_nights`; `missed`: its missed nights, listed already) —
    of the nights marked late, the latest LATE_PER_BUILD, the rest at the next build — then the archive once, and
    return their nights. A late mark is taken off once the pages are written and its page is up to date against
    them, so a build cut off (the Lambda's time up) leaves marked the nights it did not reach and those whose page
    links one it did not write (all of them if the process is killed), and a report stored during its page's build
    keeps it marked."""
    late = [n for n in store.late_nights(target) if n < night][-LATE_PER_BUILD:]
    stale, counts = stale_nights(target, night, late, env, missed), {}
    for marked in sorted(set(late) - set(stale)):                  # up to date already
        take_off_late_mark(target, marked, env, coming=tuple(stale))
    try:
        for earlier in stale:
            summary = build_day(target, earlier, env, now, coming=tuple(stale), archive=False)
            counts[earlier] = {key: summary[key] for key in ("detections", "held_back")}
    finally:                                                       # the pages made before a failure are listed too
        for built in sorted(set(counts) & set(late)):             # checked against the pages written by now
            take_off_late_mark(target, built, env)
        if counts:
            write_archive(target, counts, page_nights(target), now.astimezone(service_env.timezone(env)))
    return list(counts)


def take_off_late_mark(target: store.Store, night: str, env, coming: tuple[str, ...] = ()) -> None:
    """Take a night's late mark off, and put it back if its page is out of date after all (a report stored since it
    was built: the ingest stores before it marks, so whatever the order the mark stays when it must) — as it will be
    once the pages of `coming` (built in the same refresh, linked as if they had one: `build_day`) are written."""
    target.delete(store.late_key(night))
    nights = sorted(set(page_nights(target)) | set(coming))
    if page_is_stale(store.read_now(target), night, nights, env):      # as stored now, not as listed
        target.put(store.late_key(night), b"")


def page_is_stale(target: store.Store, night: str, nights: list[str], env) -> bool:
    """Whether a night's page is missing or was made from other detections, logs, next night or links to the nights
    either side (`links_elsewhere`) than now's, or shows a post not made yet or failed that has another outcome now
    (`posts_changed`; a record from before pages kept what they showed: rebuilt once)."""
    made = store.read_json(target, store.page_inputs_key(night))
    following = [n for n in nights if n > night][:1]
    return not isinstance(made, dict) or made.get("inputs") != page_inputs(target, night) \
        or made.get("next") != following or made.get("linked", []) != links_elsewhere(target, night, env) \
        or "unsent" not in made or posts_changed(target, made["unsent"])     # made before pages kept it: once


def default_night(now: datetime, env) -> str:
    """The night of `now`: before noon the one that began the evening before, from noon on tonight's."""
    return allsky.night_of(now.astimezone(service_env.timezone(env)))


def handle(event, env=None, now: datetime | None = None) -> dict:
    """generateWebsite entry: event {"day": "YYYYMMDD"} (that night's page), or a schedule event (any event without
    a day): the night that ended last (`service_env.ended_night`) — its detections and end logs whose Telegram post
    failed posted again first, and those of earlier nights marked unsent (`ingest.repost_unsent`, listed as
    "reposted") — then the earlier pages that are out of date (`refresh_stale`, listed as "refreshed")."""
    env = os.environ if env is None else env
    now = now or datetime.now(timezone.utc)
    target = store.ReadOnce(store.store_from_env(env))    # a night listed, a page's record read once a build
    write_missing_page(target)
    day = event.get("day") if isinstance(event, dict) else None
    if day is not None:
        return build_day(target, check_page_night(day, now, env), env, now)
    night = service_env.ended_night(now, env)
    records = night_records(target, night)            # read once, for posting again and for the page
    reposted = ingest.repost_unsent(target, night, env, now, records)
    missed = missed_nights(target, night)
    summary = {**build_day(target, night, env, now, records, coming=tuple(missed)),
               "reposted": reposted}                 # linked to the missed nights its refresh brings back
    summary["refreshed"] = refresh_stale(target, summary["night"], env, now, missed)
    return summary
