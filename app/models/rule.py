"""Rules: `when` a trigger happens to a user, `if` they match a filter, `then` apply actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, JSONType, UTCDateTime, utcnow

# Stored strings (rules.trigger_kind): never rename. They are the keys of `when`.
TRIGGER_KINDS = ("event", "audienceEntered", "audienceLeft", "attributeChanged")
# rule_firings.status
FIRING_STATUSES = ("fired", "skipped", "stopped")


class Rule(Base):
    """A marketer's rule, as in API.md: `{name, enabled, priority, when, if?, then}`."""

    __tablename__ = "rules"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        # The event processor looks up the rules listening for one trigger (event name,
        # audience id, attribute name) of one project.
        Index("ix_rules_trigger", "project_id", "trigger_kind", "trigger_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(default=True)
    # Lower runs first; equal priorities run in id order (deterministic).
    priority: Mapped[int] = mapped_column(default=0)
    # Denormalised from `when` for the lookup: event name, audience id (text), attribute name.
    trigger_kind: Mapped[str] = mapped_column(String(20))
    trigger_key: Mapped[str] = mapped_column(String(255))
    when: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The `if` filter as a normalized condition tree; None = always.
    condition: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    # The `then` list, normalized (audiences and campaigns referenced by id).
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RuleFiring(Base):
    """One evaluation of a rule that matched its trigger: what caused it and what it did."""

    __tablename__ = "rule_firings"
    __table_args__ = (
        Index("ix_rule_firings_rule", "rule_id", "id"),
        # The user's timeline reads their firings newest first.
        Index("ix_rule_firings_user", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    # NULL for a rule fired by a global event.
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), default=None
    )
    # The event whose processing this firing belongs to (the root of its chain).
    event_id: Mapped[int | None] = mapped_column(BigId, default=None)
    # What fired it: {"event": "purchase"} | {"audienceEntered": "Bought"} | {"attributeChanged":
    # "plan", "from": .., "to": ..}, plus "chain": [the rule ids that led here].
    cause: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    depth: Mapped[int] = mapped_column(default=0)
    # fired (actions applied) | skipped (`if` did not match) | stopped (chain bound reached).
    status: Mapped[str] = mapped_column(String(20), default="fired")
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    # Per action: {"addToAudience": 3, "result": "joined" | "already member" | error text}.
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
