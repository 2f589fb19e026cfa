"""The base of every journey step type: validation helpers, what a step sees, what it decides.

Pure: standard library only, no I/O, no globals. A step type is a frozen dataclass whose
instance is its validated config. It says where it may lead (`edge_fields`), whether it is a
waiting step (a loop must pass through one), and `advance`: given a `StepInput` (the run at
this step, the facts, the time) it returns an outcome: `Go` to a next step, `Park` the run here
until a wake time or an outside fact, or `End` the run. Effects are data (`effects.py`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, Self, TypeAlias

from journeys.durations import parse_duration
from journeys.filters import (
    ATTRIBUTE_NAME,
    Condition,
    EventCondition,
    EventFact,
    FilterError,
    UserFacts,
    error_path,
    evaluate,
    parse_filter,
    to_json,
)
from journeys.rules.definition import RuleError, name_problem, parse_where, reference_problem
from journeys.steps.effects import Effect

STEP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_SECONDS = int(parse_duration("36500d").total_seconds())
# How much of a webhook response a run keeps in its context (JSON characters of the body).
MAX_SAVED_BODY = 16_384
MAX_FLATTEN_DEPTH = 5
ENTRY = "entry"  # the context key of the entry event's properties (or the API params)
SAVED = "saved"  # the context key of `saveAs` results


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class StepError(ValueError):
    """A step config that does not validate; `errors` maps field paths to reasons."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        shown = "; ".join(f"{path}: {why[0]}" for path, why in errors.items())
        super().__init__(f"Invalid step: {shown}")
        self.errors = errors


def join(path: str, sub: str) -> str:
    """A field path under another: `steps[1]` + `next`, `steps[1]` + `[0]`."""
    if not sub:
        return path
    if not path:
        return sub
    return f"{path}{sub}" if sub.startswith("[") else f"{path}.{sub}"


def step_label(raw_id: Any, path: str) -> str:
    """How an error names its step: by id when it has a usable one, else by position."""
    if isinstance(raw_id, str) and STEP_ID.fullmatch(raw_id):
        return f'step "{raw_id}"'
    return f"step at {path}"


