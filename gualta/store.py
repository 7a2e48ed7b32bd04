"""The central store: an S3 bucket or a local folder holding the same keys.

    detections/YYYYMMDD/{obs_id}_{id}.json   detection record (payload without the image, plus service fields)
    imgs/YYYYMMDD/{obs_id}_{id}.jpeg         its 448×224 image (original | processed)
    logs/YYYYMMDD/{obs_id}_{start|end}.json  the night's latest start/end log per observatory
    logs/YYYYMMDD/{obs_id}_limit.json        its Telegram posts stopped for the night (the one message said so)
    telegram/YYYYMMDD/{obs_id}/{id}          a detection posted (counted for the night's limit)
    telegram/claims/YYYYMMDD/{name}          a post claimed by one service process (no other makes it too), a
                                             detection's night (`.night`: the first send's, under its id's evening)
                                             or its repair (`.repair-YYYYMMDD`: one request a day replaces it)
    telegram/unsent/YYYYMMDD                 a night one of whose posts failed (the scheduled builds post it again)
    models/guAlta_v{N}.onnx                  a published model version, never replaced (gualta.export writes them)
    models/guAlta_latest_version.*           a copy of the newest one (.onnx) and its metadata (.json)
    YYYYMMDD.html, index.html                daily pages (index = the latest night)
    pages/YYYYMMDD.json                      what a night's page was made from, its links, counts and posts shown
                                             not made yet or failed
    pages/late/YYYYMMDD                      a night sent a report, or a failed post of it made, once a later night
                                             had ended (the scheduled build remakes its page)
    archive.html, pages/archive.json         every night with a page, by month, and its counts
    404.html                                 what the site answers for a page not made yet
    pages/tle/YYYYMMDD.tle                   the ISS TLE of a night's passes (its later builds show the same)

A location is a folder path or ``s3://bucket[/prefix]``. Keys are checked before any I/O: segments of
``A-Z a-z 0-9 . _ -`` that do not start with a dot, so no key can leave the store.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import mimetypes
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

READ_WORKERS = 8        # concurrent reads of many small objects (one S3 request each; boto3's pool holds 10)
KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
ARCHIVE_PAGE, ARCHIVE_COUNTS = "archive.html", "pages/archive.json"
MISSING_PAGE = "404.html"                # what the site answers for a page not made yet (S3 error document)
MODEL_PREFIX = "models/guAlta_latest_version"
MODEL_META = f"{MODEL_PREFIX}.json"                                   # what clients read first
MODEL_FILE = re.compile(r"guAlta_(?:latest_version|v[0-9]{1,9})\.(?:onnx|pkl)")   # a published file's name
CONTENT_TYPES = {".json": "application/json", ".jpeg": "image/jpeg", ".jpg": "image/jpeg",
                 ".html": "text/html; charset=utf-8", ".onnx": "application/octet-stream",
                 ".pkl": "application/octet-stream"}


class StoreError(RuntimeError):
    """The store could not be reached or refused an operation (the service's fault, not the client's)."""


def check_key(key: str) -> str:
    """Return key if it is a safe relative store key, else raise ValueError."""
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise ValueError(f"unsafe store key: {key!r}")
    return key


def content_type(key: str) -> str:
    """MIME type used when serving or uploading a key."""
    suffix = Path(key).suffix.lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"


def published_file(meta) -> str | None:
    """The file name a published model's metadata gives, if it is a published file's name (never a path)."""
    named = meta.get("file") if isinstance(meta, dict) else None
    return named if isinstance(named, str) and MODEL_FILE.fullmatch(named) else None


def detection_key(night: str, obs_id: str, frame_id: str) -> str:
    return f"detections/{night}/{obs_id}_{frame_id}.json"


def image_key(night: str, obs_id: str, frame_id: str) -> str:
    return f"imgs/{night}/{obs_id}_{frame_id}.jpeg"


def log_key(night: str, obs_id: str, kind: str) -> str:
    return f"logs/{night}/{obs_id}_{kind}.json"


def page_key(night: str) -> str:
    return f"{night}.html"


def page_inputs_key(night: str) -> str:
    """What a night's page was made from (the daily page's bookkeeping)."""
    return f"pages/{night}.json"


def night_tle_key(night: str) -> str:
    """The ISS TLE a night's passes were computed from, kept for its later builds."""
    return f"pages/tle/{night}.tle"


def limit_notice_key(night: str, obs_id: str) -> str:
    """The mark of the one message that says an observatory's Telegram posts stopped for the night (a log key no
    log kind has: read_logs passes it by)."""
    return f"logs/{night}/{obs_id}_limit.json"


