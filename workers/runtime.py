"""What jobs need outside Flask: the database and the settings, configured once per process."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm import sessionmaker as make_sessionmaker

from app.config import Settings
from app.db import make_engine

_lock = threading.RLock()
_state: dict[str, Any] = {}


def configure(*, engine: Engine, settings: dict[str, Any]) -> None:
    """Use this engine and these settings (the embedded server and tests call this)."""
    with _lock:
        _state["engine"] = engine
        _state["sessionmaker"] = make_sessionmaker(engine, expire_on_commit=False)
        _state["settings"] = dict(settings)


def _ensure() -> None:
    if "sessionmaker" in _state:
        return
    # A standalone worker process (`cairn worker` / `dramatiq workers.actors`): read the env.
    settings = Settings.from_env()
    configure(engine=make_engine(settings.DATABASE_URL), settings=settings.as_flask())


def sessionmaker() -> make_sessionmaker[Session]:
    """The session factory for jobs."""
    with _lock:
        _ensure()
        return _state["sessionmaker"]


def settings() -> dict[str, Any]:
    """The settings jobs read (PUBLIC_URL, SECRET_KEY, limits...)."""
    with _lock:
        _ensure()
        return _state["settings"]


def engine() -> Engine:
    """The engine jobs use."""
    with _lock:
        _ensure()
        return _state["engine"]
