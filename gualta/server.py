"""Embedded central service: the aws_lambda handlers behind a stdlib HTTP server, with no cloud account.

Routes (``python guAlta.py serve``):

    POST /uploadmeteor             → API Gateway REST proxy event → aws_lambda/guAlta/app.py lambda_handler
    POST /site[?day=YYYYMMDD]      → aws_lambda/generateWebsite/app.py lambda_handler (header x-api-key)
    GET  /, /index.html            → the latest daily page       GET /YYYYMMDD.html  → that night's page
    GET  /archive.html             → every night with a page
    GET  /imgs/YYYYMMDD/{obs_id}_{id}.jpeg                        GET /health         → {"status": "ok"}
    GET  /models/latest            → models/guAlta_latest_version.json (the published model's metadata)
    GET  /models/latest/file       → the model file that metadata names (else guAlta_latest_version.onnx/.pkl)
    GET  /models/guAlta_latest_version.json, /models/guAlta_v{N}.onnx, …  → those store keys, as a public bucket
                                     serves them (what clients read: the same URLs work on the S3 website)

Any other path or method on the API answers 404/405 from the handler; a daily-page thread runs the page handler at
the scheduled local time. Bodies over 6 MB get 413 before parsing; nothing a client sends produces a 5xx.

A client too slow or too many costs little: an upload's or a page build's API key is checked before its body is read,
a request not read whole within REQUEST_READ_S is cut off, and beyond MAX_CONNECTIONS connections at once a new one
gets 503 (the clients' outbox sends again later). On the internet, serve it behind a TLS reverse proxy (README).
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from gualta import config, ingest, passes, payload, service_env, site, store, telegram_post

log = logging.getLogger(__name__)

LAMBDA_DIR = Path(__file__).resolve().parent.parent / "aws_lambda"
DRAIN_LIMIT = 16 * 1024 * 1024          # after a 413, read at most this much so the client sees the answer
SOCKET_TIMEOUT_S = 30
KEEP_ALIVE_IDLE_S = 5                   # a kept-alive connection's wait for its next request (a browser keeps ~6)
REQUEST_READ_S = 60                     # to send a request's line, headers and body (a detection is ~100 kB)
MAX_CONNECTIONS = 200                   # connections served at once (a thread each); more are answered 503
KEY_ROUTES = (ingest.ROUTE, "/site")    # POST routes whose API key is checked before the body is read
STATIC = re.compile(r"/(?:(index\.html|archive\.html)|([0-9]{8}\.html)|(imgs/[0-9]{8}/[A-Za-z0-9_-]{1,32}_[0-9]{14}\.jpeg)|"
                    r"(models/guAlta_latest_version\.json)|"
                    rf"(models/{store.MODEL_FILE.pattern}))")
DIGITS = re.compile(r"[0-9]{1,18}")
MODEL_SUFFIXES = (".onnx", ".pkl")
BODY_METHODS = ("POST", "PUT", "PATCH")
ANSWERS = ingest.Throttle()              # access-log lines of refusals: (address, method, status) once an hour
IMMUTABLE = "public, max-age=31536000, immutable"
WRITTEN_ONCE = re.compile(r"imgs/.+|models/guAlta_v[0-9]+\.(?:onnx|pkl)")   # store keys never written again
HTML_POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (named, or `*`, without q=0)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.strip().partition(";")
        quality = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
        if coding.strip() in ("gzip", "*") and quality.strip() not in ("0", "0.0", "0.00", "0.000"):
            return True
    return False


def load_handler(function: str, lambda_dir: Path = LAMBDA_DIR):
    """lambda_handler of aws_lambda/<function>/app.py (the same file SAM deploys)."""
    path = lambda_dir / function / "app.py"
    spec = importlib.util.spec_from_file_location(f"gualta_lambda_{function}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


def proxy_event(method: str, target: str, headers: dict[str, list[str]], body: bytes, source_ip: str) -> dict:
    """An API Gateway REST (v1) Lambda-proxy event for one HTTP request."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        import base64
        text, encoded = base64.b64encode(body).decode("ascii"), True
    return {"resource": parts.path, "path": parts.path, "httpMethod": method,
            "headers": {name: values[-1] for name, values in headers.items()},
            "multiValueHeaders": headers,
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": None, "stageVariables": None,
            "requestContext": {"resourcePath": parts.path, "httpMethod": method, "path": parts.path,
                               "stage": "local", "requestId": uuid.uuid4().hex,
                               "requestTimeEpoch": int(time.time() * 1000), "identity": {"sourceIp": source_ip}},
            "body": text or None, "isBase64Encoded": encoded}


