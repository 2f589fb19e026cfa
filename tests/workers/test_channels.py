"""The channel and provider registries: one place per channel, providers chosen by setting."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import ClassVar

import pytest
from sqlalchemy import select

from app.config import ConfigError, Settings
from app.db import db
from app.models.message import Message, Send
from tests.conftest import wait_for
from workers.channels import CHANNELS, reachable_channels
from workers.channels.base import Delivery, ProviderContext, SendResult


def _profile(**kwargs):
    return SimpleNamespace(
        id=7,
        external_id=kwargs.get("external_id"),
        email=kwargs.get("email"),
        phone=kwargs.get("phone"),
    )


def test_the_registry_holds_every_channel_the_filter_language_and_templates_know():
    from app.rendering import CHANNELS as RENDERED
    from journeys.filters import CHANNELS as FILTER_CHANNELS

    assert set(CHANNELS) == set(FILTER_CHANNELS) == {"inapp", "email", "sms", "push"}
    assert set(RENDERED) == set(CHANNELS)
    for name, channel in CHANNELS.items():
        assert channel.name == name
        assert RENDERED[name].fields == channel.content.fields


def test_addresses_and_reachability_per_channel():
    assert reachable_channels(_profile(email="a@x.io")) == {"email"}
    assert reachable_channels(_profile(email="")) == frozenset()
    assert reachable_channels(_profile(phone="+15550001")) == {"sms"}
    assert reachable_channels(_profile(external_id="u1")) == {"inapp"}
    assert CHANNELS["inapp"].address_of(_profile(external_id="u1")) == "user:7"
    # A profile alone reaches nobody on push: its devices (push_subscriptions) do, per device.
    full = _profile(external_id="u1", email="a@x.io", phone="+15550001")
    assert "push" not in reachable_channels(full)
    assert CHANNELS["email"].normalize_address("Ann@Example.com", None) == "ann@example.com"
    assert CHANNELS["sms"].normalize_address("(415) 555-0123", "US") == "+14155550123"


def test_an_unknown_provider_in_the_environment_stops_the_start(monkeypatch, tmp_path):
    monkeypatch.setenv("SMS_PROVIDER", "nope")
    with pytest.raises(ConfigError, match="SMS_PROVIDER: unknown provider 'nope'"):
        Settings.from_env({"INSTANCE_DIR": str(tmp_path)})
    monkeypatch.setenv("SMS_PROVIDER", "inapp")
    with pytest.raises(ConfigError, match="SMS_PROVIDER: provider 'inapp' does not send sms"):
        Settings.from_env({"INSTANCE_DIR": str(tmp_path)})
    monkeypatch.setenv("SMS_PROVIDER", "sandbox")
    assert Settings.from_env({"INSTANCE_DIR": str(tmp_path)}).as_flask()["SMS_PROVIDER"] == (
        "sandbox"
    )


class Recording:
    """A test provider for email and SMS that remembers what it sent."""

    name = "recording"
    channels = frozenset({"email", "sms"})
    sent: ClassVar[list[tuple[str, str]]] = []
    lock = threading.Lock()

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        with self.lock:
            self.sent.append((delivery.channel, delivery.address))
        return SendResult("sent", provider_id=f"rec-{delivery.message_id}")


@pytest.fixture
def recording(monkeypatch):
    """The recording provider, registered like any provider (one line in PROVIDERS)."""
    from workers.channels import providers

    monkeypatch.setitem(providers.PROVIDERS, "recording", f"{__name__}:Recording")
    Recording.sent = []
    return Recording


@pytest.fixture
def sms_provider_env(monkeypatch, recording):
    """SMS_PROVIDER set in the environment before the app starts (was ignored before)."""
    monkeypatch.setenv("SMS_PROVIDER", "recording")
    return recording


def _providers(app) -> dict[str, str | None]:
    with app.app_context():
        return dict(db.session.execute(select(Message.channel, Message.provider)).tuples().all())


def test_sms_provider_from_the_environment_is_used(sms_provider_env, app, api, workers):
    api.post("/v1/users", json={"userId": "u", "email": "u@example.com", "phone": "+14155550123"})
    r = api.post("/v1/notify", json={"userId": "u", "body": "hi", "channels": ["email", "sms"]})
    assert r.status_code == 202, r.json
    wait_for(lambda: len(_providers(app)) == 2 and None not in _providers(app).values())
    assert _providers(app) == {"email": "sandbox", "sms": "recording"}
    assert sms_provider_env.sent == [("sms", "+14155550123")]
    sandbox = api.get("/v1/sandbox/messages").json["data"]
    assert [m["channel"] for m in sandbox] == ["email"]


def test_a_project_overrides_the_provider_and_unknown_names_are_a_422(recording, app, api, workers):
    for bad, why in (
        ({"email": "nope"}, "email: unknown provider 'nope'"),
        ({"push": "sandbox"}, "push: provider 'sandbox' does not send push"),
        ({"fax": "sandbox"}, "fax: unknown channel; known: inapp, email, sms, push"),
    ):
        r = api.patch("/v1/project", json={"settings": {"providers": bad}})
        assert r.status_code == 422, r.json
        [(field, [message])] = r.json["errors"].items()
        assert field.startswith("settings.providers") and why in message, r.json
    r = api.patch("/v1/project", json={"settings": {"providers": {"email": "recording"}}})
    assert r.status_code == 200, r.json
    assert r.json["settings"]["providers"] == {"email": "recording"}
    api.post("/v1/users", json={"userId": "u", "email": "u@example.com"})
    api.post("/v1/notify", json={"userId": "u", "body": "hi", "channels": ["email", "inapp"]})
    wait_for(lambda: len(_providers(app)) == 2 and None not in _providers(app).values())
    assert _providers(app) == {"email": "recording", "inapp": "inapp"}
    assert recording.sent == [("email", "u@example.com")]


@pytest.mark.parametrize(
    "target", [{"broadcast": True}, {"segment": {"attr": "userId", "op": "exists"}}]
)
def test_users_without_devices_are_unreachable_on_push_for_segment_and_direct_sends(
    app, api, workers, target
):
    api.post("/v1/users", json=[{"userId": "a"}, {"userId": "b", "email": "b@example.com"}])
    direct = api.post("/v1/notify", json={"userIds": ["a", "b"], "body": "x", "channels": ["push"]})
    assert direct.status_code == 202
    assert (direct.json["messages"], direct.json["unreachable"]) == (0, {"push": 2})
    r = api.post("/v1/notify", json={**target, "body": "x", "channels": ["push", "inapp"]})
    assert r.status_code == 202, r.json

    def done() -> Send | None:
        with app.app_context():
            send = db.session.get(Send, r.json["id"])
            return send if send.status == "done" else None

    send = wait_for(done)
    assert send.recipients == 2
    with app.app_context():
        rows = db.session.execute(select(Message.channel, Message.status)).tuples().all()
    # Only in-app rows: no push message addressed `user:<id>` that can only fail.
    assert sorted(rows, key=str)[0][0] == "inapp" and {c for c, _ in rows} == {"inapp"}


@pytest.mark.parametrize(
    "subject",
    ["mailto:admin@example.com", "mailto:ops@localhost", "https://localhost/x", "http://acme.io"],
)
def test_a_placeholder_vapid_subject_stops_the_start(monkeypatch, tmp_path, subject):
    monkeypatch.setenv("VAPID_SUBJECT", subject)
    with pytest.raises(ConfigError, match=r"VAPID_SUBJECT: .*real"):
        Settings.from_env({"INSTANCE_DIR": str(tmp_path)})
    monkeypatch.setenv("VAPID_SUBJECT", "mailto:push-ops@acme.io")
    assert Settings.from_env({"INSTANCE_DIR": str(tmp_path)}).VAPID_SUBJECT.endswith("acme.io")


def test_rate_limits_are_checked_at_start(monkeypatch, tmp_path):
    from app.config import parse_rate_limits

    assert parse_rate_limits("smtp=14, twilio=0.5") == {"smtp": 14.0, "twilio": 0.5}
    monkeypatch.setenv("RATE_LIMITS", "smtp=fast")
    with pytest.raises(ConfigError, match=r"RATE_LIMITS: .*'smtp=fast'"):
        Settings.from_env({"INSTANCE_DIR": str(tmp_path)})


def test_credentials_select_their_provider_unless_one_is_named():
    from workers.channels.providers import provider_for

    assert provider_for("email", {}) == "sandbox"
    assert provider_for("email", {"SMTP_URL": "smtp://127.0.0.1:25"}) == "smtp"
    assert provider_for("email", {"SMTP_URL": "smtp://h", "EMAIL_PROVIDER": "sandbox"}) == (
        "sandbox"
    )
    assert provider_for("sms", {"TWILIO_ACCOUNT_SID": "AC1"}) == "twilio"
    # The project's own choice wins over everything.
    assert provider_for(
        "sms", {"TWILIO_ACCOUNT_SID": "AC1"}, {"providers": {"sms": "sandbox"}}
    ) == ("sandbox")


def test_channel_settings_of_a_project_are_validated_naming_the_field(app, api):
    for bad, field in (
        ({"push": {"vapidSubject": "mailto:admin@example.com"}}, "settings.push.vapidSubject"),
        ({"email": {"from": "not an address"}}, "settings.email.from"),
        ({"sms": {"helpText": ""}}, "settings.sms.helpText"),
        ({"topics": [{"key": "News!", "name": "News"}]}, "settings.topics[0].key"),
        (
            {"topics": [{"key": "news", "name": "A"}, {"key": "news", "name": "B"}]},
            "settings.topics",
        ),
        ({"rateLimits": {"carrier-pigeon": 1}}, "settings.rateLimits"),
        ({"rateLimits": {"smtp": 0}}, "settings.rateLimits"),
        ({"rateLimits": {"smtp": True}}, "settings.rateLimits"),
    ):
        r = api.patch("/v1/project", json={"settings": bad})
        assert r.status_code == 422, (bad, r.json)
        assert field in r.json["errors"], (bad, r.json["errors"])
    good = {
        "push": {"vapidSubject": "mailto:push@acme.io"},
        "email": {"from": "news@acme.io", "fromName": "Acme", "replyTo": "help@acme.io"},
        "sms": {"from": "+14155550100", "helpText": "Acme alerts. Reply STOP to stop."},
        "topics": [{"key": "news", "name": "News"}, {"key": "offers", "name": "Offers"}],
        "rateLimits": {"sandbox": 14},
    }
    r = api.patch("/v1/project", json={"settings": good})
    assert r.status_code == 200, r.json
    assert r.json["settings"]["email"] == good["email"]
    assert r.json["settings"]["topics"][1] == {"key": "offers", "name": "Offers", "default": False}


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("SMTP_URL", "http://mail.acme.io", "SMTP_URL: expected smtp:// or smtps://"),
        ("SMTP_URL", "smtps://mail.acme.io?starttls=1", "SMTP_URL: smtps:// is TLS already"),
        ("SMTP_FROM", "acme", "SMTP_FROM: expected an email address"),
    ],
)
def test_a_bad_smtp_setting_stops_the_start(monkeypatch, tmp_path, name, value, why):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=why):
        Settings.from_env({"INSTANCE_DIR": str(tmp_path)})
