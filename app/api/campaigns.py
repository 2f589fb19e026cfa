"""/v1/campaigns: (Campaigns) — being built; see workers/ and app/services for the pieces."""

from __future__ import annotations

from app.api.blueprint import Blueprint

blp = Blueprint("campaigns", __name__, url_prefix="/v1/campaigns", description="Campaigns")
