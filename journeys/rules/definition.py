"""A rule body as API.md gives it, validated and normalized: `{name, enabled, priority, when,
if?, then}`. No I/O: audience and campaign references stay as given (an id or a name) and the
caller resolves them to ids (`references`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from journeys.filters import EventCondition, FilterError, has_nul, parse_filter, to_json
from journeys.text import is_blank

# Stored strings (rules.trigger_kind, the keys of `when`): never rename.
TRIGGER_KINDS = ("event", "audienceEntered", "audienceLeft", "attributeChanged")
# The keys of the `then` items.
ACTION_KINDS = (
    "addToAudience",
    "removeFromAudience",
    "setAttributes",
    "sendCampaign",
    "startJourney",
)
# Which action names an audience or a campaign (resolved to ids on save).
AUDIENCE_ACTIONS = ("addToAudience", "removeFromAudience")
CAMPAIGN_ACTIONS = ("sendCampaign",)
JOURNEY_ACTIONS = ("startJourney",)
MAX_PARAMS_BYTES = 16_384
AUDIENCE_TRIGGERS = ("audienceEntered", "audienceLeft")
WHEN_EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "event": ("where",),
    "audienceEntered": (),
    "audienceLeft": (),
    "attributeChanged": ("from", "to"),
}
ACTION_EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "addToAudience": ("ttlSeconds",),
    "removeFromAudience": (),
    "setAttributes": (),
    "sendCampaign": (),
    "startJourney": ("params",),
}

MAX_NAME = 255
MAX_ACTIONS = 20
MAX_SET_ATTRIBUTES = 100
MAX_PRIORITY = 1_000_000
MAX_TTL_SECONDS = 10 * 366 * 86_400
MAX_ID = 2**63 - 1


class RuleError(ValueError):
    """A rule body that does not validate; `errors` maps field paths to reasons."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        shown = "; ".join(f"{path}: {why[0]}" for path, why in errors.items())
        super().__init__(f"Invalid rule: {shown}")
        self.errors = errors


@dataclass
class RuleSpec:
    """The validated parts of a rule body that were given (None = not given, for PATCH)."""

    enabled: bool | None = None
    priority: int | None = None
    when: dict[str, Any] | None = None
    trigger_kind: str | None = None
    # Event or attribute name; for audience triggers the reference as given.
    trigger_key: Any = None
    condition_given: bool = False
    condition: dict[str, Any] | None = None
    actions: list[dict[str, Any]] | None = None
    # (path, "audience" | "campaign", reference as given) for the caller to resolve.
    references: list[tuple[str, str, Any]] = field(default_factory=list)


def _join(path: str, sub: str) -> str:
    if not sub:
        return path
    return f"{path}{sub}" if sub.startswith("[") else f"{path}.{sub}"


def _is_whole(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )


def name_problem(value: Any) -> str | None:
    """Why `value` is no event/attribute name (None when it is one)."""
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        return f"a string of 1-{MAX_NAME} characters"
    return None


def reference_problem(value: Any) -> str | None:
    """Why `value` is no audience/campaign reference (an id or a name)."""
    if _is_whole(value):
        return None if 1 <= value <= MAX_ID else "an id from 1"
    if isinstance(value, str) and not is_blank(value) and len(value) <= MAX_NAME:
        return None
    return f"an id or a name (1-{MAX_NAME} characters)"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int | float)


def parse_where(raw: Any, event: str, path: str) -> dict[str, Any]:
    """An event `where` (any segment form over the event's properties) as a normalized tree."""
    try:
        if isinstance(raw, str):
            cond = parse_filter(raw)  # the string form is all attribute clauses
        else:
            event_cond = parse_filter({"event": event, "where": raw})
            assert isinstance(event_cond, EventCondition) and event_cond.where is not None
            cond = event_cond.where
    except FilterError as err:
        sub = (
            err.path.removeprefix("where").removeprefix(".")
            if not isinstance(raw, str)
            else err.path
        )
        if sub and not sub.startswith("["):
            sub = "." + sub
        raise RuleError({path + sub: [err.message]}) from None
    return to_json(cond)


