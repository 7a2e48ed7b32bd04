"""The store: one interface, a local-folder and an S3 backend (against moto's server) with the same keys."""
from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections import Counter

import pytest

from gualta import store
from helpers_service import BUCKET, moto_s3


@pytest.fixture(scope="module")
def moto():
    with moto_s3() as server:
        yield server


def no_hard_links(source, target, **kwargs):
    """os.link on a file system without hard links (FAT, exFAT: EPERM)."""
    raise PermissionError(errno.EPERM, "Operation not permitted", str(source), None, str(target))


@pytest.fixture(params=["local", "local-without-hard-links", "s3"])
def backend(request, tmp_path):
    """Each test runs on each backend; the S3 one gets a fresh prefix in the moto bucket."""
    if request.param == "local-without-hard-links":
        request.getfixturevalue("monkeypatch").setattr(store.os, "link", no_hard_links)
    if request.param.startswith("local"):
        return store.LocalStore(tmp_path / "store")
    endpoint, _ = request.getfixturevalue("moto")
    return store.open_store(f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}", endpoint)


def test_put_get_and_missing(backend):
    assert backend.get("detections/20260916/obs01_20260916231507.json") is None
    backend.put("detections/20260916/obs01_20260916231507.json", b'{"a": 1}')
    backend.put("index.html", b"<html>")
    assert backend.get("detections/20260916/obs01_20260916231507.json") == b'{"a": 1}'
    backend.put("index.html", b"<html>v2")
    assert backend.get("index.html") == b"<html>v2"


def test_delete_removes_a_key_and_a_missing_one_is_no_error(backend):
    backend.put("pages/late/20260905", b"")
    backend.delete("pages/late/20260905")
    backend.delete("pages/late/20260905")
    assert backend.get("pages/late/20260905") is None and backend.keys("pages/late/") == []


def test_create_only_once_keeps_first_content(backend):
    assert backend.create("imgs/20260916/obs01_1.jpeg", b"first") is True
    assert backend.create("imgs/20260916/obs01_1.jpeg", b"second") is False
    assert backend.get("imgs/20260916/obs01_1.jpeg") == b"first"


def test_concurrent_create_has_one_winner(backend):
    results, barrier = [], threading.Barrier(12)

    def attempt(i):
        barrier.wait()
        results.append((i, backend.create("detections/20260916/obs01_race.json", f"{i}".encode())))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, created in results if created]
    assert len(winners) == 1 and len(results) == 12
    assert backend.get("detections/20260916/obs01_race.json") == f"{winners[0]}".encode()


def test_many_records_read_together(backend):
    """A night's records read concurrently: each key with its own value, a missing one or one that is not JSON as
    None, as read one by one."""
    keys = [f"detections/20260916/obs{o:02d}_20260916{230000 + s:06d}.json" for o in range(1, 4) for s in range(20)]
    for i, key in enumerate(keys):
        store.write_json(backend, key, {"n": i})
    backend.put("detections/20260916/obs09_20260916230000.json", b"{not json")
    wanted = [*keys, "detections/20260916/obs09_20260916230000.json", "detections/20260916/obs09_missing.json"]
    got = store.read_json_many(backend, wanted)
    assert list(got) == wanted
    assert [got[key] for key in keys] == [{"n": i} for i in range(len(keys))] and list(got.values())[-2:] == [None] * 2
    assert store.read_json_many(backend, []) == {}


