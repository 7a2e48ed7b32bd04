"""Client settings: guAltaConfig.py (the thesis' keys and the new ones), then GUALTA_* environment, then CLI flags.

Every key `guAlta_<name>` has an environment variable `GUALTA_<NAME>` and a flag `--<name>` (underscores as
dashes; booleans also `--no-<name>`). Relative paths in the settings file are relative to that file's folder; in the
environment or on the command line, to the current folder. `load_settings` checks every value and raises one
ConfigError listing everything that is wrong.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import math
import os
import re
import runpy
import traceback
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gualta.payload import OBS_ID, is_api_key

log = logging.getLogger(__name__)

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "guAltaConfig.py"            # the operator's (git ignores it)
EXAMPLE_FILE = DEFAULT_FILE.with_name("guAltaConfig.example.py")                      # the defaults, read without one
CONFIG_HELP = f"settings file (default: {DEFAULT_FILE.name} beside guAlta.py, else {EXAMPLE_FILE.name})"
PREFIX = "guAlta_"
ENV_PREFIX = "GUALTA_"
SERVICE_KEYS = {"guAlta_store", "guAlta_site_time", "guAlta_observatories"}   # `serve`/`site`'s: load_service_settings
HHMM = re.compile(r"([01][0-9]|2[0-3]):?([0-5][0-9])")
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """Invalid settings; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {problem}" for problem in problems))


# --- value parsers: each returns the typed value or raises ValueError with the rule --------------------------------

def text(value) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError("must be text")
    return str(value).strip()


def api_key(value) -> str:
    """Empty (no uploads), or a key the service takes (`payload.is_api_key`) that an HTTP header can carry (Latin-1:
    any other character stopped the sender)."""
    key = text(value)
    if key and not is_api_key(key):
        raise ValueError("must be 8 or more printable characters, no spaces (an invisible character copied with it?)")
    if key and max(map(ord, key)) > 255:
        raise ValueError("has a character an HTTP header cannot carry (only Latin-1 ones: an invisible character or a "
                         "symbol such as € copied with it?)")
    return key


def boolean(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError("must be true or false (1/0, yes/no, on/off)")


def hhmm(value) -> str:
    """'2000', '20:00' or 2000 → '2000' (the number 800 is '0800'; 20 or 8 alone could be an hour: refused)."""
    number = isinstance(value, int) and not isinstance(value, bool)
    if number and 0 < value < 100:
        raise ValueError(f"could be {value:02d}:00 or 00:{value:02d}: write HHMM, e.g. 2000 or \"20:00\"")
    match = HHMM.fullmatch(f"{value:04d}" if number else text(value))
    if not match:
        raise ValueError("must be a local time HHMM or HH:MM, e.g. 2000")
    return match.group(1) + match.group(2)


def window_problem(start: str, end: str) -> str:
    """Why the real-time window start–end (HHMM) cannot be used, '' if it can: one that holds noon and ends after it
    would close at its end the night begun at noon (AllSky's night folders change at noon) and never watch it."""
    if start == end or int(end) <= 1200 or 1200 <= int(start) < int(end):   # always; ends by noon; begins at noon
        return ""
    return (f"guAlta_start_time {start} to guAlta_end_time {end}: the real-time window may not run past noon, when "
            f"AllSky's night folder changes (with daytime capture on, the night begun at noon would be closed at {end} "
            f"and never watched): end it by 1200")


def next_local_time(now: datetime, at: str) -> datetime:
    """The next local time `at` (HHMM or HH:MM) after `now` (aware, or naive in this machine's zone), once a day: at
    the first instant the clock reads it or later (`first_reading`), so a time the clock goes back over comes once."""
    at = hhmm(at)
    today = now.replace(hour=int(at[:2]), minute=int(at[2:]), second=0, microsecond=0, fold=0)
    candidate = first_reading(today)
    return candidate if candidate.timestamp() > now.timestamp() else first_reading(today + timedelta(days=1))


def first_reading(wall: datetime) -> datetime:
    """The first instant the clock reads local time `wall` or later: `wall` itself (its first pass when summer time
    ends and the clock reads it twice), or, when summer time starts and the clock skips it, the instant it jumps past
    it (02:30 in most of Europe comes at 03:00, as cron runs a skipped time)."""
    wall = wall.replace(fold=0)
    if datetime.fromtimestamp(wall.timestamp(), wall.tzinfo) == wall:
        return wall
    before, after = math.floor(wall.replace(fold=1).timestamp()), math.ceil(wall.timestamp())   # read before/after
    while after - before > 1:                                                                    # the jump: bisect
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, wall.tzinfo) >= wall:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, wall.tzinfo)


