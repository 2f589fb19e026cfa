"""VAPID (RFC 8292): the project's key pairs and the contact subject every push service sees.

Each project has key pairs (`VapidKey`); the newest unretired one is the application server
key browsers subscribe with (`GET /v1/push/vapid-key`). Generating a new one (`cairn vapid
generate`) rotates: new subscriptions get it, existing ones keep signing with theirs.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Project
from app.models.base import utcnow
from app.models.channels import VapidKey

# Contacts push services refuse (Apple answers 403 BadJwtToken): documentation domains and
# local names. A subject must reach a person who can be told about a misbehaving sender.
PLACEHOLDER_DOMAINS = frozenset(
    {"example.com", "example.org", "example.net", "localhost", "localhost.localdomain"}
)
PLACEHOLDER_SUFFIXES = (".example", ".invalid", ".localhost", ".local", ".test", ".example.com")


def _placeholder(host: str) -> bool:
    host = host.lower().rstrip(".")
    return (
        not host
        or host in PLACEHOLDER_DOMAINS
        or host.endswith(PLACEHOLDER_SUFFIXES)
        or "." not in host
        or host.replace(".", "").isdigit()
    )


def subject_problem(subject: str) -> str | None:
    """Why `subject` cannot be a VAPID subject (None: it can): a real mailto: or https: URL."""
    if subject.startswith("mailto:"):
        address = subject[len("mailto:") :]
        local, at, domain = address.partition("@")
        if not at or not local or _placeholder(domain):
            return f"{subject!r} is not a real contact address (mailto:you@your-domain)"
        return None
    parsed = urlparse(subject)
    if parsed.scheme != "https" or _placeholder(parsed.hostname or ""):
        return f"{subject!r} must be a real mailto: or https: contact (https://your-domain/...)"
    return None


# --- keys -----------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """Unpadded base64url, the encoding of every key in the Push API."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; ValueError (binascii.Error) if it is not."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key_pair() -> tuple[str, str]:
    """A fresh P-256 pair: (public uncompressed point, private scalar), both base64url."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return b64url(public), b64url(private)


def generate_key(session: Session, *, project_id: int) -> VapidKey:
    """A new key for the project: new subscriptions get it, existing ones keep theirs."""
    public, private = new_key_pair()
    key = VapidKey(
        project_id=project_id, public_key=public, private_key=private, created_at=utcnow()
    )
    session.add(key)
    session.flush()
    return key


def current_key(session: Session, *, project_id: int) -> VapidKey:
    """The project's newest unretired key, generated on first need."""
    key = _newest(session, project_id)
    if key is not None:
        return key
    # Serialise first use per project (PostgreSQL), so two requests do not mint two keys.
    session.scalar(select(Project.id).where(Project.id == project_id).with_for_update())
    return _newest(session, project_id) or generate_key(session, project_id=project_id)


def _newest(session: Session, project_id: int) -> VapidKey | None:
    return session.scalar(
        select(VapidKey)
        .where(VapidKey.project_id == project_id, VapidKey.retired_at.is_(None))
        .order_by(VapidKey.id.desc())
        .limit(1)
    )


def key_by_public(session: Session, *, project_id: int, public_key: str) -> VapidKey | None:
    """The project's unretired key with this application server key, if any."""
    return session.scalar(
        select(VapidKey).where(
            VapidKey.project_id == project_id,
            VapidKey.public_key == public_key,
            VapidKey.retired_at.is_(None),
        )
    )


def ensure_keys(session: Session) -> int:
    """Give every project without a key its first one (at start); how many were made."""
    have = select(VapidKey.project_id).where(VapidKey.retired_at.is_(None))
    made = 0
    for project_id in session.scalars(select(Project.id).where(Project.id.not_in(have))):
        generate_key(session, project_id=project_id)
        made += 1
    return made


def subject_for(settings: Mapping[str, Any], project_settings: Mapping[str, Any]) -> str | None:
    """The VAPID subject: the project's `push.vapidSubject`, else VAPID_SUBJECT, else None."""
    push = project_settings.get("push") or {}
    subject = push.get("vapidSubject") if isinstance(push, Mapping) else None
    return subject or settings.get("VAPID_SUBJECT") or None
