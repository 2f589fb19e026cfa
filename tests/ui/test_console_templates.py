"""Templates (editor, preview, test send) and the message log through the test client."""

from __future__ import annotations

import re

from tests.conftest import wait_for
from tests.ui.test_console import _account, _login, _token


def _field_errors(html: str) -> list[str]:
    return re.findall(r'class="field-error">([^<]+)<', html)


def test_templates_are_edited_per_language_and_previewed_unsaved_for_a_user(app, client, api):
    _account(app, "owner@acme.io")
    body = {"userId": "ann", "language": "fr", "attributes": {"first_name": "Ann"}}
    assert api.post("/v1/users", json=body).status_code == 200
    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, "/projects/1/templates/new")
    empty = client.post(
        "/projects/1/templates/new",
        data={"csrf_token": token, "name": "hi", "lang": "en", "use_inapp": "1"},
    )
    assert empty.status_code == 422
    assert any("channels.inapp.en.title" in e for e in _field_errors(empty.text))
    made = client.post(
        "/projects/1/templates/new",
        data={
            "csrf_token": token,
            "name": "hi",
            "lang": "en",
            "use_inapp": "1",
            "inapp_title": "Hi {{ user.attributes.first_name }}",
            "inapp_body": "Code {{ params.coupon }}",
        },
    )
    assert made.status_code == 302
    french = client.post(
        "/projects/1/templates/1",
        data={
            "csrf_token": token,
            "name": "hi",
            "lang": "fr",
            "default_language": "en",
            "use_inapp": "1",
            "inapp_title": "Salut {{ user.attributes.first_name }}",
            "inapp_body": "Code {{ params.coupon }}",
        },
    )
    assert french.status_code == 302
    channels = api.get("/v1/templates/hi").json["channels"]["inapp"]
    assert set(channels) == {"en", "fr"} and channels["fr"]["title"].startswith("Salut")
    # The API's own preview picks ann's language from what the console saved.
    api_preview = api.post("/v1/templates/hi/preview", json={"userId": "ann"}).json
    assert api_preview["data"]["inapp"]["title"] == "Salut Ann"

    def preview(**body):
        return client.post(
            "/projects/1/templates/preview", json=body, headers={"X-CSRFToken": token}
        )

    unsaved = preview(
        channels={
            "inapp": {
                "title": "Hey {{ user.attributes.first_name }}",
                "body": "{{ params.coupon }}",
            }
        },
        userId="ann",
        params={"coupon": "X1"},
        language="en",
    )
    assert unsaved.json == {"data": {"inapp": {"title": "Hey Ann", "body": "X1"}}, "errors": {}}
    escape = preview(channels={"inapp": {"title": "{{ ''.__class__.__mro__ }}", "body": "b"}})
    assert "sandbox" in escape.json["errors"]["inapp"]
    assert preview(channels={}, userId="ghost").status_code == 404


def test_a_test_send_reaches_the_user_and_shows_in_the_message_log(app, client, api, workers):
    _account(app, "owner@acme.io")
    assert api.post("/v1/users", json={"userId": "ann"}).status_code == 200
    template = {
        "name": "hi",
        "defaultLanguage": "en",
        "channels": {"inapp": {"en": {"title": "Hello", "body": "there"}}},
    }
    assert api.post("/v1/templates", json=template).status_code == 201
    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, "/projects/1/templates/1")
    nobody = client.post("/projects/1/templates/1/test-send", data={"csrf_token": token})
    assert nobody.status_code == 422
    sent = client.post(
        "/projects/1/templates/1/test-send", data={"csrf_token": token, "userId": "ann"}
    )
    assert sent.status_code == 302 and "tested=ann" in sent.headers["Location"]

    def log() -> str:
        return client.get("/projects/1/messages", query_string={"user": "ann"}).text

    wait_for(lambda: "queued → sent" in log() or "→ sent" in log(), 30)
    page = log()
    assert page.count("data-message=") == 1 and "inapp" in page
    assert (
        client.get("/projects/1/messages", query_string={"channel": "email"}).text.count(
            "data-message="
        )
        == 0
    )
    assert "No user ghost" in client.get("/projects/1/messages?user=ghost").text
