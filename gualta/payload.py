"""Detection and log payloads: the contract between the client and the central service.

Detection (POST JSON): ``id`` (YYYYMMDDHHMMSS, the frame's local time), ``date`` (YYYY-MM-DD) and ``time`` (HH:MM:SS)
matching the id, ``score`` (0–1), ``telegram`` (bool), ``obs_id`` (letters, digits, ``-``, ``_``; 1–32),
``processed`` (ISO-8601), ``folder`` (the night, YYYYMMDD: the id's date or the day before), ``img`` (base64 JPEG,
448×224 grayscale), optional ``flag`` (e.g. "satellite"), ``model`` (model version) and ``streak`` (``[x1, y1, x2,
y2]``, the streak's ends in the frame's pixels, integers 0–20000: the daily page tells one crossing from unrelated
meteors by it; a service older than it refuses it, and the client then sends without it, `gualta.report`).
Log: ``{"log": "start", "obs_id": ..}`` or ``{"log": "end", "obs_id": .., "total": N}``, optional ``folder`` and
``processed``. Unknown fields are refused. The client builds payloads with `build_detection` / `build_log`, the
service checks them with `parse_body` + `validate`; both sides share this module.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from PIL import Image, UnidentifiedImageError

from gualta import allsky

MAX_BODY_BYTES = 6 * 1024 * 1024          # the Lambda request limit; larger bodies get 413
MAX_JPEG_BYTES = 256 * 1024               # a 448×224 gray JPEG of pure noise is 159 kB at quality 100 (the client: 90)
IMG_SIZE = (448, 224)                     # width, height: original | processed, 224×224 each
MAX_TOTAL = 10_000_000                    # frames in one night's end log
FIRST_YEAR = 2000                         # ids, nights and processed times from this year to next year
OBS_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
MIN_KEY_LENGTH = 8                       # an x-api-key: at least this many printable characters, no spaces
FRAME_ID = re.compile(r"[0-9]{14}")
NIGHT = re.compile(r"[0-9]{8}")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
TIME = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}")
ISO = re.compile(r"[0-9][0-9T:.+Z -]{9,39}")
FLAG = re.compile(r"[a-z][a-z0-9_-]{0,31}")
MODEL = re.compile(r"[A-Za-z0-9._+-]{1,64}")
MAX_STREAK_PX = 20_000                    # a streak end's coordinate, in the frame's pixels
LOG_KINDS = ("start", "end")
FIREBALL, STREAK = "fireball", "streak"                           # the check that found a detection
SATELLITE, CLOUD, LIGHTNING = "satellite", "cloud", "lightning"   # what flagged a candidate (gualta.detect)
# What a detection's flag tells those who read the channel and the page: (headline, tag, why). Satellite, cloud and
# lightning mark candidates the client held back and reported anyway (`guAlta_report_flagged`): not meteors to it.
FLAG_MEANINGS = {
    FIREBALL: ("🔥 Fireball detected", "fireball", "a bright, saturated streak in this frame only"),
    STREAK: ("☄️ Meteor detected", "thin streak", "found by its thin streak, seen in this frame only, where the "
             "classifier scored it lower"),
    SATELLITE: ("🛰️ Possible satellite or plane", "possible satellite/plane", "held back by the observatory: "
                "its trail goes on in another frame, or its own lights show it (reported as asked)"),
    CLOUD: ("☁️ Possible clouds", "possible clouds", "held back by the observatory: clouds change in the frames "
            "either side too (reported as asked)"),
    LIGHTNING: ("⚡ Possible lightning", "possible lightning", "held back by the observatory: a wide region of "
                "sky lit up in this frame only, as a flash lights the clouds (reported as asked)"),
}
NOT_METEOR_FLAGS = {SATELLITE, CLOUD, LIGHTNING}


def held_back(record) -> bool:
    """Whether a stored detection is a candidate its observatory held back (a not-meteor flag, reported as asked)."""
    return isinstance(record, dict) and isinstance(record.get("flag"), str) and record["flag"] in NOT_METEOR_FLAGS


def tally(records) -> dict[str, int]:
    """How the page and the channel count a night's stored detection records: {"detections": those reported as
    meteors (a record that does not read among them, as the page shows it), "held_back": the candidates held back}."""
    records = list(records)
    held = sum(1 for record in records if held_back(record))
    return {"detections": len(records) - held, "held_back": held}


DETECTION_FIELDS = {"id", "date", "time", "score", "telegram", "obs_id", "processed", "folder", "img"}
DETECTION_OPTIONAL = {"flag", "model", "streak"}
LOG_FIELDS = {"log", "obs_id"}
LOG_OPTIONAL = {"folder", "processed"}


class PayloadError(ValueError):
    """Why a payload was refused: the reason returned with HTTP 400."""


@dataclass(frozen=True)
class Detection:
    """A validated detection; `jpeg` holds the decoded image bytes."""
    obs_id: str
    id: str
    date: str
    time: str
    score: float
    telegram: bool
    processed: str
    folder: str
    jpeg: bytes
    flag: str | None = None
    model: str | None = None
    streak: list[int] | None = None

    def record(self) -> dict:
        """What the store keeps as JSON (the payload without the image)."""
        record = {"obs_id": self.obs_id, "id": self.id, "date": self.date, "time": self.time, "score": self.score,
                  "telegram": self.telegram, "processed": self.processed, "folder": self.folder}
        record.update({k: v for k, v in (("flag", self.flag), ("model", self.model), ("streak", self.streak))
                       if v is not None})
        return record


@dataclass(frozen=True)
class Log:
    """A validated start/end log; `folder` and `processed` may be absent (the service fills the night in)."""
    obs_id: str
    log: str
    total: int | None = None
    folder: str | None = None
    processed: str | None = None

    def record(self) -> dict:
        """What the store keeps as JSON."""
        record = {"log": self.log, "obs_id": self.obs_id}
        record.update({k: v for k, v in (("total", self.total), ("folder", self.folder),
                                         ("processed", self.processed)) if v is not None})
        return record


def _refuse_constant(name: str):
    raise PayloadError(f"{name} is not valid JSON")


def parse_body(body: bytes | str) -> dict:
    """Decode a request body into a JSON object, or raise PayloadError (NaN/Infinity and deep nesting included)."""
    if len(body) > MAX_BODY_BYTES:
        raise PayloadError(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        data = json.loads(text, parse_constant=_refuse_constant)
    except PayloadError:
        raise
    except (ValueError, RecursionError) as exc:    # bad UTF-8/JSON, or an integer too long to convert
        raise PayloadError(f"body is not valid UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object")
    return data


def validate(payload: dict) -> Detection | Log:
    """Check a parsed payload strictly and return a Detection or a Log; raise PayloadError with the reason."""
    if not isinstance(payload, dict):
        raise PayloadError("payload must be a JSON object")
    return validate_log(payload) if "log" in payload else validate_detection(payload)


def _check_fields(payload: dict, required: set, optional: set) -> None:
    missing = sorted(required - payload.keys())
    if missing:
        raise PayloadError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(payload.keys() - required - optional)
    if unknown:
        shown = ", ".join(name if OBS_ID.fullmatch(name) else "(unprintable)" for name in unknown[:5])
        raise PayloadError(f"unknown field(s): {shown}")


def _string(payload: dict, name: str, pattern: re.Pattern, rule: str) -> str:
    value = payload[name]
    if type(value) is not str or not pattern.fullmatch(value):
        raise PayloadError(f"{name} must be {rule}")
    return value


def is_api_key(key: str) -> bool:
    """Whether `key` is one the service takes: MIN_KEY_LENGTH or more printable characters, no spaces."""
    return len(key) >= MIN_KEY_LENGTH and key.isprintable() and " " not in key


def nights_of_id(frame_id: str) -> tuple[str, str]:
    """The nights a frame's id (YYYYMMDDHHMMSS) may belong to: its date, and the day before (after midnight)."""
    stamp = datetime.strptime(frame_id, allsky.TIME_FORMAT)
    return stamp.strftime(allsky.NIGHT_FORMAT), (stamp - timedelta(days=1)).strftime(allsky.NIGHT_FORMAT)


