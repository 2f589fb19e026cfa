"""Journeys: create, read, edit and delete them, their states, API entries, runs and stats.

The journey model is pure (`journeys.journey`); the runtime that moves runs along is
`app.services.journey_runs` (called lazily: entering a user, existing members on activation).

States: `draft → active ⇄ paused → archived` (`archive` from any state but archived).
`activate` starts a draft or resumes a paused journey (`activatedAt` is the first activation);
on the first activation, `entry.existingMembers: true` enters the users already in the trigger
audience or segment (a resume does not: who entered meanwhile went through the trigger's own
path or missed it, and the entry policy would be the only guard against re-entering everyone).
`pause` keeps every run where it stands; `archive` exits the live runs with the reason
`journey archived`. Any other move is a 409 naming the current status.

Editing (PUT replaces the body, PATCH merges the given top-level fields into the current one;
both are validated whole, errors name the field path and the step id):
- draft: edited in place; the version stays 1 (no run can be on it).
- active or paused: when the canonical definition changes (`fingerprint`) the edit is a new
  version: new runs start on it, runs in flight keep the version they entered with. A rename,
  or a body that means the same journey, is no new version.
- once the journey was ever activated its trigger kind never changes (409 naming `trigger`;
  its event, audience or filter may change).
- archived: read-only (409).

Delete: only a draft or an archived journey (it has no live run then); active or paused is a
409 (archive it first). Its versions, runs and step log go with it.

References (audiences, templates) are given by id or unique name and stored as ids; one that
names nothing is a 404 naming its path (`steps[2].template`). Responses show the stored
definition, references as ids, as rules and campaigns do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from app.errors import NOT_FOUND, Conflict, DomainError, invalid_or_missing
from app.models import Audience, Journey, JourneyRun, JourneyStepLog, JourneyVersion, Template
from app.models.base import utcnow
from app.models.journey import LIVE_RUN_STATUSES
from app.models.message import Message, Send
from app.services.named import (
    ensure_name_free,
    find_reference,
    flush_named,
    get_named,
    list_named_query,
    name_problem,
)
from journeys.journey.definition import (
    JourneyError,
    JourneySpec,
    fingerprint,
    parse_journey,
    resolve_references,
    to_json,
)
from journeys.journey.machine import run_from_json, run_to_json

ARCHIVED_REASON = "journey archived"
FIELDS = ("name", "trigger", "entry", "exit", "goal", "steps")
# Funnel stage of a send step's messages -> the current statuses that passed it.
FUNNEL = {
    "sent": ("sent", "delivered", "opened", "clicked"),
    "delivered": ("delivered", "opened", "clicked"),
    "opened": ("opened", "clicked"),
    "clicked": ("clicked",),
    "failed": ("failed",),
}
ENDED_OUTCOMES = ("exited", "converted")


def _invalid(errors: dict[str, list[str]]) -> DomainError:
    """A 422 naming the fields, or a 404 when every error is a reference to nothing."""
    shown = "; ".join(f"{path}: {why[0]}" for path, why in list(errors.items())[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return invalid_or_missing(f"Invalid journey: {shown}{more}", errors)


def _spec(session: Session, project_id: int, body: Mapping[str, Any]) -> JourneySpec:
    """Validate a whole body and resolve its references to ids (errors name their path)."""
    errors: dict[str, list[str]] = {}
    clean = ""
    if "name" not in body:
        errors["name"] = ["required"]
    else:
        clean, why = name_problem(body["name"])
        if why:
            errors["name"] = [why]
    try:
        spec = parse_journey({**body, "name": clean or "x"})
    except JourneyError as err:
        raise _invalid({**errors, **err.errors}) from None
    if errors:
        raise _invalid(errors)
    spec = replace(spec, name=clean)
    resolved: dict[str, int] = {}
    for path, kind, ref in spec.references:
        if kind == "audience":
            row = find_reference(session, Audience, project_id, ref)
        else:
            row = find_reference(session, Template, project_id, ref)
            if row is not None:
                step = spec.steps[int(path.split("]")[0].removeprefix("steps["))]
                channel = getattr(step, "channel", None)
                if channel and not (row.channels or {}).get(channel):
                    errors[path] = [f"template {row.name!r} has no {channel} content"]
                    continue
        if row is None:
            errors[path] = [NOT_FOUND]
        else:
            resolved[path] = row.id
    if errors:
        raise _invalid(errors)
    return resolve_references(spec, resolved)


def _trigger_columns(spec: JourneySpec) -> tuple[str, str | None]:
    trigger = spec.trigger
    assert trigger is not None
    if trigger.kind == "event":
        return trigger.kind, trigger.event
    if trigger.kind == "audienceEntered":
        return trigger.kind, str(trigger.audience)
    return trigger.kind, None


def _definition(spec: JourneySpec) -> dict[str, Any]:
    """The stored form (`to_json`, references as ids; the name as it was saved)."""
    return to_json(spec)


# --- CRUD ----------------------------------------------------------------------------------


def create_journey(session: Session, *, project_id: int, body: Mapping[str, Any]) -> Journey:
    """Validate and store a draft journey (version 1); a taken name is a 409."""
    spec = _spec(session, project_id, body)
    ensure_name_free(session, Journey, project_id=project_id, name=spec.name, kind="journey")
    now = utcnow()
    kind, key = _trigger_columns(spec)
    journey = Journey(
        project_id=project_id,
        name=spec.name,
        status="draft",
        version=1,
        definition=_definition(spec),
        trigger_kind=kind,
        trigger_key=key,
        created_at=now,
        updated_at=now,
    )
    session.add(journey)
    flush_named(session, name=spec.name, kind="journey")
    session.add(
        JourneyVersion(
            journey_id=journey.id,
            version=1,
            definition=journey.definition,
            fingerprint=fingerprint(spec),
            created_at=now,
        )
    )
    session.flush()
    return journey


def get_journey(session: Session, *, project_id: int, ref: str | int) -> Journey:
    """A journey of the project by numeric id or by name, or NotFound."""
    journey: Journey = get_named(session, Journey, project_id=project_id, ref=ref, kind="journey")
    return journey


def list_journeys_query(
    project_id: int, *, after_id: int | None = None, status: str | None = None
) -> Select[Any]:
    """The project's journeys in id order, after the cursor's id, optionally by status."""
    stmt = list_named_query(Journey, project_id, after_id=after_id)
    if status is not None:
        stmt = stmt.where(Journey.status == status)
    return stmt


def update_journey(
    session: Session, *, project_id: int, ref: str, body: Mapping[str, Any], replace_all: bool
) -> Journey:
    """PUT (`replace_all`) or PATCH, under the editing rules of the module docstring."""
    journey = get_journey(session, project_id=project_id, ref=ref)
    if journey.status == "archived":
        raise Conflict(
            f"journey {journey.name!r} is archived: it is read-only",
            {"status": ["archived journeys are read-only"]},
        )
    merged = dict(body) if replace_all else {**journey.definition, "name": journey.name, **body}
    spec = _spec(session, project_id, merged)
    kind, key = _trigger_columns(spec)
    if journey.activated_at is not None and kind != journey.trigger_kind:
        raise Conflict(
            f"journey {journey.name!r} was activated: its trigger kind stays "
            f"{journey.trigger_kind}",
            {"trigger": [f"was activated with a {journey.trigger_kind} trigger; it never changes"]},
        )
    now = utcnow()
    if spec.name != journey.name:
        ensure_name_free(
            session,
            Journey,
            project_id=project_id,
            name=spec.name,
            kind="journey",
            exclude_id=journey.id,
        )
        journey.name = spec.name
    print_ = fingerprint(spec)
    current = session.scalar(
        select(JourneyVersion).where(
            JourneyVersion.journey_id == journey.id, JourneyVersion.version == journey.version
        )
    )
    if current is None or current.fingerprint != print_:
        definition = _definition(spec)
        if journey.status == "draft" and current is not None:
            current.definition, current.fingerprint = definition, print_
        else:
            journey.version += 1
            session.add(
                JourneyVersion(
                    journey_id=journey.id,
                    version=journey.version,
                    definition=definition,
                    fingerprint=print_,
                    created_at=now,
                )
            )
        journey.definition = definition
        journey.trigger_kind, journey.trigger_key = kind, key
    elif journey.definition.get("name") != journey.name:
        # A rename is no new version; the current definition carries the new name.
        journey.definition = {**journey.definition, "name": journey.name}
    journey.updated_at = now
    flush_named(session, name=journey.name, kind="journey")
    _changed(journey)
    return journey


def delete_journey(session: Session, *, project_id: int, ref: str) -> None:
    """Delete a draft or archived journey with its versions, runs and log; else a 409."""
    journey = get_journey(session, project_id=project_id, ref=ref)
    if journey.status not in ("draft", "archived"):
        raise Conflict(
            f"journey {journey.name!r} is {journey.status}: archive it before deleting it",
            {"status": [f"cannot delete while {journey.status}"]},
        )
    live = session.scalar(
        select(func.count())
        .select_from(JourneyRun)
        .where(JourneyRun.journey_id == journey.id, JourneyRun.status.in_(LIVE_RUN_STATUSES))
    )
    if live:
        raise Conflict(
            f"journey {journey.name!r} still has {live} live runs",
            {"status": [f"{live} live runs"]},
        )
    session.execute(delete(JourneyStepLog).where(JourneyStepLog.journey_id == journey.id))
    session.execute(delete(JourneyRun).where(JourneyRun.journey_id == journey.id))
    session.execute(delete(JourneyVersion).where(JourneyVersion.journey_id == journey.id))
    session.delete(journey)
    session.flush()
    _changed(journey)


# --- states --------------------------------------------------------------------------------


def _changed(journey: Journey) -> None:
    """Tell this process's runtime caches that what the journey listens for changed now."""
    try:
        from app.services.journey_runs import forget
    except ImportError:  # the runtime is optional to this module
        return
    forget(journey.project_id)


