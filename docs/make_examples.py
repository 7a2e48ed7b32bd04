"""Regenerate the example images in docs/: simulated frames beside their thesis difference images.

    python docs/make_examples.py

Each example is the frame (left, downscaled) and the 400×400 v4 difference image against the previous frame (right).
"""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gualta import preprocess, simulate  # noqa: E402

DOCS = Path(__file__).resolve().parent
EXAMPLES = [  # (file, seed, scenario, event kind to show or None, frame when no event)
    ("example_clear_meteor.jpg", 3, "clear", "meteor", None),
    ("example_fireball.jpg", 3, "clear", "fireball", None),
    ("example_cloudy.jpg", 8, "cloudy", None, 600),
    ("example_moon.jpg", 5, "moon", None, 400),
    ("example_satellite.jpg", 21, "clear", "satellite", None),
    ("example_plane.jpg", 3, "clear", "plane", None),
]


def frame_with(plan: simulate.NightPlan, kind: str | None, default: int) -> int:
    """A dark-sky frame showing the most conspicuous event of `kind` (its second frame for crossings), else `default`."""
    renderer_time = [plan.start + simulate.timedelta(seconds=plan.interval_s * i) for i in range(plan.frames)]

    def central(point) -> bool:
        fisheye = plan.camera.fisheye
        return float(simulate.np.hypot(point[0] - fisheye.cx, point[1] - fisheye.cy)) < 0.6 * fisheye.radius

    def dark(index: int) -> bool:
        return simulate.sun_position(renderer_time[index], plan.latitude, plan.utc_offset_h)[0] < -18

    events = [event for event in plan.events
              if event.kind == kind and event.frames[0] > 0 and len(event.frames) >= (2 if kind in ("satellite", "plane") else 1)
              and dark(event.frames[-1]) and central(event.start)]
    if not events:
        return default
    event = max(events, key=lambda e: min(e.peak_snr, 40) * (e.length + float(simulate.np.hypot(*e.velocity))))
    return event.frames[min(1, len(event.frames) - 1)]


def example(seed: int, scenario: str, kind: str | None, default: int) -> np.ndarray:
    plan = simulate.plan_night(seed, datetime(2021, 11, 10, 20, 0), 1440, scenario)
    renderer = simulate.NightRenderer(plan)
    index = frame_with(plan, kind, default)
    quality = [cv2.IMWRITE_JPEG_QUALITY, plan.camera.jpeg_quality]
    previous, current = (cv2.imdecode(cv2.imencode(".jpg", renderer.render(i)[0], quality)[1], cv2.IMREAD_COLOR)
                         for i in (index - 1, index))
    difference = preprocess.difference_image(current, previous)
    frame = cv2.resize(current, (534, 400), interpolation=cv2.INTER_AREA)
    return np.hstack([frame, cv2.cvtColor(difference, cv2.COLOR_GRAY2BGR)])


def main() -> None:
    for name, seed, scenario, kind, default in EXAMPLES:
        cv2.imwrite(str(DOCS / name), example(seed, scenario, kind, default or 700), [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(DOCS / name)


if __name__ == "__main__":
    main()
