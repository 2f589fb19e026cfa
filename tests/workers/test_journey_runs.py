"""The journey runtime: entry, advances, effects, the sweep of due runs and webhook calls.

Journeys are stored as rows here (the API is built elsewhere). Most tests drive
`app.services.journey_runs` in a session with explicit times (a run's waits are then checked
at `now + 3 s` without sleeping); the event path and the webhook step run end to end with real
workers.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
from sqlalchemy import func, select

from app.db import db
from app.models import Audience, Event, Project, Template, User
from app.models.base import utcnow
from app.models.journey import Journey, JourneyRun, JourneyStepLog, JourneyVersion
from app.models.message import Message, Send
from app.services import journey_runs
from journeys.journey import fingerprint, parse_journey, resolve_references, to_json
from tests.conftest import wait_for

REMINDER = {
    "name": "reminder",
    "channels": {"inapp": {"en": {"title": "Your cart", "body": "{{ params.cartId }} waits"}}},
}
CART = {
    "name": "abandoned cart",
    "trigger": {"event": "add_to_cart"},
    "entry": {"policy": "always", "key": "cartId"},
    "goal": {"event": "purchase"},
    "steps": [
        {
            "id": "wait",
            "type": "waitForEvent",
            "event": "purchase",
            "matchOn": "cartId",
            "timeout": "2s",
            "next": "bought",
            "onTimeout": "remind",
        },
        {
            "id": "remind",
            "type": "send",
            "channel": "inapp",
            "template": "reminder",
            "next": "done",
        },
        {"id": "bought", "type": "exit"},
        {"id": "done", "type": "exit"},
    ],
}


@pytest.fixture(autouse=True, scope="module")
def _close_hubs():
    yield
    from app.realtime import close_hubs

    close_hubs()


@pytest.fixture(autouse=True)
def _fresh_caches():
    journey_runs.forget()
    yield
    journey_runs.forget()


def _store_journey(app, project_id: int, body: dict, status: str = "active") -> int:
    """Parse, resolve template and audience names, insert the journey and its version 1."""
    spec = parse_journey(body)
    with app.app_context(), db.begin() as session:
        resolved = {}
        for path, kind, ref in spec.references:
            model = Template if kind == "template" else Audience
            if isinstance(ref, int):
                resolved[path] = ref
                continue
            resolved[path] = session.scalar(
                select(model.id).where(model.project_id == project_id, model.name == ref)
            )
        spec = resolve_references(spec, resolved)
        trigger = spec.trigger
        key = None
        if trigger.kind == "event":
            key = trigger.event
        elif trigger.kind == "audienceEntered":
            key = str(trigger.audience)
        journey = Journey(
            project_id=project_id,
            name=spec.name,
            status=status,
            version=1,
            definition=to_json(spec),
            trigger_kind=trigger.kind,
            trigger_key=key,
            activated_at=utcnow(),
        )
        session.add(journey)
        session.flush()
        session.add(
            JourneyVersion(
                journey_id=journey.id,
                version=1,
                definition=to_json(spec),
                fingerprint=fingerprint(spec),
            )
        )
        journey_id = journey.id
    journey_runs.forget()
    return journey_id


def _setup(api, *user_ids):
    assert api.post("/v1/templates", json=REMINDER).status_code == 201
    r = api.post("/v1/users", json=[{"userId": u} for u in user_ids])
    assert r.status_code == 200, r.json


def _track(api, user_id, name, **properties):
    r = api.post("/v1/events", json={"name": name, "userId": user_id, "properties": properties})
    assert r.status_code == 202, r.json


def _user(session, user_id) -> User:
    return session.scalar(select(User).where(User.external_id == user_id))


def _process(app, user_id, name, now=None):
    """Call the hook as the event processor does, on the user's latest event of that name."""
    with app.app_context(), db.begin() as session:
        user = _user(session, user_id)
        event = session.scalar(
            select(Event)
            .where(Event.user_id == user.id, Event.name == name)
            .order_by(Event.id.desc())
        )
        project = session.get(Project, event.project_id)
        journey_runs.on_event(session, project=project, user=user, event=event, now=now or utcnow())


def _enter(app, journey_id, user_id, params=None, now=None):
    with app.app_context(), db.begin() as session:
        journey = session.get(Journey, journey_id)
        result = journey_runs.enter(
            session,
            journey=journey,
            user=_user(session, user_id),
            params=params,
            event=None,
            now=now or utcnow(),
        )
        return result.entered, result.reason, result.run.id if result.run else None


def _runs(app, journey_id=None):
    with app.app_context():
        stmt = select(JourneyRun).order_by(JourneyRun.id)
        if journey_id is not None:
            stmt = stmt.where(JourneyRun.journey_id == journey_id)
        return list(db.session.scalars(stmt))


def _sends(app):
    with app.app_context():
        rows = db.session.execute(
            select(Send.journey_run_id, Send.journey_step, Send.dedup_key, Message.status)
            .join(Message, Message.send_id == Send.id)
            .order_by(Message.id)
        )
        return [tuple(r) for r in rows]


def _log(app, run_id):
    with app.app_context():
        rows = db.session.execute(
            select(JourneyStepLog.step, JourneyStepLog.visit, JourneyStepLog.outcome)
            .where(JourneyStepLog.run_id == run_id)
            .order_by(JourneyStepLog.id)
        )
        return [tuple(r) for r in rows]


def _due(app, seconds=3.0, limit=1000):
    with app.app_context(), db.sessionmaker() as session:
        return journey_runs.advance_due(session, utcnow() + timedelta(seconds=seconds), limit=limit)


