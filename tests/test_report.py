"""The durable outbox and the API client: nothing is lost while the service is down, nothing is reported twice."""
from __future__ import annotations

import importlib.util
import errno
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gualta import payload, report
from gualta.detect import run_batch, run_nights
from gualta.report import ApiClient, Outbox, Sender, deliver, flush
from gualta.scores import read_scores
from gualta.server import ChildServer
from helpers_client import settings
from helpers_service import KEYS, RecordingServer, child_env, detection, free_port, service_env

KEY = KEYS["obs01"]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(report, "BACKOFF_FIRST_S", 0.05)
    monkeypatch.setattr(report, "BACKOFF_MAX_S", 0.2)


class StubService(RecordingServer):
    """A local HTTP service answering POSTs with the statuses in `answers` (then 200), recording the bodies and
    when each arrived (`time.monotonic`)."""

    def __init__(self, answers: list[int]):
        self.answers, self.bodies, self.arrivals = list(answers), [], []
        super().__init__(self.answer)

    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict]:
        self.arrivals.append(time.monotonic())
        self.bodies.append(json.loads(body))
        status = self.answers.pop(0) if self.answers else 200
        return status, {"status": "stored" if status == 200 else "error"}


def queue_numbered(outbox: Outbox, count: int) -> None:
    """Queue `count` small reports, {"n": 0} to {"n": count - 1}, oldest first."""
    for n in range(count):
        outbox.put(f"detection/obs01/{n}", {"n": n})


def test_a_redirect_is_refused_and_takes_the_key_nowhere():
    """requests followed redirects with the x-api-key header (it drops only Authorization): the key went to
    whatever host a proxy pointed at (an http → https redirect: in clear first), and a 301/302 turned the report into
    a body-less GET that a landing page answered 200 — marked sent, lost."""
    received = []
    target = RecordingServer(lambda path, headers, body: received.append(dict(headers)) or (200, {"status": "stored"}))
    try:
        for code in (301, 302, 307, 308):
            moved = RecordingServer(lambda path, headers, body, code=code: (
                code, "moved", {"Location": target.url.replace("//", "//proxy:Passw0rd@") + "/uploadmeteor"}))
            outcome = ApiClient(moved.url, "SECRETkey0123").send(json.dumps(detection()))
            moved.close()
            assert outcome.kind == "refused", outcome
            assert outcome.detail == f"HTTP {code}: the service redirects to {target.url}/uploadmeteor: set " \
                                     f"guAlta_URL to the address it redirects to"
    finally:
        target.close()
    assert received == []


def test_put_keeps_the_first_copy_unless_replacing(tmp_path):
    with Outbox(tmp_path / "o.sqlite") as outbox:
        assert outbox.put("detection/obs01/1", {"a": 1}) is True
        assert outbox.put("detection/obs01/1", {"a": 2}) is False
        assert outbox.put("log/end/obs01/n", {"total": 1}, replace=True) is True
        assert outbox.put("log/end/obs01/n", {"total": 1}, replace=True) is False      # same body: nothing new
        assert outbox.put("log/end/obs01/n", {"total": 2}, replace=True) is True
        assert [json.loads(item.body) for item in outbox.due()] == [{"a": 1}, {"total": 2}]


def test_the_outbox_forgets_what_was_delivered_long_ago_and_never_what_is_pending(tmp_path):
    day, now = 86400, time.mktime((2026, 12, 5, 12, 0, 0, 0, 0, -1))
    with Outbox(tmp_path / "o.sqlite") as outbox:
        for key in ("old-sent", "new-sent", "old-pending", "old-rejected"):
            outbox.put(key, {"key": key})
        items = {item.key: item for item in outbox.due()}
        outbox.mark(items["old-sent"], report.Outcome("sent"), now - 31 * day)
        outbox.mark(items["new-sent"], report.Outcome("sent"), now - 29 * day)
        outbox.mark(items["old-rejected"], report.Outcome("rejected", "400 invalid"), now - 90 * day)
        outbox.db.execute("UPDATE outbox SET created = ? WHERE key = 'old-pending'", (now - 90 * day,))
        for night in ("20261103", "20261104", "20261105", "20261204"):
            outbox.record_frame(night, {"file": f"image-{night}220000.jpg"})
            outbox.close_night(night)
        assert outbox.forget_old(now) == 1 + 2                          # one report, two nights' frames
        assert {key for key, in outbox.db.execute("SELECT key FROM outbox")} == {"new-sent", "old-pending",
                                                                                 "old-rejected"}
        assert [night for night in ("20261103", "20261104", "20261105", "20261204") if outbox.night_rows(night)] \
            == ["20261105", "20261204"]
        assert outbox.closed_nights() == {"20261105", "20261204"}
        assert outbox.forget_old(now) == 0
        assert outbox.put("old-sent", {"key": "old-sent"}) is True      # forgotten: a re-run would send it again


def test_the_outbox_forgets_rejected_reports_after_90_days(tmp_path):
    """A rejected report (its ~30 kB body and the service's reason) stayed for ever: it outlives a delivered one
    (30 days), to be read and fixed, and goes after 90."""
    day, now = 86400, time.mktime((2026, 12, 5, 12, 0, 0, 0, 0, -1))
    with Outbox(tmp_path / "o.sqlite") as outbox:
        for key in ("month-rejected", "season-rejected", "season-sent"):
            outbox.put(key, {"key": key})
        items = {item.key: item for item in outbox.due()}
        outbox.mark(items["month-rejected"], report.Outcome("rejected", "400 invalid"), now - 31 * day)
        outbox.mark(items["season-rejected"], report.Outcome("rejected", "400 invalid"), now - 91 * day)
        outbox.mark(items["season-sent"], report.Outcome("sent"), now - 91 * day)
        assert outbox.forget_old(now) == 2
        assert [key for key, _ in outbox.rejected()] == ["month-rejected"]
        assert {key for key, in outbox.db.execute("SELECT key FROM outbox")} == {"month-rejected"}


def test_forgetting_an_outage_backlog_gives_its_disk_space_back(tmp_path):
    """A three-week outage queues hundreds of reports (31 kB each); delivered and forgotten a month later, the file
    kept its size and the write-ahead log grew as large again (SQLite zeroes freed pages through it), 40 MB on the Pi
    until the watcher restarted. The file is now shrunk and the log cut back, with the sender's connection open."""
    day, now = 86400, time.mktime((2026, 12, 5, 12, 0, 0, 0, 0, -1))
    path = tmp_path / "o.sqlite"
    with Outbox(path) as watcher, Outbox(path) as sender:
        for i in range(400):
            watcher.put(f"detection/obs01/{i}", {"img": f"{i:05d}" * 6000})
        for item in sender.due(limit=400):
            sender.mark(item, report.Outcome("sent"), now - 40 * day)
        assert path.stat().st_size > 10_000_000
        assert watcher.forget_old(now) == 400
        wal = path.with_name(path.name + "-wal")
        assert path.stat().st_size < 1_000_000
        assert not wal.exists() or wal.stat().st_size <= report.WAL_LIMIT_BYTES
        assert sender.put("detection/obs01/new", {"a": 1}) is True and len(watcher.due()) == 1    # both still work


def test_giving_space_back_waits_for_no_one(tmp_path, caplog):
    """A third connection in the middle of a read (a database browser left open on the outbox) held the checkpoint
    for the 30 s busy timeout, at the watcher's night start, and the space was said to be given back when it was not.
    It waits a second at most and says the space is not given back yet; the file shrinks at the first checkpoint once
    the reader is done."""
    day, now = 86400, time.mktime((2026, 12, 5, 12, 0, 0, 0, 0, -1))
    path = tmp_path / "o.sqlite"
    with Outbox(path) as watcher:
        for i in range(400):
            watcher.put(f"detection/obs01/{i}", {"img": f"{i:05d}" * 6000})
        for item in watcher.due(limit=400):
            watcher.mark(item, report.Outcome("sent"), now - 40 * day)
        reader = sqlite3.connect(path)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM outbox").fetchone()
        caplog.set_level(logging.INFO)
        started = time.monotonic()
        assert watcher.forget_old(now) == 400
        assert time.monotonic() - started < report.BUSY_TIMEOUT_S / 2
        assert "not given back yet" in caplog.text and "gave back" not in caplog.text
        reader.close()
        watcher.put("detection/obs01/again", {"a": 1})
        watcher.mark(watcher.due()[0], report.Outcome("sent"), now - 40 * day)
        assert watcher.forget_old(now) == 1
        assert path.stat().st_size < 1_000_000                              # at the first checkpoint after it
        assert path.with_name(path.name + "-wal").stat().st_size <= report.WAL_LIMIT_BYTES


