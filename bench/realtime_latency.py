"""Real time: seconds from a frame being complete in the night folder until its detection is accepted by the
service, with the camera writing frame after frame as it does, against scoring alone (a batch run of the same frames
with the same model, per frame). Figures are printed, never asserted.

    python bench/realtime_latency.py [--night NIGHT_DIR] [--frames 40] [--every 3] [--sleep 0.5] [--threads 2]

Without --night it simulates one. The service is `guAlta.py serve` on 127.0.0.1 with a local store; the watcher
runs as `guAlta.py realtime` would, with the configured model. A detection waits for its frame's successor (the
satellite check's next-frame test), so the figures include one camera interval (--every); the "beyond the next
frame" column takes it off, leaving the settle time a frame must hold its size (0.4 s), the watcher's sleep between
looks (--sleep), scoring and the upload.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gualta import allsky, simulate  # noqa: E402
from gualta.config import load_settings  # noqa: E402
from gualta.detect import run_batch  # noqa: E402
from gualta.model_update import open_model  # noqa: E402
from gualta.realtime import Watcher  # noqa: E402
from gualta.report import ApiClient, Outbox, Sender  # noqa: E402
from gualta.server import ChildServer  # noqa: E402

KEY = "bench-latency-key"
DRAIN_S = 120            # after the last frame: time for the last detections to be sent


def sent_detections(outbox_path: Path) -> dict[str, float]:
    """Frame name → Unix time its detection was accepted by the service."""
    with sqlite3.connect(outbox_path) as db:
        rows = db.execute("SELECT key, done FROM outbox WHERE key LIKE 'detection/%' AND state = 'sent'").fetchall()
    return {allsky.frame_name(datetime.strptime(key.rsplit("/", 1)[1], allsky.TIME_FORMAT)): done
            for key, done in rows}


def write_like_a_camera(frames: list[Path], folder: Path, every_s: float) -> dict[str, float]:
    """Copy frames into the night folder one by one, every_s apart; frame name → Unix time it was complete."""
    completed = {}
    for frame in frames:
        (folder / frame.name).write_bytes(frame.read_bytes())
        completed[frame.name] = time.time()
        time.sleep(every_s)
    return completed


def latencies(settings, model, frames: list[Path], folder: Path, every_s: float) -> list[float]:
    """Seconds from each detected frame's completion to its detection's acceptance."""
    sender = Sender(settings.outbox, ApiClient(settings.url, settings.api_key))
    stop = threading.Event()
    watcher = Watcher(settings, model, stop, sender, say=lambda line: None)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        completed = write_like_a_camera(frames, folder, every_s)
        deadline = time.monotonic() + DRAIN_S
        with Outbox(settings.outbox) as outbox:
            while (len(outbox.night_rows(folder.name)) < len(frames) - 1 or outbox.pending()) \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        stop.set()
        thread.join(60)
        sender.close(timeout=10)
    sent = sent_detections(settings.outbox)
    return [sent[name] - completed[name] for name in sent if name in completed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--night", type=Path, help="an AllSky night folder (default: simulate one)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between the camera's frames")
    parser.add_argument("--sleep", type=float, default=0.5, help="guAlta_sleep_between_imgs (s)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = args.night or simulate.simulate_night(work / "sim", "20211110", frames=args.frames, seed=2024,
                                                       rates=simulate.Rates(meteor=0.4), progress=False)
        frames = allsky.list_frames(source)[: args.frames]
        batch_folder = work / "batch" / Path(source).name
        batch_folder.mkdir(parents=True)
        for frame in frames:
            shutil.copy2(frame, batch_folder / frame.name)
        overrides = {"start_time": "0000", "end_time": "0000", "threads": args.threads,
                     "sleep_between_imgs": args.sleep}
        batch = load_settings(overrides={**overrides, "main_folder": str(work / "batch"),
                                         "outbox": str(work / "batch.db")})
        model = open_model(batch)
        start = time.monotonic()
        run_batch(batch, batch_folder, upload=False, model=model, say=lambda line: None, progress=False)
        per_frame_s = (time.monotonic() - start) / len(frames)

        live_folder = work / "images" / Path(source).name
        live_folder.mkdir(parents=True)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("GUALTA_")},
               "GUALTA_API_KEYS": f"obs01:{KEY}"}
        with ChildServer(work / "store", env) as child:
            live = load_settings(overrides={**overrides, "main_folder": str(work / "images"),
                                            "outbox": str(work / "live.db"), "url": child.url, "api_key": KEY,
                                            "obs_id": "obs01"})
            seconds = latencies(live, model, frames, live_folder, args.every)
    if not seconds:
        sys.exit("no detection was sent: try more frames (--frames) or another night (--night)")
    median, worst = statistics.median(seconds), max(seconds)
    print(f"{len(frames)} frames written {args.every:g} s apart, guAlta_sleep_between_imgs {args.sleep:g} s, "
          f"{len(seconds)} detections sent")
    print(f"  scoring alone (batch run)      {per_frame_s:6.2f} s a frame (one batch run: its mean, not a median)")
    print(f"  frame complete → sent          median {median:6.2f} s   max {worst:6.2f} s")
    print(f"  beyond the next frame          median {median - args.every:6.2f} s   max {worst - args.every:6.2f} s"
          f"   ({(median - args.every) / per_frame_s:.1f} × scoring alone, median)")


if __name__ == "__main__":
    main()
