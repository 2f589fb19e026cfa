"""gunicorn embedded as a library, so `cairn serve` is the one way to run Cairn."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


class CairnServer(BaseApplication):  # type: ignore[misc]
    """A gunicorn application serving an already-built Flask app."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def run_server(app: Flask, *, host: str, port: int, workers: int, threads: int) -> None:
    """Serve `app` with gthread workers (threads hold long-lived SSE streams)."""
    CairnServer(
        app,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "gthread",
            "threads": threads,
            "timeout": 60,
            "graceful_timeout": 20,
            "keepalive": 30,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
        },
    ).run()
