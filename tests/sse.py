"""A Server-Sent Events client for tests: reads a stream in a thread, as EventSource parses it."""

from __future__ import annotations

import json
import queue
import threading
import time

import requests


class SseReader:
    """Reads an SSE stream in a thread, parsing events as a browser's EventSource does."""

    def __init__(self, url: str, params: dict, headers: dict | None = None) -> None:
        self.events: queue.Queue = queue.Queue()
        self.response = requests.get(
            url, params=params, headers=headers or {}, stream=True, timeout=(5, 60)
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event: dict = {}
        try:
            for raw in self.response.iter_lines(chunk_size=1, decode_unicode=True):
                if raw == "":
                    if "data" in event:
                        self.events.put(event)
                    event = {}
                elif raw.startswith(":"):
                    self.events.put({"comment": raw[1:].strip()})
                else:
                    name, _, value = raw.partition(":")
                    event[name] = value.lstrip()
        except Exception:
            pass

    def wait_connected(self, timeout: float = 30) -> None:
        """Block until the server's `: connected` comment (the stream is subscribed)."""
        assert self.events.get(timeout=timeout) == {"comment": "connected"}

    def next_message(self, timeout: float = 30) -> dict:
        """The next `message` event's data, with its SSE id (heartbeats do not extend `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no message event within {timeout} s")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if "data" in event:
                return {"id": int(event["id"]), **json.loads(event["data"])}

    def close(self) -> None:
        """Drop the connection."""
        self.response.close()
