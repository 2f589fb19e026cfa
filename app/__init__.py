"""Cairn: campaign and journey automation. `create_app` is the application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from app.config import Settings


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app: settings from the environment, then `config` overrides."""
    settings = Settings.from_env(config)
    app = Flask(__name__, instance_path=settings.INSTANCE_DIR, instance_relative_config=False)
    app.config.update(settings.as_flask())
    app.config.update(
        API_TITLE="Cairn",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import workers.actors  # noqa: F401 - declares the actors that deferred jobs name
    from app import errors
    from app.api import register_api
    from app.db import db

    db.init_app(app)
    register_api(app)
    # After the API: flask-smorest registers its own HTTPException handler, ours must win.
    errors.init_app(app)
    return app
