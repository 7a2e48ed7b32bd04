"""Telegram posts with python-telegram-bot against a local Bot API stand-in: what the channel would show."""
from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from gualta import ingest, payload, server, site, store, telegram_post
from helpers_service import (KEYS, OBSERVATORIES, GrantedStore, TelegramStandIn, detection, event, free_port,
                             service_env)

HANDLER = server.load_handler("guAlta")
TOKEN = "123456:TEST-token-never-logged"


@pytest.fixture
def bot_api():
    stand_in = TelegramStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture
def root(tmp_path, monkeypatch, bot_api):
    for key in [k for k in os.environ if k.startswith("GUALTA_")]:
        monkeypatch.delenv(key)
    env = service_env(tmp_path / "store", GUALTA_TELEGRAM_TOKEN=TOKEN, GUALTA_TELEGRAM_CHAT="@gualta_meteors",
                      GUALTA_TELEGRAM_API=bot_api.base_url, GUALTA_SITE_URL="https://meteors.example.org",
                      GUALTA_TELEGRAM_WITHIN_DAYS="0")                # the nights below, whatever today is
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return tmp_path / "store"


def post(body, key=KEYS["obs01"]) -> dict:
    result = HANDLER(event(body, key), None)
    assert result["statusCode"] == 200, result["body"]
    return json.loads(result["body"])


def stored(root, night="20260916", name="obs01_20260916231507") -> dict:
    return json.loads((root / f"detections/{night}/{name}.json").read_text())


def test_detection_posts_photo_with_caption(root, bot_api):
    body = detection(telegram=True, score=0.974, flag="satellite")
    assert post(body)["telegram"] == "sent"
    [call] = bot_api.calls
    assert (call["token"], call["method"]) == (TOKEN, "sendPhoto")
    fields = call["fields"]
    assert fields["chat_id"] == "@gualta_meteors"
    assert fields["photo"] == base64.b64decode(body["img"])                   # the very JPEG the client sent
    assert fields["caption"].splitlines() == [
        "🛰️ Possible satellite or plane", "Observatory: obs01", "Local time: 2026-09-16 23:15:07", "Score: 0.97",
        "Held back by the observatory: its trail goes on in another frame, or its own lights show it (reported as "
        "asked)", "https://meteors.example.org/20260916.html#obs01_20260916231507"]
    assert "parse_mode" not in fields                                         # plain text: nothing is markup
    assert stored(root)["telegram_status"] == "sent"


@pytest.mark.parametrize("flag, headline, why", [
    (None, "☄️ Meteor detected", None),
    ("streak", "☄️ Meteor detected", "Found by its thin streak"),
    ("fireball", "🔥 Fireball detected", "A bright, saturated streak"),
    ("satellite", "🛰️ Possible satellite or plane", "Held back by the observatory: its trail"),
    ("cloud", "☁️ Possible clouds", "Held back by the observatory: clouds change"),
    ("sprite", "☄️ Meteor detected", "Flag: sprite")])
def test_a_caption_says_what_its_flag_means(flag, headline, why):
    """A satellite or clouds that the client held back and reported anyway were announced "Meteor detected" with a
    bare "Flag: satellite": the headline and a line now say what the flag means (an unknown one is named as it is)."""
    record = {"obs_id": "obs01", "date": "2026-09-16", "time": "23:15:07", "score": 0.96,
              **({"flag": flag} if flag else {})}
    lines = telegram_post.detection_caption(record, None).splitlines()
    assert lines[0] == headline
    assert lines[4:] == ([] if why is None else [next(line for line in lines[4:] if line.startswith(why))])


def test_every_flag_the_client_sends_has_a_meaning_for_the_reader():
    from gualta import detect
    assert {detect.SATELLITE, detect.CLOUD, detect.LIGHTNING, detect.FIREBALL, detect.STREAK} == \
        set(payload.FLAG_MEANINGS)
    assert {detect.SATELLITE, detect.CLOUD, detect.LIGHTNING} == payload.NOT_METEOR_FLAGS


def test_a_detection_seen_from_another_observatory_says_so(root, bot_api):
    """The later of two observatories' detections of one moment names the earlier one (each clock in its zone)."""
    post(detection("obs02", "20260916231520", telegram=False), KEYS["obs02"])          # 13 s later, stored first
    post(detection("obs02", "20260916231600", telegram=False), KEYS["obs02"])          # 53 s later: another moment
    post(detection("obs01", "20260916230000", telegram=False))                          # obs01's own: not another
    post(detection(telegram=True))                                                      # obs01 at 23:15:07
    [call] = bot_api.calls
    assert "Also seen from obs02 at 23:15:20" in call["fields"]["caption"].splitlines()
    assert call["fields"]["caption"].count("Also seen from") == 1


def test_earlier_posts_are_edited_to_name_the_detections_of_the_same_moment_stored_since(root, bot_api):
    """The first observatory to report a shared meteor posts alone; each later report rewrites its caption."""
    post(detection(telegram=True))                                                      # obs01 at 23:15:07
    post(detection("obs02", "20260916231600", telegram=True), KEYS["obs02"])           # 53 s later: another moment
    post(detection("obs01", "20260916231515", telegram=True))                          # obs01's own next frame
    assert bot_api.sent("editMessageCaption") == []
    post(detection("obs02", "20260916231520", telegram=True), KEYS["obs02"])           # the same meteor, 13 s later
    later = bot_api.sent("sendPhoto")[-1]
    assert later["caption"].splitlines()[4:6] == ["Also seen from obs01 at 23:15:07, 23:15:15",    # one line each
                                                  "https://meteors.example.org/20260916.html#obs02_20260916231520"]
    first_id = stored(root)["telegram_message_id"]
    own_id = stored(root, name="obs01_20260916231515")["telegram_message_id"]
    assert [(int(edit["message_id"]), edit["chat_id"]) for edit in bot_api.sent("editMessageCaption")] == [
        (first_id, "@gualta_meteors"), (own_id, "@gualta_meteors")]
    assert bot_api.sent("editMessageCaption")[0]["caption"].splitlines() == [
        "☄️ Meteor detected", "Observatory: obs01", "Local time: 2026-09-16 23:15:07", "Score: 0.93",
        "Also seen from obs02 at 23:15:20", "https://meteors.example.org/20260916.html#obs01_20260916231507"]
    assert "parse_mode" not in bot_api.sent("editMessageCaption")[0]

    post(detection("obs03", "20260916231525", telegram=False), KEYS["obs03"])           # not posted itself: still named
    assert len(bot_api.sent("sendPhoto")) == 4
    edits = {int(edit["message_id"]): edit["caption"].splitlines()
             for edit in bot_api.sent("editMessageCaption")[2:]}
    later_id = stored(root, name="obs02_20260916231520")["telegram_message_id"]
    assert sorted(edits) == sorted([first_id, own_id, later_id])
    assert [line for line in edits[first_id] if line.startswith("Also")] == [
        "Also seen from obs02 at 23:15:20", "Also seen from obs03 at 23:15:25"]
    assert [line for line in edits[later_id] if line.startswith("Also")] == [
        "Also seen from obs01 at 23:15:07, 23:15:15", "Also seen from obs03 at 23:15:25"]


@pytest.fixture
def london_obs03(monkeypatch):
    """obs03's camera keeps London time, an hour behind the others' Madrid time."""
    places = {**OBSERVATORIES, "obs03": {"lat": 51.48, "lon": 0.0, "tz": "Europe/London"}}
    monkeypatch.setenv("GUALTA_OBSERVATORIES", json.dumps(places))


def test_a_moment_named_across_time_zones_says_which_clock(root, bot_api, london_obs03):
    """The same meteor is 22:15:10 on obs03's London clock and 23:15:07 on obs01's Madrid one: captions named it
    "at 22:15:10" under "Local time: 23:15:07", an hour apart to a reader. Where a named clock reads otherwise,
    the zones are said; between clocks that read alike, nothing changes."""
    post(detection(telegram=True))                                                      # obs01 at 23:15:07 (Madrid)
    post(detection("obs02", "20260916231512", telegram=True), KEYS["obs02"])           # Madrid too
    assert bot_api.sent("sendPhoto")[-1]["caption"].splitlines()[2:5] == [
        "Local time: 2026-09-16 23:15:12", "Score: 0.93", "Also seen from obs01 at 23:15:07"]
    post(detection("obs03", "20260916221510", telegram=True), KEYS["obs03"])           # London
    assert bot_api.sent("sendPhoto")[-1]["caption"].splitlines()[2:6] == [
        "Local time: 2026-09-16 22:15:10 BST", "Score: 0.93", "Also seen from obs01 at 23:15:07 CEST",
        "Also seen from obs02 at 23:15:12 CEST"]
    first = bot_api.captions[stored(root)["telegram_message_id"]].splitlines()
    assert first[2:6] == ["Local time: 2026-09-16 23:15:07 CEST", "Score: 0.93", "Also seen from obs02 at 23:15:12",
                          "Also seen from obs03 at 22:15:10 BST"]


