"""Regenerate the sample events in this folder: python aws_lambda/events/make_events.py

API Gateway REST (v1) proxy events for POST /uploadmeteor with the sample key of obs01, and the daily-page events.
The image is a drawn 448×224 grayscale frame | difference pair, the shape every detection carries.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from gualta import payload

HERE = Path(__file__).parent
SAMPLE_KEY = "sample-key-obs01"          # not a secret: only valid where GUALTA_API_KEYS says so (tests)
FRAME_ID = "20260916231507"


def sample_image() -> np.ndarray:
    """A dark sky with stars and a meteor streak (left) and its thresholded difference (right)."""
    rng = np.random.default_rng(2021)
    sky = Image.fromarray(rng.normal(18, 3, (224, 224)).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(sky)
    for x, y in rng.integers(4, 220, (40, 2)):
        draw.ellipse((x, y, x + 1, y + 1), fill=int(rng.integers(90, 230)))
    draw.line((50, 60, 150, 120), fill=200, width=2)
    sky = sky.filter(ImageFilter.GaussianBlur(0.6))
    diff = Image.new("L", (224, 224), 0)
    ImageDraw.Draw(diff).line((50, 60, 150, 120), fill=255, width=3)
    return np.hstack([np.asarray(sky), np.asarray(diff)])


def proxy_event(body: dict, key: str = SAMPLE_KEY) -> dict:
    """What API Gateway (REST API, Lambda proxy integration) passes to the ingest function."""
    text = json.dumps(body)
    return {"resource": "/uploadmeteor", "path": "/uploadmeteor", "httpMethod": "POST",
            "headers": {"Content-Type": "application/json", "x-api-key": key, "Host": "example.execute-api"},
            "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
            "pathParameters": None, "stageVariables": None,
            "requestContext": {"resourcePath": "/uploadmeteor", "httpMethod": "POST", "path": "/Prod/uploadmeteor",
                               "stage": "Prod", "requestId": "sample-request",
                               "identity": {"sourceIp": "192.0.2.10", "apiKey": key}},
            "body": text, "isBase64Encoded": False}


def main() -> None:
    detection = payload.build_detection(FRAME_ID, 0.97, "obs01", sample_image(), telegram=True,
                                        processed="2026-09-16T23:15:41+02:00", model="resnet34-v4")
    events = {
        "upload_detection.json": proxy_event(detection),
        "upload_log_start.json": proxy_event(payload.build_log("start", "obs01", folder="20260916",
                                                               processed="2026-09-16T20:00:03+02:00")),
        "upload_log_end.json": proxy_event(payload.build_log("end", "obs01", total=1440, folder="20260916",
                                                             processed="2026-09-17T08:00:05+02:00")),
        "upload_foreign_obs.json": proxy_event({**detection, "obs_id": "obs02"}),
        "daily_schedule.json": {"source": "gualta.schedule"},
        "daily_day.json": {"day": "20260916"},
    }
    for name, event in events.items():
        (HERE / name).write_text(json.dumps(event, indent=1) + "\n")
        print(HERE / name)


if __name__ == "__main__":
    main()
