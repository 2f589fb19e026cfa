"""Dramatiq middleware: one database session per job, committed after it succeeds."""

from __future__ import annotations

import threading
from typing import Any

from dramatiq.middleware import Middleware
from sqlalchemy.orm import Session

from workers import runtime

_local = threading.local()


def job_session() -> Session:
    """The session of the job running on this thread."""
    session: Session | None = getattr(_local, "session", None)
    if session is None:
        raise RuntimeError("no job session: called outside a Dramatiq job")
    return session


class DatabaseSession(Middleware):
    """Open a session before each job; commit on success, roll back on failure, close."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        _local.session = runtime.sessionmaker()()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        session: Session | None = getattr(_local, "session", None)
        _local.session = None
        if session is None:
            return
        try:
            if exception is None:
                session.commit()
            else:
                session.rollback()
        finally:
            session.close()

    after_skip_message = after_process_message
