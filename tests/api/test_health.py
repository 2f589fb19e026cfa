"""Probes, the OpenAPI document and the error shape for unknown routes and methods."""

from __future__ import annotations

from app import create_app


def test_probes_and_openapi(client):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json["database"] == "ok"
    spec = client.get("/openapi.json").json
    for path in (
        "/v1/users",
        "/v1/users/{user_id}",
        "/v1/events",
        "/v1/pixel.gif",
        "/v1/identify",
        "/v1/batch",
        "/v1/auth/token",
        "/v1/users/delete",
    ):
        assert path in spec["paths"], path


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path):
    app = create_app(
        {
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/nowhere",
            "INSTANCE_DIR": str(tmp_path),
            "SECRET_KEY": "x" * 32,
        }
    )
    r = app.test_client().get("/readyz")
    assert r.status_code == 503 and r.json["code"] == 503
    assert app.test_client().get("/healthz").status_code == 200
    # An API call while the database is down is a 503 with Retry-After, not a 500.
    r = app.test_client().get("/v1/users", headers={"Authorization": "Bearer sk_a_b"})
    assert r.status_code == 503 and r.headers["Retry-After"]


def test_unknown_route_and_method_use_the_error_shape(api):
    r = api.get("/v1/nope")
    assert r.status_code == 404 and r.json["code"] == 404 and r.json["message"]
    r = api.put("/v1/events", json={})
    assert r.status_code == 405 and r.json["status"] == "Method Not Allowed"


def test_every_error_has_the_full_shape(api, client):
    answers = {
        401: client.get("/v1/users"),
        404: api.get("/v1/nope"),
        405: api.put("/v1/events", json={}),
        413: api.post(
            "/v1/events", data=b"[" + b" " * (600 * 1024) + b"]", content_type="application/json"
        ),
    }
    for code, r in answers.items():
        assert r.status_code == code
        assert set(r.json) == {"code", "status", "message", "errors"}, r.json
        assert r.json["code"] == code and isinstance(r.json["errors"], dict)


def test_docs_load_swagger_ui_from_this_server(client):
    """A self-hosted machine may have no internet: /docs must not need a CDN."""
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.mimetype in ("text/javascript", "application/javascript", "text/css"), url
        assert len(asset.data) > 10_000, url  # the real bundle, not a stub
        asset.close()
    bundle = client.get(next(u for u in urls if "bundle" in u))
    assert "SwaggerUIBundle" in bundle.get_data(as_text=True)
    bundle.close()
    assert "http://" not in html and "https://" not in html