def _illegal(journey: Journey, action: str, why: str) -> Conflict:
    return Conflict(
        f"cannot {action} journey {journey.name!r}: {why}",
        {"status": [f"is {journey.status}"]},
    )


def activate_journey(
    session: Session, *, project_id: int, ref: str, now: datetime | None = None
) -> Journey:
    """draft → active (existing members enter when asked) or paused → active; else 409."""
    journey = get_journey(session, project_id=project_id, ref=ref)
    now = now or utcnow()
    if journey.status not in ("draft", "paused"):
        why = "it is already active" if journey.status == "active" else "archiving is final"
        raise _illegal(journey, "activate", why)
    first = journey.status == "draft"
    journey.status, journey.status_reason = "active", None
    journey.updated_at = now
    if first:
        journey.activated_at = now
    session.flush()
    if first and (journey.definition.get("entry") or {}).get("existingMembers"):
        from app.services.journey_runs import enter_existing_members

        enter_existing_members(session, journey, now)
        session.flush()
    _changed(journey)
    return journey


def pause_journey(
    session: Session, *, project_id: int, ref: str, now: datetime | None = None
) -> Journey:
    """active → paused: runs stay where they are until it is activated again; else 409."""
    journey = get_journey(session, project_id=project_id, ref=ref)
    if journey.status != "active":
        why = "it is already paused" if journey.status == "paused" else "only active ones pause"
        raise _illegal(journey, "pause", why)
    journey.status = "paused"
    journey.updated_at = now or utcnow()
    session.flush()
    _changed(journey)
    return journey


