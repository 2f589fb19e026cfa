"""/v1/campaigns: campaigns (CRUD), their states (activate, pause, archive) and API sends.

The rules for editing a campaign in each state are in `app.services.campaigns`. The
`/simulate` and `/stats` routes of the same prefix are in `app.api.campaign_results`.
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from marshmallow import ValidationError

from app.api.blueprint import Blueprint
from app.api.guard import SECRET, current_project, current_project_id, require_key
from app.api.pagination import BAD_QUERY, page_of, paginate
from app.db import db
from app.errors import TooLarge, flatten_errors
from app.schemas.campaigns import (
    CampaignInputSchema,
    CampaignListArgsSchema,
    CampaignListSchema,
    CampaignPatchSchema,
    CampaignSchema,
    CampaignSendResultSchema,
    CampaignSendSchema,
    RecipientSchema,
)
from app.services import campaigns as campaigns_service
from app.services.campaigns import MAX_RECIPIENTS, InvalidRecipient, Recipient
from app.services.idempotency import HEADER, idempotent, parse_key

blp = Blueprint("campaigns", __name__, url_prefix="/v1/campaigns", description="Campaigns")

EDIT_RULES = (
    "Editable any time until it ends: name, window, ttlSeconds, urgency, rateLimit, goal. "
    "Only in draft or paused: channels, target, trigger, schedule, category, topic, "
    "holdoutPercent (409 otherwise). kind never changes. A completed campaign takes only a "
    "new name; an archived one is read-only. Fields whose value does not change are ignored; "
    "every accepted edit bumps `version`."
)


@blp.route("")
class Campaigns(MethodView):
    """The project's campaigns."""

    @require_key(SECRET)
    @blp.arguments(CampaignInputSchema)
    @blp.response(201, CampaignSchema)
    def post(self, body: dict[str, Any]):
        """Create a campaign in `draft`; templates and audiences by id or name.

        Every error names its field (`channels.email`, `target.include[1].audience`,
        `trigger.where.plan`); a taken name is a 409.
        """
        return campaigns_service.create_campaign(db.session, project=current_project(), body=body)

    @require_key(SECRET)
    @blp.arguments(CampaignListArgsSchema, **BAD_QUERY)
    @blp.response(200, CampaignListSchema)
    def get(self, args: dict[str, Any]):
        """Campaigns in creation order, optionally by `status` and `kind`, cursor-paginated."""
        limit, after = page_of(args)
        stmt = campaigns_service.list_campaigns_query(
            current_project_id(), after_id=after, status=args.get("status"), kind=args.get("kind")
        )
        rows, cursor = paginate(db.session, stmt, limit)
        return {"data": rows, "next_cursor": cursor}


@blp.route("/<ref>")
class CampaignItem(MethodView):
    """One campaign, by numeric id or by name."""

    @require_key(SECRET)
    @blp.response(200, CampaignSchema)
    def get(self, ref: str):
        """The campaign and its state."""
        return campaigns_service.get_campaign(db.session, project_id=current_project_id(), ref=ref)

    @require_key(SECRET)
    @blp.arguments(CampaignPatchSchema)
    @blp.response(200, CampaignSchema)
    @blp.doc(description=EDIT_RULES)
    def patch(self, body: dict[str, Any], ref: str):
        """Change the given fields (a nested object is replaced whole; null clears it)."""
        return campaigns_service.update_campaign(
            db.session, project=current_project(), ref=ref, changes=body
        )

    @require_key(SECRET)
    @blp.response(204)
    def delete(self, ref: str):
        """Delete a draft, completed or archived campaign (active or paused: 409)."""
        campaigns_service.delete_campaign(db.session, project_id=current_project_id(), ref=ref)


@blp.route("/<ref>/activate")
class CampaignActivate(MethodView):
    """Start or resume."""

    @require_key(SECRET)
    @blp.response(200, CampaignSchema)
    def post(self, ref: str):
        """draft → active (the kind starts it) or paused → active (resume); else 409.

        The answer carries the kind's `warnings` (a rate too slow for the TTL...).
        """
        campaign, warnings = campaigns_service.activate_campaign(
            db.session, project_id=current_project_id(), ref=ref
        )
        campaign.warnings = warnings  # type: ignore[attr-defined]
        return campaign


@blp.route("/<ref>/pause")
class CampaignPause(MethodView):
    """Stop sending."""

    @require_key(SECRET)
    @blp.response(200, CampaignSchema)
    def post(self, ref: str):
        """active → paused: nothing more is sent until it is activated again; else 409."""
        return campaigns_service.pause_campaign(
            db.session, project_id=current_project_id(), ref=ref
        )


@blp.route("/<ref>/archive")
class CampaignArchive(MethodView):
    """End for good."""

    @require_key(SECRET)
    @blp.response(200, CampaignSchema)
    def post(self, ref: str):
        """Any state but archived → archived (read-only from then on); else 409."""
        return campaigns_service.archive_campaign(
            db.session, project_id=current_project_id(), ref=ref
        )


def _recipients(raw: list[Any]) -> list[Recipient | InvalidRecipient]:
    schema = RecipientSchema()
    out: list[Recipient | InvalidRecipient] = []
    for item in raw:
        try:
            loaded = schema.load(item if isinstance(item, dict) else {"_": item})
        except ValidationError as err:
            out.append(InvalidRecipient(flatten_errors(err.messages)))
            continue
        given = [k for k in ("userId", "email", "phone") if loaded.get(k) is not None]
        if len(given) != 1:
            out.append(InvalidRecipient({"_schema": ["give exactly one of userId, email, phone"]}))
            continue
        out.append(
            Recipient(
                user_id=loaded.get("userId"),
                email=loaded.get("email"),
                phone=loaded.get("phone"),
                params=loaded.get("params"),
            )
        )
    return out


@blp.route("/<ref>/send")
class CampaignSend(MethodView):
    """Send an `api` campaign to the given recipients now."""

    @require_key(SECRET)
    @idempotent
    @blp.arguments(CampaignSendSchema)
    @blp.response(200, CampaignSendResultSchema)
    def post(self, body: dict[str, Any], ref: str):
        """`{recipients: [{userId | email | phone, params?}]}`, at most 1000 (more: 413).

        A campaign that is not `api` is a 400, one not active (or outside its window) a
        409. userId recipients get their profile in the template (`{{ user.x }}`) and are
        created on first sight;
        email / phone recipients are addressed directly, with no profile. `params` reach the
        template as `{{ params.x }}`. An address is reached once per request: duplicates
        collapse (`collapsed`). Results come back per recipient in request order. With an
        `Idempotency-Key`, a retry with the same body replays the first answer.
        """
        if len(body["recipients"]) > MAX_RECIPIENTS:
            raise TooLarge(
                f"at most {MAX_RECIPIENTS} recipients per request",
                {"recipients": [f"at most {MAX_RECIPIENTS}"]},
            )
        return campaigns_service.send_api_campaign(
            db.session,
            project=current_project(),
            ref=ref,
            recipients=_recipients(body["recipients"]),
            # Given explicitly: create_campaign_sends sets the column itself.
            idempotency_key=parse_key(request.headers.get(HEADER)),
        )
