"""/v1/audiences: CRUD, members with TTL, the change log, expiry, and audiences in segments."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.db import db
from app.models import AudienceChange, AudienceMember, User
from app.models.base import utcnow
from app.services import audiences as audiences_service
from tests.conftest import make_project, wait_for


def create(api, name="vip", **fields):
    r = api.post("/v1/audiences", json={"name": name, **fields})
    assert r.status_code == 201, r.json
    return r.json


def add(api, ref, user_ids, **fields):
    r = api.post(f"/v1/audiences/{ref}/members", json={"userIds": user_ids, **fields})
    assert r.status_code == 200, r.json
    return r.json


def remove(api, ref, user_ids):
    r = api.delete(f"/v1/audiences/{ref}/members", json={"userIds": user_ids})
    assert r.status_code == 200, r.json
    return r.json


def member_ids(api, ref):
    r = api.get(f"/v1/audiences/{ref}/members?limit=1000")
    assert r.status_code == 200, r.json
    return [m["userId"] for m in r.json["data"]]


def count(api, ref):
    r = api.get(f"/v1/audiences/{ref}")
    assert r.status_code == 200, r.json
    return r.json["memberCount"]


def in_segment(api, audience, op="in"):
    r = api.post("/v1/segments/preview", json={"filter": {"audience": audience, "op": op}})
    assert r.status_code == 200, r.json
    return sorted(r.json["sample"])


def changes(app, audience_id):
    with app.app_context():
        rows = db.session.execute(
            select(User.external_id, AudienceChange.kind, AudienceChange.cause, AudienceChange.at)
            .join(User, User.id == AudienceChange.user_id)
            .where(AudienceChange.audience_id == audience_id)
            .order_by(AudienceChange.id)
        ).all()
        return [tuple(row) for row in rows]


def expire_now(app, audience_id, user_id, *, seconds_ago=5):
    """Move a membership's expiry into the past, as if its TTL had passed."""
    past = utcnow() - timedelta(seconds=seconds_ago)
    with app.app_context(), db.begin() as session:
        pk = session.scalar(select(User.id).where(User.external_id == user_id))
        session.execute(
            update(AudienceMember)
            .where(AudienceMember.audience_id == audience_id, AudienceMember.user_id == pk)
            .values(expires_at=past)
        )
    return past


def test_crud_with_member_counts_and_404(api):
    vip = create(api, "vip", description="Best customers")
    assert vip["memberCount"] == 0 and vip["description"] == "Best customers"
    assert vip["createdAt"]
    assert api.get(f"/v1/audiences/{vip['id']}").json == vip == api.get("/v1/audiences/vip").json
    for i in range(3):
        create(api, f"a{i}")
    add(api, "vip", ["u1", "u2"])
    add(api, "a1", ["u1"])
    page = api.get("/v1/audiences?limit=2").json
    assert [(a["name"], a["memberCount"]) for a in page["data"]] == [("vip", 2), ("a0", 0)]
    rest = api.get(f"/v1/audiences?limit=2&cursor={page['nextCursor']}").json
    assert [(a["name"], a["memberCount"]) for a in rest["data"]] == [("a1", 1), ("a2", 0)]
    assert rest["nextCursor"] is None

    r = api.patch("/v1/audiences/vip", json={"name": "vips"})
    assert r.status_code == 200 and r.json["description"] == "Best customers"
    assert r.json["memberCount"] == 2
    r = api.put(f"/v1/audiences/{vip['id']}", json={"name": "vip"})
    assert r.status_code == 200 and r.json["description"] is None and r.json["memberCount"] == 2
    assert api.put("/v1/audiences/vip", json={"description": "x"}).status_code == 422

    assert api.delete("/v1/audiences/vip").status_code == 204
    for method, path in [
        ("get", "/v1/audiences/vip"),
        ("get", f"/v1/audiences/{vip['id']}"),
        ("delete", "/v1/audiences/vip"),
        ("patch", "/v1/audiences/vip"),
        ("get", "/v1/audiences/vip/members"),
        ("post", "/v1/audiences/vip/members"),
        ("delete", "/v1/audiences/vip/members"),
        ("post", "/v1/audiences/vip/members/delete"),
    ]:
        body = {"userIds": ["u1"]} if "members" in path and method != "get" else {"name": "x"}
        kwargs = {} if method == "get" else {"json": body}
        r = getattr(api, method)(path, **kwargs)
        assert r.status_code == 404, (method, path, r.json)