def test_a_failed_read_among_many_is_a_store_error():
    dead = store.S3Store(BUCKET, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(store.StoreError):
        store.read_json_many(dead, [f"detections/20260916/obs01_2026091623000{s}.json" for s in range(4)])


def test_keys_recursive_and_one_level(backend):
    for key in ("20260915.html", "20260916.html", "index.html", "imgs/20260916/a_1.jpeg",
                "detections/20260916/a_1.json", "detections/20260916/b_2.json", "detections/20260917/a_3.json"):
        backend.put(key, b"x")
    assert backend.keys("detections/20260916/") == ["detections/20260916/a_1.json", "detections/20260916/b_2.json"]
    assert backend.keys("", recursive=False) == ["20260915.html", "20260916.html", "index.html"]
    assert backend.keys("detections/") == ["detections/20260916/a_1.json", "detections/20260916/b_2.json",
                                           "detections/20260917/a_3.json"]
    assert backend.keys("nothing/") == []


def test_keys_with_a_prefix_inside_a_folder_are_the_same_on_every_backend(backend):
    """A prefix that ends inside a folder ("logs/N/obs01_": one observatory's logs) lists only the keys that start
    with it, locally as on S3: every key in the folder would mix other observatories' logs into one's own."""
    for key in ("logs/20260916/obs01_start.json", "logs/20260916/obs01_end.json", "logs/20260916/obs02_end.json",
                "logs/20260916/obs010_end.json", "logs/20260917/obs01_end.json"):
        backend.put(key, b"{}")
    wanted = ["logs/20260916/obs01_end.json", "logs/20260916/obs01_start.json"]
    assert backend.keys("logs/20260916/obs01_") == wanted
    assert backend.keys("logs/20260916/obs01_", recursive=False) == wanted
    assert backend.keys("logs/20260916/obs03_") == []


@pytest.mark.parametrize("key", ["../escape.json", "/etc/passwd", "a//b", ".hidden", "a/../b", "a/./b", "imgs/<x>.jpeg",
                                 "detections/2026/obs 1.json", "", "a\\b", "a/\x00b", "a/", "é.json"])
def test_unsafe_keys_refused_before_any_io(backend, key, tmp_path):
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError):
        backend.put(key, b"x")
    with pytest.raises(ValueError):
        backend.get(key)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_local_store_write_failures_are_store_errors(tmp_path):
    local = store.LocalStore(tmp_path)
    (tmp_path / "index.html").mkdir()                          # a folder where the page should go
    with pytest.raises(store.StoreError, match="cannot write index.html in"):
        local.put("index.html", b"<html>")
    (tmp_path / "imgs").write_text("a file where a folder should be")
    with pytest.raises(store.StoreError, match="cannot write imgs/20260916/obs01_1.jpeg"):
        local.create("imgs/20260916/obs01_1.jpeg", b"jpeg")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_a_local_read_refused_by_permissions_is_a_store_error_never_a_missing_key(tmp_path, monkeypatch):
    """A record the service's user may not read is no missing key: taken for one, a re-send would be stored over it
    and a page built without it. It is the store's failure (503, sent again later)."""
    local = store.LocalStore(tmp_path)
    local.put("detections/20260916/obs01_20260916231507.json", b"{}")

    def refused(path):                                 # chmod does nothing for root, who runs the tests
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(store.Path, "read_bytes", refused)
    with pytest.raises(store.StoreError, match="cannot read detections/20260916/obs01_20260916231507.json in .*"
                                              "Permission denied"):
        local.get("detections/20260916/obs01_20260916231507.json")


def test_a_local_key_below_a_file_is_missing_not_a_store_error(tmp_path):
    """A page asked for below a file ("index.html/x") read as a store failure (the server's 503, "retry later")
    rather than a missing key (404); so did a file asked for where a folder is."""
    local = store.LocalStore(tmp_path)
    local.put("a.json", b"{}")
    local.put("b/c.json", b"{}")
    assert local.get("a.json/b") is None and local.get("b") is None


class Body:
    """A raw HTTP body for botocore's AWSResponse."""

    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


CONFLICT = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code>'
            b"<Message>A conflicting conditional operation is currently in progress against this resource."
            b"</Message></Error>")


def answer_conflicts(client, count: int) -> list[int]:
    """S3's 409 ConditionalRequestConflict to the client's next `count` conditional writes (another write of the key
    in progress), sent back instead of the request; the list counts those left."""
    from botocore.awsrequest import AWSResponse

    left = [count]

    def conflict(request, **_):
        if request.headers.get("If-None-Match") == b"*" and left[0] > 0:
            left[0] -= 1
            return AWSResponse(request.url, 409, {"Content-Type": "application/xml"}, Body(CONFLICT))
        return None

    client.meta.events.register("before-send.s3.PutObject", conflict)
    return left


