"""The segment filter language (journeys/filters.py) as JSON Schema, for the OpenAPI document.

Generated from the parser's own tables (operators and the value kind each takes, the profile's
string and timestamp fields, limits), so the document and the parser cannot drift apart. What
JSON Schema cannot say is documented instead: the string form's grammar (`format:
segment-filter`), calendar-valid timestamps (`format: filter-timestamp`), durations from 1 s
to 100 years (`format: filter-duration`), `between` with low <= high, at most 10 levels and
200 conditions.
"""

from __future__ import annotations

from typing import Any

from app.schemas.common import whole
from journeys import filters as lang
from journeys.durations import MAX_DURATION
from journeys.text import VISIBLE_PATTERN
from journeys.timestamps import TIMESTAMP_PATTERN

FILTER = "Filter"
NODE = "FilterNode"
WHERE_NODE = "FilterWhereNode"


def ref(name: str) -> dict[str, Any]:
    """A reference to one of the filter components."""
    return {"$ref": f"#/components/schemas/{name}"}


STRING = {"type": "string", "maxLength": lang.MAX_STRING}
INTEGER = {"type": "integer", "minimum": -lang.MAX_SAFE_INTEGER, "maximum": lang.MAX_SAFE_INTEGER}
# A JSON number with a fraction; whole numbers are INTEGER and held to its bounds.
FRACTION = {"type": "number", "not": {"type": "integer"}}
NUMBER = {"anyOf": [INTEGER, FRACTION]}
SCALAR = {"anyOf": [STRING, INTEGER, FRACTION, {"type": "boolean"}]}
NAME = {"type": "string", "minLength": 1, "maxLength": lang.MAX_NAME}
FIELD_NAME = {"type": "string", "pattern": whole(lang.ATTRIBUTE_NAME.pattern)}
TIMESTAMP = {"type": "string", "format": "filter-timestamp", "pattern": whole(TIMESTAMP_PATTERN)}
DURATION = {
    "type": "string",
    "format": "filter-duration",
    "pattern": whole("(?=[0-9]*[1-9])[0-9]{1,9}[smhdw]"),
    "description": f"30s, 15m, 2h, 7d or 4w; more than 0, at most {MAX_DURATION.days} days",
}


def _list(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "maxItems": lang.MAX_LIST, "items": items, **extra}


# The value each operator kind takes (journeys.filters._VALUE_PARSERS).
VALUE_KINDS: dict[str, dict[str, Any]] = {
    "scalar": SCALAR,
    "scalars": _list(SCALAR),
    "text": STRING,
    "texts": _list(STRING),
    "string": STRING,
    "number": NUMBER,
    "range": {
        "type": "array",
        "minItems": 2,
        "maxItems": 2,
        "items": NUMBER,
        "description": "[low, high], low <= high",
    },
    "timestamp": TIMESTAMP,
    "duration": DURATION,
}
STRING_VALUE_KINDS = {"scalar": STRING, "scalars": _list(STRING)}


def _op_clause(op: str, value: dict[str, Any] | None) -> dict[str, Any]:
    if value is None:  # exists / notExists take no value (null or absent)
        return {"properties": {"op": {"const": op}, "value": {"type": "null"}}}
    return {"properties": {"op": {"const": op}, "value": value}, "required": ["value"]}


def _attribute_leaf(*, in_event: bool) -> dict[str, Any]:
    ops = lang.ATTRIBUTE_OPS
    clauses = [_op_clause(op, VALUE_KINDS.get(spec.kind)) for op, spec in ops.items()]
    leaf: dict[str, Any] = {
        "type": "object",
        "required": ["attr", "op"],
        "properties": {"attr": FIELD_NAME, "op": {"enum": list(ops)}, "value": {}},
        "additionalProperties": False,
        "oneOf": clauses,
    }
    if in_event:
        return leaf
    string_ops = [op for op, spec in ops.items() if spec.string_fields]
    timestamp_ops = [op for op, spec in ops.items() if spec.timestamp_fields]
    leaf["allOf"] = [
        {
            "if": {"properties": {"attr": {"enum": list(lang.STRING_FIELDS)}}},
            "then": {
                "properties": {"op": {"enum": string_ops}},
                "oneOf": [
                    _op_clause(
                        op, STRING_VALUE_KINDS.get(ops[op].kind, VALUE_KINDS.get(ops[op].kind))
                    )
                    for op in string_ops
                ],
            },
        },
        {
            "if": {"properties": {"attr": {"enum": list(lang.TIMESTAMP_FIELDS)}}},
            "then": {"properties": {"op": {"enum": timestamp_ops}}},
        },
    ]
    return leaf


