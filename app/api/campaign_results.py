"""/v1/campaigns: (Campaign results) — being built; see workers/ and app/services for the pieces."""

from __future__ import annotations

from app.api.blueprint import Blueprint

blp = Blueprint(
    "campaign_results", __name__, url_prefix="/v1/campaigns", description="Campaign results"
)