@pytest.mark.parametrize("first", ["obs01", "obs03"])
def test_a_meteor_filed_under_another_night_by_a_camera_on_utc_is_named_both_ways(root, bot_api, monkeypatch, first):
    """Tokyo's 20:30 is 11:30 UTC: a camera kept on UTC files it under the night before (its folder changes at noon
    on its clock), a camera on Tokyo's time under that night. The page linked the two; the captions looked only in
    their own night's folder, so the meteor was posted twice, neither post naming the other observatory."""
    tokyo = {"lat": 35.68, "lon": 139.69, "elevation_m": 40}
    monkeypatch.setenv("GUALTA_OBSERVATORIES", json.dumps({"obs01": {**tokyo, "tz": "Asia/Tokyo"},
                                                            "obs03": {**tokyo, "tz": "UTC"}}))
    reports = {"obs01": detection("obs01", "20260916203020", telegram=True),
               "obs03": detection("obs03", "20260916113010", telegram=True, folder="20260915")}
    second = "obs03" if first == "obs01" else "obs01"
    for obs_id in (first, second):
        assert post(reports[obs_id], KEYS[obs_id])["telegram"] == "sent"
    named = {"obs01": "Also seen from obs03 at 11:30:10 UTC", "obs03": "Also seen from obs01 at 20:30:20 JST"}
    assert named[second] in bot_api.sent("sendPhoto")[-1]["caption"].splitlines()
    [edit] = bot_api.sent("editMessageCaption")
    night = {"obs01": "20260916", "obs03": "20260915"}[first]
    assert int(edit["message_id"]) == stored(root, night, f"{first}_{reports[first]['id']}")["telegram_message_id"]
    assert named[first] in edit["caption"].splitlines()
    assert edit["caption"].endswith(f"/{night}.html#{first}_{reports[first]['id']}")     # its own night's page


def test_a_post_lists_a_neighbouring_night_only_where_a_camera_may_have_filed_its_moment_there(root, bot_api,
                                                                                               monkeypatch):
    """Every post listed the nights either side of its own for detections of its moment (2 more LISTs on S3 each, and
    2 more for the arrivals after it), though no camera files Madrid's 23:15 under another night: a neighbouring night
    is listed only where a known camera clock reads the moment (± 30 s) on the other side of noon, where AllSky's
    folder changes — a clock on UTC in Tokyo's evening, Madrid's own clock just after noon."""
    listed, keys = [], store.LocalStore.keys
    monkeypatch.setattr(store.LocalStore, "keys", lambda self, prefix="", recursive=True: (
        listed.append(prefix), keys(self, prefix, recursive))[1])

    def nights_listed(body, key=KEYS["obs01"]) -> set[str]:
        listed.clear()
        post(body, key)
        return {prefix.split("/")[1] for prefix in listed if prefix.startswith("detections/")}

    assert nights_listed(detection(telegram=True)) == {"20260916"}                  # 23:15 on the Madrid clocks
    assert nights_listed(detection(frame_id="20260917120010", telegram=True)) == {"20260916", "20260917"}
    tokyo = {"lat": 35.68, "lon": 139.69, "elevation_m": 40}
    monkeypatch.setenv("GUALTA_OBSERVATORIES", json.dumps({"obs01": {**tokyo, "tz": "Asia/Tokyo"},
                                                            "obs03": {**tokyo, "tz": "UTC"}}))
    assert nights_listed(detection("obs01", "20260916203020", telegram=True)) == {"20260915", "20260916"}  # 11:30 UTC


def test_failed_posts_are_posted_again_in_the_order_they_happened(root, bot_api, london_obs03):
    """obs03's 22:40 on its London clock came after obs01's 23:15 on its Madrid one (21:40 and 21:15 UTC): posted
    again in the order of the camera clocks' text, the channel's late posts were out of order."""
    bot_api.fail_status = 500
    post(detection(telegram=True))                                                      # 21:15 UTC
    post(detection("obs03", "20260916224000", telegram=True), KEYS["obs03"])           # 21:40 UTC
    bot_api.fail_status = None
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == [
        "detections/20260916/obs01_20260916231507.json", "detections/20260916/obs03_20260916224000.json"]


def test_only_posts_that_were_sent_are_edited_and_a_failed_edit_changes_nothing(root, bot_api, caplog):
    post(detection(telegram=False))                                                     # never posted
    post(detection("obs03", "20260916231510", telegram=True), KEYS["obs03"])           # posted
    post(detection("obs03", "20260916231512", telegram=True), KEYS["obs03"])           # posted
    bot_api.fail_status, bot_api.fail_methods = 500, {"editMessageCaption"}
    before = sorted((path.name, path.read_bytes()) for path in root.rglob("*.json"))
    caplog.set_level(logging.WARNING)
    answer = post(detection("obs02", "20260916231520", telegram=True), KEYS["obs02"])
    assert answer == {"status": "stored", "key": "detections/20260916/obs02_20260916231520.json", "telegram": "sent"}
    [edit] = bot_api.sent("editMessageCaption")                         # obs03's first post; none after a failure
    assert int(edit["message_id"]) == stored(root, name="obs03_20260916231510")["telegram_message_id"]
    assert "edit of detections/20260916/obs03_20260916231510.json's post to name obs01, obs02 failed (NetworkError): " \
        "not tried again" in caplog.text
    after = sorted((path.name, path.read_bytes()) for path in root.rglob("*.json")
                   if path.name != "obs02_20260916231520.json")
    assert after == before

    bot_api.fail_methods = {"sendPhoto"}                                # a channel that fails: no edits tried
    assert post(detection("obs02", "20260916231521", telegram=True), KEYS["obs02"])["telegram"].startswith("failed")
    assert len(bot_api.sent("editMessageCaption")) == 1


def test_an_edit_that_changes_nothing_is_no_failure(bot_api):
    """Two reports of one moment that cross each name the other in their own posts; the edit that follows finds the
    caption already right, which Telegram refuses as "not modified": that is success, and other refusals are not."""
    channel = telegram_post.Channel(token=TOKEN, chat_id="@gualta_meteors", base_url=bot_api.base_url)
    posted = telegram_post.post(channel, "☄️ Meteor detected\nAlso seen from obs02 at 23:15:20", b"jpeg")
    assert posted.status == "sent" and posted.message_id is not None
    assert telegram_post.edit_caption(channel, posted.message_id, "☄️ Meteor detected\nAlso seen from obs02 at "
                                      "23:15:20") == telegram_post.Posted("sent", posted.message_id)
    assert [call["method"] for call in bot_api.calls] == ["sendPhoto", "editMessageCaption"]
    bot_api.fail_status, bot_api.fail_methods = 400, {"editMessageCaption"}
    assert telegram_post.edit_caption(channel, posted.message_id, "other").status == "failed: BadRequest"


def test_each_post_and_edit_closes_the_http_clients_it_opened(bot_api, monkeypatch):
    """Every post and caption edit made a Bot whose two HTTP clients were never closed (`Bot.shutdown` does nothing
    for a Bot never initialized): a long-running service left them to the garbage collector, sent or failed."""
    import httpx

    opened, build = [], httpx.AsyncClient.__init__

    def recorded(client, *args, **kwargs):
        opened.append(client)
        build(client, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "__init__", recorded)
    channel = telegram_post.Channel(token=TOKEN, chat_id="@gualta_meteors", base_url=bot_api.base_url)
    posted = telegram_post.post(channel, "☄️ Meteor detected", b"jpeg")
    assert posted.status == "sent" and telegram_post.edit_caption(channel, posted.message_id, "x").status == "sent"
    bot_api.fail_status, bot_api.fail_methods = 400, {"sendMessage"}
    assert telegram_post.post(channel, "night 20260916 ended").status == "failed: BadRequest"
    assert len(opened) == 6 and all(client.is_closed for client in opened)


def test_a_moment_seen_from_many_observatories_still_fits_a_caption(root, bot_api):
    """A fireball over a large network: the caption names as many observatories as Telegram's 1,024 characters
    allow, then how many more, and keeps the link to the page."""
    seen = [(f"station-{n:02d}-long-observatory-name", "23:15:20") for n in range(40)]
    record = {"obs_id": "obs01", "date": "2026-09-16", "time": "23:15:07", "score": 0.93, "flag": "fireball"}
    url = "https://meteors.example.org/20260916.html#obs01_20260916231507"
    caption = telegram_post.detection_caption(record, url, seen)
    lines = caption.splitlines()
    named = [line for line in lines if line.startswith("Also seen from station")]
    assert 1024 - len(named[0]) < telegram_post.telegram_length(caption) <= 1024       # not one more would fit
    assert len(named) < 40
    assert lines[-2:] == [f"Also seen from {40 - len(named)} more observatories", url]
    assert telegram_post.detection_caption(record, url, seen[:3]).count("Also seen from station") == 3
    twice = telegram_post.detection_caption(record, url, [("obs02", "23:15:05"), ("obs02", "23:15:35")] + seen)
    assert "Also seen from obs02 at 23:15:05, 23:15:35" in twice                # one observatory, one line
    named_twice = [line for line in twice.splitlines() if line.startswith("Also seen from station")]
    assert twice.splitlines()[-2] == f"Also seen from {40 - len(named_twice)} more observatories"   # not detections
    channel = telegram_post.Channel(token=TOKEN, chat_id="@gualta_meteors", base_url=bot_api.base_url)
    assert telegram_post.post(channel, caption, b"jpeg").status == "sent"
    assert telegram_post.post(channel, "☄" * 1025, b"jpeg").status == "failed: BadRequest"      # as Telegram would


