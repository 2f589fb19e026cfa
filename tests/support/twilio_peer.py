"""Local peers for the SMS providers: Twilio's Messages API and a generic JSON gateway.

`TwilioPeer` speaks the shape of `POST /2010-04-01/Accounts/{sid}/Messages.json`: it checks
Basic auth (401 with Twilio's 20003 otherwise), parses the form, keeps what it received, and
answers 201 with a `sid`, or the answers planned with `plan(...)`, in order (a 400 with
Twilio's error code, 429 with Retry-After, 500). `GatewayPeer` receives the `webhook`
provider's signed JSON. `twilio_sign` signs callbacks as Twilio does, written here from
Twilio's documentation independently of the application's code.

`report_first` makes a peer call the message's status callback, signed, and wait for the
answer before it answers the create request itself: the report then always outruns the
sender's record of the send (a race real providers win now and then).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlencode


def twilio_sign(token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]):
    """X-Twilio-Signature for a callback POSTed to `url` with these form parameters.

    From Twilio's "Webhooks security": take the full URL, append each POST parameter's name
    and value in the alphabetical order of the names, HMAC-SHA1 with the auth token, base64.
    """
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    by_name: dict[str, list[str]] = {}
    for name, value in pairs:
        by_name.setdefault(name, []).append(value)
    payload = url
    for name in sorted(by_name):
        for value in sorted(set(by_name[name])):
            payload += name + value
    digest = hmac.new(token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass
class Answer:
    """One planned answer: a status, a JSON body and headers."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def twilio_error(status: int, code: int, message: str, **headers: str) -> Answer:
    """An error answer in Twilio's shape (`{code, message, more_info, status}`)."""
    return Answer(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        dict(headers),
    )


@dataclass
class Received:
    """One request the peer got."""

    path: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, list[str]]

    def value(self, name: str) -> str | None:
        """A form field's single value."""
        values = self.form.get(name)
        return values[0] if values else None

    @property
    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def _post(url: str, data: bytes, headers: dict[str, str]) -> int:
    """POST and return the answer's status (an HTTP error's too)."""
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


class _Peer:
    """A threaded HTTP server on 127.0.0.1 with planned answers and a record of requests."""

    def __init__(self) -> None:
        # The status to report through the callback before answering a send (None: don't).
        self.report_first: str | None = None
        # The callbacks made for report_first: (url, our answer's status).
        self.callbacks: list[tuple[str, int]] = []
        self.received: list[Received] = []
        self._planned: list[Answer] = []
        self._lock = threading.Lock()
        self._stopped = False
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                answer = peer._answer(self.path, dict(self.headers.items()), raw)
                data = json.dumps(answer.body).encode() if answer.body is not None else b""
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The peer's base URL."""
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> Self:
        """Serve in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (twice is fine)."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def plan(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order; then the default again."""
        with self._lock:
            self._planned.extend(answers)

    def _next_planned(self) -> Answer | None:
        with self._lock:
            return self._planned.pop(0) if self._planned else None

    def _record(self, path: str, headers: dict[str, str], raw: bytes) -> Received:
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True) if raw else {}
        if "json" in headers.get("Content-Type", ""):
            form = {}
        item = Received(path, headers, raw, form)
        with self._lock:
            self.received.append(item)
        return item

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        raise NotImplementedError


class TwilioPeer(_Peer):
    """Twilio's Messages API for one account."""

    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "tok-123") -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._count = 0

    @property
    def messages(self) -> list[Received]:
        """The message creations it accepted or refused, in order."""
        return [r for r in self.received if r.path.endswith("/Messages.json")]

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        self._record(path, headers, raw)
        expected = "Basic " + base64.b64encode(
            f"{self.account_sid}:{self.auth_token}".encode()
        ).decode("ascii")
        if headers.get("Authorization") != expected:
            return twilio_error(401, 20003, "Authenticate")
        if path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            return twilio_error(404, 20404, "The requested resource was not found")
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        if "To" not in form or "Body" not in form:
            return twilio_error(400, 21604, "A 'To' phone number and a 'Body' are required.")
        if "From" not in form and "MessagingServiceSid" not in form:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        planned = self._next_planned()
        if planned is not None:
            return planned
        with self._lock:
            self._count += 1
            sid = f"SM{self._count:032x}"
        if self.report_first is not None and "StatusCallback" in form:
            self._report(form["StatusCallback"][0], sid, form)
        return Answer(
            201,
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": form["To"][0],
                "from": form["From"][0] if "From" in form else None,
                "messaging_service_sid": (
                    form["MessagingServiceSid"][0] if "MessagingServiceSid" in form else None
                ),
                "body": form["Body"][0],
                "status": "queued",
                "num_segments": "1",
                "error_code": None,
                "error_message": None,
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
        )

    def _report(self, url: str, sid: str, form: dict[str, list[str]]) -> None:
        """Call the status callback as Twilio does (form, X-Twilio-Signature over the URL)."""
        status = str(self.report_first)
        params = {
            "AccountSid": self.account_sid,
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "To": form["To"][0],
            "From": form["From"][0] if "From" in form else "",
            "ApiVersion": "2010-04-01",
        }
        if status in ("failed", "undelivered"):
            params["ErrorCode"] = "30003"
        data = urlencode(params).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_sign(self.auth_token, url, params),
        }
        answer = _post(url, data, headers)
        with self._lock:
            self.callbacks.append((url, answer))


class GatewayPeer(_Peer):
    """A generic SMS gateway: takes any JSON POST, answers 200 `{"id": ...}` by default."""

    def __init__(self, secret: str | None = None) -> None:
        super().__init__()
        self._count = 0
        # Signs report_first callbacks (the provider's SMS_WEBHOOK_SECRET).
        self.secret = secret

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        self._record(path, headers, raw)
        planned = self._next_planned()
        if planned is not None:
            return planned
        if self.report_first is not None:
            self._report(json.loads(raw))
        with self._lock:
            self._count += 1
            return Answer(200, {"id": f"gw-{self._count}"})

    def _report(self, sent: dict[str, Any]) -> None:
        """Call the body's statusCallback, signed as the `webhook` provider's callbacks are."""
        assert self.secret, "report_first needs the gateway secret"
        url = str(sent["statusCallback"])
        body = json.dumps({"messageId": sent["messageId"], "status": self.report_first}).encode()
        timestamp = str(int(time.time()))
        mac = hmac.new(self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        headers = {
            "Content-Type": "application/json",
            "X-Cairn-Timestamp": timestamp,
            "X-Cairn-Signature": "sha256=" + mac.hexdigest(),
        }
        answer = _post(url, body, headers)
        with self._lock:
            self.callbacks.append((url, answer))