def seconds_until(now: datetime, at: str) -> float:
    """Seconds from `now` to the next local time `at` (`next_local_time`) as the clock runs: the two instants'
    difference, not the wall clock's, so a night that changes to or from summer time is an hour shorter or longer (an
    aware `now` by its zone's rules, a naive one by this machine's)."""
    return next_local_time(now, at).timestamp() - now.timestamp()


def page_time(value) -> str:
    """'off', or a local time as `hhmm` reads it (the daily page's time)."""
    return "off" if value == "off" else hhmm(value)


def time_zone(value) -> str:
    """An IANA time zone name ("Europe/Madrid", "UTC"), or "" for none."""
    name = text(value)
    if name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):   # "Europe": a folder of zones
            raise ValueError("not a known time zone (an IANA name such as Europe/Madrid or UTC)") from None
    return name


def obs_id(value) -> str:
    value = text(value)
    if not OBS_ID.fullmatch(value):
        raise ValueError("must be 1-32 characters from A-Z a-z 0-9 - _")
    return value


def url(value) -> str:
    value = text(value).rstrip("/")
    parts = urlsplit(value)
    if value and (parts.scheme not in ("http", "https") or not parts.netloc or not has_valid_port(parts)):
        raise ValueError("must be an http:// or https:// URL, its port (if any) from 1 to 65535 (or empty)")
    return value


def has_valid_port(parts) -> bool:
    """Whether a split URL's port, if it names one, is a number from 1 to 65535 (`urlsplit` raises on reading it)."""
    try:
        return parts.port != 0
    except ValueError:
        return False


def number(low: float, high: float | None = None, integer: bool = False):
    """A parser for numbers in [low, high]."""
    def parse(value):
        if isinstance(value, bool):
            raise ValueError("must be a number")
        bounds = f"must be from {low:g} to {high:g}" if high is not None else f"must be at least {low:g}"
        try:
            result = int(value) if integer else float(value)
            whole = not integer or float(value) == result
        except (TypeError, ValueError):
            raise ValueError(f"must be {'a whole number' if integer else 'a number'}") from None
        except OverflowError:                       # 1e999 as a whole number, 10**400 as a float
            raise ValueError("is too large" if high is None and value > 0 else bounds) from None
        if not whole:
            raise ValueError("must be a whole number")
        if result == math.inf and high is None:
            raise ValueError("is too large")
        if result != result or result < low or (high is not None and result > high):
            raise ValueError(bounds)
        return result
    return parse


def optional(parse):
    """A parser that also takes nothing ("" or None: not set)."""
    def parse_optional(value):
        return None if value is None or (isinstance(value, str) and not value.strip()) else parse(value)
    return parse_optional


def path(value) -> Path:
    value = str(value) if isinstance(value, os.PathLike) else text(value)
    if not value:
        raise ValueError("must be a path")
    return Path(value).expanduser()


