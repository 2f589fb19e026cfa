"""`Idempotency-Key` on the send endpoints: replay, 409 on another body, errors not kept,
expiry, and two concurrent requests with one key creating a single send."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import requests
from sqlalchemy import create_engine, func, select, text, update

from app.db import db
from app.models.base import utcnow
from app.models.idempotency import IdempotencyKey
from app.models.message import Message, Send
from tests.conftest import make_project, wait_for

KEY = {"Idempotency-Key": "order-17-shipped"}
TEMPLATE = {
    "name": "shipped",
    "defaultLanguage": "en",
    "channels": {"inapp": {"en": {"title": "Shipped", "body": "Order {{ params.order }}"}}},
}


def _count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model)) or 0


def _send_keys(app) -> list[str | None]:
    with app.app_context():
        return list(db.session.scalars(select(Send.idempotency_key).order_by(Send.id)))


def test_notify_repeat_replays_the_first_answer_and_sends_nothing_more(app, api):
    body = {"userIds": ["a", "b"], "title": "Hi", "body": "Welcome"}
    first = api.post("/v1/notify", json=body, headers=KEY)
    assert first.status_code == 202, first.json
    assert "Idempotent-Replayed" not in first.headers
    # The same body with its keys in another order is the same body (canonical JSON).
    again = api.post("/v1/notify", json=dict(reversed(list(body.items()))), headers=KEY)
    assert again.status_code == 202
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _count(app, Message) == 2 and _count(app, Send) == 1
    # The send carries the key (so it can be cancelled by it).
    assert _send_keys(app) == [KEY["Idempotency-Key"]]
    # Without the header nothing is replayed.
    assert api.post("/v1/notify", json=body).json["id"] != first.json["id"]


def test_template_messages_replay_single_and_batch(app, api):
    assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    one = {"template": "shipped", "userId": "u1", "data": {"order": "A-1"}}
    first = api.post("/v1/messages", json=one, headers=KEY)
    assert first.status_code == 200, first.json
    again = api.post("/v1/messages", json=one, headers=KEY)
    assert (again.status_code, again.json) == (200, first.json)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _count(app, Message) == 1
    # A batch under another key: the whole answer (with its per-item errors) is replayed.
    batch = [one, {"template": "nope", "userId": "u2"}]
    headers = {"Idempotency-Key": "batch-1"}
    first = api.post("/v1/messages", json=batch, headers=headers)
    assert first.status_code == 200 and first.json["data"][1]["ok"] is False
    again = api.post("/v1/messages", json=batch, headers=headers)
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert _count(app, Message) == 2


def test_raw_sms_and_notify_batch_take_the_key(app, api):
    sms = {"body": "Your code is 1234", "recipients": [{"to": "+14155550123"}]}
    first = api.post("/v1/messages/sms", json=sms, headers=KEY)
    assert first.status_code == 202, first.json
    again = api.post("/v1/messages/sms", json=sms, headers=KEY)
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    batch = {"segment": "plan:pro", "title": "Pro", "body": "news"}
    first = api.post("/v1/notify/batch", json=batch, headers=KEY)  # same key, other endpoint
    assert first.status_code == 202, first.json
    assert "Idempotent-Replayed" not in first.headers
    again = api.post("/v1/notify/batch", json=batch, headers=KEY)
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert _count(app, Send) == 2


def test_same_key_with_another_body_is_a_409_naming_the_header(app, api):
    api.post("/v1/notify", json={"userId": "a", "body": "one"}, headers=KEY)
    r = api.post("/v1/notify", json={"userId": "a", "body": "two"}, headers=KEY)
    assert r.status_code == 409
    assert "Idempotency-Key" in r.json["errors"] and "Idempotency-Key" in r.json["message"]
    assert _count(app, Message) == 1


def test_keys_are_per_project(app, api, client):
    body = {"userId": "a", "body": "hello"}
    mine = api.post("/v1/notify", json=body, headers=KEY)
    other = make_project(app, name="Other")
    theirs = client.post("/v1/notify", json=body, headers={**other.auth(), **KEY})
    assert theirs.status_code == 202 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.json["id"] != mine.json["id"]


def test_error_answers_are_not_kept_so_a_corrected_retry_runs(app, api):
    bad = api.post("/v1/notify", json={"userId": "a"}, headers=KEY)  # no body: 422
    assert bad.status_code == 422
    good = api.post("/v1/notify", json={"userId": "a", "body": "hello"}, headers=KEY)
    assert good.status_code == 202 and "Idempotent-Replayed" not in good.headers
    assert _count(app, Message) == 1
    # An unknown template (404) is an error too: nothing is kept under that key.
    r = api.post(
        "/v1/messages", json={"template": "x", "userId": "a"}, headers={"Idempotency-Key": "k2"}
    )
    assert r.status_code == 404
    assert _count(app, IdempotencyKey) == 1


def test_a_malformed_key_is_a_400_naming_the_header(app, api):
    for value in ["x" * 256, " leading", "trailing ", "tab\there", "caf\u00e9"]:
        r = api.post(
            "/v1/notify", json={"userId": "a", "body": "x"}, headers={"Idempotency-Key": value}
        )
        assert r.status_code == 400, (value, r.json)
        assert list(r.json["errors"]) == ["Idempotency-Key"]
    assert _count(app, Send) == 0


def test_a_key_is_kept_24_hours_then_free_and_swept(app, api, sweeper):
    body = {"userId": "a", "body": "hello"}
    first = api.post("/v1/notify", json=body, headers={"Idempotency-Key": "x" * 255})
    assert first.status_code == 202
    with app.app_context():
        row = db.session.scalar(select(IdempotencyKey))
        assert timedelta(hours=23) < row.expires_at - utcnow() <= timedelta(hours=24)
        assert row.endpoint == "POST /v1/notify" and row.status_code == 202
        db.session.execute(update(IdempotencyKey).values(expires_at=utcnow() - timedelta(1)))
        db.session.commit()
    again = api.post("/v1/notify", json=body, headers={"Idempotency-Key": "x" * 255})
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers
    assert _count(app, Send) == 2
    # The sweep reclaims expired rows (the live one stays).
    api.post("/v1/notify", json=body, headers={"Idempotency-Key": "other"})
    with app.app_context():
        db.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "other")
            .values(expires_at=utcnow() - timedelta(1))
        )
        db.session.commit()
    assert sweeper().idempotency_keys == 1
    assert _count(app, IdempotencyKey) == 1


def _post_together(url: str, headers: dict, body: dict, n: int = 2) -> list[requests.Response]:
    barrier = threading.Barrier(n)
    out: list[requests.Response] = [None] * n  # type: ignore[list-item]

    def go(i: int) -> None:
        barrier.wait()
        out[i] = requests.post(url, json=body, headers=headers, timeout=30)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_requests_with_one_key_make_one_send(app, project, live_server):
    headers = {**project.auth(), "Idempotency-Key": "race"}
    body = {"userIds": [f"u{i}" for i in range(200)], "body": "hello"}
    answers = _post_together(f"{live_server}/v1/notify", headers, body, n=4)
    assert [r.status_code for r in answers] == [202] * 4
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 3
    assert _count(app, Send) == 1 and _count(app, Message) == 200


def test_a_request_waits_for_the_one_in_flight_with_its_key_then_replays_it(
    app, project, live_server, database_url
):
    """PostgreSQL: B's key insert waits on A's uncommitted row, then B replays A's answer."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises write transactions: the race cannot interleave")
    headers = {**project.auth(), "Idempotency-Key": "in-flight"}
    body = {"userId": "a", "body": "hello"}
    # Refresh the key's lastUsedAt now, so neither request below writes the api_keys row.
    assert requests.get(f"{live_server}/v1/messages", headers=headers, timeout=10).ok
    engine = create_engine(database_url)
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE :q"
    )
    answers: dict[str, requests.Response] = {}

    def blocked(watch, query: str) -> int:
        # A new transaction per look: pg_stat_activity is a snapshot per transaction.
        count = watch.execute(text(waiting), {"q": query}).scalar()
        watch.rollback()
        return count

    def post(name: str) -> None:
        answers[name] = requests.post(
            f"{live_server}/v1/notify", json=body, headers=headers, timeout=30
        )

    with engine.connect() as blocker, engine.connect() as watch:
        # Hold A after it claimed the key: its send insert waits for this lock.
        blocker.execute(text("LOCK TABLE sends IN SHARE ROW EXCLUSIVE MODE"))
        a = threading.Thread(target=post, args=("a",))
        a.start()
        wait_for(lambda: blocked(watch, "INSERT INTO sends%"), 10)
        b = threading.Thread(target=post, args=("b",))
        b.start()
        wait_for(lambda: blocked(watch, "INSERT INTO idempotency_keys%"), 10)
        blocker.rollback()  # release A; B goes on once A has committed
        a.join(10)
        b.join(10)
    engine.dispose()
    assert answers["a"].status_code == answers["b"].status_code == 202
    assert answers["b"].json() == answers["a"].json()
    assert answers["b"].headers["Idempotent-Replayed"] == "true"
    assert _count(app, Send) == 1 and _count(app, Message) == 1


def test_the_header_is_documented_on_each_send_endpoint(client):
    spec = client.get("/openapi.json").json
    for path, method in [
        ("/v1/notify", "post"),
        ("/v1/notify/batch", "post"),
        ("/v1/messages", "post"),
        ("/v1/messages/sms", "post"),
    ]:
        params = spec["paths"][path][method].get("parameters", [])
        [header] = [p for p in params if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header" and header["schema"]["maxLength"] == 255
        assert "requestBody" in spec["paths"][path][method]
