"""SMS: the profile's E.164 number; direct content becomes one body; segments as billed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from workers.channels.base import ColumnChannel, ContentSpec

# The common carrier maximum for a concatenated SMS.
MAX_BODY = 1600

# The GSM 03.38 default alphabet (one septet each; ESC 0x1B is not a character of its own).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: ESC + one septet, so each counts double.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

# (single message, each part of a concatenated one): the user-data header takes the rest.
GSM7_LIMITS = (160, 153)
UCS2_LIMITS = (70, 67)


def is_gsm7(body: str) -> bool:
    """True if every character is in the GSM-7 default alphabet or its extension table."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in body)


def _units(body: str) -> list[int]:
    """Each character's size in its encoding's units (septets, or UTF-16 code units)."""
    if is_gsm7(body):
        return [2 if ch in GSM7_EXTENSION else 1 for ch in body]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in body]


def segments(body: str) -> int:
    """How many SMS segments `body` takes, as carriers bill it.

    GSM-7 when every character fits (extension characters such as `€` or `{` take two
    septets): 160 septets in one message, 153 per part beyond. Anything else is UCS-2: 70
    UTF-16 code units, 67 per part. A character's units never straddle two parts (an escape
    sequence or a surrogate pair is kept whole), which is why parts are packed one character
    at a time rather than divided. An empty body is still one (empty) message.
    """
    units = _units(body)
    single, part = GSM7_LIMITS if is_gsm7(body) else UCS2_LIMITS
    if sum(units) <= single:
        return 1
    count, used = 1, 0
    for size in units:
        if used + size > part:
            count, used = count + 1, 0
        used += size
    return count


def encoding(body: str) -> str:
    """`GSM-7` or `UCS-2`: what the body is sent as."""
    return "GSM-7" if is_gsm7(body) else "UCS-2"


class Sms(ColumnChannel):
    """Reaches a profile with a phone number."""

    name = "sms"
    column = "phone"
    content: ClassVar[ContentSpec] = ContentSpec(
        fields=("body",), required=(("body",),), max_chars={"body": MAX_BODY}
    )
    default_provider = "sandbox"
    credential_providers: ClassVar[tuple[tuple[str, str], ...]] = (
        ("TWILIO_ACCOUNT_SID", "twilio"),
        ("SMS_WEBHOOK_URL", "webhook"),
    )
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
