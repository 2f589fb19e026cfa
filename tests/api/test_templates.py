"""/v1/templates: CRUD, validation naming the field path, isolation and preview."""

from __future__ import annotations

import pytest

from tests.conftest import make_project

WELCOME = {
    "name": "welcome",
    "description": "First message",
    "channels": {
        "email": {
            "en": {
                "subject": "Welcome {{ user.firstName | default('there') }}",
                "html": "<p>Hi {{ user.firstName }}, plan {{ user.plan }}</p>",
                "text": "Hi {{ user.firstName }}",
            },
            "pt": {"subject": "Bem-vindo", "text": "Olá {{ user.firstName }}"},
        },
        "push": {"en": {"title": "Hi", "body": "{{ params.count }} new items"}},
    },
}


def create(api, body=None, **changes):
    response = api.post("/v1/templates", json={**(body or WELCOME), **changes})
    assert response.status_code == 201, response.json
    return response.json


def test_create_read_list_delete(api):
    created = create(api)
    assert created["name"] == "welcome"
    assert created["defaultLanguage"] == "en"
    assert created["channels"]["email"]["pt"]["subject"] == "Bem-vindo"
    assert created["createdAt"] and created["updatedAt"]
    by_id = api.get(f"/v1/templates/{created['id']}").json
    by_name = api.get("/v1/templates/welcome").json
    assert by_id == by_name == created
    for i in range(3):
        create(api, name=f"t{i}")
    page = api.get("/v1/templates?limit=3").json
    assert [t["name"] for t in page["data"]] == ["welcome", "t0", "t1"]
    rest = api.get(f"/v1/templates?limit=3&cursor={page['nextCursor']}").json
    assert [t["name"] for t in rest["data"]] == ["t2"] and rest["nextCursor"] is None
    assert api.delete("/v1/templates/welcome").status_code == 204
    r = api.get(f"/v1/templates/{created['id']}")
    assert r.status_code == 404 and r.json["message"]
    assert api.delete("/v1/templates/welcome").status_code == 404


def test_language_keys_are_normalized(api):
    body = {"name": "n", "defaultLanguage": "pt-br", "channels": {"sms": {"pt-br": {"body": "x"}}}}
    created = create(api, body)
    assert created["defaultLanguage"] == "pt-BR"
    assert list(created["channels"]["sms"]) == ["pt-BR"]


def test_duplicate_name_is_409_naming_name(api):
    create(api)
    r = api.post("/v1/templates", json=WELCOME)
    assert r.status_code == 409
    assert "name/exists" in r.json["message"]
    assert "name" in r.json["errors"]
    other = create(api, name="other")
    r = api.patch(f"/v1/templates/{other['id']}", json={"name": "welcome"})
    assert r.status_code == 409 and "name" in r.json["errors"]


@pytest.mark.parametrize(
    ("channels", "path", "words"),
    [
        (
            {"email": {"fr": {"subject": "s", "html": "a\n{{ x }\n"}}},
            "channels.email.fr.html",
            "line 2",
        ),
        ({"sms": {"en": {"body": "{% if %}"}}}, "channels.sms.en.body", "line 1"),
        ({"sms": {"en": {"body": "{{ x|nosuchfilter }}"}}}, "channels.sms.en.body", "nosuchfilter"),
        ({"fax": {"en": {"body": "x"}}}, "channels.fax", "unknown channel"),
        ({"sms": {"en": {"body": "x", "title": "t"}}}, "channels.sms.en.title", "unknown field"),
        ({"email": {"en": {"subject": "s"}}}, "channels.email.en.html", "html or text"),
        ({"email": {"en": {"html": "h"}}}, "channels.email.en.subject", "required"),
        ({"push": {"en": {"url": "https://x"}}}, "channels.push.en.title", "title or body"),
        ({"inapp": {"en": {"title": "t", "data": "x"}}}, "channels.inapp.en.data", "object"),
        ({"inapp": {"en": {"title": "t", "data": {"a": "{{"}}}}, "channels.inapp.en.data.a", ""),
        ({"sms": {"not a tag!": {"body": "x"}}}, "channels.sms.not a tag!", "BCP 47"),
        ({"sms": {"en": {"body": 3}}}, "channels.sms.en.body", "string"),
        ({"sms": {"en": "x"}}, "channels.sms.en", "object"),
        ({}, "channels", "at least one"),
        ({"sms": {"fr": {"body": "x"}}}, "defaultLanguage", "en"),
    ],
)
def test_validation_errors_name_the_field_path(api, channels, path, words):
    r = api.post("/v1/templates", json={"name": "bad", "channels": channels})
    assert r.status_code == 422, r.json
    assert path in r.json["errors"], r.json
    assert words in r.json["errors"][path][0]
    assert path in r.json["message"]
    assert api.get("/v1/templates").json["data"] == []


