"""guAlta operator CLI.

    python guAlta.py demo [--out demo_output] [--frames 600] [--seed 2045] [--model models/guAlta.onnx] [--workers W]
    python guAlta.py serve [--host 127.0.0.1] [--port 8765] [--store DIR|s3://BUCKET] [--site-at 0900|off] [--config F]
    python guAlta.py site [--store DIR|s3://BUCKET] [--day YYYYMMDD] [--config F]
    python guAlta.py batch [--folder NIGHT_DIR | --catch-up DAYS] [--scores OUT.csv|DIR/] [--no-upload] [...]
    python guAlta.py realtime [--scores DIR] [--no-upload] [...]
    python guAlta.py flush [...]
    python guAlta.py mask [--folder NIGHT_DIR] [--out MASK.png] [--replace] [...]

Every command but demo reads guAltaConfig.py (else guAltaConfig.example.py; or --config FILE); every client
setting also has a GUALTA_* variable and a flag (`[...]` above; see `python guAlta.py batch --help`); serve and site
read guAlta_store (GUALTA_STORE), guAlta_site_time (GUALTA_SITE_TIME) and guAlta_observatories.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class CommandError(Exception):
    """What stops a command, said in one line (`guAlta <command>: <message>`, exit status 1)."""


def cmd_demo(args: argparse.Namespace) -> None:
    from gualta.demo import SHIPPED_MODEL, run_demo

    run_demo(args.out, frames=args.frames, seed=args.seed, workers=args.workers, model=args.model or SHIPPED_MODEL)


def demo_failures() -> tuple[type[Exception], ...]:
    """The errors demo says in one line, exit status 1 (imported once one is raised: the start stays light)."""
    from gualta.client_errors import ClientError
    from gualta.demo import DemoError

    return DemoError, ClientError


def service_settings(args: argparse.Namespace):
    """The service's settings (file, then environment) and the store, --store winning."""
    from gualta.config import load_service_settings

    settings = load_service_settings(args.config)
    return settings, args.store or settings.store


def client_settings(args: argparse.Namespace):
    """The client's settings (file, environment, flags)."""
    from gualta.config import settings_from_args

    return settings_from_args(args)


def cmd_serve(args: argparse.Namespace) -> None:
    from gualta.server import serve

    timestamped_logging()
    settings, store = service_settings(args)
    site_at = args.site_at or settings.site_time
    serve(args.host, args.port, store, None if site_at == "off" else site_at, settings.observatories)


def cmd_site(args: argparse.Namespace) -> None:
    import json
    import os
    from datetime import datetime, timezone

    from gualta.cli import ConsoleLines
    from gualta.server import build_page
    from gualta.site import check_page_night
    from gualta.store import check_store_folder

    settings, store = service_settings(args)
    check_store_folder(store)
    try:
        day = args.day if args.day is None else check_page_night(args.day, datetime.now(timezone.utc), os.environ)
    except ValueError as exc:
        raise CommandError(f"--day {args.day}: {exc}") from None
    ConsoleLines()(json.dumps(build_page(store, day, settings.observatories)))   # stdout full: a warning


def site_failures() -> tuple[type[Exception], ...]:
    """The errors site says in one line, exit status 1."""
    from gualta.service_env import ServiceConfigError          # GUALTA_TIMEZONE, the observatories
    from gualta.store import StoreError

    return ServiceConfigError, StoreError


def timestamped_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_batch(args: argparse.Namespace) -> int:
    from gualta.detect import run_nights

    timestamped_logging()
    return run_nights(client_settings(args), args.folder, args.scores, args.catch_up, upload=not args.no_upload,
                      model_path=args.model)


def cmd_realtime(args: argparse.Namespace) -> None:
    from gualta.realtime import run_realtime

    timestamped_logging()
    run_realtime(client_settings(args), upload=not args.no_upload, model_path=args.model, scores=args.scores,
                 say_last=args.last_words.append)


def cmd_mask(args: argparse.Namespace) -> None:
    from gualta.cli import ConsoleLines
    from gualta.frames import write_mask

    ConsoleLines()(write_mask(client_settings(args), args.folder, args.out, args.replace))   # stdout full: a warning


def client_failures() -> tuple[type[Exception], ...]:
    """The errors batch, realtime and flush say in one line, exit status 1."""
    from gualta.client_errors import ClientError
    from gualta.report import OutboxError

    return ClientError, OutboxError


def cmd_flush(args: argparse.Namespace) -> int:
    from gualta.report import flush_outbox

    timestamped_logging()
    return flush_outbox(client_settings(args))


def no_failures() -> tuple[type[Exception], ...]:
    return ()


