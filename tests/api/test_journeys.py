"""/v1/journeys: CRUD, errors naming the field and step, versions, states, runs, stats, entry."""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from app.db import db
from app.models import Journey, JourneyRun, JourneyStepLog, JourneyVersion, User
from app.models.base import utcnow
from app.models.message import Message, Send

HAS_RUNTIME = importlib.util.find_spec("app.services.journey_runs") is not None
needs_runtime = pytest.mark.skipif(
    not HAS_RUNTIME, reason="app.services.journey_runs (the runtime) is not there yet"
)

PUSH = {"name": "tip", "channels": {"push": {"en": {"title": "Tip", "body": "Try {{ params.x }}"}}}}
EMAIL_ONLY = {
    "name": "letter",
    "channels": {"email": {"en": {"subject": "Hi", "html": "<p>Hi</p>"}}},
}

CART = {
    "name": "cart",
    "trigger": {"event": "cart_updated", "where": "plan:pro"},
    "entry": {"policy": "always", "key": "cartId"},
    "exit": [{"event": "cart_emptied", "matchOn": "cartId"}],
    "goal": {"event": "purchase", "within": "3d"},
    "steps": [
        {
            "id": "wait",
            "type": "waitForEvent",
            "event": "purchase",
            "matchOn": "cartId",
            "timeout": "2h",
            "next": "done",
            "onTimeout": "remind",
        },
        {"id": "remind", "type": "send", "channel": "push", "template": "tip", "next": "done"},
        {"id": "done", "type": "exit"},
    ],
}


def _setup(api) -> dict[str, int]:
    ids = {}
    for body in (PUSH, EMAIL_ONLY):
        r = api.post("/v1/templates", json=body)
        assert r.status_code == 201, r.json
        ids[body["name"]] = r.json["id"]
    r = api.post("/v1/audiences", json={"name": "Trial"})
    assert r.status_code == 201, r.json
    ids["Trial"] = r.json["id"]
    return ids


def _create(api, body=CART) -> dict[str, Any]:
    r = api.post("/v1/journeys", json=body)
    assert r.status_code == 201, r.json
    return r.json


def _user_pk(app, project, user_id: str) -> int:
    with app.app_context(), db.begin() as session:
        pk = session.scalar(
            select(User.id).where(User.project_id == project.id, User.external_id == user_id)
        )
        if pk is None:
            user = User(project_id=project.id, external_id=user_id, attributes={})
            session.add(user)
            session.flush()
            pk = user.id
        return pk


def _run(app, project, journey_id: int, user_id: str, **values: Any) -> int:
    """A run row written directly (as the runtime would)."""
    user_pk = _user_pk(app, project, user_id)
    now = utcnow()
    row = {
        "project_id": project.id,
        "journey_id": journey_id,
        "user_id": user_pk,
        "version": 1,
        "entry_key": "",
        "status": "waiting",
        "step": "wait",
        "wake_at": now + timedelta(hours=2),
        "entered_at": now,
        "updated_at": now,
        **values,
    }
    row.setdefault(
        "state",
        {
            "status": row["status"],
            "step": row["step"],
            "enteredAt": now.isoformat(),
            "wakeAt": row["wake_at"].isoformat() if row["wake_at"] else None,
            "waitingSince": now.isoformat(),
            "visits": {row["step"]: 1} if row["step"] else {},
            "context": {},
            "entryKey": row["entry_key"],
            "exitReason": None,
            "lastSend": None,
        },
    )
    with app.app_context(), db.begin() as session:
        return session.scalar(insert(JourneyRun).returning(JourneyRun.id), row)


def _log(app, project, journey_id, run_id, user_pk, step, visit, outcome, version=1) -> None:
    now = utcnow()
    with app.app_context(), db.begin() as session:
        session.execute(
            insert(JourneyStepLog),
            {
                "project_id": project.id,
                "journey_id": journey_id,
                "run_id": run_id,
                "user_id": user_pk,
                "version": version,
                "step": step,
                "visit": visit,
                "outcome": outcome,
                "entered_at": now,
                "left_at": now if outcome else None,
            },
        )