def test_bad_top_level_fields(api):
    r = api.post("/v1/templates", json={"channels": WELCOME["channels"]})
    assert r.status_code == 422 and "name" in r.json["errors"]
    for name in ("123", "a/b", "  "):
        r = api.post("/v1/templates", json={**WELCOME, "name": name})
        assert r.status_code == 422 and "name" in r.json["errors"], name
    r = api.post("/v1/templates", json={**WELCOME, "defaultLanguage": "xx yy"})
    assert r.status_code == 422 and "defaultLanguage" in r.json["errors"]
    r = api.post("/v1/templates", json={**WELCOME, "extra": 1})
    assert r.status_code == 422 and "extra" in r.json["errors"]
    r = api.post("/v1/templates", json={**WELCOME, "description": "a\x00b"})
    assert r.status_code in (400, 422)


def test_patch_merges_per_channel_and_language_put_replaces(api):
    created = create(api)
    r = api.patch(
        "/v1/templates/welcome",
        json={
            "description": "changed",
            "channels": {
                "email": {
                    "pt": {"subject": "Oi", "text": "t"},
                    "es": {"subject": "Hola", "text": "t"},
                },
                "push": None,
                "sms": {"en": {"body": "sms"}},
            },
        },
    )
    assert r.status_code == 200, r.json
    channels = r.json["channels"]
    assert set(channels) == {"email", "sms"}
    assert set(channels["email"]) == {"en", "pt", "es"}
    assert channels["email"]["pt"] == {"subject": "Oi", "text": "t"}
    assert channels["email"]["en"] == WELCOME["channels"]["email"]["en"]
    assert r.json["description"] == "changed" and r.json["name"] == "welcome"
    assert r.json["updatedAt"] >= created["updatedAt"]
    # Removing the only default-language content is refused.
    r = api.patch("/v1/templates/welcome", json={"channels": {"email": {"en": None}, "sms": None}})
    assert r.status_code == 422 and "defaultLanguage" in r.json["errors"]
    r = api.put(
        f"/v1/templates/{created['id']}",
        json={"name": "renamed", "channels": {"sms": {"en": {"body": "only"}}}},
    )
    assert r.status_code == 200, r.json
    assert r.json["channels"] == {"sms": {"en": {"body": "only"}}}
    assert r.json["description"] is None and r.json["name"] == "renamed"
    r = api.put("/v1/templates/renamed", json={"name": "renamed"})
    assert r.status_code == 422 and "channels" in r.json["errors"]
    r = api.patch("/v1/templates/renamed", json={"channels": {"sms": {"en": {"body": "{{"}}}})
    assert r.status_code == 422 and "channels.sms.en.body" in r.json["errors"]
    assert api.get("/v1/templates/renamed").json["channels"]["sms"]["en"]["body"] == "only"


