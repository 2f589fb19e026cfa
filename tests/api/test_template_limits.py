"""Hostile templates over HTTP: previews fail fast with the field named, the API keeps answering,
and a message whose template blows a cap fails with the reason while the next one is sent."""

from __future__ import annotations

import resource
import threading
import time

import requests
from sqlalchemy import select

from app.db import db
from app.models.message import Message
from tests.conftest import wait_for

# Each took seconds to minutes of CPU (holding the interpreter lock) and up to gigabytes.
HOSTILE = {
    "grid": "{{ ([[1]*20000]*20000)|string|length }}",
    "doubling": (
        "{% set ns = namespace(s='x'*1000) %}{% for i in range(30) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
    ),
    "loops": (
        "{% set l = range(1000)|list %}{% for a in l %}{% for b in l %}{% for c in l %}"
        "{% endfor %}{% endfor %}{% endfor %}"
    ),
    "format": "{{ ('%(a)s' * 150000) % {'a': 'x'*9999} }}",
    "indent": "{{ ('x\\n'*400000)|indent(9000) }}",
    # Stock Jinja would run these filters while compiling, on creation and on every preview.
    "folded": "{{ '" + "ab" * 5000 + "'" + "|wordwrap(1)" * 150 + " }}",
}


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_hostile_previews_fail_fast_and_healthz_keeps_answering(api, project, live_server):
    started = time.monotonic()
    for name, source in HOSTILE.items():
        r = api.post(
            "/v1/templates", json={"name": name, "channels": {"sms": {"en": {"body": source}}}}
        )
        assert r.status_code == 201, r.json
    assert time.monotonic() - started < 10, "creating (compiling) must not run the template"
    headers = project.auth()
    rss_before = _maxrss_mb()
    health: list[float] = []
    previews: dict[str, tuple[float, int, dict]] = {}
    done = threading.Event()

    def send_previews() -> None:
        try:
            with requests.Session() as http:
                for name in HOSTILE:
                    began = time.monotonic()
                    r = http.post(
                        f"{live_server}/v1/templates/{name}/preview",
                        json={},
                        headers=headers,
                        timeout=60,
                    )
                    previews[name] = (time.monotonic() - began, r.status_code, r.json())
        finally:
            done.set()

    sender = threading.Thread(target=send_previews)
    sender.start()
    with requests.Session() as http:
        while not done.is_set():
            began = time.monotonic()
            r = http.get(f"{live_server}/healthz", timeout=30)
            assert r.status_code == 200
            health.append(time.monotonic() - began)
            time.sleep(0.02)
    sender.join(timeout=60)

    assert set(previews) == set(HOSTILE)
    for name, (elapsed, status, body) in previews.items():
        assert status == 200, (name, body)
        assert body["data"] == {}, name
        assert body["errors"]["sms"].startswith("sms.en.body"), (name, body)
        assert "limit exceeded" in body["errors"]["sms"], (name, body)
        # Generous for a busy machine; each took 18 s or more before.
        assert elapsed < 5, (name, elapsed)
    assert health and max(health) < 5, f"/healthz took up to {max(health):.2f} s"
    # The whole process's peak memory barely moved (1.4 GB for the first template before).
    assert _maxrss_mb() - rss_before < 200


def _messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def test_a_hostile_template_fails_its_message_with_the_reason(app, api, workers):
    for name, body in (("bomb", HOSTILE["grid"]), ("fine", "Hello {{ params.who }}")):
        r = api.post(
            "/v1/templates",
            json={"name": name, "channels": {"inapp": {"en": {"title": "t", "body": body}}}},
        )
        assert r.status_code == 201, r.json
    assert api.post("/v1/messages", json={"template": "bomb", "userId": "u1"}).status_code == 200
    r = api.post("/v1/messages", json={"template": "fine", "userId": "u1", "data": {"who": "Ann"}})
    assert r.status_code == 200, r.json
    wait_for(lambda: {m.status for m in _messages(app)} == {"failed", "sent"})
    failed, sent = _messages(app)
    assert failed.status == "failed"
    assert failed.reason and "inapp.en.body line 1: limit exceeded: repetition" in failed.reason
    assert sent.rendered["body"] == "Hello Ann"
