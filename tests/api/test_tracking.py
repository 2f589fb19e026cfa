"""The Segment tracking spec: identify, track, page, screen, alias, batch; profile merges."""

from __future__ import annotations

import logging

from sqlalchemy import select

from app.db import db
from app.models import AnonymousId, Event, User
from app.services.projects import user_hash
from tests.conftest import user_events


def _anonymous_profiles(app) -> int:
    with app.app_context():
        return len(db.session.scalars(select(User).where(User.external_id.is_(None))).all())


def test_identify_with_both_ids_merges_the_anonymous_profile(app, api, project):
    api.post(
        "/v1/page",
        kind="publishable",
        json={"anonymousId": "anon-1", "name": "Pricing", "properties": {"path": "/pricing"}},
    )
    api.post(
        "/v1/identify",
        kind="publishable",
        json={"anonymousId": "anon-1", "traits": {"utm": "spring", "plan": "free"}},
    )
    api.post(
        "/v1/track", kind="publishable", json={"anonymousId": "anon-1", "event": "Added to Cart"}
    )
    assert _anonymous_profiles(app) == 1
    r = api.post(
        "/v1/identify",
        kind="publishable",
        json={
            "userId": "u-42",
            "anonymousId": "anon-1",
            "traits": {"email": "Ann@Example.com", "plan": "pro"},
            # A publishable key sets contact fields only with the user's hash.
            "userHash": user_hash(project.identity_secret, "u-42"),
        },
    )
    assert r.status_code == 200 and r.json["success"] is True
    assert _anonymous_profiles(app) == 0
    assert user_events(app, "u-42") == ["$page", "Added to Cart"]
    user = api.get("/v1/users/u-42").json
    # The known user's values win; what only the anonymous profile knew is kept.
    assert user["attributes"] == {"utm": "spring", "plan": "pro"}
    assert user["email"] == "ann@example.com"
    assert user["anonymousIds"] == ["anon-1"]
    # Later events with only the anonymous id land on the known user.
    api.post("/v1/track", kind="publishable", json={"anonymousId": "anon-1", "event": "Checkout"})
    assert user_events(app, "u-42")[-1] == "Checkout"


def test_alias_merges_many_anonymous_ids_any_number_of_times(app, api):
    for anon in ("phone", "laptop", "tablet"):
        api.post(
            "/v1/track", kind="publishable", json={"anonymousId": anon, "event": f"seen-{anon}"}
        )
    for anon in ("phone", "laptop", "tablet", "laptop"):
        r = api.post("/v1/alias", kind="publishable", json={"previousId": anon, "userId": "bob"})
        assert r.status_code == 200, r.json
    assert sorted(user_events(app, "bob")) == ["seen-laptop", "seen-phone", "seen-tablet"]
    assert sorted(api.get("/v1/users/bob").json["anonymousIds"]) == ["laptop", "phone", "tablet"]
    assert _anonymous_profiles(app) == 0


def test_alias_from_a_previous_user_id(app, api):
    api.post("/v1/users", json={"userId": "old-id", "attributes": {"a": 1}})
    api.post("/v1/events", json={"name": "legacy", "userId": "old-id"})
    api.post("/v1/alias", json={"previousId": "old-id", "userId": "new-id"})
    assert api.get("/v1/users/old-id").status_code == 404
    assert api.get("/v1/users/new-id").json["attributes"] == {"a": 1}
    assert user_events(app, "new-id") == ["legacy"]


def test_batch_applies_calls_in_order_and_reports_bad_ones(app, api):
    r = api.post(
        "/v1/batch",
        kind="publishable",
        json={
            "batch": [
                {"type": "track", "anonymousId": "z", "event": "one", "messageId": "1"},
                {"type": "identify", "userId": "zed", "anonymousId": "z", "traits": {"k": "v"}},
                {"type": "screen", "userId": "zed", "name": "Home"},
                {"type": "track", "userId": "zed"},
                {"type": "explode"},
                {"type": "group", "userId": "zed", "groupId": "g1"},
            ]
        },
    )
    assert r.status_code == 200, r.json
    assert set(r.json["errors"]) == {"3", "4"}
    assert "name" in r.json["errors"]["3"] and "type" in r.json["errors"]["4"]
    assert user_events(app, "zed") == ["one", "$screen"]
    with app.app_context():
        screen = db.session.scalar(select(Event).where(Event.name == "$screen"))
        assert screen.properties == {"name": "Home"}
        assert db.session.scalar(select(AnonymousId.anonymous_id)) == "z"


