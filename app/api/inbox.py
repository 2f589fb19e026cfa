"""The in-app inbox and its Server-Sent Events stream, for end users (userId + userHash)."""

from __future__ import annotations

import hmac
import json
import queue
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from flask import Response, current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import aliased

from app.api.guard import credential_from_request, resolve_principal
from app.db import db
from app.errors import BadRequest, Forbidden, NotFound, Unauthorized
from app.models import Project, User
from app.models.base import utcnow
from app.models.message import REACHED, Message
from app.realtime import get_hub, stream_key
from app.services.projects import user_hash
from app.services.users import load_users_by_external_id

blp = Blueprint("inbox", __name__, url_prefix="/v1/inbox", description="In-app inbox")
REPLAY_LIMIT = 500


def _end_user() -> tuple[int, User]:
    """The project (from the pk/sk key) and the end user proven by userHash."""
    principal = resolve_principal(credential_from_request(allow_query=True))
    args = (
        request.args
        if request.method == "GET"
        else {**request.args, **(request.get_json(silent=True) or {})}
    )
    user_id = args.get("userId")
    if not isinstance(user_id, str) or not user_id:
        raise BadRequest("userId is required", {"userId": ["required"]})
    if principal.kind != "secret":
        provided = args.get("userHash")
        if not isinstance(provided, str) or not provided:
            raise Unauthorized("userHash is required", {"userHash": ["required"]})
        project = db.session.get(Project, principal.project_id)
        assert project is not None
        if not hmac.compare_digest(user_hash(project.identity_secret, user_id), provided.lower()):
            raise Forbidden("userHash does not match userId", {"userHash": ["invalid"]})
    user = load_users_by_external_id(db.session, principal.project_id, [user_id]).get(user_id)
    if user is None:
        raise NotFound("unknown user", {"userId": ["not found"]})
    return principal.project_id, user


def _visible(user_pk: int):
    """In-app messages a user can see: reached, not replaced by a newer one of its group."""
    newer = aliased(Message)
    replaced = (
        select(newer.id).where(newer.replaces_id == Message.id, newer.status.in_(REACHED)).exists()
    )
    return and_(
        Message.user_id == user_pk,
        Message.channel == "inapp",
        Message.status.in_(REACHED),
        ~replaced,
    )


def inbox_item(m: Message) -> dict[str, Any]:
    """One inbox entry as the API and the stream show it."""
    content = m.rendered or {}
    return {
        "id": m.id,
        "title": content.get("title"),
        "body": content.get("body"),
        "url": content.get("url"),
        "data": content.get("data"),
        "count": m.increment_count,
        "replaces": m.replaces_id,
        "createdAt": m.created_at.isoformat(),
        "readAt": m.read_at.isoformat() if m.read_at else None,
        "archived": m.archived_at is not None,
    }


@blp.route("")
class Inbox(MethodView):
    """The user's in-app messages, newest first."""

    def get(self):
        """`{data, unreadCount, nextCursor}`; `?archived=1` lists the archive."""
        _, user = _end_user()
        limit = (
            min(max(int(request.args.get("limit", "50") or 50), 1), 200)
            if request.args.get("limit", "50").isdigit()
            else 50
        )
        archived = request.args.get("archived") in ("1", "true")
        stmt = select(Message).where(
            _visible(user.id),
            Message.archived_at.is_not(None) if archived else Message.archived_at.is_(None),
        )
        before = request.args.get("cursor")
        if before:
            if not before.isdigit():
                raise BadRequest("malformed cursor", {"cursor": ["malformed"]})
            stmt = stmt.where(Message.id < int(before))
        rows = list(db.session.scalars(stmt.order_by(Message.id.desc()).limit(limit + 1)))
        cursor = str(rows[limit - 1].id) if len(rows) > limit else None
        unread = db.session.scalar(
            select(func.count())
            .select_from(Message)
            .where(_visible(user.id), Message.read_at.is_(None), Message.archived_at.is_(None))
        )
        return {
            "data": [inbox_item(m) for m in rows[:limit]],
            "unreadCount": unread,
            "nextCursor": cursor,
        }


