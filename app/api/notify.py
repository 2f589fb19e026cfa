"""POST /v1/notify and /v1/notify/batch: direct sends without a stored campaign."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields
from sqlalchemy import select

from app.api.blueprint import Blueprint
from app.api.bodies import read_json_body
from app.api.guard import SECRET, current_project, require_key
from app.api.project import project_view
from app.db import db
from app.errors import BadRequest, Conflict, InvalidInput, TooLarge
from app.models.message import Send
from app.services import messages as messages_service

blp = Blueprint("notify", __name__, url_prefix="/v1/notify", description="Direct sends")

MAX_USERS = 1000
TARGETS = ("userId", "userIds", "segment", "broadcast")
CONTENT_FIELDS = {
    "title",
    "body",
    "url",
    "data",
    "channels",
    "ttlSeconds",
    "transactional",
    "id",
    "incrementId",
    "overrides",
}


class NotifySchema(Schema):
    """One target (userId, userIds, segment or broadcast) and the content."""

    userId = fields.Str()
    userIds = fields.List(fields.Str(), metadata={"description": "at most 1000"})
    segment = fields.Raw(metadata={"description": "any segment form"})
    broadcast = fields.Bool()
    title = fields.Str()
    body = fields.Str()
    url = fields.Str()
    data = fields.Dict()
    channels = fields.List(fields.Str(), metadata={"description": "default [inapp]"})
    ttlSeconds = fields.Int()
    transactional = fields.Bool(metadata={"description": "bypasses quiet hours and caps"})
    id = fields.Str(metadata={"description": "client id; sent again answers 409 id/exists"})
    incrementId = fields.Str(
        metadata={"description": "userId/userIds only: stack similar messages in a window"}
    )
    overrides = fields.Dict(metadata={"description": "per channel fields, rendered like body"})


class NotifyResultSchema(Schema):
    """The send request and, for user targets, what it created."""

    id = fields.Int()
    status = fields.Str()
    messages = fields.Int()
    deduplicated = fields.Int()
    unreachable = fields.Dict()
    messageIds = fields.List(fields.Int())


def parse_content(body: dict[str, Any]) -> dict[str, Any]:
    """title/body/url/data of a direct send, validated."""
    errors: dict[str, list[str]] = {}
    content: dict[str, Any] = {}
    for name, limit in (("title", 1000), ("body", 10_000), ("url", 2048)):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > limit:
            errors[name] = [f"a string of at most {limit} characters"]
        else:
            content[name] = value
    if body.get("data") is not None:
        if isinstance(body["data"], dict):
            content["data"] = body["data"]
        else:
            errors["data"] = ["must be an object"]
    if not content.get("title") and not content.get("body") and "title" not in errors:
        errors["body"] = ["title or body is required"]
    if errors:
        raise InvalidInput("Invalid notification: " + ", ".join(sorted(errors)), errors)
    return content


def _client_ids(body: dict[str, Any], target_name: str) -> tuple[str | None, str | None]:
    """`id` and `incrementId` as in POST /v1/messages; `overrides` checked the same way too."""
    errors: dict[str, list[str]] = {}
    for name in ("id", "incrementId"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 255):
            errors[name] = ["a string of 1-255 characters"]
    if body.get("incrementId") is not None and target_name in ("segment", "broadcast"):
        errors["incrementId"] = ["only for userId or userIds sends"]
    overrides = body.get("overrides")
    if overrides is not None and not isinstance(overrides, dict):
        errors["overrides"] = ["must be an object"]
    errors.update(messages_service.overrides_problems(overrides))
    if errors:
        raise InvalidInput("Invalid notification: " + ", ".join(sorted(errors)), errors)
    return body.get("id"), body.get("incrementId")


def _create_send(
    project: Any,
    content: dict[str, Any],
    channels: list[str],
    ttl: int | None,
    transactional: bool,
    target: dict[str, Any] | None,
) -> Any:
    return messages_service.create_send(
        db.session,
        project=project,
        kind="notify",
        channels=channels,
        content=content,
        ttl_seconds=ttl,
        transactional=transactional,
        target=target,
    )


def _notify(body: Any, *, require_segment: bool = False) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("Expected a JSON object", {"body": ["wrong type"]})
    given = [t for t in TARGETS if body.get(t) not in (None, False)]
    if require_segment and given != ["segment"]:
        raise InvalidInput("segment is required", {"segment": ["required"]})
    if len(given) != 1:
        raise InvalidInput(
            "give exactly one of userId, userIds, segment, broadcast",
            {t: ["exactly one target"] for t in (given or ["userId"])},
        )
    unknown = set(body) - set(TARGETS) - CONTENT_FIELDS
    if unknown:
        raise InvalidInput("unknown fields", {k: ["unknown field"] for k in sorted(unknown)})
    content = parse_content(body)
    channels, ttl, transactional = messages_service.parse_send_options(body)
    project = current_project()
    target_name = given[0]
    session = db.session
    client_id, increment_id = _client_ids(body, target_name)
    if body.get("overrides") is not None:
        content["overrides"] = body["overrides"]
    if client_id is not None and session.scalar(
        select(Send.id).where(Send.project_id == project.id, Send.client_id == client_id)
    ):
        raise Conflict("id/exists", {"id": ["id/exists"]})
    if target_name in ("segment", "broadcast"):
        if target_name == "broadcast" and body["broadcast"] is not True:
            raise InvalidInput("broadcast must be true", {"broadcast": ["must be true"]})
        target = (
            {"segment": messages_service.parse_segment(session, project.id, body["segment"])}
            if target_name == "segment"
            else {"broadcast": True}
        )
        send = _create_send(project, content, channels, ttl, transactional, target)
        send.client_id = client_id
        return {"id": send.id, "status": send.status}
    user_ids = [body["userId"]] if target_name == "userId" else body["userIds"]
    if (
        not isinstance(user_ids, list)
        or not user_ids
        or not all(isinstance(u, str) and 0 < len(u) <= 255 for u in user_ids)
    ):
        raise InvalidInput(
            f"{target_name} must hold non-empty strings",
            {target_name: ["strings of 1-255 characters"]},
        )
    if len(user_ids) > MAX_USERS:
        raise TooLarge(f"at most {MAX_USERS} userIds", {"userIds": [f"at most {MAX_USERS}"]})
    send = _create_send(project, content, channels, ttl, transactional, None)
    send.client_id = client_id
    users = messages_service.users_by_external_ids(session, project.id, user_ids)
    summary = messages_service.send_to_users(
        session,
        send=send,
        users=users,
        increment_id=increment_id,
        stack_window=project_view(project)["settings"]["stackWindowSeconds"],
    )
    return {
        "id": send.id,
        "status": "queued",
        "messages": len(summary.message_ids),
        "deduplicated": summary.deduplicated,
        "unreachable": summary.unreachable,
        "messageIds": summary.message_ids,
    }


@blp.route("")
class Notify(MethodView):
    """Send to a user, users, a segment or everybody."""

    @require_key(SECRET)
    @blp.doc(requestBody={"content": {"application/json": {"schema": NotifySchema}}})
    @blp.response(202, NotifyResultSchema)
    def post(self):
        """Rows are committed before the answer; delivery follows from the workers."""
        return _notify(read_json_body())


@blp.route("/batch")
class NotifyBatch(MethodView):
    """Send to a segment given in the string form."""

    @require_key(SECRET)
    @blp.doc(requestBody={"content": {"application/json": {"schema": NotifySchema}}})
    @blp.response(202, NotifyResultSchema)
    def post(self):
        """`{segment: "plan:pro,role:admin", title, body}`."""
        return _notify(read_json_body(), require_segment=True)
