"""The event processor end to end: events posted to the API, real in-process workers, rules
moving users between audiences, chains, per-user order, and lost jobs recovered by the sweep."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select, update

from app.db import db
from app.models import AudienceMember, Event, RuleFiring, User
from app.models.base import utcnow
from tests.conftest import wait_for


def audience(api, name):
    r = api.post("/v1/audiences", json={"name": name})
    assert r.status_code == 201, r.json
    return r.json["id"]


def rule(api, name, when, then, **fields):
    r = api.post("/v1/rules", json={"name": name, "when": when, "then": then, **fields})
    assert r.status_code == 201, r.json
    return r.json


def members(api, ref):
    r = api.get(f"/v1/audiences/{ref}/members?limit=1000")
    assert r.status_code == 200, r.json
    return sorted(m["userId"] for m in r.json["data"])


def track(api, *events):
    r = api.post("/v1/events", json=list(events))
    assert r.status_code == 202, r.json
    assert r.json["accepted"] == len(events)


def attributes(api, user_id):
    r = api.get(f"/v1/users/{user_id}")
    assert r.status_code == 200, r.json
    return r.json["attributes"]


def firings(api, rule_ref):
    r = api.get(f"/v1/rules/{rule_ref}/firings?limit=1000")
    assert r.status_code == 200, r.json
    return r.json["data"]


def all_processed(app):
    with app.app_context():
        return db.session.scalar(select(Event.id).where(Event.processed_at.is_(None))) is None


def cart_rules(api):
    """The abandoned-cart rules of the issue."""
    audience(api, "almost bought")
    audience(api, "bought")
    rule(api, "cart", {"event": "add_to_cart"}, [{"addToAudience": "almost bought"}])
    rule(
        api,
        "purchase",
        {"event": "purchase"},
        [{"removeFromAudience": "almost bought"}, {"addToAudience": "bought"}],
    )
    rule(api, "customer", {"audienceEntered": "bought"}, [{"setAttributes": {"customer": True}}])


def test_an_event_moves_the_user_into_an_audience(app, api, workers):
    audience(api, "big carts")
    rule(
        api,
        "big cart",
        {"event": "add_to_cart", "where": {"all": [{"attr": "total", "op": "gte", "value": 100}]}},
        [{"addToAudience": "big carts"}],
    )
    track(
        api,
        {"name": "add_to_cart", "userId": "small", "properties": {"total": 5}},
        {"name": "add_to_cart", "userId": "big", "properties": {"total": 150}},
    )
    wait_for(lambda: members(api, "big carts") == ["big"])
    wait_for(lambda: all_processed(app))
    assert members(api, "big carts") == ["big"]
    [firing] = firings(api, "big cart")
    assert firing["userId"] == "big" and firing["status"] == "fired"
    assert firing["cause"] == {"event": "add_to_cart", "chain": []}
    assert firing["actions"][0]["result"] == "joined"


def test_a_rule_adds_with_its_ttl(app, api, workers):
    # Stored as JSONB on PostgreSQL, the action comes back as {"ttlSeconds": .., "addToAudience":
    # ..}: the processor once took the first key for its kind and skipped every such action.
    audience(api, "browsing")
    rule(api, "browse", {"event": "view"}, [{"addToAudience": "browsing", "ttlSeconds": 600}])
    track(api, {"name": "view", "userId": "vic"})
    wait_for(lambda: members(api, "browsing") == ["vic"])
    [firing] = firings(api, "browse")
    assert firing["actions"][0]["result"] == "joined"
    with app.app_context():
        [expires] = db.session.scalars(select(AudienceMember.expires_at))
    assert timedelta(seconds=590) < expires - utcnow() <= timedelta(seconds=600)


def test_the_abandoned_cart_chain(app, api, workers):
    cart_rules(api)
    track(api, {"name": "add_to_cart", "userId": "ann"}, {"name": "add_to_cart", "userId": "bob"})
    wait_for(lambda: members(api, "almost bought") == ["ann", "bob"])
    track(api, {"name": "purchase", "userId": "ann"})
    wait_for(lambda: attributes(api, "ann").get("customer") is True)
    assert members(api, "almost bought") == ["bob"]
    assert members(api, "bought") == ["ann"]
    assert "customer" not in attributes(api, "bob")
    [chained] = firings(api, "customer")
    assert chained["userId"] == "ann" and chained["depth"] == 1
    purchase_rule = api.get("/v1/rules/purchase").json["id"]
    assert chained["cause"]["chain"] == [purchase_rule]
    assert chained["cause"]["audience"] == "bought"
    [bought] = firings(api, "purchase")
    assert [a["result"] for a in bought["actions"]] == ["left", "joined"]


def test_if_sees_the_audience_change_the_same_event_just_made(api, workers):
    audience(api, "tried")
    audience(api, "both")
    rule(api, "a", {"event": "try"}, [{"addToAudience": "tried"}], priority=1)
    # Runs after "a" (priority): its `if` sees the membership "a" just added.
    rule(
        api,
        "b",
        {"event": "try"},
        [{"addToAudience": "both"}],
        priority=2,
        **{"if": {"audience": "tried"}},
    )
    track(api, {"name": "try", "userId": "u"})
    wait_for(lambda: members(api, "both") == ["u"])
    rule(api, "never", {"event": "try"}, [{"setAttributes": {"x": 1}}], **{"if": "plan:pro"})
    track(api, {"name": "try", "userId": "u"})
    wait_for(lambda: firings(api, "never"))
    [skipped] = firings(api, "never")
    assert skipped["status"] == "skipped" and skipped["actions"] == []
    assert "x" not in attributes(api, "u")


def test_each_users_events_apply_in_order_under_concurrent_workers(app, api, project, workers):
    audience(api, "carting")
    audience(api, "buyers")
    rule(
        api,
        "cart",
        {"event": "add_to_cart"},
        [{"addToAudience": "carting"}, {"removeFromAudience": "buyers"}],
    )
    rule(
        api,
        "buy",
        {"event": "purchase"},
        [{"removeFromAudience": "carting"}, {"addToAudience": "buyers"}],
    )
    users = [f"user{n}" for n in range(6)]
    last: dict[str, str] = {}

    def post_for(user_id: str, seed: int) -> None:
        client = app.test_client()
        names = ["add_to_cart", "purchase"]
        for i in range(12):
            name = names[(i * seed + i // 3) % 2]
            r = client.post(
                "/v1/events",
                json={"name": name, "userId": user_id},
                headers=project.auth(),
            )
            assert r.status_code == 202
            last[user_id] = name

    threads = [threading.Thread(target=post_for, args=(u, n + 1)) for n, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: all_processed(app), timeout=60)
    expected_buyers = sorted(u for u in users if last[u] == "purchase")
    assert members(api, "buyers") == expected_buyers
    assert members(api, "carting") == sorted(set(users) - set(expected_buyers))
    # Every user's firings were recorded in the order of their events.
    with app.app_context():
        rows = db.session.execute(
            select(RuleFiring.user_id, RuleFiring.event_id).order_by(RuleFiring.id)
        ).all()
    by_user: dict[int, list[int]] = {}
    for user_pk, event_id in rows:
        by_user.setdefault(user_pk, []).append(event_id)
    assert len(by_user) == len(users)
    for events in by_user.values():
        assert events == sorted(events) and len(events) == 12


def test_the_chain_depth_bound_and_once_per_event_are_recorded(api, workers):
    for i in range(1, 12):
        audience(api, f"level{i}")
    rule(api, "r0", {"event": "go"}, [{"addToAudience": "level1"}])
    for i in range(1, 11):
        rule(api, f"r{i}", {"audienceEntered": f"level{i}"}, [{"addToAudience": f"level{i + 1}"}])
    track(api, {"name": "go", "userId": "deep"})
    wait_for(lambda: firings(api, "r10"))
    [stopped] = firings(api, "r10")
    assert stopped["status"] == "stopped" and stopped["reason"] == "chain depth 10 reached"
    assert stopped["depth"] == 10 and len(stopped["cause"]["chain"]) == 10
    assert firings(api, "r9")[0]["status"] == "fired"
    assert members(api, "level10") == ["deep"] and members(api, "level11") == []

    audience(api, "loop")
    rule(api, "in", {"event": "spin"}, [{"addToAudience": "loop"}])
    rule(api, "out", {"audienceEntered": "loop"}, [{"removeFromAudience": "loop"}])
    rule(api, "again", {"audienceLeft": "loop"}, [{"addToAudience": "loop"}])
    track(api, {"name": "spin", "userId": "dizzy"})
    wait_for(lambda: len(firings(api, "out")) == 2)
    newest, first = firings(api, "out")
    assert first["status"] == "fired"
    assert newest["status"] == "stopped" and newest["reason"] == "rule already fired for this event"
    assert members(api, "loop") == ["dizzy"]


def test_a_lost_job_is_recovered_by_the_sweep(app, api, project, workers, sweeper):
    audience(api, "recovered")
    rule(api, "r", {"event": "lost"}, [{"addToAudience": "recovered"}])
    now = utcnow()
    with app.app_context(), db.begin() as session:
        user = User(project_id=project.id, external_id="lucky", attributes={})
        session.add(user)
        session.flush()
        # Stored without its processing job, as when the broker was down at commit.
        session.add(
            Event(
                project_id=project.id,
                user_id=user.id,
                name="lost",
                properties={},
                timestamp=now,
                received_at=now,
            )
        )
    app.config["EVENT_PENDING_SECONDS"] = 0.2
    assert not all_processed(app)
    wait_for(lambda: sweeper().pending_events > 0)
    wait_for(lambda: members(api, "recovered") == ["lucky"])
    wait_for(lambda: all_processed(app))


def test_changes_made_outside_the_processor_trigger_rules(app, api, workers):
    audience(api, "vip")
    audience(api, "pro users")
    rule(api, "welcome", {"audienceEntered": "vip"}, [{"setAttributes": {"welcomed": True}}])
    rule(api, "bye", {"audienceLeft": "vip"}, [{"setAttributes": {"welcomed": None}}])
    rule(
        api,
        "upgrade",
        {"attributeChanged": "plan", "to": "pro"},
        [{"addToAudience": "pro users"}],
    )
    r = api.post("/v1/audiences/vip/members", json={"userIds": ["val"]})
    assert r.status_code == 200
    wait_for(lambda: attributes(api, "val").get("welcomed") is True)
    [firing] = firings(api, "welcome")
    assert firing["cause"] == {
        "audienceEntered": str(api.get("/v1/audiences/vip").json["id"]),
        "audience": "vip",
        "chain": [],
    }
    api.delete("/v1/audiences/vip/members", json={"userIds": ["val"]})
    wait_for(lambda: "welcomed" not in attributes(api, "val"))

    assert (
        api.post("/v1/users", json={"userId": "pat", "attributes": {"plan": "free"}}).status_code
        < 300
    )
    assert (
        api.post("/v1/users", json={"userId": "pat", "attributes": {"plan": "pro"}}).status_code
        < 300
    )
    wait_for(lambda: members(api, "pro users") == ["pat"])
    [upgrade] = firings(api, "upgrade")
    assert upgrade["cause"]["from"] == "free" and upgrade["cause"]["to"] == "pro"


def test_ttl_expiry_and_identify_trigger_rules(app, api, workers, sweeper):
    audience(api, "trial")
    audience(api, "enterprise")
    rule(api, "expired", {"audienceLeft": "trial"}, [{"setAttributes": {"trialOver": True}}])
    rule(
        api,
        "big",
        {"attributeChanged": "tier", "to": "enterprise"},
        [{"addToAudience": "enterprise"}],
    )
    assert (
        api.post(
            "/v1/audiences/trial/members", json={"userIds": ["tess"], "ttlSeconds": 60}
        ).status_code
        == 200
    )
    with app.app_context(), db.begin() as session:
        # The TTL passes (rather than waiting a minute).
        session.execute(update(AudienceMember).values(expires_at=utcnow() - timedelta(seconds=1)))
    wait_for(lambda: sweeper().memberships > 0)
    wait_for(lambda: attributes(api, "tess").get("trialOver") is True)
    [left] = firings(api, "expired")
    assert left["cause"]["audience"] == "trial"

    r = api.post("/v1/identify", json={"userId": "ivy", "traits": {"tier": "enterprise"}})
    assert r.status_code < 300, r.json
    wait_for(lambda: members(api, "enterprise") == ["ivy"])
    # Unchanged traits are no change: no second firing.
    api.post("/v1/identify", json={"userId": "ivy", "traits": {"tier": "enterprise"}})
    wait_for(lambda: all_processed(app))
    assert len(firings(api, "big")) == 1


def test_global_events_and_redelivered_jobs(app, api, workers):
    audience(api, "seen")
    rule(api, "on launch", {"event": "launch"}, [{"addToAudience": "seen"}])
    rule(api, "on visit", {"event": "visit"}, [{"addToAudience": "seen"}])
    track(api, {"name": "launch", "properties": {"v": 2}})  # no user: a global event
    wait_for(lambda: firings(api, "on launch"))
    [firing] = firings(api, "on launch")
    assert firing["userId"] is None and firing["status"] == "fired"
    assert firing["actions"] == [
        {
            "addToAudience": firing["actions"][0]["addToAudience"],
            "result": "skipped",
            "reason": "global event: no user",
        }
    ]
    track(api, {"name": "visit", "userId": "once"})
    wait_for(lambda: members(api, "seen") == ["once"])
    wait_for(lambda: all_processed(app))
    from workers.events import process_events

    with app.app_context():
        ids = list(db.session.scalars(select(Event.id)))
    with db.sessionmaker() as session:
        # The same job delivered again (Redis requeues unacked work): nothing runs twice.
        assert process_events(session, ids, dict(app.config)) == 0
    assert len(firings(api, "on visit")) == 1 and len(firings(api, "on launch")) == 1


def test_a_user_being_processed_can_still_send_events(app, api, database_url):
    """The processor holds a user's processing lock, not the row ingestion locks: a POST for
    that user is stored while a job works on the user's earlier events (it once waited for the
    job's commit), and a second job cannot take the same user meanwhile."""
    import pytest

    from app.services import user_locks
    from workers.events import _lock_users

    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serializes writers: the POST waits for any writer by design")
    track(api, {"name": "first", "userId": "busy"})
    with app.app_context():
        pk = db.session.scalar(select(User.id).where(User.external_id == "busy"))
        db.session.commit()
        with db.sessionmaker() as job, db.sessionmaker() as other:
            assert [u.id for u in _lock_users(job, [pk])] == [pk]
            assert user_locks.try_lock(other, [pk]) == set()
            other.rollback()
            answers: dict = {}
            poster = threading.Thread(
                target=lambda: answers.update(
                    r=api.post("/v1/events", json={"name": "second", "userId": "busy"})
                )
            )
            poster.start()
            poster.join(30)
            stored = not poster.is_alive()
            job.rollback()  # releases the lock (a hung POST then finishes too)
            poster.join(30)
    assert stored, "the POST waited for the processing job"
    assert answers["r"].status_code == 202
    with app.app_context():
        names = db.session.scalars(select(Event.name).where(Event.user_id == pk).order_by(Event.id))
        assert list(names) == ["first", "second"]


