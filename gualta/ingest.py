"""Ingest — the implementation behind the guAlta Lambda (aws_lambda/guAlta/app.py) and the embedded server.

One API Gateway REST (v1) proxy event in, one proxy response out. ``POST /uploadmeteor`` with header ``x-api-key``:
checks run in this order and the first failure answers — 400 not a proxy event, 404 other path, 405 other method,
413 body over 6 MiB, 401 missing/unknown key (or sent twice), 400 unreadable body (bad base64), 400 bad JSON, 403
obs_id of another observatory, 400 invalid payload (with the reason), 400 a log whose night is before
payload.FIRST_YEAR; a store or settings failure answers 503/500.
Nothing is written before every check has passed. A detection is stored (image, then the JSON record, created only
if new: re-sending the same (obs_id, id) answers "duplicate" and changes nothing, unless the stored record does not
read — empty or cut short, it is replaced), then posted to Telegram if asked; the post's outcome is recorded in the
record as ``telegram_status``. Logs are kept per night and observatory.
The scheduled job (gualta.site) posts again, late, the detections and end logs whose post failed or was cut off
(``repost_unsent``: the night that ended, and earlier nights marked by a failed post until it is sent or too old).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from gualta import allsky, coincidence, passes, payload, service_env, store, telegram_post

log = logging.getLogger(__name__)

ROUTE = "/uploadmeteor"
REPOST_AFTER_S = 120              # a post still pending this long after it was stored was cut off (the Lambda has 30 s)
REPOST_BUDGET_S = 60.0            # the scheduled job's time for posting again what failed
REPEAT_LOG_S = 3600.0             # a refusal repeated (a client retrying all night with a wrong key): one line an hour


class Throttle:
    """Which of a repeated event's lines are logged: the first of each kind, then the first after every `every_s`
    seconds, with how many were held back since; at most `kinds` kinds are remembered (the oldest forgotten)."""

    def __init__(self, every_s: float = REPEAT_LOG_S, kinds: int = 1000, clock: Callable[[], float] = time.monotonic):
        self.every_s, self.kinds, self.clock = every_s, kinds, clock
        self.seen: dict = {}                  # kind → [time.monotonic() of its last line, lines held back since]
        self.lock = threading.Lock()

    def __call__(self, kind) -> int | None:
        """None: hold this one back; else how many of its kind were held back before it."""
        now = self.clock()
        with self.lock:
            last = self.seen.pop(kind, None)
            if last is not None and now - last[0] < self.every_s:
                last[1] += 1
                self.seen[kind] = last
                return None
            while len(self.seen) >= self.kinds:
                self.seen.pop(next(iter(self.seen)))
            self.seen[kind] = [now, 0]
            return last[1] if last else 0


REFUSALS = Throttle()
SETTINGS_BLAMED: set[str] = set()     # the Telegram settings whose refusal this process has logged as an ERROR
BLAMING = threading.Lock()            # (the embedded server's threads post at once)
POSTED_AGAIN = "stored; posted again by the morning's build"


def response(status: int, body: dict, headers: dict | None = None) -> dict:
    """An API Gateway proxy response with a JSON body."""
    return {"statusCode": status, "isBase64Encoded": False,
            "headers": {"Content-Type": "application/json", **(headers or {})},
            "body": json.dumps(body, ensure_ascii=True)}


def error(status: int, reason: str, headers: dict | None = None) -> dict:
    return response(status, {"error": reason}, headers)


def header_values(event: dict, name: str) -> list[str]:
    """Every value a request header was sent with, its name matched case-insensitively (API Gateway passes
    repeated headers in multiValueHeaders, their last value in headers)."""
    wanted, values = name.lower(), []
    many = event.get("multiValueHeaders")
    if not (isinstance(many, dict) and many):                   # a hand-written event: headers alone
        single = event.get("headers")
        many = {key: [value] for key, value in single.items()} if isinstance(single, dict) else {}
    for key, sent in many.items():
        if isinstance(key, str) and key.lower() == wanted:
            values += [value for value in (sent if isinstance(sent, list) else [sent]) if isinstance(value, str)]
    return values


def request_body(event: dict) -> bytes:
    """The raw body bytes (API Gateway base64-encodes binary bodies); ValueError saying what is wrong."""
    body = event.get("body") or ""
    if not isinstance(body, str):
        raise ValueError("body is not text (an API Gateway proxy event's body is a string)")
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("body is not valid base64") from None
    try:
        return body.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ValueError("body is not valid UTF-8") from None


def parse_api_keys(text: str) -> dict[str, str]:
    """``obs_id:key,obs_id:key`` → {key: obs_id}; raise ServiceConfigError on a malformed entry (never showing keys)."""
    keys: dict[str, str] = {}
    for position, entry in enumerate(filter(None, (part.strip() for part in text.split(","))), start=1):
        obs_id, sep, key = entry.partition(":")
        if not sep or not payload.OBS_ID.fullmatch(obs_id) or not payload.is_api_key(key):
            raise service_env.ServiceConfigError(f"API key entry {position} is not obs_id:key (obs_id charset A-Z a-z "
                                                 f"0-9 - _, key at least {payload.MIN_KEY_LENGTH} printable "
                                                 "characters, no spaces)")
        if keys.get(key, obs_id) != obs_id:
            raise service_env.ServiceConfigError(f"API key entry {position} reuses another observatory's key")
        keys[key] = obs_id
    return keys


def api_keys(env) -> dict[str, str]:
    """The key → obs_id map from GUALTA_API_KEYS (or its SSM parameter)."""
    return parse_api_keys(service_env.secret(env, "GUALTA_API_KEYS"))


def api_key_owner(sent: list[str], env) -> tuple[str | None, str]:
    """The obs_id whose key the request was sent with, or None and why not (a key sent twice is refused whatever
    its values: which one counts would otherwise depend on the host and the header's spelling)."""
    if len(sent) > 1:
        return None, "x-api-key sent more than once"
    owner = authenticate(sent[0] if sent else None, api_keys(env))
    return owner, "" if owner else "missing or unknown API key (header x-api-key)"


def authenticate(given: str | None, keys: dict[str, str]) -> str | None:
    """The obs_id a key belongs to, or None; compares in constant time per key."""
    if not given:
        return None
    given_bytes = given.encode("utf-8", "replace")
    found = None
    for key, obs_id in keys.items():
        if hmac.compare_digest(given_bytes, key.encode("utf-8")):
            found = obs_id
    return found


def source_ip(event) -> str:
    """The client's address a proxy event carries (requestContext.identity.sourceIp), '?' without one."""
    context = event.get("requestContext") if isinstance(event, dict) else None
    identity = context.get("identity") if isinstance(context, dict) else None
    found = identity.get("sourceIp") if isinstance(identity, dict) else None
    return printable(found) if isinstance(found, str) and found else "?"


def printable(text: str, limit: int = 200) -> str:
    """Text fit for a log line: at most `limit` characters, anything but printable ASCII escaped."""
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in text[:limit])


