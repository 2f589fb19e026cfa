"""GET/PATCH /v1/project: the calling project's name, phone region and delivery settings."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import SECRET, current_project, require_key
from app.models import Project
from app.schemas.project import ProjectPatchSchema, ProjectSchema
from app.services.identity import SETTING as IDENTITY_SETTING
from app.services.projects import update_project

blp = Blueprint("project", __name__, url_prefix="/v1/project", description="Project settings")

DEFAULT_STACK_WINDOW = 600


def project_view(project: Project) -> dict[str, Any]:
    """The project as the API shows it (secrets excluded)."""
    settings = dict(project.settings or {})
    settings.setdefault("stackWindowSeconds", DEFAULT_STACK_WINDOW)
    settings.setdefault(IDENTITY_SETTING, "optional")
    return {
        "id": project.id,
        "name": project.name,
        "defaultRegion": project.default_region,
        "settings": settings,
    }


@blp.route("")
class ProjectSettings(MethodView):
    """The project of the key in use."""

    @require_key(SECRET)
    @blp.response(200, ProjectSchema)
    def get(self):
        """Name, default phone region and delivery settings."""
        return project_view(current_project())

    @require_key(SECRET)
    @blp.arguments(ProjectPatchSchema)
    @blp.response(200, ProjectSchema)
    def patch(self, body: dict[str, Any]):
        """Change `name`, `defaultRegion` or merge `settings` (null removes one)."""
        project = update_project(current_project(), body)
        return project_view(project)
