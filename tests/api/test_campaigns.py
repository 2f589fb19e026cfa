"""/v1/campaigns: CRUD, validation naming each field, states, edit rules and API sends."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import db
from app.models.message import Message, SendSkip
from tests.conftest import wait_for

TEMPLATE = {
    "name": "welcome",
    "channels": {
        "inapp": {"en": {"title": "Hi {{ user.first_name }}", "body": "Code {{ params.code }}"}},
        "email": {
            "en": {
                "subject": "Code {{ params.code }}",
                "html": "<p>Hello {{ user.first_name or 'friend' }}: {{ params.code }}</p>",
            }
        },
        "sms": {"en": {"body": "Code {{ params.code }}"}},
    },
}
PUSH_ONLY = {"name": "push-only", "channels": {"push": {"en": {"title": "T", "body": "B"}}}}


@pytest.fixture(autouse=True, scope="module")
def _close_hubs():
    """Stop this process's PostgreSQL listeners before the test database goes away."""
    yield
    from app.realtime import close_hubs

    close_hubs()


def _setup(api) -> None:
    assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    assert api.post("/v1/templates", json=PUSH_ONLY).status_code == 201


def _campaign(api, **fields):
    body = {
        "name": "c1",
        "kind": "api",
        "channels": {"inapp": "welcome", "email": "welcome"},
        **fields,
    }
    r = api.post("/v1/campaigns", json=body)
    assert r.status_code == 201, r.json
    return r.json


def _messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


# --- CRUD and validation -------------------------------------------------------------------


def test_create_read_list_patch_delete(api):
    _setup(api)
    api.post("/v1/audiences", json={"name": "vip"})
    created = _campaign(
        api,
        name="spring",
        kind="triggered",
        trigger={"event": "signup", "where": "plan:pro"},
        target={"include": ["plan:pro", {"audience": "vip"}], "exclude": [{"country": "FR"}]},
        window={"startsAt": "2026-01-01T00:00:00Z", "endsAt": "2027-01-01"},
        ttlSeconds=3600,
        rateLimit={"perMinute": 600},
        goal={"event": "purchase", "valueField": "amount", "within": "3d"},
        holdoutPercent=10,
    )
    audience_id = api.get("/v1/audiences/vip").json["id"]
    template_id = api.get("/v1/templates/welcome").json["id"]
    assert created["status"] == "draft" and created["version"] == 1
    assert created["channels"] == {"inapp": template_id, "email": template_id}
    assert created["target"]["include"][1] == {"audience": str(audience_id), "op": "in"}
    assert created["trigger"]["event"] == "signup"
    assert created["trigger"]["where"] == {
        "all": [{"attr": "plan", "op": "textEq", "value": "pro"}]
    }
    assert created["goal"] == {"event": "purchase", "valueField": "amount", "within": 259200}
    assert created["window"]["endsAt"].startswith("2027-01-01T00:00:00")
    assert created["rateLimit"] == {"perMinute": 600} and created["holdoutPercent"] == 10
    assert created["category"] == "marketing"
    for key in ("createdAt", "updatedAt", "activatedAt", "completedAt", "statusReason"):
        assert key in created
    # By id or by name.
    assert api.get(f"/v1/campaigns/{created['id']}").json["name"] == "spring"
    assert api.get("/v1/campaigns/spring").json["id"] == created["id"]
    _campaign(api, name="other")
    page = api.get("/v1/campaigns", query_string={"limit": 1}).json
    assert [c["name"] for c in page["data"]] == ["spring"] and page["nextCursor"]
    rest = api.get("/v1/campaigns", query_string={"cursor": page["nextCursor"]}).json
    assert [c["name"] for c in rest["data"]] == ["other"] and rest["nextCursor"] is None
    assert [c["name"] for c in api.get("/v1/campaigns?kind=api").json["data"]] == ["other"]
    patched = api.patch("/v1/campaigns/spring", json={"name": "summer", "ttlSeconds": 60})
    assert patched.status_code == 200, patched.json
    assert patched.json["version"] == 2 and patched.json["ttlSeconds"] == 60
    assert api.post("/v1/campaigns", json={**_body("summer")}).status_code == 409
    assert api.delete("/v1/campaigns/summer").status_code == 204
    assert api.get("/v1/campaigns/summer").status_code == 404


def _body(name: str, **fields) -> dict:
    return {"name": name, "kind": "api", "channels": {"inapp": "welcome"}} | fields