def _versions(app, journey_id: int) -> list[tuple[int, str]]:
    with app.app_context(), db.begin() as session:
        return list(
            session.execute(
                select(JourneyVersion.version, JourneyVersion.fingerprint)
                .where(JourneyVersion.journey_id == journey_id)
                .order_by(JourneyVersion.version)
            ).tuples()
        )


# --- CRUD ----------------------------------------------------------------------------------


def test_create_get_list_put_patch_delete(app, api):
    ids = _setup(api)
    journey = _create(api)
    assert journey["status"] == "draft" and journey["version"] == 1
    assert journey["statusReason"] is None and journey["activatedAt"] is None
    assert {"id", "createdAt", "updatedAt"} <= set(journey)
    assert journey["trigger"] == {
        "event": "cart_updated",
        "where": {"all": [{"attr": "plan", "op": "textEq", "value": "pro"}]},
    }
    assert journey["entry"] == {"policy": "always", "key": "cartId", "existingMembers": False}
    assert journey["goal"] == {"event": "purchase", "within": "3d"}
    # The template named on save is stored (and shown) by id.
    assert journey["steps"][1] == {
        "id": "remind",
        "type": "send",
        "channel": "push",
        "template": ids["tip"],
        "next": "done",
    }
    assert api.get(f"/v1/journeys/{journey['id']}").json == journey
    assert api.get("/v1/journeys/cart").json["id"] == journey["id"]
    with app.app_context(), db.begin() as session:
        row = session.get(Journey, journey["id"])
        assert (row.trigger_kind, row.trigger_key) == ("event", "cart_updated")
        assert row.definition["name"] == "cart"
    assert [v for v, _ in _versions(app, journey["id"])] == [1]

    # PATCH replaces the given top-level fields; the rest stay.
    r = api.patch("/v1/journeys/cart", json={"goal": None, "name": "cart2"})
    assert r.status_code == 200, r.json
    assert r.json["name"] == "cart2" and r.json["goal"] is None
    assert r.json["steps"] == journey["steps"] and r.json["entry"] == journey["entry"]

    # PUT replaces: absent entry and exit reset to their defaults.
    r = api.put(
        f"/v1/journeys/{journey['id']}",
        json={
            "name": "trial",
            "trigger": {"audienceEntered": "Trial"},
            "steps": [{"id": "bye", "type": "exit"}],
        },
    )
    assert r.status_code == 200, r.json
    assert r.json["trigger"] == {"audienceEntered": ids["Trial"]}
    assert r.json["entry"] == {"policy": "once", "existingMembers": False}
    assert r.json["exit"] == [] and r.json["goal"] is None
    with app.app_context(), db.begin() as session:
        row = session.get(Journey, journey["id"])
        assert (row.trigger_kind, row.trigger_key) == ("audienceEntered", str(ids["Trial"]))

    _create(api, {**CART, "name": "second"})
    page = api.get("/v1/journeys?limit=1").json
    assert [j["name"] for j in page["data"]] == ["trial"]
    rest = api.get(f"/v1/journeys?cursor={page['nextCursor']}").json
    assert [j["name"] for j in rest["data"]] == ["second"] and rest["nextCursor"] is None
    assert api.post("/v1/journeys/second/activate").status_code == 200
    assert [j["name"] for j in api.get("/v1/journeys?status=active").json["data"]] == ["second"]
    assert api.get("/v1/journeys?status=nope").status_code == 400

    assert api.delete("/v1/journeys/trial").status_code == 204
    assert api.get("/v1/journeys/trial").status_code == 404
    assert _versions(app, journey["id"]) == []