class Service:
    """What the request threads share: the two handlers, the store for static files, a page-build lock.

    Like the Lambdas, everything reads its settings from this process's environment (GUALTA_*).
    """

    def __init__(self, lambda_dir: Path = LAMBDA_DIR):
        self.env = os.environ
        self.ingest = load_handler("guAlta", lambda_dir)
        self.website = load_handler("generateWebsite", lambda_dir)
        self.site_lock = threading.Lock()

    @property
    def store(self) -> store.Store:
        return store.store_from_env(self.env)

    def build_site(self, event: dict) -> dict:
        with self.site_lock:
            return self.website(event, None)


class Handler(BaseHTTPRequestHandler):
    """Translates HTTP to handler calls and serves the store's pages; never answers 5xx to bad input."""
    protocol_version = "HTTP/1.1"
    server_version = "guAlta"
    sys_version = ""
    timeout = SOCKET_TIMEOUT_S
    disable_nagle_algorithm = True         # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    service: Service                       # set by make_server

    def version_string(self) -> str:
        return self.server_version

    # ---- plumbing -------------------------------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        log.debug("%s %s", self.address_string(), ingest.printable(format % args))

    def log_request(self, code="-", size="-") -> None:
        """The access log: every POST and every answer >= 400 at INFO (a refusal repeated from one address, once an
        hour: `ingest.Throttle`), pages served at DEBUG; the path without its query, never a header."""
        status = int(code) if str(code).isdigit() else 0
        method = ingest.printable(self.command or "-", 10)
        line = f"{self.client_address[0]} {method} {ingest.printable(urlsplit(self.path).path)} {code}" \
            if self.command else f"{self.client_address[0]} (no valid request line) {code}"
        held = ANSWERS((self.client_address[0], method, status)) if status >= 400 else 0
        if held is None or (method != "POST" and status < 400):
            log.debug("%s", line)
        else:
            log.info("%s%s", line, f" ({held} more since the last such line)" if held else "")

    def send_error(self, code, message=None, explain=None):
        """Request-line/header problems found by http.server: always a 4xx (it would say 501/505)."""
        code = 400 if code >= 500 else code
        if self.request_version == "HTTP/0.9":   # so the answer still has a status line
            self.request_version = "HTTP/1.0"
        self.close_connection = True
        self.reply(code, {"error": message or "bad request"})

    def __getattr__(self, name: str):
        if name.startswith("do_"):           # every method is `route`'s (an unknown one: 405, not http.server's 501)
            return self.route
        raise AttributeError(name)

    def reply(self, status: int, body: dict | bytes, content_type: str = "application/json",
              headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode("ascii")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if status != 304:                                      # no body: its length would be the file's
            self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", HTML_POLICY)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        try:
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):    # the client left before reading the answer
            self.close_connection = True

    def content_length(self) -> int | None:
        """Declared body length (0 if none); None if it is invalid, repeated or the body is chunked."""
        if self.headers.get("Transfer-Encoding"):
            return None
        values = self.headers.get_all("Content-Length") or []
        if len(values) > 1 or (values and not DIGITS.fullmatch(values[0].strip())):
            return None
        return int(values[0]) if values else 0

    def handle_expect_100(self) -> bool:
        length = self.content_length()
        if length is not None and length > payload.MAX_BODY_BYTES:
            if self.command == "POST" and urlsplit(self.path).path in KEY_ROUTES:
                ingest.log_refusal(self.client_address[0], 413, "body over the size limit", urlsplit(self.path).path)
            self.close_connection = True
            self.reply(413, {"error": f"body larger than {payload.MAX_BODY_BYTES} bytes"})
            return False
        return super().handle_expect_100()

    def handle_one_request(self) -> None:
        """One request, cut off if its line, headers and body are not all read within REQUEST_READ_S of its first
        byte. A new connection waits for that byte within the socket timeout, a kept-alive one within
        keep_alive_s: idle, it holds one of max_connections (a crowd of browsers took them all for 30 s)."""
        kept_alive, self.served = getattr(self, "served", False), True
        try:
            if kept_alive:
                self.connection.settimeout(self.server.keep_alive_s)
            if not self.rfile.peek(1):       # the client closed the connection
                self.close_connection = True
                return
        except OSError:                      # idle past the wait, or reset
            self.close_connection = True
            return
        self.connection.settimeout(self.timeout)
        self.server.watch(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.server.unwatch(self.connection)

    def read_body(self) -> bytes | None:
        """The request body, or None after answering 411/400/413/401/500 for a body it will not take."""
        length = self.content_length()
        if length is None:
            return self.refuse(411, "a valid Content-Length is required (no chunked bodies)")
        if self.command in BODY_METHODS and "Content-Length" not in self.headers:
            return self.refuse(411, "Content-Length required")
        if length > payload.MAX_BODY_BYTES:
            return self.refuse(413, f"body larger than {payload.MAX_BODY_BYTES} bytes", unread=length)
        if self.command == "POST" and urlsplit(self.path).path in KEY_ROUTES:
            try:
                owner, refusal = ingest.api_key_owner(self.headers.get_all("x-api-key") or [], self.service.env)
            except service_env.ServiceConfigError as exc:    # the keys cannot be read now (SSM, an edited setting)
                log.error("configuration error: %s", exc)    # 500 as the AWS host answers; the client retries
                return self.refuse(500, "service misconfigured", unread=length)
            if owner is None:                # not worth reading (nor holding 6 MB of memory for)
                return self.refuse(401, refusal, unread=length)
        try:
            body = self.rfile.read(length)
        except OSError:                      # the client stopped sending (socket timeout, cut off) or went away
            body = b""
        self.server.unwatch(self.connection)
        if len(body) < length:
            return self.refuse(400, "incomplete body")
        return body

    def refuse(self, status: int, error: str, unread: int = 0) -> None:
        """Answer a request whose body is not taken, and close the connection; `unread` bytes of its body still to
        come are read and dropped first (`drain`), so a client still sending them gets the answer. A refused upload
        or page build is logged as the handler logs its own (`ingest.log_refusal`)."""
        path = urlsplit(self.path).path
        if self.command == "POST" and path in KEY_ROUTES and status < 500:
            ingest.log_refusal(self.client_address[0], status, error, path)
        self.close_connection = True
        self.reply(status, {"error": error})
        self.drain(unread)

    def drain(self, length: int) -> None:
        """Read and drop up to DRAIN_LIMIT bytes so a client still sending its body gets the answer."""
        remaining = min(length, DRAIN_LIMIT)
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    # ---- routing --------------------------------------------------------------------------------------------
    def route(self) -> None:
        if self.request_version == "HTTP/0.9":
            self.send_error(400, "HTTP/0.9 is not supported")
            return
        body = self.read_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        try:
            if self.command in ("GET", "HEAD") and path not in (ingest.ROUTE, "/site"):
                self.serve_static(path)
            elif path == "/site":
                self.run_site()
            else:
                self.call_lambda(body)
        except store.StoreError as exc:
            log.error("store unavailable: %s", exc)
            self.reply(503, {"error": "store unavailable, retry later"})
        except Exception:
            log.exception("internal error on %s %s", self.command, path)
            self.reply(500, {"error": "internal error"})

    def call_lambda(self, body: bytes) -> None:
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name, []).append(value)
        result = self.service.ingest(proxy_event(self.command, self.path, headers, body, self.client_address[0]),
                                     None)
        data = result.get("body") or ""
        if result.get("isBase64Encoded"):
            import base64
            data = base64.b64decode(data)
        extra = {k: v for k, v in (result.get("headers") or {}).items() if k.lower() != "content-type"}
        self.reply(int(result["statusCode"]), data if isinstance(data, bytes) else data.encode("utf-8"),
                   (result.get("headers") or {}).get("Content-Type", "application/json"), extra)

    def run_site(self) -> None:
        """Build the site on a POST /site (its API key was checked before its body was read: `read_body`)."""
        if self.command != "POST":
            self.reply(405, {"error": "method not allowed"}, headers={"Allow": "POST"})
            return
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        if set(query) - {"day"} or len(query.get("day", [])) > 1:
            self.refuse_site("the only parameter is day=YYYYMMDD, given once")
            return
        day = query.get("day", [None])[0]
        event = {"source": "gualta.server"}
        if day is not None:
            try:
                event["day"] = site.check_page_night(day, datetime.now(timezone.utc), self.service.env)
            except ValueError as exc:
                self.refuse_site(f"day: {exc}")
                return
        self.reply(200, self.service.build_site(event))

    def refuse_site(self, reason: str) -> None:
        """Answer a POST /site whose parameters are wrong 400, logged as refused uploads are (`ingest.log_refusal`)."""
        ingest.log_refusal(self.client_address[0], 400, reason, "/site")
        self.reply(400, {"error": reason})

    def serve_static(self, path: str) -> None:
        if path in ("/", "/index.html"):
            self.send_key("index.html")
        elif path == "/health":
            self.reply(200, {"status": "ok"})
        elif path == "/models/latest":
            self.send_key(store.MODEL_META, missing="no model published")
        elif path == "/models/latest/file":
            self.send_model()
        elif (match := STATIC.fullmatch(path)):
            self.send_key(match.group(0)[1:])
        else:
            self.reply(404, {"error": "not found"})

    def send_key(self, key: str, missing: str = "not found", headers: dict | None = None) -> None:
        """A store key as a browser expects a static file: an ETag (304 when the browser holds it already), images
        and numbered model versions cached for good (written once), pages checked again each time and gzipped."""
        data = self.service.store.get(key)
        if data is None and key.endswith(".html"):    # a browser: a post's link followed before the morning's page
            self.reply(404, site.render_missing().encode("utf-8"), store.content_type(key),
                       {"Cache-Control": "no-cache"})
            return
        if data is None:
            self.reply(404, {"error": missing})
            return
        zipped = key.endswith(".html") and accepts_gzip(self.headers.get("Accept-Encoding", ""))
        tag = f'"{hashlib.sha256(data).hexdigest()[:32]}{"-gzip" if zipped else ""}"'    # one tag per body sent
        headers = {**(headers or {}), "ETag": tag, "Cache-Control": IMMUTABLE if WRITTEN_ONCE.fullmatch(key)
                   else "no-cache"}
        if key.endswith(".html"):
            headers["Vary"] = "Accept-Encoding"
        if tag in (value.strip().removeprefix("W/") for value in self.headers.get("If-None-Match", "").split(",")):
            self.reply(304, b"", store.content_type(key), headers)
            return
        if zipped:
            data, headers["Content-Encoding"] = gzip.compress(data, 6), "gzip"
        self.reply(200, data, store.content_type(key), headers)

    def send_model(self) -> None:
        meta = store.read_json(self.service.store, store.MODEL_META)
        named = store.published_file(meta)
        names = ([named] if named else []) + [f"guAlta_latest_version{suffix}" for suffix in MODEL_SUFFIXES]
        for name in names:
            data = self.service.store.get(f"models/{name}")
            if data is not None:
                self.reply(200, data, "application/octet-stream",
                           {"Content-Disposition": f'attachment; filename="{name}"'})
                return
        self.reply(404, {"error": "no model published"})


