"""Audiences through the test client: create, add and remove members (pasted or in the CSV
upload's JSON chunks), TTLs, the chunk limit and a viewer's refusal."""

from __future__ import annotations

from tests.ui.test_console import _account, _login, _token


def test_members_are_added_removed_and_uploaded_in_chunks(app, client, api):
    _account(app, "owner@acme.io")
    _account(app, "viewer@acme.io", project_id=1, role="viewer")
    assert api.post("/v1/users", json={"userId": "ann"}).status_code == 200
    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, "/projects/1/audiences")
    made = client.post("/projects/1/audiences", data={"csrf_token": token, "name": "vip"})
    assert made.status_code == 302
    aid = api.get("/v1/audiences/vip").json["id"]
    taken = client.post("/projects/1/audiences", data={"csrf_token": token, "name": "vip"})
    assert taken.status_code == 409
    added = client.post(
        f"/projects/1/audiences/{aid}/members",
        data={"csrf_token": token, "userIds": "ann, bob\ncy", "ttl": "7d"},
    )
    assert added.status_code == 302 and "r_joined=3" in added.headers["Location"]
    assert "r_created=2" in added.headers["Location"]  # bob and cy are new profiles
    members = api.get(f"/v1/audiences/{aid}/members").json["data"]
    assert sorted(m["userId"] for m in members) == ["ann", "bob", "cy"]
    assert all(m["expiresAt"] for m in members)
    bad_ttl = client.post(
        f"/projects/1/audiences/{aid}/members",
        data={"csrf_token": token, "userIds": "dee", "ttl": "a while"},
    )
    assert bad_ttl.status_code == 422
    removed = client.post(
        f"/projects/1/audiences/{aid}/members",
        data={"csrf_token": token, "userIds": "bob", "remove": "1"},
    )
    assert "r_removed=1" in removed.headers["Location"]
    # The CSV upload's chunks: JSON, at most 1000 each, answered with counts.
    chunk = [f"csv{i}" for i in range(1000)]
    r = client.post(
        f"/projects/1/audiences/{aid}/members",
        json={"userIds": chunk},
        headers={"X-CSRFToken": token},
    )
    assert r.status_code == 200 and r.json == {"joined": 1000, "refreshed": 0, "created": 1000}
    too_many = client.post(
        f"/projects/1/audiences/{aid}/members",
        json={"userIds": [*chunk, "one-more"]},
        headers={"X-CSRFToken": token},
    )
    assert too_many.status_code == 422 and "1000" in too_many.json["message"]
    assert api.get(f"/v1/audiences/{aid}").json["memberCount"] == 1002
    page = client.get(f"/projects/1/audiences/{aid}").text
    assert 'data-figure="members">1002<' in page

    viewer = app.test_client()
    assert _login(viewer, "viewer@acme.io").status_code == 302
    vt = _token(viewer, f"/projects/1/audiences/{aid}")
    refused = viewer.post(
        f"/projects/1/audiences/{aid}/members", json={"userIds": ["x"]}, headers={"X-CSRFToken": vt}
    )
    assert refused.status_code == 403
    assert "Upload a CSV" not in viewer.get(f"/projects/1/audiences/{aid}").text
