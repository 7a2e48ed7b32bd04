"""The embedded server (`python guAlta.py serve` in a child process): routes, event translation, schedule."""
from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests

from gualta import allsky, config, ingest, server, store
from helpers_service import KEYS, KEYS_ENV, OBSERVATORIES, REPO, child_env, detection, service_env, snapshot


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One server for the module: (base url, store folder)."""
    root = tmp_path_factory.mktemp("served") / "store"
    env = child_env(GUALTA_API_KEYS=KEYS_ENV, GUALTA_OBSERVATORIES=json.dumps(OBSERVATORIES),
                    GUALTA_TIMEZONE="Europe/Madrid")
    with server.ChildServer(root, env) as child:
        yield child.url, root, child


def upload(url, body, key=KEYS["obs01"]):
    return requests.post(f"{url}/uploadmeteor", json=body, headers={"x-api-key": key}, timeout=10)


def test_a_restarted_service_clears_what_writes_cut_short_left(tmp_path):
    """A service killed mid-upload (a power cut) left its hidden temporary files in the store for good (7 in 20
    kills): a start removes those over a minute old, and never a key or a write under way."""
    root = tmp_path / "store"
    night = root / "detections" / "20260916"
    night.mkdir(parents=True)
    (night / "obs01_20260916231507.json").write_text("{}")
    for name in (".tmp-0a1b", ".tmp-2c3d"):
        (night / name).write_bytes(b"half a record")
        os.utime(night / name, (time.time() - 3600,) * 2)
    (night / ".tmp-live").write_bytes(b"being written")
    (root / "imgs").mkdir()
    (root / "imgs" / ".tmp-9f8e").write_bytes(b"\xff\xd8")
    os.utime(root / "imgs" / ".tmp-9f8e", (time.time() - 120,) * 2)
    with server.ChildServer(root, child_env(GUALTA_API_KEYS=KEYS_ENV)):
        pass
    assert sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()) == [
        "detections/20260916/.tmp-live", "detections/20260916/obs01_20260916231507.json"]


def test_upload_page_and_image_round_trip(live):
    url, root, _ = live
    body = detection(frame_id="20260916224510")
    assert upload(url, body).json()["status"] == "stored"
    assert upload(url, body).json()["status"] == "duplicate"
    built = requests.post(f"{url}/site?day=20260916", headers={"x-api-key": KEYS["obs02"]}, timeout=30)
    assert built.status_code == 200 and built.json()["night"] == "20260916"
    pages = {path: requests.get(url + path, timeout=10) for path in ("/", "/index.html", "/20260916.html")}
    for page in pages.values():
        assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert 'id="obs01_20260916224510"' in pages["/20260916.html"].text
    assert pages["/"].text == pages["/index.html"].text and "<title>guAlta · night of" in pages["/"].text
    image = requests.get(f"{url}/imgs/20260916/obs01_20260916224510.jpeg", timeout=10)
    assert image.headers["Content-Type"] == "image/jpeg" and image.content == base64.b64decode(body["img"])
    head = requests.head(f"{url}/20260916.html", timeout=10)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["Content-Length"]) > 1000


def test_a_page_not_made_yet_answers_a_page_that_says_when(live):
    """A Telegram post links to its night's page before the morning's build: the browser gets a page, not JSON."""
    url, _, _ = live
    for path in ("/20260917.html", "/19990101.html"):
        answer = requests.get(url + path, timeout=10)
        assert answer.status_code == 404 and answer.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "No page here yet" in answer.text and "the morning after the night ends" in answer.text
        assert 'href="archive.html"' in answer.text and 'href="index.html"' in answer.text
    assert requests.get(f"{url}/imgs/20260917/obs01_20260917224510.jpeg", timeout=10).json() == {"error": "not found"}


def test_pages_are_gzipped_and_images_cached_by_browsers(live):
    """A night of 1,000 detections is an 866 kB page, sent whole to every phone, and every image was fetched again
    on each visit: pages go gzipped to browsers that take it and are checked again by ETag (304), images and numbered
    models (written once) are cached for good; the archive of nights is served too."""
    url, _, _ = live
    for second in range(40):
        assert upload(url, detection(frame_id=f"202609142245{second:02d}", seed=second)).json()["status"] == "stored"
    requests.post(f"{url}/site?day=20260914", headers={"x-api-key": KEYS["obs02"]}, timeout=30).raise_for_status()
    plain = requests.get(f"{url}/20260914.html", headers={"Accept-Encoding": "identity"}, timeout=10)
    zipped = requests.get(f"{url}/20260914.html", headers={"Accept-Encoding": "gzip, deflate"}, stream=True,
                          timeout=10)
    raw = zipped.raw.read(decode_content=False)
    assert "Content-Encoding" not in plain.headers and zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(raw) == plain.content and len(raw) * 5 < len(plain.content)
    assert plain.headers["Cache-Control"] == "no-cache" and plain.headers["Vary"] == "Accept-Encoding"
    again = requests.get(f"{url}/20260914.html", timeout=10,
                         headers={"If-None-Match": plain.headers["ETag"], "Accept-Encoding": "identity"})
    assert again.status_code == 304 and again.content == b"" and again.headers["Vary"] == "Accept-Encoding"
    assert zipped.headers["ETag"] != plain.headers["ETag"]       # a cache in between must not swap the two bodies
    assert requests.get(f"{url}/20260914.html", timeout=10, headers={     # the plain body's tag does not stand
        "If-None-Match": plain.headers["ETag"], "Accept-Encoding": "gzip"}).status_code == 200   # for the gzipped
    image = requests.get(f"{url}/imgs/20260914/obs01_20260914224500.jpeg", timeout=10)
    assert image.headers["Cache-Control"] == "public, max-age=31536000, immutable" and "Content-Encoding" not in \
        image.headers
    assert requests.get(f"{url}/imgs/20260914/obs01_20260914224500.jpeg", timeout=10,
                        headers={"If-None-Match": image.headers["ETag"]}).status_code == 304
    archive = requests.get(f"{url}/archive.html", timeout=10)
    assert archive.status_code == 200 and "2026-09-14</a> · 40 detections" in archive.text


@pytest.mark.parametrize("header, takes", [("gzip", True), ("gzip;q=0", False), ("br, gzip;q=0.5", True),
                                           ("*", True), ("identity", False), ("", False), ("GZIP", True)])
def test_accepts_gzip(header, takes):
    assert server.accepts_gzip(header) is takes


def test_published_model_is_served(live):
    """The layout gualta.export.publish_model writes: versioned file, latest copy, metadata naming the file."""
    url, root, _ = live
    assert requests.get(f"{url}/models/latest", timeout=10).status_code == 404
    model = bytes(range(256)) * 40
    meta = {"version": 3, "file": "guAlta_v3.onnx", "sha256": hashlib.sha256(model).hexdigest(), "size": len(model)}
    local = store.LocalStore(root)
    local.put("models/guAlta_v3.onnx", model)
    local.put("models/guAlta_latest_version.onnx", model)
    store.write_json(local, "models/guAlta_latest_version.json", meta)
    assert requests.get(f"{url}/models/latest", timeout=10).json() == meta
    file = requests.get(f"{url}/models/latest/file", timeout=10)
    assert file.content == model and hashlib.sha256(file.content).hexdigest() == meta["sha256"]
    assert file.headers["Content-Disposition"] == 'attachment; filename="guAlta_v3.onnx"'
    store.write_json(local, "models/guAlta_latest_version.json", {**meta, "file": "../../etc/passwd"})
    fallback = requests.get(f"{url}/models/latest/file", timeout=10)         # unsafe name: the latest copy
    assert fallback.headers["Content-Disposition"] == 'attachment; filename="guAlta_latest_version.onnx"'
    for key, data in (("models/guAlta_v3.onnx", model), ("models/guAlta_latest_version.onnx", model)):
        assert requests.get(f"{url}/{key}", timeout=10).content == data     # the keys, as a public bucket serves
    assert requests.get(f"{url}/models/guAlta_latest_version.json", timeout=10).json()["sha256"] == meta["sha256"]
    assert requests.get(f"{url}/models/guAlta_v4.onnx", timeout=10).status_code == 404
    assert requests.get(f"{url}/models/other.onnx", timeout=10).status_code == 404


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/uploadmeteor", 405), ("DELETE", "/uploadmeteor", 405), ("POST", "/upload", 404),
    ("GET", "/imgs/../detections/x.json", 404), ("GET", "/detections/", 404),
    ("GET", "/logs/20260916/obs01_end.json", 404), ("PUT", "/index.html", 404), ("GET", "/site", 405),
    ("POST", "/site", 401), ("BREW", "/", 404)])
def test_wrong_method_or_path(live, method, path, status):
    url, _, _ = live
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
    connection.request(method, path, body=b"" if method in ("POST", "PUT") else None)
    reply = connection.getresponse()
    assert reply.status == status and "error" in json.loads(reply.read())
    connection.close()


def test_site_on_demand_checks_its_input(live):
    """Only a night a page can be for: a real date, from 2000 to tomorrow's night — a night far ahead would have
    stayed the latest for good (index.html showing it), year 1 took a minute of CPU and a 500."""
    url, store, _ = live
    tomorrow = (datetime.now() + timedelta(days=2)).strftime("%Y%m%d")
    for day, reason in (("20261399", "not a night (a real date YYYYMMDD)"), ("29990101", "no page for night 29990101"),
                        ("00010101", "no page for night 00010101"), (tomorrow, f"no page for night {tomorrow}")):
        bad = requests.post(f"{url}/site?day={day}", headers={"x-api-key": KEYS["obs01"]}, timeout=10)
        assert bad.status_code == 400 and reason in bad.json()["error"], bad.text
        assert not (store / f"{day}.html").exists()


def test_site_on_demand_takes_day_alone(live):
    """An empty `day` (a script's unset variable) or another parameter ran the whole scheduled job — Telegram
    posts sent again, last night's page rebuilt: now a 400 that builds nothing."""
    url, root, _ = live
    for query in ("day=", "night=20260901", "day=20260916&day=20260915", "day=20260916&x=1"):
        before = snapshot(root)
        bad = requests.post(f"{url}/site?{query}", headers={"x-api-key": KEYS["obs01"]}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"].startswith(("day: ", "the only parameter")), query
        assert snapshot(root) == before, query


def test_an_api_key_sent_twice_is_refused_by_both_routes(live):
    """Two x-api-key headers: the upload took the last, /site the first; now both refuse, whatever the values."""
    url, root, _ = live
    host, port = urlsplit(url).hostname, urlsplit(url).port
    before = snapshot(root)
    for path, body in (("/uploadmeteor", json.dumps(detection(frame_id="20260916230000")).encode()), ("/site", b"")):
        for first, second in ((KEYS["obs02"], KEYS["obs01"]), (KEYS["obs01"], KEYS["obs01"])):
            connection = http.client.HTTPConnection(host, port, timeout=30)
            connection.putrequest("POST", path)
            connection.putheader("x-api-key", first)
            connection.putheader("X-API-Key", second)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            reply = connection.getresponse()
            assert (reply.status, json.loads(reply.read())) == (401, {"error": "x-api-key sent more than once"})
            connection.close()
    assert snapshot(root) == before


def test_oversized_body_is_refused_unread(live):
    url, root, child = live
    before = snapshot(root)
    reply = requests.post(f"{url}/uploadmeteor", data=b"x" * (7 * 1024 * 1024),
                          headers={"x-api-key": KEYS["obs01"]}, timeout=30)
    assert reply.status_code == 413
    assert snapshot(root) == before and child.alive()
    assert requests.get(f"{url}/health", timeout=10).json() == {"status": "ok"}


def test_small_concurrent_load_stores_everything_once(live):
    """bench/load.py's own check, small: 3 observatories × 20 detections, 10 % re-sent, concurrently."""
    url, root, _ = live
    run = subprocess.run([sys.executable, str(REPO / "bench" / "load.py"), "--url", url, "--keys", KEYS_ENV,
                          "--store", str(root), "--observatories", "3", "--detections", "20", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["stored"] == 60 and result["duplicates_answered"] == result["resent"] > 0
    assert result["records_in_store"] == 60 and result["images_in_store"] == 60 and result["errors"] == 0


def test_proxy_event_translation():
    got = server.proxy_event("POST", "/uploadmeteor?a=1&a=2&b=", {"X-Api-Key": ["k"], "Accept": ["a", "b"]},
                             b"\xff\x00binary", "10.0.0.1")
    assert (got["httpMethod"], got["path"], got["resource"]) == ("POST", "/uploadmeteor", "/uploadmeteor")
    assert got["headers"] == {"X-Api-Key": "k", "Accept": "b"} and got["multiValueHeaders"]["Accept"] == ["a", "b"]
    assert got["queryStringParameters"] == {"a": "2", "b": ""}
    assert got["isBase64Encoded"] and base64.b64decode(got["body"]) == b"\xff\x00binary"
    assert got["requestContext"]["identity"]["sourceIp"] == "10.0.0.1"
    text = server.proxy_event("GET", "/", {}, b"", "127.0.0.1")
    assert text["body"] is None and not text["isBase64Encoded"] and text["queryStringParameters"] is None


def test_the_page_is_built_at_the_next_local_time():
    zone = ZoneInfo("Europe/Madrid")
    assert config.next_local_time(datetime(2026, 9, 17, 8, 59, tzinfo=zone), "0900") == datetime(2026, 9, 17, 9, 0,
                                                                                                  tzinfo=zone)
    assert config.next_local_time(datetime(2026, 9, 17, 9, 0, tzinfo=zone), "09:00") == datetime(2026, 9, 18, 9, 0,
                                                                                                  tzinfo=zone)
    for bad in ("9", "2400", "09:60", "ab:cd"):
        with pytest.raises(ValueError):
            config.next_local_time(datetime(2026, 9, 17, 9, 0, tzinfo=zone), bad)


@pytest.mark.parametrize("evening, hours", [(datetime(2021, 3, 27, 20, 0), 12), (datetime(2021, 10, 30, 20, 0), 14),
                                            (datetime(2021, 11, 6, 20, 0), 13)])
def test_the_page_waits_as_the_clock_runs_over_a_change_of_summer_time(evening, hours):
    """From 20:00 to the next 09:00 is 12 h on the night summer time starts and 14 h on the night it ends: the
    page is built at 09:00 local, not an hour late or early."""
    assert config.seconds_until(evening.replace(tzinfo=ZoneInfo("Europe/Madrid")), "0900") == hours * 3600


@pytest.mark.parametrize("evening, hours", [(datetime(2021, 3, 27, 20, 0), 12), (datetime(2021, 10, 30, 20, 0), 14)])
def test_without_a_configured_zone_the_machines_summer_time_rules_apply(madrid_clock, evening, hours):
    """GUALTA_TIMEZONE unset: the machine's zone, with its rules — not today's offset fixed for good, which built
    the page an hour off after each change until the service restarted."""
    zone = server.service_env.timezone({})
    assert config.seconds_until(evening.replace(tzinfo=zone), "0900") == hours * 3600
    assert datetime(2021, 7, 1, 12, 0, tzinfo=zone).utcoffset() == timedelta(hours=2)
    assert datetime(2021, 12, 1, 12, 0, tzinfo=zone).utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize("zone", [ZoneInfo("Europe/Madrid"), None], ids=["named zone", "machine zone"])
def test_a_time_the_clock_skips_comes_when_the_clock_jumps_past_it(madrid_clock, zone):
    """When summer time starts the clock goes from 02:00 to 03:00: a page due at 02:30 came at 03:30, an hour late;
    it comes at 03:00, the first instant the clock reads 02:30 or later (as cron runs a skipped time)."""
    evening, night = datetime(2022, 3, 26, 20, 0, tzinfo=zone), datetime(2022, 3, 27, 1, 0, tzinfo=zone)
    assert config.next_local_time(evening, "0230") == datetime(2022, 3, 27, 3, 0, tzinfo=zone)
    assert config.next_local_time(evening, "0200") == datetime(2022, 3, 27, 3, 0, tzinfo=zone)
    assert config.next_local_time(evening, "0159") == datetime(2022, 3, 27, 1, 59, tzinfo=zone)
    assert config.seconds_until(night, "0230") == 3600 and config.seconds_until(night, "0300") == 3600
    after = datetime(2022, 3, 27, 3, 0, 1, tzinfo=zone)
    assert config.next_local_time(after, "0230") == datetime(2022, 3, 28, 2, 30, tzinfo=zone)     # once that day


@pytest.mark.parametrize("zone", [ZoneInfo("Europe/Madrid"), None], ids=["named zone", "machine zone"])
def test_a_time_the_clock_reads_twice_is_built_once_a_restart_between_included(tmp_path, madrid_clock, zone):
    """When summer time ends the clock reads 02:00–03:00 twice. The page due at 02:30 comes at the first 02:30; a
    service restarted between the two (02:10, second pass) built that day's page again at the second 02:30: it waits
    for the next day's, and builds at once only a page it missed."""
    first_pass, second_pass = datetime(2021, 10, 31, 2, 10, tzinfo=zone), datetime(2021, 10, 31, 2, 10, fold=1,
                                                                                    tzinfo=zone)
    assert config.seconds_until(first_pass, "0230") == 20 * 60
    assert config.next_local_time(second_pass, "0230") == datetime(2021, 11, 1, 2, 30, tzinfo=zone)
    assert config.seconds_until(second_pass, "0230") == 24 * 3600 + 20 * 60
    env = service_env(tmp_path / "store")
    assert server.page_missed(env, "0230", second_pass)                             # down at the first 02:30
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / f"{server.service_env.ended_night(second_pass, env)}.html").write_text("<html/>")
    assert not server.page_missed(env, "0230", second_pass)                         # built at the first 02:30


def test_schedule_thread_builds_the_page(tmp_path, monkeypatch):
    env = service_env(tmp_path / "store")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(config, "next_local_time", lambda now, at: now + timedelta(seconds=0.2))
    page = scheduled_page(env, tmp_path / "store", "index.html")
    assert page.exists() and (tmp_path / "store" / "index.html").exists()


def scheduled_page(env: dict, root: Path, *then: str) -> Path:
    """The page of the night that ended last, as the schedule thread of a new service builds it (20 s at most), and
    the pages named in `then`, written after it."""
    stop = threading.Event()
    server.schedule_pages(server.Service(), "0900", stop)
    page = root / f"{server.service_env.ended_night(datetime.now(timezone.utc), env)}.html"
    deadline = time.monotonic() + 20
    while not all(path.exists() for path in (page, *(root / name for name in then))) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    return page


def test_a_service_started_after_the_days_build_time_builds_the_missed_page_at_once(tmp_path, monkeypatch):
    """Down at 09:00 (a power cut) and started at 10:00, the service waited until the next morning: the operator had
    no page of last night all day. Started after the day's build time with no page for its night, it builds it at
    once; before that time, or with the page made, it waits as before."""
    env = service_env(tmp_path / "store")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    madrid = ZoneInfo("Europe/Madrid")
    at_ten, at_eight = datetime(2026, 9, 17, 10, 0, tzinfo=madrid), datetime(2026, 9, 17, 8, 0, tzinfo=madrid)
    assert server.page_missed(env, "0900", at_ten) and not server.page_missed(env, "0900", at_eight)
    assert not server.page_missed(env, "1100", at_ten)
    (tmp_path / "store").mkdir(exist_ok=True)
    (tmp_path / "store" / "20260916.html").write_text("<html></html>")
    assert not server.page_missed(env, "0900", at_ten)

    monkeypatch.setattr(config, "next_local_time", lambda now, at: now + timedelta(days=1))   # today's build is past
    assert scheduled_page(env, tmp_path / "store").exists()


def test_serve_refuses_a_bad_key_setting(tmp_path):
    """A malformed GUALTA_API_KEYS is an invalid setting: exit status 2 (it was 1)."""
    run = subprocess.run([sys.executable, "guAlta.py", "serve", "--port", "0", "--store", str(tmp_path / "s")],
                         cwd=REPO, env=child_env(GUALTA_API_KEYS="<script>:abcdefghijkl"), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "API key entry 1" in run.stderr and "abcdefghijkl" not in run.stderr
    assert not Path(tmp_path / "s").exists()


def test_a_store_that_fails_under_the_service_answers_503_and_the_retry_is_stored(tmp_path):
    """A store folder the service cannot write (a full disk; here a file where the night's image folder goes) is the
    service's fault: 503 and a reason, nothing recorded, and the client's retry is stored once it can write."""
    root = tmp_path / "store"
    (root / "imgs").mkdir(parents=True)
    (root / "imgs" / "20260916").write_text("in the way")
    with server.ChildServer(root, child_env(GUALTA_API_KEYS=KEYS_ENV)) as child:
        body = detection(frame_id="20260916224510")
        refused = upload(child.url, body)
        assert (refused.status_code, refused.json()) == (503, {"error": "store unavailable, retry later"})
        assert not (root / "detections").exists()
        deadline = time.monotonic() + 10                              # the child's log line is read by a thread
        while not any("store unavailable: cannot write imgs/20260916/obs01_20260916224510.jpeg" in line
                      for line in child.lines):
            assert time.monotonic() < deadline, list(child.lines)
            time.sleep(0.05)
        (root / "imgs" / "20260916").unlink()
        assert upload(child.url, body).json()["status"] == "stored"
    assert (root / "detections" / "20260916" / "obs01_20260916224510.json").is_file()


def test_service_commands_refuse_what_they_cannot_do_in_one_line(tmp_path):
    """A port in use, a store folder that cannot be made, a night that is not a date, a mistyped store for a page
    (it was made, and the page built empty), a demo folder that cannot be made: one line, exit status 1."""
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "s").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = {("serve", "--port", str(port), "--store", str(tmp_path / "s")):
                 f"guAlta serve: cannot listen on 127.0.0.1:{port}: Address already in use",
                 ("serve", "--port", "0", "--store", str(tmp_path / "file")):
                 f"guAlta serve: store folder {tmp_path / 'file'} cannot be made: a file is there",
                 ("site", "--store", str(tmp_path / "typo"), "--day", "20260916"):
                 f"guAlta site: no store folder {tmp_path / 'typo'} (the service makes it when it starts: "
                 "`guAlta.py serve`)",
                 ("demo", "--out", str(tmp_path / "file" / "demo")):
                 f"guAlta demo: --out {tmp_path / 'file' / 'demo'} cannot be made: Not a directory",
                 ("serve", "--port", "70000", "--store", str(tmp_path / "s")):
                 "guAlta.py serve: error: argument --port: not a port (0–65535): 70000",
                 ("demo", "--frames", "0", "--out", str(tmp_path / "demo")):
                 "guAlta.py demo: error: argument --frames: not a number of frames (1 or more): 0",
                 ("site", "--store", str(tmp_path / "s"), "--day", "20261301"):
                 "guAlta site: --day 20261301: not a night (a real date YYYYMMDD)",
                 ("site", "--store", str(tmp_path / "s"), "--day", "29990101"):
                 f"guAlta site: --day 29990101: no page for night 29990101: nights from 20000101 to "
                 f"{(datetime.strptime(allsky.night_of(datetime.now()), '%Y%m%d') + timedelta(days=1)):%Y%m%d}"}
        for args, said in cases.items():
            run = subprocess.run([sys.executable, "guAlta.py", *args], cwd=REPO, env=child_env(),
                                 capture_output=True, text=True, timeout=60)
            status = 2 if ": error: argument" in said else 1
            assert (run.returncode, run.stderr.strip().splitlines()[-1]) == (status, said), run.stderr
            assert "Traceback" not in run.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to stand for a full disk")
def test_a_page_built_with_stdout_on_a_full_disk_is_one_warning(tmp_path):
    """`guAlta.py site > log` on a full disk built the page, then ended in a traceback printing its summary, exit
    status 1 (a cron alarm for a page that was made). One warning now, exit status 0."""
    (tmp_path / "s").mkdir()
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "guAlta.py", "site", "--store", str(tmp_path / "s"), "--day",
                              "20260916"], cwd=REPO, env=child_env(), stdout=full, stderr=subprocess.PIPE, text=True,
                             timeout=60)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "cannot write to the console ([Errno 28] No space left on device)" in run.stderr
    assert (tmp_path / "s" / "20260916.html").is_file()


def test_bad_service_settings_on_the_command_line_or_environment_are_one_line(tmp_path):
    """A bad GUALTA_TIMEZONE, GUALTA_NIGHT_END or GUALTA_OBSERVATORIES exited 1; invalid settings exit 2."""
    (tmp_path / "s").mkdir()
    for args, env, status, said in (
            (("serve", "--site-at", "2500", "--store", str(tmp_path / "s")), {}, 2,
             "argument --site-at: must be a local time HHMM or HH:MM, e.g. 2000"),
            (("site", "--store", str(tmp_path / "s")), {"GUALTA_TIMEZONE": "Mars/Olympus"}, 2,
             "guAlta site: unknown time zone in GUALTA_TIMEZONE: 'Mars/Olympus'"),
            (("site", "--store", str(tmp_path / "s"), "--day", "20260916"), {"GUALTA_TIMEZONE": "Mars/Olympus"}, 2,
             "guAlta site: unknown time zone in GUALTA_TIMEZONE: 'Mars/Olympus'"),
            (("serve", "--port", "0", "--store", str(tmp_path / "s")), {"GUALTA_TIMEZONE": "Mars/Olympus"}, 2,
             "guAlta serve: unknown time zone in GUALTA_TIMEZONE: 'Mars/Olympus'"),
            (("serve", "--port", "0", "--store", str(tmp_path / "s")), {"GUALTA_NIGHT_END": "99"}, 2,
             "guAlta serve: GUALTA_NIGHT_END '99': must be a local time HHMM or HH:MM, e.g. 2000"),
            (("serve", "--port", "0", "--store", str(tmp_path / "s")), {"GUALTA_OBSERVATORIES": "{bad"}, 2,
             "guAlta serve: GUALTA_OBSERVATORIES is not valid: Expecting property name enclosed in double quotes: "
             "line 1 column 2 (char 1)")):
        run = subprocess.run([sys.executable, "guAlta.py", *args], cwd=REPO, env=child_env(**env),
                             capture_output=True, text=True, timeout=60)
        assert (run.returncode, run.stderr.strip().splitlines()[-1].endswith(said)) == (status, True), run.stderr
        assert "Traceback" not in run.stderr


def test_site_command(tmp_path):
    (tmp_path / "s").mkdir()
    run = subprocess.run([sys.executable, "guAlta.py", "site", "--store", str(tmp_path / "s"), "--day", "20260916"],
                         cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["written"] == ["20260916.html", "index.html", "archive.html"]
    assert "No observatory reported this night." in (tmp_path / "s" / "20260916.html").read_text()
    assert run.stderr == ""


def test_site_command_reads_the_store_from_config(tmp_path):
    config = tmp_path / "siteConfig.py"
    config.write_text('guAlta_store = "from_config"\n')
    (tmp_path / "from_config").mkdir()
    run = subprocess.run([sys.executable, "guAlta.py", "site", "--config", str(config), "--day", "20260916"],
                         cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "from_config" / "20260916.html").is_file()


def test_serve_warns_of_half_configured_telegram():
    """A token without a chat (or the other way round) started the service silently, every detection then recorded
    as 'not configured'."""
    env = {"GUALTA_API_KEYS": KEYS_ENV, "GUALTA_OBSERVATORIES": json.dumps(OBSERVATORIES)}
    assert server.check_settings(env) == []
    assert server.check_settings({**env, "GUALTA_TELEGRAM_TOKEN": "123:abc", "GUALTA_TELEGRAM_CHAT": "@n"}) == []
    assert server.check_settings({**env, "GUALTA_TELEGRAM_TOKEN_PARAM": "/gualta/token"}) == [
        "GUALTA_TELEGRAM_TOKEN_PARAM is set but not GUALTA_TELEGRAM_CHAT: nothing is posted to Telegram"]
    assert server.check_settings({**env, "GUALTA_TELEGRAM_CHAT": "@night"}) == [
        "GUALTA_TELEGRAM_CHAT is set but not GUALTA_TELEGRAM_TOKEN: nothing is posted to Telegram"]


def test_serve_refuses_post_limits_and_a_site_address_it_cannot_use():
    """A mistyped limit or site address started the service: the limit fell back to its default, warned of only
    when a detection was posted, and links in posts pointed nowhere."""
    env = {"GUALTA_API_KEYS": KEYS_ENV, "GUALTA_OBSERVATORIES": json.dumps(OBSERVATORIES)}
    fine = {"GUALTA_TELEGRAM_NIGHT_POSTS": "0", "GUALTA_TELEGRAM_WITHIN_DAYS": " 30 ",
            "GUALTA_SITE_URL": "https://meteors.example.org/pages/"}
    assert server.check_settings({**env, **fine}) == []
    for name, value, reason in [("GUALTA_TELEGRAM_NIGHT_POSTS", "fifty", "not a whole number"),
                                ("GUALTA_TELEGRAM_WITHIN_DAYS", "-3", "not a whole number"),
                                ("GUALTA_TELEGRAM_WITHIN_DAYS", "\u00b2", "not a whole number"),
                                ("GUALTA_SITE_URL", "meteors.example.org", "http://"),
                                ("GUALTA_SITE_URL", "ftp://meteors.example.org", "http://")]:
        with pytest.raises(server.service_env.ServiceConfigError, match=reason) as refused:
            server.check_settings({**env, **fine, name: value})
        assert name in str(refused.value)


def test_a_limit_in_other_digits_falls_back_to_the_default(caplog):
    """A limit of "²" passed str.isdigit and int() then raised, so posting the detection failed."""
    assert server.telegram_post.night_posts({"GUALTA_TELEGRAM_NIGHT_POSTS": "\u00b2"}) == 50
    assert "not a whole number" in caplog.text


def test_serve_warns_of_a_page_before_the_night_ends_and_refuses_a_wrong_end():
    env = {"GUALTA_API_KEYS": KEYS_ENV, "GUALTA_OBSERVATORIES": json.dumps(OBSERVATORIES)}
    assert server.check_settings(env, "0900") == [] and server.check_settings(env, "0800") == []
    assert server.check_settings(env, "0700") == [
        "the daily page at 0700 comes before the night's end (0800, GUALTA_NIGHT_END): it builds the night before "
        "last — set GUALTA_NIGHT_END to 0700 or earlier if the cameras stop by then"]
    assert server.check_settings({**env, "GUALTA_NIGHT_END": "06:45"}, "0700") == []
    with pytest.raises(server.service_env.ServiceConfigError, match="a night ends before noon"):
        server.check_settings({**env, "GUALTA_NIGHT_END": "1300"}, "0900")


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """A server in this process, its limits small: (server, host, port, store folder)."""
    root = tmp_path / "store"
    for name, value in service_env(root).items():
        monkeypatch.setenv(name, value)
    served = server.make_server("127.0.0.1", 0)
    served.read_s, served.max_connections = 1.0, 4
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served, *served.server_address[:2], root
    served.shutdown()
    served.server_close()


def raw(host, port, data: bytes) -> socket.socket:
    connection = socket.create_connection((host, port), timeout=10)
    connection.sendall(data)
    return connection


def answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_an_upload_without_a_valid_key_is_refused_before_its_body_is_read(in_process):
    """The whole body (up to 6 MB) was read before the key was looked at: 200 connections without a key, each
    declaring 6 MB and sending all but a byte, took 1.2 GB of the server's memory. The 401 comes first."""
    _, host, port, root = in_process
    for route in ("/uploadmeteor", "/site"):
        connection = raw(host, port, f"POST {route} HTTP/1.1\r\nHost: x\r\nx-api-key: wrong-key-123\r\n"
                                     f"Content-Length: 6000000\r\n\r\n".encode("ascii") + b"{" * 1000)
        reply = http.client.HTTPResponse(connection)
        reply.begin()                                   # while the body is still to be sent
        assert reply.status == 401 and "API key" in json.loads(reply.read())["error"]
        connection.close()
    assert snapshot(root) == {}


def test_the_access_log_names_posts_and_refusals_never_pages_headers_or_queries(in_process, monkeypatch, caplog):
    """The server logged every request at DEBUG only: `serve` showed nothing of uploads or refusals. POSTs and
    answers >= 400 are INFO (address, method, path without its query, status), pages served are not, and a refusal
    repeated from one address is logged once an hour."""
    _, host, port, _ = in_process
    monkeypatch.setattr(server, "ANSWERS", ingest.Throttle())
    monkeypatch.setattr(ingest, "REFUSALS", ingest.Throttle())
    caplog.set_level(logging.INFO)
    url = f"http://{host}:{port}"
    for _ in range(3):
        assert requests.post(f"{url}/uploadmeteor?token=q-secret", json=detection(), timeout=10,
                             headers={"x-api-key": "wrong-key-123"}).status_code == 401
    assert requests.post(f"{url}/uploadmeteor", json=detection(), headers={"x-api-key": KEYS["obs01"]},
                         timeout=10).status_code == 200
    assert requests.get(f"{url}/health?q-secret", timeout=10).status_code == 200
    assert requests.get(f"{url}/20260916.html", timeout=10).status_code == 404
    served = [r.getMessage() for r in caplog.records if r.name == "gualta.server"]
    assert served == ["127.0.0.1 POST /uploadmeteor 401", "127.0.0.1 POST /uploadmeteor 200",
                      "127.0.0.1 GET /20260916.html 404"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "refused POST /uploadmeteor from 127.0.0.1: 401 missing or unknown API key (header x-api-key); repeats are "
        "logged once an hour"]
    assert "q-secret" not in caplog.text and "wrong-key-123" not in caplog.text and KEYS["obs01"] not in caplog.text


def test_a_refused_site_build_is_logged_as_a_refused_upload_is(in_process, monkeypatch, caplog):
    """A POST /site with a wrong day or parameter was answered 400 with only an access-log line, though the README
    says a refused POST /site is a WARNING with its reason."""
    _, host, port, _ = in_process
    monkeypatch.setattr(ingest, "REFUSALS", ingest.Throttle())
    caplog.set_level(logging.INFO)
    for query in ("day=20261399", "night=20260916"):
        assert requests.post(f"http://{host}:{port}/site?{query}", headers={"x-api-key": KEYS["obs01"]},
                             timeout=10).status_code == 400
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "refused POST /site from 127.0.0.1: 400 day: not a night (a real date YYYYMMDD); repeats are logged once an "
        "hour", "refused POST /site from 127.0.0.1: 400 the only parameter is day=YYYYMMDD, given once; repeats are "
        "logged once an hour"]


def test_serve_shows_refused_uploads_and_the_access_log(tmp_path):
    """What `serve` prints: a refused upload's warning and its access-log line reach the console."""
    with server.ChildServer(tmp_path / "store", child_env(GUALTA_API_KEYS=KEYS_ENV)) as child:
        assert upload(child.url, detection(), key="wrong-key-123").status_code == 401
        wanted = ["WARNING gualta.ingest: refused POST /uploadmeteor from 127.0.0.1: 401 missing or unknown API key",
                  "INFO gualta.server: 127.0.0.1 POST /uploadmeteor 401"]
        deadline = time.monotonic() + 10                              # the child's log line is read by a thread
        while not all(any(text in line for line in child.lines) for text in wanted):
            assert time.monotonic() < deadline, list(child.lines)
            time.sleep(0.05)


def test_an_oversized_body_announced_with_expect_100_continue_is_refused_before_it_is_sent(in_process):
    """A client that asks before sending (`Expect: 100-continue`) a body over the limit is told 413 at once: a 100
    Continue would have it send 7 MB only to be refused."""
    _, host, port, _ = in_process
    connection = raw(host, port, f"POST /uploadmeteor HTTP/1.1\r\nHost: x\r\nx-api-key: {KEYS['obs01']}\r\n"
                                 "Content-Length: 7000000\r\nExpect: 100-continue\r\n\r\n".encode("ascii"))
    assert connection.makefile("rb").readline().split(b" ")[1] == b"413"
    connection.close()


def test_pages_and_models_the_store_cannot_read_answer_503(in_process):
    """A page, image or model the store cannot read (a failing disk; here links that loop) is the service's fault:
    503, the browser or client tries again, never a 500 nor a 404 that says it does not exist."""
    _, host, port, root = in_process
    for key in ("index.html", "20260916.html", "imgs/20260916/obs01_20260916231507.jpeg",
                "models/guAlta_latest_version.json"):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).symlink_to(root / key)
    for path in ("/", "/index.html", "/20260916.html", "/imgs/20260916/obs01_20260916231507.jpeg", "/models/latest",
                 "/models/latest/file", "/models/guAlta_latest_version.json"):
        reply = requests.get(f"http://{host}:{port}{path}", timeout=10)
        assert (reply.status_code, reply.json()) == (503, {"error": "store unavailable, retry later"}), path