def _mark(message_id: int | None, **values: Any) -> dict[str, Any]:
    _, user = _end_user()
    stmt = update(Message).where(_visible(user.id))
    if message_id is not None:
        stmt = stmt.where(Message.id == message_id)
    if "read_at" in values:
        stmt = stmt.where(Message.read_at.is_(None))
        values["status"] = "opened"
    result = db.session.execute(
        stmt.values(**values, updated_at=utcnow()), execution_options={"synchronize_session": False}
    )
    db.session.commit()
    if message_id is not None and result.rowcount == 0:  # type: ignore[attr-defined]
        exists = db.session.scalar(
            select(Message.id).where(_visible(user.id), Message.id == message_id)
        )
        if exists is None:
            raise NotFound(f"message {message_id} not in this inbox")
    return {"updated": result.rowcount}  # type: ignore[attr-defined]


@blp.route("/<int:message_id>/read")
class InboxRead(MethodView):
    """Mark one message read (its status becomes `opened`)."""

    def post(self, message_id: int):
        """Idempotent."""
        return _mark(message_id, read_at=utcnow())


@blp.route("/read-all")
class InboxReadAll(MethodView):
    """Mark every message read."""

    def post(self):
        """Idempotent."""
        return _mark(None, read_at=utcnow())


@blp.route("/<int:message_id>/archive")
class InboxArchive(MethodView):
    """Move one message to the archive."""

    def post(self, message_id: int):
        """Idempotent."""
        return _mark(message_id, archived_at=utcnow())


# Messages are sent by concurrent workers, so one with a lower id can be sent after a higher
# one the client already saw. A reconnect replays everything after Last-Event-ID plus whatever
# was sent shortly before that message; clients dedupe frames by id.
REPLAY_OVERLAP = timedelta(seconds=60)


def _replay(maker: Any, user_pk: int, last_id: int) -> list[dict[str, Any]]:
    with maker() as session:
        reference = session.scalar(
            select(Message.sent_at).where(Message.id == last_id, Message.user_id == user_pk)
        )
        missed = Message.id > last_id
        if reference is not None:
            missed = or_(
                missed, and_(Message.id < last_id, Message.sent_at >= reference - REPLAY_OVERLAP)
            )
        rows = session.scalars(
            select(Message)
            .where(_visible(user_pk), missed)
            .order_by(Message.id)
            .limit(REPLAY_LIMIT)
        )
        return [inbox_item(m) for m in rows]


def _frame(payload: dict[str, Any]) -> str:
    return f"id: {payload['id']}\nevent: message\ndata: {json.dumps(payload)}\n\n"


@blp.route("/stream")
class InboxStream(MethodView):
    """Server-Sent Events: new in-app messages as they are sent; `Last-Event-ID` replays."""

    def get(self):
        """`?key=pk_...&userId=...&userHash=...` (EventSource cannot set headers)."""
        project_id, user = _end_user()
        last = request.headers.get("Last-Event-ID") or request.args.get("lastEventId") or ""
        last_id = int(last) if last.isdigit() else None
        heartbeat = current_app.config["SSE_HEARTBEAT_SECONDS"]
        hub = get_hub(current_app.config.get("REDIS_URL") or None)
        maker = db.sessionmaker
        user_pk = user.id
        # The stream may live for hours: give the request's connection back now.
        db.session.close()
        key = stream_key(project_id, user_pk)
        subscription = hub.subscribe(key)

        def events() -> Iterator[str]:
            try:
                yield "retry: 3000\n: connected\n\n"
                # Ids already framed on this connection. Workers publish concurrently, so ids
                # arrive out of order: a high-water mark would drop the late lower ones.
                sent: set[int] = set()
                if last_id is not None:
                    for item in _replay(maker, user_pk, last_id):
                        sent.add(item["id"])
                        yield _frame(item)
                while True:
                    try:
                        payload = subscription.get(timeout=heartbeat)
                    except queue.Empty:
                        yield ": heartbeat\n\n"
                        continue
                    if payload["id"] in sent and not payload.get("update"):
                        continue
                    sent.add(payload["id"])
                    if len(sent) > 10_000:
                        sent.clear()
                    content = payload.get("content") or {}
                    yield _frame(
                        {
                            "id": payload["id"],
                            "title": content.get("title"),
                            "body": content.get("body"),
                            "url": content.get("url"),
                            "data": content.get("data"),
                            "count": payload.get("count", 1),
                            "replaces": payload.get("replaces"),
                            "createdAt": utcnow().isoformat(),
                            "readAt": None,
                            "archived": False,
                        }
                    )
            finally:
                hub.unsubscribe(key, subscription)

        response = Response(events(), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        return response
