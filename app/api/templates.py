"""/v1/templates: message templates, per channel and language, and their preview."""

from __future__ import annotations

from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import SECRET, current_project_id, require_key
from app.api.pagination import BAD_QUERY, PageArgsSchema, page_of, paginate
from app.db import db
from app.schemas.templates import (
    PreviewRequestSchema,
    PreviewSchema,
    TemplateInputSchema,
    TemplateListSchema,
    TemplatePatchSchema,
    TemplateSchema,
)
from app.services import templates as templates_service

blp = Blueprint("templates", __name__, url_prefix="/v1/templates", description="Message templates")


@blp.route("")
class Templates(MethodView):
    """The project's templates."""

    @require_key(SECRET)
    @blp.arguments(TemplateInputSchema)
    @blp.response(201, TemplateSchema)
    def post(self, body: dict):
        """Create a template; every field must compile, a taken name is a 409."""
        template = templates_service.create_template(
            db.session, project_id=current_project_id(), **body
        )
        return template

    @require_key(SECRET)
    @blp.arguments(PageArgsSchema, **BAD_QUERY)
    @blp.response(200, TemplateListSchema)
    def get(self, page: dict):
        """Templates in creation order, cursor-paginated."""
        limit, after = page_of(page)
        rows, cursor = paginate(
            db.session,
            templates_service.list_templates_query(current_project_id(), after_id=after),
            limit,
        )
        return {"data": rows, "next_cursor": cursor}


@blp.route("/<ref>")
class TemplateItem(MethodView):
    """One template, by numeric id or by name."""

    @require_key(SECRET)
    @blp.response(200, TemplateSchema)
    def get(self, ref: str):
        """The template."""
        return templates_service.get_template(db.session, project_id=current_project_id(), ref=ref)

    @require_key(SECRET)
    @blp.arguments(TemplateInputSchema)
    @blp.response(200, TemplateSchema)
    def put(self, body: dict, ref: str):
        """Replace the template: absent description and defaultLanguage reset."""
        return _update(ref, body, replace=True)

    @require_key(SECRET)
    @blp.arguments(TemplatePatchSchema)
    @blp.response(200, TemplateSchema)
    def patch(self, body: dict, ref: str):
        """Change the given fields; channels merge per channel and language."""
        return _update(ref, body, replace=False)

    @require_key(SECRET)
    @blp.response(204)
    def delete(self, ref: str):
        """Delete the template."""
        templates_service.delete_template(db.session, project_id=current_project_id(), ref=ref)


def _update(ref: str, body: dict, *, replace: bool):
    template = templates_service.update_template(
        db.session, project_id=current_project_id(), ref=ref, changes=body, replace=replace
    )
    return template


@blp.route("/<ref>/preview")
class TemplatePreview(MethodView):
    """Render a template without sending it."""

    @require_key(SECRET)
    @blp.arguments(PreviewRequestSchema)
    @blp.response(200, PreviewSchema)
    def post(self, body: dict, ref: str):
        """Render for a stored user and params; failures are listed per channel in `errors`."""
        return templates_service.preview_template(
            db.session, project_id=current_project_id(), ref=ref, **body
        )
