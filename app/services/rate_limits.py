"""Per-provider send rates: slots in `provider_rates`, shared by every worker process.

A provider's row holds `next_at`, the earliest time its next message may go. Reserving a slot
moves `next_at` on by 1/rate with one conditional UPDATE (compare-and-set on the value read),
so two workers, in one process or on two hosts, never get the same slot; on SQLite the
transaction is `BEGIN IMMEDIATE` and writers queue, on PostgreSQL a concurrent reservation makes
the UPDATE match nothing and the loop reads again. A slot in the future means "wait until
then": the delivery puts the message back in the queue with that `not_before`, and the message
keeps the slot (it is not reserved again when it comes back).

The limits are `RATE_LIMITS` (`smtp=14,twilio=1`) with the project's `rateLimits` on top.
Slots are per project and provider: each project sends with its own credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.config import parse_rate_limits
from app.db import insert_ignore
from app.models.channels import ProviderRate

# Concurrent reservations each make the other's UPDATE miss once; this many misses in a row
# would mean something else is wrong.
MAX_TRIES = 50


@lru_cache(maxsize=32)
def _parsed(raw: str) -> dict[str, float]:
    try:
        return parse_rate_limits(raw)
    except ValueError:  # refused at start; a bad value here must not stop deliveries
        return {}


def rate_for(
    provider: str, settings: Mapping[str, Any], project_settings: Mapping[str, Any]
) -> float | None:
    """Messages per second allowed for `provider` in this project, or None (no limit)."""
    project_limits = project_settings.get("rateLimits") or {}
    if isinstance(project_limits, Mapping) and provider in project_limits:
        try:
            rate = float(project_limits[provider])
        except (TypeError, ValueError):
            rate = 0.0
        return rate if rate > 0 else None
    configured = _parsed(str(settings.get("RATE_LIMITS") or "")).get(provider)
    return configured if configured else None


def reserve_slot(
    session: Session, *, project_id: int, provider: str, rate: float, now: datetime
) -> datetime:
    """Take the provider's next send slot (now or later) and advance it by 1/rate.

    Flushes, never commits: the caller commits at once, in a transaction of its own, so the
    slot row is never locked while a provider sends.
    """
    interval = timedelta(seconds=1.0 / rate)
    key = (ProviderRate.project_id == project_id, ProviderRate.provider == provider)
    for _ in range(MAX_TRIES):
        current = session.scalar(select(ProviderRate.next_at).where(*key))
        if current is None:
            # First use: create the row (a concurrent creation wins), then reserve as usual.
            session.execute(
                insert_ignore(session, ProviderRate, ["project_id", "provider"]).values(
                    project_id=project_id, provider=provider, next_at=now
                )
            )
            continue
        slot = max(current, now)
        moved = session.execute(
            update(ProviderRate)
            .where(*key, ProviderRate.next_at == current)
            .values(next_at=slot + interval)
        )
        if moved.rowcount == 1:  # type: ignore[attr-defined]
            return slot
    raise RuntimeError(f"could not reserve a {provider} slot after {MAX_TRIES} tries")


def describe(provider: str, rate: float) -> str:
    """`smtp 14/s`, `twilio 0.5/s`: how a limit is shown in a message's history."""
    shown = f"{rate:g}"
    return f"{provider} {shown}/s"
