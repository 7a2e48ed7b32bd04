"""The real-time watcher (`python guAlta.py realtime`): score each frame of the newest night as soon as it is written.

Inside the start–end window (local time; it may cross midnight, not run past noon; start = end means always) the watcher
follows the newest night folder under guAlta_main_folder not dated after tonight (re-checked every 5 minutes and
whenever the root folder changes), takes each new frame once it is completely written (one after a gap in the names once
the gap's frames came, or REORDER_S passed), scores it against the last good frame before it, decides it with the same
`Decider` as the batch run and reports it through the outbox. After handling frames it sleeps guAlta_sleep_between_imgs,
then checks the folder every 0.5 s, so a frame is scored within about a second of being complete. A frame is complete
when its size has held for SETTLE_S and a JPEG ends with its end-of-image marker (a PNG with its IEND chunk); a file
that stays unfinished for INCOMPLETE_GRACE_S is taken as it is (then logged as a bad frame and skipped).

The satellite check needs the next frame, so a candidate detection is decided when the next frame is scored (at the
latest HOLD_MAX_S later, or when the night ends); other frames are decided at once. Decided frames are recorded in the
outbox database with their reports in one transaction, so after a restart the watcher goes on where it stopped, without
rescoring or reporting twice. Frames already there are taken together, CHUNK at a time. A night it stopped in and came
back to only later, and a night missed altogether (the machine was off) since the first night it watched, are decided
CHUNK frames at a time whenever tonight has no frame waiting (outside the window too, and at once for the night whose
window ended meanwhile); a night it closed (at the window's end, or when the next night began) is not taken up again,
nor, at a first start, a night whose window has ended (tonight's folder is awaited). A night closed is written to the
scores folder, if one is given, as the batch run's CSV. SIGINT/SIGTERM stop it between chunks.
"""
from __future__ import annotations

import logging
import os
import signal
import statistics
import sys
import threading
import time
from collections import deque
from datetime import datetime
from pathlib import Path

import numpy as np

from gualta import allsky
from gualta.cli import ConsoleLines
from gualta.client_errors import ClientError, UsageError
from gualta.config import Settings, next_local_time, seconds_until, window_problem
from gualta.detect import (BAD_FRAME, CLOCK_SET_BACK, DAYTIME, SKIPPED, Decider, FrameResult, NightSummary,
                           detection_report, log_report, look_mask, prepare, scorer_for, show)
from gualta.frames import NightFrames
from gualta.model_update import file_stamp, model_version, open_model, refreshed_model
from gualta.payload import PayloadError
from gualta.preprocess import PNG_START, unfinished
from gualta.report import ApiClient, Outbox, Sender, set_aside_if_damaged
from gualta.scores import write_scores

log = logging.getLogger(__name__)

FAST_POLL_S = 0.5
SETTLE_S = 0.4
REORDER_S = 5.0          # a frame after a gap in the names waits this long for the frames of the gap (a sync tool)
INCOMPLETE_GRACE_S = 60.0
NIGHT_RECHECK_S = 300.0
HOLD_MAX_S = 120.0
OUTSIDE_WINDOW_NAP_S = 60.0
CLOSING_WAIT_S = 2 * FAST_POLL_S   # a night being closed waits this long for frames still arriving
CHUNK = 16               # frames decided at a time between looks at the stop signal and at tonight's new frames
STOP_FRAMES = 20         # no new frame for this many of the camera's intervals inside the window: it is said once ...
STOP_MIN_S = 600.0       # ... and for at least this long (a copy tool's batches come minutes apart)
DELIVERY_WAIT_S = 3.0    # a night's end waits this long for the sender to deliver its last reports (`delivery`)


def minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[2:])


def in_window(now: datetime, start: str, end: str) -> bool:
    """Whether local time `now` is inside [start, end) (HHMM); the window may cross midnight."""
    current, first, last = now.hour * 60 + now.minute, minutes(start), minutes(end)
    if first == last:
        return True
    if first < last:
        return first <= current < last
    return current >= first or current < last


def first_night_not_ended(now: datetime, end: str) -> str:
    """The night of the next local time `end`: inside the window, the night it is; outside, the night after the one
    whose window ended last."""
    return allsky.night_of(next_local_time(now, end))


