"""Cairn: campaign and journey automation. `create_app` is the application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, send_from_directory

from app.config import Settings
from app.jsontext import CairnJSONProvider


class CairnFlask(Flask):
    """Flask with one commit per request, made inside dispatch so its errors are handled."""

    json_provider_class = CairnJSONProvider

    def dispatch_request(self) -> Any:
        """Run the view, then commit the request session (a raised error rolls it back)."""
        from app.db import db

        rv = super().dispatch_request()
        db.commit_request()
        return rv

    def make_default_options_response(self) -> Any:
        """`Allow` names the methods of the route the URL resolves to, not of every route
        it could also match (`/v1/segments/preview` is not `/v1/segments/{ref}`)."""
        from flask import request

        response = super().make_default_options_response()
        rule = request.url_rule
        if rule is not None and rule.methods:
            response.allow.clear()
            response.allow.update(sorted(rule.methods))
        return response


# /docs loads Swagger UI from here, not from a CDN: self-hosted machines may have no internet.
SWAGGER_UI_ASSETS = "/docs/assets/"


def _serve_swagger_ui(app: Flask) -> None:
    """Serve the Swagger UI files that the flask-swagger-ui package ships (swagger-ui-dist)."""
    from importlib.resources import files

    dist = str(files("flask_swagger_ui") / "dist")

    def swagger_ui_asset(filename: str) -> Any:
        return send_from_directory(dist, filename)

    app.add_url_rule(f"{SWAGGER_UI_ASSETS}<path:filename>", view_func=swagger_ui_asset)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app: settings from the environment, then `config` overrides."""
    settings = Settings.from_env(config)
    app = CairnFlask(__name__, instance_path=settings.INSTANCE_DIR, instance_relative_config=False)
    app.config.update(settings.as_flask())
    app.config.update(
        API_TITLE="Cairn",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL=SWAGGER_UI_ASSETS,
        # No validator badge: it would send the document's URL to an outside service.
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},
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
    from app.api import bodies, register_api
    from app.db import db

    db.init_app(app)
    bodies.init_app(app)  # before the blueprints: its checks run ahead of theirs
    register_api(app)
    _serve_swagger_ui(app)
    from app import ui

    ui.init_app(app)
    # After the API: flask-smorest registers its own HTTPException handler, ours must win.
    errors.init_app(app)
    return app
