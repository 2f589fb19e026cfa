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


def _write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it refuses before the app sees it (a request line over
    4094 bytes: 414, a malformed header: 400, too many headers: 431), in API.md's JSON shape
    instead of gunicorn's HTML page."""
    import json

    from gunicorn.util import write_nonblock

    from app.errors import error_body

    try:
        shape = error_body(status_int, mesg)
    except ValueError:  # a status http.HTTPStatus does not know
        shape = {"code": status_int, "status": reason, "message": mesg, "errors": {}}
    body = json.dumps(shape).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    write_nonblock(sock, head.encode("latin1") + body)


def run_server(app: Flask, *, host: str, port: int, workers: int, threads: int) -> None:
    """Serve `app` with gthread workers (threads hold long-lived SSE streams)."""
    import gunicorn.util

    # gunicorn writes its own protocol errors through this function (workers/base.py
    # handle_error): every error a client gets is then JSON, as API.md promises.
    gunicorn.util.write_error = _write_json_error
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
            # Each server process runs its own worker threads (in-process broker) and a
            # scheduler on standby; the scheduler lock lets exactly one of them schedule.
            "post_worker_init": lambda _worker: _start_embedded(app),
            "worker_exit": lambda _server, _worker: _stop_embedded(),
        },
    ).run()


_embedded: list[Any] = []


def _start_embedded(app: Flask) -> None:
    from app.db import db
    from workers.embedded import start

    # Connections inherited across fork must not be shared with the parent.
    assert db.engine is not None
    db.engine.dispose(close=False)
    _embedded.append(start(app))


def _stop_embedded() -> None:
    while _embedded:
        _embedded.pop().stop()
