"""Amazon SNS HTTP(S) notifications: signature verification and subscription confirmation.

SNS signs each message with the key of the certificate at `SigningCertURL` (SignatureVersion 1:
SHA1withRSA, 2: SHA256withRSA) over `Key\\nValue\\n` lines of fixed keys. The certificate URL
must be https on `sns.<region>.amazonaws.com`, else anyone could sign with their own; with
ALLOW_PRIVATE_ENDPOINTS=1 (tests, a local peer) any URL is fetched. Certificates are cached.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
FETCH_TIMEOUT_SECONDS = 5.0
MAX_CACHED = 32

_cache: dict[str, rsa.RSAPublicKey] = {}
_lock = threading.Lock()


class SnsError(ValueError):
    """The message is not a validly signed SNS message (`unsigned`: no signature at all)."""

    def __init__(self, message: str, *, unsigned: bool = False) -> None:
        super().__init__(message)
        self.unsigned = unsigned


def trusted_url(url: str, *, allow_private: bool) -> bool:
    """An SNS URL we may fetch: https on sns.<region>.amazonaws.com (any http(s) if allowed)."""
    parts = urlsplit(url)
    if allow_private:
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    return parts.scheme == "https" and bool(SNS_HOST.match(parts.hostname or ""))


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical text SNS signs for this message's type."""
    keys = NOTIFICATION_KEYS if message.get("Type") == "Notification" else SUBSCRIPTION_KEYS
    return "".join(f"{k}\n{message[k]}\n" for k in keys if k in message).encode()


def _public_key(url: str) -> rsa.RSAPublicKey:
    with _lock:
        cached = _cache.get(url)
    if cached is not None:
        return cached
    try:
        response = requests.get(url, timeout=FETCH_TIMEOUT_SECONDS, allow_redirects=False)
        response.raise_for_status()
        key = x509.load_pem_x509_certificate(response.content).public_key()
    except (requests.RequestException, ValueError) as err:
        raise SnsError(f"signing certificate unavailable: {type(err).__name__}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsError("signing certificate is not RSA")
    with _lock:
        if len(_cache) >= MAX_CACHED:
            _cache.pop(next(iter(_cache)))
        _cache[url] = key
    return key


def verify(message: Mapping[str, Any], *, allow_private: bool) -> None:
    """Raise SnsError unless SNS signed `message` (the parsed JSON body)."""
    if not isinstance(message, Mapping) or message.get("Type") not in TYPES:
        raise SnsError("not an SNS message", unsigned=True)
    signature, url = message.get("Signature"), message.get("SigningCertURL")
    if not isinstance(signature, str) or not isinstance(url, str):
        raise SnsError("no SNS signature", unsigned=True)
    algorithm = HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise SnsError("unknown SignatureVersion")
    if not trusted_url(url, allow_private=allow_private):
        raise SnsError("SigningCertURL is not an SNS certificate URL")
    if any(not isinstance(message.get(k, ""), str) for k in (*SUBSCRIPTION_KEYS, "Subject")):
        raise SnsError("malformed SNS message")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SnsError("signature is not base64") from None
    key = _public_key(url)
    try:
        key.verify(raw, string_to_sign(message), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise SnsError("bad SNS signature") from None


def confirm_subscription(message: Mapping[str, Any], *, allow_private: bool) -> None:
    """Visit the SubscribeURL of a (verified) SubscriptionConfirmation; raises SnsError."""
    url = message.get("SubscribeURL")
    if not isinstance(url, str) or not trusted_url(url, allow_private=allow_private):
        raise SnsError("SubscribeURL is not an SNS URL")
    try:
        requests.get(url, timeout=FETCH_TIMEOUT_SECONDS, allow_redirects=False).raise_for_status()
    except requests.RequestException as err:
        raise SnsError(f"confirming the subscription failed: {type(err).__name__}") from None
