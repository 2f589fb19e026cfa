"""Email: the profile's address; direct content becomes a subject, HTML and text."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from workers.channels.base import ColumnChannel, ContentSpec


class Email(ColumnChannel):
    """Reaches a profile with an email address."""

    name = "email"
    column = "email"
    content: ClassVar[ContentSpec] = ContentSpec(
        fields=("subject", "html", "text"),
        required=(("subject",), ("html", "text")),
        html_fields=frozenset({"html"}),
        max_chars={"html": 262_144},
        single_line=frozenset({"subject"}),
    )
    default_provider = "sandbox"
    credential_providers = (("SMTP_URL", "smtp"),)
    unreachable_reason = "no email address on the profile"

    def normalize_address(self, raw: str, region: str | None) -> str:
        """Lower-cased and validated (one recipient for `Ann@x.com` and `ann@x.com`)."""
        from app.services.profiles import normalize_email

        return normalize_email(raw)

    def direct_fields(self, content: Mapping[str, Any]) -> dict[str, Any]:
        """The title is the subject (else the body's start); paragraphs and the link in HTML."""
        title = content.get("title") or ""
        body = content.get("body") or ""
        url = content.get("url")
        paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in body.split("\n\n") if p)
        link = f'<p><a href="{html.escape(url)}">{html.escape(url)}</a></p>' if url else ""
        text = body + (f"\n\n{url}" if url else "")
        # A subject is one header line: a newline from the data must not start another.
        subject = re.sub(r"[\r\n]+", " ", title or body[:78]).strip()
        return {"subject": subject, "html": paragraphs + link, "text": text}


CHANNEL = Email()
