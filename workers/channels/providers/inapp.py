"""In-app: the message row is the inbox item; sending publishes it to open SSE streams."""

from __future__ import annotations

from workers.channels.base import Delivery, ProviderContext, Publish, SendResult


class InAppProvider:
    """Marks the message sent; the record step publishes it to the user's live streams."""

    name = "inapp"
    channels = frozenset({"inapp"})

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        """A user with no open stream reads it from the inbox later."""
        return SendResult("sent", rendered=delivery.content, effects=(Publish(),))
