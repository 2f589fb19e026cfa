"""The render pipeline: a template's content per channel, per language with fallback, in a context.

This module does no I/O and touches no Flask or database state: the preview endpoint and the
delivery workers hand it a template's `channels` and a context dict, and get text back or a
`RenderError` carrying a reason and the field path. Nothing else ever escapes `render`.

Every field renders in `app.sandbox` (the Jinja2 sandbox and the caps on a template's work and
values, checked before the work is done) under one budget per `render` call: the caps are in
`RenderLimits`. On top of those, output per field is at most 64 K characters, except
`email.html` (256 K) and `sms.body` (1,600, the common carrier maximum for a concatenated SMS).
Cairn's own filters (`localdatetime`, `localdate`: times in the user's zone) live here.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Template, TemplateSyntaxError, pass_context
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Context, Undefined

from app.sandbox import DEFAULT_LIMITS, CapExceeded, RenderLimits, Sandbox, budget, limited
from workers.channels import CHANNELS as CHANNEL_REGISTRY
from workers.channels.base import ContentSpec as ChannelSpec

__all__ = [
    "CHANNELS",
    "DEFAULT_LIMITS",
    "ChannelSpec",
    "RenderError",
    "RenderLimits",
    "RenderedContent",
    "build_context",
    "check_syntax",
    "language_chain",
    "localdate",
    "localdatetime",
    "render",
]


# What each channel's content holds (fields, required groups, caps, escaping) is the channel
# registry's (workers/channels/<channel>.py). Keys of `templates.channels`: never renamed.
CHANNELS: dict[str, ChannelSpec] = {name: c.content for name, c in CHANNEL_REGISTRY.items()}


@dataclass(frozen=True)
class RenderedContent:
    """One channel rendered: the language picked and each field's text (`data` stays a dict)."""

    language_used: str
    fields: dict[str, Any]

    @property
    def language(self) -> str:
        """Alias of `language_used`."""
        return self.language_used


class RenderError(Exception):
    """A template could not be rendered; `reason` says why, `field` and `line` say where."""

    def __init__(self, reason: str, *, field: str | None = None, line: int | None = None) -> None:
        where = field or ""
        if line is not None:
            where = f"{where} line {line}".strip()
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.field = field
        self.line = line


def _user_zone(context: Context, tz: str | None) -> ZoneInfo:
    name = tz
    if name is None:
        user = context.get("user")
        if isinstance(user, Mapping):
            name = user.get("timezone")
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    # A naive time is taken as UTC, the way Cairn stores every timestamp.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@pass_context
def localdatetime(
    context: Context, value: Any, fmt: str = "%Y-%m-%d %H:%M", tz: str | None = None
) -> str:
    """An ISO string, datetime or epoch in the user's time zone (or `tz`), formatted by `fmt`.

    Undefined gives ""; a value that is not a time is returned as it was.
    """
    if isinstance(value, Undefined) or value is None:
        return ""
    moment = _as_datetime(value)
    if moment is None:
        return str(value)
    return moment.astimezone(_user_zone(context, tz)).strftime(str(fmt))


@pass_context
def localdate(context: Context, value: Any, fmt: str = "%Y-%m-%d", tz: str | None = None) -> str:
    """The date of `value` in the user's time zone (or `tz`), formatted by `fmt`."""
    return localdatetime(context, value, fmt, tz)


_CAIRN_FILTERS = {"localdatetime": localdatetime, "localdate": localdate}
_TEXT_ENV = Sandbox(autoescape=False, filters=_CAIRN_FILTERS)
_HTML_ENV = Sandbox(autoescape=True, filters=_CAIRN_FILTERS)


@functools.lru_cache(maxsize=2048)
def _compile(source: str, html: bool) -> Template:
    return (_HTML_ENV if html else _TEXT_ENV).from_string(source)


def check_syntax(source: str, *, html: bool = False, field: str | None = None) -> None:
    """Compile `source`; a syntax error (or unknown filter) is a RenderError naming the line."""
    try:
        _compile(source, html)
    except TemplateSyntaxError as err:
        raise RenderError(err.message or "syntax error", field=field, line=err.lineno) from None
    except RecursionError:
        raise RenderError("template nested too deeply", field=field) from None


def language_chain(available: Iterable[str], language: str | None, default_language: str) -> str:
    """The language to use: `pt-BR`, then `pt`, then another `pt-*`, then the default, then
    the first available in sorted order."""
    keys = sorted(available)
    if not keys:
        raise RenderError("no language available")
    by_lower = {k.lower(): k for k in keys}
    for wanted in (language, default_language):
        if not wanted:
            continue
        parts = wanted.lower().split("-")
        for end in range(len(parts), 0, -1):
            found = by_lower.get("-".join(parts[:end]))
            if found:
                return found
        # A regional variant of the same language beats another language entirely.
        for lowered, key in by_lower.items():
            if lowered.split("-")[0] == parts[0]:
                return key
    return keys[0]


