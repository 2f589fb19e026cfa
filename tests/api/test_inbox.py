"""The in-app inbox and its SSE stream, read by a real HTTP client over a socket."""

from __future__ import annotations

import json
import queue
import threading

import requests

from app.services.projects import user_hash
from tests.conftest import wait_for


class SseReader:
    """Reads an SSE stream in a thread, parsing events as a browser's EventSource does."""

    def __init__(self, url: str, params: dict, headers: dict | None = None) -> None:
        self.events: queue.Queue = queue.Queue()
        self.response = requests.get(
            url, params=params, headers=headers or {}, stream=True, timeout=(5, 60)
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event: dict = {}
        try:
            for raw in self.response.iter_lines(chunk_size=1, decode_unicode=True):
                if raw == "":
                    if "data" in event:
                        self.events.put(event)
                    event = {}
                elif raw.startswith(":"):
                    self.events.put({"comment": raw[1:].strip()})
                else:
                    name, _, value = raw.partition(":")
                    event[name] = value.lstrip()
        except Exception:
            pass

    def next_message(self, timeout: float = 20) -> dict:
        while True:
            event = self.events.get(timeout=timeout)
            if "data" in event:
                return {"id": int(event["id"]), **json.loads(event["data"])}

    def close(self) -> None:
        self.response.close()


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
    client.post("/v1/inbox/read-all", query_string=params)
    assert client.get("/v1/inbox", query_string=params).json["unreadCount"] == 0
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
        hub = get_hub(None)
        for message_id in (5, 3, 4, 9, 1):
            hub.publish(
                stream_key(project.id, pk), {"id": message_id, "content": {"body": str(message_id)}}
            )
        got = [stream.next_message()["id"] for _ in range(5)]
        assert got == [5, 3, 4, 9, 1]
    finally:
        stream.close()
