"""Hostile input: ≥ 1,000 bad requests against the real server (bench/hostile.py), and inert text in the page."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gualta import server, store
from helpers_service import KEYS, REPO, browser_page, detection, event, service_env

WEBSITE = server.load_handler("generateWebsite")
INGEST = server.load_handler("guAlta")
ATTACK = '<img src=x onerror="window.pwned=1;document.title=\'pwned\'">'
SCRIPT = "<script>window.pwned=2;document.title='pwned'</script>"


@pytest.fixture(scope="module")
def hostile_run():
    run = subprocess.run([sys.executable, str(REPO / "bench" / "hostile.py"), "--count", "1000", "--json"],
                         capture_output=True, text=True, timeout=300)
    return run.returncode, json.loads(run.stdout.splitlines()[-1]), run.stdout


def test_a_thousand_bad_requests_get_4xx_and_write_nothing(hostile_run):
    code, result, text = hostile_run
    assert result["requests"] >= 1000
    assert result["server_errors"] == 0 and result["accepted"] == 0 and result["no_answer"] == 0, text
    assert result["unexpected"] == [], text
    assert result["store_checked"] and result["store_unchanged"]
    assert result["still_serving"] and result["server_alive_after"]
    assert code == 0


def test_every_kind_of_attack_was_tried(hostile_run):
    _, result, _ = hostile_run
    by = result["by_category"]
    expected = {"malformed json": {"400"}, "missing field": {"400"}, "bad image": {"400"}, "over 6 MB": {"413"},
                "api key": {"401"}, "api key (foreign obs_id)": {"403"}, "wrong method": {"405"},
                "wrong path": {"404"}, "unknown field": {"400"}, "inconsistent id/date/time/folder": {"400"},
                "bad streak": {"400"}}
    for category, statuses in expected.items():
        assert set(by[category]) == statuses, (category, by[category])
    assert set(by["path in obs_id/id/folder"]) <= {"400", "403"} and sum(by["path in obs_id/id/folder"].values()) > 100
    assert set(by["broken HTTP"]) <= {"400", "401", "404", "411", "413", "414", "431"}
    assert sum(by["wrong type/value"].values()) > 200 and sum(by["malformed json"].values()) > 100


def test_markup_in_obs_id_cannot_be_stored(tmp_path, monkeypatch):
    for key, value in service_env(tmp_path / "store").items():
        monkeypatch.setenv(key, value)
    for obs_id in ("<script>", "obs01<script>", "../obs01", "obs01/x"):
        body = {**detection(), "obs_id": obs_id}
        assert INGEST(event(body, KEYS["obs01"]), None)["statusCode"] == 403
    assert not (tmp_path / "store").exists()


def test_stored_markup_renders_inert_in_chromium(tmp_path, monkeypatch):
    """Values written into the store behind the validator's back (an old or tampered record) stay text."""
    observatories = {"obs01": {"lat": 41.6, "lon": 1.84, "name": SCRIPT + ATTACK, "tz": "Europe/Madrid"}}
    for key, value in service_env(tmp_path / "store", GUALTA_OBSERVATORIES=json.dumps(observatories)).items():
        monkeypatch.setenv(key, value)
    assert INGEST(event(detection()), None)["statusCode"] == 200
    local = store.LocalStore(tmp_path / "store")
    key = "detections/20260916/obs01_20260916231507.json"
    record = store.read_json(local, key)
    record.update(flag=ATTACK, model=SCRIPT, telegram_status="</div>" + ATTACK, time=ATTACK, score=ATTACK)
    store.write_json(local, key, record)
    store.write_json(local, "logs/20260916/obs01_start.json", {"log": "start", "obs_id": "obs01",
                                                               "processed": ATTACK, "received": SCRIPT})
    store.write_json(local, "logs/20260916/obs01_end.json", {"log": "end", "obs_id": "obs01", "total": ATTACK})
    WEBSITE({"day": "20260916"}, None)
    page_file = tmp_path / "store" / "20260916.html"
    console = []
    with browser_page(1280, 900) as page:
        page.on("console", lambda message: console.append(message.text))
        page.goto(page_file.as_uri())            # file://: no CSP header, so only escaping protects the page
        page.wait_for_load_state("load")
        page.wait_for_timeout(300)
        seen = page.evaluate("""() => ({title: document.title, pwned: window.pwned ?? null,
            scripts: document.scripts.length, bad: document.querySelectorAll('img[src="x"], img[onerror]').length,
            text: document.body.innerText})""")
    assert seen["title"] == "guAlta · night of 2026-09-16" and seen["pwned"] is None
    assert seen["scripts"] == 0 and seen["bad"] == 0
    assert ATTACK in seen["text"] and SCRIPT in seen["text"]           # shown literally, as text
    assert not any("pwned" in line for line in console)
