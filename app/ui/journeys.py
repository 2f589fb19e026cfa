"""Journeys: the list, and one journey drawn as a flow of its steps with what each step did,
its versions, its runs and its definition in words; activate / pause / archive.

The page reads the stored definition (references as ids, shown by name) and the same
`journey_stats` as GET /v1/journeys/{id}/stats; the state changes go through the same services
as the API, so a move the API refuses is refused here with the same message.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import redirect, render_template, request, url_for
from sqlalchemy import func, select

from app.db import db
from app.errors import DomainError
from app.models import Audience, Journey, JourneyRun, JourneyVersion, Template
from app.models.journey import LIVE_RUN_STATUSES, STATUSES
from app.services import journeys as service
from app.ui.access import audit, project_page
from app.ui.blueprint import bp
from app.ui.describe import describe_filter, describe_seconds
from journeys.durations import parse_duration
from journeys.steps import STEP_TYPES, StepError

# Branches nest as columns up to this depth; deeper ones continue as separate flows below
# (a page stays readable, and the template's recursion stays shallow).
MAX_NESTING = 12
RUNS_SHOWN = 50


@dataclass(frozen=True)
class Names:
    """The names of the templates and audiences a definition refers to by id."""

    templates: Mapping[int, str] = field(default_factory=dict)
    audiences: Mapping[int, str] = field(default_factory=dict)

    def template(self, ref: Any) -> str:
        """A template's name (the stored reference when it no longer exists)."""
        return self.templates.get(ref, str(ref)) if isinstance(ref, int) else str(ref)

    def audience(self, ref: Any) -> str:
        """An audience's name (the stored reference when it no longer exists)."""
        return self.audiences.get(ref, str(ref)) if isinstance(ref, int) else str(ref)


def _ids(values: Iterable[Any]) -> list[int]:
    out = set()
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            out.add(value)
        elif isinstance(value, str) and value.isdigit():
            out.add(int(value))
    return sorted(out)


def names_for(pid: int, definitions: Iterable[Mapping[str, Any]]) -> Names:
    """Look up, in two queries, every template and audience the definitions name."""
    templates: list[Any] = []
    audiences: list[Any] = []
    for definition in definitions:
        trigger = definition.get("trigger") or {}
        audiences.append(trigger.get("audienceEntered"))
        for step in definition.get("steps") or []:
            templates.append(step.get("template"))
            audiences.extend((step.get("add"), step.get("remove")))
    found: dict[str, dict[int, str]] = {}
    for key, model, refs in (
        ("templates", Template, templates),
        ("audiences", Audience, audiences),
    ):
        wanted = _ids(refs)
        rows = (
            db.session.execute(
                select(model.id, model.name).where(model.project_id == pid, model.id.in_(wanted))
            ).all()
            if wanted
            else []
        )
        found[key] = {row_id: name for row_id, name in rows}
    return Names(templates=found["templates"], audiences=found["audiences"])


def duration(value: Any) -> str:
    """A stored duration as the marketer wrote it (`24h`); seconds in the largest unit that
    divides them (`"86400s"` → `1d`)."""
    text = str(value)
    if not re.fullmatch(r"\d+s", text):
        return text
    try:
        seconds = int(parse_duration(text).total_seconds())
    except ValueError:
        return text
    return describe_seconds(seconds)


# --- the definition in words ---------------------------------------------------------------


def describe_trigger(
    trigger: Mapping[str, Any] | None, names: Names, journey_id: Any = None
) -> str:
    """`a user does cart_updated where plan is pro`, `a user enters audience Trial` ..."""
    trigger = trigger or {}
    if "event" in trigger:
        text = f"a user does {trigger['event']}"
        if trigger.get("where"):
            text += f" where {describe_filter(trigger['where'])}"
        return text
    if "audienceEntered" in trigger:
        return f"a user enters audience {names.audience(trigger['audienceEntered'])}"
    if "segmentEntered" in trigger:
        return f"a user comes to match {describe_filter(trigger['segmentEntered'])}"
    if trigger.get("api"):
        return f"your backend enters a user (POST /v1/journeys/{journey_id or '{id}'}/enter)"
    return "—"


