"""The journey editor: trigger, entry, exits, goal, and the steps as a list of step forms (one
fieldset per step, its type's fields only), saved through the API's `create_journey` /
`update_journey`, so every validation error names its step and shows on that step's form.

Form fields are `steps-<n>-<field>`; filters are typed in the segment string form (or JSON),
durations as `30m`, `1d`; lists one item per line (`plan:pro => upsell` for a branch,
`50 => a` for a split, `key=value` for attributes).
"""

from __future__ import annotations

import re
from typing import Any

from flask import redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from app.db import db
from app.errors import DomainError
from app.models import Audience, Journey, Template
from app.services import journeys as service
from app.ui.access import audit, names_by_id, project_page
from app.ui.blueprint import bp
from app.ui.segments import filter_from_text, filter_text
from journeys.filters import CHANNELS

STEP_TYPES = (
    "wait",
    "waitForEvent",
    "waitForSegment",
    "branch",
    "split",
    "send",
    "audience",
    "setAttributes",
    "webhook",
    "exit",
)
TRIGGERS = ("event", "audienceEntered", "segmentEntered", "api")
POLICIES = ("once", "always", "oncePer")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _filter(text: str, path: str, errors: dict[str, list[str]]) -> Any:
    try:
        return filter_from_text(text)
    except DomainError as err:
        errors.setdefault(path, []).append(err.message)
        return None


def _step_from_form(form: Any, n: int, errors: dict[str, list[str]]) -> dict[str, Any]:
    def f(name: str) -> str:
        return str(form.get(f"steps-{n}-{name}", "")).strip()

    step: dict[str, Any] = {"id": f("id"), "type": f("type")}
    kind = step["type"]
    path = f"steps[{n}]"
    if kind == "wait":
        mode = f("mode") or "duration"
        if mode == "until":
            until: dict[str, Any] = {"time": f("time")}
            days = [d.strip().lower()[:3] for d in f("weekdays").split(",") if d.strip()]
            if days:
                until["weekdays"] = days
            step["until"] = until
        elif mode == "untilAttribute":
            attr: dict[str, Any] = {"key": f("attr_key")}
            if f("attr_offset"):
                attr["offset"] = f("attr_offset")
            step["untilAttribute"] = attr
        else:
            step["duration"] = f("duration")
    elif kind == "waitForEvent":
        step["event"] = f("event")
        if f("where"):
            step["where"] = _filter(f("where"), f"{path}.where", errors)
        if f("match_on"):
            step["matchOn"] = f("match_on")
        step["timeout"] = f("timeout")
        step["onTimeout"] = f("on_timeout")
    elif kind == "waitForSegment":
        step["filter"] = _filter(f("filter"), f"{path}.filter", errors)
        step["timeout"] = f("timeout")
        step["onTimeout"] = f("on_timeout")
    elif kind == "branch":
        branches = []
        for i, line in enumerate(_lines(str(form.get(f"steps-{n}-branches", "")))):
            cond, _, target = line.partition("=>")
            if not target:
                errors.setdefault(f"{path}.branches[{i}]", []).append(
                    "write each branch as 'filter => step id'"
                )
                continue
            branches.append(
                {
                    "if": _filter(cond.strip(), f"{path}.branches[{i}].if", errors),
                    "next": target.strip(),
                }
            )
        step["branches"] = branches
        step["default"] = f("default")
    elif kind == "split":
        variants = []
        for i, line in enumerate(_lines(str(form.get(f"steps-{n}-variants", "")))):
            pct, _, target = line.partition("=>")
            try:
                variants.append({"percent": int(pct.strip().rstrip("%")), "next": target.strip()})
            except ValueError:
                errors.setdefault(f"{path}.variants[{i}]", []).append(
                    "write each variant as 'percent => step id'"
                )
        step["variants"] = variants
    elif kind == "send":
        step["channel"] = f("channel")
        step["template"] = f("template")
    elif kind == "audience":
        step["remove" if f("audience_action") == "remove" else "add"] = f("audience")
        if f("ttl"):
            step["ttlSeconds"] = f("ttl")
    elif kind == "setAttributes":
        attributes: dict[str, Any] = {}
        for line in _lines(str(form.get(f"steps-{n}-attributes", ""))):
            key, _, value = line.partition("=")
            attributes[key.strip()] = value.strip()
        step["attributes"] = attributes
    elif kind == "webhook":
        step["url"] = f("url")
        if f("save_as"):
            step["saveAs"] = f("save_as")
    if kind not in ("branch", "split", "exit") and f("next"):
        step["next"] = f("next")
    elif kind not in ("branch", "split", "exit"):
        step["next"] = ""
    return {k: v for k, v in step.items() if v != "" or k in ("id", "type", "next")}


def _ttl_value(step: dict[str, Any]) -> None:
    """An audience step's TTL as typed: seconds when a number, else the API's duration text."""
    ttl = step.get("ttlSeconds")
    if isinstance(ttl, str) and ttl.isdigit():
        step["ttlSeconds"] = int(ttl)


