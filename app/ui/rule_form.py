"""The rule editor's plain fields, both ways: the form a marketer fills in (no JSON) to the API's
rule body, a stored rule back to those fields, and the API's error paths (`then[0].ttlSeconds`,
`when.where.sku`) to the form field each belongs next to.

Fields: `name`, `enabled` (a checkbox), `priority`; `when_kind` with `when_event` and
`when_where` (a filter in the segment string form, `sku:A1`), `when_audience` (audienceEntered
and audienceLeft), `when_attribute`, `when_from`, `when_to`; `if_segment` (a segment whose
conditions are copied into the rule) or `if_filter`; and per action row `i` (any numbers, in
order) `then-<i>-kind` with `-audience`, `-ttl` (a duration such as `1h`), `-attributes` and
`-params` (`key=value` lines), `-campaign`, `-journey`. A row without a kind is left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.ui.describe import describe_seconds
from app.ui.fields import read_seconds
from journeys.filters import parse_filter, to_json, to_string_form
from journeys.rules.definition import ACTION_KINDS, TRIGGER_KINDS

ROW_FIELDS = ("kind", "audience", "ttl", "attributes", "params", "campaign", "journey")
_ROW_KEY = re.compile(r"then-(\d{1,4})-kind")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# The API's field under an action (`then[0].<key>`) -> the row's form field.
_ACTION_SLOTS = {
    "addToAudience": "audience",
    "removeFromAudience": "audience",
    "ttlSeconds": "ttl",
    "setAttributes": "attributes",
    "params": "params",
    "sendCampaign": "campaign",
    "startJourney": "journey",
}
_WHEN_SLOTS = {
    "event": "event",
    "audienceEntered": "audience",
    "audienceLeft": "audience",
    "attributeChanged": "attribute",
    "from": "from",
    "to": "to",
}


@dataclass
class Draft:
    """What the form says: the API body, the errors found reading the fields (keyed like the
    API's, with the form's row numbers), and which form row each `then` item came from."""

    body: dict[str, Any]
    errors: dict[str, list[str]] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)

    def form_key(self, key: str) -> str:
        """An API error path with the `then` index turned into the form's row number."""
        found = re.match(r"then\[(\d+)\](.*)", key)
        if found is None:
            return key
        index = int(found.group(1))
        row = self.rows[index] if index < len(self.rows) else index
        return f"then[{row}]{found.group(2)}"


# --- values ---------------------------------------------------------------------------------


def scalar(text: str) -> Any:
    """A typed value as written in a field: `true`, `false`, `null`, numbers; `"3"` (quoted) is
    the text 3; `[...]` / `{...}` JSON when it reads as such; anything else is the text."""
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if _NUMBER.fullmatch(text):
        return json.loads(text)
    if (len(text) >= 2 and text[0] == text[-1] == '"') or text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def literal(value: Any) -> str:
    """How `scalar` would be given `value` back (quoted when it would read as something else)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        back = scalar(value)
        return value if isinstance(back, str) and back == value else json.dumps(value)
    return json.dumps(value)


def filter_text(tree: Any) -> str:
    """A stored filter as the text field shows it: the string form, else its JSON."""
    if not tree:
        return ""
    try:
        text = to_string_form(parse_filter(tree))
    except ValueError:
        text = None
    return text if text is not None else json.dumps(tree)


def _filter(raw: str, key: str, errors: dict[str, list[str]]) -> Any:
    """A typed filter: the string form, or JSON (how a filter with no string form is shown)."""
    text = raw.strip()
    if not text:
        return None
    if text.startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError as err:
            errors.setdefault(key, []).append(f"not a filter: {err}")
            return None
    return text


def _reference(raw: str) -> int | str | None:
    """A select's value: an id (stored as an int), a name, or None for nothing chosen."""
    raw = raw.strip()
    if not raw:
        return None
    return int(raw) if raw.isdigit() else raw


def pairs(raw: str, key: str, errors: dict[str, list[str]]) -> dict[str, Any]:
    """`key=value` lines (blank lines skipped) as an object; values typed as `scalar` reads."""
    out: dict[str, Any] = {}
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq or not name:
            errors.setdefault(key, []).append(f"line {number}: write name=value")
        elif name in out:
            errors.setdefault(key, []).append(f"line {number}: {name} is given twice")
        else:
            out[name] = scalar(value)
    return out