def describe_entry(entry: Mapping[str, Any] | None) -> str:
    """Who may enter again: `once per user`, `every time, one live run per cartId` ..."""
    entry = entry or {}
    policy = entry.get("policy", "once")
    key = entry.get("key")
    if policy == "always":
        text = "every time the trigger happens"
        if key:
            text += f", at most one live run per {key}"
    elif policy == "oncePer":
        text = f"at most once every {duration(entry.get('period'))}"
        if key:
            text += f" per {key}"
    else:
        text = f"once per {key}" if key else "once per user"
    if entry.get("existingMembers"):
        text += "; users already in it enter when it is first activated"
    return text


def describe_exit(rule: Mapping[str, Any]) -> str:
    """`the user does cart_emptied (the same cartId)`, `the user stops matching ...`."""
    if "leftSegment" in rule:
        return f"the user stops matching {describe_filter(rule['leftSegment'])}"
    text = f"the user does {rule.get('event')}"
    if rule.get("where"):
        text += f" where {describe_filter(rule['where'])}"
    if rule.get("matchOn"):
        text += f" (the same {rule['matchOn']} as on entry)"
    return text


def describe_goal(goal: Mapping[str, Any] | None) -> str | None:
    """`purchase within 3d of entering` (a run that does it ends as converted)."""
    if not goal:
        return None
    text = f"the user does {goal.get('event')}"
    if goal.get("where"):
        text += f" where {describe_filter(goal['where'])}"
    if goal.get("within"):
        text += f" within {duration(goal['within'])} of entering"
    return text


# --- steps in words: one describer per step type ---------------------------------------------


def _wait(raw: Mapping[str, Any], names: Names) -> str:
    if raw.get("duration") is not None:
        return f"wait {duration(raw['duration'])}"
    if raw.get("until"):
        until = raw["until"]
        text = f"wait until {until.get('time')}"
        if until.get("weekdays"):
            text += f" on {', '.join(until['weekdays'])}"
        return text + " in the user's time zone"
    attribute = raw.get("untilAttribute") or {}
    text = f"wait until the time in attribute {attribute.get('key')}"
    if attribute.get("offset"):
        text += f" {attribute['offset']}"
    return text


def _wait_for_event(raw: Mapping[str, Any], names: Names) -> str:
    text = f"wait for {raw.get('event')}"
    if raw.get("where"):
        text += f" where {describe_filter(raw['where'])}"
    if raw.get("matchOn"):
        text += f" matched on {raw['matchOn']}"
    return f"{text}, timeout {duration(raw.get('timeout'))}"


def _wait_for_segment(raw: Mapping[str, Any], names: Names) -> str:
    return (
        f"wait until the user matches {describe_filter(raw.get('filter'))}, "
        f"timeout {duration(raw.get('timeout'))}"
    )


def _branch(raw: Mapping[str, Any], names: Names) -> str:
    return "branch"


def _split(raw: Mapping[str, Any], names: Names) -> str:
    return "split " + "/".join(str(v.get("percent")) for v in raw.get("variants") or [])


def _send(raw: Mapping[str, Any], names: Names) -> str:
    return f"send {raw.get('channel')} with template {names.template(raw.get('template'))}"


def _audience(raw: Mapping[str, Any], names: Names) -> str:
    if raw.get("remove") is not None:
        return f"remove from audience {names.audience(raw['remove'])}"
    text = f"add to audience {names.audience(raw.get('add'))}"
    if raw.get("ttlSeconds"):
        text += f" for {describe_seconds(raw['ttlSeconds'])}"
    return text


def _set_attributes(raw: Mapping[str, Any], names: Names) -> str:
    pairs = ", ".join(f"{k} = {v}" for k, v in (raw.get("attributes") or {}).items())
    return f"set {pairs}"


def _webhook(raw: Mapping[str, Any], names: Names) -> str:
    text = f"call webhook {raw.get('url')}"
    if raw.get("saveAs"):
        text += f", keep the answer as {raw['saveAs']}"
    return text


