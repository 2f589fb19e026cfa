"""The journey editor through the test client: a journey built from step forms, errors shown on
the step they belong to, and a stored journey round-tripping through the form unchanged."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.db import db
from app.models.console import AuditEntry
from tests.ui.test_console import _account, _login, _token
from tests.ui.test_console_journeys import CART, TEMPLATE

STEPS = [
    {"id": "pause", "type": "wait", "mode": "duration", "duration": "1d", "next": "bought"},
    {
        "id": "bought",
        "type": "waitForEvent",
        "event": "purchase",
        "match_on": "cartId",
        "timeout": "24h",
        "next": "done",
        "on_timeout": "who",
    },
    {"id": "who", "type": "branch", "branches": "plan:pro => ab", "default": "done"},
    {"id": "ab", "type": "split", "variants": "50 => nudge\n50 => done"},
    {"id": "nudge", "type": "send", "channel": "inapp", "template": "promo", "next": "done"},
    {"id": "done", "type": "exit"},
]


def _form(token: str, steps: list[dict]) -> dict[str, str]:
    form = {
        "csrf_token": token,
        "name": "abandoned cart",
        "trigger_kind": "event",
        "trigger_event": "cart_updated",
        "trigger_where": "plan:pro",
        "entry_policy": "always",
        "entry_key": "cartId",
        "exits": "cart_emptied matched on cartId",
        "goal_event": "purchase",
        "goal_within": "3d",
    }
    for n, step in enumerate(steps):
        form.update({f"steps-{n}-{k}": v for k, v in step.items()})
    return form


def test_a_journey_built_from_step_forms_equals_the_apis_and_errors_show_on_their_step(
    app, client, api
):
    _account(app, "owner@acme.io")
    assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, "/projects/1/journeys/new")
    broken = [dict(s) for s in STEPS]
    broken[0]["duration"] = "a day"
    broken[4]["next"] = "nowhere"
    bad = client.post("/projects/1/journeys/new", data=_form(token, broken))
    assert bad.status_code == 422
    first = re.search(r'data-step-form="0".*?</fieldset>', bad.text, re.S).group(0)
    fifth = re.search(r'data-step-form="4".*?</fieldset>', bad.text, re.S).group(0)
    assert "duration" in first and "not a duration" in first
    assert "nowhere" in fifth and 'class="field-error"' in fifth
    ok = client.post("/projects/1/journeys/new", data=_form(token, STEPS))
    assert ok.status_code == 302, re.findall(r'field-error"[^>]*>([^<]+)', ok.text)
    jid = int(ok.headers["Location"].rstrip("/").split("/")[-1])
    made = api.get(f"/v1/journeys/{jid}").json
    reference = api.post("/v1/journeys", json={**CART, "name": "same by api"}).json
    for key in ("trigger", "entry", "exit", "goal", "steps"):
        assert made[key] == reference[key], key
    # The stored journey fills the editor; saving it unchanged makes no new version.
    page = client.get(f"/projects/1/journeys/{jid}/edit").text
    assert (
        'value="cart_emptied matched on cartId"' in page or "cart_emptied matched on cartId" in page
    )
    fields = dict(re.findall(r'name="(steps-\d+-[a-z_]+)" [^>]*value="([^"]*)"', page))
    assert fields["steps-0-duration"] == "1d" and fields["steps-4-next"] == "done"
    resaved = client.post(f"/projects/1/journeys/{jid}/edit", data=_form(token, STEPS))
    assert resaved.status_code == 302
    assert api.get(f"/v1/journeys/{jid}").json["version"] == made["version"]
    longer = [dict(s) for s in STEPS]
    longer[0]["duration"] = "2d"
    assert (
        client.post(f"/projects/1/journeys/{jid}/edit", data=_form(token, longer)).status_code
        == 302
    )
    after = api.get(f"/v1/journeys/{jid}").json
    # A draft's edit replaces its definition; once activated, an edit is a new version.
    assert after["version"] == made["version"] and after["steps"][0]["duration"] == "2d"
    assert api.post(f"/v1/journeys/{jid}/activate").status_code == 200
    longer[0]["duration"] = "3d"
    assert (
        client.post(f"/projects/1/journeys/{jid}/edit", data=_form(token, longer)).status_code
        == 302
    )
    live = api.get(f"/v1/journeys/{jid}").json
    assert live["version"] == made["version"] + 1 and live["steps"][0]["duration"] == "3d"
    with app.app_context():
        entry = db.session.scalar(
            select(AuditEntry)
            .where(AuditEntry.action == "journey.edited")
            .order_by(AuditEntry.id.desc())
        )
        assert entry.before["definition"]["steps"][0]["duration"] == "2d"
        assert entry.after["definition"]["steps"][0]["duration"] == "3d"
        assert entry.after["version"] == entry.before["version"] + 1


def test_add_step_keeps_what_was_typed_and_a_viewer_cannot_open_the_editor(app, client, api):
    _account(app, "owner@acme.io")
    _account(app, "viewer@acme.io", project_id=1, role="viewer")
    assert _login(client, "owner@acme.io").status_code == 302
    token = _token(client, "/projects/1/journeys/new")
    form = _form(token, STEPS[:1]) | {"add_step": "1"}
    page = client.post("/projects/1/journeys/new", data=form)
    assert page.status_code == 200
    assert 'data-step-form="1"' in page.text and 'value="pause"' in page.text
    viewer = app.test_client()
    assert _login(viewer, "viewer@acme.io").status_code == 302
    assert viewer.get("/projects/1/journeys/new").status_code == 403