def test_projects_are_isolated(app, api, client):
    created = create(api)
    other = make_project(app, "Other")
    h = other.auth()
    assert client.get(f"/v1/templates/{created['id']}", headers=h).status_code == 404
    assert client.get("/v1/templates/welcome", headers=h).status_code == 404
    assert client.get("/v1/templates", headers=h).json["data"] == []
    assert client.delete("/v1/templates/welcome", headers=h).status_code == 404
    r = client.post(f"/v1/templates/{created['id']}/preview", headers=h, json={})
    assert r.status_code == 404
    # The same name is free in another project.
    assert client.post("/v1/templates", headers=h, json=WELCOME).status_code == 201


def test_secret_key_only(api):
    assert api.get("/v1/templates", kind="publishable").status_code == 403
    assert api.post("/v1/templates", kind="publishable", json=WELCOME).status_code == 403


def test_preview_with_user_attributes_and_params(api):
    create(api)
    api.post(
        "/v1/users",
        json={
            "userId": "u1",
            "language": "pt-BR",
            "attributes": {"firstName": "Ana", "plan": "pro"},
        },
    )
    r = api.post("/v1/templates/welcome/preview", json={"userId": "u1", "params": {"count": 3}})
    assert r.status_code == 200, r.json
    data = r.json["data"]
    assert r.json["errors"] == {}
    # pt-BR falls back to pt for email; push only has en (the default).
    assert data["email"] == {"language": "pt", "subject": "Bem-vindo", "text": "Olá Ana"}
    assert data["push"] == {"language": "en", "title": "Hi", "body": "3 new items"}
    r = api.post(
        "/v1/templates/welcome/preview",
        json={"userId": "u1", "language": "en", "channels": ["email"]},
    )
    assert set(r.json["data"]) == {"email"}
    assert r.json["data"]["email"]["html"] == "<p>Hi Ana, plan pro</p>"
    # No user: missing values render empty.
    r = api.post("/v1/templates/welcome/preview", json={})
    assert r.json["data"]["email"]["subject"] == "Welcome there"
    assert r.json["data"]["push"]["body"] == " new items"


def test_preview_errors(api):
    create(api)
    r = api.post("/v1/templates/welcome/preview", json={"userId": "nobody"})
    assert r.status_code == 404 and "userId" in r.json["errors"]
    r = api.post("/v1/templates/welcome/preview", json={"channels": ["fax"]})
    assert r.status_code == 422 and "channels[0]" in r.json["errors"]
    r = api.post("/v1/templates/welcome/preview", json={"language": "!!"})
    assert r.status_code == 422 and "language" in r.json["errors"]
    assert api.post("/v1/templates/nope/preview", json={}).status_code == 404


def test_preview_reports_render_errors_per_channel(api):
    body = {
        "name": "risky",
        "channels": {
            "sms": {"en": {"body": "{{ ''.__class__.__mro__ }}"}},
            "push": {"en": {"body": "{% for i in range(10**9) %}x{% endfor %}"}},
            "inapp": {"en": {"title": "fine {{ params.x }}"}},
        },
    }
    create(api, body)
    r = api.post(
        "/v1/templates/risky/preview",
        json={"params": {"x": 1}, "channels": ["sms", "push", "inapp", "email"]},
    )
    assert r.status_code == 200, r.json
    assert r.json["data"] == {"inapp": {"language": "en", "title": "fine 1"}}
    assert "sandbox violation" in r.json["errors"]["sms"]
    assert "limit exceeded" in r.json["errors"]["push"]
    assert "no email content" in r.json["errors"]["email"]


def test_hostile_bodies_are_4xx(api):
    for bad in ([], "x", {"name": "n", "channels": []}, {"name": 5, "channels": {}}):
        r = api.post("/v1/templates", json=bad)
        assert 400 <= r.status_code < 500, (bad, r.json)
        assert {"code", "status", "message"} <= set(r.json)
    r = api.post("/v1/templates", data="{", content_type="application/json")
    assert 400 <= r.status_code < 500
    # Over 2^63 it cannot be any row's id: a 400 naming the field (issue 7, defect 2).
    r = api.get("/v1/templates/99999999999999999999999")
    assert r.status_code == 400 and "id" in r.json["errors"], r.json
    assert api.get("/v1/templates?cursor=zz").status_code == 400
