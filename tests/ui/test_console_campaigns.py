"""The campaign wizard, dry run and state changes through the test client, on both databases."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from app.db import db
from app.models import Campaign, Message, Send
from app.models.console import AuditEntry
from tests.ui.test_console import _account, _login, _token

TEMPLATE = {
    "name": "promo",
    "defaultLanguage": "en",
    "channels": {"inapp": {"en": {"title": "Sale", "body": "20% off"}}},
}


def _errors(html: str) -> list[str]:
    return re.findall(r'class="field-error">([^<]+)<', html)


def test_the_wizard_names_each_refused_field_and_creates_a_draft(app, client, api):
    _account(app, "owner@acme.io")
    assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    assert api.post("/v1/segments", json={"name": "pros", "filter": "plan:pro"}).status_code == 201
    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, "/projects/1/campaigns/new")
    form = {"csrf_token": token, "name": "spring", "kind": "broadcast", "template_inapp": "promo"}
    bad_ttl = client.post("/projects/1/campaigns/new", data={**form, "ttl": "soon"})
    assert bad_ttl.status_code == 422 and "not a duration" in " ".join(_errors(bad_ttl.text))
    no_channel = client.post("/projects/1/campaigns/new", data={**form, "template_inapp": ""})
    assert no_channel.status_code == 422 and _errors(no_channel.text)
    trig = client.post("/projects/1/campaigns/new", data={**form, "kind": "triggered"})
    assert trig.status_code == 422  # a triggered campaign needs its event
    bad_cron = client.post(
        "/projects/1/campaigns/new", data={**form, "kind": "recurring", "cron": "every day"}
    )
    assert bad_cron.status_code == 422 and _errors(bad_cron.text)
    ok = client.post(
        "/projects/1/campaigns/new",
        data={
            **form,
            "include_segment": "pros",
            "ttl": "2h",
            "rate_per_minute": "600",
            "goal_event": "purchase",
            "goal_within": "3d",
        },
    )
    assert ok.status_code == 302, _errors(ok.text)
    made = api.get("/v1/campaigns/spring").json
    assert made["status"] == "draft" and made["ttlSeconds"] == 7200
    assert made["rateLimit"] == {"perMinute": 600} and made["goal"]["within"] == 3 * 86400
    assert made["target"]["include"][0] == {
        "all": [{"attr": "plan", "op": "textEq", "value": "pro"}]
    }
    page = client.get(ok.headers["Location"]).text
    assert "plan is pro" in page and "2h" in page and "promo" in page  # no JSON on screen


def test_the_dry_run_sends_nothing_and_a_viewer_cannot_activate(app, client, api):
    _account(app, "owner@acme.io")
    _account(app, "viewer@acme.io", project_id=1, role="viewer")
    assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    for uid in ("a", "b", "c"):
        assert api.post("/v1/users", json={"userId": uid}).status_code == 200
    body = {"name": "hello", "kind": "broadcast", "channels": {"inapp": "promo"}}
    cid = api.post("/v1/campaigns", json=body).json["id"]

    viewer = app.test_client()
    assert _login(viewer, "viewer@acme.io").status_code == 302
    token = _token(viewer, f"/projects/1/campaigns/{cid}")
    dry = viewer.post(f"/projects/1/campaigns/{cid}/simulate", data={"csrf_token": token})
    assert dry.status_code == 200
    assert re.search(r'data-figure="reached">(\d+)<', dry.text).group(1) == "3"
    refused = viewer.post(f"/projects/1/campaigns/{cid}/activate", data={"csrf_token": token})
    assert refused.status_code == 403
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Message)) == 0
        assert db.session.scalar(select(func.count()).select_from(Send)) == 0
        assert db.session.get(Campaign, cid).status == "draft"

    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, f"/projects/1/campaigns/{cid}")
    assert (
        client.post(f"/projects/1/campaigns/{cid}/activate", data={"csrf_token": token}).status_code
        == 302
    )
    assert api.get(f"/v1/campaigns/{cid}").json["status"] in ("active", "completed")
    again = client.post(f"/projects/1/campaigns/{cid}/activate", data={"csrf_token": token})
    assert again.status_code == 409  # the API's state rules, shown as a page
    progress = client.get(f"/projects/1/campaigns/{cid}/progress").json
    assert set(progress) == {"status", "total", "ended", "fanningOut", "percent"}
    with app.app_context():
        entry = db.session.scalar(
            select(AuditEntry).where(AuditEntry.action == "campaign.activated")
        )
        assert entry.before == {"status": "draft"} and entry.actor == "owner@acme.io"


def test_editing_a_campaign_prefills_the_wizard_and_follows_the_state_rules(app, client, api):
    _account(app, "owner@acme.io")
    assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    assert api.post("/v1/audiences", json={"name": "vip"}).status_code == 201
    body = {
        "name": "tues",
        "kind": "triggered",
        "channels": {"inapp": "promo"},
        "trigger": {"event": "add_to_cart", "where": "sku:A1"},
        "target": {"include": [{"audience": "vip"}, "plan:pro"], "exclude": ["role:bot"]},
        "ttlSeconds": 7200,
    }
    cid = api.post("/v1/campaigns", json=body).json["id"]
    assert _login(client, "owner@acme.io").status_code == 302
    page = client.get(f"/projects/1/campaigns/{cid}/edit").text
    assert re.search(r'name="include_audience" value="vip" checked', page)
    assert ">plan:pro</textarea>" in page and ">role:bot</textarea>" in page
    assert 'name="ttl" value="2h"' in page and 'name="trigger_where" value="sku:A1"' in page
    token = _token(client, f"/projects/1/campaigns/{cid}/edit")
    form = {
        "csrf_token": token,
        "name": "tues",
        "kind": "triggered",
        "category": "marketing",
        "template_inapp": "promo",
        "include_audience": "vip",
        "include_filter": "",
        "exclude_filter": "role:bot",
        "trigger_event": "add_to_cart",
        "trigger_where": "sku:A1",
        "ttl": "3h",
    }
    saved = client.post(f"/projects/1/campaigns/{cid}/edit", data=form)
    assert saved.status_code == 302, _errors(saved.text)
    made = api.get(f"/v1/campaigns/{cid}").json
    assert made["ttlSeconds"] == 3 * 3600 and made["version"] == 2
    assert len(made["target"]["include"]) == 1  # the emptied filter line is gone
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "campaign.edited"))
        assert entry.before["ttlSeconds"] == 7200 and entry.after["ttlSeconds"] == 10800
    assert api.post(f"/v1/campaigns/{cid}/activate").status_code == 200
    # Active: the lifetime may change, the trigger may not (the API's rule, named on the page).
    live = client.post(f"/projects/1/campaigns/{cid}/edit", data={**form, "ttl": "1h"})
    assert live.status_code == 302 and api.get(f"/v1/campaigns/{cid}").json["ttlSeconds"] == 3600
    refused = client.post(
        f"/projects/1/campaigns/{cid}/edit", data={**form, "ttl": "1h", "trigger_event": "buy"}
    )
    assert refused.status_code == 409 and "not editable while active" in refused.text
    assert api.get(f"/v1/campaigns/{cid}").json["trigger"]["event"] == "add_to_cart"
