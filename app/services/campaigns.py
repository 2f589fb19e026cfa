"""Campaigns: validation on save, create/read/update/delete, their states, and API sends.

States: `draft → active ⇄ paused → completed | archived`. `activate` starts a draft (the kind's
`activate`) or resumes a paused campaign (the kind's `resume`); `pause` stops an active one;
`archive` ends any campaign that is not archived yet; `completed` is set by the kinds when
everything a campaign will ever send has ended. Any other move is a 409 saying why.

Editing (PATCH; only fields whose value changes count, and every accepted edit bumps
`version`, which scheduled runs record):
- any time before the end (draft, active, paused): `name`, `window`, `ttlSeconds`,
  `urgency`, `rateLimit`, `goal`. A new TTL applies to messages created after the edit.
- only in draft or paused: `channels`, `target`, `trigger`, `schedule`, `category`,
  `topic`, `holdoutPercent` (what decides who gets what: pause, edit, resume).
- never: `kind` (create another campaign).
- completed: only `name`. Archived: read-only (409).
Targets name stored segments by id or name; their filter is copied into the campaign when it
is saved. Audiences are kept by id and their membership is read at send time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, insert
from sqlalchemy.orm import Session

from app.errors import (
    NOT_FOUND,
    BadRequest,
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    TooLarge,
    invalid_or_missing,
)
from app.models import Audience, Campaign, Project, Template, User
from app.models.base import utcnow
from app.models.message import Message, SendSkip
from app.services.named import (
    ensure_name_free,
    find_named,
    flush_named,
    get_named,
    list_named_query,
    name_problem,
)
from journeys.durations import MAX_DURATION, parse_duration
from journeys.filters import FilterError, error_path, has_nul, parse_filter, to_json
from journeys.timestamps import parse_timestamp

MAX_RECIPIENTS = 1000
MAX_RATE_PER_MINUTE = 1_000_000
MAX_HOLDOUT_PERCENT = 99

# API field → the columns it is stored in (edit rules compare these).
FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "kind": ("kind",),
    "channels": ("channels",),
    "target": ("target",),
    "trigger": ("trigger", "trigger_event"),
    "schedule": ("schedule",),
    "window": ("starts_at", "ends_at"),
    "ttlSeconds": ("ttl_seconds",),
    "urgency": ("urgency",),
    "category": ("category",),
    "topic": ("topic",),
    "rateLimit": ("rate_per_minute",),
    "goal": ("goal",),
    "holdoutPercent": ("holdout_percent",),
}
LIVE_FIELDS = frozenset({"name", "window", "ttlSeconds", "urgency", "rateLimit", "goal"})
PLANNING_FIELDS = frozenset(FIELD_COLUMNS) - LIVE_FIELDS - {"kind"}
EDITABLE: dict[str, frozenset[str]] = {
    "draft": LIVE_FIELDS | PLANNING_FIELDS,
    "paused": LIVE_FIELDS | PLANNING_FIELDS,
    "active": LIVE_FIELDS,
    "completed": frozenset({"name"}),
    "archived": frozenset(),
}


def _kinds() -> Mapping[str, Any]:
    # Imported late: the kind modules import app models and services.
    from workers.campaigns import KINDS

    return KINDS


def _invalid(errors: dict[str, list[str]]) -> DomainError:
    """A 422 naming the fields, or a 404 when every error is a reference to nothing."""
    shown = "; ".join(f"{path}: {why[0]}" for path, why in list(errors.items())[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return invalid_or_missing(f"Invalid campaign: {shown}{more}", errors)


def _add(errors: dict[str, list[str]], err: DomainError, path: str) -> None:
    """A lookup's error (404, 400, 422) as a 422 entry under the campaign field's path."""
    if err.errors and not (isinstance(err, NotFound) and set(err.errors) == {"id"}):
        for key, why in err.errors.items():
            errors.setdefault(key, []).extend(why if isinstance(why, list) else [str(why)])
    else:
        errors.setdefault(path, []).append(err.message)


# --- field normalization -------------------------------------------------------------------


def parse_where(raw: Any, path: str, errors: dict[str, list[str]]) -> dict[str, Any] | None:
    """An event's `where` (any segment form over its properties) as a normalized tree."""
    if raw is None:
        return None
    if has_nul(raw):
        errors[path] = ["contains NUL"]
        return None
    try:
        if isinstance(raw, str):
            raw = to_json(parse_filter(raw))
        cond = parse_filter({"event": "where", "where": raw})
    except FilterError as err:
        # Errors inside the wrapper are named `where...`: put the campaign's path instead.
        inner = err.path.removeprefix("where").removeprefix(".")
        errors[error_path(path, inner)] = [err.message]
        return None
    assert cond.where is not None  # type: ignore[union-attr]
    return to_json(cond.where)  # type: ignore[union-attr]