def test_bad_segment_calls_are_4xx(api):
    assert api.post("/v1/track", json={"userId": "u"}).status_code == 422
    assert api.post("/v1/identify", json={"traits": {}}).status_code == 422
    assert api.post("/v1/alias", json={"userId": "u"}).status_code == 422
    assert api.post("/v1/batch", json={"nope": []}).status_code == 400
    assert api.post("/v1/track", json=[{"event": "x"}]).status_code == 400
    r = api.post("/v1/identify", json={"userId": "u", "traits": {"email": "bad"}})
    assert r.status_code == 422 and "traits.email" in r.json["errors"]["0"]


def test_official_segment_client_against_a_live_server(app, live_server, project):
    """segment-analytics-python, unmodified, pointed at Cairn."""
    import segment.analytics as analytics

    errors: list = []
    client = analytics.Client(
        write_key=project.publishable,
        host=live_server,
        on_error=lambda e, b: errors.append(e),
        gzip=True,
    )
    logging.getLogger("segment").setLevel(logging.CRITICAL)
    client.page(anonymous_id="sdk-anon", name="Landing", properties={"path": "/"})
    client.track(anonymous_id="sdk-anon", event="Viewed Plan", properties={"plan": "pro"})
    client.identify(
        user_id="sdk-user",
        anonymous_id="sdk-anon",
        traits={"email": "sdk@example.com", "company": "Acme Corp"},
        context={"userHash": user_hash(project.identity_secret, "sdk-user")},
    )
    client.track(user_id="sdk-user", event="Subscribed", properties={"amount": 49})
    client.alias(previous_id="sdk-anon-2", user_id="sdk-user")
    client.flush()
    client.shutdown()
    assert errors == []
    assert user_events(app, "sdk-user") == ["$page", "Viewed Plan", "Subscribed"]
    with app.app_context():
        user = db.session.scalar(select(User).where(User.external_id == "sdk-user"))
        assert user.email == "sdk@example.com" and user.attributes == {"company": "Acme Corp"}
        sources = set(db.session.scalars(select(Event.source)))
        assert sources == {"segment"}


def test_alias_of_a_known_user_keeps_its_inbox_and_memberships(app, api):
    """Folding a user (here with the secret key) moves what hangs off it instead of losing it."""
    from app.models.message import Message

    for user_id in ("old-id", "new-id"):
        assert api.post("/v1/users", json={"userId": user_id}).status_code == 200
    for name, members in (("vip", ["old-id", "new-id"]), ("gold", ["old-id"])):
        assert api.post("/v1/audiences", json={"name": name}).status_code in (200, 201)
        r = api.post(f"/v1/audiences/{name}/members", json={"userIds": members})
        assert r.status_code in (200, 201), r.json
    with app.app_context():
        old = db.session.scalar(select(User).where(User.external_id == "old-id"))
        db.session.add(
            Message(
                project_id=old.project_id,
                user_id=old.id,
                channel="inapp",
                address=f"user:{old.id}",
                status="delivered",
                rendered={"title": "Welcome", "body": "hi"},
            )
        )
        db.session.commit()
    assert (
        api.post("/v1/alias", json={"previousId": "old-id", "userId": "new-id"}).status_code == 200
    )
    user = api.get("/v1/users/new-id").json
    assert sorted(a["name"] for a in user["audiences"]) == ["gold", "vip"]
    inbox = api.get("/v1/inbox?userId=new-id").json
    assert [m["title"] for m in inbox["data"]] == ["Welcome"]


def test_fields_every_call_may_carry_are_checked_whatever_its_type(app, api):
    bad_calls = [
        ("identify", {"userId": "u", "messageId": 5}, "messageId"),
        ("alias", {"userId": "u", "previousId": "p", "context": "web"}, "context"),
        ("identify", {"userId": 1.5}, "userId"),
        ("track", {"event": "e", "userId": " "}, "userId"),
        ("identify", {"anonymousId": "\n"}, "anonymousId"),
        ("track", {"event": "e", "userId": "u", "properties": 0}, "properties"),
        ("identify", {"userId": "u", "traits": []}, "traits"),
    ]
    for kind, call, field in bad_calls:
        r = api.post(f"/v1/{kind}", json=call)
        assert r.status_code == 422, (kind, call, r.json)
        assert field in r.json["errors"]["0"], (kind, call, r.json)
    assert user_events(app, "u") == []
    # An integral number is an id (as JSON Schema counts integers): 7.0 is "7".
    r = api.post("/v1/track", json={"event": "e", "userId": 7.0})
    assert r.status_code == 200, r.json
    assert user_events(app, "7") == ["e"]


def test_an_empty_batch_is_refused(api):
    r = api.post("/v1/batch", json={"batch": []})
    assert r.status_code == 400
    assert "batch" in r.json["errors"]
