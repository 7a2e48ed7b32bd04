"""Hostile input against the real embedded service: every bad request refused with a 4xx, nothing written.

    python bench/hostile.py [--count 1000] [--seed 2021] [--json]
    python bench/hostile.py --url http://127.0.0.1:8765 --keys obs01:KEY,obs02:KEY [--store DIR] ...

Without --url it starts `python guAlta.py serve` on a temporary store. Generates at least --count bad requests —
malformed JSON, wrong types, missing/unknown fields, ``../`` and ``/`` in obs_id/id/folder, huge or non-JPEG base64,
streaks that are not four pixel coordinates, bodies over 6 MB, missing/unknown/foreign API keys, wrong methods and
paths, broken HTTP framing — and checks each answer against the status it should get. Then: the store is byte-for-
byte unchanged, and the server still serves (health check and one valid upload). Prints counts per category; exit
status 0 only if all of that holds.
"""
from __future__ import annotations

import argparse
import base64
import copy
import http.client
import io
import json
import os
import random
import secrets
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gualta import payload, server  # noqa: E402
from gualta.cli import non_negative_int  # noqa: E402

FRAME = "20260916231507"
REQUIRED = sorted(payload.DETECTION_FIELDS)
BAD_VALUES = [None, True, False, 0, -1, 1.5, 10 ** 30, "", " ", "x" * 10_000, [], {}, [1], {"a": 1}, "../x",
              "<script>alert(1)</script>", "a/b", "\x00", "é", "00000000000000", "../../../../etc/passwd",
              "\\..\\..\\win.ini", "%2e%2e%2f", "obs01/../obs02", "\ud800"]
TRAVERSAL = ["..", "../", "../obs02", "../../etc/passwd", "/etc/passwd", "obs01/..", "obs01/../../x", "./obs01",
             "obs01/", "/obs01", "obs01\\..\\x", "..%2f..%2f", "%2e%2e", "obs01%00", "obs01\x00", "obs 01",
             "obs01\n", "obs01\r\nX-Injected: 1", "<script>", "<img src=x onerror=alert(1)>", "obs01;rm -rf /",
             "obs01|x", "a" * 33, "ＯＢＳ01", "obs01\u202e"]
BAD_STREAKS = [[1, 2, 3], [1, 2, 3, 4, 5], [-1, 0, 10, 10], [0, 0, 10, payload.MAX_STREAK_PX + 1], [1.5, 0, 10, 10],
               [True, 0, 10, 10], ["1", 2, 3, 4], [None] * 4, [[1], 2, 3, 4], [10 ** 30, 0, 0, 0]]


def contract_allows(name: str, value) -> bool:
    """True if the documented contract accepts this value for the field (then it is no bad value)."""
    number = type(value) in (int, float)
    return {"score": number and 0 <= value <= 1, "telegram": type(value) is bool,
            "flag": type(value) is str and payload.FLAG.fullmatch(value) is not None,
            "model": type(value) is str and payload.MODEL.fullmatch(value) is not None,
            "streak": payload.is_streak(value)}.get(name, False)


@dataclass
class Case:
    """One bad request and the statuses it may get."""
    category: str
    body: bytes | None = None
    key: str | None = None
    method: str = "POST"
    path: str = "/uploadmeteor"
    headers: dict = field(default_factory=dict)
    expect: tuple = (400,)
    raw: bytes | None = None          # sent as-is over a socket (broken HTTP framing)


