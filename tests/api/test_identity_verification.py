"""Identity verification: what a publishable key may do to a named user without a userHash."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import db
from app.models import Event, User
from app.services.projects import user_hash


def _hash(project, user_id: str) -> str:
    return user_hash(project.identity_secret, user_id)


def _ann(api) -> dict:
    """A known user with contact fields, an audience membership and an event (secret key)."""
    r = api.post(
        "/v1/users",
        json={"userId": "ann", "email": "ann@example.com", "phone": "+14155550100"},
    )
    assert r.status_code == 200, r.json
    assert api.post("/v1/audiences", json={"name": "vip"}).status_code in (200, 201)
    r = api.post("/v1/audiences/vip/members", json={"userIds": ["ann"]})
    assert r.status_code in (200, 201), r.json
    assert api.post("/v1/events", json={"name": "signed-up", "userId": "ann"}).status_code == 202
    return api.get("/v1/users/ann").json


def _require(api) -> None:
    r = api.patch("/v1/project", json={"settings": {"identityVerification": "required"}})
    assert r.status_code == 200, r.json
    assert r.json["settings"]["identityVerification"] == "required"


# -- contact fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "traits",
    [
        {"email": "attacker@evil-mail.com"},
        {"phone": "+14155550199"},
        {"$email": "attacker@evil-mail.com"},
        {"$phone_number": "+14155550199"},
    ],
)
def test_unverified_identify_never_sets_contact_fields(api, traits):
    _ann(api)
    r = api.post(
        "/v1/identify",
        kind="publishable",
        json={"userId": "ann", "traits": {**traits, "plan": "pro"}},
    )
    assert r.status_code == 200, r.json
    ann = api.get("/v1/users/ann").json
    assert ann["email"] == "ann@example.com" and ann["phone"] == "+14155550100"
    # Custom traits still land, and the contact value is not smuggled in as an attribute.
    assert ann["attributes"] == {"plan": "pro"}


@pytest.mark.parametrize("where", ["body", "context", "header", "batch-context"])
def test_a_valid_user_hash_lets_identify_set_contact_fields(api, project, where):
    _ann(api)
    call = {"userId": "ann", "traits": {"email": "ann@new-mail.com"}}
    headers = {}
    good = _hash(project, "ann")
    if where == "body":
        call["userHash"] = good
    elif where == "context":
        call["context"] = {"userHash": good}
    elif where == "header":
        headers["X-Cairn-User-Hash"] = good.upper()
    if where == "batch-context":
        body = {"batch": [{"type": "identify", **call}], "context": {"userHash": good}}
        r = api.post("/v1/batch", kind="publishable", json=body)
    else:
        r = api.post("/v1/identify", kind="publishable", json=call, headers=headers)
    assert r.status_code == 200, r.json
    assert r.json["rejected"] == 0
    assert api.get("/v1/users/ann").json["email"] == "ann@new-mail.com"


def test_a_wrong_user_hash_counts_as_none(api, project):
    _ann(api)
    for bad in (_hash(project, "eve"), "zz", "é" * 64, 12):
        r = api.post(
            "/v1/identify",
            kind="publishable",
            json={"userId": "ann", "userHash": bad, "traits": {"email": "x@evil-mail.com"}},
        )
        assert r.status_code == 200, r.json
    assert api.get("/v1/users/ann").json["email"] == "ann@example.com"


def test_secret_key_calls_are_trusted(api):
    _ann(api)
    r = api.post("/v1/identify", json={"userId": "ann", "traits": {"email": "ann@new-mail.com"}})
    assert r.status_code == 200, r.json
    assert api.get("/v1/users/ann").json["email"] == "ann@new-mail.com"


def test_an_anonymous_profile_merged_without_hash_brings_no_contact_fields(api):
    assert api.post("/v1/users", json={"userId": "bob"}).status_code == 200
    # Anyone can put an email on an anonymous profile (a sign-up form before login)...
    r = api.post(
        "/v1/identify",
        kind="publishable",
        json={"anonymousId": "a-1", "traits": {"email": "attacker@evil-mail.com", "utm": "x"}},
    )
    assert r.status_code == 200, r.json
    # ...but folding it into bob without a hash moves its events and custom traits only.
    r = api.post("/v1/identify", kind="publishable", json={"userId": "bob", "anonymousId": "a-1"})
    assert r.status_code == 200, r.json
    bob = api.get("/v1/users/bob").json
    assert bob["email"] is None and bob["attributes"] == {"utm": "x"}
    assert bob["anonymousIds"] == ["a-1"]


# -- merges ------------------------------------------------------------------------------------


def test_unverified_alias_never_folds_an_identified_user(app, api):
    before = _ann(api)
    for body in (
        {"previousId": "ann", "userId": "eve"},
        {"batch": [{"type": "alias", "previousId": "ann", "userId": "eve"}]},
    ):
        path = "/v1/batch" if "batch" in body else "/v1/alias"
        r = api.post(path, kind="publishable", json=body)
        assert r.status_code == 401, r.json
        assert "userHash" in str(r.json["errors"])
    after = api.get("/v1/users/ann").json
    assert after["email"] == before["email"]
    assert [a["name"] for a in after["audiences"]] == ["vip"]
    with app.app_context():
        ann = db.session.scalar(select(User).where(User.external_id == "ann"))
        assert [e.name for e in db.session.scalars(select(Event).where(Event.user_id == ann.id))]
    # In a batch, the refused alias does not sink the other calls.
    r = api.post(
        "/v1/batch",
        kind="publishable",
        json={
            "batch": [
                {"type": "alias", "previousId": "ann", "userId": "eve"},
                {"type": "track", "userId": "eve", "event": "tried"},
            ]
        },
    )
    assert r.status_code == 200 and r.json["accepted"] == 1 and set(r.json["errors"]) == {"0"}
    assert api.get("/v1/users/ann").status_code == 200


def test_verified_alias_folds_the_previous_user(api, project):
    _ann(api)
    r = api.post(
        "/v1/alias",
        kind="publishable",
        json={"previousId": "ann", "userId": "ann-2", "userHash": _hash(project, "ann-2")},
    )
    assert r.status_code == 200, r.json
    assert api.get("/v1/users/ann").status_code == 404
    assert api.get("/v1/users/ann-2").json["email"] == "ann@example.com"


def test_unverified_identify_does_not_take_an_identified_users_anonymous_id(api, project):
    r = api.post(
        "/v1/identify",
        kind="publishable",
        json={"userId": "ann", "anonymousId": "ann-laptop", "userHash": _hash(project, "ann")},
    )
    assert r.status_code == 200, r.json
    r = api.post(
        "/v1/identify", kind="publishable", json={"userId": "eve", "anonymousId": "ann-laptop"}
    )
    assert r.status_code == 200, r.json
    assert api.get("/v1/users/ann").json["anonymousIds"] == ["ann-laptop"]
    assert api.get("/v1/users/eve").json["anonymousIds"] == []


def test_unverified_merges_keep_working_for_anonymous_visitors(app, api):
    api.post("/v1/track", kind="publishable", json={"anonymousId": "v-1", "event": "browse"})
    r = api.post("/v1/alias", kind="publishable", json={"previousId": "v-1", "userId": "carl"})
    assert r.status_code == 200, r.json
    assert api.get("/v1/users/carl").json["anonymousIds"] == ["v-1"]


# -- push devices (the rule the push issue calls) ----------------------------------------------


def test_device_rule(app, project):
    from app.services.identity import Verification, may_attach_device

    with app.app_context():
        trusted = Verification.for_secret_key()
        unverified = Verification(identity_secret=project.identity_secret, required=False)
        good = _hash(project, "ann")
        assert may_attach_device(trusted, user_id="ann")
        assert may_attach_device(unverified, user_id=None)  # an anonymous device
        assert not may_attach_device(unverified, user_id="ann")
        assert not may_attach_device(unverified, user_id="ann", user_hash=_hash(project, "eve"))
        assert may_attach_device(unverified, user_id="ann", user_hash=good)
        header = Verification(identity_secret=project.identity_secret, header_hash=good)
        assert may_attach_device(header, user_id="ann")


def test_unverified_merge_does_not_move_devices(app, api, project):
    """A device table (the push issue's) registered in USER_DEVICES stays put when unverified."""
    from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, insert

    from app.services import identity

    meta = MetaData()
    devices = Table(
        "test_devices",
        meta,
        Column("id", Integer, primary_key=True),
        Column("endpoint", String(100)),
        Column("user_id", ForeignKey(User.id, ondelete="SET NULL"), nullable=True),
    )
    with app.app_context():
        meta.create_all(db.engine, tables=[devices])
    identity.USER_DEVICES.append((devices, "user_id"))
    try:
        for anon, endpoint in (("d-1", "phone-1"), ("d-2", "phone-2")):
            api.post("/v1/track", kind="publishable", json={"anonymousId": anon, "event": "x"})
            with app.app_context():
                uid = db.session.scalar(select(User.id).where(User.external_id.is_(None)))
                db.session.execute(insert(devices).values(endpoint=endpoint, user_id=uid))
                db.session.commit()
            body = {"userId": "ann", "anonymousId": anon}
            if anon == "d-2":
                body["userHash"] = _hash(project, "ann")
            assert api.post("/v1/identify", kind="publishable", json=body).status_code == 200

        with app.app_context():
            ann = db.session.scalar(select(User.id).where(User.external_id == "ann"))
            owners = dict(db.session.execute(select(devices.c.endpoint, devices.c.user_id)).all())
        assert owners == {"phone-1": None, "phone-2": ann}
    finally:
        identity.USER_DEVICES.remove((devices, "user_id"))
        with app.app_context():
            meta.drop_all(db.engine, tables=[devices])


# -- identityVerification: "required" ----------------------------------------------------------


def test_required_verification_refuses_unverified_calls_naming_a_user(app, api, project):
    _require(api)
    good = _hash(project, "ann")
    calls = {
        "identify": {"userId": "ann", "traits": {"plan": "pro"}},
        "track": {"userId": "ann", "event": "clicked"},
        "page": {"userId": "ann", "name": "Home"},
        "screen": {"userId": "ann", "name": "Home"},
        "group": {"userId": "ann", "groupId": "g"},
        "alias": {"userId": "ann", "previousId": "visitor-9"},
    }
    for kind, call in calls.items():
        r = api.post(f"/v1/{kind}", kind="publishable", json=call)
        assert r.status_code == 401, (kind, r.json)
        assert r.json["errors"] and r.json["message"]
        r = api.post(f"/v1/{kind}", kind="publishable", json={**call, "userHash": good})
        assert r.status_code == 200, (kind, r.json)
    r = api.post("/v1/events", kind="publishable", json={"name": "x", "userId": "ann"})
    assert r.status_code == 401
    r = api.post(
        "/v1/events",
        kind="publishable",
        json={"name": "x", "userId": "ann"},
        headers={"X-Cairn-User-Hash": good},
    )
    assert r.status_code == 202, r.json
    # Anonymous calls name nobody, and the secret key is trusted.
    r = api.post("/v1/track", kind="publishable", json={"anonymousId": "v", "event": "x"})
    assert r.status_code == 200
    assert api.post("/v1/events", json={"name": "x", "userId": "ann"}).status_code == 202
    assert api.post("/v1/identify", json={"userId": "ann", "traits": {}}).status_code == 200


def test_required_verification_in_batches_refuses_items_not_the_batch(app, api, project):
    _require(api)
    good = _hash(project, "ann")
    r = api.post(
        "/v1/events",
        kind="publishable",
        json=[
            {"name": "ok", "userId": "ann", "userHash": good},
            {"name": "no", "userId": "bob"},
            {"name": "anon", "anonymousId": "v"},
        ],
    )
    assert r.status_code == 202, r.json
    assert r.json["accepted"] == 2 and list(r.json["errors"]) == ["1"]
    assert "userHash" in r.json["errors"]["1"]
    r = api.post(
        "/v1/batch",
        kind="publishable",
        json={
            "batch": [
                {"type": "track", "userId": "ann", "event": "ok", "context": {"userHash": good}},
                {"type": "track", "userId": "bob", "event": "no"},
            ]
        },
    )
    assert r.status_code == 200 and r.json["accepted"] == 1 and list(r.json["errors"]) == ["1"]
    only_bad = api.post("/v1/events", kind="publishable", json=[{"name": "no", "userId": "bob"}])
    assert only_bad.status_code == 401


def test_required_verification_on_the_pixel(app, client, api, project):
    _require(api)
    base = f"/v1/pixel.gif?key={project.publishable}&event=open&userId=ann"
    assert client.get(base).headers["X-Cairn-Recorded"] == "0"
    r = client.get(base + "&userHash=" + _hash(project, "ann"))
    assert r.headers["X-Cairn-Recorded"] == "1" and r.mimetype == "image/gif"
    assert client.get(base + "&userHash=" + _hash(project, "x")).headers["X-Cairn-Recorded"] == "0"


def test_identity_verification_setting(api):
    assert api.get("/v1/project").json["settings"]["identityVerification"] == "optional"
    r = api.patch("/v1/project", json={"settings": {"identityVerification": "sometimes"}})
    assert r.status_code == 422 and "settings.identityVerification" in r.json["errors"]
    _require(api)
    r = api.patch("/v1/project", json={"settings": {"identityVerification": None}})
    assert r.json["settings"]["identityVerification"] == "optional"


# -- credentials in the query string ------------------------------------------------------------


def test_secret_keys_and_tokens_are_never_taken_from_the_query(app, client, api, project):
    api.post("/v1/users", json={"userId": "ann"})
    token = client.post(
        "/v1/auth/token", json={"accessKey": project.access_key, "secretKey": project.secret}
    ).json["data"]
    for credential in (project.secret, token):
        for path in ("/v1/inbox?userId=ann", "/v1/users"):
            r = client.get(f"{path}{'&' if '?' in path else '?'}key={credential}")
            assert r.status_code == 401, (path, r.json)
            assert "query string" in r.json["message"]
        r = client.get(f"/v1/pixel.gif?key={credential}&event=open&userId=ann")
        assert r.status_code == 200 and r.headers["X-Cairn-Recorded"] == "0"
    # A publishable key in ?key= still works where a query key is allowed (the pixel).
    r = client.get(f"/v1/pixel.gif?key={project.publishable}&event=open&anonymousId=v")
    assert r.headers["X-Cairn-Recorded"] == "1"


# -- id lengths --------------------------------------------------------------------------------


def test_ids_over_255_characters_are_refused_everywhere(app, api, client, project):
    long = "x" * 100_000
    cases = [
        ("/v1/alias", {"userId": long, "previousId": "a"}, "userId"),
        ("/v1/alias", {"userId": "u", "previousId": long}, "previousId"),
        ("/v1/identify", {"anonymousId": long, "traits": {"a": 1}}, "anonymousId"),
        ("/v1/identify", {"userId": "u", "anonymousId": long}, "anonymousId"),
        ("/v1/track", {"anonymousId": long, "event": "e"}, "anonymousId"),
        ("/v1/page", {"anonymousId": long}, "anonymousId"),
        ("/v1/events", {"name": "e", "anonymousId": long}, "anonymousId"),
        ("/v1/events", {"name": "e", "anonymousId": int("9" * 300)}, "anonymousId"),
        ("/v1/events", {"name": "e", "userId": int("9" * 300)}, "userId"),
    ]
    for path, body, field_name in cases:
        r = api.post(path, kind="publishable", json=body)
        assert r.status_code == 422, (path, field_name, r.status_code)
        assert field_name in str(r.json["errors"]), (path, r.json)
    r = api.post(
        "/v1/batch",
        kind="publishable",
        json={
            "batch": [
                {"type": "alias", "userId": "u", "previousId": long},
                {"type": "track", "anonymousId": "ok", "event": "kept"},
            ]
        },
    )
    assert r.status_code == 200 and r.json["accepted"] == 1
    assert "previousId" in r.json["errors"]["0"]
    r = client.get(f"/v1/pixel.gif?key={project.publishable}&event=e&anonymousId={'x' * 300}")
    assert r.headers["X-Cairn-Recorded"] == "0"
    with app.app_context():
        assert db.session.scalar(select(Event.name).where(Event.name != "kept")) is None
