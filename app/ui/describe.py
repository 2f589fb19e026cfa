"""Plain-language renderings of the API's objects for the console's pages (no JSON on screen)."""

from __future__ import annotations

from typing import Any

from app.ui.blueprint import bp

OPS = {
    "textEq": "is",
    "eq": "is",
    "neq": "is not",
    "textIn": "is one of",
    "in": "is one of",
    "nin": "is none of",
    "contains": "contains",
    "startsWith": "starts with",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "between": "is between",
    "exists": "is set",
    "notExists": "is not set",
    "before": "is before",
    "after": "is after",
    "withinLast": "is within the last",
    "moreThan": "is more than … ago:",
}
COUNTS = {
    "gte": "at least",
    "gt": "more than",
    "eq": "exactly",
    "lte": "at most",
    "lt": "fewer than",
}


def _value(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(_value(x) for x in v)
    return str(v)


def describe_filter(node: Any) -> str:
    """`plan is pro and (did purchase at least 2 times in the last 30d or in audience vip)`."""
    if isinstance(node, str):
        return f"segment {node}" if ":" not in node else node
    if not isinstance(node, dict):
        return _value(node)
    for mode, word in (("all", " and "), ("any", " or ")):
        if mode in node:
            parts = [describe_filter(c) for c in node[mode]]
            if not parts:
                return "everyone" if mode == "all" else "nobody"
            text = word.join(f"({p})" if (" and " in p or " or " in p) else p for p in parts)
            return text
    if "not" in node:
        return f"not ({describe_filter(node['not'])})"
    if "attr" in node:
        op = node.get("op", "eq")
        text = f"{node['attr']} {OPS.get(op, op)}"
        if "value" in node and node["value"] is not None:
            text += f" {_value(node['value'])}"
        return text
    if "event" in node:
        if node.get("op") == "notPerformed":
            text = f"never did {node['event']}"
        else:
            ((cop, n),) = (node.get("count") or {"gte": 1}).items()
            text = f"did {node['event']} {COUNTS.get(cop, cop)} {n} time{'s' if n != 1 else ''}"
        if node.get("within"):
            text += f" in the last {node['within']}"
        if node.get("where"):
            text += f" where {describe_filter(node['where'])}"
        return text
    if "audience" in node:
        return f"{'not ' if node.get('op') == 'notIn' else ''}in audience {node['audience']}"
    if "channel" in node:
        return f"reachable on {node['channel']}"
    return _value(node)


def describe_seconds(seconds: Any) -> str:
    """7200 → `2h`; 90 → `90s`."""
    if not isinstance(seconds, int) or seconds <= 0:
        return "—"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


bp.add_app_template_filter(describe_filter, "describe_filter")
bp.add_app_template_filter(describe_seconds, "describe_seconds")
