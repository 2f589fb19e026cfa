"""`{id, type: "webhook", url, body?, saveAs?, next}`: call out, wait for the answer, go on.

On arrival the step asks for the call (`CallWebhook` with its (step, visit)) and parks the run.
The worker signs and POSTs `body` (absent: its default payload) after its SSRF check, records
the response under (run, step, visit) and advances the run again with it as
`RunFacts.webhook_result`. Any answer, a failure too, continues at `next`; with `saveAs` the
run keeps `{ok, status, body}` (the body up to 16 KB of JSON, else `truncated: true`) in its
context, where later branches read `<saveAs>.ok`, `<saveAs>.status`, `<saveAs>.body.<key>` and
templates get it as a parameter. Without an answer by RESULT_TIMEOUT the run continues with
`{ok: false, error: "timeout"}`, so a lost call never holds a run for ever; a late answer is
then ignored (it names a (step, visit) the run has left).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from journeys.steps.base import (
    ENTRY,
    MAX_SAVED_BODY,
    MISSING,
    SAVED,
    Go,
    Outcome,
    Park,
    Problems,
    Step,
    StepInput,
    WebhookResult,
)
from journeys.steps.effects import CallWebhook

MAX_URL = 2048
MAX_BODY = 65_536
RESULT_TIMEOUT = timedelta(minutes=15)
SAVE_AS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
RESERVED_NAMES = (ENTRY, SAVED)


def _url_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        return f"url must be a string of 1-{MAX_URL} characters"
    if any(char.isspace() for char in value):
        return "url must not contain spaces"
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "url is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "url must be an http(s) URL with a host"
    return None


def saved_result(result: WebhookResult) -> dict[str, Any]:
    """What a run keeps of a webhook answer under its `saveAs` name."""
    node: dict[str, Any] = {"ok": result.ok, "status": result.status, "body": result.body}
    try:
        size = len(json.dumps(result.body, ensure_ascii=False))
    except (TypeError, ValueError):
        size = MAX_SAVED_BODY + 1
    if size > MAX_SAVED_BODY:
        node["body"] = None
        node["truncated"] = True
    if result.error is not None:
        node["error"] = result.error
    return node


@dataclass(frozen=True, kw_only=True)
class Webhook(Step):
    """POST to a URL and (optionally) save the answer for later steps."""

    url: str
    body: Any = None
    save_as: str | None = None
    next: str
    type_name: ClassVar[str] = "webhook"
    fields: ClassVar[tuple[str, ...]] = ("url", "body", "saveAs", "next")

    @classmethod
    def check(cls, raw: Mapping[str, Any], problems: Problems) -> Self:
        url = problems.take(raw, "url")
        if url is not MISSING:
            why = _url_problem(url)
            if why:
                problems.add("url", why)
        body = raw.get("body")
        if body is not None:
            try:
                if len(json.dumps(body, ensure_ascii=False)) > MAX_BODY:
                    problems.add("body", f"body is limited to {MAX_BODY} characters of JSON")
            except (TypeError, ValueError):
                problems.add("body", "body must be JSON")
        save_as = raw.get("saveAs")
        if save_as is not None and (
            not isinstance(save_as, str)
            or not SAVE_AS.fullmatch(save_as)
            or save_as in RESERVED_NAMES
        ):
            problems.add(
                "saveAs",
                "saveAs must be a name of 1-64 of A-Z a-z 0-9 _ (not a digit first), "
                f"other than {' and '.join(RESERVED_NAMES)}",
            )
        return cls(
            id=problems.step_id,
            url=url if isinstance(url, str) else "",
            body=body,
            save_as=save_as if isinstance(save_as, str) else None,
            next=problems.edge(problems.take(raw, "next"), "next"),
        )

    def edge_fields(self) -> list[tuple[str, str]]:
        return [("next", self.next)]

    def config_json(self) -> dict[str, Any]:
        node: dict[str, Any] = {"url": self.url}
        if self.body is not None:
            node["body"] = self.body
        if self.save_as is not None:
            node["saveAs"] = self.save_as
        node["next"] = self.next
        return node

    def _continue(self, run: StepInput, result: WebhookResult) -> Go:
        if self.save_as is None:
            return Go(self.next)
        saved = dict(run.context.get(SAVED) or {})
        saved[self.save_as] = saved_result(result)
        return Go(self.next, context={**run.context, SAVED: saved})

    def advance(self, run: StepInput) -> Outcome:
        result = run.webhook_result
        if result is not None and (result.step, result.visit) == (run.step, run.visit):
            return self._continue(run, result)
        deadline = run.since + RESULT_TIMEOUT
        if not run.resumed:
            call = CallWebhook(self.url, self.body, self.save_as, run.step, run.visit)
            return Park(deadline, (call,))
        if run.now >= deadline:
            return self._continue(
                run, WebhookResult(step=run.step, visit=run.visit, ok=False, error="timeout")
            )
        return Park(deadline)
