"""JSON text Cairn can store and answer: strict parsing for input, valid JSON for output.

`loads` holds input to rules that must hold before any value is stored:
- nesting is bounded on the raw bytes (`MAX_DEPTH`) before `json.loads`, which recurses;
- numbers are finite (`NaN`, `Infinity`, `1e999` are JSON neither to SQLite nor PostgreSQL);
- strings and keys hold no lone UTF-16 surrogate (not encodable as UTF-8);
- below its top level, one item (a profile, an event, a filter) nests at most
  `MAX_VALUE_DEPTH` levels.
Cheap byte checks decide whether the slower walk over the parsed value (`value_problems`)
has to run at all. `CairnJSONProvider` writes a non-finite float that an earlier version
stored as null rather than as the invalid token `NaN`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from flask.json.provider import DefaultJSONProvider

MAX_DEPTH = 64
MAX_VALUE_DEPTH = 32

_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_OPEN_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONTextError(ValueError):
    """The text is not JSON Cairn accepts; `reason` is short enough for an `errors` entry."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def loads(raw: bytes | str) -> tuple[Any, bool]:
    """Parse under the text rules: (value, suspect), or JSONTextError.

    When `suspect` is False, `value_problems(value)` would find nothing: skip the walk.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    else:
        encoding = json.detect_encoding(raw)
        if encoding != "utf-8":
            # The byte checks below read UTF-8; other encodings are rare enough to transcode.
            try:
                text = raw.decode(encoding, "surrogatepass")
            except UnicodeError:
                raise JSONTextError("Body is not valid text", "malformed JSON") from None
            raw = text.removeprefix("\ufeff").encode("utf-8", "surrogatepass")
    depth = structure_depth(raw)
    if depth < 0:
        raise JSONTextError("Malformed JSON: unbalanced brackets", "malformed JSON")
    if depth > MAX_DEPTH:
        reason = f"nested deeper than {MAX_DEPTH} levels"
        raise JSONTextError(f"JSON {reason}", reason)
    non_finite = False

    def constant(name: str) -> float:
        nonlocal non_finite
        non_finite = True
        return float(name)

    def number(text: str) -> float:
        nonlocal non_finite
        value = float(text)
        if math.isinf(value):
            non_finite = True
        return value

    try:
        value = json.loads(raw, parse_constant=constant, parse_float=number)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise JSONTextError(f"Malformed JSON: {err}", "malformed JSON") from None
    return value, non_finite or depth > MAX_VALUE_DEPTH or _may_hold_surrogates(raw)


def _may_hold_surrogates(raw: bytes) -> bool:
    # `\ud` / `\uD` escape a UTF-16 code unit that may be a surrogate; 0xED leads the UTF-8
    # bytes of U+D000-U+DFFF, surrogates included (json.loads decodes them with surrogatepass).
    # One-byte searches first: they are memchr-fast, and most bodies have no backslash.
    return b"\xed" in raw or (b"\\" in raw and (b"\\ud" in raw or b"\\uD" in raw))


def value_problems(value: Any, *, limit: int = 10) -> dict[str, list[str]]:
    """The value rules broken inside `value`, by field path (at most `limit` of them)."""
    problems: dict[str, list[str]] = {}
    for path, reason in _walk(value):
        problems.setdefault(path or "body", [reason])
        if len(problems) >= limit:
            break
    return problems


def _walk(value: Any) -> Iterator[tuple[str, str]]:
    # Iterative, so a deep value is reported instead of exhausting the stack; the value's
    # own level is 0, its fields' values are level 1 (the first counted level).
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, level = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                yield path, "contains a lone UTF-16 surrogate"
        elif isinstance(item, float):
            if not math.isfinite(item):
                yield path, "must be a finite number"
        elif isinstance(item, dict | list):
            if level > MAX_VALUE_DEPTH:
                yield path, f"nested deeper than {MAX_VALUE_DEPTH} levels"
                continue
            children: list[tuple[Any, str, int]] = []
            if isinstance(item, dict):
                for key, child in item.items():
                    here = f"{path}.{key}" if path else key
                    if not key.isascii() and _SURROGATE.search(key):
                        yield here, "name contains a lone UTF-16 surrogate"
                    children.append((child, here, level + 1))
            else:
                for index, child in enumerate(item):
                    children.append((child, f"{path}[{index}]" if path else str(index), level + 1))
            stack.extend(reversed(children))


def structure_depth(raw: bytes) -> int:
    """How deep the arrays and objects of UTF-8 JSON nest, from its bytes, without parsing.

    Bytes a string holds do not count (escaped quotes and backslashes are dropped first, then
    the strings). Up to its first error, invalid JSON reads the same here as in `json.loads`,
    so a text whose brackets cannot balance (-1) is malformed. Stops past MAX_DEPTH.
    """
    if b"\\" in raw:
        # Left to right, `\\` pairs first: what follows an odd backslash is escaped.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Removing `""` keeps every bracket where it was: inside a string or outside all.
    shape = raw.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in shape:
        shape = b"".join(shape.split(b'"')[::2])  # outside strings: the even pieces
    shape = shape.translate(_OPEN_AS_SQUARE)
    depth = 0
    while shape:
        # Each pass removes the innermost pairs, so the passes count the levels.
        inner = shape.replace(b"[]", b"")
        if len(inner) == len(shape):
            return -1
        shape = inner
        depth += 1
        if depth > MAX_DEPTH:
            return depth
    return depth


def finite(value: Any) -> Any:
    """`value` with every non-finite float (NaN, ±Infinity) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


class CairnJSONProvider(DefaultJSONProvider):
    """Flask's JSON, writing non-finite numbers as null instead of invalid `NaN`/`Infinity`."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """JSON text of `obj`; the walk that nulls non-finite floats runs only when needed."""
        kwargs.setdefault("allow_nan", False)
        try:
            return super().dumps(obj, **kwargs)
        except ValueError:
            return super().dumps(finite(obj), **kwargs)
