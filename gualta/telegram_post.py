"""Telegram channel posts with python-telegram-bot: detections (photo + caption) and start/end logs (text).

Captions are plain text (no parse mode), so nothing a client sends can format or inject markup. The token is never
logged or stored: failures are reported by exception class only.
"""
from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from gualta import payload, service_env

log = logging.getLogger(__name__)
FLOOD_WAIT_BUDGET_S = 10.0        # the longest one report's post and edits wait out flood control, all together
                                  # (the ingest Lambda has 30 s)
CHANNEL_REFUSAL = re.compile(r"chat|rights|forbidden", re.IGNORECASE)  # a BadRequest about the channel, not the post
MAX_CAPTION = 1024                # Telegram refuses a longer photo caption
NIGHT_POSTS = 50                  # detections an observatory posts in a night by default (GUALTA_TELEGRAM_NIGHT_POSTS)
WITHIN_DAYS = 7                   # a night ended longer before the last one is not posted (GUALTA_TELEGRAM_WITHIN_DAYS)
LIMIT_SETTINGS = ("GUALTA_TELEGRAM_NIGHT_POSTS", "GUALTA_TELEGRAM_WITHIN_DAYS")
for _name in ("httpx", "httpcore", "telegram"):           # their debug/info lines include URLs with the token
    logging.getLogger(_name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class Channel:
    """Where and how to post: bot token (hidden from repr), chat id, optional Bot API base URL."""
    token: str = field(repr=False)
    chat_id: str
    base_url: str | None = None
    timeout_s: float = 10.0


def channel_from_env(env) -> Channel | None:
    """The configured channel, or None when chat or token is not set or the token cannot be read (logged)."""
    chat = env.get("GUALTA_TELEGRAM_CHAT", "")
    if not chat:
        return None
    try:
        token = service_env.secret(env, "GUALTA_TELEGRAM_TOKEN")
    except service_env.ServiceConfigError as exc:      # never let Telegram settings block storing a detection
        log.warning("telegram disabled: %s", exc)
        return None
    if not token:
        return None
    return Channel(token=token, chat_id=chat, base_url=env.get("GUALTA_TELEGRAM_API") or None)


def night_posts(env) -> int:
    """How many detections one observatory may post in a night (GUALTA_TELEGRAM_NIGHT_POSTS; 0: no limit): a sky
    the classifier misreads all night — rain on the dome, a flickering light — would otherwise fill the channel."""
    return whole_number(env, "GUALTA_TELEGRAM_NIGHT_POSTS", NIGHT_POSTS)


def within_days(env) -> int:
    """How many days after the last night a night's reports are still posted (GUALTA_TELEGRAM_WITHIN_DAYS; 0: any
    night): an archive run through the client with uploads would otherwise fill the channel with old nights."""
    return whole_number(env, "GUALTA_TELEGRAM_WITHIN_DAYS", WITHIN_DAYS)


def whole_number(env, name: str, default: int) -> int:
    """A setting that is a whole number; an unreadable value leaves the default (logged: a setting never blocks
    storing a report)."""
    text = env.get(name, "").strip()
    if not text:
        return default
    if not is_whole_number(text):
        log.warning("%s=%r is not a whole number: %d it is", name, text[:20], default)
        return default
    return int(text)


def is_whole_number(text: str) -> bool:
    """Whether a setting's text is a whole number in ASCII digits ("²" is a digit to str.isdigit, not to int)."""
    return text.isascii() and text.isdigit()


def unreadable_limits(env) -> list[str]:
    """The post limits (GUALTA_TELEGRAM_NIGHT_POSTS, GUALTA_TELEGRAM_WITHIN_DAYS) set to something that is not a
    whole number, as NAME='value'."""
    return [f"{name}={env[name].strip()[:20]!r}" for name in LIMIT_SETTINGS
            if env.get(name, "").strip() and not is_whole_number(env[name].strip())]


def over_limit_text(obs_id: str, limit: int, page_url: str | None) -> str:
    """The one message that says an observatory's posts stop for the night."""
    where = f": {page_url}" if page_url else ""
    return f"🔕 {obs_id}: more than {limit} detections this night; the rest are only on the night's page{where}"


def detection_caption(record: dict, page_url: str | None, seen_also: list[tuple[str, str]] = (),
                      zone: str = "") -> str:
    """What the channel shows under a detection's photo; `seen_also`: (obs_id, time) of other observatories'
    detections of the same moment, as many as fit in Telegram's caption (then a count of the rest); `zone`: what
    follows the local time (" CEST" when other clocks are named in theirs)."""
    flag = record.get("flag")
    headline, _, why = payload.FLAG_MEANINGS.get(flag if isinstance(flag, str) else None,
                                                  ("☄️ Meteor detected", "", ""))
    lines = [headline,
             f"Observatory: {record.get('obs_id', '?')}",
             f"Local time: {record.get('date', '?')} {record.get('time', '?')}{zone}",
             f"Score: {score_text(record.get('score'))}"]
    if flag:
        lines.append(why[0].upper() + why[1:] if why else f"Flag: {flag}")
    tail = [page_url] if page_url else []
    times: dict[str, list[str]] = {}                # an observatory with two detections of the moment: one line
    for obs_id, at in seen_also:
        times.setdefault(obs_id, []).append(at)
    also = [f"Also seen from {obs_id} at {', '.join(ats)}" for obs_id, ats in times.items()]
    for shown in range(len(also), -1, -1):          # as many as fit in a caption, then how many more
        rest = len(also) - shown
        more = [f"Also seen from {rest} more observator{'y' if rest == 1 else 'ies'}"] if rest else []
        caption = "\n".join(lines + also[:shown] + more + tail)
        if telegram_length(caption) <= MAX_CAPTION:
            return caption
    return caption


def score_text(score) -> str:
    """A score as the caption shows it; '?' for one a stored record no longer holds as a number."""
    try:
        return f"{float(score):.2f}" if not isinstance(score, (bool, str)) and math.isfinite(score) else "?"
    except (TypeError, ValueError, OverflowError):
        return "?"


def telegram_length(text: str) -> int:
    """A text's length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def log_text(record: dict, counts: dict[str, int] | None = None) -> str:
    """What the channel shows for a start/end log; `counts`: the observatory's detections of the night the service
    holds (an end log comes after them), as the page counts them: {"detections", "held_back"} (`payload.tally`)."""
    folder = record.get("folder") or ""
    night = f", night of {folder[:4]}-{folder[4:6]}-{folder[6:]}" if len(folder) == 8 else ""
    if record["log"] == "start":
        return f"🔭 {record['obs_id']}: detection started{night}"
    found = ""
    if counts is not None:
        detections, held = counts["detections"], counts["held_back"]
        found = f", {detections:,} detection{'' if detections == 1 else 's'}"
        found += f", {held:,} candidate{'' if held == 1 else 's'} held back" if held else ""
    return f"🌅 {record['obs_id']}: detection ended{night}: {record['total']:,} frames processed{found}"


def refused(status: str) -> bool:
    """Whether a failed post's status says Telegram refused that post itself (BadRequest: its photo, its caption)
    rather than being out of reach or refusing the channel: the posts after it may still go."""
    return status == "failed: BadRequest"


def setting_at_fault(status: str) -> str | None:
    """The setting a failed post's status blames: GUALTA_TELEGRAM_TOKEN when Telegram does not know the bot's token
    (InvalidToken), GUALTA_TELEGRAM_CHAT when it refuses the chat (Forbidden: the bot may not post there, a BadRequest
    about the chat, ChatMigrated: a group became a supergroup); None for other failures (network, flood control)."""
    reason = status.removeprefix("failed: ")
    if reason == "InvalidToken":
        return "GUALTA_TELEGRAM_TOKEN"
    if reason in ("Forbidden", "ChatMigrated") or reason.endswith("(the chat)"):
        return "GUALTA_TELEGRAM_CHAT"
    return None


def failure_reason(exc: Exception) -> str:
    """What a failed call's status says: the exception's class only (the token is never near it), and for a
    BadRequest about the chat itself (not found, no rights to post) that it is the channel's, not the post's."""
    from telegram.error import BadRequest

    reason = type(exc).__name__
    if isinstance(exc, BadRequest) and CHANNEL_REFUSAL.search(str(exc)):
        return f"{reason} (the chat)"
    return reason


@asynccontextmanager
async def _bot(channel: Channel):
    """A Bot for one call, its HTTP clients closed after it (`Bot.shutdown` closes nothing of a Bot never
    initialized, and initializing one costs a getMe call each post)."""
    import telegram
    from telegram.request import HTTPXRequest

    timeouts = {"connect_timeout": channel.timeout_s, "read_timeout": channel.timeout_s,
                "write_timeout": channel.timeout_s}
    calls, updates = HTTPXRequest(**timeouts), HTTPXRequest(**timeouts)     # updates: the Bot's own, never used
    options = {"base_url": channel.base_url} if channel.base_url else {}
    try:
        yield telegram.Bot(channel.token, request=calls, get_updates_request=updates, **options)
    finally:
        await asyncio.gather(calls.shutdown(), updates.shutdown())


@dataclass(frozen=True)
class Posted:
    """A post's outcome: the status to record (sent | failed: <reason> | not configured) and, once sent, the
    channel's message id (to edit its caption later)."""
    status: str
    message_id: int | None = None


def flood_deadline() -> float:
    """When waiting out flood control must end, for calls made from now (the time.monotonic() clock): one report's
    post and the edits it makes share it, so that together they stay within FLOOD_WAIT_BUDGET_S."""
    return time.monotonic() + FLOOD_WAIT_BUDGET_S


async def _within_flood_control(call, deadline: float | None):
    """Await call(); while Telegram's flood control asks to wait, wait and call again — as long as the waiting ends
    by `deadline` (None: FLOOD_WAIT_BUDGET_S from now; the client, whose next report waits for this answer, slows
    down with it)."""
    from telegram.error import RetryAfter

    deadline = flood_deadline() if deadline is None else deadline
    while True:
        try:
            return await call()
        except RetryAfter as exc:
            wait = flood_wait_s(exc)
            if time.monotonic() + wait > deadline:
                raise
            log.info("telegram flood control: waiting %g s", wait)
            await asyncio.sleep(wait)


def flood_wait_s(exc) -> float:
    """Seconds a RetryAfter asks to wait (an int now, a timedelta in a future python-telegram-bot)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)      # the announcement of that change
        wait = exc.retry_after
    return wait.total_seconds() if isinstance(wait, timedelta) else float(wait)


async def _send(channel: Channel, text: str, jpeg: bytes | None, deadline: float | None) -> int:
    import telegram

    async with _bot(channel) as bot:
        if jpeg is None:
            message = await _within_flood_control(lambda: bot.send_message(chat_id=channel.chat_id, text=text),
                                                   deadline)
        else:
            message = await _within_flood_control(lambda: bot.send_photo(
                chat_id=channel.chat_id, caption=text, photo=telegram.InputFile(jpeg, filename="detection.jpeg")),
                deadline)
        return message.message_id


async def _edit_caption(channel: Channel, message_id: int, text: str, deadline: float | None) -> int:
    from telegram.error import BadRequest

    async with _bot(channel) as bot:
        try:
            await _within_flood_control(lambda: bot.edit_message_caption(
                chat_id=channel.chat_id, message_id=message_id, caption=text), deadline)
        except BadRequest as exc:        # the caption says this already (two reports of one moment crossed): done
            if "not modified" not in str(exc).lower():
                raise
    return message_id


def _outcome(call) -> Posted:
    try:
        message_id = asyncio.run(call)
    except Exception as exc:   # any failure (network, API, timeout) must not lose the stored detection
        reason = failure_reason(exc)
        log.debug("telegram call failed: %s", reason)         # the caller logs what failed and what happens next
        return Posted(f"failed: {reason}")
    return Posted("sent", message_id)


def post(channel: Channel | None, text: str, jpeg: bytes | None = None, deadline: float | None = None) -> Posted:
    """Post text (with a photo if given); flood control waited out until `deadline` (`flood_deadline`)."""
    if channel is None:
        return Posted("not configured")
    return _outcome(_send(channel, text, jpeg, deadline))


def edit_caption(channel: Channel, message_id: int, text: str, deadline: float | None = None) -> Posted:
    """Replace the caption of a photo already posted (message_id); flood control waited out until `deadline`."""
    return _outcome(_edit_caption(channel, message_id, text, deadline))