def looks_complete(path: Path) -> bool:
    """A JPEG that ends with its end-of-image marker (trailing zero padding allowed), a PNG with its IEND chunk;
    any other file as it is."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(len(PNG_START))
            stream.seek(max(path.stat().st_size - 64, 0))
            tail = stream.read()
    except OSError:
        return False
    return not unfinished(head, tail)


LATE_NOTE = f"named before a frame already scored {CLOCK_SET_BACK}: not scored"
SEEN_GAP_S = allsky.LONG_GAP_S     # a frame complete this long after the one before it, after signs of a clock set
                                   # back, is not compared with it


class FrameWatch:
    """Finds the frames of a night folder that are completely written, in time order."""

    def __init__(self, folder: Path, taken: list[Path] = (), settle_s: float = SETTLE_S,
                 grace_s: float = INCOMPLETE_GRACE_S):
        self.folder, self.settle_s, self.grace_s = folder, settle_s, grace_s
        self.taken = {frame.name for frame in taken}          # handed over already (or ignored)
        self.after = max((allsky.taken_at(frame) for frame in taken), default=None)
        self.gaps = deque([float(allsky.FRAME_INTERVAL_S)], maxlen=5)    # between the last frames handed over
        self.seen: dict[str, tuple[int, float]] = {}       # name → (size, monotonic time it was first that size)
        self.unlisted = ""                                  # why the folder could not be listed last time
        self.late: list[Path] = []                          # frames named before one handed over: not scored
        self.last_seen: float | None = None                 # when the last frame handed over was complete
        self.last_written: tuple[Path, tuple | None] | None = None     # it, and its file_stamp then
        self.late_seen = False                              # a late frame came since the last hand-over
        self.lookalikes_said = False                        # files named like frames, not as AllSky does, warned of
        self.afresh: dict[str, str] = {}    # frames handed over to be compared with no earlier frame: why

    def ready(self, force: bool = False, limit: int | None = None) -> list[Path]:
        """Frames newly complete since the last call (at most `limit`); a frame still being written, or one after a
        gap in the names (`after_a_gap`), holds back those after it (their sizes are noted all the same, up to
        `limit` frames handed over, so that a backlog is handed over at the next call, not a frame a call). With
        force, every remaining frame is handed over as it is (the night is being closed)."""
        now, ready, held = time.monotonic(), [], False
        for path, size in self.candidates():
            if limit is not None and len(ready) >= limit:
                break
            stamp = allsky.taken_at(path)
            if self.after is not None and stamp <= self.after:
                self.taken.add(path.name)
                self.late.append(path)
                self.late_seen = True
                log.warning("%s arrived after a later frame was scored: ignored", path.name)
                continue
            previous = self.seen.get(path.name)
            if not force and (previous is None or previous[0] != size):
                self.seen[path.name] = (size, now)
                held = True
            if held:
                continue
            steady = now - previous[1] if previous else 0.0
            if not (force or (size > 0 and steady >= self.settle_s and looks_complete(path))
                    or steady >= self.grace_s) or (not force and steady < REORDER_S and self.after_a_gap(stamp)):
                held = True
                continue
            ready.append(path)
            self.note_handed(path, stamp, previous[1] if previous else now)
        return ready

    def interval(self) -> float:
        """The camera's interval between frames: the median of the last gaps between the names handed over."""
        return statistics.median(self.gaps)

    def after_a_gap(self, stamp: float) -> bool:
        """Whether frames seem missing before this one (its name is over 1.5 intervals — the median of the last
        gaps — after the last handed over): a tool copying frames in out of order may bring them yet, so it waits
        for them up to REORDER_S."""
        return self.after is not None and stamp - self.after > 1.5 * self.interval()

    def note_handed(self, path: Path, stamp: float, complete_at: float) -> None:
        """Record a frame handed over. One the watcher saw complete over SEEN_GAP_S after the one before it, though
        its name is not that far after, is compared with no earlier frame if the camera's clock was set back
        meanwhile — frames named before it came late, or the last frame handed over was written again (a set-back
        by whole frames names new frames as old ones): its predecessor by name is minutes older. Without those signs
        it is a copy tool's next batch, compared as usual."""
        if self.after is not None:
            named = stamp - self.after
            self.gaps.append(named)
            waited = complete_at - self.last_seen if self.last_seen is not None else 0.0   # (frames before a start)
            if named <= allsky.LONG_GAP_S and waited > SEEN_GAP_S and (self.late_seen or self.last_rewritten()):
                self.afresh[path.name] = (f"complete {waited / 60:.0f} min after the frame before it, though named "
                                          f"{named:.0f} s after it {CLOCK_SET_BACK}: not compared")
        self.after, self.last_seen, self.late_seen = stamp, complete_at, False
        self.last_written = (path, file_stamp(path))
        self.taken.add(path.name)
        self.seen.pop(path.name, None)

    def last_rewritten(self) -> bool:
        """Whether the last frame handed over was written again since."""
        return self.last_written is not None and file_stamp(self.last_written[0]) != self.last_written[1]

    def expecting(self) -> bool:
        """Whether a frame noted lately (within the grace time) is still to be handed over: being written, settling,
        or held back by one that is."""
        now = time.monotonic()
        return any(now - since < self.grace_s for _, since in self.seen.values())

    def left(self) -> bool:
        """Whether the folder holds frames not handed over yet."""
        return bool(self.candidates())

    def candidates(self) -> list[tuple[Path, int]]:
        """Frames of the folder not handed over yet, with their sizes, in time order."""
        found = []
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    if not self.lookalikes_said and allsky.is_lookalike(entry.name):   # once a night
                        self.lookalikes_said = True
                        allsky.say_lookalikes(self.folder)
                    if entry.name not in self.taken and allsky.frame_time(entry.name) is not None \
                            and entry.is_file():
                        try:
                            found.append((Path(entry.path), entry.stat().st_size))
                        except OSError:          # removed meanwhile
                            continue
        except OSError as exc:           # a share gone, a folder removed: said once, until it can be listed again
            if not self.unlisted:
                log.warning("cannot list %s: %s; trying again every %g s", self.folder, exc.strerror or exc,
                            FAST_POLL_S)
            self.unlisted = exc.strerror or str(exc)
            return []
        if self.unlisted:
            log.info("%s can be listed again", self.folder)
            self.unlisted = ""
        return sorted(found, key=lambda item: allsky.taken_at(item[0]))


