"""Schemas of the Segment tracking spec endpoints (/v1/identify... /v1/batch, and the SDKs'
short paths in app/api/segment_sdk.py).

Calls are parsed by hand (`app.services.tracking`); these JSON Schemas document exactly what
it reads. A call is an open object (Segment's SDKs send `context`, `integrations`, `sentAt`...
which Cairn ignores); the fields it reads are typed here. In a call `""` is the same as an
absent field.
"""

from typing import Any

from app.schemas.events import BATCH_LIMIT, NOT_BLANK, TIMESTAMP, USER_HASH, formatted, ref
from app.schemas.users import EMAIL, EMAIL_DOC, PHONE, PHONE_DOC
from app.services.events import MAX_ID, MAX_NAME, RESERVED_MESSAGE_ID_PATTERN
from app.services.tracking import CALL_TYPES, EVENT_CALLS

# A trait of another type is an attribute like any other.
NOT_STRING = ("number", "boolean", "array", "object", "null")
# "" or null: absent.
CALL_ID: dict[str, Any] = {
    "type": ["string", "integer", "null"],
    "maxLength": MAX_ID,
    "pattern": NOT_BLANK,
    "description": f"at most {MAX_ID} characters, not blank, or an integer (taken as its text)",
}
GIVEN_ID: dict[str, Any] = {**CALL_ID, "type": ["string", "integer"], "minLength": 1}
COMMON: dict[str, Any] = {
    "userId": CALL_ID,
    "anonymousId": CALL_ID,
    "messageId": {
        "type": ["string", "null"],
        "maxLength": MAX_ID,
        "pattern": RESERVED_MESSAGE_ID_PATTERN,
        "description": "idempotency key of track/page/screen calls, once per project",
    },
    "userHash": USER_HASH,
    "context": {
        "type": ["object", "null"],
        "properties": {"userHash": {**USER_HASH, "description": "as the call's userHash"}},
    },
}
TRAITS: dict[str, Any] = {
    "type": ["object", "null"],
    "propertyNames": {"minLength": 1, "maxLength": MAX_ID},
    "properties": {
        # A string email/phone trait is the profile's field; another value is an attribute.
        "email": formatted("email-address", EMAIL_DOC, others=NOT_STRING),
        "phone": formatted("phone-number", PHONE_DOC, others=NOT_STRING),
        "$email": EMAIL,
        "$phone_number": PHONE,
    },
    "description": "profile attributes (null removes one); string `email` and `phone` set "
    "the profile's fields, only with the secret key or a valid userHash (else ignored)",
}
PROPERTIES: dict[str, Any] = {"type": ["object", "null"]}


def _call(kind: str, *, in_batch: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "type": {"const": kind} if not in_batch else {"type": "string", "const": kind},
        **COMMON,
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if in_batch:
        schema["required"] = ["type"]
    if kind in EVENT_CALLS:
        properties["timestamp"] = TIMESTAMP
        properties["properties"] = PROPERTIES
    if kind == "track":
        properties["event"] = {"type": "string", "minLength": 1, "maxLength": MAX_NAME}
        schema["required"] = [*schema.get("required", []), "event"]
        schema["description"] = "an event named `event`"
    elif kind in ("page", "screen"):
        schema["description"] = (
            f"the event `${kind}`; `name` and `category` are added to its properties"
        )
    elif kind == "identify":
        properties["traits"] = TRAITS
        schema["description"] = "sets traits; names userId or anonymousId (or both: a merge)"
        schema["anyOf"] = [
            {"type": "object", "required": [name], "properties": {name: GIVEN_ID}}
            for name in ("userId", "anonymousId")
        ]
    elif kind == "alias":
        schema["description"] = "merges previousId into userId"
        schema["required"] = [*schema.get("required", []), "userId", "previousId"]
        properties["userId"] = GIVEN_ID
        properties["previousId"] = GIVEN_ID
    else:
        schema["description"] = "accepted and ignored (no accounts yet)"
    return schema


WRITE_KEY: dict[str, Any] = {
    "type": ["string", "null"],
    "description": "a publishable key (pk_...); a secret key here is a 401",
}
COMPONENTS: dict[str, dict[str, Any]] = {
    f"Segment{kind.title()}": _call(kind, in_batch=False) for kind in CALL_TYPES
}
COMPONENTS["SegmentCall"] = {
    "description": "a call of a batch: `type` says which",
    "anyOf": [{**_call(kind, in_batch=True), "title": f"batch {kind}"} for kind in CALL_TYPES],
}
COMPONENTS["SegmentBatch"] = {
    "type": "object",
    "required": ["batch"],
    "properties": {
        "batch": {
            "type": "array",
            "minItems": 1,
            "maxItems": BATCH_LIMIT,
            "contains": ref("SegmentCall"),
            "description": f"1-{BATCH_LIMIT} calls (more is a 413), applied in order; invalid "
            "calls are reported by index, but at least one must be valid (else 422)",
        },
        "context": {"description": "an object is the default `context` of every call"},
    },
}

# The SDKs' bodies (app/api/segment_sdk.py) also carry the key (no allOf: generators lose
# formats merging it).
COMPONENTS.update(
    {
        f"Sdk{name.removeprefix('Segment')}": {
            **schema,
            "properties": {**schema["properties"], "writeKey": WRITE_KEY},
        }
        for name, schema in list(COMPONENTS.items())
        if name != "SegmentCall"
    }
)


def call_body(kind: str, *, sdk: bool = False) -> dict[str, Any]:
    """The documented request body of a single call (`sdk`: analytics.js's, with writeKey)."""
    name = ("Sdk" if sdk else "Segment") + kind.title()
    schema = ref(name)
    body: dict[str, Any] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if sdk:
        body["description"] = (
            "analytics.js sends it as `text/plain`: any Content-Type is read as JSON. The key is "
            "the body's `writeKey` (publishable only), the Authorization header, or "
            "`?writeKey=` (publishable)."
        )
    return body


def ingestion_components() -> dict[str, dict[str, Any]]:
    """The hand-written JSON Schemas of the ingestion bodies, by component name."""
    from app.schemas import events, users

    return {**events.COMPONENTS, **users.COMPONENTS, **COMPONENTS}