class Server(ThreadingHTTPServer):
    """One thread per connection, at most max_connections at once (more are answered 503); a listen backlog that
    absorbs bursts of clients; a watcher that cuts off a request not read within read_s (a client sending a byte
    every few seconds is never caught by the socket timeout)."""
    daemon_threads = True
    request_queue_size = 128
    max_connections = MAX_CONNECTIONS
    read_s = REQUEST_READ_S
    keep_alive_s = KEEP_ALIVE_IDLE_S

    def __init__(self, *args, **kwargs):
        self.busy = 0
        self.deadlines: dict[socket.socket, float] = {}
        self.lock = threading.Lock()
        self.closed = threading.Event()
        super().__init__(*args, **kwargs)       # a port in use: server_close, then OSError
        threading.Thread(target=self.cut_off_slow_requests, name="slow-requests", daemon=True).start()

    def process_request(self, request, client_address) -> None:
        with self.lock:
            admitted = self.busy < self.max_connections
            if admitted:
                self.busy += 1
        if not admitted:
            log.warning("%d connections already: %s answered 503", self.max_connections, client_address[0])
            refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:                # no thread started: its place is free again
            self.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.release()

    def release(self) -> None:
        with self.lock:
            self.busy -= 1

    def watch(self, connection: socket.socket) -> None:
        with self.lock:
            self.deadlines[connection] = time.monotonic() + self.read_s

    def unwatch(self, connection: socket.socket) -> None:
        with self.lock:
            self.deadlines.pop(connection, None)

    def cut_off_slow_requests(self) -> None:
        """Shut the connections whose request is still being read after read_s: the reading thread returns."""
        while not self.closed.wait(min(1.0, self.read_s / 4)):
            now = time.monotonic()
            with self.lock:
                late = [connection for connection, deadline in self.deadlines.items() if deadline < now]
                for connection in late:
                    del self.deadlines[connection]
            for connection in late:
                log.info("a request not read within %g s was cut off", self.read_s)
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def server_close(self) -> None:
        self.closed.set()
        super().server_close()


