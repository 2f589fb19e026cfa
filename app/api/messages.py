"""The message log, raw SMS sends, the sandbox outbox and suppressions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import current_app, request
from flask.views import MethodView
from marshmallow import Schema, fields
from sqlalchemy import select

from app.api.blueprint import Blueprint
from app.api.bodies import read_json_body
from app.api.guard import SECRET, current_project, current_project_id, require_key
from app.api.pagination import page_args, paginate
from app.db import db
from app.errors import BadRequest, Conflict, InvalidInput, NotFound, TooLarge
from app.models.base import utcnow
from app.models.message import (
    STATUSES,
    Message,
    MessageStatusChange,
    SandboxMessage,
)
from app.schemas.suppressions import (
    AddedSchema,
    RemovedSchema,
    SuppressionInputSchema,
    SuppressionListSchema,
    SuppressionRemoveSchema,
)
from app.services import messages as messages_service
from app.services import suppressions
from app.services.outbox import insert_messages, message_row
from app.services.profiles import FieldError
from app.services.users import load_users_by_external_id
from workers.channels import CHANNELS
from workers.channels.sms import MAX_BODY

blp = Blueprint("messages", __name__, url_prefix="/v1", description="Messages")


class MessageSchema(Schema):
    """One message and where it stands."""

    id = fields.Int()
    sendId = fields.Int(attribute="send_id", allow_none=True)
    userId = fields.Str(attribute="user_external_id", allow_none=True)
    channel = fields.Str()
    to = fields.Str(attribute="address")
    status = fields.Str()
    reason = fields.Str(allow_none=True)
    attempts = fields.Int()
    provider = fields.Str(allow_none=True)
    incrementId = fields.Str(attribute="increment_id", allow_none=True)
    incrementCount = fields.Int(attribute="increment_count")
    content = fields.Dict(attribute="rendered", allow_none=True)
    createdAt = fields.DateTime(attribute="created_at")
    sentAt = fields.DateTime(attribute="sent_at", allow_none=True)
    expiresAt = fields.DateTime(attribute="expires_at", allow_none=True)


class HistorySchema(Schema):
    """A status change."""

    status = fields.Str()
    reason = fields.Str(allow_none=True)
    at = fields.DateTime()


class MessageDetailSchema(MessageSchema):
    """A message with its status history."""

    history = fields.List(fields.Nested(HistorySchema))


class MessageListSchema(Schema):
    """A page of the message log."""

    data = fields.List(fields.Nested(MessageSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class SmsResultSchema(Schema):
    """The SMS send and what it created."""

    id = fields.Int()
    messages = fields.Int()
    deduplicated = fields.Int()
    errors = fields.Dict()


class PageSchema(Schema):
    """A page of plain objects."""

    data = fields.List(fields.Dict())
    nextCursor = fields.Str(allow_none=True)


class CountSchema(Schema):
    """How many rows changed."""

    added = fields.Int()
    removed = fields.Int()


def _with_user_ids(messages: list[Message]) -> list[Message]:
    from app.models import User

    pks = {m.user_id for m in messages if m.user_id is not None}
    names = (
        dict(
            db.session.execute(select(User.id, User.external_id).where(User.id.in_(pks)))
            .tuples()
            .all()
        )
        if pks
        else {}
    )
    for m in messages:
        m.user_external_id = names.get(m.user_id)  # type: ignore[attr-defined,arg-type]
    return messages


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be ISO 8601", {name: ["ISO 8601"]}) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class TemplateMessageSchema(Schema):
    """One template message (the body may be an array of up to 50)."""

    template = fields.Raw(required=True, metadata={"description": "template id or name"})
    userId = fields.Str(required=True)
    data = fields.Dict()
    id = fields.Str(metadata={"description": "client id; sent again answers id/exists"})
    incrementId = fields.Str(metadata={"description": "stack similar messages in a window"})
    userEmail = fields.Str()
    userPhone = fields.Str()
    userLanguage = fields.Str()
    userTimezone = fields.Str()
    overrides = fields.Dict(metadata={"description": "per channel field overrides"})
    channels = fields.List(fields.Str())
    ttlSeconds = fields.Int()
    transactional = fields.Bool()


MAX_TEMPLATE_MESSAGES = 50


@blp.route("/messages")
class Messages(MethodView):
    """The message log, and template messages."""

    @require_key(SECRET)
    @blp.doc(requestBody={"content": {"application/json": {"schema": TemplateMessageSchema}}})
    def post(self):
        """Send template messages: per item `{ok, id, error?, emailError?, smsError?}`."""
        from app.api.bodies import as_batch
        from app.api.project import project_view

        items, is_batch = as_batch(read_json_body(), limit=MAX_TEMPLATE_MESSAGES)
        project = current_project()
        window = project_view(project)["settings"]["stackWindowSeconds"]
        results = messages_service.send_template_messages(
            db.session, project=project, items=items, stack_window=window
        )
        answers = [r.as_json() for r in results]
        if not is_batch:
            only = results[0]
            if only.error == "id/exists":
                raise Conflict("id/exists", {"id": ["id/exists"]})
            if not only.ok:
                raise InvalidInput(f"Invalid message: {only.error}", only.errors or {})
            return answers[0], 200
        return {"data": answers}, 200

    @require_key(SECRET)
    @blp.response(200, MessageListSchema)
    def get(self):
        """Filter by `userId`, `sendId`, `channel`, `status`, `since`, `until`."""
        limit, after = page_args()
        filters: dict[str, Any] = {"since": _time_arg("since"), "until": _time_arg("until")}
        args = request.args
        if args.get("channel") and args["channel"] not in CHANNELS:
            raise BadRequest("unknown channel", {"channel": [f"one of {', '.join(CHANNELS)}"]})
        if args.get("status") and args["status"] not in STATUSES:
            raise BadRequest("unknown status", {"status": [f"one of {', '.join(STATUSES)}"]})
        filters["channel"] = args.get("channel")
        filters["status"] = args.get("status")
        if args.get("sendId"):
            if not args["sendId"].isdigit():
                raise BadRequest("sendId must be a number", {"sendId": ["a number"]})
            filters["send_id"] = int(args["sendId"])
        if args.get("userId"):
            user = load_users_by_external_id(
                db.session, current_project_id(), [args["userId"]]
            ).get(args["userId"])
            if user is None:
                return {"data": [], "next_cursor": None}
            filters["user_pk"] = user.id
        stmt = messages_service.message_log_query(
            current_project_id(), after_id=after, filters=filters
        )
        rows, cursor = paginate(db.session, stmt, limit)
        return {"data": _with_user_ids(rows), "next_cursor": cursor}


@blp.route("/messages/<int:message_id>")
class MessageItem(MethodView):
    """One message with its history."""

    @require_key(SECRET)
    @blp.response(200, MessageDetailSchema)
    def get(self, message_id: int):
        """Status history: queued at creation, then every change with its reason."""
        message = db.session.get(Message, message_id)
        if message is None or message.project_id != current_project_id():
            raise NotFound(f"message {message_id} not found")
        changes = db.session.scalars(
            select(MessageStatusChange)
            .where(MessageStatusChange.message_id == message.id)
            .order_by(MessageStatusChange.id)
        )
        message.history = [{"status": "queued", "reason": None, "at": message.created_at}, *changes]  # type: ignore[attr-defined]
        return _with_user_ids([message])[0]


@blp.route("/messages/sms")
class RawSms(MethodView):
    """SMS to raw phone numbers."""

    @require_key(SECRET)
    @blp.response(202, SmsResultSchema)
    def post(self):
        """`{type: sms|mms, title?, body, recipients: [{to}]}`, ≤1000; one send per number."""
        body = read_json_body()
        if not isinstance(body, dict):
            raise BadRequest("Expected a JSON object", {"body": ["wrong type"]})
        kind = body.get("type", "sms")
        if kind not in ("sms", "mms"):
            raise InvalidInput("type must be sms or mms", {"type": ["sms or mms"]})
        text = body.get("body")
        if not isinstance(text, str) or not text:
            raise InvalidInput(
                "body is required", {"body": [f"a string of 1-{MAX_BODY} characters"]}
            )
        if len(text) > MAX_BODY:
            raise InvalidInput(
                f"body is too long: {len(text)} characters, at most {MAX_BODY}",
                {"body": [f"too long: at most {MAX_BODY} characters"]},
            )
        title = body.get("title")
        if title is not None and not isinstance(title, str):
            raise InvalidInput("title must be a string", {"title": ["a string"]})
        recipients = body.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            raise InvalidInput("recipients is required", {"recipients": ["a non-empty list"]})
        if len(recipients) > current_app.config["MAX_BATCH"]:
            raise TooLarge("too many recipients", {"recipients": ["at most 1000"]})
        _, ttl, transactional = messages_service.parse_send_options({**body, "channels": ["sms"]})
        project = current_project()
        errors: dict[str, Any] = {}
        numbers: list[str] = []
        for index, item in enumerate(recipients):
            raw = item.get("to") if isinstance(item, dict) else None
            if not isinstance(raw, str):
                errors[str(index)] = {"to": ["required, a phone number"]}
                continue
            try:
                numbers.append(CHANNELS["sms"].normalize_address(raw, project.default_region))
            except FieldError as err:
                errors[str(index)] = {"to": [str(err)]}
        if not numbers:
            raise InvalidInput("no valid recipient", {"recipients": errors})
        content = {"body": text, **({"title": title} if title else {})}
        send = messages_service.create_send(
            db.session,
            project=project,
            kind="sms",
            channels=["sms"],
            content=content,
            ttl_seconds=ttl,
            transactional=transactional,
        )
        now = utcnow()
        rows = [message_row(send, channel="sms", address=n, user_id=None, now=now) for n in numbers]
        ids = insert_messages(db.session, rows)
        send.recipients = len(ids)
        send.deduplicated = len(rows) - len(ids)
        return {
            "id": send.id,
            "messages": len(ids),
            "deduplicated": len(rows) - len(ids),
            "errors": errors,
        }


@blp.route("/sandbox/messages")
class SandboxMessages(MethodView):
    """What the sandbox provider kept instead of sending (email and SMS by default)."""

    @require_key(SECRET)
    @blp.response(200, PageSchema)
    def get(self):
        """Newest last; `?channel=email|sms`, `?to=`."""
        limit, after = page_args()
        stmt = select(SandboxMessage).where(SandboxMessage.project_id == current_project_id())
        if request.args.get("channel"):
            stmt = stmt.where(SandboxMessage.channel == request.args["channel"])
        if request.args.get("to"):
            stmt = stmt.where(SandboxMessage.to == request.args["to"])
        if after is not None:
            stmt = stmt.where(SandboxMessage.id > after)
        rows, cursor = paginate(db.session, stmt.order_by(SandboxMessage.id), limit)
        return {
            "data": [
                {
                    "id": r.id,
                    "messageId": r.message_id,
                    "channel": r.channel,
                    "to": r.to,
                    "content": r.content,
                    "createdAt": r.created_at.isoformat(),
                }
                for r in rows
            ],
            "nextCursor": cursor,
        }


@blp.route("/suppressions")
class Suppressions(MethodView):
    """Addresses never to send to, per channel (checked right before every send)."""

    @require_key(SECRET)
    @blp.response(200, SuppressionListSchema)
    def get(self):
        """The suppression list, in the order it was added."""
        limit, after = page_args()
        stmt = suppressions.list_suppressions_query(current_project_id(), after_id=after)
        rows, cursor = paginate(db.session, stmt, limit)
        return {"data": rows, "next_cursor": cursor}

    @require_key(SECRET)
    @blp.arguments(SuppressionInputSchema)
    @blp.response(200, AddedSchema)
    def post(self, body: dict[str, Any]):
        """Add `{channel, address, reason?}`; adding twice is harmless."""
        added = suppressions.add_suppression(db.session, project=current_project(), **body)
        return {"added": added}

    @require_key(SECRET)
    @blp.arguments(SuppressionRemoveSchema)
    @blp.response(200, RemovedSchema)
    def delete(self, body: dict[str, Any]):
        """Remove `{channel, address}`."""
        removed = suppressions.remove_suppression(db.session, project=current_project(), **body)
        return {"removed": removed}
