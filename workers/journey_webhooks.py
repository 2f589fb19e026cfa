"""A journey webhook step's call: a signed POST made once, its answer saved, the run moved on.

The call row (`journey_webhook_calls`, unique per run, step and visit) is written by the
advance that reached the step; this job makes the call outside any transaction and records it:

1. Skip a call that is no longer `pending` (a redelivered job never calls twice once done).
2. SSRF guard: public https only (every address the host resolves to), the connection pinned
   to the checked address; `ALLOW_PRIVATE_ENDPOINTS` lifts it (tests, local services).
3. POST the JSON body (10 s timeout, no redirects) with

       X-Cairn-Timestamp: <unix seconds>
       X-Cairn-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>
       X-Cairn-Journey-Call: <call id>   (the same on a retry: receivers can dedupe on it)

   where the secret is the project's `settings.journeyWebhookSecret` when set, else its
   identity secret.
4. Record `{ok, status, body, error}` (the JSON body when it is at most 16 KB, else None with
   an error) and advance the run with it, under the user's row lock.

Connection errors and timeouts raise, so Dramatiq retries; after MAX_ATTEMPTS the call is
recorded as failed (`ok: false`) and the run continues on its `next` edge all the same.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import urllib3
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from urllib3.exceptions import HTTPError

from app.models import Journey, Project, User
from app.models.base import utcnow
from app.models.journey import JourneyRun, JourneyWebhookCall
from workers.channels.providers.sms_webhook import sign
from workers.channels.providers.webpush import check_endpoint, pinned_pool

log = logging.getLogger(__name__)

TIMEOUT = urllib3.Timeout(connect=10.0, read=10.0)
MAX_RESPONSE = 16_384
MAX_ATTEMPTS = 5
SIGNATURE_HEADER = "X-Cairn-Signature"
TIMESTAMP_HEADER = "X-Cairn-Timestamp"
CALL_HEADER = "X-Cairn-Journey-Call"


class CallFailed(Exception):
    """The receiver could not be reached: retried by Dramatiq."""


def _post(url: str, address: str | None, body: bytes, headers: Mapping[str, str]) -> Any:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    pool = pinned_pool(url, address, timeout=TIMEOUT, retries=False, maxsize=1)
    try:
        response = pool.urlopen(
            "POST",
            target,
            body=body,
            headers={**headers, "Host": parts.netloc},
            redirect=False,
            retries=False,
            preload_content=False,
        )
        try:
            raw = response.read(MAX_RESPONSE + 1)
        finally:
            response.release_conn()
        return response.status, raw
    finally:
        pool.close()


def _result(status: int, raw: bytes) -> dict[str, Any]:
    ok = 200 <= status < 300
    if len(raw) > MAX_RESPONSE:
        return {"ok": ok, "status": status, "body": None, "error": "response over 16 KB"}
    body: Any = None
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError:
            return {"ok": ok, "status": status, "body": None, "error": "response is not JSON"}
    return {"ok": ok, "status": status, "body": body, "error": None}


def call_webhook(session: Session, call_id: int, settings: Mapping[str, Any]) -> None:
    """Make one journey webhook call (see the module docstring) and advance its run."""
    call = session.get(JourneyWebhookCall, call_id)
    if call is None or call.status != "pending":
        session.rollback()
        return
    project = session.get(Project, call.project_id)
    assert project is not None
    secret = str((project.settings or {}).get("journeyWebhookSecret") or project.identity_secret)
    url, payload = call.url, call.body
    attempts = call.attempts + 1
    session.execute(
        update(JourneyWebhookCall).where(JourneyWebhookCall.id == call_id).values(attempts=attempts)
    )
    session.commit()  # the attempt counts even if this worker dies during the call

    problem, address = check_endpoint(
        url, allow_private=bool(settings.get("ALLOW_PRIVATE_ENDPOINTS"))
    )
    if problem is not None:
        result: dict[str, Any] = {"ok": False, "status": None, "body": None, "error": problem}
    else:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Cairn-Journeys/1",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(secret, stamp, body),
            CALL_HEADER: str(call_id),
        }
        try:
            status, raw = _post(url, address, body, headers)
        except (HTTPError, OSError) as err:
            if attempts < MAX_ATTEMPTS:
                raise CallFailed(f"webhook {url!r} unreachable: {type(err).__name__}") from None
            result = {"ok": False, "status": None, "body": None, "error": f"unreachable: {err}"}
        else:
            result = _result(status, raw)
    record(session, call_id, result)


def record(session: Session, call_id: int, result: dict[str, Any]) -> None:
    """Save a call's answer once and advance its run with it (under the user's lock)."""
    from app.services.journey_runs import advance_run, webhook_result_of

    call = session.get(JourneyWebhookCall, call_id)
    assert call is not None
    run = session.get(JourneyRun, call.run_id)
    if run is None:
        return
    lock = select(User).where(User.id == run.user_id)
    if session.get_bind().dialect.name == "postgresql":
        lock = lock.with_for_update()
    user = session.scalar(lock.execution_options(populate_existing=True))
    now = utcnow()
    saved = session.execute(
        update(JourneyWebhookCall)
        .where(JourneyWebhookCall.id == call_id, JourneyWebhookCall.status == "pending")
        .values(status="done" if result["ok"] else "failed", result=result, done_at=now)
        .returning(JourneyWebhookCall.id)
    ).all()
    if not saved or user is None:
        return
    session.refresh(run)
    journey = session.get(Journey, run.journey_id)
    if run.status not in ("active", "waiting") or journey is None:
        return
    if journey.status != "active":
        # Paused: the answer waits on the call row; the run is due as soon as it resumes.
        run.wake_at = now
        return
    advance_run(
        session, run, now=now, webhook_result=webhook_result_of(call.step, call.visit, result)
    )
