"""Rules: create, change, list and delete them; their firings; and the internal events that let
changes made outside the event processor (API members, TTL expiry, topics, profile updates)
trigger them in the user's event order.

The pure part (validation, matching, chains) is `journeys.rules`; the event processor that
applies actions is `workers.events`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, insert, select
from sqlalchemy.orm import Session

from app.db import defer
from app.errors import NOT_FOUND, InvalidInput, invalid_or_missing
from app.models import Audience, Campaign, Event, Rule, RuleFiring, User
from app.models.base import utcnow
from app.services.named import (
    ensure_name_free,
    find_reference,
    flush_named,
    get_named,
    name_problem,
)
from journeys.rules import RuleError, RuleSpec, parse_rule, set_reference

INTERNAL_SOURCE = "internal"
AUDIENCE_ENTERED = "audience.entered"
AUDIENCE_LEFT = "audience.left"
ATTRIBUTE_CHANGED = "attribute.changed"


# --- rules --------------------------------------------------------------------------------


def _invalid(errors: dict[str, list[str]]) -> InvalidInput:
    shown = "; ".join(f"{path}: {why[0]}" for path, why in errors.items())
    return InvalidInput(f"Invalid rule: {shown}", errors)


def _clean_name(name: Any) -> str:
    clean, why = name_problem(name)
    if why:
        raise _invalid({"name": [why]})
    return clean


def _spec(session: Session, project_id: int, body: Mapping[str, Any], *, partial: bool) -> RuleSpec:
    """Validate the body and resolve its audience, campaign and journey references to ids."""
    try:
        spec = parse_rule({k: v for k, v in body.items() if k != "name"}, partial=partial)
    except RuleError as err:
        raise _invalid(err.errors) from None
    errors: dict[str, list[str]] = {}
    from app.models import Journey

    for path, kind, ref in spec.references:
        model = {"audience": Audience, "campaign": Campaign, "journey": Journey}[kind]
        row = find_reference(session, model, project_id, ref)
        if row is None:
            errors[path] = [NOT_FOUND]
        else:
            set_reference(spec, path, row.id)
    if errors:
        raise invalid_or_missing(
            "the rule refers to what does not exist: " + ", ".join(errors), errors
        )
    return spec


def _apply(rule: Rule, spec: RuleSpec) -> None:
    if spec.enabled is not None:
        rule.enabled = spec.enabled
    if spec.priority is not None:
        rule.priority = spec.priority
    if spec.when is not None:
        rule.when = spec.when
        rule.trigger_kind = spec.trigger_kind  # type: ignore[assignment]
        rule.trigger_key = str(spec.trigger_key)
    if spec.condition_given:
        rule.condition = spec.condition
    if spec.actions is not None:
        rule.actions = spec.actions


def create_rule(session: Session, *, project_id: int, body: Mapping[str, Any]) -> Rule:
    """Validate and store a rule; 422 naming the field, 409 when the name is taken."""
    errors: dict[str, list[str]] = {}
    if "name" not in body:
        errors["name"] = ["required"]
    try:
        spec = _spec(session, project_id, body, partial=False)
    except InvalidInput as err:
        raise _invalid({**errors, **err.errors}) from None
    if errors:
        raise _invalid(errors)
    name = _clean_name(body["name"])
    ensure_name_free(session, Rule, project_id=project_id, name=name, kind="rule")
    now = utcnow()
    rule = Rule(project_id=project_id, name=name, created_at=now, updated_at=now, condition=None)
    _apply(rule, spec)
    session.add(rule)
    flush_named(session, name=name, kind="rule")
    return rule


def update_rule(
    session: Session, *, project_id: int, ref: str, body: Mapping[str, Any], replace: bool
) -> Rule:
    """PUT (`replace`: the whole body; an absent `if` clears it) or PATCH (the given fields)."""
    rule = get_rule(session, project_id=project_id, ref=ref)
    if replace:
        missing = {k: ["required"] for k in ("name", "when", "then") if k not in body}
        if missing:
            raise _invalid(missing)
    spec = _spec(session, project_id, body, partial=not replace)
    name = _clean_name(body["name"]) if "name" in body else rule.name
    if name != rule.name:
        ensure_name_free(
            session, Rule, project_id=project_id, name=name, kind="rule", exclude_id=rule.id
        )
        rule.name = name
    _apply(rule, spec)
    rule.updated_at = utcnow()
    flush_named(session, name=name, kind="rule")
    return rule


def get_rule(session: Session, *, project_id: int, ref: str) -> Rule:
    """A rule of the project by numeric id or by name, or NotFound."""
    rule: Rule = get_named(session, Rule, project_id=project_id, ref=ref, kind="rule")
    return rule


def delete_rule(session: Session, *, project_id: int, ref: str) -> None:
    """Remove a rule and its firings."""
    session.delete(get_rule(session, project_id=project_id, ref=ref))
    session.flush()


def list_rules_query(project_id: int, *, after_id: int | None = None) -> Select[Any]:
    """The project's rules in id order, after the cursor's id."""
    stmt = select(Rule).where(Rule.project_id == project_id).order_by(Rule.id)
    if after_id is not None:
        stmt = stmt.where(Rule.id > after_id)
    return stmt


def firings_query(rule: Rule, *, before_id: int | None = None) -> Select[Any]:
    """The rule's firings, newest first, before the cursor's id; with the user's userId."""
    stmt = (
        select(RuleFiring, User.external_id)
        .outerjoin(User, User.id == RuleFiring.user_id)
        .where(RuleFiring.rule_id == rule.id)
        .order_by(RuleFiring.id.desc())
    )
    if before_id is not None:
        stmt = stmt.where(RuleFiring.id < before_id)
    return stmt