class NightWatch:
    """One night being watched: its frames, scorer, decider and recorded progress."""

    def __init__(self, folder: Path, settings: Settings, model, outbox: Outbox, upload: bool, say,
                 settle_s: float = SETTLE_S, grace_s: float = INCOMPLETE_GRACE_S, scores: Path | None = None,
                 mask: np.ndarray | None = None):
        self.folder, self.night, self.settings, self.outbox = folder, folder.name, settings, outbox
        self.upload, self.say = upload, say
        self.scores = scores / f"{self.night}.csv" if scores else None      # its scores CSV, written when it ends
        self.rows: list[dict] = []                                          # its decided rows, read when it ends
        self.version = model_version(model)
        self.frames = NightFrames([], log, mask=mask)                 # `Watcher.night_mask`
        self.scorer = scorer_for(settings, model, self.frames)
        self.decider = Decider.from_settings(settings, model)
        self.waiting_since: float | None = None
        self.held: FrameResult | None = None       # the candidate waiting since waiting_since
        self.arrived_at: datetime | None = None    # when the last frame came, or watching began (`Watcher.say_if_…`)
        self.stopped_said = False                  # a camera stop was said (no new frame for long)
        late = self.resume()
        self.watch = FrameWatch(folder, self.frames.frames + late, settle_s, grace_s)
        if upload:
            outbox.put(*log_report("start", settings, self.night))

    def resume(self) -> list[Path]:
        """Take back the frames decided before a restart as the decider and the scorer had them: its last two scored
        frames (`Decider.resume_after`) and whether the last frame, bad ones aside, was taken in daylight (the next
        is then compared with none). Returns the frames ignored as late: taken, but not frames of the night (the
        frames after them pair as they did)."""
        done = {row["file"]: row for row in self.outbox.night_rows(self.night)}
        scored, daylit, late = [], False, []
        try:
            frames = allsky.list_frames(self.folder)
        except OSError as exc:      # its permissions: the frames decided before are known by name, the rest wait
            log.warning("cannot list %s: %s", self.folder, exc.strerror or exc)
            frames = sorted(map(self.folder.joinpath, done))      # by name: taken_at would list the folder
        for frame in frames:
            row = done.get(frame.name)
            if row is None:                     # not handed over yet
                continue
            if row["note"] == LATE_NOTE:
                late.append(frame)
                continue
            self.frames.append(frame)
            if not row["note"].startswith(BAD_FRAME):
                daylit = row["note"].startswith(DAYTIME)
            if row["score"] != "":
                scored.append(frame)
        self.scorer.after_daylight = daylit
        context = [result for result, model_input in (prepare(self.frames, frame, self.scorer.kind,
                                                              self.settings.streak_check) for frame in scored[-2:])
                   if model_input is not None]                      # still readable, and still paired
        if context:
            self.decider.resume_after(*reversed(context))
            log.info("night %s: resuming after %s (%d frames decided earlier)", self.night, context[-1].file.name,
                     len(self.frames.frames))
        return late

    def step(self, force: bool = False, limit: int | None = None) -> int:
        """Score and decide the frames that became complete (force: all that are left; at most `limit`); returns how
        many."""
        ready = self.watch.ready(force, limit)
        for frame in ready:
            self.frames.append(frame)
            if frame.name in self.watch.afresh:
                self.frames.start_afresh(frame, self.watch.afresh.pop(frame.name))
        self.emit([FrameResult(frame, note=LATE_NOTE, flag=SKIPPED) for frame in self.watch.late])   # a row each
        self.watch.late.clear()
        for result in self.scorer.score(ready):
            self.emit(self.decider.push(result))
        if self.decider.waiting is None:
            self.waiting_since = None
        elif self.waiting_since is None or self.decider.waiting is not self.held:   # a new candidate waits
            self.waiting_since = time.monotonic()
        self.held = self.decider.waiting
        return len(ready)

    def check_hold(self, hold_s: float) -> None:
        """Decide a candidate that has waited too long for its successor."""
        if self.waiting_since is not None and time.monotonic() - self.waiting_since > hold_s:
            self.emit(self.decider.finish())
            self.waiting_since = None

    def finish(self, stop: threading.Event) -> bool:
        """Night over: take the frames still arriving (for up to CLOSING_WAIT_S, then as they are), CHUNK at a time,
        decide the last one and send the end log: True. False if `stop` was set first (the night is left
        unfinished: the next start decides the rest)."""
        deadline = time.monotonic() + CLOSING_WAIT_S
        while time.monotonic() < deadline and self.watch.left() and not stop.is_set():
            if not self.step(limit=CHUNK):
                time.sleep(FAST_POLL_S / 5)
        while not stop.is_set() and self.step(force=True, limit=CHUNK):
            pass
        if stop.is_set():
            return False
        self.close()
        return True

    def catch_up(self) -> bool:
        """A past night: decide up to CHUNK more of its frames, as they are; when none is left, decide the last one
        and send the end log: True."""
        if self.step(force=True, limit=CHUNK):
            return False
        self.close()
        return True

    def close(self) -> None:
        """Decide a candidate still waiting, send the end log, write the scores CSV and record the night closed."""
        self.emit(self.decider.finish())
        self.frames.end_run()                       # a run of blank or frozen frames to the night's end: counted
        self.rows = self.outbox.night_rows(self.night)
        if self.upload:
            total = sum(row["score"] != "" for row in self.rows)
            self.outbox.put(*log_report("end", self.settings, self.night, total), replace=True)
        if self.scores is not None and not write_scores(self.scores, self.rows):
            self.scores = None
        self.outbox.close_night(self.night)

    def ended(self, delivery: str = "") -> str:
        """What is said once the night is closed: its counts, as a batch run's summary gives them, the state of
        delivery (`Watcher.delivery`) and its CSV."""
        summary = NightSummary(self.night)
        for row in self.rows:
            summary.count_row(row)
        last = f"; last frame at {allsky.frame_time(self.frames.frames[-1]):%H:%M:%S}" if self.frames.frames else ""
        return (f"night {self.night} ended: {summary.counts()}" + (f"; {delivery}" if delivery else "")
                + (f"; scores {self.scores}" if self.scores else "") + last + summary.same_place_hint())

    def emit(self, results: list[FrameResult]) -> None:
        for result in results:
            report = None
            if result.detection and self.upload:
                try:
                    report = detection_report(result, self.settings, self.night, self.version)
                except PayloadError as exc:          # never expected: log it rather than stop watching
                    log.error("%s: cannot build the detection payload: %s", result.file.name, exc)
            self.outbox.record_frame(self.night, result.row(), report)
            show(result, self.settings, self.say)


