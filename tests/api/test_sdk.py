"""/sdk: the site script and worker files, and the worker's `delivered` reports."""

from __future__ import annotations

import json

from sqlalchemy import select

from app.db import db
from app.models.channels import MessageEvent
from app.models.message import Message, MessageStatusChange
from tests.conftest import make_project


def _message(app, project_id: int, *, channel: str = "push", status: str = "sent") -> int:
    with app.app_context(), db.begin() as session:
        message = Message(project_id=project_id, channel=channel, address="1", status=status)
        session.add(message)
        session.flush()
        return message.id


def _state(app, message_id: int) -> tuple[str, list[str], list[str]]:
    with app.app_context():
        message = db.session.get(Message, message_id)
        kinds = db.session.scalars(
            select(MessageEvent.kind).where(MessageEvent.message_id == message_id)
        ).all()
        history = db.session.scalars(
            select(MessageStatusChange.status).where(MessageStatusChange.message_id == message_id)
        ).all()
        return message.status, list(kinds), list(history)


def _report(client, body: dict, **headers: str):
    # As the worker sends it: text/plain (no CORS preflight), the key in the body.
    return client.post(
        "/sdk/events", data=json.dumps(body), headers={"Content-Type": "text/plain", **headers}
    )


def _get(client, path: str, **headers: str):
    # send_file streams from an open file: close each response (warnings are errors).
    with client.get(path, headers=headers) as response:
        response.get_data()
        return response


def test_the_scripts_are_javascript_with_their_cache_headers(client):
    script = _get(client, "/sdk/cairn.js")
    assert script.status_code == 200 and script.mimetype == "application/javascript"
    assert b"showPrompt" in script.data
    assert script.headers["Cache-Control"] == "public, max-age=3600"
    worker = _get(client, "/sdk/sw.js")
    assert worker.status_code == 200 and worker.mimetype == "application/javascript"
    assert worker.headers["Cache-Control"] == "no-cache"
    assert worker.headers["Service-Worker-Allowed"] == "/"
    assert (
        _get(client, "/sdk/sw.js", **{"If-None-Match": worker.headers["ETag"]}).status_code == 304
    )
    assert _get(client, "/sdk/other.js").status_code == 404


def test_delivered_is_recorded_once_and_moves_sent_to_delivered(app, client, project):
    message_id = _message(app, project.id)
    body = {"key": project.publishable, "kind": "delivered", "messageId": message_id}
    first = _report(client, body)
    assert first.status_code == 200 and first.json == {"recorded": True}
    assert _report(client, body).json == {"recorded": False}
    assert _state(app, message_id) == ("delivered", ["delivered"], ["delivered"])


def test_delivered_never_moves_a_message_back(app, client, project):
    message_id = _message(app, project.id, status="clicked")
    body = {"key": project.publishable, "kind": "delivered", "messageId": message_id}
    assert _report(client, body).json == {"recorded": True}
    assert _state(app, message_id) == ("clicked", ["delivered"], [])


def test_another_projects_or_channels_message_is_ignored(app, client, project):
    other = make_project(app, name="Other")
    theirs = _message(app, other.id)
    email = _message(app, project.id, channel="email")
    for message_id in (theirs, email):
        body = {"key": project.publishable, "kind": "delivered", "messageId": message_id}
        assert _report(client, body).json == {"recorded": False}
        assert _state(app, message_id) == ("sent", [], [])


def test_a_key_in_the_body_must_be_publishable_and_fields_are_checked(app, client, project):
    message_id = _message(app, project.id)
    r = _report(client, {"key": project.secret, "kind": "delivered", "messageId": message_id})
    assert r.status_code == 401 and "key" in r.json["errors"]
    r = _report(client, {"kind": "delivered", "messageId": message_id})
    assert r.status_code == 401
    # The Authorization header serves a caller that can send one.
    r = _report(client, {"kind": "delivered", "messageId": message_id}, **project.auth())
    assert r.json == {"recorded": True}
    r = _report(client, {"key": project.publishable, "kind": "clicked", "messageId": 1})
    assert r.status_code == 422 and "kind" in r.json["errors"]
    r = _report(client, {"key": project.publishable, "kind": "delivered", "messageId": "7"})
    assert r.status_code == 422 and "messageId" in r.json["errors"]
    r = _report(client, {"key": project.publishable, "kind": "delivered", "messageId": 2**64})
    assert r.status_code == 422 and "messageId" in r.json["errors"]
    assert client.post("/sdk/events", data="{", content_type="text/plain").status_code == 400
