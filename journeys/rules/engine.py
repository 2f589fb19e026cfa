"""Rules at run time: which rules a cause triggers, and the chain of causes their actions make.

No I/O: the worker passes what it needs as callables (evaluate a rule's `if` for the user,
apply one action and say which causes it made). The chain is breadth-first and deterministic:
the rules a cause triggers run in (priority, id) order, and the causes their actions make are
handled after every cause of the level before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from journeys.filters import (
    Condition,
    EventCondition,
    EventFact,
    UserFacts,
    evaluate,
    parse_filter,
    typed_equal,
)

MAX_DEPTH = 10
STOPPED_DEPTH = "chain depth {depth} reached"
STOPPED_ONCE = "rule already fired for this event"


@dataclass(frozen=True)
class Cause:
    """Something that happened to a user that rules may listen for.

    `kind` is a trigger kind (`event`, `audienceEntered`, `audienceLeft`, `attributeChanged`);
    `key` the event name, audience id (text) or attribute name. `before`/`after` are an
    attribute's values (None = absent); `label` an audience's name, for the record.
    """

    kind: str
    key: str
    properties: Mapping[str, Any] = field(default_factory=dict)
    before: Any = None
    after: Any = None
    label: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The cause as stored on a firing: `{"audienceEntered": "3", "audience": "Bought"}`."""
        node: dict[str, Any] = {self.kind: self.key}
        if self.kind == "attributeChanged":
            node["from"] = self.before
            node["to"] = self.after
        if self.label is not None:
            node["audience"] = self.label
        return node


@dataclass(frozen=True)
class CompiledRule:
    """A stored rule ready to match: its `where` parsed once per job, not per event."""

    id: int
    priority: int
    kind: str
    key: str
    when: Mapping[str, Any]
    condition: Mapping[str, Any] | None
    actions: tuple[Mapping[str, Any], ...]
    where: Condition | None = None

    @classmethod
    def build(
        cls,
        *,
        id: int,
        priority: int,
        trigger_kind: str,
        trigger_key: str,
        when: Mapping[str, Any],
        condition: Mapping[str, Any] | None,
        actions: Sequence[Mapping[str, Any]],
    ) -> CompiledRule:
        """From the stored columns of a rule."""
        where = None
        if trigger_kind == "event" and when.get("where") is not None:
            cond = parse_filter({"event": trigger_key, "where": when["where"]})
            assert isinstance(cond, EventCondition)
            where = cond.where
        return cls(
            id=id,
            priority=priority,
            kind=trigger_kind,
            key=trigger_key,
            when=when,
            condition=condition,
            actions=tuple(actions),
            where=where,
        )


def _same(actual: Any, expected: Any) -> bool:
    if expected is None or actual is None:
        return actual is None and expected is None
    if isinstance(actual, dict | list):
        return False
    return typed_equal(actual, expected)


def trigger_matches(rule: CompiledRule, cause: Cause, now: datetime) -> bool:
    """Whether the cause is what the rule's `when` listens for (kind, key, where, from/to)."""
    if rule.kind != cause.kind or rule.key != cause.key:
        return False
    if rule.kind == "event" and rule.where is not None:
        # The same evaluation as a segment's `event ... where`: over this one event's properties.
        fact = EventFact(name=cause.key, timestamp=now, properties=cause.properties)
        probe = EventCondition(cause.key, "performed", where=rule.where)
        return evaluate(probe, UserFacts(now=now, events=(fact,)))
    if rule.kind == "attributeChanged":
        if "from" in rule.when and not _same(cause.before, rule.when["from"]):
            return False
        if "to" in rule.when and not _same(cause.after, rule.when["to"]):
            return False
    return True


class RuleIndex:
    """The enabled rules of a project by trigger, each list in (priority, id) order."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self._by_trigger: dict[tuple[str, str], list[CompiledRule]] = {}
        for rule in rules:
            self._by_trigger.setdefault((rule.kind, rule.key), []).append(rule)
        for items in self._by_trigger.values():
            items.sort(key=lambda r: (r.priority, r.id))

    def __bool__(self) -> bool:
        return bool(self._by_trigger)

    def all(self) -> list[CompiledRule]:
        """Every rule of the index."""
        return [rule for items in self._by_trigger.values() for rule in items]

    def listens(self, kind: str, key: str) -> bool:
        """Whether some rule has this trigger (before `where`/`from`/`to`)."""
        return (kind, key) in self._by_trigger

    def matching(self, cause: Cause, now: datetime) -> list[CompiledRule]:
        """The rules this cause triggers, in the order they run."""
        candidates = self._by_trigger.get((cause.kind, cause.key), ())
        return [rule for rule in candidates if trigger_matches(rule, cause, now)]


def admission(rule_id: int, depth: int, fired: set[int], max_depth: int = MAX_DEPTH) -> str | None:
    """Why a matched rule must not run at this depth of the chain (None: it may)."""
    if depth >= max_depth:
        return STOPPED_DEPTH.format(depth=max_depth)
    if rule_id in fired:
        return STOPPED_ONCE
    return None


@dataclass
class Firing:
    """One rule that matched a cause: fired (actions applied), skipped (`if` false) or stopped."""

    rule: CompiledRule
    cause: Cause
    depth: int
    chain: tuple[int, ...]
    status: str
    reason: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)


# (rule, action) -> (the action's result for the record, the causes it made)
ApplyAction = Callable[[CompiledRule, Mapping[str, Any]], tuple[dict[str, Any], list[Cause]]]


def run_chain(
    roots: Sequence[Cause],
    index: RuleIndex,
    *,
    condition_holds: Callable[[CompiledRule], bool],
    apply: ApplyAction,
    now: datetime,
    max_depth: int = MAX_DEPTH,
) -> list[Firing]:
    """Run the rules the root causes trigger and, breadth-first, those their actions trigger.

    Each rule fires at most once per call (one root event); a match past `max_depth` levels
    or of a rule that already fired is recorded as stopped with its reason.
    """
    firings: list[Firing] = []
    fired: set[int] = set()
    queue: deque[tuple[Cause, int, tuple[int, ...]]] = deque((c, 0, ()) for c in roots)
    while queue:
        cause, depth, chain = queue.popleft()
        for rule in index.matching(cause, now):
            reason = admission(rule.id, depth, fired, max_depth)
            if reason is not None:
                firings.append(Firing(rule, cause, depth, chain, "stopped", reason))
                continue
            if not condition_holds(rule):
                firings.append(Firing(rule, cause, depth, chain, "skipped", "if did not match"))
                continue
            fired.add(rule.id)
            firing = Firing(rule, cause, depth, chain, "fired")
            firings.append(firing)
            for action in rule.actions:
                result, caused = apply(rule, action)
                firing.results.append(result)
                for new in caused:
                    queue.append((new, depth + 1, (*chain, rule.id)))
    return firings
