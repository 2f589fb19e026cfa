"""`Idempotency-Key`: a repeated POST with the same key and body replays the first answer.

Semantics (the same for every endpoint that takes the header):
- Keys are per project and per endpoint (`"POST /v1/campaigns/12/send"`, the path with its
  ids filled in) and kept 24 hours (`expires_at`; the sweep task
  `workers.sweeps.idempotency_keys` deletes them later, and an expired key is free again at
  once).
- The same key and the same body (canonical JSON: sorted keys, no spaces) replays the stored
  status code and JSON body, with `Idempotent-Replayed: true`; nothing runs again.
- The same key with another body is a 409 naming the header.
- Only successes (< 400) are stored. An error answer (a raised error, or a returned 4xx/5xx)
  leaves no key behind, so a corrected retry with the same key runs.
- Concurrency: the key row is inserted first in the request's transaction (`INSERT ... ON
  CONFLICT DO NOTHING`), so the unique constraint decides. On PostgreSQL a concurrent request
  with the same key waits on that insert until the first one commits (then replays it) or
  rolls back (then runs itself); SQLite transactions are serialised (BEGIN IMMEDIATE), so the
  second request finds the committed row. Either way the loser creates no second send.
- Every `Send` created while the request runs is stamped with the key (`Send.idempotency_key`),
  so `POST /v1/messages/cancel {idempotencyKey}` finds its messages.

Use on a flask-smorest view, under `require_key` (the project comes from the principal) and
above the `arguments`/`response` decorators (it replays their finished response)::

    @require_key(SECRET)
    @idempotent
    @blp.arguments(CampaignSendSchema)
    @blp.response(202, CampaignSendResultSchema)
    def post(self, body, campaign_id): ...

`idempotent` documents the header in the OpenAPI operation itself. Code that is not a view
calls `replay_or_run(session, project_id=, endpoint=, key=, body=, run=)` directly.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, TypeVar

from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.errors import BadRequest, Conflict
from app.models.base import utcnow
from app.models.idempotency import IdempotencyKey
from app.models.message import Send

F = TypeVar("F", bound=Callable[..., Any])

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255
# Printable ASCII, no surrounding spaces (servers and clients strip them, so " a" and "a"
# could not be told apart). The same pattern in Python and ECMA-262: no `$`.
KEY_PATTERN = r"^(?:[!-~](?:[ -~]{0,253}[!-~])?)(?![\s\S])"
_KEY_RE = re.compile(KEY_PATTERN)
KEY_RULE = f"1-{MAX_KEY_LENGTH} printable ASCII characters, no leading or trailing space"

# The OpenAPI parameter `idempotent` adds to an operation.
PARAMETER: dict[str, Any] = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": KEY_PATTERN,
    },
    "description": (
        "Makes the request safe to retry for 24 h: the same key with the same body replays "
        f"the first answer (with `{REPLAYED_HEADER}: true`) and sends nothing again; the same "
        "key with another body is a 409. Error answers are not kept. Per project and endpoint; "
        "the sends created carry the key (`POST /v1/messages/cancel`)."
    ),
}

# session.info key: the Idempotency-Key of the request running in this session.
_STAMP = "cairn_idempotency_key"


def parse_key(raw: str | None) -> str | None:
    """The header's value, None when absent; a malformed one is a 400 naming the header."""
    if raw is None:
        return None
    if len(raw) > MAX_KEY_LENGTH or not _KEY_RE.match(raw):
        raise BadRequest(f"Invalid {HEADER} header: {KEY_RULE}", {HEADER: [KEY_RULE]})
    return raw