# --- the settings --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One key: its attribute name, parser, default and help."""
    name: str
    parse: object
    default: object
    help: str

    @property
    def key(self) -> str:
        return PREFIX + ("URL" if self.name == "url" else self.name)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS = (
    Setting("main_folder", path, "/home/pi/allsky/images", "AllSky images root (one YYYYMMDD folder per night)"),
    Setting("start_time", hhmm, "2000", "real-time window start, local HHMM"),
    Setting("end_time", hhmm, "0800", "real-time window end, local HHMM (may be after midnight, not past noon)"),
    Setting("obs_id", obs_id, "obs01", "this observatory's id"),
    Setting("url", url, "http://127.0.0.1:8765", "central service URL"),
    Setting("enable_telegram", boolean, True, "ask the service to post detections to Telegram"),
    Setting("enable_extra_log", boolean, False, "print a line per frame: path , label , p_meteor , p_no_meteor"),
    Setting("threshold", number(0.0, 1.0), 0.85,
            "meteor score at or above which a frame is a candidate (reported unless a check holds it back)"),
    Setting("sleep_between_imgs", number(0.0, 3600.0), 10.0, "real time: seconds to sleep after handling the "
            "frames that came, before looking every 0.5 s for the next"),
    Setting("api_key", api_key, "", "this observatory's API key for the central service (as a flag it shows in "
            "`ps` and the shell's history: better in GUALTA_API_KEY)"),
    Setting("model", path, "models/guAlta.onnx",
            "model file (.onnx or fastai .pkl); the configured one is downloaded if missing"),
    Setting("model_url", url, "", "where published models are read: the embedded service, or on AWS the stack's "
            "ModelUrl (the bucket's models/ over HTTPS); empty: guAlta_URL"),
    Setting("model_update", boolean, True, "replace the model file with a newer one the central service publishes "
            "(checked before a batch run with uploads and when a real-time night starts)"),
    Setting("outbox", path, "gualta_outbox.sqlite", "SQLite file: reports not yet delivered, real-time progress"),
    Setting("satellite_check", boolean, True, "flag trails that continue in the previous or next frame"),
    Setting("faint_crossing_check", boolean, True, "with the satellite check: follow a model's candidate's lines "
            "too faint for any piece into the adjacent frames (its step 5: about half a second a candidate)"),
    Setting("fireball_check", boolean, True, "report a bright, saturated streak seen in one frame only, even if "
            "the model scores it below the threshold"),
    Setting("streak_check", boolean, True, "report a thin streak seen in one frame only (a short or faint meteor), "
            "even if the model scores it below the threshold"),
    Setting("cloud_check", boolean, True, "flag a model's candidate with no streak that clouds changing in the "
            "previous or next frame too explain"),
    Setting("lightning_check", boolean, True, "flag a model's candidate with no streak that a flash lighting a wide "
            "region of the sky in this frame only explains, and a candidate whose bright streak is a jagged bolt in "
            "such a flash"),
    Setting("report_flagged", boolean, False, "report flagged (satellite/plane, cloud, lightning) detections too"),
    Setting("threads", number(0, 256, integer=True), 0, "onnxruntime/torch threads (0: one per CPU core)"),
    Setting("batch_size", number(1, 1024, integer=True), 16, "frames per model call (a batch run, a real-time "
            "backlog)"),
    Setting("latitude", optional(number(-90.0, 90.0)), "", "the camera's latitude, degrees north (with its "
            "longitude: frames taken in daylight are not scored; empty: every frame is)"),
    Setting("longitude", optional(number(-180.0, 180.0)), "", "the camera's longitude, degrees east (west "
            "negative)"),
    Setting("night_sun_altitude", number(-18.0, 10.0), -6.0, "with latitude and longitude: frames taken with the "
            "sun higher than this (degrees; AllSky's day/night angle) are daytime, not scored"),
    Setting("camera_timezone", time_zone, "", "the zone of the camera's clock, which names the frames, where it is "
            "not this machine's (a camera kept on UTC or without summer time): for the daytime rule"),
    Setting("mask", optional(path), "", "an image of the camera's frame, black where the fireball and streak checks "
            "do not look (the camera's own text, a flickering light), white elsewhere (`guAlta.py mask` draws one); "
            "empty: only AllSky's top-left text is left out"),
)
PATHS = {"main_folder", "model", "outbox", "mask"}
SHIPPED = {"model"}                  # defaults naming a file the repository ships: found beside guAlta.py
KNOWN_KEYS = {setting.key for setting in SETTINGS} | SERVICE_KEYS
KEY_SPELLING = {key.lower(): key for key in KNOWN_KEYS}            # guAlta_url → guAlta_URL