def archive_journey(
    session: Session, *, project_id: int, ref: str, now: datetime | None = None
) -> Journey:
    """Any state but archived → archived: live runs exit (`journey archived`); read-only."""
    journey = get_journey(session, project_id=project_id, ref=ref)
    now = now or utcnow()
    if journey.status == "archived":
        raise _illegal(journey, "archive", "it is already archived")
    journey.status, journey.status_reason = "archived", None
    journey.updated_at = now
    exit_live_runs(session, journey, reason=ARCHIVED_REASON, now=now)
    session.flush()
    _changed(journey)
    return journey


def exit_live_runs(session: Session, journey: Journey, *, reason: str, now: datetime) -> int:
    """End the journey's active and waiting runs as exited with `reason`; how many."""
    runs = list(
        session.scalars(
            select(JourneyRun)
            .where(JourneyRun.journey_id == journey.id, JourneyRun.status.in_(LIVE_RUN_STATUSES))
            .order_by(JourneyRun.id)
        )
    )
    for run in runs:
        try:
            state = run_to_json(
                replace(run_from_json(run.state), status="exited", step=None, wake_at=None)
            )
            state["exitReason"] = reason
        except (KeyError, TypeError, ValueError):
            state = {**(run.state or {}), "status": "exited", "exitReason": reason}
        run.state = state
        run.status, run.exit_reason = "exited", reason
        run.wake_at, run.ended_at, run.updated_at = None, now, now
    if runs:
        session.execute(
            update(JourneyStepLog)
            .where(
                JourneyStepLog.run_id.in_([run.id for run in runs]),
                JourneyStepLog.outcome.is_(None),
            )
            .values(outcome="exited", left_at=now)
        )
    session.flush()
    return len(runs)


# --- POST /v1/journeys/{id}/enter ----------------------------------------------------------


