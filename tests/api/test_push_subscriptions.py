"""/v1/push: the VAPID key and subscriptions, the identity rule, bad input and SSRF."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from app.db import db
from app.models.channels import PushSubscription, VapidKey
from app.services.projects import user_hash


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def browser_subscription(endpoint: str | None = None) -> dict:
    """What `PushSubscription.toJSON()` gives: keys made as a browser makes them."""
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {
        "endpoint": endpoint or f"http://127.0.0.1:9/push/{b64url(os.urandom(9))}",
        "expirationTime": None,
        "keys": {"p256dh": b64url(point), "auth": b64url(os.urandom(16))},
    }


@pytest.fixture
def pk(project) -> dict[str, str]:
    return {"Authorization": f"Bearer {project.publishable}"}


def _count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(PushSubscription)) or 0


def _row(app, endpoint: str) -> PushSubscription:
    with app.app_context():
        row = db.session.scalar(
            select(PushSubscription).where(PushSubscription.endpoint == endpoint)
        )
        assert row is not None
        return row


def test_the_vapid_key_is_made_on_first_need_and_stays(client, api, pk):
    first = client.get("/v1/push/vapid-key", headers=pk)
    assert first.status_code == 200, first.json
    key = first.json["publicKey"]
    raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    assert len(raw) == 65 and raw[0] == 4  # an uncompressed P-256 point
    assert api.get("/v1/push/vapid-key").json["publicKey"] == key
    assert client.get("/v1/push/vapid-key").status_code == 401


def test_push_endpoints_answer_cross_origin_preflights(client):
    r = client.options(
        "/v1/push/subscriptions",
        headers={"Origin": "https://acme-shop.com", "Access-Control-Request-Method": "DELETE"},
    )
    assert r.headers.get("Access-Control-Allow-Origin") in ("*", "https://acme-shop.com")
    assert "DELETE" in r.headers.get("Access-Control-Allow-Methods", "")


def test_an_anonymous_visitor_subscribes_with_the_publishable_key(app, api, pk):
    sub = browser_subscription()
    r = api.post(
        "/v1/push/subscriptions",
        json={
            "anonymousId": "v-1",
            "subscription": sub,
            "topics": ["news", "offers", "news"],
            "timezone": "Asia/Seoul",
            "language": "ko-kr",
        },
        headers={**pk, "User-Agent": "Mozilla/5.0 (X11) Firefox/130.0"},
    )
    assert r.status_code == 200, r.json
    assert r.json["anonymous"] and r.json["userId"] is None and r.json["created"]
    assert r.json["topics"] == ["news", "offers"]
    assert r.json["applicationServerKey"] == api.get("/v1/push/vapid-key").json["publicKey"]
    row = _row(app, sub["endpoint"])
    assert (row.timezone, row.language) == ("Asia/Seoul", "ko-KR")
    assert "Firefox" in row.user_agent


def test_a_publishable_key_attaches_a_device_to_a_user_only_with_a_valid_user_hash(
    app, api, pk, project
):
    sub = browser_subscription()
    r = api.post("/v1/push/subscriptions", json={"userId": "ann", "subscription": sub}, headers=pk)
    assert r.status_code == 401 and "userHash" in r.json["errors"], r.json
    r = api.post(
        "/v1/push/subscriptions",
        json={"userId": "ann", "userHash": "0" * 64, "subscription": sub},
        headers=pk,
    )
    assert r.status_code == 401, r.json
    assert _count(app) == 0
    # Unverified but with an anonymousId: the device goes to the visitor, not to ann.
    r = api.post(
        "/v1/push/subscriptions",
        json={"userId": "ann", "anonymousId": "v-9", "subscription": sub},
        headers=pk,
    )
    assert r.status_code == 200 and r.json["anonymous"], r.json
    good = user_hash(project.identity_secret, "ann")
    r = api.post(
        "/v1/push/subscriptions",
        json={"userId": "ann", "userHash": good, "subscription": sub, "topics": ["news"]},
        headers=pk,
    )
    assert r.status_code == 200 and r.json["userId"] == "ann" and not r.json["created"], r.json
    # The same endpoint is one device: moved and updated, not duplicated.
    assert _count(app) == 1 and _row(app, sub["endpoint"]).topics == ["news"]
    # The header form of the hash works too.
    other = browser_subscription()
    r = api.post(
        "/v1/push/subscriptions",
        json={"userId": "ann", "subscription": other},
        headers={**pk, "X-Cairn-User-Hash": good},
    )
    assert r.status_code == 200 and r.json["userId"] == "ann", r.json
    detail = api.get("/v1/users/ann").json
    assert len(detail["pushSubscriptions"]) == 2
    assert {d["pushService"] for d in detail["pushSubscriptions"]} == {"127.0.0.1"}
    assert "p256dh" not in str(detail["pushSubscriptions"])


def test_an_anonymous_id_of_an_identified_user_needs_that_users_hash(api, pk, project):
    r = api.post("/v1/identify", json={"userId": "ann", "anonymousId": "v-5"})
    assert r.status_code in (200, 202), r.json
    sub = browser_subscription()
    r = api.post(
        "/v1/push/subscriptions", json={"anonymousId": "v-5", "subscription": sub}, headers=pk
    )
    assert r.status_code == 401 and "userHash" in r.json["errors"], r.json
    r = api.post(
        "/v1/push/subscriptions",
        json={
            "anonymousId": "v-5",
            "userHash": user_hash(project.identity_secret, "ann"),
            "subscription": sub,
        },
        headers=pk,
    )
    assert r.status_code == 200 and r.json["userId"] == "ann", r.json


def test_required_identity_verification_refuses_an_unverified_user_id(api, pk):
    r = api.patch("/v1/project", json={"settings": {"identityVerification": "required"}})
    assert r.status_code == 200, r.json
    r = api.post(
        "/v1/push/subscriptions",
        json={"userId": "ann", "anonymousId": "v-1", "subscription": browser_subscription()},
        headers=pk,
    )
    assert r.status_code == 401 and "userHash" in r.json["errors"], r.json


def test_a_secret_key_attaches_to_any_user(api):
    r = api.post(
        "/v1/push/subscriptions", json={"userId": "bob", "subscription": browser_subscription()}
    )
    assert r.status_code == 200 and r.json["userId"] == "bob", r.json


def test_unsubscribe_deactivates_and_subscribing_again_is_the_same_device(app, api, pk):
    sub = browser_subscription()
    first = api.post(
        "/v1/push/subscriptions", json={"anonymousId": "v-1", "subscription": sub}, headers=pk
    ).json
    r = api.delete(
        "/v1/push/subscriptions", json={"subscription": {"endpoint": sub["endpoint"]}}, headers=pk
    )
    assert r.status_code == 200 and r.json == {"deleted": 1}, r.json
    row = _row(app, sub["endpoint"])
    assert not row.active and row.deactivated_reason == "unsubscribed"
    r = api.delete("/v1/push/subscriptions", json={"subscription": sub}, headers=pk)
    assert r.json == {"deleted": 0}
    again = api.post(
        "/v1/push/subscriptions", json={"anonymousId": "v-1", "subscription": sub}, headers=pk
    ).json
    assert again["id"] == first["id"] and again["active"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"subscription": None}, "subscription"),
        ({"subscription": {"keys": {}}}, "subscription.endpoint"),
        ({"subscription": {"endpoint": "https://x.io/p"}}, "subscription.keys"),
        (
            {
                "subscription": {
                    "endpoint": "https://x.io/p",
                    "keys": {"p256dh": "AAAA", "auth": "x"},
                }
            },
            "subscription.keys.p256dh",
        ),
        ({"subscription": "nope"}, "subscription"),
        ({"topics": "news"}, "topics"),
        ({"topics": ["bad topic!"]}, "topics[0]"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"language": "not a tag"}, "language"),
        ({"applicationServerKey": "BAAA"}, "applicationServerKey"),
        ({"anonymousId": None}, "userId"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_subscriptions_are_4xx_naming_the_field(api, body, field):
    payload = {"anonymousId": "v-1", "subscription": browser_subscription(), **body}
    if payload.get("anonymousId") is None:
        payload.pop("anonymousId")
    r = api.post("/v1/push/subscriptions", json=payload)
    assert r.status_code in (400, 404, 422), r.json
    assert any(k == field or k.startswith(f"{field}.") for k in r.json["errors"]), r.json


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:9/push/x",
        "https://127.0.0.1/push/x",
        "https://localhost/push/x",
        "https://10.0.0.7/push/x",
        "https://[::1]/push/x",
        "http://fcm.googleapis.com/fcm/send/x",
    ],
)
def test_without_allow_private_endpoints_a_private_or_http_endpoint_is_refused(
    app, api, pk, endpoint
):
    app.config["ALLOW_PRIVATE_ENDPOINTS"] = False
    r = api.post(
        "/v1/push/subscriptions",
        json={"anonymousId": "v-1", "subscription": browser_subscription(endpoint)},
        headers=pk,
    )
    assert r.status_code == 422 and "subscription.endpoint" in r.json["errors"], r.json
    assert _count(app) == 0


def test_a_device_subscribed_with_a_rotated_key_keeps_it(app, api):
    from app.services.vapid import generate_key

    old_key = api.get("/v1/push/vapid-key").json["publicKey"]
    with app.app_context():
        project_id = db.session.scalar(select(VapidKey.project_id))
        generate_key(db.session, project_id=project_id)
        db.session.commit()
    new_key = api.get("/v1/push/vapid-key").json["publicKey"]
    assert new_key != old_key
    # A browser that fetched the key before the rotation says which one it used.
    r = api.post(
        "/v1/push/subscriptions",
        json={
            "userId": "ann",
            "subscription": browser_subscription(),
            "applicationServerKey": old_key,
        },
    )
    assert r.status_code == 200 and r.json["applicationServerKey"] == old_key, r.json
    r = api.post(
        "/v1/push/subscriptions", json={"userId": "ann", "subscription": browser_subscription()}
    )
    assert r.json["applicationServerKey"] == new_key


def test_erasing_a_user_erases_their_devices(app, api):
    sub = browser_subscription()
    api.post("/v1/push/subscriptions", json={"userId": "ann", "subscription": sub})
    assert _count(app) == 1
    r = api.delete("/v1/users/ann")
    assert r.status_code == 200 and r.json["deleted"] == 1, r.json
    assert _count(app) == 0


def test_the_prompts_topics_join_the_projects_topics_on_every_channel(app, api):
    r = api.patch(
        "/v1/project",
        json={"settings": {"topics": [{"key": "news", "name": "News", "default": False}]}},
    )
    assert r.status_code == 200, r.json
    r = api.post(
        "/v1/push/subscriptions",
        json={"userId": "ann", "subscription": browser_subscription(), "topics": ["news", "x"]},
    )
    assert r.status_code == 200 and r.json["topics"] == ["news", "x"], r.json
    from app.models import User

    with app.app_context():
        user = db.session.scalar(select(User).where(User.external_id == "ann"))
        assert user.preferences["topics"] == {"news": True}
    members = api.get("/v1/audiences/topic:news/members").json
    assert [m["userId"] for m in members["data"]] == ["ann"], members


def test_segments_see_who_is_reachable_on_push(api):
    for user in ("ann", "bob", "cy"):
        api.post("/v1/users", json={"userId": user})
    api.post(
        "/v1/push/subscriptions", json={"userId": "ann", "subscription": browser_subscription()}
    )
    gone = browser_subscription()
    api.post("/v1/push/subscriptions", json={"userId": "bob", "subscription": gone})
    api.delete("/v1/push/subscriptions", json={"subscription": gone})
    r = api.get("/v1/users", query_string={"segment": '{"channel": "push"}'})
    assert r.status_code == 200, r.json
    assert [u["userId"] for u in r.json["data"]] == ["ann"]