class Watcher:
    """Follows the newest night inside the window until `stop` is set."""

    def __init__(self, settings: Settings, model, stop: threading.Event, sender=None, say=print,
                 clock=datetime.now, night_recheck_s: float = NIGHT_RECHECK_S, settle_s: float = SETTLE_S,
                 grace_s: float = INCOMPLETE_GRACE_S, hold_s: float = HOLD_MAX_S, refresh=None,
                 scores: Path | None = None):
        self.settings, self.model, self.stop, self.sender, self.say, self.clock = \
            settings, model, stop, sender, say, clock
        self.scores = scores            # the folder each night's scores CSV goes into when it ends (None: none)
        self.refresh = refresh          # (model, in use by a left night) → the model to score the next night with
        self.night_recheck_s, self.settle_s, self.grace_s, self.hold_s = night_recheck_s, settle_s, grace_s, hold_s
        self.mask = look_mask(settings)               # guAlta_mask as last read (`night_mask`)
        self.settings_stamp = settings_file_stamp(settings)     # the settings file as read (`say_if_settings_edited`)
        self.outbox = Outbox(settings.outbox)
        self.current: NightWatch | None = None
        self.awaiting_said = ""                       # the night a first start said it waits for (`over_before_…`)
        self.left_nights: list[Path] = []             # past nights to decide while the new night has no frame waiting
        self.catching_up: NightWatch | None = None
        self.looked_after_window = False              # the nights ended with the window were looked for
        self.checked_at = -float("inf")
        self.root_mtime: float | None = None
        self.root_problem = ""                        # why guAlta_main_folder cannot be used ('' when it can)
        self.ahead_said: set[str] = set()             # night folders dated after tonight, warned about
        self.rejected_said = 0                        # reports the service rejected, said at a night's end

    def run(self) -> None:
        """Watch until stopped; a stop leaves a waiting candidate undecided (the next start takes it up)."""
        self.say(f"guAlta real time: {self.settings.main_folder}, window {self.settings.start_time}–"
                 f"{self.settings.end_time}, obs_id {self.settings.obs_id}")
        try:
            while not self.stop.is_set():
                self.stop.wait(self.tick())
        finally:
            for night in (self.current, self.catching_up):
                if night is not None:
                    night.frames.end_run()              # a run of blank or frozen frames the stop cut: counted
            self.outbox.close()

    def tick(self) -> float:
        """One round; returns how long to sleep before the next."""
        now = self.clock()
        inside = in_window(now, self.settings.start_time, self.settings.end_time)
        if inside:
            self.looked_after_window = False
            self.follow_newest_night()
        else:
            self.end_night()
            self.find_nights_ended_with_the_window(now)
        handled = 0
        if self.current is not None:
            handled = self.current.step(limit=CHUNK)
            self.current.check_hold(self.hold_s)
            if inside:
                self.say_if_camera_stopped(self.current, handled, now)
        caught_up = not handled and not (self.current is not None and self.current.watch.expecting()) \
            and self.catch_up()
        if self.sender is not None and (self.current is not None or caught_up):
            self.sender.wake()
        if caught_up or handled == CHUNK:           # more may be waiting: no sleep
            return 0.0
        if not inside:
            return min(seconds_until(now, self.settings.start_time), OUTSIDE_WINDOW_NAP_S)
        if self.current is None:
            return max(self.settings.sleep_between_imgs, FAST_POLL_S)
        return self.settings.sleep_between_imgs if handled else FAST_POLL_S

    def find_nights_ended_with_the_window(self, now: datetime) -> None:
        """Once outside the window: queue the nights left unfinished up to the one whose window has ended (the
        watcher was off when it closed, after a power cut until morning), so that they are decided now, before the
        morning's page, not when the next night starts."""
        if not self.looked_after_window:
            self.looked_after_window = True
            self.find_left_nights(before=first_night_not_ended(now, self.settings.end_time))

    def follow_newest_night(self) -> None:
        """Switch to the newest night folder (checked every night_recheck_s and when the root folder changes)."""
        root_mtime = folder_mtime(self.settings.main_folder)
        if (time.monotonic() - self.checked_at < self.night_recheck_s and root_mtime == self.root_mtime
                and self.current is not None):
            return
        self.checked_at, self.root_mtime = time.monotonic(), root_mtime
        tonight = allsky.night_of(self.clock())
        try:
            newest, ahead = allsky.latest_night_by(self.settings.main_folder, tonight)
            self.say_if_nights_ahead(ahead, tonight)
            problem = "not found" if root_mtime is None else ""
            if newest is None and not problem:
                problem = allsky.not_an_images_root(self.settings.main_folder)
        except OSError as exc:      # its permissions: said like a missing folder, waited for like one
            newest, problem = None, f"cannot be listed ({exc.strerror or exc})"
        self.say_if_root_unusable(problem)
        if newest is None or (self.current is not None and newest.name <= self.current.night) \
                or newest in self.left_nights or newest.name in self.outbox.closed_nights() \
                or self.over_before_first_start(newest.name):
            return          # a night closed, left (being decided) or over at a first start: tonight's is awaited
        self.end_night()
        if self.stop.is_set():          # stopped while closing the night: the next start takes up the new one
            return
        self.outbox.forget_old(night=newest.name)
        if self.refresh is not None and newest.name not in self.outbox.watched_nights():   # one model a night
            self.model = self.refresh(self.model, self.catching_up is not None)
        self.find_left_nights(before=newest.name)
        self.say_if_settings_edited()
        self.say(f"watching night {newest} (model {model_version(self.model) or 'without a version'})")
        self.current = NightWatch(newest, self.settings, self.model, self.outbox, self.sender is not None, self.say,
                                  self.settle_s, self.grace_s, self.scores, self.night_mask())

    def over_before_first_start(self, night: str) -> bool:
        """Whether `night` is one whose window ended before the watcher first started (no night watched yet): it was
        scored whole and its logs posted again. Tonight's folder is awaited; an always-open window has no end, so
        its newest folder is watched."""
        start, end = self.settings.start_time, self.settings.end_time
        awaited = first_night_not_ended(self.clock(), end)
        over = start != end and night < awaited and not self.outbox.watched_nights()
        if over and self.awaiting_said != awaited:
            self.awaiting_said = awaited
            self.say(f"night {night} is over (its window ended before this first start): waiting for night "
                     f"{awaited}'s folder")
        return over

    def say_if_settings_edited(self) -> None:
        """Say, once an edit, that the settings file changed since it was read: its values hold until a restart
        (the mask alone is read again each night)."""
        stamp = settings_file_stamp(self.settings)
        if stamp is None or stamp == self.settings_stamp:         # unreadable now (a share away): not known edited
            return
        self.settings_stamp = stamp
        log.warning("settings file %s changed since the watcher read it: restart it to apply the change (the mask "
                    "alone is read again each night)", self.settings.source)

    def night_mask(self) -> np.ndarray | None:
        """guAlta_mask read again for a new night (an edited mask counts from the next night); one that cannot be
        used now (half saved, deleted) is warned about and the last one read goes on."""
        try:
            self.mask = look_mask(self.settings)
        except ClientError as exc:
            log.warning("%s; the mask read before is used", exc)
        return self.mask

    def find_left_nights(self, before: str) -> None:
        """Queue the nights before `before` since the first one it watched (the outbox keeps 30 days) that it did
        not close: those it stopped in and came back to only later (a crash, a power cut), or missed altogether (the
        machine was off), oldest first: `catch_up` decides them as if each had just ended. A night it closed is not
        one of them: frames the camera added after that (at dawn, after the window) are not its to decide."""
        watched = self.outbox.watched_nights()
        skip = {folder.name for folder in self.left_nights} | self.outbox.closed_nights()
        try:
            folders = allsky.night_folders(self.settings.main_folder)
        except OSError:             # said by follow_newest_night; looked for again at the next night
            return
        for folder in folders:
            if not watched or not watched[0] <= folder.name < before or folder.name in skip \
                    or not listed_frames(folder):
                continue
            seen = folder.name in watched
            self.say(f"night {folder.name} was {'left unfinished' if seen else 'not watched'}: deciding its "
                     f"{'remaining ' if seen else ''}frames now, tonight's first")
            self.left_nights.append(folder)

    def catch_up(self) -> bool:
        """Decide a chunk of the oldest left night's frames (the rest of it and its end log when it is the last
        chunk); False if no night is left. A stop between chunks leaves the rest to the next start."""
        if not self.left_nights:
            return False
        if self.catching_up is None:
            self.catching_up = NightWatch(self.left_nights[0], self.settings, self.model, self.outbox,
                                          self.sender is not None, self.say, self.settle_s, self.grace_s, self.scores,
                                          self.mask)
        if self.catching_up.catch_up():
            self.say(self.catching_up.ended(self.delivery()))
            self.catching_up = None
            self.left_nights.pop(0)
        return True

    def say_if_nights_ahead(self, ahead: list[str], tonight: str) -> None:
        """Warn once about night folders dated after tonight by this machine's clock (the camera's clock ran ahead
        for a while): not watched — tonight's frames keep coming in tonight's folder — until their night comes."""
        new = [night for night in ahead if night not in self.ahead_said]
        if new:
            log.warning("night folder(s) %s dated after tonight (%s): not watched until their night (the camera's "
                        "clock ran ahead, or this machine's is behind: no real-time clock, NTP not synced yet?)",
                        ", ".join(new), tonight)
            self.ahead_said.update(new)

    def say_if_camera_stopped(self, night: NightWatch, handled: int, now: datetime) -> None:
        """Warn once when the night watched gets no new frame for STOP_FRAMES of the camera's intervals (at least
        STOP_MIN_S) inside the window — the camera or the share stopped — unless the sun is up at the camera's place
        (a camera that stops at dawn, in an always-open window), and say when frames come again."""
        now = now.astimezone()                                  # (an hour of summer time is no stop)
        if handled or night.arrived_at is None:
            if night.stopped_said:
                quiet = (now - night.arrived_at).total_seconds()
                log.info("frames in %s again after %.0f min without (%s)", night.night, quiet / 60,
                         night.frames.frames[-handled].name)
            night.arrived_at, night.stopped_said = now, False
            return
        quiet = (now - night.arrived_at).total_seconds()
        if night.stopped_said or quiet < max(STOP_FRAMES * night.watch.interval(), STOP_MIN_S) or self.sun_up(now):
            return
        night.stopped_said = True
        last = night.frames.frames[-1].name if night.frames.frames else "none yet"
        log.warning("no new frame in %s for %.0f min (last %s): camera or share stopped?", night.night, quiet / 60,
                    last)

    def sun_up(self, now: datetime) -> bool:
        """Whether the sun is above guAlta_night_sun_altitude now at the camera's place (False where it is not set)."""
        place = self.settings
        return place.latitude is not None and place.longitude is not None \
            and bool(allsky.sun_up(now, place.latitude, place.longitude, place.night_sun_altitude))

    def say_if_root_unusable(self, problem: str) -> None:
        """Warn once when the images root cannot be used — not found (a wrong guAlta_main_folder, a share not mounted
        yet) or not listed (its permissions) — and say when it is back."""
        if problem and problem != self.root_problem:
            log.warning("guAlta_main_folder %s %s: waiting for it", self.settings.main_folder, problem)
        elif self.root_problem and not problem:
            log.info("guAlta_main_folder %s found", self.settings.main_folder)
        self.root_problem = problem

    def end_night(self) -> None:
        if self.current is not None:
            if self.current.finish(self.stop):
                self.say(self.current.ended(self.delivery()))
            self.current = None
            if self.sender is not None:
                self.sender.wake()

    def delivery(self) -> str:
        """The state of delivery said at a night's end, as the batch run's summary says it ('' with uploads off):
        after up to DELIVERY_WAIT_S for the sender to deliver the night's last reports (none while it backs off), the
        reports left in the outbox, why the service refused them or could not be reached, and those it rejected."""
        if self.sender is None:
            return ""
        self.sender.wait_idle(DELIVERY_WAIT_S)
        pending, refused, problem = self.outbox.pending(), self.sender.refused, self.sender.last_problem
        rejected, self.rejected_said = self.sender.rejected - self.rejected_said, self.sender.rejected
        if pending:
            said = f"{pending} report(s) pending in the outbox"
        else:
            said = "the other reports delivered" if rejected else "all reports delivered"
        if refused:
            said = f"the service refused the reports ({refused}); {said}"
        elif pending and problem:
            said = f"central service unreachable ({problem}); {said}"
        if rejected:
            said = f"{rejected} report(s) rejected by the service (the log says why); {said}"
        return said


