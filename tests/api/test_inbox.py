"""The in-app inbox and its SSE stream, read by a real HTTP client over a socket."""

from __future__ import annotations

import pytest
import requests

from app.services.projects import user_hash
from tests.conftest import wait_for
from tests.sse import SseReader


@pytest.fixture(autouse=True, scope="module")
def _close_hubs():
    """Stop this process's PostgreSQL listeners before the test database goes away."""
    yield
    from app.realtime import close_hubs

    close_hubs()


def _params(project, user_id: str) -> dict:
    return {
        "key": project.publishable,
        "userId": user_id,
        "userHash": user_hash(project.identity_secret, user_id),
    }


def test_stream_delivers_new_messages_and_replays_what_was_missed(
    app, api, project, live_server, workers
):
    api.post("/v1/users", json={"userId": "ann"})
    stream = SseReader(live_server + "/v1/inbox/stream", _params(project, "ann"))
    assert stream.response.status_code == 200
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    assert stream.response.headers["Cache-Control"] == "no-cache"
    try:
        first = api.post("/v1/notify", json={"userId": "ann", "title": "One", "body": "1"})
        got = stream.next_message()
        assert got["id"] == first.json["messageIds"][0] and got["title"] == "One"
    finally:
        stream.close()
    # While disconnected, two more arrive; reconnecting with Last-Event-ID replays them.
    ids = [
        api.post("/v1/notify", json={"userId": "ann", "body": b}).json["messageIds"][0]
        for b in ("two", "three")
    ]
    wait_for(lambda: api.get("/v1/inbox", query_string={"userId": "ann"}).json["unreadCount"] == 3)
    again = SseReader(
        live_server + "/v1/inbox/stream",
        _params(project, "ann"),
        headers={"Last-Event-ID": str(got["id"])},
    )
    try:
        replayed = [again.next_message(), again.next_message()]
        assert [m["id"] for m in replayed] == ids
        assert [m["body"] for m in replayed] == ["two", "three"]
    finally:
        again.close()


def test_stream_requires_a_valid_user_hash(project, live_server, api):
    api.post("/v1/users", json={"userId": "ann"})
    url = live_server + "/v1/inbox/stream"
    bad = requests.get(url, params={**_params(project, "ann"), "userHash": "0" * 64}, timeout=5)
    assert bad.status_code == 403 and bad.json()["errors"]["userHash"]
    missing = requests.get(url, params={"key": project.publishable, "userId": "ann"}, timeout=5)
    assert missing.status_code == 401
    other = requests.get(url, params={**_params(project, "bob"), "userId": "ann"}, timeout=5)
    assert other.status_code == 403


def test_inbox_read_archive_and_unread_count(app, client, api, project, workers):
    for body in ("a", "b", "c"):
        api.post("/v1/notify", json={"userId": "ann", "body": body})
    params = _params(project, "ann")
    wait_for(lambda: len(client.get("/v1/inbox", query_string=params).json["data"]) == 3)
    inbox = client.get("/v1/inbox", query_string=params).json
    assert [m["body"] for m in inbox["data"]] == ["c", "b", "a"]  # newest first
    assert inbox["unreadCount"] == 3
    newest = inbox["data"][0]["id"]
    assert client.post(f"/v1/inbox/{newest}/read", query_string=params).status_code == 200
    assert client.get("/v1/inbox", query_string=params).json["unreadCount"] == 2
    detail = api.get(f"/v1/messages/{newest}").json
    assert detail["status"] == "opened"
    client.post(f"/v1/inbox/{inbox['data'][1]['id']}/archive", query_string=params)
    assert [m["body"] for m in client.get("/v1/inbox", query_string=params).json["data"]] == [
        "c",
        "a",
    ]
    archived = client.get("/v1/inbox", query_string={**params, "archived": "1"}).json["data"]
    assert [m["body"] for m in archived] == ["b"]
    r = client.post("/v1/inbox/read-all", query_string=params)
    assert r.json["updated"] == 1  # "a": "b" was put away unread, which is not reading it
    assert client.get("/v1/inbox", query_string=params).json["unreadCount"] == 0
    assert api.get(f"/v1/messages/{archived[0]['id']}").json["status"] == "sent"
    assert api.get(f"/v1/messages/{inbox['data'][2]['id']}").json["status"] == "opened"
    # Read in the archive, it is read and opened.
    r = client.post(f"/v1/inbox/{archived[0]['id']}/read", query_string=params)
    assert r.json["updated"] == 1
    assert api.get(f"/v1/messages/{archived[0]['id']}").json["status"] == "opened"
    # Another user's message id is not in this inbox.
    api.post("/v1/notify", json={"userId": "bob", "body": "x"})
    bob_id = wait_for(
        lambda: client.get("/v1/inbox", query_string=_params(project, "bob")).json["data"]
    )[0]["id"]
    assert client.post(f"/v1/inbox/{bob_id}/read", query_string=params).status_code == 404


