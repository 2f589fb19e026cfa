"""The console's accounts and pages through the test client, on both databases: setup links,
login, roles, CSRF, rate limiting, the segment editor and the audit log."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import func, select

from app.db import db
from app.models import Segment
from app.models.console import AuditEntry, ConsoleMembership, ConsoleUser
from app.services import console_accounts as accounts

PASSWORD = "correct horse battery"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def _token(client, path: str = "/login") -> str:
    return TOKEN.search(client.get(path).text).group(1)


def _account(app, email: str, *, project_id: int | None = None, role: str | None = None) -> None:
    """An owner (no project) or a member with `role`, as the invitation flow makes them."""
    with app.app_context(), db.begin() as session:
        if project_id is None:
            link = accounts.create_setup_link(session, public_url="http://x")
        else:
            owner = session.scalar(select(ConsoleUser).where(ConsoleUser.is_owner.is_(True)))
            link = accounts.create_invite(
                session,
                project_id=project_id,
                role=role,
                email=email,
                created_by=owner.id,
                public_url="http://x",
            )
        accounts.accept_invite(
            session, token=link.rsplit("/", 1)[1], email=email, name="", password=PASSWORD
        )


def _login(client, email: str, password: str = PASSWORD) -> Any:
    return client.post(
        "/login", data={"csrf_token": _token(client), "email": email, "password": password}
    )


@pytest.fixture
def owner(app, project):
    _account(app, "owner@acme.io")
    return "owner@acme.io"


def test_the_setup_link_creates_the_first_admin_once_and_a_new_link_replaces_it(app, client):
    with app.app_context(), db.begin() as session:
        old = accounts.create_setup_link(session, public_url="http://localhost:8000")
        new = accounts.create_setup_link(session, public_url="http://localhost:8000")
    assert old.startswith("http://localhost:8000/setup/")
    old_path, new_path = old.split("8000")[1], new.split("8000")[1]
    assert client.get(old_path).status_code == 404  # replaced by the newer link
    assert "Create the first admin" in client.get(new_path).text
    body = {"email": "Ann@Acme.io", "name": "Ann", "password": PASSWORD, "confirm": PASSWORD}
    short = client.post(
        new_path,
        data={
            **body,
            "password": "short",
            "confirm": "short",
            "csrf_token": _token(client, new_path),
        },
    )
    assert short.status_code == 422 and "at least 10 characters" in short.text
    r = client.post(new_path, data={**body, "csrf_token": _token(client, new_path)})
    assert r.status_code == 302
    assert client.get("/", follow_redirects=True).request.path == "/"  # logged in, no project
    with app.app_context():
        row = db.session.scalar(select(ConsoleUser))
        assert row.email == "ann@acme.io" and row.is_owner
        assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
    assert client.get(new_path).status_code == 404  # used


def test_login_refuses_wrong_passwords_alike_and_limits_attempts_per_email(app, client, owner):
    assert client.get("/projects/1/").status_code == 302  # not logged in: to the login form
    wrong = _login(client, owner, "not the password")
    unknown = _login(client, "nobody@acme.io", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong email or password" in wrong.text and "Wrong email or password" in unknown.text
    for _ in range(4):
        assert _login(client, owner, "still wrong").status_code == 401
    limited = _login(client, owner)  # the 6th attempt in a minute, right password or not
    assert limited.status_code == 429 and "Too many attempts" in limited.text
    other = _login(client, "other@acme.io", "whatever pw")
    assert other.status_code == 401  # the limit is per email (and, higher, per address)


def test_login_redirects_only_to_paths_on_this_site(app, client, owner):
    for target, expected in [
        ("/projects/1/users", "/projects/1/users"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
    ]:
        client.post("/logout", data={"csrf_token": _token(client)})
        r = client.post(
            "/login?next=" + target,
            data={"csrf_token": _token(client), "email": owner, "password": PASSWORD},
        )
        assert r.status_code == 302 and r.headers["Location"] == expected, target


def test_a_request_without_the_csrf_token_is_refused_and_changes_nothing(app, client, owner):
    assert _login(client, owner).status_code == 302
    form = {"name": "pros", "mode": "text", "filter_text": "plan:pro"}
    for token in (None, "forged-token"):
        data = form if token is None else {**form, "csrf_token": token}
        r = client.post("/projects/1/segments/new", data=data)
        assert r.status_code == 400 and "CSRF" in r.text
    no_header = client.post("/projects/1/segments/preview", json={"filter": "plan:pro"})
    assert no_header.status_code == 400
    # A login form posted from elsewhere (no token) is refused too.
    client.post("/logout", data={"csrf_token": _token(client)})
    assert client.post("/login", data={"email": owner, "password": PASSWORD}).status_code == 400
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Segment)) == 0


def test_a_viewer_reads_but_cannot_change_and_other_projects_are_invisible(app, client, owner):
    from tests.conftest import make_project

    other = make_project(app, name="Other")
    _account(app, "viewer@acme.io", project_id=1, role="viewer")
    assert _login(client, "viewer@acme.io").status_code == 302
    assert client.get("/projects/1/segments").status_code == 200
    page = client.get("/projects/1/segments/new")
    assert page.status_code == 200 and "Save segment" not in page.text
    token = _token(client, "/projects/1/segments")
    r = client.post(
        "/projects/1/segments/new",
        data={"csrf_token": token, "name": "pros", "mode": "text", "filter_text": "plan:pro"},
    )
    assert r.status_code == 403 and "viewer" in r.text
    invite = client.post(
        "/projects/1/members", data={"csrf_token": token, "email": "x@acme.io", "role": "admin"}
    )
    assert invite.status_code == 403
    assert client.get(f"/projects/{other.id}/").status_code == 404
    preview = client.post(
        "/projects/1/segments/preview", json={"filter": "plan:pro"}, headers={"X-CSRFToken": token}
    )
    assert preview.status_code == 200 and preview.json["count"] == 0  # previewing changes nothing
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Segment)) == 0


def test_an_admin_invites_a_marketer_who_joins_with_that_role(app, client, owner):
    assert _login(client, owner).status_code == 302
    r = client.post(
        "/projects/1/members",
        data={
            "csrf_token": _token(client, "/projects/1/members"),
            "email": "mia@acme.io",
            "role": "marketer",
        },
    )
    assert r.status_code == 200
    link = re.search(r"data-invite-link>([^<]+)<", r.text).group(1)
    path = "/" + link.split("/", 3)[3]
    fresh = app.test_client()
    form = fresh.get(path).text
    assert "invited as <strong>marketer</strong>" in form
    joined = fresh.post(
        path,
        data={
            "csrf_token": TOKEN.search(form).group(1),
            "email": "ignored@else.io",  # the invitation's address wins
            "password": PASSWORD,
            "confirm": PASSWORD,
        },
    )
    assert joined.status_code == 302
    with app.app_context():
        row = db.session.scalar(select(ConsoleUser).where(ConsoleUser.email == "mia@acme.io"))
        role = db.session.scalar(
            select(ConsoleMembership.role).where(ConsoleMembership.console_user_id == row.id)
        )
        assert role == "marketer" and not row.is_owner
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "member.invited"))
        assert entry.actor == owner and entry.after == {"email": "mia@acme.io", "role": "marketer"}


def test_segments_are_saved_through_the_api_rules_and_audited_with_before_and_after(
    app, client, owner, api
):
    for uid, plan in (("u1", "pro"), ("u2", "pro"), ("u3", "free")):
        assert (
            api.post("/v1/users", json={"userId": uid, "attributes": {"plan": plan}}).status_code
            == 200
        )
    assert _login(client, owner).status_code == 302
    token = _token(client, "/projects/1/segments/new")
    preview = client.post(
        "/projects/1/segments/preview",
        json={"mode": "text", "text": "plan:pro"},
        headers={"X-CSRFToken": token},
    )
    assert preview.json == {"count": 2, "sample": ["u1", "u2"], "stringForm": "plan:pro"}
    bad = client.post(
        "/projects/1/segments/preview",
        json={"filter": {"all": [{"attr": "plan", "op": "bogus"}]}},
        headers={"X-CSRFToken": token},
    )
    assert bad.status_code == 422 and "filter.all[0].op" in bad.json["errors"]
    invalid = client.post(
        "/projects/1/segments/new",
        data={
            "csrf_token": token,
            "name": "pros",
            "mode": "build",
            "filter_json": '{"all": [{"attr": "plan", "op": "zz"}]}',
        },
    )
    assert invalid.status_code == 422 and "filter.all[0].op" in invalid.text
    created = client.post(
        "/projects/1/segments/new",
        data={"csrf_token": token, "name": "pros", "mode": "text", "filter_text": "plan:pro"},
    )
    assert created.status_code == 302
    # The API sees what the console saved, normalized the same way.
    seg = api.get("/v1/segments/pros").json
    assert seg["filter"] == {"all": [{"attr": "plan", "op": "textEq", "value": "pro"}]}
    sid = seg["id"]
    taken = client.post(
        "/projects/1/segments/new",
        data={"csrf_token": token, "name": "pros", "mode": "text", "filter_text": "plan:free"},
    )
    assert taken.status_code == 409
    edited = client.post(
        f"/projects/1/segments/{sid}",
        data={"csrf_token": token, "name": "pros", "mode": "text", "filter_text": "plan:pro|free"},
    )
    assert edited.status_code == 302
    assert [u["userId"] for u in api.get("/v1/segments/pros/users").json["data"]] == [
        "u1",
        "u2",
        "u3",
    ]
    audit = client.get("/projects/1/audit").text
    assert "segment.created" in audit and "segment.edited" in audit
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "segment.edited"))
        assert entry.actor == owner and entry.object_id == str(sid)
        assert entry.before["filter"]["all"][0]["value"] == "pro"
        assert entry.after["filter"]["all"][0]["value"] == ["pro", "free"]


def test_users_are_found_by_id_email_phone_or_filter(app, client, owner, api):
    people = [
        {
            "userId": "ann",
            "email": "ann@example.com",
            "phone": "+14155550101",
            "attributes": {"plan": "pro"},
        },
        {"userId": "bob", "email": "bob@example.com", "attributes": {"plan": "free"}},
    ]
    for person in people:
        assert api.post("/v1/users", json=person).status_code == 200
    assert _login(client, owner).status_code == 302

    def found(q: str) -> list[str]:
        page = client.get("/projects/1/users", query_string={"q": q})
        assert page.status_code == 200
        return re.findall(r'/projects/1/users/([a-z]+)"', page.text)

    assert found("ann") == ["ann"]
    assert found("BOB@example.com") == ["bob"]
    assert found("(415) 555-0101".replace("(", "").replace(")", "")) == ["ann"]
    assert found("plan:free") == ["bob"]
    assert sorted(found("")) == ["ann", "bob"]
    broken = client.get("/projects/1/users", query_string={"q": "plan:pro,"})
    assert broken.status_code == 200 and 'role="alert"' in broken.text
    profile = client.get("/projects/1/users/ann")
    assert profile.status_code == 200 and "ann@example.com" in profile.text
    assert client.get("/projects/1/users/nobody").status_code == 404
    assert client.get("/projects/1/users/ann?cursor=zzz").status_code == 400