def test_two_carts_wait_side_by_side_one_converts_one_is_reminded(app, api, project):
    _setup(api, "ann")
    journey_id = _store_journey(app, project.id, CART)
    _track(api, "ann", "add_to_cart", cartId="A")
    _process(app, "ann", "add_to_cart")
    _track(api, "ann", "add_to_cart", cartId="B")
    _process(app, "ann", "add_to_cart")
    a, b = _runs(app, journey_id)
    assert (a.entry_key, a.status, a.step) == ("A", "waiting", "wait")
    assert (b.entry_key, b.status, b.step) == ("B", "waiting", "wait")
    assert a.wake_at is not None
    # A purchase of cart A converts A only (the goal is paired on the entry key).
    _track(api, "ann", "purchase", cartId="A")
    _process(app, "ann", "purchase")
    assert _due(app, seconds=0) == 0  # nothing due yet
    assert _due(app) == 1
    a, b = _runs(app, journey_id)
    assert (a.status, a.exit_reason) == ("converted", 'goal "purchase"')
    assert (b.status, b.exit_reason) == ("exited", 'exit step "done"')
    assert a.wake_at is None and b.wake_at is None and b.ended_at is not None
    assert _sends(app) == [(b.id, "remind", f"journey:{b.id}:remind:1", "queued")]
    assert _log(app, a.id) == [("wait", 1, "converted")]
    assert _log(app, b.id) == [
        ("wait", 1, "onTimeout"),
        ("remind", 1, "next"),
        ("done", 1, "exited"),
    ]
    # The same cart again: a new run (policy always, the first has ended).
    _track(api, "ann", "add_to_cart", cartId="B")
    _process(app, "ann", "add_to_cart")
    assert [r.status for r in _runs(app, journey_id)] == ["converted", "exited", "waiting"]


def test_wait_for_event_resumes_on_next_without_the_goal(app, api, project):
    body = {**CART, "goal": None, "name": "no goal"}
    _setup(api, "bo")
    journey_id = _store_journey(app, project.id, body)
    _track(api, "bo", "add_to_cart", cartId="A")
    _process(app, "bo", "add_to_cart")
    _track(api, "bo", "purchase", cartId="other")
    _process(app, "bo", "purchase")
    assert _runs(app, journey_id)[0].status == "waiting"  # another cart's purchase
    _track(api, "bo", "purchase", cartId="A")
    _process(app, "bo", "purchase")
    [run] = _runs(app, journey_id)
    assert (run.status, run.exit_reason) == ("exited", 'exit step "bought"')
    assert _log(app, run.id) == [("wait", 1, "next"), ("bought", 1, "exited")]
    assert _sends(app) == []


def test_an_exit_event_with_match_on_ends_only_its_run(app, api, project):
    body = {**CART, "name": "cleared", "exit": [{"event": "cart_cleared", "matchOn": "cartId"}]}
    _setup(api, "cy")
    journey_id = _store_journey(app, project.id, body)
    for cart in ("A", "B"):
        _track(api, "cy", "add_to_cart", cartId=cart)
        _process(app, "cy", "add_to_cart")
    _track(api, "cy", "cart_cleared", cartId="B")
    _process(app, "cy", "cart_cleared")
    a, b = _runs(app, journey_id)
    assert a.status == "waiting"
    assert (b.status, b.exit_reason) == ("exited", 'exit event "cart_cleared"')
    assert _log(app, b.id) == [("wait", 1, "exited")]


API_JOURNEY = {
    "name": "api",
    "trigger": {"api": True},
    "exit": [{"event": "stop"}],
    "steps": [
        {
            "id": "hold",
            "type": "waitForEvent",
            "event": "never",
            "timeout": "1d",
            "next": "end",
            "onTimeout": "end",
        },
        {"id": "end", "type": "exit"},
    ],
}


def _end_runs(app, user_id):
    _track_direct(app, user_id, "stop")


def _track_direct(app, user_id, name):
    """Store an event row and run the journey hook on it (received a moment after now)."""
    with app.app_context(), db.begin() as session:
        user = _user(session, user_id)
        event = Event(
            project_id=user.project_id,
            user_id=user.id,
            name=name,
            properties={},
            received_at=utcnow() + timedelta(milliseconds=5),
        )
        session.add(event)
        session.flush()
        project = session.get(Project, user.project_id)
        journey_runs.on_event(
            session, project=project, user=user, event=event, now=event.received_at
        )


@pytest.mark.parametrize(
    ("entry", "second", "later"),
    [
        ({"policy": "once"}, "entered before (entry policy once)", False),
        ({"policy": "always"}, None, True),
        (
            {"policy": "oncePer", "period": "1h"},
            "entered within the last 1h (entry policy oncePer)",
            True,
        ),
    ],
)
def test_entry_policies(app, api, project, entry, second, later):
    _setup(api, "dee")
    journey_id = _store_journey(app, project.id, {**API_JOURNEY, "entry": entry})
    assert _enter(app, journey_id, "dee")[:2] == (True, None)
    assert _enter(app, journey_id, "dee")[:2] == (False, "already in this journey")
    _end_runs(app, "dee")
    assert [r.status for r in _runs(app, journey_id)] == ["exited"]
    entered, reason, _ = _enter(app, journey_id, "dee")
    assert (entered, reason) == (second is None, second)
    if second is not None:
        in_two_hours = utcnow() + timedelta(hours=2)
        assert _enter(app, journey_id, "dee", now=in_two_hours)[0] is later


def test_a_journey_that_is_not_active_is_not_entered(app, api, project):
    _setup(api, "eve")
    journey_id = _store_journey(app, project.id, API_JOURNEY, status="draft")
    assert _enter(app, journey_id, "eve") == (False, "journey is draft", None)