def _exit(raw: Mapping[str, Any], names: Names) -> str:
    return "exit"


STEP_WORDS: dict[str, Callable[[Mapping[str, Any], Names], str]] = {
    "wait": _wait,
    "waitForEvent": _wait_for_event,
    "waitForSegment": _wait_for_segment,
    "branch": _branch,
    "split": _split,
    "send": _send,
    "audience": _audience,
    "setAttributes": _set_attributes,
    "webhook": _webhook,
    "exit": _exit,
}


def describe_step(raw: Mapping[str, Any], names: Names) -> str:
    """A step's type and config in words: `wait 1d`, `send inapp with template promo` ..."""
    words = STEP_WORDS.get(str(raw.get("type")))
    return words(raw, names) if words is not None else str(raw.get("type"))


def _edge_label(raw: Mapping[str, Any], name: str) -> str:
    """How an edge reads: `next`, `timeout 24h`, `if plan is pro`, `otherwise`, `50 %`."""
    if name == "onTimeout":
        return f"timeout {duration(raw.get('timeout'))}"
    if name == "default":
        return "otherwise"
    head, _, _ = name.partition(".")
    if head.startswith(("branches[", "variants[")):
        index = int(head.split("[", 1)[1].rstrip("]"))
        if head.startswith("variants["):
            variants = raw.get("variants") or []
            return f"{variants[index].get('percent')} %" if index < len(variants) else head
        branches = raw.get("branches") or []
        test = branches[index].get("if") if index < len(branches) else None
        if isinstance(test, Mapping) and set(test) == {"lastSend"}:
            return f"if the last message was {test['lastSend']}"
        return f"if {describe_filter(test)}"
    return name


# --- the flow: steps laid out as lanes, branches as columns -----------------------------------


@dataclass
class Edge:
    """One way out of a step: its label, where it goes, how many runs took it."""

    key: str
    label: str
    target: str
    count: int


@dataclass
class Box:
    """A step as drawn: words, counts, and either one edge on or columns of branches."""

    id: str
    type: str
    text: str
    stats: Mapping[str, Any]
    edge: Edge | None = None
    columns: list[Column] = field(default_factory=list)
    # Whether the lane goes on below the columns (at the step they all lead to).
    joins: bool = False
    kind: str = "step"


@dataclass
class Jump:
    """A link to a step drawn elsewhere (a loop back, or a path joining another one)."""

    target: str
    kind: str = "jump"


@dataclass
class Column:
    """One branch of a step: the edge into it, the steps along it, and whether it ends by
    joining the step drawn below the columns (`joins`; `line` says which halves of the
    joining line under it to draw: "left", "right", "both" or "")."""

    edge: Edge
    items: list[Box | Jump]
    joins: bool = False
    line: str = ""


def _join_lines(columns: list[Column]) -> None:
    """The line under the columns runs from the first joining column to the last."""
    joined = [i for i, col in enumerate(columns) if col.joins]
    if not joined:
        return
    first, last = joined[0], joined[-1]
    for i, col in enumerate(columns):
        left, right = first < i <= last, first <= i < last
        col.line = "both" if left and right else "left" if left else "right" if right else ""


EMPTY_STATS: Mapping[str, Any] = {
    "entered": 0,
    "waiting": 0,
    "passed": 0,
    "exited": 0,
    "converted": 0,
    "outcomes": {},
}


def step_edges(raw: Mapping[str, Any], index: int, outcomes: Mapping[str, int]) -> list[Edge]:
    """The step's edges in order, as its type declares them (the step registry's parse)."""
    step_type = STEP_TYPES.get(str(raw.get("type")))
    if step_type is None:
        return []
    try:
        step = step_type.parse(raw, f"steps[{index}]")
    except StepError:
        return []
    edges = []
    for name, target in step.edge_fields():
        # The step log records an edge as journey_runs does: the field without `.next`.
        key = name.removesuffix(".next")
        edges.append(Edge(key, _edge_label(raw, name), target, int(outcomes.get(key, 0))))
    return edges