def enter_journey(
    session: Session,
    *,
    project_id: int,
    ref: str,
    user_id: str,
    params: Mapping[str, Any] | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Enter a user (a profile created on first sight, as API campaign sends do) now.

    Any trigger kind takes API entries (a backend or support tool starting someone by
    hand); the entry policy decides as for every other entry. Only an active journey takes
    them (409 otherwise).
    """
    journey = get_journey(session, project_id=project_id, ref=ref)
    if journey.status != "active":
        raise Conflict(
            f"journey {journey.name!r} is {journey.status}: only an active journey takes entries",
            {"status": [f"is {journey.status}"]},
        )
    from app.services.journey_runs import enter
    from app.services.messages import users_by_external_ids

    now = now or utcnow()
    (user,) = users_by_external_ids(session, project_id, [user_id])
    result = enter(
        session, journey=journey, user=user, params=dict(params or {}), event=None, now=now
    )
    session.flush()
    out: dict[str, Any] = {"entered": bool(result.entered)}
    if result.reason and not result.entered:
        out["reason"] = result.reason
    if result.run is not None:
        result.run.user_external_id = user.external_id  # type: ignore[attr-defined]
        out["run"] = result.run
    return out


# --- runs and stats ------------------------------------------------------------------------


def runs_query(
    journey: Journey,
    *,
    after_id: int | None = None,
    status: str | None = None,
    user_pk: int | None = None,
) -> Select[Any]:
    """The journey's runs in id order (with the user's userId), after the cursor's id."""
    from app.models import User

    stmt = (
        select(JourneyRun, User.external_id)
        .join(User, User.id == JourneyRun.user_id)
        .where(JourneyRun.journey_id == journey.id)
        .order_by(JourneyRun.id)
    )
    if after_id is not None:
        stmt = stmt.where(JourneyRun.id > after_id)
    if status is not None:
        stmt = stmt.where(JourneyRun.status == status)
    if user_pk is not None:
        stmt = stmt.where(JourneyRun.user_id == user_pk)
    return stmt


def journey_stats(session: Session, journey: Journey) -> dict[str, Any]:
    """Per step of the current version and for the journey: three aggregate queries.

    A step's `entered` counts arrivals (step-log rows, every version), `waiting` the live runs
    at it now, `passed` the arrivals that left (with an outcome), `outcomes` them by edge
    (`next`, `onTimeout`, a branch index, `default`, `exited`, `converted`); send steps add
    their messages (funnel: a clicked message was also sent, delivered and opened).
    """
    log: dict[str, Counter[str | None]] = {}
    for step, outcome, n in session.execute(
        select(JourneyStepLog.step, JourneyStepLog.outcome, func.count())
        .where(JourneyStepLog.journey_id == journey.id)
        .group_by(JourneyStepLog.step, JourneyStepLog.outcome)
    ):
        log.setdefault(step, Counter())[outcome] += n
    runs: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    for status, step, n in session.execute(
        select(JourneyRun.status, JourneyRun.step, func.count())
        .where(JourneyRun.journey_id == journey.id)
        .group_by(JourneyRun.status, JourneyRun.step)
    ):
        runs[status] += n
        if status in LIVE_RUN_STATUSES and step is not None:
            waiting[step] += n
    messages: dict[str, Counter[str]] = {}
    run_ids = select(JourneyRun.id).where(JourneyRun.journey_id == journey.id).scalar_subquery()
    for step, status, n in session.execute(
        select(Send.journey_step, Message.status, func.count())
        .join(Message, Message.send_id == Send.id)
        .where(Send.journey_run_id.in_(run_ids))
        .group_by(Send.journey_step, Message.status)
    ):
        messages.setdefault(step or "", Counter())[status] += n
    steps = []
    for raw in journey.definition.get("steps") or []:
        counts = log.get(raw["id"], Counter())
        outcomes = {str(k): v for k, v in sorted(counts.items(), key=str) if k is not None}
        item: dict[str, Any] = {
            "id": raw["id"],
            "type": raw["type"],
            "entered": sum(counts.values()),
            "waiting": waiting[raw["id"]],
            "passed": sum(outcomes.values()),
            "outcomes": outcomes,
            "exited": counts["exited"],
            "converted": counts["converted"],
        }
        if raw["type"] == "send":
            by_status = messages.get(raw["id"], Counter())
            item["messages"] = {
                stage: sum(by_status[s] for s in covered) for stage, covered in FUNNEL.items()
            }
            item["messages"]["total"] = sum(by_status.values())
        steps.append(item)
    return {
        "journeyId": journey.id,
        "version": journey.version,
        "runs": {
            "entered": sum(runs.values()),
            "active": sum(runs[s] for s in LIVE_RUN_STATUSES),
            "waiting": runs["waiting"],
            "exited": runs["exited"],
            "converted": runs["converted"],
        },
        "steps": steps,
    }


def run_user_pk(session: Session, project_id: int, user_id: str) -> int | None:
    """The row id of a userId (None when the project has no such user)."""
    from app.models import User

    return session.scalar(
        select(User.id).where(User.project_id == project_id, User.external_id == user_id)
    )
