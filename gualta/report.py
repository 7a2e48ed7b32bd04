"""Reporting to the central service: the API client, a durable SQLite outbox, and the model download.

Every detection and log is written to the outbox (one SQLite file) before any attempt to send it; a background sender
delivers pending items oldest first (one the service failed on with a 5xx three times holds back no later one). 200
(stored or duplicate: ingest is idempotent by (obs_id, id)) marks an item sent; network errors, 5xx, 408 and 429 keep it
pending and pause sending with exponential backoff; a settings problem of this observatory — 401/403 (key or obs_id),
404/405 (no upload route: guAlta_URL) or a redirect (not followed: the key would go along) — also keeps it pending and
is logged as an error; any other 4xx marks that one item rejected (it would be refused again) — but a 400 naming a
detection's `streak` an unknown field (a service older than that field) has the report sent again at once without it,
and every later one of the process too. Whatever is pending survives a crash or a reboot and goes out with the next run
or `python guAlta.py flush`. The same file keeps the real-time watcher's progress (frames already decided per night), so
a restart neither rescores nor re-reports.
"""
from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import math
import os
import random
import re
import sqlite3
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import requests

from gualta.client_errors import ClientError
from gualta.config import Settings, without_credentials
from gualta.store import MODEL_META, MODEL_PREFIX, published_file

log = logging.getLogger(__name__)

UPLOAD_ROUTE = "/uploadmeteor"
TIMEOUT_S = 15
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 300.0
HOLD_BACK_TRIES = 3                   # a report the service answered 5xx this often holds back no later one
HOLDS_BACK = f"NOT (failed_5xx >= {HOLD_BACK_TRIES} AND COALESCE(last_error, '') LIKE 'HTTP 5%')"   # SQL: one does
CONFIG_PROBLEMS = {                   # a settings problem, not the report's: keep the items, fix the settings
    401: "fix guAlta_api_key / guAlta_obs_id", 403: "fix guAlta_api_key / guAlta_obs_id",
    404: "no upload route at this address: fix guAlta_URL", 405: "no upload route at this address: fix guAlta_URL"}
RETRY_STATUSES = (408, 429)           # 4xx that mean "later"
NEWER_FIELD = "streak"                # a detection field an older service refuses ("unknown field(s): streak")
UNKNOWN_FIELDS = re.compile(r"HTTP 400: .*unknown field\(s\): ([A-Za-z0-9_, ()-]+)")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,            -- detection/<obs_id>/<id> or log/<start|end>/<obs_id>/<night>
    body TEXT NOT NULL,                  -- the JSON payload
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'rejected')),
    attempts INTEGER NOT NULL DEFAULT 0, -- failed sends (the backoff)
    failed_5xx INTEGER NOT NULL DEFAULT 0,   -- ... of them answered 5xx by the service (not a network error)
    next_try REAL NOT NULL DEFAULT 0,    -- unix time before which it is not retried
    last_error TEXT,
    created REAL NOT NULL,
    done REAL
);
CREATE TABLE IF NOT EXISTS frames (      -- the real-time watcher's decided frames, one scores row each
    night TEXT NOT NULL,
    file TEXT NOT NULL,
    row TEXT NOT NULL,                   -- the scores CSV row as JSON
    PRIMARY KEY (night, file)
);
CREATE TABLE IF NOT EXISTS closed (      -- the nights the watcher closed (at the window's end, or the next night began)
    night TEXT PRIMARY KEY
);
"""


# An outbox from before nights were recorded closed: all nights but the last one were, and the last one too if its
# end log was queued (the watcher queued it on closing the night).
CLOSED_BEFORE_THE_TABLE = """
INSERT OR IGNORE INTO closed SELECT DISTINCT night FROM frames
WHERE night < (SELECT MAX(night) FROM frames)
   OR EXISTS (SELECT 1 FROM outbox WHERE key LIKE 'log/end/%' AND substr(key, -8) = frames.night)
"""


class OutboxError(RuntimeError):
    """The outbox cannot be opened or written (a wrong path, no permission, a full disk)."""


class DamagedOutbox(OutboxError):
    """SQLite finds the outbox file malformed (a power cut on a failing SD card): no use of it can succeed."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"outbox {path} is damaged ({why}): move it aside (`mv {path} {path}.damaged`) and a fresh "
                         f"one is started; its pending reports can be recovered (`sqlite3 {path}.damaged .recover`, "
                         f"README \"The outbox and `flush`\")")


class ModelDownloadError(RuntimeError):
    """The model could not be fetched or verified; the message says why."""


class NoModelPublished(ModelDownloadError):
    """The central service has no model to offer (404)."""


@dataclass(frozen=True)
class Item:
    id: int
    key: str
    body: str
    attempts: int                     # failed sends so far (the backoff)
    failed_5xx: int = 0               # ... of them answered 5xx by the service (passing over, `HOLDS_BACK`)


@dataclass(frozen=True)
class Outcome:
    """What the service made of one send: 'sent', 'rejected' (permanent), 'retry' (network/5xx/408/429) or 'refused'
    (401/403/404/405/3xx: a settings problem)."""
    kind: str
    detail: str = ""