def test_duplicate_and_invalid_names(api):
    create(api, "vip")
    r = api.post("/v1/audiences", json={"name": "vip"})
    assert r.status_code == 409 and "name" in r.json["errors"]
    create(api, "other")
    r = api.patch("/v1/audiences/other", json={"name": "vip"})
    assert r.status_code == 409 and "name" in r.json["errors"]
    for bad in ("", "  ", "123", "a/b", "x" * 256):
        r = api.post("/v1/audiences", json={"name": bad})
        assert r.status_code == 422 and "name" in r.json["errors"], bad
    r = api.post("/v1/audiences", json={"name": "x", "description": 5})
    assert r.status_code == 422 and "description" in r.json["errors"]


def test_add_creates_unknown_users_and_reports_each(app, api):
    api.post("/v1/users", json={"userId": "known", "attributes": {"plan": "pro"}})
    create(api)
    body = add(api, "vip", ["known", "new-1", "new-1", "new-2"])
    assert (body["joined"], body["refreshed"], body["created"]) == (3, 0, 2)
    assert [(r["userId"], r["created"], r["joined"]) for r in body["results"]] == [
        ("known", False, True),
        ("new-1", True, True),
        ("new-2", True, True),
    ]
    assert all(r["expiresAt"] is None for r in body["results"])
    assert api.get("/v1/users/new-1").status_code == 200
    assert member_ids(api, "vip") == ["known", "new-1", "new-2"]
    again = add(api, "vip", ["known", "new-3"])
    assert (again["joined"], again["refreshed"], again["created"]) == (1, 1, 1)
    assert [r["joined"] for r in again["results"]] == [False, True]
    assert count(api, "vip") == 4


def test_remove_reports_each_and_creates_nobody(app, api):
    create(api)
    add(api, "vip", ["a", "b", "c"])
    body = remove(api, "vip", ["a", "ghost", "c", "a"])
    assert body["removed"] == 2
    assert [(r["userId"], r["removed"]) for r in body["results"]] == [
        ("a", True),
        ("ghost", False),
        ("c", True),
    ]
    assert api.get("/v1/users/ghost").status_code == 404
    assert member_ids(api, "vip") == ["b"]
    # Removing again is a no-op, and the POST alias works for clients without DELETE bodies.
    assert remove(api, "vip", ["a"])["removed"] == 0
    r = api.post("/v1/audiences/vip/members/delete", json={"userIds": ["b"]})
    assert r.status_code == 200 and r.json["removed"] == 1
    assert count(api, "vip") == 0


def test_members_are_cursor_paginated(api):
    create(api)
    ids = [f"u{i:03}" for i in range(25)]
    add(api, "vip", ids)
    seen, cursor = [], None
    while True:
        path = "/v1/audiences/vip/members?limit=10" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(path).json
        seen += page["data"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert [m["userId"] for m in seen] == ids
    assert set(seen[0]) == {"userId", "joinedAt", "expiresAt"}
    assert api.get("/v1/audiences/vip/members?cursor=%%%").status_code == 400


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "userIds"),
        ({"userIds": []}, 422, "userIds"),
        ({"userIds": "u1"}, 422, "userIds"),
        ({"userIds": ["ok", 5]}, 422, "userIds[1]"),
        ({"userIds": ["ok", ""]}, 422, "userIds[1]"),
        ({"userIds": ["x" * 256]}, 422, "userIds[0]"),
        ({"userIds": ["a\x00b"]}, 422, "userIds[0]"),
        ({"userIds": ["a"], "ttlSeconds": 0}, 422, "ttlSeconds"),
        ({"userIds": ["a"], "ttlSeconds": "60"}, 422, "ttlSeconds"),
        ({"userIds": ["a"], "extra": 1}, 422, "extra"),
        ({"userIds": [f"u{i}" for i in range(1001)]}, 413, "userIds"),
    ],
)
def test_members_input_is_checked(api, body, status, field):
    create(api)
    r = api.post("/v1/audiences/vip/members", json=body)
    assert r.status_code == status, r.json
    assert field in r.json["errors"], r.json
    assert count(api, "vip") == 0


def test_a_batch_of_1000_is_accepted(api):
    create(api)
    body = add(api, "vip", [f"u{i}" for i in range(1000)], ttlSeconds=3600)
    assert body["joined"] == 1000 and body["created"] == 1000
    assert count(api, "vip") == 1000


