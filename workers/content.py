"""What a message says on its channel: direct content mapped per channel, or a rendered template."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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
        # Whether a template mentions the signed links (signing them costs more than a push).
        self._uses_links: dict[int, bool] = {}

    def _needs_links(self, send: Send | None, direct: bool, sources: list[Any]) -> bool:
        if not direct and send is not None and send.template_id is not None:
            template_id = send.template_id
            if template_id not in self._uses_links:
                template = self.templates.get(template_id)
                channels = template.channels if template is not None else {}
                self._uses_links[template_id] = _mentions_links(channels)
            if self._uses_links[template_id]:
                return True
        return any(_mentions_links(source) for source in sources)

    def build(
        self,
        message: Message,
        send: Send | None,
        user: User | None,
        links: Callable[[], Mapping[str, str]] | None = None,
    ) -> dict[str, Any]:
        """The fields to send for this message; raises ContentError.

        Direct content (`title`, `body`, `url`) and `overrides` are templates like a stored
        template's fields: rendered in the sandbox with `user`, `data` (`params`) and the
        message's `links` (`{{ unsubscribe_url }}`, `{{ preferences_url }}`), made only when
        the content mentions one.
        """
        params = message.content if message.content is not None else (send.content if send else {})
        params = params or {}
        direct = send is None or send.template_id is None
        # A direct send keeps its overrides with its content (fan-out rows carry none).
        overrides = message.overrides or (params.get("overrides") if direct else None) or {}
        sources = [overrides] + (
            [params.get(k) for k in ("title", "body", "url")] if direct else []
        )
        context = build_context(
            user=user_context(user) if user is not None else None,
            params=(params.get("data") or {}) if direct else params,
            links=links()
            if links is not None and self._needs_links(send, direct, sources)
            else None,
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
LINK_NAMES = ("unsubscribe_url", "preferences_url")


def _mentions_links(value: Any) -> bool:
    if not value:
        return False
    text = value if isinstance(value, str) else json.dumps(value)
    return any(name in text for name in LINK_NAMES)


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