def test_a_fireball_caption_counts_its_emoji_as_telegram_does():
    """Telegram counts a caption in UTF-16 units, in which the fireball's 🔥 is two: counted by characters, a caption
    one unit too long was sent, and the fireball seen from 17 observatories was refused, not posted."""
    record = {"obs_id": "obs01", "date": "2026-09-16", "time": "23:15:07", "score": 0.93, "flag": "fireball"}
    url = "https://meteors.example.org/20260916.html#obs01_20260916231507"
    seen = [(f"station-{n:02d}-montsec-01", "23:15:20") for n in range(17)]     # by characters, 1,024 exactly
    caption = telegram_post.detection_caption(record, url, seen)
    assert len(caption.encode("utf-16-le")) // 2 <= 1024
    assert caption.splitlines()[-2] == "Also seen from 1 more observatory"


def test_flood_control_is_waited_out_within_its_budget(root, bot_api):
    """A burst (a night's reports delivered at once after an outage, or by a morning batch) meets Telegram's flood
    control: a short wait is waited out and the post sent, so the client's next report waits too; a wait longer than
    the budget is not (the detection is stored, its post recorded as failed)."""
    bot_api.flood = [1]
    assert post(detection(telegram=True))["telegram"] == "sent"
    assert [call["method"] for call in bot_api.calls] == ["sendPhoto", "sendPhoto"]
    bot_api.flood = [int(telegram_post.FLOOD_WAIT_BUDGET_S) + 30]
    assert post(detection(frame_id="20260916231600", telegram=True))["telegram"] == "failed: RetryAfter"
    assert len(bot_api.calls) == 3
    assert stored(root, name="obs01_20260916231600")["telegram_status"] == "failed: RetryAfter"


def test_a_flood_wait_given_as_a_timedelta_is_waited_out(bot_api, monkeypatch):
    """python-telegram-bot gives RetryAfter's wait as a timedelta with PTB_TIMEDELTA=true (always, from its next
    major version): the wait is waited out as one given in seconds, and the post sent."""
    from telegram.error import RetryAfter

    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    assert telegram_post.flood_wait_s(RetryAfter(timedelta(seconds=3))) == 3.0
    bot_api.flood = [1]
    channel = telegram_post.Channel(token=TOKEN, chat_id="@gualta_meteors", base_url=bot_api.base_url)
    assert telegram_post.post(channel, "🔭 obs01: detection started").status == "sent"
    assert [call["method"] for call in bot_api.calls] == ["sendMessage", "sendMessage"]


def test_a_report_and_the_edits_it_makes_share_one_flood_control_budget(root, bot_api, monkeypatch):
    """The third observatory to report a meteor posts and edits two earlier posts: under flood control each call
    waiting out its own budget took such a report past the Lambda's 30 s (killed before its last edits). The post and
    its edits now wait FLOOD_WAIT_BUDGET_S in all: the edit whose wait would end past it fails and stops the edits."""
    for obs_id, stamp in (("obs01", "20260916231507"), ("obs02", "20260916231510")):
        post(detection(obs_id, stamp, telegram=True), KEYS[obs_id])
    monkeypatch.setattr(telegram_post, "FLOOD_WAIT_BUDGET_S", 5.9)     # the waits end at 2 s, 4 s (+ the calls' time)
    earlier = len(bot_api.calls)
    bot_api.flood = [2, 0, 2, 0, 2]                           # each call is first asked to wait two seconds
    assert post(detection("obs03", "20260916231512", telegram=True), KEYS["obs03"])["telegram"] == "sent"
    assert [call["method"] for call in bot_api.calls[earlier:]] == [
        "sendPhoto", "sendPhoto", "editMessageCaption", "editMessageCaption", "editMessageCaption"]
    first, second = (stored(root, name=name)["telegram_message_id"]
                     for name in ("obs01_20260916231507", "obs02_20260916231510"))
    assert [int(call["fields"]["message_id"]) for call in bot_api.calls[earlier + 2:]] == [first, first, second]
    assert bot_api.captions[second].count("Also seen from") == 1          # its wait would end past the budget


NINE_AM_AFTER = datetime(2026, 9, 17, 7, 0, tzinfo=timezone.utc)          # the next morning, 09:00 in Madrid


def test_posts_that_failed_are_posted_late_by_the_scheduled_job(root, bot_api, caplog):
    """A post Telegram refused (flood control, an outage) or that was cut off (still pending long after it was
    stored) is posted at the morning's scheduled job, in time order, naming the detections of its moment, whose posts
    then name it; the job stops at the first post that fails again, and posts nothing twice."""
    bot_api.fail_status, bot_api.fail_methods = 500, {"sendPhoto"}
    post(detection(telegram=True))                                                      # obs01 23:15:07: failed
    post(detection("obs02", "20260916231520", telegram=True), KEYS["obs02"])           # its meteor, from obs02: failed
    bot_api.fail_status = None
    post(detection("obs03", "20260916231525", telegram=True), KEYS["obs03"])           # sent, names both
    post(detection("obs01", "20260916231600", telegram=False))                          # never asked for
    for frame_id, received in (("20260917031233", "2026-09-17T01:13:00+00:00"),       # cut off at 03:13
                               ("20260917065930", "2026-09-17T06:59:45+00:00")):      # in flight right now
        post(detection("obs01", frame_id, telegram=True))
        path = root / f"detections/20260916/obs01_{frame_id}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "telegram_status": "pending",
                                    "received": received}))
    assert [stored(root, name=n)["telegram_status"] for n in ("obs01_20260916231507", "obs02_20260916231520")] \
        == ["failed: NetworkError"] * 2

    bot_api.fail_status = 500                                                           # still down in the morning
    calls = len(bot_api.calls)
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == []
    assert len(bot_api.calls) == calls + 1                                             # one try, then it stops
    assert stored(root)["telegram_retried"] == "2026-09-17T07:00:00+00:00"

    bot_api.fail_status = None
    caplog.set_level(logging.INFO)
    summary = site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert summary["reposted"] == ["detections/20260916/obs01_20260916231507.json",
                                   "detections/20260916/obs02_20260916231520.json",
                                   "detections/20260916/obs01_20260917031233.json"]
    late = bot_api.sent("sendPhoto")[-3:]
    assert [photo["photo"] for photo in late] == [
        (root / f"imgs/20260916/{name}.jpeg").read_bytes()
        for name in ("obs01_20260916231507", "obs02_20260916231520", "obs01_20260917031233")]
    assert [line for line in late[0]["caption"].splitlines() if line.startswith("Also")] == [
        "Also seen from obs02 at 23:15:20", "Also seen from obs03 at 23:15:25"]
    for name in ("obs01_20260916231507", "obs02_20260916231520", "obs01_20260917031233"):
        record = stored(root, name=name)
        assert record["telegram_status"] == "sent" and isinstance(record["telegram_message_id"], int)
    first_id = stored(root)["telegram_message_id"]
    assert "Also seen from obs01 at 23:15:07" in bot_api.captions[stored(root, name="obs03_20260916231525")
                                                                  ["telegram_message_id"]]
    assert "obs02 at 23:15:20" in bot_api.captions[first_id]
    assert stored(root, name="obs01_20260917065930")["telegram_status"] == "pending"   # not taken from its ingest
    assert "posted to Telegram" in (root / "20260916.html").read_text()

    calls = len(bot_api.calls)
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == []
    assert len(bot_api.calls) == calls                                                 # nothing is posted twice


def test_a_record_replaced_after_a_power_cut_is_posted_only_if_it_never_was(root, bot_api):
    """A record left empty by a power cut is replaced by the client's re-send (it answered `duplicate`, and the
    morning's build passed it by): posted then if its post never was made, not twice if it was."""
    posted, unposted = detection(telegram=True), detection(frame_id="20260916231600", telegram=True)
    assert post(posted)["telegram"] == "sent"
    bot_api.fail_status = 500
    assert post(unposted)["telegram"].startswith("failed")
    bot_api.fail_status = None
    for name in ("obs01_20260916231507", "obs01_20260916231600"):
        (root / f"detections/20260916/{name}.json").write_bytes(b"")
    calls = len(bot_api.calls)
    assert post(posted) == {"status": "stored", "key": "detections/20260916/obs01_20260916231507.json",
                            "telegram": "sent"}
    assert len(bot_api.calls) == calls
    assert post(unposted)["telegram"] == "sent"
    assert [call["method"] for call in bot_api.calls[calls:]] == ["sendPhoto"]
    assert [stored(root, name=name)["telegram_status"] for name in ("obs01_20260916231507", "obs01_20260916231600")] \
        == ["sent", "sent"]


def test_a_post_telegram_refuses_holds_back_neither_the_posts_after_it_nor_earlier_nights(root, bot_api):
    """A post Telegram refuses for itself (its photo) stopped posting again at that post, as if the channel were
    down: every later post of its night, and every earlier night marked unsent, waited for good."""
    bot_api.fail_status = 500
    post(detection(frame_id="20260915231000", telegram=True))                          # an earlier night: failed
    bot_api.fail_status, bot_api.refused = None, {"23:15:07"}
    assert post(detection(telegram=True))["telegram"] == "failed: BadRequest"        # refused whenever it is sent
    bot_api.fail_status = 500
    post(detection(frame_id="20260916233000", telegram=True))                          # failed: the channel down
    bot_api.fail_status = None
    summary = site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert summary["reposted"] == ["detections/20260916/obs01_20260916233000.json",
                                   "detections/20260915/obs01_20260915231000.json"]
    assert stored(root)["telegram_status"] == "failed: BadRequest"                    # tried again next time
    assert (root / "telegram" / "unsent" / "20260916").exists()
    assert not (root / "telegram" / "unsent" / "20260915").exists()