def test_ttl_refresh_and_permanent_readd(app, api):
    vip = create(api)
    before = utcnow()
    first = add(api, "vip", ["ann"], ttlSeconds=60)["results"][0]
    assert first["expiresAt"] is not None
    refreshed = add(api, "vip", ["ann"], ttlSeconds=3600)["results"][0]
    assert refreshed["joined"] is False and refreshed["expiresAt"] > first["expiresAt"]
    listed = api.get("/v1/audiences/vip/members").json["data"][0]
    assert listed["expiresAt"] == refreshed["expiresAt"]
    # Without ttlSeconds the latest add makes the membership permanent.
    add(api, "vip", ["ann"])
    assert api.get("/v1/audiences/vip/members").json["data"][0]["expiresAt"] is None
    assert [c[1:3] for c in changes(app, vip["id"])] == [("joined", "api")]
    assert changes(app, vip["id"])[0][3] >= before


def test_expired_member_is_gone_everywhere_before_any_sweep(app, api):
    vip = create(api)
    add(api, "vip", ["ann", "bob"], ttlSeconds=3600)
    api.post("/v1/segments", json={"name": "in-vip", "filter": {"audience": "vip", "op": "in"}})
    assert member_ids(api, "vip") == ["ann", "bob"] and count(api, "vip") == 2
    assert in_segment(api, "vip") == ["ann", "bob"]
    expire_now(app, vip["id"], "ann")
    assert member_ids(api, "vip") == ["bob"]
    assert count(api, "vip") == 1
    assert api.get("/v1/audiences").json["data"][0]["memberCount"] == 1
    assert in_segment(api, "vip") == ["bob"]
    assert in_segment(api, str(vip["id"])) == ["bob"]
    assert in_segment(api, "vip", "notIn") == ["ann"]
    users = api.get("/v1/segments/in-vip/users").json["data"]
    assert [u["userId"] for u in users] == ["bob"]
    listed = api.get('/v1/users?segment={"audience":"vip"}').json["data"]
    assert [u["userId"] for u in listed] == ["bob"]
    with app.app_context():
        pk = db.session.scalar(select(User.id).where(User.external_id == "ann"))
        assert audiences_service.audiences_of(db.session, pk, utcnow()) == []
        # Nothing was marked yet: the TTL alone ended the membership.
        member = db.session.scalar(select(AudienceMember).where(AudienceMember.user_id == pk))
        assert member.left_at is None


def test_ttl_seconds_ends_membership_on_time(api):
    create(api)
    add(api, "vip", ["ann"], ttlSeconds=1)
    add(api, "vip", ["bob"])
    wait_for(lambda: count(api, "vip") == 1, timeout=30)
    assert member_ids(api, "vip") == ["bob"]
    assert in_segment(api, "vip") == ["bob"]


def test_expire_memberships_marks_left_and_logs_ttl(app, api):
    vip = create(api)
    other = create(api, "other")
    add(api, "vip", ["ann", "bob", "cy"], ttlSeconds=3600)
    add(api, "other", ["ann"], ttlSeconds=3600)
    ann_expiry = expire_now(app, vip["id"], "ann", seconds_ago=30)
    expire_now(app, other["id"], "ann", seconds_ago=10)
    expire_now(app, vip["id"], "bob", seconds_ago=20)
    with app.app_context(), db.begin() as session:
        assert audiences_service.expire_memberships(session, utcnow(), limit=2) == 2
    with app.app_context(), db.begin() as session:
        assert audiences_service.expire_memberships(session, utcnow()) == 1
    with app.app_context(), db.begin() as session:
        assert audiences_service.expire_memberships(session, utcnow()) == 0
        ann = session.scalar(select(User.id).where(User.external_id == "ann"))
        member = session.scalar(
            select(AudienceMember).where(
                AudienceMember.audience_id == vip["id"], AudienceMember.user_id == ann
            )
        )
        assert member.left_at == member.expires_at
        assert abs(member.left_at - ann_expiry) < timedelta(milliseconds=1)
    log = changes(app, vip["id"])
    assert [c[:3] for c in log] == [
        ("ann", "joined", "api"),
        ("bob", "joined", "api"),
        ("cy", "joined", "api"),
        ("ann", "left", "ttl"),
        ("bob", "left", "ttl"),
    ]
    assert abs(log[3][3] - ann_expiry) < timedelta(milliseconds=1)
    assert [c[1:3] for c in changes(app, other["id"])] == [("joined", "api"), ("left", "ttl")]
    assert member_ids(api, "vip") == ["cy"]


