"""Campaign kinds: how each is checked, scheduled and started; one module each.

A new kind = one module exposing the `CampaignKind` functions (workers.campaigns.base) + one
line below. The campaign service looks kinds up here; it never switches on the kind string.
"""

from __future__ import annotations

from workers.campaigns import api, broadcast, recurring, triggered
from workers.campaigns.base import CampaignKind

KINDS: dict[str, CampaignKind] = {
    module.NAME: module  # type: ignore[misc]
    for module in (triggered, api, broadcast, recurring)
}
