"""The message log, raw SMS sends, the sandbox outbox and suppressions."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import select

from app.api.blueprint import Blueprint
from app.api.bodies import as_batch, read_json_body, rejected_items
from app.api.guard import SECRET, current_project, current_project_id, require_key
from app.api.pagination import BAD_QUERY, PageArgsSchema, page_of, paginate
from app.db import db
from app.errors import Conflict, InvalidInput, NotFound, flatten_errors
from app.models.base import utcnow
from app.models.message import Message, MessageStatusChange, SandboxMessage
from app.schemas.common import Integer
from app.schemas.messages import (
    MAX_TEMPLATE_MESSAGES,
    MessageBatchResultSchema,
    MessageDetailSchema,
    MessageListSchema,
    MessageLogArgsSchema,
    MessageResultSchema,
    RawSmsSchema,
    SandboxArgsSchema,
    SandboxPageSchema,
    SmsResultSchema,
    TemplateMessageSchema,
    client_id_of,
    raw_sms_body,
    template_messages_body,
)
from app.schemas.notify import is_transactional
from app.schemas.suppressions import (
    AddedSchema,
    RemovedSchema,
    SuppressionInputSchema,
    SuppressionListSchema,
    SuppressionRemoveSchema,
    suppression_body,
)
from app.services import messages as messages_service
from app.services import suppressions
from app.services.cancel import cancel_pending
from app.services.idempotency import MAX_KEY_LENGTH, idempotent
from app.services.messages import InvalidMessage, TemplateMessage
from app.services.named import MAX_ID
from app.services.outbox import insert_messages, message_row
from app.services.profiles import FieldError
from app.services.users import load_users_by_external_id
from workers.channels import CHANNELS

blp = Blueprint("messages", __name__, url_prefix="/v1", description="Messages")


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


_template_message = TemplateMessageSchema()


def _template_messages(body: Any) -> tuple[list[TemplateMessage | InvalidMessage], bool]:
    """The items of POST /v1/messages, each checked on its own: (items, was_array)."""
    raw_items, is_batch = as_batch(body, limit=MAX_TEMPLATE_MESSAGES)
    set_aside = rejected_items()
    items: list[TemplateMessage | InvalidMessage] = []
    for index, raw in enumerate(raw_items):
        if index in set_aside:  # a value no string or number may hold (NUL, NaN...)
            items.append(InvalidMessage(set_aside[index]))
            continue
        if not isinstance(raw, dict):
            items.append(InvalidMessage({"_schema": ["expected an object"]}))
            continue
        try:
            items.append(_template_message.load(raw))
        except ValidationError as err:
            items.append(InvalidMessage(flatten_errors(err.messages), client_id_of(raw)))
    return items, is_batch


@blp.route("/messages")
class Messages(MethodView):
    """The message log, and template messages."""

    @require_key(SECRET)
    @idempotent
    @blp.doc(requestBody=template_messages_body(TemplateMessageSchema))
    @blp.doc(
        responses={
            "200": {
                "description": "an object answers one result, an array `{data: [results]}`",
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [MessageResultSchema, MessageBatchResultSchema]}
                    }
                },
            }
        }
    )
    def post(self):
        """Send template messages: per item `{ok, id, error?, <channel>Error?, messageIds}`.

        One object: an invalid one is a 422, a taken id a 409, an unknown template a 404. A
        batch answers every item in its place; one in which no item is valid is a 422.
        """
        from app.api.project import project_view

        items, is_batch = _template_messages(read_json_body())
        if is_batch and all(isinstance(item, InvalidMessage) for item in items):
            raise InvalidInput(
                "Invalid message at index 0: every item is invalid",
                {str(i): item.errors for i, item in enumerate(items)},  # type: ignore[union-attr]
            )
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
            if only.error == "template/not-found":
                raise NotFound("template not found", only.errors)
            if not only.ok:
                raise InvalidInput(
                    "Invalid message: " + ", ".join(sorted(only.errors or {})), only.errors
                )
            return answers[0]
        return {"data": answers}

    @require_key(SECRET)
    @blp.arguments(MessageLogArgsSchema, **BAD_QUERY)
    @blp.response(200, MessageListSchema)
    def get(self, args: dict[str, Any]):
        """Filter by `userId`, `sendId`, `channel`, `status`, `since`, `until`; oldest first."""
        limit, after = page_of(args)
        filters: dict[str, Any] = {
            "since": args.get("since"),
            "until": args.get("until"),
            "channel": args.get("channel"),
            "status": args.get("status"),
            "send_id": args.get("sendId"),
        }
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
    @idempotent
    @blp.arguments(RawSmsSchema)
    @blp.doc(requestBody=raw_sms_body(RawSmsSchema))
    @blp.response(202, SmsResultSchema)
    def post(self, body: dict[str, Any]):
        """`{type: sms|mms, title?, body, recipients: [{to}]}`, ≤1000; one send per number."""
        project = current_project()
        errors: dict[str, Any] = {}
        numbers: list[str] = []
        for index, item in enumerate(body["recipients"]):
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
        text, title = body["body"], body.get("title")
        content = {"body": text, **({"title": title} if title else {})}
        send = messages_service.create_send(
            db.session,
            project=project,
            kind="sms",
            channels=["sms"],
            content=content,
            ttl_seconds=body.get("ttlSeconds"),
            transactional=is_transactional(body),
            topic=body.get("topic"),
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


# --- POST /v1/messages/cancel: stop what has not been sent yet ---

_CANCEL_BY = ("campaign", "idempotencyKey", "sendId")
_CANCEL_ONE = "give exactly one of campaign, idempotencyKey, sendId"


class _CampaignRef(fields.Field):
    """A campaign id (integer) or name (string)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, float) and value.is_integer():  # JSON Schema's integers: 3.0
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
            return value
        if isinstance(value, str) and 0 < len(value) <= 255:
            return value
        raise ValidationError(f"a campaign id (0-{MAX_ID}) or name (1-255 characters)")


