"""Service settings read from the environment (Lambda env vars, or set by `guAlta.py serve`).

    GUALTA_STORE              folder or s3://bucket[/prefix]         GUALTA_S3_ENDPOINT   moto/MinIO endpoint URL
    GUALTA_API_KEYS           obs_id:key,obs_id:key,…                GUALTA_API_KEYS_PARAM  SSM parameter holding that
    GUALTA_TELEGRAM_TOKEN     bot token                              GUALTA_TELEGRAM_TOKEN_PARAM  SSM parameter
    GUALTA_TELEGRAM_CHAT      channel (@name or numeric id)          GUALTA_TELEGRAM_API  Bot API base URL (tests)
    GUALTA_TELEGRAM_NIGHT_POSTS  detections an observatory posts in a night (default 50; 0: no limit)
    GUALTA_TELEGRAM_WITHIN_DAYS  days after the last night a night is still posted (default 7; 0: any night)
    GUALTA_SITE_URL           public base URL of the pages (links)   GUALTA_TIMEZONE      IANA zone (default: system)
    GUALTA_OBSERVATORIES      JSON {obs_id: {lat, lon, elevation_m, name, tz, night_sun_altitude}}
    GUALTA_NIGHT_END          HHMM before noon when a night has ended (default 0800)
    GUALTA_TLE_FILE           TLE file for passes (default: gualta/data/iss.tle)   GUALTA_N2YO_KEY(_PARAM)  n2yo key

Secrets (API keys, Telegram token, n2yo key) come from the variable itself or, on AWS, from the SSM SecureString
parameter named by ``<NAME>_PARAM``; values are cached for five minutes and never logged.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gualta import allsky

SECRET_TTL_S = 300
logging.getLogger("botocore.parsers").setLevel(logging.INFO)     # at DEBUG it logs SSM's answers: the secrets
_cache: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


class ServiceConfigError(RuntimeError):
    """The service is misconfigured (an operator's problem, never the client's)."""


class SecretUnavailable(ServiceConfigError):
    """A secret's SSM parameter could not be read (the network, credentials): it may read on a later try."""


def ssm_parameter(name: str) -> str:
    """Decrypted value of an SSM parameter, cached for SECRET_TTL_S seconds."""
    with _lock:
        cached = _cache.get(name)
        if cached and time.monotonic() - cached[0] < SECRET_TTL_S:
            return cached[1]
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
    try:
        value = boto3.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except (BotoCoreError, ClientError) as exc:
        raise SecretUnavailable(f"cannot read SSM parameter {name}: {type(exc).__name__}") from None
    with _lock:
        _cache[name] = (time.monotonic(), value)
    return value


def secret(env, name: str) -> str:
    """env[name], else the SSM parameter named by env[name + '_PARAM'], else '' — without the spaces or line end
    around it (a parameter put from a file keeps the file's last newline, which no key or token holds)."""
    if env.get(name):
        return env[name].strip()
    parameter = env.get(f"{name}_PARAM")
    return ssm_parameter(parameter).strip() if parameter else ""


def night_end(env) -> str:
    """When the service takes a night to have ended, HHMM (GUALTA_NIGHT_END, before noon; default 0800, the end of
    AllSky's night window)."""
    from gualta.config import hhmm

    value = env.get("GUALTA_NIGHT_END") or f"{allsky.NIGHT_ENDS_H:02d}00"
    try:
        at = hhmm(value)
    except ValueError as exc:
        raise ServiceConfigError(f"GUALTA_NIGHT_END {value!r}: {exc}") from None
    if at >= "1200":
        raise ServiceConfigError(f"GUALTA_NIGHT_END {value!r}: a night ends before noon (nights change folder at "
                                 "noon)")
    return at


def ended_night(now: datetime, env) -> str:
    """The night that ended last on the service's clock (`allsky.ended_night`, at `night_end`)."""
    ends = night_end(env)
    return allsky.ended_night(now.astimezone(timezone(env)), timedelta(hours=int(ends[:2]), minutes=int(ends[2:])))


def timezone(env) -> tzinfo:
    """GUALTA_TIMEZONE as a ZoneInfo, else the machine's local zone with its summer-time rules (dateutil's tzlocal:
    `datetime.now().astimezone()` would fix today's offset for good, an hour off after the next change)."""
    name = env.get("GUALTA_TIMEZONE")
    if not name:
        from dateutil.tz import tzlocal

        return tzlocal()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):   # "Europe": a folder of zones
        raise ServiceConfigError(f"unknown time zone in GUALTA_TIMEZONE: {name!r}") from None
