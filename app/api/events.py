"""/v1/events: track one event or a batch of up to 1000."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, current_app, request
from flask.views import MethodView
from flask_cors import CORS
from flask_smorest import Blueprint

from app.api.bodies import as_batch, index_errors, read_json_body
from app.api.guard import PUBLISHABLE, SECRET, current_project_id, require_key
from app.db import db
from app.errors import InvalidInput, TooLarge
from app.schemas.events import EventSchema, TrackResponseSchema
from app.services.events import Limits, ParsedBatch, TrackResult, parse_events, track_events
from app.services.ingest_writer import writer_for

blp = Blueprint("events", __name__, url_prefix="/v1", description="Event ingestion")

# Endpoints a browser on another origin may call with a publishable key.
PUBLIC_PATHS = r"/v1/(events|pixel\.gif|identify|track|page|screen|alias|batch|push/.*)"
# Requests with at most this many events go through the per-process group-commit writer.
GROUPED_MAX_EVENTS = 100


def register_cors(app: Flask) -> None:
    """Allow cross-origin calls to the publishable-key endpoints only."""
    CORS(
        app,
        resources={PUBLIC_PATHS: {"origins": "*"}},
        allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
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
        if batch.oversize == set(result.errors):
            raise TooLarge("Event over the size limit", body["errors"])
        raise InvalidInput(
            f"Invalid event at index {first}: " + ", ".join(sorted(result.errors[first])),
            body["errors"],
        )
    return body, 202


@blp.route("/events")
class Events(MethodView):
    """Track events."""

    @require_key(SECRET, PUBLISHABLE)
    @blp.doc(requestBody={"content": {"application/json": {"schema": EventSchema}}})
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
        events = batch.events
        if len(events) <= GROUPED_MAX_EVENTS:
            # Small requests share a commit with others (group commit, see ingest_writer).
            result = writer_for(current_app).track(project_id=current_project_id(), events=events)
        else:
            # A big batch already amortises its commit: grouping would only queue it.
            result = track_events(db.session, project_id=current_project_id(), events=events)
            db.session.commit()
        result.errors = batch.errors
        return track_response(result, batch)
