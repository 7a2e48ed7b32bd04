"""The scores CSV: one row per frame of a night (`CSV_COLUMNS`, DESIGN.md's contract), written by the batch run and
the real-time watcher through `<name>.part` so that a CSV under its name holds a whole night; read back by tests,
tools and `--catch-up` (`scored_whole`)."""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from gualta import allsky
from gualta.client_errors import ClientError, NightError

log = logging.getLogger(__name__)

CSV_COLUMNS = ["file", "score", "label", "detection", "flag", "previous", "x1", "y1", "x2", "y2", "note"]
SCORES_HEADER = ["file", "score"]              # how every scores CSV this client wrote begins


class CsvRows:
    """The scores CSV, written row by row to `<name>.part` (flushed, so a crash keeps what was scored) and given its
    name once the night is scored to the end: a CSV under its name holds a whole night. The .part is locked while a
    run writes it. One that cannot be created, or whose .part another run is writing (two runs would mix their rows),
    is a ClientError; one that cannot be written further (a full disk) is logged once and left as it is, so that the
    night's scoring and reports go on (`failed` says why)."""

    def __init__(self, path: Path | None):
        self.path, self.stream, self.failed = path, None, ""
        if path is None:
            return
        self.partial = path.with_name(path.name + ".part")
        if path.exists() and not path.is_file():        # a device such as /dev/null would be replaced by the CSV
            raise ClientError(f"--scores {path} is not a regular file: name a CSV file or a folder (or leave "
                              f"--scores out to write none)")
        if path.exists() and not is_scores_csv(path):  # a slip of the keyboard: a frame, the model, the settings
            raise ClientError(f"--scores {path} is a file that is not a scores CSV, left as it is: name a new file, "
                              f"an earlier scores CSV or a folder")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.stream = self.open_partial()
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != self.partial else ""
            raise ClientError(f"cannot write the scores CSV {path}: {exc.strerror or exc}{where}") from exc
        self.writer = csv.DictWriter(self.stream, CSV_COLUMNS)
        self.writer.writeheader()
        self.finished = False

    def open_partial(self):
        """The .part for this run, locked: created, or taken over from a run cut short (no longer locked)."""
        try:
            stream = open(self.partial, "x", newline="", encoding="utf-8")
        except FileExistsError:
            stream = open(self.partial, "r+", newline="", encoding="utf-8")
        if not lock_exclusive(stream):
            stream.close()
            raise NightError(f"another run is writing the scores CSV {self.path} ({self.partial.name} is locked): "
                             f"run one at a time")
        try:
            stream.truncate(0)
        except OSError:          # not a file that can be cut (a device)
            pass
        return stream

    def write(self, row: dict) -> None:
        if self.stream is None:
            return
        try:
            self.writer.writerow(row)
            self.stream.flush()
        except OSError as exc:
            self.give_up(exc)

    def finish(self) -> None:
        """The night is scored: the CSV takes its name (unless it could not be written to the end) while its .part
        is still locked (but on Windows, where an open file cannot be renamed)."""
        if self.path is None or self.failed:
            self.close()
            return
        try:
            self.stream.flush()
            if os.name == "nt":
                self.close()
            if not self.failed:
                os.replace(self.partial, self.path)
                self.finished = True
        except OSError as exc:
            self.give_up(exc)
        self.close()

    def give_up(self, exc: OSError) -> None:
        if self.failed:                        # closing the stream after a failed write fails again: said once
            return
        self.failed = exc.strerror or str(exc)
        log.error("cannot write the scores CSV %s (%s): what was written is in %s; scoring and reports go on",
                  self.path, self.failed, self.partial.name)
        self.close()

    def close(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            try:
                stream.close()
            except OSError as exc:             # the last rows could not be written out
                self.give_up(exc)

    @property
    def where(self) -> Path | None:
        """Where the rows are: the CSV, or its .part while (or because) it is not whole."""
        return None if self.path is None else self.path if self.finished else self.partial


def is_scores_csv(path: Path) -> bool:
    """Whether a file is empty or starts as a scores CSV does (its header): one that may be written over."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            header = next(csv.reader(stream), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return header is None or header[:2] == SCORES_HEADER


def scores_file(scores: str | Path | None, night: str) -> Path | None:
    """Where the scores CSV goes: `scores` itself, or `<scores>/<night>.csv` when it names a folder (one that
    exists, or a name ending in a path separator)."""
    if not scores:
        return None
    return Path(scores) / f"{night}.csv" if names_a_folder(scores) else Path(scores)


def names_a_folder(scores: str | Path) -> bool:
    """Whether --scores names a folder: one that exists, or a name ending in a path separator."""
    return Path(scores).is_dir() or str(scores).endswith(tuple(sep for sep in ("/", os.sep, os.altsep) if sep))


def scored_whole(scores: Path, night: Path) -> bool:
    """Whether a scores CSV has a row for every frame its night had when it was written: a CSV under its name is
    whole since it is written to a .part first, but an older client wrote it under its name row by row, and a run
    it cut short left it half (frames the camera added afterwards, at dawn, are not asked for)."""
    try:
        written = scores.stat().st_mtime
        with open(scores, newline="", encoding="utf-8") as stream:
            scored = {row.get("file") for row in csv.DictReader(stream)}
        return all(frame.name in scored for frame in allsky.list_frames(night) if frame.stat().st_mtime <= written)
    except (OSError, UnicodeDecodeError, csv.Error):       # none, unreadable, or a night that cannot be listed
        return False


def lock_exclusive(stream, risk: str = "two runs writing it at once would mix their rows") -> bool:
    """Lock an open file for this process (advisory; released when it is closed); False if another holds it. Where
    files cannot be locked (some network shares) it goes on unlocked, warning of `risk`."""
    try:
        if os.name == "nt":
            import msvcrt
            msvcrt.locking(stream.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    except OSError as exc:
        log.warning("cannot lock %s (%s): %s", stream.name, exc.strerror or exc, risk)
    return True


def write_scores(path: Path, rows: list[dict]) -> bool:
    """Write a decided night's rows as its scores CSV at `path`, as a batch run does (through `<name>.part`);
    False (logged) when it could not be written whole."""
    try:
        csv_rows = CsvRows(path)
    except ClientError as exc:
        log.error("%s", exc)
        return False
    try:
        for row in rows:
            csv_rows.write(row)
        csv_rows.finish()
    finally:
        csv_rows.close()
    return csv_rows.finished


def read_scores(path: str | Path) -> list[dict]:
    """A scores CSV as a list of rows (strings), for tests and tools."""
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))