# --- internal events: changes made outside the event processor ----------------------------


def listened_keys(
    session: Session, project_id: int, kind: str, keys: Iterable[str] | None = None
) -> set[str]:
    """Which of `keys` (all when None) an enabled rule of the project listens for with `kind`.

    One query on ix_rules_trigger, so a change nobody listens for costs only this.
    """
    stmt = select(Rule.trigger_key).where(
        Rule.project_id == project_id, Rule.trigger_kind == kind, Rule.enabled.is_(True)
    )
    if keys is not None:
        wanted = sorted(set(keys))
        if not wanted:
            return set()
        stmt = stmt.where(Rule.trigger_key.in_(wanted))
    return set(session.scalars(stmt))


def _store_internal(session: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    ids = list(session.scalars(insert(Event).returning(Event.id), rows))
    defer(session, "process_events", sorted(ids))


def _event_row(project_id: int, user_pk: int, name: str, props: dict, now: datetime) -> dict:
    return {
        "project_id": project_id,
        "user_id": user_pk,
        "name": name,
        "properties": props,
        "source": INTERNAL_SOURCE,
        "timestamp": now,
        "received_at": now,
        "erased": False,
    }


def note_internal(
    session: Session,
    *,
    project_id: int,
    user_pk: int,
    name: str,
    properties: dict[str, Any],
    now: datetime,
) -> None:
    """Record one internal event of the user for the event processor (after the commit)."""
    _store_internal(session, [_event_row(project_id, user_pk, name, properties, now)])


def _journeys_start_on(session: Session, project_id: int, audience_id: int) -> bool:
    """An active journey is triggered by entering this audience (it then needs the event)."""
    from app.models import Journey

    return (
        session.scalar(
            select(Journey.id)
            .where(
                Journey.project_id == project_id,
                Journey.status == "active",
                Journey.trigger_kind == "audienceEntered",
                Journey.trigger_key == str(audience_id),
            )
            .limit(1)
        )
        is not None
    )


def note_audience_changes(
    session: Session,
    *,
    project_id: int,
    audience_id: int,
    user_pks: Sequence[int],
    entered: bool,
    cause: str,
    now: datetime,
    depth: int = 0,
) -> None:
    """Record `audience.entered` / `audience.left` events for a change made outside the event
    processor's rule chains (cause api, ttl, topic, journey), when an enabled rule listens for
    this audience or an active journey starts on entering it. `depth`: the chain depth of a
    change a journey made (see journey_runs.caused_depth)."""
    if not user_pks or cause == "rule":  # rule actions chain inline in the processor
        return
    kind = "audienceEntered" if entered else "audienceLeft"
    listened = bool(listened_keys(session, project_id, kind, [str(audience_id)])) or (
        entered and _journeys_start_on(session, project_id, audience_id)
    )
    # Journeys' segments may read the membership: the processor judges them on the event (a
    # journey's own change leaves a `segments.changed` event instead).
    from app.services.journey_runs import segment_watch

    watch = None if listened or cause == "journey" else segment_watch(session, project_id)
    if not listened and not (watch is not None and watch.active):
        return
    name = session.scalar(select(Audience.name).where(Audience.id == audience_id))
    if watch is not None and not watch.watches_audience(audience_id, name):
        return
    props: dict[str, Any] = {"audienceId": audience_id, "audience": name, "cause": cause}
    if depth:
        props["depth"] = depth
    event = AUDIENCE_ENTERED if entered else AUDIENCE_LEFT
    _store_internal(
        session, [_event_row(project_id, pk, event, props, now) for pk in sorted(user_pks)]
    )


def _listened_attributes(session: Session, project_id: int) -> set[str]:
    # Cached for the session: a bulk upsert asks once, not once per profile.
    cache: dict[int, set[str]] = session.info.setdefault("rules_listened_attributes", {})
    if project_id not in cache:
        cache[project_id] = listened_keys(session, project_id, "attributeChanged")
    return cache[project_id]


def note_attribute_changes(
    session: Session, *, user: User, before: Mapping[str, Any], now: datetime, depth: int = 0
) -> None:
    """Record `attribute.changed` events for the attributes of `user` that differ from
    `before` and that an enabled rule listens for (profile upserts, identify, a journey's
    setAttributes step; `depth` as for note_audience_changes)."""
    if user.id is None:
        session.flush()
    listened = _listened_attributes(session, user.project_id)
    if not listened:
        return
    after = user.attributes or {}
    rows = [
        _event_row(
            user.project_id,
            user.id,
            ATTRIBUTE_CHANGED,
            {
                "attribute": key,
                "from": before.get(key),
                "to": after.get(key),
                **({"depth": depth} if depth else {}),
            },
            now,
        )
        for key in sorted(listened)
        if before.get(key) != after.get(key)
        or (key in before) != (key in after)
        or type(before.get(key)) is not type(after.get(key))
    ]
    _store_internal(session, rows)
