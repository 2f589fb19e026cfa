"""Keys, scopes, token exchange, CORS and tenant isolation."""

from __future__ import annotations

from sqlalchemy import select

from app.db import db
from app.models import ApiKey
from app.services.projects import revoke_key
from tests.conftest import make_project


def _assert_error(response, code: int) -> dict:
    assert response.status_code == code, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == code
    assert body["status"]
    assert body["message"]
    return body


def test_missing_and_unknown_keys_are_401(client):
    _assert_error(client.get("/v1/users"), 401)
    _assert_error(client.get("/v1/users", headers={"Authorization": "Bearer sk_nope_nope"}), 401)
    _assert_error(client.get("/v1/users", headers={"Authorization": "Bearer garbage"}), 401)


def test_keys_are_stored_hashed_and_record_last_use(app, api, project):
    assert api.get("/v1/users").status_code == 200
    with app.app_context():
        rows = db.session.scalars(select(ApiKey)).all()
        stored = {r.key_hash for r in rows} | {r.key_id for r in rows}
        assert project.secret not in stored and project.publishable not in stored
        secret_row = next(r for r in rows if r.kind == "secret")
        assert secret_row.last_used_at is not None


def test_publishable_key_reaches_only_ingestion(api):
    body = _assert_error(api.get("/v1/users", kind="publishable"), 403)
    assert "secret key" in body["message"]
    _assert_error(api.post("/v1/users", kind="publishable", json={"userId": "u"}), 403)
    ok = api.post("/v1/events", kind="publishable", json={"name": "view", "anonymousId": "a"})
    assert ok.status_code == 202


def test_revoked_key_is_refused(app, api, project):
    assert api.get("/v1/users").status_code == 200
    with app.app_context(), db.begin() as session:
        revoke_key(session, prefix=project.secret.rsplit("_", 1)[0])
    _assert_error(api.get("/v1/users"), 401)


def test_token_exchange(app, client, project):
    r = client.post(
        "/v1/auth/token", json={"accessKey": project.access_key, "secretKey": project.secret}
    )
    assert r.status_code == 200, r.json
    assert r.json["expiresIn"] == 3600
    token = r.json["data"]
    assert client.get("/v1/users", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # A tampered token is refused.
    _assert_error(client.get("/v1/users", headers={"Authorization": f"Bearer {token}x"}), 401)
    # Past its lifetime, it is refused.
    app.config["TOKEN_TTL_SECONDS"] = -1
    _assert_error(client.get("/v1/users", headers={"Authorization": f"Bearer {token}"}), 401)


def test_token_exchange_rejects_mismatched_or_bad_credentials(client, project, app):
    other = make_project(app, "Other")
    r = client.post(
        "/v1/auth/token", json={"accessKey": other.access_key, "secretKey": project.secret}
    )
    _assert_error(r, 401)
    r = client.post(
        "/v1/auth/token", json={"accessKey": project.access_key, "secretKey": project.publishable}
    )
    _assert_error(r, 401)
    body = _assert_error(client.post("/v1/auth/token", json={"accessKey": 1}), 422)
    assert "secretKey" in body["errors"] and "accessKey" in body["errors"]


def test_token_of_revoked_key_is_refused(app, client, project):
    token = client.post(
        "/v1/auth/token", json={"accessKey": project.access_key, "secretKey": project.secret}
    ).json["data"]
    with app.app_context(), db.begin() as session:
        revoke_key(session, prefix=project.access_key)
    _assert_error(client.get("/v1/users", headers={"Authorization": f"Bearer {token}"}), 401)


def test_projects_are_isolated(app, api, client):
    assert (
        api.post("/v1/users", json={"userId": "alice", "email": "a@example.com"}).status_code == 200
    )
    other = make_project(app, "Other")
    r = client.get("/v1/users/alice", headers=other.auth())
    _assert_error(r, 404)
    listing = client.get("/v1/users", headers=other.auth()).json
    assert listing["data"] == []


def test_cors_on_publishable_endpoints_only(client):
    preflight = client.options(
        "/v1/events",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.headers.get("Access-Control-Allow-Origin") in ("*", "https://shop.example")
    assert "authorization" in preflight.headers.get("Access-Control-Allow-Headers", "").lower()
    secret_only = client.options(
        "/v1/users",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in secret_only.headers


def test_basic_auth_user_is_the_key(client, project):
    import base64

    cred = base64.b64encode(f"{project.publishable}:".encode()).decode()
    r = client.post(
        "/v1/track",
        headers={"Authorization": f"Basic {cred}"},
        json={"event": "x", "anonymousId": "a"},
    )
    assert r.status_code == 200, r.json


def test_a_revocation_is_seen_at_once_by_another_app_instance(app, api, project, tmp_path):
    """Two app instances on one database; the key is revoked by a third process (the CLI)."""
    from app import create_app
    from tests.e2e.live import _cairn

    first_engine = db.engine  # create_app rebinds the shared extension: dispose both at the end
    other = create_app({**app.config, "TESTING": True}).test_client()
    try:
        for client in (api, other):
            headers = {} if client is api else project.auth()
            assert client.get("/v1/users", headers=headers).status_code == 200
        prefix = project.secret.rsplit("_", 1)[0]
        url = app.config["DATABASE_URL"]
        revoked = _cairn(tmp_path, "key", "revoke", prefix, DATABASE_URL=url)
        assert revoked.returncode == 0, revoked.stderr
        # No grace period: the very next request of either instance is refused.
        _assert_error(api.get("/v1/users"), 401)
        _assert_error(other.get("/v1/users", headers=project.auth()), 401)
    finally:
        first_engine.dispose()


def test_authentication_commits_nothing_of_its_own(app, api, project):
    """lastUsedAt is refreshed by the request's one commit, not by a commit of the guard."""
    from sqlalchemy import event, update

    with app.app_context(), db.begin() as session:
        session.execute(update(ApiKey).values(last_used_at=None))
    commits: list[int] = []
    listener = lambda conn: commits.append(1)  # noqa: E731
    event.listen(db.engine, "commit", listener)
    try:
        assert api.get("/v1/users").status_code == 200
        assert len(commits) == 1
        # A request that fails after authenticating commits nothing at all.
        del commits[:]
        assert api.post("/v1/users", json={"userId": ""}).status_code == 422
        assert commits == []
    finally:
        event.remove(db.engine, "commit", listener)
    with app.app_context():
        secret_row = db.session.scalar(select(ApiKey).where(ApiKey.kind == "secret"))
        assert secret_row.last_used_at is not None