def test_forgetting_behind_a_writer_is_put_off_not_an_error(tmp_path, caplog):
    """Another connection in the middle of a write (a second batch run queueing its night) held forget_old's DELETE
    for the 30 s busy timeout, then it raised and the run stopped before scoring a frame. Housekeeping waits a
    second, says it is put off and forgets the rows next time."""
    day, now = 86400, time.mktime((2026, 12, 5, 12, 0, 0, 0, 0, -1))
    path = tmp_path / "o.sqlite"
    with Outbox(path) as outbox:
        outbox.put("old", {"a": 1})
        outbox.mark(outbox.due()[0], report.Outcome("sent"), now - 40 * day)
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        caplog.set_level(logging.INFO)
        started = time.monotonic()
        assert outbox.forget_old(now) == 0
        assert time.monotonic() - started < report.BUSY_TIMEOUT_S / 2
        assert "forgotten next time" in caplog.text
        writer.execute("ROLLBACK")
        writer.close()
        assert outbox.put("new", {"b": 2}) is True                     # its usual patience is back
        assert outbox.forget_old(now) == 1


def test_a_report_replaced_while_it_was_being_sent_is_still_to_be_sent(tmp_path):
    """A flush sent the night's end log (total 39) while a batch run queued its newer one (total 59) under the same
    key: the row was marked sent by id, and the newer log was never delivered."""
    with Outbox(tmp_path / "o.sqlite") as outbox:
        outbox.put("end", {"total": 39})
        sending = outbox.due()
        outbox.put("end", {"total": 59}, replace=True)                 # another process, meanwhile
        outbox.mark(sending[0], report.Outcome("sent"), time.time())
        assert [json.loads(item.body) for item in outbox.due()] == [{"total": 59}]
        retrying = outbox.due()
        outbox.put("end", {"total": 60}, replace=True)
        outbox.mark(retrying[0], report.Outcome("retry", "network"), time.time())
        assert [json.loads(item.body) for item in outbox.due(time.time())] == [{"total": 60}]   # due at once


def test_a_newer_copy_queued_while_flush_sends_a_report_goes_in_the_same_flush(tmp_path):
    """A batch run queued the night's newer end log (total 59) while `flush` was sending the older one (total 39):
    the pass had gone past its key and left it pending, "delivered 2, rejected 0, still pending 1" with exit status 1
    (a cron alarm), the service answering every report at once. The newer copy now goes in the same pass (counted once:
    "delivered 3" said for 2 reports)."""
    path, lines = tmp_path / "outbox.sqlite", []

    def queue_newer_end_log(path_, headers, body):
        if json.loads(body) == {"total": 39}:
            with Outbox(path) as other:                                 # another process, meanwhile
                other.put("log/end/obs01/20260916", {"total": 59}, replace=True)
        return 200, {"status": "stored"}

    service = RecordingServer(queue_newer_end_log)
    try:
        with Outbox(path) as outbox:
            outbox.put("log/start/obs01/20260916", {"log": "start"})
            outbox.put("log/end/obs01/20260916", {"total": 39})
        config = settings(tmp_path, tmp_path / "model.onnx", url=service.url, api_key=KEY)
        assert report.flush_outbox(config, say=lines.append) == 0
    finally:
        service.close()
    assert lines == ["delivered 2, rejected 0, still pending 0"]                # the older copy counts for nothing
    with Outbox(path) as outbox:
        assert outbox.db.execute("SELECT body, state FROM outbox WHERE key LIKE 'log/end/%'").fetchall() == [
            ('{"total": 59}', "sent")]


def test_a_report_replaced_after_flush_sent_it_goes_in_the_same_flush(tmp_path):
    """A batch run queued the night's newer end log (total 59) while `flush` was sending a detection, after the older
    one (total 39) had gone: the pass never came back to it, "delivered 4, rejected 0, still pending 1" with exit status
    1, the service answering every report at once. It goes before the pass ends, the report counted once."""
    path, lines, end = tmp_path / "outbox.sqlite", [], "log/end/obs01/20260916"

    def queue_newer_end_log(path_, headers, body):
        if json.loads(body) == {"n": 0}:
            with Outbox(path) as other:                                 # another process, meanwhile
                other.put(end, {"total": 59}, replace=True)
        return 200, {"status": "stored"}

    service = RecordingServer(queue_newer_end_log)
    try:
        with Outbox(path) as outbox:
            outbox.put(end, {"total": 39})
            queue_numbered(outbox, 3)
        config = settings(tmp_path, tmp_path / "model.onnx", url=service.url, api_key=KEY)
        assert report.flush_outbox(config, say=lines.append) == 0
    finally:
        service.close()
    assert lines == ["delivered 4, rejected 0, still pending 0"]                # the end log counted once
    with Outbox(path) as outbox:
        assert outbox.db.execute("SELECT body, state FROM outbox WHERE key = ?", (end,)).fetchall() == [
            ('{"total": 59}', "sent")]


def test_a_pass_over_everything_goes_back_once_to_reports_replaced_behind_it(tmp_path):
    """Going back for reports replaced after the pass sent them must not keep `flush` sending for ever while another
    run replaces each of two reports as the other is sent: the pass goes back once and leaves the newest copy."""
    path, copies = tmp_path / "o.sqlite", []

    def replace_the_other(path_, headers, body):
        copies.append(json.loads(body))
        if len(copies) < 20:
            with Outbox(path) as other:                                 # another process, meanwhile
                other.put(f"detection/obs01/{1 - copies[-1]['n']}", {"n": 1 - copies[-1]["n"], "copy": len(copies)},
                          replace=True)
        return 200, {"status": "stored"}

    service = RecordingServer(replace_the_other)
    try:
        with Outbox(path) as outbox:
            outbox.put("detection/obs01/0", {"n": 0, "copy": 0})
            outbox.put("detection/obs01/1", {"n": 1, "copy": 0})
        delivery, pending = flush(path, service.url, KEY)
    finally:
        service.close()
    assert len(copies) < 10 and pending == 1                           # not on until the other run stops (20)
    assert [body["n"] for body in copies[-2:]] == [0, 1]               # each replaced copy went once more, at the end
    assert delivery.sent == 2                                           # two reports, however many copies went


def test_an_older_copy_rejected_while_it_was_replaced_counts_no_rejection(tmp_path, caplog):
    """The service refused the night's older end log (400) while a batch run queued its newer one under the same key:
    flush logged an error and counted a rejection, "delivered 1, rejected 1", though the newer copy went and was
    stored (a batch run's sender counted it too: its summary said a report was rejected and it exited 1)."""
    path, lines, end = tmp_path / "outbox.sqlite", [], "log/end/obs01/20260916"

    def refuse_the_older_copy(path_, headers, body):
        if json.loads(body) == {"total": 39}:
            with Outbox(path) as other:                                 # another process, meanwhile
                other.put(end, {"total": 59}, replace=True)
            return 400, {"error": "bad"}
        return 200, {"status": "stored"}

    service = RecordingServer(refuse_the_older_copy)
    try:
        with Outbox(path) as outbox:
            outbox.put(end, {"total": 39})
        config = settings(tmp_path, tmp_path / "model.onnx", url=service.url, api_key=KEY)
        assert report.flush_outbox(config, say=lines.append) == 0
    finally:
        service.close()
    assert lines == ["delivered 1, rejected 0, still pending 0"]
    assert "rejected by the service" not in caplog.text


def test_after_an_outage_reports_go_oldest_first(tmp_path):
    """Each report has its own retry time: one never tried (due at once) went before an older one waiting for its
    retry, and the night's end log reached the service before its start log. The oldest waiting holds back the
    later ones, and the sender sleeps until its retry; one rejected for good holds back nothing."""
    start, end = "log/start/obs01/20260916", "log/end/obs01/20260916"
    with Outbox(tmp_path / "o.sqlite") as outbox:
        outbox.put(start, {"log": "start"})
        outbox.put("detection/obs01/20260916231507", detection())
        outbox.put(end, {"log": "end"})
        outbox.mark(outbox.due()[0], report.Outcome("retry", "network: ConnectionError"), 1000.0)
        retry_at = outbox.next_due()
        assert retry_at > 1000.0 and outbox.due(1000.0) == []
        assert [item.key for item in outbox.due(retry_at)] == [start, "detection/obs01/20260916231507", end]
        outbox.mark(outbox.due()[0], report.Outcome("rejected", "HTTP 400: bad"), retry_at)
        assert [item.key for item in outbox.due(retry_at)] == ["detection/obs01/20260916231507", end]
        assert outbox.next_due() == 0


