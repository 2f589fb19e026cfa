"""GET/PATCH /v1/project: the calling project's name, phone region and delivery settings."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.guard import SECRET, current_project, require_key
from app.models import Project
from app.schemas.project import ProjectPatchSchema, ProjectSchema
from app.services.identity import SETTING as IDENTITY_SETTING

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
        project = current_project()
        if "name" in body:
            project.name = body["name"].strip()
        if "defaultRegion" in body:
            region = body["defaultRegion"]
            project.default_region = region.upper() if region else None
        if "settings" in body:
            merged = dict(project.settings or {})
            for key, value in body["settings"].items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            project.settings = merged
        return project_view(project)
