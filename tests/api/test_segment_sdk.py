"""Segment SDK paths as analytics.js and the mobile SDKs call them: short paths, keys, settings."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import select

from app.db import db
from app.models import Event
from tests.conftest import user_events

TEXT = "text/plain;charset=UTF-8"


def _event_count(app) -> int:
    with app.app_context():
        return len(db.session.scalars(select(Event.id)).all())


def _post(client, path: str, body, *, headers=None, query: str = ""):
    """Post as analytics.js does: JSON text with Content-Type text/plain, no header by default."""
    return client.post(
        f"{path}{query}", data=json.dumps(body), content_type=TEXT, headers=headers or {}
    )


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_each_short_path_takes_text_plain_json_with_the_key_in_the_body(app, client, project, api):
    key = {"writeKey": project.publishable, "anonymousId": "visitor"}
    calls = [
        ("/v1/p", {"type": "page", "name": "Pricing", "properties": {"path": "/pricing"}}),
        ("/v1/t", {"type": "track", "event": "Viewed Plan", "properties": {"plan": "pro"}}),
        ("/v1/s", {"type": "screen", "name": "Home"}),
        ("/v1/g", {"type": "group", "groupId": "acme", "traits": {"seats": 3}}),
        ("/v1/a", {"type": "alias", "userId": "ann", "previousId": "visitor"}),
        ("/v1/i", {"type": "identify", "userId": "ann", "traits": {"plan": "pro"}}),
        ("/v1/t", {"type": "track", "event": "Signed Up", "userId": "ann"}),
    ]
    for path, call in calls:
        r = _post(client, path, {**key, **call, "sentAt": "2026-01-01T00:00:00Z"})
        assert r.status_code == 200, (path, r.json)
        assert r.json["success"] is True and r.json["rejected"] == 0
    assert user_events(app, "ann") == ["$page", "Viewed Plan", "$screen", "Signed Up"]
    profile = api.get("/v1/users/ann").json
    assert profile["anonymousIds"] == ["visitor"]
    assert profile["attributes"]["plan"] == "pro"


def test_short_paths_take_the_basic_header_analytics_next_also_sends(app, client, project):
    body = {"writeKey": project.publishable, "type": "track", "event": "e", "userId": "u"}
    assert _post(client, "/v1/t", body, headers=_basic(project.publishable)).status_code == 200
    # Without a body key (older SDK builds or server clients): the header alone, any key kind.
    del body["writeKey"]
    assert _post(client, "/v1/t", body, headers=_basic(project.secret)).status_code == 200
    assert user_events(app, "u") == ["e", "e"]


def test_a_publishable_key_in_the_query_string_is_taken(app, client, project):
    body = {"type": "track", "event": "q", "userId": "qu"}
    r = _post(client, "/v1/t", body, query=f"?writeKey={project.publishable}")
    assert r.status_code == 200, r.json
    assert _post(client, "/v1/t", body, query=f"?key={project.publishable}").status_code == 200
    assert user_events(app, "qu") == ["q", "q"]


def test_a_secret_key_in_a_page_is_refused_and_nothing_is_stored(app, client, project, api):
    token = api.post(
        "/v1/auth/token", json={"accessKey": project.access_key, "secretKey": project.secret}
    ).json["data"]
    call = {"type": "track", "event": "leak", "userId": "v"}
    for key in (project.secret, token):
        # analytics.js sends the same key as Basic too: the body key still decides.
        r = _post(client, "/v1/t", {**call, "writeKey": key}, headers=_basic(key))
        assert r.status_code == 401, r.json
        assert r.json["errors"] == {"writeKey": ["not a publishable key"]}
        assert "publishable" in r.json["message"]
        r = _post(client, "/v1/b", {"batch": [call], "writeKey": key})
        assert r.status_code == 401
        r = _post(client, "/v1/t", call, query=f"?writeKey={key}")
        assert r.status_code == 401 and "writeKey" in r.json["errors"]
        assert client.get(f"/v1/projects/{key}/settings").status_code == 401
    assert _event_count(app) == 0


def test_missing_unknown_or_malformed_keys(client, project):
    call = {"type": "track", "event": "x", "userId": "u"}
    r = _post(client, "/v1/t", call)
    assert r.status_code == 401 and r.json["errors"] == {"writeKey": ["missing"]}
    r = _post(client, "/v1/t", {**call, "writeKey": "pk_" + "0" * 40})
    assert r.status_code == 401
    r = _post(client, "/v1/t", {**call, "writeKey": 42})
    assert r.status_code == 400 and r.json["errors"] == {"writeKey": ["must be a string"]}
    r = client.post("/v1/t", data="{not json", content_type=TEXT)
    assert r.status_code == 400 and "body" in r.json["errors"]
    # The call itself is checked as on /v1/track: it names the field.
    r = _post(client, "/v1/t", {"writeKey": project.publishable, "type": "track", "userId": "u"})
    assert r.status_code == 422 and "name" in r.json["errors"]["0"]
    r = _post(client, "/v1/i", {"writeKey": project.publishable, "type": "track", "userId": "u"})
    assert r.status_code == 422 and "type" in r.json["errors"]


def test_b_takes_a_batch_as_the_mobile_sdks_and_batching_analytics_js_send_it(app, client, project):
    body = {
        "writeKey": project.publishable,
        "sentAt": "2026-01-01T00:00:00Z",
        "batch": [
            {"type": "screen", "anonymousId": "phone", "name": "Onboarding", "messageId": "m1"},
            {"type": "identify", "userId": "bo", "anonymousId": "phone", "traits": {"k": 1}},
            {"type": "track", "userId": "bo", "event": "Tapped", "messageId": "m2"},
            {"type": "track", "userId": "bo"},
        ],
    }
    r = _post(client, "/v1/b", body)
    assert r.status_code == 200, r.json
    assert r.json["accepted"] == 3 and set(r.json["errors"]) == {"3"}
    assert user_events(app, "bo") == ["$screen", "Tapped"]
    # analytics-kotlin / -swift: the key as Basic only, JSON content type.
    del body["writeKey"]
    r = client.post("/v1/b", json=body, headers=_basic(project.publishable))
    assert r.status_code == 200 and r.json["duplicates"] == 2


def test_settings_document_sends_the_sdk_back_to_public_url(app, client, project):
    app.config["PUBLIC_URL"] = "https://cairn.example.com/analytics"
    r = client.get(
        f"/v1/projects/{project.publishable}/settings", headers={"Origin": "https://shop.example"}
    )
    assert r.status_code == 200, r.json
    segment_io = r.json["integrations"]["Segment.io"]
    assert segment_io["apiKey"] == project.publishable
    assert segment_io["apiHost"] == "cairn.example.com/analytics/v1"
    assert segment_io["protocol"] == "https"
    # Nothing else to load, and no telemetry sent to Segment.
    assert list(r.json["integrations"]) == ["Segment.io"]
    assert r.json["remotePlugins"] == [] and r.json["metrics"]["sampleRate"] == 0
    assert r.headers["Access-Control-Allow-Origin"] in ("*", "https://shop.example")
    assert "max-age" in r.headers["Cache-Control"]
    app.config["PUBLIC_URL"] = "http://127.0.0.1:8123"
    segment_io = client.get(f"/v1/projects/{project.publishable}/settings").json["integrations"][
        "Segment.io"
    ]
    assert (segment_io["apiHost"], segment_io["protocol"]) == ("127.0.0.1:8123/v1", "http")
    assert client.get("/v1/projects/pk_unknown/settings").status_code == 401


@pytest.mark.parametrize("path", ["/v1/t", "/v1/i", "/v1/b", "/v1/projects/pk_x/settings"])
def test_cors_preflight_allows_what_analytics_js_sends(client, path):
    r = client.options(
        path,
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST" if "settings" not in path else "GET",
            "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
        },
    )
    assert r.headers.get("Access-Control-Allow-Origin") in ("*", "https://shop.example")
    allowed = r.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "x-retry-count"} <= set(allowed.split(", "))


def test_short_path_cors_does_not_spill_onto_secret_endpoints(client):
    for path in ("/v1/templates", "/v1/segments", "/v1/projects"):
        r = client.options(
            path,
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        )
        assert "Access-Control-Allow-Origin" not in r.headers, path