def _stamp(value: str, fmt: str, name: str) -> datetime:
    try:
        stamp = datetime.strptime(value, fmt)
    except ValueError:
        raise PayloadError(f"{name} is not a real date/time") from None
    return _in_years(stamp, name)


def _in_years(stamp: datetime, name: str) -> datetime:
    """`stamp` if its year is one an AllSky camera can have written (FIRST_YEAR to next year), else PayloadError (a
    year 1 would also overflow the night's arithmetic)."""
    if not FIRST_YEAR <= stamp.year <= datetime.now().year + 1:
        raise PayloadError(f"{name} must be a date from {FIRST_YEAR} to next year")
    return stamp


def check_obs_id(value) -> str:
    """The obs_id if it is a string of 1–32 letters, digits, '-' or '_'; else PayloadError."""
    return _string({"obs_id": value}, "obs_id", OBS_ID, "1-32 characters from A-Z a-z 0-9 - _")


def _processed(payload: dict) -> str:
    value = _string(payload, "processed", ISO, "an ISO-8601 date-time")
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError("processed must be an ISO-8601 date-time") from None
    _in_years(stamp, "processed")
    return value


def _folder(payload: dict) -> str:
    value = _string(payload, "folder", NIGHT, "YYYYMMDD")
    _stamp(value, allsky.NIGHT_FORMAT, "folder")
    return value