def test_every_validation_error_names_its_field(api):
    _setup(api)
    api.post("/v1/audiences", json={"name": "vip"})
    cases = [
        ({"channels": {}}, "channels"),
        ({"channels": {"inapp": "nope"}}, "channels.inapp"),
        ({"channels": {"inapp": "push-only"}}, "channels.inapp"),
        ({"channels": {"fax": "welcome"}}, "channels.fax"),
        ({"kind": "weekly"}, "kind"),
        ({"name": "123"}, "name"),
        (
            {"target": {"include": ["plan:pro", {"audience": "ghosts"}]}},
            "target.include[1].audience",
        ),
        (
            {"target": {"exclude": [{"attr": "plan", "op": "zz", "value": 1}]}},
            "target.exclude[0].op",
        ),
        ({"target": {"include": ["no-such-segment"]}}, "target.include[0]"),
        (
            {"target": {"include": [{"all": [{"audience": "ghosts"}]}]}},
            "target.include[0].all[0].audience",
        ),
        ({"kind": "triggered"}, "trigger"),
        (
            {"kind": "triggered", "trigger": {"event": "x", "where": {"attr": "a", "op": "nope"}}},
            "trigger.where.op",
        ),
        ({"trigger": {"event": "x"}}, "trigger"),
        ({"schedule": {"timezone": "Mars/Base"}}, "schedule.timezone"),
        ({"schedule": {"deliverIn": "moon"}}, "schedule.deliverIn"),
        ({"window": {"startsAt": "yesterday"}}, "window.startsAt"),
        ({"window": {"startsAt": "2026-02-01", "endsAt": "2026-01-01"}}, "window.endsAt"),
        ({"ttlSeconds": 0}, "ttlSeconds"),
        ({"urgency": "asap"}, "urgency"),
        ({"category": "spam"}, "category"),
        ({"topic": "news"}, "topic"),
        ({"rateLimit": {"perMinute": 0}}, "rateLimit.perMinute"),
        ({"goal": {"event": "buy", "within": "soon"}}, "goal.within"),
        ({"goal": {"event": "buy"}}, "goal.within"),
        ({"holdoutPercent": 100}, "holdoutPercent"),
        ({"surprise": 1}, "surprise"),
    ]
    for fields, path in cases:
        r = api.post("/v1/campaigns", json=_body("bad") | fields)
        # A reference that names nothing is a 404 (the body itself is valid), still naming
        # the field; every other mistake is a 400/422.
        missing = r.json["errors"].get(path) == ["not found"]
        assert r.status_code in ((404,) if missing else (400, 422)), (fields, r.status_code, r.json)
        assert path in r.json["errors"], (fields, r.json)
        assert r.json["message"]
    assert api.get("/v1/campaigns").json["data"] == []


def test_states_and_illegal_transitions(api):
    _setup(api)
    c = _campaign(api)
    assert api.post("/v1/campaigns/c1/pause").status_code == 409
    active = api.post("/v1/campaigns/c1/activate")
    assert active.status_code == 200 and active.json["status"] == "active"
    assert active.json["activatedAt"] and active.json["warnings"] == []
    again = api.post("/v1/campaigns/c1/activate")
    assert again.status_code == 409 and "already active" in again.json["message"]
    assert api.post(f"/v1/campaigns/{c['id']}/pause").json["status"] == "paused"
    assert api.post("/v1/campaigns/c1/pause").status_code == 409
    assert api.delete("/v1/campaigns/c1").status_code == 409
    assert api.post("/v1/campaigns/c1/activate").json["status"] == "active"  # resume
    assert api.post("/v1/campaigns/c1/archive").json["status"] == "archived"
    for action in ("activate", "pause", "archive"):
        r = api.post(f"/v1/campaigns/c1/{action}")
        assert r.status_code == 409 and r.json["errors"]["status"], action
    assert api.post("/v1/campaigns/nope/activate").status_code == 404


def test_edit_rules_of_an_active_campaign(api):
    _setup(api)
    api.post("/v1/audiences", json={"name": "vip"})
    _campaign(api)
    api.post("/v1/campaigns/c1/activate")
    live = api.patch(
        "/v1/campaigns/c1",
        json={"name": "c2", "ttlSeconds": 120, "window": {"endsAt": "2099-01-01T00:00:00Z"}},
    )
    assert live.status_code == 200 and live.json["version"] == 2
    for fields in (
        {"channels": {"inapp": "welcome"}},
        {"target": {"include": [{"audience": "vip"}]}},
        {"holdoutPercent": 5},
        {"category": "transactional"},
    ):
        r = api.patch("/v1/campaigns/c2", json=fields)
        assert r.status_code == 409, fields
        assert set(r.json["errors"]) == set(fields), r.json
    kind = api.patch("/v1/campaigns/c2", json={"kind": "triggered"})
    assert kind.status_code == 422 and "kind" in kind.json["errors"]
    # Sending back unchanged values is no planning change.
    same = api.patch(
        "/v1/campaigns/c2", json={"channels": {"inapp": "welcome", "email": "welcome"}}
    )
    assert same.status_code == 200
    api.post("/v1/campaigns/c2/pause")
    paused = api.patch("/v1/campaigns/c2", json={"target": {"include": [{"audience": "vip"}]}})
    assert paused.status_code == 200 and paused.json["version"] == 4
    api.post("/v1/campaigns/c2/archive")
    frozen = api.patch("/v1/campaigns/c2", json={"name": "c3"})
    assert frozen.status_code == 409 and "read-only" in frozen.json["message"]