def post_mark_key(night: str, obs_id: str, frame_id: str) -> str:
    """The mark of a detection posted to Telegram, counted by ingest.posts_full (frame_id '': the folder's prefix)."""
    return f"telegram/{night}/{obs_id}/{frame_id}"


def claim_key(night: str, name: str) -> str:
    """A create-only claim on one post (`ingest.claim_post`): of two service processes about to make the same post at
    once, only the one that created it goes on; the same for a detection's night (`ingest.claimed_night`)."""
    return f"telegram/claims/{night}/{name}"


def claim_content() -> bytes:
    """What a claim or mark holds: the UTC time it was made. Never empty: where the file system has no hard links an
    empty file is a claim its writer never filled, taken over after STALE_CLAIM_S (`LocalStore.create`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()


def late_key(night: str) -> str:
    """The mark the ingest leaves on a night that received a detection or log, or whose failed post a build made,
    once a later night had ended (`ingest.mark_if_late`: its page, if any, is out of date and may be older than the
    scheduled build's refresh window); the scheduled build takes it off."""
    return f"pages/late/{night}"


def unsent_key(night: str) -> str:
    """The mark left on a night one of whose Telegram posts failed (`ingest.mark_unsent`): the scheduled builds post
    it again until it is sent or too old, not only the morning after the night (the channel down two mornings)."""
    return f"telegram/unsent/{night}"


def unsent_nights(target: "Store") -> list[str]:
    """The nights marked unsent (`unsent_key`)."""
    return sorted(key.rsplit("/", 1)[1] for key in target.keys("telegram/unsent/"))


def late_nights(target: "Store") -> list[str]:
    """The nights marked late (`late_key`)."""
    return sorted(key.rsplit("/", 1)[1] for key in target.keys("pages/late/"))


class Store(Protocol):
    """What the handlers need from a store."""

    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, data: bytes) -> None: ...
    def create(self, key: str, data: bytes) -> bool: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str = "", recursive: bool = True) -> list[str]: ...


CONFLICT_TRIES, CONFLICT_WAIT_S = 4, 0.1   # S3's 409 to racing conditional writes: tries, first wait (doubling)
STALE_CLAIM_S = 60            # an empty file this old is a claim its writer never filled (LocalStore.create)
NO_FOLDER_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF}   # fsync of a folder not supported


def write_synced(path: Path, data: bytes) -> None:
    """Write a new file and flush it to the disk: a power cut after it is renamed or linked keeps its content."""
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries to the disk (a name just made survives a power cut); quietly nothing where the file
    system cannot (Windows, some network shares). The write it follows is made: another failure is logged, not
    raised (a 503 would have the client send again what is stored)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError as exc:
        if exc.errno not in NO_FOLDER_SYNC:
            log.warning("store folder %s: cannot flush it to the disk: %s", folder, exc.strerror or exc)
    finally:
        os.close(handle)


