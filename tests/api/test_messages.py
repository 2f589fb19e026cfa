"""POST /v1/messages/sms and the suppression list (app/api/messages.py)."""

from __future__ import annotations

import pytest


def test_a_too_long_sms_body_says_it_is_too_long(api):
    r = api.post(
        "/v1/messages/sms", json={"body": "x" * 5000, "recipients": [{"to": "+14155550199"}]}
    )
    assert r.status_code == 422, r.json
    assert r.json["message"] == "body is too long: 5000 characters, at most 1600"
    assert r.json["errors"] == {"body": ["too long: at most 1600 characters"]}
    empty = api.post("/v1/messages/sms", json={"body": "", "recipients": [{"to": "+14155550199"}]})
    assert empty.status_code == 422 and empty.json["message"] == "body is required"
    ok = api.post(
        "/v1/messages/sms", json={"body": "x" * 1600, "recipients": [{"to": "+14155550199"}]}
    )
    assert ok.status_code == 202 and ok.json["messages"] == 1


def test_suppressions_are_added_normalised_listed_and_removed(api):
    r = api.post("/v1/suppressions", json={"channel": "email", "address": "Ann@Example.com"})
    assert r.status_code == 200 and r.json == {"added": 1}
    again = api.post("/v1/suppressions", json={"channel": "email", "address": "ann@example.com"})
    assert again.json == {"added": 0}
    [row] = api.get("/v1/suppressions").json["data"]
    assert row["address"] == "ann@example.com" and row["reason"] == "manual"
    r = api.delete("/v1/suppressions", json={"channel": "email", "address": "ANN@example.com"})
    assert r.json == {"removed": 1}
    assert api.get("/v1/suppressions").json["data"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "fax", "address": "a@example.com"}, "channel"),
        ({"channel": "email"}, "address"),
        ({"channel": "email", "address": "not an email"}, "address"),
        ({"channel": "email", "address": "a@example.com", "reason": "x" * 41}, "reason"),
        ({"channel": "email", "address": "a@example.com", "extra": 1}, "extra"),
    ],
)
def test_suppression_input_is_checked(api, body, field):
    r = api.post("/v1/suppressions", json=body)
    assert r.status_code == 422 and field in r.json["errors"], r.json
    assert api.get("/v1/suppressions").json["data"] == []


def test_sms_recipients_are_checked_one_by_one(api):
    r = api.post(
        "/v1/messages/sms",
        json={"body": "hi", "recipients": [{"to": "+14155550199"}, {"to": "nope"}, None, 3]},
    )
    assert r.status_code == 202 and r.json["messages"] == 1, r.json
    assert set(r.json["errors"]) == {"1", "2", "3"}
    r = api.post("/v1/messages/sms", json={"body": "hi", "recipients": [{"to": "nope"}]})
    assert r.status_code == 422 and "recipients" in r.json["errors"]
    many = [{"to": "+14155550199"}] * 1001
    r = api.post("/v1/messages/sms", json={"body": "hi", "recipients": many})
    assert r.status_code == 413 and "recipients" in r.json["errors"]
    for body, field in (
        ({"type": "fax", "body": "hi", "recipients": [{"to": "+14155550199"}]}, "type"),
        ({"body": "hi", "recipients": []}, "recipients"),
        ({"body": "hi"}, "recipients"),
        ({"body": "hi", "recipients": [{"to": "+14155550199"}], "ttlSeconds": 0}, "ttlSeconds"),
    ):
        r = api.post("/v1/messages/sms", json=body)
        assert r.status_code == 422 and field in r.json["errors"], (body, r.json)


LISTS = [
    "/v1/users",
    "/v1/segments",
    "/v1/templates",
    "/v1/audiences",
    "/v1/messages",
    "/v1/sandbox/messages",
    "/v1/suppressions",
]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=%%%", "cursor"),
    ],
)
def test_every_list_refuses_a_bad_page_naming_the_field(api, path, query, field):
    r = api.get(f"{path}?{query}")
    assert r.status_code == 400 and field in r.json["errors"], r.json


def test_every_list_documents_limit_and_cursor(api):
    spec = api.get("/openapi.json").json
    for path in LISTS:
        names = {p["name"] for p in spec["paths"][path]["get"]["parameters"] if p["in"] == "query"}
        assert {"limit", "cursor"} <= names, path


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("channel=fax", "channel"),
        ("status=lost", "status"),
        ("sendId=x", "sendId"),
        ("since=yesterday", "since"),
        ("until=2025-13-01", "until"),
    ],
)
def test_message_log_filters_are_checked(api, query, field):
    r = api.get(f"/v1/messages?{query}")
    assert r.status_code == 400 and field in r.json["errors"], r.json


def test_the_message_log_filters_and_pages(api):
    for n in range(3):
        api.post("/v1/notify", json={"userId": f"u{n}", "body": "x"})
    page = api.get("/v1/messages?limit=2&channel=inapp&since=2000-01-01T00:00:00").json
    assert len(page["data"]) == 2 and page["nextCursor"]
    rest = api.get(f"/v1/messages?limit=2&cursor={page['nextCursor']}").json
    assert len(rest["data"]) == 1 and rest["nextCursor"] is None
    assert [m["userId"] for m in api.get("/v1/messages?userId=u1").json["data"]] == ["u1"]
    assert api.get("/v1/messages?until=2000-01-01").json["data"] == []


def test_template_message_refusals(api):
    api.post("/v1/templates", json={"name": "t", "channels": {"inapp": {"en": {"body": "hi"}}}})
    r = api.post("/v1/messages", json={"template": "nope", "userId": "u"})
    assert r.status_code == 404 and r.json["errors"] == {"template": ["not found"]}, r.json
    r = api.post("/v1/messages", json={"template": "t", "userId": "u", "userEmail": "not mail"})
    assert r.status_code == 422 and "userEmail" in r.json["errors"], r.json
    r = api.post("/v1/messages", json={"template": "t", "userId": "u", "overrides": {"fax": {}}})
    assert r.status_code == 422 and "overrides.fax" in r.json["errors"], r.json
    r = api.post("/v1/messages", json={"template": 3.0, "userId": "u", "ttlSeconds": 0})
    assert r.status_code == 422 and set(r.json["errors"]) == {"ttlSeconds"}, r.json
    # A batch answers each item in its place, but one with no valid item is refused whole.
    r = api.post("/v1/messages", json=[{"userId": "u"}, 7])
    assert r.status_code == 422 and set(r.json["errors"]) == {"0", "1"}, r.json
    r = api.post(
        "/v1/messages",
        data='[{"template": "t", "userId": "u\\u0000"}, {"template": "t", "userId": "u", "id": 5}]',
        content_type="application/json",
    )
    assert r.status_code == 400 and r.json["errors"] == {"0.userId": ["contains NUL"]}, r.json
    r = api.post("/v1/messages", json=[{"template": "t", "userId": "u"}, {"template": "t"}])
    assert r.status_code == 200 and [i["ok"] for i in r.json["data"]] == [True, False], r.json
    assert r.json["data"][1]["errors"] == {"userId": ["Missing data for required field."]}
