"""Hypothesis drives the ingestion endpoints with hostile input: never a 500."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.db import db
from app.models import Event

# Text with lone surrogates too: JSON can escape them (`"\ud800"`), UTF-8 cannot hold them.
hostile_text = st.text(max_size=40) | st.text(
    st.characters(categories=["Cs", "Lu", "Nd"]), min_size=1, max_size=5
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()  # NaN and ±Infinity included: json.dumps writes them as bare tokens
    | hostile_text
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

FIELDS = [
    "name",
    "event",
    "userId",
    "anonymousId",
    "previousId",
    "properties",
    "traits",
    "timestamp",
    "messageId",
    "email",
    "phone",
    "language",
    "timezone",
    "attributes",
    "type",
    "batch",
    "userIds",
    "emails",
    "phones",
    "accessKey",
    "secretKey",
]


@st.composite
def deep_values(draw) -> object:
    """A value nested to a random depth, up to far past any stack (`[[[...]]]`, `{"a": ...}`)."""
    value: object = draw(scalars)
    for kind in draw(st.lists(st.sampled_from(["list", "dict"]), min_size=20, max_size=3000)):
        value = [value] if kind == "list" else {"a": value}
    return value


near_valid = st.dictionaries(st.sampled_from(FIELDS), json_values | deep_values(), max_size=6)
bodies = near_valid | st.lists(near_valid, max_size=5) | json_values
ENDPOINTS = [
    ("post", "/v1/users"),
    ("post", "/v1/events"),
    ("post", "/v1/identify"),
    ("post", "/v1/track"),
    ("post", "/v1/page"),
    ("post", "/v1/screen"),
    ("post", "/v1/alias"),
    ("post", "/v1/batch"),
    ("post", "/v1/users/delete"),
    ("delete", "/v1/users"),
    ("post", "/v1/auth/token"),
    ("post", "/v1/segments"),
    ("post", "/v1/segments/preview"),
    ("post", "/v1/templates"),
    ("post", "/v1/audiences"),
    ("post", "/v1/notify"),
    ("post", "/v1/messages"),
]


def _check(response) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        body = response.get_json()
        assert {"code", "status", "message", "errors"} <= set(body), body


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=bodies,
    raw=st.booleans(),
    kind=st.sampled_from(["secret", "publishable"]),
)
def test_no_500_on_hostile_bodies(api, endpoint, body, raw, kind):
    method, path = endpoint
    data = _dumps(body)[:-1] if raw else _dumps(body)
    _check(getattr(api, method)(path, kind=kind, data=data, content_type="application/json"))


class _Token(str):
    """JSON punctuation on the serializer's stack, told apart from string values."""


def _dumps(value: object) -> str:
    """json.dumps without recursion: deep_values nest far past the interpreter's stack."""
    out: list[str] = []
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Token):
            out.append(item)
        elif isinstance(item, list | dict):
            pairs = list(item.items()) if isinstance(item, dict) else [(None, v) for v in item]
            close, parts = ("}", []) if isinstance(item, dict) else ("]", [])
            for index, (key, child) in enumerate(pairs):
                if index:
                    parts.append(_Token(","))
                if key is not None:
                    parts.append(_Token(json.dumps(key) + ":"))
                parts.append(child)
            out.append("{" if isinstance(item, dict) else "[")
            stack.append(_Token(close))
            stack.extend(reversed(parts))
        else:
            out.append(json.dumps(item))
    return "".join(out)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.dictionaries(
        st.sampled_from(
            ["limit", "cursor", "segment", "key", "event", "userId", "p.x", "timestamp"]
        ),
        st.text(max_size=20),
        max_size=4,
    ),
    user_id=st.text(min_size=1, max_size=30).filter(lambda s: "/" not in s and "?" not in s),
)
def test_no_500_on_hostile_queries(api, client, project, params, user_id):
    _check(api.get("/v1/users", query_string=params))
    _check(api.get(f"/v1/users/{user_id}"))
    for path in ("segments", "templates", "audiences"):
        _check(api.get(f"/v1/{path}/{user_id}"))
    pixel = client.get("/v1/pixel.gif", query_string={**params, "key": project.publishable})
    assert pixel.status_code == 200 and pixel.mimetype == "image/gif"


def test_accepted_data_survives_bad_requests(app, api):
    api.post("/v1/events", json={"name": "kept", "userId": "u", "messageId": "k1"})
    for bad in ([{"name": 1}] * 3, {"name": "x" * 300}, "[", {"batch": "x"}):
        api.post("/v1/events", json=bad)
        api.post("/v1/batch", json=bad)
    with app.app_context():
        assert list(db.session.scalars(select(Event.name))) == ["kept"]


def test_nul_characters_are_a_400_naming_the_field(api, client, project):
    cases = [
        ("/v1/users", {"userId": "a\x00b"}, "userId"),
        ("/v1/events", [{"name": "ok"}, {"name": "e\x00"}], "1.name"),
        ("/v1/events", {"name": "e", "properties": {"k": "v\x00"}}, "properties.k"),
        ("/v1/track", {"event": "e", "userId": "u", "traits": {"x": ["\x00"]}}, "traits.x[0]"),
    ]
    for path, body, field in cases:
        r = api.post(path, json=body)
        assert r.status_code == 400, r.json
        assert field in r.json["errors"]
    assert api.get("/v1/users/a%00b").status_code in (400, 404)
    pixel = client.get(f"/v1/pixel.gif?key={project.publishable}&event=x%00&userId=u")
    assert pixel.status_code == 200 and pixel.headers["X-Cairn-Recorded"] == "0"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(number=st.integers(0, 10**30) | st.integers(2**63 - 5, 2**63 + 5))
def test_no_500_on_hostile_path_ids(api, number):
    for path in (
        f"/v1/messages/{number}",
        f"/v1/segments/{number}",
        f"/v1/segments/{number}/users",
        f"/v1/templates/{number}",
        f"/v1/audiences/{number}",
        f"/v1/audiences/{number}/members",
    ):
        _check(api.get(path))
    _check(api.post("/v1/messages", json={"userId": "u", "template": number}))