def log_refusal(source: str, status: int, reason: str, route: str = ROUTE) -> None:
    """Log a refused request (status, reason and client address; never its key or body) as a WARNING, once per
    (source, route, status, reason) within REPEAT_LOG_S (`REFUSALS`), the next one saying how many were held back."""
    held = REFUSALS((source, route, status, reason))
    if held is None:
        log.debug("refused POST %s from %s: %d %s", route, source, status, printable(reason))
        return
    repeats = f"; {held} more since the last such line" if held else "; repeats are logged once an hour"
    log.warning("refused POST %s from %s: %d %s%s", route, source, status, printable(reason), repeats)


def handle(event: dict, env=None, now: datetime | None = None) -> dict:
    """Answer one proxy event; server-side failures (store, configuration) give 500/503 and are logged, and so are
    refused uploads (`log_refusal`)."""
    env = os.environ if env is None else env
    try:
        answer = _handle(event, env, now or datetime.now(timezone.utc))
        if 400 <= answer["statusCode"] < 500 and answer["statusCode"] not in (404, 405):
            log_refusal(source_ip(event), answer["statusCode"], json.loads(answer["body"]).get("error", ""))
        return answer
    except store.StoreError as exc:
        log.error("store unavailable: %s", exc)
        return error(503, "store unavailable, retry later")
    except service_env.ServiceConfigError as exc:
        log.error("configuration error: %s", exc)
        return error(500, "service misconfigured")


def _handle(event: dict, env, now: datetime) -> dict:
    if not isinstance(event, dict):
        return error(400, "not an API Gateway proxy event")
    path = event.get("resource") or event.get("path")
    if path != ROUTE:
        return error(404, "not found")
    if event.get("httpMethod") != "POST":
        return error(405, "method not allowed", {"Allow": "POST"})
    try:
        body, unreadable = request_body(event), ""
    except ValueError as exc:
        body, unreadable = b"", str(exc)                 # answered after the key: 401 comes before 400
    if len(body) > payload.MAX_BODY_BYTES:
        return error(413, f"body larger than {payload.MAX_BODY_BYTES} bytes")
    owner, refusal = api_key_owner(header_values(event, "x-api-key"), env)
    if owner is None:
        return error(401, refusal)
    if unreadable:
        return error(400, unreadable)
    try:
        data = payload.parse_body(body)
        if data.get("obs_id") != owner and isinstance(data.get("obs_id"), str):
            return error(403, "this API key may only post for its own obs_id")
        item = payload.validate(data)
    except payload.PayloadError as exc:
        return error(400, str(exc))
    target = store.store_from_env(env)
    channel = telegram_post.channel_from_env(env)
    if isinstance(item, payload.Detection):
        return store_detection(target, item, channel, env, now)
    zone = coincidence.zones_from_env(env)(item.obs_id)             # its camera's clock
    night = night_for_log(item, now, zone)
    if night < f"{payload.FIRST_YEAR}0101":
        return error(400, f"processed falls in night {night}: nights from {payload.FIRST_YEAR}0101")
    return store_log(target, item, channel, night, env, now)


def store_detection(target: store.Store, item: payload.Detection, channel, env, now: datetime) -> dict:
    """Store image and record (first writer wins, under either night its id allows; a record that does not read is
    replaced, `repair_detection`), then announce it (`announce`); answer 200 (503 while another request repairs it)."""
    json_key = store.detection_key(item.folder, item.obs_id, item.id)
    img_key = store.image_key(item.folder, item.obs_id, item.id)
    if earlier := stored_under_other_night(target, item):
        return response(200, {"status": "duplicate", "key": earlier})
    if (night := claimed_night(target, item)) != item.folder:
        return response(200, {"status": "duplicate", "key": store.detection_key(night, item.obs_id, item.id)})
    record = {**item.record(), "img": img_key, "received": now.isoformat(timespec="seconds"),
              "telegram_status": "pending" if item.telegram else "not requested"}
    target.create(img_key, item.jpeg)
    if not store.write_json(target, json_key, record, create=True):
        if store.read_json(target, json_key) is not None:
            return response(200, {"status": "duplicate", "key": json_key})
        if not repair_detection(target, item, record, now):
            return error(503, "being stored by another request, retry later")
    log.info("stored detection %s", json_key)
    status = record["telegram_status"]
    if status != "sent":                                    # a repaired record posted before is not posted again
        stored = night_detections(target, item.folder) if channel is not None else []
        status = announce(target, (item.folder, item.obs_id, item.id), record, item.jpeg, channel, env, stored, now)
    mark_if_late(target, item.folder, env, now)
    return response(200, {"status": "stored", "key": json_key, "telegram": status})