def test_a_chat_telegram_refuses_stops_posting_again_at_the_first_post(root, bot_api):
    """A BadRequest about the chat itself (a wrong GUALTA_TELEGRAM_CHAT, the bot's rights taken) is the channel's,
    not one post's: posting again stops there, as when the channel is down."""
    bot_api.fail_status, bot_api.fail_description = 400, "Bad Request: chat not found"
    for frame_id in ("20260916231507", "20260916233000"):
        assert post(detection(frame_id=frame_id, telegram=True))["telegram"] == "failed: BadRequest (the chat)"
    calls = len(bot_api.calls)
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == []
    assert len(bot_api.calls) == calls + 1


def test_a_record_that_no_longer_reads_right_is_still_posted_again(root, bot_api):
    """A stored record whose score is no number or that lacks its time (an edit by hand, a store's damage) raised
    in the caption, which stopped the morning's build before its page."""
    bot_api.fail_status = 500
    post(detection(telegram=True))
    bot_api.fail_status = None
    path = root / "detections/20260916/obs01_20260916231507.json"
    record = json.loads(path.read_text())
    del record["time"]
    path.write_text(json.dumps({**record, "score": "<b>", "flag": ["satellite"]}))
    summary = site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert summary["reposted"] == ["detections/20260916/obs01_20260916231507.json"]
    lines = bot_api.sent("sendPhoto")[-1]["caption"].splitlines()
    assert lines[:4] == ["☄️ Meteor detected", "Observatory: obs01", "Local time: 2026-09-16 ?", "Score: ?"]
    assert (root / "20260916.html").exists()


@pytest.mark.parametrize("score, shown", [(0.974, "0.97"), (1, "1.00"), (True, "?"), ("0.9", "?"), (10 ** 400, "?"),
                                          (float("nan"), "?"), (None, "?")])
def test_a_caption_shows_a_score_only_when_it_is_a_number(score, shown):
    assert telegram_post.score_text(score) == shown


def test_a_token_kept_with_its_line_end_is_sent_without_it(root, bot_api, monkeypatch):
    """A token put into SSM from a file keeps the file's last newline: every post failed as a network error."""
    monkeypatch.setenv("GUALTA_TELEGRAM_TOKEN", TOKEN + "\n")
    assert post(detection(telegram=True))["telegram"] == "sent"
    assert bot_api.calls[-1]["token"] == TOKEN


def test_an_end_log_whose_post_failed_is_posted_late_after_the_detections(root, bot_api):
    """The night's end log ("detection ended … frames processed": the camera worked) is posted again too, after the
    detections; a start log is not (its news is stale by morning)."""
    bot_api.fail_status = 500
    post(payload.build_log("start", "obs02", folder="20260916"), key=KEYS["obs02"])
    end_log = payload.build_log("end", "obs02", total=1440, folder="20260916")
    post(end_log, key=KEYS["obs02"])
    post(detection(telegram=True))
    post(detection("obs02", "20260916220000", flag="cloud"), KEYS["obs02"])         # held back, not posted
    bot_api.fail_status = None
    summary = site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert summary["reposted"] == ["detections/20260916/obs01_20260916231507.json", "logs/20260916/obs02_end.json"]
    assert [call["fields"]["text"] for call in bot_api.calls[-1:]] == [
        "🌅 obs02: detection ended, night of 2026-09-16: 1,440 frames processed, 0 detections, 1 candidate held back"]
    assert json.loads((root / "logs/20260916/obs02_end.json").read_text())["telegram_status"] == "sent"
    assert json.loads((root / "logs/20260916/obs02_start.json").read_text())["telegram_status"].startswith("failed")
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == []
    calls = len(bot_api.calls)
    assert post(end_log, key=KEYS["obs02"])["status"] == "duplicate"      # the client sends it again (a lost answer)
    assert len(bot_api.calls) == calls                                    # posted once was enough


def test_an_end_log_whose_post_failed_marks_its_night_and_one_sent_does_not(root, bot_api):
    """Unmarked, an end log whose post failed was posted again only by the morning after its night (the channel
    down that morning too: never); marked though sent, a night was searched for failed posts morning after morning."""
    unsent = root / store.unsent_key("20260916")
    assert post(payload.build_log("end", "obs02", total=1440, folder="20260915"), key=KEYS["obs02"])[
        "telegram"] == "sent"
    assert not (root / store.unsent_key("20260915")).exists()
    bot_api.fail_status = 500
    assert post(payload.build_log("end", "obs02", total=1440, folder="20260916"), key=KEYS["obs02"])[
        "telegram"].startswith("failed")
    assert unsent.exists()


def test_an_end_log_whose_post_was_cut_off_is_posted_late(root, bot_api):
    """An end log is kept `pending`, then posted: a process stopped in between left it pending for good (the
    client's re-send is a duplicate, and only failed posts were posted again). Pending two minutes after it was
    received, it is cut off, as a detection's post is; one in flight is left to its post."""
    for obs_id, received in (("obs01", "2026-09-17T06:50:00+00:00"), ("obs02", "2026-09-17T06:59:30+00:00")):
        end_log = payload.build_log("end", obs_id, total=1440, folder="20260916")
        post(end_log, key=KEYS[obs_id])
        path = root / f"logs/20260916/{obs_id}_end.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "telegram_status": "pending",
                                    "received": received}))
        assert post(end_log, key=KEYS[obs_id])["status"] == "duplicate"
    calls = len(bot_api.calls)
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == [
        "logs/20260916/obs01_end.json"]
    assert [call["fields"]["text"] for call in bot_api.calls[calls:]] == [
        "🌅 obs01: detection ended, night of 2026-09-16: 1,440 frames processed, 0 detections"]
    assert json.loads((root / "logs/20260916/obs01_end.json").read_text())["telegram_status"] == "sent"
    assert json.loads((root / "logs/20260916/obs02_end.json").read_text())["telegram_status"] == "pending"


def test_each_lambda_does_its_part_within_what_its_policy_grants(root, bot_api, monkeypatch):
    """The same night with each handler on a store that refuses what template.yaml does not grant its function: the
    page function writes the end log it posted again (it could read logs/ only: the log stayed "failed", and was
    posted again every morning while the next observatory's never was)."""
    function = {}
    monkeypatch.setattr(store, "store_from_env", lambda env: GrantedStore(root, function["name"]))
    bot_api.fail_status = 500
    function["name"] = "IngestFunction"
    for obs_id in ("obs01", "obs02"):
        post(payload.build_log("end", obs_id, total=1440, folder="20260916"), key=KEYS[obs_id])
    post(detection(telegram=True))
    bot_api.fail_status = None
    function["name"] = "WebsiteFunction"
    summary = site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert summary["reposted"] == ["detections/20260916/obs01_20260916231507.json", "logs/20260916/obs01_end.json",
                                   "logs/20260916/obs02_end.json"]
    for key in ("logs/20260916/obs01_end.json", "logs/20260916/obs02_end.json"):
        assert json.loads((root / key).read_text())["telegram_status"] == "sent"
    posted = len(bot_api.calls)
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == []
    assert len(bot_api.calls) == posted and (root / "20260916.html").is_file()


def test_the_scheduled_job_reads_each_detection_record_once_and_together(root, bot_api, monkeypatch):
    """Posting again and the page share one read of the night's records, made concurrently (on S3 a request each: a
    network's night read twice, one record after another, would outlast the page function's time limit); the page
    shows what posting again changed."""
    bot_api.fail_status, bot_api.fail_methods = 500, {"sendPhoto"}
    post(detection(telegram=True))                                                      # 23:15:07: failed
    bot_api.fail_status = None
    for frame_id in ("20260916231600", "20260916232030"):
        post(detection("obs01", frame_id, telegram=True))                               # sent
    reads, threads, read = {}, set(), store.LocalStore.get

    def counted(self, key):
        reads[key] = reads.get(key, 0) + 1
        threads.add(threading.current_thread())
        return read(self, key)

    monkeypatch.setattr(store.LocalStore, "get", counted)
    summary = site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert summary["reposted"] == ["detections/20260916/obs01_20260916231507.json"]
    assert {key: n for key, n in reads.items() if key.startswith("detections/")} == {
        f"detections/20260916/obs01_{frame_id}.json": 1
        for frame_id in ("20260916231507", "20260916231600", "20260916232030")}
    assert threads - {threading.main_thread()}                                        # read by a pool
    page = (root / "20260916.html").read_text()
    assert page.count("posted to Telegram") == 3 and "Telegram post failed" not in page


def images_unreadable(monkeypatch, prefix: str = "imgs/") -> None:
    """The local store fails to read the keys under `prefix`, as S3 may."""
    read = store.LocalStore.get

    def unreadable(self, key):
        if key.startswith(prefix):
            raise store.StoreError("read failed")
        return read(self, key)

    monkeypatch.setattr(store.LocalStore, "get", unreadable)


def test_a_store_failing_while_posting_again_still_leaves_the_page_built(root, bot_api, monkeypatch, caplog):
    bot_api.fail_status = 500
    post(detection(telegram=True))
    bot_api.fail_status = None
    images_unreadable(monkeypatch)
    summary = site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert summary["reposted"] == [] and summary["detections"] == 1
    assert "posting again stopped, the store failed" in caplog.text and (root / "20260916.html").exists()