def test_s3_create_writes_again_after_a_conflict_and_never_takes_it_for_a_duplicate(moto, monkeypatch):
    """A 409 means another conditional write of the key is in progress and may fail: taken for "it exists", the
    detection would be answered `duplicate` and lost if the other write failed."""
    import boto3
    from botocore.config import Config

    endpoint, _ = moto
    monkeypatch.setattr(store, "CONFLICT_WAIT_S", 0.01)
    client = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
    s3 = store.S3Store(BUCKET, "conflicts", client=client)
    left = answer_conflicts(client, 2)
    assert s3.create("detections/20260916/obs01_1.json", b"first") is True and left == [0]
    assert s3.get("detections/20260916/obs01_1.json") == b"first"
    assert s3.create("detections/20260916/obs01_1.json", b"again") is False         # 412: it exists
    answer_conflicts(client, store.CONFLICT_TRIES)
    with pytest.raises(store.StoreError, match="ConditionalRequestConflict"):        # 503: the client sends it again
        s3.create("detections/20260916/obs01_2.json", b"busy")


def test_without_hard_links_a_claim_never_filled_loses_no_detection(tmp_path, monkeypatch):
    """The exclusive claim of a key (no hard links) is let go when its content cannot be put in, and an empty claim
    a stopped writer left is taken over after a while: a later create of the key stores it (not `duplicate`)."""
    monkeypatch.setattr(store.os, "link", no_hard_links)
    local, replace = store.LocalStore(tmp_path), store.os.replace

    def failing_replace(source, target):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store.os, "replace", failing_replace)
    with pytest.raises(store.StoreError, match="Input/output error"):
        local.create("detections/20260916/obs01_1.json", b"first")
    monkeypatch.setattr(store.os, "replace", replace)
    assert local.create("detections/20260916/obs01_1.json", b"second") is True
    assert local.get("detections/20260916/obs01_1.json") == b"second"

    claim = tmp_path / "detections" / "20260916" / "obs01_2.json"
    claim.write_bytes(b"")                                       # a writer stopped right after its claim
    assert local.create("detections/20260916/obs01_2.json", b"x") is False       # maybe filling it now
    os.utime(claim, (time.time() - store.STALE_CLAIM_S - 1,) * 2)
    assert local.create("detections/20260916/obs01_2.json", b"x") is True and claim.read_bytes() == b"x"
    os.utime(claim, (time.time() - store.STALE_CLAIM_S - 1,) * 2)            # a record stored over a minute ago
    assert local.create("detections/20260916/obs01_2.json", b"re-sent") is False and claim.read_bytes() == b"x"


def test_without_hard_links_a_post_claimed_a_minute_ago_stays_claimed(tmp_path, monkeypatch):
    """Post claims were empty files, which a store without hard links takes for a claim its writer never filled: a
    page build over a minute after another claimed the same failed post claimed it again and posted it twice. Claims
    and post marks hold the time they were made, and stay claimed."""
    from gualta import ingest

    monkeypatch.setattr(store.os, "link", no_hard_links)
    local = store.LocalStore(tmp_path)
    assert ingest.claim_post(local, "20260916", "obs01_20260916231507") is True
    ingest.mark_posted(local, "20260916", "obs01", "20260916231507")
    made = [tmp_path / store.claim_key("20260916", "obs01_20260916231507"),
            tmp_path / store.post_mark_key("20260916", "obs01", "20260916231507")]
    for path in made:
        assert path.read_bytes().endswith(b"Z")
        os.utime(path, (time.time() - store.STALE_CLAIM_S - 1,) * 2)
    assert ingest.claim_post(local, "20260916", "obs01_20260916231507") is False
    assert local.create(store.post_mark_key("20260916", "obs01", "20260916231507"), b"x") is False


