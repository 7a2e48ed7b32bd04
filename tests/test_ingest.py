"""Ingest through the real Lambda handler (aws_lambda/guAlta/app.py): validation, auth, storage, idempotency."""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import struct
import threading
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import boto3
import numpy as np
import pytest

from gualta import ingest, payload, server, service_env, store
from helpers_service import (BUCKET, KEYS, OBSERVATORIES, detection, event, gray_image, jpeg, moto_s3,
                             service_env as make_env, snapshot)

HANDLER = server.load_handler("guAlta")


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A local store configured through the environment, as the Lambda sees it."""
    for key in list(os.environ):
        if key.startswith("GUALTA_"):
            monkeypatch.delenv(key)
    for key, value in make_env(tmp_path / "store").items():
        monkeypatch.setenv(key, value)
    return tmp_path / "store"


def post(body, key=KEYS["obs01"], **options) -> tuple[int, dict]:
    result = HANDLER(event(body, key, **options), None)
    assert result["headers"]["Content-Type"] == "application/json"
    return result["statusCode"], json.loads(result["body"])


# --- the happy path -------------------------------------------------------------------------------------------
def test_detection_is_stored_as_record_and_image(root):
    body = detection(flag="satellite", model="resnet34-v4", streak=(0, 40, 20000, 410))
    status, answer = post(body)
    assert (status, answer["status"]) == (200, "stored")
    record = json.loads((root / "detections/20260916/obs01_20260916231507.json").read_text())
    assert (root / "imgs/20260916/obs01_20260916231507.jpeg").read_bytes() == base64.b64decode(body["img"])
    assert {k: record[k] for k in body if k != "img"} == {k: v for k, v in body.items() if k != "img"}
    assert record["img"] == "imgs/20260916/obs01_20260916231507.jpeg" and record["streak"] == [0, 40, 20000, 410]
    assert record["telegram_status"] == "not requested"
    assert "received" in record and len(json.dumps(record)) < 1000          # no base64 copy in the record


def test_resending_is_harmless(root):
    assert post(detection(score=0.91, seed=1))[1]["status"] == "stored"
    before = snapshot(root)
    status, answer = post(detection(score=0.5, seed=2))             # same (obs_id, id), different content
    assert (status, answer["status"]) == (200, "duplicate")
    assert snapshot(root) == before


def test_a_record_left_empty_or_cut_short_is_replaced_when_sent_again(root):
    """A power cut before the store flushed a record left it empty or cut short: the client's re-send answered
    `duplicate`, and the page showed a card without a score for good."""
    for frame_id, damaged in (("20260916231507", lambda text: b""), ("20260916231600", lambda text: text[:40])):
        body = detection(frame_id=frame_id, score=0.91)
        assert post(body)[1]["status"] == "stored"
        record = root / f"detections/20260916/obs01_{frame_id}.json"
        image = root / f"imgs/20260916/obs01_{frame_id}.jpeg"
        record.write_bytes(damaged(record.read_bytes()))
        image.write_bytes(b"")
        status, answer = post(body)
        assert (status, answer["status"]) == (200, "stored")
        assert json.loads(record.read_text())["score"] == 0.91
        assert image.read_bytes() == base64.b64decode(body["img"])
        assert post(body)[1]["status"] == "duplicate"


def test_a_record_another_request_is_replacing_is_sent_again_later(root):
    """Of two re-sends of a damaged record at once, one replaces it; the other is asked to send again (its next try
    finds the record in place: `duplicate`)."""
    body = detection()
    post(body)
    (root / "detections/20260916/obs01_20260916231507.json").write_bytes(b"")
    today = datetime.now(timezone.utc)
    claim = root / f"telegram/claims/20260916/obs01_20260916231507.repair-{today:%Y%m%d}"
    claim.parent.mkdir(parents=True)
    claim.write_bytes(b"")                                                 # the other request's
    status, answer = post(body)
    assert status == 503 and "retry later" in answer["error"]


def test_same_id_from_two_observatories_are_two_detections(root):
    post(detection("obs01"))
    post(detection("obs02"), key=KEYS["obs02"])
    assert sorted(p.name for p in (root / "detections/20260916").iterdir()) == [
        "obs01_20260916231507.json", "obs02_20260916231507.json"]


def test_frame_after_midnight_belongs_to_the_evening_folder(root):
    body = detection(frame_id="20260917021500")
    assert body["folder"] == "20260916"
    assert post(body)[0] == 200
    assert (root / "detections/20260916/obs01_20260917021500.json").exists()


def test_a_detection_sent_again_under_its_other_night_is_a_duplicate(root):
    """A frame after midnight may name its evening's night or its own date: the first copy wins either way (it was
    stored, posted and paged twice)."""
    first = detection(frame_id="20260917021500")
    assert first["folder"] == "20260916" and post(first)[1]["status"] == "stored"
    before = snapshot(root)
    status, answer = post({**first, "folder": "20260917"})
    assert (status, answer["status"]) == (200, "duplicate")
    assert answer["key"] == "detections/20260916/obs01_20260917021500.json"
    assert snapshot(root) == before


def test_a_detection_sent_under_both_its_nights_at_once_is_stored_once(root, monkeypatch):
    """Two sends of a frame after midnight, one naming each night it allows, both found the other night empty and
    both stored it: twice on the pages, twice posted."""
    together, found_earlier = threading.Barrier(2, timeout=10), ingest.stored_under_other_night

    def in_step(target, item):                                  # both look before either stores
        earlier = found_earlier(target, item)
        together.wait()
        return earlier
    monkeypatch.setattr(ingest, "stored_under_other_night", in_step)
    first = detection(frame_id="20260917021500")
    answers = []
    senders = [threading.Thread(target=lambda body=body: answers.append(post(body)[1]["status"]))
               for body in (first, {**first, "folder": "20260917"})]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    assert sorted(answers) == ["duplicate", "stored"]
    assert len(list(root.glob("detections/*/obs01_20260917021500.json"))) == 1


def test_a_night_claim_that_does_not_read_as_a_night_leaves_the_folder_sent(root):
    """A detection's night claim holding no night it may belong to (damaged, or a write of it cut short) filed the
    detection under a night named by its content, or failed; the folder the client sent counts."""
    claim = root / store.claim_key("20260915", "obs01_20260916231507.night")
    claim.parent.mkdir(parents=True)
    claim.write_bytes(b"junk")
    status, answer = post(detection())
    assert (status, answer["status"]) == (200, "stored")
    assert answer["key"] == "detections/20260916/obs01_20260916231507.json"
    assert (root / answer["key"]).exists()


def test_logs_are_kept_per_night_and_observatory(root):
    start = payload.build_log("start", "obs01", processed="2026-09-16T20:00:03+02:00")
    end = payload.build_log("end", "obs01", total=1440, processed="2026-09-17T08:00:05+02:00")
    assert post(start)[1] == {"status": "stored", "key": "logs/20260916/obs01_start.json",
                              "telegram": "not configured"}
    assert post(end)[1]["key"] == "logs/20260916/obs01_end.json"          # 08:00 belongs to the evening before
    assert json.loads((root / "logs/20260916/obs01_end.json").read_text())["total"] == 1440
    assert post(end)[1]["status"] == "duplicate"
    post({**end, "total": 1500})                                            # a later end log replaces it
    assert json.loads((root / "logs/20260916/obs01_end.json").read_text())["total"] == 1500


def test_a_logs_night_is_read_on_its_observatorys_clock(root, monkeypatch):
    """A log without `folder` (another sender than guAlta's client) is filed by its processed time read in its
    observatory's zone: 08:00 UTC is 19:00 in Sydney, the evening of the 10th — not the 9th, as the UTC wall clock
    or the service's Madrid zone read it."""
    places = {**OBSERVATORIES, "obs03": {"lat": -33.9, "lon": 151.2, "tz": "Australia/Sydney"}}
    monkeypatch.setenv("GUALTA_OBSERVATORIES", json.dumps(places))
    status, answer = post({"log": "start", "obs_id": "obs03", "processed": "2021-11-10T08:00:00Z"}, key=KEYS["obs03"])
    assert status == 200 and answer["key"] == "logs/20211110/obs03_start.json"


def test_a_logs_folder_names_its_night_whatever_its_processed_time(root):
    """A batch run of an old night, or an end log sent late, names its night in `folder`: filed by its processed
    time it would land under the night it was sent in, and that night's page show another night's log."""
    body = {"log": "end", "obs_id": "obs01", "total": 3, "folder": "20240101", "processed": "2024-03-10T08:00:00Z"}
    assert post(body)[1]["key"] == "logs/20240101/obs01_end.json"
    assert json.loads((root / "logs/20240101/obs01_end.json").read_text())["folder"] == "20240101"


def test_a_log_without_folder_or_processed_is_filed_on_its_cameras_clock_now(root, monkeypatch):
    """A bare log is filed by the time it arrives, read on its camera's clock: at 15:30 UTC it is 10:30 in Bogotá,
    still the morning of the night before (the UTC clock had already started the next night)."""
    places = {**OBSERVATORIES, "obs03": {"lat": 4.6, "lon": -74.1, "tz": "America/Bogota"}}
    monkeypatch.setenv("GUALTA_OBSERVATORIES", json.dumps(places))
    now = datetime(2026, 1, 16, 15, 30, tzinfo=timezone.utc)
    result = ingest.handle(event({"log": "start", "obs_id": "obs03"}, KEYS["obs03"]), os.environ, now)
    assert json.loads(result["body"])["key"] == "logs/20260115/obs03_start.json"
    stored = json.loads((root / "logs/20260115/obs03_start.json").read_text())
    assert stored["folder"] == "20260115"                              # the night the service filed it under


def test_base64_encoded_proxy_body_is_accepted(root):
    raw = json.dumps(detection()).encode()
    proxy = event(raw)
    proxy.update(body=base64.b64encode(raw).decode(), isBase64Encoded=True)
    assert HANDLER(proxy, None)["statusCode"] == 200


# --- refusals: status, reason, and nothing written -------------------------------------------------------------
def refused(root, status, body, key=KEYS["obs01"], reason="", **options):
    before = snapshot(root)
    got, answer = post(body, key, **options)
    assert got == status, answer
    assert reason in answer["error"]
    assert snapshot(root) == before


def test_api_key_checks(root):
    refused(root, 401, detection(), key=None, reason="API key")
    refused(root, 401, detection(), key="", reason="API key")
    refused(root, 401, detection(), key=KEYS["obs01"] + "x", reason="API key")
    refused(root, 403, detection("obs02"), key=KEYS["obs01"], reason="its own obs_id")
    refused(root, 403, {**detection(), "obs_id": "<script>"}, reason="its own obs_id")


def test_a_payload_without_obs_id_is_a_400_naming_the_field(root):
    """A payload that left obs_id out was refused 403 "its own obs_id", as if it named another observatory: its
    sender looked for a wrong key rather than the missing field."""
    refused(root, 400, {"log": "start"}, reason="obs_id")
    refused(root, 400, {k: v for k, v in detection().items() if k != "obs_id"}, reason="missing field(s): obs_id")


def test_refused_uploads_are_logged_once_an_hour_with_reason_and_source(root, monkeypatch, caplog):
    """A client with a wrong key, another observatory's obs_id or a bad body was refused (401, 403, 400) and the
    service logged nothing: its operator could not tell why an observatory's reports never arrived. Each refusal is
    a WARNING naming status, reason and client address (never the key nor the body), once an hour per kind: a client
    retrying all night writes one line, then a count."""
    clock = [1000.0]
    monkeypatch.setattr(ingest, "REFUSALS", ingest.Throttle(clock=lambda: clock[0]))
    caplog.set_level(logging.DEBUG, logger="gualta.ingest")
    wrong = {**event(detection(), "wrong-key-0123456"),
             "requestContext": {"identity": {"sourceIp": "203.0.113.7"}}}
    for _ in range(50):
        assert HANDLER(wrong, None)["statusCode"] == 401
    refused(root, 403, detection("obs02"), key=KEYS["obs01"])
    refused(root, 400, "not json")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "refused POST /uploadmeteor from 203.0.113.7: 401 missing or unknown API key (header x-api-key); repeats are "
        "logged once an hour",
        "refused POST /uploadmeteor from 127.0.0.1: 403 this API key may only post for its own obs_id; repeats are "
        "logged once an hour",
        "refused POST /uploadmeteor from 127.0.0.1: 400 body is not valid UTF-8 JSON (JSONDecodeError); repeats are "
        "logged once an hour"]
    assert "wrong-key-0123456" not in caplog.text and KEYS["obs01"] not in caplog.text and "not json" not in caplog.text
    caplog.clear()
    clock[0] += 3601
    HANDLER(wrong, None)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "refused POST /uploadmeteor from 203.0.113.7: 401 missing or unknown API key (header x-api-key); 49 more "
        "since the last such line"]


