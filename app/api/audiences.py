"""/v1/audiences: named sets of users and their members (with an optional membership TTL)."""

from __future__ import annotations

from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import SECRET, current_project_id, require_key
from app.api.pagination import BAD_QUERY, PageArgsSchema, encode_cursor, page_of, paginate
from app.db import db
from app.models import Audience
from app.models.base import utcnow
from app.schemas.audiences import (
    AudienceInputSchema,
    AudienceListSchema,
    AudiencePatchSchema,
    AudienceSchema,
    MemberListSchema,
    MembersAddedSchema,
    MembersAddSchema,
    MembersRemovedSchema,
    MembersRemoveSchema,
)
from app.services import audiences as audiences_service

blp = Blueprint("audiences", __name__, url_prefix="/v1/audiences", description="Audiences")


def _with_count(audience: Audience) -> Audience:
    counts = audiences_service.member_counts(db.session, [audience.id], utcnow())
    audience.member_count = counts[audience.id]  # type: ignore[attr-defined]
    return audience


def _audience(ref: str) -> Audience:
    return audiences_service.get_audience(db.session, project_id=current_project_id(), ref=ref)


@blp.route("")
class Audiences(MethodView):
    """The project's audiences."""

    @require_key(SECRET)
    @blp.arguments(AudienceInputSchema)
    @blp.response(201, AudienceSchema)
    def post(self, body: dict):
        """Create an empty audience; a taken name is a 409."""
        audience = audiences_service.create_audience(
            db.session, project_id=current_project_id(), **body
        )
        return _with_count(audience)

    @require_key(SECRET)
    @blp.arguments(PageArgsSchema, **BAD_QUERY)
    @blp.response(200, AudienceListSchema)
    def get(self, page: dict):
        """Audiences in creation order with their current member counts, cursor-paginated."""
        limit, after = page_of(page)
        rows, cursor = paginate(
            db.session,
            audiences_service.list_audiences_query(current_project_id(), after_id=after),
            limit,
        )
        counts = audiences_service.member_counts(db.session, [a.id for a in rows], utcnow())
        for audience in rows:
            audience.member_count = counts[audience.id]
        return {"data": rows, "next_cursor": cursor}


@blp.route("/<ref>")
class AudienceItem(MethodView):
    """One audience, by numeric id or by name."""

    @require_key(SECRET)
    @blp.response(200, AudienceSchema)
    def get(self, ref: str):
        """The audience and its current member count."""
        return _with_count(_audience(ref))

    @require_key(SECRET)
    @blp.arguments(AudienceInputSchema)
    @blp.response(200, AudienceSchema)
    def put(self, body: dict, ref: str):
        """Replace name and description (an absent description resets); members stay."""
        return _update(ref, body, replace=True)

    @require_key(SECRET)
    @blp.arguments(AudiencePatchSchema)
    @blp.response(200, AudienceSchema)
    def patch(self, body: dict, ref: str):
        """Change the given fields; members stay."""
        return _update(ref, body, replace=False)

    @require_key(SECRET)
    @blp.response(204)
    def delete(self, ref: str):
        """Delete the audience, its memberships and their history."""
        audiences_service.delete_audience(db.session, project_id=current_project_id(), ref=ref)


def _update(ref: str, body: dict, *, replace: bool) -> Audience:
    audience = audiences_service.update_audience(
        db.session, project_id=current_project_id(), ref=ref, changes=body, replace=replace
    )
    return _with_count(audience)


@blp.route("/<ref>/members")
class AudienceMembers(MethodView):
    """The audience's current members."""

    @require_key(SECRET)
    @blp.arguments(PageArgsSchema, **BAD_QUERY)
    @blp.response(200, MemberListSchema)
    def get(self, page: dict, ref: str):
        """Current members in user row order, cursor-paginated; expired ones never show.

        Rules and topic subscriptions may add anonymous profiles: they are listed with a null
        `userId` (and, like every anonymous profile, never match a segment).
        """
        limit, after = page_of(page)
        audience = _audience(ref)
        stmt = audiences_service.members_query(
            audience_id=audience.id, now=utcnow(), after_user_pk=after
        )
        rows = db.session.execute(stmt.limit(limit + 1)).all()
        cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
        return {"data": rows[:limit], "next_cursor": cursor}

    @require_key(SECRET)
    @blp.arguments(MembersAddSchema)
    @blp.response(200, MembersAddedSchema)
    def post(self, body: dict, ref: str):
        """Add up to 1000 users by userId, optionally for `ttlSeconds`.

        A userId the project has never seen is created on first sight, as events do, and
        reported with `created: true`. Re-adding a current member refreshes its TTL (without
        `ttlSeconds` the membership no longer expires) and reports `joined: false`; a user
        who left, or whose TTL passed, joins again. Every join is logged with cause `api`.
        """
        return _add(ref, body)

    @require_key(SECRET)
    @blp.arguments(MembersRemoveSchema)
    @blp.response(200, MembersRemovedSchema)
    def delete(self, body: dict, ref: str):
        """Remove up to 1000 users by userId; unknown users and non-members are no-ops."""
        return _remove(ref, body)


@blp.route("/<ref>/members/delete")
class AudienceMembersDelete(MethodView):
    """Removal for clients that cannot send a DELETE body."""

    @require_key(SECRET)
    @blp.arguments(MembersRemoveSchema)
    @blp.response(200, MembersRemovedSchema)
    def post(self, body: dict, ref: str):
        """Remove up to 1000 users by userId; unknown users and non-members are no-ops."""
        return _remove(ref, body)


def _add(ref: str, body: dict) -> dict:
    project_id = current_project_id()
    audience = _audience(ref)
    results = audiences_service.add_members_by_user_id(
        db.session,
        project_id=project_id,
        audience=audience,
        user_ids=body["userIds"],
        ttl_seconds=body.get("ttlSeconds"),
        now=utcnow(),
    )
    joined = sum(r.joined for r in results)
    return {
        "joined": joined,
        "refreshed": len(results) - joined,
        "created": sum(r.created for r in results),
        "results": results,
    }


def _remove(ref: str, body: dict) -> dict:
    audience = _audience(ref)
    results = audiences_service.remove_members_by_user_id(
        db.session,
        project_id=current_project_id(),
        audience=audience,
        user_ids=body["userIds"],
        now=utcnow(),
    )
    return {"removed": sum(r.removed for r in results), "results": results}