def test_a_report_the_service_keeps_failing_on_holds_back_the_others_only_a_while(tmp_path):
    """Oldest first, but a report answered 5xx again and again (the service fails on it alone) would keep every later
    report waiting: after HOLD_BACK_TRIES failures it waits for its retry alone."""
    with Outbox(tmp_path / "o.sqlite") as outbox:
        outbox.put("detection/obs01/20260916231507", detection())
        outbox.put("log/end/obs01/20260916", {"log": "end"})
        now = 1000.0
        for tries in range(1, report.HOLD_BACK_TRIES + 1):
            outbox.mark(outbox.due()[0], report.Outcome("retry", "HTTP 500: internal"), now)
            held = [item.key for item in outbox.due(now)]
            assert held == ([] if tries < report.HOLD_BACK_TRIES else ["log/end/obs01/20260916"]), tries
        assert outbox.next_due() == 0                                   # the end log, due at once
        outbox.mark(outbox.due(now)[0], report.Outcome("sent", "stored"), now)
        assert outbox.due(now) == [] and outbox.next_due() > now        # the failing one, at its own retry


def test_a_network_outage_holds_every_report_back_however_long_it_lasts(tmp_path):
    """Only the service failing on a report releases the ones after it: failed sends of an outage did too, and the
    night's end log went before its start log after 14 s without the network."""
    with Outbox(tmp_path / "o.sqlite") as outbox:
        outbox.put("log/start/obs01/20260916", {"log": "start"})
        outbox.put("log/end/obs01/20260916", {"log": "end"})
        for _ in range(report.HOLD_BACK_TRIES + 2):
            outbox.mark(outbox.due()[0], report.Outcome("retry", "network: ConnectionError"), 1000.0)
        assert outbox.due(1000.0) == [] and outbox.next_due() > 1000.0


def test_many_reports_the_service_fails_on_do_not_hide_the_ones_after_them(tmp_path):
    """The 50 oldest reports, each failed by the service and waiting: the next one, never tried, is due (they filled
    the batch and nothing was sent, while the sender was told something was due: it spun)."""
    with Outbox(tmp_path / "o.sqlite") as outbox:
        for i in range(52):
            outbox.put(f"detection/obs01/2026091623{i // 60:02d}{i % 60:02d}", detection())
        for item in outbox.due(limit=51):
            for _ in range(report.HOLD_BACK_TRIES):
                outbox.mark(item, report.Outcome("retry", "HTTP 502: bad gateway"), 1000.0)
        assert [item.key for item in outbox.due(1000.0)] == ["detection/obs01/20260916230051"]
        assert outbox.next_due() == 0


def test_an_outage_s_failed_tries_do_not_let_later_reports_overtake_the_oldest(tmp_path):
    """After an outage (two sends of the night's oldest report failed without the network), the first 503 of the
    service starting up made it the third failure: flush passed over it and the night's later reports reached the
    service before it. Only the service's own 5xx answers count towards passing over; the backoff counts every try."""
    service, path = StubService([503] * report.HOLD_BACK_TRIES), tmp_path / "o.sqlite"
    try:
        with Outbox(path) as outbox:
            queue_numbered(outbox, 3)
            for _ in range(report.HOLD_BACK_TRIES - 1):
                outbox.mark(outbox.due()[0], report.Outcome("retry", "network: ConnectionError"), time.time())
        for _ in range(report.HOLD_BACK_TRIES - 1):
            delivery, pending = flush(path, service.url, KEY)
            assert delivery.stopped.startswith("HTTP 503") and not delivery.passed_over and pending == 3
            with Outbox(path) as outbox:
                assert outbox.due(0) == []                              # the sender holds the later ones back too
        delivery, pending = flush(path, service.url, KEY)               # the service's third 5xx answer
        assert delivery.passed_over.startswith("HTTP 503") and pending == 1
        with Outbox(path) as outbox:
            assert outbox.db.execute("SELECT attempts, failed_5xx FROM outbox WHERE state = 'pending'").fetchall() \
                == [(2 * report.HOLD_BACK_TRIES - 1, report.HOLD_BACK_TRIES)]
    finally:
        service.close()
    assert [body["n"] for body in service.bodies] == [0] * report.HOLD_BACK_TRIES + [1, 2]


class FailingOnFirst(StubService):
    """A StubService answering 500 to the report {"n": 0} every time (the service fails on it alone), 200 to the
    others — or `status` to every report once it is set."""

    def __init__(self):
        self.status = None
        super().__init__([])

    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict]:
        super().answer(path, headers, body)
        status = self.status or (500 if json.loads(body)["n"] == 0 else 200)
        return status, {"status": "stored" if status == 200 else "error"}


def test_flush_goes_past_a_report_the_service_keeps_failing_on(tmp_path):
    """`flush` stopped at the oldest report each time the service answered it 5xx: one it failed on every time (a
    repair claim "being stored by another request" for a day, a night folder it cannot write) kept the later ones
    pending flush after flush ("delivered 0, still pending 5"), while the sender lets it wait alone after
    HOLD_BACK_TRIES failures. flush does too, trying each report once; a network failure still stops it at once."""
    service, lines = FailingOnFirst(), []
    try:
        with Outbox(tmp_path / "outbox.sqlite") as outbox:
            queue_numbered(outbox, 5)
        config = settings(tmp_path, tmp_path / "model.onnx", url=service.url, api_key=KEY)
        statuses = [report.flush_outbox(config, say=lines.append) for _ in range(report.HOLD_BACK_TRIES + 1)]
        assert [body["n"] for body in service.bodies] == [0] * report.HOLD_BACK_TRIES + [1, 2, 3, 4] + [0]
        assert statuses == [1] * (report.HOLD_BACK_TRIES + 1)
        assert lines[report.HOLD_BACK_TRIES - 1].startswith("delivered 4, rejected 0, still pending 1 (HTTP 500: ")
        assert lines[-1].startswith("delivered 0, rejected 0, still pending 1 (HTTP 500: ")
        with Outbox(config.outbox) as outbox:
            queue_numbered(outbox, 7)                                   # n = 5 and 6 are new
        delivery, pending = flush(config.outbox, f"http://127.0.0.1:{free_port()}", KEY)
        assert delivery.stopped.startswith("network: ") and pending == 3
        service.status = 429                                            # "later": the pass stops at the first too
        assert flush(config.outbox, service.url, KEY)[0].stopped.startswith("HTTP 429")
        assert [body["n"] for body in service.bodies[-2:]] == [0, 0]
        with Outbox(config.outbox) as outbox:
            assert dict(outbox.db.execute("SELECT key, attempts FROM outbox WHERE state = 'pending'")) == {
                "detection/obs01/0": report.HOLD_BACK_TRIES + 3, "detection/obs01/5": 0, "detection/obs01/6": 0}
    finally:
        service.close()


def test_a_senders_last_try_goes_past_a_report_the_service_keeps_failing_on(tmp_path, monkeypatch):
    """A stop (the end of a batch run) while the sender waited out its backoff after the service failed on the oldest
    report a third time: the last try stopped at that report again, and the later ones waited for the next run."""
    monkeypatch.setattr(report, "BACKOFF_FIRST_S", 60.0)                # the sender's pass after the failure: not soon
    monkeypatch.setattr(report, "BACKOFF_MAX_S", 300.0)
    service = FailingOnFirst()
    try:
        with Outbox(tmp_path / "o.sqlite") as outbox:
            queue_numbered(outbox, 5)
            outbox.db.execute("UPDATE outbox SET attempts = ?, failed_5xx = ?, last_error = 'HTTP 500: x' "
                              "WHERE key = ?", (report.HOLD_BACK_TRIES - 1, report.HOLD_BACK_TRIES - 1,
                                                "detection/obs01/0"))
            sender = Sender(outbox.path, ApiClient(service.url, KEY))
            sender.wake()
            assert sender.close(timeout=10) == 1
    finally:
        service.close()
    assert [body["n"] for body in service.bodies] == [0, 0, 1, 2, 3, 4]


