"""POST /v1/messages/sms and the suppression list (app/api/messages.py)."""

from __future__ import annotations


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