def build_context(
    *,
    user: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    event: Mapping[str, Any] | None = None,
    campaign: Mapping[str, Any] | None = None,
    links: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The render context: `user`, `params` (also as `data`), `event`, `campaign`, and the
    message's signed `links` as top-level variables (`unsubscribe_url`, `preferences_url`)."""
    context: dict[str, Any] = {
        **(links or {}),
        "user": dict(user or {}),
        "params": dict(params or {}),
    }
    if event is not None:
        context["event"] = dict(event)
    if campaign is not None:
        context["campaign"] = dict(campaign)
    return context


def render(
    template_channels: Mapping[str, Any],
    channel: str,
    language: str | None,
    default_language: str,
    context: Mapping[str, Any],
    *,
    limits: RenderLimits = DEFAULT_LIMITS,
) -> RenderedContent:
    """Render one channel of a template in the best language for `language`.

    Raises RenderError, and only RenderError, for anything that goes wrong.
    """
    try:
        return _render(template_channels, channel, language, default_language, context, limits)
    except RenderError:
        raise
    except Exception as err:  # a bug or an odd input must still be a RenderError
        raise RenderError(f"unexpected {type(err).__name__}: {err}", field=channel) from err


def _render(
    template_channels: Mapping[str, Any],
    channel: str,
    language: str | None,
    default_language: str,
    context: Mapping[str, Any],
    limits: RenderLimits,
) -> RenderedContent:
    spec = CHANNELS.get(channel)
    if spec is None:
        raise RenderError(f"unknown channel {channel!r}")
    by_language = template_channels.get(channel) if isinstance(template_channels, Mapping) else None
    if not isinstance(by_language, Mapping) or not by_language:
        raise RenderError(f"the template has no {channel} content", field=channel)
    used = language_chain(by_language, language, default_language)
    content = by_language[used]
    if not isinstance(content, Mapping):
        raise RenderError("content is not an object", field=f"{channel}.{used}")
    variables = dict(context)
    params = variables.get("params", variables.get("data"))
    variables["params"] = variables["data"] = params if isinstance(params, Mapping) else {}
    if not isinstance(variables.get("user"), Mapping):
        variables["user"] = {}
    with limited(limits):
        fields: dict[str, Any] = {}
        for name, value in content.items():
            path = f"{channel}.{used}.{name}"
            cap = spec.max_chars.get(name, limits.max_field_chars)
            if name in spec.object_fields:
                fields[name] = _render_object(value, variables, path, cap)
            else:
                fields[name] = _render_text(value, variables, path, cap, name in spec.html_fields)
    for name in spec.single_line:
        # A header line (an email subject): a newline from the data must not start another.
        if isinstance(fields.get(name), str):
            fields[name] = re.sub(r"[\r\n]+", " ", fields[name]).strip()
    return RenderedContent(language_used=used, fields=fields)


def _render_object(value: Any, variables: dict[str, Any], path: str, cap: int) -> Any:
    if isinstance(value, str):
        return _render_text(value, variables, path, cap, False)
    if isinstance(value, Mapping):
        return {k: _render_object(v, variables, f"{path}.{k}", cap) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_object(v, variables, f"{path}[{i}]", cap) for i, v in enumerate(value)]
    return value


def _render_text(source: Any, variables: dict[str, Any], path: str, cap: int, html: bool) -> str:
    if not isinstance(source, str):
        raise RenderError("not a string", field=path)
    current = budget()
    try:
        started = time.thread_time()
        template = _compile(source, html)
        # Compiling (once per source, then cached) is not template work: keep it off the clock.
        current.exclude(time.thread_time() - started)
        parts: list[str] = []
        size = 0
        for chunk in template.generate(variables):
            current.tick()
            size += len(chunk)
            if size > cap:
                raise CapExceeded(f"output over {cap} characters")
            parts.append(chunk)
        return "".join(parts)
    except TemplateSyntaxError as err:
        raise RenderError(f"syntax error: {err.message}", field=path, line=err.lineno) from None
    except SecurityError as err:
        raise RenderError(f"sandbox violation: {err}", field=path, line=_line(err)) from None
    except CapExceeded as err:
        raise RenderError(f"limit exceeded: {err}", field=path, line=_line(err)) from None
    except OverflowError as err:  # the sandbox's range() cap, huge floats
        raise RenderError(f"limit exceeded: {err}", field=path, line=_line(err)) from None
    except UndefinedError as err:
        raise RenderError(f"undefined value: {err}", field=path, line=_line(err)) from None
    except RecursionError:
        raise RenderError("limit exceeded: recursion too deep", field=path) from None
    except MemoryError:
        raise RenderError("limit exceeded: out of memory", field=path) from None
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
        raise RenderError(reason, field=path, line=_line(err)) from None


def _line(err: BaseException) -> int | None:
    """The template line of a runtime error, from the traceback Jinja rewrites."""
    line = None
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