def test_a_job_takes_along_older_events_of_users_no_job_holds(app, api, database_url):
    """Events posted one by one share jobs behind a backlog: a job given c's event also
    processes a's older one and d's newer one, and leaves b's to whoever holds b."""
    from app.services import user_locks
    from workers.events import process_events

    track(api, {"name": "x", "userId": "a"}, {"name": "x", "userId": "b"})
    track(api, {"name": "x", "userId": "c"})
    track(api, {"name": "x", "userId": "d"})  # newer than c's: behind a backlog, most are
    with app.app_context():
        ids = {
            n: v
            for n, v in db.session.execute(
                select(User.external_id, Event.id).join(User, User.id == Event.user_id)
            )
        }
        b = db.session.scalar(select(User.id).where(User.external_id == "b"))
        db.session.commit()
        postgres = database_url.startswith("postgresql")
        with db.sessionmaker() as holder, db.sessionmaker() as session:
            if postgres:
                assert user_locks.try_lock(holder, [b]) == {b}
            assert process_events(session, [ids["c"]], dict(app.config)) == (3 if postgres else 4)
            holder.rollback()
        rows = db.session.execute(
            select(User.external_id, Event.processed_at).join(User, User.id == Event.user_id)
        )
        processed = {name: at is not None for name, at in rows}
    assert processed == {"a": True, "b": not postgres, "c": True, "d": True}
