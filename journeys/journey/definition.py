"""A journey body as API.md gives it, validated and normalized into a `JourneySpec`.

`{name, trigger, entry?: {policy, period?, key?, existingMembers?}, exit?: [...], goal?: {event,
where?, within?}, steps: [...]}`. Pure: no I/O. Audience and template references stay as given
(an id or a name, listed in `references`) and the app resolves them (`resolve_references`).
Errors are a `JourneyError` whose keys are field paths (`trigger.event`, `steps[2].next`); every
error of a step names it (`step "remind": next "nope" is no step`).

Decisions where API.md is silent:
- `entry` defaults to `{policy: "once", existingMembers: false}`; `period` is required with
  `oncePer` and refused otherwise; `key` (an entry event property, or an API param) needs an
  `event` or `api` trigger; `existingMembers: true` an `audienceEntered` or `segmentEntered`
  one. `matchOn` (exits, waitForEvent) likewise needs an entry event: `event` or `api` trigger.
- Every step but `exit` names its `next` explicitly (no fall-through to the following step).
- Durations are stored as given (`"90s"`); a number of seconds is stored as `"<n>s"`.
- Unknown top-level fields are left to the API schema, as rules do; unknown fields inside
  trigger, entry, exit, goal and steps are errors.

Graph rules: 1-200 steps, ids unique, every edge names a step, every step reachable from the
first, every loop passes through a waiting step (wait, waitForEvent, waitForSegment), and no
path runs more than 98 steps without one (an advance runs at most 100 steps).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from journeys.filters import (
    ATTRIBUTE_NAME,
    Condition,
    EventCondition,
    FilterError,
    error_path,
    has_nul,
    parse_filter,
)
from journeys.filters import required_event_names as filter_event_names
from journeys.filters import to_json as filter_json
from journeys.rules.definition import (
    MAX_NAME,
    RuleError,
    name_problem,
    parse_where,
    reference_problem,
)
from journeys.steps import STEP_TYPES, Step, StepError, WaitForEvent
from journeys.steps.base import duration_text, join, step_label
from journeys.text import is_blank

# Stored strings (the keys of `trigger`, the entry policies): never rename.
TRIGGER_KINDS = ("event", "audienceEntered", "segmentEntered", "api")
POLICIES = ("once", "always", "oncePer")
ENTRY_EVENT_TRIGGERS = ("event", "api")  # triggers whose runs have entry properties
MEMBERSHIP_TRIGGERS = ("audienceEntered", "segmentEntered")
FIELDS = ("name", "trigger", "entry", "exit", "goal", "steps")

MAX_STEPS = 200
MAX_EXITS = 20
MAX_STEPS_PER_ADVANCE = 100
MAX_WAIT_FREE_PATH = MAX_STEPS_PER_ADVANCE - 2


class JourneyError(ValueError):
    """A journey body that does not validate; `errors` maps field paths to reasons."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        shown = "; ".join(f"{path}: {why[0]}" for path, why in errors.items())
        super().__init__(f"Invalid journey: {shown}")
        self.errors = errors


@dataclass(frozen=True)
class Trigger:
    """How users enter: one of the four kinds, with its key."""

    kind: str
    event: str | None = None
    where: Condition | None = None
    audience: int | str | None = None
    segment: Condition | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form, API.md's shape."""
        if self.kind == "event":
            node: dict[str, Any] = {"event": self.event}
            if self.where is not None:
                node["where"] = filter_json(self.where)
            return node
        if self.kind == "audienceEntered":
            return {"audienceEntered": self.audience}
        if self.kind == "segmentEntered":
            assert self.segment is not None
            return {"segmentEntered": filter_json(self.segment)}
        return {"api": True}


@dataclass(frozen=True)
class EntryPolicy:
    """Who may enter again: `once` (per key value), `always`, `oncePer` a period."""

    policy: str = "once"
    period: str | None = None
    key: str | None = None
    existing_members: bool = False

    def to_json(self) -> dict[str, Any]:
        """The stored form, defaults filled in."""
        node: dict[str, Any] = {"policy": self.policy}
        if self.period is not None:
            node["period"] = self.period
        if self.key is not None:
            node["key"] = self.key
        node["existingMembers"] = self.existing_members
        return node