def test_validation_errors_name_the_field_and_the_step(api):
    _setup(api)
    r = api.post("/v1/journeys", json={"name": "x"})
    assert r.status_code == 422
    assert {"trigger", "steps"} <= set(r.json["errors"])
    assert r.json["message"] and r.json["status"] == "Unprocessable Entity"

    bad_next = {
        **CART,
        "steps": [
            {**CART["steps"][0], "onTimeout": "nowhere"},
            *CART["steps"][1:],
        ],
    }
    r = api.post("/v1/journeys", json=bad_next)
    assert r.status_code == 422
    assert list(r.json["errors"]) == ["steps[0].onTimeout"]
    assert 'step "wait"' in r.json["errors"]["steps[0].onTimeout"][0]

    cases = {
        "trigger": {**CART, "trigger": {"event": "a", "audienceEntered": 1}},
        "entry.policy": {**CART, "entry": {"policy": "sometimes"}},
        "steps[1].channel": {
            **CART,
            "steps": [CART["steps"][0], {**CART["steps"][1], "channel": "fax"}, CART["steps"][2]],
        },
        "steps[2].colour": {
            **CART,
            "steps": [*CART["steps"][:2], {"id": "done", "type": "exit", "colour": "red"}],
        },
        "name": {**CART, "name": "123"},
        "goal.within": {**CART, "goal": {"event": "purchase", "within": "soon"}},
    }
    for path, body in cases.items():
        r = api.post("/v1/journeys", json=body)
        assert r.status_code == 422, (path, r.json)
        assert path in r.json["errors"], (path, r.json)

    # An unreachable step and a loop without a wait name their step.
    loop = {
        "name": "loop",
        "trigger": {"api": True},
        "steps": [
            {"id": "a", "type": "setAttributes", "attributes": {"n": 1}, "next": "b"},
            {"id": "b", "type": "setAttributes", "attributes": {"n": 2}, "next": "a"},
            {"id": "c", "type": "exit"},
        ],
    }
    r = api.post("/v1/journeys", json=loop)
    assert r.status_code == 422
    assert 'step "c"' in r.json["errors"]["steps[2]"][0]
    assert "waiting step" in r.json["errors"]["steps[0]"][0]

    # A template without content for the step's channel is a 422 naming the step's field.
    wrong_channel = {
        **CART,
        "steps": [CART["steps"][0], {**CART["steps"][1], "template": "letter"}, CART["steps"][2]],
    }
    r = api.post("/v1/journeys", json=wrong_channel)
    assert r.status_code == 422 and "steps[1].template" in r.json["errors"]

    _create(api)
    r = api.post("/v1/journeys", json=CART)
    assert r.status_code == 409 and r.json["errors"] == {"name": ["name/exists"]}


def test_unknown_references_are_404s_naming_the_path(api):
    _setup(api)
    missing_template = {
        **CART,
        "steps": [CART["steps"][0], {**CART["steps"][1], "template": "nope"}, CART["steps"][2]],
    }
    r = api.post("/v1/journeys", json=missing_template)
    assert r.status_code == 404, r.json
    assert r.json["errors"] == {"steps[1].template": ["not found"]}

    body = {
        "name": "aud",
        "trigger": {"audienceEntered": 987654},
        "steps": [
            {"id": "add", "type": "audience", "add": "Nobody", "next": "end"},
            {"id": "end", "type": "exit"},
        ],
    }
    r = api.post("/v1/journeys", json=body)
    assert r.status_code == 404
    assert r.json["errors"] == {
        "trigger.audienceEntered": ["not found"],
        "steps[0].add": ["not found"],
    }
    assert api.get("/v1/journeys/nope").status_code == 404
    assert api.get("/v1/journeys/99999").status_code == 404
    for action in ("activate", "pause", "archive", "stats", "runs"):
        method = api.get if action in ("stats", "runs") else api.post
        assert method(f"/v1/journeys/nope/{action}").status_code == 404


# --- versions ------------------------------------------------------------------------------