def test_posts_failed_two_mornings_running_are_posted_when_the_channel_is_back(root, bot_api, monkeypatch):
    """The channel down through the night and the morning's build: the next build (another night's) tried only its
    own night, and the first night's posts stayed failed for good. A failed post marks its night until it is sent,
    or the night is too old to post."""
    bot_api.fail_status = 500
    post(detection(telegram=True))
    post(payload.build_log("end", "obs01", total=1440, folder="20260916"))
    unsent = root / "telegram" / "unsent" / "20260916"
    assert unsent.exists()
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == []
    assert unsent.exists() and stored(root)["telegram_status"].startswith("failed")
    bot_api.fail_status = None
    summary = site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER + timedelta(days=1))
    assert summary["night"] == "20260917" and summary["reposted"] == ["detections/20260916/obs01_20260916231507.json",
                                                                   "logs/20260916/obs01_end.json"]
    assert stored(root)["telegram_status"] == "sent" and not unsent.exists()
    assert "detection ended, night of 2026-09-16" in bot_api.sent("sendMessage")[-1]["text"]
    sent = len(bot_api.calls)
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER + timedelta(days=2))["reposted"] == []
    assert len(bot_api.calls) == sent

    bot_api.fail_status = 500                                       # down, then back when the night is too old
    post(detection(frame_id="20260918231507", telegram=True))
    bot_api.fail_status = None
    monkeypatch.setenv("GUALTA_TELEGRAM_WITHIN_DAYS", "1")
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER + timedelta(days=4))["reposted"] == []
    assert len(bot_api.calls) == sent + 1 and not (root / "telegram" / "unsent" / "20260918").exists()


def test_the_night_that_ended_is_posted_again_first_and_a_store_failure_keeps_the_marks(root, bot_api):
    """The morning's build tries the night that just ended before the earlier marked nights (they had crowded it out
    of the time for posting again), stops at the first post that fails again (the channel still down: one try, not
    one a night), and a store failing while a marked night is tried leaves its mark (it was taken off for good)."""
    bot_api.fail_status = 500
    post(detection(frame_id="20260915231507", telegram=True))
    post(detection(frame_id="20260916231507", telegram=True))
    marks = root / "telegram" / "unsent"
    assert sorted(path.name for path in marks.iterdir()) == ["20260915", "20260916"]
    tries = len(bot_api.calls)
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == []
    assert len(bot_api.calls) == tries + 1 and "2026-09-16 23:15:07" in bot_api.calls[-1]["fields"]["caption"]
    assert sorted(path.name for path in marks.iterdir()) == ["20260915", "20260916"]
    bot_api.fail_status = None
    with pytest.MonkeyPatch.context() as patch:
        images_unreadable(patch, "imgs/20260915/")
        assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER + timedelta(days=1))["reposted"] \
            == []
    assert sorted(path.name for path in marks.iterdir()) == ["20260915", "20260916"]
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER + timedelta(days=2))["reposted"] == [
        "detections/20260915/obs01_20260915231507.json", "detections/20260916/obs01_20260916231507.json"]
    assert list(marks.iterdir()) == []


def test_a_post_failing_during_the_build_keeps_its_nights_mark(root, bot_api, monkeypatch):
    """A post in flight when the build read its night (`pending`) failed before the build took the night's mark
    off: judged from the copy read then, the night lost its mark and the post was never made."""
    bot_api.fail_status = 500
    post(detection(telegram=True))                                     # an earlier post of the night failed: marked
    bot_api.fail_status = None
    in_flight = root / "detections/20260916/obs01_20260916231600.json"
    post(detection(frame_id="20260916231600", telegram=False))
    in_flight.write_text(json.dumps({**json.loads(in_flight.read_text()), "telegram": True,
                                     "telegram_status": "pending", "received": "2026-09-17T08:59:55+02:00"}))
    repost = ingest.repost_night

    def then_the_post_in_flight_fails(target, night, *args):
        done = repost(target, night, *args)
        in_flight.write_text(json.dumps({**json.loads(in_flight.read_text()), "telegram_status": "failed: TimedOut"}))
        ingest.mark_unsent(target, night, "failed: TimedOut")
        return done

    monkeypatch.setattr(ingest, "repost_night", then_the_post_in_flight_fails)
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == [
        "detections/20260916/obs01_20260916231507.json"]
    assert (root / "telegram" / "unsent" / "20260916").exists()
    monkeypatch.setattr(ingest, "repost_night", repost)
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER + timedelta(days=1))["reposted"] == [
        "detections/20260916/obs01_20260916231600.json"]


def test_a_marked_nights_records_are_read_once(root, bot_api, monkeypatch):
    """Posting a marked night again, then judging whether its mark stays, read every record twice (one by one): on
    S3 a busy night's second read pushed the page function toward its time limit."""
    bot_api.fail_status = 500
    post(detection(frame_id="20260915231507", telegram=True))
    bot_api.fail_status = None
    post(detection(frame_id="20260915231600", telegram=True))
    reads, read = [], store.LocalStore.get

    def counted(self, key):
        reads.append(key)
        return read(self, key)

    monkeypatch.setattr(store.LocalStore, "get", counted)
    assert ingest.repost_unsent(store.store_from_env(os.environ), "20260916", os.environ, NINE_AM_AFTER) == [
        "detections/20260915/obs01_20260915231507.json"]
    assert sorted(key for key in reads if key.startswith("detections/20260915/")) == [
        "detections/20260915/obs01_20260915231507.json", "detections/20260915/obs01_20260915231600.json"]
    assert not (root / "telegram" / "unsent" / "20260915").exists()


def test_a_post_cut_off_and_not_reached_marks_its_night(root, bot_api):
    """A post cut off (still pending long after it was stored: the Lambda stopped mid-post) that the morning's build
    did not reach (its time spent) was never marked: tried the next morning too."""
    post(detection(telegram=True))
    key = root / "detections/20260916/obs01_20260916231507.json"
    key.write_text(json.dumps({**stored(root), "telegram_status": "pending", "received": "2026-09-16T23:16:00+02:00"}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest, "REPOST_BUDGET_S", 0)
        assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == []
    assert (root / "telegram" / "unsent" / "20260916").exists()
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER + timedelta(days=1))["reposted"] == [
        "detections/20260916/obs01_20260916231507.json"]
    assert stored(root)["telegram_status"] == "sent" and not (root / "telegram" / "unsent" / "20260916").exists()


def test_posting_again_keeps_to_its_time_budget(root, bot_api, caplog):
    bot_api.fail_status = 500
    post(detection(telegram=True))
    bot_api.fail_status = None
    caplog.set_level(logging.WARNING)
    assert ingest.repost_night(store.store_from_env(os.environ), "20260916", os.environ, NINE_AM_AFTER,
                               deadline=time.monotonic()) == ([], False)
    assert len(bot_api.sent("sendPhoto")) == 1
    assert "night 20260916: the 0 s for posting again are spent: 1 post of the night left for the next build" \
        in caplog.text
    assert stored(root)["telegram_status"].startswith("failed")


def test_posting_again_waits_out_flood_control_within_its_own_budget(root, bot_api, monkeypatch):
    """A burst after an outage left 25 posts failed by flood control (40 s waits): the morning's job waited out no
    more than one report's FLOOD_WAIT_BUDGET_S, so it stopped at the first 40 s wait and the backlog took several
    mornings (the oldest dropped after 7 days). It now waits out any wait that ends within its REPOST_BUDGET_S; a
    longer one ends the pass. Scaled down: one report's budget 1 s, the job's 30 s, Telegram asking 2 s."""
    bot_api.fail_status, bot_api.fail_methods = 500, {"sendPhoto"}
    frames = ("20260916231507", "20260916231600", "20260916231700")
    for frame_id in frames:
        post(detection(frame_id=frame_id, telegram=True))
    bot_api.fail_status = None
    monkeypatch.setattr(telegram_post, "FLOOD_WAIT_BUDGET_S", 1.0)
    monkeypatch.setattr(ingest, "REPOST_BUDGET_S", 30.0)
    calls = len(bot_api.calls)
    bot_api.flood = [2, 0, 0, 600]                # wait 2 s, then two posts, then a wait past what is left
    summary = site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert summary["reposted"] == [f"detections/20260916/obs01_{frame_id}.json" for frame_id in frames[:2]]
    assert [call["method"] for call in bot_api.calls[calls:]] == ["sendPhoto"] * 4
    assert [stored(root, name=f"obs01_{frame_id}")["telegram_status"] for frame_id in frames] == [
        "sent", "sent", "failed: RetryAfter"]
    assert (root / "telegram" / "unsent" / "20260916").exists()         # tried again the next morning


def test_a_store_that_cannot_be_listed_only_leaves_coincidences_out(root, bot_api, monkeypatch):
    from gualta import coincidence, store

    def refuse(*_):
        raise store.StoreError("S3 list failed: AccessDenied")

    post(detection("obs02", "20260916231520", telegram=False), KEYS["obs02"])
    monkeypatch.setattr(coincidence, "stored_detections", refuse)
    assert post(detection(telegram=True))["telegram"] == "sent"
    assert "Also seen" not in bot_api.calls[0]["fields"]["caption"]


