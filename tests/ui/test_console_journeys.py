"""The journey and rule pages through the test client, on both databases: the flow with each
step in words and its counts, state changes by role with the audit log, rules in words and
turning one off."""

from __future__ import annotations

import html
import re

from sqlalchemy import insert, select

from app.db import db
from app.models import Journey, RuleFiring
from app.models.base import utcnow
from app.models.console import AuditEntry
from tests.ui.test_console import _account, _login, _token

TEMPLATE = {
    "name": "promo",
    "defaultLanguage": "en",
    "channels": {"inapp": {"en": {"title": "Sale", "body": "20% off"}}},
}
CART = {
    "name": "abandoned cart",
    "trigger": {"event": "cart_updated", "where": "plan:pro"},
    "entry": {"policy": "always", "key": "cartId"},
    "exit": [{"event": "cart_emptied", "matchOn": "cartId"}],
    "goal": {"event": "purchase", "within": "3d"},
    "steps": [
        {"id": "pause", "type": "wait", "duration": "1d", "next": "bought"},
        {
            "id": "bought",
            "type": "waitForEvent",
            "event": "purchase",
            "matchOn": "cartId",
            "timeout": "24h",
            "next": "done",
            "onTimeout": "who",
        },
        {
            "id": "who",
            "type": "branch",
            "branches": [{"if": "plan:pro", "next": "ab"}],
            "default": "done",
        },
        {
            "id": "ab",
            "type": "split",
            "variants": [{"percent": 50, "next": "nudge"}, {"percent": 50, "next": "done"}],
        },
        {"id": "nudge", "type": "send", "channel": "inapp", "template": "promo", "next": "done"},
        {"id": "done", "type": "exit"},
    ],
}
WORDS = {
    "pause": "wait 1d",
    "bought": "wait for purchase matched on cartId, timeout 24h",
    "who": "branch",
    "ab": "split 50/50",
    "nudge": "send inapp with template promo",
    "done": "exit",
}
CART_RULE = {
    "name": "cart",
    "when": {"event": "add_to_cart", "where": "sku:A1"},
    "if": {"plan": "pro"},
    "then": [{"addToAudience": "Almost bought", "ttlSeconds": 3600}],
}


def _text(fragment: str) -> str:
    """What a reader sees of an HTML fragment: tags dropped, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _box(page: str, step: str) -> str:
    """The HTML of one step's box in the drawn flow."""
    found = re.search(rf'<article[^>]*data-step="{step}".*?</article>', page, re.S)
    assert found, f"step {step} is not drawn"
    return found.group(0)


def _count(box: str, name: str) -> int:
    return int(re.search(rf'data-count="{name}">(\d+)<', box).group(1))


def _journey(api) -> int:
    assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    r = api.post("/v1/journeys", json=CART)
    assert r.status_code == 201, r.json
    return r.json["id"]