def pairs_text(values: Mapping[str, Any] | None) -> str:
    """An object as `key=value` lines (what `pairs` reads back)."""
    return "\n".join(f"{k}={literal(v)}" for k, v in (values or {}).items())


# --- form -> body -----------------------------------------------------------------------------


def row_numbers(form: Mapping[str, Any]) -> list[int]:
    """The action rows the form holds, in order."""
    found = {int(m.group(1)) for k in form if (m := _ROW_KEY.fullmatch(k))}
    return sorted(found)


def _when(form: Mapping[str, Any], errors: dict[str, list[str]]) -> dict[str, Any] | None:
    kind = form.get("when_kind", "")
    if kind not in TRIGGER_KINDS:
        errors["when"] = ["choose what triggers the rule"]
        return None
    if kind == "event":
        when: dict[str, Any] = {"event": form.get("when_event", "").strip()}
        if not when["event"]:
            errors["when.event"] = ["the name of the event, e.g. add_to_cart"]
        where = _filter(form.get("when_where", ""), "when.where", errors)
        if where is not None:
            when["where"] = where
        return when
    if kind in ("audienceEntered", "audienceLeft"):
        audience = _reference(form.get("when_audience", ""))
        if audience is None:
            errors[f"when.{kind}"] = ["choose an audience"]
        return {kind: audience}
    when = {"attributeChanged": form.get("when_attribute", "").strip()}
    if not when["attributeChanged"]:
        errors["when.attributeChanged"] = ["the name of the attribute, e.g. plan"]
    for key in ("from", "to"):
        raw = form.get(f"when_{key}", "")
        if raw.strip():
            when[key] = scalar(raw)
    return when


def _condition(
    form: Mapping[str, Any], segments: Mapping[int, Any], errors: dict[str, list[str]]
) -> Any:
    chosen = _reference(form.get("if_segment", ""))
    typed = _filter(form.get("if_filter", ""), "if", errors)
    if chosen is not None and typed is not None:
        errors["if"] = ["choose a segment or type a filter, not both"]
        return None
    if chosen is not None:
        if not isinstance(chosen, int) or chosen not in segments:
            errors["if"] = ["that segment no longer exists"]
            return None
        return segments[chosen]
    return typed


def _action(form: Mapping[str, Any], i: int, kind: str, errors: dict[str, list[str]]) -> Any:
    def get(name: str) -> str:
        return str(form.get(f"then-{i}-{name}", ""))

    path = f"then[{i}]"
    if kind in ("addToAudience", "removeFromAudience"):
        action: dict[str, Any] = {kind: _reference(get("audience"))}
        if action[kind] is None:
            errors[f"{path}.{kind}"] = ["choose an audience"]
        if kind == "addToAudience":
            ttl = read_seconds(get("ttl"), f"{path}.ttlSeconds", errors)
            if ttl is not None:
                action["ttlSeconds"] = ttl
        return action
    if kind == "setAttributes":
        values = pairs(get("attributes"), f"{path}.setAttributes", errors)
        if not values and f"{path}.setAttributes" not in errors:
            errors[f"{path}.setAttributes"] = ["at least one name=value line"]
        return {kind: values}
    if kind == "sendCampaign":
        action = {kind: _reference(get("campaign"))}
        if action[kind] is None:
            errors[f"{path}.{kind}"] = ["choose a campaign"]
        return action
    if kind == "startJourney":
        action = {kind: _reference(get("journey"))}
        if action[kind] is None:
            errors[f"{path}.{kind}"] = ["choose a journey"]
        params = pairs(get("params"), f"{path}.params", errors)
        if params:
            action["params"] = params
        return action
    errors[path] = ["choose what this action does"]
    return {}


def body_from_form(form: Mapping[str, Any], segments: Mapping[int, Any]) -> Draft:
    """The rule body (API.md's names) the plain fields describe. `segments` maps the project's
    segment ids to their filters (the `if` a chosen segment gives)."""
    errors: dict[str, list[str]] = {}
    body: dict[str, Any] = {
        "name": str(form.get("name", "")).strip(),
        "enabled": bool(form.get("enabled")),
    }
    priority = str(form.get("priority", "")).strip()
    if not priority:
        body["priority"] = 0
    elif re.fullmatch(r"-?\d{1,9}", priority):
        body["priority"] = int(priority)
    else:
        errors["priority"] = ["a whole number (lower runs first)"]
    when = _when(form, errors)
    if when is not None:
        body["when"] = when
    body["if"] = _condition(form, segments, errors)
    then: list[dict[str, Any]] = []
    rows: list[int] = []
    for i in row_numbers(form):
        kind = str(form.get(f"then-{i}-kind", ""))
        if not kind:
            continue
        rows.append(i)
        then.append(_action(form, i, kind, errors))
    if not then:
        errors["then"] = ["add at least one action"]
    body["then"] = then
    return Draft(body=body, errors=errors, rows=rows)