def is_whole(value: Any) -> bool:
    """A JSON integer (`3`, `3.0`), never a boolean."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )


def duration_text(value: Any) -> str:
    """A duration as stored: the text as given (`"90s"`), or whole seconds as `"<n>s"`."""
    if isinstance(value, str):
        parse_duration(value)
        return value
    if is_whole(value) and 1 <= value <= MAX_SECONDS:
        return f"{int(value)}s"
    raise ValueError("a duration like '90s', '15m', '2h', '3d', '1w', or seconds")


class Problems:
    """Collects a step's validation errors, each message naming the step."""

    def __init__(self, raw_id: Any, path: str) -> None:
        self.label = step_label(raw_id, path)
        self.step_id = raw_id if isinstance(raw_id, str) else ""
        self.path = path
        self.errors: dict[str, list[str]] = {}

    def add(self, sub: str, reason: str) -> None:
        """Record a reason against `sub`, a path relative to the step (`next`, `[0].if`)."""
        self.errors.setdefault(join(self.path, sub), []).append(f"{self.label}: {reason}")

    def take(
        self, raw: Mapping[str, Any], key: str, sub: str = "", *, required: bool = True
    ) -> Any:
        """`raw[key]`, or MISSING (recording "required" when it must be there)."""
        if key in raw and raw[key] is not None:
            return raw[key]
        if required:
            self.add(join(sub, key), f"{key} is required")
        return MISSING

    def known(self, raw: Mapping[str, Any], allowed: tuple[str, ...], sub: str = "") -> None:
        """Refuse fields a shape does not have."""
        for key in raw:
            if key not in allowed:
                self.add(join(sub, str(key)), f"unknown field {key!r}")

    def mapping(self, value: Any, sub: str, what: str) -> Mapping[str, Any] | None:
        """An object field, or None (recording why when it was given as something else)."""
        if isinstance(value, Mapping):
            return value
        if value is not MISSING:
            self.add(sub, f"{what} must be an object")
        return None

    def edge(self, value: Any, sub: str) -> str:
        """A step id another step names (`next`, `onTimeout`); existence is the graph's check."""
        if value is MISSING:
            return ""
        if isinstance(value, str) and STEP_ID.fullmatch(value):
            return value
        self.add(sub, f"{sub.rsplit('.', 1)[-1]} must be a step id (1-64 of A-Z a-z 0-9 _ -)")
        return ""

    def name(self, value: Any, sub: str, what: str = "event") -> str:
        """An event or attribute name (1-255 characters)."""
        if value is MISSING:
            return ""
        why = name_problem(value)
        if why:
            self.add(sub, f"{what} must be {why}")
            return ""
        assert isinstance(value, str)
        return value

    def property_name(self, value: Any, sub: str) -> str:
        """An event property or attribute key as the filter language names them."""
        if value is MISSING:
            return ""
        if isinstance(value, str) and ATTRIBUTE_NAME.fullmatch(value):
            return value
        self.add(sub, f"{sub.rsplit('.', 1)[-1]} must be a property name like cartId")
        return ""

    def reference(self, value: Any, sub: str, what: str) -> int | str:
        """An id (whole number from 1) or a name, kept as given for the app to resolve."""
        if value is MISSING:
            return ""
        why = reference_problem(value)
        if why:
            self.add(sub, f"{what} must be {why}")
            return ""
        return int(value) if is_whole(value) else str(value)

    def duration(self, value: Any, sub: str) -> str:
        """A duration in its stored text (`"90s"`)."""
        if value is MISSING:
            return ""
        try:
            return duration_text(value)
        except ValueError as error:
            self.add(sub, f"{sub.rsplit('.', 1)[-1]}: {error}")
            return ""

    def choice(self, value: Any, sub: str, options: tuple[str, ...]) -> str:
        """One of a fixed set of strings."""
        if value is MISSING:
            return ""
        if isinstance(value, str) and value in options:
            return value
        self.add(sub, f"{sub.rsplit('.', 1)[-1]} must be one of {', '.join(options)}")
        return ""

    def filter(self, value: Any, sub: str) -> Condition | None:
        """A filter in any segment form, parsed (errors name the node under `sub`)."""
        if value is MISSING:
            return None
        try:
            return parse_filter(value)
        except FilterError as error:
            self.add(error_path(sub, error.path), error.message)
            return None

    def where(self, value: Any, event: str, sub: str) -> Condition | None:
        """An event `where`, parsed as the rules parse theirs (over the event's properties)."""
        if value is MISSING or not event:
            return None
        try:
            tree = parse_where(value, event, "")
        except RuleError as error:
            for path, reasons in error.errors.items():
                for reason in reasons:
                    self.add(join(sub, path.lstrip(".")), reason)
            return None
        cond = parse_filter({"event": event, "where": tree})
        assert isinstance(cond, EventCondition)
        return cond.where


# --- what a step sees ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class IncomingEvent:
    """An event of the run's user as it arrives; `at` is when Cairn received it."""

    name: str
    at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class WebhookResult:
    """The outcome of the webhook call a run made at (step, visit)."""

    step: str
    visit: int
    ok: bool
    status: int | None = None
    body: Any = None
    error: str | None = None


def _flatten(prefix: str, value: Any, out: dict[str, Any], depth: int) -> None:
    if isinstance(value, Mapping) and depth < MAX_FLATTEN_DEPTH:
        for key, item in value.items():
            if isinstance(key, str):
                _flatten(f"{prefix}.{key}", item, out, depth + 1)
    else:
        out[prefix] = value


def context_attributes(context: Mapping[str, Any]) -> dict[str, Any]:
    """The run's context as flat filter names: `entry.<property>`, `<saveAs>.status` ..."""
    out: dict[str, Any] = {}
    entry = context.get(ENTRY)
    if isinstance(entry, Mapping):
        _flatten(ENTRY, entry, out, 0)
    saved = context.get(SAVED)
    if isinstance(saved, Mapping):
        for name, result in saved.items():
            _flatten(str(name), result, out, 0)
    return out