def is_streak(value) -> bool:
    """Whether a value is a streak as the payload carries it: [x1, y1, x2, y2], integers 0–MAX_STREAK_PX."""
    return (type(value) is list and len(value) == 4
            and all(type(end) is int and 0 <= end <= MAX_STREAK_PX for end in value))


def _streak(payload: dict) -> list[int] | None:
    if "streak" not in payload:
        return None
    if not is_streak(payload["streak"]):
        raise PayloadError(f"streak must be [x1, y1, x2, y2]: four integers from 0 to {MAX_STREAK_PX}")
    return list(payload["streak"])


def validate_detection(payload: dict) -> Detection:
    """Check a detection payload; the image must decode to a 448×224 grayscale JPEG."""
    _check_fields(payload, DETECTION_FIELDS, DETECTION_OPTIONAL)
    obs_id = check_obs_id(payload["obs_id"])
    frame = _string(payload, "id", FRAME_ID, "YYYYMMDDHHMMSS (14 digits)")
    stamp = _stamp(frame, allsky.TIME_FORMAT, "id")
    date = _string(payload, "date", DATE, "YYYY-MM-DD")
    time = _string(payload, "time", TIME, "HH:MM:SS")
    if date != stamp.strftime("%Y-%m-%d") or time != stamp.strftime("%H:%M:%S"):
        raise PayloadError("date and time must match the id")
    folder = _folder(payload)
    if folder not in nights_of_id(frame):
        raise PayloadError("folder must be the id's date or the day before (the night of the frame)")
    score = payload["score"]
    if type(score) not in (int, float) or not 0 <= score <= 1:       # refuses NaN and ±inf; an int is never cast
        raise PayloadError("score must be a number from 0 to 1")
    if type(payload["telegram"]) is not bool:
        raise PayloadError("telegram must be true or false")
    flag = _string(payload, "flag", FLAG, "lower-case letters, digits, - or _ (1-32)") if "flag" in payload else None
    model = _string(payload, "model", MODEL, "1-64 characters from A-Z a-z 0-9 . _ + -") if "model" in payload else None
    return Detection(obs_id=obs_id, id=frame, date=date, time=time, score=float(score),
                     telegram=payload["telegram"], processed=_processed(payload), folder=folder,
                     jpeg=decode_image(payload["img"]), flag=flag, model=model, streak=_streak(payload))