def test_frames_published_out_of_order_all_reach_the_stream(app, api, project, live_server):
    """Concurrent workers publish out of id order; no frame may be dropped."""
    from sqlalchemy import select

    from app.db import db
    from app.models import User
    from app.realtime import get_hub, stream_key

    api.post("/v1/users", json={"userId": "ann"})
    with app.app_context():
        pk = db.session.scalar(select(User.id).where(User.external_id == "ann"))
    stream = SseReader(live_server + "/v1/inbox/stream", _params(project, "ann"))
    try:
        assert stream.events.get(timeout=10) == {"comment": "connected"}
        hub = get_hub(app.config)
        for message_id in (5, 3, 4, 9, 1):
            hub.publish(
                stream_key(project.id, pk), {"id": message_id, "content": {"body": str(message_id)}}
            )
        got = [stream.next_message()["id"] for _ in range(5)]
        assert got == [5, 3, 4, 9, 1]
    finally:
        stream.close()


@pytest.mark.parametrize(
    ("path", "query", "headers", "field"),
    [
        ("/v1/inbox", {"limit": "abc"}, {}, "limit"),
        ("/v1/inbox", {"limit": "-1"}, {}, "limit"),
        ("/v1/inbox", {"limit": "0"}, {}, "limit"),
        ("/v1/inbox", {"cursor": "%%%"}, {}, "cursor"),
        ("/v1/inbox", {"cursor": "99999999999999999999999"}, {}, "cursor"),
        ("/v1/inbox", {"archived": "maybe"}, {}, "archived"),
        ("/v1/inbox/stream", {"lastEventId": "xyz"}, {}, "lastEventId"),
        ("/v1/inbox/stream", {"lastEventId": "99999999999999999999999"}, {}, "lastEventId"),
        ("/v1/inbox/stream", {}, {"Last-Event-ID": "xyz"}, "Last-Event-ID"),
        ("/v1/inbox/stream", {}, {"Last-Event-ID": "-5"}, "Last-Event-ID"),
    ],
)
def test_junk_paging_and_replay_values_are_a_400_naming_the_field(
    client, api, project, path, query, headers, field
):
    api.post("/v1/users", json={"userId": "ann"})
    r = client.get(path, query_string={**_params(project, "ann"), **query}, headers=headers)
    try:
        # Never read the body of a 200 here: it would be an endless stream.
        assert r.status_code == 400
        assert field in r.json["errors"] and field in r.json["message"]
    finally:
        r.close()


def test_sane_paging_values_still_work(app, client, api, project, workers):
    for body in ("a", "b", "c"):
        api.post("/v1/notify", json={"userId": "ann", "body": body})
    params = _params(project, "ann")
    wait_for(lambda: len(client.get("/v1/inbox", query_string=params).json["data"]) == 3)
    first = client.get("/v1/inbox", query_string={**params, "limit": "2"}).json
    assert [m["body"] for m in first["data"]] == ["c", "b"] and first["nextCursor"]
    rest = client.get(
        "/v1/inbox", query_string={**params, "limit": "2", "cursor": first["nextCursor"]}
    ).json
    assert [m["body"] for m in rest["data"]] == ["a"] and rest["nextCursor"] is None
    # Above the page cap the page is capped, as before; unknown parameters are ignored.
    big = client.get("/v1/inbox", query_string={**params, "limit": "1000", "_": "17"})
    assert big.status_code == 200 and len(big.json["data"]) == 3