def test_reports_waiting_for_a_later_retry_all_go_in_the_last_try(tmp_path):
    """A batch run after one whose key was refused: its reports waited for a retry minutes away, `close` waited its
    whole time for the sender (which had nothing due) and its last try, out of time, sent one report: "4 report(s)
    pending" though the service answered at once."""
    service = StubService([])
    try:
        with Outbox(tmp_path / "o.sqlite") as outbox:
            queue_numbered(outbox, 4)
            outbox.db.execute("UPDATE outbox SET attempts = 1, next_try = ?", (time.time() + 300,))
            sender = Sender(outbox.path, ApiClient(service.url, KEY))
            assert sender.close(timeout=3) == 0
    finally:
        service.close()
    assert [body["n"] for body in service.bodies] == [0, 1, 2, 3]


def test_waiting_for_delivery_waits_for_a_retry_due_within_its_time(tmp_path):
    """A report whose retry falls within the wait is waited for and sent by the sender: waiting gave up at once for
    any retry time still ahead, and a stop left it to close's hurried last try."""
    service = StubService([])
    try:
        with Outbox(tmp_path / "o.sqlite") as outbox:
            queue_numbered(outbox, 1)
            outbox.db.execute("UPDATE outbox SET attempts = 1, next_try = ?", (time.time() + 1,))
            sender = Sender(outbox.path, ApiClient(service.url, KEY))
            assert sender.wait_idle(5) is True and outbox.pending() == 0
            assert sender.close(timeout=5) == 0
    finally:
        service.close()
    assert [body["n"] for body in service.bodies] == [0]


def test_an_outbox_from_before_closed_nights_has_every_night_but_its_last_closed(tmp_path):
    """Nights the watcher closed are recorded since the `closed` table; an outbox written before it gets every
    night but the last one it watched recorded closed when it is first opened (they ended long ago: not to be
    taken up again), and the last left to the watcher."""
    path = tmp_path / "o.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE frames (night TEXT NOT NULL, file TEXT NOT NULL, row TEXT NOT NULL, "
                   "PRIMARY KEY (night, file))")
        db.executemany("INSERT INTO frames VALUES (?, ?, '{}')", [("20261202", "a"), ("20261203", "b"),
                                                                   ("20261204", "c")])
    with Outbox(path) as outbox:
        assert outbox.closed_nights() == {"20261202", "20261203"}
        outbox.close_night("20261204")
    with Outbox(path) as outbox:
        assert outbox.closed_nights() == {"20261202", "20261203", "20261204"}
    with Outbox(tmp_path / "new.sqlite") as outbox:
        assert outbox.closed_nights() == set()


def test_an_outbox_from_before_closed_nights_whose_last_night_ended_has_it_closed(tmp_path):
    """An older watcher closed its last night (its end log queued) and was stopped; upgraded, the watcher took that
    night up again as left unfinished: a second end-of-night post, and the dawn frames after the window scored."""
    path = tmp_path / "o.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE frames (night TEXT NOT NULL, file TEXT NOT NULL, row TEXT NOT NULL, "
                   "PRIMARY KEY (night, file))")
        db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, body TEXT "
                   "NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, next_try "
                   "REAL NOT NULL DEFAULT 0, last_error TEXT, created REAL NOT NULL, done REAL)")
        db.executemany("INSERT INTO frames VALUES (?, ?, '{}')", [("20261203", "b"), ("20261204", "c")])
        db.executemany("INSERT INTO outbox (key, body, state, created) VALUES (?, '{}', 'sent', 0)",
                       [("log/start/obs01/20261204",), ("log/end/obs01_b/20261204",)])
    with Outbox(path) as outbox:
        assert outbox.closed_nights() == {"20261203", "20261204"}
        outbox.put("detection/obs01/1", {})
        outbox.mark(outbox.due()[0], report.Outcome("retry", "HTTP 503: starting"), 1000.0)
        assert outbox.db.execute("SELECT attempts, failed_5xx FROM outbox WHERE state = 'pending'").fetchall() == [
            (1, 1)]


