"""/v1/push: the VAPID key and browser push subscriptions (publishable or secret key, CORS).

The identity rule for attaching a device to a userId is in `app.services.push_subscriptions`.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import PUBLISHABLE, SECRET, current_project, require_key, verification
from app.db import db
from app.schemas.push import (
    SUBSCRIBE_BODY,
    SubscribedSchema,
    SubscribeSchema,
    UnsubscribedSchema,
    UnsubscribeSchema,
    VapidKeySchema,
)
from app.services import push_subscriptions
from app.services.push_subscriptions import SubscriptionRequest
from app.services.vapid import current_key

blp = Blueprint("push", __name__, url_prefix="/v1/push", description="Web push devices")
# The key changes only on rotation; a browser may keep it a few minutes.
KEY_MAX_AGE = 300


@blp.route("/vapid-key")
class VapidKeyView(MethodView):
    """The application server key for `pushManager.subscribe`."""

    @require_key(PUBLISHABLE, SECRET)
    @blp.response(200, VapidKeySchema)
    def get(self):
        """`{publicKey}`: base64url of the project's current VAPID public key."""
        key = current_key(db.session, project_id=current_project().id)
        return {"publicKey": key.public_key}, 200, {"Cache-Control": f"max-age={KEY_MAX_AGE}"}


@blp.route("/subscriptions")
class Subscriptions(MethodView):
    """A browser's push subscription: one row per endpoint."""

    @require_key(PUBLISHABLE, SECRET)
    @blp.arguments(SubscribeSchema)
    @blp.doc(requestBody=SUBSCRIBE_BODY)
    @blp.response(200, SubscribedSchema)
    def post(self, req: SubscriptionRequest):
        """Store or update the device. With a publishable key, `userId` needs `userHash`;
        without one, `anonymousId` attaches the device to the visitor instead (401 when
        neither works). The endpoint must be https on a public address (422 otherwise)."""
        req = SubscriptionRequest(
            **{**req.__dict__, "user_agent": request.headers.get("User-Agent")}
        )
        sub, created = push_subscriptions.subscribe(
            db.session,
            project=current_project(),
            request=req,
            verification=verification(),
            allow_private=bool(current_app.config.get("ALLOW_PRIVATE_ENDPOINTS")),
        )
        return push_subscriptions.describe(db.session, sub, created=created)

    @require_key(PUBLISHABLE, SECRET)
    @blp.arguments(UnsubscribeSchema)
    @blp.response(200, UnsubscribedSchema)
    def delete(self, body: dict[str, Any]):
        """Deactivate the device with this endpoint (`{subscription: {endpoint}}`)."""
        deleted = push_subscriptions.unsubscribe(
            db.session,
            project_id=current_project().id,
            endpoint=body["subscription"]["endpoint"],
        )
        return {"deleted": deleted}