def test_concurrent_entries_make_one_run(app, api, project, monkeypatch):
    """Two entries that both passed the policy check: the unique index refuses the second
    in its savepoint, and the first run stays."""
    _setup(api, "fay")
    journey_id = _store_journey(app, project.id, API_JOURNEY)
    monkeypatch.setattr(journey_runs, "_previous", lambda *args: journey_runs.PreviousRuns())
    with app.app_context(), db.begin() as session:
        journey = session.get(Journey, journey_id)
        user = _user(session, "fay")
        results = [
            journey_runs.enter(
                session, journey=journey, user=user, params=None, event=None, now=utcnow()
            )
            for _ in range(2)
        ]
    assert [(r.entered, r.reason) for r in results] == [
        (True, None),
        (False, "already in this journey"),
    ]
    [run] = _runs(app, journey_id)
    assert run.id == results[0].run.id and run.status == "waiting"


SEND_AFTER_WAIT = {
    "name": "tip",
    "trigger": {"api": True},
    "entry": {"policy": "always"},
    "steps": [
        {"id": "wait", "type": "wait", "duration": "1s", "next": "tip"},
        {"id": "tip", "type": "send", "channel": "inapp", "template": "reminder", "next": "done"},
        {"id": "done", "type": "exit"},
    ],
}


def test_a_replayed_advance_never_sends_twice(app, api, project):
    _setup(api, "gus")
    journey_id = _store_journey(app, project.id, SEND_AFTER_WAIT)
    _, _, run_id = _enter(app, journey_id, "gus", params={"cartId": "Z"})
    later = utcnow() + timedelta(seconds=5)
    with app.app_context(), db.sessionmaker() as session:
        run = session.get(JourneyRun, run_id)
        before = dict(run.state), run.status, run.step, run.wake_at
        # Rolled back: nothing happened.
        journey_runs.advance_run(session, run, now=later)
        session.rollback()
        run = session.get(JourneyRun, run_id)
        assert run.status == "waiting"
        journey_runs.advance_run(session, run, now=later)
        session.commit()
        assert run.status == "exited"
        # Replayed from the same state (a redelivered job after a lost commit acknowledgement).
        run.state, run.status, run.step, run.wake_at = before
        run.ended_at = None
        session.commit()
        effects = journey_runs.advance_run(session, run, now=later)
        session.commit()
        assert [type(e).__name__ for e in effects] == ["Send", "Exit"]
        assert journey_runs.advance_run(session, run, now=later) == []
        session.commit()
    assert _sends(app) == [(run_id, "tip", f"journey:{run_id}:tip:1", "queued")]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Send)) == 1
        content = db.session.scalar(select(Send.content))
        assert content["cartId"] == "Z" and content["entry"] == {"cartId": "Z"}
    assert _log(app, run_id) == [("wait", 1, "next"), ("tip", 1, "next"), ("done", 1, "exited")]


def test_pause_keeps_runs_and_resume_continues_them(app, api, project):
    _setup(api, "hal")
    journey_id = _store_journey(app, project.id, SEND_AFTER_WAIT)
    _enter(app, journey_id, "hal")
    with app.app_context(), db.begin() as session:
        session.get(Journey, journey_id).status = "paused"
    assert _due(app, seconds=5) == 0
    [run] = _runs(app, journey_id)
    assert (run.status, run.step) == ("waiting", "wait")
    assert _enter(app, journey_id, "hal")[1] == "journey is paused"
    with app.app_context(), db.begin() as session:
        session.get(Journey, journey_id).status = "active"
    assert _due(app, seconds=5) == 1
    assert _due(app, seconds=5) == 0
    [run] = _runs(app, journey_id)
    assert run.status == "exited"
    assert len(_sends(app)) == 1


def test_the_sweep_advances_due_runs_in_batches(app, api, project):
    users = [f"u{i}" for i in range(25)]
    _setup(api, *users)
    journey_id = _store_journey(app, project.id, SEND_AFTER_WAIT)
    for user in users:
        _enter(app, journey_id, user)
    assert [_due(app, limit=10) for _ in range(4)] == [10, 10, 5, 0]
    assert {r.status for r in _runs(app, journey_id)} == {"exited"}
    assert len(_sends(app)) == 25
    # The sweeper's task takes batch after batch in one sweep.
    for user in users[:7]:
        _enter(app, journey_id, user)
    from workers.sweeper import sweep

    with app.app_context(), db.sessionmaker() as session:
        settings = {**app.config, "JOURNEY_WAKE_BATCH": 3}
        stats = sweep(session, utcnow() + timedelta(seconds=5), settings)
    assert stats.journey_wakes == 7
    assert len(_sends(app)) == 32


def test_audience_and_attribute_steps_then_a_branch_on_them(app, api, project):
    _setup(api, "ivy")
    r = api.post("/v1/audiences", json={"name": "vip"})
    assert r.status_code == 201, r.json
    body = {
        "name": "moves",
        "trigger": {"api": True},
        "steps": [
            {"id": "join", "type": "audience", "add": "vip", "next": "mark"},
            {"id": "mark", "type": "setAttributes", "attributes": {"tier": "gold"}, "next": "b"},
            {
                "id": "b",
                "type": "branch",
                "branches": [{"if": {"attr": "tier", "op": "eq", "value": "gold"}, "next": "yes"}],
                "default": "no",
            },
            {"id": "yes", "type": "exit"},
            {"id": "no", "type": "exit"},
        ],
    }
    journey_id = _store_journey(app, project.id, body)
    _, _, run_id = _enter(app, journey_id, "ivy")
    [run] = _runs(app, journey_id)
    assert run.exit_reason == 'exit step "yes"'
    assert _log(app, run_id) == [
        ("join", 1, "next"),
        ("mark", 1, "next"),
        ("b", 1, "branches[0]"),
        ("yes", 1, "exited"),
    ]
    profile = api.get("/v1/users/ivy").json
    assert profile["attributes"]["tier"] == "gold"
    assert "vip" in json.dumps(profile.get("audiences"))
    assert _audience_moves(api, "ivy") == [("vip", "joined", "journey")]