def where_matches(where: Mapping[str, Any] | None, properties: Mapping[str, Any]) -> bool:
    """Whether an event's properties satisfy a stored `where`, as `EventCondition.where` does."""
    if not where:
        return True
    from journeys.filters import EventFact, UserFacts, evaluate

    now = utcnow()
    cond = parse_filter({"event": "e", "where": dict(where)})
    facts = UserFacts(
        now=now, events=(EventFact(name="e", timestamp=now, properties=dict(properties)),)
    )
    return evaluate(cond, facts)


def _audience_nodes(tree: Any, path: str, root_list: bool = False):
    """(node, path) of every audience leaf of a normalized tree, with the API's paths."""
    if not isinstance(tree, dict):
        return
    if "audience" in tree:
        yield tree, f"{path}.audience"
        return
    for group in ("all", "any"):
        if group in tree:
            for index, child in enumerate(tree[group]):
                prefix = path if root_list else f"{path}.{group}"
                yield from _audience_nodes(child, f"{prefix}[{index}]")
    if "not" in tree:
        yield from _audience_nodes(tree["not"], f"{path}.not")


def _target_item(
    session: Session, project_id: int, raw: Any, path: str, errors: dict[str, list[str]]
) -> dict[str, Any] | None:
    from app.services.messages import parse_segment

    try:
        tree = parse_segment(session, project_id, raw, path)
    except DomainError as err:
        _add(errors, err, path)
        return None
    # Audiences are kept by id, so renaming one keeps the campaign's target.
    for node, where in _audience_nodes(tree, path, root_list=isinstance(raw, list)):
        try:
            audience = find_named(
                session, Audience, project_id=project_id, ref=node["audience"], field=where
            )
        except DomainError as err:
            _add(errors, err, where)
            continue
        if audience is None:
            errors[where] = [NOT_FOUND]
            continue
        node["audience"] = str(audience.id)
    return tree


def _target(
    session: Session, project_id: int, raw: Any, errors: dict[str, list[str]]
) -> dict[str, Any] | None:
    if raw is None:
        return None
    out: dict[str, list[Any]] = {"include": [], "exclude": []}
    for side in ("include", "exclude"):
        for index, item in enumerate(raw.get(side) or []):
            tree = _target_item(session, project_id, item, f"target.{side}[{index}]", errors)
            if tree is not None:
                out[side].append(tree)
    if not out["include"] and not out["exclude"]:
        return None
    return out


def _channels(
    session: Session, project_id: int, raw: Any, errors: dict[str, list[str]]
) -> dict[str, int]:
    if not raw:
        errors["channels"] = ["at least one channel with its template"]
        return {}
    out: dict[str, int] = {}
    from workers.channels import CHANNELS

    for channel, ref in raw.items():
        path = f"channels.{channel}"
        if channel not in CHANNELS:
            errors[path] = [f"unknown channel; one of {', '.join(CHANNELS)}"]
            continue
        try:
            template = find_named(session, Template, project_id=project_id, ref=ref, field=path)
        except DomainError as err:
            _add(errors, err, path)
            continue
        if template is None:
            errors[path] = [NOT_FOUND]
        elif not (template.channels or {}).get(channel):
            errors[path] = [f"template {template.name!r} has no {channel} content"]
        else:
            out[channel] = template.id
    return out


def _moment(raw: Any, path: str, errors: dict[str, list[str]]) -> datetime | None:
    if raw is None:
        return None
    moment = parse_timestamp(raw) if isinstance(raw, str) else None
    if moment is None:
        errors[path] = ["an ISO 8601 timestamp like 2026-12-01T10:00:00Z (naive = UTC)"]
    return moment