TREE_KEYS = ("attr", "event", "audience", "channel")


def _object_form(*, in_event: bool) -> dict[str, Any]:
    """`{"plan": "pro", "role": ["admin", "owner"]}`: an AND of `eq` / `in`."""
    value = {"anyOf": [SCALAR, _list(SCALAR)]}
    form: dict[str, Any] = {
        "type": "object",
        "propertyNames": FIELD_NAME,
        "additionalProperties": value,
        "maxProperties": lang.MAX_NODES - 1,
        # Otherwise it is a tree node: exactly {"all"|"any"|"not": ...}, or a leaf's key.
        "not": {
            "anyOf": [
                *({"required": [key]} for key in TREE_KEYS),
                *(
                    {"required": [group], "minProperties": 1, "maxProperties": 1}
                    for group in ("all", "any", "not")
                ),
            ]
        },
    }
    if not in_event:
        strings = {"anyOf": [STRING, _list(STRING)]}
        form["properties"] = {
            **{name: strings for name in lang.STRING_FIELDS},
            **{name: {"not": {}} for name in lang.TIMESTAMP_FIELDS},
        }
    return form


def _groups(node: str) -> list[dict[str, Any]]:
    def group(key: str, child: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": [key],
            "properties": {key: child},
            "additionalProperties": False,
        }

    return [
        group("all", _list(ref(node))),
        group("any", _list(ref(node))),
        group("not", ref(node)),
        _list(ref(node)),
    ]


def _event_leaf() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["event"],
        "properties": {
            "event": NAME,
            "op": {"enum": list(lang.EVENT_OPS)},
            "count": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "properties": {
                    op: {"type": "integer", "minimum": 0, "maximum": 10**9} for op in lang.COUNT_OPS
                },
            },
            "within": {"anyOf": [DURATION, {"type": "null"}]},
            "where": {"anyOf": [ref(WHERE_NODE), {"type": "null"}]},
        },
        "additionalProperties": False,
        # notPerformed takes no count.
        "not": {"required": ["op", "count"], "properties": {"op": {"const": "notPerformed"}}},
    }


def _audience_leaf() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["audience"],
        "properties": {
            "audience": {"anyOf": [NAME, {"type": "integer", "minimum": 0}]},
            "op": {"enum": list(lang.AUDIENCE_OPS)},
        },
        "additionalProperties": False,
    }


def _channel_leaf(channels: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["channel"],
        "properties": {"channel": {"enum": channels}, "op": {"const": "reachable"}},
        "additionalProperties": False,
    }


def filter_components(channels: list[str]) -> dict[str, dict[str, Any]]:
    """The filter's JSON Schemas by component name (they refer to each other)."""
    node = {
        "anyOf": [
            _object_form(in_event=False),
            *_groups(NODE),
            _attribute_leaf(in_event=False),
            _event_leaf(),
            _audience_leaf(),
            _channel_leaf(channels),
        ]
    }
    where = {
        "anyOf": [_object_form(in_event=True), *_groups(WHERE_NODE), _attribute_leaf(in_event=True)]
    }
    top = {
        "anyOf": [
            {
                "type": "string",
                "format": "segment-filter",
                "minLength": 1,
                "maxLength": lang.MAX_STRING_FORM,
                "pattern": VISIBLE_PATTERN,  # a blank one is refused ("empty")
                "description": 'the string form "plan:pro,role:admin|owner" (comma = AND)',
            },
            ref(NODE),
        ],
        "description": (
            'A segment filter: the string form "plan:pro,role:admin|owner", the object form '
            '{"tenant_id": "acme"}, or a condition tree (all / any / not, attr, event, audience, '
            f"channel); at most {lang.MAX_DEPTH} levels and {lang.MAX_NODES} conditions."
        ),
    }
    return {FILTER: top, NODE: node, WHERE_NODE: where}


# `where` of an event trigger or goal: a filter over the event's properties.
WHERE = {
    "anyOf": [
        {
            "type": "string",
            "format": "segment-filter",
            "minLength": 1,
            "maxLength": lang.MAX_STRING_FORM,
            "pattern": VISIBLE_PATTERN,
            "description": 'the string form "plan:pro,sku:A1" over the event\'s properties',
        },
        ref(WHERE_NODE),
        {"type": "null"},
    ],
    "description": "a filter over the event's properties (attribute conditions only)",
}
