"""What the headless-Chromium tests share: the browser, a customer's site, and API lookups.

Debian's `chromium` driven by Playwright's sync API (Playwright cannot download its own browser
here). A missing browser skips on a developer machine and fails under CI, which installs it.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def unavailable(what: str) -> None:
    """Skip on a developer machine without it; CI installs it, so there it is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}: not available, but CI must run this test")
    pytest.skip(f"{what} not available")


def launch_browser() -> Iterator[Any]:
    """Body of a module-scoped `browser` fixture: Playwright's sync API keeps an event loop
    running while it is open, so one per module, not per session."""
    if not Path(CHROMIUM).exists():
        unavailable("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


class StaticSite:
    """A customer's site on 127.0.0.1 (another origin than Cairn): GET answers what `resolve`
    gives for the request path, `(body, content type)`, or 404 for None."""

    def __init__(self, resolve: Callable[[str], tuple[bytes, str] | None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                found = resolve(self.path.split("?")[0])
                if found is None:
                    self.send_error(404)
                    return
                body, kind = found
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def fetch_profile(cairn: str, secret: str, user_id: str) -> dict | None:
    """GET /v1/users/{userId} with the secret key, None unless 200."""
    r = requests.get(
        f"{cairn}/v1/users/{user_id}", headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )
    return r.json() if r.status_code == 200 else None


def users_matching(cairn: str, secret: str, conditions: list[dict]) -> list[str]:
    """The sample of users matching all `conditions` (POST /v1/segments/preview)."""
    r = requests.post(
        f"{cairn}/v1/segments/preview",
        json={"filter": {"all": conditions}},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()["sample"]