def test_an_observatory_posts_a_limited_number_of_detections_a_night(root, bot_api, monkeypatch):
    """A sky the classifier misreads all night (300 detections on a cloudy night were 300 posts) fills the channel:
    past the night's limit an observatory's detections are stored and shown on the page but not posted; the first of
    them says so once. Other observatories and other nights keep their own count; the morning job posts none of them
    again."""
    monkeypatch.setenv("GUALTA_TELEGRAM_NIGHT_POSTS", "2")
    for stamp in ("20260916231507", "20260916231607", "20260916231707", "20260916231807"):
        post(detection(frame_id=stamp, telegram=True))
    post(detection("obs02", "20260916231900", telegram=True), KEYS["obs02"])
    post(detection(frame_id="20260917231507", telegram=True))                         # the next night
    assert [call["method"] for call in bot_api.calls] == ["sendPhoto", "sendPhoto", "sendMessage", "sendPhoto",
                                                          "sendPhoto"]
    assert bot_api.sent("sendMessage")[0]["text"] == (
        "🔕 obs01: more than 2 detections this night; the rest are only on the night's page: "
        "https://meteors.example.org/20260916.html#obs01_20260916231707")
    assert [stored(root, name=f"obs01_2026091623{m}07")["telegram_status"] for m in ("15", "16", "17", "18")] == [
        "sent", "sent", "not posted: over 2 this night", "not posted: over 2 this night"]
    calls = len(bot_api.calls)
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == []
    assert len(bot_api.calls) == calls
    assert "not posted to Telegram (over 2 this night)" in (root / "20260916.html").read_text()


def test_a_failed_post_within_the_limit_is_posted_in_the_morning(root, bot_api, monkeypatch):
    """The limit counted every stored detection, failed posts too: obs01's first detection, its post failed, took a
    place without being posted, was refused again in the morning (and posted the notice a second time), and that
    refusal stopped the morning's reposting, so obs02's failed post was never made. The limit is now the night's
    first detections in camera time, whether or not their post has been made yet."""
    monkeypatch.setenv("GUALTA_TELEGRAM_NIGHT_POSTS", "2")
    bot_api.fail_status = 500
    post(detection(frame_id="20260916221507", telegram=True))                         # obs01 #1: failed
    post(detection("obs02", "20260916221900", telegram=True), KEYS["obs02"])           # failed
    bot_api.fail_status = None
    post(detection(frame_id="20260916231607", telegram=True))                         # obs01 #2: posted
    post(detection(frame_id="20260916231707", telegram=True))                         # obs01 #3: over, says so
    summary = site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert summary["reposted"] == ["detections/20260916/obs01_20260916221507.json",
                                   "detections/20260916/obs02_20260916221900.json"]
    assert [stored(root, name=f"obs01_{stamp}")["telegram_status"]
            for stamp in ("20260916221507", "20260916231607", "20260916231707")] == [
        "sent", "sent", "not posted: over 2 this night"]
    assert len(bot_api.sent("sendMessage")) == 1


def test_the_limit_message_is_posted_once_whatever_the_order_reports_arrive_in(root, bot_api, monkeypatch):
    """A retried report often arrives after later ones: with limit 2, C failed, D said the posts stopped, B came late,
    and in the morning C, posted again, found itself past the limit too and said so a second time."""
    monkeypatch.setenv("GUALTA_TELEGRAM_NIGHT_POSTS", "2")
    a, b, c, d = (f"2026091623{minute}07" for minute in ("15", "16", "17", "18"))
    post(detection(frame_id=a, telegram=True))
    bot_api.fail_status = 500
    post(detection(frame_id=c, telegram=True))
    bot_api.fail_status = None
    post(detection(frame_id=d, telegram=True))
    post(detection(frame_id=b, telegram=True))
    site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert [stored(root, name=f"obs01_{stamp}")["telegram_status"] for stamp in (a, b, c, d)] == [
        "sent", "sent", "not posted: over 2 this night", "not posted: over 2 this night"]
    assert len(bot_api.sent("sendMessage")) == 1
    assert json.loads((root / "logs" / "20260916" / "obs01_limit.json").read_text()) == {"limit": 2, "first": d}
    assert "obs01_limit" not in (root / "20260916.html").read_text()


@pytest.mark.parametrize("value, limit", [("", 50), ("0", 0), ("120", 120), ("fifty", 50), ("-3", 50)])
def test_the_night_limit_setting(value, limit, caplog):
    assert telegram_post.night_posts({"GUALTA_TELEGRAM_NIGHT_POSTS": value}) == limit
    assert ("not a whole number" in caplog.text) == (limit == 50 and value != "")


def test_no_limit_posts_every_detection(root, bot_api, monkeypatch):
    monkeypatch.setenv("GUALTA_TELEGRAM_NIGHT_POSTS", "0")
    for minute in range(3):
        post(detection(frame_id=f"202609162{minute + 1}0000", telegram=True))
    assert [call["method"] for call in bot_api.calls] == ["sendPhoto"] * 3


def test_no_post_when_not_asked(root, bot_api):
    assert post(detection(telegram=False))["telegram"] == "not requested"
    assert bot_api.calls == []


def test_start_and_end_logs_post_messages(root, bot_api):
    """The end of a night says how many detections the observatory reported (they come before its end log)."""
    post(payload.build_log("start", "obs02", folder="20260916"), key=KEYS["obs02"])
    for stamp in ("20260916221500", "20260917031000"):
        post(detection("obs02", stamp, telegram=False), KEYS["obs02"])
    post(detection(telegram=False))                                                     # obs01's: not counted
    post(payload.build_log("end", "obs02", total=1440, folder="20260916"), key=KEYS["obs02"])
    assert [(c["method"], c["fields"]["chat_id"], c["fields"]["text"]) for c in bot_api.calls] == [
        ("sendMessage", "@gualta_meteors", "🔭 obs02: detection started, night of 2026-09-16"),
        ("sendMessage", "@gualta_meteors",
         "🌅 obs02: detection ended, night of 2026-09-16: 1,440 frames processed, 2 detections")]
    assert json.loads((root / "logs/20260916/obs02_end.json").read_text())["telegram_status"] == "sent"


def test_the_end_of_night_message_says_0_detections_and_1_detection():
    """A night without detections ends "0 detections"; one, "1 detection" (and "1 candidate held back")."""
    record = payload.build_log("end", "obs02", total=1440, folder="20260916")
    assert telegram_post.log_text(record, {"detections": 0, "held_back": 0}).endswith(
        ": 1,440 frames processed, 0 detections")
    assert telegram_post.log_text(record, {"detections": 1, "held_back": 1}).endswith(
        ": 1,440 frames processed, 1 detection, 1 candidate held back")


def test_the_end_of_night_message_counts_held_back_candidates_apart(root, bot_api):
    """A satellite the observatory held back (reported as asked) was counted with its detections: "3 detections",
    read as three meteors. The message counts them as the page does."""
    for i, (stamp, flag) in enumerate([("20260916221500", None), ("20260916223000", "satellite"),
                                       ("20260917031000", None), ("20260917033000", "cloud")]):
        post(detection("obs02", stamp, seed=i, **({"flag": flag} if flag else {})), KEYS["obs02"])
    post(payload.build_log("end", "obs02", total=1440, folder="20260916"), key=KEYS["obs02"])
    assert bot_api.calls[-1]["fields"]["text"] == ("🌅 obs02: detection ended, night of 2026-09-16: 1,440 frames "
                                                   "processed, 2 detections, 2 candidates held back")


@pytest.mark.parametrize("failure", ["http 500", "unreachable"])
def test_telegram_failure_never_loses_the_detection(root, bot_api, monkeypatch, failure, caplog):
    if failure == "http 500":
        bot_api.fail_status = 500
    else:
        monkeypatch.setenv("GUALTA_TELEGRAM_API", f"http://127.0.0.1:{free_port()}/bot")
    caplog.set_level(logging.DEBUG)
    answer = post(detection(telegram=True))
    assert answer["status"] == "stored" and answer["telegram"].startswith("failed: ")
    record = stored(root)
    assert record["telegram_status"] == answer["telegram"] and record["score"] == 0.93
    assert (root / "imgs/20260916/obs01_20260916231507.jpeg").exists()
    assert post(detection(telegram=True))["status"] == "duplicate"           # a retry is not posted twice
    assert TOKEN not in caplog.text and TOKEN.split(":")[1] not in caplog.text


def test_a_failed_post_is_logged_naming_the_report_and_what_happens_next(root, bot_api, caplog):
    """A post that failed logged `telegram call failed: NetworkError`: no detection named, nothing of what was kept
    or when it is tried again."""
    bot_api.fail_status = 500
    caplog.set_level(logging.WARNING)
    post(detection(telegram=True))
    post(payload.build_log("start", "obs01", folder="20260916"))
    post(payload.build_log("end", "obs01", total=1440, folder="20260916"))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "post of detections/20260916/obs01_20260916231507.json failed (NetworkError): stored; posted "
                    "again by the morning's build"),
        ("WARNING", "post of logs/20260916/obs01_start.json failed (NetworkError): stored; not posted again (a start "
                    "log's news is stale by the morning)"),
        ("WARNING", "post of logs/20260916/obs01_end.json failed (NetworkError): stored; posted again by the "
                    "morning's build")]


