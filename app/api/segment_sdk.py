"""Segment's own SDKs, unmodified: analytics.js's short paths, the mobile `/v1/b`, the settings.

analytics.js (`@segment/analytics-next`) first loads `{cdnURL}/v1/projects/{writeKey}/settings`
and then posts each call as `Content-Type: text/plain` JSON to `{apiHost}/t`, `/i`, `/p`, `/a`,
`/g`, `/s` (or `/b` when batching) with the key in the body's `writeKey` (recent versions also
send it as the Basic-auth user name). The mobile SDKs post `/v1/b` and read the same settings.
The settings document points the SDK's `Segment.io` destination back at this Cairn
(`PUBLIC_URL`); the calls go through the same handlers as `/v1/track` and `/v1/batch`.

A key sent in a body or a query string sits in a web page or an app: only publishable keys are
taken there, and a secret key is refused with 401 rather than used.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlparse

from flask import current_app, g, request
from flask.views import MethodView

from app.api import tracking
from app.api.blueprint import Blueprint
from app.api.bodies import read_json_body
from app.api.guard import PUBLISHABLE, credential_from_request, resolve_principal
from app.errors import BadRequest, Unauthorized
from app.schemas.segment_sdk import SdkCallResultSchema, SdkSettingsSchema
from app.schemas.tracking import call_body
from app.services.projects import Principal

blp = Blueprint(
    "segment_sdk",
    __name__,
    url_prefix="/v1",
    description="Segment SDKs unmodified: analytics.js and mobile paths, SDK settings",
)

# analytics.js posts to `{apiHost}/{first letter of the call type}`.
SHORT_PATHS = {
    "t": "track",
    "i": "identify",
    "p": "page",
    "a": "alias",
    "g": "group",
    "s": "screen",
}
# Settings change only with PUBLIC_URL: let browsers and SDKs keep them a while.
SETTINGS_MAX_AGE = 300


def publishable_principal(raw: str, field: str) -> Principal:
    """Authenticate a key found in a body or URL: only a publishable key is accepted there."""
    principal = resolve_principal(raw)
    if principal.kind != PUBLISHABLE:
        # A secret key in a page is already public: refuse it rather than act with its power.
        raise Unauthorized(
            f"{field} must be a publishable key (pk_...): a key sent from a page or an app "
            "is public, so a secret key is never accepted there",
            {field: ["not a publishable key"]},
        )
    return principal


def body_write_key(body: Any) -> str | None:
    """The `writeKey` analytics.js puts in each body, or None when there is none."""
    if not isinstance(body, dict) or body.get("writeKey") in (None, ""):
        return None
    key = body["writeKey"]
    if not isinstance(key, str):
        raise BadRequest("writeKey must be a string", {"writeKey": ["must be a string"]})
    return key


def authenticate_sdk_call() -> None:
    """Body `writeKey` (publishable), else the Authorization header, else `?writeKey=` / `?key=`."""
    key = body_write_key(read_json_body())
    if key is not None:
        principal = publishable_principal(key, "writeKey")
    elif request.headers.get("Authorization"):
        # Server-side clients send the key as Basic auth, as on /v1/batch: any key kind.
        principal = resolve_principal(credential_from_request())
    else:
        name = "writeKey" if request.args.get("writeKey") else "key"
        raw = request.args.get(name)
        if not raw:
            raise Unauthorized(
                "Missing API key: send writeKey in the body or Authorization: Basic <key>:",
                {"writeKey": ["missing"]},
            )
        principal = publishable_principal(raw, name)
    g.principal = principal


def settings_document(write_key: str, public_url: str) -> dict[str, Any]:
    """The SDK settings of a key: only the Segment.io destination, sending to `public_url`/v1."""
    url = urlparse(public_url)
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{url.netloc}{url.path.rstrip('/')}/v1",
                "protocol": url.scheme,
                "addBundledMetadata": True,
                "unbundledIntegrations": [],
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        # The SDK's own telemetry would go to Segment: keep it off.
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
        "consentSettings": {"allCategories": [], "hasUnmappedDestinations": False},
    }


def _make_view(kind: str, path: str, handle: Callable[[], tuple[dict, int]]) -> type[MethodView]:
    class SdkCall(MethodView):
        # No key header needed (the body's writeKey will do); Basic or Bearer also work.
        @blp.doc(
            requestBody=call_body(kind, sdk=True), security=[{}, {"basic": []}, {"bearer": []}]
        )
        @blp.response(200, SdkCallResultSchema)
        def post(self):
            authenticate_sdk_call()
            return handle()

    twin = "/v1/batch" if kind == "batch" else f"/v1/{kind}"
    SdkCall.post.__doc__ = f"Segment SDK `{kind}` call at `{path}`, as on `{twin}`."
    SdkCall.__name__ = f"Sdk{kind.title()}"
    SdkCall.__doc__ = f"Segment SDK {kind} (analytics.js, mobile)."
    return SdkCall


for _path, _kind in SHORT_PATHS.items():
    blp.route(f"/{_path}", endpoint=f"sdk_{_kind}")(
        _make_view(_kind, f"/v1/{_path}", partial(tracking._single, _kind))
    )
blp.route("/b", endpoint="sdk_batch")(_make_view("batch", "/v1/b", tracking.apply_batch))


@blp.route("/projects/<write_key>/settings")
class SdkSettings(MethodView):
    """The settings document the SDKs load before sending anything."""

    @blp.doc(security=[{}])
    @blp.response(200, SdkSettingsSchema)
    def get(self, write_key: str):
        """Segment-style settings that send the SDK's events back to this Cairn."""
        publishable_principal(write_key, "writeKey")
        document = settings_document(write_key, current_app.config["PUBLIC_URL"])
        return document, 200, {"Cache-Control": f"public, max-age={SETTINGS_MAX_AGE}"}
