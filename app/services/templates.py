"""Message templates: validation, create/read/update/delete, preview and the render context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.models import Template, User
from app.models.base import utcnow
from app.rendering import (
    CHANNELS,
    RenderedContent,
    RenderError,
    build_context,
    check_syntax,
    render,
)
from app.services.named import (
    ensure_name_free,
    flush_named,
    get_named,
    list_named_query,
    name_problem,
)
from app.services.profiles import FieldError, normalize_language
from app.services.users import get_user
from journeys.text import is_blank

MAX_DESCRIPTION_LENGTH = 10_000
# Per field source; rendering has its own caps (app.sandbox, and per field in app.rendering).
MAX_SOURCE_CHARS = 262_144
# Ids are BIGINT on PostgreSQL: a longer run of digits cannot be an id.
_DEFAULT_LANGUAGE = "en"


def _invalid(errors: dict[str, list[str]]) -> InvalidInput:
    shown = "; ".join(f"{path}: {why[0]}" for path, why in list(errors.items())[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return InvalidInput(f"Invalid template: {shown}{more}", errors)


def _clean_name(name: Any, errors: dict[str, list[str]]) -> str:
    clean, why = name_problem(name)
    if why:
        errors["name"] = [why]
    return clean


def _clean_description(description: Any, errors: dict[str, list[str]]) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str):
        errors["description"] = ["must be a string or null"]
    elif len(description) > MAX_DESCRIPTION_LENGTH:
        errors["description"] = [f"at most {MAX_DESCRIPTION_LENGTH} characters"]
    elif "\x00" in description:
        errors["description"] = ["contains NUL"]
    return str(description)


def _clean_language(value: Any, path: str, errors: dict[str, list[str]]) -> str | None:
    if not isinstance(value, str):
        errors[path] = ["must be a BCP 47 language tag"]
        return None
    try:
        return normalize_language(value)
    except FieldError as err:
        errors[path] = [str(err)]
        return None


def _check_source(source: Any, path: str, html: bool, errors: dict[str, list[str]]) -> None:
    if not isinstance(source, str):
        errors[path] = ["must be a string"]
    elif len(source) > MAX_SOURCE_CHARS:
        errors[path] = [f"at most {MAX_SOURCE_CHARS} characters"]
    elif "\x00" in source:
        errors[path] = ["contains NUL"]
    else:
        try:
            check_syntax(source, html=html)
        except RenderError as err:
            where = f"line {err.line}: " if err.line is not None else ""
            errors[path] = [f"{where}{err.reason}"]


def _check_object(value: Any, path: str, errors: dict[str, list[str]], depth: int = 0) -> None:
    if depth > 10:
        errors[path] = ["nested more than 10 levels"]
    elif isinstance(value, str):
        _check_source(value, path, False, errors)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if "\x00" in key:
                errors[f"{path}.{key}"] = ["contains NUL"]
                continue
            _check_object(item, f"{path}.{key}", errors, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_object(item, f"{path}[{index}]", errors, depth + 1)


def _clean_content(
    channel: str, content: Any, path: str, errors: dict[str, list[str]]
) -> dict[str, Any]:
    spec = CHANNELS[channel]
    if not isinstance(content, Mapping):
        errors[path] = ["must be an object of fields"]
        return {}
    for name, value in content.items():
        here = f"{path}.{name}"
        if name not in spec.fields:
            errors[here] = [f"unknown field; {channel} has {', '.join(spec.fields)}"]
        elif name in spec.object_fields:
            if not isinstance(value, Mapping):
                errors[here] = ["must be an object"]
            else:
                _check_object(value, here, errors)
        else:
            _check_source(value, here, name in spec.html_fields, errors)
    for group in spec.required:
        if not any(isinstance(content.get(f), str) and not is_blank(content[f]) for f in group):
            wanted = " or ".join(group)
            errors.setdefault(f"{path}.{group[0]}", []).append(f"required: {wanted}")
    return dict(content)


def validate_channels(channels: Any, *, default_language: str) -> dict[str, Any]:
    """Check `{channel: {language: {field: text}}}`; language keys come back normalized.

    Raises InvalidInput whose errors name each bad path (`channels.email.fr.html`).
    """
    errors: dict[str, list[str]] = {}
    clean = _clean_channels(channels, errors)
    if not errors and not any(default_language in langs for langs in clean.values()):
        errors["defaultLanguage"] = [
            f"no channel has content in {default_language!r}: add it or change defaultLanguage"
        ]
    if errors:
        raise _invalid(errors)
    return clean


def _clean_channels(channels: Any, errors: dict[str, list[str]]) -> dict[str, Any]:
    if not isinstance(channels, Mapping) or not channels:
        errors["channels"] = [f"an object with at least one of {', '.join(CHANNELS)}"]
        return {}
    clean: dict[str, Any] = {}
    for channel, by_language in channels.items():
        path = f"channels.{channel}"
        if channel not in CHANNELS:
            errors[path] = [f"unknown channel; known: {', '.join(CHANNELS)}"]
            continue
        if not isinstance(by_language, Mapping) or not by_language:
            errors[path] = ["an object of languages with at least one"]
            continue
        languages: dict[str, Any] = {}
        for raw_language, content in by_language.items():
            here = f"{path}.{raw_language}"
            language = _clean_language(raw_language, here, errors)
            if language is None:
                continue
            if language in languages:
                errors[here] = [f"the same language as {language!r}"]
                continue
            languages[language] = _clean_content(channel, content, here, errors)
        clean[channel] = languages
    return clean


def merge_channels(stored: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """PATCH semantics: each channel+language given replaces the stored one; null removes it."""
    merged = {channel: dict(langs) for channel, langs in stored.items()}
    for channel, by_language in patch.items():
        if by_language is None:
            merged.pop(channel, None)
            continue
        if not isinstance(by_language, Mapping):
            merged[channel] = by_language  # reported by validation
            continue
        target = merged.setdefault(channel, {})
        for raw_language, content in by_language.items():
            try:
                language = normalize_language(raw_language)
            except FieldError:
                language = raw_language  # reported by validation
            target.pop(language, None)
            if content is not None:
                target[raw_language] = content
        if not target:
            merged.pop(channel)
    return merged


def _default_language(value: Any) -> str:
    errors: dict[str, list[str]] = {}
    language = _clean_language(value, "defaultLanguage", errors)
    if language is None:
        raise _invalid(errors)
    return language


def create_template(
    session: Session,
    *,
    project_id: int,
    name: Any,
    channels: Any,
    description: Any = None,
    default_language: Any = _DEFAULT_LANGUAGE,
) -> Template:
    """Validate and add a template; InvalidInput names bad fields, Conflict a taken name."""
    errors: dict[str, list[str]] = {}
    clean_name = _clean_name(name, errors)
    clean_description = _clean_description(description, errors)
    if errors:
        raise _invalid(errors)
    language = _default_language(default_language)
    clean_channels = validate_channels(channels, default_language=language)
    ensure_name_free(session, Template, project_id=project_id, name=clean_name, kind="template")
    now = utcnow()
    template = Template(
        project_id=project_id,
        name=clean_name,
        description=clean_description,
        default_language=language,
        channels=clean_channels,
        created_at=now,
        updated_at=now,
    )
    session.add(template)
    flush_named(session, name=clean_name, kind="template")
    return template


def update_template(
    session: Session,
    *,
    project_id: int,
    ref: str | int,
    changes: Mapping[str, Any],
    replace: bool,
) -> Template:
    """PUT (`replace`: absent fields reset) or PATCH (channels merged per channel+language).

    `changes` keys: name, description, default_language, channels.
    """
    template = get_template(session, project_id=project_id, ref=ref)
    if replace:
        changes = {"description": None, "default_language": _DEFAULT_LANGUAGE, **changes}
        missing = {k: ["required"] for k in ("name", "channels") if k not in changes}
        if missing:
            raise _invalid(missing)
    errors: dict[str, list[str]] = {}
    name = _clean_name(changes["name"], errors) if "name" in changes else template.name
    description = (
        _clean_description(changes["description"], errors)
        if "description" in changes
        else template.description
    )
    if errors:
        raise _invalid(errors)
    language = (
        _default_language(changes["default_language"])
        if "default_language" in changes
        else template.default_language
    )
    channels: Any = template.channels
    if "channels" in changes:
        patch = changes["channels"]
        if not replace and isinstance(patch, Mapping):
            channels = merge_channels(template.channels, patch)
        else:
            channels = patch
    clean_channels = validate_channels(channels, default_language=language)
    if name != template.name:
        ensure_name_free(
            session,
            Template,
            project_id=project_id,
            name=name,
            kind="template",
            exclude_id=template.id,
        )
    template.name = name
    template.description = description
    template.default_language = language
    template.channels = clean_channels
    template.updated_at = utcnow()
    flush_named(session, name=name, kind="template")
    return template


def delete_template(session: Session, *, project_id: int, ref: str | int) -> None:
    """Remove a template; NotFound if the project has none by that id or name."""
    session.delete(get_template(session, project_id=project_id, ref=ref))
    session.flush()


def get_template(session: Session, *, project_id: int, ref: str | int) -> Template:
    """A template of the project by numeric id or by name, or NotFound."""
    template: Template = get_named(
        session, Template, project_id=project_id, ref=ref, kind="template"
    )
    return template


def list_templates_query(project_id: int, *, after_id: int | None = None) -> Select[Any]:
    """The project's templates in id order, after the cursor's id."""
    return list_named_query(Template, project_id, after_id=after_id)


def user_context(user: User) -> dict[str, Any]:
    """The `user` render variable: reserved fields, `attributes`, and the attributes on top.

    `user.plan` and `user.attributes.plan` both work; a reserved field wins over an attribute
    of the same name.
    """
    attributes = dict(user.attributes or {})
    return {
        **attributes,
        "userId": user.external_id,
        "email": user.email,
        "phone": user.phone,
        "language": user.language,
        "timezone": user.timezone,
        "attributes": attributes,
    }


def render_template(
    template: Template,
    channel: str,
    *,
    language: str | None,
    context: Mapping[str, Any],
) -> RenderedContent:
    """Render one channel of a stored template; raises RenderError only."""
    return render(template.channels, channel, language, template.default_language, context)


def preview_template(
    session: Session,
    *,
    project_id: int,
    ref: str | int,
    user_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    language: str | None = None,
    channels: Sequence[str] | None = None,
    event: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Render the template for a stored user (or nobody): `{data: {channel: ...}, errors}`.

    Render failures are reported per channel under `errors`, never raised.
    """
    template = get_template(session, project_id=project_id, ref=ref)
    errors: dict[str, list[str]] = {}
    if language is not None:
        language = _clean_language(language, "language", errors)
    for index, channel in enumerate(channels or ()):
        if channel not in CHANNELS:
            errors[f"channels[{index}]"] = [f"unknown channel; known: {', '.join(CHANNELS)}"]
    if errors:
        raise _invalid(errors)
    user = get_user(session, project_id=project_id, user_id=user_id) if user_id else None
    context = build_context(user=user_context(user) if user else None, params=params, event=event)
    wanted = language or (user.language if user else None)
    data: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for channel in channels or sorted(template.channels):
        try:
            rendered = render_template(template, channel, language=wanted, context=context)
        except RenderError as err:
            failures[channel] = str(err)
            continue
        data[channel] = {"language": rendered.language_used, **rendered.fields}
    return {"data": data, "errors": failures}
