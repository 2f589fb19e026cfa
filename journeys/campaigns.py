"""Campaign decisions that need no I/O: the target as one filter, the holdout slice, the window.

Standard library only, like the rest of `journeys/`. The SQL side of the holdout slice
(`workers.fanout`) computes the same bucket with integer arithmetic; a test holds them equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

# The bucket of (campaign, user) in 0..99: integer arithmetic both SQL dialects do the same way
# (no hash function SQLite and PostgreSQL share), small enough never to overflow a BIGINT.
HOLDOUT_MODULUS = 1_000_003
HOLDOUT_USER_FACTOR = 7_919
HOLDOUT_CAMPAIGN_FACTOR = 31


def holdout_bucket(campaign_id: int, user_pk: int) -> int:
    """The user's deterministic slice (0..99) for this campaign."""
    return (
        (user_pk % HOLDOUT_MODULUS) * HOLDOUT_USER_FACTOR + campaign_id * HOLDOUT_CAMPAIGN_FACTOR
    ) % 100


def in_holdout(campaign_id: int, user_pk: int, percent: int) -> bool:
    """Whether this user is in the campaign's holdout (gets nothing, counted for lift)."""
    return percent > 0 and holdout_bucket(campaign_id, user_pk) < percent


def target_tree(target: Mapping[str, Any] | None) -> dict[str, Any]:
    """A campaign's `{include, exclude}` as one filter tree (`{"all": []}` = everyone).

    Each include/exclude item is already a normalized filter tree (an audience reference is
    the filter node `{"audience": id, "op": "in"}`): in any include, and in no exclude.
    """
    include = list((target or {}).get("include") or [])
    exclude = list((target or {}).get("exclude") or [])
    parts: list[dict[str, Any]] = []
    if include:
        parts.append(include[0] if len(include) == 1 else {"any": include})
    if exclude:
        parts.append({"not": exclude[0] if len(exclude) == 1 else {"any": exclude}})
    return {"all": parts}


def in_window(starts_at: datetime | None, ends_at: datetime | None, now: datetime) -> bool:
    """Whether `now` is inside a campaign's active window (open ends are unbounded)."""
    return (starts_at is None or starts_at <= now) and (ends_at is None or now < ends_at)