@dataclass
class Delivery:
    """What one delivery pass did to the reports in the outbox: each counted once, by its last copy's outcome (an
    older copy another run replaced while it was sent counts for nothing)."""
    outcomes: dict[int, str] = field(default_factory=dict)     # item id → its last copy's Outcome.kind
    stopped: str = ""                 # why the pass stopped early ('' if it ran out of due items)
    passed_over: str = ""             # the 5xx of the last report a pass over everything left pending and went on
    refused: bool = False             # ... because the service refused this client's settings (key, address)

    @property
    def sent(self) -> int:
        return list(self.outcomes.values()).count("sent")

    @property
    def rejected(self) -> int:
        return list(self.outcomes.values()).count("rejected")


def detection_key(payload: dict) -> str:
    return f"detection/{payload['obs_id']}/{payload['id']}"


def log_key(payload: dict, night: str) -> str:
    return f"log/{payload['log']}/{payload['obs_id']}/{night}"


def retry_delay(attempts: int) -> float:
    """Seconds before retry number `attempts` (2, 4, 8 … capped at 5 min), with 10 % jitter."""
    delay = min(BACKOFF_FIRST_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S)
    return delay * random.uniform(1.0, 1.1)


SET_UP_PATIENCE_S = 30.0      # how long opening an outbox waits out another connection setting the same file up
KEEP_DAYS = 30                # sent reports and the watcher's rows are kept this long (pending ones for ever)
REJECTED_KEEP_DAYS = 90       # rejected reports (their body and the service's reason) are kept this long
WAL_LIMIT_BYTES = 4 * 1024 * 1024     # the write-ahead log is cut back to this after a checkpoint (else it keeps its
                                      # largest size: a month's backlog forgotten, tens of MB)
RECLAIM_MIN_BYTES = 4 * 1024 * 1024   # free space worth giving back to the disk (VACUUM) once it is most of the file
HOUSEKEEPING_PATIENCE_MS = 1000       # how long housekeeping (forgetting, giving space back) waits for another one
BUSY_TIMEOUT_S = 30                   # how long a write waits for another connection's
REMIND_S = 3600              # an outage or refusal that lasts is said again this often (each retry only at DEBUG)
STALE_PART_S = 600            # a model download's .part nothing has written to for this long was cut short


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed because the file is malformed ("database disk image is malformed")."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_CORRUPT