def test_draft_edits_in_place_active_edits_make_versions(app, api, project):
    _setup(api)
    journey = _create(api)
    jid = journey["id"]
    steps = CART["steps"]
    longer = [{**steps[0], "timeout": "4h"}, *steps[1:]]

    r = api.patch("/v1/journeys/cart", json={"steps": longer})
    assert r.status_code == 200 and r.json["version"] == 1
    versions = _versions(app, jid)
    assert len(versions) == 1 and versions[0][0] == 1  # the draft's one version, rewritten

    assert api.post("/v1/journeys/cart/activate").status_code == 200
    run_v1 = _run(app, project, jid, "ann", version=1)

    # The same journey in another spelling, or a rename: no new version.
    same = {
        **CART,
        "trigger": {
            "where": {"all": [{"attr": "plan", "op": "textEq", "value": "pro"}]},
            "event": "cart_updated",
        },
        "steps": [dict(reversed(list(longer[0].items()))), *longer[1:]],
    }
    r = api.put(f"/v1/journeys/{jid}", json={**same, "name": "renamed"})
    assert r.status_code == 200, r.json
    assert r.json["version"] == 1 and r.json["name"] == "renamed"
    assert len(_versions(app, jid)) == 1

    r = api.patch(f"/v1/journeys/{jid}", json={"steps": steps})
    assert r.status_code == 200 and r.json["version"] == 2
    assert r.json["steps"][0]["timeout"] == "2h"
    versions = _versions(app, jid)
    assert [v for v, _ in versions] == [1, 2] and versions[0][1] != versions[1][1]
    with app.app_context(), db.begin() as session:
        assert session.get(JourneyRun, run_v1).version == 1  # the run in flight keeps v1
        stored = session.scalar(
            select(JourneyVersion.definition).where(
                JourneyVersion.journey_id == jid, JourneyVersion.version == 1
            )
        )
        assert stored["steps"][0]["timeout"] == "4h"
        assert session.get(Journey, jid).definition["steps"][0]["timeout"] == "2h"

    # Paused journeys version the same way.
    assert api.post(f"/v1/journeys/{jid}/pause").status_code == 200
    r = api.patch(f"/v1/journeys/{jid}", json={"goal": None})
    assert r.status_code == 200 and r.json["version"] == 3

    # The trigger's event may change, its kind may not once activated.
    r = api.patch(f"/v1/journeys/{jid}", json={"trigger": {"event": "cart_changed"}})
    assert r.status_code == 200 and r.json["version"] == 4
    r = api.patch(
        f"/v1/journeys/{jid}",
        json={"trigger": {"api": True}, "exit": [], "entry": None},
    )
    assert r.status_code == 409 and list(r.json["errors"]) == ["trigger"]
    assert api.get(f"/v1/journeys/{jid}").json["version"] == 4

    # Archived: read-only.
    assert api.post(f"/v1/journeys/{jid}/archive").status_code == 200
    r = api.patch(f"/v1/journeys/{jid}", json={"name": "again"})
    assert r.status_code == 409 and "status" in r.json["errors"]
    assert api.put(f"/v1/journeys/{jid}", json=CART).status_code == 409


def test_a_draft_may_change_its_trigger_kind(api):
    _setup(api)
    _create(api)
    r = api.patch("/v1/journeys/cart", json={"trigger": {"api": True}, "exit": None, "entry": None})
    assert r.status_code == 200, r.json
    assert r.json["trigger"] == {"api": True} and r.json["version"] == 1


# --- states --------------------------------------------------------------------------------


def test_state_transitions(app, api, project):
    _setup(api)
    jid = _create(api)["id"]
    r = api.post(f"/v1/journeys/{jid}/pause")
    assert r.status_code == 409 and r.json["errors"] == {"status": ["is draft"]}

    r = api.post(f"/v1/journeys/{jid}/activate")
    assert r.status_code == 200 and r.json["status"] == "active"
    activated_at = r.json["activatedAt"]
    assert activated_at is not None
    r = api.post(f"/v1/journeys/{jid}/activate")
    assert r.status_code == 409 and r.json["errors"] == {"status": ["is active"]}

    waiting = _run(app, project, jid, "ann")
    done = _run(app, project, jid, "bob", status="converted", step=None, wake_at=None)
    _log(app, project, jid, waiting, _user_pk(app, project, "ann"), "wait", 1, None)

    r = api.post(f"/v1/journeys/{jid}/pause")
    assert r.status_code == 200 and r.json["status"] == "paused"
    assert api.post(f"/v1/journeys/{jid}/pause").json["errors"] == {"status": ["is paused"]}
    with app.app_context(), db.begin() as session:
        run = session.get(JourneyRun, waiting)
        assert (run.status, run.step) == ("waiting", "wait")  # pause keeps runs in place

    r = api.post(f"/v1/journeys/{jid}/activate")
    assert r.status_code == 200 and r.json["activatedAt"] == activated_at

    r = api.post(f"/v1/journeys/{jid}/archive")
    assert r.status_code == 200 and r.json["status"] == "archived"
    with app.app_context(), db.begin() as session:
        run = session.get(JourneyRun, waiting)
        assert (run.status, run.exit_reason, run.wake_at) == ("exited", "journey archived", None)
        assert run.ended_at is not None
        assert run.state["status"] == "exited" and run.state["exitReason"] == "journey archived"
        assert session.get(JourneyRun, done).status == "converted"
        outcomes = session.scalars(
            select(JourneyStepLog.outcome).where(JourneyStepLog.run_id == waiting)
        ).all()
        assert outcomes == ["exited"]
    for action in ("activate", "pause", "archive"):
        r = api.post(f"/v1/journeys/{jid}/{action}")
        assert r.status_code == 409 and r.json["errors"] == {"status": ["is archived"]}


