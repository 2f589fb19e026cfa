"""Liveness and readiness probes."""

from __future__ import annotations

from flask import jsonify
from flask.views import MethodView
from marshmallow import Schema, fields
from sqlalchemy import text

from app.api.blueprint import Blueprint
from app.db import db
from app.errors import error_body

blp = Blueprint("health", __name__, description="Operations probes")


class HealthSchema(Schema):
    """The process answers."""

    status = fields.Str(required=True, metadata={"enum": ["ok"]})


class ReadySchema(HealthSchema):
    """Each dependency's state."""

    database = fields.Str(required=True, metadata={"enum": ["ok"]})


@blp.route("/healthz")
class Health(MethodView):
    """The process is up."""

    @blp.response(200, HealthSchema)
    def get(self):
        """Always 200 while the process serves requests."""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    """Dependencies are reachable."""

    @blp.response(200, ReadySchema)
    @blp.alt_response(503, response="DEFAULT_ERROR", description="the database does not answer")
    def get(self):
        """200 when the database answers, 503 otherwise."""
        try:
            db.session.execute(text("SELECT 1"))
        except Exception as err:  # any driver error means not ready
            # A response object passes the 200 schema by untouched.
            response = jsonify(error_body(503, f"database unreachable: {type(err).__name__}"))
            response.status_code = 503
            return response
        return {"status": "ok", "database": "ok"}
