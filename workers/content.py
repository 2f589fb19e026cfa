"""What a message says on its channel: direct content mapped per channel, or a rendered template."""

from __future__ import annotations

import html
from typing import Any

from app.models import Project, User
from app.models.message import Message, Send


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


def build_content(message: Message, send: Send | None, user: User | None,
                  project: Project) -> dict[str, Any]:
    """The fields to send for this message."""
    content = message.content if message.content is not None else (send.content if send else {})
    return direct_fields(message.channel, content or {})
