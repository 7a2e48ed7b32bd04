"""Real time: how long the watcher takes to decide frames that were already in the night folder when it started (a
restart mid-night, a camera that began before the window), against a batch run of the same frames with the same
model (the floor: scoring alone). Figures are printed, never asserted.

    python bench/realtime_backlog.py [--night NIGHT_DIR] [--frames 60] [--sleep 10] [--threads 2]

Without --night it simulates one. The watcher runs as `guAlta.py realtime --no-upload` would, with the configured
model and `guAlta_sleep_between_imgs` = --sleep (the default setting is 10 s).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import allsky, simulate  # noqa: E402
from gualta.config import load_settings  # noqa: E402
from gualta.detect import run_batch  # noqa: E402
from gualta.model_update import open_model  # noqa: E402
from gualta.realtime import Watcher  # noqa: E402
from gualta.report import Outbox  # noqa: E402


def decided(outbox_path: Path, night: str) -> int:
    """Frames of `night` the watcher has decided so far."""
    with Outbox(outbox_path) as outbox:
        return len(outbox.night_rows(night))


TIMEOUT_S = 1800         # a watcher that has not decided the night by then is stuck, not slow


def watcher_seconds(settings, model, night: str, frames: int) -> float:
    """Seconds from the watcher's start until it has decided all but the last frame (which may wait for its
    successor, as the satellite check asks)."""
    stop = threading.Event()
    watcher = Watcher(settings, model, stop, say=lambda line: None)
    thread = threading.Thread(target=watcher.run, daemon=True)
    start = time.monotonic()
    thread.start()
    try:
        while decided(settings.outbox, night) < frames - 1:
            if not thread.is_alive():
                sys.exit("the watcher stopped before deciding the night (see its log above)")
            if time.monotonic() - start > TIMEOUT_S:
                sys.exit(f"the watcher decided {decided(settings.outbox, night)} of {frames - 1} frames in "
                         f"{TIMEOUT_S} s: stopped waiting")
            time.sleep(0.2)
        return time.monotonic() - start
    finally:
        stop.set()
        thread.join(60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--night", type=Path, help="an AllSky night folder (default: simulate one)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--sleep", type=float, default=10.0, help="guAlta_sleep_between_imgs (s)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = args.night or simulate.simulate_night(work / "sim", "20211110", frames=args.frames, seed=2021,
                                                             progress=False)
        frames = allsky.list_frames(source)[: args.frames]
        folder = work / "images" / Path(source).name
        folder.mkdir(parents=True)
        for frame in frames:
            shutil.copy2(frame, folder / frame.name)
        settings = load_settings(overrides={"main_folder": str(work / "images"), "outbox": str(work / "outbox.db"),
                                            "start_time": "0000", "end_time": "0000", "threads": args.threads,
                                            "sleep_between_imgs": args.sleep})
        model = open_model(settings)
        start = time.monotonic()
        run_batch(settings, folder, upload=False, model=model, say=lambda line: None, progress=False)
        batch_s = time.monotonic() - start
        watch_s = watcher_seconds(settings, model, folder.name, len(frames))
    print(f"{len(frames)} frames already in the night folder, guAlta_sleep_between_imgs {args.sleep:g} s "
          f"(one run each: single timings, not medians)")
    print(f"  batch run (scoring alone)   {batch_s:7.1f} s")
    print(f"  watcher until decided       {watch_s:7.1f} s   ({watch_s / batch_s:.1f} × the batch run)")


if __name__ == "__main__":
    main()