def parse_seconds(raw: Any, path: str, errors: dict[str, list[str]]) -> int | None:
    """A duration (`"90s"`, `"15m"`, `"2h"`, `"3d"`, `"1w"` or seconds) in whole seconds."""
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 1 <= raw <= MAX_DURATION.total_seconds():
            errors[path] = [f"1 second to {MAX_DURATION.days} days"]
            return None
        return raw
    if isinstance(raw, str):
        try:
            return int(parse_duration(raw).total_seconds())
        except ValueError as err:
            errors[path] = [str(err)]
            return None
    errors[path] = ['a duration like "90s", "15m", "2h", "3d", "1w" or seconds']
    return None


def _schedule(raw: Any, errors: dict[str, list[str]]) -> dict[str, Any] | None:
    if raw is None:
        return None
    from app.services.profiles import FieldError, normalize_timezone

    # What sendAt means (UTC instant or wall time) is the scheduled kinds' check.
    out = {key: value for key, value in raw.items() if value is not None}
    if "timezone" in out:
        try:
            normalize_timezone(out["timezone"])
        except FieldError as err:
            errors["schedule.timezone"] = [str(err)]
    return out or None


def _goal(raw: Any, errors: dict[str, list[str]]) -> dict[str, Any] | None:
    if raw is None:
        return None
    goal: dict[str, Any] = {"event": raw["event"]}
    where = parse_where(raw.get("where"), "goal.where", errors)
    if where is not None:
        goal["where"] = where
    if raw.get("valueField") is not None:
        goal["valueField"] = raw["valueField"]
    goal["within"] = parse_seconds(raw["within"], "goal.within", errors)
    return goal


def _trigger(raw: Any, errors: dict[str, list[str]]) -> dict[str, Any] | None:
    if raw is None:
        return None
    trigger: dict[str, Any] = {"event": raw["event"]}
    where = parse_where(raw.get("where"), "trigger.where", errors)
    if where is not None:
        trigger["where"] = where
    return trigger


def _columns(
    session: Session, project: Project, body: Mapping[str, Any], errors: dict[str, list[str]]
) -> dict[str, Any]:
    """Column values for the API fields present in `body` (already shape-checked)."""
    from app.services.messages import _known_topic

    values: dict[str, Any] = {}
    if "name" in body:
        clean, why = name_problem(body["name"])
        if why:
            errors["name"] = [why]
        values["name"] = clean
    if "kind" in body:
        values["kind"] = body["kind"]
    if "channels" in body:
        values["channels"] = _channels(session, project.id, body["channels"], errors)
    if "target" in body:
        values["target"] = _target(session, project.id, body["target"], errors)
    if "trigger" in body:
        values["trigger"] = _trigger(body["trigger"], errors)
        values["trigger_event"] = values["trigger"]["event"] if values["trigger"] else None
    if "schedule" in body:
        values["schedule"] = _schedule(body["schedule"], errors)
    if "window" in body:
        window = body["window"] or {}
        values["starts_at"] = _moment(window.get("startsAt"), "window.startsAt", errors)
        values["ends_at"] = _moment(window.get("endsAt"), "window.endsAt", errors)
    if "ttlSeconds" in body:
        values["ttl_seconds"] = body["ttlSeconds"]
    if "urgency" in body:
        values["urgency"] = body["urgency"]
    if "category" in body:
        values["category"] = body["category"] or "marketing"
    if "topic" in body:
        try:
            values["topic"] = _known_topic(project, body["topic"])
        except InvalidInput as err:
            _add(errors, err, "topic")
    if "rateLimit" in body:
        values["rate_per_minute"] = (body["rateLimit"] or {}).get("perMinute")
    if "goal" in body:
        values["goal"] = _goal(body["goal"], errors)
    if "holdoutPercent" in body:
        values["holdout_percent"] = body["holdoutPercent"] or 0
    return values


