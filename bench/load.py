"""Load: many observatories posting detections at once to the embedded service; everything stored exactly once.

    python bench/load.py [--observatories 10] [--detections 100] [--resend 0.1] [--json]
    python bench/load.py --url http://127.0.0.1:8765 --keys obs01:KEY,... [--store DIR] ...

Without --url it starts `python guAlta.py serve` on a temporary store. One thread per observatory posts its
detections (re-sending a fraction of them, as a client retrying would) over a keep-alive connection; afterwards the
store must hold exactly one record and one image per detection. Prints requests/s and latency percentiles
(figures to read, never asserted), then builds that night's page and times it.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gualta import payload, server, store  # noqa: E402
from gualta.cli import positive_int, unit_interval  # noqa: E402

NIGHT = "20260920"


def images(count: int = 8) -> list[bytes]:
    """A few distinct 448×224 gray JPEGs (noise plus a streak) to spread over the detections."""
    rng = np.random.default_rng(7)
    result = []
    for i in range(count):
        image = rng.normal(20, 4, (224, 448)).clip(0, 255).astype(np.uint8)
        rows = np.linspace(30 + 10 * i, 190, 160).astype(int)
        image[rows, np.arange(40, 200)] = 230
        image[rows, np.arange(264, 424)] = 255
        result.append(payload.encode_image(image))
    return result


def plan(obs_ids: list[str], per_obs: int, resend: float, seed: int = 1) -> dict[str, list[dict]]:
    """Per observatory, the payloads to send in order (re-sends included, at random later positions)."""
    rng = random.Random(seed)
    pictures = images()
    start = datetime.strptime(NIGHT + "200000", "%Y%m%d%H%M%S")
    result = {}
    for o, obs_id in enumerate(obs_ids):
        first = [payload.build_detection((start + timedelta(seconds=30 * i + o)).strftime("%Y%m%d%H%M%S"),
                                         round(rng.uniform(0.85, 1.0), 3), obs_id, pictures[i % len(pictures)],
                                         telegram=False) for i in range(per_obs)]
        order = list(first)
        for body in rng.sample(first, int(round(resend * per_obs))):
            order.insert(rng.randint(order.index(body) + 1, len(order)), body)
        result[obs_id] = order
    return result


def post_all(url: str, key: str, bodies: list[dict], results: list) -> None:
    """One observatory's client: sequential posts over one keep-alive session."""
    with requests.Session() as session:
        for body in bodies:
            started = time.perf_counter()
            try:
                reply = session.post(f"{url}/uploadmeteor", json=body, headers={"x-api-key": key}, timeout=60)
                status, answer = reply.status_code, reply.json().get("status", "")
            except (requests.RequestException, ValueError) as exc:
                status, answer = 0, type(exc).__name__
            results.append((body["obs_id"], body["id"], status, answer, time.perf_counter() - started))


def run(url: str, keys: dict[str, str], per_obs: int, resend: float, root: Path | None) -> dict:
    work = plan(sorted(keys), per_obs, resend)
    results: list = []
    threads = [threading.Thread(target=post_all, args=(url, keys[obs], bodies, results)) for obs, bodies in
               work.items()]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies = np.array([r[4] for r in results]) * 1000
    stored = [(o, i) for o, i, status, answer, _ in results if status == 200 and answer == "stored"]
    summary = {"observatories": len(keys), "detections": len(keys) * per_obs, "requests": len(results),
               "resent": sum(len(b) for b in work.values()) - len(keys) * per_obs,
               "stored": len(stored), "unique_stored": len(set(stored)),
               "duplicates_answered": sum(1 for r in results if r[2] == 200 and r[3] == "duplicate"),
               "errors": sum(1 for r in results if r[2] != 200),
               "seconds": round(elapsed, 2), "requests_per_s": round(len(results) / elapsed, 1),
               "p50_ms": round(float(np.percentile(latencies, 50)), 1),
               "p99_ms": round(float(np.percentile(latencies, 99)), 1),
               "max_ms": round(float(latencies.max()), 1)}
    if root is not None:
        local = store.LocalStore(root)
        mine = {f"{o}_{b['id']}" for o, bodies in work.items() for b in bodies}
        records = [k for k in local.keys(f"detections/{NIGHT}/") if k.rsplit("/", 1)[1][:-5] in mine]
        pictures = [k for k in local.keys(f"imgs/{NIGHT}/") if k.rsplit("/", 1)[1][:-5] in mine]
        summary.update(records_in_store=len(records), images_in_store=len(pictures))
    page_started = time.perf_counter()
    page = requests.post(f"{url}/site?day={NIGHT}", headers={"x-api-key": next(iter(keys.values()))}, timeout=300)
    summary["page_status"] = page.status_code
    summary["page_seconds"] = round(time.perf_counter() - page_started, 2)
    return summary


def report(summary: dict) -> None:
    print(f"load: {summary['observatories']} observatories × {summary['detections'] // summary['observatories']} "
          f"detections, {summary['resent']} re-sent, {summary['requests']} requests in {summary['seconds']} s")
    print(f"  {summary['requests_per_s']} requests/s · latency p50 {summary['p50_ms']} ms · p99 "
          f"{summary['p99_ms']} ms · max {summary['max_ms']} ms")
    print(f"  stored {summary['stored']} (unique {summary['unique_stored']}), duplicates answered "
          f"{summary['duplicates_answered']}, errors {summary['errors']}")
    if "records_in_store" in summary:
        print(f"  store: {summary['records_in_store']} records, {summary['images_in_store']} images")
    print(f"  daily page with every detection: HTTP {summary['page_status']} in {summary['page_seconds']} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service (default: start one on a temporary store)")
    parser.add_argument("--keys", help="obs_id:key,... for --url")
    parser.add_argument("--store", type=Path, help="the --url service's store folder, to count what it holds")
    parser.add_argument("--observatories", type=positive_int, default=10)
    parser.add_argument("--detections", type=positive_int, default=100, help="per observatory")
    parser.add_argument("--resend", type=unit_interval, default=0.1, help="fraction re-sent (retries)")
    parser.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    args = parser.parse_args(argv)
    if args.url and not args.keys:
        parser.error("--url needs --keys obs_id:key,... (the service's observatories)")
    if args.url:
        keys = {obs: key for obs, _, key in (e.partition(":") for e in args.keys.split(","))}
        keys = dict(sorted(keys.items())[:args.observatories])
        summary = run(args.url.rstrip("/"), keys, args.detections, args.resend, args.store)
    else:
        keys = {f"obs{i:02d}": secrets.token_urlsafe(18) for i in range(1, args.observatories + 1)}
        with tempfile.TemporaryDirectory() as folder:
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("GUALTA_")},
                   "GUALTA_API_KEYS": ",".join(f"{o}:{k}" for o, k in keys.items())}
            with server.ChildServer(Path(folder) / "store", env) as child:
                summary = run(child.url, keys, args.detections, args.resend, Path(folder) / "store")
    report(summary)
    if args.json:
        print(json.dumps(summary))
    ok = summary["errors"] == 0 and summary["unique_stored"] == summary["stored"] == summary["detections"]
    ok = ok and summary.get("records_in_store", summary["detections"]) == summary["detections"]
    ok = ok and summary.get("page_status", 200) == 200
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
