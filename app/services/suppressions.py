"""The suppression list: addresses never to send to, per channel (checked before each send)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, delete, select, update
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.errors import InvalidInput
from app.models import Project
from app.models.base import utcnow
from app.models.message import Suppression
from app.services.profiles import FieldError
from journeys.delivery_policy import MARKETING_ONLY_REASONS
from workers.channels import CHANNELS


def _address(project: Project, channel: str, raw: str) -> str:
    """The address as the channel stores it (emails lower-cased, phones E.164)."""
    try:
        return CHANNELS[channel].normalize_address(raw, project.default_region)
    except FieldError as err:
        raise InvalidInput(str(err), {"address": [str(err)]}) from None


def list_suppressions_query(project_id: int, *, after_id: int | None) -> Select[tuple[Suppression]]:
    """The project's suppressions in the order they were added."""
    stmt = select(Suppression).where(Suppression.project_id == project_id)
    if after_id is not None:
        stmt = stmt.where(Suppression.id > after_id)
    return stmt.order_by(Suppression.id)


def suppress(
    session: Session,
    *,
    project_id: int,
    channel: str,
    address: str,
    reason: str,
    now: datetime,
    upgrade: bool = True,
) -> bool:
    """Suppress a stored-form address; True if it was not suppressed before.

    An existing suppression is kept, except that (with `upgrade`) a hard reason (a bounce,
    STOP, ...) replaces a marketing-only one (`unsubscribed`, `complaint`): after an
    unsubscribe and then a hard bounce, transactional messages must stop too.
    """
    reason = reason[:40]
    result = session.execute(
        insert_ignore(session, Suppression, ["project_id", "channel", "address"])
        .values(
            project_id=project_id, channel=channel, address=address, reason=reason, created_at=now
        )
        .returning(Suppression.id)
    )
    added = bool(result.all())
    if upgrade and not added and reason not in MARKETING_ONLY_REASONS:
        session.execute(
            update(Suppression)
            .where(
                Suppression.project_id == project_id,
                Suppression.channel == channel,
                Suppression.address == address,
                Suppression.reason.in_(sorted(MARKETING_ONLY_REASONS)),
            )
            .values(reason=reason)
        )
    return added


def add_suppression(
    session: Session, *, project: Project, channel: str, address: str, reason: str
) -> int:
    """Suppress an address on a channel; 1 if it was new, 0 if it was already there (kept
    as it was: adding twice through the API is harmless)."""
    added = suppress(
        session,
        project_id=project.id,
        channel=channel,
        address=_address(project, channel, address),
        reason=reason,
        now=utcnow(),
        upgrade=False,
    )
    return int(added)


def remove_suppression(session: Session, *, project: Project, channel: str, address: str) -> int:
    """Lift a suppression; how many were removed (0 or 1)."""
    result = session.execute(
        delete(Suppression).where(
            Suppression.project_id == project.id,
            Suppression.channel == channel,
            Suppression.address == _address(project, channel, address),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