@dataclass(frozen=True)
class ExitRule:
    """An event (optionally paired on an entry property) or leaving a segment ends a run."""

    event: str | None = None
    where: Condition | None = None
    match_on: str | None = None
    left_segment: Condition | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form, API.md's shape."""
        if self.left_segment is not None:
            return {"leftSegment": filter_json(self.left_segment)}
        node: dict[str, Any] = {"event": self.event}
        if self.where is not None:
            node["where"] = filter_json(self.where)
        if self.match_on is not None:
            node["matchOn"] = self.match_on
        return node


@dataclass(frozen=True)
class Goal:
    """The event that ends a run as converted, within `within` of its entry when given."""

    event: str
    where: Condition | None = None
    within: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form, API.md's shape."""
        node: dict[str, Any] = {"event": self.event}
        if self.where is not None:
            node["where"] = filter_json(self.where)
        if self.within is not None:
            node["within"] = self.within
        return node


@dataclass(frozen=True)
class JourneySpec:
    """A validated journey. With `partial`, only the fields named in `given` were parsed."""

    name: str = ""
    trigger: Trigger | None = None
    entry: EntryPolicy = field(default_factory=EntryPolicy)
    exits: tuple[ExitRule, ...] = ()
    goal: Goal | None = None
    steps: tuple[Step, ...] = ()
    given: frozenset[str] = frozenset(FIELDS)
    partial: bool = False
    # (path, "audience" | "template", reference as given) for the app to resolve.
    references: tuple[tuple[str, str, int | str], ...] = ()
    _index: dict[str, Step] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update((step.id, step) for step in self.steps)

    def step(self, step_id: str | None) -> Step | None:
        """The step with this id, or None."""
        return self._index.get(step_id) if step_id is not None else None

    @property
    def first(self) -> str | None:
        """The id of the step every run starts at."""
        return self.steps[0].id if self.steps else None


# --- parsing -----------------------------------------------------------------------------


def _add(errors: dict[str, list[str]], path: str, reason: str) -> None:
    errors.setdefault(path, []).append(reason)


def _merge(errors: dict[str, list[str]], more: Mapping[str, list[str]]) -> None:
    for path, reasons in more.items():
        errors.setdefault(path, []).extend(reasons)


def _unknown(
    raw: Mapping[str, Any], allowed: Iterable[str], path: str, errors: dict[str, list[str]]
) -> None:
    allowed = tuple(allowed)
    for key in raw:
        if key not in allowed:
            _add(errors, join(path, str(key)), "unknown field")


def _event_name(raw: Any, path: str, errors: dict[str, list[str]]) -> str | None:
    why = name_problem(raw)
    if why:
        _add(errors, path, why)
        return None
    assert isinstance(raw, str)
    return raw


def _where(
    raw: Any, event: str | None, path: str, errors: dict[str, list[str]]
) -> Condition | None:
    """An event `where`, validated by the rules' own parser, as a condition."""
    if raw is None or event is None:
        return None
    try:
        tree = parse_where(raw, event, path)
    except RuleError as error:
        _merge(errors, error.errors)
        return None
    cond = parse_filter({"event": event, "where": tree})
    assert isinstance(cond, EventCondition)
    return cond.where


def _filter(raw: Any, path: str, errors: dict[str, list[str]]) -> Condition | None:
    try:
        return parse_filter(raw)
    except FilterError as error:
        _add(errors, error_path(path, error.path), error.message)
        return None


def _duration(raw: Any, path: str, errors: dict[str, list[str]]) -> str | None:
    try:
        return duration_text(raw)
    except ValueError as error:
        _add(errors, path, str(error))
        return None


