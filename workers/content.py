"""What a message says on its channel: direct content mapped per channel, or a rendered template."""

from __future__ import annotations

import html
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Template, User
from app.models.message import Message, Send
from app.rendering import RenderError, build_context, render
from app.services.templates import user_context


class ContentError(Exception):
    """The content cannot be produced (render error, missing channel in the template)."""


def direct_fields(channel: str, content: dict[str, Any]) -> dict[str, Any]:
    """Map `{title, body, url, data}` of a direct send onto a channel's fields."""
    title = content.get("title") or ""
    body = content.get("body") or ""
    url = content.get("url")
    if channel == "email":
        paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in body.split("\n\n") if p)
        link = f'<p><a href="{html.escape(url)}">{html.escape(url)}</a></p>' if url else ""
        text = body + (f"\n\n{url}" if url else "")
        return {"subject": title or body[:78], "html": paragraphs + link, "text": text}
    if channel == "sms":
        parts = [p for p in (title, body, url) if p]
        return {"body": "\n".join(parts)}
    out: dict[str, Any] = {"title": title, "body": body}
    if url:
        out["url"] = url
    if content.get("data"):
        out["data"] = content["data"]
    return out


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

    def build(self, message: Message, send: Send | None, user: User | None) -> dict[str, Any]:
        """The fields to send for this message; raises ContentError."""
        params = message.content if message.content is not None else (send.content if send else {})
        params = params or {}
        overrides = (message.overrides or {}).get(message.channel) or {}
        if send is None or send.template_id is None:
            return {**direct_fields(message.channel, params), **overrides}
        template = self.templates.get(send.template_id)
        if template is None:
            raise ContentError("the template was deleted")
        context = build_context(
            user=user_context(user) if user is not None else None, params=params
        )
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
        return {**rendered.fields, **overrides, "language": rendered.language_used}