def test_rejoin_after_leave_and_after_unswept_expiry(app, api):
    vip = create(api)
    add(api, "vip", ["ann", "bob"], ttlSeconds=3600)
    remove(api, "vip", ["ann"])
    assert add(api, "vip", ["ann"])["results"][0]["joined"] is True
    expiry = expire_now(app, vip["id"], "bob")
    assert add(api, "vip", ["bob"])["results"][0]["joined"] is True
    assert member_ids(api, "vip") == ["ann", "bob"]
    log = changes(app, vip["id"])
    assert [c[:3] for c in log] == [
        ("ann", "joined", "api"),
        ("bob", "joined", "api"),
        ("ann", "left", "api"),
        ("ann", "joined", "api"),
        ("bob", "left", "ttl"),
        ("bob", "joined", "api"),
    ]
    assert abs(log[4][3] - expiry) < timedelta(milliseconds=1)
    # Removing a member whose TTL passed closes it as the sweeper would: not removed by the call.
    expire_now(app, vip["id"], "ann")
    assert remove(api, "vip", ["ann"])["removed"] == 0
    assert changes(app, vip["id"])[-1][1:3] == ("left", "ttl")
    with app.app_context(), db.begin() as session:
        assert audiences_service.expire_memberships(session, utcnow()) == 0


def test_service_functions_take_a_cause(app, api):
    vip = create(api)
    add(api, "vip", ["ann", "bob"])
    with app.app_context(), db.begin() as session:
        ann, bob = (
            session.scalar(select(User.id).where(User.external_id == name))
            for name in ("ann", "bob")
        )
        project_id = session.scalar(select(User.project_id).where(User.id == ann))
        now = utcnow()
        removed = audiences_service.remove_members(
            session,
            project_id=project_id,
            audience_id=vip["id"],
            user_pks=[ann],
            cause="rule",
            now=now,
        )
        assert removed == {ann}
        joined = audiences_service.add_members(
            session,
            project_id=project_id,
            audience_id=vip["id"],
            user_pks=[ann, bob],
            cause="topic",
            ttl_seconds=60,
            now=now,
        )
        assert joined == {ann: True, bob: False}
        mine = audiences_service.audiences_of(session, ann, now)
        assert [(a["id"], a["name"]) for a in mine] == [(vip["id"], "vip")]
        assert mine[0]["expires_at"] == now + timedelta(seconds=60)
        with pytest.raises(ValueError):
            audiences_service.add_members(
                session,
                project_id=project_id,
                audience_id=vip["id"],
                user_pks=[ann],
                cause="magic",
                now=now,
            )
    assert [c[:3] for c in changes(app, vip["id"])] == [
        ("ann", "joined", "api"),
        ("bob", "joined", "api"),
        ("ann", "left", "rule"),
        ("ann", "joined", "topic"),
    ]


def test_audience_membership_inside_a_segment_filter(api):
    api.post(
        "/v1/users",
        json=[
            {"userId": "ann", "attributes": {"plan": "pro"}},
            {"userId": "bob", "attributes": {"plan": "pro"}},
            {"userId": "cy", "attributes": {"plan": "free"}},
        ],
    )
    vip = create(api)
    add(api, "vip", ["ann", "cy"])
    tree = {"all": [{"attr": "plan", "op": "eq", "value": "pro"}, {"audience": "vip"}]}
    r = api.post("/v1/segments", json={"name": "pro-vips", "filter": tree})
    assert r.status_code == 201, r.json
    users = api.get("/v1/segments/pro-vips/users").json["data"]
    assert [u["userId"] for u in users] == ["ann"]
    by_id = {"all": [{"plan": "pro"}, {"audience": vip["id"], "op": "notIn"}]}
    assert api.post("/v1/segments/preview", json={"filter": by_id}).json["sample"] == ["bob"]
    add(api, "vip", ["bob"])
    users = api.get("/v1/segments/pro-vips/users").json["data"]
    assert [u["userId"] for u in users] == ["ann", "bob"]
    remove(api, "vip", ["ann"])
    users = api.get("/v1/segments/pro-vips/users").json["data"]
    assert [u["userId"] for u in users] == ["bob"]
    # A deleted audience has no members: the segment still works and matches nobody.
    api.delete("/v1/audiences/vip")
    assert api.get("/v1/segments/pro-vips/users").json["data"] == []


def test_projects_are_isolated(app, api, client):
    other = make_project(app, "Other")
    headers = other.auth()
    vip = create(api)
    add(api, "vip", ["ann"])
    for path in (f"/v1/audiences/{vip['id']}", "/v1/audiences/vip", "/v1/audiences/vip/members"):
        assert client.get(path, headers=headers).status_code == 404
    r = client.post(f"/v1/audiences/{vip['id']}/members", headers=headers, json={"userIds": ["x"]})
    assert r.status_code == 404
    assert client.get("/v1/audiences", headers=headers).json["data"] == []
    # Their own "vip" with their own "ann": separate users, separate memberships.
    r = client.post("/v1/audiences", headers=headers, json={"name": "vip"})
    assert r.status_code == 201
    r = client.post("/v1/audiences/vip/members", headers=headers, json={"userIds": ["ann"]})
    assert r.json["results"][0]["created"] is True
    preview = client.post(
        "/v1/segments/preview",
        headers=headers,
        json={"filter": {"audience": str(vip["id"])}},
    )
    assert preview.json == {"count": 0, "sample": []}
    theirs = client.get("/v1/audiences/vip", headers=headers).json
    assert theirs["memberCount"] == 1 and count(api, "vip") == 1
    assert in_segment(api, "vip") == ["ann"]