def parse_trigger(raw: Any, errors: dict[str, list[str]]) -> Trigger | None:
    """Validate `trigger` (`{event, where?}`, `{audienceEntered}`, `{segmentEntered}`, `{api}`)."""
    kinds_text = ", ".join(TRIGGER_KINDS)
    if not isinstance(raw, Mapping):
        _add(errors, "trigger", f"an object with one of {kinds_text}")
        return None
    kinds = [kind for kind in TRIGGER_KINDS if kind in raw]
    if len(kinds) != 1:
        _add(errors, "trigger", f"exactly one of {kinds_text}")
        return None
    kind = kinds[0]
    before = len(errors)
    _unknown(raw, (kind, "where") if kind == "event" else (kind,), "trigger", errors)
    path = f"trigger.{kind}"
    value = raw[kind]
    trigger = None
    if kind == "event":
        event = _event_name(value, path, errors)
        where = _where(raw.get("where"), event, "trigger.where", errors)
        trigger = Trigger(kind, event=event, where=where)
    elif kind == "audienceEntered":
        why = reference_problem(value)
        if why:
            _add(errors, path, why)
        else:
            trigger = Trigger(kind, audience=int(value) if not isinstance(value, str) else value)
    elif kind == "segmentEntered":
        segment = _filter(value, path, errors)
        trigger = Trigger(kind, segment=segment)
    elif value is not True:
        _add(errors, path, "must be true")
    else:
        trigger = Trigger(kind)
    return trigger if len(errors) == before else None


def parse_entry(raw: Any, errors: dict[str, list[str]]) -> EntryPolicy | None:
    """Validate `entry` (absent or null: the default policy)."""
    if raw is None:
        return EntryPolicy()
    if not isinstance(raw, Mapping):
        _add(errors, "entry", "an object {policy, period?, key?, existingMembers?}")
        return None
    before = len(errors)
    _unknown(raw, ("policy", "period", "key", "existingMembers"), "entry", errors)
    policy = raw.get("policy", "once")
    if policy not in POLICIES:
        _add(errors, "entry.policy", f"one of {', '.join(POLICIES)}")
    period = None
    if raw.get("period") is not None:
        if policy != "oncePer":
            _add(errors, "entry.period", "only with the policy oncePer")
        else:
            period = _duration(raw["period"], "entry.period", errors)
    elif policy == "oncePer":
        _add(errors, "entry.period", "required with the policy oncePer")
    key = raw.get("key")
    if key is not None and not (isinstance(key, str) and ATTRIBUTE_NAME.fullmatch(key)):
        _add(errors, "entry.key", "an entry event property name like orderId")
    existing = raw.get("existingMembers", False)
    if not isinstance(existing, bool):
        _add(errors, "entry.existingMembers", "true or false")
    if len(errors) != before:
        return None
    return EntryPolicy(str(policy), period, key, existing)


def _exit_rule(raw: Any, path: str, errors: dict[str, list[str]]) -> ExitRule | None:
    if not isinstance(raw, Mapping) or ("event" in raw) == ("leftSegment" in raw):
        _add(errors, path, "an object {event, where?, matchOn?} or {leftSegment: filter}")
        return None
    before = len(errors)
    if "leftSegment" in raw:
        _unknown(raw, ("leftSegment",), path, errors)
        segment = _filter(raw["leftSegment"], f"{path}.leftSegment", errors)
        return ExitRule(left_segment=segment) if len(errors) == before else None
    _unknown(raw, ("event", "where", "matchOn"), path, errors)
    event = _event_name(raw["event"], f"{path}.event", errors)
    where = _where(raw.get("where"), event, f"{path}.where", errors)
    match_on = raw.get("matchOn")
    if match_on is not None and not (
        isinstance(match_on, str) and ATTRIBUTE_NAME.fullmatch(match_on)
    ):
        _add(errors, f"{path}.matchOn", "an entry event property name like cartId")
    if len(errors) != before:
        return None
    return ExitRule(event=event, where=where, match_on=match_on)