def watch_disk_writes(monkeypatch) -> list[str]:
    """What reaches the disk, in order: each fsync (of a file or a folder), link and rename."""
    done, fsync, link, replace = [], store.os.fsync, store.os.link, store.os.replace

    def fsync_of(handle):
        done.append("fsync folder" if stat.S_ISDIR(os.fstat(handle).st_mode) else "fsync file")
        fsync(handle)
    monkeypatch.setattr(store.os, "fsync", fsync_of)
    monkeypatch.setattr(store.os, "link", lambda *args, **kw: (done.append("link"), link(*args, **kw))[1])
    monkeypatch.setattr(store.os, "replace", lambda *args, **kw: (done.append("rename"), replace(*args, **kw))[1])
    return done


def test_local_writes_reach_the_disk_before_they_are_answered(tmp_path, monkeypatch):
    """The file was never flushed: on ext4 a power cut within half a minute of a write left a stored detection
    empty, its client answered 200. Now its content is flushed before its name is made, and its folder after."""
    local = store.LocalStore(tmp_path)
    local.put("index.html", b"<p>")
    done = watch_disk_writes(monkeypatch)
    local.put("index.html", b"<p>new")
    assert done == ["fsync file", "rename", "fsync folder"]
    done.clear()
    assert local.create("index.json", b"{}") is True
    assert done == ["fsync file", "link", "fsync folder"]
    done.clear()
    local.put("detections/20260916/obs01_1.json", b"{}")               # a new night's folder: its name too
    assert done == ["fsync folder", "fsync folder", "fsync file", "rename", "fsync folder"]


@pytest.mark.parametrize("failure, said", [
    (errno.EINVAL, ""),                                                     # a file system that cannot: quietly
    (errno.EIO, "cannot flush it to the disk: Input/output error")])        # the write is made: logged, no 503
def test_a_folder_flush_that_fails_is_passed_over(tmp_path, monkeypatch, caplog, failure, said):
    """A folder flush failing after the write is made was a StoreError, the client's 503, and its re-send of what
    was stored a duplicate."""
    fsync = store.os.fsync

    def folders_fail(handle):
        if stat.S_ISDIR(os.fstat(handle).st_mode):
            raise OSError(failure, os.strerror(failure))
        fsync(handle)
    monkeypatch.setattr(store.os, "fsync", folders_fail)
    local = store.LocalStore(tmp_path)
    local.put("a/b.json", b"1")
    assert local.create("a/c.json", b"2") is True and local.get("a/c.json") == b"2"
    assert (said in caplog.text) and ("cannot flush" in caplog.text) == bool(said)


def test_local_store_leaves_no_temp_files(tmp_path):
    local = store.LocalStore(tmp_path)
    local.put("a/b.json", b"1")
    local.create("a/b.json", b"2")
    local.create("a/c.json", b"3")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json", "c.json"]


