"""The sandbox: keeps rendered email and SMS in the database instead of sending them."""

from __future__ import annotations

from workers.channels import Delivery, ProviderContext, SendResult


class SandboxEmailProvider:
    """The embedded default for email (no SMTP_URL): listed by GET /v1/sandbox/messages."""

    name = "sandbox-email"
    channel = "email"

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        """Store the rendered email."""
        ctx.store_sandbox(delivery)
        return SendResult(
            "sent", provider_id=f"sandbox-{delivery.message_id}", rendered=delivery.content
        )


class SandboxSmsProvider:
    """The embedded default for SMS (no SMS_PROVIDER)."""

    name = "sandbox-sms"
    channel = "sms"

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        """Store the rendered SMS."""
        ctx.store_sandbox(delivery)
        return SendResult(
            "sent", provider_id=f"sandbox-{delivery.message_id}", rendered=delivery.content
        )