@dataclass(frozen=True)
class Settings:
    """The client's settings, checked and typed (paths absolute)."""
    main_folder: Path
    start_time: str
    end_time: str
    obs_id: str
    url: str
    enable_telegram: bool
    enable_extra_log: bool
    threshold: float
    sleep_between_imgs: float
    api_key: str
    model: Path
    model_url: str
    model_update: bool
    outbox: Path
    satellite_check: bool
    faint_crossing_check: bool
    fireball_check: bool
    streak_check: bool
    cloud_check: bool
    lightning_check: bool
    report_flagged: bool
    threads: int
    batch_size: int
    latitude: float | None = None
    longitude: float | None = None
    night_sun_altitude: float = -6.0
    camera_timezone: str = ""
    mask: Path | None = None
    source: str = ""                 # the settings file read

    @property
    def model_source(self) -> str:
        """Where published models are read: guAlta_model_url, else guAlta_URL."""
        return self.model_url or self.url

    def describe(self) -> str:
        """The settings for a log line, the API key hidden."""
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("source", "api_key")}
        shown["api_key"] = "set" if self.api_key else "not set"
        for name in ("url", "model_url"):            # a reverse proxy's user and password, if the URL holds them
            shown[name] = without_credentials(shown[name])
        return ", ".join(f"{key}={value}" for key, value in shown.items())


def shown_raw(setting: Setting, raw):
    """A refused value as a problem line may show it: a URL without its user and password."""
    return without_credentials(raw) if setting.parse is url and isinstance(raw, str) else raw


def without_credentials(url: str) -> str:
    """A URL as it may be shown: without a user and password in it (a reverse proxy's basic authentication)."""
    parts = urlsplit(url)
    if not parts.netloc and "@" in url:                 # 'op:secret@host:8765': no scheme, read as 'op:'
        return url.rpartition("@")[2]
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))     # host[:port] as written


def read_file(config_file: Path) -> dict:
    """The guAlta_* names a Python settings file defines (ConfigError if it cannot be run)."""
    if not config_file.is_file():
        raise ConfigError([f"settings file not found: {config_file}"])
    try:
        names = runpy.run_path(str(config_file))
    except NameError as exc:       # a value without its quotes (an API key?): its text is never printed
        line = next((frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
                     if Path(frame.filename) == config_file), "?")
        raise ConfigError([f"cannot read settings file {config_file}: line {line}: a value that is not Python (text "
                           f"without its quotes?)"]) from None
    except Exception as exc:       # a settings file is user code: report any failure as a settings error
        raise ConfigError([f"cannot read settings file {config_file}: {type(exc).__name__}: {exc}"]) from None
    return known_spelling({key: value for key, value in names.items() if key.lower().startswith(PREFIX.lower())},
                          config_file)


def known_spelling(values: dict, config_file: Path) -> dict:
    """`values` with each name in another case than a known key (`guAlta_url`) under the key's own spelling
    (`guAlta_URL`); ConfigError if one key is given under two spellings."""
    spelt = {}
    for name, value in values.items():
        key = KEY_SPELLING.get(name.lower(), name)
        if key in spelt:
            raise ConfigError([f"{config_file}: {key} is set twice (in two spellings): keep one"])
        spelt[key] = value
    return spelt


