"""SMS: the profile's E.164 number; direct content becomes one body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from workers.channels.base import ColumnChannel, ContentSpec

# The common carrier maximum for a concatenated SMS.
MAX_BODY = 1600


class Sms(ColumnChannel):
    """Reaches a profile with a phone number."""

    name = "sms"
    column = "phone"
    content: ClassVar[ContentSpec] = ContentSpec(
        fields=("body",), required=(("body",),), max_chars={"body": MAX_BODY}
    )
    default_provider = "sandbox"
    unreachable_reason = "no phone number on the profile"

    def normalize_address(self, raw: str, region: str | None) -> str:
        """E.164, with the project's default region for numbers without a country code."""
        from app.services.profiles import normalize_phone

        return normalize_phone(raw, region)

    def direct_fields(self, content: Mapping[str, Any]) -> dict[str, Any]:
        """Title, body and url on their own lines."""
        parts = [p for p in (content.get("title"), content.get("body"), content.get("url")) if p]
        return {"body": "\n".join(parts)}


CHANNEL = Sms()
