"""Regenerate docs/site_screenshot.png: a daily page served by the embedded service, in headless Chromium.

    python docs/make_site_screenshot.py [--out docs/site_screenshot.png]

Simulates two observatories' nights, posts real payloads (simulated frame | thesis difference image) for their
meteors (one of them seen from both) and one satellite crossing to `python guAlta.py serve` on a temporary store, builds the page with POST /site
and screenshots it at 1280 px. The scores are illustrative (drawn at random), not a model's output, and so is the
image of obs02's view of the shared meteor (one of its own: the simulator renders each site's sky alone).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import secrets
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gualta import allsky, payload, preprocess, server, simulate  # noqa: E402

NIGHT = "20260916"
OBSERVATORIES = {"obs01": {"lat": 41.60, "lon": 1.84, "elevation_m": 700, "name": "Montseny", "tz": "Europe/Madrid"},
                 "obs02": {"lat": 40.42, "lon": -3.70, "elevation_m": 650, "name": "Madrid", "tz": "Europe/Madrid"}}


def detections_of(seed: int, meteors: int, satellite: bool) -> list[tuple[str, object, bool]]:
    """(frame id, 448×224 image, is a meteor) for a few meteor frames and, optionally, every frame of one satellite
    pass."""
    plan = simulate.plan_night(seed, datetime(2026, 9, 16, 20, 0), 1440, "clear",
                               simulate.Rates(meteor=0.05, fireball=0, satellite=0.02, plane=0, insect=0))
    renderer = simulate.NightRenderer(plan)
    frames = [e.frames[0] for e in plan.events if e.kind == "meteor" and e.peak_snr > 8 and e.frames[0] > 120]
    chosen = frames[:: max(1, len(frames) // meteors)][:meteors]
    if satellite:
        crossing = next(e for e in plan.events if e.kind == "satellite" and len(e.frames) >= 3 and e.frames[0] > 120)
        chosen += crossing.frames[:3]
    result = []
    for index in sorted(set(chosen)):
        previous, current = renderer.render(index - 1)[0], renderer.render(index)[0]
        difference = preprocess.difference_image(current, previous)
        pair = preprocess.side_by_side(preprocess.to_gray(current), difference)
        result.append((renderer.time_of(index).strftime(allsky.TIME_FORMAT), pair, index in frames))
    return result


def post(url: str, key: str, body: dict) -> None:
    reply = requests.post(f"{url}/uploadmeteor", json=body, headers={"x-api-key": key}, timeout=30)
    reply.raise_for_status()


def screenshot(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1040})
        page.goto(url)
        page.wait_for_load_state("load")
        page.wait_for_function("[...document.images].every(i => i.complete)")
        png = page.screenshot()
        browser.close()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    image.save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "site_screenshot.png")
    args = parser.parse_args()
    rng = random.Random(2021)
    keys = {obs: secrets.token_urlsafe(18) for obs in OBSERVATORIES}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GUALTA_")},
           "GUALTA_API_KEYS": ",".join(f"{o}:{k}" for o, k in keys.items()),
           "GUALTA_OBSERVATORIES": json.dumps(OBSERVATORIES), "GUALTA_TIMEZONE": "Europe/Madrid"}
    with tempfile.TemporaryDirectory() as folder, server.ChildServer(Path(folder) / "store", env) as child:
        shared = None                                # obs01's first meteor, which obs02 sees too (12 s later)
        for obs, seed, meteors, satellite in (("obs01", 11, 4, True), ("obs02", 12, 2, False)):
            post(child.url, keys[obs], payload.build_log("start", obs, folder=NIGHT,
                                                         processed="2026-09-16T20:00:02+02:00"))
            found = detections_of(seed, meteors, satellite)
            if shared is None:
                shared = next(datetime.strptime(frame_id, allsky.TIME_FORMAT) for frame_id, _, meteor in found
                              if meteor) + timedelta(seconds=12)
            else:
                found.append((shared.strftime(allsky.TIME_FORMAT), found[0][1], True))
            for frame_id, image, _ in found:
                jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
                post(child.url, keys[obs], payload.build_detection(frame_id, round(rng.uniform(0.86, 0.99), 2), obs,
                                                                   jpeg, telegram=False))
            post(child.url, keys[obs], payload.build_log("end", obs, total=1440, folder=NIGHT,
                                                         processed="2026-09-17T08:00:04+02:00"))
        requests.post(f"{child.url}/site?day={NIGHT}", headers={"x-api-key": keys["obs01"]}, timeout=60)
        screenshot(f"{child.url}/{NIGHT}.html", args.out)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