# --- POST /v1/campaigns/{id}/send ---------------------------------------------------------


def test_api_send_personalises_collapses_duplicates_and_addresses_raw_recipients(app, api, workers):
    _setup(api)
    api.post(
        "/v1/users",
        json={"userId": "ann", "email": "ann@shop.com", "attributes": {"first_name": "Ann"}},
    )
    _campaign(api, channels={"inapp": "welcome", "email": "welcome", "sms": "welcome"})
    api.post("/v1/campaigns/c1/activate")
    r = api.post(
        "/v1/campaigns/c1/send",
        json={
            "recipients": [
                {"userId": "ann", "params": {"code": "A1"}},
                {"userId": "ann", "params": {"code": "A2"}},
                {"email": "ANN@shop.com", "params": {"code": "E1"}},
                {"email": "bob@shop.com", "params": {"code": "B1"}},
                {"phone": "+1 415 555 0123", "params": {"code": "P1"}},
                {"userId": "new-user"},
                {"email": "not-an-email"},
                {"userId": "x", "email": "x@shop.com"},
            ]
        },
    )
    assert r.status_code == 200, r.json
    results = r.json["results"]
    assert [sorted(k for k in res if k in ("userId", "email", "phone")) for res in results] == [
        ["userId"],
        ["userId"],
        ["email"],
        ["email"],
        ["phone"],
        ["userId"],
        ["email"],
        [],
    ]
    ann, ann_again, ann_email, bob, phone, new_user, bad_email, both = results
    assert ann["ok"] and len(ann["messageIds"]) == 2 and ann["skipped"] == {"sms": "no_address"}
    # The same user twice, and her email address once more: nothing reaches her twice.
    assert ann_again["collapsed"] == 2 and ann_again["messageIds"] == ann["messageIds"]
    assert ann_email["collapsed"] == 1 and ann_email["messageIds"][0] in ann["messageIds"]
    assert r.json["collapsed"] == 3
    assert bob["ok"] and len(bob["messageIds"]) == 1
    assert phone["ok"] and len(phone["messageIds"]) == 1
    assert new_user["ok"] and len(new_user["messageIds"]) == 1  # in-app; created on first sight
    assert api.get("/v1/users/new-user").status_code == 200
    assert (
        not bad_email["ok"] and bad_email["error"] == "invalid" and "email" in bad_email["errors"]
    )
    assert not both["ok"] and both["error"] == "invalid"
    assert r.json["messages"] == 5
    wait_for(lambda: {m.status for m in _messages(app)} == {"sent"})
    rendered = {(m.channel, m.address): m for m in _messages(app)}
    sandbox = {m["to"]: m["content"] for m in api.get("/v1/sandbox/messages").json["data"]}
    assert "Hello Ann: A1" in sandbox["ann@shop.com"]["html"]  # the first params win
    assert "Hello friend: B1" in sandbox["bob@shop.com"]["html"]  # no profile behind bob
    assert sandbox["+14155550123"]["body"] == "Code P1"
    with app.app_context():
        bob_row = rendered[("email", "bob@shop.com")]
        assert bob_row.user_id is None
        skips = db.session.scalars(select(SendSkip.reason, SendSkip.channel)).all()
    inbox = api.get("/v1/inbox", query_string={"userId": "ann"}).json["data"]
    assert [m["title"] for m in inbox] == ["Hi Ann"] and inbox[0]["body"] == "Code A1"
    assert skips  # ann and new-user have no sms address


def test_api_send_refuses_other_kinds_inactive_campaigns_and_big_batches(api):
    _setup(api)
    _campaign(api, name="trig", kind="triggered", trigger={"event": "x"})
    api.post("/v1/campaigns/trig/activate")
    one = {"recipients": [{"userId": "ann"}]}
    wrong = api.post("/v1/campaigns/trig/send", json=one)
    assert wrong.status_code == 400 and "kind" in wrong.json["errors"]
    _campaign(api)
    draft = api.post("/v1/campaigns/c1/send", json=one)
    assert draft.status_code == 409 and "draft" in draft.json["message"]
    api.post("/v1/campaigns/c1/activate")
    big = api.post(
        "/v1/campaigns/c1/send", json={"recipients": [{"userId": f"u{i}"} for i in range(1001)]}
    )
    assert big.status_code == 413 and "recipients" in big.json["errors"]
    api.post("/v1/campaigns/c1/pause")
    assert api.post("/v1/campaigns/c1/send", json=one).status_code == 409
    assert api.post("/v1/campaigns/nope/send", json=one).status_code == 404
    assert api.post("/v1/campaigns/c1/send", json={"recipients": []}).status_code == 422