def repair_detection(target: store.Store, item: payload.Detection, record: dict, now: datetime) -> bool:
    """Put record and image in place of a stored record that does not read (empty or cut short: a power cut before
    the store flushed its writes), which a re-send found and answered `duplicate`, a card without a score for good;
    posted only if it was never posted (`store.post_mark_key`). False when another request repairs it (a claim for
    the day: one that stopped half-way holds it back until the next day)."""
    night, json_key = item.folder, store.detection_key(item.folder, item.obs_id, item.id)
    if not target.create(store.claim_key(night, f"{item.obs_id}_{item.id}.repair-{now:%Y%m%d}"),
                         store.claim_content()):
        log.info("night %s: %s is repaired by another request", night, json_key)
        return False
    if record["telegram_status"] == "pending" and target.get(store.post_mark_key(night, item.obs_id, item.id)) \
            is not None:
        record["telegram_status"] = "sent"
    target.put(store.image_key(night, item.obs_id, item.id), item.jpeg)
    store.write_json(target, json_key, record)
    log.warning("replaced %s, which did not read as JSON", json_key)
    return True


def mark_if_late(target: store.Store, night: str, env, now: datetime) -> None:
    """Mark a night that had ended before today's page build (`store.late_key`): the scheduled build brings its
    page up to date however long ago it was (a client back after a week's outage, a failed post made by a later
    build: `repost_unsent`). Called once the report is stored and posted: a mark that cannot be written is logged,
    never a 503 (the client's retry would be a duplicate, and its post never made)."""
    if night < service_env.ended_night(now, env):
        try:
            target.put(store.late_key(night), b"")
        except store.StoreError as exc:         # the report is stored and posted: only its page waits (logged)
            log.error("night %s: cannot mark it late (%s): its page is brought up to date only within the "
                      "refresh window", night, exc)


def announce(target: store.Store, detection: tuple[str, str, str], record: dict, jpeg: bytes, channel, env,
             stored: list[tuple[str, str, datetime]], now: datetime, deadline: float | None = None,
             listed: dict | None = None) -> str:
    """Post a stored detection (night, obs_id, frame id) if its record asks for it — naming the other observatories'
    detections of the same moment among `stored` (the night's) and under the nights either side (`coinciding_around`;
    `listed`: their detections listed already, kept in it) — and record the outcome; then, unless the channel just
    failed, edit their posts to name it too — the post and its edits wait out flood control until `deadline` (the
    time.monotonic() clock; None: FLOOD_WAIT_BUDGET_S from now, `telegram_post.flood_deadline`).
    Only an observatory's first detections of the night (`telegram_post.night_posts`, in its camera's time order
    among `stored`, and never more posted whatever the order they arrive in) are posted; the first after them posts
    one message saying so instead. Detections of a night that ended long before the last one (`too_old_to_post`)
    are not posted, nor those taken in daylight where the service knows the observatory's place (`daylight_rule`:
    AllSky's daytime capture, a client without its place set), which count for no limit. Return the record's
    telegram_status."""
    night, obs_id, frame_id = detection
    zone_of = coincidence.zones_from_env(env)
    deadline = telegram_post.flood_deadline() if deadline is None else deadline
    stamp = allsky.frame_time(f"image-{frame_id}.jpg")
    listed = {} if listed is None else listed
    listed[night] = stored
    others = coinciding_around(target, listed, night, obs_id, stamp, zone_of) if channel is not None else []
    asked = record.get("telegram") is True
    limit = telegram_post.night_posts(env) if asked else 0
    daylight = daylight_rule(env) if asked and channel is not None else lambda _obs_id, _stamp: ""
    earlier = sum(1 for other_obs, other_frame, at in stored
                  if other_obs == obs_id and other_frame < frame_id and not daylight(other_obs, at))
    too_old = too_old_status(env) if asked and channel is not None and too_old_to_post(night, env, now) else ""
    decision = post_decision(asked, too_old, daylight(obs_id, stamp), limit,
                             lambda: earlier >= limit or posts_full(target, night, obs_id, limit))
    if decision == TO_POST:
        post_detection(target, detection, record, jpeg, channel, env, others, deadline)
    elif decision is not None:
        if decision == over_limit_status(limit):
            say_posts_stop(target, detection, limit, channel, env, deadline)
        record["telegram_status"] = decision
        store.write_json(target, store.detection_key(night, obs_id, frame_id), record)
    if not record["telegram_status"].startswith("failed"):          # while the channel answers, one edit each
        name_in_earlier_posts(target, others, listed, channel, env, deadline)
    return record["telegram_status"]


TO_POST = "to post"                 # `post_decision` for a detection to post


def post_decision(asked: bool, too_old: str, daylit: str, limit: int, full: Callable[[], bool]) -> str | None:
    """What becomes of a stored detection's post (`announce`): TO_POST, None when none was `asked`, else the
    telegram_status of one not posted — its night too old (`too_old`: that status, else ''), taken in daylight
    (`daylit`: why, else ''), or past the night's `limit` (`full()`: whether the limit is reached, asked last)."""
    if too_old:
        return too_old
    if daylit:
        return f"not posted: {daylit}"
    if not asked:
        return None
    if limit and full():
        return over_limit_status(limit)
    return TO_POST


def over_limit_status(limit: int) -> str:
    """The telegram_status of a detection past the night's limit of posts."""
    return f"not posted: over {limit} this night"