def in_words(exc: Exception, folder: Path) -> str:
    """Why the outbox cannot be used, the disk's problem said in words ("disk full", "read-only file system", naming
    the folder) before SQLite's or the system's own message ("unable to open database file" said neither)."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    number = getattr(exc, "errno", None)
    if number == errno.ENOSPC or code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc):
        return f"disk full ({folder}: {exc})"
    if number == errno.EROFS or read_only(folder):
        return f"read-only file system ({folder}: {exc})"
    if number in (errno.EACCES, errno.EPERM) or code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            return f"no permission to write in {folder} ({exc})"
    return str(exc)


def read_only(folder: Path) -> bool:
    """Whether the file system holding `folder` (or its nearest existing parent) is mounted read-only."""
    for place in (folder, *folder.parents):
        try:
            return bool(os.statvfs(place).f_flag & os.ST_RDONLY)
        except FileNotFoundError:
            continue
        except (OSError, AttributeError):         # not a folder; no statvfs (Windows)
            return False
    return False


class Outbox:
    """The on-disk queue of reports (and the watcher's progress). Use each Outbox from one thread at a time."""

    def __init__(self, path: str | Path, check: bool = True):
        """Open (create) the outbox at `path`; `check`: look for damage first (`_check`), as every command's first
        opening does (the sender's, beside the client that opened it, need not)."""
        self.path = Path(path)
        self.db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                      check_same_thread=False)
            self._set_up()
            if check:
                self._check()
        except (OSError, sqlite3.Error, DamagedOutbox) as exc:
            if self.db is not None:
                self.db.close()
            if isinstance(exc, DamagedOutbox):
                raise
            if isinstance(exc, sqlite3.Error) and is_damage(exc):
                raise DamagedOutbox(self.path, str(exc)) from None
            raise OutboxError(f"outbox {self.path} cannot be opened: {in_words(exc, self.path.parent)}") from None

    def _check(self) -> None:
        """Raise DamagedOutbox if SQLite finds the file malformed (`PRAGMA quick_check`: 0.1 s for 30 MB)."""
        verdict = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if verdict != "ok":
            raise DamagedOutbox(self.path, verdict.splitlines()[-1])

    def _set_up(self, patience_s: float = SET_UP_PATIENCE_S) -> None:
        """WAL mode and the schema. While another connection turns the same new file to WAL, SQLite answers
        "database is locked" at once (its busy timeout does not cover that), so try again for a while."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
                had_closed = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'closed'").fetchone()
                self.db.executescript(SCHEMA)
                if not had_closed:
                    self.db.execute(CLOSED_BEFORE_THE_TABLE)
                self._add_failed_5xx()
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _add_failed_5xx(self) -> None:
        """Give an outbox from before `failed_5xx` the column: its reports' 5xx answers count from now on (the old
        `attempts` counted an outage's network errors too)."""
        columns = {name for _, name, *_ in self.db.execute("PRAGMA table_info(outbox)")}
        if "failed_5xx" in columns:
            return
        try:
            self.db.execute("ALTER TABLE outbox ADD COLUMN failed_5xx INTEGER NOT NULL DEFAULT 0")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):      # another connection added it meanwhile
                raise

    def _failure(self, exc: sqlite3.DatabaseError, doing: str) -> Exception:
        """The OutboxError for SQLite refusing the file or the disk (damaged, full, read-only, locked too long); any
        other error (a query's bug: a constraint, a misuse) as it is."""
        if type(exc) not in (sqlite3.DatabaseError, sqlite3.OperationalError):
            return exc
        if is_damage(exc):
            return DamagedOutbox(self.path, str(exc))
        return OutboxError(f"outbox {self.path} cannot be {doing}: {in_words(exc, self.path.parent)}")

    def _read(self, query: str, args: tuple = ()) -> list[tuple]:
        """A query's rows; SQLite refusing the file (damaged) is an OutboxError."""
        try:
            return self.db.execute(query, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc, "read") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the queue -----------------------------------------------------------------------------------------------
    @contextmanager
    def _writing(self):
        """One transaction (the connection autocommits otherwise): all of its writes or none. SQLite's refusal to
        write (damaged file, disk full, read-only file, locked too long) is an OutboxError."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise self._failure(exc, "written") from None

    @contextmanager
    def _patience(self, milliseconds: int):
        """Wait this long (not BUSY_TIMEOUT_S) for another connection, for what can be put off to a later time."""
        self.db.execute(f"PRAGMA busy_timeout={milliseconds}")
        try:
            yield
        finally:
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")

    def put(self, key: str, payload: dict, replace: bool = False) -> bool:
        """Queue a payload under a key; an existing key is kept (replace: updated and re-sent if it differs).
        Returns True if something new is to be sent."""
        with self._writing():
            return self._put(key, payload, replace)

    def _put(self, key: str, payload: dict, replace: bool) -> bool:
        body = json.dumps(payload, sort_keys=True)
        if replace:
            cursor = self.db.execute(
                "INSERT INTO outbox (key, body, created) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                "body = excluded.body, state = 'pending', attempts = 0, failed_5xx = 0, next_try = 0, "
                "last_error = NULL, done = NULL WHERE outbox.body != excluded.body", (key, body, time.time()))
        else:
            cursor = self.db.execute("INSERT OR IGNORE INTO outbox (key, body, created) VALUES (?, ?, ?)",
                                     (key, body, time.time()))
        return cursor.rowcount > 0

    def due(self, now: float | None = None, limit: int = 50, after: int = 0, untried: bool = False) -> list[Item]:
        """Pending items oldest first (those queued after item id `after`; if `untried`, only those never tried since
        queued or replaced), up to the first whose retry time has not come (all of them if now is None): one waiting
        for its retry holds back the later ones, so a night's end log never goes before its start — unless the service
        answered it 5xx HOLD_BACK_TRIES times (`HOLDS_BACK`: a report it keeps failing on blocks nothing; a network
        outage holds everything back, and its tries do not count)."""
        now = math.inf if now is None else now
        rows = self._read(f"SELECT id, key, body, attempts, failed_5xx, next_try FROM outbox WHERE state = 'pending' "
                          f"AND id > ? AND (? OR attempts = 0) AND (next_try <= ? OR {HOLDS_BACK}) ORDER BY id LIMIT ?",
                          (after, not untried, now, limit))
        due = []
        for *item, next_try in rows:
            if next_try > now:                  # the oldest one holding back the rest, not due yet
                break
            due.append(Item(*item))
        return due

    def mark(self, item: Item, outcome: Outcome, now: float) -> bool:
        """Record a send's outcome: sent, rejected, or pending with the next retry time — unless the item was
        replaced meanwhile (another run queued a newer end log under its key): that one is still to be sent, and
        False is returned."""
        with self._writing():
            return self._mark(item, outcome, now)

    def _mark(self, item: Item, outcome: Outcome, now: float) -> bool:
        if outcome.kind in ("sent", "rejected"):
            cursor = self.db.execute("UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?, done = ? "
                                     "WHERE id = ? AND body = ?", (outcome.kind, outcome.detail or None, now, item.id,
                                                                   item.body))
        else:
            cursor = self.db.execute("UPDATE outbox SET attempts = attempts + 1, failed_5xx = failed_5xx + ?, "
                                     "next_try = ?, last_error = ? WHERE id = ? AND body = ?",
                                     (answered_5xx(outcome), now + retry_delay(item.attempts + 1), outcome.detail,
                                      item.id, item.body))
        return cursor.rowcount > 0

    def forget_old(self, now: float | None = None, keep_days: int = KEEP_DAYS, night: str | None = None,
                   keep_rejected_days: int = REJECTED_KEEP_DAYS) -> int:
        """Drop the reports delivered more than keep_days ago, those rejected more than keep_rejected_days ago (time
        enough to read why and fix it) and the watcher's rows of nights more than keep_days before `night`
        (YYYYMMDD, default today), so the file stops growing; pending reports stay. Returns how many rows went."""
        now = time.time() if now is None else now
        latest = datetime.strptime(night, "%Y%m%d") if night else datetime.fromtimestamp(now)
        before = (latest - timedelta(days=keep_days)).strftime("%Y%m%d")
        try:
            with self._patience(HOUSEKEEPING_PATIENCE_MS), self._writing():
                sent = self.db.execute("DELETE FROM outbox WHERE state = 'sent' AND done < ?",
                                       (now - keep_days * 86400,)).rowcount
                rejected = self.db.execute("DELETE FROM outbox WHERE state = 'rejected' AND done < ?",
                                           (now - keep_rejected_days * 86400,)).rowcount
                frames = self.db.execute("DELETE FROM frames WHERE night < ?", (before,)).rowcount
                self.db.execute("DELETE FROM closed WHERE night < ?", (before,))
        except DamagedOutbox:
            raise
        except OutboxError as exc:      # housekeeping: another connection writing, or a full disk, puts it off
            log.warning("%s; old rows are forgotten next time", exc)
            return 0
        if sent or rejected or frames:
            log.info("outbox %s: forgot %d reports delivered over %d days ago, %d rejected over %d days ago and %d "
                     "frames of nights before", self.path, sent, keep_days, rejected, keep_rejected_days, frames)
            self._give_back_space()
        return sent + rejected + frames

    def _give_back_space(self) -> None:
        """Shrink the file (VACUUM) once most of it is free pages worth RECLAIM_MIN_BYTES: what an outage's backlog
        took stays taken otherwise. Another connection in the middle of something is waited for a second at most
        (the watcher's night start must not stall): the file then shrinks at a later checkpoint, or next time."""
        free, pages, size = (self._read(f"PRAGMA {name}")[0][0]
                             for name in ("freelist_count", "page_count", "page_size"))
        if free * 2 < pages or free * size < RECLAIM_MIN_BYTES:
            return
        try:
            with self._patience(HOUSEKEEPING_PATIENCE_MS):
                self.db.execute("VACUUM")
                busy = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.OperationalError as exc:
            busy = exc
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc, "written") from None
        if busy:
            log.info("outbox %s: %.1f MB not given back yet, another connection is using it", self.path,
                     free * size / 1e6)
        else:
            log.info("outbox %s: gave back %.1f MB to the disk", self.path, free * size / 1e6)

    def pending(self) -> int:
        return self._read("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")[0][0]

    def next_due(self) -> float | None:
        """Unix time the next send is due (`due`): the earliest retry among the oldest pending item holding back the
        later ones and those before it that do not (None if nothing is pending)."""
        holder = self._read(f"SELECT id, next_try FROM outbox WHERE state = 'pending' AND {HOLDS_BACK} "
                            "ORDER BY id LIMIT 1")
        before = holder[0][0] if holder else None
        released = self._read(f"SELECT MIN(next_try) FROM outbox WHERE state = 'pending' AND NOT {HOLDS_BACK} "
                              "AND (? IS NULL OR id < ?)", (before, before))[0][0]
        return min((t for t in (holder[0][1] if holder else None, released) if t is not None), default=None)

    def counts(self) -> dict[str, int]:
        return dict(self._read("SELECT state, COUNT(*) FROM outbox GROUP BY state"))

    def rejected(self) -> list[tuple[str, str]]:
        return self._read("SELECT key, last_error FROM outbox WHERE state = 'rejected' ORDER BY id")

    # --- the watcher's progress ----------------------------------------------------------------------------------
    def record_frame(self, night: str, row: dict, report: tuple[str, dict] | None = None) -> None:
        """Store a decided frame's row and, in the same transaction, queue its report (key, payload) if any."""
        with self._writing():
            self.db.execute("INSERT OR REPLACE INTO frames (night, file, row) VALUES (?, ?, ?)",
                            (night, row["file"], json.dumps(row)))
            if report is not None:
                self._put(*report, replace=False)

    def watched_nights(self) -> list[str]:
        """The nights the watcher has decided frames of (YYYYMMDD), oldest first."""
        return [night for (night,) in self._read("SELECT DISTINCT night FROM frames ORDER BY night")]

    def close_night(self, night: str) -> None:
        """Record that the watcher closed a night (its last frame decided, its end log queued)."""
        with self._writing():
            self.db.execute("INSERT OR IGNORE INTO closed (night) VALUES (?)", (night,))

    def closed_nights(self) -> set[str]:
        return {night for (night,) in self._read("SELECT night FROM closed")}

    def night_rows(self, night: str) -> list[dict]:
        """The decided rows of a night, in the order they were decided (the order the frames were taken)."""
        rows = self._read("SELECT row FROM frames WHERE night = ? ORDER BY rowid", (night,))
        return [json.loads(row) for (row,) in rows]