def test_delete_only_drafts_and_archived(app, api, project):
    _setup(api)
    jid = _create(api)["id"]
    api.post(f"/v1/journeys/{jid}/activate")
    _run(app, project, jid, "ann")
    r = api.delete(f"/v1/journeys/{jid}")
    assert r.status_code == 409 and r.json["errors"] == {"status": ["cannot delete while active"]}
    api.post(f"/v1/journeys/{jid}/pause")
    assert api.delete(f"/v1/journeys/{jid}").status_code == 409
    api.post(f"/v1/journeys/{jid}/archive")
    assert api.delete(f"/v1/journeys/{jid}").status_code == 204
    with app.app_context(), db.begin() as session:
        assert session.scalar(select(func.count()).select_from(JourneyRun)) == 0
        assert session.get(Journey, jid) is None
    draft = _create(api)
    assert api.delete(f"/v1/journeys/{draft['id']}").status_code == 204


# --- runs and stats ------------------------------------------------------------------------


def test_runs_list_filters_and_pages(app, api, project):
    _setup(api)
    jid = _create(api)["id"]
    first = _run(app, project, jid, "ann", entry_key="c1")
    second = _run(
        app,
        project,
        jid,
        "ann",
        entry_key="c2",
        status="exited",
        step=None,
        wake_at=None,
        exit_reason="cart_emptied",
        ended_at=utcnow(),
    )
    third = _run(app, project, jid, "bob", version=2)

    data = api.get(f"/v1/journeys/{jid}/runs").json["data"]
    assert [r["id"] for r in data] == [first, second, third]
    assert data[0]["userId"] == "ann" and data[0]["entryKey"] == "c1"
    assert data[0]["status"] == "waiting" and data[0]["step"] == "wait"
    assert data[0]["wakeAt"] is not None and data[0]["endedAt"] is None
    assert set(data[0]) == {
        "id",
        "userId",
        "version",
        "status",
        "step",
        "wakeAt",
        "entryKey",
        "enteredAt",
        "endedAt",
        "exitReason",
    }
    assert data[1]["exitReason"] == "cart_emptied" and data[2]["version"] == 2

    by_user = api.get("/v1/journeys/cart/runs?userId=ann").json["data"]
    assert [r["id"] for r in by_user] == [first, second]
    exited = api.get(f"/v1/journeys/{jid}/runs?status=exited&userId=ann").json["data"]
    assert [r["id"] for r in exited] == [second]
    assert api.get(f"/v1/journeys/{jid}/runs?userId=nobody").json == {
        "data": [],
        "nextCursor": None,
    }
    page = api.get(f"/v1/journeys/{jid}/runs?limit=2").json
    assert [r["id"] for r in page["data"]] == [first, second]
    rest = api.get(f"/v1/journeys/{jid}/runs?limit=2&cursor={page['nextCursor']}").json
    assert [r["id"] for r in rest["data"]] == [third] and rest["nextCursor"] is None
    r = api.get(f"/v1/journeys/{jid}/runs?status=lost")
    assert r.status_code == 400 and "status" in r.json["errors"]


