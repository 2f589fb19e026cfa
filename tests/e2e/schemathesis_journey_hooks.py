"""What schemathesis needs to make valid journey bodies (loaded by schemathesis_hooks.py).

A journey's JSON Schema (app/schemas/journeys.py) describes each field; what it cannot say is
documented there and repaired here in the generated *positive* bodies only (negative ones are
left as they are, they must be refused): every edge names a step, every step is reachable,
loops pass through a waiting step, a split's percents sum to 100, and the cross-field rules
of `entry` and `matchOn`.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from journeys.filters import FilterError, parse_filter
from journeys.rules.definition import RuleError, parse_where
from journeys.steps.webhook import _url_problem

ENTRY_EVENT_TRIGGERS = ("event", "api")
MEMBERSHIP_TRIGGERS = ("audienceEntered", "segmentEntered")
MAX_CHAIN = 40  # well under the 98 plain steps a path may run without a wait
VALID_FILTER = "plan:pro"


def _filter(value: Any) -> Any:
    """A filter the language takes (depth, size and grammar limits are no JSON Schema)."""
    try:
        parse_filter(value)
    except (FilterError, TypeError, ValueError, RecursionError):
        return VALID_FILTER
    return value


def _where(node: Any) -> Any:
    """`node` with its `where` one the rules' parser takes (null stays null)."""
    if not isinstance(node, dict) or node.get("where") is None:
        return node
    try:
        parse_where(node["where"], "e", "where")
    except (RuleError, FilterError, TypeError, ValueError, RecursionError):
        return {**node, "where": VALID_FILTER}
    return node


def _trigger_kind(body: dict[str, Any]) -> str | None:
    trigger = body.get("trigger")
    if isinstance(trigger, dict):
        for kind in (*ENTRY_EVENT_TRIGGERS, *MEMBERSHIP_TRIGGERS):
            if kind in trigger:
                return kind
    return None


def _point(step: dict[str, Any], target: str) -> dict[str, Any]:
    """Every edge of `step` to `target` (a chain: reachable, no loop)."""
    out = _where(dict(step))
    if "filter" in out:
        out["filter"] = _filter(out["filter"])
    if isinstance(out.get("branches"), list):
        out["branches"] = [
            {**item, "if": _filter(item["if"])}
            if isinstance(item, dict) and "if" in item and not _last_send(item["if"])
            else item
            for item in out["branches"]
        ]
    for key in ("next", "onTimeout", "default"):
        if isinstance(out.get(key), str):
            out[key] = target
    for key in ("branches", "variants"):
        if isinstance(out.get(key), list):
            out[key] = [
                {**item, "next": target} if isinstance(item, dict) else item for item in out[key]
            ]
    variants = out.get("variants")
    if isinstance(variants, list) and variants and all(isinstance(v, dict) for v in variants):
        share, rest = divmod(100, len(variants))
        out["variants"] = [
            {**v, "percent": share + (1 if i < rest else 0)} for i, v in enumerate(variants)
        ]
    url = out.get("url")
    if out.get("type") == "webhook" and isinstance(url, str) and _url_problem(url):
        out["url"] = "https://hooks.acme.io/journey"
    return out


def _last_send(test: Any) -> bool:
    return isinstance(test, dict) and list(test) == ["lastSend"]


def _steps(raw: list[Any], entry_event: bool) -> list[Any]:
    if not all(isinstance(step, dict) for step in raw):
        return raw
    chain = [step for step in raw if step.get("type") != "exit"][:MAX_CHAIN]
    steps = []
    for index, step in enumerate(chain):
        step = _point({**step, "id": f"s{index}"}, f"s{index + 1}")
        if not entry_event and step.get("matchOn") is not None:
            step.pop("matchOn")
        steps.append(step)
    steps.append({"id": f"s{len(chain)}", "type": "exit"})
    return steps


def repair_journey(body: Any) -> Any:
    """A generated journey body that keeps its shape but meets the rules JSON Schema cannot."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    trigger = body.get("trigger")
    if isinstance(trigger, dict):
        trigger = _where(trigger)
        if "segmentEntered" in trigger:
            trigger = {**trigger, "segmentEntered": _filter(trigger["segmentEntered"])}
        body["trigger"] = trigger
    if "goal" in body:
        body["goal"] = _where(body["goal"])
    if isinstance(body.get("exit"), list):
        body["exit"] = [
            {**rule, "leftSegment": _filter(rule["leftSegment"])}
            if isinstance(rule, dict) and "leftSegment" in rule
            else _where(rule)
            for rule in body["exit"]
        ]
    kind = _trigger_kind(body)
    entry_event = kind in ENTRY_EVENT_TRIGGERS if kind else True
    if isinstance(body.get("steps"), list):
        body["steps"] = _steps(body["steps"], entry_event)
    entry = body.get("entry")
    if isinstance(entry, dict):
        entry = dict(entry)
        if entry.get("policy") == "oncePer":
            entry.setdefault("period", "1d")
            if entry["period"] is None:
                entry["period"] = "1d"
        else:
            entry.pop("period", None)
        if kind is not None and not entry_event:
            entry.pop("key", None)
        if kind is not None and kind not in MEMBERSHIP_TRIGGERS:
            entry.pop("existingMembers", None)
        body["entry"] = entry
    if kind is not None and not entry_event and isinstance(body.get("exit"), list):
        body["exit"] = [
            {k: v for k, v in rule.items() if k != "matchOn"} if isinstance(rule, dict) else rule
            for rule in body["exit"]
        ]
    return body


@schemathesis.hook("map_case").apply_to(
    path_regex=r"^/v1/journeys(/\{ref\})?$", method=["POST", "PUT", "PATCH"]
)
def journey_graphs(context, case):
    """Positive journey bodies get a valid step graph and consistent entry rules."""
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return case
    case.body = repair_journey(case.body)
    return case