def layout(
    steps: list[Mapping[str, Any]], stats: Mapping[str, Mapping[str, Any]], names: Names
) -> list[list[Box | Jump]]:
    """The steps as flows to draw: the first from the first step; each step once.

    A run of steps with one way on is one lane. A step with several ways (branch, split, a
    wait's timeout) gets a column per way; where every column leads to the same step, the
    columns end there and the lane goes on with it below them. A step already drawn (a loop
    back, a path meeting another) is a jump to it. Steps the first flow does not draw (deep
    nesting, or none reaching them) start flows of their own.
    """
    by_id: dict[str, tuple[Mapping[str, Any], list[Edge]]] = {}
    for index, raw in enumerate(steps):
        own = stats.get(raw["id"], EMPTY_STATS)
        by_id[raw["id"]] = (raw, step_edges(raw, index, own.get("outcomes") or {}))
    placed: set[str] = set()
    later: deque[str] = deque()

    def reach(start: str, stops: frozenset[str]) -> list[str]:
        """The steps not yet drawn that `start` leads to, in BFS order; a step in `stops` is
        reached but not gone through."""
        seen: list[str] = []
        queue = deque([start])
        while queue:
            current = queue.popleft()
            if current in placed or current in seen or current not in by_id:
                continue
            seen.append(current)
            if current not in stops:
                queue.extend(edge.target for edge in by_id[current][1])
        return seen

    def walk(
        start: str, stops: frozenset[str], join: str | None, depth: int
    ) -> tuple[list[Box | Jump], bool]:
        """The lane from `start` until it ends, jumps, or meets a stop; and whether it ended
        at `join` (the step its enclosing columns lead to)."""
        items: list[Box | Jump] = []
        current = start
        while True:
            if current in stops:
                if current == join:
                    return items, True
                items.append(Jump(current))
                return items, False
            if current in placed or current not in by_id:
                items.append(Jump(current))
                return items, False
            placed.add(current)
            raw, edges = by_id[current]
            box = Box(
                id=current,
                type=str(raw.get("type")),
                text=describe_step(raw, names),
                stats=stats.get(current, EMPTY_STATS),
            )
            items.append(box)
            if not edges:
                return items, False
            if len(edges) == 1:
                box.edge = edges[0]
                current = edges[0].target
                continue
            if depth >= MAX_NESTING:
                box.columns = [Column(edge, [Jump(edge.target)]) for edge in edges]
                later.extend(edge.target for edge in edges)
                return items, False
            reached = [reach(edge.target, stops) for edge in edges]
            common = set(reached[0]).intersection(*reached[1:])
            meet = next((s for s in reached[0] if s in common), None)
            inner = stops | {meet} if meet is not None else stops
            for edge in edges:
                lane, joins = walk(edge.target, inner, meet, depth + 1)
                box.columns.append(Column(edge, lane, joins=joins))
            _join_lines(box.columns)
            if meet is None:
                return items, False
            # The lane goes on below the columns at the step they lead to (or, when an
            # enclosing lane draws that step, ends there: the loop's first test).
            box.joins = any(col.joins for col in box.columns)
            current = meet

    flows: list[list[Box | Jump]] = []
    if steps:
        flows.append(walk(steps[0]["id"], frozenset(), None, 0)[0])
    later.extend(raw["id"] for raw in steps)
    while later:
        start = later.popleft()
        if start not in placed and start in by_id:
            flows.append(walk(start, frozenset(), None, 0)[0])
    return flows


# --- pages ---------------------------------------------------------------------------------


def _live_runs(journey_ids: list[int]) -> dict[int, int]:
    if not journey_ids:
        return {}
    rows = db.session.execute(
        select(JourneyRun.journey_id, func.count())
        .where(JourneyRun.journey_id.in_(journey_ids), JourneyRun.status.in_(LIVE_RUN_STATUSES))
        .group_by(JourneyRun.journey_id)
    ).all()
    return {jid: n for jid, n in rows}


