"""/v1/rules: (Rules) — being built; see workers/ and app/services for the pieces."""

from __future__ import annotations

from app.api.blueprint import Blueprint

blp = Blueprint("rules", __name__, url_prefix="/v1/rules", description="Rules")
