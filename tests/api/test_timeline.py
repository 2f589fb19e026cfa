"""GET /v1/users/{userId}/timeline: every source merged newest first, paged without loss."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.db import db
from app.models import Audience, AudienceChange, Campaign, Event, User
from app.models.campaign import CampaignHoldout
from app.models.message import Message, MessageStatusChange, SendSkip
from app.models.rule import Rule, RuleFiring
from tests.conftest import make_project

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _user_pk(app, user_id: str) -> int:
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.external_id == user_id))


def _seed(app, api, project, user_id: str = "u1") -> dict[str, int]:
    """One row of every source, at known instants; two pairs share an instant."""
    api.post("/v1/users", json={"userId": user_id})
    user = _user_pk(app, user_id)
    sent = api.post("/v1/notify", json={"userId": user_id, "body": "hi"}).json
    with app.app_context():
        s = db.session
        audience = Audience(project_id=project.id, name="Almost bought")
        rule = Rule(
            project_id=project.id,
            name="cart",
            trigger_kind="event",
            trigger_key="add_to_cart",
            when={"event": "add_to_cart"},
        )
        campaign = Campaign(project_id=project.id, name="Cart reminder", kind="triggered")
        s.add_all([audience, rule, campaign])
        s.flush()
        event = Event(
            project_id=project.id,
            user_id=user,
            name="add_to_cart",
            properties={"sku": "A1"},
            timestamp=_at(0),
            received_at=_at(0),
        )
        s.add(event)
        s.flush()
        s.add_all(
            [
                RuleFiring(
                    project_id=project.id,
                    rule_id=rule.id,
                    user_id=user,
                    event_id=event.id,
                    cause={"event": "add_to_cart"},
                    status="fired",
                    actions=[{"addToAudience": audience.id, "result": "joined"}],
                    at=_at(1),
                ),
                AudienceChange(
                    project_id=project.id,
                    audience_id=audience.id,
                    user_id=user,
                    kind="joined",
                    cause="rule",
                    at=_at(1),  # the same instant as the firing: both appear, in a fixed order
                ),
                SendSkip(
                    project_id=project.id,
                    user_id=user,
                    campaign_id=campaign.id,
                    channel="email",
                    reason="no_address",
                    detail="no email on the profile",
                    at=_at(2),
                ),
                CampaignHoldout(
                    project_id=project.id, campaign_id=campaign.id, user_id=user, at=_at(3)
                ),
            ]
        )
        [mid] = sent["messageIds"]
        message = s.get(Message, mid)
        message.created_at = _at(4)
        message.status, message.reason = "failed", "provider said no"
        s.add(
            MessageStatusChange(
                message_id=mid, status="failed", reason="provider said no", at=_at(5)
            )
        )
        s.commit()
        return {
            "message": mid,
            "send": sent["id"],
            "campaign": campaign.id,
            "rule": rule.id,
            "audience": audience.id,
            "event": event.id,
        }


def test_every_source_newest_first_with_its_fields(app, api, project):
    ids = _seed(app, api, project)
    r = api.get("/v1/users/u1/timeline")
    assert r.status_code == 200, r.json
    data = r.json["data"]
    assert r.json["nextCursor"] is None
    assert [(i["kind"], i.get("reason")) for i in data] == [
        ("message", "provider said no"),
        ("skip", "holdout"),
        ("skip", "no_address"),
        ("rule", None),
        ("audience", None),
        ("event", None),
    ]
    message, holdout, skip, rule, audience, event = data
    assert message["id"] == ids["message"] and message["sendId"] == ids["send"]
    assert message["channel"] == "inapp" and message["campaignId"] is None
    assert [(h["status"], h["reason"]) for h in message["history"]] == [
        ("queued", None),
        ("failed", "provider said no"),
    ]
    assert holdout["campaignId"] == ids["campaign"] and "Cart reminder" in holdout["detail"]
    assert skip == {
        "at": "2026-03-01T12:02:00+00:00",
        "kind": "skip",
        "campaignId": ids["campaign"],
        "sendId": None,
        "channel": "email",
        "reason": "no_address",
        "detail": "no email on the profile",
    }
    assert rule["rule"] == "cart" and rule["ruleId"] == ids["rule"]
    assert rule["status"] == "fired" and rule["eventId"] == ids["event"]
    assert rule["actions"] == [{"addToAudience": ids["audience"], "result": "joined"}]
    assert audience == {
        "at": "2026-03-01T12:01:00+00:00",
        "kind": "audience",
        "audienceId": ids["audience"],
        "audience": "Almost bought",
        "change": "joined",
        "cause": "rule",
    }
    assert event["name"] == "add_to_cart" and event["properties"] == {"sku": "A1"}
    assert event["source"] == "api"


def test_kinds_filter(app, api, project):
    _seed(app, api, project)
    r = api.get("/v1/users/u1/timeline?kinds=event,message")
    assert [i["kind"] for i in r.json["data"]] == ["message", "event"]
    only_skips = api.get("/v1/users/u1/timeline?kinds=skip").json["data"]
    assert [i["reason"] for i in only_skips] == ["holdout", "no_address"]


def test_pages_of_two_lose_and_repeat_nothing_even_on_shared_instants(app, api, project):
    _seed(app, api, project)
    user = _user_pk(app, "u1")
    with app.app_context():
        # Five more events, three at one instant (and at the skip's instant), two later.
        for n, minutes in enumerate([2, 2, 2, 6, 7]):
            db.session.add(
                Event(project_id=project.id, user_id=user, name=f"e{n}", timestamp=_at(minutes))
            )
        db.session.commit()
    whole = api.get("/v1/users/u1/timeline?limit=1000").json["data"]
    assert len(whole) == 11
    ats = [i["at"] for i in whole]
    assert ats == sorted(ats, reverse=True)
    pages, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        r = api.get(f"/v1/users/u1/timeline{query}")
        assert r.status_code == 200, r.json
        assert len(r.json["data"]) <= 2
        pages += r.json["data"]
        cursor = r.json["nextCursor"]
        if cursor is None:
            break
    assert pages == whole
    # The same walk over one kind only.
    events, cursor = [], None
    while True:
        query = "?limit=2&kinds=event" + (f"&cursor={cursor}" if cursor else "")
        r = api.get(f"/v1/users/u1/timeline{query}").json
        events += r["data"]
        cursor = r["nextCursor"]
        if cursor is None:
            break
    assert events == [i for i in whole if i["kind"] == "event"]


def test_cancelled_message_shows_why(app, api):
    sent = api.post("/v1/notify", json={"userId": "u2", "body": "hi"}).json
    api.post("/v1/messages/cancel", json={"sendId": sent["id"]})
    [item] = api.get("/v1/users/u2/timeline?kinds=message").json["data"]
    assert item["status"] == "cancelled"
    assert [h["status"] for h in item["history"]] == ["queued", "cancelled"]


def test_unknown_user_bad_arguments_and_other_projects(app, api, project, client):
    assert api.get("/v1/users/nobody/timeline").status_code == 404
    api.post("/v1/users", json={"userId": "u1"})
    for query, field in [
        ("kinds=event,bogus", "kinds"),
        ("kinds=", "kinds"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=aWQ6MQ", "cursor"),  # a message-log cursor is not a timeline cursor
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ]:
        r = api.get(f"/v1/users/u1/timeline?{query}")
        assert r.status_code == 400, (query, r.json)
        assert field in r.json["errors"], (query, r.json)
    # The publishable key cannot read it; another project does not see this user.
    assert api.get("/v1/users/u1/timeline", kind="publishable").status_code == 403
    other = make_project(app, name="Other")
    assert client.get("/v1/users/u1/timeline", headers=other.auth()).status_code == 404
    # /v1/users/{userId} itself is still the profile.
    assert api.get("/v1/users/u1").json["userId"] == "u1"
