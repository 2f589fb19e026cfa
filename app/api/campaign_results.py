"""/v1/campaigns/{id}/simulate and /stats: the dry run before sending, the results after."""

from __future__ import annotations

from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import SECRET, current_project, require_key
from app.db import db
from app.models.base import utcnow
from app.schemas.campaign_results import CampaignStatsSchema, SimulationSchema
from app.services.campaign_stats import campaign_stats
from app.services.campaigns import get_campaign
from app.services.simulate import simulate

blp = Blueprint(
    "campaign_results", __name__, url_prefix="/v1/campaigns", description="Campaign results"
)


@blp.route("/<ref>/simulate")
class Simulate(MethodView):
    """The dry run."""

    @require_key(SECRET)
    @blp.response(200, SimulationSchema)
    def post(self, ref: str):
        """What activating the campaign now would do, without sending or writing anything.

        The campaign's target is evaluated now over the project's identified users (for
        triggered and API campaigns too: those who would match it now), and each message it
        would create is decided by the delivery's own policies (suppressions, opt-outs,
        topics, quiet hours, frequency cap, TTL), plus holdout, window and local-time rules.
        Broadcasts are simulated at `sendAt` (or now), recurring campaigns at their next cron
        tick, local-time broadcasts at each user's instant. At most 100,000 target users
        are evaluated (`truncated` says when there are more).
        """
        project = current_project()
        campaign = get_campaign(db.session, project_id=project.id, ref=ref)
        return simulate(db.session, project=project, campaign=campaign, now=utcnow())


@blp.route("/<ref>/stats")
class Stats(MethodView):
    """The results."""

    @require_key(SECRET)
    @blp.response(200, CampaignStatsSchema)
    def get(self, ref: str):
        """Messages by status and channel, conversions, revenue, holdout lift, skips."""
        project = current_project()
        campaign = get_campaign(db.session, project_id=project.id, ref=ref)
        return campaign_stats(db.session, campaign)