def build_parser() -> argparse.ArgumentParser:
    from gualta.cli import frame_count, non_negative_int, port
    from gualta.config import CONFIG_HELP

    parser = argparse.ArgumentParser(prog="guAlta.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="the whole product on this machine: simulated night → service → "
                                            "batch with uploads → daily page → comparison with ground truth")
    demo.add_argument("--out", type=Path, default=Path("demo_output"),
                      help="output folder: new, empty or an earlier demo's, replaced on every run "
                           "(default: %(default)s)")
    demo.add_argument("--frames", type=frame_count, default=600,
                      help="frames to simulate, 30 s apart from 20:00 (default: %(default)s)")
    demo.add_argument("--seed", type=non_negative_int, default=2045,
                      help="simulator seed of the night (default: %(default)s)")
    demo.add_argument("--model", type=Path, help="model file (ONNX or pkl; default: the shipped models/guAlta.onnx)")
    demo.add_argument("--workers", type=int, help="render processes (default: CPU count, ≤ 8)")
    demo.set_defaults(run=cmd_demo, failures=demo_failures)
    serve = commands.add_parser("serve", help="run the central service on this machine (ingest, pages, model)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=port, default=8765, help="port, 0: any free port (default: %(default)s)")
    serve.add_argument("--store", help="store folder or s3://bucket[/prefix] (default: guAlta_store, GUALTA_STORE)")
    serve.add_argument("--site-at", type=page_time,
                       help="daily page time HHMM (local), or 'off' (default: guAlta_site_time)")
    serve.add_argument("--config", type=Path, help=CONFIG_HELP)
    serve.set_defaults(run=cmd_serve, failures=no_failures)       # serve says its own failures
    site = commands.add_parser("site", help="build a night's daily page in the store now")
    site.add_argument("--store", help="store folder or s3://bucket[/prefix] (default: guAlta_store, GUALTA_STORE)")
    site.add_argument("--config", type=Path, help=CONFIG_HELP)
    site.add_argument("--day", help="night YYYYMMDD (default: the night that ended last, as the schedule builds it: "
                                "failed Telegram posts sent again first, out-of-date pages rebuilt)")
    site.set_defaults(run=cmd_site, failures=site_failures)
    add_client_commands(commands)
    return parser


def page_time(text: str) -> str:
    """argparse type: 'off' or a local time HHMM / HH:MM (as HHMM)."""
    from gualta import config

    try:
        return config.page_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_client_commands(commands) -> None:
    """batch, realtime, mask and flush: the inference client."""
    from gualta.cli import days
    from gualta.config import add_setting_flags

    batch = commands.add_parser("batch", help="score a whole night, write its scores CSV, report detections")
    batch.add_argument("--folder", type=Path, help="night folder YYYYMMDD (default: the latest under "
                                                   "guAlta_main_folder)")
    batch.add_argument("--scores", help="write the scores CSV here (file,score,label,detection,...); a folder "
                       "(existing, or ending in / or \\) gets one CSV per night, FOLDER/YYYYMMDD.csv")
    batch.add_argument("--catch-up", type=days, default=0, metavar="DAYS",
                       help="first score the nights of the DAYS before the latest that have no CSV in --scores DIR/ "
                            "yet (the machine was off, a run failed), oldest first")
    batch.add_argument("--no-upload", action="store_true",
                       help="report nothing (no outbox; only a missing configured model is downloaded)")
    add_setting_flags(batch)
    batch.set_defaults(run=cmd_batch, failures=client_failures)
    realtime = commands.add_parser("realtime", help="watch the newest night and report detections as they come")
    realtime.add_argument("--no-upload", action="store_true", help="score and record, report nothing")
    realtime.add_argument("--scores", metavar="DIR", help="when a night ends, write its scores CSV as DIR/YYYYMMDD.csv "
                          "(the batch run's columns; DIR is made if missing)")
    add_setting_flags(realtime)
    realtime.set_defaults(run=cmd_realtime, failures=client_failures)
    mask = commands.add_parser("mask", help="draw a mask from a night's frames: the sky white, the rest black "
                                            "(guAlta_mask)")
    mask.add_argument("--folder", type=Path, help="night folder YYYYMMDD (default: the latest under "
                                                  "guAlta_main_folder)")
    mask.add_argument("--out", help="the mask file to write, .png (default: guAlta_mask if set, else "
                                    "guAlta_mask.png here)")
    mask.add_argument("--replace", action="store_true", help="write over an existing mask file")
    add_setting_flags(mask)
    mask.set_defaults(run=cmd_mask, failures=client_failures)
    flush = commands.add_parser("flush", help="deliver the reports waiting in the outbox now")
    add_setting_flags(flush)
    flush.set_defaults(run=cmd_flush, failures=client_failures)


def main(argv: list[str] | None = None) -> int:
    """Run the command; its exit status: 0, or 1 when it says so (batch: an incomplete CSV, a night not scored,
    reports refused or rejected; flush: reports still pending), 1 with one line for a failure it names (`failures`,
    CommandError), 2 for invalid settings (every problem listed) or options that cannot go together, 130 for
    Ctrl-C."""
    from gualta.cli import ConsoleLines, tolerant_console

    tolerant_console()
    args = build_parser().parse_args(argv)
    args.last_words = []                            # printed after any failure line: the watcher's closing line
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:                       # Ctrl-C: one line, no traceback (realtime and serve stop cleanly)
        print(f"guAlta {args.command}: interrupted; what it wrote and queued so far is kept: run it again to finish",
              file=sys.stderr)
        return 130
    except Exception as exc:
        status = exit_status(exc, args.failures())
        if status is None:                          # not a failure a command names: a bug, with its traceback
            raise
        print(f"guAlta {args.command}: {exc}", file=sys.stderr)
        return status
    finally:
        say = ConsoleLines()                        # stdout on a full disk: a warning, not a second traceback
        for line in args.last_words:
            say(line)


def exit_status(exc: Exception, failures: tuple[type[Exception], ...]) -> int | None:
    """2 for invalid settings (the client's, the service's GUALTA_* variables) or options that cannot go together, 1
    for a failure the command names or a secret that could not be read, None for anything else."""
    from gualta.client_errors import UsageError
    from gualta.config import ConfigError
    from gualta.service_env import SecretUnavailable, ServiceConfigError

    if isinstance(exc, SecretUnavailable):          # it may read on a later try: a supervisor restarts on 1
        return 1
    if isinstance(exc, (ConfigError, ServiceConfigError, UsageError)):
        return 2
    return 1 if isinstance(exc, (CommandError, *failures)) else None


if __name__ == "__main__":
    sys.exit(main())
