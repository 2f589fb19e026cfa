"""Delivery holds no transaction while a provider sends: ingestion goes on during a slow send."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from app.db import db
from app.models.message import Message
from tests.conftest import wait_for
from workers.channels.base import Delivery, ProviderContext, SendResult, Suppress


class Blocking:
    """An email provider that blocks until the test releases it (at most 10 s)."""

    name = "blocking"
    channels = frozenset({"email"})
    entered = threading.Event()
    release = threading.Event()
    returned = threading.Event()

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        type(self).entered.set()
        type(self).release.wait(timeout=10)
        type(self).returned.set()
        return SendResult("sent", provider_id=f"blocking-{delivery.message_id}")


@pytest.fixture
def blocking(monkeypatch):
    """The blocking provider, registered through the provider registry."""
    from workers.channels import providers

    monkeypatch.setitem(providers.PROVIDERS, "blocking", f"{__name__}:Blocking")
    Blocking.entered, Blocking.release, Blocking.returned = (
        threading.Event(),
        threading.Event(),
        threading.Event(),
    )
    yield Blocking
    Blocking.release.set()


def test_a_provider_blocking_does_not_block_a_concurrent_event_post(blocking, app, api, workers):
    r = api.patch("/v1/project", json={"settings": {"providers": {"email": "blocking"}}})
    assert r.status_code == 200, r.json
    api.post("/v1/users", json={"userId": "u", "email": "u@example.com"})
    r = api.post("/v1/notify", json={"userId": "u", "body": "hi", "channels": ["email"]})
    assert r.status_code == 202, r.json
    assert blocking.entered.wait(timeout=30), "the provider was never called"
    # The send is in flight. Before the split, the delivery job's open transaction held
    # SQLite's write lock here, so this request waited until the provider returned.
    r = api.post("/v1/events", json={"name": "clicked", "userId": "u"})
    assert r.status_code == 202, r.json
    assert not blocking.returned.is_set(), "the event was stored only after the send finished"
    blocking.release.set()

    def status() -> str | None:
        with app.app_context():
            return db.session.scalar(select(Message.status))

    wait_for(lambda: status() == "sent")


class Bouncing:
    """An email provider that reports a hard bounce: failed, and suppress the address."""

    name = "bouncing"
    channels = frozenset({"email"})

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        return SendResult("failed", "550 no such user", effects=(Suppress("bounced"),))


def test_provider_effects_are_applied_by_the_record_step(monkeypatch, app, api, workers):
    from workers.channels import providers

    monkeypatch.setitem(providers.PROVIDERS, "bouncing", f"{__name__}:Bouncing")
    api.patch("/v1/project", json={"settings": {"providers": {"email": "bouncing"}}})
    api.post("/v1/users", json={"userId": "u", "email": "u@example.com"})
    api.post("/v1/notify", json={"userId": "u", "body": "hi", "channels": ["email"]})

    def statuses() -> list[tuple[str, str | None]]:
        with app.app_context():
            rows = db.session.execute(select(Message.status, Message.reason).order_by(Message.id))
            return list(rows.tuples())

    wait_for(lambda: statuses() == [("failed", "550 no such user")])
    listed = api.get("/v1/suppressions").json["data"]
    assert [(s["channel"], s["address"], s["reason"]) for s in listed] == [
        ("email", "u@example.com", "bounced")
    ]
    api.post("/v1/notify", json={"userId": "u", "body": "again", "channels": ["email"]})
    wait_for(lambda: len(statuses()) == 2 and statuses()[1][0] == "suppressed")
    assert statuses()[1] == ("suppressed", "address suppressed (bounced)")