def test_a_journey_is_drawn_step_by_step_with_its_counts(app, client, api):
    _account(app, "owner@acme.io")
    jid = _journey(api)
    assert _login(client, "owner@acme.io").status_code == 302

    listing = client.get("/projects/1/journeys")
    assert listing.status_code == 200
    row = _text(re.search(rf'<tr data-journey="{jid}">.*?</tr>', listing.text, re.S).group(0))
    assert "abandoned cart" in row and "a user does cart_updated where plan is pro" in row
    assert "draft" in row

    page = client.get(f"/projects/1/journeys/{jid}")
    assert page.status_code == 200
    for step, words in WORDS.items():
        box = _box(page.text, step)
        assert f"data-text>{words}<" in box, (step, _text(box))
        assert _count(box, "entered") == 0 and _count(box, "waiting") == 0
    # Edges name where runs go: the timeout, the branch's condition, the split's halves.
    edges = _text(page.text)
    assert "timeout 24h" in edges and "if plan is pro" in edges and "otherwise" in edges
    assert edges.count("50 %") == 2
    # The definition in words, no JSON on screen.
    definition = _text(re.search(r'aria-labelledby="def".*?</section>', page.text, re.S).group(0))
    assert "every time the trigger happens, at most one live run per cartId" in definition
    assert "cart_emptied (the same cartId as on entry)" in definition
    assert "purchase within 3d of entering" in definition
    assert "{" not in definition

    token = _token(client, f"/projects/1/journeys/{jid}")
    r = client.post(f"/projects/1/journeys/{jid}/activate", data={"csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == f"/projects/1/journeys/{jid}"
    entered = api.post(
        f"/v1/journeys/{jid}/enter", json={"userId": "ann", "params": {"cartId": "c1"}}
    )
    assert entered.status_code == 200 and entered.json["entered"] is True, entered.json

    page = client.get(f"/projects/1/journeys/{jid}").text
    first = _box(page, "pause")
    assert _count(first, "entered") == 1 and _count(first, "waiting") == 1
    assert _count(_box(page, "bought"), "entered") == 0
    run = re.search(r"<tr data-run-id=.*?</tr>", page, re.S).group(0)
    assert "ann" in _text(run) and "data-at>pause<" in run and "waiting" in run
    assert re.search(r"data-wake>\d{4}-\d\d-\d\d \d\d:\d\d<", run)  # a wait wakes it up
    assert re.search(r'<tr data-version="1">', page)
    listing = client.get("/projects/1/journeys").text
    row = re.search(rf'<tr data-journey="{jid}">.*?</tr>', listing, re.S).group(0)
    assert 'data-figure="live">1<' in row


def test_a_viewer_cannot_activate_and_activation_is_audited(app, client, api):
    _account(app, "owner@acme.io")
    _account(app, "viewer@acme.io", project_id=1, role="viewer")
    jid = _journey(api)

    viewer = app.test_client()
    assert _login(viewer, "viewer@acme.io").status_code == 302
    page = viewer.get(f"/projects/1/journeys/{jid}")
    assert page.status_code == 200 and f"journeys/{jid}/activate" not in page.text
    token = _token(viewer, f"/projects/1/journeys/{jid}")
    refused = viewer.post(f"/projects/1/journeys/{jid}/activate", data={"csrf_token": token})
    assert refused.status_code == 403 and "viewer" in refused.text
    assert api.get(f"/v1/journeys/{jid}").json["status"] == "draft"

    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, f"/projects/1/journeys/{jid}")
    ok = client.post(f"/projects/1/journeys/{jid}/activate", data={"csrf_token": token})
    assert ok.status_code == 302
    assert api.get(f"/v1/journeys/{jid}").json["status"] == "active"
    again = client.post(f"/projects/1/journeys/{jid}/activate", data={"csrf_token": token})
    assert again.status_code == 409 and "already active" in again.text  # the API's rule
    paused = client.post(f"/projects/1/journeys/{jid}/pause", data={"csrf_token": token})
    assert paused.status_code == 302
    assert api.get(f"/v1/journeys/{jid}").json["status"] == "paused"
    assert "Resume" in client.get(f"/projects/1/journeys/{jid}").text
    with app.app_context():
        entries = db.session.scalars(
            select(AuditEntry).where(AuditEntry.object_type == "journey").order_by(AuditEntry.id)
        ).all()
        assert [e.action for e in entries] == ["journey.activated", "journey.paused"]
        activated = entries[0]
        assert activated.before == {"status": "draft"} and activated.after == {"status": "active"}
        assert activated.actor == "owner@acme.io" and activated.object_id == str(jid)
        assert db.session.get(Journey, jid).status == "paused"
    log = client.get("/projects/1/audit").text
    assert "activate journey abandoned cart: draft → active" in html.unescape(log)


def test_rules_are_shown_in_words_and_a_marketer_turns_one_off(app, client, api, project):
    _account(app, "owner@acme.io")
    _account(app, "viewer@acme.io", project_id=1, role="viewer")
    assert api.post("/v1/audiences", json={"name": "Almost bought"}).status_code == 201
    rule = api.post("/v1/rules", json=CART_RULE)
    assert rule.status_code == 201, rule.json
    rid = rule.json["id"]
    assert api.post("/v1/users", json={"userId": "ann"}).status_code == 200
    with app.app_context(), db.begin() as session:
        from app.models import User

        ann = session.scalar(select(User.id).where(User.external_id == "ann"))
        session.execute(
            insert(RuleFiring),
            [
                {
                    "project_id": project.id,
                    "rule_id": rid,
                    "user_id": ann,
                    "event_id": 1,
                    "cause": {"event": "add_to_cart", "chain": [rid]},
                    "depth": 0,
                    "status": "fired",
                    "actions": [
                        {"addToAudience": rule.json["then"][0]["addToAudience"], "result": "joined"}
                    ],
                    "at": utcnow(),
                }
            ],
        )

    viewer = app.test_client()
    assert _login(viewer, "viewer@acme.io").status_code == 302
    listing = viewer.get("/projects/1/rules")
    assert listing.status_code == 200
    row = re.search(rf'<tr data-rule="{rid}">.*?</tr>', listing.text, re.S).group(0)
    words = _text(row)
    assert "a user does add_to_cart where sku is A1" in words
    assert "plan is pro" in words and "add to audience Almost bought for 1h" in words
    assert 'data-enabled="true"' in row and "toggle" not in row  # a viewer has no switch
    token = _token(viewer, "/projects/1/rules")
    refused = viewer.post(f"/projects/1/rules/{rid}/toggle", data={"csrf_token": token})
    assert refused.status_code == 403
    assert api.get(f"/v1/rules/{rid}").json["enabled"] is True

    assert _login(client, "owner@acme.io").status_code == 302
    page = client.get(f"/projects/1/rules/{rid}").text
    firing = _text(re.search(r"<tr data-firing=.*?</tr>", page, re.S).group(0))
    assert "ann" in firing and "event add_to_cart (after rules cart)" in firing
    assert "fired" in firing
    assert "add to audience Almost bought: joined" in firing
    token = _token(client, f"/projects/1/rules/{rid}")
    off = client.post(f"/projects/1/rules/{rid}/toggle", data={"csrf_token": token})
    assert off.status_code == 302 and off.headers["Location"] == f"/projects/1/rules/{rid}"
    assert api.get(f"/v1/rules/{rid}").json["enabled"] is False
    assert 'data-enabled="false"' in client.get(f"/projects/1/rules/{rid}").text
    back = client.post(
        f"/projects/1/rules/{rid}/toggle", data={"csrf_token": token, "back": "list"}
    )
    assert back.status_code == 302 and back.headers["Location"] == "/projects/1/rules"
    assert api.get(f"/v1/rules/{rid}").json["enabled"] is True
    with app.app_context():
        entries = db.session.scalars(
            select(AuditEntry).where(AuditEntry.object_type == "rule").order_by(AuditEntry.id)
        ).all()
        assert [(e.action, e.before, e.after) for e in entries] == [
            ("rule.disabled", {"enabled": True}, {"enabled": False}),
            ("rule.enabled", {"enabled": False}, {"enabled": True}),
        ]


def test_a_loop_is_drawn_once_with_a_link_back(app, client, api):
    _account(app, "owner@acme.io")
    assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    body = {
        "name": "nag",
        "trigger": {"api": True},
        "steps": [
            {"id": "w", "type": "wait", "duration": 3600, "next": "chk"},
            {
                "id": "chk",
                "type": "branch",
                "branches": [
                    {"if": {"lastSend": "opened"}, "next": "done"},
                    {"if": "plan:pro", "next": "s"},
                ],
                "default": "w",
            },
            {"id": "s", "type": "send", "channel": "inapp", "template": "promo", "next": "w"},
            {"id": "done", "type": "exit"},
        ],
    }
    r = api.post("/v1/journeys", json=body)
    assert r.status_code == 201, r.json
    assert _login(client, "owner@acme.io").status_code == 302
    page = client.get(f"/projects/1/journeys/{r.json['id']}").text
    for step in ("w", "chk", "s", "done"):
        assert page.count(f'data-step="{step}"') == 1  # each step once, loops or not
    assert "data-text>wait 1h<" in _box(page, "w")  # seconds in the largest unit
    assert page.count('data-jump="w"') == 2  # the default and the send loop back to the wait
    words = _text(page)
    assert "if the last message was opened" in words and "if plan is pro" in words
    assert f"POST /v1/journeys/{r.json['id']}/enter" in words
