"""/v1/users: (Timeline) — being built; see workers/ and app/services for the pieces."""

from __future__ import annotations

from app.api.blueprint import Blueprint

blp = Blueprint("timeline", __name__, url_prefix="/v1/users", description="Timeline")