@dataclass(frozen=True, kw_only=True)
class StepInput:
    """The run at one step: what `advance` may look at. Built by the machine for each step."""

    step: str
    visit: int
    now: datetime
    # When the run arrived at this step (the start of a wait).
    since: datetime
    # False on arrival, True when the run was parked here and is being looked at again.
    resumed: bool
    wake_at: datetime | None
    user: UserFacts
    context: Mapping[str, Any]
    timezone: str
    event: IncomingEvent | None = None
    webhook_result: WebhookResult | None = None
    last_send_status: str | None = None
    journey_id: str = ""
    run_key: str = ""

    def profile(self) -> UserFacts:
        """The user as step filters see them: the run's context names over the attributes."""
        overlay = context_attributes(self.context)
        if not overlay:
            return self.user
        return replace(self.user, attributes={**self.user.attributes, **overlay})

    def entry_property(self, name: str) -> Any:
        """A property of the entry event (or API params), or MISSING."""
        entry = self.context.get(ENTRY)
        if isinstance(entry, Mapping) and entry.get(name) is not None:
            return entry[name]
        return MISSING


def event_matches(where: Condition | None, event: IncomingEvent) -> bool:
    """Whether an event's properties satisfy a `where` (None: any event of that name)."""
    if where is None:
        return True
    # The same evaluation as a segment's `event ... where`: over this one event's properties.
    fact = EventFact(name=event.name, timestamp=event.at, properties=event.properties)
    probe = EventCondition(event.name, "performed", where=where)
    return evaluate(probe, UserFacts(now=event.at, events=(fact,)))


# --- what a step decides ------------------------------------------------------------------


@dataclass(frozen=True)
class Go:
    """Continue at `next` now; `context`, when given, replaces the run's context."""

    next: str
    effects: tuple[Effect, ...] = ()
    context: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Park:
    """Stay at this step until `wake_at` (None: until an outside fact arrives)."""

    wake_at: datetime | None
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class End:
    """End the run as exited, with the reason recorded (the machine adds the Exit effect)."""

    reason: str
    effects: tuple[Effect, ...] = ()


Outcome: TypeAlias = Go | Park | End


@dataclass(frozen=True, kw_only=True)
class Step:
    """A validated step. Subclasses add their fields and set the class attributes below."""

    id: str
    type_name: ClassVar[str] = ""
    # Waiting steps can hold a run over time; every loop must pass through one.
    is_wait: ClassVar[bool] = False
    # The fields of the API shape besides `id` and `type`.
    fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any], path: str) -> Self:
        """Validate a step body (`{id, type, ...}`); raise StepError naming the step id."""
        problems = Problems(raw.get("id") if isinstance(raw, Mapping) else None, path)
        if not isinstance(raw, Mapping):
            problems.add("", "a step must be an object")
            raise StepError(problems.errors)
        raw_id = raw.get("id")
        if raw_id is None:
            problems.add("id", "id is required")
        elif not (isinstance(raw_id, str) and STEP_ID.fullmatch(raw_id)):
            problems.add("id", "id must be 1-64 of A-Z a-z 0-9 _ -")
        problems.known(raw, ("id", "type", *cls.fields))
        step = cls.check(raw, problems)
        if problems.errors:
            raise StepError(problems.errors)
        return step

    @classmethod
    def check(cls, raw: Mapping[str, Any], problems: Problems) -> Self:
        """Build the step from its fields, recording problems (placeholders where invalid)."""
        raise NotImplementedError

    def edge_fields(self) -> list[tuple[str, str]]:
        """(field path relative to the step, target step id) of every edge, in order."""
        return []

    def edges(self) -> list[str]:
        """The step ids this step may lead to."""
        return [target for _, target in self.edge_fields()]

    def conditions(self) -> list[Condition]:
        """The filters this step evaluates (so the caller loads the event history they need)."""
        return []

    def references(self) -> list[tuple[str, str, int | str]]:
        """(field, "audience" | "template", reference as given) for the app to resolve."""
        return []

    def with_reference(self, field_name: str, resolved: int) -> Self:
        """This step with the reference in `field_name` replaced by a resolved id."""
        changes: dict[str, Any] = {field_name: resolved}
        return replace(self, **changes)

    def config_json(self) -> dict[str, Any]:
        """The type's own fields, normalized (filters as JSON trees)."""
        return {}

    def to_json(self) -> dict[str, Any]:
        """The stored form: `{id, type, ...fields}`; parsing it gives an equal step."""
        return {"id": self.id, "type": self.type_name, **self.config_json()}

    def advance(self, run: StepInput) -> Outcome:
        """Decide what the run does at this step now."""
        raise NotImplementedError


def condition_json(cond: Condition | None) -> Any:
    """A parsed filter back to its normalized JSON tree."""
    return None if cond is None else to_json(cond)