def _audience_moves(api, user_id):
    """The user's audience moves in the timeline (the membership history), oldest first."""
    r = api.get(f"/v1/users/{user_id}/timeline?kinds=audience")
    assert r.status_code == 200, r.json
    return [(i["audience"], i["change"], i["cause"]) for i in reversed(r.json["data"])]


def test_audience_steps_run_by_the_event_processor_are_logged_with_cause_journey(
    app, api, project, workers
):
    """An event-triggered journey's audience steps run inside the event processor (its
    membership batch, whose own cause is `rule`): the moves are still the journey's."""
    _setup(api, "joe")
    for name in ("vip", "trial"):
        assert api.post("/v1/audiences", json={"name": name}).status_code == 201
    r = api.post("/v1/audiences/trial/members", json={"userIds": ["joe"]})
    assert r.status_code < 300, r.json
    journey_id = _store_journey(
        app,
        project.id,
        {
            "name": "upgrade",
            "trigger": {"event": "upgraded"},
            "steps": [
                {"id": "join", "type": "audience", "add": "vip", "next": "leave"},
                {"id": "leave", "type": "audience", "remove": "trial", "next": "end"},
                {"id": "end", "type": "exit"},
            ],
        },
    )
    _track(api, "joe", "upgraded")
    wait_for(lambda: [r.status for r in _runs(app, journey_id)] == ["exited"], timeout=60)
    assert _audience_moves(api, "joe") == [
        ("trial", "joined", "api"),
        ("vip", "joined", "journey"),
        ("trial", "left", "journey"),
    ]


# --- end to end -----------------------------------------------------------------------------


def _hook_events(monkeypatch):
    """Until the event processor calls the journey hook itself, call it after each event."""
    import workers.events as events

    if "journey_runs" in inspect.getsource(events):
        return
    original = events._process_event

    def hooked(job, project, user, event, now):
        original(job, project, user, event, now)
        if user is not None:
            journey_runs.on_event(
                job.session, project=project, user=user, event=event, now=now, members=job.members
            )

    monkeypatch.setattr(events, "_process_event", hooked)


def test_abandoned_cart_end_to_end(app, api, project, workers, sweeper, monkeypatch):
    _hook_events(monkeypatch)
    _setup(api, "jo")
    journey_id = _store_journey(app, project.id, CART)
    _track(api, "jo", "add_to_cart", cartId="A")
    _track(api, "jo", "add_to_cart", cartId="B")
    wait_for(lambda: len(_runs(app, journey_id)) == 2, timeout=60)
    _track(api, "jo", "purchase", cartId="A")
    wait_for(lambda: _runs(app, journey_id)[0].status == "converted", timeout=60)

    def reminded():
        sweeper()
        return [s for s in _sends(app) if s[3] in ("sent", "delivered")]

    [sent] = wait_for(reminded, timeout=60)
    b = _runs(app, journey_id)[1]
    assert sent[:3] == (b.id, "remind", f"journey:{b.id}:remind:1")


