"""Standard web push (RFC 8030 delivery, RFC 8291 aes128gcm encryption, RFC 8292 VAPID).

One provider instance per process holds what is worth reusing across messages: the VAPID
JWT of each (key, push service origin), signed at most once per ~12 h (pywebpush's `webpush()`
re-signs per call), a pooled keep-alive connection pool per push service origin (urllib3's, the
one `requests.Session` keeps, used directly: requests' per-call work cost more than the
encryption here, bench/push.py), and the result of
each endpoint host's public-address check for a minute. Encryption is per message (a fresh
ephemeral key and salt, as RFC 8291 requires) with `http_ece`.

Answers: 201/202 sent; 404/410 the device is gone (Deactivate); 429/503 and other 5xx retry
after `Retry-After`; 413 fails as too large; other 4xx fail with the reason and a strike on the
device, and the `FAILURE_LIMIT`th consecutive one deactivates it. Timeouts retry.
"""

from __future__ import annotations

import binascii
import hashlib
import ipaddress
import json
import math
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import certifi
import http_ece
import urllib3
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from urllib3.exceptions import HTTPError as TransportError

from app.services.vapid import b64url, b64url_decode, subject_for, subject_problem
from workers.channels.base import (
    Deactivate,
    Delivery,
    ProviderContext,
    Reached,
    Retry,
    SendResult,
    Strike,
)

# RFC 8291: push services must accept 4096 bytes of encrypted body; aes128gcm adds an 86-byte
# header, a 16-byte tag and a 1-byte delimiter, which leaves this much for the JSON payload.
MAX_PAYLOAD = 4096 - 86 - 16 - 1
# Without an expiry a message may wait four weeks for an offline device (pywebpush's default
# TTL of 0 would drop it at once).
DEFAULT_TTL = 28 * 24 * 3600
# The JWT says 24 h at most (RFC 8292 §2); it is reused for half of that, so a token handed
# out late in its reuse window still has hours left when the push service checks it.
JWT_LIFETIME = 24 * 3600 - 600
JWT_REUSE = 12 * 3600
# Consecutive permanent failures (4xx other than 404/410/413/429) before a device is dropped.
FAILURE_LIMIT = 5
TIMEOUT = urllib3.Timeout(connect=5.0, read=15.0)
POOL_SIZE = 32
HOST_CHECK_SECONDS = 60.0
MAX_SESSIONS = 64
MAX_RETRY_AFTER = 3600.0
TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
NO_SUBJECT = (
    "no VAPID subject: set VAPID_SUBJECT (or the project's settings.push.vapidSubject) to a "
    "real mailto: or https: contact; push services refuse placeholders"
)


def origin_of(endpoint: str) -> str:
    """`scheme://host[:port]` of an endpoint: the JWT's `aud` and the session pool key."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


# --- SSRF: only https endpoints on public addresses ---------------------------------------


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def endpoint_problem(endpoint: str, *, allow_private: bool) -> str | None:
    """Why Cairn must not POST to `endpoint` (None: it may): https on a public address,
    checked on every address its host resolves to. ALLOW_PRIVATE_ENDPOINTS=1 lifts the
    address rule and allows http (local push services in tests)."""
    return check_endpoint(endpoint, allow_private=allow_private)[0]


def check_endpoint(endpoint: str, *, allow_private: bool) -> tuple[str | None, str | None]:
    """(problem, address): `endpoint_problem`'s answer and, for a public https endpoint, the
    checked address to connect to (pinned, so a DNS answer changing between the check and
    the connection cannot point the POST at a private address)."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return "not a valid URL", None
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host:
        return "must be an https:// URL", None
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials", None
    if allow_private:
        return None, None
    if parts.scheme != "https":
        return "must be an https:// URL", None
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):  # gaierror, an IDNA error, a NUL in the host
        return f"host {host!r} does not resolve", None
    addresses = {str(info[4][0]) for info in infos}
    if not addresses:
        return f"host {host!r} does not resolve", None
    private = sorted(a for a in addresses if not _public(a))
    if private:
        return f"host {host!r} resolves to a non-public address ({private[0]})", None
    # IPv4 first: many hosts resolve AAAA without having an IPv6 route.
    return None, sorted(addresses, key=lambda a: (":" in a, a))[0]