class LocalStore:
    """A folder on disk. Writes are atomic (temp file + rename/link), so readers never see half a file, and durable
    (the file, then its folder, flushed to the disk before a write returns), so a power cut loses no write answered."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {key} in {self.root}: {exc.strerror or exc}") from exc

    def _temp(self, target: Path, data: bytes) -> Path:
        temp = target.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            self._make_folder(target.parent)
            write_synced(temp, data)
        except OSError as exc:              # a full disk, no permission, a file where a folder should be
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise self._error(target.relative_to(self.root).as_posix(), exc) from exc
        return temp

    def _make_folder(self, folder: Path) -> None:
        """Create folder (and those above it) if missing, their new names flushed to the disk."""
        if folder.is_dir():
            return
        folder.mkdir(parents=True, exist_ok=True)
        for above in folder.parents:
            sync_folder(above)
            if above == self.root or not above.is_relative_to(self.root):
                return

    def put(self, key: str, data: bytes) -> None:
        target = self.path(key)
        temp = self._temp(target, data)
        try:
            os.replace(temp, target)
            sync_folder(target.parent)
        except OSError as exc:              # a folder where the file should be
            temp.unlink(missing_ok=True)
            raise self._error(key, exc) from exc

    def delete(self, key: str) -> None:
        """Remove key (nothing if it is not there)."""
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._error(key, exc, "remove") from exc

    def create(self, key: str, data: bytes) -> bool:
        """Write key only if it does not exist yet; True if this call created it. The complete file appears at once
        (a hard link to it); where the file system has no hard links (FAT, exFAT, some network shares) the name is
        claimed exclusively first and filled in the moment after — so `data` must not be empty there (an empty file
        over STALE_CLAIM_S old is taken over: `claim_content`)."""
        target = self.path(key)
        temp = self._temp(target, data)
        try:
            self._create_from(temp, target)
            sync_folder(target.parent)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise self._error(key, exc) from exc
        finally:
            temp.unlink(missing_ok=True)

    def _create_from(self, temp: Path, target: Path) -> None:
        """temp's content at target unless target exists (FileExistsError): a hard link, else the claimed name
        filled in (let go again if it cannot be: a later write of the key may create it)."""
        try:
            os.link(temp, target)
            return
        except FileExistsError:
            raise
        except OSError:                 # no hard links on this file system
            pass
        self._claim(target)
        try:
            os.replace(temp, target)
        except OSError:
            target.unlink(missing_ok=True)
            raise

    @staticmethod
    def _claim(target: Path) -> None:
        """Create target empty, exclusively (FileExistsError if it exists); an empty file left by a writer that
        stopped between its claim and its content (over STALE_CLAIM_S old) is taken over."""
        try:
            target.open("xb").close()
        except FileExistsError:
            stat = target.stat()
            if stat.st_size or time.time() - stat.st_mtime < STALE_CLAIM_S:
                raise
            target.unlink(missing_ok=True)
            target.open("xb").close()

    def _error(self, key: str, exc: OSError, doing: str = "write") -> StoreError:
        return StoreError(f"cannot {doing} {key} in {self.root}: {exc.strerror or exc}")

    def remove_leftovers(self, older_than_s: float = STALE_CLAIM_S) -> int:
        """Delete the temporary files of writes a kill or a power cut stopped (.tmp-*, never listed as keys), those
        over older_than_s old (a write under way takes a moment); return how many went."""
        removed = 0
        for temp in self.root.rglob(".tmp-*"):
            with contextlib.suppress(OSError):          # gone meanwhile: nothing to do
                if temp.is_file() and time.time() - temp.stat().st_mtime > older_than_s:
                    temp.unlink()
                    removed += 1
        return removed

    def keys(self, prefix: str = "", recursive: bool = True) -> list[str]:
        """Keys starting with prefix (a folder prefix ends with '/'); with recursive=False only that level's files."""
        folder = self.root / prefix.rpartition("/")[0] if prefix else self.root
        if not folder.is_dir():
            return []
        walk = os.walk(folder) if recursive else [next(os.walk(folder))]
        found = []
        for directory, dirs, files in walk:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            base = Path(directory).relative_to(self.root).as_posix()
            for name in files:
                key = name if base == "." else f"{base}/{name}"
                if not name.startswith(".") and key.startswith(prefix):
                    found.append(key)
        return sorted(found)


class S3Store:
    """An S3 bucket (optionally under a prefix), via boto3."""

    def __init__(self, bucket: str, prefix: str = "", client=None, endpoint_url: str | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or s3_client(endpoint_url)

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self.prefix}')"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, method: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "PreconditionFailed", "ConditionalRequestConflict"):
                raise
            raise StoreError(f"S3 {method} failed: {code}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 {method} failed: {type(exc).__name__}") from exc

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError
        try:
            return self._call("get_object", Key=self._key(key))["Body"].read()
        except ClientError:
            return None

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", Key=self._key(key), Body=data, ContentType=content_type(key))

    def delete(self, key: str) -> None:
        """Remove key (S3 answers a missing key as deleted)."""
        self._call("delete_object", Key=self._key(key))

    def create(self, key: str, data: bytes) -> bool:
        """Conditional write (If-None-Match: *); True if this call created the object. S3 answers 409 to a write
        racing another one that has not finished: written again (the other may yet fail), up to CONFLICT_TRIES."""
        from botocore.exceptions import ClientError
        for attempt in range(CONFLICT_TRIES):
            try:
                self._call("put_object", Key=self._key(key), Body=data, ContentType=content_type(key),
                           IfNoneMatch="*")
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalRequestConflict":
                    return False            # 412: it exists
                time.sleep(CONFLICT_WAIT_S * 2 ** attempt)
        raise StoreError(f"S3 put_object failed: ConditionalRequestConflict {CONFLICT_TRIES} times")

    def keys(self, prefix: str = "", recursive: bool = True) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError
        options = {} if recursive else {"Delimiter": "/"}
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, **options):
                found.extend(item["Key"][len(self.prefix):] for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"S3 list failed: {type(exc).__name__}") from exc
        return sorted(found)


NIGHT_FOLDER = re.compile(r"(?:detections|logs)/[0-9]{8}/")     # what ReadOnce lists once (and the top level's files)
PAGE_RECORD = re.compile(r"pages/[0-9]{8}\.json")                  # what ReadOnce reads once: a page's record, ...
NIGHT_LOG = re.compile(r"logs/[0-9]{8}/[^/]+\.json")                # ... and a night's log