class _Receiver(BaseHTTPRequestHandler):
    calls: ClassVar[list] = []
    answer: ClassVar[dict] = {"tier": "gold"}

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append((dict(self.headers), body))
        payload = json.dumps(type(self).answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.calls = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/score"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_a_webhook_answer_is_saved_and_read_by_a_branch(app, api, project, workers, receiver):
    _setup(api, "kim")
    body = {
        "name": "scored",
        "trigger": {"api": True},
        "steps": [
            {
                "id": "score",
                "type": "webhook",
                "url": receiver,
                "body": {"hello": "world"},
                "saveAs": "score",
                "next": "b",
            },
            {
                "id": "b",
                "type": "branch",
                "branches": [
                    {"if": {"attr": "score.body.tier", "op": "eq", "value": "gold"}, "next": "tip"}
                ],
                "default": "done",
            },
            {
                "id": "tip",
                "type": "send",
                "channel": "inapp",
                "template": "reminder",
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ],
    }
    journey_id = _store_journey(app, project.id, body)
    _, _, run_id = _enter(app, journey_id, "kim")
    run = wait_for(lambda: [r for r in _runs(app, journey_id) if r.status == "exited"], timeout=60)[
        0
    ]
    assert run.state["context"]["saved"]["score"]["body"] == {"tier": "gold"}
    assert _sends(app)[0][:2] == (run_id, "tip")
    [(headers, raw)] = _Receiver.calls
    assert json.loads(raw) == {"hello": "world"}
    stamp = headers["X-Cairn-Timestamp"]
    expected = hmac.new(
        project.identity_secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256
    ).hexdigest()
    assert headers["X-Cairn-Signature"] == f"sha256={expected}"
    assert _log(app, run_id)[:2] == [("score", 1, "next"), ("b", 1, "branches[0]")]
    # A redelivered job finds the call done and calls nothing.
    from workers.journey_webhooks import call_webhook

    with app.app_context(), db.sessionmaker() as session:
        from app.models.journey import JourneyWebhookCall

        call_id = session.scalar(select(JourneyWebhookCall.id))
        call_webhook(session, call_id, dict(app.config))
    assert len(_Receiver.calls) == 1


HOLD_STEPS = API_JOURNEY["steps"]


def test_audience_triggers_and_existing_members(app, api, project):
    _setup(api, "m1", "m2", "m3")
    assert api.post("/v1/audiences", json={"name": "vip"}).status_code == 201
    r = api.post("/v1/audiences/vip/members", json={"userIds": ["m1", "m2"]})
    assert r.status_code == 200, r.json
    body = {
        "name": "vips",
        "trigger": {"audienceEntered": "vip"},
        "entry": {"existingMembers": True},
        "steps": HOLD_STEPS,
    }
    journey_id = _store_journey(app, project.id, body)
    with app.app_context(), db.begin() as session:
        journey = session.get(Journey, journey_id)
        assert journey_runs.enter_existing_members(session, journey, utcnow()) == 2
        # Again: both are in it already.
        assert journey_runs.enter_existing_members(session, journey, utcnow()) == 0
    with app.app_context(), db.begin() as session:
        user = _user(session, "m3")
        project_row = session.get(Project, project.id)
        audience_id = int(session.get(Journey, journey_id).trigger_key)
        journey_runs.on_audience_entered(
            session, project=project_row, user=user, audience_id=audience_id, now=utcnow()
        )
        journey_runs.on_audience_entered(
            session, project=project_row, user=user, audience_id=audience_id + 1, now=utcnow()
        )
    with app.app_context():
        entered = db.session.scalars(
            select(User.external_id).join(JourneyRun, JourneyRun.user_id == User.id)
        )
        assert sorted(entered) == ["m1", "m2", "m3"]


def test_existing_members_of_a_trigger_segment(app, api, project):
    r = api.post(
        "/v1/users",
        json=[
            {"userId": "p1", "attributes": {"plan": "pro"}},
            {"userId": "p2", "attributes": {"plan": "free"}},
            {"userId": "p3", "attributes": {"plan": "pro"}},
        ],
    )
    assert r.status_code == 200
    body = {
        "name": "pros",
        "trigger": {"segmentEntered": "plan:pro"},
        "entry": {"existingMembers": True},
        "steps": HOLD_STEPS,
    }
    journey_id = _store_journey(app, project.id, body)
    with app.app_context(), db.begin() as session:
        journey = session.get(Journey, journey_id)
        assert journey_runs.enter_existing_members(session, journey, utcnow()) == 2
    assert len(_runs(app, journey_id)) == 2


def test_a_branch_on_the_last_send_status(app, api, project):
    _setup(api, "op", "np")
    body = {
        "name": "opened?",
        "trigger": {"api": True},
        "steps": [
            {"id": "s", "type": "send", "channel": "inapp", "template": "reminder", "next": "w"},
            {"id": "w", "type": "wait", "duration": "1s", "next": "b"},
            {
                "id": "b",
                "type": "branch",
                "branches": [{"if": {"lastSend": "opened"}, "next": "yes"}],
                "default": "no",
            },
            {"id": "yes", "type": "exit"},
            {"id": "no", "type": "exit"},
        ],
    }
    journey_id = _store_journey(app, project.id, body)
    _, _, opened_run = _enter(app, journey_id, "op")
    _enter(app, journey_id, "np")
    with app.app_context(), db.begin() as session:
        message = session.scalar(
            select(Message)
            .join(Send, Send.id == Message.send_id)
            .where(Send.journey_run_id == opened_run)
        )
        message.status = "clicked"  # the ladder: a click counts as an open
    assert _due(app) == 2
    reasons = {r.id: r.exit_reason for r in _runs(app, journey_id)}
    assert reasons[opened_run] == 'exit step "yes"'
    assert sorted(reasons.values()) == ['exit step "no"', 'exit step "yes"']


def test_exit_events_still_end_runs_of_a_paused_journey(app, api, project):
    _setup(api, "pat")
    journey_id = _store_journey(app, project.id, {**CART, "name": "paused cart"})
    _track(api, "pat", "add_to_cart", cartId="A")
    _process(app, "pat", "add_to_cart")
    with app.app_context(), db.begin() as session:
        session.get(Journey, journey_id).status = "paused"
    journey_runs.forget()
    _track(api, "pat", "purchase", cartId="A")
    _process(app, "pat", "purchase")
    [run] = _runs(app, journey_id)
    assert (run.status, run.exit_reason) == ("converted", 'goal "purchase"')
    assert _sends(app) == []


def test_a_refused_webhook_url_is_recorded_and_the_run_goes_on(app, api, project, receiver):
    _setup(api, "ron")
    body = {
        "name": "refused",
        "trigger": {"api": True},
        "steps": [
            {"id": "hook", "type": "webhook", "url": receiver, "saveAs": "r", "next": "b"},
            {
                "id": "b",
                "type": "branch",
                "branches": [{"if": {"attr": "r.ok", "op": "eq", "value": True}, "next": "ok"}],
                "default": "refused",
            },
            {"id": "ok", "type": "exit"},
            {"id": "refused", "type": "exit"},
        ],
    }
    journey_id = _store_journey(app, project.id, body)
    _, _, run_id = _enter(app, journey_id, "ron")
    from app.models.journey import JourneyWebhookCall
    from workers.journey_webhooks import call_webhook

    with app.app_context(), db.sessionmaker() as session:
        call = session.scalar(select(JourneyWebhookCall))
        assert (call.status, call.body["runId"], call.body["userId"]) == ("pending", run_id, "ron")
        call_webhook(session, call.id, {"ALLOW_PRIVATE_ENDPOINTS": False})
        session.commit()
        call = session.scalar(select(JourneyWebhookCall).execution_options(populate_existing=True))
        assert call.status == "failed" and "https" in call.result["error"]
    assert _Receiver.calls == []
    [run] = _runs(app, journey_id)
    assert run.exit_reason == 'exit step "refused"'


WELCOME_VIP = {
    "name": "welcome vip",
    "trigger": {"audienceEntered": "vip"},
    "steps": [
        {"id": "hello", "type": "send", "channel": "inapp", "template": "reminder", "next": "end"},
        {"id": "end", "type": "exit"},
    ],
}


def test_entering_an_audience_starts_the_journey_by_api_and_by_rule(app, api, project, workers):
    """The event processor enters audienceEntered journeys for members added through the API
    (an internal audience.entered event) and by a rule's addToAudience (inline)."""
    _setup(api, "ann", "bob")
    assert api.post("/v1/audiences", json={"name": "vip"}).status_code == 201
    rule = {"name": "big", "when": {"event": "big_order"}, "then": [{"addToAudience": "vip"}]}
    assert api.post("/v1/rules", json=rule).status_code == 201
    journey_id = _store_journey(app, project.id, WELCOME_VIP)
    r = api.post("/v1/audiences/vip/members", json={"userIds": ["ann"]})
    assert r.status_code == 200, r.json
    _track(api, "bob", "big_order")

    def entered():
        with app.app_context():
            return sorted(
                db.session.scalars(
                    select(User.external_id)
                    .join(JourneyRun, JourneyRun.user_id == User.id)
                    .where(JourneyRun.journey_id == journey_id)
                )
            )

    wait_for(lambda: entered() == ["ann", "bob"], timeout=60)
    wait_for(lambda: len(_sends(app)) == 2, timeout=60)
    assert {run.status for run in _runs(app, journey_id)} == {"exited"}


def test_a_rule_starts_a_journey_with_its_params(app, api, project, workers):
    _setup(api, "cy")
    journey_id = _store_journey(
        app,
        project.id,
        {
            "name": "onboarding",
            "trigger": {"api": True},
            "steps": [
                {
                    "id": "hi",
                    "type": "send",
                    "channel": "inapp",
                    "template": "reminder",
                    "next": "end",
                },
                {"id": "end", "type": "exit"},
            ],
        },
    )
    rule = {
        "name": "signup starts onboarding",
        "when": {"event": "signup"},
        "then": [{"startJourney": "onboarding", "params": {"cartId": "welcome-pack"}}],
    }
    r = api.post("/v1/rules", json=rule)
    assert r.status_code == 201, r.json
    assert r.json["then"][0]["startJourney"] == journey_id
    _track(api, "cy", "signup")
    wait_for(lambda: len(_sends(app)) == 1, timeout=60)
    [run] = _runs(app, journey_id)
    firing = api.get("/v1/rules/signup starts onboarding/firings").json["data"][0]
    assert firing["actions"][0]["result"] == "entered" and firing["actions"][0]["run"] == run.id

    def rendered():
        with app.app_context():
            return db.session.scalar(select(Message.rendered).where(Message.channel == "inapp"))

    assert "welcome-pack waits" in str(wait_for(rendered, timeout=60))
    # A second signup: the journey's entry policy (once, by default) keeps the user out.
    _track(api, "cy", "signup")
    wait_for(lambda: len(api.get("/v1/rules/signup starts onboarding/firings").json["data"]) == 2)
    again = api.get("/v1/rules/signup starts onboarding/firings").json["data"][0]
    assert again["actions"][0]["result"] == "skipped" and again["actions"][0]["reason"]
    # The run's steps are in the user's timeline, newest first.
    r = api.get("/v1/users/cy/timeline?kinds=journey")
    assert r.status_code == 200, r.json
    steps = [(i["journey"], i["step"], i["outcome"], i["runStatus"]) for i in r.json["data"]]
    assert steps == [
        ("onboarding", "end", "exited", "exited"),
        ("onboarding", "hi", "next", "exited"),
    ]


def test_an_anonymous_visitors_run_follows_them_into_their_profile(app, api, project, workers):
    _setup(api, "someone")
    journey_id = _store_journey(app, project.id, CART)
    r = api.post(
        "/v1/events",
        json={"name": "add_to_cart", "anonymousId": "anon-1", "properties": {"cartId": "A"}},
    )
    assert r.status_code == 202, r.json
    wait_for(lambda: len(_runs(app, journey_id)) == 1, timeout=60)
    r = api.post("/v1/identify", json={"userId": "dee", "anonymousId": "anon-1"})
    assert r.status_code < 300, r.json
    with app.app_context():
        dee = db.session.scalar(select(User.id).where(User.external_id == "dee"))
    [run] = _runs(app, journey_id)
    assert run.user_id == dee and run.status in ("active", "waiting")
    _track(api, "dee", "purchase", cartId="A")  # the identified user's purchase converts it
    wait_for(lambda: _runs(app, journey_id)[0].status == "converted", timeout=60)


# --- segment triggers and segment exits on data changes -------------------------------------

ONE_STEP = [{"id": "end", "type": "exit"}]
BUYERS = {
    "name": "buyers",
    "trigger": {"segmentEntered": {"event": "purchase", "count": {"gte": 2}}},
    "steps": ONE_STEP,
}


def _runs_of(app, journey_id) -> list[tuple[str, str, str | None]]:
    with app.app_context():
        rows = db.session.execute(
            select(User.external_id, JourneyRun.status, JourneyRun.exit_reason)
            .join(User, User.id == JourneyRun.user_id)
            .where(JourneyRun.journey_id == journey_id)
            .order_by(JourneyRun.id)
        )
        return [tuple(r) for r in rows]


def _upsert(api, user_id, **attributes):
    r = api.post("/v1/users", json={"userId": user_id, "attributes": attributes})
    assert r.status_code == 200, r.json


def _processed(app):
    """Every event (internal ones included) has been processed."""
    with app.app_context():
        return not db.session.scalar(
            select(func.count()).select_from(Event).where(Event.processed_at.is_(None))
        )


def test_a_segment_journey_starts_when_the_users_data_changes(app, api, project, workers):
    """segmentEntered is judged on every change of the user's data, where it is made: an
    upsert or identify, an event the worker processes, a rule's setAttributes, a journey's
    setAttributes step; a user enters when they match after it and did not before."""
    r = api.post(
        "/v1/users",
        json=[
            {"userId": "by-api", "attributes": {"plan": "free"}},
            {"userId": "by-identify"},
            {"userId": "by-rule"},
            {"userId": "by-journey"},
            {"userId": "by-events"},
            {"userId": "already", "attributes": {"plan": "pro"}},
        ],
    )
    assert r.status_code == 200, r.json
    pros = _store_journey(
        app,
        project.id,
        {
            "name": "pros",
            "trigger": {"segmentEntered": "plan:pro"},
            "entry": {"policy": "always"},
            "steps": ONE_STEP,
        },
    )
    buyers = _store_journey(app, project.id, BUYERS)
    _store_journey(
        app,
        project.id,
        {
            "name": "upgrader",
            "trigger": {"event": "trial_ended"},
            "steps": [
                {
                    "id": "up",
                    "type": "setAttributes",
                    "attributes": {"plan": "pro"},
                    "next": "end",
                },
                {"id": "end", "type": "exit"},
            ],
        },
    )
    rule = {
        "name": "upgrade",
        "when": {"event": "upgrade"},
        "then": [{"setAttributes": {"plan": "pro"}}],
    }
    assert api.post("/v1/rules", json=rule).status_code == 201
    _upsert(api, "by-api", plan="pro")
    r = api.post("/v1/identify", json={"userId": "by-identify", "traits": {"plan": "pro"}})
    assert r.status_code < 300, r.json
    _track(api, "by-rule", "upgrade")
    _track(api, "by-journey", "trial_ended")
    _track(api, "by-events", "purchase")
    # A change that keeps a member a member starts nothing.
    _upsert(api, "already", seats=3)
    expected = {"by-api", "by-identify", "by-rule", "by-journey"}
    wait_for(lambda: {u for u, *_ in _runs_of(app, pros)} == expected, timeout=60)
    assert _runs_of(app, buyers) == []  # one purchase: not yet
    _track(api, "by-events", "purchase")
    wait_for(lambda: [u for u, *_ in _runs_of(app, buyers)] == ["by-events"], timeout=60)
    # Leaving and coming back is entering again (policy always); staying in is not.
    for attributes in ({"plan": "free"}, {"plan": "pro"}, {"plan": "pro", "seats": 2}):
        _upsert(api, "by-api", **attributes)
    _track(api, "by-events", "purchase")
    wait_for(lambda: _processed(app), timeout=60)
    users = [u for u, *_ in _runs_of(app, pros)]
    assert sorted(users) == sorted([*expected, "by-api"])
    assert [u for u, *_ in _runs_of(app, buyers)] == ["by-events"]


def test_leaving_a_segment_ends_a_run_and_a_segment_wait_resumes(app, api, project, workers):
    """Runs of journeys with a leftSegment exit or at a waitForSegment step are advanced when
    their user's data changes, not only when they are due (here: a day later)."""
    r = api.post(
        "/v1/users",
        json=[
            {"userId": "leaver", "attributes": {"plan": "pro"}},
            {"userId": "stayer", "attributes": {"plan": "pro"}},
            {"userId": "waiter"},
        ],
    )
    assert r.status_code == 200, r.json
    held = _store_journey(
        app,
        project.id,
        {
            **API_JOURNEY,
            "name": "pro tips",
            "exit": [{"leftSegment": "plan:pro"}],
        },
    )
    waits = _store_journey(
        app,
        project.id,
        {
            "name": "until verified",
            "trigger": {"api": True},
            "steps": [
                {
                    "id": "verified",
                    "type": "waitForSegment",
                    "filter": {"attr": "verified", "op": "eq", "value": True},
                    "timeout": "1d",
                    "next": "welcome",
                    "onTimeout": "end",
                },
                {"id": "welcome", "type": "exit"},
                {"id": "end", "type": "exit"},
            ],
        },
    )
    for user_id in ("leaver", "stayer"):
        assert _enter(app, held, user_id)[0]
    assert _enter(app, waits, "waiter")[0]
    _upsert(api, "leaver", plan="free")
    _upsert(api, "stayer", seats=9)
    _upsert(api, "waiter", verified=True)
    wait_for(lambda: _runs_of(app, waits)[0][1] == "exited", timeout=60)
    assert _runs_of(app, waits) == [("waiter", "exited", 'exit step "welcome"')]
    wait_for(lambda: _runs_of(app, held)[0][1] == "exited", timeout=60)
    wait_for(lambda: _processed(app), timeout=60)
    assert _runs_of(app, held) == [
        ("leaver", "exited", "left the segment of exit[0]"),
        ("stayer", "waiting", None),
    ]


def test_segments_follow_memberships_changed_by_the_api_a_ttl_and_a_merge(
    app, api, project, workers, sweeper
):
    """Audience moves made outside the event processor (the members API, a TTL's expiry) and
    merged profiles are changes of the user's data like any other: segment journeys start on
    them and runs watching a segment react."""
    _setup(api, "added", "timed", "known")
    r = api.post("/v1/audiences", json={"name": "vip"})
    assert r.status_code == 201, r.json
    members = f"/v1/audiences/{r.json['id']}/members"
    in_vip = {"audience": "vip", "op": "in"}
    vips = _store_journey(
        app,
        project.id,
        {
            "name": "vips",
            "trigger": {"segmentEntered": in_vip},
            "entry": {"policy": "always"},
            "steps": ONE_STEP,
        },
    )
    held = _store_journey(
        app, project.id, {**API_JOURNEY, "name": "vip tips", "exit": [{"leftSegment": in_vip}]}
    )
    buyers = _store_journey(app, project.id, BUYERS)
    r = api.post(members, json={"userIds": ["added"]})
    assert r.status_code < 300, r.json
    r = api.post(members, json={"userIds": ["timed"], "ttlSeconds": 3})
    assert r.status_code < 300, r.json
    wait_for(lambda: {u for u, *_ in _runs_of(app, vips)} == {"added", "timed"}, timeout=60)
    assert _enter(app, held, "timed")[0] and _enter(app, held, "added")[0]
    # Removed by the API: the run watching the segment ends; added again: entered again.
    r = api.delete(members, json={"userIds": ["added"]})
    assert r.status_code < 300, r.json
    wait_for(lambda: ("added", "exited", "left the segment of exit[0]") in _runs_of(app, held))
    r = api.post(members, json={"userIds": ["added"]})
    assert r.status_code < 300, r.json
    wait_for(lambda: [u for u, *_ in _runs_of(app, vips)].count("added") == 2, timeout=60)
    # The TTL passes and the sweeper closes the membership: the same.
    wait_for(
        lambda: (
            sweeper() is not None
            and ("timed", "exited", "left the segment of exit[0]") in _runs_of(app, held)
        ),
        timeout=60,
    )
    # One purchase as an anonymous visitor, one as the known user: the merged profile has two.
    r = api.post("/v1/events", json={"name": "purchase", "anonymousId": "anon-9"})
    assert r.status_code == 202, r.json
    _track(api, "known", "purchase")
    wait_for(lambda: _processed(app), timeout=60)
    assert _runs_of(app, buyers) == []
    r = api.post("/v1/identify", json={"userId": "known", "anonymousId": "anon-9"})
    assert r.status_code < 300, r.json
    wait_for(lambda: [u for u, *_ in _runs_of(app, buyers)] == ["known"], timeout=60)
    wait_for(lambda: _processed(app), timeout=60)
    assert sorted(u for u, *_ in _runs_of(app, vips)) == ["added", "added", "timed"]


# --- a journey's changes react as a rule's do -----------------------------------------------


def test_a_journeys_attribute_and_audience_steps_fire_rules_and_journeys(
    app, api, project, workers
):
    """attributeChanged and audienceEntered rules fire for a journey's setAttributes and
    audience steps (internal events, in the user's event order), and entering the audience
    starts the journeys it triggers, as it would had a rule made the change."""
    _setup(api, "eve")
    assert api.post("/v1/audiences", json={"name": "vip"}).status_code == 201
    assert api.post("/v1/audiences", json={"name": "gold members"}).status_code == 201
    rules = [
        {
            "name": "tier changed",
            "when": {"attributeChanged": "tier", "to": "gold"},
            "then": [{"addToAudience": "gold members"}],
        },
        {
            "name": "vip joined",
            "when": {"audienceEntered": "vip"},
            "then": [{"setAttributes": {"vipSince": "now"}}],
        },
    ]
    for rule in rules:
        r = api.post("/v1/rules", json=rule)
        assert r.status_code == 201, r.json
    moves = _store_journey(
        app,
        project.id,
        {
            "name": "moves",
            "trigger": {"api": True},
            "steps": [
                {"id": "join", "type": "audience", "add": "vip", "next": "mark"},
                {
                    "id": "mark",
                    "type": "setAttributes",
                    "attributes": {"tier": "gold"},
                    "next": "end",
                },
                {"id": "end", "type": "exit"},
            ],
        },
    )
    welcome = _store_journey(app, project.id, WELCOME_VIP)
    assert _enter(app, moves, "eve")[0]

    def firings(name):
        return api.get(f"/v1/rules/{name}/firings").json["data"]

    [fired] = wait_for(lambda: firings("tier changed"), timeout=60)
    assert fired["status"] == "fired"
    assert fired["cause"]["attributeChanged"] == "tier" and fired["cause"]["to"] == "gold"
    assert fired["actions"][0]["result"] == "joined"
    assert wait_for(lambda: firings("vip joined"), timeout=60)[0]["status"] == "fired"
    wait_for(lambda: [u for u, *_ in _runs_of(app, welcome)] == ["eve"], timeout=60)
    profile = api.get("/v1/users/eve").json
    assert "gold members" in json.dumps(profile.get("audiences"))
    assert profile["attributes"]["vipSince"] == "now"
    # The journey's move is logged as the journey's, and left one audience event (its own,
    # one level deeper), not a second one from the audience service.
    assert _audience_moves(api, "eve") == [
        ("vip", "joined", "journey"),
        ("gold members", "joined", "rule"),
    ]
    with app.app_context():
        entered = db.session.scalars(
            select(Event.properties).where(Event.name == "audience.entered")
        ).all()
    assert [(p["audience"], p["cause"]) for p in entered] == [("vip", "journey")]


def test_a_journey_rule_loop_stops_at_the_chain_bound(app, api, project, workers):
    """Two journeys that set an attribute each, and two rules that start the other journey
    on that change: a loop across events. Each hop is one level deeper, and the changes made
    at RULE_CHAIN_MAX_DEPTH (10) start nothing: the API's entry plus nine hops."""
    _setup(api, "lou")
    for name, value in (("ping", "a"), ("pong", "b")):
        _store_journey(
            app,
            project.id,
            {
                "name": name,
                "trigger": {"api": True},
                "entry": {"policy": "always"},
                "steps": [
                    {
                        "id": "set",
                        "type": "setAttributes",
                        "attributes": {"side": value},
                        "next": "end",
                    },
                    {"id": "end", "type": "exit"},
                ],
            },
        )
    for value, journey in (("a", "pong"), ("b", "ping")):
        rule = {
            "name": f"to {value}",
            "when": {"attributeChanged": "side", "to": value},
            "then": [{"startJourney": journey}],
        }
        assert api.post("/v1/rules", json=rule).status_code == 201
    with app.app_context():
        ping = db.session.scalar(select(Journey.id).where(Journey.name == "ping"))
    assert _enter(app, ping, "lou")[0]
    wait_for(lambda: len(_runs(app)) >= 10 and _processed(app), timeout=90)
    assert len(_runs(app)) == 10
    assert {r.status for r in _runs(app)} == {"exited"}