def post_detection(target: store.Store, detection: tuple[str, str, str], record: dict, jpeg: bytes, channel, env,
                   others: list[tuple[str, str, str, datetime]], deadline: float) -> None:
    """Post a stored detection (night, obs_id, frame id) naming `others` (`coinciding_around`) and record the
    outcome; once posted, mark it (`mark_posted`) and name those stored meanwhile (`name_arrivals`)."""
    night, obs_id, frame_id = detection
    zone_of, stamp = coincidence.zones_from_env(env), allsky.frame_time(f"image-{frame_id}.jpg")
    caption = telegram_post.detection_caption(record, page_url(env, night, obs_id, frame_id),
                                              *seen_also(obs_id, stamp, others, zone_of))
    posted = telegram_post.post(channel, caption, jpeg, deadline)
    if "telegram_retried" not in record:        # posting again, the morning's build says how it went
        log_failed_post(f"post of {store.detection_key(night, obs_id, frame_id)}", posted.status, POSTED_AGAIN)
    record["telegram_status"] = posted.status
    if posted.message_id is not None:
        record["telegram_message_id"] = posted.message_id
    store.write_json(target, store.detection_key(night, obs_id, frame_id), record)
    mark_unsent(target, night, posted.status)
    if posted.message_id is not None:
        mark_posted(target, night, obs_id, frame_id)
        name_arrivals(target, detection, others, channel, env, deadline)


def say_posts_stop(target: store.Store, detection: tuple[str, str, str], limit: int, channel, env,
                   deadline: float) -> None:
    """Post the message that the observatory's posts stop for the night, once (`first_over_limit`); one that fails is
    logged, not posted again."""
    night, obs_id, frame_id = detection
    if channel is not None and first_over_limit(target, night, obs_id, limit, frame_id):
        notice = telegram_post.over_limit_text(obs_id, limit, page_url(env, night, obs_id, frame_id))
        status = telegram_post.post(channel, notice, deadline=deadline).status
        log_failed_post(f"message that {obs_id}'s posts stop for night {night}", status, "not posted again")


def coinciding_around(target: store.Store, listed: dict, night: str, obs_id: str, stamp: datetime,
                      zone_of) -> list[tuple[str, str, str, datetime]]:
    """(night, obs_id, frame id, camera-clock time) of the other observatories' detections of the same moment as
    obs_id's at `stamp` filed under `night` (`coincidence.coinciding`), and under the nights either side as the page
    links them, those a camera may have filed the moment under (`coincidence.neighbours_filing`: each listing is a
    request on S3), in obs_id and frame order. `listed`: {night: its detections} listed already
    (`night_detections`); the nights listed now are kept in it."""
    found = []
    for each in [night, *coincidence.neighbours_filing(night, stamp, zone_of(obs_id), zone_of.zones)]:
        if each not in listed:
            listed[each] = night_detections(target, each)
        found += [(each, *other) for other in coincidence.coinciding(listed[each], obs_id, stamp, zone_of)]
    return sorted(found, key=lambda other: other[1:3])


def name_in_earlier_posts(target: store.Store, others: list[tuple[str, str, str, datetime]], listed: dict, channel,
                          env, deadline: float) -> None:
    """Edit the posts of `others` (`coinciding_around`), each under its own night, to name the detections of their
    moment stored now; stop at the first edit that fails (`name_in_earlier_post`)."""
    zone_of = coincidence.zones_from_env(env)
    for night, obs_id, frame_id, at in others:
        seen = seen_also(obs_id, at, coinciding_around(target, listed, night, obs_id, at, zone_of), zone_of)
        if not name_in_earlier_post(target, night, obs_id, frame_id, seen, channel, env, deadline):
            return


def daylight_rule(env) -> Callable[[str, datetime], str]:
    """(obs_id, camera-clock time) → why a detection then is not posted ("daylight: the sun at 12.3°, above -6°"), or
    '' — for observatories whose place GUALTA_OBSERVATORIES gives (its night_sun_altitude, else −6°); an unreadable
    GUALTA_OBSERVATORIES leaves every detection to post."""
    try:
        places = passes.observatories_from_env(env)
    except service_env.ServiceConfigError:
        places = {}

    def daylight(obs_id: str, stamp: datetime | None) -> str:
        place = places.get(obs_id)
        if place is None or stamp is None:
            return ""
        why = allsky.sun_up(stamp.replace(tzinfo=place.zone), place.lat, place.lon, place.night_sun_altitude)
        return f"daylight: {why}" if why else ""
    return daylight


def name_arrivals(target: store.Store, detection: tuple[str, str, str], named: list, channel, env,
                  deadline: float) -> None:
    """Edit a post just made to name the other observatories' detections of its moment stored while it was posted
    (their edits of it found no message id yet), beyond those its caption `named`."""
    night, obs_id, frame_id = detection
    zone_of, stamp = coincidence.zones_from_env(env), allsky.frame_time(f"image-{frame_id}.jpg")
    now_stored = coinciding_around(target, {}, night, obs_id, stamp, zone_of)
    if {found[:3] for found in now_stored} - {found[:3] for found in named}:
        name_in_earlier_post(target, night, obs_id, frame_id, seen_also(obs_id, stamp, now_stored, zone_of), channel,
                             env, deadline)


def too_old_to_post(night: str, env, now: datetime) -> bool:
    """Whether a night ended over `telegram_post.within_days` days before the last one did: its reports are stored
    and paged, not posted."""
    days = telegram_post.within_days(env)
    last = service_env.ended_night(now, env)
    return bool(days) and (datetime.strptime(last, "%Y%m%d") - datetime.strptime(night, "%Y%m%d")).days > days


def too_old_status(env) -> str:
    """The telegram_status of a report `too_old_to_post`."""
    return f"not posted: over {telegram_post.within_days(env)} days after the night"


