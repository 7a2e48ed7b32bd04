"""Shared pieces for the central-service tests: payloads, events, a Telegram Bot API stand-in, moto, Chromium."""
from __future__ import annotations

import email
import email.policy
import hashlib
import io
import json
import os
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
from PIL import Image

from gualta import payload, server

REPO = Path(__file__).resolve().parent.parent
EVENTS = REPO / "aws_lambda" / "events"
KEYS = {"obs01": "key-obs01-6f1c2a9d", "obs02": "key-obs02-b7e04c13", "obs03": "key-obs03-19ad77e2"}
KEYS_ENV = ",".join(f"{obs}:{key}" for obs, key in KEYS.items())
BUCKET = "gualta-test"
CHROMIUM = os.environ.get("GUALTA_CHROMIUM", "/usr/bin/chromium")
OBSERVATORIES = {"obs01": {"lat": 41.60, "lon": 1.84, "elevation_m": 700, "name": "Montseny", "tz": "Europe/Madrid"},
                 "obs02": {"lat": 40.42, "lon": -3.70, "elevation_m": 650, "name": "Madrid", "tz": "Europe/Madrid"}}


def gray_image(seed: int = 0, size=(448, 224)) -> np.ndarray:
    """A dark noisy frame | difference pair with a bright streak on each half."""
    rng = np.random.default_rng(seed)
    image = rng.normal(20, 4, (size[1], size[0])).clip(0, 255).astype(np.uint8)
    for half in (0, size[0] // 2):
        for t in np.linspace(0, 1, 200):
            x, y = int(half + 30 + t * 150), int(40 + t * 120 + seed % 30)
            image[min(y, size[1] - 1), min(x, size[0] - 1)] = 230
    return image


def jpeg(seed: int = 0, size=(448, 224), mode: str = "L", quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gray_image(seed, size)).convert(mode).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def detection(obs_id: str = "obs01", frame_id: str = "20260916231507", score: float = 0.93,
              telegram: bool = False, seed: int = 0, **extra) -> dict:
    """A valid detection payload built with the client's builder."""
    return payload.build_detection(frame_id, score, obs_id, jpeg(seed), telegram=telegram,
                                   processed="2026-09-16T23:16:00+02:00", **extra)


def event(body, key: str | None = KEYS["obs01"], method: str = "POST", path: str = "/uploadmeteor") -> dict:
    """An API Gateway REST proxy event as the embedded server builds it."""
    raw = body if isinstance(body, bytes) else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
    headers = {"Content-Type": ["application/json"]}
    if key is not None:
        headers["x-api-key"] = [key]
    return server.proxy_event(method, path, headers, raw, "127.0.0.1")


def service_env(store, **extra) -> dict:
    """Environment for the handlers: a store, the test keys, the observatories."""
    env = {"GUALTA_STORE": str(store), "GUALTA_API_KEYS": KEYS_ENV, "GUALTA_TIMEZONE": "Europe/Madrid",
           "GUALTA_OBSERVATORIES": json.dumps(OBSERVATORIES)}
    env.update(extra)
    return env


def function_grants(function: str) -> set[tuple[str, str]]:
    """(action, key pattern) of the S3 grants template.yaml gives a Lambda function (the bucket's own grant, for
    listing, has the pattern '')."""
    from cfnlint.decode import decode

    template, errors = decode(str(REPO / "aws_lambda" / "template.yaml"))
    assert not errors
    grants = set()
    for policy in template["Resources"][function]["Properties"]["Policies"]:
        for statement in policy["Statement"]:
            statement = statement.get("Fn::If", [None, statement])[1]     # a grant on a condition: granted
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for resource in resources:
                arn = json.dumps(resource)
                pattern = resource.get("Fn::Sub", "").removeprefix("${Bucket.Arn}/") \
                    if "${Bucket.Arn}/" in arn else "" if "Bucket" in arn else None
                grants.update((action, pattern) for action in actions if pattern is not None)
    return grants


class GrantedStore:
    """A local store that refuses what a function's policy does not grant, as S3 does (AccessDenied: a StoreError
    from gualta.store.S3Store)."""

    def __init__(self, root: Path, function: str):
        from gualta.store import LocalStore

        self.inner, self.grants, self.function = LocalStore(root), function_grants(function), function

    def allow(self, action: str, key: str) -> None:
        import fnmatch

        from gualta.store import StoreError

        if not any(granted == action and fnmatch.fnmatchcase(key, pattern) for granted, pattern in self.grants):
            raise StoreError(f"S3 {action} failed: AccessDenied ({self.function}: {key})")

    def get(self, key: str):
        self.allow("s3:GetObject", key)
        return self.inner.get(key)

    def put(self, key: str, data: bytes) -> None:
        self.allow("s3:PutObject", key)
        self.inner.put(key, data)

    def create(self, key: str, data: bytes) -> bool:
        self.allow("s3:PutObject", key)
        return self.inner.create(key, data)

    def delete(self, key: str) -> None:
        self.allow("s3:DeleteObject", key)
        self.inner.delete(key)

    def keys(self, prefix: str = "", recursive: bool = True) -> list[str]:
        self.allow("s3:ListBucket", "")
        return self.inner.keys(prefix, recursive)


def child_env(**extra) -> dict:
    """This process's environment without GUALTA_* settings, plus extra (for servers in child processes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUALTA_")}
    env.update(extra)
    return env


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (dotfiles included) → sha256: to prove that nothing was written."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chromium() -> str:
    """Path of the Chromium binary; fails (never skips) when missing: `make system-deps` installs it."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} not found: run `make system-deps` (apt-get install chromium)"
    return CHROMIUM


@contextmanager
def browser_page(width: int, height: int):
    """A Playwright page in the system Chromium (never `playwright install`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=chromium(),
                                       args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                             "--disable-background-networking", "--disable-component-update",
                                             "--disable-sync"])
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


@contextmanager
def moto_s3():
    """A moto server on 127.0.0.1 with an empty bucket; yields (endpoint_url, boto3 client)."""
    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        client = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        moto.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class RecordingServer:
    """A local HTTP server on 127.0.0.1 for POSTs and GETs: `answer(path, headers, body)` gives (status, reply): a
    JSON reply, or a text one sent as it is; or (status, reply, headers) to send headers too."""

    def __init__(self, answer):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, reply, *headers = answer(self.path, self.headers, body)
                text = isinstance(reply, str)
                data = reply.encode() if text else json.dumps(reply).encode()
                self.send_response(status)
                for name, value in (headers[0] if headers else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TelegramStandIn(RecordingServer):
    """A local Bot API: records every call; answers like Telegram (a new message id per message sent, an edit
    answers with the edited message, or 400 "message is not modified" if its caption is the same; a caption over
    1,024 UTF-16 code units gets 400 "message caption is too long"), answers 429 with the waits queued in `flood`
    (flood control), or fails with HTTP `fail_status`, `fail_description` and `fail_parameters` (Telegram's
    ResponseParameters) — every method, or those in `fail_methods`; a photo whose
    caption holds one of `refused` gets 400 "IMAGE_PROCESS_FAILED" (Telegram refusing that one post)."""

    def __init__(self):
        self.calls: list[dict] = []
        self.fail_status: int | None = None
        self.fail_methods: set[str] = set()
        self.fail_description = "Internal Server Error"
        self.fail_parameters: dict | None = None
        self.refused: set[str] = set()
        self.captions: dict[int, str | None] = {}
        self.flood: list[int] = []            # retry_after seconds to answer the next calls with (429), in order;
                                              # 0: that call is answered as usual
        self.lock = threading.Lock()
        super().__init__(self.answer)
        self.base_url = self.url + "/bot"

    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict]:
        with self.lock:                     # calls at once (observatories reporting one moment) each get their own id
            return self.answer_one(path, headers, body)

    def answer_one(self, path: str, headers, body: bytes) -> tuple[int, dict]:
        token, _, method = path.removeprefix("/bot").partition("/")
        fields = parse_fields(headers.get("Content-Type", ""), body)
        self.calls.append({"token": token, "method": method, "fields": fields})
        wait = self.flood.pop(0) if self.flood else 0
        if wait:
            return 429, {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {wait}",
                         "parameters": {"retry_after": wait}}
        if self.fail_status and (not self.fail_methods or method in self.fail_methods):
            return self.fail_status, {"ok": False, "error_code": self.fail_status,
                                      "description": self.fail_description,
                                      **({"parameters": self.fail_parameters} if self.fail_parameters else {})}
        if method == "sendPhoto" and any(text in fields.get("caption", "") for text in self.refused):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: IMAGE_PROCESS_FAILED"}
        if len(fields.get("caption", "").encode("utf-16-le")) > 2 * 1024:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message caption is too long"}
        message_id = int(fields["message_id"]) if method.startswith("edit") else len(self.calls)
        if method == "editMessageCaption" and self.captions.get(message_id) == fields.get("caption"):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is not modified: "
                         "specified new message content and reply markup are exactly the same as a current content "
                         "and reply markup of the message"}
        self.captions[message_id] = fields.get("caption")
        return 200, {"ok": True, "result": {"message_id": message_id, "date": 0,
                                            "chat": {"id": -100123, "type": "channel"}}}

    def sent(self, method: str) -> list[dict]:
        """The fields of every call of one method, in order."""
        return [call["fields"] for call in self.calls if call["method"] == method]


def parse_fields(content_type: str, body: bytes) -> dict:
    """Form fields of a urlencoded or multipart body; file fields as bytes."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {k: v[-1] for k, v in parse_qs(body.decode()).items()}
    if content_type.startswith("multipart/form-data"):
        message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body,
                                           policy=email.policy.HTTP)
        fields = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True)
            fields[name] = data if part.get_filename() else data.decode()
        return fields
    return {"raw": body}
