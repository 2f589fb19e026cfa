"""A web push service on 127.0.0.1 that checks what it gets the way a real one does.

For every POST to a subscriber's endpoint it verifies the VAPID `Authorization: vapid t=, k=`
header (RFC 8292: an ES256 signature by `k`, `aud` = this service's origin, `exp` in the
future and at most 24 h away, `sub` a mailto: or https: contact), requires `TTL` and
`Content-Encoding: aes128gcm`, refuses a `k` other than the one the subscriber subscribed with
(403 VapidPkHashMismatch, as FCM and Mozilla do), and decrypts the body with `http_ece` using
the subscriber's private key and auth secret, as the browser would (RFC 8291).

Tests script answers per subscriber (`answer(sub, 410)`, `answer(sub, 429, retry_after=1)`):
each scripted status is used once, then the service answers 201 again.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """base64url with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Subscriber:
    """A browser's half of a subscription: its key pair, auth secret and endpoint."""

    token: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    # The application server key it subscribed with (None: any key is accepted).
    server_key: str | None = None

    @property
    def p256dh(self) -> str:
        """The public key as the browser exposes it (base64url X9.62 uncompressed)."""
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(raw)

    def subscription(self) -> dict[str, Any]:
        """`PushSubscription.toJSON()`."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": b64url(self.auth)},
        }


@dataclass
class Received:
    """One push the service accepted, decrypted."""

    token: str
    payload: dict[str, Any]
    ttl: int
    urgency: str | None
    topic: str | None
    jwt: str
    claims: dict[str, Any]
    key: str
    status: int
    at: float = field(default_factory=time.monotonic)


class VerificationError(Exception):
    """What a real push service would refuse (answered 400/401/403)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class PushService:
    """The server; use as a context manager or call `start()` / `stop()`."""

    def __init__(self) -> None:
        self._subscribers: dict[str, Subscriber] = {}
        self._scripts: dict[str, deque[tuple[int, dict[str, str]]]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.received: list[Received] = []
        # (token, status, reason) of every push answered with something other than 201.
        self.answers: list[tuple[str, int, str]] = []
        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_port}"
        self._thread: threading.Thread | None = None

    def start(self) -> PushService:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> PushService:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    # --- what tests use ----------------------------------------------------------------

    def subscriber(self, server_key: str | None = None) -> Subscriber:
        """A new browser subscription (keys made with cryptography, as a browser makes them)."""
        token = b64url(os.urandom(12))
        sub = Subscriber(
            token=token,
            endpoint=f"{self.origin}/push/{token}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth=os.urandom(16),
            server_key=server_key,
        )
        with self._lock:
            self._subscribers[token] = sub
        return sub

    def answer(
        self, sub: Subscriber, status: int, *, retry_after: str | None = None, times: int = 1
    ) -> None:
        """Answer the subscriber's next `times` pushes with `status` (then 201 again)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            script = self._scripts.setdefault(sub.token, deque())
            script.extend([(status, headers)] * times)

    def for_subscriber(self, sub: Subscriber) -> list[Received]:
        """What one subscriber received, in order."""
        with self._lock:
            return [r for r in self.received if r.token == sub.token]

    def answered(self, sub: Subscriber) -> list[int]:
        """Every status answered to the subscriber's pushes (201s included), in order."""
        with self._lock:
            return [status for token, status, _ in self.answers if token == sub.token]

    # --- the protocol --------------------------------------------------------------------

    def _verify_vapid(self, header: str) -> tuple[str, dict[str, Any], str]:
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            raise VerificationError(401, f"Authorization scheme {scheme!r} is not vapid")
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        token, key = parts.get("t"), parts.get("k")
        if not token or not key:
            raise VerificationError(401, "vapid t= and k= are both required")
        try:
            head_b64, body_b64, sig_b64 = token.split(".")
            head = json.loads(unb64url(head_b64))
            claims = json.loads(unb64url(body_b64))
            signature = unb64url(sig_b64)
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
        except ValueError as err:
            raise VerificationError(401, f"malformed JWT or key: {err}") from None
        if head.get("alg") != "ES256" or len(signature) != 64:
            raise VerificationError(401, "JWT must be ES256 with a 64-byte signature")
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            public.verify(der, f"{head_b64}.{body_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise VerificationError(401, "BadJwtToken: signature does not verify") from None
        now = time.time()
        if claims.get("aud") != self.origin:
            raise VerificationError(401, f"BadJwtToken: aud {claims.get('aud')!r}")
        exp = claims.get("exp")
        if not isinstance(exp, int) or not now < exp <= now + 24 * 3600:
            raise VerificationError(401, f"BadJwtToken: exp {exp!r} not within 24 h")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise VerificationError(401, f"BadJwtToken: sub {sub!r}")
        return token, claims, key

    def _handle(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        token = path.rsplit("/", 1)[-1]
        with self._lock:
            self.requests += 1
            sub = self._subscribers.get(token)
        if not path.startswith("/push/") or sub is None:
            return 404, {}, b'{"reason": "NotFound"}'
        try:
            jwt, claims, key = self._verify_vapid(headers.get("Authorization", ""))
            if sub.server_key is not None and key != sub.server_key:
                raise VerificationError(403, "VapidPkHashMismatch")
            ttl_text = headers.get("TTL")
            if ttl_text is None or not ttl_text.isdigit():
                raise VerificationError(400, "TTL header required")
            if headers.get("Content-Encoding") != "aes128gcm":
                raise VerificationError(400, "Content-Encoding must be aes128gcm")
            if len(body) > 4096:
                raise VerificationError(413, "payload over 4096 bytes")
            plain = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
            )
            payload = json.loads(plain)
        except VerificationError as err:
            with self._lock:
                self.answers.append((token, err.status, err.reason))
            return err.status, {}, json.dumps({"reason": err.reason}).encode()
        except Exception as err:  # undecryptable: what a browser would drop
            with self._lock:
                self.answers.append((token, 400, f"decrypt: {err!r}"))
            return 400, {}, json.dumps({"reason": f"cannot decrypt: {err}"}).encode()
        with self._lock:
            script = self._scripts.get(token)
            scripted = script.popleft() if script else None
        status, extra = scripted if scripted is not None else (201, {})
        with self._lock:
            self.answers.append((token, status, "scripted" if scripted else "ok"))
            if status in (200, 201, 202):
                self.received.append(
                    Received(
                        token=token,
                        payload=payload,
                        ttl=int(ttl_text),
                        urgency=headers.get("Urgency"),
                        topic=headers.get("Topic"),
                        jwt=jwt,
                        claims=claims,
                        key=key,
                        status=status,
                    )
                )
        if status == 201:
            extra = {**extra, "Location": f"{self.origin}/m/{next(self._ids)}"}
        return status, extra, b"" if status < 300 else json.dumps({"reason": "scripted"}).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, headers, out = service._handle(self.path, self.headers, body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *_: Any) -> None:
                pass

        return Handler