def test_a_refused_token_or_chat_is_one_error_naming_the_setting(root, bot_api, monkeypatch, caplog):
    """A wrong token or a chat the bot may not post to repeated a WARNING `telegram call failed: InvalidToken` for
    every detection, never saying which setting to fix. It is one ERROR per process naming it, then DEBUG."""
    monkeypatch.setattr(ingest, "SETTINGS_BLAMED", set())
    caplog.set_level(logging.DEBUG)
    bot_api.fail_status, bot_api.fail_description = 401, "Unauthorized"
    for second in range(3):
        post(detection(frame_id=f"2026091623150{second}", seed=second, telegram=True))
    bot_api.fail_status, bot_api.fail_description = 403, "Forbidden: bot is not a member of the channel chat"
    for second in range(3, 5):
        post(detection(frame_id=f"2026091623150{second}", seed=second, telegram=True))
    bot_api.fail_status, bot_api.fail_description = 400, "Bad Request: chat not found"
    post(detection(frame_id="20260916231505", seed=5, telegram=True))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "post of detections/20260916/obs01_20260916231500.json failed (InvalidToken: check GUALTA_TELEGRAM_TOKEN): "
        "stored; posted again by the morning's build. Telegram refuses every post until GUALTA_TELEGRAM_TOKEN is "
        "fixed (this is said once; the service keeps storing reports)",
        "post of detections/20260916/obs01_20260916231503.json failed (Forbidden: check GUALTA_TELEGRAM_CHAT): "
        "stored; posted again by the morning's build. Telegram refuses every post until GUALTA_TELEGRAM_CHAT is "
        "fixed (this is said once; the service keeps storing reports)"]
    assert all(r.levelno == logging.ERROR for r in caplog.records if r.levelno >= logging.WARNING)
    assert "obs01_20260916231505.json failed (BadRequest (the chat): check GUALTA_TELEGRAM_CHAT)" in caplog.text
    assert TOKEN.split(":")[1] not in caplog.text


def test_a_group_that_became_a_supergroup_is_one_error_naming_the_chat_setting(root, bot_api, monkeypatch, caplog):
    """A group upgraded to a supergroup has a new chat id: Telegram refuses every post to the old one (ChatMigrated)
    until GUALTA_TELEGRAM_CHAT is changed, said once as an error naming it."""
    monkeypatch.setattr(ingest, "SETTINGS_BLAMED", set())
    caplog.set_level(logging.WARNING)
    bot_api.fail_status, bot_api.fail_description = 400, "Bad Request: group chat was upgraded to a supergroup chat"
    bot_api.fail_parameters = {"migrate_to_chat_id": -1001234567890}
    assert post(detection(telegram=True))["telegram"] == "failed: ChatMigrated"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [(
        "ERROR", "post of detections/20260916/obs01_20260916231507.json failed (ChatMigrated: check "
                 "GUALTA_TELEGRAM_CHAT): stored; posted again by the morning's build. Telegram refuses every post "
                 "until GUALTA_TELEGRAM_CHAT is fixed (this is said once; the service keeps storing reports)")]


def test_a_morning_repost_that_stops_says_how_many_posts_are_left(root, bot_api, caplog):
    """The morning's build stopped posting again at a post that failed again, silently: nothing said that 4 posts
    of the night (and an earlier night's) waited for the next build."""
    bot_api.fail_status = 500
    post(detection(folder="20260915", frame_id="20260916031507", telegram=True))
    for second in range(3):
        post(detection(frame_id=f"2026091623150{second}", seed=second, telegram=True))
    post(payload.build_log("end", "obs01", total=1440, folder="20260916"))
    caplog.clear()
    caplog.set_level(logging.WARNING)
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["reposted"] == []
    assert [r.getMessage() for r in caplog.records] == [
        "night 20260916: posting again stopped, the post of detections/20260916/obs01_20260916231500.json failed "
        "again (NetworkError): 4 posts of the night left for the next build",
        "night 20260915: failed posts left for the next build, not tried after the stop"]


def test_token_is_never_logged_or_stored(root, bot_api, caplog):
    caplog.set_level(logging.DEBUG)
    post(detection(telegram=True))
    post(payload.build_log("start", "obs01", folder="20260916"))
    assert len(bot_api.calls) == 2
    assert TOKEN.split(":")[1] not in caplog.text
    for path in root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes()
    channel = telegram_post.channel_from_env(os.environ)
    assert TOKEN not in repr(channel)


def test_unconfigured_channel(root, monkeypatch, bot_api):
    monkeypatch.delenv("GUALTA_TELEGRAM_CHAT")
    assert post(detection(telegram=True))["telegram"] == "not configured"
    assert bot_api.calls == []


def test_a_chat_without_a_token_is_not_configured(root, monkeypatch, bot_api):
    """A chat set and no token: no channel ("not configured"), no post tried with an empty token."""
    monkeypatch.delenv("GUALTA_TELEGRAM_TOKEN")
    assert telegram_post.channel_from_env({"GUALTA_TELEGRAM_CHAT": "@gualta_meteors"}) is None
    assert post(detection(telegram=True))["telegram"] == "not configured"
    assert bot_api.calls == []


def test_unreadable_token_parameter_does_not_block_storing(root, monkeypatch, bot_api):
    monkeypatch.delenv("GUALTA_TELEGRAM_TOKEN")
    monkeypatch.setenv("GUALTA_TELEGRAM_TOKEN_PARAM", "/gualta/missing")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", f"http://127.0.0.1:{free_port()}")     # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    answer = post(detection(telegram=True))
    assert (answer["status"], answer["telegram"]) == ("stored", "not configured")
    assert stored(root)["telegram_status"] == "not configured" and bot_api.calls == []


def test_reports_arriving_newest_first_are_posted_no_more_than_the_limit(root, bot_api, monkeypatch):
    """The limit counted only the detections stored before one in camera time: eight reports arriving newest first
    (a client's backlog sent back to front) each found none earlier and all eight were posted with a limit of 3."""
    monkeypatch.setenv("GUALTA_TELEGRAM_NIGHT_POSTS", "3")
    frames = [f"20260916{hour}1507" for hour in ("21", "22", "23")] + [f"20260917{hour}1507" for hour in
                                                                        ("00", "01", "02", "03", "04")]
    for frame_id in reversed(frames):
        post(detection(frame_id=frame_id, folder="20260916", telegram=True))
    statuses = [stored(root, name=f"obs01_{frame_id}")["telegram_status"] for frame_id in frames]
    assert statuses.count("sent") == 3 and statuses.count("not posted: over 3 this night") == 5
    assert len(bot_api.sent("sendPhoto")) == 3 and len(bot_api.sent("sendMessage")) == 1
    site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert len(bot_api.sent("sendPhoto")) == 3                                # nothing more in the morning


def test_reports_of_old_nights_are_stored_but_not_posted(root, bot_api, monkeypatch):
    """An operator running last year's archive through the client with uploads on posted every night's start and
    end messages and up to 50 detections a night to the channel. A night that ended over 7 days before the last
    one (GUALTA_TELEGRAM_WITHIN_DAYS) is stored and paged, not posted; a client back after a week's outage is."""
    monkeypatch.delenv("GUALTA_TELEGRAM_WITHIN_DAYS")
    handle = lambda body, now: json.loads(ingest.handle(event(body), os.environ, now)["body"])   # noqa: E731
    week_later = datetime(2026, 9, 24, 7, 0, tzinfo=timezone.utc)          # 09:00 in Madrid, night 20260923 ended
    assert handle(detection(telegram=True), week_later)["telegram"] == "sent"
    eight_days = datetime(2026, 9, 25, 7, 0, tzinfo=timezone.utc)
    late = detection(frame_id="20260916231607", telegram=True)
    assert handle(late, eight_days) == {"status": "stored", "key": "detections/20260916/obs01_20260916231607.json",
                                        "telegram": "not posted: over 7 days after the night"}
    end = payload.build_log("end", "obs01", total=1440, folder="20260916", processed="2026-09-17T08:00:05+02:00")
    assert handle(end, eight_days)["telegram"] == "not posted: over 7 days after the night"
    assert len(bot_api.calls) == 1
    assert (root / "detections/20260916/obs01_20260916231607.json").exists()
    monkeypatch.setenv("GUALTA_TELEGRAM_WITHIN_DAYS", "0")                  # any night
    assert handle(detection(frame_id="20260916231707", telegram=True), eight_days)["telegram"] == "sent"


@pytest.mark.parametrize("value, days", [("", 7), ("0", 0), ("30", 30), ("week", 7)])
def test_the_within_days_setting(value, days):
    assert telegram_post.within_days({"GUALTA_TELEGRAM_WITHIN_DAYS": value}) == days


def test_a_post_mark_that_cannot_be_written_never_posts_twice(root, bot_api, monkeypatch, caplog):
    """The mark was written before the record: a store refusing it answered 503 with the photo posted and the record
    still pending, and the morning posted the photo again."""
    create = store.LocalStore.create

    def refusing(self, key, data):
        if key.startswith("telegram/"):
            raise store.StoreError("S3 put_object failed: SlowDown")
        return create(self, key, data)

    monkeypatch.setattr(store.LocalStore, "create", refusing)
    assert post(detection(telegram=True))["telegram"] == "sent"
    assert stored(root)["telegram_status"] == "sent" and "cannot mark obs01's post" in caplog.text
    site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert len(bot_api.sent("sendPhoto")) == 1