# --- sending ---------------------------------------------------------------------------------------------------------

class ApiClient:
    """POSTs payloads to {url}/uploadmeteor with the observatory's key and classifies the answer."""

    def __init__(self, url: str, api_key: str, timeout: float = TIMEOUT_S):
        self.url = url.rstrip("/") + UPLOAD_ROUTE
        self.session = requests.Session()
        self.session.headers.update({"x-api-key": api_key, "Content-Type": "application/json"})
        self.timeout = timeout
        self.newer_field_refused = False      # the service is older than NEWER_FIELD: it is left out from then on

    def send(self, body: str) -> Outcome:
        """Send one payload; one the service refuses for NEWER_FIELD alone is sent again at once without it."""
        if self.newer_field_refused:
            return self.post(without_newer_field(body))
        outcome = self.post(body)
        if outcome.kind == "rejected" and refuses_newer_field(outcome.detail):
            self.newer_field_refused = True
            log.warning("the central service does not take the detections' %s (an older version): sent without it",
                        NEWER_FIELD)
            return self.post(without_newer_field(body))
        return outcome

    def post(self, body: str) -> Outcome:
        """POST one payload and classify the answer."""
        try:
            response = self.session.post(self.url, data=body.encode("utf-8"), timeout=self.timeout,
                                         allow_redirects=False)
        except requests.RequestException as exc:
            return Outcome("retry", f"network: {type(exc).__name__}")
        if response.is_redirect:    # followed, the key went along to wherever it points (requests keeps it), and a
                                    # 301/302 turned the report into a body-less GET another page could answer 200
            return Outcome("refused", f"HTTP {response.status_code}: the service redirects to "
                                      f"{without_credentials(response.headers.get('Location', '?'))}: set guAlta_URL "
                                      f"to the address it redirects to")
        reason = f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code == 200:
            return Outcome("sent")
        if response.status_code >= 500 or response.status_code in RETRY_STATUSES:
            return Outcome("retry", reason)
        if response.status_code in CONFIG_PROBLEMS:
            return Outcome("refused", f"{reason}; {CONFIG_PROBLEMS[response.status_code]}")
        return Outcome("rejected", reason)


