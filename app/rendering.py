"""Sandboxed Jinja2 rendering of message templates, with work, time and size caps.

This module does no I/O and touches no Flask or database state: the preview endpoint and the
delivery workers hand it a template's `channels` and a context dict, and get text back or a
`RenderError` carrying a reason. Nothing else ever escapes `render`.

Caps (see `RenderLimits`): 100,000 sandbox operations (attribute and item lookups, calls,
filters, intercepted operators, output chunks) and 200 ms of wall clock per `render` call;
intermediate values of at most 1,000,000 characters or items; output per field of 64 K
characters, except `email.html` (256 K) and `sms.body` (1,600, the common carrier maximum for a
concatenated SMS). `range` is capped by the sandbox at 100,000 items. Width-like arguments
(`center`, `indent`, `%10000s`, `{:>10000}`) are capped at 10,000.

These bound mistakes and casual abuse. They are checked between Python operations, so a single
operation on values within the caps still runs to its end, and nested literal structures can
still grow memory: run the workers under a container or RLIMIT_AS memory limit as well.
"""

from __future__ import annotations

import functools
import math
import re
import string
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, pass_context
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment


@dataclass(frozen=True)
class ChannelSpec:
    """What a channel's content holds: its fields, which are required, caps and escaping."""

    fields: tuple[str, ...]
    # Each group needs at least one non-blank field: (("subject",), ("html", "text")).
    required: tuple[tuple[str, ...], ...]
    html_fields: frozenset[str] = frozenset()
    # Fields holding a JSON object whose string values (at any depth) are templates.
    object_fields: frozenset[str] = frozenset()
    max_chars: Mapping[str, int] = field(default_factory=dict)


# Stored in the database as keys of `templates.channels`: never rename.
CHANNELS: dict[str, ChannelSpec] = {
    "push": ChannelSpec(
        fields=("title", "body", "url", "icon", "image"), required=(("title", "body"),)
    ),
    "email": ChannelSpec(
        fields=("subject", "html", "text"),
        required=(("subject",), ("html", "text")),
        html_fields=frozenset({"html"}),
        max_chars={"html": 262_144},
    ),
    "sms": ChannelSpec(fields=("body",), required=(("body",),), max_chars={"body": 1600}),
    "inapp": ChannelSpec(
        fields=("title", "body", "url", "data"),
        required=(("title", "body"),),
        object_fields=frozenset({"data"}),
    ),
}


@dataclass(frozen=True)
class RenderLimits:
    """The caps of one `render` call."""

    max_ops: int = 100_000
    max_seconds: float = 0.2
    max_value_size: int = 1_000_000
    max_field_chars: int = 65_536
    max_width: int = 10_000


DEFAULT_LIMITS = RenderLimits()


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


class _CapExceeded(Exception):
    """Raised inside the sandbox when a cap is hit; `render` turns it into a RenderError."""


class _Budget:
    """Work and time left for the current `render` call."""

    __slots__ = ("deadline", "limits", "ops")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.ops = 0
        self.deadline = time.monotonic() + limits.max_seconds

    def tick(self) -> None:
        self.ops += 1
        if self.ops > self.limits.max_ops:
            raise _CapExceeded(f"more than {self.limits.max_ops} template operations")
        if time.monotonic() > self.deadline:
            raise _CapExceeded(f"rendering took over {self.limits.max_seconds * 1000:.0f} ms")


# Set for the duration of a render; the sandbox hooks read it (thread- and task-local).
_BUDGET: ContextVar[_Budget | None] = ContextVar("cairn_render_budget", default=None)
_UNBOUNDED = _Budget(RenderLimits(max_ops=2**62, max_seconds=1e9))


def _budget() -> _Budget:
    return _BUDGET.get() or _UNBOUNDED


def _sized(value: Any) -> Any:
    """`value`, unless it is a string or container over the size cap."""
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        cap = _budget().limits.max_value_size
        if len(value) > cap:
            raise _CapExceeded(f"a value of {len(value)} characters or items (cap {cap})")
    return value


def _check_size(estimate: float, what: str) -> None:
    cap = _budget().limits.max_value_size
    if estimate > cap:
        raise _CapExceeded(f"{what} would make {int(estimate)} characters or items (cap {cap})")


def _check_width(width: Any, what: str) -> None:
    cap = _budget().limits.max_width
    if isinstance(width, int) and width > cap:
        raise _CapExceeded(f"{what} width {width} is over {cap}")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_percent_format(fmt: str) -> None:
    for match in _PERCENT_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*":
                raise _CapExceeded("'*' widths are not allowed in % formats")
            if part:
                _check_width(int(part), "% format")


def _check_brace_format(fmt: str) -> None:
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises its own error for this string
    for _literal, _name, spec, _conversion in parsed:
        if not spec:
            continue
        if "{" in spec:
            raise _CapExceeded("nested replacement fields in a format spec are not allowed")
        for digits in _DIGITS.findall(spec):
            _check_width(int(digits), "format spec")


def _str_len(items: Iterable[Any]) -> int:
    return sum(len(i) if isinstance(i, str) else 20 for i in items)


def _check_join(sep: Any, items: Any) -> None:
    if isinstance(items, list | tuple) and isinstance(sep, str):
        _check_size(_str_len(items) + len(sep) * max(0, len(items) - 1), "join")


def _check_replace(value: Any, old: Any, new: Any) -> None:
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        count = value.count(old) if old else len(value) + 1
        _check_size(len(value) + count * max(0, len(new) - len(old)), "replace")