def jpeg(size=(448, 224), mode="L", fmt="JPEG", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 60, (size[1], size[0]), dtype=np.uint8)).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Generator:
    """Builds the cases for one observatory key set (the first observatory is the sender)."""

    def __init__(self, keys: dict[str, str], seed: int):
        self.keys = keys
        self.owner = sorted(keys)[0]
        self.key = keys[self.owner]
        self.rng = random.Random(seed)
        self.valid = payload.build_detection(FRAME, 0.93, self.owner, jpeg(), telegram=False,
                                             processed="2026-09-16T23:16:00+02:00")

    def body_case(self, category: str, body, key: str | None = "owner", **options) -> Case:
        """A JSON body case; the expected status follows from who posts what (403 for another obs_id)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        key = self.key if key == "owner" else key
        expect = options.pop("expect", None)
        if expect is None:
            obs = body.get("obs_id") if isinstance(body, dict) else None
            expect = (403,) if isinstance(obs, str) and obs != self.owner else (400,)
        return Case(category, data, key, expect=expect, **options)

    def malformed_json(self):
        text = json.dumps(self.valid).encode()
        for cut in self.rng.sample(range(1, len(text) - 1), 60):
            yield self.body_case("malformed json", text[:cut])
        for _ in range(40):
            yield self.body_case("malformed json", self.rng.randbytes(self.rng.randint(1, 3000)))
        for special in (b"", b"null", b"true", b"1", b'"text"', b"[]", b"[1,2]", b"{", b"}", b"{'id': 1}",
                        b"\xef\xbb\xbf" + text, b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" +
                        b"}" * 50_000, b'{"score": ' + b"1" * 5000 + b"}", text.replace(b'"score": 0.93',
                                                                                         b'"score": NaN'),
                        text.replace(b'"score": 0.93', b'"score": -Infinity'), text + b"garbage", text * 2,
                        text.replace(b'"', b"'"), text.replace(b"{", b"{\xff", 1), b"\x00" * 100):
            yield self.body_case("malformed json", special)

    def wrong_types(self):
        for name in REQUIRED + ["flag", "model"]:
            for value in BAD_VALUES:
                if contract_allows(name, value):
                    continue
                body = {**self.valid, name: value}
                yield self.body_case("wrong type/value", body)

    def bad_streaks(self):
        for value in BAD_VALUES + BAD_STREAKS:
            if not contract_allows("streak", value):
                yield self.body_case("bad streak", {**self.valid, "streak": value})

    def missing_fields(self):
        for name in REQUIRED:
            yield self.body_case("missing field", {k: v for k, v in self.valid.items() if k != name})
        for first in range(len(REQUIRED)):
            for second in range(first + 1, len(REQUIRED)):
                drop = {REQUIRED[first], REQUIRED[second]}
                yield self.body_case("missing field", {k: v for k, v in self.valid.items() if k not in drop})
        yield self.body_case("missing field", {})
        yield self.body_case("missing field", {"log": "end", "obs_id": self.owner})

    def traversal(self):
        for value in TRAVERSAL:
            for name in ("obs_id", "id", "folder", "date", "time"):
                yield self.body_case("path in obs_id/id/folder", {**self.valid, name: value})

    def images(self):
        bad = [jpeg(fmt="PNG"), jpeg(fmt="GIF"), jpeg(fmt="BMP"), jpeg(mode="RGB"), jpeg(mode="CMYK"),
               jpeg(size=(224, 224)), jpeg(size=(448, 225)), jpeg(size=(4480, 2240)), jpeg(size=(1, 1)),
               jpeg(size=(224, 448)), b"\xff\xd8\xff", b"\xff\xd8\xff\xe0" + b"\0" * 100, b"not an image",
               jpeg() + b"\0" * 1_100_000, b"\xff\xd8\xff" + os.urandom(5000)]
        whole = jpeg()
        bad += [whole[:cut] for cut in sorted(self.rng.sample(range(4, len(whole) - 2), 15))]
        bad += [os.urandom(self.rng.randint(1, 20_000)) for _ in range(10)]
        for data in bad:
            yield self.body_case("bad image", {**self.valid, "img": b64(data)})
        encoded = b64(whole)
        for text in (encoded[:-2], encoded.replace("+", "-").replace("/", "_") + "!", "data:image/jpeg;base64," +
                     encoded, encoded[:100] + "\n" + encoded[100:], encoded + "====", "*" * 1000,
                     "A" * 2_000_000, b64(os.urandom(1_500_000))):
            yield self.body_case("bad image", {**self.valid, "img": text})

    def too_large(self):
        limit = payload.MAX_BODY_BYTES
        yield self.body_case("over 6 MB", b"{" + b" " * limit + b"}", expect=(413,))
        yield self.body_case("over 6 MB", json.dumps({**self.valid, "img": "A" * (7 * 1024 * 1024)}).encode(),
                             expect=(413,))
        yield self.body_case("over 6 MB", os.urandom(limit + 1), key=None, expect=(413,))

    def auth(self):
        body = json.dumps(self.valid).encode()
        yield Case("api key", body, None, expect=(401,))
        yield Case("api key", body, "", expect=(401,))
        yield Case("api key", body, self.key.upper() if self.key.upper() != self.key else self.key + "X",
                   expect=(401,))
        yield Case("api key", body, self.key[:-1], expect=(401,))
        yield Case("api key", body, self.key + self.key, expect=(401,))
        for header in ("x-api-keys", "Authorization", "api-key"):
            yield Case("api key", body, None, headers={header: self.key}, expect=(401,))
        yield Case("api key", body, None, path=f"/uploadmeteor?x-api-key={self.key}", expect=(401,))
        for _ in range(40):
            yield Case("api key", body, secrets.token_urlsafe(self.rng.randint(1, 40)), expect=(401,))
        for other in sorted(self.keys)[1:]:
            for i in range(12):
                foreign = {**self.valid, "id": f"20260916231{i:03d}"[:14], "time": f"23:1{i // 60}:{i % 60:02d}"}
                foreign["id"] = "20260916" + foreign["time"].replace(":", "")
                yield self.body_case("api key (foreign obs_id)", foreign, key=self.keys[other], expect=(403,))

    def methods_and_paths(self):
        body = json.dumps(self.valid).encode()
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO", "PROPFIND", "CONNECT"):
            for key in (self.key, None):
                yield Case("wrong method", body if method in ("PUT", "PATCH", "FOO") else None, key, method,
                           expect=(405,))
        # ("//uploadmeteor" is not here: http.server collapses leading slashes, so it is the real route)
        paths = ["/", "/upload", "/uploadmeteor/", "/UPLOADMETEOR", "/uploadmeteor/../uploadmeteor",
                 "/./uploadmeteor", "/%75ploadmeteor", "/uploadmeteor%00", "/Prod/uploadmeteor", "/uploadmeteor.json",
                 "/imgs/20260916/obs01_20260916231507.jpeg", "/index.html", "/20260916.html", "/models/latest",
                 "/detections/20260916/obs01_20260916231507.json", "/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"]
        for path in paths:
            yield Case("wrong path", body, self.key, "POST", path, expect=(404,))
        reads = ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/imgs/20260916/../../detections/x.json",
                 "/detections/20260916/obs01_20260916231507.json", "/logs/20260916/obs01_end.json", "/logs/",
                 "/models/latest/../../etc/passwd", "/index.html/", "/20261399.html", "/2026091.html",
                 "/imgs/20260916/<script>_20260916231507.jpeg", "/imgs/20260916/obs01_20260916231507.jpeg/..",
                 "/models/guAlta_latest_version.json", "/.env", "/aws_lambda/template.yaml", "/guAltaConfig.py",
                 "/imgs/20260916/" + "a" * 40 + "_20260916231507.jpeg", "/site/", "/health/../index.html"]
        for path in reads:
            yield Case("wrong path", None, None, "GET", path, expect=(404,))

    def consistency(self):
        for _ in range(30):
            body = dict(self.valid)
            name = self.rng.choice(["date", "time", "folder"])
            body[name] = {"date": f"2026-09-{self.rng.choice([14, 15, 17, 18]):02d}",
                          "time": f"{self.rng.randint(0, 23):02d}:{self.rng.randint(0, 59):02d}:"
                                  f"{self.rng.choice([0, 6, 8, 59]):02d}",
                          "folder": self.rng.choice(["20260914", "20260917", "20260918", "20250916"])}[name]
            yield self.body_case("inconsistent id/date/time/folder", body)
        for value in (-0.0001, 1.0000001, 2, -5, 1e308, "NaN", "0.5"):
            yield self.body_case("score out of range", {**self.valid, "score": value})

    def logs(self):
        owner = self.owner
        bad = [{"log": "end", "obs_id": owner, "total": v} for v in (-1, 1.5, "10", None, True, [], 10 ** 12)]
        bad += [{"log": v, "obs_id": owner} for v in ("", "START", "middle", None, 1, [], {"a": 1}, "start ")]
        bad += [{"log": "start", "obs_id": owner, "total": 1}, {"log": "start", "obs_id": owner, "img": "x"},
                {"log": "start"}, {"log": "end", "total": 5}, {"log": "start", "obs_id": owner, "folder": "x"},
                {"log": "start", "obs_id": owner, "folder": "20261340"},
                {"log": "start", "obs_id": owner, "processed": "soon"},
                {"log": "start", "obs_id": owner, "processed": 12}, {"log": "start", "obs_id": None},
                {**self.valid, "log": "start"}]
        bad += [{"log": "start", "obs_id": value} for value in TRAVERSAL[:10]]
        for body in bad:
            yield self.body_case("bad log", body)

    def unknown_fields(self):
        for name in ("extra", "Img", "ID", "__proto__", "constructor", "obs-id", "<b>", "x" * 300, "", "score "):
            yield self.body_case("unknown field", {**self.valid, name: 1})
        for name in ("extra", "debug"):
            yield self.body_case("unknown field", {"log": "start", "obs_id": self.owner, name: True})

    def framing(self):
        key = self.key.encode()
        head = b"POST /uploadmeteor HTTP/1.1\r\nHost: x\r\nx-api-key: " + key + b"\r\n"
        raws = [
            (b"GARBAGE\r\n\r\n", (400,)),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", (400,)),
            (b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", (431, 400)),
            (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", (414,)),
            (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", (431,)),
            (head + b"\r\n{}", (411,)),
            (head + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", (411,)),
            (head + b"Content-Length: -5\r\n\r\n", (411,)),
            (head + b"Content-Length: abc\r\n\r\n", (411,)),
            (head + b"Content-Length: \xc2\xb2\r\n\r\n", (411,)),
            (head + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", (411,)),
            (head + b"Content-Length: 100000000\r\n\r\n{}", (413,)),
            (head + b"Content-Length: 7000000\r\nExpect: 100-continue\r\n\r\n", (413,)),
            (head + b"Content-Length: 50\r\n\r\n{\"id\": 1}", (400,)),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(40) + b"\r\n\r\n", (400,)),
            (b"GET /\r\n\r\n", (400,)),
            (b"GET /\x00 HTTP/1.1\r\n\r\n", (400, 404)),
            (b"POST /uploadmeteor HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", (401,)),
        ]
        for raw, expect in raws:
            yield Case("broken HTTP", expect=expect, raw=raw)

    def fuzz(self, count: int):
        """Random combinations of invalid-by-construction mutations."""
        for _ in range(count):
            body = copy.deepcopy(self.valid)
            for _ in range(self.rng.randint(1, 3)):
                action = self.rng.random()
                if action < 0.6:
                    name, value = self.rng.choice(REQUIRED), self.rng.choice(BAD_VALUES + TRAVERSAL)
                    if contract_allows(name, value):
                        continue
                    body[name] = value
                elif action < 0.8:
                    body.pop(self.rng.choice(REQUIRED), None)
                else:
                    body[secrets.token_hex(4)] = self.rng.choice(BAD_VALUES)
            if body.get("obs_id") == self.owner and all(body.get(k) == self.valid.get(k) for k in REQUIRED) \
                    and body.keys() == self.valid.keys():
                continue                       # unchanged by chance: not a bad request
            yield self.body_case("random mutations", body)

    def all(self, count: int) -> list[Case]:
        parts = (self.malformed_json(), self.wrong_types(), self.bad_streaks(), self.missing_fields(), self.traversal(),
                 self.images(), self.too_large(), self.auth(), self.methods_and_paths(), self.consistency(), self.logs(),
                 self.unknown_fields(), self.framing())
        cases = [c for part in parts for c in part]
        cases += list(self.fuzz(max(0, count - len(cases))))
        return cases


class Client:
    """Sends cases over a keep-alive connection (raw ones over a fresh socket); returns the status, 0 if none."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.connection = None

    def send(self, case: Case) -> int:
        return self.send_raw(case.raw) if case.raw is not None else self.send_http(case)

    def send_http(self, case: Case) -> int:
        headers = {"Content-Type": "application/json", **case.headers}
        if case.key is not None:
            headers["x-api-key"] = case.key
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.connection.request(case.method, case.path, body=case.body, headers=headers)
                reply = self.connection.getresponse()
                reply.read()
                if reply.will_close:
                    self.close()
                return reply.status
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    return 0
        return 0

    def send_raw(self, data: bytes) -> int:
        with socket.create_connection((self.host, self.port), timeout=30) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            reply = b""
            try:
                while len(reply) < 65536:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            except OSError:
                pass
        first = reply.split(b"\r\n", 1)[0].split()
        return int(first[1]) if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit() else 0

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def snapshot(root: Path | None) -> dict:
    """Every file under the store folder (temp files included) with its size and mtime."""
    if root is None or not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def attack(url: str, keys: dict[str, str], count: int, seed: int, root: Path | None) -> dict:
    generator = Generator(keys, seed)
    cases = generator.all(count)
    client = Client(url)
    before = snapshot(root)
    started = time.perf_counter()
    statuses: dict[str, Counter] = defaultdict(Counter)
    unexpected = []
    for case in cases:
        status = client.send(case)
        statuses[case.category][status] += 1
        if status not in case.expect:
            unexpected.append({"category": case.category, "method": case.method, "path": case.path[:80],
                               "status": status, "expected": list(case.expect),
                               "body": (case.raw or case.body or b"")[:120].decode("utf-8", "replace")})
    elapsed = time.perf_counter() - started
    client.close()
    unchanged = snapshot(root) == before
    valid = Client(url)
    health = valid.send(Case("check", None, None, "GET", "/health"))
    accepted = valid.send(generator.body_case("check", generator.valid, expect=(200,)))
    valid.close()
    total = Counter()
    for counter in statuses.values():
        total.update(counter)
    return {"requests": len(cases), "seconds": round(elapsed, 2), "requests_per_s": round(len(cases) / elapsed, 1),
            "by_category": {k: dict(sorted(v.items())) for k, v in statuses.items()},
            "statuses": dict(sorted(total.items())),
            "server_errors": sum(n for s, n in total.items() if s >= 500),
            "accepted": sum(n for s, n in total.items() if 200 <= s < 300),
            "no_answer": total.get(0, 0), "unexpected": unexpected,
            "store_checked": root is not None, "store_unchanged": unchanged,
            "still_serving": health == 200 and accepted == 200}


