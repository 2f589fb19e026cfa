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
