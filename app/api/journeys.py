"""/v1/journeys: journeys (CRUD), their states, API entries, runs and stats.

The editing, version and delete rules are in `app.services.journeys` (and in EDIT_RULES, the
OpenAPI description of PUT and PATCH).
"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import SECRET, current_project_id, require_key
from app.api.pagination import BAD_QUERY, encode_cursor, page_of, paginate
from app.db import db
from app.models import Journey
from app.schemas.journeys import (
    EnterResultSchema,
    EnterSchema,
    JourneyInputSchema,
    JourneyListArgsSchema,
    JourneyListSchema,
    JourneyPatchSchema,
    JourneySchema,
    JourneyStatsSchema,
    RunListArgsSchema,
    RunListSchema,
)
from app.services import journeys as journeys_service

blp = Blueprint("journeys", __name__, url_prefix="/v1/journeys", description="Journeys")

EDIT_RULES = (
    "A draft is edited in place. Editing an active or paused journey whose definition changes "
    "makes a new `version`: new runs start on it, runs in flight keep the version they entered "
    "with (a rename or an equivalent body is no new version). Once activated, the trigger's "
    "kind never changes (409 naming `trigger`). An archived journey is read-only (409). "
    "Errors name the field path and the step id (`steps[2].next`); an unknown audience or "
    "template is a 404 naming its path."
)


@blp.route("")
class Journeys(MethodView):
    """The project's journeys."""

    @require_key(SECRET)
    @blp.arguments(JourneyInputSchema)
    @blp.response(201, JourneySchema)
    @blp.doc(description=EDIT_RULES)
    def post(self, body: dict[str, Any]):
        """Create a journey in `draft` (version 1); audiences and templates by id or name."""
        return journeys_service.create_journey(
            db.session, project_id=current_project_id(), body=body
        )

    @require_key(SECRET)
    @blp.arguments(JourneyListArgsSchema, **BAD_QUERY)
    @blp.response(200, JourneyListSchema)
    def get(self, args: dict[str, Any]):
        """Journeys in creation order, optionally by `status`, cursor-paginated."""
        limit, after = page_of(args)
        stmt = journeys_service.list_journeys_query(
            current_project_id(), after_id=after, status=args.get("status")
        )
        rows, cursor = paginate(db.session, stmt, limit)
        return {"data": rows, "next_cursor": cursor}


def _journey(ref: str) -> Journey:
    return journeys_service.get_journey(db.session, project_id=current_project_id(), ref=ref)


@blp.route("/<ref>")
class JourneyItem(MethodView):
    """One journey, by numeric id or by name."""

    @require_key(SECRET)
    @blp.response(200, JourneySchema)
    def get(self, ref: str):
        """The journey: its current version's definition and its state."""
        return _journey(ref)

    @require_key(SECRET)
    @blp.arguments(JourneyInputSchema)
    @blp.response(200, JourneySchema)
    @blp.doc(description=EDIT_RULES)
    def put(self, body: dict[str, Any], ref: str):
        """Replace the definition (absent entry, exit, goal reset to their defaults)."""
        return journeys_service.update_journey(
            db.session, project_id=current_project_id(), ref=ref, body=body, replace_all=True
        )

    @require_key(SECRET)
    @blp.arguments(JourneyPatchSchema)
    @blp.response(200, JourneySchema)
    @blp.doc(description=EDIT_RULES)
    def patch(self, body: dict[str, Any], ref: str):
        """Change the given top-level fields (each replaced whole; null resets it)."""
        return journeys_service.update_journey(
            db.session, project_id=current_project_id(), ref=ref, body=body, replace_all=False
        )

    @require_key(SECRET)
    @blp.response(204)
    def delete(self, ref: str):
        """Delete a draft or archived journey with its versions and runs (else 409)."""
        journeys_service.delete_journey(db.session, project_id=current_project_id(), ref=ref)


@blp.route("/<ref>/activate")
class JourneyActivate(MethodView):
    """Start or resume."""

    @require_key(SECRET)
    @blp.response(200, JourneySchema)
    def post(self, ref: str):
        """draft → active (with `entry.existingMembers`, the trigger audience's or segment's
        members enter now) or paused → active (runs continue where they stood); else 409."""
        return journeys_service.activate_journey(
            db.session, project_id=current_project_id(), ref=ref
        )


@blp.route("/<ref>/pause")
class JourneyPause(MethodView):
    """Hold every run where it stands."""

    @require_key(SECRET)
    @blp.response(200, JourneySchema)
    def post(self, ref: str):
        """active → paused: no entries, runs stay at their step until resumed; else 409."""
        return journeys_service.pause_journey(db.session, project_id=current_project_id(), ref=ref)


@blp.route("/<ref>/archive")
class JourneyArchive(MethodView):
    """End for good."""

    @require_key(SECRET)
    @blp.response(200, JourneySchema)
    def post(self, ref: str):
        """Any state but archived → archived: live runs exit (`journey archived`) and the
        journey becomes read-only; else 409."""
        return journeys_service.archive_journey(
            db.session, project_id=current_project_id(), ref=ref
        )


@blp.route("/<ref>/enter")
class JourneyEnter(MethodView):
    """Enter one user now."""

    @require_key(SECRET)
    @blp.arguments(EnterSchema)
    @blp.response(200, EnterResultSchema)
    def post(self, body: dict[str, Any], ref: str):
        """`{userId, params?}` → `{entered, reason?, run?}`.

        Any trigger kind takes API entries; the entry policy decides (`entered: false` with
        the reason, and the live run that holds the place when there is one). The profile is
        created on first sight, as `POST /v1/campaigns/{id}/send` does. A journey that is not
        active is a 409. `params` are the entry's properties (`entry.key`, `matchOn`,
        `{{ entry.x }}` in templates).
        """
        return journeys_service.enter_journey(
            db.session,
            project_id=current_project_id(),
            ref=ref,
            user_id=body["userId"],
            params=body.get("params"),
        )


@blp.route("/<ref>/runs")
class JourneyRuns(MethodView):
    """The journey's runs."""

    @require_key(SECRET)
    @blp.arguments(RunListArgsSchema, **BAD_QUERY)
    @blp.response(200, RunListSchema)
    def get(self, args: dict[str, Any], ref: str):
        """Runs in entry order, by `status` and `userId`, cursor-paginated."""
        journey = _journey(ref)
        limit, after = page_of(args)
        user_pk = None
        if args.get("userId") is not None:
            user_pk = journeys_service.run_user_pk(db.session, current_project_id(), args["userId"])
            if user_pk is None:
                return {"data": [], "next_cursor": None}
        stmt = journeys_service.runs_query(
            journey, after_id=after, status=args.get("status"), user_pk=user_pk
        )
        rows = db.session.execute(stmt.limit(limit + 1)).all()
        data = []
        for run, external_id in rows[:limit]:
            run.user_external_id = external_id
            data.append(run)
        cursor = encode_cursor(rows[limit - 1][0].id) if len(rows) > limit else None
        return {"data": data, "next_cursor": cursor}


@blp.route("/<ref>/stats")
class JourneyStats(MethodView):
    """What the journey did."""

    @require_key(SECRET)
    @blp.response(200, JourneyStatsSchema)
    def get(self, ref: str):
        """Run totals and, per step of the current version: entered, waiting, passed, by
        outcome (edge), exited, converted; send steps add their messages."""
        return journeys_service.journey_stats(db.session, _journey(ref))