def body_hash(body: Any) -> str:
    """SHA-256 of the body's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    """What to answer: the status code and JSON body, and whether it is a replay."""

    status: int
    body: Any
    replayed: bool = False


def _claim(
    session: Session, project_id: int, endpoint: str, key: str, digest: str, now: datetime
) -> int | None:
    """Insert the key row (the first answer is filled in later); None if the key is taken."""
    # An expired key is free again: drop it here rather than wait for the sweep.
    session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.project_id == project_id,
            IdempotencyKey.endpoint == endpoint,
            IdempotencyKey.key == key,
            IdempotencyKey.expires_at <= now,
        )
    )
    stmt = (
        insert_ignore(session, IdempotencyKey, ["project_id", "endpoint", "key"])
        .values(
            project_id=project_id,
            endpoint=endpoint,
            key=key,
            body_hash=digest,
            status_code=0,  # running: never visible to another transaction
            response=None,
            created_at=now,
            expires_at=now + TTL,
        )
        .returning(IdempotencyKey.id)
    )
    return session.scalar(stmt)


def _stored(session: Session, project_id: int, endpoint: str, key: str) -> IdempotencyKey | None:
    return session.scalar(
        select(IdempotencyKey)
        .where(
            IdempotencyKey.project_id == project_id,
            IdempotencyKey.endpoint == endpoint,
            IdempotencyKey.key == key,
        )
        # Always read the row afresh: a replay must see the committed answer.
        .execution_options(populate_existing=True)
    )


def replay_or_run(
    session: Session,
    *,
    project_id: int,
    endpoint: str,
    key: str | None,
    body: Any,
    run: Callable[[], tuple[int, Any]],
    now: datetime | None = None,
) -> Answer:
    """Replay the stored answer to (`endpoint`, `key`) or call `run() -> (status, body)` once.

    `key` None just runs. The same key with another body raises Conflict (409). A `run` that
    raises, or answers >= 400, leaves no key stored (the caller's rollback or a delete here).
    Sends created during `run` get `idempotency_key = key`. Flushes, never commits.
    """
    if key is None:
        status, out = run()
        return Answer(status, out)
    now = now or utcnow()
    digest = body_hash(body)
    for _ in range(3):
        row_id = _claim(session, project_id, endpoint, key, digest, now)
        if row_id is not None:
            break
        stored = _stored(session, project_id, endpoint, key)
        if stored is None:  # expired and swept between the insert and the read: claim again
            continue
        if stored.body_hash != digest:
            raise Conflict(
                f"{HEADER} {key!r} was already used with another body",
                {HEADER: ["already used with another body"]},
            )
        return Answer(stored.status_code, stored.response, replayed=True)
    else:  # pragma: no cover - three sweeps in a row racing one request
        raise Conflict(f"{HEADER} {key!r} is busy, retry", {HEADER: ["busy"]})
    previous = session.info.get(_STAMP)
    session.info[_STAMP] = key
    try:
        status, out = run()
    finally:
        session.info[_STAMP] = previous
    if status >= 400:
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id))
    else:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == row_id)
            .values(status_code=status, response=out)
        )
    return Answer(status, out)


@event.listens_for(Session, "before_flush")
def _stamp_sends(session: Session, _context: Any, _instances: Any) -> None:
    # Sends are created by several services (notify, messages, campaigns): stamping them here
    # keeps the key out of every signature between the view and `create_send`.
    key = session.info.get(_STAMP)
    if key is None:
        return
    for obj in session.new:
        if isinstance(obj, Send) and obj.idempotency_key is None:
            obj.idempotency_key = key


def sweep_expired(session: Session, *, now: datetime, batch: int) -> int:
    """Delete up to `batch` expired keys; how many."""
    ids = select(IdempotencyKey.id).where(IdempotencyKey.expires_at <= now).limit(batch)
    result = session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids.scalar_subquery()))
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


def idempotent(view: F) -> F:
    """Decorate a flask-smorest view (under `require_key`) to honour `Idempotency-Key`."""
    from flask import current_app, g, jsonify, request

    from app.api.bodies import read_json_body
    from app.db import db

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = parse_key(request.headers.get(HEADER))
        if key is None:
            return view(*args, **kwargs)
        principal = g.get("principal")
        assert principal is not None, "@idempotent goes under @require_key"
        first: list[Any] = []

        def run() -> tuple[int, Any]:
            response = current_app.make_response(view(*args, **kwargs))
            first.append(response)
            return response.status_code, response.get_json(silent=True)

        answer = replay_or_run(
            db.session,
            project_id=principal.project_id,
            endpoint=f"{request.method} {request.path}"[:255],
            key=key,
            body=read_json_body(),
            run=run,
        )
        if not answer.replayed:
            return first[0]
        response = jsonify(answer.body)
        response.status_code = answer.status
        response.headers[REPLAYED_HEADER] = "true"
        return response

    # Document the header on the operation (flask-smorest reads `_apidoc`; copy, never share).
    apidoc = deepcopy(getattr(view, "_apidoc", {}))
    apidoc.setdefault("arguments", {}).setdefault("parameters", []).append(deepcopy(PARAMETER))
    wrapper._apidoc = apidoc  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
