"""POST /v1/notify and /v1/notify/batch: direct sends without a stored campaign."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import SECRET, current_project, require_key
from app.api.project import project_view
from app.db import db
from app.schemas.notify import (
    NotifyBatchSchema,
    NotifyResultSchema,
    NotifySchema,
    notify_batch_body,
    notify_body,
)
from app.services import messages as messages_service
from app.services.idempotency import idempotent
from app.services.messages import Notification

blp = Blueprint("notify", __name__, url_prefix="/v1/notify", description="Direct sends")


def _notify(notification: Notification) -> dict[str, Any]:
    project = current_project()
    return messages_service.notify(
        db.session,
        project=project,
        notification=notification,
        stack_window=project_view(project)["settings"]["stackWindowSeconds"],
    )


@blp.route("")
class Notify(MethodView):
    """Send to a user, users, a segment or everybody."""

    @require_key(SECRET)
    @idempotent
    @blp.arguments(NotifySchema)
    @blp.doc(requestBody=notify_body(NotifySchema))
    @blp.response(202, NotifyResultSchema)
    def post(self, notification: Notification):
        """Rows are committed before the answer; delivery follows from the workers."""
        return _notify(notification)


@blp.route("/batch")
class NotifyBatch(MethodView):
    """Send to a segment given in any form (the string form suits scripts)."""

    @require_key(SECRET)
    @idempotent
    @blp.arguments(NotifyBatchSchema)
    @blp.doc(requestBody=notify_batch_body(NotifyBatchSchema))
    @blp.response(202, NotifyResultSchema)
    def post(self, notification: Notification):
        """`{segment: "plan:pro,role:admin", title, body}`."""
        return _notify(notification)