def test_stats_per_step_and_totals(app, api, project):
    _setup(api)
    jid = _create(api)["id"]
    ann, bob, cid = (_user_pk(app, project, u) for u in ("ann", "bob", "cid"))
    # ann: timed out, got the reminder, exited at `done`.
    r1 = _run(app, project, jid, "ann", status="exited", step=None, wake_at=None)
    _log(app, project, jid, r1, ann, "wait", 1, "onTimeout")
    _log(app, project, jid, r1, ann, "remind", 1, "next")
    _log(app, project, jid, r1, ann, "done", 1, "exited")
    # bob: purchased while waiting.
    r2 = _run(app, project, jid, "bob", status="converted", step=None, wake_at=None)
    _log(app, project, jid, r2, bob, "wait", 1, "converted")
    # cid: waiting now.
    r3 = _run(app, project, jid, "cid")
    _log(app, project, jid, r3, cid, "wait", 1, None)
    now = utcnow()
    with app.app_context(), db.begin() as session:
        send_id = session.scalar(
            insert(Send).returning(Send.id),
            {
                "project_id": project.id,
                "kind": "journey",
                "journey_run_id": r1,
                "journey_step": "remind",
                "channels": ["push"],
                "content": {},
                "created_at": now,
            },
        )
        for n, status in enumerate(("clicked", "delivered", "failed", "queued")):
            session.execute(
                insert(Message),
                {
                    "project_id": project.id,
                    "send_id": send_id,
                    "user_id": ann,
                    "channel": "push",
                    "address": f"https://push.example.com/{n}",
                    "status": status,
                    "created_at": now,
                    "updated_at": now,
                },
            )

    stats = api.get(f"/v1/journeys/{jid}/stats").json
    assert stats["journeyId"] == jid and stats["version"] == 1
    assert stats["runs"] == {"entered": 3, "active": 1, "waiting": 1, "exited": 1, "converted": 1}
    wait, remind, done = stats["steps"]
    assert wait == {
        "id": "wait",
        "type": "waitForEvent",
        "entered": 3,
        "waiting": 1,
        "passed": 2,
        "outcomes": {"converted": 1, "onTimeout": 1},
        "exited": 0,
        "converted": 1,
    }
    assert remind["entered"] == 1 and remind["outcomes"] == {"next": 1}
    assert remind["messages"] == {
        "sent": 2,
        "delivered": 2,
        "opened": 1,
        "clicked": 1,
        "failed": 1,
        "total": 4,
    }
    assert done["exited"] == 1 and done["passed"] == 1 and "messages" not in done


def test_stats_of_a_journey_without_runs(api):
    _setup(api)
    stats = api.get(f"/v1/journeys/{_create(api)['id']}/stats").json
    assert stats["runs"]["entered"] == 0
    assert [s["entered"] for s in stats["steps"]] == [0, 0, 0]
    assert stats["steps"][1]["messages"]["sent"] == 0


# --- entering: the runtime's contract (journey_runs.enter / enter_existing_members) ---------


@dataclass
class FakeResult:
    run: Any
    entered: bool
    reason: str | None


@pytest.fixture
def fake_runtime(monkeypatch):
    """Stand-ins for app.services.journey_runs that record their calls."""
    calls: dict[str, list] = {"enter": [], "existing": []}

    def enter(session, *, journey, user, params, event=None, now):
        calls["enter"].append((journey.id, user.external_id, params))
        if params.get("refuse"):
            return FakeResult(None, False, "entered before (entry policy once)")
        run = JourneyRun(
            project_id=journey.project_id,
            journey_id=journey.id,
            version=journey.version,
            user_id=user.id,
            entry_key="",
            status="active",
            step=journey.definition["steps"][0]["id"],
            state={},
            entered_at=now,
            updated_at=now,
        )
        session.add(run)
        session.flush()
        return FakeResult(run, True, "entered")

    def enter_existing_members(session, journey, now):
        calls["existing"].append(journey.id)
        return 0

    if HAS_RUNTIME:
        module = importlib.import_module("app.services.journey_runs")
    else:
        module = types.ModuleType("app.services.journey_runs")
        monkeypatch.setitem(sys.modules, "app.services.journey_runs", module)
    monkeypatch.setattr(module, "enter", enter, raising=False)
    monkeypatch.setattr(module, "enter_existing_members", enter_existing_members, raising=False)
    return calls