def test_outboxes_opened_at_once_on_a_new_file_all_open(tmp_path):
    """The watcher and the sender open the same new outbox together; SQLite refuses the WAL switch of one of them at
    once (no busy wait) — about one round in ten before opening tried again."""
    import threading

    failures = []

    def open_outbox(path):
        try:
            Outbox(path).close()
        except Exception as exc:                  # noqa: BLE001 — collected and asserted below
            failures.append(exc)

    for round_ in range(60):
        threads = [threading.Thread(target=open_outbox, args=(tmp_path / f"outbox-{round_}.sqlite",)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    with Outbox(tmp_path / "outbox-0.sqlite") as outbox:
        assert outbox.put("k", {"a": 1}) and outbox.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_queued_reports_survive_a_killed_process(tmp_path):
    path = tmp_path / "o.sqlite"
    code = ("import os, signal, sys; sys.path.insert(0, %r)\nfrom gualta.report import Outbox\n"
            "Outbox(%r).put('detection/obs01/20211110220000', {'x': 1})\nos.kill(os.getpid(), signal.SIGKILL)"
            % (str(report.__file__).rsplit("/gualta/", 1)[0], str(path)))
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    with Outbox(path) as outbox:
        assert [item.key for item in outbox.due()] == ["detection/obs01/20211110220000"]


def test_the_outbox_commits_each_report_to_disk(tmp_path):
    """With synchronous OFF (or NORMAL) a commit returns before the disk has it: a power cut at the observatory
    loses the reports queued last, yet a killed process (test_queued_reports_survive_a_killed_process) loses nothing,
    so no other test saw it. Every connection writes a WAL and waits for the disk (synchronous FULL)."""
    for _ in range(2):                                              # a new file, then the same file opened again
        with Outbox(tmp_path / "o.sqlite") as outbox:
            assert outbox.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert outbox.db.execute("PRAGMA synchronous").fetchone()[0] == 2           # FULL


def test_retries_on_5xx_and_network_errors_gives_up_on_other_4xx(tmp_path):
    stub = StubService([503, 400])
    try:
        with Outbox(tmp_path / "o.sqlite") as outbox:
            outbox.put("a", {"n": 1})
            outbox.put("b", {"n": 2})
            outbox.put("c", {"n": 3})
            client = ApiClient(stub.url, KEY)
            first = deliver(outbox, client)
            assert (first.sent, first.rejected) == (0, 0) and first.stopped.startswith("HTTP 503")
            retry_at = outbox.db.execute("SELECT next_try FROM outbox WHERE key = 'a'").fetchone()[0]
            assert outbox.pending() == 3 and retry_at > time.time()
            second = deliver(outbox, client, everything=True)          # 'a' now gets the 400, then b and c pass
            assert (second.sent, second.rejected) == (2, 1) and outbox.pending() == 0
            assert [key for key, _ in outbox.rejected()] == ["a"]
        dead = ApiClient(f"http://127.0.0.1:{free_port()}", KEY)
        assert dead.send("{}").kind == "retry"
    finally:
        stub.close()


def test_a_long_outage_s_retries_wait_no_longer_than_the_backoff_s_cap(tmp_path):
    """The wait doubles from one failed try to the next: uncapped, a report that had failed 20 times in a night's
    network outage would next be tried in 12 days, long after the network was back. It waits BACKOFF_MAX_S at most
    (10 % jitter), and the sender's own backoff too."""
    with Outbox(tmp_path / "o.sqlite") as outbox:
        outbox.put("a", {"n": 1})
        now = time.time()
        for _ in range(20):
            [item] = outbox.due()
            outbox.mark(item, report.Outcome("retry", "network: ConnectionError"), now)
        next_try = outbox.db.execute("SELECT next_try FROM outbox WHERE key = 'a'").fetchone()[0]
    assert report.BACKOFF_MAX_S <= next_try - now <= 1.1 * report.BACKOFF_MAX_S
    assert report.BACKOFF_MAX_S <= report.retry_delay(200) <= 1.1 * report.BACKOFF_MAX_S


@pytest.mark.parametrize("status", [408, 429])
def test_a_timeout_or_too_many_requests_answer_is_retried_not_rejected(tmp_path, status):
    """408 and 429 say "later", not "never": taken for a rejection, the reports a rate-limited or slow service turned
    away at a busy moment would be dropped for good, their detections never on the page. They are sent again."""
    stub = StubService([status])
    try:
        with Outbox(tmp_path / "o.sqlite") as outbox:
            outbox.put("a", {"n": 1})
            client = ApiClient(stub.url, KEY)
            first = deliver(outbox, client)
            assert (first.sent, first.rejected) == (0, 0) and first.stopped.startswith(f"HTTP {status}")
            assert outbox.pending() == 1 and not outbox.rejected()
            assert deliver(outbox, client, everything=True).sent == 1
    finally:
        stub.close()


@pytest.mark.parametrize("status, fix", [(401, "fix guAlta_api_key"), (403, "fix guAlta_api_key"),
                                         (404, "fix guAlta_URL"), (405, "fix guAlta_URL")])
def test_a_refused_key_or_a_wrong_address_keeps_the_reports(tmp_path, status, fix):
    stub = StubService([status])
    try:
        with Outbox(tmp_path / "o.sqlite") as outbox:
            outbox.put("a", {"n": 1})
            outbox.put("b", {"n": 2})
            delivery = deliver(outbox, ApiClient(stub.url, "wrong-key"), everything=True)
            assert delivery.sent == 0 and outbox.pending() == 2 and not outbox.rejected()
            assert delivery.stopped.startswith(f"HTTP {status}") and fix in delivery.stopped
            assert len(stub.bodies) == 1                                   # the pass stops at the first
    finally:
        stub.close()


def test_a_wrong_url_path_loses_no_report_and_flush_to_the_right_one_delivers_them(client_night, tiny_model, tmp_path):
    """A URL with a path the service does not serve (404: a stage name too many, a proxy being redeployed) is the
    settings' fault, not the reports': they stay queued, said so, and go once the URL is right."""
    store = tmp_path / "store"
    with ChildServer(store, child_env(**service_env(store))) as child:
        client = settings(tmp_path, tiny_model, url=f"{child.url}/prod", api_key=KEY)
        said = []
        summary = run_batch(client, client_night, None, say=said.append, progress=False)
        assert summary.pending > 2 and summary.rejected == 0 and not (store / "detections").exists()
        assert f"{summary.pending} report(s) pending in the outbox" in said[-1]
        delivery, pending = flush(client.outbox, child.url, KEY)
        assert (delivery.sent, delivery.rejected, pending) == (summary.pending, 0, 0)
        assert len(stored(store)) == summary.pending - 2                        # the start and end logs besides


def test_a_batch_run_whose_key_is_refused_says_so_and_exits_1(client_night, tiny_model, tmp_path):
    """A wrong key was logged as "central service unreachable" and `batch` exited 0: a cron job never knew."""
    store = tmp_path / "store"
    with ChildServer(store, child_env(**service_env(store))) as child:
        config = settings(tmp_path, tiny_model, url=child.url)
        command = [sys.executable, str(report.__file__).replace("gualta/report.py", "guAlta.py"), "batch",
                   "--folder", str(client_night), "--outbox", str(config.outbox), "--url", child.url,
                   "--model", str(tiny_model), "--no-model-update"]
        wrong = subprocess.run(command, capture_output=True, text=True, timeout=300,
                               env=child_env(GUALTA_API_KEY="not-the-key"))
        assert wrong.returncode == 1, wrong.stderr[-2000:]
        assert "the service refused the reports (HTTP 401" in wrong.stdout + wrong.stderr
        assert "unreachable" not in wrong.stdout + wrong.stderr and not (store / "detections").exists()
        right = subprocess.run(command, capture_output=True, text=True, timeout=300, env=child_env(GUALTA_API_KEY=KEY))
        said = right.stdout + right.stderr
        assert right.returncode == 0 and "refused" not in said, (right.stdout[-3000:], right.stderr[-2000:])
        if "all reports delivered" not in said:         # a loaded machine: the run's 10 s for the last reports ran out
            assert "report(s) pending in the outbox" in said, right.stdout[-3000:]
            assert flush(config.outbox, child.url, KEY)[1] == 0
        assert stored(store)                                                # the kept reports went with it


def test_reports_the_service_rejects_are_counted_in_the_nights_summary_and_exit_1(client_night, tiny_model, tmp_path,
                                                                                  capsys):
    """A report rejected for good is lost to the service: the batch run must exit 1 for a cron job's alarm, not 0."""
    stub = StubService([400])                                 # the start log is refused for good, the rest stored
    try:
        status = run_nights(settings(tmp_path, tiny_model, url=stub.url, api_key=KEY), client_night, None)
    finally:
        stub.close()
    said = capsys.readouterr().out.splitlines()
    assert status == 1
    assert "; 1 report(s) rejected by the service (the log says why); the other reports delivered" in said[-1]
    assert "all reports delivered" not in said[-1]


def test_the_sender_backs_off_through_an_outage_even_with_many_reports_never_tried(tmp_path):
    """Each report has its own retry time, and the ones never tried are due at once: without the sender's own
    backoff an outage was a request (and a warning) every 2 s all night, one report after another."""
    stub = StubService([503] * 1000)
    try:
        with Outbox(tmp_path / "o.sqlite") as outbox:
            queue_numbered(outbox, 40)
            sender = Sender(outbox.path, ApiClient(stub.url, KEY))
            sender.wake()
            deadline = time.monotonic() + 30
            while len(stub.arrivals) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            sender.close(timeout=0)
    finally:
        stub.close()
    # the test's backoff: 0.05 s doubling to 0.2 s, counted from when a send gave up; a slow machine only widens it
    gaps = [later - earlier for earlier, later in zip(stub.arrivals, stub.arrivals[1:5])]
    assert len(gaps) == 4 and all(gap >= least for gap, least in zip(gaps, [0.05, 0.1, 0.2, 0.2])), gaps


class SlowService(StubService):
    """A StubService taking `delay_s` over each answer."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        super().__init__([])

    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict]:
        time.sleep(self.delay_s)
        return super().answer(path, headers, body)


def test_closing_with_a_backlog_stops_in_its_time_and_sends_each_report_once(tmp_path):
    """A stop (SIGTERM, the end of a batch) with a backlog and a slow service: the thread went on sending the whole
    queue, and close's last try sent the same reports beside it — 120 reports took 32 s and 153 POSTs."""
    service = SlowService(0.2)
    try:
        with Outbox(tmp_path / "o.sqlite") as outbox:
            queue_numbered(outbox, 60)
            sender = Sender(outbox.path, ApiClient(service.url, KEY))
            sender.wake()
            started = time.monotonic()
            left = sender.close(timeout=1.0)
            took = time.monotonic() - started
    finally:
        service.close()
    sent = [body["n"] for body in service.bodies]
    assert len(sent) == len(set(sent)), "a report was sent twice"
    assert left == 60 - len(sent) > 0
    assert took < 1.0 + 3 * 0.2 + 4.0, took            # its time, the reports in flight, a loaded machine's slack


def test_sender_retries_with_backoff_until_the_service_answers(tmp_path):
    stub = deliver_through([503, 503, 502], tmp_path / "o.sqlite", reports=1)
    assert len(stub.bodies) == 4 and stub.bodies[-1] == {"n": 0}


class OlderService(RecordingServer):
    """A local service of the version before detections carried a streak: each payload checked as that version did
    (`payload.validate` with optional fields `flag` and `model` only: "unknown field(s): streak"), 400 with the
    reason, else 200 ("duplicate" for a detection or log taken already); records what was posted and what taken."""

    def __init__(self):
        self.posted, self.taken = [], []
        super().__init__(self.answer)

    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict]:
        data = json.loads(body)
        self.posted.append(data)
        try:
            payload.validate(payload.parse_body(body))
        except payload.PayloadError as exc:
            return 400, {"error": str(exc)}
        if data in self.taken:
            return 200, {"status": "duplicate"}
        self.taken.append(data)
        return 200, {"status": "stored"}


@pytest.fixture
def older_service(monkeypatch):
    """Starts an OlderService: the detections are built before (the client's builder takes the streak)."""
    def start() -> OlderService:
        monkeypatch.setattr(payload, "DETECTION_OPTIONAL", {"flag", "model"})
        return OlderService()
    return start


def test_an_older_service_that_refuses_the_streak_takes_each_report_once_without_it(tmp_path, older_service, caplog):
    """A service older than the streak answers 400 "unknown field(s): streak": the report is sent again at once
    without it, and so is every later one (never with it again): each taken once, none rejected or lost."""
    first = detection(frame_id="20260916231507", streak=(10, 20, 300, 400))
    second = detection(frame_id="20260916231537", seed=1, streak=(320, 410, 600, 700))
    end = payload.build_log("end", "obs01", total=2, folder="20260916")
    older = older_service()
    try:
        with Outbox(tmp_path / "o.sqlite") as outbox:
            for key, body in (("a", first), ("b", second), ("c", end)):
                outbox.put(key, body)
            sender = Sender(outbox.path, ApiClient(older.url, KEY))
            assert sender.close(timeout=10) == 0 and sender.rejected == 0 and not outbox.rejected()
        without = [{k: v for k, v in body.items() if k != "streak"} for body in (first, second)]
        assert older.posted == [first, *without, end] and older.taken == [*without, end]
        assert caplog.text.count("does not take the detections' streak") == 1
    finally:
        older.close()


def test_a_bad_request_not_about_the_streak_is_rejected_as_before(tmp_path, older_service):
    """A 400 for another reason rejects that report, as any 400 does, and the streak is still sent after it; one
    refused for the streak and then for another reason is rejected too."""
    extra = {**detection(frame_id="20260916231507"), "extra": 1}
    bad_score = {**detection(frame_id="20260916231537", streak=(1, 2, 3, 4)), "score": 2}
    good = detection(frame_id="20260916231607", streak=(5, 6, 7, 8))
    older = older_service()
    try:
        with Outbox(tmp_path / "o.sqlite") as outbox:
            for key, body in (("a", extra), ("b", bad_score), ("c", good)):
                outbox.put(key, body)
            delivery = deliver(outbox, ApiClient(older.url, KEY), everything=True)
            assert (delivery.sent, delivery.rejected) == (1, 2)
            assert [(key, reason.split(": ", 1)[1]) for key, reason in outbox.rejected()] == [
                ("a", '{"error": "unknown field(s): extra"}'), ("b", '{"error": "score must be a number from 0 to 1"}')]
        assert [("extra" in body, "streak" in body) for body in older.posted] == [
            (True, False), (False, True), (False, False), (False, False)]
    finally:
        older.close()


def stored(store, obs_id: str = "obs01") -> list[str]:
    return sorted(p.name for p in (store / "detections").rglob(f"{obs_id}_*.json"))


def test_a_night_with_the_service_down_loses_nothing(client_night, tiny_model, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    client = settings(tmp_path, tiny_model, url=down, api_key=KEY)
    summary = run_batch(client, client_night, tmp_path / "scores.csv", say=lambda line: None, progress=False)
    rows = [row for row in read_scores(tmp_path / "scores.csv") if row["detection"] == "1"]
    detected = [row["file"] for row in rows]
    assert detected and summary.pending == len(detected) + 2                 # detections, start and end logs
    streaks = {row["file"][6:20]: [int(row[end]) for end in ("x1", "y1", "x2", "y2")] if row["x1"] else None
               for row in rows}                                              # in the file's pixels

    store = tmp_path / "store"
    with ChildServer(store, child_env(**service_env(store))) as child:
        delivery, pending = flush(client.outbox, child.url, KEY)
        assert (delivery.sent, pending) == (len(detected) + 2, 0)
        expected = sorted(f"obs01_{name[6:20]}.json" for name in detected)
        assert stored(store) == expected
        assert json.loads((store / "logs" / "20211110" / "obs01_end.json").read_text())["total"] == 23
        records = {frame: json.loads((store / "detections" / "20211110" / f"obs01_{frame}.json").read_text())
                   for frame in streaks}
        assert any(streaks.values()) and {frame: record.get("streak") for frame, record in records.items()} == streaks

        assert flush(client.outbox, child.url, KEY)[0].sent == 0                  # nothing left to send
        again = run_batch(settings(tmp_path, tiny_model, url=child.url, api_key=KEY), client_night, None,
                          say=lambda line: None, progress=False)
        assert again.pending == 0 and stored(store) == expected                  # a re-run reports nothing twice
        with Outbox(client.outbox) as outbox:
            assert outbox.counts() == {"sent": len(detected) + 2}
            outbox.db.execute("UPDATE outbox SET done = done - 31 * 86400")     # a month later
        run_batch(settings(tmp_path, tiny_model, url=child.url, api_key=KEY), client_night, None,
                  say=lambda line: None, progress=False)
        with Outbox(client.outbox) as outbox:                  # each run forgets what was delivered over 30 days ago
            assert outbox.counts() == {"sent": len(detected) + 2}
            assert min(done for done, in outbox.db.execute("SELECT done FROM outbox")) > time.time() - 3600
        assert stored(store) == expected                       # the service answered the re-sent ones "duplicate"


def test_cli_flush_exit_status(tiny_model, tmp_path):
    config = settings(tmp_path, tiny_model)
    with Outbox(config.outbox) as outbox:
        outbox.put("detection/obs01/20211110220000", detection())
    command = [sys.executable, str(report.__file__).replace("gualta/report.py", "guAlta.py"), "flush",
               "--outbox", str(config.outbox), "--api-key", KEY]
    down = subprocess.run(command + ["--url", f"http://127.0.0.1:{free_port()}"], capture_output=True, text=True,
                          timeout=60, env=child_env())
    assert down.returncode == 1 and "still pending 1" in down.stdout
    store = tmp_path / "store"
    with ChildServer(store, child_env(**service_env(store))) as child:
        up = subprocess.run(command + ["--url", child.url], capture_output=True, text=True, timeout=60,
                            env=child_env())
    assert up.returncode == 0 and "delivered 1" in up.stdout and "still pending 0" in up.stdout
    again = subprocess.run(command + ["--url", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60,
                           env=child_env())                         # an operator flushing by hand once more
    assert again.returncode == 0 and again.stdout == f"nothing to send: no report waits in {config.outbox}\n"
    assert stored(store) == ["obs01_20260916231507.json"]
    elsewhere = tmp_path / "other" / "outbox.sqlite"                # run from another folder, say
    elsewhere.parent.mkdir()
    (tmp_path / "file").write_text("a file where the outbox's folder should be")
    for wrong in (elsewhere, tmp_path / "no-such-folder" / "outbox.sqlite", tmp_path / "file" / "outbox.sqlite"):
        none = subprocess.run(command[:-4] + ["--outbox", str(wrong), "--api-key", KEY, "--url", "http://127.0.0.1:9"],
                              capture_output=True, text=True, timeout=60, env=child_env())
        assert none.returncode == 0 and none.stdout.startswith(f"no outbox at {wrong}: nothing was queued there")
    assert not elsewhere.exists() and not (tmp_path / "no-such-folder").exists()


def test_flush_whose_only_report_is_rejected_says_so(tiny_model, tmp_path):
    """A flush whose reports the service all rejected must say so, not "nothing to send" (as for an empty outbox):
    the rejected report is in the outbox to be read and fixed. Nothing is left pending: exit status 0."""
    stub = StubService([400])
    config = settings(tmp_path, tiny_model, url=stub.url, api_key=KEY)
    with Outbox(config.outbox) as outbox:
        outbox.put("detection/obs01/20211110220000", detection())
    try:
        said = []
        status = report.flush_outbox(config, say=said.append)
    finally:
        stub.close()
    assert (status, said) == (0, ["delivered 0, rejected 1, still pending 0"])
    with Outbox(config.outbox) as outbox:
        assert [key for key, _ in outbox.rejected()] == ["detection/obs01/20211110220000"]


def test_the_operator_cli_returns_each_failure_s_exit_status_with_one_line(tmp_path, monkeypatch, capsys):
    """guAlta.py's commands each exited on their own (sys.exit in every one); main says a failure a command names in
    one line and returns its status — 1, or 2 for invalid settings or options that cannot go together — the same for
    every command. A real-time window past noon and --catch-up with --folder or without a scores folder exited 1."""
    for name in [name for name in os.environ if name.startswith("GUALTA_")]:
        monkeypatch.delenv(name)
    spec = importlib.util.spec_from_file_location("guAlta_cli", Path(report.__file__).parent.parent / "guAlta.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    outbox = ["--outbox", str(tmp_path / "outbox.sqlite")]
    assert cli.main(["flush", "--url", "", *outbox]) == 1
    assert capsys.readouterr().err == "guAlta flush: guAlta_URL is not set\n"
    assert cli.main(["flush", "--threshold", "2", *outbox]) == 2
    assert capsys.readouterr().err.startswith("guAlta flush: invalid settings:\n  - option --threshold = '2': ")
    assert cli.main(["site", "--store", str(tmp_path / "typo")]) == 1
    assert capsys.readouterr().err == (f"guAlta site: no store folder {tmp_path / 'typo'} (the service makes it when "
                                       "it starts: `guAlta.py serve`)\n")
    assert cli.main(["batch", "--catch-up", "1", "--folder", str(tmp_path), "--no-upload", *outbox]) == 2
    assert capsys.readouterr().err == "guAlta batch: --catch-up scores the nights under guAlta_main_folder: leave " \
                                      "--folder out\n"
    assert cli.main(["batch", "--catch-up", "1", "--no-upload", *outbox]) == 2
    assert capsys.readouterr().err.startswith("guAlta batch: --catch-up needs --scores DIR/: ")
    assert cli.main(["realtime", "--end-time", "1300", "--no-upload", *outbox]) == 2
    assert capsys.readouterr().err.startswith("guAlta realtime: guAlta_start_time 2000 to guAlta_end_time 1300: the "
                                              "real-time window may not run past noon")
    from gualta import service_env                                  # a secret that did not read may on a later try

    def unreadable(name):
        raise service_env.SecretUnavailable(f"cannot read SSM parameter {name}: EndpointConnectionError")

    monkeypatch.setattr(service_env, "ssm_parameter", unreadable)
    monkeypatch.setenv("GUALTA_API_KEYS_PARAM", "/gualta/api-keys")
    assert cli.main(["serve", "--port", "0", "--store", str(tmp_path / "store")]) == 1
    assert capsys.readouterr().err.endswith("guAlta serve: cannot read SSM parameter /gualta/api-keys: "
                                            "EndpointConnectionError\n")


def test_a_full_disk_stops_queueing_with_a_clear_error_and_keeps_what_was_queued(tmp_path):
    """SQLite refusing to grow the file (SQLITE_FULL, as on a full SD card) is an OutboxError naming the outbox; the
    reports queued before stay, and queueing works again once there is room."""
    with Outbox(tmp_path / "o.sqlite") as outbox:
        outbox.put("detection/obs01/1", detection())
        pages = outbox.db.execute("PRAGMA page_count").fetchone()[0]
        outbox.db.execute(f"PRAGMA max_page_count = {pages}")              # the disk is full now
        full = r"o\.sqlite cannot be written: disk full \(.*: database or disk is full\)"
        with pytest.raises(report.OutboxError, match=full):
            for n in range(2, 50):
                outbox.put(f"detection/obs01/{n}", detection(frame_id=f"202609162315{n:02d}"))
        with pytest.raises(report.OutboxError, match="cannot be written"):
            outbox.record_frame("20260916", {"file": "image-20260916231600.jpg"}, ("detection/obs01/x", detection()))
        kept = outbox.pending()
        assert kept >= 1 and outbox.night_rows("20260916") == []            # nothing half-written
        outbox.db.execute(f"PRAGMA max_page_count = {pages * 100}")         # room again
        assert outbox.put("detection/obs01/99", detection(frame_id="20260916231559")) is True
        assert outbox.pending() == kept + 1


@pytest.mark.parametrize("command", ["batch", "realtime"])
def test_an_outbox_that_cannot_be_opened_is_one_clear_error(client_night, tiny_model, tmp_path, command):
    """(`flush` only reads an outbox: one that does not exist is said, see test_cli_flush_exit_status.)"""
    (tmp_path / "file").write_text("a file where the outbox's folder should be")
    outbox = tmp_path / "file" / "outbox.sqlite"
    run = subprocess.run([sys.executable, str(report.__file__).replace("gualta/report.py", "guAlta.py"), command,
                          "--outbox", str(outbox), "--url", f"http://127.0.0.1:{free_port()}", "--api-key", KEY,
                          "--model", str(tiny_model), "--main-folder", str(client_night.parent),
                          "--start-time", "0000", "--end-time", "0000"]
                         + (["--folder", str(client_night)] if command == "batch" else []),
                         capture_output=True, text=True, timeout=120, env=child_env())
    assert run.returncode == 1
    assert f"guAlta {command}: outbox {outbox} cannot be opened: " in run.stderr
    assert "Traceback" not in run.stderr


def damaged_outbox(path: Path, reports: int = 3) -> Path:
    """An outbox with `reports` pending, then garbage written over its second page (as a failing SD card does)."""
    with Outbox(path) as outbox:
        for n in range(reports):
            outbox.put(f"detection/obs01/{n}", {"n": n, "pad": "x" * 3000})
        outbox.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as stream:
        stream.seek(4096)
        stream.write(b"\xff" * 200)
    return path


@pytest.mark.parametrize("command", ["flush", "batch"])
def test_a_damaged_outbox_stops_flush_and_batch_with_one_line_and_is_left_as_it_is(client_night, tiny_model, tmp_path,
                                                                                 command):
    """A damaged outbox ("database disk image is malformed") was a traceback from wherever SQLite first read it."""
    outbox = damaged_outbox(tmp_path / "outbox.sqlite")
    content = outbox.read_bytes()
    run = subprocess.run([sys.executable, str(report.__file__).replace("gualta/report.py", "guAlta.py"), command,
                          "--outbox", str(outbox), "--url", f"http://127.0.0.1:{free_port()}", "--api-key", KEY]
                         + (["--model", str(tiny_model), "--folder", str(client_night)] if command == "batch" else []),
                         capture_output=True, text=True, timeout=120, env=child_env())
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"guAlta {command}: outbox {outbox} is damaged (" in run.stderr
    assert f"move it aside (`mv {outbox} {outbox}.damaged`)" in run.stderr and ".recover" in run.stderr
    assert outbox.read_bytes() == content


def test_damage_found_after_opening_is_an_outbox_error_on_reading_and_writing(tmp_path, monkeypatch):
    """(quick_check at opening finds a damaged page; one damaged later is found by the query that reads it.)"""
    outbox_path = damaged_outbox(tmp_path / "o.sqlite")
    monkeypatch.setattr(Outbox, "_check", lambda self: None)
    with Outbox(outbox_path) as outbox:
        item = report.Item(1, "detection/obs01/0", "{}", 0)
        for use in (outbox.due, outbox.pending, outbox.next_due, outbox.counts, outbox.forget_old,
                    lambda: outbox.mark(item, report.Outcome("sent"), time.time()),
                    lambda: outbox.record_frame("20260916", {"file": "a.jpg"}, ("detection/obs01/9", {"n": 9}))):
            with pytest.raises(report.DamagedOutbox, match=r"o\.sqlite is damaged \(database disk image is malformed"):
                use()


def test_the_watcher_moves_a_damaged_outbox_aside_and_goes_on_with_a_fresh_one(tmp_path, tiny_model, caplog):
    """A damaged outbox stopped the watcher at every restart (systemd: every 30 s), all night: nothing was scored.
    It is moved aside (nothing deleted: its pending reports can be recovered) and a fresh one is started."""
    from gualta.realtime import run_realtime

    outbox = damaged_outbox(tmp_path / "outbox.sqlite")
    content = outbox.read_bytes()
    (tmp_path / "images").mkdir()
    stop = threading.Event()
    stop.set()                                         # the watcher starts, then stops at once
    run_realtime(settings(tmp_path, tiny_model), upload=False, stop=stop, say=lambda text: None)
    [aside] = tmp_path.glob("outbox.sqlite.damaged-*")
    assert aside.read_bytes() == content
    with Outbox(outbox) as fresh:
        assert fresh.counts() == {}
    assert f"outbox {outbox} is damaged: moved aside to {aside} and a fresh one started" in caplog.text
    assert report.set_aside_if_damaged(outbox) is None and outbox.exists()      # a sound one stays where it is


def test_the_sender_waits_its_backoff_after_a_send_that_timed_out(tmp_path, monkeypatch):
    """A service that takes connections but never answers costs each send its 15 s timeout: the outage's back-off was
    counted from before the send, so it had passed when the send gave up ("retry in 0 s") and the next report never
    tried went at once, a timeout after another. It is counted from when the send gave up."""
    class Silent:
        def send(self, body: str) -> report.Outcome:
            time.sleep(1.5)                                                  # as a timeout: slower than the back-off
            return report.Outcome("retry", "ReadTimeout")

    monkeypatch.setattr(report, "BACKOFF_FIRST_S", 1.0)
    monkeypatch.setattr(report, "BACKOFF_MAX_S", 300.0)
    with Outbox(tmp_path / "o.sqlite") as outbox:
        queue_numbered(outbox, 3)
        sender = Sender(outbox.path, Silent())
        assert sender._pass(outbox) >= 0.9 and outbox.pending() == 3
        assert sender.blocked_until - time.time() >= 0.9


def deliver_through(answers: list[int], outbox_path: Path, reports: int = 3) -> StubService:
    """A Sender delivering `reports` reports to a StubService answering `answers` (then 200), until all are sent."""
    stub = StubService(answers)
    try:
        with Outbox(outbox_path) as outbox:
            queue_numbered(outbox, reports)
            sender = Sender(outbox.path, ApiClient(stub.url, KEY))
            sender.wake()
            deadline = time.monotonic() + 30
            while outbox.pending() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sender.close(timeout=5) == 0
    finally:
        stub.close()
    return stub


def said(caplog, level: int, text: str) -> list[str]:
    """The messages logged at `level` holding `text` about an HTTP answer (a sender another test left running logs
    its own timeouts)."""
    return [record.getMessage() for record in caplog.records
            if record.levelno == level and text in record.getMessage() and "(HTTP " in record.getMessage()]


def test_a_refusal_or_an_outage_is_said_once_not_at_every_retry(tmp_path, caplog):
    """A wrong key was an ERROR and a WARNING with the same text at every retry (~290 lines a night); a refusal is one
    ERROR when it starts, an outage one WARNING, each again only when the reason changes (or hourly)."""
    caplog.set_level(logging.DEBUG, logger="gualta.report")
    stub = deliver_through([401] * 5 + [503] * 5, tmp_path / "o.sqlite")
    assert len(stub.bodies) == 13
    [refused] = said(caplog, logging.ERROR, "refused the reports")
    assert refused.startswith("central service refused the reports (HTTP 401: ") and "fix guAlta_api_key" in refused
    assert "3 report(s) kept in the outbox" in refused
    [unreachable] = said(caplog, logging.WARNING, "unreachable")
    assert unreachable.startswith("central service unreachable (HTTP 503: ")
    assert not said(caplog, logging.WARNING, "refused") and not said(caplog, logging.ERROR, "unreachable")
    assert len(said(caplog, logging.DEBUG, "retry in")) == 8                 # each retry still there, at DEBUG


def test_a_refusal_that_lasts_is_said_again_at_most_every_remind_s(tmp_path, caplog, monkeypatch):
    """A refusal lasting all night was said at every retry; now once, then a reminder at most every REMIND_S (an
    hour) saying how many reports are kept."""
    monkeypatch.setattr(report, "REMIND_S", 0.5)
    caplog.set_level(logging.INFO, logger="gualta.report")
    started = time.monotonic()
    deliver_through([403] * 12, tmp_path / "o.sqlite")
    took = time.monotonic() - started
    reminders = said(caplog, logging.ERROR, "still refused the reports (HTTP 403")
    assert len(said(caplog, logging.ERROR, "refused the reports")) == 1 + len(reminders)
    assert 1 <= len(reminders) <= took / 0.5


@pytest.mark.parametrize("answers, back", [([503] * 4, "reachable again"), ([401] * 4, "takes the reports again")])
def test_delivery_resuming_after_failures_is_said(tmp_path, caplog, answers, back):
    """The last word of an outage was "central service unreachable (...): 4 report(s) kept, retry in 18 s": delivery
    resumed silently. One line says the service answers again, how many reports went, after how long."""
    caplog.set_level(logging.INFO, logger="gualta.report")
    started = time.monotonic()
    deliver_through(answers, tmp_path / "o.sqlite")
    [line] = [record for record in caplog.records if back in record.getMessage()]
    assert line.levelno == logging.INFO
    match = re.fullmatch(rf"central service {back}: 3 report\(s\) delivered after (\d+) s", line.getMessage())
    assert match and int(match[1]) <= time.monotonic() - started + 1


class ReadOnlyMount:
    """What os.statvfs says of a file system mounted read-only."""
    f_flag = os.ST_RDONLY


@pytest.mark.parametrize("failure, words", [
    (sqlite3.OperationalError("database or disk is full"), "disk full"),
    (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
    (sqlite3.OperationalError("unable to open database file"), "read-only file system")])
def test_an_outbox_on_a_full_or_read_only_disk_says_so_in_words(tmp_path, monkeypatch, failure, words):
    """On a read-only file system the only why was SQLite's "unable to open database file"; a full disk said
    "database or disk is full", or the system's errno text. The outbox's error says which, naming the folder."""
    def fails(*args, **kwargs):
        raise failure

    monkeypatch.setattr(report.sqlite3, "connect", fails)
    if words == "read-only file system" and isinstance(failure, sqlite3.Error):
        monkeypatch.setattr(os, "statvfs", lambda path: ReadOnlyMount())
    with pytest.raises(report.OutboxError) as raised:
        Outbox(tmp_path / "box" / "o.sqlite")
    assert str(raised.value) == f"outbox {tmp_path / 'box' / 'o.sqlite'} cannot be opened: {words} " \
                                f"({tmp_path / 'box'}: {failure})"


def realtime_door(tmp_path: Path, tiny_model: Path, outbox: Path, monkeypatch) -> tuple[int, list[str]]:
    """`guAlta.py realtime` run in this process on `outbox`: its exit status and the lines the journal got (stdout
    and stderr as one stream)."""
    import io
    import signal

    for name in [name for name in os.environ if name.startswith("GUALTA_")]:
        monkeypatch.delenv(name)
    spec = importlib.util.spec_from_file_location("guAlta_cli", Path(report.__file__).parent.parent / "guAlta.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    journal = io.StringIO()
    monkeypatch.setattr(sys, "stdout", journal)
    monkeypatch.setattr(sys, "stderr", journal)
    (tmp_path / "images").mkdir()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = cli.main(["realtime", "--outbox", str(outbox), "--url", f"http://127.0.0.1:{free_port()}",
                           "--api-key", KEY, "--model", str(tiny_model), "--main-folder", str(tmp_path / "images"),
                           "--start-time", "0000", "--end-time", "0000"])
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return status, journal.getvalue().splitlines()


def test_the_watcher_stopped_by_its_outbox_says_why_before_what_is_pending(tmp_path, tiny_model, monkeypatch):
    """A full disk stopping the watcher read backwards: "stopped; 4 report(s) pending in the outbox", then the line
    that says why (`guAlta realtime: outbox ... disk full`). The failure comes first, the closing line after it."""
    from gualta import realtime

    outbox = tmp_path / "outbox.sqlite"
    with Outbox(outbox) as queued:
        queued.put("detection/obs01/1", detection())

    def disk_full(self):
        raise report.OutboxError(f"outbox {outbox} cannot be written: disk full ({tmp_path}: database or disk is full)")

    monkeypatch.setattr(realtime.Watcher, "run", disk_full)
    status, lines = realtime_door(tmp_path, tiny_model, outbox, monkeypatch)
    assert status == 1
    assert lines[-2:] == [f"guAlta realtime: outbox {outbox} cannot be written: disk full ({tmp_path}: database or "
                          "disk is full)", "stopped; 1 report(s) pending in the outbox"]


def test_the_watchers_closing_line_is_printed_last_whatever_its_words(tmp_path, tiny_model, monkeypatch):
    """The CLI told the watcher's closing line by its first word, "stopped", to hold it back until the line that says
    why the watcher stopped: reworded, it came first again and the pending reports read as the failure. The watcher
    hands its closing line to the CLI, which prints it last, once."""
    from gualta import realtime

    def stopped_by_full_disk(settings, say=print, say_last=print, **options):
        say("watching night 20211110")
        try:
            raise report.OutboxError("outbox cannot be written: disk full")
        finally:
            say_last("the watcher has ended; 1 report waits in the outbox")

    monkeypatch.setattr(realtime, "run_realtime", stopped_by_full_disk)
    status, lines = realtime_door(tmp_path, tiny_model, tmp_path / "outbox.sqlite", monkeypatch)
    assert status == 1
    assert lines == ["watching night 20211110", "guAlta realtime: outbox cannot be written: disk full",
                     "the watcher has ended; 1 report waits in the outbox"]


def test_an_outbox_the_sender_cannot_write_is_warned_about_once_and_retried_less_often(tmp_path, monkeypatch, caplog):
    """On a full disk the sender warned "outbox cannot be used now (...): retrying" and tried again every second,
    for as long as the disk stayed full. One warning, then retries with a growing delay."""
    monkeypatch.setattr(report, "BACKOFF_MAX_S", 300.0)
    with Outbox(tmp_path / "o.sqlite") as outbox:
        sender = Sender(outbox.path, ApiClient(f"http://127.0.0.1:{free_port()}", KEY), idle_s=3600)
        sender.close(timeout=0)

        def full(*args, **kwargs):
            raise report.OutboxError(f"outbox {outbox.path} cannot be written: disk full")

        monkeypatch.setattr(report, "deliver", full)
        caplog.set_level(logging.DEBUG, logger="gualta.report")
        waits = [sender._pass(outbox) for _ in range(5)]
    assert [record.levelno for record in caplog.records if "cannot be used now" in record.getMessage()] \
        == [logging.WARNING] + [logging.DEBUG] * 4
    assert all(later > earlier for earlier, later in zip(waits, waits[1:])), waits
