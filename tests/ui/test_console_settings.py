"""Project settings and API keys through the test client: the API's validation, admin only,
keys created once and revoked for good."""

from __future__ import annotations

import re

from tests.ui.test_console import _account, _login, _token


def test_an_admin_changes_settings_through_the_apis_rules_and_a_marketer_cannot(app, client, api):
    _account(app, "owner@acme.io")
    _account(app, "mia@acme.io", project_id=1, role="marketer")
    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, "/projects/1/settings")
    form = {
        "csrf_token": token,
        "name": "Acme",
        "default_region": "fr",
        "identity": "required",
        "quiet_start": "22:00",
        "quiet_end": "07:30",
        "quiet_mode": "defer",
        "cap_count": "3",
        "cap_window": "1d",
        "stack_window": "10m",
        "email_fromAddress": "news@acme.io",
        "push_vapidSubject": "mailto:ops@acme.io",
    }
    bad = client.post("/projects/1/settings", data={**form, "quiet_end": "7h30"})
    assert bad.status_code == 422 and "settings.quietHours.end" in bad.text
    bad_cap = client.post("/projects/1/settings", data={**form, "cap_window": "daily"})
    assert bad_cap.status_code == 422 and "settings.frequencyCap.windowSeconds" in bad_cap.text
    help_text = {"settings": {"sms": {"helpText": "Acme alerts. Reply STOP to stop."}}}
    assert api.patch("/v1/project", json=help_text).status_code == 200
    saved = client.post("/projects/1/settings", data={**form, "sms_fromNumber": "+14155550100"})
    assert saved.status_code == 302
    view = api.get("/v1/project").json
    assert view["defaultRegion"] == "FR"
    s = view["settings"]
    assert s["quietHours"] == {"start": "22:00", "end": "07:30", "mode": "defer"}
    assert s["frequencyCap"] == {"count": 3, "windowSeconds": 86400}
    assert s["stackWindowSeconds"] == 600 and s["identityVerification"] == "required"
    assert s["email"] == {"from": "news@acme.io"}
    assert s["push"] == {"vapidSubject": "mailto:ops@acme.io"}
    # A setting the form does not show (the SMS HELP answer) is kept.
    assert s["sms"] == {"from": "+14155550100", "helpText": "Acme alerts. Reply STOP to stop."}
    # Emptying a section removes that setting.
    cleared = {**form, "quiet_start": "", "quiet_end": "", "cap_count": "", "cap_window": ""}
    assert client.post("/projects/1/settings", data=cleared).status_code == 302
    s = api.get("/v1/project").json["settings"]
    assert "quietHours" not in s and "frequencyCap" not in s
    assert "project.settings_changed" in client.get("/projects/1/audit").text

    marketer = app.test_client()
    assert _login(marketer, "mia@acme.io").status_code == 302
    mt = _token(marketer, "/projects/1/settings")
    page = marketer.get("/projects/1/settings").text
    assert "Save settings" not in page and "Only an admin" in page
    refused = marketer.post("/projects/1/settings", data={**form, "csrf_token": mt, "name": "Mine"})
    assert refused.status_code == 403 and api.get("/v1/project").json["name"] == "Acme"
    assert (
        marketer.post("/projects/1/keys", data={"csrf_token": mt, "kind": "secret"}).status_code
        == 403
    )


def test_keys_are_shown_once_and_a_revoked_key_stops_working(app, client, api, project):
    _account(app, "owner@acme.io")
    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, "/projects/1/settings")
    made = client.post("/projects/1/keys", data={"csrf_token": token, "kind": "secret"})
    assert made.status_code == 200
    raw = re.search(r"data-new-key>(sk_[^<]+)<", made.text).group(1)
    headers = {"Authorization": f"Bearer {raw}"}
    assert client.get("/v1/project", headers=headers).status_code == 200
    assert raw not in client.get("/projects/1/settings").text  # only its prefix from now on
    page = client.get("/projects/1/settings").text
    kid = re.search(
        r'data-key="' + "_".join(raw.split("_")[:2]) + r'".*?/keys/(\d+)/revoke', page, re.S
    ).group(1)
    revoked = client.post(f"/projects/1/keys/{kid}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 302
    assert client.get("/v1/project", headers=headers).status_code == 401
    again = client.post(f"/projects/1/keys/{kid}/revoke", data={"csrf_token": token})
    assert again.status_code == 422
    assert (
        client.post("/projects/1/keys/999999/revoke", data={"csrf_token": token}).status_code == 404
    )
    assert client.get("/v1/project", headers=project.auth()).status_code == 200  # others still work