def parse_exits(raw: Any, errors: dict[str, list[str]]) -> tuple[ExitRule, ...] | None:
    """Validate `exit` (absent or null: none)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        _add(errors, "exit", "a list of {event, where?, matchOn?} or {leftSegment}")
        return None
    if len(raw) > MAX_EXITS:
        _add(errors, "exit", f"at most {MAX_EXITS} exits")
        return None
    rules = [_exit_rule(item, f"exit[{index}]", errors) for index, item in enumerate(raw)]
    if any(rule is None for rule in rules):
        return None
    return tuple(rule for rule in rules if rule is not None)


def parse_goal(raw: Any, errors: dict[str, list[str]]) -> Goal | None:
    """Validate `goal` (None for none; errors recorded)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or "event" not in raw:
        _add(errors, "goal", "an object {event, where?, within?}")
        return None
    before = len(errors)
    _unknown(raw, ("event", "where", "within"), "goal", errors)
    event = _event_name(raw["event"], "goal.event", errors)
    where = _where(raw.get("where"), event, "goal.where", errors)
    within = None
    if raw.get("within") is not None:
        within = _duration(raw["within"], "goal.within", errors)
    if len(errors) != before or event is None:
        return None
    return Goal(event, where, within)


def parse_steps(raw: Any, errors: dict[str, list[str]]) -> tuple[Step, ...] | None:
    """Validate `steps`: each step's config, then the graph they make."""
    if not isinstance(raw, list) or not raw:
        _add(errors, "steps", "a non-empty list of steps")
        return None
    if len(raw) > MAX_STEPS:
        _add(errors, "steps", f"at most {MAX_STEPS} steps")
        return None
    before = len(errors)
    parsed: list[Step | None] = []
    first_index: dict[str, int] = {}
    types_text = ", ".join(STEP_TYPES)
    for index, item in enumerate(raw):
        path = f"steps[{index}]"
        label = step_label(item.get("id") if isinstance(item, Mapping) else None, path)
        step: Step | None = None
        if not isinstance(item, Mapping):
            _add(errors, path, f"{label}: a step must be an object {{id, type, ...}}")
        elif item.get("type") not in STEP_TYPES:
            _add(errors, f"{path}.type", f"{label}: type must be one of {types_text}")
        else:
            try:
                step = STEP_TYPES[item["type"]].parse(item, path)
            except StepError as error:
                _merge(errors, error.errors)
        raw_id = item.get("id") if isinstance(item, Mapping) else None
        if isinstance(raw_id, str):
            if raw_id in first_index:
                _add(
                    errors,
                    f"{path}.id",
                    f'{label}: id "{raw_id}" is already used by steps[{first_index[raw_id]}]',
                )
            else:
                first_index[raw_id] = index
        parsed.append(step)
    for index, step in enumerate(parsed):
        if step is None:
            continue
        for sub, target in step.edge_fields():
            if target and target not in first_index:
                _add(
                    errors,
                    join(f"steps[{index}]", sub),
                    f'step "{step.id}": {sub} "{target}" is no step',
                )
    if len(errors) != before:
        return None
    steps = tuple(step for step in parsed if step is not None)
    check_graph(steps, errors)
    return steps if len(errors) == before else None


# --- the graph ---------------------------------------------------------------------------


