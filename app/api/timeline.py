"""/v1/users/{userId}/timeline: why a user did (or did not) get a message."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import SECRET, current_project_id, require_key
from app.api.pagination import BAD_QUERY
from app.db import db
from app.schemas.timeline import TIMELINE_RESPONSE, TimelineArgsSchema, dump_item
from app.services.profiles import get_user
from app.services.timeline import user_timeline

# Shares /v1/users with app/api/users.py, whose routes are "" , "/delete" and "/<user_id>":
# "/<user_id>/timeline" has one more segment, so none of them can match it.
blp = Blueprint("timeline", __name__, url_prefix="/v1/users", description="Timeline")


@blp.route("/<user_id>/timeline")
class UserTimeline(MethodView):
    """A user's history across events, audiences, rules, messages and skips."""

    @require_key(SECRET)
    @blp.arguments(TimelineArgsSchema, **BAD_QUERY)
    @blp.doc(responses=TIMELINE_RESPONSE)
    def get(self, args: dict[str, Any], user_id: str):
        """Newest first: events, audience moves, rule firings, messages (with their status
        history) and every skip with its reason; `?kinds=event,message` to narrow it.

        An unknown userId is a 404.
        """
        user = get_user(db.session, project_id=current_project_id(), user_id=user_id)
        page = user_timeline(
            db.session,
            user_pk=user.id,
            limit=args["limit"],
            cursor=args.get("cursor"),
            kinds=args.get("kinds"),
        )
        return {"data": [dump_item(i) for i in page.items], "nextCursor": page.next_cursor}
