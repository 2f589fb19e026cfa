"""The suppression list through the test client: added normalized as the API would, removed,
found, and refused for a viewer."""

from __future__ import annotations

from tests.ui.test_console import _account, _login, _token


def test_suppressions_are_added_normalized_found_and_removed(app, client, api):
    _account(app, "owner@acme.io")
    _account(app, "viewer@acme.io", project_id=1, role="viewer")
    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, "/projects/1/suppressions")
    add = {"csrf_token": token, "channel": "email", "address": "Ann@Example.COM"}
    r = client.post("/projects/1/suppressions", data=add)
    assert r.status_code == 302 and "added=1" in r.headers["Location"]
    listed = api.get("/v1/suppressions").json["data"]
    assert [(s["channel"], s["address"], s["reason"]) for s in listed] == [
        ("email", "ann@example.com", "manual")
    ]
    again = client.post("/projects/1/suppressions", data=add)
    assert "added=0" in again.headers["Location"]
    bad = client.post(
        "/projects/1/suppressions", data={**add, "channel": "sms", "address": "not a phone"}
    )
    assert bad.status_code == 422
    page = client.get("/projects/1/suppressions?q=ann").text
    assert 'data-suppression="ann@example.com"' in page
    assert 'data-suppression="' not in client.get("/projects/1/suppressions?q=zzz").text

    viewer = app.test_client()
    assert _login(viewer, "viewer@acme.io").status_code == 302
    vt = _token(viewer, "/projects/1/suppressions")
    refused = viewer.post("/projects/1/suppressions", data={**add, "csrf_token": vt, "remove": "1"})
    assert refused.status_code == 403 and len(api.get("/v1/suppressions").json["data"]) == 1

    removed = client.post("/projects/1/suppressions", data={**add, "remove": "1"})
    assert "removed=1" in removed.headers["Location"]
    assert api.get("/v1/suppressions").json["data"] == []
    assert "suppression.added" in client.get("/projects/1/audit").text