def test_local_keys_leave_out_hidden_files_and_the_temp_files_of_stopped_writes(tmp_path, monkeypatch):
    """A write stopped between its temp file and its rename (a kill) left the temp file; listed as a key, a page
    build would read it as a detection. Temp files are dot-named, never listed, and removed once stale."""
    local = store.LocalStore(tmp_path)
    local.put("detections/20260916/obs01_1.json", b"{}")
    (tmp_path / "detections/20260916/.hidden").mkdir()
    (tmp_path / "detections/20260916/.hidden/obs01_2.json").write_bytes(b"{}")

    def killed(source, target):
        raise KeyboardInterrupt
    monkeypatch.setattr(store.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        local.put("detections/20260916/obs01_3.json", b"{}")
    monkeypatch.undo()
    [left] = [p for p in (tmp_path / "detections/20260916").iterdir() if p.is_file() and p.name != "obs01_1.json"]
    assert left.name.startswith(".tmp-")
    assert local.keys("detections/") == local.keys("detections/20260916/") == ["detections/20260916/obs01_1.json"]
    assert local.remove_leftovers(older_than_s=-1) == 1 and not left.exists()


def test_s3_objects_carry_content_types(moto):
    endpoint, client = moto
    s3 = store.open_store(f"s3://{BUCKET}/types", endpoint)
    s3.put("20260916.html", b"<p>")
    s3.create("imgs/20260916/obs01_20260916231507.jpeg", b"\xff\xd8")
    s3.put("detections/20260916/obs01_20260916231507.json", b"{}")
    kinds = {key: client.head_object(Bucket=BUCKET, Key=f"types/{key}")["ContentType"]
             for key in ("20260916.html", "imgs/20260916/obs01_20260916231507.jpeg",
                         "detections/20260916/obs01_20260916231507.json")}
    assert kinds == {"20260916.html": "text/html; charset=utf-8",
                     "imgs/20260916/obs01_20260916231507.jpeg": "image/jpeg",
                     "detections/20260916/obs01_20260916231507.json": "application/json"}


def test_s3_unreachable_is_a_store_error():
    dead = store.S3Store(BUCKET, endpoint_url="http://127.0.0.1:9")      # discard port: connection refused
    with pytest.raises(store.StoreError):
        dead.put("index.html", b"x")
    with pytest.raises(store.StoreError):
        dead.keys("detections/")


def test_s3_refusals_are_store_errors_never_a_missing_key(moto):
    """S3 refusing a request (here NoSuchBucket; AccessDenied, SlowDown alike) read as "it exists" or "it is
    missing" would have the ingest answer `duplicate` to a detection never stored (the client drops it) and the
    pages show nothing: each is a StoreError (the service's 503)."""
    endpoint, _ = moto
    gone = store.open_store("s3://no-such-bucket/prod", endpoint)
    with pytest.raises(store.StoreError, match="NoSuchBucket"):
        gone.create("detections/20260916/obs01_20260916231507.json", b"{}")
    with pytest.raises(store.StoreError, match="NoSuchBucket"):
        gone.get("index.html")
    with pytest.raises(store.StoreError):
        gone.keys("detections/")


def test_a_published_files_name_is_taken_only_whole():
    """Metadata naming a file that only starts like a published model's ("guAlta_v1.onnx.x") had the clients and
    the server fetch a file no export makes; a path or a non-text name is refused too."""
    assert store.published_file({"file": "guAlta_v1.onnx"}) == "guAlta_v1.onnx"
    for named in ("guAlta_v1.onnx.x", "x_guAlta_v1.onnx", "models/guAlta_v1.onnx", 1):
        assert store.published_file({"file": named}) is None
    assert store.published_file(["guAlta_v1.onnx"]) is None


def test_open_store_parses_locations(tmp_path):
    s3 = store.open_store("s3://my-bucket/some/prefix", "http://127.0.0.1:1")
    assert isinstance(s3, store.S3Store) and (s3.bucket, s3.prefix) == ("my-bucket", "some/prefix/")
    assert isinstance(store.open_store(tmp_path), store.LocalStore)
    with pytest.raises(store.StoreError):
        store.store_from_env({})


def test_check_store_folder_passes_a_url_and_refuses_a_missing_folder(tmp_path):
    """`guAlta.py site --store s3://…` was refused as a missing folder had the URL been taken for a path."""
    assert store.check_store_folder("s3://bucket/prefix") is None
    assert store.check_store_folder(tmp_path) is None
    with pytest.raises(store.StoreError, match="no store folder"):
        store.check_store_folder(tmp_path / "typo")


class CountingLocalStore(store.LocalStore):
    """A local store that counts its listings, by (prefix, recursive)."""

    def __init__(self, root):
        super().__init__(root)
        self.listed = Counter()

    def keys(self, prefix: str = "", recursive: bool = True) -> list[str]:
        self.listed[prefix, recursive] += 1
        return super().keys(prefix, recursive)


FOLDER, RECORD = "detections/20260916/", "pages/20260916.json"


@pytest.mark.parametrize("write", ["put", "create"])
def test_read_once_lists_a_night_again_after_a_write_there(tmp_path, write):
    """A build that wrote in a night's folder saw it as first listed: what it wrote (and what arrived meanwhile)
    was missing from its checks."""
    inner = store.LocalStore(tmp_path)
    inner.put(f"{FOLDER}obs01_1.json", b"{}")
    once = store.ReadOnce(inner)
    assert once.keys(FOLDER) == [f"{FOLDER}obs01_1.json"]
    getattr(once, write)(f"{FOLDER}obs01_2.json", b"{}")
    assert once.keys(FOLDER) == [f"{FOLDER}obs01_1.json", f"{FOLDER}obs01_2.json"]
    once.delete(f"{FOLDER}obs01_1.json")
    assert once.keys(FOLDER) == [f"{FOLDER}obs01_2.json"]


@pytest.mark.parametrize("key", [RECORD, "logs/20260916/obs01_end.json"])
def test_read_once_reads_a_record_again_after_writing_it(tmp_path, key):
    """A build read a page's record or a night's log it had just rewritten or removed as it was before."""
    once = store.ReadOnce(store.LocalStore(tmp_path))
    assert once.get(key) is None
    once.put(key, b"1")
    assert once.get(key) == b"1"
    once.delete(key)
    assert once.get(key) is None
    assert once.create(key, b"2") and once.get(key) == b"2"


def test_read_once_lists_the_top_level_again_only_when_a_page_is_added_or_removed(tmp_path):
    """The pages a build wrote were missing from its own list of nights with a page (or a removed one still there);
    rewriting a page that was listed already needs no new listing (a request on S3)."""
    inner = CountingLocalStore(tmp_path)
    inner.put("20260915.html", b"<p>")
    once = store.ReadOnce(inner)
    assert once.keys("", recursive=False) == ["20260915.html"]
    once.put("20260915.html", b"<p>again")
    assert once.keys("", recursive=False) == ["20260915.html"] and inner.listed["", False] == 1
    once.put("20260916.html", b"<p>")
    assert once.keys("", recursive=False) == ["20260915.html", "20260916.html"] and inner.listed["", False] == 2
    once.create("20260917.html", b"<p>")
    assert once.keys("", recursive=False) == ["20260915.html", "20260916.html", "20260917.html"]
    once.delete("20260915.html")
    assert once.keys("", recursive=False) == ["20260916.html", "20260917.html"] and inner.listed["", False] == 4


def test_read_once_reads_a_detection_record_as_it_is_now(tmp_path):
    """Only pages' records and nights' logs are read once: a detection record written meanwhile (its post made by a
    request while the build ran) was shown as first read."""
    inner = store.LocalStore(tmp_path)
    once = store.ReadOnce(inner)
    assert once.get(f"{FOLDER}obs01_1.json") is None
    inner.put(f"{FOLDER}obs01_1.json", b'{"telegram_status": "sent"}')
    assert once.get(f"{FOLDER}obs01_1.json") == b'{"telegram_status": "sent"}'


def test_read_once_listing_is_a_copy(tmp_path):
    """A caller that changed a list it was given changed what the rest of the build saw of that folder."""
    inner = store.LocalStore(tmp_path)
    inner.put(f"{FOLDER}obs01_1.json", b"{}")
    inner.put("20260916.html", b"<p>")
    once = store.ReadOnce(inner)
    for prefix, recursive in [(FOLDER, True), ("", False)]:
        once.keys(prefix, recursive).clear()
        assert once.keys(prefix, recursive) == inner.keys(prefix, recursive) != []


def test_read_once_passes_other_listings_through(tmp_path):
    """Only a night's whole folder and the top level's files are listed once; a night's one level is read now, never
    answered with (or taken for) the whole folder's listing."""
    inner = CountingLocalStore(tmp_path)
    inner.put(f"{FOLDER}obs01_1.json", b"{}")
    inner.put(f"{FOLDER}more/obs01_2.json", b"{}")
    once = store.ReadOnce(inner)
    assert once.keys(FOLDER, recursive=False) == [f"{FOLDER}obs01_1.json"]
    assert once.keys(FOLDER) == [f"{FOLDER}more/obs01_2.json", f"{FOLDER}obs01_1.json"]
    assert once.keys(FOLDER, recursive=False) == [f"{FOLDER}obs01_1.json"]
    assert inner.listed[FOLDER, False] == 2 and inner.listed[FOLDER, True] == 1
    once.keys("detections/")
    once.keys("detections/")
    assert inner.listed["detections/", True] == 2