def refuses_newer_field(detail: str) -> bool:
    """Whether a rejection's detail is a 400 naming NEWER_FIELD among the unknown fields."""
    match = UNKNOWN_FIELDS.match(detail)
    return bool(match) and NEWER_FIELD in match.group(1).split(", ")


def without_newer_field(body: str) -> str:
    """The JSON payload without NEWER_FIELD (as it is if it has none)."""
    payload = json.loads(body)
    if not isinstance(payload, dict) or NEWER_FIELD not in payload:
        return body
    del payload[NEWER_FIELD]
    return json.dumps(payload, sort_keys=True)


def deliver(outbox: Outbox, client: ApiClient, everything: bool = False, stop: threading.Event | None = None,
            deadline: float | None = None) -> Delivery:
    """Send due items (every pending one if `everything`) oldest first; stop at the first one that must wait, once
    `stop` is set, or once time.monotonic() has passed `deadline` (one item is sent whatever the time). Over
    everything, one the service has now answered 5xx HOLD_BACK_TRIES times holds back no later one (as in `due`): it
    stays pending and the pass goes on to the next, each item tried once — but one replaced while it was sent (a newer
    end log queued under its key by another run) goes again at once, its newer copy, and those replaced after the pass
    went past them go at its end: it looks once more from the start for those never tried since (once only: another
    run replacing them again and again does not keep it going). The counts are of reports (`Delivery`)."""
    result, first, after, again = Delivery(), True, 0, False
    while True:
        items = outbox.due(None if everything else time.time(), after=after, untried=again)
        if not items and everything and not again:      # once more from the start: those replaced behind the pass
            after, again = 0, True
            continue
        if not items:
            return result
        for item in items:
            if (stop is not None and stop.is_set()) or (deadline is not None and not first
                                                           and time.monotonic() > deadline):
                return result
            first = False
            outcome = client.send(item.body)
            replaced = not outbox.mark(item, outcome, time.time())
            if not replaced:                    # a replaced copy's outcome is moot: its newer copy is pending
                result.outcomes[item.id] = outcome.kind
            if outcome.kind in ("retry", "refused") and not (everything and keeps_failing(item, outcome)):
                result.stopped, result.refused = outcome.detail, outcome.kind == "refused"
                return result
            if replaced:                        # its newer copy next, then the ones after it
                break
            if everything:
                after = item.id
            if outcome.kind == "rejected":
                log.error("report %s rejected by the service: %s", item.key, outcome.detail)
            elif outcome.kind == "retry":
                result.passed_over = outcome.detail
                log.warning("report %s kept pending, the later ones go on: the service answered it 5xx %d times, "
                            "last %s", item.key, item.failed_5xx + 1, outcome.detail)


def keeps_failing(item: Item, outcome: Outcome) -> bool:
    """Whether this send was the service's HOLD_BACK_TRIES-th 5xx answer or more on `item` (`HOLDS_BACK`): the
    network errors of an outage do not count."""
    return answered_5xx(outcome) and item.failed_5xx + 1 >= HOLD_BACK_TRIES