def campaign_fields(campaign: Campaign) -> dict[str, Any]:
    """The campaign as the kinds' `check` sees it: API names, normalized values."""
    window = None
    if campaign.starts_at is not None or campaign.ends_at is not None:
        window = {"startsAt": campaign.starts_at, "endsAt": campaign.ends_at}
    return {
        "name": campaign.name,
        "kind": campaign.kind,
        "channels": dict(campaign.channels or {}),
        "target": campaign.target,
        "trigger": campaign.trigger,
        "schedule": campaign.schedule,
        "window": window,
        "ttlSeconds": campaign.ttl_seconds,
        "urgency": campaign.urgency,
        "category": campaign.category,
        "topic": campaign.topic,
        "rateLimit": (
            {"perMinute": campaign.rate_per_minute} if campaign.rate_per_minute else None
        ),
        "goal": campaign.goal,
        "holdoutPercent": campaign.holdout_percent,
    }


def _common_checks(fields: Mapping[str, Any], errors: dict[str, list[str]]) -> None:
    window = fields.get("window") or {}
    starts, ends = window.get("startsAt"), window.get("endsAt")
    if starts is not None and ends is not None and ends <= starts:
        errors.setdefault("window.endsAt", []).append("must be after window.startsAt")
    if fields.get("topic") and fields.get("category") == "transactional":
        errors.setdefault("topic", []).append("topics are for marketing campaigns")


def _check(campaign: Campaign, errors: dict[str, list[str]]) -> None:
    fields = campaign_fields(campaign)
    _common_checks(fields, errors)
    for path, why in _kinds()[campaign.kind].check(fields).items():
        errors.setdefault(path, []).extend(why)


# --- CRUD ----------------------------------------------------------------------------------


def create_campaign(session: Session, *, project: Project, body: Mapping[str, Any]) -> Campaign:
    """Validate and store a draft campaign; errors name each field, a taken name is a 409."""
    errors: dict[str, list[str]] = {}
    values = _columns(session, project, body, errors)
    if errors:
        raise _invalid(errors)
    now = utcnow()
    defaults: dict[str, Any] = {"holdout_percent": 0, "category": "marketing"}
    campaign = Campaign(
        project_id=project.id,
        status="draft",
        version=1,
        options={},
        created_at=now,
        updated_at=now,
        **{**defaults, **values},
    )
    _check(campaign, errors)
    if errors:
        raise _invalid(errors)
    ensure_name_free(session, Campaign, project_id=project.id, name=campaign.name, kind="campaign")
    session.add(campaign)
    flush_named(session, name=campaign.name, kind="campaign")
    return campaign


def get_campaign(session: Session, *, project_id: int, ref: str | int) -> Campaign:
    """A campaign of the project by numeric id or by name, or NotFound."""
    campaign: Campaign = get_named(
        session, Campaign, project_id=project_id, ref=ref, kind="campaign"
    )
    return campaign


def list_campaigns_query(
    project_id: int,
    *,
    after_id: int | None = None,
    status: str | None = None,
    kind: str | None = None,
) -> Select[Any]:
    """The project's campaigns in id order, after the cursor's id, by status and kind."""
    stmt = list_named_query(Campaign, project_id, after_id=after_id)
    if status is not None:
        stmt = stmt.where(Campaign.status == status)
    if kind is not None:
        stmt = stmt.where(Campaign.kind == kind)
    return stmt


