"""Compile a segment filter (`journeys.filters`) to a WHERE clause over the `users` table.

`select(users.c.id).where(users.c.project_id == project_id, compile_filter(...))` selects
exactly the users for whom `journeys.filters.evaluate` is true; the type rules live in that
module's docstring and tests/journeys/test_filter_sql_agreement.py holds both sides to them.

Two habits keep SQL honest against Python:
- Every leaf compiles to a definite TRUE/FALSE, never NULL, so that `not` (SQL `NOT`) means
  what Python's `not` means: COALESCE(<test>, false), or `CASE WHEN <cheap test> THEN
  <costlier test> ELSE false END` where the first test settles most rows.
- Casts sit behind a CASE, never behind AND: PostgreSQL does not promise to evaluate AND
  left to right, and a failing cast would abort the whole query.

tests/journeys/test_filter_sql_agreement.py and bench/segments.py measure each spelling.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Subquery,
    Table,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH

from app.models.audience import Audience, AudienceMember
from app.models.event import Event
from app.models.user import User
from journeys.durations import parse_duration
from journeys.filters import (
    ATTRIBUTE_OPS,
    STRING_FIELDS,
    TIMESTAMP_FIELDS,
    AllOf,
    AnyOf,
    AttributeCondition,
    AudienceCondition,
    ChannelCondition,
    Condition,
    EventCondition,
    Not,
    Scalar,
    is_number,
    number_literal,
)
from journeys.timestamps import (
    EPOCH,
    MAX_EPOCH_US,
    MIN_EPOCH_US,
    TIMESTAMP_PATTERN,
    epoch_microseconds,
    parse_timestamp,
)

users = cast(Table, User.__table__)
events = cast(Table, Event.__table__)
audiences = cast(Table, Audience.__table__)
audience_members = cast(Table, AudienceMember.__table__)

Clause = ColumnElement[bool]
ChannelClause = Callable[[Table], Clause]
"""Builds a clause over `users` (correlated as needed) that is true when a user is reachable."""

USER_COLUMNS = {"user_id": "external_id"}
_BIGINT_MAX = 2**63 - 1
_CANONICAL_ID = re.compile(r"0|[1-9][0-9]*")


def _definite(clause: Clause) -> Clause:
    return func.coalesce(clause, false())


def _int(value: int) -> ColumnElement[int]:
    # Inline integer constants: a bound parameter may reach PostgreSQL as numeric, and then
    # `/` would stop being integer division.
    return literal_column(str(value), BigInteger)


def _any(clauses: Sequence[ColumnElement[Any]]) -> Clause:
    return or_(*clauses) if clauses else false()


def _all(clauses: Sequence[ColumnElement[Any]]) -> Clause:
    return and_(*clauses) if clauses else true()


# --- the timestamp subset of journeys.timestamps, in SQL ----------------------------------

_DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
_DATETIME_GLOB = _DATE_GLOB + "[T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
_OFFSET_GLOB = "[+-][0-9][0-9]:[0-9][0-9]"


def epoch_us_sql(
    text: ColumnElement[Any],
    dialect: str,
    outer: Table,
    *,
    within: tuple[int, int] | None = None,
) -> ColumnElement[Any]:
    """Microseconds since the epoch of a string in the accepted subset, else NULL.

    With `within=(low, high)`, instead whether those microseconds lie in [low, high] (never
    NULL), compared inside the subquery so that the database evaluates it once.

    Arithmetic on the digits rather than the database's own date parsing: SQLite's accepts
    julian day numbers and lets February 30 through, PostgreSQL's raises on a bad value and
    reads a missing offset in the session time zone. `text` may be any value: JSON numbers,
    booleans, arrays and objects never have the shape of a timestamp. Each step is a derived
    table of a scalar subquery (correlated to `outer`) so the string is spelled once, not
    forty times.
    """
    one = _int(1)

    def at(value: Any, start: int | ColumnElement[int], count: int | ColumnElement[int]) -> Any:
        # Every integer inline, see _int: substr(text, bigint, ...) does not exist.
        start = _int(start) if isinstance(start, int) else start
        count = _int(count) if isinstance(count, int) else count
        return func.substr(value, start, count)

    def fence(query: Select[Any]) -> Subquery:
        # OFFSET 0 keeps PostgreSQL and SQLite from flattening a step into the next, which
        # would spell its expressions (the JSON lookup, the regular expression, the digit
        # casts) once per use: 20-40 times faster.
        return query.offset(_int(0)).subquery()

    raw = fence(select(text.label("s")).correlate(outer))
    measured = select(raw.c.s, func.length(raw.c.s).label("n")).subquery()
    string, length = measured.c.s, measured.c.n

    sign_at = length - _int(5)
    is_offset = and_(length >= _int(25), at(string, sign_at, one).in_(["+", "-"]))
    tz_length = case((at(string, length, one) == "Z", one), (is_offset, _int(6)), else_=_int(0))
    fraction_length = length - _int(19) - tz_length  # with its dot
    if dialect == "postgresql":
        well_formed: Clause = string.op("~")(f"^{TIMESTAMP_PATTERN}$")
    else:
        well_formed = or_(
            string.op("GLOB")(_DATE_GLOB),
            and_(
                at(string, 1, 19).op("GLOB")(_DATETIME_GLOB),
                or_(
                    fraction_length == _int(0),
                    and_(
                        fraction_length.between(_int(2), _int(10)),
                        at(string, 20, 1) == ".",
                        at(string, 21, fraction_length - one).op("NOT GLOB")("*[^0-9]*"),
                    ),
                ),
                or_(tz_length != _int(6), at(string, sign_at, 6).op("GLOB")(_OFFSET_GLOB)),
            ),
        )
    shaped = fence(
        select(
            string.label("s"),
            length.label("n"),
            _definite(well_formed).label("ok"),
            case((is_offset, one), else_=_int(0)).label("has_offset"),
            fraction_length.label("fraction_length"),
        )
    )

    def digits(start: int | ColumnElement[int], count: int) -> ColumnElement[int]:
        # Casts only behind CASE: PostgreSQL evaluates a derived column even when unused.
        return case((shaped.c.ok, sql_cast(at(shaped.c.s, start, count), BigInteger)))

    def time_digits(start: int) -> ColumnElement[int]:
        return case((shaped.c.n == _int(10), _int(0)), else_=digits(start, 2))

    def offset_digits(back: int) -> ColumnElement[int]:
        return case((shaped.c.has_offset == one, digits(shaped.c.n - _int(back), 2)), else_=_int(0))

    padded = at(shaped.c.s, 21, shaped.c.fraction_length - one).op("||")(literal("000000"))
    parts = fence(
        select(
            digits(1, 4).label("year"),
            digits(6, 2).label("month"),
            digits(9, 2).label("day"),
            time_digits(12).label("hour"),
            time_digits(15).label("minute"),
            time_digits(18).label("second"),
            offset_digits(4).label("offset_hours"),
            offset_digits(1).label("offset_minutes"),
            case((at(shaped.c.s, shaped.c.n - _int(5), one) == "-", _int(-1)), else_=one).label(
                "offset_sign"
            ),
            case(
                (
                    and_(shaped.c.ok, shaped.c.n > _int(19), shaped.c.fraction_length > _int(0)),
                    sql_cast(func.substr(padded, one, _int(6)), BigInteger),
                ),
                else_=_int(0),
            ).label("micro"),
        )
    )
    year, month, day = parts.c.year, parts.c.month, parts.c.day
    hour, minute, second = parts.c.hour, parts.c.minute, parts.c.second

    leap = or_(
        and_(year % _int(4) == _int(0), year % _int(100) != _int(0)),
        year % _int(400) == _int(0),
    )
    month_days = case(
        (month.in_([4, 6, 9, 11]), _int(30)),
        (month == _int(2), case((leap, _int(29)), else_=_int(28))),
        else_=_int(31),
    )
    valid = and_(
        year >= one,
        month.between(one, _int(12)),
        day >= one,
        day <= month_days,
        hour <= _int(23),
        minute <= _int(59),
        second <= _int(59),
        parts.c.offset_hours <= _int(23),
        parts.c.offset_minutes <= _int(59),
    )
    # Days from 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's days_from_civil,
    # for years >= 0, where the 400-year eras fold into the plain leap-day sums).
    shifted = year - case((month <= _int(2), one), else_=_int(0))
    day_of_year = (_int(153) * ((month + _int(9)) % _int(12)) + _int(2)) // _int(5) + day - one
    days = (
        shifted * _int(365)
        + shifted // _int(4)
        - shifted // _int(100)
        + shifted // _int(400)
        + day_of_year
        - _int(719_468)
    )
    offset = (parts.c.offset_hours * _int(60) + parts.c.offset_minutes) * parts.c.offset_sign
    seconds = (
        days * _int(86_400) + hour * _int(3600) + minute * _int(60) + second - offset * _int(60)
    )
    micros = seconds * _int(1_000_000) + parts.c.micro
    if within is None:
        return select(case((valid, micros))).select_from(parts).scalar_subquery()
    # No cast here (they all sit behind CASE in `parts`), so AND is safe in any order.
    low, high = within
    inside = _definite(and_(valid, micros.between(_int(low), _int(high))))
    return select(inside).select_from(parts).scalar_subquery()


_DAY_US = 86_400 * 1_000_000


def moment_in_sql(
    text: ColumnElement[Any], dialect: str, outer: Table, low_us: int, high_us: int
) -> Clause:
    """Whether `text` is a timestamp of the accepted subset in [low_us, high_us]; definite.

    A cheap test of the date digits first, so that most rows skip the exact arithmetic: a
    valid string starts with its local YYYY-MM-DD, and its offset is under 24 hours, so its
    local date lies within a day of its UTC date. Text order is date order on those digits
    (collation "C" on PostgreSQL, where a locale may weigh the dashes differently); anything
    else the test lets through or not, the exact test rejects anyway.
    """
    exact = epoch_us_sql(text, dialect, outer, within=(low_us, high_us))
    day: ColumnElement[Any] = func.substr(text, _int(1), _int(10))
    if dialect == "postgresql":
        day = day.collate("C")
    prefilter = []
    if low_us - _DAY_US >= MIN_EPOCH_US:
        prefilter.append(day >= _date_text(low_us - _DAY_US))
    if high_us + _DAY_US <= MAX_EPOCH_US:
        prefilter.append(day <= _date_text(high_us + _DAY_US))
    return case((and_(*prefilter), exact), else_=false()) if prefilter else exact


def _date_text(epoch_us: int) -> str:
    return (EPOCH + timedelta(microseconds=epoch_us)).date().isoformat()


# --- fields: where an attribute leaf reads its value --------------------------------------


class _Field:
    """One filterable value of a row; every method returns a definite clause."""

    def present(self) -> Clause:
        raise NotImplementedError

    def equals(self, value: Scalar) -> Clause:
        """Typed equality (rule 2)."""
        return false()

    def equals_any(self, values: Sequence[Scalar]) -> Clause:
        """Typed equality with any of the values (`in`)."""
        return _any([self.equals(value) for value in values])

    def contains(self, value: Scalar) -> Clause:
        return false()

    def starts_with(self, value: str) -> Clause:
        return false()

    def number_test(self, test: Callable[[ColumnElement[Any]], Clause]) -> Clause:
        return false()

    def number(self, value: float | int) -> ColumnElement[Any]:
        return literal(value)

    def number_compare(self, op: str, value: float | int) -> Clause:
        """Rule 4, `op` one of gt gte lt lte."""
        return self.number_test(lambda number: _COMPARISONS[op][0](number, self.number(value)))

    def number_between(self, low: float | int, high: float | int) -> Clause:
        return self.number_test(lambda number: number.between(self.number(low), self.number(high)))

    def moment_between(self, low_us: int, high_us: int) -> Clause:
        return false()

    def text_equals(self, text: str) -> Clause:
        """Rule 3: a string equal to the text, or a number / boolean the text spells."""
        branches = [self.equals(text)]
        number = number_literal(text)
        if number is not None:
            branches.append(self.equals(number))
        if text in ("true", "false"):
            branches.append(self.equals(text == "true"))
        return _any(branches)


class _StringColumn(_Field):
    def __init__(self, column: ColumnElement[Any], dialect: str) -> None:
        self.column = column
        self.dialect = dialect

    def present(self) -> Clause:
        return self.column.is_not(None)

    def equals(self, value: Scalar) -> Clause:
        if not isinstance(value, str):
            return false()
        return and_(self.column.is_not(None), self.column == value)

    def contains(self, value: Scalar) -> Clause:
        if not isinstance(value, str):
            return false()
        return and_(self.column.is_not(None), _substring(self.column, value, self.dialect))

    def starts_with(self, value: str) -> Clause:
        return and_(self.column.is_not(None), _prefix(self.column, value))


class _TimestampColumn(_Field):
    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column

    def present(self) -> Clause:
        return self.column.is_not(None)

    def moment_between(self, low_us: int, high_us: int) -> Clause:
        low = EPOCH + timedelta(microseconds=low_us)
        high = EPOCH + timedelta(microseconds=high_us)
        return and_(self.column.is_not(None), self.column >= low, self.column <= high)


def _substring(text: ColumnElement[Any], value: str, dialect: str) -> Clause:
    if dialect == "postgresql":
        return func.strpos(text, value) > 0
    return func.instr(text, value) > 0


def _prefix(text: ColumnElement[Any], value: str) -> Clause:
    # substr counts characters (code points) on both databases, as Python's len does.
    return func.substr(text, _int(1), _int(len(value))) == value


class _PostgresJson(_Field):
    """A key of a JSONB column: containment (`@>`) for equality, so a GIN index serves it."""

    def __init__(self, column: ColumnElement[Any], key: str, outer: Table) -> None:
        self.outer = outer
        self.document = type_coerce(column, JSONB)
        self.key = key
        self.element = self.document[key]
        self.text = self.document[key].astext
        self.type = func.jsonb_typeof(self.element)

    def guarded(self, json_type: str, test: Clause) -> Clause:
        return case((self.type == json_type, test), else_=false())

    def present(self) -> Clause:
        return _definite(self.type != "null")

    def equals(self, value: Scalar) -> Clause:
        # Scalars inside an object contain only equal scalars (never arrays), and numbers
        # compare as numeric: {"k": 10.0} @> {"k": 10}.
        return self.document.contains({self.key: value})

    def contains(self, value: Scalar) -> Clause:
        branches = [self.document.contains({self.key: [value]})]
        if isinstance(value, str):
            branches.append(self.guarded("string", func.strpos(self.text, value) > 0))
        return _any(branches)

    def starts_with(self, value: str) -> Clause:
        return self.guarded("string", _prefix(self.text, value))

    def number_compare(self, op: str, value: float | int) -> Clause:
        return self.number_path(f"@ {_COMPARISONS[op][1]} {_path_number(value)}")

    def number_between(self, low: float | int, high: float | int) -> Clause:
        return self.number_path(f"@ >= {_path_number(low)} && @ <= {_path_number(high)}")

    def number_path(self, predicate: str) -> Clause:
        # One walk of the document and no cast (a third faster than jsonb_typeof plus a
        # numeric cast, or than jsonb BETWEEN, which looks the key up twice). A strict-mode
        # jsonpath compares numbers as numeric, drops every other type (a comparison across
        # types is unknown, or false for null), never unwraps an array, and `@?` turns the
        # missing-key error into NULL.
        path = f'strict $."{self.key}" ? ({predicate})'  # names never hold '"' or '\\'
        return _definite(self.document.op("@?")(sql_cast(literal(path), JSONPATH)))

    def moment_between(self, low_us: int, high_us: int) -> Clause:
        return moment_in_sql(self.text, "postgresql", self.outer, low_us, high_us)


class _SqliteJson(_Field):
    """A key of a JSON1 text column, read with json_extract / json_type."""

    NUMBER_TYPES = ("integer", "real")

    def __init__(self, column: ColumnElement[Any], key: str, outer: Table) -> None:
        self.outer = outer
        # A document SQLite cannot parse (NaN or Infinity stored by an earlier version) reads
        # as NULL here, where json_extract would fail the whole query. SQLite caches the
        # parse, so json_extract after json_valid costs a few percent, not a second parse.
        column = case((func.json_valid(column) == _int(1), column))
        self.column = column
        self.path = f'$."{key}"'  # names never hold '"' (filters.ATTRIBUTE_NAME)
        self.value = func.json_extract(column, self.path)
        self.type = func.json_type(column, self.path)

    def present(self) -> Clause:
        return _definite(self.type != "null")

    def equals(self, value: Scalar) -> Clause:
        return _sqlite_equals(self.type, self.value, value)

    def equals_any(self, values: Sequence[Scalar]) -> Clause:
        # One json_extract per kind of value, not one per value.
        strings = [value for value in values if isinstance(value, str)]
        numbers = [value for value in values if is_number(value)]
        kinds: list[tuple[Sequence[Scalar], Clause]] = [
            (strings, self.type == "text"),
            (numbers, self.type.in_(self.NUMBER_TYPES)),
        ]
        branches = []
        for same_kind, type_test in kinds:
            if len(same_kind) == 1:
                branches.append(self.equals(same_kind[0]))
            elif same_kind:
                branches.append(_sqlite_checked(self.value.in_(same_kind), type_test))
        booleans = {value for value in values if isinstance(value, bool)}
        branches.extend(self.equals(value) for value in sorted(booleans))
        return _any(branches)

    def contains(self, value: Scalar) -> Clause:
        elements = func.json_each(self.column, self.path).table_valued("value", "type")
        in_array = exists(
            select(literal(1))
            .select_from(elements)
            .where(_sqlite_equals(elements.c.type, elements.c.value, value))
        )
        branches: list[Clause] = [case((self.type == "array", in_array), else_=false())]
        if isinstance(value, str):
            branches.append(_sqlite_checked(func.instr(self.value, value) > 0, self.type == "text"))
        return _any(branches)

    def starts_with(self, value: str) -> Clause:
        return _sqlite_checked(_prefix(self.value, value), self.type == "text")

    def number_test(self, test: Callable[[ColumnElement[Any]], Clause]) -> Clause:
        return _sqlite_checked(test(self.value), self.type.in_(self.NUMBER_TYPES))

    def moment_between(self, low_us: int, high_us: int) -> Clause:
        return moment_in_sql(self.value, "sqlite", self.outer, low_us, high_us)


def _sqlite_checked(test: Clause, type_test: Clause) -> Clause:
    """`test` on the extracted value, then `type_test`; definite, and cheap when `test` fails.

    The value first: most rows fail it, sparing the json_type lookup (SQLite 3.40 evaluates
    both sides of an AND inside coalesce(), but only the branch a CASE takes). A NULL value
    (missing key) takes the ELSE; a value that passed means the key exists, so its type is
    not NULL. The type test keeps arrays and objects (extracted as JSON text) away from
    strings, and booleans (extracted as 0 / 1) away from numbers.
    """
    return case((test, type_test), else_=false())


def _sqlite_equals(json_type: Any, value: Any, expected: Scalar) -> Clause:
    if isinstance(expected, bool):
        return _definite(json_type == ("true" if expected else "false"))
    if isinstance(expected, str):
        return _sqlite_checked(value == expected, json_type == "text")
    return _sqlite_checked(value == expected, json_type.in_(_SqliteJson.NUMBER_TYPES))


# --- operators ----------------------------------------------------------------------------


def _scalar(value: Any) -> Scalar:
    assert value is not None and not isinstance(value, tuple)
    return cast(Scalar, value)


def _values(value: Any) -> tuple[Scalar, ...]:
    return value if isinstance(value, tuple) else ()


_COMPARISONS: dict[str, tuple[Callable[[Any, Any], Any], str]] = {
    "gt": (operator.gt, ">"),
    "gte": (operator.ge, ">="),
    "lt": (operator.lt, "<"),
    "lte": (operator.le, "<="),
}


def _path_number(value: float | int) -> str:
    # json.dumps writes a float as its shortest round-trip decimal (`1e+16`, `1e-07`), the same
    # text it wrote into the column, so numeric order agrees with Python's float order. Both
    # spellings are jsonpath numeric literals.
    return json.dumps(value)


def _compare(op: str) -> Callable[[_Field, Any, datetime], Clause]:
    def compile_op(field: _Field, value: Any, _now: datetime) -> Clause:
        return field.number_compare(op, value)

    return compile_op


def _between(field: _Field, value: Any, _now: datetime) -> Clause:
    low, high = value
    return field.number_between(low, high)


def _moment_op(
    interval: Callable[[Any, datetime], tuple[int, int]],
) -> Callable[[_Field, Any, datetime], Clause]:
    def compile_op(field: _Field, value: Any, now: datetime) -> Clause:
        low, high = interval(value, now)
        return field.moment_between(max(low, MIN_EPOCH_US), min(high, MAX_EPOCH_US))

    return compile_op


def _bound(value: str) -> int:
    moment = parse_timestamp(value)
    assert moment is not None, "validated by parse_filter"
    return epoch_microseconds(moment)


def _ago(value: str, now: datetime) -> int:
    return epoch_microseconds(now - parse_duration(value))


# Timestamps are whole microseconds, so strict bounds become inclusive ones a microsecond in.
_MOMENT_INTERVALS: dict[str, Callable[[Any, datetime], tuple[int, int]]] = {
    "before": lambda value, _now: (MIN_EPOCH_US, _bound(value) - 1),
    "after": lambda value, _now: (_bound(value) + 1, MAX_EPOCH_US),
    "withinLast": lambda value, now: (_ago(value, now), epoch_microseconds(now)),
    "moreThan": lambda value, now: (MIN_EPOCH_US, _ago(value, now) - 1),
}


def _membership(field: _Field, value: Any) -> Clause:
    return field.equals_any(_values(value))


_SQL_OPS: dict[str, Callable[[_Field, Any, datetime], Clause]] = {
    "exists": lambda field, _value, _now: field.present(),
    "notExists": lambda field, _value, _now: not_(field.present()),
    "eq": lambda field, value, _now: field.equals(_scalar(value)),
    "neq": lambda field, value, _now: and_(field.present(), not_(field.equals(_scalar(value)))),
    "in": lambda field, value, _now: _membership(field, value),
    "nin": lambda field, value, _now: and_(field.present(), not_(_membership(field, value))),
    "textEq": lambda field, value, _now: field.text_equals(value),
    "textIn": lambda field, value, _now: _any([field.text_equals(str(v)) for v in _values(value)]),
    "contains": lambda field, value, _now: field.contains(_scalar(value)),
    "startsWith": lambda field, value, _now: field.starts_with(value),
    **{op: _compare(op) for op in _COMPARISONS},
    "between": _between,
    **{op: _moment_op(interval) for op, interval in _MOMENT_INTERVALS.items()},
}
assert set(_SQL_OPS) == set(ATTRIBUTE_OPS), "every filter operator needs its SQL twin"


# --- the compiler -------------------------------------------------------------------------


class _Compiler:
    def __init__(
        self,
        *,
        project_id: int,
        dialect: str,
        now: datetime,
        channels: Mapping[str, ChannelClause],
    ) -> None:
        self.project_id = project_id
        self.dialect = dialect
        self.now = now
        self.channels = channels
        self.handlers: dict[type, Callable[[Any, Callable[[str], _Field]], Clause]] = {
            AllOf: lambda c, f: _all([self.compile(child, f) for child in c.children]),
            AnyOf: self.any_of,
            Not: lambda c, f: not_(self.compile(c.child, f)),
            AttributeCondition: self.attribute,
            EventCondition: self.event,
            AudienceCondition: self.audience,
            ChannelCondition: self.channel,
        }

    def compile(self, cond: Condition, fields: Callable[[str], _Field]) -> Clause:
        return self.handlers[type(cond)](cond, fields)

    def any_of(self, cond: AnyOf, fields: Callable[[str], _Field]) -> Clause:
        # `any` of eq / in on one field is `in` over all their values: SQLite then reads the
        # field once (PostgreSQL keeps one containment test per value, for the GIN index).
        wanted: dict[str, list[Scalar]] = {}
        others = []
        for child in cond.children:
            if isinstance(child, AttributeCondition) and child.op in ("eq", "in"):
                values = _values(child.value) if child.op == "in" else (_scalar(child.value),)
                wanted.setdefault(child.attr, []).extend(values)
            else:
                others.append(self.compile(child, fields))
        return _any([fields(attr).equals_any(values) for attr, values in wanted.items()] + others)

    def json_field(self, table: Table, column: str, key: str) -> _Field:
        if self.dialect == "postgresql":
            return _PostgresJson(table.c[column], key, table)
        return _SqliteJson(table.c[column], key, table)

    def profile_field(self, name: str) -> _Field:
        if name in STRING_FIELDS:
            column = STRING_FIELDS[name]
            return _StringColumn(users.c[USER_COLUMNS.get(column, column)], self.dialect)
        if name in TIMESTAMP_FIELDS:
            return _TimestampColumn(users.c[TIMESTAMP_FIELDS[name]])
        return self.json_field(users, "attributes", name)

    def property_field(self, name: str) -> _Field:
        return self.json_field(events, "properties", name)

    def attribute(self, cond: AttributeCondition, fields: Callable[[str], _Field]) -> Clause:
        return _SQL_OPS[cond.op](fields(cond.attr), cond.value, self.now)

    def event(self, cond: EventCondition, _fields: Callable[[str], _Field]) -> Clause:
        where = [
            events.c.project_id == self.project_id,
            events.c.name == cond.event,
            events.c.erased == false(),
        ]
        if cond.within is not None:
            where.append(events.c.timestamp >= self.now - parse_duration(cond.within))
            where.append(events.c.timestamp <= self.now)
        if cond.where is not None:
            where.append(self.compile(cond.where, self.property_field))
        if cond.op == "notPerformed" or cond.count == (("gte", 1),):
            # Correlated EXISTS: a semi / anti join, stopping at the user's first event.
            performed = exists(
                select(literal(1)).select_from(events).where(events.c.user_id == users.c.id, *where)
            )
            return performed if cond.op == "performed" else not_(performed)
        # Other counts: one pass over the matching events grouped by user, not a count per
        # user (a correlated subquery PostgreSQL runs once per row). The HAVING keeps the users
        # whose count fails the rules when 0 passes them (users without events must match),
        # those whose count passes them otherwise.
        tests = {
            "eq": operator.eq,
            "gt": operator.gt,
            "gte": operator.ge,
            "lt": operator.lt,
            "lte": operator.le,
        }
        count = func.count()
        rules = _all([tests[op](count, _int(n)) for op, n in cond.count])
        admits_zero = all(tests[op](0, n) for op, n in cond.count)
        grouped = (
            select(events.c.user_id)
            .where(*where, events.c.user_id.is_not(None))
            .group_by(events.c.user_id)
            .having(not_(rules) if admits_zero else rules)
        )
        if not admits_zero:
            return users.c.id.in_(grouped)
        # NOT EXISTS, not NOT IN: an anti join, where NOT IN over a large set is a subplan.
        failing = grouped.subquery()
        return not_(exists(select(literal(1)).where(failing.c.user_id == users.c.id)))

    def audience(self, cond: AudienceCondition, _fields: Callable[[str], _Field]) -> Clause:
        member, audience = audience_members, audiences
        match = [audience.c.name == cond.audience]
        if _CANONICAL_ID.fullmatch(cond.audience) and int(cond.audience) <= _BIGINT_MAX:
            match.append(audience.c.id == int(cond.audience))
        current = exists(
            select(literal(1))
            .select_from(member.join(audience, audience.c.id == member.c.audience_id))
            .where(
                member.c.user_id == users.c.id,
                member.c.project_id == self.project_id,
                audience.c.project_id == self.project_id,
                member.c.left_at.is_(None),
                or_(member.c.expires_at.is_(None), member.c.expires_at > self.now),
                _any(match),
            )
        )
        return current if cond.op == "in" else not_(current)

    def channel(self, cond: ChannelCondition, _fields: Callable[[str], _Field]) -> Clause:
        return _definite(self.channels[cond.channel](users))


def compile_filter(
    cond: Condition,
    *,
    project_id: int,
    dialect_name: str,
    now: datetime,
    channel_clauses: Mapping[str, ChannelClause],
) -> Clause:
    """A WHERE clause over `users` true exactly for the users `evaluate` accepts at `now`.

    `channel_clauses` are the channel registry's reachability tests
    (`workers.channels.reachability_clauses()`): the compiler knows no channel itself.
    """
    if dialect_name not in ("postgresql", "sqlite"):
        raise ValueError(f"segment filters do not support the {dialect_name} dialect")
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    compiler = _Compiler(
        project_id=project_id, dialect=dialect_name, now=now, channels=channel_clauses
    )
    return compiler.compile(cond, compiler.profile_field)
