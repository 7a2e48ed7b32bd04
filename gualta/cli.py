"""What the package's command-line doors share: run the chosen subcommand, log to stderr, exit 2 on a known error;
the argparse types of their options."""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from datetime import datetime
from pathlib import Path

from gualta import allsky

log = logging.getLogger(__name__)

MAX_RATE = 10.0         # `event_rates`: events a frame: more is no night sky (and NaN or infinity no rate)


def run_subcommand(parser: argparse.ArgumentParser, argv: list[str] | None, errors: tuple[type[Exception], ...]) -> int:
    """Parse argv, run the subcommand's `run(args)` with INFO logs on stderr (kept clear of progress bars); one of
    `errors`, or a file that cannot be read or written (OSError), exits 2 with '<prog> <command>: error: <message>'."""
    from tqdm.contrib.logging import logging_redirect_tqdm     # loads tqdm.auto: a notebook without ipywidgets warns

    tolerant_console()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        with logging_redirect_tqdm():
            args.run(args)
    except (*errors, OSError) as exc:
        parser.exit(2, f"{parser.prog} {args.command}: error: {error_text(exc)}\n")
    except KeyboardInterrupt:                       # Ctrl-C: one line, no traceback
        parser.exit(130, f"{parser.prog} {args.command}: interrupted; what it wrote so far is left as it is\n")
    return 0


def ignore_interrupt() -> None:
    """A worker process's initializer: Ctrl-C reaches the whole process group, and a worker it stopped printed its
    own traceback; the parent alone stops, with one line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def tolerant_console() -> None:
    """Write what stdout and stderr cannot encode as backslash escapes: a Latin-1 locale, Windows output redirected to
    a file (cp1252) or a folder name that is not UTF-8 made a print of '→' or 'Иван' crash the command. A stream closed
    at start (`2>&-`, Windows' pythonw) is opened on the null device (`open_if_closed`)."""
    for number, name in ((1, "stdout"), (2, "stderr")):
        open_if_closed(number, name)
        stream = getattr(sys, name)
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def open_if_closed(number: int, name: str) -> None:
    """Make the standard stream `name` (descriptor `number`) write to the null device if it was closed: a progress
    bar or log line stopped the command on a `sys.stderr` that is None, and the next file it opened took descriptor 2,
    where a library's warning would have been written into it."""
    if getattr(sys, name) is not None:
        return
    try:
        os.fstat(number)
    except OSError:                             # the descriptor itself is free: hold it with the null device
        null = os.open(os.devnull, os.O_WRONLY)
        if null != number:
            os.dup2(null, number)
            os.close(null)
    setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))


class ConsoleLines:
    """`say(line)` for a run's lines on stdout (`write`: print, tqdm.write): the first that cannot be written (a full
    disk, a terminal gone: OSError) is logged once as a warning and the lines after it, of any `ConsoleLines`, are
    dropped, so the night is still scored and reported to the end."""
    failed_stdout = None                        # the sys.stdout that could not be written, for every instance

    def __init__(self, write=print):
        self.write = write

    def __call__(self, line: str) -> None:
        if sys.stdout is None or sys.stdout is ConsoleLines.failed_stdout:
            return
        try:
            self.write(line)
            sys.stdout.flush()                  # fails here, not at exit after the last line (exit status 120)
        except OSError as exc:
            ConsoleLines.failed_stdout = sys.stdout
            log.warning("cannot write to the console (%s): its lines are left out from here on", error_text(exc))


def error_text(exc: Exception) -> str:
    """'No such file or directory: data/index.csv' for a file error, else the exception's own message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


def counted(count: int, noun: str) -> str:
    """'1 night', '3 nights': a count and its noun, plural where it is not one."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def unit_interval(text: str) -> float:
    """argparse type: a number from 0 to 1 (a score threshold: 0.85, not 85)."""
    value = finite_number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1 (a score, such as 0.85): {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    return integer_from(text, 1, "must be at least 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer ≥ 0 (a random seed, a count that may be none)."""
    return integer_from(text, 0, "must be 0 or more")


def days(text: str) -> int:
    """argparse type: a number of days, 0 or more."""
    return integer_from(text, 0, "not a number of days")


def frame_count(text: str) -> int:
    """argparse type: a number of frames, 1 or more (0 would simulate a whole night)."""
    return integer_from(text, 1, "not a number of frames (1 or more)")


def port(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    return integer_from(text, 0, "not a port (0–65535)", most=65535)


def integer_from(text: str, least: int, says: str, most: float = math.inf) -> int:
    """An integer written in digits (a minus sign allowed), from `least` to `most`; else ArgumentTypeError:
    'not a whole number: <text>' for other text ('x', '2.5', '1e3'), '<says>: <text>' for one out of range."""
    if not text.removeprefix("-").isdecimal():
        raise argparse.ArgumentTypeError(f"not a whole number: {text}")
    if not least <= int(text) <= most:
        raise argparse.ArgumentTypeError(f"{says}: {text}")
    return int(text)


def finite_number(text: str) -> float:
    """A number from the command line: ArgumentTypeError for text that is none, or nan or ±inf."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text}")
    return value


def positive_number(text: str) -> float:
    """argparse type: a finite number > 0 (a learning rate)."""
    value = finite_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
    return value


def non_negative_number(text: str) -> float:
    """argparse type: a finite number ≥ 0 (a least signal-to-noise ratio or length)."""
    value = finite_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def folder(text: str) -> Path:
    """argparse type: an existing folder."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text}")
    return path


def output_folder(text: str) -> Path:
    """argparse type: a folder to write into, there or to be made: not a file, nor under one (it was found only
    when the first file was written, after every night had been worked through)."""
    path = Path(text)
    try:
        there = next((p for p in (path, *path.parents) if p.exists()), None)
    except OSError:                 # cannot be looked into (no permission): writing says why
        return path
    if there is not None and not there.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text}" + ("" if there == path else f" ({there} is a file)"))
    return path


def night_date(text: str) -> str:
    """argparse type: a YYYYMMDD date (`allsky.is_night_name`)."""
    if not allsky.is_night_name(text):
        raise argparse.ArgumentTypeError(f"not a YYYYMMDD date: {text}")
    return text


def night_list(text: str) -> list[str]:
    """argparse type: comma-separated YYYYMMDD dates (a trailing comma or spaces allowed), one at least: an empty
    value (an unset shell variable) named no night, and `prepare --test-nights ""` drew a random split unsaid."""
    nights = [night_date(part.strip()) for part in text.split(",") if part.strip()]
    if not nights:
        raise argparse.ArgumentTypeError(f"no YYYYMMDD date named: {text}")
    return nights


def clock_time(text: str) -> str:
    """argparse type: HH:MM."""
    try:
        datetime.strptime(text, "%H:%M")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an HH:MM time: {text}") from None
    return text


def event_rates(text: str):
    """argparse type: KIND=RATE pairs overriding gualta.simulate.Rates, each from 0 to MAX_RATE."""
    from dataclasses import fields

    from gualta.simulate import Rates

    known = {f.name for f in fields(Rates)}
    values = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, rate = part.partition("=")
        if kind not in known:
            raise argparse.ArgumentTypeError(f"unknown event {kind!r}; choose from {', '.join(sorted(known))}")
        try:
            values[kind] = float(rate)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a rate: {part}") from None
        if not 0 <= values[kind] <= MAX_RATE:
            raise argparse.ArgumentTypeError(f"rate must be from 0 to {MAX_RATE:g} (events a frame): {part}")
    return Rates(**values)
