"""Configuration read from the environment, validated once at start."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _instance_file_secret(instance_dir: Path, name: str) -> str:
    """Read a secret kept under the instance folder, generating it on first use."""
    instance_dir.mkdir(parents=True, exist_ok=True)
    path = instance_dir / name
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(48)
    # Created with 0600 so the secret is not world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


@dataclass
class Settings:
    """Every setting Cairn reads; `from_env` fills and validates it."""

    INSTANCE_DIR: str = "./instance"
    DATABASE_URL: str = ""
    BROKER_URL: str = ""
    REDIS_URL: str = ""
    PUBLIC_URL: str = "http://localhost:8000"
    SECRET_KEY: str = ""
    PORT: int = 8000
    # Request limits (API.md: 413 beyond).
    MAX_CONTENT_LENGTH: int = 500 * 1024
    MAX_EVENT_BYTES: int = 32 * 1024
    MAX_BATCH: int = 1000
    # How far in the future / past a client timestamp may be before it is rejected.
    MAX_FUTURE_SKEW_SECONDS: int = 24 * 3600
    MAX_PAST_SKEW_SECONDS: int = 5 * 365 * 24 * 3600
    TOKEN_TTL_SECONDS: int = 3600
    ALLOW_PRIVATE_ENDPOINTS: bool = False
    # Delivery: a `sending` claim older than this is a crashed worker's and is retried.
    SENDING_LEASE_SECONDS: int = 300
    # A queued message whose job has not run after this long is enqueued again by the sweeper.
    REQUEUE_AFTER_SECONDS: int = 60
    # An event still unprocessed this long after it arrived (its job lost) is enqueued again,
    # and again every EVENT_REQUEUE_SECONDS while it stays unprocessed.
    EVENT_PENDING_SECONDS: float = 10.0
    EVENT_REQUEUE_SECONDS: float = 60.0
    # How deep a chain of rules may go (a rule's audience or attribute change firing others).
    RULE_CHAIN_MAX_DEPTH: int = 10
    # Provider sends in flight at once per worker process (workers.delivery).
    DELIVERY_SEND_THREADS: int = 16
    # Batches of an actor running at once per worker process; jobs arriving meanwhile are
    # merged into the next batch (workers.coalesce).
    EVENT_BATCH_RUNNERS: int = 2
    DELIVERY_BATCH_RUNNERS: int = 4
    SWEEP_INTERVAL_SECONDS: int = 1
    # Worker threads inside `cairn serve` when the broker is in-process.
    EMBEDDED_WORKER_THREADS: int = 4
    EMBEDDED_SCHEDULER: bool = True
    # SSE comment frames keep proxies from closing idle streams and reveal gone clients.
    SSE_HEARTBEAT_SECONDS: int = 15
    # Which provider sends each channel (names in workers/channels/providers); empty means
    # the channel's default (`sandbox` for email and SMS). A project's `settings.providers`
    # overrides these.
    EMAIL_PROVIDER: str = ""
    SMS_PROVIDER: str = ""
    PUSH_PROVIDER: str = ""
    INAPP_PROVIDER: str = ""
    # Email over SMTP: `smtp://user:pass@host:587?starttls=1`, `smtps://...:465`. Setting it
    # selects the `smtp` provider unless EMAIL_PROVIDER names another.
    SMTP_URL: str = ""
    SMTP_FROM: str = ""
    # mailto: address for List-Unsubscribe next to the https one (optional).
    UNSUBSCRIBE_MAILTO: str = ""
    # Later bounces and complaints (POST /webhooks/email/generic) are signed with this secret.
    EMAIL_WEBHOOK_SECRET: str = ""
    # SMS over Twilio; TWILIO_ACCOUNT_SID selects the `twilio` provider unless SMS_PROVIDER
    # names another. TWILIO_BASE_URL points it at a local peer.
    TWILIO_ACCOUNT_SID: str = ""
    TWILIO_AUTH_TOKEN: str = ""
    TWILIO_FROM: str = ""
    TWILIO_MESSAGING_SERVICE_SID: str = ""
    TWILIO_BASE_URL: str = "https://api.twilio.com"
    # The generic `webhook` SMS provider: JSON POSTed to this URL, signed with the secret.
    SMS_WEBHOOK_URL: str = ""
    SMS_WEBHOOK_SECRET: str = ""
    # Web push: the VAPID contact (a real mailto: or https: URL; placeholders are refused).
    VAPID_SUBJECT: str = ""
    # Per-provider send rates, messages per second: `smtp=14,twilio=1` (projects override).
    RATE_LIMITS: str = ""
    TESTING: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, overrides: dict[str, Any] | None = None) -> Settings:
        """Build settings from `CAIRN_`-less environment variables plus explicit overrides."""
        overrides = dict(overrides or {})
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            if f.name in overrides:
                values[f.name] = overrides.pop(f.name)
                continue
            raw = os.environ.get(f.name)
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, raw, f.type)
        settings = cls(**values, extra=overrides)
        settings._finish()
        return settings

    def _finish(self) -> None:
        instance = Path(self.INSTANCE_DIR).resolve()
        self.INSTANCE_DIR = str(instance)
        if not self.DATABASE_URL:
            instance.mkdir(parents=True, exist_ok=True)
            self.DATABASE_URL = f"sqlite:///{instance / 'cairn.db'}"
        self.DATABASE_URL = normalize_database_url(self.DATABASE_URL)
        for name in ("BROKER_URL", "REDIS_URL"):
            value = getattr(self, name)
            if value and urlparse(value).scheme not in ("redis", "rediss", "amqp", "amqps"):
                raise ConfigError(f"{name}: expected a redis:// or amqp:// URL, got {value!r}")
        parsed = urlparse(self.PUBLIC_URL)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"PUBLIC_URL: expected an http(s) URL, got {self.PUBLIC_URL!r}")
        self.PUBLIC_URL = self.PUBLIC_URL.rstrip("/")
        if not 0 < self.PORT < 65536:
            raise ConfigError(f"PORT: expected 1-65535, got {self.PORT}")
        if not self.SECRET_KEY:
            self.SECRET_KEY = _instance_file_secret(instance, "secret_key")
        elif len(self.SECRET_KEY) < 16:
            raise ConfigError("SECRET_KEY: must be at least 16 characters")
        self._check_providers()
        if self.VAPID_SUBJECT:
            from app.services.vapid import subject_problem

            problem = subject_problem(self.VAPID_SUBJECT)
            if problem is not None:
                raise ConfigError(f"VAPID_SUBJECT: {problem}")
        if self.SMTP_URL:
            from workers.channels.providers.smtp import SmtpConfigError, parse_smtp_url

            try:
                parse_smtp_url(self.SMTP_URL)
            except SmtpConfigError as err:
                raise ConfigError(str(err)) from None
        if self.SMTP_FROM and "@" not in self.SMTP_FROM:
            raise ConfigError(f"SMTP_FROM: expected an email address, got {self.SMTP_FROM!r}")
        if self.RATE_LIMITS:
            try:
                parse_rate_limits(self.RATE_LIMITS)
            except ValueError as err:
                raise ConfigError(f"RATE_LIMITS: {err}") from None

    def _check_providers(self) -> None:
        """An unknown provider name (or one that does not send its channel) stops the start."""
        from workers.channels import CHANNELS
        from workers.channels.providers import provider_problem, setting_name

        for channel in CHANNELS:
            name = setting_name(channel)
            value = getattr(self, name, None) or self.extra.get(name)
            if value:
                problem = provider_problem(channel, value)
                if problem is not None:
                    raise ConfigError(f"{name}: {problem}")

    def as_flask(self) -> dict[str, Any]:
        """The settings as a Flask config mapping."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


def parse_rate_limits(raw: str) -> dict[str, float]:
    """`smtp=14,twilio=1` → {provider: messages per second}; ValueError naming the bad part."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, value = part.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or not name.strip() or not 0 < rate < 1e6:
            raise ValueError(f"expected provider=messages-per-second pairs, got {part!r}")
        out[name.strip()] = rate
    return out


def normalize_database_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` and use the psycopg 3 driver."""
    scheme = url.split(":", 1)[0]
    if scheme in ("postgres", "postgresql"):
        return "postgresql+psycopg:" + url.split(":", 1)[1]
    if scheme.startswith("postgresql+") or scheme.startswith("sqlite"):
        return url
    raise ConfigError(f"DATABASE_URL: expected sqlite:/// or postgresql:// URL, got {url!r}")


def _coerce(name: str, raw: str, type_: Any) -> Any:
    kind = str(type_)
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if kind == "float":
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not value >= 0 or value == float("inf"):
            raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}")
        return value
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected 1/0/true/false, got {raw!r}")
    return raw