# str methods whose one argument can blow up memory; templates use the filters instead.
_BLOCKED_STR_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus counted operations and size checks."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape, undefined=ChainableUndefined)
        # lipsum(n) would make output of any size from a one-line template.
        self.globals.pop("lipsum", None)
        self.filters = {name: _counted(f) for name, f in self.filters.items()}
        self.filters.update(
            center=_counted(_checked_center),
            indent=_counted(_checked_indent),
            format=_counted(_checked_format),
            batch=_counted(_checked_batch),
            slice=_counted(_checked_slice),
            replace=_counted(_checked_replace),
            join=_counted(_checked_join),
            localdatetime=_counted(localdatetime),
            localdate=_counted(localdate),
        )

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _BLOCKED_STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # The stock sandbox returns an Undefined that ChainableUndefined would render as "":
        # an unsafe access must fail loudly instead.
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().tick()
        # Data first: `params.items` is the "items" parameter when there is one, not dict.items.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return _sized(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget().tick()
        return _sized(super().getitem(obj, argument))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(obj, "__name__", "")
            if name == "join" and args:
                _check_join(owner, args[0])
            elif name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
        return _sized(super().call(context, obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _budget().tick()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    _check_size(len(seq) * times, "repetition")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
                bits = right * math.log2(abs(left))
                if bits > 4096:
                    raise _CapExceeded(f"a power of about {int(bits)} bits (cap 4096)")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        elif operator == "+" and isinstance(left, str | list | tuple):
            right_len = len(right) if isinstance(right, str | list | tuple) else 0
            _check_size(len(left) + right_len, "concatenation")
        return _sized(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_brace_format(fmt)
            result: str = _sized(wrapped(*args, **kwargs))
            return result

        return checked


def _counted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that counts as an operation and whose result is size-checked."""

    @functools.wraps(fn)  # keeps jinja_pass_arg, so context-taking filters still get it
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        return _sized(fn(*args, **kwargs))

    return wrapper


def _default_filter(name: str) -> Callable[..., Any]:
    from jinja2.filters import FILTERS

    found: Callable[..., Any] = FILTERS[name]
    return found


_CENTER = _default_filter("center")
_INDENT = _default_filter("indent")
_FORMAT = _default_filter("format")
_BATCH = _default_filter("batch")
_SLICE = _default_filter("slice")
_REPLACE = _default_filter("replace")
_JOIN = _default_filter("join")


def _checked_center(value: Any, width: int = 80) -> Any:
    _check_width(width, "center")
    return _CENTER(value, width)


def _checked_indent(value: Any, width: int | str = 4, *args: Any, **kwargs: Any) -> Any:
    _check_width(width, "indent")
    if isinstance(width, str):
        _check_size(len(width) * (str(value).count("\n") + 1), "indent")
    return _INDENT(value, width, *args, **kwargs)


def _checked_format(value: Any, *args: Any, **kwargs: Any) -> Any:
    _check_percent_format(str(value))
    return _FORMAT(value, *args, **kwargs)


def _checked_batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
    _check_width(linecount, "batch")
    return list(_BATCH(value, linecount, fill_with))


@functools.wraps(_SLICE)
def _checked_slice(eval_ctx: Any, value: Any, slices: int, fill_with: Any = None) -> Any:
    _check_width(slices, "slice")
    return list(_SLICE(eval_ctx, value, slices, fill_with))


@functools.wraps(_REPLACE)
def _checked_replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> Any:
    _check_replace(str(s), str(old), str(new))
    return _REPLACE(eval_ctx, s, old, new, count)


@functools.wraps(_JOIN)
def _checked_join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
    if attribute is None:
        value = list(value) if not isinstance(value, list | tuple) else value
        _check_join(d, value)
    return _JOIN(eval_ctx, value, d, attribute)


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


_TEXT_ENV = _Sandbox(autoescape=False)
_HTML_ENV = _Sandbox(autoescape=True)


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
) -> dict[str, Any]:
    """The render context: `user`, `params` (also as `data`), `event`, `campaign`."""
    context: dict[str, Any] = {"user": dict(user or {}), "params": dict(params or {})}
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
    token = _BUDGET.set(_Budget(limits))
    try:
        fields: dict[str, Any] = {}
        for name, value in content.items():
            path = f"{channel}.{used}.{name}"
            cap = spec.max_chars.get(name, limits.max_field_chars)
            if name in spec.object_fields:
                fields[name] = _render_object(value, variables, path, cap)
            else:
                fields[name] = _render_text(value, variables, path, cap, name in spec.html_fields)
    finally:
        _BUDGET.reset(token)
    if channel == "email" and isinstance(fields.get("subject"), str):
        # A subject is one header line: a newline from the data must not start another.
        fields["subject"] = re.sub(r"[\r\n]+", " ", fields["subject"]).strip()
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
    budget = _budget()
    try:
        started = time.monotonic()
        template = _compile(source, html)
        # Compiling (once per source, then cached) is not template work: keep it off the clock.
        budget.deadline += time.monotonic() - started
        parts: list[str] = []
        size = 0
        for chunk in template.generate(variables):
            budget.tick()
            size += len(chunk)
            if size > cap:
                raise _CapExceeded(f"output over {cap} characters")
            parts.append(chunk)
        return "".join(parts)
    except TemplateSyntaxError as err:
        raise RenderError(f"syntax error: {err.message}", field=path, line=err.lineno) from None
    except SecurityError as err:
        raise RenderError(f"sandbox violation: {err}", field=path, line=_line(err)) from None
    except _CapExceeded as err:
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
