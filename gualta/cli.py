"""What the package's command-line doors share: run the chosen subcommand, log to stderr, exit 2 on a known error."""
from __future__ import annotations

import argparse
import logging
import math
import sys


def run_subcommand(parser: argparse.ArgumentParser, argv: list[str] | None, errors: tuple[type[Exception], ...]) -> int:
    """Parse argv, run the subcommand's `run(args)` with INFO logs on stderr (kept clear of progress bars); one of
    `errors`, or a file that cannot be read or written (OSError), exits 2 with '<prog> <command>: error: <message>'."""
    from tqdm.contrib.logging import logging_redirect_tqdm     # loads tqdm.auto: a notebook without ipywidgets warns

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


def error_text(exc: Exception) -> str:
    """'No such file or directory: data/index.csv' for a file error, else the exception's own message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


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


def integer_from(text: str, least: int, says: str) -> int:
    """An integer from the command line, at least `least` (else ArgumentTypeError: '<says>: <text>')."""
    value = int(text)
    if value < least:
        raise argparse.ArgumentTypeError(f"{says}: {text}")
    return value


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
