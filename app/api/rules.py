"""/v1/rules: `when` a trigger happens to a user, `if` they match a filter, `then` act."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import SECRET, current_project_id, require_key
from app.api.pagination import BAD_QUERY, PageArgsSchema, encode_cursor, page_of, paginate
from app.db import db
from app.models import Rule
from app.schemas.rules import (
    RuleFiringListSchema,
    RuleInputSchema,
    RuleListSchema,
    RulePatchSchema,
    RuleSchema,
)
from app.services import rules as rules_service

blp = Blueprint("rules", __name__, url_prefix="/v1/rules", description="Rules")


def _body(loaded: dict[str, Any]) -> dict[str, Any]:
    # The schema loads `if` as `if_` (a Python keyword); the service takes API.md's names.
    return {("if" if key == "if_" else key): value for key, value in loaded.items()}


@blp.route("")
class Rules(MethodView):
    """The project's rules."""

    @require_key(SECRET)
    @blp.arguments(RuleInputSchema)
    @blp.response(201, RuleSchema)
    def post(self, body: dict):
        """Create a rule. Audiences and campaigns are named by id or unique name and stored as
        ids; an unknown one is a 422 naming the field (`then[0].addToAudience`)."""
        return rules_service.create_rule(
            db.session, project_id=current_project_id(), body=_body(body)
        )

    @require_key(SECRET)
    @blp.arguments(PageArgsSchema, **BAD_QUERY)
    @blp.response(200, RuleListSchema)
    def get(self, page: dict):
        """Rules in creation order, cursor-paginated."""
        limit, after = page_of(page)
        rows, cursor = paginate(
            db.session, rules_service.list_rules_query(current_project_id(), after_id=after), limit
        )
        return {"data": rows, "next_cursor": cursor}


def _rule(ref: str) -> Rule:
    return rules_service.get_rule(db.session, project_id=current_project_id(), ref=ref)


@blp.route("/<ref>")
class RuleItem(MethodView):
    """One rule, by numeric id or by name."""

    @require_key(SECRET)
    @blp.response(200, RuleSchema)
    def get(self, ref: str):
        """The rule."""
        return _rule(ref)

    @require_key(SECRET)
    @blp.arguments(RuleInputSchema)
    @blp.response(200, RuleSchema)
    def put(self, body: dict, ref: str):
        """Replace the rule (an absent `if` clears it; absent enabled/priority reset)."""
        return rules_service.update_rule(
            db.session, project_id=current_project_id(), ref=ref, body=_body(body), replace=True
        )

    @require_key(SECRET)
    @blp.arguments(RulePatchSchema)
    @blp.response(200, RuleSchema)
    def patch(self, body: dict, ref: str):
        """Change the given fields."""
        return rules_service.update_rule(
            db.session, project_id=current_project_id(), ref=ref, body=_body(body), replace=False
        )

    @require_key(SECRET)
    @blp.response(204)
    def delete(self, ref: str):
        """Delete the rule and its firings."""
        rules_service.delete_rule(db.session, project_id=current_project_id(), ref=ref)


@blp.route("/<ref>/firings")
class RuleFirings(MethodView):
    """What the rule did."""

    @require_key(SECRET)
    @blp.arguments(PageArgsSchema, **BAD_QUERY)
    @blp.response(200, RuleFiringListSchema)
    def get(self, page: dict, ref: str):
        """Every time the rule matched its trigger, newest first, cursor-paginated: the user,
        the cause (and the chain of rules before), fired / skipped / stopped with the reason,
        and each action's result."""
        limit, before = page_of(page)
        stmt = rules_service.firings_query(_rule(ref), before_id=before)
        rows = db.session.execute(stmt.limit(limit + 1)).all()
        data = []
        for firing, external_id in rows[:limit]:
            firing.user_external_id = external_id
            data.append(firing)
        cursor = encode_cursor(rows[limit - 1][0].id) if len(rows) > limit else None
        return {"data": data, "next_cursor": cursor}
