"""Reading the console's plain form fields into API values: a duration typed as `2h` / `7d` (or
seconds), a whole number. A bad value adds its message under the API's field name."""

from __future__ import annotations

from journeys.durations import parse_duration

Errors = dict[str, list[str]]


def read_seconds(raw: str | None, field: str, errors: Errors) -> int | None:
    """`90`, `15m`, `2h`, `7d`, `1w` → seconds; empty → None; anything else is an error."""
    text = (raw or "").strip()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        return int(parse_duration(text).total_seconds())
    except ValueError as err:
        errors.setdefault(field, []).append(str(err))
        return None


def read_int(raw: str | None, field: str, errors: Errors) -> int | None:
    """A whole number (a sign allowed); empty → None; anything else is an error."""
    text = (raw or "").strip()
    if not text:
        return None
    if not text.lstrip("-").isdigit():
        errors.setdefault(field, []).append("a whole number")
        return None
    return int(text)
