"""The segment filter language: parse three input forms to one condition tree, evaluate it.

This module does no I/O and touches no globals. `app.segment_sql` compiles the same
tree to SQL; the rules below are the contract both evaluators implement, and a property test
holds them to it (tests/journeys/test_filter_sql_agreement.py).

Input forms
-----------
- String form `plan:pro,role:admin|owner,title:"VP, Sales"`: comma = AND, `|` = any of,
  surrounding whitespace trimmed, double quotes for values holding `, : | "` (escapes `\\"`
  and `\\\\`). Each clause becomes a `textEq` / `textIn` leaf. Errors name the 0-based
  character position and the clause path (`[1].value`).
- Object form `{"plan": "pro", "seats": 3, "role": ["admin", "owner"]}`: AND of typed `eq`
  (a list = `in`). A dict is a tree node instead when it is exactly `{"all"|"any"|"not": ...}`
  or has an `attr`, `event`, `audience` or `channel` key.
- JSON tree: `all`, `any`, `not` and the leaves below. A list at the top level is `all`.

Fields
------
`email, phone, language, timezone, userId` are the profile's string columns, `createdAt,
lastSeenAt` its timestamps; every other name is a key of the `attributes` JSON (flat: `a.b` is
the key "a.b"). Inside an event's `where`, every name is a key of the event's properties.
Names match `[A-Za-z0-9_][A-Za-z0-9_.-]*` (at most 128 characters).

Type rules
----------
1. Missing: an absent key, a JSON null and a NULL column are all *missing*. A missing field
   matches only `notExists` (and so `not(...)` of anything else): `neq`, `nin` and every
   other operator are false on it.
2. Typed equality (`eq neq in nin`, object form, `contains` on list elements): a string equals
   only an equal string (case-sensitive, no normalisation); a number only a number, compared
   numerically (`10` equals `10.0`); a boolean only the same boolean. Booleans are not numbers.
   Arrays and objects equal nothing.
3. Text equality (`textEq textIn`, the string form): the attribute's string value equals the
   text; a number matches when the text is a JSON number literal of equal value (`3` matches
   `3`, `3.0` and `"3"`; `3.0` matches `3` and `"3.0"`, not `"3"`); a boolean matches the
   text `true` / `false`. (Numeric, not textual, on purpose: PostgreSQL normalises 1e20 and
   keeps 3.0, SQLite prints 1.0e+20: no canonical JSON text survives both.)
4. Numbers: `gt gte lt lte between` (inclusive [lo, hi]) compare numbers only; strings that
   look like numbers do not match. Filter values are finite, integers within +-2**53.
5. `contains`: on a string, case-sensitive substring of a string value; on an array, some
   element typed-equal (rule 2) to the value; false on anything else. `startsWith`: string
   prefix, case-sensitive.
6. Dates (`before after withinLast moreThan`): the value is a timestamp column or a string in
   the ISO 8601 subset of `journeys.timestamps` (naive = UTC); anything else never matches.
   `before x` is `t < x`, `after x` is `t > x`, `withinLast d` is `now - d <= t <= now`,
   `moreThan d` is `t < now - d` (so future dates match neither). Durations: `\\d+(s|m|h|d|w)`.
7. Events: count the user's non-erased events of that name, within `[now - within, now]` when
   `within` is given (else all of them), whose properties satisfy `where`. `performed` holds
   when the count satisfies every `count` rule (default `{"gte": 1}`); `notPerformed` when it
   is 0.
8. Audiences: the value (an id or a name, always a string) is one of the user's current
   memberships, given as strings, ids and names alike.
9. Reachability: the channel is one of the user's `reachable` channels. The caller computes
   that set with its channel registry (`workers.channels.reachable_channels`: email / sms /
   inapp need a non-empty email / phone / userId; push a device), and the SQL compiler gets
   the same registry's clauses, so both evaluators agree by construction.
10. `all []` is true, `any []` false. Limits: depth 10, 200 nodes, lists of 1000, strings of
    1000 characters.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

from journeys.durations import parse_duration
from journeys.timestamps import parse_timestamp

Scalar: TypeAlias = str | int | float | bool
Value: TypeAlias = Scalar | tuple[Scalar, ...] | None

MAX_DEPTH = 10
MAX_NODES = 200
MAX_LIST = 1000
MAX_STRING = 1000
MAX_NAME = 255
MAX_SAFE_INTEGER = 2**53
MAX_STRING_FORM = 200_000

ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_NUMBER_LITERAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

STRING_FIELDS = {
    "email": "email",
    "phone": "phone",
    "language": "language",
    "timezone": "timezone",
    "userId": "user_id",
}
TIMESTAMP_FIELDS = {"createdAt": "created_at", "lastSeenAt": "last_seen_at"}
# The channel names the filter language accepts (stored in segment filters: never rename);
# tests/workers/test_channels.py holds them equal to the channel registry's.
CHANNELS = ("email", "sms", "push", "inapp")
EVENT_OPS = ("performed", "notPerformed")
COUNT_OPS = ("eq", "gt", "gte", "lt", "lte")
AUDIENCE_OPS = ("in", "notIn")


def has_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character anywhere (keys included).

    PostgreSQL stores no NUL in JSONB or text, so callers refuse it as bad input (a 422) before
    it reaches the database. A stack, not recursion: the value's nesting is not bounded yet.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def error_path(field: str, path: str) -> str:
    """A filter error's node path under the request field it came in (`segment.all[1].op`)."""
    if not path:
        return field
    return f"{field}{path}" if path.startswith("[") else f"{field}.{path}"