class ReadOnce:
    """A store as one page build sees it (`site.handle`): each night's folder (`NIGHT_FOLDER`) and the top level's
    files (the pages, `site.page_nights`) listed once, each page's record and night's log (`PAGE_RECORD`,
    `NIGHT_LOG`) read once — on S3 every call is a request — until the build writes there itself (`forget`);
    anything else passed through. Made anew for each build: the next one sees what was stored since."""

    def __init__(self, inner: Store):
        self.inner, self.listed, self.read = inner, {}, {}

    def get(self, key: str) -> bytes | None:
        if not (PAGE_RECORD.fullmatch(key) or NIGHT_LOG.fullmatch(key)):
            return self.inner.get(key)
        if key not in self.read:
            self.read[key] = self.inner.get(key)
        return self.read[key]

    def keys(self, prefix: str = "", recursive: bool = True) -> list[str]:
        if not (recursive and NIGHT_FOLDER.fullmatch(prefix) or not recursive and prefix == ""):
            return self.inner.keys(prefix, recursive)
        if prefix not in self.listed:
            self.listed[prefix] = self.inner.keys(prefix, recursive)
        return list(self.listed[prefix])

    def put(self, key: str, data: bytes) -> None:
        self.forget(key)
        self.inner.put(key, data)

    def create(self, key: str, data: bytes) -> bool:
        self.forget(key)
        return self.inner.create(key, data)

    def delete(self, key: str) -> None:
        self.forget(key, removed=True)
        self.inner.delete(key)

    def forget(self, key: str, removed: bool = False) -> None:
        """Drop what was read of key (written by the build: read again if needed) and the listing of the folder
        holding it — a night's on any write there (listed again, it shows what arrived meanwhile:
        `ingest.name_arrivals`), the top level's only where the write adds a key or `removed` takes one away (each
        build rewrites its pages)."""
        self.read.pop(key, None)
        if "/" in key:
            self.listed.pop(key.rpartition("/")[0] + "/", None)
        elif "" in self.listed and (key in self.listed[""]) == removed:
            del self.listed[""]


def read_now(target: Store) -> Store:
    """The store as it is now: what a `ReadOnce` reads through, else target itself."""
    return target.inner if isinstance(target, ReadOnce) else target


@lru_cache(maxsize=8)
def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client; with endpoint_url (moto, MinIO) it uses path-style addressing."""
    import boto3
    from botocore.config import Config

    if not endpoint_url:
        return boto3.client("s3")
    return boto3.client("s3", endpoint_url=endpoint_url, config=Config(s3={"addressing_style": "path"}))


def open_store(location: str | Path, endpoint_url: str | None = None) -> Store:
    """A LocalStore for a folder path, an S3Store for ``s3://bucket[/prefix]``."""
    text = str(location)
    if text.startswith("s3://"):
        bucket, _, prefix = text[5:].partition("/")
        return S3Store(bucket, prefix, endpoint_url=endpoint_url)
    return LocalStore(text)


def check_store_folder(location: str | Path) -> None:
    """StoreError if `location` names a local folder that is not there (`guAlta.py site`: a typo would build empty
    pages in a new folder); a URL (s3://…) passes."""
    if "://" not in str(location) and not Path(location).exists():
        raise StoreError(f"no store folder {location} (the service makes it when it starts: `guAlta.py serve`)")


def store_from_env(env) -> Store:
    """The store named by GUALTA_STORE (folder or s3://…), with GUALTA_S3_ENDPOINT for a non-AWS endpoint."""
    location = env.get("GUALTA_STORE")
    if not location:
        raise StoreError("GUALTA_STORE is not set")
    return open_store(location, env.get("GUALTA_S3_ENDPOINT") or None)


def write_json(store: Store, key: str, record: dict, create: bool = False) -> bool:
    """Store a JSON record; with create=True only if the key is new (returns whether it was written)."""
    data = json.dumps(record, ensure_ascii=True, indent=1, sort_keys=True).encode("ascii")
    if create:
        return store.create(key, data)
    store.put(key, data)
    return True


def read_json(store: Store, key: str):
    """A stored JSON value, or None if the key is missing or does not hold valid JSON."""
    return parse_json(store.get(key))


def parse_json(data: bytes | None):
    """JSON bytes as a value; None for no bytes or bytes that are not valid JSON."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def get_many(store: Store, keys: list[str], workers: int = READ_WORKERS) -> dict[str, bytes | None]:
    """{key: store.get(key)} for many keys, read concurrently (a night's records on S3 are a request each); a
    StoreError of any read is raised."""
    if len(keys) < 2:
        return {key: store.get(key) for key in keys}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(keys, pool.map(store.get, keys)))


def read_json_many(store: Store, keys: list[str]) -> dict:
    """{key: read_json(store, key)} for many keys, read concurrently (`get_many`)."""
    return {key: parse_json(data) for key, data in get_many(store, keys).items()}
