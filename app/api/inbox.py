"""The in-app inbox and its Server-Sent Events stream, for end users (userId + userHash)."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, request
from flask.views import MethodView
from marshmallow import ValidationError

from app.api.blueprint import Blueprint
from app.api.bodies import read_json_body
from app.api.guard import SECRET, credential_from_request, resolve_principal
from app.db import db
from app.errors import BadRequest, Unauthorized
from app.models import Project, User
from app.models.base import utcnow
from app.realtime import get_hub, stream_key
from app.schemas.inbox import (
    STREAM_EVENT,
    EndUserActionArgsSchema,
    EndUserBodySchema,
    InboxItemSchema,
    InboxListArgsSchema,
    InboxPageSchema,
    MarkResultSchema,
    StreamArgsSchema,
    StreamHeadersSchema,
)
from app.services import inbox as inbox_service
from app.services.inbox import InboxItem

blp = Blueprint("inbox", __name__, url_prefix="/v1/inbox", description="In-app inbox")
# Bad input is a 400 naming the field, like the rest of the API's query parameters.
BAD = {"error_status_code": 400}
_item_schema = InboxItemSchema()


def _end_user(args: dict[str, Any]) -> tuple[int, User]:
    """The project (from the key) and the end user: any with a secret key, else by userHash.

    A secret key is accepted only in the Authorization header (a backend reading an inbox);
    in `?key=` only a publishable key is (the guard refuses the others: URLs end up in logs).
    """
    principal = resolve_principal(credential_from_request(allow_query=True))
    user_id = args.get("userId")
    if not user_id:
        raise BadRequest("userId is required", {"userId": ["required"]})
    if principal.kind != SECRET:
        provided = args.get("userHash")
        if not provided:
            raise Unauthorized("userHash is required", {"userHash": ["required"]})
        project = db.session.get(Project, principal.project_id)
        assert project is not None
        inbox_service.verify_end_user(project.identity_secret, user_id, provided)
    user = inbox_service.find_end_user(db.session, project_id=principal.project_id, user_id=user_id)
    return principal.project_id, user


@blp.route("")
class Inbox(MethodView):
    """The user's in-app messages, newest first."""

    @blp.arguments(InboxListArgsSchema, location="query", **BAD)
    @blp.response(200, InboxPageSchema)
    def get(self, args: dict[str, Any]):
        """`{data, unreadCount, nextCursor}`; `?archived=1` lists the archive."""
        _, user = _end_user(args)
        return inbox_service.list_inbox(
            db.session,
            user_pk=user.id,
            limit=args["limit"],
            before_id=args.get("cursor"),
            archived=args["archived"],
        )


# The body is optional, which `@blp.arguments` bodies are not here (a missing one is a 400).
OPTIONAL_BODY = blp.doc(
    requestBody={"required": False, "content": {"application/json": {"schema": EndUserBodySchema}}}
)


def _action_user(args: dict[str, Any]) -> User:
    """The end user of an action: userId and userHash from the query or a JSON body (it wins)."""
    body: dict[str, Any] = {}
    if request.get_data(cache=True):
        raw = read_json_body()
        if not isinstance(raw, dict):
            raise BadRequest("Expected a JSON object", {"body": ["wrong type"]})
        try:
            body = EndUserBodySchema().load(raw)
        except ValidationError as err:
            field = next(iter(err.messages_dict), "body")
            raise BadRequest(f"Invalid input: {field}", err.messages_dict) from None
    return _end_user({**args, **body})[1]


@blp.route("/<int:message_id>/read")
class InboxRead(MethodView):
    """Mark one message read: the in-app open (status `opened`, its history row and the
    internal `message.opened` event), once."""

    @blp.arguments(EndUserActionArgsSchema, location="query", **BAD)
    @OPTIONAL_BODY
    @blp.response(200, MarkResultSchema)
    def post(self, args: dict[str, Any], message_id: int):
        """Idempotent."""
        user = _action_user(args)
        updated = inbox_service.mark_read(
            db.session, user_pk=user.id, message_id=message_id, now=utcnow()
        )
        return {"updated": updated}


