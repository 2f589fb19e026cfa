"""Liveness and readiness probes."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import text

from app.db import db
from app.errors import error_body

blp = Blueprint("health", __name__, description="Operations probes")


@blp.route("/healthz")
class Health(MethodView):
    """The process is up."""

    def get(self):
        """Always 200 while the process serves requests."""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    """Dependencies are reachable."""

    def get(self):
        """200 when the database answers, 503 otherwise."""
        try:
            db.session.execute(text("SELECT 1"))
        except Exception as err:  # any driver error means not ready
            return error_body(503, f"database unreachable: {type(err).__name__}"), 503
        return {"status": "ok", "database": "ok"}
