"""GET /sdk/cairn.js and /sdk/sw.js: the site snippet and its service worker, as static files.

No key: a site includes them as it includes any script. The service worker cannot be served
to a site from Cairn's origin (a worker must come from the page's own origin), so a site puts
one line in its own `/sw.js`: `importScripts("https://<cairn>/sdk/sw.js")`, and cairn.js
registers that file with the key and API origin in its query string, where the worker reads
them (API.md, "Devices and end users"). `POST /sdk/events` takes the worker's `delivered`
reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Response, send_file
from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import credential_from_request, resolve_principal
from app.api.segment_sdk import publishable_principal
from app.db import db
from app.models.base import utcnow
from app.schemas.sdk import SdkEventResultSchema, SdkEventSchema
from app.services.push_receipts import record_delivered

blp = Blueprint("sdk", __name__, url_prefix="/sdk", description="Site SDK and service worker")

FILES = Path(__file__).resolve().parent.parent / "sdk"
JAVASCRIPT = "application/javascript"
# The snippet may sit in a browser's cache a while; a site pins a version by its own URL
# (`?v=`) if it needs one. Revalidation is cheap (ETag / 304).
SCRIPT_MAX_AGE = 3600


def _script(name: str, *, max_age: int) -> Response:
    response = send_file(
        FILES / name, mimetype=JAVASCRIPT, conditional=True, etag=True, max_age=max_age
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Readable cross-origin, so a site may load it with `crossorigin` and subresource integrity.
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _doc(about: str, headers: dict[str, str]) -> dict:
    return {
        "security": [{}],
        "responses": {
            "200": {
                "description": about,
                "headers": {
                    name: {"description": text, "schema": {"type": "string"}}
                    for name, text in headers.items()
                },
                "content": {JAVASCRIPT: {"schema": {"type": "string"}}},
            }
        },
    }


@blp.route("/cairn.js")
class CairnScript(MethodView):
    """The site snippet: `cairn.init`, `identify`, `track`, `subscribe`, `showPrompt`."""

    @blp.doc(
        **_doc(
            "The SDK (plain ES2017, no build step)",
            {"Cache-Control": f"public, max-age={SCRIPT_MAX_AGE}", "ETag": "of this version"},
        )
    )
    def get(self):
        """The site snippet: push subscription, the topics prompt, identify and track."""
        return _script("cairn.js", max_age=SCRIPT_MAX_AGE)


@blp.route("/sw.js")
class ServiceWorker(MethodView):
    """The service worker: shows pushes, opens their tracked links, follows key changes."""

    @blp.doc(
        **_doc(
            "The service worker; a site's own `/sw.js` imports it with `importScripts`",
            {
                "Cache-Control": "no-cache: a worker update reaches browsers at once",
                "Service-Worker-Allowed": "/ (when registered from Cairn's own origin)",
                "ETag": "of this version",
            },
        )
    )
    def get(self):
        """The service worker script."""
        response = _script("sw.js", max_age=0)
        response.headers["Cache-Control"] = "no-cache"
        # Registered straight from /sdk/sw.js (a page on Cairn's own origin), it may still
        # control the whole origin.
        response.headers["Service-Worker-Allowed"] = "/"
        return response


@blp.route("/events")
class Events(MethodView):
    """Reports from the service worker: `delivered` once a push is shown.

    The worker posts them as `text/plain` JSON with the key in the body: a request without a
    preflight, which it sends in `no-cors` mode, so no CORS setup is needed on this path.
    Clicks need no report: the notification's url is the signed click-tracking link.
    """

    @blp.doc(security=[{}, {"bearer": []}])
    @blp.arguments(SdkEventSchema)
    @blp.response(200, SdkEventResultSchema)
    def post(self, body: dict[str, Any]):
        """Record the report once per message; a message of another project is ignored."""
        # A key in a body is public (it sits in a page): only a publishable one is taken.
        if body.get("key"):
            principal = publishable_principal(body["key"], "key")
        else:
            principal = resolve_principal(credential_from_request())
        recorded = record_delivered(
            db.session, project_id=principal.project_id, message_id=body["messageId"], now=utcnow()
        )
        return {"recorded": recorded}