class FilterError(ValueError):
    """A filter that does not parse or validate; `path` names the offending node."""

    def __init__(self, message: str, path: str = "", position: int | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.message = message
        self.path = path
        self.position = position


# --- the condition tree --------------------------------------------------------------------


@dataclass(frozen=True)
class AllOf:
    """True when every child is (true when empty)."""

    children: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    """True when some child is (false when empty)."""

    children: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    """Negation of its child."""

    child: Condition


@dataclass(frozen=True)
class AttributeCondition:
    """A test on a profile field or attribute (or, inside `where`, an event property)."""

    attr: str
    op: str
    value: Value = None


@dataclass(frozen=True)
class EventCondition:
    """How often the user performed an event, in a window, with matching properties."""

    event: str
    op: str
    count: tuple[tuple[str, int], ...] = (("gte", 1),)
    within: str | None = None
    where: Condition | None = None


@dataclass(frozen=True)
class AudienceCondition:
    """Current membership of an audience, by id or by name."""

    audience: str
    op: str


@dataclass(frozen=True)
class ChannelCondition:
    """Whether the user can be reached on a channel."""

    channel: str
    op: str = "reachable"


Condition: TypeAlias = (
    AllOf | AnyOf | Not | AttributeCondition | EventCondition | AudienceCondition | ChannelCondition
)


# --- facts the evaluator reads -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EventFact:
    """One of the user's (non-erased) events."""

    name: str
    timestamp: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class UserFacts:
    """Everything `evaluate` may look at for one user, loaded by the caller."""

    now: datetime
    user_id: str | None = None
    email: str | None = None
    phone: str | None = None
    language: str | None = None
    timezone: str | None = None
    created_at: datetime | None = None
    last_seen_at: datetime | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    audiences: frozenset[str] = frozenset()
    # The channels the user has an address on, from the caller's channel registry.
    reachable: frozenset[str] = frozenset()
    events: Sequence[EventFact] = ()


# --- operators -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _OpSpec:
    """What an attribute operator takes and how it matches a present value."""

    kind: str  # the value kind it takes, see _VALUE_PARSERS
    match: Callable[[Any, Value, datetime], bool]
    string_fields: bool  # allowed on the profile's string columns
    timestamp_fields: bool  # allowed on createdAt / lastSeenAt


def is_number(value: object) -> bool:
    """Whether a JSON value is a number (booleans are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def typed_equal(actual: object, expected: Scalar) -> bool:
    """Rule 2: equality of a stored value with a filter scalar, types kept apart."""
    if isinstance(expected, bool):
        return isinstance(actual, bool) and actual == expected
    if isinstance(expected, str):
        return isinstance(actual, str) and actual == expected
    return is_number(actual) and actual == expected


def number_literal(text: str) -> int | float | None:
    """The number a text spells as a JSON number literal within the filter range, or None."""
    if _NUMBER_LITERAL.fullmatch(text) is None:
        return None
    if re.fullmatch(r"-?[0-9]+", text):
        number = int(text)
        return number if abs(number) <= MAX_SAFE_INTEGER else None
    real = float(text)
    return real if math.isfinite(real) else None


def text_equal(actual: object, text: str) -> bool:
    """Rule 3: equality of a stored value with the text of the string form."""
    if isinstance(actual, str):
        return actual == text
    if isinstance(actual, bool):
        return text == ("true" if actual else "false")
    if is_number(actual):
        number = number_literal(text)
        return number is not None and actual == number
    return False


@functools.lru_cache(maxsize=4096)
def _parse_timestamp_cached(text: str) -> datetime | None:
    return parse_timestamp(text)


def _moment(actual: object) -> datetime | None:
    if isinstance(actual, datetime):
        return actual.replace(tzinfo=UTC) if actual.tzinfo is None else actual.astimezone(UTC)
    if isinstance(actual, str) and len(actual) <= 40:
        return _parse_timestamp_cached(actual)
    return None


def _scalars(value: Value) -> tuple[Scalar, ...]:
    return value if isinstance(value, tuple) else ()


def _number(value: Value) -> float | int:
    assert is_number(value)
    return value  # type: ignore[return-value]


def _string(value: Value) -> str:
    assert isinstance(value, str)
    return value


def _match_contains(actual: Any, value: Value, _now: datetime) -> bool:
    if isinstance(actual, str):
        return isinstance(value, str) and value in actual
    if isinstance(actual, list | tuple):
        return any(typed_equal(element, _scalar(value)) for element in actual)
    return False


def _compare_numbers(
    test: Callable[[float | int, float | int], bool],
) -> Callable[[Any, Value, datetime], bool]:
    def match(actual: Any, value: Value, _now: datetime) -> bool:
        return is_number(actual) and test(actual, _number(value))

    return match


def _match_between(actual: Any, value: Value, _now: datetime) -> bool:
    low, high = _scalars(value)
    return is_number(actual) and _number(low) <= actual <= _number(high)


def _compare_moment(
    test: Callable[[datetime, datetime], bool],
) -> Callable[[Any, Value, datetime], bool]:
    def match(actual: Any, value: Value, _now: datetime) -> bool:
        moment = _moment(actual)
        bound = _parse_timestamp_cached(_string(value))
        return moment is not None and bound is not None and test(moment, bound)

    return match


def _match_within_last(actual: Any, value: Value, now: datetime) -> bool:
    moment = _moment(actual)
    return moment is not None and now - parse_duration(_string(value)) <= moment <= now


def _match_more_than(actual: Any, value: Value, now: datetime) -> bool:
    moment = _moment(actual)
    return moment is not None and moment < now - parse_duration(_string(value))


def _op(
    kind: str,
    match: Callable[[Any, Value, datetime], bool],
    *,
    strings: bool = False,
    timestamps: bool = False,
) -> _OpSpec:
    return _OpSpec(kind, match, strings, timestamps)


def _always(_actual: Any, _value: Value, _now: datetime) -> bool:
    return True


def _scalar(value: Value) -> Scalar:
    assert value is not None and not isinstance(value, tuple)
    return value


def _match_eq(actual: Any, value: Value, _now: datetime) -> bool:
    return typed_equal(actual, _scalar(value))


def _match_neq(actual: Any, value: Value, _now: datetime) -> bool:
    return not typed_equal(actual, _scalar(value))


def _match_in(actual: Any, value: Value, _now: datetime) -> bool:
    return any(typed_equal(actual, item) for item in _scalars(value))


def _match_nin(actual: Any, value: Value, _now: datetime) -> bool:
    return not _match_in(actual, value, _now)


def _match_text_eq(actual: Any, value: Value, _now: datetime) -> bool:
    return text_equal(actual, _string(value))


def _match_text_in(actual: Any, value: Value, _now: datetime) -> bool:
    return any(text_equal(actual, _string(item)) for item in _scalars(value))


def _match_starts_with(actual: Any, value: Value, _now: datetime) -> bool:
    return isinstance(actual, str) and actual.startswith(_string(value))


# exists / notExists are decided on presence alone (rule 1), see _eval_attribute.
ATTRIBUTE_OPS: dict[str, _OpSpec] = {
    "exists": _op("none", _always, strings=True, timestamps=True),
    "notExists": _op("none", _always, strings=True, timestamps=True),
    "eq": _op("scalar", _match_eq, strings=True),
    "neq": _op("scalar", _match_neq, strings=True),
    "in": _op("scalars", _match_in, strings=True),
    "nin": _op("scalars", _match_nin, strings=True),
    "textEq": _op("text", _match_text_eq, strings=True),
    "textIn": _op("texts", _match_text_in, strings=True),
    "contains": _op("scalar", _match_contains, strings=True),
    "startsWith": _op("string", _match_starts_with, strings=True),
    "gt": _op("number", _compare_numbers(lambda a, b: a > b)),
    "gte": _op("number", _compare_numbers(lambda a, b: a >= b)),
    "lt": _op("number", _compare_numbers(lambda a, b: a < b)),
    "lte": _op("number", _compare_numbers(lambda a, b: a <= b)),
    "between": _op("range", _match_between),
    "before": _op("timestamp", _compare_moment(lambda a, b: a < b), timestamps=True),
    "after": _op("timestamp", _compare_moment(lambda a, b: a > b), timestamps=True),
    "withinLast": _op("duration", _match_within_last, timestamps=True),
    "moreThan": _op("duration", _match_more_than, timestamps=True),
}

TEXT_OPS = ("textEq", "textIn")
TIMESTAMP_OPS = ("before", "after", "withinLast", "moreThan")


# --- parsing -------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_tree_node(raw: Mapping[str, Any]) -> bool:
    if len(raw) == 1 and next(iter(raw)) in ("all", "any", "not"):
        return True
    return any(key in raw for key in ("attr", "event", "audience", "channel"))


def _check_scalar(raw: object, path: str) -> Scalar:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        if len(raw) > MAX_STRING:
            raise FilterError(f"strings are limited to {MAX_STRING} characters", path)
        return raw
    if isinstance(raw, int):
        if abs(raw) > MAX_SAFE_INTEGER:
            raise FilterError("integers are limited to +-2**53", path)
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise FilterError("numbers must be finite", path)
        return raw
    raise FilterError("expected a string, number or boolean", path)


def _check_list(raw: object, path: str) -> list[Any]:
    if not isinstance(raw, list | tuple):
        raise FilterError("expected a list", path)
    if len(raw) > MAX_LIST:
        raise FilterError(f"lists are limited to {MAX_LIST} values", path)
    return list(raw)


def _whole_number(raw: object) -> int | None:
    """A JSON integer as JSON Schema counts them (`3` and `3.0`, never `true`), or None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return None


def _value_none(raw: object, path: str) -> Value:
    if raw is not None:
        raise FilterError("this operator takes no value", path)
    return None


def _value_scalar(raw: object, path: str) -> Value:
    if isinstance(raw, list | tuple):
        raise FilterError("expected a single value (use in / nin for a list)", path)
    return _check_scalar(raw, path)


def _value_scalars(raw: object, path: str) -> Value:
    items = _check_list(raw, path)
    return tuple(_check_scalar(item, f"{path}[{i}]") for i, item in enumerate(items))


def _check_string(raw: object, path: str) -> str:
    if not isinstance(raw, str):
        raise FilterError("expected a string", path)
    if len(raw) > MAX_STRING:
        raise FilterError(f"strings are limited to {MAX_STRING} characters", path)
    return raw


def _value_string(raw: object, path: str) -> Value:
    return _check_string(raw, path)


def _value_strings(raw: object, path: str) -> Value:
    items = _check_list(raw, path)
    return tuple(_check_string(item, f"{path}[{i}]") for i, item in enumerate(items))


def _value_number(raw: object, path: str) -> Value:
    if not is_number(raw):
        raise FilterError("expected a number", path)
    return _check_scalar(raw, path)


def _value_range(raw: object, path: str) -> Value:
    items = _check_list(raw, path)
    if len(items) != 2:
        raise FilterError("expected [low, high]", path)
    low, high = (_value_number(item, f"{path}[{i}]") for i, item in enumerate(items))
    if _number(low) > _number(high):
        raise FilterError("low is greater than high", path)
    return (_number(low), _number(high))


def _value_timestamp(raw: object, path: str) -> Value:
    if not isinstance(raw, str) or parse_timestamp(raw) is None:
        raise FilterError(
            "expected an ISO 8601 date or timestamp (2026-01-31, 2026-01-31T09:30:00Z)", path
        )
    return raw


def _value_duration(raw: object, path: str) -> Value:
    return _duration(raw, path)


def _duration(raw: object, path: str) -> str:
    if not isinstance(raw, str):
        raise FilterError("expected a duration like '7d'", path)
    try:
        parse_duration(raw)
    except ValueError as error:
        raise FilterError(str(error), path) from None
    return raw


_VALUE_PARSERS: dict[str, Callable[[object, str], Value]] = {
    "none": _value_none,
    "scalar": _value_scalar,
    "scalars": _value_scalars,
    "text": _value_string,
    "texts": _value_strings,
    "string": _value_string,
    "number": _value_number,
    "range": _value_range,
    "timestamp": _value_timestamp,
    "duration": _value_duration,
}


def _check_keys(raw: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in raw:
        if key not in allowed:
            raise FilterError(f"unknown key {key!r}; expected one of {', '.join(allowed)}", path)


def _name(raw: object, path: str, what: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise FilterError(f"{what} must be a non-empty string", path)
    if len(raw) > MAX_NAME:
        raise FilterError(f"{what} is limited to {MAX_NAME} characters", path)
    return raw


def _attribute_name(raw: object, path: str) -> str:
    if not isinstance(raw, str) or ATTRIBUTE_NAME.fullmatch(raw) is None:
        raise FilterError(
            "a field name is 1-128 characters of letters, digits, '_', '.', '-' "
            "and does not start with '.' or '-'",
            path,
        )
    return raw


def attribute_condition(
    attr: str, op: str, raw_value: object, *, path: str = "", in_event: bool = False
) -> AttributeCondition:
    """Validate and build one attribute leaf (the field, the operator and its value)."""
    name = _attribute_name(attr, _join(path, "attr"))
    spec = ATTRIBUTE_OPS.get(op)
    if spec is None:
        raise FilterError(
            f"unknown operator {op!r}; expected one of {', '.join(ATTRIBUTE_OPS)}",
            _join(path, "op"),
        )
    value = _VALUE_PARSERS[spec.kind](raw_value, _join(path, "value"))
    if not in_event and name in STRING_FIELDS:
        if not spec.string_fields:
            raise FilterError(f"{name} is a string field; {op} does not apply", _join(path, "op"))
        scalars = value if isinstance(value, tuple) else (value,)
        if value is not None and not all(isinstance(item, str) for item in scalars):
            raise FilterError(
                f"{name} is a string field; compare it with strings", _join(path, "value")
            )
    if not in_event and name in TIMESTAMP_FIELDS and not spec.timestamp_fields:
        raise FilterError(
            f"{name} is a timestamp; use exists, notExists, before, after, withinLast or moreThan",
            _join(path, "op"),
        )
    return AttributeCondition(name, op, value)


class _TreeParser:
    """Recursive descent over the JSON tree, counting nodes as it goes."""

    def __init__(self) -> None:
        self.nodes = 0

    def count(self, path: str, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FilterError(f"a filter is limited to {MAX_NODES} conditions", path)
        if depth > MAX_DEPTH:
            raise FilterError(f"a filter is limited to {MAX_DEPTH} levels of nesting", path)

    def node(self, raw: object, path: str, depth: int, in_event: bool) -> Condition:
        self.count(path, depth)
        if isinstance(raw, list):
            return AllOf(self.children(raw, path, depth, in_event))
        if not isinstance(raw, dict):
            raise FilterError("expected a condition object", path)
        if not all(isinstance(key, str) for key in raw):
            raise FilterError("keys must be strings", path)
        if not _is_tree_node(raw):
            return self.object_form(raw, path, depth, in_event)
        group = next(iter(raw)) if len(raw) == 1 else None
        if group in ("all", "any"):
            children = self.children(raw[group], _join(path, group), depth, in_event)
            return AllOf(children) if group == "all" else AnyOf(children)
        if group == "not":
            return Not(self.node(raw["not"], _join(path, "not"), depth + 1, in_event))
        if "attr" in raw:
            _check_keys(raw, ("attr", "op", "value"), path)
            if "op" not in raw:
                raise FilterError("missing 'op'", path)
            if not isinstance(raw["op"], str):
                raise FilterError("op must be a string", _join(path, "op"))
            return attribute_condition(
                raw["attr"], raw["op"], raw.get("value"), path=path, in_event=in_event
            )
        if in_event:
            raise FilterError("only attribute conditions are allowed inside 'where'", path)
        if "event" in raw:
            return self.event(raw, path, depth)
        if "audience" in raw:
            return self.audience(raw, path)
        return self.channel(raw, path)

    def children(self, raw: object, path: str, depth: int, in_event: bool) -> tuple[Condition, ...]:
        items = _check_list(raw, path)
        return tuple(
            self.node(item, f"{path}[{i}]", depth + 1, in_event) for i, item in enumerate(items)
        )

    def object_form(
        self, raw: Mapping[str, Any], path: str, depth: int, in_event: bool
    ) -> Condition:
        leaves: list[Condition] = []
        for key, value in raw.items():
            leaf_path = _join(path, key)
            self.count(leaf_path, depth + 1)
            if value is None:
                raise FilterError("null is not a value; use notExists in a JSON tree", leaf_path)
            op = "in" if isinstance(value, list) else "eq"
            try:
                leaves.append(attribute_condition(key, op, value, in_event=in_event))
            except FilterError as error:
                # The object form has no "value" key: `role: [1, [2]]` fails at role[1].
                suffix = error.path.removeprefix("value") if error.path.startswith("value") else ""
                raise FilterError(error.message, leaf_path + suffix) from None
        return AllOf(tuple(leaves))

    def event(self, raw: Mapping[str, Any], path: str, depth: int) -> EventCondition:
        _check_keys(raw, ("event", "op", "count", "within", "where"), path)
        name = _name(raw["event"], _join(path, "event"), "event")
        op = raw.get("op", "performed")
        if op not in EVENT_OPS:
            raise FilterError("op must be performed or notPerformed", _join(path, "op"))
        count: tuple[tuple[str, int], ...] = (("gte", 1),)
        if "count" in raw:
            if op == "notPerformed":
                raise FilterError("notPerformed takes no count", _join(path, "count"))
            count = self.count_rules(raw["count"], _join(path, "count"))
        within = None
        if raw.get("within") is not None:
            within = _duration(raw["within"], _join(path, "within"))
        where = None
        if raw.get("where") is not None:
            where = self.node(raw["where"], _join(path, "where"), depth + 1, True)
        return EventCondition(name, op, count, within, where)

    @staticmethod
    def count_rules(raw: object, path: str) -> tuple[tuple[str, int], ...]:
        if not isinstance(raw, dict) or not raw:
            raise FilterError('expected an object like {"gte": 2}', path)
        counts: dict[str, int] = {}
        for key, value in raw.items():
            if key not in COUNT_OPS:
                raise FilterError(f"expected one of {', '.join(COUNT_OPS)}", _join(path, key))
            whole = _whole_number(value)
            if whole is None or not 0 <= whole <= 10**9:
                raise FilterError("expected a whole number from 0", _join(path, key))
            counts[key] = whole
        return tuple((key, counts[key]) for key in COUNT_OPS if key in counts)

    @staticmethod
    def audience(raw: Mapping[str, Any], path: str) -> AudienceCondition:
        _check_keys(raw, ("audience", "op"), path)
        audience = raw["audience"]
        whole = _whole_number(audience)
        if whole is not None and whole >= 0:
            audience = str(whole)
        audience = _name(audience, _join(path, "audience"), "audience")
        op = raw.get("op", "in")
        if op not in AUDIENCE_OPS:
            raise FilterError("op must be in or notIn", _join(path, "op"))
        return AudienceCondition(audience, op)

    @staticmethod
    def channel(raw: Mapping[str, Any], path: str) -> ChannelCondition:
        _check_keys(raw, ("channel", "op"), path)
        if raw["channel"] not in CHANNELS:
            raise FilterError(
                f"channel must be one of {', '.join(CHANNELS)}", _join(path, "channel")
            )
        if raw.get("op", "reachable") != "reachable":
            raise FilterError("op must be reachable", _join(path, "op"))
        return ChannelCondition(raw["channel"])


class _StringFormParser:
    """Scanner for `key:value|value,key:"quoted, value"`; positions are 0-based."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str, path: str, position: int) -> FilterError:
        return FilterError(f"{message} at position {position}", path, position)

    def parse(self) -> AllOf:
        text = self.text
        if not text.strip():
            return AllOf(())
        clauses: list[Condition] = []
        while True:
            index = len(clauses)
            if index + 2 > MAX_NODES:
                raise self.error(
                    f"a filter is limited to {MAX_NODES} conditions", f"[{index}]", self.pos
                )
            clauses.append(self.clause(f"[{index}]"))
            if self.pos >= len(text):
                return AllOf(tuple(clauses))
            # clause() stops only at the end or at a comma.
            self.pos += 1

    def clause(self, path: str) -> AttributeCondition:
        text, start = self.text, self.pos
        colon = start
        while colon < len(text) and text[colon] not in ':,|"':
            colon += 1
        key = text[start:colon].strip()
        if colon >= len(text) or text[colon] != ":":
            if not key:
                raise self.error("empty condition", path, start)
            raise self.error(f"missing ':' after {key!r}", path, colon)
        if not key:
            raise self.error("empty key", _join(path, "attr"), start)
        if ATTRIBUTE_NAME.fullmatch(key) is None:
            first = start + len(text[start:colon]) - len(text[start:colon].lstrip())
            raise self.error(f"invalid key {key!r}", _join(path, "attr"), first)
        self.pos = colon + 1
        values = [self.value(path)]
        while self.pos < len(text) and text[self.pos] == "|":
            self.pos += 1
            values.append(self.value(path))
        if len(values) > MAX_LIST:
            raise self.error(
                f"lists are limited to {MAX_LIST} values", _join(path, "value"), self.pos
            )
        op, raw = ("textEq", values[0]) if len(values) == 1 else ("textIn", values)
        try:
            return attribute_condition(key, op, raw)
        except FilterError as error:
            where = error.path.rsplit(".", 1)[-1]
            raise self.error(error.message, _join(path, where), start) from None

    def value(self, path: str) -> str:
        text = self.text
        while self.pos < len(text) and text[self.pos].isspace():
            self.pos += 1
        if self.pos < len(text) and text[self.pos] == '"':
            value = self.quoted(path)
            while self.pos < len(text) and text[self.pos].isspace():
                self.pos += 1
            if self.pos < len(text) and text[self.pos] not in ",|":
                raise self.error(
                    "expected ',' or '|' after a quoted value", _join(path, "value"), self.pos
                )
            return value
        start = self.pos
        while self.pos < len(text) and text[self.pos] not in ",|":
            if text[self.pos] in ':"':
                raise self.error(
                    f"unexpected {text[self.pos]!r} (quote values holding it)",
                    _join(path, "value"),
                    self.pos,
                )
            self.pos += 1
        value = text[start : self.pos].strip()
        if not value:
            raise self.error(
                'empty value (write "" for an empty string)', _join(path, "value"), start
            )
        return value

    def quoted(self, path: str) -> str:
        text, opened = self.text, self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(text):
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(chars)
            if char == "\\":
                following = text[self.pos + 1 : self.pos + 2]
                if following not in ('"', "\\"):
                    raise self.error(
                        'unknown escape (only \\" and \\\\)', _join(path, "value"), self.pos
                    )
                char = following
                self.pos += 1
            chars.append(char)
            self.pos += 1
        raise self.error("unterminated quote opened", _join(path, "value"), opened)


def parse_filter(raw: str | Mapping[str, Any] | Sequence[Any]) -> Condition:
    """Parse the string form, the object form or a JSON tree (a list = all) into a Condition."""
    if isinstance(raw, str):
        if len(raw) > MAX_STRING_FORM:
            raise FilterError(f"a filter string is limited to {MAX_STRING_FORM} characters")
        return _StringFormParser(raw).parse()
    if isinstance(raw, Mapping):
        return _TreeParser().node(dict(raw), "", 1, False)
    if isinstance(raw, Sequence):
        return _TreeParser().node(list(raw), "", 1, False)
    raise FilterError("expected a string, an object or a list")


# --- serialising ---------------------------------------------------------------------------


def _json_value(value: Value) -> Any:
    return list(value) if isinstance(value, tuple) else value


def to_json(cond: Condition) -> dict[str, Any]:
    """The normalized JSON tree of a condition; `parse_filter(to_json(c)) == c`."""
    if isinstance(cond, AllOf):
        return {"all": [to_json(child) for child in cond.children]}
    if isinstance(cond, AnyOf):
        return {"any": [to_json(child) for child in cond.children]}
    if isinstance(cond, Not):
        return {"not": to_json(cond.child)}
    if isinstance(cond, AttributeCondition):
        node: dict[str, Any] = {"attr": cond.attr, "op": cond.op}
        if cond.value is not None:
            node["value"] = _json_value(cond.value)
        return node
    if isinstance(cond, EventCondition):
        node = {"event": cond.event, "op": cond.op}
        if cond.op == "performed":
            node["count"] = dict(cond.count)
        if cond.within is not None:
            node["within"] = cond.within
        if cond.where is not None:
            node["where"] = to_json(cond.where)
        return node
    if isinstance(cond, AudienceCondition):
        return {"audience": cond.audience, "op": cond.op}
    return {"channel": cond.channel, "op": cond.op}


def _quote(value: str) -> str:
    if value and value == value.strip() and not any(char in value for char in ',:|"'):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def to_string_form(cond: Condition) -> str | None:
    """The string form of an AND of text equalities, or None when the tree has no such form."""
    leaves = cond.children if isinstance(cond, AllOf) else (cond,)
    clauses = []
    for leaf in leaves:
        if not isinstance(leaf, AttributeCondition) or leaf.op not in TEXT_OPS:
            return None
        values = _scalars(leaf.value) if leaf.op == "textIn" else (leaf.value,)
        if not values:  # textIn [] matches nothing and has no string spelling
            return None
        clauses.append(f"{leaf.attr}:" + "|".join(_quote(_string(v)) for v in values))
    return ",".join(clauses)


# --- evaluating ----------------------------------------------------------------------------


class _Missing:
    """The value of an absent field (rule 1)."""


MISSING: Any = _Missing()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class _Scope:
    """Where attribute leaves look their fields up: a profile, or one event's properties."""

    lookup: Callable[[str], Any]
    now: datetime
    facts: UserFacts


def _profile_lookup(facts: UserFacts) -> Callable[[str], Any]:
    def lookup(name: str) -> Any:
        if name in STRING_FIELDS:
            value = getattr(facts, STRING_FIELDS[name])
        elif name in TIMESTAMP_FIELDS:
            value = getattr(facts, TIMESTAMP_FIELDS[name])
        else:
            value = facts.attributes.get(name)
        return MISSING if value is None else value

    return lookup


def _properties_lookup(properties: Mapping[str, Any]) -> Callable[[str], Any]:
    def lookup(name: str) -> Any:
        value = properties.get(name)
        return MISSING if value is None else value

    return lookup


def _eval_all(cond: Any, scope: _Scope) -> bool:
    return all(_evaluate(child, scope) for child in cond.children)


def _eval_any(cond: Any, scope: _Scope) -> bool:
    return any(_evaluate(child, scope) for child in cond.children)


def _eval_not(cond: Any, scope: _Scope) -> bool:
    return not _evaluate(cond.child, scope)


def _eval_attribute(cond: Any, scope: _Scope) -> bool:
    actual = scope.lookup(cond.attr)
    if cond.op == "exists":
        return actual is not MISSING
    if cond.op == "notExists":
        return actual is MISSING
    return actual is not MISSING and ATTRIBUTE_OPS[cond.op].match(actual, cond.value, scope.now)


_COUNT_TESTS: dict[str, Callable[[int, int], bool]] = {
    "eq": lambda a, b: a == b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _eval_event(cond: Any, scope: _Scope) -> bool:
    now = scope.now
    low = now - parse_duration(cond.within) if cond.within is not None else None
    count = 0
    for fact in scope.facts.events:
        if fact.name != cond.event:
            continue
        if low is not None and not low <= _utc(fact.timestamp) <= now:
            continue
        if cond.where is not None:
            inner = _Scope(_properties_lookup(fact.properties), now, scope.facts)
            if not _evaluate(cond.where, inner):
                continue
        count += 1
    if cond.op == "notPerformed":
        return count == 0
    return all(_COUNT_TESTS[op](count, n) for op, n in cond.count)


def _eval_audience(cond: Any, scope: _Scope) -> bool:
    member = cond.audience in scope.facts.audiences
    return member if cond.op == "in" else not member


def _eval_channel(cond: Any, scope: _Scope) -> bool:
    return cond.channel in scope.facts.reachable


_EVALUATORS: dict[type, Callable[[Any, _Scope], bool]] = {
    AllOf: _eval_all,
    AnyOf: _eval_any,
    Not: _eval_not,
    AttributeCondition: _eval_attribute,
    EventCondition: _eval_event,
    AudienceCondition: _eval_audience,
    ChannelCondition: _eval_channel,
}


def _evaluate(cond: Condition, scope: _Scope) -> bool:
    return _EVALUATORS[type(cond)](cond, scope)


def evaluate(cond: Condition, profile: UserFacts) -> bool:
    """Whether the user described by `profile` satisfies the condition."""
    return _evaluate(cond, _Scope(_profile_lookup(profile), _utc(profile.now), profile))


def walk(cond: Condition) -> Iterator[Condition]:
    """Every node of the tree, `where` subtrees included, parents before children."""
    yield cond
    if isinstance(cond, AllOf | AnyOf):
        for child in cond.children:
            yield from walk(child)
    elif isinstance(cond, Not):
        yield from walk(cond.child)
    elif isinstance(cond, EventCondition) and cond.where is not None:
        yield from walk(cond.where)


def required_event_names(cond: Condition) -> set[str]:
    """The event names whose history `evaluate` needs, so the caller loads only those."""
    return {node.event for node in walk(cond) if isinstance(node, EventCondition)}
