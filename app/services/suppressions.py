"""The suppression list: addresses never to send to, per channel (checked before each send)."""

from __future__ import annotations

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.errors import InvalidInput
from app.models import Project
from app.models.base import utcnow
from app.models.message import Suppression
from app.services.profiles import FieldError
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


def add_suppression(
    session: Session, *, project: Project, channel: str, address: str, reason: str
) -> int:
    """Suppress an address on a channel; 1 if it was new, 0 if it was already there."""
    result = session.execute(
        insert_ignore(session, Suppression, ["project_id", "channel", "address"])
        .values(
            project_id=project.id,
            channel=channel,
            address=_address(project, channel, address),
            reason=reason,
            created_at=utcnow(),
        )
        .returning(Suppression.id)
    )
    return len(result.all())


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