@blp.route("/read-all")
class InboxReadAll(MethodView):
    """Mark every message read: each unread one is opened as `/read` opens it."""

    @blp.arguments(EndUserActionArgsSchema, location="query", **BAD)
    @OPTIONAL_BODY
    @blp.response(200, MarkResultSchema)
    def post(self, args: dict[str, Any]):
        """Idempotent."""
        user = _action_user(args)
        updated = inbox_service.mark_read(
            db.session, user_pk=user.id, message_id=None, now=utcnow()
        )
        return {"updated": updated}


@blp.route("/<int:message_id>/archive")
class InboxArchive(MethodView):
    """Move one message to the archive."""

    @blp.arguments(EndUserActionArgsSchema, location="query", **BAD)
    @OPTIONAL_BODY
    @blp.response(200, MarkResultSchema)
    def post(self, args: dict[str, Any], message_id: int):
        """Idempotent."""
        user = _action_user(args)
        updated = inbox_service.archive_message(
            db.session, user_pk=user.id, message_id=message_id, now=utcnow()
        )
        return {"updated": updated}


def _frame(item: InboxItem) -> str:
    data = _item_schema.dump(item)
    return f"id: {item.id}\nevent: message\ndata: {json.dumps(data)}\n\n"


@blp.route("/stream")
class InboxStream(MethodView):
    """Server-Sent Events: new in-app messages as they are sent; `Last-Event-ID` replays."""

    @blp.arguments(StreamArgsSchema, location="query", **BAD)
    @blp.arguments(StreamHeadersSchema, location="headers", **BAD)
    @blp.response(
        200,
        STREAM_EVENT,
        content_type="text/event-stream",
        description="`message` events whose data is an inbox item; comments as heartbeats",
    )
    def get(self, args: dict[str, Any], headers: dict[str, Any]):
        """`?key=pk_...&userId=...&userHash=...` (EventSource cannot set headers)."""
        project_id, user = _end_user(args)
        last_id = headers.get("last_event_id", args.get("lastEventId"))
        heartbeat = current_app.config["SSE_HEARTBEAT_SECONDS"]
        hub = get_hub(current_app.config)
        maker = db.sessionmaker
        assert maker is not None
        user_pk = user.id
        opened_at = utcnow()
        # The request's session is committed and closed when this view returns, before the
        # stream's first byte: a stream that lives for hours holds no pooled connection.
        key = stream_key(project_id, user_pk)
        # Subscribe before replaying: a message sent in between arrives twice, never zero times.
        subscription = hub.subscribe(key)

        def replay(after_id: int | None, since: Any = None) -> list[InboxItem]:
            with maker() as session:
                return inbox_service.replay(
                    session, user_pk=user_pk, after_id=after_id, since=since
                )

        def stored(message_id: int) -> list[InboxItem]:
            with maker() as session:
                return inbox_service.load_items(session, user_pk=user_pk, ids=[message_id])

        def events() -> Iterator[str]:
            # Ids already framed on this connection. Workers publish concurrently, so ids
            # arrive out of order: a high-water mark would drop the late lower ones.
            sent: set[int] = set()
            newest = last_id

            def fresh(items: list[InboxItem]) -> Iterator[str]:
                nonlocal newest
                for item in items:
                    if item.id in sent:
                        continue
                    sent.add(item.id)
                    newest = item.id if newest is None else max(newest, item.id)
                    yield _frame(item)
                if len(sent) > 10_000:
                    sent.clear()

            try:
                yield "retry: 3000\n: connected\n\n"
                if last_id is not None:
                    yield from fresh(replay(last_id))
                while True:
                    try:
                        payload = subscription.get(timeout=heartbeat)
                    except queue.Empty:
                        yield ": heartbeat\n\n"
                        continue
                    if payload.get("resync"):
                        # The hub lost its connection for a while: catch up from the database.
                        yield from fresh(replay(newest, since=opened_at))
                    elif payload.get("stored"):
                        # Too large for a notification: the committed row has it.
                        yield from fresh(stored(payload["id"]))
                    else:
                        yield from fresh([InboxItem.from_publication(payload, utcnow())])
            finally:
                hub.unsubscribe(key, subscription)

        response = Response(events(), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        return response
