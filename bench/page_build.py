"""The scheduled daily page on an S3 store: how many requests it makes and how long it takes as the network grows.

    python bench/page_build.py [--observatories 10] [--detections 100] [--latency-ms 20] [--repeats 3]

Starts moto's S3 server on 127.0.0.1, fills a night with observatories × detections (records, images, start and end
logs, all posted to Telegram already) plus the pages of the seven nights before, then runs the generateWebsite
handler's schedule event as the Lambda does (Telegram configured, so failed posts are looked for first). Each S3
request waits --latency-ms before it is sent (20 ms: an assumed time for a small S3 request from Lambda; moto on this
machine answers in a few ms). Prints the requests by operation and the median wall time; figures to read, never
asserted.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gualta import site, store  # noqa: E402
from gualta.cli import positive_int  # noqa: E402

NIGHT = "20260920"
BUCKET = "gualta-bench"


def fill(target: store.Store, observatories: int, detections: int) -> None:
    """The night's detections and logs, every post already sent; the seven nights before with their pages."""
    received = datetime(2026, 9, 21, 4, 0, tzinfo=timezone.utc).isoformat(timespec="seconds")
    for o in range(observatories):
        obs_id = f"obs{o + 1:02d}"
        for d in range(detections):
            stamp = datetime(2026, 9, 20, 20, 0) + timedelta(seconds=30 * (d * 7 + o))
            frame = stamp.strftime("%Y%m%d%H%M%S")
            record = {"obs_id": obs_id, "id": frame, "date": stamp.strftime("%Y-%m-%d"),
                      "time": stamp.strftime("%H:%M:%S"), "score": 0.93, "telegram": True, "processed": received,
                      "folder": NIGHT, "img": store.image_key(NIGHT, obs_id, frame), "received": received,
                      "telegram_status": "sent", "telegram_message_id": 1000 + d}
            store.write_json(target, store.detection_key(NIGHT, obs_id, frame), record)
            target.put(store.image_key(NIGHT, obs_id, frame), b"\xff\xd8 jpeg \xff\xd9")
        for kind in ("start", "end"):
            store.write_json(target, store.log_key(NIGHT, obs_id, kind),
                             {"log": kind, "obs_id": obs_id, "folder": NIGHT, "processed": received,
                              "received": received, "telegram_status": "sent", **({"total": 1440} if kind == "end"
                                                                                  else {})})
    for back in range(1, 8):
        earlier = (datetime(2026, 9, 20) - timedelta(days=back)).strftime("%Y%m%d")
        site.build_day(target, earlier, {})


def count_requests(client, latency: dict) -> Counter:
    """Count the client's S3 requests by operation, each delayed by latency["s"] before it is sent."""
    counts: Counter = Counter()
    lock = threading.Lock()

    def before_send(request, **_):
        time.sleep(latency["s"])

    def before_call(model, **_):
        with lock:
            counts[model.name] += 1

    client.meta.events.register("before-send.s3", before_send)
    client.meta.events.register("before-call.s3", before_call)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--observatories", type=positive_int, default=10)
    parser.add_argument("--detections", type=positive_int, default=100, help="detections of each observatory")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)             # moto's request lines
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = store.s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        latency = {"s": 0.0}
        counts = count_requests(client, latency)
        now = datetime(2026, 9, 21, 9, 0, tzinfo=timezone.utc)
        seconds, runs = [], []
        for run in range(args.repeats):         # each run on a night of its own, as the day's one run finds it
            env = {"GUALTA_STORE": f"s3://{BUCKET}/run{run}", "GUALTA_S3_ENDPOINT": endpoint,
                   "GUALTA_TIMEZONE": "UTC", "GUALTA_TELEGRAM_CHAT": "@bench", "GUALTA_TELEGRAM_TOKEN": "123:bench",
                   "GUALTA_TELEGRAM_API": "http://127.0.0.1:9/bot"}        # never reached: every post was sent
            latency["s"] = 0.0
            fill(store.store_from_env(env), args.observatories, args.detections)
            latency["s"] = args.latency_ms / 1000
            counts.clear()
            started = time.perf_counter()
            summary = site.handle({"source": "aws.scheduler"}, env, now)
            seconds.append(time.perf_counter() - started)
            runs.append(Counter(counts))
            assert summary["night"] == NIGHT and summary["detections"] == args.observatories * args.detections
    finally:
        moto.stop()
    total = args.observatories * args.detections
    print(f"daily page, schedule event: {args.observatories} observatories × {args.detections} detections "
          f"({total}), S3 latency {args.latency_ms:g} ms a request, median of {args.repeats} runs, each on a "
          "freshly filled night")
    requests = [sum(run.values()) for run in runs]
    print(f"  requests {requests[0]}: " + ", ".join(f"{name} {n}" for name, n in runs[0].most_common())
          + ("" if len(set(requests)) == 1 else f" (first run; all runs: {', '.join(map(str, requests))})"))
    print(f"  wall time {statistics.median(seconds):.2f} s (runs: {', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