def update_campaign(
    session: Session, *, project: Project, ref: str, changes: Mapping[str, Any]
) -> Campaign:
    """PATCH: the given fields, under the edit rules of the campaign's state (module doc)."""
    campaign = get_campaign(session, project_id=project.id, ref=ref)
    if campaign.status == "archived":
        raise Conflict(
            f"campaign {campaign.name!r} is archived: it is read-only",
            {"status": ["archived campaigns are read-only"]},
        )
    if "kind" in changes and changes["kind"] != campaign.kind:
        raise InvalidInput(
            "a campaign's kind never changes (create another campaign)",
            {"kind": [f"is {campaign.kind}; it never changes"]},
        )
    errors: dict[str, list[str]] = {}
    values = _columns(session, project, {k: v for k, v in changes.items() if k != "kind"}, errors)
    if errors:
        raise _invalid(errors)
    changed = [
        name
        for name, columns in FIELD_COLUMNS.items()
        if any(c in values and values[c] != getattr(campaign, c) for c in columns)
    ]
    refused = [name for name in changed if name not in EDITABLE[campaign.status]]
    if refused:
        when = "in draft or paused" if campaign.status == "active" else "before it ends"
        raise Conflict(
            f"campaign {campaign.name!r} is {campaign.status}: "
            f"{', '.join(refused)} can only change {when}",
            {name: [f"not editable while {campaign.status}"] for name in refused},
        )
    for column, value in values.items():
        setattr(campaign, column, value)
    _check(campaign, errors)
    if errors:
        raise _invalid(errors)
    if "name" in values:
        ensure_name_free(
            session,
            Campaign,
            project_id=project.id,
            name=campaign.name,
            kind="campaign",
            exclude_id=campaign.id,
        )
    if changes:
        campaign.version += 1
        campaign.updated_at = utcnow()
    flush_named(session, name=campaign.name, kind="campaign")
    # Optional hook: a scheduled kind re-plans what an edit moved (reconcile on edit).
    edited = getattr(_kinds()[campaign.kind], "edited", None)
    if changed and edited is not None and campaign.status in ("active", "paused"):
        edited(session, campaign, utcnow())
    return campaign


def delete_campaign(session: Session, *, project_id: int, ref: str) -> None:
    """Delete a campaign that is not running (draft, completed, archived); else a 409."""
    campaign = get_campaign(session, project_id=project_id, ref=ref)
    if campaign.status in ("active", "paused"):
        raise Conflict(
            f"campaign {campaign.name!r} is {campaign.status}: archive it before deleting it",
            {"status": [f"cannot delete while {campaign.status}"]},
        )
    session.delete(campaign)
    session.flush()


# --- states --------------------------------------------------------------------------------


def _illegal(campaign: Campaign, action: str, why: str) -> Conflict:
    return Conflict(
        f"cannot {action} campaign {campaign.name!r}: {why}",
        {"status": [f"is {campaign.status}"]},
    )


def _still_sendable(session: Session, campaign: Campaign) -> None:
    """Templates deleted or emptied since the campaign was saved refuse the activation."""
    errors: dict[str, list[str]] = {}
    for channel, template_id in (campaign.channels or {}).items():
        template = session.get(Template, template_id)
        if template is None:
            errors[f"channels.{channel}"] = [f"template {template_id} was deleted"]
        elif not (template.channels or {}).get(channel):
            errors[f"channels.{channel}"] = [f"template {template.name!r} has no {channel} content"]
    _check(campaign, errors)
    if errors:
        raise _invalid(errors)


def activate_campaign(
    session: Session, *, project_id: int, ref: str, now: datetime | None = None
) -> tuple[Campaign, list[str]]:
    """Start a draft, or resume a paused campaign; returns the kind's warnings."""
    campaign = get_campaign(session, project_id=project_id, ref=ref)
    now = now or utcnow()
    kind = _kinds()[campaign.kind]
    if campaign.status == "draft":
        _still_sendable(session, campaign)
        campaign.status, campaign.status_reason = "active", None
        campaign.activated_at = now
        warnings = kind.activate(session, campaign, now)
    elif campaign.status == "paused":
        _still_sendable(session, campaign)
        campaign.status, campaign.status_reason = "active", None
        warnings = kind.resume(session, campaign, now)
    elif campaign.status == "active":
        raise _illegal(campaign, "activate", "it is already active")
    else:
        raise _illegal(campaign, "activate", f"it is {campaign.status} (that is final)")
    campaign.updated_at = now
    session.flush()
    return campaign, list(warnings or [])


def pause_campaign(
    session: Session, *, project_id: int, ref: str, reason: str | None = None, now=None
) -> Campaign:
    """Stop an active campaign sending anything more (resume with activate)."""
    campaign = get_campaign(session, project_id=project_id, ref=ref)
    now = now or utcnow()
    if campaign.status != "active":
        why = "it is already paused" if campaign.status == "paused" else "only active ones pause"
        raise _illegal(campaign, "pause", f"{why} (it is {campaign.status})")
    campaign.status, campaign.status_reason = "paused", reason
    campaign.updated_at = now
    _kinds()[campaign.kind].pause(session, campaign, now)
    session.flush()
    return campaign