def test_routing_and_size(root):
    refused(root, 404, detection(), path="/upload", reason="not found")
    refused(root, 404, detection(), path="/uploadmeteor/", reason="not found")
    refused(root, 405, detection(), method="GET", reason="method")
    refused(root, 405, detection(), method="PUT", reason="method")
    refused(root, 413, b"{" + b" " * payload.MAX_BODY_BYTES + b"}", reason="larger")


def test_a_body_of_the_size_limit_is_taken_and_one_byte_more_is_413(root):
    """The limit is MAX_BODY_BYTES itself: a body that size is stored, one byte more is refused 413 for its size."""
    def sized(frame_id: str, size: int) -> bytes:
        raw = json.dumps(detection(frame_id=frame_id)).encode()
        return raw + b" " * (size - len(raw))

    refused(root, 413, sized("20260916231600", payload.MAX_BODY_BYTES + 1), reason="larger")
    assert post(sized("20260916231507", payload.MAX_BODY_BYTES))[1]["status"] == "stored"


def sized_jpeg(size: int) -> bytes:
    """jpeg() padded to exactly `size` bytes with comment segments after its start marker (4 to 65537 bytes each)."""
    data = jpeg()
    pad = size - len(data)
    count = -(-pad // 65537)
    parts = [pad // count + (i < pad % count) for i in range(count)]
    comments = b"".join(b"\xff\xfe" + struct.pack(">H", part - 2) + b"c" * (part - 4) for part in parts)
    return data[:2] + comments + data[2:]


def test_an_image_of_the_size_limit_is_taken_and_one_byte_more_is_refused(root):
    """The service took an image of MAX_JPEG_BYTES + 2 bytes: its bound was on the base64 text (a multiple of 3
    bytes). The limit is MAX_JPEG_BYTES itself."""
    at_limit = sized_jpeg(payload.MAX_JPEG_BYTES)
    assert len(at_limit) == payload.MAX_JPEG_BYTES and payload.decode_image(base64.b64encode(at_limit).decode())
    for size in (payload.MAX_JPEG_BYTES + 1, payload.MAX_JPEG_BYTES + 2):
        img = base64.b64encode(sized_jpeg(size)).decode()
        refused(root, 400, {**detection(), "img": img}, reason=f"img larger than {payload.MAX_JPEG_BYTES} bytes")
    assert post({**detection(), "img": base64.b64encode(at_limit).decode()})[1]["status"] == "stored"


def handled(root, proxy) -> tuple[int, str]:
    before = snapshot(root)
    result = HANDLER(proxy, None)
    assert snapshot(root) == before
    return result["statusCode"], json.loads(result["body"])["error"]


def test_only_a_night_before_the_one_that_ended_last_is_marked_late(root):
    """The morning's build makes the page of the night that ended last: a report for that night is not late (no
    mark left for later builds to look at); one for the night before it is."""
    zone = ZoneInfo("Europe/Madrid")
    morning = datetime(2026, 9, 17, 10, 0, tzinfo=zone)                  # 20260916 ended at 08:00
    result = ingest.handle(event(detection()), os.environ, morning)
    assert json.loads(result["body"])["status"] == "stored" and store.late_nights(store.LocalStore(root)) == []
    next_morning = datetime(2026, 9, 18, 10, 0, tzinfo=zone)
    ingest.handle(event(detection(frame_id="20260916231600")), os.environ, next_morning)
    assert store.late_nights(store.LocalStore(root)) == ["20260916"]


def test_a_log_for_a_night_that_ended_before_the_last_one_is_marked_late(root):
    """A start or end log sent a day late (a client back after an outage) changes its night's page, which the
    scheduled build had made already: unmarked, the page kept showing the night without it."""
    next_morning = datetime(2026, 9, 18, 10, 0, tzinfo=ZoneInfo("Europe/Madrid"))     # 20260917 ended last
    end = {"log": "end", "obs_id": "obs01", "total": 1440, "folder": "20260916"}
    assert json.loads(ingest.handle(event(end), os.environ, next_morning)["body"])["status"] == "stored"
    assert store.late_nights(store.LocalStore(root)) == ["20260916"]


def test_a_late_mark_that_cannot_be_written_loses_nothing(root, caplog):
    """The mark of a late night was written before the post and its failure answered 503: the client's retry was a
    duplicate, and the detection never posted. Now it is written last, and its failure only logged."""
    (root / "pages").mkdir(parents=True)
    (root / "pages" / "late").write_text("in the way")                        # the mark cannot be written
    status, answer = post(detection())
    assert (status, answer["status"]) == (200, "stored")
    assert (root / "detections" / "20260916" / "obs01_20260916231507.json").exists()
    assert "night 20260916: cannot mark it late" in caplog.text


def test_odd_proxy_events_get_4xx_with_their_reason(root):
    """Events as API Gateway, a console test or `sam local invoke` may hand over: a missing key is answered before
    a faulty body (401 comes before 400), a body that is not text or not decodable is named, a malformed event is
    a 400 — never a crash of the function."""
    unkeyed = event(detection(), key=None)
    unkeyed.update(body="!!", isBase64Encoded=True)
    assert handled(root, unkeyed) == (401, "missing or unknown API key (header x-api-key)")
    keyed = event(detection())
    assert handled(root, {**keyed, "body": "!!", "isBase64Encoded": True}) == (400, "body is not valid base64")
    assert handled(root, {**keyed, "body": '{"x": "\ud800"}'}) == (400, "body is not valid UTF-8")
    assert handled(root, {**keyed, "body": detection()}) == (
        400, "body is not text (an API Gateway proxy event's body is a string)")
    assert handled(root, None) == (400, "not an API Gateway proxy event")
    assert handled(root, {**keyed, "headers": ["x-api-key"], "multiValueHeaders": None})[0] == 401


def test_an_api_key_sent_twice_is_refused_whatever_its_values(root):
    """Which of two keys counted depended on the host and on the header's spelling (the last, or the first)."""
    good, bad = KEYS["obs01"], "wrong-key-0123456789"
    for values in ([bad, good], [good, bad], [good, good]):
        proxy = event(detection())
        proxy.update(headers={"x-api-key": values[-1]}, multiValueHeaders={"x-api-key": values})
        assert handled(root, proxy) == (401, "x-api-key sent more than once")
    proxy = event(detection())
    proxy.update(headers={"X-Api-Key": good, "x-api-key": bad},
                 multiValueHeaders={"X-Api-Key": [good], "x-api-key": [bad]})
    assert handled(root, proxy) == (401, "x-api-key sent more than once")
    proxy = event(detection())
    proxy.update(multiValueHeaders=None)                       # a hand-written event with headers only
    assert HANDLER(proxy, None)["statusCode"] == 200


def test_an_event_with_empty_multi_value_headers_reads_its_key_from_headers(root):
    """A console test event or `sam local invoke` may carry `"multiValueHeaders": {}` beside the headers: the key in
    `headers` counts, and the detection is stored rather than refused 401."""
    proxy = event(detection())
    proxy.update(headers={"x-api-key": KEYS["obs01"]}, multiValueHeaders={})
    result = HANDLER(proxy, None)
    assert (result["statusCode"], json.loads(result["body"])["status"]) == (200, "stored")
    assert (root / "detections/20260916/obs01_20260916231507.json").exists()


def declaring(width: int, height: int) -> bytes:
    """A valid 448×224 JPEG whose frame header claims another size."""
    data = bytearray(jpeg())
    at = data.find(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def damaged_scan() -> bytes:
    """A valid 448×224 JPEG whose header reads but whose scan data holds a frame marker (a damaged file)."""
    data = bytearray(jpeg())
    at = data.find(b"\xff\xda") + 300
    data[at:at + 4] = b"\xff\xc0\x00\x00"
    return bytes(data)


BAD = [
    ("not json", b"{\"id\": ", "not valid UTF-8 JSON"),
    ("invalid utf-8", b"{\"obs_id\": \"\xff\xfe\"}", "not valid UTF-8 JSON"),
    ("array", [detection()], "JSON object"),
    ("NaN score", json.dumps(detection()).replace('"score": 0.93', '"score": NaN').encode(), "not valid JSON"),
    ("infinite score", json.dumps(detection()).replace('"score": 0.93', '"score": 1e999').encode(), "score"),
    ("deep nesting", b"[" * 100000 + b"]" * 100000, "not valid UTF-8 JSON"),
    ("integer too long", b'{"score": ' + b"1" * 5000 + b"}", "not valid UTF-8 JSON"),
    ("missing img", {k: v for k, v in detection().items() if k != "img"}, "missing field(s): img"),
    ("unknown field", {**detection(), "extra": 1}, "unknown field(s): extra"),
    ("score as text", {**detection(), "score": "0.9"}, "score"),
    ("score above 1", {**detection(), "score": 1.01}, "score"),
    ("score bool", {**detection(), "score": True}, "score"),
    ("score a huge integer", {**detection(), "score": 10 ** 400}, "score"),   # was a 500: too large for a float
    ("telegram as text", {**detection(), "telegram": "yes"}, "telegram"),
    ("id with slash", {**detection(), "id": "2026/0916231507"}, "id must be"),
    ("id traversal", {**detection(), "id": "../../../etc/pass"}, "id must be"),
    ("impossible id", {**detection(), "id": "20261332231507"}, "id is not a real"),
    ("date mismatch", {**detection(), "date": "2026-09-15"}, "match the id"),
    ("time mismatch", {**detection(), "time": "23:15:08"}, "match the id"),
    ("folder two days off", {**detection(), "folder": "20260914"}, "folder"),
    ("folder not a date", {**detection(), "folder": "2026091a"}, "folder"),
    ("processed not iso", {**detection(), "processed": "yesterday"}, "processed"),
    ("flag markup", {**detection(), "flag": "<b>sat</b>"}, "flag"),
    ("streak of three", {**detection(), "streak": [1, 2, 3]}, "streak must be [x1, y1, x2, y2]"),
    ("streak of five", {**detection(), "streak": [1, 2, 3, 4, 5]}, "streak must be"),
    ("streak with a bool", {**detection(), "streak": [True, 2, 3, 4]}, "streak must be"),
    ("streak with a float", {**detection(), "streak": [1.5, 2, 3, 4]}, "streak must be"),
    ("streak negative", {**detection(), "streak": [-1, 2, 3, 4]}, "streak must be"),
    ("streak too far", {**detection(), "streak": [1, 2, 3, 20001]}, "streak must be"),
    ("streak as text", {**detection(), "streak": "1,2,3,4"}, "streak must be"),
    ("streak as object", {**detection(), "streak": {"x1": 1}}, "streak must be"),
    ("img not base64", {**detection(), "img": "!!!not base64!!!"}, "base64"),
    ("img not jpeg", {**detection(), "img": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 100).decode()}, "JPEG"),
    ("img wrong size", {**detection(), "img": base64.b64encode(jpeg(size=(400, 400))).decode()}, "448x224"),
    ("img colour", {**detection(), "img": base64.b64encode(jpeg(mode="RGB")).decode()}, "grayscale"),
    ("img truncated", {**detection(), "img": base64.b64encode(jpeg()[:3000]).decode()}, "end marker"),
    ("img with bytes after its end", {**detection(), "img": base64.b64encode(jpeg() + b"GARBAGE" * 100).decode()},
     "end marker"),                                         # they were stored and served as the image
    ("img huge", {**detection(), "img": base64.b64encode(b"\xff\xd8\xff" + b"\0" * 300_000).decode()}, "larger"),
    ("img with damaged scan data", {**detection(), "img": base64.b64encode(damaged_scan()).decode()},
     "img is not a decodable JPEG"),                        # its header alone read well
    ("img declaring 60000x60000", {**detection(), "img": base64.b64encode(declaring(60000, 60000)).decode()},
     "448x224"),                                            # Pillow's decompression bomb error: it was a 500
    ("log kind", {"log": "middle", "obs_id": "obs01"}, "log must be"),
    ("end without total", {"log": "end", "obs_id": "obs01"}, "missing field(s): total"),
    ("negative total", {"log": "end", "obs_id": "obs01", "total": -1}, "total"),
    ("total bool", {"log": "end", "obs_id": "obs01", "total": True}, "total"),
    ("start with total", {"log": "start", "obs_id": "obs01", "total": 3}, "unknown field(s): total"),
    ("log processed in year 1", {"log": "start", "obs_id": "obs01", "processed": "0001-01-01T00:00:00"},
     "processed must be a date from 2000 to next year"),
    ("log processed in 999", {"log": "start", "obs_id": "obs01", "processed": "0999-06-01T20:00:00"},
     "processed must be a date from 2000 to next year"),
    ("id in year 1", {**detection(), "id": "00010101000000", "date": "0001-01-01", "time": "00:00:00",
                      "folder": "00010101"}, "id must be a date from 2000 to next year"),
    ("id far ahead", {**detection(), "id": "29990101000000", "date": "2999-01-01", "time": "00:00:00",
                      "folder": "29981231"}, "id must be a date from 2000 to next year"),
    ("log folder far ahead", {"log": "start", "obs_id": "obs01", "folder": "29990101"},
     "folder must be a date from 2000 to next year"),
    ("log processed in the night before 2000", {"log": "start", "obs_id": "obs01", "processed": "2000-01-01T00:30:00Z"},
     "processed falls in night 19991231: nights from 20000101"),   # a night no page can be asked for
]


@pytest.mark.parametrize("name,body,reason", BAD, ids=[b[0] for b in BAD])
def test_invalid_payloads_get_400_with_reason(root, name, body, reason):
    refused(root, 400, body, reason=reason)


def test_a_log_of_the_first_night_pages_can_show_is_taken(root):
    """Nights from payload.FIRST_YEAR's first of January have pages: a log of that very night is stored, not refused
    as one before it."""
    answer = post({"log": "start", "obs_id": "obs01", "folder": f"{payload.FIRST_YEAR}0101"})[1]
    assert answer["key"] == f"logs/{payload.FIRST_YEAR}0101/obs01_start.json"


def test_a_refusals_reason_is_logged_cut_to_200_characters(monkeypatch, caplog):
    """A reason quoting what a client sent (a long unknown field's name) is cut: a hostile client cannot fill the
    service's log; the first 200 characters still say why."""
    monkeypatch.setattr(ingest, "REFUSALS", ingest.Throttle())
    caplog.set_level(logging.WARNING, logger="gualta.ingest")
    ingest.log_refusal("203.0.113.7", 400, "unknown field(s): " + "x" * 300)
    [line] = [r.getMessage() for r in caplog.records]
    assert "unknown field(s): " + "x" * 182 + ";" in line


def test_obs_id_charset_is_enforced_even_for_its_owner(root, monkeypatch):
    monkeypatch.setenv("GUALTA_API_KEYS", "obs01:key-obs01-6f1c2a9d,<script>:key-evil-12345")
    got = HANDLER(event(detection(), KEYS["obs01"]), None)
    assert got["statusCode"] == 500 and "misconfigured" in got["body"]
    assert "key-evil" not in got["body"] and not root.exists()
    with pytest.raises(service_env.ServiceConfigError) as refused_config:
        ingest.parse_api_keys("<script>:key-evil-12345")
    assert "key-evil" not in str(refused_config.value)


def test_api_key_parsing():
    assert ingest.parse_api_keys(" obs01:abcdefgh , obs-2:ijklmnop,obs01:qrstuvwx ") == {
        "abcdefgh": "obs01", "ijklmnop": "obs-2", "qrstuvwx": "obs01"}
    for bad in ("obs01", "obs01:short", "obs 1:abcdefghij", "a:abcdefgh,b:abcdefgh", "obs01:abc defghij",
                "obs01:abcdefgh\u200b"):
        with pytest.raises(service_env.ServiceConfigError):
            ingest.parse_api_keys(bad)


# --- the client's builder ---------------------------------------------------------------------------------------
def test_build_detection_round_trips_and_refuses_bad_input():
    body = payload.build_detection("20260916231507", 0.97, "obs01", jpeg(), telegram=True)
    parsed = payload.validate(payload.parse_body(json.dumps(body)))
    assert isinstance(parsed, payload.Detection)
    assert (parsed.date, parsed.time, parsed.folder, parsed.jpeg) == ("2026-09-16", "23:15:07", "20260916", jpeg())
    from_array = payload.build_detection("20260916231507", 0.5, "obs01", gray_image())
    assert payload.validate(from_array).jpeg[:3] == b"\xff\xd8\xff"
    with pytest.raises(payload.PayloadError):
        payload.build_detection("20260916231507", 1.5, "obs01", jpeg())
    with pytest.raises(payload.PayloadError):
        payload.build_detection("20260916231507", 0.5, "../x", jpeg())
    assert payload.build_detection("20260916231507", 0.5, "obs01", jpeg(), streak=(3, 4, 500, 9))["streak"] == [
        3, 4, 500, 9]
    with pytest.raises(payload.PayloadError):
        payload.build_detection("20260916231507", 0.5, "obs01", jpeg(), streak=(3, 4, 500))
    assert payload.build_log("end", "obs01", total=3)["total"] == 3


def test_scores_of_exactly_0_and_1_are_taken(root):
    """A candidate a check found and flagged may be scored 0.0 by the classifier, a sure one 1.0: both are reports
    the service must take (refused, they were lost)."""
    for frame, score in (("20260916231507", 0.0), ("20260916231600", 1.0)):
        body = payload.build_detection(frame, score, "obs01", jpeg(), flag="satellite")
        assert payload.validate(body).score == score
        assert post(body)[1]["status"] == "stored"


def test_an_id_of_next_years_first_of_january_is_taken_and_one_two_years_ahead_refused(root):
    """At New Year a site east of the service's clock is already in next year: its frames must be taken. Two years
    ahead no camera's clock can be."""
    year = datetime.now().year
    body = payload.build_detection(f"{year + 1}0101001500", 0.9, "obs01", jpeg())
    assert body["folder"] == f"{year}1231" and post(body)[1]["status"] == "stored"
    with pytest.raises(payload.PayloadError, match="id must be a date from 2000 to next year"):
        payload.build_detection(f"{year + 2}0101001500", 0.9, "obs01", jpeg())


def test_default_processed_times_carry_their_offset():
    """A processed time without its offset cannot be placed in time (the service reads a log's night from it): the
    client's default one says its UTC offset."""
    offset = re.compile(r".*T[0-9:]{8}[+-][0-9]{2}:[0-9]{2}")
    assert offset.fullmatch(payload.build_detection("20260916231507", 0.9, "obs01", jpeg())["processed"])
    assert offset.fullmatch(payload.build_log("start", "obs01")["processed"])


def test_build_log_refuses_an_unknown_kind():
    """A log of another kind than start or end was built and sent, to be refused by the service (400) for good."""
    with pytest.raises(payload.PayloadError, match="log must be"):
        payload.build_log("middle", "obs01")
    with pytest.raises(payload.PayloadError, match="missing field"):
        payload.build_log("end", "obs01")


def test_flag_model_and_total_are_taken_up_to_their_limits_and_refused_past_them(root):
    """The limits are the ones documented: a 32-character flag, a 64-character model version, an end log's total of
    MAX_TOTAL are taken; one character or frame more is refused with its reason."""
    frame = "20260916231507"
    assert post(payload.build_detection(frame, 0.9, "obs01", jpeg(), flag="s" * 32, model="m" * 64))[0] == 200
    with pytest.raises(payload.PayloadError, match="flag must be"):
        payload.build_detection(frame, 0.9, "obs01", jpeg(), flag="s" * 33)
    with pytest.raises(payload.PayloadError, match="model must be"):
        payload.build_detection(frame, 0.9, "obs01", jpeg(), model="m" * 65)
    assert post(payload.build_log("end", "obs01", total=payload.MAX_TOTAL))[0] == 200
    with pytest.raises(payload.PayloadError, match="total must be"):
        payload.build_log("end", "obs01", total=payload.MAX_TOTAL + 1)


def test_the_clients_image_of_pure_noise_stays_small():
    """The client encodes at quality 90: a frame of pure noise, the largest a detection's image gets, is ~80 kB (at
    quality 100 it was 159 kB, twice as much to send, store and post for no visible gain)."""
    noise = np.random.default_rng(0).integers(0, 256, (224, 448), dtype=np.uint8)
    encoded = payload.encode_image(noise)
    assert len(encoded) < 100_000 and payload.decode_image(base64.b64encode(encoded).decode()) == encoded


def test_every_not_meteor_flag_is_counted_held_back():
    """The page and the channel count a night alike (`payload.tally`): a candidate held back as lightning, clouds or
    a satellite is no detection; a fireball, or one without a flag, is."""
    records = [{"flag": "lightning"}, {"flag": "cloud"}, {"flag": "satellite"}, {"flag": "fireball"}, {}]
    assert payload.tally(records) == {"detections": 2, "held_back": 3}


# --- AWS flavour: S3 store and SSM-held secrets (moto) -----------------------------------------------------------
def test_ingest_into_s3_with_keys_from_ssm(root, monkeypatch, caplog):
    """…and the keys never reach the log, at DEBUG either (botocore logs the answers it parses)."""
    caplog.set_level(logging.DEBUG)
    with moto_s3() as (endpoint, s3):
        boto3.client("ssm", endpoint_url=endpoint).put_parameter(
            Name="/gualta/api-keys", Value=f"obs01:{KEYS['obs01']}", Type="SecureString")
        caplog.clear()                                                  # the key was this test's own request
        monkeypatch.delenv("GUALTA_API_KEYS")
        monkeypatch.setenv("GUALTA_API_KEYS_PARAM", "/gualta/api-keys")
        monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", endpoint)
        monkeypatch.setenv("GUALTA_STORE", f"s3://{BUCKET}/prod")
        monkeypatch.setenv("GUALTA_S3_ENDPOINT", endpoint)
        service_env._cache.clear()
        assert post(detection())[1]["status"] == "stored"
        assert post(detection())[1]["status"] == "duplicate"
        assert post(detection("obs02"), key=KEYS["obs02"])[0] == 401          # not in the SSM map
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="prod/")["Contents"])
        assert keys == ["prod/detections/20260916/obs01_20260916231507.json",
                        "prod/imgs/20260916/obs01_20260916231507.jpeg", "prod/pages/late/20260916",  # night ended
                        "prod/telegram/claims/20260915/obs01_20260916231507.night"]
        service_env._cache.clear()
    assert "GetParameter" in caplog.text and KEYS["obs01"] not in caplog.text


