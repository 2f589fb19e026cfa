"""/v1/events: track one event or a batch of up to 1000."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, current_app, request
from flask.views import MethodView
from flask_cors import CORS

from app.api.blueprint import Blueprint
from app.api.bodies import as_batch, index_errors, read_json_body, rejected_items
from app.api.guard import PUBLISHABLE, SECRET, current_project_id, require_key, verification
from app.db import db
from app.errors import InvalidInput, TooLarge
from app.schemas.events import EVENTS_BODY, TrackResponseSchema
from app.services.events import Limits, ParsedBatch, TrackResult, parse_events, track_events
from app.services.identity import HASH_HEADER, IdentityRequired, Verification, refused_for_identity
from app.services.ingest_writer import writer_for

blp = Blueprint("events", __name__, url_prefix="/v1", description="Event ingestion")

# Endpoints a browser on another origin may call with a publishable key.
PUBLIC_PATHS = (
    r"/v1/(events|pixel\.gif|identify|track|page|screen|alias|batch|push/.*"
    # Segment SDKs (app/api/segment_sdk.py): short paths are anchored, /v1/t is not /v1/templates.
    r"|([tipagsb]|projects/[^/]+/settings)$)"
)
# Requests with at most this many events go through the per-process group-commit writer.
GROUPED_MAX_EVENTS = 100


def register_cors(app: Flask) -> None:
    """Allow cross-origin calls to the publishable-key endpoints only."""
    CORS(
        app,
        resources={PUBLIC_PATHS: {"origins": "*"}},
        # analytics.js adds X-Retry-Count when it resends a call.
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Content-Encoding",
            "X-Retry-Count",
            HASH_HEADER,
        ],
        methods=["GET", "POST", "DELETE", "OPTIONS"],
        max_age=86400,
    )


def limits() -> Limits:
    """Event limits from the app configuration."""
    cfg = current_app.config
    return Limits(
        max_event_bytes=cfg["MAX_EVENT_BYTES"],
        max_future=timedelta(seconds=cfg["MAX_FUTURE_SKEW_SECONDS"]),
        max_past=timedelta(seconds=cfg["MAX_PAST_SKEW_SECONDS"]),
    )


def track_response(result: TrackResult, batch: ParsedBatch) -> tuple[dict, int]:
    """202 with counts; 422 (413 if oversize) when nothing in the request was valid."""
    body: dict[str, Any] = {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "rejected": len(result.errors),
        "errors": index_errors(result.errors),
    }
    if not batch.good:
        first = min(result.errors)
        if refused_for_identity(result.errors):
            raise IdentityRequired(
                "A valid userHash (hex HMAC-SHA256 of userId with the project's identity secret) "
                "is required for events naming a userId",
                body["errors"],
            )
        if batch.oversize == set(result.errors):
            raise TooLarge("Event over the size limit", body["errors"])
        raise InvalidInput(
            f"Invalid event at index {first}: " + ", ".join(sorted(result.errors[first])),
            body["errors"],
        )
    return body, 202


def _refuse_unverified(batch: ParsedBatch, items: list[Any], verification: Verification) -> None:
    """Where the project requires it, move events naming an unproven userId to the errors."""
    if not verification.required:
        return
    kept = []
    for index, event in batch.good:
        try:
            item = items[index]
            verification.check(event.user_id, item.get("userHash"))
        except IdentityRequired as err:
            batch.errors[index] = err.errors
            continue
        kept.append((index, event))
    batch.good = kept


@blp.route("/events")
class Events(MethodView):
    """Track events."""

    @require_key(SECRET, PUBLISHABLE)
    @blp.doc(requestBody=EVENTS_BODY)
    @blp.response(202, TrackResponseSchema)
    def post(self):
        """Store one event or a batch (≤1000); a known messageId counts as a duplicate."""
        items, _ = as_batch(read_json_body(), limit=current_app.config["MAX_BATCH"])
        lim = limits()
        # A body smaller than the per-event limit cannot hold an oversize event.
        check_size = (request.content_length or 0) > lim.max_event_bytes or bool(
            request.headers.get("Content-Encoding")
        )
        batch = parse_events(items, limits=lim, check_size=check_size)
        batch.errors.update(rejected_items())  # items set aside while parsing the body
        _refuse_unverified(batch, items, verification())
        events = batch.events
        if len(events) <= GROUPED_MAX_EVENTS:
            # Small requests share a commit with others (group commit, see ingest_writer).
            result = writer_for(current_app).track(project_id=current_project_id(), events=events)
        else:
            # A big batch already amortises its commit: grouping would only queue it.
            result = track_events(db.session, project_id=current_project_id(), events=events)
        result.errors = batch.errors
        return track_response(result, batch)