def _components(nodes: list[str], successors: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of a small graph (≤200 nodes: recursion is fine)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in successors[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            found.append(component)

    for node in nodes:
        if node not in index:
            visit(node)
    return found


def _cycle_from(start: str, members: set[str], successors: Mapping[str, list[str]]) -> list[str]:
    """A shortest loop from `start` back to it inside one component."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in successors[node]:
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if target in members and target not in previous:
                previous[target] = node
                queue.append(target)
    return [start, start]  # pragma: no cover - a component always loops


def check_graph(steps: tuple[Step, ...], errors: dict[str, list[str]]) -> None:
    """Reachability, loops without a waiting step, and wait-free path length."""
    position = {step.id: index for index, step in enumerate(steps)}
    by_id = {step.id: step for step in steps}
    seen = {steps[0].id}
    queue = deque([steps[0].id])
    while queue:
        for target in by_id[queue.popleft()].edges():
            if target not in seen:
                seen.add(target)
                queue.append(target)
    for index, step in enumerate(steps):
        if step.id not in seen:
            _add(
                errors,
                f"steps[{index}]",
                f'step "{step.id}": not reachable from the first step "{steps[0].id}"',
            )
    # Between waiting steps the graph must be acyclic: a loop there would run without end.
    plain = [step.id for step in steps if not step.is_wait]
    successors = {
        node: [t for t in dict.fromkeys(by_id[node].edges()) if not by_id[t].is_wait]
        for node in plain
    }
    looping = False
    for component in _components(plain, successors):
        if len(component) == 1 and component[0] not in successors[component[0]]:
            continue
        looping = True
        start = min(component, key=position.__getitem__)
        loop = " → ".join(_cycle_from(start, set(component), successors))
        _add(
            errors,
            f"steps[{position[start]}]",
            f'step "{start}": the loop {loop} does not pass through a waiting step',
        )
    if looping:
        return
    # Longest run of plain steps starting at each plain step (an acyclic graph now).
    longest: dict[str, int] = {}
    for node in reversed(_topological(plain, successors)):
        longest[node] = 1 + max((longest[t] for t in successors[node]), default=0)
    for node in plain:
        if longest[node] > MAX_WAIT_FREE_PATH:
            _add(
                errors,
                f"steps[{position[node]}]",
                f'step "{node}": {longest[node]} steps in a row without a waiting step'
                f" (at most {MAX_WAIT_FREE_PATH})",
            )
            break


def _topological(nodes: list[str], successors: Mapping[str, list[str]]) -> list[str]:
    incoming = dict.fromkeys(nodes, 0)
    for node in nodes:
        for target in successors[node]:
            incoming[target] += 1
    ready = deque(node for node in nodes if incoming[node] == 0)
    order = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for target in successors[node]:
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return order


# --- the whole body ----------------------------------------------------------------------


def _cross_checks(
    trigger: Trigger | None,
    entry: EntryPolicy | None,
    exits: tuple[ExitRule, ...] | None,
    steps: tuple[Step, ...] | None,
    errors: dict[str, list[str]],
) -> None:
    if trigger is None:
        return
    has_entry_event = trigger.kind in ENTRY_EVENT_TRIGGERS
    if entry is not None:
        if entry.key is not None and not has_entry_event:
            _add(
                errors,
                "entry.key",
                "only with an event or api trigger (it names an entry property)",
            )
        if entry.existing_members and trigger.kind not in MEMBERSHIP_TRIGGERS:
            _add(
                errors,
                "entry.existingMembers",
                "only with an audienceEntered or segmentEntered trigger",
            )
    if has_entry_event:
        return
    for index, rule in enumerate(exits or ()):
        if rule.match_on is not None:
            _add(errors, f"exit[{index}].matchOn", "needs an event or api trigger (an entry event)")
    for index, step in enumerate(steps or ()):
        if isinstance(step, WaitForEvent) and step.match_on is not None:
            _add(
                errors,
                f"steps[{index}].matchOn",
                f'step "{step.id}": matchOn needs an event or api trigger (an entry event)',
            )


def parse_journey(body: Mapping[str, Any], *, partial: bool = False) -> JourneySpec:
    """Validate a journey body (all of it, or only the given fields when `partial`).

    JourneyError names every bad field path; step errors name the step id.
    """
    if has_nul(dict(body)):
        raise JourneyError({"_schema": ["contains a NUL character"]})
    errors: dict[str, list[str]] = {}
    if not partial:
        for key in ("name", "trigger", "steps"):
            if key not in body:
                errors[key] = ["required"]
    name = ""
    if "name" in body:
        value = body["name"]
        if not isinstance(value, str) or is_blank(value) or len(value) > MAX_NAME:
            _add(errors, "name", f"a string of 1-{MAX_NAME} characters, not blank")
        else:
            name = value
    trigger = parse_trigger(body["trigger"], errors) if "trigger" in body else None
    entry = parse_entry(body.get("entry"), errors) if "entry" in body or not partial else None
    exits = parse_exits(body.get("exit"), errors) if "exit" in body or not partial else None
    goal = parse_goal(body.get("goal"), errors) if "goal" in body else None
    steps = parse_steps(body["steps"], errors) if "steps" in body else None
    _cross_checks(trigger, entry, exits, steps, errors)
    if errors:
        raise JourneyError(errors)
    references: list[tuple[str, str, int | str]] = []
    if trigger is not None and trigger.audience is not None:
        references.append(("trigger.audienceEntered", "audience", trigger.audience))
    for index, step in enumerate(steps or ()):
        for sub, kind, value in step.references():
            references.append((f"steps[{index}].{sub}", kind, value))
    return JourneySpec(
        name=name,
        trigger=trigger,
        entry=entry or EntryPolicy(),
        exits=exits or (),
        goal=goal,
        steps=steps or (),
        given=frozenset(key for key in FIELDS if key in body) if partial else frozenset(FIELDS),
        partial=partial,
        references=tuple(references),
    )


def resolve_references(spec: JourneySpec, resolved: Mapping[str, int]) -> JourneySpec:
    """The spec with references replaced by ids, keyed by their path in `spec.references`."""
    trigger, steps = spec.trigger, list(spec.steps)
    for path, resolved_id in resolved.items():
        if path == "trigger.audienceEntered":
            assert trigger is not None
            trigger = replace(trigger, audience=resolved_id)
            continue
        head, _, sub = path.partition(".")
        index = int(head.removeprefix("steps[").removesuffix("]"))
        steps[index] = steps[index].with_reference(sub, resolved_id)
    kinds = {path: kind for path, kind, _ in spec.references}
    references = tuple(
        (path, kinds[path], resolved.get(path, value)) for path, _, value in spec.references
    )
    return replace(spec, trigger=trigger, steps=tuple(steps), references=references)


# --- stored forms ------------------------------------------------------------------------


def to_json(spec: JourneySpec) -> dict[str, Any]:
    """The normalized stored form (only the given fields of a partial spec)."""
    node: dict[str, Any] = {}
    if "name" in spec.given:
        node["name"] = spec.name
    if "trigger" in spec.given:
        node["trigger"] = spec.trigger.to_json() if spec.trigger is not None else None
    if "entry" in spec.given:
        node["entry"] = spec.entry.to_json()
    if "exit" in spec.given:
        node["exit"] = [rule.to_json() for rule in spec.exits]
    if "goal" in spec.given:
        node["goal"] = spec.goal.to_json() if spec.goal is not None else None
    if "steps" in spec.given:
        node["steps"] = [step.to_json() for step in spec.steps]
    return node


def canonical_json(spec: JourneySpec) -> str:
    """The definition as one canonical text: sorted keys, no spaces, `name` left out.

    Two bodies that mean the same journey (key order, `3600.0` for `3600`, a filter's string
    form or its tree) give the same text, so the app can tell whether a save changes the
    definition (a new version) or only renames it.
    """
    node = to_json(spec)
    node.pop("name", None)
    return json.dumps(node, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(spec: JourneySpec) -> str:
    """SHA-256 (hex) of `canonical_json`: equal for equal definitions."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


# --- what the worker needs to know -------------------------------------------------------


def required_event_names(spec: JourneySpec) -> set[str]:
    """Event names whose history the journey's filters read (branch, waitForSegment, exits)."""
    conditions: list[Condition] = [c for step in spec.steps for c in step.conditions()]
    conditions += [rule.left_segment for rule in spec.exits if rule.left_segment is not None]
    if spec.trigger is not None and spec.trigger.segment is not None:
        conditions.append(spec.trigger.segment)
    return {name for cond in conditions for name in filter_event_names(cond)}


def listened_events(spec: JourneySpec) -> set[str]:
    """Event names that can move a run along: waitForEvent steps, exit events, the goal."""
    names = {step.event for step in spec.steps if isinstance(step, WaitForEvent)}
    names |= {rule.event for rule in spec.exits if rule.event is not None}
    if spec.goal is not None:
        names.add(spec.goal.event)
    return names
