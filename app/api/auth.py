"""Token exchange: an access key + secret key for a one-hour bearer token."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields

from app.api.blueprint import Blueprint
from app.db import db
from app.services.projects import issue_token

blp = Blueprint("auth", __name__, url_prefix="/v1/auth", description="Token exchange")


class TokenRequestSchema(Schema):
    """Credentials printed by `cairn project create`."""

    accessKey = fields.Str(required=True)
    secretKey = fields.Str(required=True)


class TokenSchema(Schema):
    """A bearer token and its lifetime in seconds."""

    data = fields.Str()
    expiresIn = fields.Int()


@blp.route("/token")
class Token(MethodView):
    """Exchange keys for a bearer token."""

    @blp.arguments(TokenRequestSchema)
    @blp.response(200, TokenSchema)
    def post(self, body):
        """A token that works as `Authorization: Bearer` for one hour."""
        token = issue_token(
            db.session,
            access_key=body["accessKey"],
            secret_key=body["secretKey"],
            secret=current_app.config["SECRET_KEY"],
        )
        return {"data": token, "expiresIn": current_app.config["TOKEN_TTL_SECONDS"]}