def validate_log(payload: dict) -> Log:
    """Check a start/end log payload."""
    kind = payload.get("log")
    if kind not in LOG_KINDS or type(kind) is not str:
        raise PayloadError("log must be \"start\" or \"end\"")
    _check_fields(payload, LOG_FIELDS | ({"total"} if kind == "end" else set()), LOG_OPTIONAL)
    total = None
    if kind == "end":
        total = payload["total"]
        if type(total) is not int or not 0 <= total <= MAX_TOTAL:
            raise PayloadError(f"total must be an integer from 0 to {MAX_TOTAL}")
    return Log(obs_id=check_obs_id(payload["obs_id"]), log=kind, total=total,
               folder=_folder(payload) if "folder" in payload else None,
               processed=_processed(payload) if "processed" in payload else None)


def decode_image(value) -> bytes:
    """Base64 text → JPEG bytes, checked to be a complete 448×224 grayscale JPEG."""
    if type(value) is not str:
        raise PayloadError("img must be a base64 string")
    if len(value) > 4 * math.ceil(MAX_JPEG_BYTES / 3):            # before decoding it; the decoded size below
        raise PayloadError(f"img larger than {MAX_JPEG_BYTES} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError("img is not valid base64") from None
    if len(data) > MAX_JPEG_BYTES:                                  # the text's bound lets 2 bytes more through
        raise PayloadError(f"img larger than {MAX_JPEG_BYTES} bytes")
    if data[:3] != b"\xff\xd8\xff":
        raise PayloadError("img is not a JPEG")
    if not data.endswith(b"\xff\xd9"):                 # bytes after the image would be stored and served with it
        raise PayloadError("img must end with the JPEG's end marker (cut short, or bytes after it)")
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            if image.size != IMG_SIZE or image.mode != "L":
                raise PayloadError(f"img must be a {IMG_SIZE[0]}x{IMG_SIZE[1]} grayscale JPEG")
            image.load()
    except PayloadError:
        raise
    except Image.DecompressionBombError:         # a header declaring billions of pixels
        raise PayloadError(f"img must be a {IMG_SIZE[0]}x{IMG_SIZE[1]} grayscale JPEG") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise PayloadError("img is not a decodable JPEG") from None
    return data


def encode_image(image) -> bytes:
    """A 448×224 uint8 grayscale array (original | processed) → JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).convert("L").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def build_detection(frame_id: str, score: float, obs_id: str, image, telegram: bool = True,
                    processed: str | None = None, folder: str | None = None, flag: str | None = None,
                    model: str | None = None, streak: tuple[int, int, int, int] | None = None) -> dict:
    """The JSON-ready detection payload for a frame; `image` is JPEG bytes or a 448×224 uint8 array; `streak` its
    ends (x1, y1, x2, y2) in the frame's pixels.

    Raises PayloadError if the result would be refused by the service.
    """
    stamp = datetime.strptime(frame_id, allsky.TIME_FORMAT)
    jpeg = image if isinstance(image, (bytes, bytearray)) else encode_image(image)
    payload = {"id": frame_id, "date": stamp.strftime("%Y-%m-%d"), "time": stamp.strftime("%H:%M:%S"),
               "score": float(score), "telegram": bool(telegram), "obs_id": obs_id,
               "processed": processed or datetime.now().astimezone().isoformat(timespec="seconds"),
               "folder": folder or allsky.night_of(stamp), "img": base64.b64encode(bytes(jpeg)).decode("ascii")}
    payload.update({k: v for k, v in (("flag", flag), ("model", model)) if v is not None})
    if streak is not None:
        payload["streak"] = list(streak)
    validate_detection(payload)
    return payload


def build_log(kind: str, obs_id: str, total: int | None = None, folder: str | None = None,
              processed: str | None = None) -> dict:
    """The JSON-ready start/end log payload; raises PayloadError if the service would refuse it."""
    payload = {"log": kind, "obs_id": obs_id,
               "processed": processed or datetime.now().astimezone().isoformat(timespec="seconds")}
    payload.update({k: v for k, v in (("total", total), ("folder", folder)) if v is not None})
    validate_log(payload)
    return payload
