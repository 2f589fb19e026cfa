"""HTTP API: flask-smorest blueprints, registered on the app here."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

api = Api()


def register_api(app: Flask) -> None:
    """Attach the OpenAPI machinery and every blueprint."""
    from app.api import auth, events, health, pixel, tracking, users

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
    for module in (health, auth, users, events, pixel, tracking):
        api.register_blueprint(module.blp)
    events.register_cors(app)