def posts_full(target: store.Store, night: str, obs_id: str, limit: int) -> bool:
    """Whether the observatory has posted `limit` detections of the night already (`store.post_mark_key`), whatever
    their camera times: reports arriving newest first are posted no more than in order. Two reports posted at the
    same instant may both be the last."""
    return len(target.keys(store.post_mark_key(night, obs_id, ""))) >= limit


def mark_posted(target: store.Store, night: str, obs_id: str, frame_id: str) -> None:
    """Leave the mark `posts_full` counts; one that cannot be written is logged (it lets one more post past the
    limit: the post is made and recorded, and must not be made again)."""
    try:
        target.create(store.post_mark_key(night, obs_id, frame_id), store.claim_content())
    except store.StoreError as exc:
        log.warning("night %s: cannot mark %s's post of %s: %s", night, obs_id, frame_id, exc)


def first_over_limit(target: store.Store, night: str, obs_id: str, limit: int, frame_id: str) -> bool:
    """Whether this is the observatory's first detection of the night past the limit to be announced: its mark is
    created now, once whatever the order detections arrive in (one that cannot be written: logged, no message)."""
    try:
        return target.create(store.limit_notice_key(night, obs_id),
                             json.dumps({"limit": limit, "first": frame_id}).encode())
    except store.StoreError as exc:
        log.warning("night %s: cannot mark %s's posts stopped, no message sent: %s", night, obs_id, exc)
        return False


def repost_night(target: store.Store, night: str, env, now: datetime, deadline: float,
                 records: dict | None = None) -> tuple[list[str], bool]:
    """Post again the night's detections whose post failed, or was cut off (still pending REPOST_AFTER_S after it
    was stored), in time order, each as `announce` does, then its end logs whose post failed or was cut off — until
    one fails again (the channel is still down: a post Telegram refuses, `telegram_post.refused`, stays failed and the
    next goes on) or time.monotonic() reaches `deadline` (the rest stay failed). Flood control is waited out when
    the wait ends by `deadline` (the whole budget, not one report's FLOOD_WAIT_BUDGET_S); a longer wait fails the
    post. `records`: the detection records read already ({key: record}); the others are read together and kept in
    it, those reposted updated. Return the keys of the records now posted, and whether it went through the whole night
    (no post failed again but those refused, the time did not run out, the store did not fail)."""
    channel = telegram_post.channel_from_env(env)
    if channel is None:
        return [], True
    run = Reposting(target, night, channel, env, now, deadline, round(max(deadline - time.monotonic(), 0)),
                    night_detections(target, night), {} if records is None else records)
    try:
        finished = repost_detections(run) and repost_end_logs(run)
    except store.StoreError as exc:          # the page is built all the same
        log.warning("night %s: posting again stopped, the store failed: %s", night, exc)
        return run.reposted, False
    return run.reposted, finished


@dataclass
class Reposting:
    """One night's posting again (`repost_night`): what its detections' and end logs' posts share. `stored`: the
    night's detections; `records`: their records ({key: record}); `reposted`: the keys posted so far."""
    target: store.Store
    night: str
    channel: telegram_post.Channel
    env: object
    now: datetime
    deadline: float
    budget_s: float
    stored: list[tuple[str, str, datetime]]
    records: dict
    reposted: list[str] = field(default_factory=list)


def repost_detections(run: Reposting) -> bool:
    """Post again, in time order, the night's detections awaiting their post (`awaits_post`), each as `announce`
    does; False where posting again stopped (`repost_goes_on`, `repost_due`)."""
    night, target = run.night, run.target
    listed = {night: run.stored}                # the nights' detections listed for the posts' coincidences
    keys = [store.detection_key(night, obs_id, frame_id) for obs_id, frame_id, _ in run.stored]
    run.records.update(store.read_json_many(target, [key for key in keys if key not in run.records]))
    zone_of = coincidence.zones_from_env(run.env)
    for obs_id, frame_id, _ in sorted(run.stored, key=lambda found: coincidence.instant(found[2], zone_of(found[0]))):
        key = store.detection_key(night, obs_id, frame_id)
        record = run.records[key]
        if not awaits_post(record, run.now):
            continue
        if time_is_up(run):
            return False
        jpeg = target.get(store.image_key(night, obs_id, frame_id))
        if jpeg is None:
            log.warning("cannot post %s again: its image is missing", key)
            continue
        if not repost_due(run, f"{obs_id}_{frame_id}", record):
            continue
        status = announce(target, (night, obs_id, frame_id), record, jpeg, run.channel, run.env, run.stored, run.now,
                          run.deadline, listed)
        if not repost_goes_on(run, key, status):
            return False
        if status == "sent":                    # else past the night's limit now that its earlier detections came in
            log.info("posted %s late", key)
            run.reposted.append(key)
    return True


def repost_end_logs(run: Reposting) -> bool:
    """Post again the night's end logs awaiting their post (`end_log_awaits_post`), their counts as the page counts
    the detection records; False where posting again stopped (`repost_goes_on`, `repost_due`)."""
    night, target = run.night, run.target
    for key in sorted(key for key in target.keys(f"logs/{night}/") if key.endswith("_end.json")):
        record = store.read_json(target, key)
        if not end_log_awaits_post(record, run.now):
            continue
        if time_is_up(run):
            return False
        if not repost_due(run, key.rpartition("/")[2], record):
            continue
        own = [run.records[store.detection_key(night, obs_id, frame_id)] for obs_id, frame_id, _ in run.stored
               if obs_id == record.get("obs_id")]                  # read already: counted as the page counts
        text = telegram_post.log_text(record, payload.tally(own))
        record["telegram_status"] = telegram_post.post(run.channel, text, deadline=run.deadline).status
        store.write_json(target, key, record)
        mark_unsent(target, night, record["telegram_status"])
        if not repost_goes_on(run, key, record["telegram_status"]):
            return False
        if record["telegram_status"] == "sent":
            run.reposted.append(key)
    return True