def warn_unknown(values: dict, config_file: Path) -> None:
    """Log guAlta_* names the client does not know (typos), with the closest known key."""
    for key in sorted(set(values) - KNOWN_KEYS):
        close = difflib.get_close_matches(key.lower(), sorted(KEY_SPELLING), n=1)
        hint = f" (did you mean {KEY_SPELLING[close[0]]}?)" if close else ""
        log.warning("%s: unknown setting %s ignored%s", config_file, key, hint)


OTHER_ENV = {"GUALTA_STORE", "GUALTA_SITE_TIME", "GUALTA_OBSERVATORIES", "GUALTA_TIMEZONE", "GUALTA_NIGHT_END",
             "GUALTA_API_KEYS", "GUALTA_API_KEYS_PARAM", "GUALTA_S3_ENDPOINT", "GUALTA_N2YO_KEY",
             "GUALTA_N2YO_KEY_PARAM", "GUALTA_TELEGRAM_CHAT", "GUALTA_TELEGRAM_TOKEN", "GUALTA_TELEGRAM_TOKEN_PARAM",
             "GUALTA_TELEGRAM_API", "GUALTA_TELEGRAM_NIGHT_POSTS", "GUALTA_TELEGRAM_WITHIN_DAYS", "GUALTA_SITE_URL",
             "GUALTA_TLE_FILE"}        # the service's variables (and GUALTA_NB_*, the notebooks')


def warn_misspelt_env(env) -> None:
    """Log GUALTA_* variables that look like a misspelt setting of the client or the service (GUALTA_TRESHOLD,
    GUALTA_TELEGRAM_CHANNEL): ignored, as an unknown key in the settings file is."""
    names = sorted({setting.env for setting in SETTINGS} | OTHER_ENV)
    for name in sorted(key for key in env if key.startswith(ENV_PREFIX)):
        if name in names or name.startswith(f"{ENV_PREFIX}NB_"):
            continue
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.85)
        if close:
            log.warning("environment %s ignored: not a setting (did you mean %s?)", name, close[0])


def default_file() -> Path:
    """guAltaConfig.py beside guAlta.py, else (none made yet) guAltaConfig.example.py."""
    return DEFAULT_FILE if DEFAULT_FILE.exists() else EXAMPLE_FILE


def load_settings(config_file: str | Path | None = None, env: dict | None = None,
                  overrides: dict | None = None) -> Settings:
    """Settings from the file (default `default_file()`), then env GUALTA_*, then `overrides`
    (attribute name → value, None = not given). Raises ConfigError listing every invalid value."""
    config_file = Path(config_file or default_file()).expanduser().resolve()
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    from_file = read_file(config_file)
    warn_unknown(from_file, config_file)
    warn_misspelt_env(env)
    values, problems = {}, []
    for setting in SETTINGS:
        if env.get(setting.env) == "":
            log.warning("environment %s is empty: ignored (unset it, or give it a value)", setting.env)
        if setting.name in overrides:
            raw, where, base = overrides[setting.name], f"option {setting.flag}", Path.cwd()
        elif env.get(setting.env):
            raw, where, base = env[setting.env], f"environment {setting.env}", Path.cwd()
        elif setting.key in from_file:
            raw, where, base = from_file[setting.key], f"{setting.key} in {config_file.name}", config_file.parent
            if setting.name in SHIPPED and raw == setting.default and not (base / raw).exists():
                base = DEFAULT_FILE.parent                              # the example's line, in a copy elsewhere
        else:
            raw, where = setting.default, f"default {setting.key}"
            base = DEFAULT_FILE.parent if setting.name in SHIPPED else config_file.parent
        try:
            value = setting.parse(raw)
        except ValueError as exc:
            shown = "" if setting.name == "api_key" else f" = {shown_raw(setting, raw)!r}"      # never the key
            problems.append(f"{where}{shown}: {exc}")
            continue
        values[setting.name] = (base / value).resolve() if setting.name in PATHS and value is not None else value
    if ("latitude" in values and "longitude" in values
            and (values["latitude"] is None) != (values["longitude"] is None)):
        problems.append("guAlta_latitude and guAlta_longitude go together: set both, or neither")
    if problems:
        raise ConfigError(problems)
    return Settings(**values, source=str(config_file))


