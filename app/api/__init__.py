"""HTTP API: flask-smorest blueprints, registered on the app here."""

from __future__ import annotations

import importlib

from flask import Flask
from flask_smorest import Api

api = Api()

# One line per blueprint module under app/api (each exposes `blp`).
BLUEPRINTS = [
    "health",
    "auth",
    "users",
    "events",
    "pixel",
    "tracking",
    "templates",
    "segments",
    "audiences",
    "notify",
    "messages",
    "inbox",
    "project",
]


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
    for name in BLUEPRINTS:
        api.register_blueprint(importlib.import_module(f"app.api.{name}").blp)
    from app.api.events import register_cors

    register_cors(app)