def parse_when(raw: Any) -> tuple[dict[str, Any], str, Any]:
    """Validate `when`; (normalized when, trigger kind, trigger key as given)."""
    if not isinstance(raw, Mapping):
        raise RuleError({"when": ["an object with one of " + ", ".join(TRIGGER_KINDS)]})
    kinds = [k for k in TRIGGER_KINDS if k in raw]
    if len(kinds) != 1:
        raise RuleError({"when": ["exactly one of " + ", ".join(TRIGGER_KINDS)]})
    kind = kinds[0]
    errors: dict[str, list[str]] = {}
    for key in raw:
        if key != kind and key not in WHEN_EXTRA_KEYS[kind]:
            errors[f"when.{key}"] = ["unknown field"]
    value = raw[kind]
    why = reference_problem(value) if kind in AUDIENCE_TRIGGERS else name_problem(value)
    if why:
        errors[f"when.{kind}"] = [why]
    if errors:
        raise RuleError(errors)
    when: dict[str, Any] = {kind: value}
    if kind == "event" and raw.get("where") is not None:
        when["where"] = parse_where(raw["where"], value, "when.where")
    if kind == "attributeChanged":
        for key in ("from", "to"):
            if key in raw:
                if not _is_scalar(raw[key]):
                    errors[f"when.{key}"] = ["a string, number, boolean or null"]
                when[key] = raw[key]
    if errors:
        raise RuleError(errors)
    return when, kind, value


def parse_condition(raw: Any) -> dict[str, Any] | None:
    """The `if` filter (any segment form) as a normalized tree; None for none."""
    if raw is None:
        return None
    try:
        return to_json(parse_filter(raw))
    except FilterError as err:
        raise RuleError({_join("if", err.path): [err.message]}) from None


def action_kind(action: Mapping[str, Any]) -> str:
    """The kind of a stored action. Not its first key: PostgreSQL's JSONB orders keys by
    length, so `{"addToAudience": 3, "ttlSeconds": 60}` comes back with `ttlSeconds` first."""
    return next(k for k in ACTION_KINDS if k in action)


def _parse_action(raw: Any, path: str, errors: dict[str, list[str]]) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        errors[path] = ["an object with one of " + ", ".join(ACTION_KINDS)]
        return None
    kinds = [k for k in ACTION_KINDS if k in raw]
    if len(kinds) != 1:
        errors[path] = ["exactly one of " + ", ".join(ACTION_KINDS)]
        return None
    kind = kinds[0]
    before = len(errors)
    for key in raw:
        if key != kind and key not in ACTION_EXTRA_KEYS[kind]:
            errors[f"{path}.{key}"] = ["unknown field"]
    value = raw[kind]
    action: dict[str, Any] = {kind: value}
    if kind == "startJourney" and raw.get("params") is not None:
        params = raw["params"]
        if not isinstance(params, Mapping):
            errors[f"{path}.params"] = ["an object of params for the journey's templates"]
        elif len(json.dumps(params, default=str)) > MAX_PARAMS_BYTES:
            errors[f"{path}.params"] = [f"at most {MAX_PARAMS_BYTES} bytes of JSON"]
        else:
            action["params"] = dict(params)
    if kind in AUDIENCE_ACTIONS or kind in CAMPAIGN_ACTIONS or kind in JOURNEY_ACTIONS:
        why = reference_problem(value)
        if why:
            errors[f"{path}.{kind}"] = [why]
        elif _is_whole(value):
            action[kind] = int(value)
    elif kind == "setAttributes":
        if not isinstance(value, Mapping) or not value:
            errors[f"{path}.setAttributes"] = ["a non-empty object of attributes"]
        elif len(value) > MAX_SET_ATTRIBUTES:
            errors[f"{path}.setAttributes"] = [f"at most {MAX_SET_ATTRIBUTES} attributes"]
        else:
            for key in value:
                if name_problem(key):
                    errors[f"{path}.setAttributes"] = [
                        f"attribute names are 1-{MAX_NAME} characters"
                    ]
            action[kind] = dict(value)
    if kind == "addToAudience" and raw.get("ttlSeconds") is not None:
        ttl = raw["ttlSeconds"]
        if not _is_whole(ttl) or not 1 <= ttl <= MAX_TTL_SECONDS:
            errors[f"{path}.ttlSeconds"] = [f"a whole number of seconds, 1-{MAX_TTL_SECONDS}"]
        else:
            action["ttlSeconds"] = int(ttl)
    return action if len(errors) == before else None