API_JOURNEY = {
    "name": "onboard",
    "trigger": {"api": True},
    "entry": {"key": "orderId"},
    "steps": [
        {"id": "hello", "type": "send", "channel": "push", "template": "tip", "next": "end"},
        {"id": "end", "type": "exit"},
    ],
}


def test_enter_calls_the_runtime(app, api, fake_runtime):
    _setup(api)
    jid = _create(api, API_JOURNEY)["id"]
    r = api.post(f"/v1/journeys/{jid}/enter", json={"userId": "new-user"})
    assert r.status_code == 409 and r.json["errors"] == {"status": ["is draft"]}
    assert fake_runtime["enter"] == []

    api.post(f"/v1/journeys/{jid}/activate")
    r = api.post(
        "/v1/journeys/onboard/enter", json={"userId": "new-user", "params": {"orderId": 7}}
    )
    assert r.status_code == 200, r.json
    assert r.json["entered"] is True and "reason" not in r.json
    assert r.json["run"]["userId"] == "new-user" and r.json["run"]["step"] == "hello"
    assert fake_runtime["enter"] == [(jid, "new-user", {"orderId": 7})]
    # The profile was created on first sight.
    with app.app_context(), db.begin() as session:
        assert session.scalar(select(User.id).where(User.external_id == "new-user")) is not None

    r = api.post(f"/v1/journeys/{jid}/enter", json={"userId": "new-user", "params": {"refuse": 1}})
    assert r.status_code == 200
    assert r.json == {"entered": False, "reason": "entered before (entry policy once)"}

    # A journey with another trigger takes API entries too.
    cart = _create(api)["id"]
    api.post(f"/v1/journeys/{cart}/activate")
    r = api.post(f"/v1/journeys/{cart}/enter", json={"userId": "ann"})
    assert r.status_code == 200 and r.json["entered"] is True

    for body, field in (
        ({}, "userId"),
        ({"userId": ""}, "userId"),
        ({"userId": "a", "params": 3}, "params"),
    ):
        r = api.post(f"/v1/journeys/{jid}/enter", json=body)
        assert r.status_code == 422 and field in r.json["errors"], r.json
    assert api.post("/v1/journeys/nope/enter", json={"userId": "a"}).status_code == 404


def test_existing_members_enter_on_first_activation_only(api, fake_runtime):
    _setup(api)
    body = {
        "name": "trial",
        "trigger": {"audienceEntered": "Trial"},
        "entry": {"existingMembers": True},
        "steps": [{"id": "end", "type": "exit"}],
    }
    jid = _create(api, body)["id"]
    without = _create(api, {**body, "name": "later", "entry": None})["id"]
    assert api.post(f"/v1/journeys/{jid}/activate").status_code == 200
    assert api.post(f"/v1/journeys/{without}/activate").status_code == 200
    assert fake_runtime["existing"] == [jid]
    api.post(f"/v1/journeys/{jid}/pause")
    api.post(f"/v1/journeys/{jid}/activate")
    assert fake_runtime["existing"] == [jid]


@needs_runtime
def test_enter_with_the_real_runtime(app, api):
    _setup(api)
    jid = _create(api, API_JOURNEY)["id"]
    api.post(f"/v1/journeys/{jid}/activate")
    r = api.post(f"/v1/journeys/{jid}/enter", json={"userId": "u1", "params": {"orderId": "o1"}})
    assert r.status_code == 200, r.json
    assert r.json["entered"] is True
    run = r.json["run"]
    assert run["userId"] == "u1" and run["version"] == 1 and run["entryKey"] == "o1"
    runs = api.get(f"/v1/journeys/{jid}/runs?userId=u1").json["data"]
    assert [x["id"] for x in runs] == [run["id"]]
    # The same key again: the entry policy (once) refuses it with a reason.
    r = api.post(f"/v1/journeys/{jid}/enter", json={"userId": "u1", "params": {"orderId": "o1"}})
    assert r.status_code == 200 and r.json["entered"] is False and r.json["reason"]
    # Without the entry key: not entered, the reason names the key.
    r = api.post(f"/v1/journeys/{jid}/enter", json={"userId": "u1"})
    assert r.json["entered"] is False and "orderId" in r.json["reason"]