@bp.get("/projects/<int:pid>/journeys")
@project_page("viewer")
def journeys(pid: int) -> Any:
    """The project's journeys, newest first, optionally by state: trigger and live runs."""
    status = request.args.get("status") or None
    stmt = select(Journey).where(Journey.project_id == pid)
    if status:
        stmt = stmt.where(Journey.status == status)
    rows = db.session.scalars(stmt.order_by(Journey.id.desc()).limit(200)).all()
    names = names_for(pid, [row.definition for row in rows])
    return render_template(
        "ui/journeys.html",
        rows=rows,
        status=status,
        statuses=STATUSES,
        live=_live_runs([row.id for row in rows]),
        triggers={
            row.id: describe_trigger(row.definition.get("trigger"), names, row.id) for row in rows
        },
    )


def _versions(journey: Journey) -> list[dict[str, Any]]:
    """Every version, newest first, with how many runs entered on it and are still live."""
    runs: dict[int, int] = {}
    live: dict[int, int] = {}
    for version, status, n in db.session.execute(
        select(JourneyRun.version, JourneyRun.status, func.count())
        .where(JourneyRun.journey_id == journey.id)
        .group_by(JourneyRun.version, JourneyRun.status)
    ):
        runs[version] = runs.get(version, 0) + n
        if status in LIVE_RUN_STATUSES:
            live[version] = live.get(version, 0) + n
    rows = db.session.scalars(
        select(JourneyVersion)
        .where(JourneyVersion.journey_id == journey.id)
        .order_by(JourneyVersion.version.desc())
    ).all()
    return [
        {
            "version": row.version,
            "created_at": row.created_at,
            "steps": len(row.definition.get("steps") or []),
            "current": row.version == journey.version,
            "runs": runs.get(row.version, 0),
            "live": live.get(row.version, 0),
        }
        for row in rows
    ]


def _page(pid: int, journey: Journey, *, message: str | None = None) -> str:
    definition = journey.definition
    names = names_for(pid, [definition])
    stats = service.journey_stats(db.session, journey)
    by_step = {item["id"]: item for item in stats["steps"]}
    rows = db.session.execute(service.runs_query(journey).limit(RUNS_SHOWN)).all()
    total_runs = stats["runs"]["entered"]
    return render_template(
        "ui/journey.html",
        j=journey,
        message=message,
        stats=stats,
        flows=layout(list(definition.get("steps") or []), by_step, names),
        versions=_versions(journey),
        runs=rows,
        total_runs=total_runs,
        runs_shown=RUNS_SHOWN,
        trigger=describe_trigger(definition.get("trigger"), names, journey.id),
        entry=describe_entry(definition.get("entry")),
        exits=[describe_exit(rule) for rule in definition.get("exit") or []],
        goal=describe_goal(definition.get("goal")),
    )


@bp.get("/projects/<int:pid>/journeys/<int:jid>")
@project_page("viewer")
def journey(pid: int, jid: int) -> Any:
    """One journey: its state and actions, the flow with per-step counts, versions, runs."""
    row = service.get_journey(db.session, project_id=pid, ref=jid)
    return _page(pid, row)


ACTIONS: dict[str, Callable[..., Journey]] = {
    "activate": service.activate_journey,
    "pause": service.pause_journey,
    "archive": service.archive_journey,
}
PAST = {"activate": "activated", "pause": "paused", "archive": "archived"}


@bp.post("/projects/<int:pid>/journeys/<int:jid>/<any(activate, pause, archive):action>")
@project_page("marketer")
def journey_action(pid: int, jid: int, action: str) -> Any:
    """Activate (or resume), pause or archive; the audit log keeps the state change."""
    row = service.get_journey(db.session, project_id=pid, ref=jid)
    before = row.status
    try:
        ACTIONS[action](db.session, project_id=pid, ref=str(jid))
    except DomainError as err:
        db.session.rollback()
        row = service.get_journey(db.session, project_id=pid, ref=jid)
        return _page(pid, row, message=err.message), err.code
    audit(
        f"journey.{PAST[action]}",
        "journey",
        jid,
        summary=f"{action} journey {row.name}: {before} → {row.status}",
        before={"status": before},
        after={"status": row.status},
    )
    return redirect(url_for("ui.journey", pid=pid, jid=jid))
