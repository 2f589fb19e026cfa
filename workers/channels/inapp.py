"""In-app: the message row is the inbox item; sending publishes it to open SSE streams."""

from __future__ import annotations

from workers.channels import Delivery, ProviderContext, SendResult


class InAppProvider:
    """Marks the message sent and pushes it to the user's live streams."""

    name = "inapp"
    channel = "inapp"

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        """Publish; a user with no open stream reads it from the inbox later."""
        ctx.publish(delivery)
        return SendResult("sent", rendered=delivery.content)