def archive_campaign(
    session: Session, *, project_id: int, ref: str, now: datetime | None = None
) -> Campaign:
    """End a campaign for good: nothing more is scheduled or triggered; it becomes read-only."""
    campaign = get_campaign(session, project_id=project_id, ref=ref)
    now = now or utcnow()
    if campaign.status == "archived":
        raise _illegal(campaign, "archive", "it is already archived")
    campaign.status, campaign.status_reason = "archived", None
    campaign.updated_at = now
    _kinds()[campaign.kind].archive(session, campaign, now)
    session.flush()
    return campaign


# --- POST /v1/campaigns/{id}/send ----------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """One checked recipient: exactly one of `user_id`, `email`, `phone`."""

    user_id: str | None = None
    email: str | None = None
    phone: str | None = None
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class InvalidRecipient:
    """A recipient the schema refused (answered `{ok: false, error: invalid, errors}`)."""

    errors: dict[str, Any]
    raw: Any = None


@dataclass
class _Outcome:
    """One recipient's answer being built."""

    key: dict[str, str]
    ok: bool = True
    rows: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    collapsed: int = 0
    error: str | None = None
    errors: dict[str, Any] | None = None

    def as_json(self, ids: Mapping[tuple[str, str], int]) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, **self.key}
        out["messageIds"] = [ids[row] for row in self.rows if row in ids]
        if self.skipped:
            out["skipped"] = self.skipped
        if self.collapsed:
            out["collapsed"] = self.collapsed
        if self.error:
            out["error"] = self.error
        if self.errors:
            out["errors"] = self.errors
        return out


def api_send_campaign(
    session: Session, *, project_id: int, ref: str | int, now: datetime | None = None
) -> Campaign:
    """The campaign a send names: an `api` one (else 400) that is active (else 409)."""
    campaign = get_campaign(session, project_id=project_id, ref=ref)
    if campaign.kind != "api":
        raise BadRequest(
            f"campaign {campaign.name!r} is a {campaign.kind} campaign: only api campaigns "
            "take POST /send",
            {"kind": [f"is {campaign.kind}, not api"]},
        )
    if campaign.status != "active":
        raise Conflict(
            f"campaign {campaign.name!r} is {campaign.status}: only an active campaign sends",
            {"status": [f"is {campaign.status}"]},
        )
    return campaign