# --- rule -> form -------------------------------------------------------------------------------


def blank_row(kind: str = "") -> dict[str, str]:
    """An empty action row."""
    return {name: "" for name in ROW_FIELDS} | {"kind": kind}


def values_from_form(form: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The fields as sent (to show them again with their errors), and the rows by number."""
    values = {k: form.get(k, "") for k in form if not k.startswith("then-")}
    values["enabled"] = bool(form.get("enabled"))
    rows = [
        {"n": str(i), **{name: str(form.get(f"then-{i}-{name}", "")) for name in ROW_FIELDS}}
        for i in row_numbers(form)
    ]
    return values, rows


def _ref_text(value: Any) -> str:
    return "" if value is None else str(value)


def values_from_rule(
    rule: Any, segments: Mapping[int, Any]
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A stored rule as the form's fields. A condition equal to a segment's shows as that
    segment chosen; else as the string form (or JSON when it has none)."""
    when = dict(rule.when or {})
    kind = next((k for k in TRIGGER_KINDS if k in when), "event")
    values: dict[str, Any] = {
        "name": rule.name,
        "enabled": bool(rule.enabled),
        "priority": str(rule.priority),
        "when_kind": kind,
        "when_event": when.get("event", "") if kind == "event" else "",
        "when_where": filter_text(when.get("where")),
        "when_audience": _ref_text(when.get(kind)) if kind.startswith("audience") else "",
        "when_attribute": when.get("attributeChanged", ""),
        "when_from": literal(when["from"]) if "from" in when else "",
        "when_to": literal(when["to"]) if "to" in when else "",
        "if_segment": "",
        "if_filter": "",
    }
    if rule.condition:
        same = [sid for sid, tree in segments.items() if _normalized(tree) == rule.condition]
        if same:
            values["if_segment"] = str(same[0])
        else:
            values["if_filter"] = filter_text(rule.condition)
    rows = []
    for n, action in enumerate(rule.actions or []):
        act = next((k for k in ACTION_KINDS if k in action), "")
        row = blank_row(act) | {"n": str(n)}
        if act in ("addToAudience", "removeFromAudience"):
            row["audience"] = _ref_text(action[act])
            if action.get("ttlSeconds"):
                row["ttl"] = describe_seconds(action["ttlSeconds"])
        elif act == "setAttributes":
            row["attributes"] = pairs_text(action[act])
        elif act == "sendCampaign":
            row["campaign"] = _ref_text(action[act])
        elif act == "startJourney":
            row["journey"] = _ref_text(action[act])
            row["params"] = pairs_text(action.get("params"))
        rows.append(row)
    return values, rows


def _normalized(tree: Any) -> Any:
    try:
        return to_json(parse_filter(tree))
    except ValueError:
        return None


# --- errors -> fields ---------------------------------------------------------------------------


def slot_of(key: str) -> str:
    """The form field an error path (with the form's row numbers) is shown next to."""
    if key in ("name", "enabled", "priority", "then"):
        return key
    if key == "if" or key.startswith(("if.", "if[")):
        return "if"
    if key.startswith("when.where"):
        return "when.where"
    if key.startswith("when."):
        return "when." + _WHEN_SLOTS.get(key.removeprefix("when.").split(".")[0], "kind")
    if key == "when":
        return "when.kind"
    found = re.match(r"then\[(\d+)\](?:\.([A-Za-z]+))?", key)
    if found is not None:
        return f"then[{found.group(1)}].{_ACTION_SLOTS.get(found.group(2) or '', 'kind')}"
    return "_other"


def slots(errors: Mapping[str, Sequence[str] | str]) -> dict[str, list[tuple[str, str]]]:
    """Errors by the field they are shown next to: (the API's path, the reason)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for key, why in errors.items():
        reasons = [why] if isinstance(why, str) else list(why)
        for reason in reasons:
            out.setdefault(slot_of(key), []).append((key, str(reason)))
    return out
