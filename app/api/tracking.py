"""The Segment tracking spec endpoints, so Segment and RudderStack SDKs work unmodified."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.bodies import index_errors, read_json_body, rejected_items
from app.api.events import limits
from app.api.guard import (
    PUBLISHABLE,
    SECRET,
    current_project,
    current_project_id,
    require_key,
    verification,
)
from app.db import db
from app.errors import BadRequest, InvalidInput, TooLarge
from app.schemas.segment_sdk import SdkCallResultSchema
from app.schemas.tracking import call_body
from app.services.events import TrackResult
from app.services.identity import IdentityRequired, refused_for_identity
from app.services.ingest_writer import writer_for
from app.services.tracking import CALL_ERRORS, EVENT_CALLS, apply_calls, verify_call
from app.services.tracking import _event_from_call as event_from_call

blp = Blueprint("tracking", __name__, url_prefix="/v1", description="Segment tracking spec")


def _apply(calls: list) -> tuple[dict, int]:
    project = current_project()
    result = apply_calls(
        db.session, project=project, calls=calls, limits=limits(), verification=verification()
    )
    result.errors.update(rejected_items())  # calls set aside while parsing the body
    return _answer(result, len(calls))


def _answer(result: TrackResult, calls: int) -> tuple[dict, int]:
    if result.errors and len(result.errors) == calls:
        first = min(result.errors)
        if refused_for_identity(result.errors):
            raise IdentityRequired(
                ("This call needs" if calls == 1 else "Every call of this batch needs")
                + " a valid userHash (hex HMAC-SHA256 of userId with the project's identity"
                " secret) or the secret key",
                index_errors(result.errors),
            )
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
        verify_call(call, verification())
        event = event_from_call(call, kind, limits())
    except CALL_ERRORS as err:
        return _answer(TrackResult(errors={0: err.errors}), 1)
    result = writer_for(current_app).track(project_id=current_project_id(), events=[event])
    return _answer(result, 1)


def _make_view(kind: str) -> type[MethodView]:
    class SingleCall(MethodView):
        @require_key(SECRET, PUBLISHABLE)
        @blp.doc(requestBody=call_body(kind))
        @blp.response(200, SdkCallResultSchema)
        def post(self):
            return _single(kind)

    SingleCall.post.__doc__ = f"Segment-spec `{kind}` call."
    SingleCall.__name__ = f"Segment{kind.title()}"
    SingleCall.__doc__ = f"Segment-spec {kind}."
    return SingleCall


for _kind in ("identify", "track", "page", "screen", "alias", "group"):
    blp.route(f"/{_kind}", endpoint=f"segment_{_kind}")(_make_view(_kind))


def apply_batch() -> tuple[dict, int]:
    """Apply this request's `{batch: [calls], context?}`; also the SDKs' `/v1/b` (segment_sdk)."""
    body = read_json_body()
    calls = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(calls, list):
        raise BadRequest("Expected {batch: [...]}", {"batch": ["required, an array"]})
    if not calls:
        raise BadRequest("An empty batch", {"batch": ["must hold at least one call"]})
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


@blp.route("/batch")
class Batch(MethodView):
    """Segment-spec batch of calls."""

    @require_key(SECRET, PUBLISHABLE)
    @blp.doc(requestBody=call_body("batch"))
    @blp.response(200, SdkCallResultSchema)
    def post(self):
        """`{batch: [calls]}` (≤1000 calls), applied in order."""
        return apply_batch()
