"""HTTP API: flask-smorest blueprints, registered on the app here."""

from __future__ import annotations

import importlib
from typing import Any

from flask import Flask
from flask_smorest import Api
from werkzeug.routing import IntegerConverter

from app.schemas.common import ErrorSchema
from app.services.named import MAX_ID


class CairnApi(Api):
    """flask-smorest's Api documenting Cairn's error shape (every field always present)."""

    ERROR_SCHEMA = ErrorSchema


api = CairnApi()

# One line per blueprint module under app/api (each exposes `blp`).
BLUEPRINTS = [
    "health",
    "auth",
    "users",
    "events",
    "pixel",
    "tracking",
    "segment_sdk",
    "templates",
    "segments",
    "audiences",
    "notify",
    "messages",
    "inbox",
    "project",
    "sdk",
    "links",
    "email_webhooks",
    "twilio_webhooks",
    "sms_webhooks",
    "preferences",
    "push",
    "rules",
    "campaigns",
    "campaign_results",
    "journeys",
    "timeline",
]


def _bigint_param(converter: IntegerConverter) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "maximum": MAX_ID}


def register_api(app: Flask) -> None:
    """Attach the OpenAPI machinery and every blueprint."""
    api.init_app(
        app,
        spec_kwargs={
            "components": {
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "basic": {"type": "http", "scheme": "basic"},
                }
            }
        },
    )
    # Ids in paths are BIGINTs: a larger number is a 400 naming it (app.api.bodies).
    api.register_converter(IntegerConverter, _bigint_param)
    from app.schemas.filters import filter_components
    from app.schemas.templates import DATA_VALUE, DATA_VALUE_SCHEMA
    from journeys.filters import CHANNELS

    # Recursive JSON Schemas that no marshmallow schema stands for.
    api.spec.components.schema(DATA_VALUE, DATA_VALUE_SCHEMA)
    for component, schema in filter_components(list(CHANNELS)).items():
        api.spec.components.schema(component, schema)
    from app.schemas.tracking import ingestion_components

    for component, schema in ingestion_components().items():
        api.spec.components.schema(component, schema)
    for name in BLUEPRINTS:
        api.register_blueprint(importlib.import_module(f"app.api.{name}").blp)
    from app.api.events import register_cors

    register_cors(app)
