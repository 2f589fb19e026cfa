"""What a message says on its channel: direct content mapped per channel, or a rendered template."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Template, User
from app.models.message import Message, Send
from app.rendering import RenderError, build_context, render
from app.services.templates import user_context
from workers.channels import CHANNELS


class ContentError(Exception):
    """The content cannot be produced (render error, missing channel in the template)."""


class ContentBuilder:
    """Builds content for a batch, loading each template once."""

    def __init__(self, session: Session, sends: dict[int, Send]) -> None:
        template_ids = {s.template_id for s in sends.values() if s.template_id is not None}
        self.templates: dict[int, Template] = (
            {
                t.id: t
                for t in session.scalars(select(Template).where(Template.id.in_(template_ids)))
            }
            if template_ids
            else {}
        )

    def build(
        self,
        message: Message,
        send: Send | None,
        user: User | None,
        links: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The fields to send for this message; raises ContentError.

        Direct content (`title`, `body`, `url`) and `overrides` are templates like a stored
        template's fields: rendered in the sandbox with `user`, `data` (`params`) and the
        message's `links` (`{{ unsubscribe_url }}`, `{{ preferences_url }}`).
        """
        params = message.content if message.content is not None else (send.content if send else {})
        params = params or {}
        direct = send is None or send.template_id is None
        # A direct send keeps its overrides with its content (fan-out rows carry none).
        overrides = message.overrides or (params.get("overrides") if direct else None) or {}
        context = build_context(
            user=user_context(user) if user is not None else None,
            params=(params.get("data") or {}) if direct else params,
            links=links,
        )
        extra = _render_fields(
            message.channel, overrides.get(message.channel) or {}, context, "overrides"
        )
        if direct:
            text = {k: params[k] for k in ("title", "body", "url") if params.get(k)}
            fields = CHANNELS[message.channel].direct_fields(
                {**params, **_render_fields(message.channel, text, context, "content")}
            )
            return {**fields, **extra}
        assert send is not None and send.template_id is not None
        template = self.templates.get(send.template_id)
        if template is None:
            raise ContentError("the template was deleted")
        try:
            rendered = render(
                template.channels,
                message.channel,
                user.language if user is not None else None,
                template.default_language,
                context,
            )
        except RenderError as err:
            raise ContentError(str(err)) from None
        return {**rendered.fields, **extra, "language": rendered.language_used}


_MARKERS = ("{{", "{%", "{#")


def _is_template(value: Any) -> bool:
    if isinstance(value, str):
        return any(m in value for m in _MARKERS)
    if isinstance(value, dict):
        return any(_is_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_is_template(v) for v in value)
    return False


def _render_fields(
    channel: str, fields: dict[str, Any], context: dict[str, Any], label: str
) -> dict[str, Any]:
    """Render loose fields (direct content, overrides) under the channel's caps and escaping;
    errors name `<channel>.<label>.<field>`."""
    templated = {k: v for k, v in fields.items() if _is_template(v)}
    if not templated:
        return dict(fields)  # plain text renders to itself: skip the sandbox
    try:
        rendered = render({channel: {label: templated}}, channel, label, label, context).fields
    except RenderError as err:
        raise ContentError(str(err)) from None
    return {**fields, **rendered}
