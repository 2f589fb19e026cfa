"""GET/PATCH /v1/project: the calling project's name, phone region and delivery settings."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from app.api.bodies import read_json_body
from app.api.guard import SECRET, current_project, require_key
from app.db import db
from app.errors import BadRequest, InvalidInput
from app.models import Project
from app.services.profiles import FieldError, normalize_timezone
from journeys.quiet_hours import parse_hhmm

blp = Blueprint("project", __name__, url_prefix="/v1/project", description="Project settings")

DEFAULT_STACK_WINDOW = 600


def project_view(project: Project) -> dict[str, Any]:
    """The project as the API shows it (secrets excluded)."""
    settings = dict(project.settings or {})
    settings.setdefault("stackWindowSeconds", DEFAULT_STACK_WINDOW)
    return {
        "id": project.id,
        "name": project.name,
        "defaultRegion": project.default_region,
        "settings": settings,
    }


def validate_settings(raw: Any) -> dict[str, Any]:
    """quietHours {start, end, mode, timezone?}, frequencyCap {count, windowSeconds},
    stackWindowSeconds; null removes a setting."""
    if not isinstance(raw, dict):
        raise InvalidInput("settings must be an object", {"settings": ["an object"]})
    errors: dict[str, list[str]] = {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"settings.{key}"
        if value is None:
            out[key] = None
        elif key == "quietHours":
            if not isinstance(value, dict):
                errors[where] = ["an object {start, end, mode}"]
                continue
            try:
                parse_hhmm(value.get("start", ""))
                parse_hhmm(value.get("end", ""))
            except (ValueError, TypeError):
                errors[where] = ["start and end as HH:MM"]
                continue
            if value.get("mode", "defer") not in ("defer", "drop"):
                errors[f"{where}.mode"] = ["defer or drop"]
                continue
            if value.get("timezone") is not None:
                try:
                    normalize_timezone(value["timezone"])
                except (FieldError, TypeError):
                    errors[f"{where}.timezone"] = ["an IANA time zone"]
                    continue
            out[key] = {
                "start": value["start"],
                "end": value["end"],
                "mode": value.get("mode", "defer"),
                **({"timezone": value["timezone"]} if value.get("timezone") else {}),
            }
        elif key == "frequencyCap":
            count, window = (
                (value.get("count"), value.get("windowSeconds"))
                if isinstance(value, dict)
                else (None, None)
            )
            if not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (count, window)
            ):
                errors[where] = ["{count, windowSeconds} as positive integers"]
                continue
            out[key] = {"count": count, "windowSeconds": window}
        elif key == "stackWindowSeconds":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 86400:
                errors[where] = ["1-86400"]
                continue
            out[key] = value
        else:
            errors[where] = ["unknown setting"]
    if errors:
        raise InvalidInput("Invalid settings: " + ", ".join(sorted(errors)), errors)
    return out


@blp.route("")
class ProjectSettings(MethodView):
    """The project of the key in use."""

    @require_key(SECRET)
    def get(self):
        """Name, default phone region and delivery settings."""
        return project_view(current_project())

    @require_key(SECRET)
    def patch(self):
        """Change `name`, `defaultRegion` or merge `settings` (null removes one)."""
        body = read_json_body()
        if not isinstance(body, dict):
            raise BadRequest("Expected a JSON object", {"body": ["wrong type"]})
        project = current_project()
        unknown = set(body) - {"name", "defaultRegion", "settings"}
        if unknown:
            raise InvalidInput("unknown fields", {k: ["unknown field"] for k in sorted(unknown)})
        if "name" in body:
            if not isinstance(body["name"], str) or not body["name"].strip():
                raise InvalidInput("name must be a non-empty string", {"name": ["non-empty"]})
            project.name = body["name"].strip()
        if "defaultRegion" in body:
            region = body["defaultRegion"]
            if region is not None and (
                not isinstance(region, str) or len(region) != 2 or not region.isalpha()
            ):
                raise InvalidInput("ISO 3166 alpha-2", {"defaultRegion": ["e.g. US or KR"]})
            project.default_region = region.upper() if region else None
        if "settings" in body:
            merged = dict(project.settings or {})
            for key, value in validate_settings(body["settings"]).items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            project.settings = merged
        db.session.commit()
        return project_view(project)
