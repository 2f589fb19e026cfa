"""/v1/segments: stored filters, their members and previews of unsaved filters."""

from __future__ import annotations

from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import SECRET, current_project_id, require_key
from app.api.pagination import BAD_QUERY, PageArgsSchema, page_of, paginate
from app.db import db
from app.schemas.segments import (
    SegmentInputSchema,
    SegmentListSchema,
    SegmentPatchSchema,
    SegmentPreviewRequestSchema,
    SegmentPreviewSchema,
    SegmentSchema,
    SegmentUsersSchema,
)
from app.services import segments as segments_service

blp = Blueprint(
    "segments", __name__, url_prefix="/v1/segments", description="Segments (dynamic filters)"
)


@blp.route("")
class Segments(MethodView):
    """The project's segments."""

    @require_key(SECRET)
    @blp.arguments(SegmentInputSchema)
    @blp.response(201, SegmentSchema)
    def post(self, body: dict):
        """Create a segment; the filter is stored normalized, a taken name is a 409."""
        segment = segments_service.create_segment(
            db.session, project_id=current_project_id(), **body
        )
        return segment

    @require_key(SECRET)
    @blp.arguments(PageArgsSchema, **BAD_QUERY)
    @blp.response(200, SegmentListSchema)
    def get(self, page: dict):
        """Segments in creation order, cursor-paginated."""
        limit, after = page_of(page)
        rows, cursor = paginate(
            db.session,
            segments_service.list_segments_query(current_project_id(), after_id=after),
            limit,
        )
        return {"data": rows, "next_cursor": cursor}


@blp.route("/preview")
class SegmentPreview(MethodView):
    """Try a filter without storing it."""

    @require_key(SECRET)
    @blp.arguments(SegmentPreviewRequestSchema)
    @blp.response(200, SegmentPreviewSchema)
    def post(self, body: dict):
        """How many users match now and up to 10 of their userIds (anonymous profiles never)."""
        return segments_service.preview_segment(
            db.session, project_id=current_project_id(), filter=body["filter"]
        )


@blp.route("/<ref>")
class SegmentItem(MethodView):
    """One segment, by numeric id or by name."""

    @require_key(SECRET)
    @blp.response(200, SegmentSchema)
    def get(self, ref: str):
        """The segment."""
        return segments_service.get_segment(db.session, project_id=current_project_id(), ref=ref)

    @require_key(SECRET)
    @blp.arguments(SegmentInputSchema)
    @blp.response(200, SegmentSchema)
    def put(self, body: dict, ref: str):
        """Replace the segment's name and filter."""
        return _update(ref, body, replace=True)

    @require_key(SECRET)
    @blp.arguments(SegmentPatchSchema)
    @blp.response(200, SegmentSchema)
    def patch(self, body: dict, ref: str):
        """Change the given fields."""
        return _update(ref, body, replace=False)

    @require_key(SECRET)
    @blp.response(204)
    def delete(self, ref: str):
        """Delete the segment."""
        segments_service.delete_segment(db.session, project_id=current_project_id(), ref=ref)


def _update(ref: str, body: dict, *, replace: bool):
    segment = segments_service.update_segment(
        db.session, project_id=current_project_id(), ref=ref, changes=body, replace=replace
    )
    return segment


@blp.route("/<ref>/users")
class SegmentUsers(MethodView):
    """The segment's current members."""

    @require_key(SECRET)
    @blp.arguments(PageArgsSchema, **BAD_QUERY)
    @blp.response(200, SegmentUsersSchema)
    def get(self, page: dict, ref: str):
        """Members now, in user row order, cursor-paginated; anonymous profiles are never members.

        Evaluated per page with a LIMIT: a user who starts or stops matching between pages
        shows up or drops out like in any live listing.
        """
        project_id = current_project_id()
        limit, after = page_of(page)
        segment = segments_service.get_segment(db.session, project_id=project_id, ref=ref)
        stmt = segments_service.segment_members_query(
            db.session,
            project_id=project_id,
            cond=segments_service.condition_of(segment),
            after_id=after,
        )
        rows, cursor = paginate(db.session, stmt, limit)
        return {"data": rows, "next_cursor": cursor}
