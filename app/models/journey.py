"""Journeys: versioned step graphs, the runs of users through them, and what each step did.

The step logic is pure (`journeys.journey.machine.advance`); these rows are what it reads and
what the worker writes: a run's state between advances (`state`, the machine's RunState as
JSON), its indexed `wake_at` for the sweeper, the log of every step a run passed through (for
stats and the timeline), and webhook calls keyed by (run, step, visit) so a replayed advance
never calls twice. A send step's messages carry the dedup key `journey:<run>:<step>:<visit>`,
under the messages' unique constraint: a replayed advance never sends twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, JSONType, UTCDateTime, utcnow

# Stored strings: never rename.
STATUSES = ("draft", "active", "paused", "archived")
# journey_runs.status: the machine's RunState.status
RUN_STATUSES = ("active", "waiting", "exited", "converted")
LIVE_RUN_STATUSES = ("active", "waiting")
# journeys.trigger_kind: the keys of `trigger`
TRIGGER_KINDS = ("event", "audienceEntered", "segmentEntered", "api")
WEBHOOK_STATUSES = ("pending", "done", "failed")

_LIVE = text("status IN ('active', 'waiting')")


class Journey(Base):
    """A stored journey, as in API.md (field names there; the definition as parsed)."""

    __tablename__ = "journeys"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        # The event processor finds the active journeys an event or audience starts.
        Index("ix_journeys_trigger", "project_id", "status", "trigger_kind", "trigger_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), default="draft")
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # The current version's definition (journeys.journey.definition.to_json, references as
    # ids); new runs start on it, runs in flight keep theirs (journey_versions).
    version: Mapped[int] = mapped_column(default=1)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # Denormalised from `trigger` for the lookup: event name, audience id (text); None for
    # segmentEntered and api.
    trigger_kind: Mapped[str] = mapped_column(String(20))
    trigger_key: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class JourneyVersion(Base):
    """Every definition a journey had: a run advances on the version it entered with."""

    __tablename__ = "journey_versions"
    __table_args__ = (UniqueConstraint("journey_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column()
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # journeys.journey.definition.fingerprint: an edit that changes nothing is no new version.
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JourneyRun(Base):
    """One user's way through one journey (one per entry key value at a time)."""

    __tablename__ = "journey_runs"
    __table_args__ = (
        # At most one live run per user, journey and entry key ("" without a key).
        Index(
            "ux_journey_runs_live",
            "journey_id",
            "user_id",
            "entry_key",
            unique=True,
            postgresql_where=_LIVE,
            sqlite_where=_LIVE,
        ),
        # The sweeper claims due waiting runs in wake order.
        Index(
            "ix_journey_runs_wake",
            "wake_at",
            postgresql_where=text("wake_at IS NOT NULL"),
            sqlite_where=text("wake_at IS NOT NULL"),
        ),
        # The event processor finds a user's live runs; entry policies read their past runs.
        Index("ix_journey_runs_user", "user_id", "journey_id"),
        Index("ix_journey_runs_journey", "journey_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    entry_key: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(20), default="active")
    step: Mapped[str | None] = mapped_column(String(64), default=None)
    # When the sweeper advances it next (a wait's end or timeout); None = only an event does.
    wake_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # The machine's RunState (journeys.journey.machine.run_to_json).
    state: Mapped[dict[str, Any]] = mapped_column(JSONType)
    exit_reason: Mapped[str | None] = mapped_column(Text, default=None)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class JourneyStepLog(Base):
    """A run arriving at a step, and how it left (the edge taken): per-step stats."""

    __tablename__ = "journey_step_log"
    __table_args__ = (
        UniqueConstraint("run_id", "step", "visit"),
        Index("ix_journey_step_log_journey", "journey_id", "step"),
        # The user's timeline (and erasure) reads their steps.
        Index("ix_journey_step_log_user", "user_id", "entered_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("journey_runs.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column()
    step: Mapped[str] = mapped_column(String(64))
    visit: Mapped[int] = mapped_column()
    # The edge the run left by (`next`, `onTimeout`, a branch's index, `default`, a split
    # variant), `exited`/`converted` when it ended here; None while it is still at the step.
    outcome: Mapped[str | None] = mapped_column(String(64), default=None)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class JourneyWebhookCall(Base):
    """A webhook step's call: made once per (run, step, visit), its answer kept for `saveAs`."""

    __tablename__ = "journey_webhook_calls"
    __table_args__ = (UniqueConstraint("run_id", "step", "visit"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("journey_runs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(64))
    visit: Mapped[int] = mapped_column()
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[Any] = mapped_column(JSONType, nullable=True, default=None)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    # journeys.steps.base.WebhookResult as JSON: {ok, status, body, error}
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
