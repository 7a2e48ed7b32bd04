"""Scoring a night: consecutive pairs → the thesis' preprocessing → the model in batches → threshold → the cross-frame
checks → scores CSV and reports. Used by the batch run here and by the real-time watcher (gualta.realtime), which feed
the same `Scorer` and `Decider` and so reach the same decisions. Beside the model, the fireball check
(`gualta.fireball`) makes a frame a candidate when its full-resolution difference holds a bright, saturated streak, and
the streak check (`gualta.streak`) when it holds a thin, straight streak (a short or faint meteor). A candidate is
flagged, and not reported unless `guAlta_report_flagged` asks, when the adjacent frames or its own light explain it: a
satellite or a plane (`gualta.trails`, `Decider.bright_again`, `Piece.own_light`), clouds changing there too
(`gualta.clouds`) or a flash lighting the sky (`gualta.lightning`).

Every frame gets one scores row, in time order. A frame that is not scored (the first frame of the night or after
daylight, a bad frame, the first after a camera stop or a size change, one with no good frame before it, one taken in
daylight) gets an empty score and the flag `skipped`, its reason in `note`; it is never scored against its successor.
Decoding and preprocessing of the next batch run in a worker thread while the model scores the current one.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

import numpy as np
from tqdm import tqdm

from gualta import allsky, clouds, faint_crossing, fireball, lightning, streak, trails, wingtips
from gualta.cli import ConsoleLines, counted
from gualta.client_errors import ClientError, NightError, UsageError
from gualta.config import Settings
from gualta.classical import apply_mask
from gualta.frames import (BLANK, FROZEN, NO_EARLIER, ODD_SIZED, PARTLY_WRITTEN, REPEATED, SIZE_CHANGED, UNREADABLE,
                           NightFrames, read_mask)
from gualta.model import batches
from gualta.model_update import model_version, open_model, refreshed_model
from gualta.payload import (CLOUD, FIREBALL, LIGHTNING, MAX_STREAK_PX, SATELLITE, STREAK, PayloadError, build_detection,
                            build_log)
from gualta.preprocess import BadFrame, binary_difference, read_frame, resize_area, side_by_side, washed_out_share
from gualta.report import ApiClient, Outbox, Sender, detection_key, log_key
from gualta.scores import CsvRows, names_a_folder, scored_whole, scores_file

log = logging.getLogger(__name__)

FLAG_REASONS = {SATELLITE: "a satellite or a plane: it continues in an adjacent frame (or two back) or its own light "
                           "shows it",
                CLOUD: "clouds that change in an adjacent frame too",
                LIGHTNING: "a flash: a wide region of sky lit up in this frame only"}
FIREBALL_NOTE = "fireball: a bright, saturated streak in this frame only"
STREAK_NOTE = "streak: a thin streak in this frame only"
BELOW_THRESHOLD_NOTE = "; the model scored it below the threshold"
FAINT_STREAK_SCORE = 0.25    # a faint streak (gualta.streak) longer than noise leaves pieces makes a candidate where
                             # the model scores at least this
FAINT_NOTE = f"; faint, where the model scored it below the threshold but at least {FAINT_STREAK_SCORE}"
WASHED_OUT_NOTE = "sky washed out: it brightened as a whole or is saturated, so the model's score is not used"
SHARED_NOTE = "a streak no adjacent frame explains, though they explain the rest of the frame"
ERASED_SHARE = 0.5           # a streak mostly (this share of it) where explaining away erases is the satellite's own
WASHED_OUT_SHARE = 0.6       # a frame whose sky brightened or saturated this much (`preprocess.washed_out_share`)
SKIPPED = "skipped"
DAYTIME = "daytime: "             # the note of a frame taken in daylight, skipped unread
METEOR, NO_METEOR = "meteor", "no-meteor"
THUMB_SIZE = 224
NEIGHBOUR_MAX_GAP_S = allsky.LONG_GAP_S      # frames further apart than this are no neighbours: no check compares them
STREAK_WORKERS = 2
MAX_RUNS_SHOWN = 4            # runs of nights the `--catch-up` line names; those between are counted
GRAY_FRAMES_KEPT = 6          # frames `faint_crossing` keeps decoded: a candidate's, its neighbours', the next one's


@dataclass
class FrameResult:
    """One frame of a night: its score against its predecessor (None if skipped) and the decision."""
    file: Path
    previous: Path | None = None
    score: float | None = None
    note: str = ""
    diff: np.ndarray | None = field(default=None, repr=False)      # 400×400 difference image
    thumb: np.ndarray | None = field(default=None, repr=False)     # 224×224 gray frame, for the report image
    frame_size: tuple[int, int] | None = None                      # width, height, as read (`scale`)
    scale: float = 1.0                                             # the file's pixels per pixel read
    label: str = ""
    flag: str = ""
    detection: bool = False
    streak: tuple[int, int, int, int] | None = None
    bright: fireball.Streak | None = None                          # the fireball check's streak, if any
    washed_out: bool = False                                       # the sky brightened or saturated as a whole
    brightening: np.ndarray | None = field(default=None, repr=False)   # `lightning.brightening`, a block a pixel
    lit: np.ndarray | None = field(default=None, repr=False)       # `lightning.lit_region` of it, if any
    shrunk: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)   # the pair, `lightning.shrunk`
    pieces: list[streak.Piece] = field(default_factory=list, repr=False)   # the streak check's, most prominent first
    shared_streak: tuple[int, int, int, int] | None = None         # a meteor's streak beside an explained satellite
    _trails: list | None = field(default=None, repr=False)
    _lines: list | None = field(default=None, repr=False)
    _faint_lines: list | None = field(default=None, repr=False)
    faint_search: faint_crossing.Search | None = field(default=None, repr=False)   # kept until it is decided

    @property
    def scored(self) -> bool:
        return self.score is not None

    @property
    def daylit(self) -> bool:
        """Whether it was skipped unread as taken in daylight (`daytime_rule`)."""
        return self.note.startswith(DAYTIME)

    @property
    def trails(self) -> list[trails.Trail]:
        """Straight trails of the difference image (computed once, on demand)."""
        if self._trails is None:
            self._trails = trails.find_trails(self.diff) if self.diff is not None else []
        return self._trails

    @property
    def lines(self) -> list[trails.Line]:
        """Straight structures a neighbouring candidate can be explained by (computed once, on demand)."""
        if self._lines is None:
            self._lines = trails.lines_of(self.diff) if self.diff is not None else []
        return self._lines

    @property
    def faint_lines(self) -> list[trails.Line]:
        """Faint straight structures of the difference image (computed once, on demand)."""
        if self._faint_lines is None:
            self._faint_lines = trails.faint_lines_of(self.diff) if self.diff is not None else []
        return self._faint_lines

    def streak_in_file(self) -> tuple[int, int, int, int] | None:
        """Its streak's ends in the file's pixels (None without a streak)."""
        return tuple(int(round(value * self.scale)) for value in self.streak) if self.streak else None

    def row(self) -> dict:
        """Its scores CSV row (the streak in the file's pixels)."""
        x1, y1, x2, y2 = self.streak_in_file() or [""] * 4
        return {"file": self.file.name, "score": "" if self.score is None else f"{self.score:.6f}",
                "label": self.label, "detection": int(self.detection), "flag": self.flag,
                "previous": self.previous.name if self.previous else "", "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                "note": self.note}


# --- scoring ---------------------------------------------------------------------------------------------------------

BAD_FRAME = "bad frame: "            # the note of a frame that cannot be used, before why
FIRST_NOTE = "first frame of the night: no predecessor"
AFTER_DAYLIGHT_NOTE = "first frame after daylight: no predecessor"
GAP_NOTE = "previous good frame "    # the start of the note of the first frame after a camera stop
CLOCK_SET_BACK = "(the camera's clock set back?)"     # in the notes of frames not scored for a clock set back
SKIP_WORDS = [(FIRST_NOTE, "first of the night"), (AFTER_DAYLIGHT_NOTE, "first after daylight"),
              (BAD_FRAME + BLANK, "blank"), (BAD_FRAME + UNREADABLE, "unreadable"),
              (BAD_FRAME + PARTLY_WRITTEN, "partly written"), (ODD_SIZED, "wrong size"),
              (SIZE_CHANGED, "size change"), (NO_EARLIER, "no good frame before"), (GAP_NOTE, "after a camera stop")]
NIGHT_STARTS = {"first of the night", "first after daylight"}    # skipped every night: no reason to be told why


def skip_reason(frames: NightFrames, frame: Path) -> str:
    if frames.frames and frames.frames[0] == frame:
        return FIRST_NOTE
    if frames.image(frame) is None:
        return f"{BAD_FRAME}{frames.bad_reason(frame)}"
    return frames.afresh_reason(frame) or frames.unpaired_reason(frame) or NO_EARLIER


def skip_word(note: str) -> str:
    """Why a frame was skipped, in a word or two, from its note: 'blank', 'unreadable', 'wrong size', ..."""
    if note.startswith(BAD_FRAME + REPEATED):
        return "frozen" if note.endswith(f"({FROZEN})") else "copy"
    if CLOCK_SET_BACK in note:
        return "clock set back"
    return next((word for start, word in SKIP_WORDS if note.startswith(start)), "other")


def prepare(frames: NightFrames, frame: Path, kind: str = "diff",
            streak_check: bool = True) -> tuple[FrameResult, np.ndarray | None]:
    """A frame's result so far and its model input (None if it has no usable pair); the streak check's pieces only
    with `streak_check`."""
    return prepare_batch(frames, [frame], kind, streak_check)[0]


def prepare_pair(frames: NightFrames, frame: Path, kind: str) -> tuple[FrameResult, np.ndarray | None, tuple | None]:
    """A frame's result without the streak check, its model input and the (current, previous) gray frames the streak
    check reads (both None if it has no usable pair). The mask (`NightFrames.mask`) blacks out what the fireball and
    streak checks read; the model reads the whole frames, as it was trained."""
    pair = frames.pair(frame)
    if pair is None:
        return FrameResult(frame, note=skip_reason(frames, frame), flag=SKIPPED), None, None
    note = not_comparable(pair)
    if note:
        log.warning("%s: %s", frame.name, note)
        return FrameResult(frame, note=note, flag=SKIPPED), None, None
    current, previous = frames.image(pair.current), frames.image(pair.previous)
    binary = binary_difference(current, previous)
    diff = resize_area(binary)
    model_input = diff if kind == "diff" else resize_area(current)
    shrunk = lightning.shrunk(current), lightning.shrunk(previous)
    checked = apply_mask(current, frames.mask), apply_mask(previous, frames.mask)
    result = FrameResult(frame, pair.previous, diff=diff, thumb=resize_area(current, THUMB_SIZE),
                         frame_size=(current.shape[1], current.shape[0]), scale=frames.scale(pair.current),
                         bright=fireball.bright_streak(*checked),
                         washed_out=washed_out_share(binary, current, previous) >= WASHED_OUT_SHARE,
                         brightening=lightning.shrunk_brightening(*shrunk), shrunk=shrunk)
    result.lit = lightning.lit_region(result.brightening)
    return result, model_input, checked


def not_comparable(pair: allsky.FramePair) -> str:
    """Why a frame is not compared with its predecessor — stars and clouds moved in between, the difference would
    be noise — or "": the camera stopped (allsky.LONG_GAP_S)."""
    if pair.long_gap:
        return f"{GAP_NOTE}{pair.previous.name} is {pair.gap_s / 60:.0f} min earlier: not compared"
    return ""


def prepare_batch(frames: NightFrames, batch: list[Path], kind: str,
                  streak_check: bool = True) -> list[tuple[FrameResult, np.ndarray | None]]:
    """prepare() for each frame of a batch, the streak check's pieces computed STREAK_WORKERS pairs at a time (it
    costs several times the rest, and OpenCV and numpy work outside the GIL)."""
    prepared = [prepare_pair(frames, frame, kind) for frame in batch]
    if streak_check:
        jobs = [(result, pair) for result, _, pair in prepared if pair is not None]
        with ThreadPoolExecutor(STREAK_WORKERS, thread_name_prefix="gualta-streak") as pool:
            for (result, _), found in zip(jobs, pool.map(lambda job: streak_pieces(job[0], *job[1]), jobs)):
                result.pieces = found
    return [(result, model_input) for result, model_input, _ in prepared]


def streak_pieces(result: FrameResult, current: np.ndarray, previous: np.ndarray) -> list[streak.Piece]:
    """The streak check's pieces of a frame (gray current and previous), those with a plane's wingtip lights marked
    (`gualta.wingtips`; the colour frames are decoded only when a piece is worth reading)."""
    found = streak.pieces(current, previous)
    if not any(wingtips.worth_reading(piece) for piece in found):
        return found
    try:
        return wingtips.marked(found, read_frame(result.file, colour=True), read_frame(result.previous, colour=True))
    except BadFrame as exc:
        log.warning("%s: wingtip lights not read: %s", result.file.name, exc)
        return found


class Scorer:
    """Scores frames of one night with a model, preparing the next batch while the model runs; frames `daytime`
    names a reason for are skipped unread."""

    def __init__(self, model, frames: NightFrames, *, batch_size: int = 16, streak_check: bool = True,
                 daytime: Callable[[Path], str] = lambda frame: ""):
        self.model, self.frames, self.batch_size, self.streak_check = model, frames, batch_size, streak_check
        self.kind = getattr(getattr(model, "info", None), "kind", "diff")
        self.daytime, self.after_daylight = daytime, False

    def score(self, files: list[Path]) -> Iterator[FrameResult]:
        """Results for `files` (frames of this night, in time order)."""
        with ThreadPoolExecutor(1, thread_name_prefix="gualta-prepare") as pool:
            pending = batches(list(files), self.batch_size)
            upcoming = pool.submit(self._next, pending)
            while (prepared := upcoming.result()) is not None:
                upcoming = pool.submit(self._next, pending)
                inputs = [model_input for _, model_input in prepared if model_input is not None]
                scores = iter(self.model.predict(inputs) if inputs else [])
                for result, model_input in prepared:
                    if model_input is not None:
                        result.score = float(next(scores))
                    yield result

    def _next(self, batches: Iterator[list[Path]]) -> list | None:
        batch = next(batches, None)
        if batch is None:
            return None
        day = {}
        for frame in batch:
            if note := self.daytime(frame):
                day[frame] = note
            elif self.after_daylight:       # compared with none: the frame before it is a daylit one
                self.frames.start_afresh(frame, AFTER_DAYLIGHT_NOTE)
            self.after_daylight = bool(note)
        prepared = iter(prepare_batch(self.frames, [frame for frame in batch if frame not in day], self.kind,
                                      self.streak_check))
        return [(FrameResult(frame, note=day[frame], flag=SKIPPED), None) if frame in day else next(prepared)
                for frame in batch]


def scorer_for(settings: Settings, model, frames: NightFrames) -> Scorer:
    """The scorer the client's settings ask for: their batch size, streak check and daylight rule."""
    return Scorer(model, frames, batch_size=settings.batch_size, streak_check=settings.streak_check,
                  daytime=daytime_rule(settings))


def look_mask(settings: Settings) -> np.ndarray | None:
    """The mask of guAlta_mask (`frames.read_mask`), None when none is set; ClientError if it cannot be used."""
    if settings.mask is None:
        return None
    try:
        return read_mask(settings.mask)
    except ValueError as exc:
        raise ClientError(f"cannot use the mask {settings.mask}: {exc}") from None


def daytime_rule(settings: Settings) -> Callable[[Path], str]:
    """frame → why it is not scored ("daytime: the sun at 23.4°, above -6°"), or "" — from the camera's place and
    the time its name gives (on the camera's clock: guAlta_camera_timezone, else this machine's zone); every frame is
    scored where the place is not set."""
    if settings.latitude is None or settings.longitude is None:
        return lambda frame: ""
    zone = ZoneInfo(settings.camera_timezone) if settings.camera_timezone else None

    def daytime(frame: Path) -> str:
        stamp = allsky.frame_time(frame)
        if stamp is None:
            return ""
        when = stamp.replace(tzinfo=zone) if zone else stamp.astimezone()
        why = allsky.sun_up(when, settings.latitude, settings.longitude, settings.night_sun_altitude)
        return f"{DAYTIME}{why}" if why else ""
    return daytime


# --- decisions -------------------------------------------------------------------------------------------------------

def near_in_time(a: FrameResult | None, b: FrameResult) -> bool:
    if a is None:
        return False
    gap = abs(allsky.taken_at(a.file) - allsky.taken_at(b.file))
    return gap <= NEIGHBOUR_MAX_GAP_S


class Decider:
    """Turns scored frames, in time order, into final rows, in time order too. A candidate that the previous frame
    does not already explain waits for the next scored frame (`finish()` decides it without one: end of night, or
    waited too long); every other frame is decided at once. With `rescore` (the model: a 400×400 difference image →
    p(meteor)) the checks also explain away: what explains a candidate is erased and it is scored again (see
    `gualta.trails`). A flagged candidate is reported only with `report_flagged`. The checks, in the order
    `explanation` runs them:

    - `satellite_check`: a model's candidate is flagged SATELLITE when its trails all continue an adjacent frame's,
      or it no longer scores as a meteor once what the neighbours explain and its explained streaks are erased (with
      `read_gray`, faint lines of its full-resolution difference going on in an adjacent one too) —
      unless it keeps a streak nothing explains (a meteor sharing its frame with the satellite: `crossed`).
    - `fireball_check`: a bright streak (`FrameResult.bright`) makes a candidate whatever the score; it is flagged when
      an adjacent frame's may be the same object (`bright_again`: a steady light, landing lights), or it continues a
      neighbour's trail (a plane's strobes) and no adjacent piece explains its long bright streak (`crossing`).
    - `streak_check`: a thin streak (`FrameResult.pieces`, `gualta.streak`) makes a candidate of a frame the model
      scores below the threshold; without one, so does a faint streak longer than noise leaves pieces where the model
      scores at least FAINT_STREAK_SCORE (`thin_streaks`). It is flagged when each such streak is explained by an
      adjacent difference's piece, a steady mover's track or its own light (`Piece.own_light`: a satellite's steady
      light curve, a plane's wingtip lights, its path lit again in the next frame — a train of satellites,
      `marked_relit`).
    - `cloud_check` (with `rescore`): a model's candidate with no streak of its own is flagged CLOUD when erasing its
      pieces an adjacent difference also has (moving cloud) and its explained streaks, or also its pieces where the
      sky was restless over its three earlier frames (an aurora), takes its score below the threshold (`clouded`,
      `gualta.clouds`).
    - `lightning_check`: a model's candidate with no streak of its own is flagged LIGHTNING (with `rescore`) when a
      wide region of its sky lit up and is dark again in the next frame (a flash lighting the clouds) and erasing that
      region takes its score below the threshold (`lit_by_lightning`); so is any candidate whose bright streak is a
      jagged bolt in such a flash, with nothing beside the bolt keeping it (`bolt_in_a_flash`).
    - the frame two back (with `satellite_check`): a candidate still unexplained is held against the frame before the
      previous one (`crossing_two_back`: a satellite that clouds hid in the previous frame), with no further wait.

    A frame whose sky is washed out (`FrameResult.washed_out`: dawn, dusk, an exposure change, daylight) is never the
    model's candidate; the fireball and streak checks still look."""

    def __init__(self, threshold: float, *, satellite_check: bool = True, report_flagged: bool = False,
                 rescore: Callable[[np.ndarray], float] | None = None, fireball_check: bool = True,
                 streak_check: bool = True, cloud_check: bool = True, lightning_check: bool = True,
                 read_gray: Callable[[Path], np.ndarray] | None = None):
        self.threshold, self.satellite_check, self.report_flagged = threshold, satellite_check, report_flagged
        self.rescore, self.fireball_check, self.streak_check = rescore, fireball_check, streak_check
        self.cloud_check, self.lightning_check = cloud_check, lightning_check
        # frames for `faint_crossing` (None: that step is off), the last few decoded kept: neighbours share them
        self.read_gray = None if read_gray is None else functools.lru_cache(GRAY_FRAMES_KEPT)(read_gray)
        self.before: FrameResult | None = None          # the last decided scored frame
        self.earlier: FrameResult | None = None         # the scored frame decided before it
        self.waiting: FrameResult | None = None         # a candidate waiting for the next scored frame
        self.behind: list[FrameResult] = []             # frames after the waiting one, in time order

    @classmethod
    def from_settings(cls, settings: Settings, model) -> Decider:
        """The decider the client's settings ask for, explaining away with `model`."""
        return cls(settings.threshold, satellite_check=settings.satellite_check,
                   report_flagged=settings.report_flagged, rescore=rescorer(model),
                   fireball_check=settings.fireball_check, streak_check=settings.streak_check,
                   cloud_check=settings.cloud_check, lightning_check=settings.lightning_check,
                   read_gray=read_frame if settings.faint_crossing_check else None)

    def push(self, result: FrameResult) -> list[FrameResult]:
        """Add the next frame; returns the frames decided by it, in time order."""
        if not self.fireball_check:
            result.bright = None                        # the check off: no streak is looked at or reported
        if not self.streak_check:
            result.pieces = []
        if not result.scored:
            if self.waiting is None:
                return [result]
            self.behind.append(result)
            return []
        decided = self._decide_waiting(after=result)
        checked = self.checked(result)
        if checked and not self.crossing(result, self.neighbours(result, self.before, None)):
            self.waiting = result                       # the previous frame does not explain it: wait for the next
            return decided
        self.decide(result, SATELLITE if checked else "",    # checked here: the previous frame explains it
                    [self.neighbours(result, self.before, None)])
        self._advance(result)
        return decided + [result]

    def finish(self) -> list[FrameResult]:
        """Decide the waiting candidate with no successor (night over, or it waited too long)."""
        return self._decide_waiting(after=None)

    def resume_after(self, result: FrameResult, earlier: FrameResult | None = None) -> None:
        """Continue a night after `result`, a scored frame decided earlier (a restarted watcher), and `earlier`, the
        scored frame decided before it (the frame two back, `crossing_two_back`)."""
        self.before, self.earlier = result, earlier

    def checked(self, result: FrameResult) -> bool:
        """A candidate its neighbours may explain: a model's candidate with the satellite, the cloud or the lightning
        check on, and every fireball or thin-streak candidate."""
        return self.candidate(result) and (self.satellite_check or result.bright is not None or self.thin_only(result)
                                           or self.cloud_check or self.lightning_check)

    def candidate(self, result: FrameResult) -> bool:
        return self.model_candidate(result) or self.bright_only(result) or self.thin_only(result)

    def model_candidate(self, result: FrameResult) -> bool:
        """The model scored it at or above the threshold, and its sky is not washed out (then the difference image
        is white or blank and the score means nothing; the fireball and streak checks still look)."""
        return result.score >= self.threshold and not result.washed_out

    def bright_only(self, result: FrameResult) -> bool:
        """A candidate for its bright streak alone: not the model's candidate."""
        return result.bright is not None and not self.model_candidate(result)

    def thin_only(self, result: FrameResult) -> bool:
        """A candidate for a thin streak alone: no bright streak, and not the model's candidate."""
        return result.bright is None and not self.model_candidate(result) and bool(self.thin_streaks(result))

    @staticmethod
    def thin_streaks(result: FrameResult) -> list[streak.Piece]:
        """The streaks a frame is a thin-streak candidate for: its streaks; without one, its faint streaks longer than
        noise leaves pieces (over `streak.SPECK_MAX_PX`) where the model sees something (a score of at least
        FAINT_STREAK_SCORE, its sky not washed out)."""
        streaks = [piece for piece in result.pieces if piece.is_streak]
        if streaks or result.score < FAINT_STREAK_SCORE or result.washed_out:
            return streaks
        return [piece for piece in result.pieces if piece.is_faint_streak and not piece.is_noise_length]

    def _decide_waiting(self, after: FrameResult | None) -> list[FrameResult]:
        if self.waiting is None:
            return []
        decided = self.waiting
        flag = self.explanation(decided, self.before, after)
        self.decide(decided, flag, [self.neighbours(decided, self.before, after)]
                    + ([self.neighbours(decided, self.earlier, None)] if self.satellite_check else []))
        self._advance(decided)
        self.waiting = None
        out, self.behind = [decided, *self.behind], []
        return out

    def _advance(self, decided: FrameResult) -> None:
        self.earlier, self.before = self.before, decided

    @staticmethod
    def neighbours(result: FrameResult, before: FrameResult | None, after: FrameResult | None) -> list[FrameResult]:
        return [n for n in (before, after) if near_in_time(n, result)]

    def explanation(self, result: FrameResult, before: FrameResult | None, after: FrameResult | None) -> str:
        """The flag of what both neighbours explain a candidate by, "" when they do not: SATELLITE by `crossing`,
        else, for a model's candidate with the cloud check on, CLOUD by `clouded` (the satellite check goes first
        and sees both neighbours: a satellite's frame often holds clouds too), then with the lightning check on
        LIGHTNING by `bolt_in_a_flash` (any candidate with a bright streak) or `lit_by_lightning` (a model's
        candidate); last, SATELLITE by the frame before the previous one (`crossing_two_back`). With the next frame
        there, its streaks whose path that frame lights again are marked first (`marked_relit`: a train)."""
        neighbours = self.neighbours(result, before, after)
        if after is not None:
            result.pieces = self.marked_relit(result, after, neighbours)
        if self.crossing(result, neighbours):
            return SATELLITE
        if self.cloud_check and self.model_candidate(result) and self.clouded(result, neighbours):
            return CLOUD
        if self.lightning_check and any(n is after for n in neighbours) and (
                self.bolt_in_a_flash(result, after, neighbours)
                or self.model_candidate(result) and self.lit_by_lightning(result, after, neighbours)):
            return LIGHTNING
        if self.satellite_check and self.crossing_two_back(result):
            return SATELLITE
        return ""

    def marked_relit(self, result: FrameResult, after: FrameResult,
                     neighbours: list[FrameResult]) -> list[streak.Piece]:
        """The candidate's pieces, its streaks and faint streaks that the adjacent differences leave unexplained marked
        `relit` where the next frame, `after`, lights their path again (`streak.relit`, read in the previous, the
        current and the next frame): a train of satellites, one behind another on one path, where a meteor never
        repeats its path. Three frames are decoded, for such candidates only. Not judged: a frame with a bright
        streak, the fireball check's to judge whether it is on or off (a fireball's persistent train can glow on;
        `fireball.bright_streak` is looked for in the decoded frames when the check is off), and a washed-out next
        frame (an exposure change brightens every line)."""
        if result.bright is not None or result.previous is None or after.previous != result.file or after.washed_out:
            return result.pieces
        streaks = [piece for piece in result.pieces if piece.is_streak or piece.is_faint_streak]
        left = {id(piece) for piece in streak.unexplained(streaks, [n.pieces for n in neighbours])}
        if not left:
            return result.pieces
        try:
            previous, current, following = (read_frame(path) for path in (result.previous, result.file, after.file))
        except BadFrame as exc:
            log.warning("%s: the next frame's light on its streaks not read: %s", result.file.name, exc)
            return result.pieces
        if not self.fireball_check and fireball.bright_streak(current, previous) is not None:
            return result.pieces
        frames = [streak.ridge_frame(frame) for frame in (previous, current, following)]
        return [replace(piece, relit=True) if id(piece) in left and streak.relit(piece, *frames) else piece
                for piece in result.pieces]

    def crossing_two_back(self, result: FrameResult) -> bool:
        """Whether the frame before the previous one (`earlier`) alone explains a candidate (`crossing`): a satellite
        that clouds hid in the previous frame. The streak kept beside an explained satellite (`crossed`) stays the one
        the adjacent frames left."""
        shared = result.shared_streak
        if self.crossing(result, self.neighbours(result, self.earlier, None)):
            return True
        result.shared_streak = shared
        return False

    def crossing(self, result: FrameResult, neighbours: list[FrameResult]) -> bool:
        """Whether a candidate is a satellite or a plane by its neighbours. With a bright streak: a neighbour has one on
        its line (`bright_again`), or the streak itself continues a neighbour's trail (a plane's strobes) and it has no
        long bright streak that the adjacent differences leave unexplained (then the trail is clutter). With thin
        streaks alone: each one is explained by the adjacent differences (`streak.explained_by_adjacent`) or by its own
        light (`Piece.own_light`). A model's candidate: `crossed`, with the satellite check on."""
        if result.bright:                     # a fireball lasts one frame; a steady light or a plane does not
            return self.bright_again(result, neighbours) or (
                self.satellite_check and self.streak_continues(result, neighbours)
                and not self.long_bright_streak_unexplained(result, neighbours))
        if self.thin_only(result):            # so does a meteor; a twinkling star or a satellite does not
            return not streak.unexplained(self.thin_streaks(result), [n.pieces for n in neighbours])
        return self.satellite_check and self.crossed(result, neighbours)

    def crossed(self, result: FrameResult, neighbours: list[FrameResult]) -> bool:
        """Whether a model's candidate's trails all continue a neighbour's, or (with `rescore`) it no longer scores as
        a meteor once what the neighbours explain and its explained streaks (`explained_streak_trails`) are erased
        (bright pieces first, then faint lines, then faint crossings as well) — unless it keeps a streak that neither
        its neighbours nor its own light explain, outside what was erased (a meteor beside the satellite:
        `shared_streak`). A candidate with a long bright streak that neither the adjacent differences nor its own
        light explain keeps its frame whatever is erased, so faint crossings are not searched for it (nor is it noted
        as sharing its frame when only they would explain the rest)."""
        kept = result.frame_size is not None and self.long_bright_streak_unexplained(result, neighbours)
        explained = self.explained_by_neighbours(result, neighbours, faint_crossings=not kept)
        meteor = None if explained is None else self.unerased_streak(result, neighbours, explained)
        result.shared_streak = None if meteor is None else meteor.ends
        return explained is not None and meteor is None

    def clouded(self, result: FrameResult, neighbours: list[FrameResult]) -> bool:
        """Whether a model's candidate with no bright streak (a fireball's wide trail is a blob too), and no streak or
        faint streak (`Piece.is_streak`, `Piece.is_faint_streak`) that the adjacent differences do not account for
        (`streak.explained_by_adjacent`: a steady light alone does not, a meteor's short streak can read as one), no
        longer scores as a meteor once its bright pieces that an adjacent difference's pieces explain (moving cloud:
        `gualta.clouds`) and its explained streaks (a satellite or a plane crossing the clouds) are erased, or once
        its bright pieces where the sky was restless over its three earlier frames (`restless_earlier`,
        `clouds.restless_pieces`) are erased as well; needs `rescore`."""
        if self.rescore is None or result.diff is None or not self.no_streak_of_its_own(result, neighbours):
            return False
        mask = clouds.cloud_mask(result.diff, [n.diff for n in neighbours if n.diff is not None])
        crossing = self.explained_streak_trails(result, neighbours)
        if crossing:
            mask |= trails.explained_mask(result.diff, [], crossing, pieces=[])    # no lines explain a piece
        if mask.any() and self.rescore(trails.erased(result.diff, mask)) < self.threshold:
            return True
        earlier = self.restless_earlier(result)
        if earlier is None:
            return False
        restless = clouds.restless_pieces(result.diff, earlier)
        if not (restless & ~mask).any():
            return False
        return self.rescore(trails.erased(result.diff, mask | restless)) < self.threshold

    def restless_earlier(self, result: FrameResult) -> list[np.ndarray] | None:
        """The candidate's three earlier frames, shrunk (`FrameResult.shrunk`): its previous frame and the two before
        it, as the last two decided scored frames hold them (`before`, `earlier`); None unless they are its previous
        frames in a row."""
        before, earlier = self.before, self.earlier
        if before is None or earlier is None or before.shrunk is None or earlier.shrunk is None \
                or before.file != result.previous or earlier.file != before.previous:
            return None
        return [before.shrunk[0], before.shrunk[1], earlier.shrunk[1]]

    def lit_by_lightning(self, result: FrameResult, after: FrameResult, neighbours: list[FrameResult]) -> bool:
        """Whether a model's candidate with no streak of its own (`no_streak_of_its_own`) has a wide lit region
        (`FrameResult.lit`) that the next frame, `after`, is dark again over (`lightning.falls_back`: a flash), and no
        longer scores as a meteor once that region is erased; needs `rescore`."""
        if self.rescore is None or result.diff is None or result.lit is None or after.brightening is None \
                or not self.no_streak_of_its_own(result, neighbours):
            return False
        if not lightning.falls_back(result.lit, after.brightening):
            return False
        mask = lightning.lit_mask(result.brightening, result.lit, result.diff.shape)
        return self.rescore(trails.erased(result.diff, mask)) < self.threshold

    def bolt_in_a_flash(self, result: FrameResult, after: FrameResult, neighbours: list[FrameResult]) -> bool:
        """Whether a candidate is a lightning bolt: its bright streak wiggles (`lightning.is_bolt`) in a wide lit
        region that the next frame, `after`, is dark again over (`lightning.falls_back`: its flash), the frame has no
        streak or faint streak beside the bolt that the adjacent differences do not account for (`streak_beside`),
        and it is a candidate for its bright streak alone or, a model's candidate, no longer scores as a meteor once
        the bolt's region (`lightning.bolt_mask`) and the lit region are erased (needs `rescore`)."""
        bolt = result.bright
        if bolt is None or not lightning.is_bolt(bolt) or result.lit is None or result.frame_size is None \
                or after.brightening is None or not lightning.falls_back(result.lit, after.brightening):
            return False
        region = lightning.bolt_mask(bolt, result.frame_size)                 # at frame size, built once
        if self.streak_beside(result, neighbours, region):
            return False
        if not self.model_candidate(result):
            return True
        if self.rescore is None or result.diff is None:
            return False
        mask = lightning.lit_mask(result.brightening, result.lit, result.diff.shape) \
            | lightning.scaled_mask(region, result.diff.shape)
        return self.rescore(trails.erased(result.diff, mask)) < self.threshold

    @staticmethod
    def streak_beside(result: FrameResult, neighbours: list[FrameResult], bolt: np.ndarray) -> bool:
        """Whether a frame with a bright streak has a streak or faint streak off the bolt's region `bolt`
        (`lightning.bolt_mask`, `lightning.on_bolt`) that the adjacent differences do not account for
        (`streak.explained_by_adjacent`): a meteor or a second fireball in a bolt's frame keeps it."""
        neighbour_pieces = [n.pieces for n in neighbours]
        return any(not lightning.on_bolt(piece.ends, bolt) and not streak.explained_by_adjacent(piece, neighbour_pieces)
                   for piece in result.pieces if piece.is_streak or piece.is_faint_streak)

    @staticmethod
    def no_streak_of_its_own(result: FrameResult, neighbours: list[FrameResult]) -> bool:
        """Whether a frame has no bright streak (a fireball's is the fireball check's to judge) and no streak or faint
        streak that the adjacent differences do not account for (`streak.explained_by_adjacent`): a meteor seen
        between clouds, or in a lit sky, keeps its frame by its streak."""
        neighbour_pieces = [n.pieces for n in neighbours]
        return result.bright is None and all(streak.explained_by_adjacent(piece, neighbour_pieces)
                                             for piece in result.pieces if piece.is_streak or piece.is_faint_streak)

    def explained_by_neighbours(self, result: FrameResult, neighbours: list[FrameResult],
                                faint_crossings: bool = True) -> np.ndarray | None:
        """Where the neighbours (and the candidate's explained streaks) explain a model's candidate — a mask of its
        difference image, `trails.explained_mask` — when its trails all continue a neighbour's or (with `rescore`) it
        no longer scores as a meteor with that erased (bright pieces first, then faint lines, then, unless
        `faint_crossings` is False, faint crossings as well: `faint_crossing`); else None."""
        continuing = trails.is_crossing(result.trails, [t for n in neighbours for t in n.trails])
        if not continuing and (self.rescore is None or result.diff is None):
            return None
        mask = trails.explained_mask(result.diff, [line for n in neighbours for line in n.lines],
                                     self.explained_streak_trails(result, neighbours))
        if continuing:
            return mask
        left = trails.erased(result.diff, mask)
        if mask.any() and self.rescore(left) < self.threshold:
            return mask
        fainter = np.zeros_like(mask)
        if result.faint_lines:                          # else nothing to explain: the neighbours' need not be searched
            fainter = trails.explained_mask(left, [line for n in neighbours for line in n.faint_lines],
                                            pieces=[line.points for line in result.faint_lines])
            if fainter.any() and self.rescore(trails.erased(left, fainter)) < self.threshold:
                return mask | fainter
        faintest = self.faint_crossing(result, neighbours) if faint_crossings else None
        if faintest is not None and self.rescore(trails.erased(left, fainter | faintest)) < self.threshold:
            return mask | fainter | faintest
        return None

    def faint_crossing(self, result: FrameResult, neighbours: list[FrameResult]) -> np.ndarray | None:
        """Where a candidate's lines in its full-resolution difference go on in an adjacent frame's (a satellite too
        faint for any piece: `gualta.faint_crossing`), as a mask of its difference image; None if none does, or
        without `read_gray` or its own pair readable (a neighbour whose pair cannot be read is left out). Its lines
        are searched once (`FrameResult.faint_search`, let go when it is decided), each adjacent pair's map made
        once, the last GRAY_FRAMES_KEPT frames kept decoded (the next candidate's neighbours are mostly the same),
        and no neighbour is read for a candidate without lines."""
        pairs = [(n.file, n.previous) for n in neighbours if n.previous is not None]
        if self.read_gray is None or result.previous is None or not pairs:
            return None
        if result.faint_search is None:
            try:
                result.faint_search = faint_crossing.Search(*map(self.read_gray, (result.file, result.previous)))
            except BadFrame as exc:
                log.warning("%s: faint crossings not looked for: %s", result.file.name, exc)
                result.faint_search = faint_crossing.Search(None, None)     # not tried again
        search = result.faint_search
        if not search.lines:
            return None
        maps = []
        for pair in pairs:
            try:
                maps.append(search.neighbour(pair, lambda: tuple(map(self.read_gray, pair))))
            except BadFrame as exc:
                log.warning("%s: faint crossings not followed into %s: %s", result.file.name, pair[0].name, exc)
                search.maps[pair] = None                                    # not tried again
        lines = search.explained([signal for signal in maps if signal is not None])
        height, width = search.shape
        return faint_crossing.erase_mask(lines, (width, height)) if lines else None

    @staticmethod
    def unerased_streak(result: FrameResult, neighbours: list[FrameResult], mask: np.ndarray) -> streak.Piece | None:
        """The candidate's longest streak that neither an adjacent difference nor its own light explains and that lies
        mostly outside the mask of what the neighbours explain: a meteor sharing its frame with a satellite or a plane
        (with the satellite erased, the model may no longer see it). A long bright one (`Piece.is_long_and_bright`)
        counts inside the mask too: no crossing's piece explains it, so the trails that put it there continue clutter
        (a cloudy neighbour's dozens of trails) by chance. None if there is none."""
        if result.frame_size is None:
            return None
        for piece in streak.unexplained_streaks(result.pieces, [n.pieces for n in neighbours]):
            if piece.is_long_and_bright or trails.share_in(
                    mask, trails.Trail.from_frame(piece.ends, *result.frame_size)) < ERASED_SHARE:
                return piece
        return None

    @staticmethod
    def explained_streak_trails(result: FrameResult, neighbours: list[FrameResult]) -> list[trails.Trail]:
        """The candidate's pieces that its own light (a satellite's steady light, a plane's wingtip lights, a path lit
        again), a track or an adjacent difference's pieces explain (`streak.explained_streaks`), as trails of its
        difference image."""
        if result.frame_size is None:
            return []
        return [trails.Trail.from_frame(piece.ends, *result.frame_size)
                for piece in streak.explained_streaks(result.pieces, [n.pieces for n in neighbours])]

    @staticmethod
    def long_bright_streak_unexplained(result: FrameResult, neighbours: list[FrameResult]) -> bool:
        """Whether the candidate has a long bright streak (`Piece.is_long_and_bright`) that neither an adjacent
        difference nor its own light explains: a crossing that bright leaves a piece beside it, so a neighbour's trail
        that its bright streak continues is clutter (a cloudy neighbour's dozens of trails), as in `unerased_streak`."""
        return any(piece.is_long_and_bright
                   for piece in streak.unexplained_streaks(result.pieces, [n.pieces for n in neighbours]))

    @staticmethod
    def bright_again(result: FrameResult, neighbours: list[FrameResult]) -> bool:
        """Whether an adjacent frame's bright streak may be the candidate's own object: on its line at any distance
        (`trails.collinear`: a steady light, landing lights under a short exposure), going on from its end in another
        direction (a plane turning), or either streak jagged (`lightning.is_bolt`: a storm's bolts flash again
        anywhere). A straight bright streak elsewhere is another fireball (two in consecutive frames)."""
        bright = trails.Trail.from_frame(result.bright.ends, *result.frame_size)
        for n in (n for n in neighbours if n.bright):
            other = trails.Trail.from_frame(n.bright.ends, *(n.frame_size or result.frame_size))
            if lightning.is_bolt(result.bright) or lightning.is_bolt(n.bright) or trails.collinear(bright, other) \
                    or trails.ends_meet(bright, other):
                return True
        return False

    @staticmethod
    def streak_continues(result: FrameResult, neighbours: list[FrameResult]) -> bool:
        bright = trails.Trail.from_frame(result.bright.ends, *result.frame_size)
        return any(trails.continues(bright, trail) for n in neighbours for trail in n.trails)

    def decide(self, result: FrameResult, flag: str, explaining: list[list[FrameResult]]) -> None:
        """Label, flag, detection and streak of a scored frame; `flag` is what the frames `explaining` it explain it by
        (`explanation`, computed once: it may cost a model call; each set of frames judged on its own: the adjacent ones
        and, with the satellite check, the frame two back, as `crossing_two_back` reads it). The streak: the meteor's
        beside an explained crossing (`shared_streak`), the bright or thin streak that made a check's candidate, an
        unflagged model's candidate's own streak (`own_streak`), else its longest trail, its most prominent streak or
        its longest faint line."""
        result.faint_search = None                      # its maps are not needed any more
        candidate = self.candidate(result)
        result.label = METEOR if candidate else NO_METEOR
        if result.washed_out:
            result.note = WASHED_OUT_NOTE
        if not candidate:
            return
        result.flag = flag
        if result.bright and not flag:
            result.note = FIREBALL_NOTE + (self.not_the_model(result) if self.bright_only(result) else "")
        if self.thin_only(result) and not flag:
            faint = not any(piece.is_streak for piece in self.thin_streaks(result))
            result.note = STREAK_NOTE + (FAINT_NOTE if faint else self.not_the_model(result))
        if result.shared_streak:                        # set by `crossed` only when it keeps the frame
            result.note = SHARED_NOTE
        result.detection = not result.flag or self.report_flagged
        if result.shared_streak:
            result.streak = result.shared_streak
        elif result.bright:
            result.streak = result.bright.ends
        elif self.thin_only(result):
            result.streak = max(self.thin_streaks(result), key=lambda p: (not p.own_light, p.length)).ends
        elif not flag and (own := self.own_streak(result, explaining)):
            result.streak = own
        elif result.trails and result.frame_size:
            result.streak = result.trails[0].in_frame(*result.frame_size)
        elif streaks := [piece for piece in result.pieces if piece.is_streak]:
            result.streak = streaks[0].ends             # a short meteor: too short for a trail of the difference image
        elif result.faint_lines and result.frame_size:  # a faint meteor: too faint for a trail or a streak
            longest = max(result.faint_lines, key=lambda line: line.trail.length)
            result.streak = longest.trail.in_frame(*result.frame_size)

    @staticmethod
    def own_streak(result: FrameResult, explaining: list[list[FrameResult]]) -> tuple[int, int, int, int] | None:
        """Where a model's candidate's meteor is, when the longest trail of its difference image can be a
        satellite's, a plane's or moving cloud's beside it: its longest streak that neither its own light nor any set
        of frames `explaining` it (`decide`) explains (`streak.unexplained`), else its longest such faint streak that a
        trail lies along (noise makes faint streaks too); as the longest trail along it (`trails.overlaps`: a trail
        spans more of a meteor than its pieces do), else the streak's own ends. None without either."""
        if result.frame_size is None:
            return None
        streaks = [piece for piece in result.pieces if piece.is_streak]
        faint = [piece for piece in result.pieces if piece.is_faint_streak]
        for frames in explaining or [[]]:             # none: its own light alone
            streaks, faint = (streak.unexplained(pieces, [n.pieces for n in frames]) for pieces in (streaks, faint))
        for piece in streaks[:1] + faint:
            own = trails.Trail.from_frame(piece.ends, *result.frame_size)
            along = next((trail for trail in result.trails if trails.overlaps(trail, own)), None)
            if along is not None:
                return along.in_frame(*result.frame_size)
            if piece.is_streak:
                return piece.ends
        return None

    @staticmethod
    def not_the_model(result: FrameResult) -> str:
        """Why a check's candidate is not the model's: its score, or the washed-out sky."""
        return "; " + WASHED_OUT_NOTE if result.washed_out else BELOW_THRESHOLD_NOTE


def score_and_decide(scorer: Scorer, decider: Decider, files: list[Path]) -> Iterator[FrameResult]:
    """Decided results for `files`, the night's last frame included."""
    for result in scorer.score(files):
        yield from decider.push(result)
    yield from decider.finish()


def rescorer(model) -> Callable[[np.ndarray], float]:
    """The model as the satellite check's second opinion: one difference image → p(meteor)."""
    return lambda diff: float(model.predict([diff])[0])


# --- reports ---------------------------------------------------------------------------------------------------------

def detection_report(result: FrameResult, settings: Settings, night: str, version: str | None) -> tuple[str, dict]:
    """(outbox key, payload) of a detection: the payload of DESIGN.md with the 448×224 original | processed image."""
    payload = build_detection(allsky.frame_id(result.file), min(max(result.score, 0.0), 1.0), settings.obs_id,
                              side_by_side(result.thumb, result.diff, THUMB_SIZE), telegram=settings.enable_telegram,
                              folder=night, flag=report_flag(result), model=version, streak=report_streak(result))
    return detection_key(payload), payload


def report_streak(result: FrameResult) -> tuple[int, int, int, int] | None:
    """The payload streak: its ends in the file's pixels, each put within 0–MAX_STREAK_PX (an end read just outside
    the frame must not have the detection refused)."""
    ends = result.streak_in_file()
    return tuple(min(max(end, 0), MAX_STREAK_PX) for end in ends) if ends else None


def report_flag(result: FrameResult) -> str | None:
    """The payload flag: what flagged it (`satellite`, `cloud` or `lightning`), else which check found it
    (`fireball`, or `streak` for a thin streak the model scored below the threshold)."""
    if result.flag:
        return result.flag
    if result.bright:
        return FIREBALL
    return STREAK if result.note.startswith(STREAK_NOTE) else None


def log_report(kind: str, settings: Settings, night: str, total: int | None = None) -> tuple[str, dict]:
    """(outbox key, payload) of a night's start or end log."""
    payload = build_log(kind, settings.obs_id, total=total, folder=night)
    return log_key(payload, night), payload


def frame_line(result: FrameResult) -> str:
    """The thesis' per-frame line: path , label , p_meteor , p_no_meteor."""
    if not result.scored:
        return f"{result.file} , {SKIPPED} , , ({result.note})"
    return f"{result.file} , {result.label} , {result.score:.4f} , {1 - result.score:.4f}"


def detection_line(result: FrameResult) -> str:
    what = "detection" if result.detection else "not reported"
    flag = f" [{result.flag}: {FLAG_REASONS[result.flag]}]" if result.flag else (
        f" [{result.note}]" if result.note else "")          # which check made it a candidate
    return f"{what}: {result.file.name} score {result.score:.3f}{flag}"


def show(result: FrameResult, settings: Settings, say) -> None:
    """Tell the operator about a decided frame: its per-frame line with extra log, and a candidate's line (a
    detection, or flagged and not reported) either way."""
    if settings.enable_extra_log:
        say(frame_line(result))
    if result.label == METEOR:
        say(detection_line(result))


# --- the batch run ---------------------------------------------------------------------------------------------------

SAME_PLACE_PX = 20.0     # detections whose streaks are centred this close together are at one place, ...
SAME_PLACE_MIN = 4       # ... and this many there get a hint (40 detections at random over a 960 px sky circle:
                         # once in about 800 nights)

@dataclass
class NightSummary:
    night: str
    frames: int = 0
    scored: int = 0
    daylight: int = 0                  # frames skipped unread as taken in daylight
    detections: int = 0
    flagged: int = 0
    flagged_reported: int = 0          # flagged candidates reported anyway (guAlta_report_flagged): among detections
    seconds: float = 0.0
    pending: int | None = None         # reports left in the outbox (None: uploads off)
    rejected: int = 0                  # reports the service rejected for good (logged each)
    refused: str = ""                  # why the service refused this client's key or address (reports kept)
    scores: Path | None = None
    model: str = ""                    # the version of the model that scored the night
    scores_failed: str = ""            # why the scores CSV could not be written to the end
    places: list[tuple[float, float]] = field(default_factory=list, repr=False)   # detections' streak centres
    skips: Counter = field(default_factory=Counter)     # frames skipped (daylight aside) by why (`skip_word`)

    @property
    def frames_per_s(self) -> float:
        """Frames read a second (daylight frames are skipped unread: they would make the client look faster)."""
        return (self.frames - self.daylight) / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        if self.pending is None:
            uploads = "uploads off"
        elif self.pending:
            uploads = (f"{self.pending} report(s) pending in the outbox: they go with the next run or "
                       "`python guAlta.py flush`")
        else:
            uploads = "the other reports delivered" if self.rejected else "all reports delivered"
        if self.refused:
            uploads = f"the service refused the reports ({self.refused}); {uploads}"
        if self.rejected:
            uploads = f"{self.rejected} report(s) rejected by the service (the log says why); {uploads}"
        scores = f"; scores {self.scores}" if self.scores else ""
        if self.scores_failed:
            scores += f" (incomplete: {self.scores_failed})"
        model = f"; model {self.model}" if self.model else ""
        return (f"night {self.night}: {self.counts()}, {self.seconds:.1f} s, {self.frames_per_s:.1f} frames/s; "
                f"{uploads}{model}{scores}{self.same_place_hint()}")

    def counts(self) -> str:
        """What became of the night's frames: '600 frames (598 scored, 1 skipped, 1 in daylight), 28 detections,
        32 flagged' — '60 reported (32 of them flagged)' when the flagged ones are reported too, '37 skipped: 30
        blank, 5 unreadable, 1 wrong size, 1 first of the night; 1 in daylight' when frames were skipped for more
        than the night's start — (the batch run's summary and the watcher's line when it closes a night)."""
        why = self.skipped_why()
        daylight = f"{'; ' if why else ', '}{self.daylight} in daylight" if self.daylight else ""
        if self.daylight and self.daylight == self.frames:
            daylight += (": the sun never went below guAlta_night_sun_altitude at the camera's place (a summer night "
                         "near the pole, or a wrong place or clock)")
        return (f"{self.frames} frames ({self.scored} scored, {self.frames - self.scored - self.daylight} "
                f"skipped{why}{daylight}), {self.decisions()}")

    def skipped_why(self) -> str:
        """': 30 blank, 5 unreadable, 1 first of the night', most frequent first; '' when only the night's start
        (its first frame, or the first after daylight) was skipped, as every night."""
        if set(self.skips) <= NIGHT_STARTS:
            return ""
        reasons = sorted(self.skips.items(), key=lambda item: (-item[1], item[0] in NIGHT_STARTS))
        return ": " + ", ".join(f"{count} {word}" for word, count in reasons)

    def decisions(self) -> str:
        """'28 detections, 32 flagged'; with the flagged reported too, '60 reported (32 of them flagged)' ('60
        detections, 32 flagged' read as 92 candidates)."""
        if not self.flagged_reported:
            return f"{self.detections} detections, {self.flagged} flagged"
        held_back = self.flagged - self.flagged_reported      # the setting changed during a watched night
        return (f"{self.detections} reported ({self.flagged_reported} of them flagged)"
                + (f", {held_back} flagged not reported" if held_back else ""))

    def same_place_hint(self) -> str:
        """A hint when SAME_PLACE_MIN or more of the fireball and streak checks' own detections (`checks_own`) have
        their streak at one place (within SAME_PLACE_PX): meteors never come back to one spot, the camera's own text or
        a flickering light does, and a mask (which those checks read) leaves it out."""
        crowded = max(self.places, key=self.near, default=None)
        if crowded is None or self.near(crowded) < SAME_PLACE_MIN:
            return ""
        return (f". {self.near(crowded)} detections at one place (x {crowded[0]:.0f}, y {crowded[1]:.0f} in the "
                "frame): the camera's own text or a light? guAlta_mask leaves it out (`python guAlta.py mask` draws "
                "one; README, \"A mask\")")

    def near(self, place: tuple[float, float]) -> int:
        return sum(math.dist(place, other) <= SAME_PLACE_PX for other in self.places)

    def count_row(self, row: dict) -> None:
        """Count a frame decided by its scores CSV row (as the outbox keeps it too)."""
        detection = int(row["detection"]) == 1
        self.tally(row["score"] != "", row["note"].startswith(DAYTIME), detection, row["flag"], row["note"])
        if detection and row["x1"] != "" and checks_own(row["note"]):
            self.places.append(((int(row["x1"]) + int(row["x2"])) / 2, (int(row["y1"]) + int(row["y2"])) / 2))

    def tally(self, scored: bool, daylit: bool, detection: bool, flag: str, note: str = "") -> None:
        self.frames += 1
        if not scored and not daylit:
            self.skips[skip_word(note)] += 1
        self.scored += scored
        self.daylight += daylit
        self.detections += detection
        self.flagged += bool(flag and flag != SKIPPED)
        self.flagged_reported += bool(detection and flag and flag != SKIPPED)


def checks_own(note: str) -> bool:
    """Whether a detection's note says the fireball or the streak check made it, not the model (which reads the whole
    frame, a mask or not): the model scored it below the threshold, or its sky was washed out."""
    return note.startswith(STREAK_NOTE) or note.startswith(FIREBALL_NOTE + "; ")


def resolve_night(settings: Settings, folder: str | Path | None) -> Path:
    """The night to score: `folder`, else the latest night under guAlta_main_folder."""
    if folder is not None:
        night = Path(os.path.abspath(folder))       # `--folder .` is the night it names (a link keeps its name)
        if not night.is_dir():
            raise ClientError(f"{'not a folder' if night.exists() else 'night folder not found'}: {night}")
        why = listing(allsky.not_a_night, night)
        if why:
            raise ClientError(f"{night} {why}, or leave --folder out to score the latest night under "
                              f"guAlta_main_folder")
        return night
    tonight = allsky.night_of(datetime.now())
    night, ahead = listing(lambda root: allsky.latest_night_by(root, tonight), settings.main_folder)
    if ahead:
        log.warning("night folder(s) %s dated after tonight (%s) left out of 'the latest night' (the camera's clock "
                    "ran ahead?): name one with --folder to score it", ", ".join(ahead), tonight)
    if night is None:
        why = listing(allsky.not_an_images_root, settings.main_folder)
        raise ClientError(f"no night folder (YYYYMMDD) up to tonight's under guAlta_main_folder "
                          f"{settings.main_folder}" + (f": it {why}" if why else ""))
    return night


def listing(lister, folder: str | Path):
    """lister(folder) (an allsky listing); a folder that cannot be listed (its permissions) is a NightError."""
    try:
        return lister(folder)
    except OSError as exc:
        raise NightError(f"cannot list {folder}: {exc.strerror or exc}") from None


def catch_up_nights(settings: Settings, scores: str | Path | None, days: int) -> tuple[list[Path], list[Path]]:
    """The night folders of the `days` nights before the latest one under guAlta_main_folder, oldest first: those
    with no whole scores CSV in the folder `scores` names (not scored yet: the machine was off, a run failed), and
    those scored already."""
    if days <= 0:
        return [], []
    if not scores or not names_a_folder(scores):
        raise UsageError("--catch-up needs --scores DIR/: a night without DIR/YYYYMMDD.csv is one not scored yet")
    latest = resolve_night(settings, None)
    first = (datetime.strptime(latest.name, allsky.NIGHT_FORMAT) - timedelta(days=days)).strftime(allsky.NIGHT_FORMAT)
    to_score, scored = [], []
    for night in listing(allsky.night_folders, settings.main_folder):
        if first <= night.name < latest.name:
            (scored if scored_whole(scores_file(scores, night.name), night) else to_score).append(night)
    return to_score, scored


def scored_already_line(nights: list[Path]) -> str:
    """'5 nights already scored, skipped: 20211101 … 20211103, 20211106, 20211107': the nights `--catch-up` leaves,
    as runs of consecutive nights (a run of three or more by its first and last), at most four runs and a count."""
    runs = consecutive_runs([night.name for night in nights])
    shown = [", ".join(run) if len(run) <= 2 else f"{run[0]} … {run[-1]}" for run in runs]
    if len(shown) > MAX_RUNS_SHOWN:
        shown = [*shown[:MAX_RUNS_SHOWN - 1], f"{counted(len(runs) - MAX_RUNS_SHOWN, 'run')} more", shown[-1]]
    return f"{counted(len(nights), 'night')} already scored, skipped: {', '.join(shown)}"


def consecutive_runs(names: list[str]) -> list[list[str]]:
    """Night names (YYYYMMDD, ascending) in runs of consecutive days."""
    runs: list[list[str]] = []
    for name in names:
        if runs and night_after(runs[-1][-1]) == name:
            runs[-1].append(name)
        else:
            runs.append([name])
    return runs


def night_after(name: str) -> str:
    """The night folder after `name` (YYYYMMDD)."""
    return (datetime.strptime(name, "%Y%m%d") + timedelta(days=1)).strftime("%Y%m%d")


def run_batch(settings: Settings, folder: str | Path | None = None, scores: str | Path | None = None,
              upload: bool = True, model_path: str | Path | None = None, model=None, say=None,
              progress: bool | None = None) -> NightSummary:
    """Score every frame of a night, write the scores CSV (`scores_file`), report detections (start log,
    detections, end log through the outbox) and return the summary; `say` prints its lines (default: on stdout,
    above the progress bar, `ConsoleLines`)."""
    say = say or ConsoleLines(tqdm.write)
    night = resolve_night(settings, folder)
    files = listing(allsky.list_frames, night)
    allsky.say_lookalikes(night)
    if not files:
        log.warning("no AllSky frames (image-YYYYMMDDHHMMSS.jpg or .png) in %s", night)
    if upload and not settings.url:
        raise ClientError("uploads need guAlta_URL (or run with --no-upload)")
    if upload and not allsky.is_night_folder(night):
        raise ClientError(f"uploads name the night by its folder, YYYYMMDD (the evening's date): {night.name} is not "
                          "one (rename it, or run with --no-upload)")
    mask = look_mask(settings)
    if model is None:
        model = open_model(settings, model_path)
        if upload and settings.model_update and not model_path:
            model = refreshed_model(settings, model)
    version = model_version(model)
    summary = NightSummary(night.name, scores=scores_file(scores, night.name), model=version or "")
    rows = CsvRows(summary.scores)
    outbox = sender = None
    try:
        if upload:
            outbox = Outbox(settings.outbox)
            outbox.forget_old()
            sender = Sender(settings.outbox, ApiClient(settings.url, settings.api_key))
            outbox.put(*log_report("start", settings, night.name))
            sender.wake()
        scorer = scorer_for(settings, model, NightFrames(files, log, mask=mask))
        decider = Decider.from_settings(settings, model)
        started = time.perf_counter()
        no_bar = progress is False or sys.stderr is None            # stderr closed (2>&-, pythonw): no bar to draw
        bar = tqdm(total=len(files), desc=f"night {night.name}", unit="frame", disable=no_bar or None)
        with bar:
            for result in score_and_decide(scorer, decider, files):
                row = result.row()
                summary.count_row(row)
                rows.write(row)
                show(result, settings, say)
                if result.detection and outbox is not None:
                    report_detection(outbox, sender, result, settings, night.name, version)
                bar.update()
        scorer.frames.end_run()                     # a run of blank or frozen frames to the night's end: counted
        summary.seconds = time.perf_counter() - started
        if outbox is not None:
            outbox.put(*log_report("end", settings, night.name, summary.scored), replace=True)
        rows.finish()
    finally:
        rows.close()
        summary.scores, summary.scores_failed = rows.where, rows.failed
        if sender is not None:
            sender.wake()
            summary.pending = sender.close(timeout=10.0)
            summary.rejected, summary.refused = sender.rejected, sender.refused
        if outbox is not None:
            outbox.close()
    say(summary.text())
    return summary


def run_nights(settings: Settings, folder: str | Path | None, scores: str | Path | None, catch_up: int = 0,
               upload: bool = True, model_path: str | Path | None = None) -> int:
    """`run_batch` over the nights to catch up (`catch_up_nights`: those scored already are said in one line), then
    `folder` (None: the latest night). A night whose folder or CSV fails (NightError) is said on stderr and the others
    are still scored; with one night it is raised. The exit status: 1 if a night failed, a CSV is incomplete or
    reports were refused or lost, else 0."""
    from tqdm.contrib.logging import logging_redirect_tqdm     # loads tqdm.auto: imported only when it runs

    if catch_up and folder:
        raise UsageError("--catch-up scores the nights under guAlta_main_folder: leave --folder out")
    to_score, scored = catch_up_nights(settings, scores, catch_up)
    nights = [*to_score, folder]
    summaries, failed, say = [], False, ConsoleLines(tqdm.write)
    if scored:
        say(scored_already_line(scored))
    with logging_redirect_tqdm():
        for night in nights:
            try:
                summaries.append(run_batch(settings, night, scores, upload=upload, model_path=model_path, say=say))
            except NightError as exc:
                if len(nights) == 1:
                    raise
                print(f"guAlta batch: {exc}", file=sys.stderr)
                failed = True
    if failed or any(summary.scores_failed or summary.refused or summary.rejected for summary in summaries):
        return 1                        # the CSV is incomplete, or reports were refused or lost: a cron job's alarm
    return 0


def report_detection(outbox, sender, result: FrameResult, settings: Settings, night: str,
                     version: str | None) -> None:
    try:
        outbox.put(*detection_report(result, settings, night, version))
    except PayloadError as exc:              # never expected: log it rather than lose the night
        log.error("%s: cannot build the detection payload: %s", result.file.name, exc)
        return
    sender.wake()


