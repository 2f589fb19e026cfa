"""The Segment tracking spec endpoints, so Segment and RudderStack SDKs work unmodified."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from app.api.bodies import index_errors, read_json_body
from app.api.events import limits
from app.api.guard import PUBLISHABLE, SECRET, current_project, current_project_id, require_key
from app.db import db
from app.errors import BadRequest, InvalidInput, TooLarge
from app.services.events import TrackResult
from app.services.ingest_writer import writer_for
from app.services.tracking import _event_from_call as event_from_call
from app.services.tracking import apply_calls

blp = Blueprint("tracking", __name__, url_prefix="/v1", description="Segment tracking spec")

EVENT_CALLS = ("track", "page", "screen")


def _apply(calls: list) -> tuple[dict, int]:
    project = current_project()
    result = apply_calls(db.session, project=project, calls=calls, limits=limits())
    db.session.commit()
    return _answer(result, len(calls))


def _answer(result: TrackResult, calls: int) -> tuple[dict, int]:
    if result.errors and len(result.errors) == calls:
        first = min(result.errors)
        raise InvalidInput(
            f"Invalid call at index {first}: " + ", ".join(sorted(result.errors[first])),
            index_errors(result.errors),
        )
    return {
        "success": True,
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "rejected": len(result.errors),
        "errors": index_errors(result.errors),
    }, 200


def _single(kind: str):
    body = read_json_body()
    if not isinstance(body, dict):
        raise BadRequest("Expected a JSON object", {"body": ["wrong type"]})
    call = dict(body)
    call.setdefault("type", kind)
    if call["type"] != kind:
        raise InvalidInput(f"type must be {kind!r} on /v1/{kind}", {"type": [f"must be {kind}"]})
    if kind in EVENT_CALLS:
        return _single_event(call, kind)
    return _apply([call])


def _single_event(call: dict, kind: str) -> tuple[dict, int]:
    """A track/page/screen call: validated here, stored by the group-commit writer."""
    try:
        event = event_from_call(call, kind, limits())
    except (InvalidInput, TooLarge) as err:
        return _answer(TrackResult(errors={0: err.errors}), 1)
    result = writer_for(current_app).track(project_id=current_project_id(), events=[event])
    return _answer(result, 1)


def _make_view(kind: str) -> type[MethodView]:
    class SingleCall(MethodView):
        @require_key(SECRET, PUBLISHABLE)
        def post(self):
            return _single(kind)

    SingleCall.post.__doc__ = f"Segment-spec `{kind}` call."
    SingleCall.__name__ = f"Segment{kind.title()}"
    SingleCall.__doc__ = f"Segment-spec {kind}."
    return SingleCall


for _kind in ("identify", "track", "page", "screen", "alias", "group"):
    blp.route(f"/{_kind}", endpoint=f"segment_{_kind}")(_make_view(_kind))


@blp.route("/batch")
class Batch(MethodView):
    """Segment-spec batch of calls."""

    @require_key(SECRET, PUBLISHABLE)
    def post(self):
        """`{batch: [calls]}` (≤1000 calls), applied in order."""
        body = read_json_body()
        calls = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(calls, list):
            raise BadRequest("Expected {batch: [...]}", {"batch": ["required, an array"]})
        limit = current_app.config["MAX_BATCH"]
        if len(calls) > limit:
            raise TooLarge(
                f"Batch of {len(calls)} calls is over {limit}",
                {"batch": [f"at most {limit} items"]},
            )
        context = body.get("context")
        if isinstance(context, dict):
            calls = [{"context": context, **c} if isinstance(c, dict) else c for c in calls]
        return _apply(calls)