def send_api_campaign(
    session: Session,
    *,
    project: Project,
    ref: str | int,
    recipients: Sequence[Recipient | InvalidRecipient],
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """An `api` campaign's messages to these recipients, now (one occurrence per request).

    userId recipients are profiles (created on first sight) and go through the campaign's
    target and holdout; email / phone recipients are addressed directly on that channel with
    no profile behind them (`user` is empty in the template). Every address is reached once
    per request: a duplicate recipient's messages collapse into the first one's.
    """
    from app.db import insert_ignore
    from app.services.campaign_sends import create_campaign_sends
    from app.services.campaign_triggers import skip_reason
    from app.services.messages import users_by_external_ids
    from app.services.outbox import DEDUP_COLUMNS, enqueue_delivery, message_row
    from app.services.profiles import FieldError
    from workers.channels import CHANNELS

    now = now or utcnow()
    if len(recipients) > MAX_RECIPIENTS:
        raise TooLarge(
            f"at most {MAX_RECIPIENTS} recipients per request",
            {"recipients": [f"at most {MAX_RECIPIENTS}"]},
        )
    campaign = api_send_campaign(session, project_id=project.id, ref=ref)
    from journeys.campaigns import in_window

    if not in_window(campaign.starts_at, campaign.ends_at, now):
        raise Conflict(
            f"campaign {campaign.name!r} is outside its window: it sends nothing now",
            {"window": ["outside the campaign's window"]},
        )
    sends = create_campaign_sends(
        session,
        project=project,
        campaign=campaign,
        occurrence=f"api:{uuid.uuid4().hex}",
        now=now,
        fan_out=False,
        idempotency_key=idempotency_key,
    )
    send_of = {channel: send for send in sends for channel in send.channels}
    channels = list(send_of)
    user_ids = [r.user_id for r in recipients if isinstance(r, Recipient) and r.user_id]
    users: dict[str, User] = {}
    if user_ids:
        users = {u.external_id: u for u in users_by_external_ids(session, project.id, user_ids)}  # type: ignore[misc]
    skips: dict[tuple[int, str | None], dict[str, Any]] = {}
    reasons: dict[int, str | None] = {}
    for user in users.values():
        reasons[user.id] = skip_reason(session, campaign, user, now, check_window=False)
    reached = [u for u in users.values() if reasons[u.id] is None]
    addresses = {c: CHANNELS[c].addresses_of(session, reached) for c in channels}

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    collapsed_on: dict[str, int] = {}
    outcomes: list[_Outcome] = []
    for recipient in recipients:
        if isinstance(recipient, InvalidRecipient):
            outcomes.append(_Outcome({}, ok=False, error="invalid", errors=recipient.errors))
            continue
        wanted: list[tuple[str, str, int | None]] = []
        if recipient.user_id:
            outcome = _Outcome({"userId": recipient.user_id})
            user = users[recipient.user_id]
            reason = reasons[user.id]
            if reason is not None:
                outcome.skipped = dict.fromkeys(channels, reason)
                skips[(user.id, None)] = _skip_row(campaign, user.id, None, None, reason, now)
            for channel in channels if reason is None else ():
                found = addresses[channel].get(user.id)
                if not found:
                    outcome.skipped[channel] = "no_address"
                    skips[(user.id, channel)] = _skip_row(
                        campaign, user.id, send_of[channel].id, channel, "no_address", now
                    )
                wanted += [(channel, address, user.id) for address in found or ()]
        else:
            if recipient.email:
                channel, field_name, raw = "email", "email", recipient.email
            else:
                channel, field_name, raw = "sms", "phone", str(recipient.phone)
            outcome = _Outcome({field_name: raw})
            if channel not in send_of:
                outcome.ok, outcome.error = False, "channel/none"
                outcome.errors = {field_name: [f"the campaign has no {channel} channel"]}
                outcomes.append(outcome)
                continue
            try:
                address = CHANNELS[channel].normalize_address(raw, project.default_region)
            except (FieldError, ValueError) as err:
                outcome.ok, outcome.error = False, "invalid"
                outcome.errors = {field_name: [str(err)]}
                outcomes.append(outcome)
                continue
            wanted.append((channel, address, None))
        for channel, address, user_pk in wanted:
            key = (channel, address)
            outcome.rows.append(key)
            if key in rows:
                outcome.collapsed += 1
                collapsed_on[channel] = collapsed_on.get(channel, 0) + 1
                continue
            rows[key] = message_row(
                send_of[channel],
                channel=channel,
                address=address,
                user_id=user_pk,
                now=now,
                content=dict(recipient.params) if recipient.params else None,
            )
        outcomes.append(outcome)

    ids: dict[tuple[str, str], int] = {}
    if rows:
        stmt = insert_ignore(session, Message, DEDUP_COLUMNS).returning(
            Message.id, Message.channel, Message.address
        )
        for message_id, channel, address in session.execute(stmt, list(rows.values())):
            ids[(channel, address)] = message_id
        enqueue_delivery(session, sorted(ids.values()))
    if skips:
        session.execute(insert(SendSkip), list(skips.values()))
    for send in sends:
        send.recipients = sum(1 for (c, _a) in ids if c in send.channels)
        send.deduplicated = sum(collapsed_on.get(c, 0) for c in send.channels)
    session.flush()
    return {
        "sendIds": [send.id for send in sends],
        "messages": len(ids),
        "collapsed": sum(collapsed_on.values()),
        "results": [o.as_json(ids) for o in outcomes],
    }


def _skip_row(
    campaign: Campaign,
    user_pk: int | None,
    send_id: int | None,
    channel: str | None,
    reason: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "project_id": campaign.project_id,
        "user_id": user_pk,
        "campaign_id": campaign.id,
        "send_id": send_id,
        "channel": channel,
        "reason": reason,
        "detail": None,
        "at": now,
    }
