"""The sandbox: keeps rendered email and SMS in the database instead of sending them."""

from __future__ import annotations

from workers.channels.base import Delivery, KeepCopy, ProviderContext, SendResult


class SandboxProvider:
    """The embedded default for email and SMS: listed by GET /v1/sandbox/messages."""

    name = "sandbox"
    channels = frozenset({"email", "sms"})

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        """Keep the rendered message (the record step stores the copy)."""
        return SendResult(
            "sent",
            provider_id=f"sandbox-{delivery.message_id}",
            rendered=delivery.content,
            effects=(KeepCopy(),),
        )
