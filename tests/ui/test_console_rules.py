"""The rule editor and the audience rename / delete forms through the test client, on both
databases: a rule made of plain fields is the API's rule (and fires), refused fields are named
next to them, edits keep the id and are audited, viewers are refused."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from app.db import db
from app.models import Event
from app.models.console import AuditEntry
from tests.conftest import wait_for
from tests.ui.test_console import _account, _login, _token

TEMPLATE = {
    "name": "promo",
    "defaultLanguage": "en",
    "channels": {"inapp": {"en": {"title": "Sale", "body": "20% off"}}},
}


def _field_errors(page: str) -> dict[str, list[str]]:
    """The errors shown next to fields: {API field path: [reasons]}."""
    found: dict[str, list[str]] = {}
    for key, text in re.findall(r'class="field-error" data-field="([^"]+)">([^<]*)<', page):
        found.setdefault(html.unescape(key), []).append(html.unescape(text))
    return found


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _audience(api, name: str) -> int:
    r = api.post("/v1/audiences", json={"name": name})
    assert r.status_code == 201, r.json
    return r.json["id"]


def _members(api, ref) -> list[str]:
    r = api.get(f"/v1/audiences/{ref}/members?limit=1000")
    assert r.status_code == 200, r.json
    return sorted(m["userId"] for m in r.json["data"])


def _audits(app, action: str) -> list[AuditEntry]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            )
        )


def _cart_form(token: str, almost: int) -> dict[str, str]:
    return {
        "csrf_token": token,
        "name": "cart",
        "enabled": "1",
        "priority": "5",
        "when_kind": "event",
        "when_event": "add_to_cart",
        "when_where": "sku:A1",
        "if_filter": "plan:pro",
        "then-0-kind": "addToAudience",
        "then-0-audience": str(almost),
        "then-0-ttl": "1h",
        "then-1-kind": "",  # an empty row is left out
        "then-2-kind": "setAttributes",
        "then-2-attributes": 'carted=true\nlast_sku="A1"\n\nitems=2',
    }


def test_a_rule_made_of_plain_fields_is_the_apis_rule_and_fires(app, client, api, workers):
    _account(app, "owner@acme.io")
    almost = _audience(api, "Almost bought")
    assert _login(client, "owner@acme.io").status_code == 302
    listing = client.get("/projects/1/rules").text
    assert 'href="/projects/1/rules/new"' in listing
    page = client.get("/projects/1/rules/new")
    assert page.status_code == 200 and "{" not in _text(page.text.split("<script>")[0])
    token = _token(client, "/projects/1/rules/new")

    made = client.post("/projects/1/rules/new", data=_cart_form(token, almost))
    assert made.status_code == 302, _field_errors(made.text)
    rid = int(re.search(r"/projects/1/rules/(\d+)", made.headers["Location"]).group(1))
    rule = api.get(f"/v1/rules/{rid}").json
    assert rule["name"] == "cart" and rule["enabled"] is True and rule["priority"] == 5
    assert rule["when"] == {
        "event": "add_to_cart",
        "where": {"all": [{"attr": "sku", "op": "textEq", "value": "A1"}]},
    }
    assert rule["if"] == {"all": [{"attr": "plan", "op": "textEq", "value": "pro"}]}
    assert rule["then"] == [
        {"addToAudience": almost, "ttlSeconds": 3600},
        {"setAttributes": {"carted": True, "last_sku": "A1", "items": 2}},
    ]
    # The same rule sent to the API as JSON is stored the same way.
    twin = api.post(
        "/v1/rules",
        json={
            "name": "twin",
            "enabled": False,
            "priority": 5,
            "when": {"event": "add_to_cart", "where": "sku:A1"},
            "if": "plan:pro",
            "then": [
                {"addToAudience": "Almost bought", "ttlSeconds": 3600},
                {"setAttributes": {"carted": True, "last_sku": "A1", "items": 2}},
            ],
        },
    ).json
    assert {k: twin[k] for k in ("when", "if", "then")} == {
        k: rule[k] for k in ("when", "if", "then")
    }

    shown = client.get(made.headers["Location"]).text
    assert "Saved." in shown and f'href="/projects/1/rules/{rid}/edit"' in shown
    words = _text(re.search(r'aria-labelledby="def".*?</section>', shown, re.S).group(0))
    assert "a user does add_to_cart where sku is A1" in words
    assert "add to audience Almost bought for 1h" in words
    [created] = _audits(app, "rule.created")
    assert created.object_id == str(rid) and created.actor == "owner@acme.io"
    assert created.after["name"] == "cart" and created.after["then"] == rule["then"]

    # It fires: a pro user adding A1 joins the audience; the others do not.
    for uid, plan in (("ann", "pro"), ("bob", "free"), ("cat", "pro")):
        r = api.post("/v1/users", json={"userId": uid, "attributes": {"plan": plan}})
        assert r.status_code == 200, r.json
    events = [
        {"name": "add_to_cart", "userId": "ann", "properties": {"sku": "A1"}},
        {"name": "add_to_cart", "userId": "bob", "properties": {"sku": "A1"}},
        {"name": "add_to_cart", "userId": "cat", "properties": {"sku": "B2"}},
    ]
    assert api.post("/v1/events", json=events).status_code == 202
    wait_for(lambda: _members(api, almost) == ["ann"])

    def processed() -> bool:
        with app.app_context():
            return db.session.scalar(select(Event.id).where(Event.processed_at.is_(None))) is None

    wait_for(processed)
    assert _members(api, almost) == ["ann"]
    attributes = api.get("/v1/users/ann").json["attributes"]
    assert attributes["carted"] is True and attributes["last_sku"] == "A1"
    assert "carted" not in api.get("/v1/users/bob").json["attributes"]


def test_refused_fields_are_named_next_to_them_and_nothing_is_saved(app, client, api):
    _account(app, "owner@acme.io")
    almost = _audience(api, "Almost bought")
    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, "/projects/1/rules/new")
    good = _cart_form(token, almost)

    def refused(**changes: str) -> tuple[dict[str, list[str]], str]:
        r = client.post("/projects/1/rules/new", data={**good, **changes})
        assert r.status_code == 422, r.status_code
        assert "Some fields need a change" in r.text
        return _field_errors(r.text), r.text

    # Reading the fields and the rule's own checks: all shown at once.
    errors, page = refused(**{"then-0-ttl": "soon", "when_where": "sku:", "priority": "high"})
    assert "not a duration" in errors["then[0].ttlSeconds"][0]
    assert any(k.startswith("when.where") for k in errors), errors
    assert "priority" in errors
    assert 'value="soon"' in page and 'value="sku:"' in page  # what was typed stays
    # A reference to nothing (the service's 404) next to its row, numbered as on the form.
    errors, _ = refused(
        **{"then-1-kind": "sendCampaign", "then-1-campaign": "999", "then-0-audience": "998"}
    )
    assert errors == {
        "then[0].addToAudience": ["not found"],
        "then[1].sendCampaign": ["not found"],
    }
    errors, _ = refused(**{"then-2-attributes": "no equals sign"})
    assert errors == {"then[2].setAttributes": ["line 1: write name=value"]}
    errors, _ = refused(**{"then-0-kind": "", "then-2-kind": ""})
    assert errors == {"then": ["add at least one action"]}
    errors, _ = refused(when_kind="audienceEntered", when_audience="")
    assert errors == {"when.audienceEntered": ["choose an audience"]}
    errors, _ = refused(when_kind="attributeChanged", when_attribute="plan", when_to="[1, 2]")
    assert "when.to" in errors
    errors, _ = refused(name="   ")
    assert list(errors) == ["name"]
    assert api.get("/v1/rules").json["data"] == []
    assert _audits(app, "rule.created") == []

    # Without JavaScript, "Add another action" shows the form again with one more row.
    more = client.post("/projects/1/rules/new", data={**good, "add_row": "1"})
    assert more.status_code == 200 and 'name="then-3-kind"' in more.text
    assert api.get("/v1/rules").json["data"] == []

    assert client.post("/projects/1/rules/new", data=good).status_code == 302
    taken = client.post("/projects/1/rules/new", data=good)
    assert taken.status_code == 422
    assert _field_errors(taken.text) == {"name": ["another rule already has this name"]}


def test_editing_keeps_the_id_and_is_audited_with_before_and_after(app, client, api):
    _account(app, "owner@acme.io")
    almost = _audience(api, "Almost bought")
    assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    campaign = api.post(
        "/v1/campaigns", json={"name": "nudge", "kind": "api", "channels": {"inapp": "promo"}}
    ).json["id"]
    segment = api.post("/v1/segments", json={"name": "pros", "filter": "plan:pro"}).json["id"]
    body = {
        "name": "cart",
        "when": {"event": "add_to_cart", "where": "sku:A1"},
        "if": "plan:pro",
        "then": [
            {"addToAudience": "Almost bought", "ttlSeconds": 3600},
            {"setAttributes": {"tier": "3", "vip": True}},
        ],
    }
    rid = api.post("/v1/rules", json=body).json["id"]
    assert _login(client, "owner@acme.io").status_code == 302

    page = client.get(f"/projects/1/rules/{rid}/edit")
    assert page.status_code == 200
    form = page.text
    assert 'name="name" required value="cart"' in form
    assert 'name="when_where" value="sku:A1"' in form
    assert re.search(rf'<option value="{segment}" selected>pros<', form)  # the same condition
    assert re.search(rf'<option value="{almost}" selected>Almost bought<', form)
    assert 'name="then-0-ttl" value="1h"' in form
    lines = re.search(r'name="then-1-attributes"[^>]*>([^<]*)<', form).group(1).splitlines()
    assert sorted(lines) == ["tier=&#34;3&#34;", "vip=true"]  # the text "3" stays text

    token = _token(client, f"/projects/1/rules/{rid}/edit")
    saved = client.post(
        f"/projects/1/rules/{rid}/edit",
        data={
            "csrf_token": token,
            "name": "upgrade",
            "priority": "-2",  # enabled unticked: off
            "when_kind": "attributeChanged",
            "when_attribute": "plan",
            "when_from": "free",
            "when_to": "pro",
            "if_segment": "",
            "if_filter": "",
            "then-0-kind": "removeFromAudience",
            "then-0-audience": str(almost),
            "then-4-kind": "sendCampaign",
            "then-4-campaign": str(campaign),
        },
    )
    assert saved.status_code == 302, _field_errors(saved.text)
    assert saved.headers["Location"].startswith(f"/projects/1/rules/{rid}?")
    rule = api.get(f"/v1/rules/{rid}").json
    assert rule["name"] == "upgrade" and rule["enabled"] is False and rule["priority"] == -2
    assert rule["when"] == {"attributeChanged": "plan", "from": "free", "to": "pro"}
    assert rule["if"] is None
    assert rule["then"] == [{"removeFromAudience": almost}, {"sendCampaign": campaign}]
    assert api.get("/v1/rules/cart").status_code == 404
    [edited] = _audits(app, "rule.edited")
    assert edited.object_id == str(rid) and edited.actor == "owner@acme.io"
    assert edited.before["name"] == "cart" and edited.before["enabled"] is True
    assert edited.before["then"][0] == {"addToAudience": almost, "ttlSeconds": 3600}
    assert edited.after["name"] == "upgrade" and edited.after["then"] == rule["then"]
    assert edited.after["when"] == rule["when"] and edited.after["if"] is None

    # A refused edit changes nothing and names the field.
    bad = client.post(
        f"/projects/1/rules/{rid}/edit",
        data={
            "csrf_token": token,
            "name": "upgrade",
            "when_kind": "event",
            "when_event": "",
            "then-0-kind": "startJourney",
            "then-0-journey": "77",
        },
    )
    assert bad.status_code == 422
    assert _field_errors(bad.text) == {"when.event": ["the name of the event, e.g. add_to_cart"]}
    gone = client.post(
        f"/projects/1/rules/{rid}/edit",
        data={
            "csrf_token": token,
            "name": "upgrade",
            "when_kind": "event",
            "when_event": "buy",
            "then-0-kind": "startJourney",
            "then-0-journey": "77",
        },
    )
    assert gone.status_code == 422
    assert _field_errors(gone.text) == {"then[0].startJourney": ["not found"]}
    assert api.get(f"/v1/rules/{rid}").json == rule
    assert len(_audits(app, "rule.edited")) == 1


def test_a_viewer_sees_the_rule_form_read_only_and_cannot_save(app, client, api):
    _account(app, "owner@acme.io")
    _account(app, "viewer@acme.io", project_id=1, role="viewer")
    almost = _audience(api, "Almost bought")
    body = {"name": "cart", "when": {"event": "a"}, "then": [{"addToAudience": almost}]}
    rid = api.post("/v1/rules", json=body).json["id"]
    viewer = app.test_client()
    assert _login(viewer, "viewer@acme.io").status_code == 302
    assert "/rules/new" not in viewer.get("/projects/1/rules").text
    assert f"/rules/{rid}/edit" not in viewer.get(f"/projects/1/rules/{rid}").text
    page = viewer.get(f"/projects/1/rules/{rid}/edit")
    assert page.status_code == 200 and '<fieldset class="whole" disabled>' in page.text
    assert "Save changes" not in page.text
    token = _token(viewer, "/projects/1/rules/new")
    form = _cart_form(token, almost)
    assert viewer.post("/projects/1/rules/new", data=form).status_code == 403
    assert viewer.post(f"/projects/1/rules/{rid}/edit", data=form).status_code == 403
    assert [r["name"] for r in api.get("/v1/rules").json["data"]] == ["cart"]
    assert _audits(app, "rule.created") == [] and _audits(app, "rule.edited") == []


# --- audiences ----------------------------------------------------------------------------------


def test_an_audience_is_renamed_and_deleted(app, client, api):
    _account(app, "owner@acme.io")
    aid = _audience(api, "vip")
    _audience(api, "other")
    r = api.post(f"/v1/audiences/{aid}/members", json={"userIds": ["ann"]})
    assert r.status_code < 300, r.json
    by_name = api.post("/v1/segments", json={"name": "vips", "filter": {"audience": "vip"}})
    assert by_name.status_code == 201, by_name.json
    body = {"name": "keep", "when": {"event": "buy"}, "then": [{"addToAudience": "vip"}]}
    assert api.post("/v1/rules", json=body).status_code == 201
    named = {**body, "name": "named", "if": {"audience": "vip"}}
    assert api.post("/v1/rules", json=named).status_code == 201
    assert _login(client, "owner@acme.io").status_code == 302
    page = client.get(f"/projects/1/audiences/{aid}/edit")
    assert page.status_code == 200
    assert f'action="/projects/1/audiences/{aid}/edit"' in page.text
    assert f'action="/projects/1/audiences/{aid}/delete"' in page.text
    token = _token(client, f"/projects/1/audiences/{aid}/edit")

    taken = client.post(
        f"/projects/1/audiences/{aid}/edit", data={"csrf_token": token, "name": "other"}
    )
    assert taken.status_code == 422
    assert _field_errors(taken.text) == {"name": ["another audience already has this name"]}
    blank = client.post(f"/projects/1/audiences/{aid}/edit", data={"csrf_token": token, "name": ""})
    assert blank.status_code == 422 and list(_field_errors(blank.text)) == ["name"]
    assert api.get("/v1/audiences/vip").status_code == 200

    renamed = client.post(
        f"/projects/1/audiences/{aid}/edit",
        data={"csrf_token": token, "name": "VIP customers", "description": "big spenders"},
    )
    assert renamed.status_code == 302
    location = urlsplit(renamed.headers["Location"])
    assert location.path == f"/projects/1/audiences/{aid}"
    # Conditions that name the audience (not its id) are listed.
    assert parse_qs(location.query)["stale"] == ["rule named", "segment vips"]
    assert api.get("/v1/audiences/vip").status_code == 404
    now = api.get("/v1/audiences/VIP%20customers")
    assert now.status_code == 200 and now.json["id"] == aid
    assert now.json["description"] == "big spenders" and now.json["memberCount"] == 1
    assert api.get("/v1/rules/keep").json["then"] == [{"addToAudience": aid}]  # by id: kept
    shown = client.get(f"/projects/1/audiences/{aid}/edit?{location.query}").text
    assert "Renamed from vip" in shown
    assert re.search(r"data-stale>.*rule named, segment vips", shown)
    [edited] = _audits(app, "audience.edited")
    assert edited.before == {"name": "vip", "description": None}
    assert edited.after == {"name": "VIP customers", "description": "big spenders"}
    assert edited.object_id == str(aid) and "segment vips" in edited.summary

    gone = client.post(f"/projects/1/audiences/{aid}/delete", data={"csrf_token": token})
    assert gone.status_code == 302 and gone.headers["Location"] == "/projects/1/audiences"
    assert api.get(f"/v1/audiences/{aid}").status_code == 404
    assert api.get("/v1/audiences/VIP%20customers").status_code == 404
    assert [a["name"] for a in api.get("/v1/audiences").json["data"]] == ["other"]
    [deleted] = _audits(app, "audience.deleted")
    assert deleted.before == {"name": "VIP customers", "description": "big spenders", "members": 1}
    assert (
        client.post(f"/projects/1/audiences/{aid}/delete", data={"csrf_token": token}).status_code
        == 404
    )


def test_a_viewer_cannot_rename_or_delete_an_audience(app, client, api):
    _account(app, "owner@acme.io")
    _account(app, "viewer@acme.io", project_id=1, role="viewer")
    aid = _audience(api, "vip")
    viewer = app.test_client()
    assert _login(viewer, "viewer@acme.io").status_code == 302
    token = _token(viewer, f"/projects/1/audiences/{aid}")
    assert viewer.get(f"/projects/1/audiences/{aid}/edit").status_code == 403
    edit = viewer.post(
        f"/projects/1/audiences/{aid}/edit", data={"csrf_token": token, "name": "mine"}
    )
    assert edit.status_code == 403
    assert (
        viewer.post(f"/projects/1/audiences/{aid}/delete", data={"csrf_token": token}).status_code
        == 403
    )
    assert api.get(f"/v1/audiences/{aid}").json["name"] == "vip"
    assert _audits(app, "audience.edited") == [] and _audits(app, "audience.deleted") == []