class _HostChecks:
    """`endpoint_problem` per host, remembered for a minute (DNS can change, but not per
    message: a resolver round trip per push would halve throughput)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, bool], tuple[float, str | None, str | None]] = {}
        self._lock = threading.Lock()

    def check(self, endpoint: str, allow_private: bool) -> tuple[str | None, str | None]:
        """(problem, pinned address) as `check_endpoint` answers, cached per origin."""
        key = (origin_of(endpoint), allow_private)
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(key)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        problem, address = check_endpoint(endpoint, allow_private=allow_private)
        with self._lock:
            if len(self._seen) > 1024:
                self._seen.clear()
            self._seen[key] = (now + HOST_CHECK_SECONDS, problem, address)
        return problem, address


# --- VAPID (RFC 8292) ----------------------------------------------------------------------


def sign_jwt(private_key: ec.EllipticCurvePrivateKey, claims: Mapping[str, Any]) -> str:
    """An ES256 JWT (JOSE signature: r || s, 32 bytes each)."""
    header = b64url(json.dumps({"typ": "JWT", "alg": "ES256"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode()
    r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return f"{header}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class VapidHeaders:
    """`Authorization: vapid t=<JWT>, k=<key>` per (key, origin, subject), reused ~12 h."""

    def __init__(self) -> None:
        # Keyed by the public key, not the row id: ids repeat across databases (tests).
        self._tokens: dict[tuple[str, str, str], tuple[float, str]] = {}
        self._keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._lock = threading.Lock()
        self._signing = threading.Lock()
        # How many JWTs this process signed (tests and benchmarks read it).
        self.signed = 0

    def header(self, *, private_key: str, public_key: str, origin: str, subject: str) -> str:
        """The header for one push service origin, signed once and then reused."""
        now = time.time()
        cache_key = (public_key, origin, subject)
        with self._lock:
            hit = self._tokens.get(cache_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self._signing:  # one signature per miss, even with many threads missing at once
            return self._sign(cache_key, private_key, now)

    def _sign(self, cache_key: tuple[str, str, str], private_key: str, now: float) -> str:
        public_key, origin, subject = cache_key
        with self._lock:
            hit = self._tokens.get(cache_key)
            if hit is not None and hit[0] > now:
                return hit[1]
            signer = self._keys.get(public_key)
        if signer is None:
            scalar = int.from_bytes(b64url_decode(private_key), "big")
            signer = ec.derive_private_key(scalar, ec.SECP256R1())
        claims = {"aud": origin, "exp": int(now) + JWT_LIFETIME, "sub": subject}
        value = f"vapid t={sign_jwt(signer, claims)}, k={public_key}"
        with self._lock:
            self._keys[public_key] = signer
            if len(self._tokens) > 4096:
                self._tokens.clear()
            self._tokens[cache_key] = (now + JWT_REUSE, value)
            self.signed += 1
        return value

    def forget(self, public_key: str, origin: str) -> None:
        """Drop the tokens of a key at an origin (it answered 401/403: sign afresh next time)."""
        with self._lock:
            for cached in [k for k in self._tokens if k[0] == public_key and k[1] == origin]:
                del self._tokens[cached]


# --- the payload ---------------------------------------------------------------------------


def encrypt(payload: bytes, p256dh: str, auth: str) -> bytes:
    """aes128gcm (RFC 8291) for one subscriber: a fresh ephemeral key and salt per message.

    ValueError when the subscriber's keys are unusable (not a P-256 point, auth not 16 bytes).
    """
    try:
        receiver = b64url_decode(p256dh)
        secret = b64url_decode(auth)
    except (binascii.Error, ValueError):
        raise ValueError("subscription keys are not base64url") from None
    if len(receiver) != 65 or receiver[0] != 4 or len(secret) != 16:
        raise ValueError("subscription keys are not a P-256 point and a 16-byte auth secret")
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        payload, private_key=ephemeral, dh=receiver, auth_secret=secret, version="aes128gcm"
    )
    return body


def topic_of(collapse_key: str) -> str:
    """RFC 8030 `Topic`: at most 32 URL-safe base64 characters; longer or other keys hashed."""
    if TOPIC_RE.match(collapse_key):
        return collapse_key
    return b64url(hashlib.sha256(collapse_key.encode()).digest())[:32]


def ttl_of(expires_at: datetime | None, now: datetime) -> int | None:
    """Seconds left until `expires_at` (at least 1), DEFAULT_TTL without one, None if past."""
    if expires_at is None:
        return DEFAULT_TTL
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    left = (expires_at - now).total_seconds()
    if left <= 0:
        return None
    return min(max(1, math.ceil(left)), DEFAULT_TTL)


def notification(delivery: Delivery, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the service worker shows (`sw.js`): the url goes through the signed click link."""
    from app.services.links import click_url

    content = delivery.content
    tag = delivery.increment_id or f"cairn-{delivery.send_id or delivery.message_id}"
    out: dict[str, Any] = {
        "title": content.get("title") or "",
        "body": content.get("body") or "",
        "tag": tag,
        "messageId": delivery.message_id,
    }
    for name in ("icon", "image", "actions", "data"):
        if content.get(name):
            out[name] = content[name]
    if content.get("url"):
        out["url"] = click_url(settings, delivery.message_id, content["url"])
    if delivery.increment_count > 1:
        out["count"] = delivery.increment_count
    return out


def retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (delta or HTTP date), capped at an hour; None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 1.0), MAX_RETRY_AFTER)


def pinned_pool(url: str, address: str | None, **options: Any) -> urllib3.HTTPConnectionPool:
    """A connection pool for `url`'s origin; with `address` (the public address
    `check_endpoint` checked) it connects there and verifies the certificate for the host
    name, whatever DNS answers later."""
    parts = urlsplit(url)
    if address is not None and parts.scheme == "https" and parts.hostname:
        return urllib3.HTTPSConnectionPool(
            address,
            parts.port or 443,
            server_hostname=parts.hostname,
            assert_hostname=parts.hostname,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            **options,
        )
    extra = {"ca_certs": certifi.where()} if parts.scheme == "https" else {}
    pool: urllib3.HTTPConnectionPool = urllib3.connection_from_url(url, **options, **extra)
    return pool


# --- the provider --------------------------------------------------------------------------


class WebPushProvider:
    """Sends to browsers' push services directly: no Firebase, no third party."""

    name = "webpush"
    channels = frozenset({"push"})

    def __init__(self) -> None:
        self.vapid = VapidHeaders()
        self.hosts = _HostChecks()
        self._pools: OrderedDict[tuple[str, str | None], urllib3.HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()

    def pool_for(self, origin: str, address: str | None = None) -> urllib3.HTTPConnectionPool:
        """The keep-alive connection pool of a push service origin (no proxy, no redirects).

        With `address` (the checked public address of its host) the pool connects there and
        verifies the certificate for the host name, whatever DNS answers later.
        """
        key = (origin, address)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            common: dict[str, Any] = {
                "maxsize": POOL_SIZE,
                "block": False,
                "retries": False,
                "timeout": TIMEOUT,
            }
            pool = pinned_pool(origin, address, **common)
            self._pools[key] = pool
            while len(self._pools) > MAX_SESSIONS:
                _, old = self._pools.popitem(last=False)
                old.close()
            return pool

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        """Encrypt, sign and POST one message to its device's push service."""
        target = delivery.target
        if delivery.user_id is not None and target.get("user_id") != delivery.user_id:
            return SendResult("failed", "the device now belongs to another profile")
        subject = subject_for(ctx.settings, ctx.project_settings)
        if subject is None:
            return SendResult("failed", NO_SUBJECT)
        problem = subject_problem(subject)
        if problem is not None:
            return SendResult("failed", f"VAPID subject refused: {problem}")
        ttl = ttl_of(delivery.expires_at, datetime.now(UTC))
        if ttl is None:
            return SendResult("failed", "expired before it could be sent")
        shown = notification(delivery, ctx.settings)
        payload = json.dumps(shown, separators=(",", ":"), ensure_ascii=False).encode()
        if len(payload) > MAX_PAYLOAD:
            return SendResult(
                "failed",
                f"payload too large: {len(payload)} bytes, web push carries at most "
                f"{MAX_PAYLOAD} (shorten the title, body or data)",
            )
        endpoint = str(target["endpoint"])
        allow_private = bool(ctx.settings.get("ALLOW_PRIVATE_ENDPOINTS"))
        problem, address = self.hosts.check(endpoint, allow_private)
        if problem is not None:
            return self._permanent(target, f"endpoint refused: {problem}")
        try:
            body = encrypt(payload, str(target["p256dh"]), str(target["auth"]))
        except ValueError as err:
            return SendResult("failed", str(err), effects=(Deactivate(str(err)),))
        origin = origin_of(endpoint)
        headers = {
            "Authorization": self.vapid.header(
                private_key=str(target["vapid_private_key"]),
                public_key=str(target["vapid_public_key"]),
                origin=origin,
                subject=subject,
            ),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(ttl),
            # The name, not the pinned address the pool connects to.
            "Host": urlsplit(origin).netloc,
        }
        if delivery.urgency in URGENCIES:
            headers["Urgency"] = str(delivery.urgency)
        if delivery.increment_id:
            headers["Topic"] = topic_of(delivery.increment_id)
        try:
            response = self.pool_for(origin, address).urlopen(
                "POST", _target(endpoint), body=body, headers=headers, redirect=False, retries=False
            )
        except TransportError as err:
            raise Retry(f"push service unreachable: {type(err).__name__}") from None
        return self._result(response, target, shown, origin)

    def _result(
        self, response: urllib3.BaseHTTPResponse, target: Mapping[str, Any], shown: Any, origin: str
    ) -> SendResult:
        code = response.status
        detail = _detail(response)
        if code in (200, 201, 202):
            location = response.headers.get("Location")
            return SendResult(
                "sent",
                provider_id=location[:255] if location else None,
                rendered=shown,
                effects=(Reached(),) if target.get("failures") else (),
            )
        if code in (404, 410):
            reason = f"subscription gone ({code}{detail})"
            return SendResult("failed", reason, effects=(Deactivate(reason),))
        if code == 429 or code >= 500:
            raise Retry(
                f"push service answered {code}{detail}",
                retry_after(response.headers.get("Retry-After")),
            )
        if code == 413:
            return SendResult("failed", f"payload too large for the push service (413{detail})")
        if code in (401, 403):
            # A stale or refused JWT must not be reused for this origin.
            self.vapid.forget(str(target["vapid_public_key"]), origin)
        if 300 <= code < 400:
            return self._permanent(
                target, f"push service answered a redirect ({code}), not followed"
            )
        return self._permanent(target, f"push service refused it ({code}{detail})")

    def _permanent(self, target: Mapping[str, Any], reason: str) -> SendResult:
        """A permanent failure: one more strike, and the device's last one deactivates it."""
        if int(target.get("failures") or 0) + 1 >= FAILURE_LIMIT:
            return SendResult(
                "failed",
                reason,
                effects=(Deactivate(f"{FAILURE_LIMIT} permanent failures in a row: {reason}"),),
            )
        return SendResult("failed", reason, effects=(Strike(reason),))


def _target(endpoint: str) -> str:
    """The request target (origin-form: path and query) of an endpoint URL."""
    parts = urlsplit(endpoint)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _detail(response: urllib3.BaseHTTPResponse) -> str:
    """`: <reason>` from the push service's body (JSON `reason`/`message`, or text), short."""
    text = (response.data or b"").decode("utf-8", "replace").strip()
    if not text:
        return ""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        text = str(parsed.get("reason") or parsed.get("message") or parsed.get("error") or text)
    return ": " + " ".join(text.split())[:200]