def time_is_up(run: Reposting) -> bool:
    """Whether the time for posting the night again has run out (`out_of_time`)."""
    return out_of_time(run.deadline, run.night, run.budget_s,
                       lambda: posts_left(run.target, run.night, run.records, run.now))


def repost_due(run: Reposting, name: str, record: dict) -> bool:
    """Claim this attempt at posting `name` again (`claim_post`, `attempt`) and stamp the record's try; False when
    another process claimed it."""
    if not claim_post(run.target, run.night, f"{name}.{attempt(record, run.now)}"):
        return False
    record["telegram_retried"] = run.now.isoformat(timespec="seconds")
    return True


def repost_goes_on(run: Reposting, key: str, status: str) -> bool:
    """Whether posting again goes on after `key`'s post ended with `status`: one Telegram refused is left for the
    next build (logged), one that failed otherwise stops it (the channel still down: logged)."""
    if telegram_post.refused(status):       # this post only (tried again next time): the channel answers
        log.warning("post of %s refused again (%s): left for the next build", key, failure_text(status))
        return True
    if status.startswith("failed"):
        stopped_posting(run.night, key, status, posts_left(run.target, run.night, run.records, run.now))
        return False
    return True


def repost_unsent(target: store.Store, ended: str, env, now: datetime, records: dict | None = None) -> list[str]:
    """Post again what failed (`repost_night`): the night that ended last (`records`: its detection records, read
    already), then, oldest first, the earlier nights marked unsent (`mark_unsent`), within REPOST_BUDGET_S in all and
    stopping where a post fails again (the channel still down); each night tried keeps its mark while a post of it
    still waits (`settle_unsent`: a cut-off one too), and a marked night too old to post loses it; an earlier night
    with posts made is marked late (`mark_if_late`: its page shows them failed). Return the keys of the records now
    posted."""
    if telegram_post.channel_from_env(env) is None:
        return []
    deadline = time.monotonic() + REPOST_BUDGET_S
    try:
        marked = store.unsent_nights(target)
    except store.StoreError as exc:
        log.warning("cannot list the nights whose posts failed (%s): only night %s's are posted again", exc, ended)
        marked = []
    posted, finished = repost_night(target, ended, env, now, deadline, records)
    settle_unsent(target, ended, now, ended in marked, records)
    earlier = [night for night in marked if night < ended]
    for tried, night in enumerate(earlier):
        if not finished:
            log.warning("night%s %s: failed posts left for the next build, not tried after the stop",
                        "s" if len(earlier) - tried > 1 else "", ", ".join(earlier[tried:]))
            break
        if too_old_to_post(night, env, now):
            log.info("night %s: its failed posts are left unsent, the night is too old to post", night)
            settle_unsent(target, night, now, marked=True, waiting=False)
            continue
        records_read: dict = {}
        reposted, finished = repost_night(target, night, env, now, deadline, records_read)
        posted += reposted
        if reposted:                                    # its page, if any, shows them failed: brought up to date
            mark_if_late(target, night, env, now)
        settle_unsent(target, night, now, marked=True, records=records_read)
    return posted


def settle_unsent(target: store.Store, night: str, now: datetime, marked: bool, records: dict | None = None,
                  waiting: bool | None = None) -> None:
    """Mark a night unsent (`store.unsent_key`) while a post of it still waits (`awaiting_posts`, else `waiting`
    as given), and only then. A mark is taken off before the night is looked at, so a post that fails meanwhile (it
    marks its night once its status is stored) keeps it; `records`: detection records read already during this build
    (those read `pending` are read again: a post in flight then may have failed since). A store that fails leaves the
    night marked (logged)."""
    key = store.unsent_key(night)
    try:
        if marked:
            target.delete(key)
        if waiting is None:
            waiting = awaiting_posts(target, night, now, records)
    except store.StoreError as exc:
        log.warning("night %s: cannot tell whether its posts still wait (%s): marked to be posted again", night, exc)
        waiting = True
    if waiting:
        try:
            target.put(key, b"")
        except store.StoreError as exc:
            log.error("night %s: cannot mark its unsent posts (%s): they are posted again only if it is the night "
                      "a build posts again", night, exc)


def awaiting_posts(target: store.Store, night: str, now: datetime, records: dict | None = None) -> bool:
    """Whether a detection of the night awaits its post (`awaits_post`) or an end log does (`end_log_awaits_post`);
    `records`: detection records read already ({key: record}), the others (and those read `pending`) are read; the
    end logs are read as stored now (`store.read_now`: a post in flight when they were read may have failed since)."""
    keys = [store.detection_key(night, obs_id, frame_id)
            for obs_id, frame_id, _ in coincidence.stored_detections(target, night)]
    found = {key: record for key, record in (records or {}).items()
             if not (isinstance(record, dict) and record.get("telegram_status") == "pending")}
    found.update(store.read_json_many(target, [key for key in keys if key not in found]))
    if any(awaits_post(found.get(key), now) for key in keys):
        return True
    ends = [key for key in target.keys(f"logs/{night}/") if key.endswith("_end.json")]
    return any(end_log_awaits_post(record, now)
               for record in store.read_json_many(store.read_now(target), ends).values())


def mark_unsent(target: store.Store, night: str, status: str) -> None:
    """Mark the night of a post that failed (`store.unsent_key`), once its status is stored; a mark that cannot be
    written is logged (the morning's build posts the night's failed posts again all the same)."""
    if not status.startswith("failed"):
        return
    try:
        target.put(store.unsent_key(night), b"")
    except store.StoreError as exc:
        log.error("night %s: cannot mark its failed post (%s): it is posted again only by the morning's build",
                  night, exc)