def report(result: dict) -> None:
    print(f"hostile: {result['requests']} bad requests in {result['seconds']} s ({result['requests_per_s']}/s)")
    width = max(len(k) for k in result["by_category"])
    for category, counts in result["by_category"].items():
        print(f"  {category:<{width}}  {sum(counts.values()):5d}   " +
              " ".join(f"{status or 'none'}×{n}" for status, n in counts.items()))
    print(f"  statuses: {' '.join(f'{s}×{n}' for s, n in result['statuses'].items())}")
    print(f"  5xx: {result['server_errors']} · accepted (2xx): {result['accepted']} · no answer: "
          f"{result['no_answer']} · not the expected status: {len(result['unexpected'])}")
    for item in result["unexpected"][:10]:
        print(f"    unexpected: {item}")
    store = ("unchanged" if result["store_unchanged"] else "CHANGED") if result["store_checked"] else "not checked"
    print(f"  store: {store} · server still serving: {result['still_serving']}")


def ok(result: dict) -> bool:
    return (result["server_errors"] == 0 and result["accepted"] == 0 and not result["unexpected"]
            and result["store_unchanged"] and result["still_serving"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service (default: start one on a temporary store)")
    parser.add_argument("--keys", help="obs_id:key,... for --url (at least two observatories)")
    parser.add_argument("--store", type=Path, help="the --url service's store folder, to check nothing is written")
    parser.add_argument("--count", type=int, default=1000, help="at least this many bad requests")
    parser.add_argument("--seed", type=non_negative_int, default=2021)
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    args = parser.parse_args(argv)
    if args.url and not args.keys:
        parser.error("--url needs --keys obs_id:key,... (the service's observatories)")
    if args.url:
        keys = {obs: key for obs, _, key in (e.partition(":") for e in args.keys.split(","))}
        result = attack(args.url.rstrip("/"), keys, args.count, args.seed, args.store)
    else:
        keys = {f"obs{i:02d}": secrets.token_urlsafe(18) for i in (1, 2, 3)}
        with tempfile.TemporaryDirectory() as folder:
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("GUALTA_")},
                   "GUALTA_API_KEYS": ",".join(f"{o}:{k}" for o, k in keys.items())}
            with server.ChildServer(Path(folder) / "store", env) as child:
                result = attack(child.url, keys, args.count, args.seed, Path(folder) / "store")
                result["server_alive_after"] = child.alive()
    report(result)
    if args.json:
        print(json.dumps(result))
    return 0 if ok(result) else 1


if __name__ == "__main__":
    sys.exit(main())