def refuse_busy(request: socket.socket) -> None:
    """Answer 503 on a connection that is not served (too many at once), without reading it."""
    body = json.dumps({"error": "too many connections, retry later"}).encode("ascii")
    try:
        request.settimeout(1)
        request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Retry-After: 30\r\nConnection: close\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode("ascii") + body)
    except OSError:
        pass


def make_server(host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A bound, not yet serving, HTTP server for the service configured by the environment (GUALTA_*)."""
    service = Service()
    handler = type("GualtaHandler", (Handler,), {"service": service})
    server = Server((host, port), handler)
    server.service = service
    return server


def page_missed(env, at: str, now: datetime) -> bool:
    """Whether today's build at `at` has passed and the night it builds has no page (the service was down then)."""
    if config.next_local_time(now, at).date() == now.date():         # today's build is still to come
        return False
    return service_env.ended_night(now, env) not in site.page_nights(store.store_from_env(env))


def schedule_pages(service: Service, at: str, stop: threading.Event) -> threading.Thread:
    """A daemon thread that builds the daily page once a day at `at` (local time of GUALTA_TIMEZONE, as
    `config.next_local_time` reads it on a change of summer time) — and at once when the service starts after today's
    build with no page for it (`page_missed`: down at `at`)."""
    def loop():
        try:
            if page_missed(service.env, at, datetime.now(service_env.timezone(service.env))):
                log.info("daily page missed at %s, built now: %s", at,
                         service.build_site({"source": "gualta.schedule"}))
        except Exception:
            log.exception("daily page missed at %s, and building it now failed", at)
        while True:
            wait = config.seconds_until(datetime.now(service_env.timezone(service.env)), at)
            if stop.wait(max(wait, 0)):
                return
            try:
                log.info("scheduled daily page: %s", service.build_site({"source": "gualta.schedule"}))
            except Exception:
                log.exception("scheduled daily page failed")
            stop.wait(1)

    thread = threading.Thread(target=loop, name="daily-page", daemon=True)
    thread.start()
    return thread


def check_settings(env, site_at: str | None = None) -> list[str]:
    """Validate the service's settings before serving (the daily page at `site_at`, HHMM); return warnings (raise
    ServiceConfigError on errors)."""
    warnings = []
    if not ingest.api_keys(env):
        warnings.append("no API keys (GUALTA_API_KEYS): every upload will get 401")
    service_env.timezone(env)
    ends = service_env.night_end(env)
    if site_at and site_at < ends:
        warnings.append(f"the daily page at {site_at} comes before the night's end ({ends}, GUALTA_NIGHT_END): it "
                        f"builds the night before last — set GUALTA_NIGHT_END to {site_at} or earlier if the cameras "
                        "stop by then")
    if not passes.observatories_from_env(env):
        warnings.append("no observatory coordinates: the daily page cannot show ISS passes")
    unreadable = telegram_post.unreadable_limits(env)
    if unreadable:
        raise service_env.ServiceConfigError(f"{', '.join(unreadable)}: not a whole number (0: no limit)")
    site_url = env.get("GUALTA_SITE_URL", "")
    try:
        config.url(site_url)                          # an absolute http(s) address, as links in posts need
    except ValueError:
        raise service_env.ServiceConfigError(f"GUALTA_SITE_URL={site_url[:60]!r}: give the pages' address as "
                                             "http://… or https://…") from None
    token = next((name for name in ("GUALTA_TELEGRAM_TOKEN", "GUALTA_TELEGRAM_TOKEN_PARAM") if env.get(name)), "")
    if token and not env.get("GUALTA_TELEGRAM_CHAT"):
        warnings.append(f"{token} is set but not GUALTA_TELEGRAM_CHAT: nothing is posted to Telegram")
    elif env.get("GUALTA_TELEGRAM_CHAT") and not token:
        warnings.append("GUALTA_TELEGRAM_CHAT is set but not GUALTA_TELEGRAM_TOKEN: nothing is posted to Telegram")
    return warnings


def configure(store_location: str | Path, observatories: dict | None = None) -> None:
    """Point this process's GUALTA_* settings at a store (folder or s3://) and the configured observatories."""
    text = str(store_location)
    os.environ["GUALTA_STORE"] = text if text.startswith("s3://") else str(Path(text).resolve())
    if observatories and not os.environ.get("GUALTA_OBSERVATORIES"):
        os.environ["GUALTA_OBSERVATORIES"] = json.dumps(observatories)


def make_store_folder() -> None:
    """Create the configured store's folder (an S3 store has none), and clear what writes cut short left in it;
    StoreError if it cannot be made."""
    location = os.environ["GUALTA_STORE"]
    if location.startswith("s3://"):
        return
    try:
        Path(location).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a file is there" if isinstance(exc, FileExistsError) else exc.strerror or exc
        raise store.StoreError(f"store folder {location} cannot be made: {reason}") from exc
    removed = store.LocalStore(location).remove_leftovers()
    if removed:
        log.info("store %s: removed %d temporary files left by writes a stop cut short", location, removed)


def build_page(store_location: str | Path, day: str | None = None, observatories: dict | None = None) -> dict:
    """Run the daily-page handler once (the `site` command): day YYYYMMDD, default the night that just ended."""
    configure(store_location, observatories)
    make_store_folder()
    event = {"source": "gualta.cli"} if day is None else {"source": "gualta.cli", "day": day}
    return load_handler("generateWebsite")(event, None)


def serve(host: str = "127.0.0.1", port: int = 8765, store_location: str | Path = "gualta_store",
          site_at: str | None = "09:00", observatories: dict | None = None) -> None:
    """Run the embedded service until interrupted (sets GUALTA_STORE and defaults in this process's env);
    service_env.ServiceConfigError for invalid GUALTA_* settings (guAlta.py says it, exit status 2)."""
    configure(store_location, observatories)
    warnings = check_settings(os.environ, config.hhmm(site_at) if site_at else None)
    try:
        make_store_folder()
    except store.StoreError as exc:
        sys.exit(f"guAlta serve: {exc}")
    try:
        server = make_server(host, port)
    except OSError as exc:
        sys.exit(f"guAlta serve: cannot listen on {host}:{port}: {exc.strerror or exc}")
    url = f"http://{host}:{server.server_port}"
    os.environ.setdefault("GUALTA_SITE_URL", url)
    stop = threading.Event()
    if site_at:
        schedule_pages(server.service, site_at, stop)
    for warning in warnings:
        print(f"warning: {warning}", flush=True)
    print(f"guAlta service on {url} — store {os.environ['GUALTA_STORE']}; daily page "
          f"{'at ' + site_at if site_at else 'on demand only'} (POST /site)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()


class ChildServer:
    """`python guAlta.py serve` in a child process (tests, benchmarks, demos); its output is kept in `lines`."""

    def __init__(self, store_location: str | Path, env: dict | None = None, host: str = "127.0.0.1",
                 timeout_s: float = 30.0):
        command = [sys.executable, str(LAMBDA_DIR.parent / "guAlta.py"), "serve", "--host", host, "--port", "0",
                   "--store", str(store_location), "--site-at", "off"]
        self.lines: deque[str] = deque(maxlen=500)
        self.process = subprocess.Popen(command, cwd=LAMBDA_DIR.parent, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.url = ""
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not ready.wait(timeout_s) or not self.url:
            self.stop()
            raise RuntimeError("guAlta serve did not start:\n" + "\n".join(self.lines))

    def _read(self, ready: threading.Event) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            match = re.search(r"guAlta service on (http://\S+)", line)
            if match and not self.url:
                self.url = match.group(1)
                ready.set()
        ready.set()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "ChildServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