@pytest.mark.parametrize("action", ["read", "archive"])
def test_a_message_id_beyond_64_bits_is_refused_not_a_500(client, api, project, action):
    api.post("/v1/users", json={"userId": "ann"})
    for message_id in (2**63, 371637718278967721984):
        r = client.post(f"/v1/inbox/{message_id}/{action}", query_string=_params(project, "ann"))
        assert r.status_code in (400, 404)
        assert {"messageId", "message_id"} & set(r.json["errors"])


@pytest.mark.parametrize("path", ["/v1/inbox", "/v1/inbox/stream"])
def test_secret_keys_and_tokens_are_refused_in_the_query_string(
    client, api, project, live_server, path
):
    api.post("/v1/users", json={"userId": "ann"})
    token = client.post(
        "/v1/auth/token", json={"accessKey": project.access_key, "secretKey": project.secret}
    ).json["data"]

    def status(params: dict) -> tuple[int, dict | None]:
        # stream=True: an accepted stream never ends, so read a body only when it is an error.
        with requests.get(live_server + path, params=params, timeout=10, stream=True) as r:
            return r.status_code, (r.json() if r.status_code != 200 else None)

    for credential in (project.secret, token):
        # Without userHash: a secret credential in the URL used to skip the identity check.
        code, body = status({"key": credential, "userId": "ann"})
        assert code == 401 and body is not None
        assert "query string" in body["message"] and body["errors"]["key"]
    # With a valid userHash too: the key itself is refused, so nobody learns to put it there.
    assert status({**_params(project, "ann"), "key": project.secret})[0] == 401
    posted = client.post(
        "/v1/inbox/read-all", query_string={"key": project.secret, "userId": "ann"}
    )
    assert posted.status_code == 401
    # The secret key in the Authorization header (a backend) still reads any user's inbox.
    assert api.get("/v1/inbox", query_string={"userId": "ann"}).status_code == 200


def test_publishable_key_in_the_header_still_needs_the_user_hash(client, api, project):
    api.post("/v1/users", json={"userId": "ann"})
    r = client.get("/v1/inbox", query_string={"userId": "ann"}, headers=project.auth("pk"))
    assert r.status_code == 401 and r.json["errors"]["userHash"]
    hashed = {"userId": "ann", "userHash": user_hash(project.identity_secret, "ann")}
    ok = client.get("/v1/inbox", query_string=hashed, headers=project.auth("pk"))
    assert ok.status_code == 200


def test_a_message_too_large_for_a_notification_still_reaches_the_stream(
    app, api, project, live_server, workers
):
    """PostgreSQL NOTIFY carries < 8000 bytes: a larger frame is loaded from the database."""
    api.post("/v1/users", json={"userId": "ann"})
    stream = SseReader(live_server + "/v1/inbox/stream", _params(project, "ann"))
    try:
        stream.wait_connected()
        body = "é" * 6000  # 12,000 bytes of UTF-8
        sent = api.post(
            "/v1/notify",
            json={"userId": "ann", "title": "Big", "body": body, "data": {"n": 1}},
        )
        assert sent.status_code == 202, sent.json
        got = stream.next_message()
        assert got["id"] == sent.json["messageIds"][0]
        assert (got["title"], got["body"], got["data"]) == ("Big", body, {"n": 1})
    finally:
        stream.close()


def test_actions_take_the_user_from_a_json_body_too(client, api, project):
    api.post("/v1/users", json={"userId": "ann"})
    key = {"key": project.publishable}
    body = {"userId": "ann", "userHash": user_hash(project.identity_secret, "ann")}
    ok = client.post("/v1/inbox/read-all", query_string=key, json=body)
    assert ok.status_code == 200 and ok.json == {"updated": 0}
    bad = client.post("/v1/inbox/read-all", query_string=key, json={**body, "userHash": 5})
    assert bad.status_code == 400 and bad.json["errors"]["userHash"]
    wrong = client.post("/v1/inbox/read-all", query_string=key, json=[body])
    assert wrong.status_code == 400