def test_erased_user_leaves_every_audience(api):
    create(api)
    add(api, "vip", ["ann", "bob"])
    assert api.delete("/v1/users/ann").status_code == 200
    assert member_ids(api, "vip") == ["bob"] and count(api, "vip") == 1


def test_a_membership_batch_does_what_add_and_remove_do(app, api):
    """The event processor's batch (decided in memory, written at flush) against the
    one-call functions, on the same starting memberships and the same operations."""
    names = ["ann", "bob", "cy", "dan", "eve"]
    assert api.post("/v1/users", json=[{"userId": n} for n in names]).status_code < 300
    start: dict[str, dict] = {}
    for ref in ("batched", "direct"):
        start[ref] = create(api, ref)
        add(api, ref, ["bob", "cy", "dan", "eve"])
        remove(api, ref, ["dan"])  # a former member
        expire_now(app, start[ref]["id"], "cy")  # TTL passed, not swept yet
        expire_now(app, start[ref]["id"], "eve")
    now = utcnow()
    # (op, user, ttl); None marks a flush of the batch in the middle
    ops = [
        ("add", "ann", 60),  # new
        ("add", "ann", None),  # refreshed: no expiry now
        ("remove", "bob", None),  # current: removed
        None,
        ("add", "bob", 30),  # rejoins (a row from before the flush)
        ("add", "cy", None),  # expired: a ttl leave at its expiry, then a join
        ("remove", "dan", None),  # former: nothing
        ("remove", "eve", None),  # expired: closed as the sweeper would, not removed
        ("add", "ann", 90),  # refreshed again, after the flush
        ("remove", "ann", None),
        ("add", "ann", 10),
    ]
    with app.app_context(), db.begin() as session:
        pks = {n: session.scalar(select(User.id).where(User.external_id == n)) for n in names}
        project_id = session.scalar(select(User.project_id).where(User.id == pks["ann"]))
        batch = audiences_service.MembershipBatch(session, pks.values(), cause="rule")
        batched, direct = [], []
        for op in ops:
            if op is None:
                batch.flush()
                continue
            kind, name, ttl = op
            a, b = start["batched"]["id"], start["direct"]["id"]
            if kind == "add":
                batched.append(
                    batch.add(
                        project_id=project_id,
                        audience_id=a,
                        user_pk=pks[name],
                        ttl_seconds=ttl,
                        now=now,
                    )
                )
                direct.append(
                    audiences_service.add_members(
                        session,
                        project_id=project_id,
                        audience_id=b,
                        user_pks=[pks[name]],
                        cause="rule",
                        ttl_seconds=ttl,
                        now=now,
                    )[pks[name]]
                )
            else:
                batched.append(
                    batch.remove(project_id=project_id, audience_id=a, user_pk=pks[name], now=now)
                )
                direct.append(
                    pks[name]
                    in audiences_service.remove_members(
                        session,
                        project_id=project_id,
                        audience_id=b,
                        user_pks=[pks[name]],
                        cause="rule",
                        now=now,
                    )
                )
        batch.flush()
    assert batched == direct == [True, False, True, True, True, False, False, False, True, True]

    def rel(t):  # the two audiences were set up at different moments: compare from `now`
        return t if t is None else "before" if t < now else t - now

    def state(ref):
        with app.app_context():
            rows = db.session.execute(
                select(
                    User.external_id,
                    AudienceMember.joined_at,
                    AudienceMember.expires_at,
                    AudienceMember.left_at,
                )
                .join(User, User.id == AudienceMember.user_id)
                .where(AudienceMember.audience_id == start[ref]["id"])
                .order_by(User.external_id)
            )
            return [(name, *map(rel, times)) for name, *times in rows]

    def log(ref):
        return sorted((*c[:3], rel(c[3])) for c in changes(app, start[ref]["id"]))

    assert state("batched") == state("direct")
    assert log("batched") == log("direct")
    assert ("cy", "left", "ttl", "before") in log("batched")
    assert member_ids(api, "batched") == member_ids(api, "direct") == ["ann", "bob", "cy"]