def test_detections_taken_in_daylight_are_stored_but_not_posted_and_count_for_no_limit(root, bot_api, monkeypatch):
    """A client without its place set (AllSky's daytime capture on) reports daylit frames: the afternoon's false
    meteors were posted and used up the night's limit before dark. The service knows the observatory's place: a
    detection taken with the sun above its night_sun_altitude (−6° unless set) is stored and paged, not posted, and
    counts for no limit; an observatory whose place is not given posts as before."""
    monkeypatch.setenv("GUALTA_TELEGRAM_NIGHT_POSTS", "2")
    afternoon = ["20260916180000", "20260916190000", "20260916200000"]          # sunset 20:00, −6° at 20:30 (CEST)
    night = ["20260916213000", "20260916231507", "20260917020000"]
    for frame_id in afternoon + night:
        post(detection(frame_id=frame_id, telegram=True))
    statuses = {frame_id: stored(root, name=f"obs01_{frame_id}")["telegram_status"] for frame_id in afternoon + night}
    assert [statuses[frame_id] for frame_id in night] == ["sent", "sent", "not posted: over 2 this night"]
    assert statuses["20260916180000"] == "not posted: daylight: the sun at 21.8°, above -6°"
    assert all(statuses[frame_id].startswith("not posted: daylight: the sun at ") for frame_id in afternoon)
    assert len(bot_api.sent("sendPhoto")) == 2
    site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert len(bot_api.sent("sendPhoto")) == 2                                # nothing posted in the morning
    assert "not posted to Telegram (daylight: the sun at 21.8°, above -6°)" in (root / "20260916.html").read_text()

    places = {"obs01": {**OBSERVATORIES["obs01"], "night_sun_altitude": -18}}   # a client scoring from astronomical dark
    monkeypatch.setenv("GUALTA_OBSERVATORIES", json.dumps(places))
    post(detection(frame_id="20260918210000", telegram=True))                 # the sun at −12°: twilight, not night
    assert stored(root, "20260918", "obs01_20260918210000")["telegram_status"].startswith("not posted: daylight")
    monkeypatch.setenv("GUALTA_OBSERVATORIES", "{}")                          # no place: posted as before
    post(detection(frame_id="20260918180000", telegram=True))
    assert stored(root, "20260918", "obs01_20260918180000")["telegram_status"] == "sent"


def test_two_page_builds_at_once_post_each_failed_post_once(root, bot_api, monkeypatch):
    """`guAlta.py site` run while the server's schedule (or a retried Lambda) built the page: both posted every failed
    post again — after a Telegram outage, the channel got each detection twice. A create-only claim lets one do it."""
    bot_api.fail_status = 500
    frames = ["20260916231507", "20260916231607", "20260916231707"]
    for frame_id in frames:
        post(detection(frame_id=frame_id, telegram=True))
    post(payload.build_log("end", "obs01", total=1440, folder="20260916", processed="2026-09-17T08:00:05+02:00"))
    bot_api.fail_status = None
    together = threading.Barrier(2, timeout=10)
    claim = ingest.claim_post

    def in_step(target, night, name):                          # both builds reach each post before either makes it
        together.wait()
        return claim(target, night, name)
    monkeypatch.setattr(ingest, "claim_post", in_step)
    summaries = []
    builds = [threading.Thread(target=lambda: summaries.append(site.handle({"source": "gualta.schedule"}, os.environ,
                                                                           NINE_AM_AFTER))) for _ in range(2)]
    for build in builds:
        build.start()
    for build in builds:
        build.join(30)
    posted = sorted(key for summary in summaries for key in summary["reposted"])
    assert posted == sorted([f"detections/20260916/obs01_{frame_id}.json" for frame_id in frames]
                            + ["logs/20260916/obs01_end.json"])
    assert len(bot_api.sent("sendPhoto")) == 3 + 3 and len(bot_api.sent("sendMessage")) == 1 + 1   # failed, then once


def test_a_post_names_the_detections_of_its_moment_stored_while_it_was_posted(root, bot_api, monkeypatch):
    """obs02's report of the same meteor stored while obs01's post was in flight: obs02's edit of obs01's post found
    no message id yet and obs01's caption was written before obs02 came — obs01's post never named obs02."""
    real_post = telegram_post.post
    arrived = []

    def slow_post(channel, text, *args, **kwargs):
        if "obs01" in text and not arrived:                    # obs02's report lands while obs01's photo is sent
            arrived.append(post(detection("obs02", "20260916231510", telegram=True), KEYS["obs02"]))
        return real_post(channel, text, *args, **kwargs)
    monkeypatch.setattr(telegram_post, "post", slow_post)
    post(detection(telegram=True))
    first, second = stored(root)["telegram_message_id"], stored(root, name="obs02_20260916231510")
    assert "Also seen from obs01 at 23:15:07" in bot_api.captions[second["telegram_message_id"]]
    assert "Also seen from obs02 at 23:15:10" in bot_api.captions[first]


def test_the_same_log_sent_twice_at_the_same_instant_is_posted_once(root, bot_api, monkeypatch):
    """Two processes sharing an outbox (the watcher's sender and a flush) sent the same end log at once: both found
    no earlier copy and both posted it."""
    together = threading.Barrier(2, timeout=10)
    read_json = store.read_json

    def in_step(target, key):                                  # both read the stored log before either writes it
        found = read_json(target, key)
        if key.endswith("_end.json") and threading.current_thread().name.startswith("sender"):
            together.wait()
        return found
    monkeypatch.setattr(store, "read_json", in_step)
    end = payload.build_log("end", "obs01", total=1440, folder="20260916", processed="2026-09-17T08:00:05+02:00")
    answers = []
    senders = [threading.Thread(target=lambda: answers.append(post(end)["status"]), name=f"sender{i}")
               for i in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    assert sorted(answers) == ["duplicate", "stored"] and len(bot_api.sent("sendMessage")) == 1
    assert post(payload.build_log("end", "obs01", total=1441, folder="20260916"))["status"] == "stored"   # a new one
    assert post(end)["status"] == "stored" and len(bot_api.sent("sendMessage")) == 3     # and back: not a re-send


def test_a_log_the_store_failed_to_keep_is_stored_and_posted_when_sent_again(root, bot_api, monkeypatch):
    """The claim that keeps two identical logs sent at once from both being posted was taken before the log was
    written: a store failing then (a full disk) answered 503, and the client's re-send was called a duplicate of
    nothing — the log lost for good."""
    write_json, failures = store.write_json, [store.StoreError("disk full")]

    def failing_once(target, key, *args, **kwargs):
        if failures and key.endswith("_end.json"):
            raise failures.pop()
        return write_json(target, key, *args, **kwargs)
    monkeypatch.setattr(store, "write_json", failing_once)
    end = payload.build_log("end", "obs01", total=1440, folder="20260916", processed="2026-09-17T08:00:05+02:00")
    assert HANDLER(event(end, KEYS["obs01"]), None)["statusCode"] == 503
    assert post(end)["status"] == "stored" and len(bot_api.sent("sendMessage")) == 1
    assert json.loads((root / "logs/20260916/obs01_end.json").read_text())["telegram_status"] == "sent"


def card(page: str, anchor: str) -> str:
    """A detection's card on a page."""
    return page[page.index(f'id="{anchor}"'):].split("</article>")[0]


def pages_past_the_refresh_window() -> None:
    """The pages of the 5th and the 6th, and of the night that ended at NINE_AM_AFTER (the 16th) and the REFRESH_NIGHTS
    before it, each linking to the next: a scheduled build then looks at the 5th's page only where it is marked."""
    for day in reversed([5, 6] + list(range(16 - site.REFRESH_NIGHTS, 17))):
        site.handle({"day": f"202609{day:02d}"}, os.environ, NINE_AM_AFTER)


def test_a_page_built_while_a_post_was_in_flight_shows_it_posted_after_the_next_build(root, bot_api, monkeypatch):
    """An observatory back after an outage: the morning's build rebuilt its old night while one of its detections was
    being posted, and the page said "not posted to Telegram yet" for good (its next night's page already there, only a
    change of detections, logs or links brought it up again). The post's outcome now brings it up to date."""
    pages_past_the_refresh_window()
    ingest.handle(event(detection(frame_id="20260905231507")), os.environ, NINE_AM_AFTER)     # not asked: marks late
    real_post, builds = telegram_post.post, []

    def built_while_posting(channel, text, *args, **kwargs):
        if "2026-09-05 23:16:07" in text and not builds:
            builds.append(site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER))
        return real_post(channel, text, *args, **kwargs)

    monkeypatch.setattr(telegram_post, "post", built_while_posting)
    in_flight = detection(frame_id="20260905231607", telegram=True, seed=1)
    assert json.loads(ingest.handle(event(in_flight), os.environ, NINE_AM_AFTER)["body"])["telegram"] == "sent"
    assert builds[0]["refreshed"] == ["20260905"]
    assert "· not posted to Telegram yet" in card((root / "20260905.html").read_text(), "obs01_20260905231607")
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["refreshed"] == ["20260905"]
    assert "· posted to Telegram" in card((root / "20260905.html").read_text(), "obs01_20260905231607")
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["refreshed"] == []


def test_a_post_made_again_for_an_old_night_reaches_its_page(root, bot_api):
    """A night past the refresh window whose post failed, the channel down two mornings: the scheduled build posted
    it once the channel was back, and its page kept saying "Telegram post failed" (nothing it was made from changed)."""
    bot_api.fail_status = 500
    post(detection(frame_id="20260905231507", telegram=True))                     # delivered late: marked late
    pages_past_the_refresh_window()
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER - timedelta(hours=1))["reposted"] == []
    assert store.late_nights(store.LocalStore(root)) == []
    assert "· Telegram post failed" in card((root / "20260905.html").read_text(), "obs01_20260905231507")
    bot_api.fail_status = None
    summary = site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)
    assert summary["reposted"] == ["detections/20260905/obs01_20260905231507.json"]
    assert summary["refreshed"] == ["20260905"]
    assert "· posted to Telegram" in card((root / "20260905.html").read_text(), "obs01_20260905231507")
    assert site.handle({"source": "gualta.schedule"}, os.environ, NINE_AM_AFTER)["refreshed"] == []