def test_api_keys_that_cannot_be_read_are_answered_with_500_and_nothing_is_stored(in_process, monkeypatch):
    """The keys' setting failing while the service runs (an unreadable SSM parameter, a badly edited one) closed
    the connection without an answer; the AWS host answers 500 for it, and so does this one (the client retries)."""
    _, host, port, root = in_process
    monkeypatch.setenv("GUALTA_API_KEYS", "obs01:short")
    for route in ("/uploadmeteor", "/site"):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request("POST", route, body=json.dumps(detection()), headers={"x-api-key": KEYS["obs01"]})
        reply = connection.getresponse()
        assert reply.status == 500 and json.loads(reply.read()) == {"error": "service misconfigured"}
        connection.close()
    assert snapshot(root) == {}


def test_a_request_sent_a_byte_at_a_time_is_cut_off(in_process):
    """A client sending a header byte every few seconds kept its connection (and thread) for ever: the 30 s socket
    timeout restarts with each byte. A request not read within read_s is cut off; others are served meanwhile."""
    served, host, port, _ = in_process
    slow = raw(host, port, b"GET /health HTTP/1.1\r\nX-a: ")
    started = time.monotonic()
    for _ in range(40):
        try:
            slow.sendall(b"a")
        except OSError:
            break
        if select.select([slow], [], [], 0)[0]:        # closed by the server
            break
        time.sleep(0.1)
    assert answer(slow) == b"" and time.monotonic() - started < 3 * served.read_s + 2
    assert requests.get(f"http://{host}:{port}/health", timeout=10).json() == {"status": "ok"}