class CancelSchema(Schema):
    """`{campaign: id|name}`, `{idempotencyKey}` or `{sendId}`: exactly one."""

    campaign = _CampaignRef()
    idempotencyKey = fields.Str(validate=validate.Length(min=1, max=MAX_KEY_LENGTH))
    sendId = Integer(validate=validate.Range(min=0, max=MAX_ID))

    @validates_schema
    def _exactly_one(self, data: dict[str, Any], **_: Any) -> None:
        if len([name for name in _CANCEL_BY if name in data]) != 1:
            raise ValidationError({name: [_CANCEL_ONE] for name in _CANCEL_BY})


class CancelResultSchema(Schema):
    """What a cancel did."""

    cancelled = fields.Int(required=True, metadata={"description": "queued messages cancelled"})
    inFlight = fields.Int(
        required=True,
        metadata={"description": "messages already being sent: not cancelled, they finish"},
    )
    fanOutsStopped = fields.Int(
        required=True, metadata={"description": "sends whose fan-out was still creating messages"}
    )


_CANCEL_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "campaign": {
                        "oneOf": [
                            {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                            {"type": "string", "minLength": 1, "maxLength": 255},
                        ],
                        "description": "a campaign id or name: all its sends",
                    },
                    "idempotencyKey": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_KEY_LENGTH,
                        "description": "the sends made by requests with this Idempotency-Key",
                    },
                    "sendId": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                },
                "additionalProperties": False,
                "oneOf": [{"required": [name]} for name in _CANCEL_BY],
                "description": _CANCEL_ONE,
            }
        }
    },
}


@blp.route("/messages/cancel")
class CancelMessages(MethodView):
    """Cancel pending messages."""

    @require_key(SECRET)
    @blp.arguments(CancelSchema)
    @blp.doc(requestBody=_CANCEL_BODY)
    @blp.response(200, CancelResultSchema)
    def post(self, body: dict[str, Any]):
        """Queued messages become `cancelled`; fan-outs in progress stop; `sending` ones finish.

        An unknown campaign, key or send is a 404. Cancelling again cancels nothing more.
        """
        done = cancel_pending(
            db.session,
            project_id=current_project_id(),
            now=utcnow(),
            campaign=body.get("campaign"),
            idempotency_key=body.get("idempotencyKey"),
            send_id=body.get("sendId"),
        )
        return {
            "cancelled": done.cancelled,
            "inFlight": done.in_flight,
            "fanOutsStopped": done.fan_outs_stopped,
        }


@blp.route("/sandbox/messages")
class SandboxMessages(MethodView):
    """What the sandbox provider kept instead of sending (email and SMS by default)."""

    @require_key(SECRET)
    @blp.arguments(SandboxArgsSchema, **BAD_QUERY)
    @blp.response(200, SandboxPageSchema)
    def get(self, args: dict[str, Any]):
        """Newest last; `?channel=email|sms`, `?to=`."""
        limit, after = page_of(args)
        stmt = select(SandboxMessage).where(SandboxMessage.project_id == current_project_id())
        if args.get("channel"):
            stmt = stmt.where(SandboxMessage.channel == args["channel"])
        if args.get("to"):
            stmt = stmt.where(SandboxMessage.to == args["to"])
        if after is not None:
            stmt = stmt.where(SandboxMessage.id > after)
        rows, cursor = paginate(db.session, stmt.order_by(SandboxMessage.id), limit)
        return {"data": rows, "next_cursor": cursor}


@blp.route("/suppressions")
class Suppressions(MethodView):
    """Addresses never to send to, per channel (checked right before every send)."""

    @require_key(SECRET)
    @blp.arguments(PageArgsSchema, **BAD_QUERY)
    @blp.response(200, SuppressionListSchema)
    def get(self, page: dict[str, Any]):
        """The suppression list, in the order it was added."""
        limit, after = page_of(page)
        stmt = suppressions.list_suppressions_query(current_project_id(), after_id=after)
        rows, cursor = paginate(db.session, stmt, limit)
        return {"data": rows, "next_cursor": cursor}

    @require_key(SECRET)
    @blp.arguments(SuppressionInputSchema)
    @blp.doc(requestBody=suppression_body(SuppressionInputSchema))
    @blp.response(200, AddedSchema)
    def post(self, body: dict[str, Any]):
        """Add `{channel, address, reason?}`; adding twice is harmless."""
        added = suppressions.add_suppression(db.session, project=current_project(), **body)
        return {"added": added}

    @require_key(SECRET)
    @blp.arguments(SuppressionRemoveSchema)
    @blp.doc(requestBody=suppression_body(SuppressionRemoveSchema))
    @blp.response(200, RemovedSchema)
    def delete(self, body: dict[str, Any]):
        """Remove `{channel, address}`."""
        removed = suppressions.remove_suppression(db.session, project=current_project(), **body)
        return {"removed": removed}