def answered_5xx(outcome: Outcome) -> bool:
    """Whether a send to retry was the service answering 5xx (not a network error, a 408 or a 429)."""
    return outcome.kind == "retry" and outcome.detail.startswith("HTTP 5")


def duration(seconds: float) -> str:
    """'33 s', '12 min', '3.5 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def problem_kind(delivery: Delivery) -> str:
    """What a stopped pass is said about: a refusal's whole reason, an outage's kind (`network: ConnectionError`,
    `HTTP 503`) — the body of a 5xx page or a timeout's details changing is the same outage."""
    if delivery.refused:
        return delivery.stopped
    match = re.match(r"HTTP \d+|network: \w+", delivery.stopped)
    return match.group(0) if match else delivery.stopped


class Sender:
    """A background thread that delivers the outbox while the client works; `wake()` after queueing."""

    def __init__(self, outbox_path: str | Path, client: ApiClient, idle_s: float = 30.0):
        self.outbox_path, self.client, self.idle_s = Path(outbox_path), client, idle_s
        self._wake, self._stop = threading.Event(), threading.Event()
        self.blocked_until = 0.0
        self.failures = 0                     # passes stopped in a row: the sender's own backoff
        self.rejected = 0                     # reports the service rejected for good
        self.last_problem = ""                # the outage or refusal last said ('' while delivering)
        self.said_at = 0.0                    # when it was last said (time.monotonic)
        self.last_refused = False             # ... and whether it was a refusal (else an outage)
        self.problem_since = 0.0              # when the passes began to stop (time.monotonic)
        self.outbox_problem = ""              # why the outbox last could not be used ('' since it could)
        self.outbox_failures = 0              # passes in a row it could not be
        self.refused = ""                     # why the service last refused this client's settings ('' since sent)
        self.thread = threading.Thread(target=self._run, name="gualta-sender", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        try:
            outbox = Outbox(self.outbox_path, check=False)
        except OutboxError as exc:            # the client that queues into it stops with the same error
            log.error("sender stopped: %s", exc)
            return
        with outbox:
            try:
                while not self._stop.is_set():
                    self._wake.clear()
                    wait = self._pass(outbox)
                    self._wake.wait(wait)
            except DamagedOutbox as exc:      # no use of it can succeed: the client stops on its next write
                log.error("sender stopped: %s", exc)

    def _pass(self, outbox: Outbox) -> float:
        """One delivery pass; returns how long to sleep before the next one (unless woken)."""
        now = time.time()
        if now < self.blocked_until:
            return self.blocked_until - now
        try:
            delivery = deliver(outbox, self.client, stop=self._stop)
        except DamagedOutbox:
            raise
        except (OutboxError, sqlite3.Error) as exc:   # e.g. a locked database or a full disk: try again shortly
            self.outbox_failures += 1                 # (a full disk was a warning, and the same report sent, every s)
            log.log(logging.DEBUG if str(exc) == self.outbox_problem else logging.WARNING,
                    "outbox cannot be used now (%s): retrying", exc)
            self.outbox_problem = str(exc)
            return retry_delay(self.outbox_failures)
        self.outbox_problem, self.outbox_failures = "", 0
        self.rejected += delivery.rejected
        self.note_refusal(delivery)
        if delivery.stopped:
            # the next pass waits for the oldest report's retry, and at least as long as the outage has lasted (2 s,
            # 4 s … 5 min) from when this pass gave up (a send timing out takes 15 s): reports not tried yet would
            # otherwise be tried, and warned about, one after another
            if not self.failures:
                self.problem_since = time.monotonic()
            self.failures += 1
            due = max(outbox.next_due() or 0.0, time.time() + retry_delay(self.failures))
            self.blocked_until = due
            self.say_problem(delivery, outbox.pending(), due - time.time())
            return max(due - time.time(), 0.05)
        if self.failures and (delivery.sent or delivery.rejected):      # it answered: the outage is over
            log.info("central service %s: %d report(s) delivered after %s", "takes the reports again"
                     if self.last_refused else "reachable again", delivery.sent,
                     duration(time.monotonic() - self.problem_since))
        self.last_problem, self.failures = "", 0
        next_due = outbox.next_due()
        if next_due is None:
            return self.idle_s
        return min(max(next_due - time.time(), 0.05), self.idle_s)

    def say_problem(self, delivery: Delivery, kept: int, retry_in: float) -> None:
        """Log a refusal (ERROR: a settings problem) or an outage (WARNING) when it starts or its reason changes, then
        a reminder at most every REMIND_S; each retry in between only at DEBUG (it was two lines a retry, all night)."""
        problem = problem_kind(delivery)
        what = "refused the reports" if delivery.refused else "unreachable"
        if problem != self.last_problem:
            self.last_problem, self.said_at, self.last_refused = problem, time.monotonic(), delivery.refused
            log.log(logging.ERROR if delivery.refused else logging.WARNING,
                    "central service %s (%s): %d report(s) kept in the outbox, retried with a growing delay (up to "
                    "%.0f min); said again hourly while it lasts", what, delivery.stopped, kept, BACKOFF_MAX_S / 60)
        elif time.monotonic() - self.said_at >= REMIND_S:
            self.said_at = time.monotonic()
            log.log(logging.ERROR if delivery.refused else logging.WARNING,
                    "central service still %s (%s): %d report(s) kept in the outbox", what, delivery.stopped, kept)
        else:
            log.debug("central service %s (%s): %d report(s) kept, retry in %.0f s", what, delivery.stopped, kept,
                      max(retry_in, 0))

    def note_refusal(self, delivery: Delivery) -> None:
        """Keep why the service refused this client (until it takes a report again)."""
        if delivery.refused:
            self.refused = delivery.stopped
        elif delivery.sent:
            self.refused = ""

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending (True), or the timeout passes, the service is found unreachable or no pending
        report is due before the timeout (False: waiting for a retry time later, `close` would have no time left)."""
        self.wake()
        deadline = time.monotonic() + timeout
        with Outbox(self.outbox_path, check=False) as outbox:
            while outbox.pending():
                left, due = deadline - time.monotonic(), outbox.next_due()
                if left < 0 or time.time() < self.blocked_until or (due is not None and due > time.time() + left):
                    return False
                time.sleep(0.05)
        return True

    def close(self, timeout: float = 10.0) -> int:
        """Deliver what is pending for up to `timeout` s (a last try of one report at least, even while backing off)
        and stop — the thread ends with the report it is sending; returns how many reports are still pending."""
        deadline = time.monotonic() + timeout
        if timeout > 0:
            self.wait_idle(timeout)
        self._stop.set()
        self._wake.set()
        self.thread.join(TIMEOUT_S + 5)
        with Outbox(self.outbox_path, check=False) as outbox:
            if timeout > 0 and outbox.pending() and not self.thread.is_alive():    # never two senders at once
                try:
                    last = deliver(outbox, self.client, everything=True, deadline=deadline)
                    self.rejected += last.rejected
                    self.note_refusal(last)
                except (OutboxError, sqlite3.Error) as exc:   # e.g. a full disk: what is queued stays queued
                    log.warning("outbox %s: last delivery stopped: %s", self.outbox_path, exc)
            return outbox.pending()


def set_aside_if_damaged(path: str | Path, clock=datetime.now) -> Path | None:
    """Move a damaged outbox aside (renamed <name>.damaged-YYYYMMDD-HHMMSS, its -wal and -shm with it: nothing is
    deleted) for a fresh one to be started; returns where it went (None if it is sound or there is none). An outbox
    that cannot be opened for another reason (a wrong path, no permission) is an OutboxError, as ever."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        Outbox(path).close()
        return None
    except DamagedOutbox:
        pass
    aside = path.with_name(f"{path.name}.damaged-{clock():%Y%m%d-%H%M%S}")
    for suffix in ("-wal", "-shm", ""):       # the write-ahead log first: a fresh file must never take up its pages
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def flush(outbox_path: str | Path, url: str, api_key: str) -> tuple[Delivery, int]:
    """Send every pending report now, ignoring retry times (`python guAlta.py flush`), past one the service keeps
    failing on (`deliver`); returns what happened and how many are still pending."""
    with Outbox(outbox_path) as outbox:
        delivery = deliver(outbox, ApiClient(url, api_key), everything=True)
        return delivery, outbox.pending()


def flush_outbox(settings: Settings, say=print) -> int:
    """`flush` guAlta_outbox to guAlta_URL (`python guAlta.py flush`), saying what happened in one line; the exit
    status: 1 if reports are still pending, else 0. ClientError if guAlta_URL is not set."""
    if not settings.url:
        raise ClientError("guAlta_URL is not set")
    if not settings.outbox.exists():                # not made here (nor its folder): never queued to
        say(f"no outbox at {settings.outbox}: nothing was queued there (check guAlta_outbox)")
        return 0
    delivery, pending = flush(settings.outbox, settings.url, settings.api_key)
    if not (delivery.sent or delivery.rejected or pending):
        say(f"nothing to send: no report waits in {settings.outbox}")
        return 0
    why = delivery.stopped or delivery.passed_over
    say(f"delivered {delivery.sent}, rejected {delivery.rejected}, still pending {pending}"
        + (f" ({why})" if why else ""))
    return 1 if pending else 0


# --- the model -------------------------------------------------------------------------------------------------------

def download_model(url: str, destination: str | Path, timeout: float = 60, meta: dict | None = None) -> dict:
    """Fetch the latest published model into `destination` from `url`, where the store's models/ keys are served
    (the embedded service, or the public S3 bucket's website): verified by size and sha256 against
    models/guAlta_latest_version.json (or `meta`, already read from there), written atomically, with its metadata
    beside it (<file>.json). Raises ModelDownloadError with the reason."""
    destination = Path(destination)
    base = url.rstrip("/")
    meta = meta or latest_model_info(base, timeout)
    served_suffix = Path(meta["file"]).suffix.lower() if isinstance(meta.get("file"), str) else destination.suffix
    if served_suffix != destination.suffix.lower():
        raise ModelDownloadError(f"the service publishes a {served_suffix} model, but {destination} is configured")
    try:
        install_model(base, destination, meta, timeout)
    except OSError as exc:                     # a read-only folder, a full disk, a file held open (Windows)
        raise ModelDownloadError(f"cannot write {destination}: {exc}") from None
    log.info("downloaded model version %s (%d bytes) to %s", meta.get("version"), meta["size"], destination)
    return meta


def install_model(base: str, destination: Path, meta: dict, timeout: float) -> None:
    """Download the published file beside `destination`, check it against `meta`, move it into place and write
    the metadata beside it; nothing half-written is left."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_cut_short(destination)
    handle, temporary = tempfile.mkstemp(prefix=destination.name + ".", suffix=".part", dir=destination.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            size, digest = fetch_to(f"{base}/models/{published_name(meta, destination.suffix)}", stream,
                                    meta["size"], timeout)
        if size != meta["size"] or digest != meta["sha256"]:
            raise ModelDownloadError(f"downloaded model does not match its metadata (size {size} vs {meta['size']},"
                                     f" sha256 {digest[:12]}… vs {meta['sha256'][:12]}…)")
        os.chmod(temporary, installed_mode(destination))
        os.replace(temporary, destination)
    finally:
        Path(temporary).unlink(missing_ok=True)
    metadata_path(destination).write_text(json.dumps(meta, indent=2))


def remove_cut_short(destination: Path) -> None:
    """Delete the downloads of `destination` that a power cut or a kill left (<name>.*.part, up to a model's size
    each): those nothing has written to for STALE_PART_S — a download under way writes all the time."""
    for part in destination.parent.glob(f"{glob.escape(destination.name)}.*.part"):
        try:
            if time.time() - part.stat().st_mtime > STALE_PART_S:
                part.unlink()
                log.info("removed %s, a model download cut short", part.name)
        except OSError as exc:              # gone meanwhile, or not ours to remove: the download goes on
            log.debug("cannot remove %s: %s", part, exc)


def installed_mode(destination: Path) -> int:
    """The permissions a model installed at `destination` gets: those of the file it replaces, else rw-r--r-- (a
    download is made private to its writer: a model a root cron job installed was unreadable to the watcher)."""
    try:
        return stat.S_IMODE(destination.stat().st_mode)
    except FileNotFoundError:
        return 0o644


def metadata_path(model_file: Path) -> Path:
    """Where a downloaded model's publication metadata is kept: `<file>.json` beside it."""
    return model_file.with_name(model_file.name + ".json")


def published_name(meta: dict, suffix: str) -> str:
    """The published file's name under models/: the one its metadata names, else the latest copy."""
    return published_file(meta) or f"{Path(MODEL_PREFIX).name}{suffix}"


def latest_model_info(base: str, timeout: float) -> dict:
    """The published model's metadata, checked to have a size and a sha256."""
    base = base.rstrip("/")
    if not base:
        raise ModelDownloadError("no central service configured (guAlta_URL or guAlta_model_url) to download the "
                                 "model from")
    where = f"{without_credentials(base)}/{MODEL_META}"           # as messages show it
    try:
        response = requests.get(f"{base}/{MODEL_META}", timeout=timeout)
    except requests.RequestException as exc:
        raise ModelDownloadError(f"cannot reach {where}: {type(exc).__name__}") from None
    if response.status_code == 404:
        raise NoModelPublished(f"{where} answered HTTP 404")
    if response.status_code == 403 and "<Code>AccessDenied</Code>" in response.text:
        raise ModelDownloadError(f"{where} answered HTTP 403 AccessDenied: no model published there yet "
                                 "(a public bucket refuses a key it does not hold so), or the bucket refuses public "
                                 "reads (README \"Deploy to AWS\")")
    if response.status_code != 200:
        raise ModelDownloadError(f"{where} answered HTTP {response.status_code}: {response.text[:200]}")
    try:
        meta = response.json()
    except ValueError:
        raise ModelDownloadError(f"{where} did not answer JSON") from None
    if not isinstance(meta, dict) or type(meta.get("size")) is not int or meta["size"] <= 0 \
            or not isinstance(meta.get("sha256"), str) or len(meta["sha256"]) != 64:
        raise ModelDownloadError(f"{where}: metadata lacks a valid size and sha256")
    return meta


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_to(address: str, stream, expected_size: int, timeout: float) -> tuple[int, str]:
    """Stream a download into `stream`; returns (bytes, sha256 hex). Stops past the expected size."""
    digest, size, shown = hashlib.sha256(), 0, without_credentials(address)
    try:
        with requests.get(address, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise ModelDownloadError(f"{shown} answered HTTP {response.status_code}")
            for chunk in response.iter_content(1 << 20):
                size += len(chunk)
                if size > expected_size:
                    raise ModelDownloadError(f"{shown} sent more than the published {expected_size} bytes")
                digest.update(chunk)
                stream.write(chunk)
    except requests.RequestException as exc:
        raise ModelDownloadError(f"download from {shown} failed: {type(exc).__name__}") from None
    return size, digest.hexdigest()