@dataclass(frozen=True)
class ServiceSettings:
    """What `serve` and `site` read: the store, the daily page time and the observatories' places."""
    store: str
    site_time: str
    observatories: dict
    source: str = ""


def observatory_problems(observatories: dict) -> list[str]:
    """What is wrong with each observatory's place (passes.observatory's checks), one line each."""
    from gualta import passes

    problems = []
    for obs_id, place in observatories.items():
        try:
            passes.observatory(str(obs_id), dict(place))
        except KeyError as exc:
            problems.append(f"{obs_id}: {exc.args[0]} is missing")
        except (ValueError, TypeError) as exc:
            problems.append(f"{obs_id}: {exc}" if not str(exc).startswith(f"{obs_id}:") else str(exc))
    return problems


def load_service_settings(config_file: str | Path | None = None, env: dict | None = None) -> ServiceSettings:
    """Service settings from the file (default `default_file()`), then GUALTA_STORE / GUALTA_SITE_TIME."""
    config_file = Path(config_file or default_file()).expanduser().resolve()
    env = os.environ if env is None else env
    from_file = read_file(config_file)
    warn_unknown(from_file, config_file)
    warn_misspelt_env(env)
    problems = []
    store = env.get("GUALTA_STORE")
    if not store:
        store = str(from_file.get("guAlta_store", "gualta_store")).strip()
        if not store:                          # it would be the settings file's own folder (the checkout)
            problems.append("guAlta_store is empty: give the store's folder or s3:// location")
        elif "://" not in store:                                    # a folder: relative to the settings file
            store = str((config_file.parent / Path(store).expanduser()).resolve())
    site_time = env.get("GUALTA_SITE_TIME") or from_file.get("guAlta_site_time", "0900")   # 900 as a number too
    try:
        site_time = page_time(site_time)
    except ValueError as exc:
        problems.append(f"guAlta_site_time = {site_time!r}: {exc}")
    observatories = from_file.get("guAlta_observatories") or {}
    if not isinstance(observatories, dict):
        problems.append(f"guAlta_observatories must be a dict of obs_id → place, not {type(observatories).__name__}")
    elif not env.get("GUALTA_OBSERVATORIES"):                     # the file's are the ones used: checked now
        problems += [f"guAlta_observatories in {config_file.name}: {problem}"
                     for problem in observatory_problems(observatories)]
    if problems:
        raise ConfigError(problems)
    return ServiceSettings(str(store), site_time, observatories, str(config_file))


def add_setting_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """--config FILE and one flag per setting (booleans as --x/--no-x); all default to None (= not given)."""
    parser.add_argument("--config", type=Path, help=CONFIG_HELP)
    group = parser.add_argument_group("settings (override guAltaConfig.py and GUALTA_* environment variables)")
    for setting in SETTINGS:
        if setting.name in skip:
            continue
        where = f"{setting.key}, {setting.env}; built-in default {setting.default!r}".replace("%", "%%")
        if setting.parse is boolean:
            group.add_argument(setting.flag, dest=setting.name, action=argparse.BooleanOptionalAction,
                               default=None, help=f"{setting.help} ({where})")
        else:
            group.add_argument(setting.flag, dest=setting.name, default=None, metavar=setting.name.upper(),
                               help=f"{setting.help} ({where})")


def settings_from_args(args: argparse.Namespace, env: dict | None = None) -> Settings:
    """Settings for parsed CLI arguments made with add_setting_flags."""
    overrides = {setting.name: getattr(args, setting.name, None) for setting in SETTINGS}
    return load_settings(getattr(args, "config", None), env, overrides)