def body_from_form(form: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The journey object (API field names) the editor's fields describe, and the errors found
    reading them."""
    errors: dict[str, list[str]] = {}
    trigger_kind = form.get("trigger_kind", "event")
    if trigger_kind == "event":
        trigger: dict[str, Any] = {"event": form.get("trigger_event", "").strip()}
        if form.get("trigger_where", "").strip():
            trigger["where"] = _filter(form["trigger_where"], "trigger.where", errors)
    elif trigger_kind == "audienceEntered":
        trigger = {"audienceEntered": form.get("trigger_audience", "")}
    elif trigger_kind == "segmentEntered":
        trigger = {
            "segmentEntered": _filter(
                form.get("trigger_segment", ""), "trigger.segmentEntered", errors
            )
        }
    else:
        trigger = {"api": True}
    entry: dict[str, Any] = {"policy": form.get("entry_policy") or "once"}
    if entry["policy"] == "oncePer":
        entry["period"] = form.get("entry_period", "").strip()
    if form.get("entry_key", "").strip():
        entry["key"] = form["entry_key"].strip()
    if form.get("entry_existing"):
        entry["existingMembers"] = True
    exits: list[dict[str, Any]] = []
    for i, line in enumerate(_lines(form.get("exits", ""))):
        if line.lower().startswith("left "):
            exits.append({"leftSegment": _filter(line[5:], f"exit[{i}].leftSegment", errors)})
            continue
        name, _, match = line.partition(" matched on ")
        item: dict[str, Any] = {"event": name.strip()}
        if match.strip():
            item["matchOn"] = match.strip()
        exits.append(item)
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "trigger": trigger,
        "entry": entry,
        "exit": exits,
        "steps": [],
    }
    if form.get("goal_event", "").strip():
        body["goal"] = {"event": form["goal_event"].strip()}
        if form.get("goal_within", "").strip():
            body["goal"]["within"] = form["goal_within"].strip()
    indices = sorted({int(m.group(1)) for k in form if (m := re.fullmatch(r"steps-(\d+)-type", k))})
    for n in indices:
        if form.get(f"steps-{n}-delete"):
            continue
        step = _step_from_form(form, n, errors)
        _ttl_value(step)
        body["steps"].append(step)
    return body, errors


def _names(model: Any, pid: int) -> dict[str, str]:
    """Names by id as a stored definition holds it (a string)."""
    return {str(i): name for i, name in names_by_id(model, pid).items()}


def form_of(journey: Journey, pid: int) -> MultiDict[str, Any]:
    """The editor's fields holding a stored journey (references shown by name)."""
    d = journey.definition or {}
    templates, audiences = _names(Template, pid), _names(Audience, pid)
    form: MultiDict[str, Any] = MultiDict({"name": journey.name})
    trigger = d.get("trigger") or {}
    if "event" in trigger:
        form["trigger_kind"] = "event"
        form["trigger_event"] = trigger["event"]
        form["trigger_where"] = filter_text(trigger.get("where"))
    elif "audienceEntered" in trigger:
        form["trigger_kind"] = "audienceEntered"
        ref = str(trigger["audienceEntered"])
        form["trigger_audience"] = audiences.get(ref, ref)
    elif "segmentEntered" in trigger:
        form["trigger_kind"] = "segmentEntered"
        form["trigger_segment"] = filter_text(trigger["segmentEntered"])
    else:
        form["trigger_kind"] = "api"
    entry = d.get("entry") or {}
    form["entry_policy"] = entry.get("policy", "once")
    form["entry_period"] = entry.get("period") or ""
    form["entry_key"] = entry.get("key") or ""
    if entry.get("existingMembers"):
        form["entry_existing"] = "1"
    exits = []
    for item in d.get("exit") or ():
        if "leftSegment" in item:
            exits.append("left " + filter_text(item["leftSegment"]))
        else:
            match = f" matched on {item['matchOn']}" if item.get("matchOn") else ""
            exits.append(f"{item['event']}{match}")
    form["exits"] = "\n".join(exits)
    goal = d.get("goal") or {}
    form["goal_event"] = goal.get("event", "")
    form["goal_within"] = goal.get("within") or ""
    for n, step in enumerate(d.get("steps") or ()):
        p = f"steps-{n}-"
        form[p + "id"], form[p + "type"] = step["id"], step["type"]
        form[p + "next"] = step.get("next") or ""
        kind = step["type"]
        if kind == "wait":
            if "until" in step:
                form[p + "mode"] = "until"
                form[p + "time"] = step["until"].get("time", "")
                form[p + "weekdays"] = ", ".join(step["until"].get("weekdays") or ())
            elif "untilAttribute" in step:
                form[p + "mode"] = "untilAttribute"
                form[p + "attr_key"] = step["untilAttribute"].get("key", "")
                form[p + "attr_offset"] = step["untilAttribute"].get("offset") or ""
            else:
                form[p + "mode"] = "duration"
                form[p + "duration"] = str(step.get("duration", ""))
        elif kind == "waitForEvent":
            form[p + "event"] = step.get("event", "")
            form[p + "where"] = filter_text(step.get("where"))
            form[p + "match_on"] = step.get("matchOn") or ""
            form[p + "timeout"] = str(step.get("timeout", ""))
            form[p + "on_timeout"] = step.get("onTimeout", "")
        elif kind == "waitForSegment":
            form[p + "filter"] = filter_text(step.get("filter"))
            form[p + "timeout"] = str(step.get("timeout", ""))
            form[p + "on_timeout"] = step.get("onTimeout", "")
        elif kind == "branch":
            form[p + "branches"] = "\n".join(
                f"{filter_text(b['if'])} => {b['next']}" for b in step.get("branches") or ()
            )
            form[p + "default"] = step.get("default", "")
        elif kind == "split":
            form[p + "variants"] = "\n".join(
                f"{v['percent']} => {v['next']}" for v in step.get("variants") or ()
            )
        elif kind == "send":
            form[p + "channel"] = step.get("channel", "")
            ref = str(step.get("template", ""))
            form[p + "template"] = templates.get(ref, ref)
        elif kind == "audience":
            action = "remove" if "remove" in step else "add"
            form[p + "audience_action"] = action
            ref = str(step.get(action, ""))
            form[p + "audience"] = audiences.get(ref, ref)
            form[p + "ttl"] = str(step.get("ttlSeconds") or "")
        elif kind == "setAttributes":
            form[p + "attributes"] = "\n".join(
                f"{k}={v}" for k, v in (step.get("attributes") or {}).items()
            )
        elif kind == "webhook":
            form[p + "url"] = step.get("url", "")
            form[p + "save_as"] = step.get("saveAs") or ""
    return form


def _step_errors(errors: dict[str, list[str]]) -> tuple[dict[int, list[str]], dict[str, list[str]]]:
    """Errors by step index (`steps[2].next` → 2) and the others by field."""
    by_step: dict[int, list[str]] = {}
    rest: dict[str, list[str]] = {}
    for key, messages in errors.items():
        m = re.match(r"steps\[(\d+)\]", key)
        if m:
            by_step.setdefault(int(m.group(1)), []).extend(
                f"{key[m.end() :].lstrip('.') or 'step'}: {msg}" for msg in messages
            )
        else:
            rest[key] = messages
    return by_step, rest


def _editor(
    pid: int, journey: Journey | None, form: Any, errors: dict[str, list[str]], message: str | None
) -> Any:
    by_step, rest = _step_errors(errors)
    indices = sorted({int(m.group(1)) for k in form if (m := re.fullmatch(r"steps-(\d+)-type", k))})
    if form.get("add_step") or not indices:
        indices.append(max(indices, default=-1) + 1)
    return render_template(
        "ui/journey_edit.html",
        journey=journey,
        form=form,
        indices=indices,
        step_errors=by_step,
        errors=rest,
        message=message,
        step_types=STEP_TYPES,
        triggers=TRIGGERS,
        policies=POLICIES,
        channels=CHANNELS,
        templates=sorted(_names(Template, pid).values()),
        audiences=sorted(_names(Audience, pid).values()),
    )


def _save(pid: int, journey: Journey | None) -> Any:
    form = request.form
    if form.get("add_step"):
        return _editor(pid, journey, form, {}, None)
    body, errors = body_from_form(form)
    if not errors:
        try:
            if journey is None:
                saved = service.create_journey(db.session, project_id=pid, body=body)
                before = None
            else:
                before = {"version": journey.version, "definition": journey.definition}
                saved = service.update_journey(
                    db.session, project_id=pid, ref=str(journey.id), body=body, replace_all=True
                )
        except DomainError as err:
            db.session.rollback()
            if journey is not None:
                journey = service.get_journey(db.session, project_id=pid, ref=journey.id)
            return _editor(pid, journey, form, err.errors or {}, err.message), err.code
        audit(
            "journey.created" if before is None else "journey.edited",
            "journey",
            saved.id,
            summary=f"{'created' if before is None else 'edited'} journey {saved.name}"
            f" (version {saved.version})",
            before=before,
            after={"version": saved.version, "definition": saved.definition},
        )
        return redirect(url_for("ui.journey", pid=pid, jid=saved.id))
    return _editor(pid, journey, form, errors, "Some fields need a change: see below"), 422


@bp.route("/projects/<int:pid>/journeys/new", methods=["GET", "POST"])
@project_page("marketer")
def journey_new(pid: int) -> Any:
    """A new journey (in draft)."""
    if request.method == "GET":
        return _editor(pid, None, MultiDict(), {}, None)
    return _save(pid, None)


@bp.route("/projects/<int:pid>/journeys/<int:jid>/edit", methods=["GET", "POST"])
@project_page("marketer")
def journey_edit(pid: int, jid: int) -> Any:
    """Edit a journey; saving makes a new version when something changed (runs in flight keep
    theirs), under the API's editing rules for its state."""
    journey = service.get_journey(db.session, project_id=pid, ref=jid)
    if request.method == "GET":
        return _editor(pid, journey, form_of(journey, pid), {}, None)
    return _save(pid, journey)
