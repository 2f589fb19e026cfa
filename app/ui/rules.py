"""Rules: the list in words (when / if / then), one rule with its latest firings, turning a rule
on or off, and an editor of plain fields (no JSON) to create or change one.

The editor's body (`app.ui.rule_form`) goes through the API's own `RuleInputSchema` /
`RulePatchSchema` and `create_rule` / `update_rule`, so what POST or PATCH /v1/rules refuses is
refused here with the same reason, shown next to the field (or action row) it is about."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import redirect, render_template, request, url_for
from marshmallow import Schema, ValidationError
from sqlalchemy import select

from app.db import db
from app.errors import Conflict, DomainError, flatten_errors
from app.models import Audience, Campaign, Journey, Rule, Segment
from app.schemas.rules import RuleInputSchema, RulePatchSchema
from app.services import rules as service
from app.ui import rule_form
from app.ui.access import audit, can, project_page, require
from app.ui.blueprint import bp
from app.ui.describe import describe_filter, describe_seconds
from journeys.rules import RuleError, parse_rule
from journeys.rules.definition import ACTION_KINDS, TRIGGER_KINDS

FIRINGS_SHOWN = 50
# The models an id in a rule may name, by the kind of what it names.
REFERENCED: dict[str, Any] = {
    "audience": Audience,
    "campaign": Campaign,
    "journey": Journey,
    "rule": Rule,
}
ACTION_REFERENCES = {
    "addToAudience": "audience",
    "removeFromAudience": "audience",
    "sendCampaign": "campaign",
    "startJourney": "journey",
}


class Names:
    """The names of the audiences, campaigns and journeys rules refer to by id."""

    def __init__(self, found: Mapping[str, Mapping[int, str]]) -> None:
        self.found = found

    def of(self, kind: str, ref: Any) -> str:
        """A name (the stored reference when what it named is gone)."""
        if isinstance(ref, str) and ref.isdigit():
            ref = int(ref)
        return self.found.get(kind, {}).get(ref, str(ref))


def _kind_of(node: Mapping[str, Any], kinds: Iterable[str]) -> str | None:
    # Not the first key: PostgreSQL's JSONB orders keys by length.
    return next((k for k in kinds if k in node), None)


def names_for(
    pid: int,
    rules: Iterable[Rule],
    extra: Iterable[Mapping[str, Any]] = (),
    chains: Iterable[Any] = (),
) -> Names:
    """Look up every audience, campaign and journey the rules (and firings' actions) name,
    and the rules of the firings' chains."""
    wanted: dict[str, set[int]] = {kind: set() for kind in REFERENCED}

    def note(kind: str, ref: Any) -> None:
        if isinstance(ref, int) and not isinstance(ref, bool):
            wanted[kind].add(ref)
        elif isinstance(ref, str) and ref.isdigit():
            wanted[kind].add(int(ref))

    actions: list[Mapping[str, Any]] = list(extra)
    for rule in rules:
        trigger = _kind_of(rule.when or {}, TRIGGER_KINDS)
        if trigger in ("audienceEntered", "audienceLeft"):
            note("audience", rule.when[trigger])
        actions.extend(rule.actions or [])
    for ref in chains:
        note("rule", ref)
    for action in actions:
        kind = _kind_of(action, ACTION_KINDS)
        if kind in ACTION_REFERENCES:
            note(ACTION_REFERENCES[kind], action[kind])
    found: dict[str, dict[int, str]] = {}
    for kind, model in REFERENCED.items():
        ids = sorted(wanted[kind])
        rows = (
            db.session.execute(
                select(model.id, model.name).where(model.project_id == pid, model.id.in_(ids))
            ).all()
            if ids
            else []
        )
        found[kind] = {row_id: name for row_id, name in rows}
    return Names(found)


def describe_when(when: Mapping[str, Any] | None, names: Names) -> str:
    """`a user does add_to_cart where sku is A1`, `attribute plan changes to pro` ..."""
    when = when or {}
    kind = _kind_of(when, TRIGGER_KINDS)
    if kind == "event":
        text = f"a user does {when['event']}"
        if when.get("where"):
            text += f" where {describe_filter(when['where'])}"
        return text
    if kind == "audienceEntered":
        return f"a user enters audience {names.of('audience', when[kind])}"
    if kind == "audienceLeft":
        return f"a user leaves audience {names.of('audience', when[kind])}"
    if kind == "attributeChanged":
        text = f"a user's attribute {when[kind]} changes"
        if "from" in when:
            text += f" from {when['from']}"
        if "to" in when:
            text += f" to {when['to']}"
        return text
    return "—"


def describe_if(condition: Any) -> str:
    """The `if` filter in words; `always` without one."""
    return describe_filter(condition) if condition else "always"


def _add(action: Mapping[str, Any], names: Names) -> str:
    text = f"add to audience {names.of('audience', action['addToAudience'])}"
    if action.get("ttlSeconds"):
        text += f" for {describe_seconds(action['ttlSeconds'])}"
    return text


def _remove(action: Mapping[str, Any], names: Names) -> str:
    return f"remove from audience {names.of('audience', action['removeFromAudience'])}"


def _set(action: Mapping[str, Any], names: Names) -> str:
    pairs = ", ".join(f"{k} = {v}" for k, v in (action.get("setAttributes") or {}).items())
    return f"set {pairs}"


def _send(action: Mapping[str, Any], names: Names) -> str:
    return f"send campaign {names.of('campaign', action['sendCampaign'])}"


def _start(action: Mapping[str, Any], names: Names) -> str:
    text = f"start journey {names.of('journey', action['startJourney'])}"
    params = action.get("params") or {}
    if params:
        text += " with " + ", ".join(f"{k} = {v}" for k, v in params.items())
    return text


ACTION_WORDS: dict[str, Callable[[Mapping[str, Any], Names], str]] = {
    "addToAudience": _add,
    "removeFromAudience": _remove,
    "setAttributes": _set,
    "sendCampaign": _send,
    "startJourney": _start,
}


def describe_action(action: Mapping[str, Any], names: Names) -> str:
    """One `then` item in words: `add to audience Almost bought for 1h` ..."""
    kind = _kind_of(action, ACTION_KINDS)
    words = ACTION_WORDS.get(kind or "")
    return words(action, names) if words is not None else "—"


def describe_cause(cause: Mapping[str, Any] | None, names: Names) -> str:
    """What fired a rule: `purchase`, `entered audience Bought`, `plan changed free → pro`."""
    cause = cause or {}
    kind = _kind_of(cause, TRIGGER_KINDS)
    if kind == "event":
        text = f"event {cause['event']}"
    elif kind == "audienceEntered":
        text = f"entered audience {names.of('audience', cause[kind])}"
    elif kind == "audienceLeft":
        text = f"left audience {names.of('audience', cause[kind])}"
    elif kind == "attributeChanged":
        text = f"{cause[kind]} changed {cause.get('from')} → {cause.get('to')}"
    else:
        text = "—"
    chain = cause.get("chain") or []
    if chain:
        text += f" (after rules {', '.join(names.of('rule', c) for c in chain)})"
    return text


def _words(rule: Rule, names: Names) -> dict[str, Any]:
    return {
        "when": describe_when(rule.when, names),
        "if": describe_if(rule.condition),
        "then": [describe_action(action, names) for action in rule.actions or []],
    }


@bp.get("/projects/<int:pid>/rules")
@project_page("viewer")
def rules(pid: int) -> Any:
    """The project's rules in the order they run (priority, then id), in words."""
    rows = db.session.scalars(
        select(Rule).where(Rule.project_id == pid).order_by(Rule.priority, Rule.id).limit(500)
    ).all()
    names = names_for(pid, rows)
    return render_template(
        "ui/rules.html", rows=rows, words={row.id: _words(row, names) for row in rows}
    )


def _page(pid: int, rule: Rule, *, message: str | None = None) -> str:
    firings = db.session.execute(service.firings_query(rule).limit(FIRINGS_SHOWN)).all()
    names = names_for(
        pid,
        [rule],
        [a for firing, _ in firings for a in firing.actions or []],
        [c for firing, _ in firings for c in (firing.cause or {}).get("chain") or []],
    )
    shown = [
        {
            "firing": firing,
            "user_id": user_id,
            "cause": describe_cause(firing.cause, names),
            "actions": [
                (describe_action(action, names), action.get("result"))
                for action in firing.actions or []
            ],
        }
        for firing, user_id in firings
    ]
    return render_template(
        "ui/rule.html",
        r=rule,
        words=_words(rule, names),
        firings=shown,
        firings_shown=FIRINGS_SHOWN,
        message=message,
    )


@bp.get("/projects/<int:pid>/rules/<int:rid>")
@project_page("viewer")
def rule(pid: int, rid: int) -> Any:
    """One rule in words, with its latest firings."""
    row = service.get_rule(db.session, project_id=pid, ref=str(rid))
    return _page(pid, row)


@bp.post("/projects/<int:pid>/rules/<int:rid>/toggle")
@project_page("marketer")
def rule_toggle(pid: int, rid: int) -> Any:
    """Turn the rule off (it stops firing) or on again; the audit log keeps the change."""
    row = service.get_rule(db.session, project_id=pid, ref=str(rid))
    before = row.enabled
    try:
        service.update_rule(
            db.session,
            project_id=pid,
            ref=str(rid),
            body={"enabled": not before},
            replace=False,
        )
    except DomainError as err:
        db.session.rollback()
        row = service.get_rule(db.session, project_id=pid, ref=str(rid))
        return _page(pid, row, message=err.message), err.code
    audit(
        "rule.enabled" if row.enabled else "rule.disabled",
        "rule",
        rid,
        summary=f"{'enabled' if row.enabled else 'disabled'} rule {row.name}",
        before={"enabled": before},
        after={"enabled": row.enabled},
    )
    if request.form.get("back") == "list":
        return redirect(url_for("ui.rules", pid=pid))
    return redirect(url_for("ui.rule", pid=pid, rid=rid))


# --- the editor -------------------------------------------------------------------------------

TRIGGER_WORDS = {
    "event": "a user does an event",
    "audienceEntered": "a user enters an audience",
    "audienceLeft": "a user leaves an audience",
    "attributeChanged": "an attribute of a user changes",
}
ACTION_LABELS = {
    "addToAudience": "add to an audience",
    "removeFromAudience": "remove from an audience",
    "setAttributes": "set attributes",
    "sendCampaign": "send a campaign",
    "startJourney": "start a journey",
}
CHECKED = "Some fields need a change: see below"


def _choices(pid: int) -> dict[str, Any]:
    def rows(model: Any, *extra: Any) -> list[Any]:
        return list(
            db.session.execute(
                select(model.id, model.name, *extra)
                .where(model.project_id == pid)
                .order_by(model.name)
            ).all()
        )

    return {
        "audiences": rows(Audience),
        "campaigns": rows(Campaign, Campaign.status),
        "journeys": rows(Journey, Journey.status),
        "segment_rows": rows(Segment),
        "trigger_words": TRIGGER_WORDS,
        "action_labels": ACTION_LABELS,
    }


def _segment_filters(pid: int) -> dict[int, Any]:
    rows = db.session.execute(
        select(Segment.id, Segment.filter).where(Segment.project_id == pid)
    ).all()
    return {sid: tree for sid, tree in rows}


def rule_fields(rule: Rule) -> dict[str, Any]:
    """The rule as the API shows it (for the audit log's before / after)."""
    return copy.deepcopy(
        {
            "name": rule.name,
            "enabled": rule.enabled,
            "priority": rule.priority,
            "when": rule.when,
            "if": rule.condition,
            "then": rule.actions,
        }
    )


def _editor(
    pid: int,
    rule: Rule | None,
    values: Mapping[str, Any],
    rows: list[dict[str, str]],
    errors: Mapping[str, Any] | None = None,
    message: str | None = None,
) -> Any:
    errors = errors or {}
    return render_template(
        "ui/rule_edit.html",
        r=rule,
        v=values,
        rows=rows,
        slots=rule_form.slots(errors),
        message=message or (CHECKED if errors else None),
        readonly=not can("marketer"),
        **_choices(pid),
    ), (422 if errors or message else 200)


def _with_row(values: Mapping[str, Any], rows: list[dict[str, str]]) -> Any:
    """The form again with one more (empty) action row: the no-JavaScript "Add an action"."""
    after = max((int(row["n"]) for row in rows), default=-1) + 1
    return values, [*rows, rule_form.blank_row() | {"n": str(after)}]


def _checked(draft: rule_form.Draft, schema: type[Schema]) -> tuple[Any, dict[str, list[str]]]:
    """The body as the API's schema loads it (service names), or every field's errors: those
    reading the fields, the schema's, and the rule validator's (so all show at once)."""
    errors = {key: list(why) for key, why in draft.errors.items()}
    loaded = None
    try:
        loaded = schema().load(draft.body)
    except ValidationError as err:
        for key, why in flatten_errors(err.messages).items():
            errors.setdefault(draft.form_key(key), why if isinstance(why, list) else [why])
    if errors:
        try:
            parse_rule({k: v for k, v in draft.body.items() if k != "name"})
        except RuleError as err:
            for key, why in err.errors.items():
                errors.setdefault(draft.form_key(key), why)
        return None, errors
    assert isinstance(loaded, dict)
    return {("if" if key == "if_" else key): value for key, value in loaded.items()}, {}


def _refused(draft: rule_form.Draft, err: DomainError) -> dict[str, list[str]]:
    db.session.rollback()
    if isinstance(err, Conflict):
        return {"name": ["another rule already has this name"]}
    errors = {draft.form_key(key): why for key, why in (err.errors or {}).items()}
    return errors or {"_schema": [err.message]}


@bp.route("/projects/<int:pid>/rules/new", methods=["GET", "POST"])
@project_page("viewer")
def rule_new(pid: int) -> Any:
    """A new rule from plain fields: name, when, if, then (a viewer sees the form read-only)."""
    if request.method == "GET":
        values = {"enabled": True, "priority": "0", "when_kind": "event"}
        return _editor(pid, None, values, [rule_form.blank_row("addToAudience") | {"n": "0"}])
    require("marketer", "Viewers cannot change rules")
    values, rows = rule_form.values_from_form(request.form)
    if request.form.get("add_row"):
        return _editor(pid, None, *_with_row(values, rows))
    draft = rule_form.body_from_form(request.form, _segment_filters(pid))
    body, errors = _checked(draft, RuleInputSchema)
    if not errors:
        try:
            made = service.create_rule(db.session, project_id=pid, body=body)
        except DomainError as err:
            errors = _refused(draft, err)
        else:
            audit(
                "rule.created",
                "rule",
                made.id,
                summary=f"created rule {made.name}",
                after=rule_fields(made),
            )
            return redirect(url_for("ui.rule", pid=pid, rid=made.id, saved=1))
    return _editor(pid, None, values, rows, errors)


@bp.route("/projects/<int:pid>/rules/<int:rid>/edit", methods=["GET", "POST"])
@project_page("viewer")
def rule_edit(pid: int, rid: int) -> Any:
    """Change a rule's fields (its id, firings and place in the audit log stay)."""
    row = service.get_rule(db.session, project_id=pid, ref=str(rid))
    if request.method == "GET":
        values, rows = rule_form.values_from_rule(row, _segment_filters(pid))
        if not rows:
            rows = [rule_form.blank_row() | {"n": "0"}]
        return _editor(pid, row, values, rows)
    require("marketer", "Viewers cannot change rules")
    values, rows = rule_form.values_from_form(request.form)
    if request.form.get("add_row"):
        return _editor(pid, row, *_with_row(values, rows))
    before = rule_fields(row)
    draft = rule_form.body_from_form(request.form, _segment_filters(pid))
    body, errors = _checked(draft, RulePatchSchema)
    if not errors:
        try:
            service.update_rule(db.session, project_id=pid, ref=str(rid), body=body, replace=False)
        except DomainError as err:
            errors = _refused(draft, err)
            row = service.get_rule(db.session, project_id=pid, ref=str(rid))
        else:
            audit(
                "rule.edited",
                "rule",
                rid,
                summary=f"edited rule {row.name}",
                before=before,
                after=rule_fields(row),
            )
            return redirect(url_for("ui.rule", pid=pid, rid=rid, saved=1))
    return _editor(pid, row, values, rows, errors)