def parse_actions(raw: Any) -> list[dict[str, Any]]:
    """Validate `then` (1-20 actions); normalized actions, references as given."""
    if not isinstance(raw, list) or not raw:
        raise RuleError({"then": ["a non-empty list of actions"]})
    if len(raw) > MAX_ACTIONS:
        raise RuleError({"then": [f"at most {MAX_ACTIONS} actions"]})
    errors: dict[str, list[str]] = {}
    actions = [_parse_action(item, f"then[{i}]", errors) for i, item in enumerate(raw)]
    if errors:
        raise RuleError(errors)
    return [a for a in actions if a is not None]


def parse_rule(body: Mapping[str, Any], *, partial: bool = False) -> RuleSpec:
    """Validate a rule body (all of it, or the given fields when `partial`); RuleError names
    every bad field path (`when.where.plan`, `then[0].addToAudience`)."""
    errors: dict[str, list[str]] = {}
    if has_nul({k: v for k, v in body.items() if k != "name"}):
        raise RuleError({"_schema": ["contains a NUL character"]})
    spec = RuleSpec()
    if not partial:
        for key in ("when", "then"):
            if key not in body:
                errors[key] = ["required"]
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            errors["enabled"] = ["true or false"]
        else:
            spec.enabled = body["enabled"]
    elif not partial:
        spec.enabled = True
    if "priority" in body:
        value = body["priority"]
        if not _is_whole(value) or not -MAX_PRIORITY <= value <= MAX_PRIORITY:
            errors["priority"] = [f"a whole number from {-MAX_PRIORITY} to {MAX_PRIORITY}"]
        else:
            spec.priority = int(value)
    elif not partial:
        spec.priority = 0
    for key, run in (("when", _when_part), ("if", _if_part), ("then", _then_part)):
        if key in body:
            try:
                run(spec, body[key])
            except RuleError as err:
                errors.update(err.errors)
        elif key == "if" and not partial:
            spec.condition_given = True
    if errors:
        raise RuleError(errors)
    return spec


def _when_part(spec: RuleSpec, raw: Any) -> None:
    spec.when, spec.trigger_kind, spec.trigger_key = parse_when(raw)
    if spec.trigger_kind in AUDIENCE_TRIGGERS:
        spec.references.append((f"when.{spec.trigger_kind}", "audience", spec.trigger_key))


def _if_part(spec: RuleSpec, raw: Any) -> None:
    spec.condition_given = True
    spec.condition = parse_condition(raw)


def _then_part(spec: RuleSpec, raw: Any) -> None:
    spec.actions = parse_actions(raw)
    for index, action in enumerate(spec.actions):
        for kind in AUDIENCE_ACTIONS:
            if kind in action:
                spec.references.append((f"then[{index}].{kind}", "audience", action[kind]))
        for kind in CAMPAIGN_ACTIONS:
            if kind in action:
                spec.references.append((f"then[{index}].{kind}", "campaign", action[kind]))
        for kind in JOURNEY_ACTIONS:
            if kind in action:
                spec.references.append((f"then[{index}].{kind}", "journey", action[kind]))


def set_reference(spec: RuleSpec, path: str, resolved_id: int) -> None:
    """Replace the reference at `path` (one of `spec.references`) with the resolved id."""
    if path.startswith("when."):
        assert spec.when is not None
        kind = path.removeprefix("when.")
        spec.when[kind] = resolved_id
        spec.trigger_key = str(resolved_id)
        return
    head, _, kind = path.partition(".")
    index = int(head.removeprefix("then[").removesuffix("]"))
    assert spec.actions is not None
    spec.actions[index][kind] = resolved_id