def listed_frames(folder: Path) -> list[Path]:
    """allsky.list_frames; a night folder that cannot be listed (its permissions) is logged and has none for now."""
    try:
        return allsky.list_frames(folder)
    except OSError as exc:
        log.warning("cannot list %s: %s", folder, exc.strerror or exc)
        return []


def folder_mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def scores_folder(scores: str | Path | None) -> Path | None:
    """The folder each night's scores CSV is written into (made if missing); ClientError if it cannot be."""
    if not scores:
        return None
    folder = Path(scores)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClientError(f"cannot make the scores folder {folder}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ClientError(f"cannot write into the scores folder {folder}")
    return folder


def settings_file_stamp(settings: Settings):
    """What tells the settings file read from an edited one (`file_stamp`); None when there is none."""
    return file_stamp(Path(settings.source)) if settings.source else None


def stop_on_signal(stop: threading.Event):
    """A SIGINT/SIGTERM handler: the first asks the watcher to stop once the frames being decided are (up to CHUNK,
    half a minute on a Raspberry Pi) and says so at once; a second stops it now (KeyboardInterrupt: what was decided
    is stored already, the rest is decided at the next start)."""
    def handler(_signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        try:       # straight to the file descriptor: a print here could land inside one the watcher is making
            os.write(sys.stderr.fileno(), b"stopping once the frames being decided are done (a second Ctrl-C or "
                                          b"SIGTERM stops now)\n")
        except (OSError, ValueError, AttributeError):    # no stderr (a service without one)
            pass
    return handler


def start_fresh_if_damaged(outbox: Path) -> None:
    """A damaged outbox would stop the watcher at every restart, all night: it is moved aside, loudly, and a fresh
    one started, so that scoring goes on."""
    aside = set_aside_if_damaged(outbox)
    if aside is not None:
        log.error("outbox %s is damaged: moved aside to %s and a fresh one started, so scoring goes on (tonight's "
                  "frames are decided again; reports sent before are stored once); its pending reports can be "
                  "recovered (`sqlite3 %s .recover`, README \"The outbox and `flush`\")", outbox, aside, aside)


def run_realtime(settings: Settings, upload: bool = True, stop: threading.Event | None = None, say=print,
                 model_path: str | Path | None = None, scores: str | Path | None = None, say_last=None) -> None:
    """`python guAlta.py realtime`: load the model (`model_path`, else the configured one), start the sender,
    watch until SIGINT/SIGTERM (or `stop`); each night's scores CSV goes into the folder `scores` as it ends. The
    closing line ("stopped; N report(s) pending in the outbox") goes to `say_last` (default: `say`): the CLI prints
    it after the line that says what stopped the watcher (said before it, the pending reports read as the failure).
    A line that cannot be written (a full disk, a terminal gone) stops the lines, not the watcher (`ConsoleLines`)."""
    say = ConsoleLines(say)
    if upload and not settings.url:
        raise ClientError("uploads need guAlta_URL (or run with --no-upload)")
    if problem := window_problem(settings.start_time, settings.end_time):     # batch and flush need no window
        raise UsageError(problem)
    scores = scores_folder(scores)
    log.info("settings from %s: %s", settings.source, settings.describe())
    look_mask(settings)                                 # a mask that cannot be used stops it now, not at night
    model = open_model(settings, model_path)
    refresh = (lambda current, in_use: refreshed_model(settings, current, in_use)) \
        if upload and settings.model_update and not model_path else None
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, stop_on_signal(stop))
    start_fresh_if_damaged(settings.outbox)
    sender = Sender(settings.outbox, ApiClient(settings.url, settings.api_key)) if upload else None
    try:
        Watcher(settings, model, stop, sender, say, refresh=refresh, scores=scores).run()
    finally:
        pending = sender.close(timeout=3.0) if sender is not None else 0
        (say_last or say)(f"stopped; {pending} report(s) pending in the outbox" if pending else "stopped")