def test_api_send_applies_target_and_holdout_to_user_recipients(app, api):
    _setup(api)
    api.post(
        "/v1/users",
        json=[
            {"userId": f"u{i}", "attributes": {"plan": "pro" if i % 2 else "free"}}
            for i in range(40)
        ],
    )
    target = {"include": ["plan:pro"], "exclude": [{"userId": "u1"}]}
    _campaign(api, channels={"inapp": "welcome"}, target=target, holdoutPercent=50)
    api.post("/v1/campaigns/c1/activate")
    r = api.post(
        "/v1/campaigns/c1/send", json={"recipients": [{"userId": f"u{i}"} for i in range(40)]}
    )
    by_user = {res["userId"]: res for res in r.json["results"]}
    outside = [by_user[f"u{i}"] for i in [1, *range(0, 40, 2)]]  # excluded, or not pro
    assert all(res["skipped"] == {"inapp": "not_in_target"} for res in outside)
    pro = [by_user[f"u{i}"] for i in range(3, 40, 2)]
    held = [res for res in pro if res.get("skipped") == {"inapp": "holdout"}]
    sent = [res for res in pro if res["messageIds"]]
    assert held and sent and len(held) + len(sent) == 19
    with app.app_context():
        reasons = db.session.scalars(select(SendSkip.reason)).all()
    assert reasons.count("not_in_target") == 21 and reasons.count("holdout") == len(held)


def test_api_send_with_an_idempotency_key_is_sent_once(app, api):
    _setup(api)
    _campaign(api, channels={"inapp": "welcome"})
    api.post("/v1/campaigns/c1/activate")
    body = {"recipients": [{"userId": "ann", "params": {"code": "1"}}]}
    headers = {"Idempotency-Key": "order-42"}
    first = api.post("/v1/campaigns/c1/send", json=body, headers=headers)
    again = api.post("/v1/campaigns/c1/send", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json == first.json
    assert len(_messages(app)) == 1
    other = api.post(
        "/v1/campaigns/c1/send", json={"recipients": [{"userId": "bob"}]}, headers=headers
    )
    assert other.status_code == 409 and "Idempotency-Key" in other.json["errors"]
    with app.app_context():
        from app.models.message import Send

        assert db.session.scalars(select(Send.idempotency_key)).all() == ["order-42"]


def test_hostile_shapes_are_4xx_with_the_error_shape(api):
    _setup(api)
    bodies = [
        [],
        "campaign",
        _body("x") | {"channels": []},
        _body("x") | {"channels": {"inapp": None}},
        _body("x") | {"channels": {"inapp": True}},
        _body("x") | {"target": "plan:pro"},
        _body("x") | {"target": {"include": "plan:pro"}},
        _body("x") | {"target": {"include": [[[[[[[[[[[[{"a": 1}]]]]]]]]]]]]}},
        _body("x") | {"target": {"include": [{"audience": 2**70}]}},
        _body("x") | {"target": {"include": [{"audience": ["a"]}]}},
        _body("x") | {"trigger": []},
        _body("x", kind="triggered") | {"trigger": {"event": "e", "where": 5}},
        _body("x", kind="triggered") | {"trigger": {"event": "e", "where": "a:"}},
        _body("x") | {"goal": {"event": "x", "within": True}},
        _body("x") | {"goal": {"event": "x", "within": 10**30}},
        _body("x") | {"window": {"startsAt": 5}},
        _body("x") | {"window": {"startsAt": "9999-12-31T23:59:59-23:59"}},
        _body("x") | {"schedule": {"sendAt": "2026-02-30T10:00:00"}},
        _body("x") | {"holdoutPercent": 1.5},
        _body("x") | {"ttlSeconds": "60"},
    ]
    for body in bodies:
        r = api.post("/v1/campaigns", json=body)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.json)
        assert set(r.json) == {"code", "status", "message", "errors"}, body
    api.post("/v1/campaigns", json=_body("ok"))
    for patch in ({"channels": {"fax": 1}}, {"target": {"exclude": [None]}}, {"name": None}):
        r = api.patch("/v1/campaigns/ok", json=patch)
        assert 400 <= r.status_code < 500, (patch, r.json)
    api.post("/v1/campaigns/ok/activate")
    for body in ({"recipients": "ann"}, {"recipients": [5]}, {"recipients": [{"userId": 5}]}):
        r = api.post("/v1/campaigns/ok/send", json=body)
        assert r.status_code in (200, 422), (body, r.json)
        if r.status_code == 200:
            assert r.json["results"][0]["ok"] is False