def claim_post(target: store.Store, night: str, name: str) -> bool:
    """Claim a post with a create-only key (`store.claim_key`); False, logged, when another process claimed it: two
    page builds at once (`guAlta.py site` beside the server's schedule, a retried Lambda) posted each failed post
    twice, an identical log sent twice at the same instant was posted twice."""
    if target.create(store.claim_key(night, name), store.claim_content()):
        return True
    log.info("night %s: %s is posted by another process", night, name)
    return False


def attempt(record: dict, now: datetime) -> str:
    """What names one attempt at posting a record again: the state it was read in (its last try, else when it was
    received) and the day (a process stopped between its claim and its post holds the record back only that day)."""
    state = re.sub(r"[^0-9]", "", str(record.get("telegram_retried") or record.get("received") or ""))
    return f"{state or 0}-{now:%Y%m%d}"


def out_of_time(deadline: float, night: str, budget_s: float, left: Callable[[], int | None]) -> bool:
    """Whether the time for posting again has run out (logged, with how many posts are `left`)."""
    if time.monotonic() <= deadline:
        return False
    log.warning("night %s: the %g s for posting again are spent: %s left for the next build", night, budget_s,
                posts_text(left()))
    return True


def stopped_posting(night: str, key: str, status: str, left: int | None) -> None:
    """Log that posting again stopped at a post that failed again (the channel still down)."""
    log.warning("night %s: posting again stopped, the post of %s failed again (%s): %s left for the next build",
                night, key, failure_text(status), posts_text(left))


def posts_text(count: int | None) -> str:
    """'12 posts of the night' ('its posts' when they could not be counted)."""
    return "its failed posts" if count is None else f"{count} post{'' if count == 1 else 's'} of the night"


def posts_left(target: store.Store, night: str, records: dict, now: datetime) -> int | None:
    """How many of the night's posts still await (`awaits_post` among its detection `records`, read already, and
    `end_log_awaits_post`); None if the store cannot say."""
    try:
        ends = [key for key in target.keys(f"logs/{night}/") if key.endswith("_end.json")]
        logs = store.read_json_many(target, ends).values()
    except store.StoreError:
        return None
    return sum(awaits_post(record, now) for record in records.values()) + \
        sum(end_log_awaits_post(record, now) for record in logs)


def failure_text(status: str) -> str:
    """What a failed post's log line says of why: the status's reason, and the setting to fix when one is to blame
    (`telegram_post.setting_at_fault`)."""
    reason, setting = status.removeprefix("failed: "), telegram_post.setting_at_fault(status)
    return f"{reason}: check {setting}" if setting else reason


def log_failed_post(what: str, status: str, then: str) -> None:
    """Log a post that failed (nothing for one that did not): what, why and what happens next (`then`). A token or
    chat Telegram refuses fails every post until the setting is fixed: an ERROR naming it once per process, then DEBUG;
    other failures (network, flood control, a post refused) a WARNING each."""
    if not status.startswith("failed"):
        return
    setting = telegram_post.setting_at_fault(status)
    with BLAMING:
        first = setting is not None and setting not in SETTINGS_BLAMED
        SETTINGS_BLAMED.add(setting)
    if setting is None:
        log.warning("%s failed (%s): %s", what, failure_text(status), then)
    elif not first:
        log.debug("%s failed (%s): %s", what, failure_text(status), then)
    else:
        log.error("%s failed (%s): %s. Telegram refuses every post until %s is fixed (this is said once; the "
                  "service keeps storing reports)", what, failure_text(status), then, setting)


def end_log_awaits_post(record, now: datetime) -> bool:
    """Whether a stored log is an end log (its text can be made again) whose post failed or was cut off
    (`post_awaited`)."""
    return isinstance(record, dict) and record.get("log") == "end" and type(record.get("total")) is int \
        and post_awaited(record, now)


def awaits_post(record, now: datetime) -> bool:
    """Whether a detection record asked for a post that failed, or that was cut off (`post_awaited`)."""
    return isinstance(record, dict) and record.get("telegram") is True and post_awaited(record, now)


def post_awaited(record: dict, now: datetime) -> bool:
    """Whether a record's post failed, or was cut off: still pending REPOST_AFTER_S after the record was received
    (the process stopped between storing it and posting it)."""
    status = record.get("telegram_status")
    if isinstance(status, str) and status.startswith("failed"):
        return True
    try:
        received = datetime.fromisoformat(record.get("received"))
    except (TypeError, ValueError):
        return False
    return status == "pending" and received.tzinfo is not None \
        and (now - received).total_seconds() > REPOST_AFTER_S


def page_url(env, night: str, obs_id: str, frame_id: str) -> str | None:
    """Where the daily page shows a detection, when the service knows its site's address."""
    site_url = env.get("GUALTA_SITE_URL")
    return f"{site_url.rstrip('/')}/{night}.html#{obs_id}_{frame_id}" if site_url else None


def night_detections(target: store.Store, night: str) -> list[tuple[str, str, datetime]]:
    """The night's stored detections (coincidence.stored_detections); none if the store cannot be listed (logged)."""
    try:
        return coincidence.stored_detections(target, night)
    except store.StoreError as exc:
        log.warning("cannot look for coincidences in night %s: %s", night, exc)
        return []


def detections_of(target: store.Store, night: str, obs_id: str) -> dict[str, int] | None:
    """How many detections of the night the store holds from obs_id, the candidates it held back apart, as the page
    counts them (`payload.tally`); None if they cannot be read (logged)."""
    try:
        keys = [store.detection_key(night, found, frame)
                for found, frame, _ in coincidence.stored_detections(target, night) if found == obs_id]
        return payload.tally(store.read_json_many(target, keys).values())
    except store.StoreError as exc:
        log.warning("cannot count night %s's detections: %s", night, exc)
        return None