def test_connections_beyond_the_limit_get_503_and_the_service_recovers(in_process):
    """Each connection is a thread: a thousand idle ones took every file descriptor and a real client timed out.
    Beyond max_connections a new one is answered 503 at once (the client's outbox retries); once they go, it is
    served again."""
    served, host, port, _ = in_process
    idle = [raw(host, port, b"GET /health HTTP/1.1\r\n") for _ in range(served.max_connections)]
    time.sleep(0.2)
    refused = raw(host, port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = answer(refused)
    assert reply.startswith(b"HTTP/1.1 503") and b"too many connections" in reply and b"Retry-After: 30" in reply
    for connection in idle:
        connection.close()
    deadline = time.monotonic() + 10
    while served.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert requests.get(f"http://{host}:{port}/health", timeout=10).json() == {"status": "ok"}


def test_idle_kept_alive_connections_free_their_places_soon(in_process):
    """A browser keeps ~6 connections alive after loading a page: idle, each held one of max_connections for the
    30 s socket timeout, so a few dozen viewers had every upload answered 503. A kept-alive connection now waits
    keep_alive_s for its next request; a new one still waits the socket timeout for its first."""
    served, host, port, _ = in_process
    served.keep_alive_s = 2.0                                       # the four requests take well under that
    viewers = [http.client.HTTPConnection(host, port, timeout=10) for _ in range(served.max_connections)]
    for viewer in viewers:
        viewer.request("GET", "/health")
        assert viewer.getresponse().read() == b'{"status": "ok"}'
    assert served.busy == served.max_connections
    deadline = time.monotonic() + 5 * served.keep_alive_s           # well inside the 30 s socket timeout
    while served.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.busy == 0
    assert requests.get(f"http://{host}:{port}/health", timeout=10).json() == {"status": "ok"}
    for viewer in viewers:
        viewer.close()


def test_time_a_kept_alive_connection_waits_is_not_the_next_requests(in_process):
    """The clock of a request started while its connection waited for it: a client reusing its connection after a
    pause (the sender's session does) had that much less time to send its upload, and was cut off mid-body."""
    served, host, port, _ = in_process
    connection = http.client.HTTPConnection(host, port, timeout=10)
    for pause in (0, 2 * served.read_s):
        time.sleep(pause)
        connection.request("GET", "/health")
        reply = connection.getresponse()
        assert reply.status == 200 and json.loads(reply.read()) == {"status": "ok"}
    connection.close()


def test_a_request_line_with_an_http_version_it_does_not_speak_is_a_400(in_process):
    """http.server answers HTTP/2.0 (or 3) with a 505 and an HTML page: a 5xx for the client's request, which the
    service promises never to answer. It is a 400 with a JSON error, as every other bad request."""
    _, host, port, _ = in_process
    reply = answer(raw(host, port, b"GET / HTTP/2.0\r\n\r\n"))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400" and b"Content-Type: application/json" in head
    assert "error" in json.loads(body)


@pytest.mark.parametrize("code", [500, 501, 505])
def test_every_5xx_http_server_may_send_for_a_request_becomes_a_400(code):
    """The module promises no 5xx for anything a client sends: whichever server error http.server would answer
    about the request line or headers (this Python says 501 and 505; any 5xx another may say) is sent as a 400."""
    sent = []
    handler = SimpleNamespace(request_version="HTTP/1.1", close_connection=False,
                              reply=lambda status, body: sent.append((status, body)))
    server.Handler.send_error(handler, code, "what http.server said")
    assert sent == [(400, {"error": "what http.server said"})] and handler.close_connection is True


def test_a_page_the_store_may_not_read_answers_503_not_404(in_process, monkeypatch):
    """A page the service's user may not read (a permission changed by hand, a backup restored as another user) is
    no missing page: a 404 would say it was never made. It is the store's fault, a 503."""
    _, host, port, root = in_process
    (root / "index.html").parent.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text("<html/>")
    read_bytes = Path.read_bytes

    def refused(path):                               # chmod does nothing for root, who runs the tests
        if path.name == "index.html":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refused)
    reply = requests.get(f"http://{host}:{port}/index.html", timeout=10)
    assert (reply.status_code, reply.json()) == (503, {"error": "store unavailable, retry later"})


def test_a_body_of_the_limits_size_is_taken_and_one_byte_more_is_not(in_process):
    """The limit is the largest body taken (API Gateway's 6 MB): a detection padded to exactly that size is stored,
    one byte more is refused 413 and nothing of it stored."""
    _, host, port, root = in_process
    limit = server.payload.MAX_BODY_BYTES
    for frame_id, size, status in (("20260916231507", limit, 200), ("20260916231600", limit + 1, 413)):
        body = json.dumps(detection(frame_id=frame_id)).encode()
        connection = http.client.HTTPConnection(host, port, timeout=30)
        connection.request("POST", "/uploadmeteor", body=body + b" " * (size - len(body)),
                           headers={"x-api-key": KEYS["obs01"], "Content-Type": "application/json"})
        reply = connection.getresponse()
        assert reply.status == status, reply.read()
        assert (root / f"detections/20260916/obs01_{frame_id}.json").exists() == (status == 200)
        connection.close()
