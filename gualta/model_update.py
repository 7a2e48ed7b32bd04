"""The client's model file: opened (downloaded from the central service when missing) and kept up to date with the
service's latest publication (`refreshed_model`, README "Model updates"). A publication is downloaded beside the file
(`gualta.report.download_model`: size and sha256 checked), loaded and tried, and only then moved into place, so a file
this client cannot load never takes the place of one."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from gualta.client_errors import ClientError
from gualta.config import Settings
from gualta.model import load_model, score_a_blank_batch, scoring_error
from gualta.payload import MODEL
from gualta.preprocess import TRAIN_SIZE
from gualta.report import (ModelDownloadError, NoModelPublished, download_model, file_sha256, installed_mode,
                           latest_model_info, metadata_path)
from gualta.scores import lock_exclusive

log = logging.getLogger(__name__)
INSTALL_RISK = "two runs may install a model at once"      # what an install lock that cannot be taken risks
INSTALL_WAIT_S = 600              # the longest a run whose model is missing waits for another run installing it


class ModelFileLost(ClientError):
    """The model file was deleted or replaced while the model in use had let its session go for a refresh: it
    cannot score on."""


def cpu_threads(threads: int) -> int:
    return threads or os.cpu_count() or 1


def open_model(settings: Settings, path: str | Path | None = None):
    """Load the model named by `path` (it must exist: a typo is never downloaded over), else the configured
    settings.model, downloading the latest from the central service if that file is missing. Raises ClientError
    with the reason."""
    if path and not Path(path).is_file():
        raise ClientError(f"model file not found: {path}")
    configured = not path
    path = Path(path or settings.model)
    if not path.is_file():
        return downloaded_model(settings, path)
    try:
        model = load_model(path, threads=cpu_threads(settings.threads), batch_size=settings.batch_size)
    except Exception as exc:        # a corrupt or foreign file: say which and why, don't crash with a traceback
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ModuleNotFoundError) and path.suffix.lower() == ".pkl":     # the client's base install
            reason = f'{reason} (a .pkl model needs the training install, pip install -e ".[train]": or use its ' \
                     f'ONNX export)'
        if configured:
            reason = f"{reason.rstrip('. ')}; {replacing_advice(settings)}"
        raise ClientError(f"cannot load model {path}: {reason}") from None
    if not model.info.client_ready:
        raise ClientError(f"model {path} learnt from {model.info.image_size} px images (a thesis version v1–v3); "
                          f"the client scores the v4 difference ({TRAIN_SIZE} px): use a model trained on v4")
    try:
        score_a_blank_batch(model)
    except Exception as exc:        # loads, but cannot score what the client feeds it (another input size)
        raise ClientError(f"model {path} cannot score a {TRAIN_SIZE} px difference image: {scoring_error(exc)}") \
            from None
    model.file_stamp = file_stamp(path)
    return model


def downloaded_model(settings: Settings, path: Path):
    """The service's latest publication installed at the missing model file `path` (ClientError if it cannot be:
    also when it is one noted before as unusable here, not downloaded again — a service restarting the client every
    30 s would fetch it each time)."""
    log.info("model %s not found: downloading the latest from %s", path, settings.model_source or "(no URL)")
    try:
        meta = latest_model_info(settings.model_source, timeout=10)
    except ModelDownloadError as exc:
        raise ClientError(f"model {path} is missing and could not be downloaded: {exc}") from None
    if rejected_before(path, meta):
        raise ClientError(f"model {path} is missing, and the published version {meta.get('version')} could not be "
                          f"used here ({rejected_path(path)}): put a model file there, or publish one that loads")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with install_lock(path) as lock:        # two runs starting together: one downloads, the other waits for it
            wait_for_lock(lock, path)
            if path.is_file():
                return open_model(settings, path)
            if rejected_before(path, meta):     # the run waited for could not use it
                raise ClientError(f"model {path} is missing, and the published version {meta.get('version')} "
                                  f"could not be used here ({rejected_path(path)})")
            return installed_model(settings, path, meta)
    except ModelDownloadError as exc:
        raise ClientError(f"model {path} is missing and could not be downloaded: {exc}") from None
    except OSError as exc:                      # its folder cannot be made, its lock not opened
        raise ClientError(f"model {path} is missing and could not be downloaded: cannot write {path.parent}: "
                          f"{exc.strerror or exc}") from None


def replacing_advice(settings: Settings) -> str:
    """What to do about a configured model file that does not load (a copy cut short, a damaged disk)."""
    if settings.model_source:
        return f"replace it with a working model file, or delete it to download the latest from " \
               f"{settings.model_source}"
    return "replace it with a working model file (the repository's models/guAlta.onnx is the shipped one)"


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a file from the one that replaces it (inode, size, modification time), or None if it is gone."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def refreshed_model(settings: Settings, model, in_use: bool = False):
    """`model`, or the service's latest publication, installed in place of the configured model file once it has
    been downloaded beside it and loaded (see `takes_update`). An unreachable service, nothing published, a failed
    download or a model this client cannot load keeps `model` and its file (logged); a publication that could not
    be loaded is noted beside the model (`rejected_path`) and not downloaded again. Unless `model` is `in_use`
    elsewhere (a night still being decided with it), its session is let go before the publication is opened (see
    `installed_model`): the two ONNX sessions are not in memory together."""
    path = Path(settings.model)
    model = model_on_disk(settings, path, model)
    try:
        meta = latest_model_info(settings.model_source, timeout=10)
        if not takes_update(path, model, meta):
            return model
        if rejected_before(path, meta):
            log.info("model %s kept: the published version %s could not be loaded here (%s)", path,
                     meta.get("version"), rejected_path(path))
            return model
        with install_lock(path) as lock:
            if not lock_exclusive(lock, INSTALL_RISK):
                log.info("model %s kept for now: another run is installing a publication in its place", path)
                return model
            log.info("model %s: installing the published version %s (created %s)", path, meta.get("version"),
                     meta.get("created"))
            return installed_model(settings, path, meta, current=None if in_use else model)
    except NoModelPublished:
        log.info("no model published at %s: %s kept", settings.model_source, path)
        return model
    except ModelFileLost:
        raise
    except (ClientError, ModelDownloadError, OSError) as exc:
        log.warning("model update skipped, %s kept: %s", path, exc)
        return model


def model_on_disk(settings: Settings, path: Path, model):
    """`model`, or the model file at `path` loaded again if another run replaced the file `model` was loaded from
    (a batch run installed an update meanwhile); a file that cannot be used keeps `model` (logged)."""
    if getattr(model, "path", None) is None or Path(model.path) != path \
            or getattr(model, "file_stamp", None) in (None, file_stamp(path)):
        return model
    try:
        reloaded = open_model(settings, path)
    except ClientError as exc:
        log.warning("model file %s changed since it was loaded but cannot be used: %s; the loaded one kept", path, exc)
        return model
    log.info("model file %s changed since it was loaded (installed by another run): now %s", path,
             model_version(reloaded) or "without a version")
    return reloaded


def install_lock_path(model_file: Path) -> Path:
    """The file a run installing a publication in place of `model_file` holds locked (a batch run and the watcher
    refreshing at once: one installs, the other keeps its model and takes the file as it is at its next refresh)."""
    return model_file.with_name(model_file.name + ".lock")


def install_lock(model_file: Path):
    """The install lock file opened to be locked (`install_lock_path`); read-only where another account made it (a
    root cron job's), as a read-only file can be locked too."""
    try:
        return open(install_lock_path(model_file), "a+b")
    except PermissionError as denied:
        try:
            return open(install_lock_path(model_file), "rb")
        except FileNotFoundError:               # no lock file, in a folder this account cannot write: say that
            raise denied from None


def wait_for_lock(lock, model_file: Path, wait_s: float = INSTALL_WAIT_S) -> None:
    """Hold `lock` once the run holding it lets it go (ClientError after `wait_s`)."""
    deadline = time.monotonic() + wait_s
    while not lock_exclusive(lock, INSTALL_RISK):
        if time.monotonic() > deadline:
            raise ClientError(f"model {model_file} is missing and another run has been installing it for over "
                              f"{wait_s:g} s")
        time.sleep(0.5)


def rejected_path(model_file: Path) -> Path:
    """Where the client notes a publication it downloaded but could not load (`<file>.rejected.json`)."""
    return model_file.with_name(f"{model_file.name}.rejected.json")


def rejected_before(model_file: Path, meta: dict) -> bool:
    """Whether the publication `meta` is the one noted as unloadable here, by this same client (an upgraded one
    tries again)."""
    noted = read_json_file(rejected_path(model_file))
    return isinstance(noted, dict) and noted.get("sha256") == meta.get("sha256") \
        and noted.get("client") == client_versions()


def write_rejected(model_file: Path, meta: dict, reason: str) -> None:
    """Note an unloadable publication (its version, hash and why), so that later runs do not download it again."""
    note = {"version": meta.get("version"), "sha256": meta.get("sha256"), "reason": reason,
            "client": client_versions()}
    try:
        rejected_path(model_file).write_text(json.dumps(note, indent=1))
    except OSError as exc:
        log.warning("cannot note %s: %s", rejected_path(model_file), exc)


def installed_model(settings: Settings, path: Path, meta: dict, current=None):
    """The service's latest publication (`meta`, as read) installed at `path`: downloaded beside it, loaded,
    and only then moved into place with its metadata, so a file this client cannot load never takes the place of
    one (ClientError; ModelDownloadError when the download fails). `current`, the model loaded from `path`, lets its
    session go once the download is done (`release_session`); if the publication cannot be installed, the file at
    `path` is opened for it again, and it goes on scoring (ModelFileLost if that file went meanwhile)."""
    staged = path.with_name(f"{path.stem}.update{path.suffix}")
    meta = download_model(settings.model_source, staged, meta=meta)
    released = release_session(current)
    try:
        return installed_staged(settings, staged, path, meta)
    except BaseException:
        if released:
            reopen_session(current, meta)
            log.warning("published model version %s not installed: the model file %s (%s) opened again, scoring on",
                        meta.get("version"), path, model_version(current) or "without a version")
        raise


def installed_staged(settings: Settings, staged: Path, path: Path, meta: dict):
    """The downloaded publication at `staged` loaded, then moved to `path` with its metadata (a file this client
    cannot load is removed and noted beside `path`, `write_rejected`: ClientError)."""
    try:
        model = open_model(settings, staged)
    except ClientError as exc:
        staged.unlink(missing_ok=True)
        metadata_path(staged).unlink(missing_ok=True)
        write_rejected(path, meta, str(exc))
        raise ClientError(f"published model version {meta.get('version')} cannot be used here: {exc}") from None
    os.chmod(staged, installed_mode(path))
    os.replace(staged, path)                    # installed from here: what fails after is said, not undone
    model.path, model.file_stamp = path, file_stamp(path)
    try:
        os.replace(metadata_path(staged), metadata_path(path))
        rejected_path(path).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("model %s installed, but not its metadata: %s", path, exc)
    return model


def release_session(model) -> bool:
    """Let an ONNX model's session go (its memory with it) if it can be opened again — the file it was loaded from
    is still there, not deleted or replaced since; whether it was."""
    if model is None or not hasattr(model, "release") or not loaded_from_file_there(model):
        return False
    model.release()
    return True


def loaded_from_file_there(model) -> bool:
    """Whether the file `model` was loaded from is still the one at its path."""
    stamp = getattr(model, "file_stamp", None)
    return stamp is not None and file_stamp(Path(model.path)) == stamp


def reopen_session(model, meta: dict) -> None:
    """Open a released model's session again, on the file it was loaded from (ModelFileLost if it went)."""
    if loaded_from_file_there(model):
        try:
            model.reopen()
            return
        except Exception as exc:           # deleted just then, or unreadable
            what = f"cannot be opened again ({type(exc).__name__})"
    elif Path(model.path).is_file():
        what = "was replaced"
    else:
        what = "was deleted"
    raise ModelFileLost(f"the model file {model.path} {what} while published model version {meta.get('version')} "
                        f"was tried: start again with a model file there (or one named with --model)")


def client_versions() -> dict[str, str | None]:
    """The versions of what decides whether a model file loads here: this package's code (`code_digest`) and ONNX
    Runtime."""
    try:
        runtime = importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        runtime = None
    return {"gualta": code_digest(), "onnxruntime": runtime}


def code_digest() -> str:
    """A digest of this package's modules: it changes with every upgrade (`git pull`), which the package's version
    number does not."""
    digest = hashlib.sha256()
    for module in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(module.name.encode() + b"\0" + module.read_bytes())
    return digest.hexdigest()[:16]


def takes_update(path: Path, model, meta: dict) -> bool:
    """Whether the published model `meta` replaces the model file at `path` (loaded as `model`): a file deleted since
    always; a file the service gave (its <file>.json still matches it) follows the service's latest, a rollback too;
    any other file only a model created later than it, and never one without a creation time (a .pkl, a model
    exported elsewhere)."""
    if not path.is_file():                       # deleted since it was loaded: the publication puts one back
        return True
    given = read_json_file(metadata_path(path))
    if isinstance(given, dict) and given.get("sha256") == file_sha256(path):
        return meta["sha256"] != given["sha256"]
    created, published = parse_created(getattr(model.info, "created", "")), parse_created(meta.get("created"))
    return created is not None and published is not None and published > created


def read_json_file(path: Path):
    """A JSON file's value, or None if it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def parse_created(text) -> datetime | None:
    """An ISO-8601 creation time (timezone-aware; UTC if none), or None."""
    try:
        created = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return created if created.tzinfo else created.replace(tzinfo=timezone.utc)


def model_version(model) -> str | None:
    version = str(getattr(getattr(model, "info", None), "version", "") or "")
    return version if MODEL.fullmatch(version) else None