def seen_also(obs_id: str, stamp: datetime, others: list[tuple[str, str, str, datetime]],
              zone_of) -> tuple[list[tuple[str, str]], str]:
    """How a caption names the coincident detections (`coinciding_around`) of obs_id's detection at `stamp`:
    (obs_id, HH:MM:SS) on each camera's clock, with its zone where that clock reads otherwise than this one
    ("22:15:10 BST"), and this clock's zone (" CEST") when one does, else ''."""
    zone = zone_of(obs_id)
    named = [(other, at.strftime("%H:%M:%S") + coincidence.zone_label(at, zone_of(other), zone))
             for _, other, _, at in others]
    own = coincidence.zone_named(stamp, zone, [zone_of(other) for _, other, _, _ in others])
    return named, f" {own}" if own else ""


def name_in_earlier_post(target: store.Store, night: str, obs_id: str, frame_id: str,
                         seen: tuple[list[tuple[str, str]], str], channel, env, deadline: float) -> bool:
    """Rewrite the caption of a detection already posted so that it names `seen` (`seen_also`), the coincident
    detections stored now; False when Telegram refused the edit or could not be reached (logged; nothing else
    changes)."""
    json_key = store.detection_key(night, obs_id, frame_id)
    try:
        record = store.read_json(target, json_key)
    except store.StoreError as exc:
        log.warning("cannot read %s to update its post: %s", json_key, exc)
        return True
    if not isinstance(record, dict) or not isinstance(record.get("telegram_message_id"), int):
        return True
    caption = telegram_post.detection_caption(record, page_url(env, night, obs_id, frame_id), *seen)
    status = telegram_post.edit_caption(channel, record["telegram_message_id"], caption, deadline).status
    if status != "sent":
        log_failed_post(f"edit of {json_key}'s post to name {', '.join(other for other, _ in seen[0])}", status,
                        "not tried again")
        return False
    log.info("post of %s now names %s", json_key, ", ".join(other for other, _ in seen[0]))
    return True


def stored_under_other_night(target: store.Store, item: payload.Detection) -> str | None:
    """The key of the same detection stored under the other night its id allows (`payload.nights_of_id`: sent
    again with the other folder), None if there is none."""
    for night in payload.nights_of_id(item.id):
        key = store.detection_key(night, item.obs_id, item.id)
        if night != item.folder and target.get(key) is not None:
            return key
    return None


def claimed_night(target: store.Store, item: payload.Detection) -> str:
    """The night a detection is stored under: its first send's folder, kept in a create-only claim on its id
    (`store.claim_key`), so two sends naming each of its nights at once store it once (both found the other night
    empty). A claim that does not read (a write under way without hard links) or that the store refuses (logged)
    leaves the folder sent."""
    nights = payload.nights_of_id(item.id)
    key = store.claim_key(min(nights), f"{item.obs_id}_{item.id}.night")
    try:
        if target.create(key, item.folder.encode("ascii")):
            return item.folder
        claimed = (target.get(key) or b"").decode("ascii", "replace")
    except store.StoreError as exc:
        log.warning("cannot claim the night of %s_%s: %s", item.obs_id, item.id, exc)
        return item.folder
    return claimed if claimed in nights else item.folder


def night_for_log(item: payload.Log, now: datetime, zone) -> str:
    """The night a log belongs to: its folder, else the night of its processed time, else of now — times read on
    the observatory's clock (`zone`)."""
    if item.folder:
        return item.folder
    if item.processed:
        processed = datetime.fromisoformat(item.processed.replace("Z", "+00:00"))
        return allsky.night_of(processed.astimezone(zone) if processed.tzinfo else processed)
    return allsky.night_of(now.astimezone(zone))


SERVICE_LOG_FIELDS = {"received", "telegram_status", "telegram_retried"}     # what the service adds to a stored log


def store_log(target: store.Store, item: payload.Log, channel, night: str, env, now: datetime) -> dict:
    """Keep the night's latest start/end log per observatory and post it; an identical re-send is a duplicate."""
    key = store.log_key(night, item.obs_id, item.log)
    record = {**item.record(), "folder": night}
    previous = store.read_json(target, key)
    if isinstance(previous, dict) and {k: v for k, v in previous.items() if k not in SERVICE_LOG_FIELDS} == record:
        return response(200, {"status": "duplicate", "key": key})
    old = channel is not None and too_old_to_post(night, env, now)
    change = hashlib.sha256(json.dumps([previous, record], sort_keys=True, default=str).encode()).hexdigest()[:16]
    record["received"] = now.isoformat(timespec="seconds")
    record["telegram_status"] = too_old_status(env) if old else "pending"
    store.write_json(target, key, record)          # kept before its post is claimed: a failure here is a 503 resent
    log.info("stored log %s", key)
    if channel is not None and not old and not claim_post(target, night, f"{item.obs_id}_{item.log}.{change}"):
        return response(200, {"status": "duplicate", "key": key})   # the same re-send at the same instant: one posts
    if not old:
        counted = item.log == "end" and channel is not None
        text = telegram_post.log_text(record, detections_of(target, night, item.obs_id) if counted else None)
        record["telegram_status"] = telegram_post.post(channel, text).status
        log_failed_post(f"post of {key}", record["telegram_status"], POSTED_AGAIN if item.log == "end" else
                        "stored; not posted again (a start log's news is stale by the morning)")
        store.write_json(target, key, record)
        mark_unsent(target, night, record["telegram_status"])
    mark_if_late(target, night, env, now)
    return response(200, {"status": "stored", "key": key, "telegram": record["telegram_status"]})