class FakeSSM:
    """boto3's SSM client, answering get_parameter with the value the test last put."""

    def __init__(self, value: str):
        self.value, self.reads = value, 0

    def get_parameter(self, Name, WithDecryption):  # noqa: N803 (boto3's names)
        self.reads += 1
        return {"Parameter": {"Name": Name, "Value": self.value}}


def test_a_rotated_key_in_ssm_is_taken_within_five_minutes(monkeypatch):
    """An API key rotated in its SSM parameter must reach a running service without a restart: the old value is
    read from the cache for SECRET_TTL_S (5 minutes), the new one after it."""
    ssm, clock = FakeSSM("obs01:old-key-0123456789"), [1000.0]
    monkeypatch.setattr(boto3, "client", lambda service, **_: ssm)
    monkeypatch.setattr(service_env.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(service_env, "_cache", {})
    env = {"GUALTA_API_KEYS_PARAM": "/gualta/api-keys"}
    assert service_env.SECRET_TTL_S == 300
    assert service_env.secret(env, "GUALTA_API_KEYS") == "obs01:old-key-0123456789"
    ssm.value = "obs01:new-key-0123456789"
    clock[0] += 299
    assert service_env.secret(env, "GUALTA_API_KEYS") == "obs01:old-key-0123456789" and ssm.reads == 1
    clock[0] += 2
    assert service_env.secret(env, "GUALTA_API_KEYS") == "obs01:new-key-0123456789" and ssm.reads == 2


def test_a_secret_in_the_environment_is_taken_without_spaces_or_line_end():
    """A token pasted with a space, or read from an env file with its line end, would fail every call made with it:
    spaces and line ends around a secret in the environment are not part of it, as with one from SSM."""
    assert service_env.secret({"GUALTA_TELEGRAM_TOKEN": " tok\n"}, "GUALTA_TELEGRAM_TOKEN") == "tok"
    assert service_env.secret({"GUALTA_API_KEYS": "obs01:abcdefgh\r\n"}, "GUALTA_API_KEYS") == "obs01:abcdefgh"
    assert service_env.secret({}, "GUALTA_TELEGRAM_TOKEN") == ""


def test_a_bucket_that_refuses_answers_503_store_unavailable(root, monkeypatch):
    """S3 refusing every request (NoSuchBucket here; AccessDenied, SlowDown alike), taken for "the key exists" or
    "no such key", answers a detection "being stored by another request" (or, were a read let through, `duplicate`:
    the client drops it) and crashes on a log. It is the store's fault, said so: 503, and the client sends again."""
    with moto_s3() as (endpoint, _):
        monkeypatch.setenv("GUALTA_STORE", "s3://no-such-bucket/prod")
        monkeypatch.setenv("GUALTA_S3_ENDPOINT", endpoint)
        for body in (detection(), payload.build_log("end", "obs01", total=3)):
            assert post(body) == (503, {"error": "store unavailable, retry later"})


def test_unreachable_store_answers_503_not_a_crash(root, monkeypatch):
    monkeypatch.setenv("GUALTA_STORE", f"s3://{BUCKET}")
    monkeypatch.setenv("GUALTA_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    status, answer = post(detection())
    assert status == 503 and "retry" in answer["error"]
    assert store.LocalStore(root).keys() == []
