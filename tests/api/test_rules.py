"""/v1/rules: CRUD, validation errors naming the field, references by id or name, firings."""

from __future__ import annotations

from sqlalchemy import insert

from app.db import db
from app.models import RuleFiring
from app.models.base import utcnow
from tests.conftest import make_project


def audience(api, name):
    r = api.post("/v1/audiences", json={"name": name})
    assert r.status_code == 201, r.json
    return r.json["id"]


CART_RULE = {
    "name": "cart",
    "when": {"event": "add_to_cart", "where": "sku:A1"},
    "if": {"plan": "pro"},
    "then": [{"addToAudience": "Almost bought", "ttlSeconds": 3600}],
}


def test_create_get_list_update_delete(api):
    almost = audience(api, "Almost bought")
    bought = audience(api, "Bought")
    r = api.post("/v1/rules", json=CART_RULE)
    assert r.status_code == 201, r.json
    rule = r.json
    assert rule["name"] == "cart" and rule["enabled"] is True and rule["priority"] == 0
    assert rule["when"] == {
        "event": "add_to_cart",
        "where": {"all": [{"attr": "sku", "op": "textEq", "value": "A1"}]},
    }
    assert rule["if"] == {"all": [{"attr": "plan", "op": "eq", "value": "pro"}]}
    # The audience named on save is stored (and shown) by id.
    assert rule["then"] == [{"addToAudience": almost, "ttlSeconds": 3600}]
    assert {"id", "createdAt", "updatedAt"} <= set(rule)

    assert api.get(f"/v1/rules/{rule['id']}").json == rule
    assert api.get("/v1/rules/cart").json["id"] == rule["id"]

    r = api.patch(
        "/v1/rules/cart",
        json={"enabled": False, "priority": -3, "when": {"audienceEntered": "Bought"}},
    )
    assert r.status_code == 200, r.json
    assert r.json["enabled"] is False and r.json["priority"] == -3
    assert r.json["when"] == {"audienceEntered": bought}
    assert r.json["if"] == rule["if"] and r.json["then"] == rule["then"]

    # PUT replaces: the absent `if` is cleared, enabled and priority reset.
    r = api.put(
        f"/v1/rules/{rule['id']}",
        json={
            "name": "cart2",
            "when": {"attributeChanged": "plan", "to": "pro"},
            "then": [{"setAttributes": {"upgraded": True}}],
        },
    )
    assert r.status_code == 200, r.json
    assert r.json["if"] is None and r.json["enabled"] is True and r.json["priority"] == 0
    assert r.json["when"] == {"attributeChanged": "plan", "to": "pro"}

    api.post("/v1/rules", json={**CART_RULE, "name": "second"})
    page = api.get("/v1/rules?limit=1").json
    assert [r["name"] for r in page["data"]] == ["cart2"]
    rest = api.get(f"/v1/rules?cursor={page['nextCursor']}").json
    assert [r["name"] for r in rest["data"]] == ["second"] and rest["nextCursor"] is None

    assert api.delete("/v1/rules/cart2").status_code == 204
    assert api.get("/v1/rules/cart2").status_code == 404
    assert [r["name"] for r in api.get("/v1/rules").json["data"]] == ["second"]


def test_validation_errors_name_the_field(api):
    audience(api, "Almost bought")

    def errors(body, status=422):
        r = api.post("/v1/rules", json=body)
        assert r.status_code == status, r.json
        assert r.json["message"]
        return r.json["errors"]

    base = {"name": "r", "when": {"event": "a"}, "then": [{"addToAudience": "Almost bought"}]}
    # A reference to nothing is a 404 naming the field (the body itself is valid).
    missing = errors({**base, "then": [{"addToAudience": "Nope"}]}, 404)
    assert missing == {"then[0].addToAudience": ["not found"]}
    assert "then[1].sendCampaign" in errors(
        {**base, "then": [{"removeFromAudience": 1}, {"sendCampaign": "No such campaign"}]}, 404
    )
    assert "when.audienceLeft" in errors({**base, "when": {"audienceLeft": "Nope"}}, 404)
    # A whole float is that id (the conformance run's 500: it was looked up as a name).
    assert "when.audienceLeft" in errors({**base, "when": {"audienceLeft": 225065554.0}}, 404)
    assert errors({**base, "then": [{"startJourney": "onboarding"}]}, 404) == {
        "then[0].startJourney": ["not found"]
    }
    assert "when.where.total" in errors(
        {**base, "when": {"event": "a", "where": {"total": {"nested": 1}}}}
    )
    assert "if.all[0].op" in errors({**base, "if": {"all": [{"attr": "x", "op": "bogus"}]}})
    assert "then" in errors({**base, "then": []})
    assert "when" in errors({**base, "when": {"event": "a", "audienceEntered": 1}})
    assert "name" in errors({**base, "name": "   "})
    assert "priority" in errors({**base, "priority": "high"})
    assert "bogus" in errors({**base, "bogus": 1})
    assert "when" in errors({"name": "x", "then": base["then"]})
    assert api.post("/v1/rules", json=base).status_code == 201
    r = api.post("/v1/rules", json=base)
    assert r.status_code == 409 and "name" in r.json["errors"]
    assert (
        "when.where"
        in api.patch("/v1/rules/r", json={"when": {"event": "a", "where": 3}}).json["errors"]
    )


def test_rules_and_references_stay_in_their_project(app, api):
    other = make_project(app, "Other")
    r = api.post(
        "/v1/audiences",
        json={"name": "theirs"},
        headers={"Authorization": f"Bearer {other.secret}"},
    )
    assert r.status_code == 201
    r = api.post(
        "/v1/rules",
        json={"name": "r", "when": {"event": "a"}, "then": [{"addToAudience": r.json["id"]}]},
    )
    assert r.status_code == 404 and "then[0].addToAudience" in r.json["errors"]
    api.post(
        "/v1/rules",
        json={"name": "mine", "when": {"event": "a"}, "then": [{"setAttributes": {"a": 1}}]},
    )
    theirs = api.get("/v1/rules/mine", headers={"Authorization": f"Bearer {other.secret}"})
    assert theirs.status_code == 404


def test_firings_list_newest_first_with_pagination(app, api, project):
    rule = api.post(
        "/v1/rules",
        json={"name": "r", "when": {"event": "a"}, "then": [{"setAttributes": {"a": 1}}]},
    ).json
    with app.app_context(), db.begin() as session:
        session.execute(
            insert(RuleFiring),
            [
                {
                    "project_id": project.id,
                    "rule_id": rule["id"],
                    "user_id": None,
                    "event_id": n,
                    "cause": {"event": "a", "chain": []},
                    "depth": 0,
                    "status": "fired",
                    "actions": [{"setAttributes": {"a": 1}, "result": "set"}],
                    "at": utcnow(),
                }
                for n in range(1, 4)
            ],
        )
    page = api.get(f"/v1/rules/{rule['id']}/firings?limit=2").json
    assert [f["eventId"] for f in page["data"]] == [3, 2]
    first = page["data"][0]
    assert first["status"] == "fired" and first["cause"] == {"event": "a", "chain": []}
    assert (
        first["userId"] is None and first["depth"] == 0 and first["actions"][0]["result"] == "set"
    )
    rest = api.get(f"/v1/rules/{rule['id']}/firings?limit=2&cursor={page['nextCursor']}").json
    assert [f["eventId"] for f in rest["data"]] == [1] and rest["nextCursor"] is None
    assert api.get("/v1/rules/nope/firings").status_code == 404
