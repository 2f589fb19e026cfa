"""Journeys end to end with real workers, on both databases: a local-time wait, an "email not
opened → SMS" fallback at a Twilio-shaped peer, an in-app read resuming a wait for
`message.opened`, and an A/B split's proportions on 10K users.

Events go through the API and the event processor (in-process Dramatiq workers); due runs are
advanced by the sweeper's real code, called by the test (`sweep` at a chosen instant where the
wait is hours long, the `sweeper` fixture at the real time otherwise).
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from app.db import db
from app.models import Event, Message, User
from app.models.base import utcnow
from app.models.journey import JourneyRun
from app.models.message import Send
from app.services import journey_runs
from journeys.steps.split import split_bucket
from tests.conftest import wait_for
from tests.support.smtp_sink import SmtpSink
from tests.support.twilio_peer import TwilioPeer
from tests.workers.test_journey_runs import _store_journey, _track
from tests.workers.test_twilio import SENDER

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


@pytest.fixture(autouse=True)
def _fresh_caches():
    journey_runs.forget()
    yield
    journey_runs.forget()


@pytest.fixture(autouse=True, scope="module")
def _close_hubs():
    yield
    from app.realtime import close_hubs

    close_hubs()


def _runs(app, journey_id):
    with app.app_context():
        return list(
            db.session.execute(
                select(User.external_id, JourneyRun)
                .join(User, User.id == JourneyRun.user_id)
                .where(JourneyRun.journey_id == journey_id)
                .order_by(JourneyRun.id)
            ).tuples()
        )


def _pending_events(app) -> int:
    with app.app_context():
        return db.session.scalar(
            select(func.count()).select_from(Event).where(Event.processed_at.is_(None))
        )


def _sweep_at(app, now: datetime):
    from workers.sweeper import sweep

    with app.app_context(), db.sessionmaker() as session:
        return sweep(session, now, dict(app.config)).counts.get("journey_wakes", 0)


# --- a wait until a time of day in the user's zone ------------------------------------------


def _next_local(after: datetime, hour: int, zone: str) -> datetime:
    """The first `hour`:00 in `zone` at or after `after`, as a UTC instant."""
    tz = ZoneInfo(zone)
    day = after.astimezone(tz).date()
    for offset in (0, 1):
        target = datetime.combine(day + timedelta(days=offset), dtime(hour), tzinfo=tz)
        if target >= after:
            return target.astimezone(UTC)
    raise AssertionError("unreachable")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def test_a_local_time_wait_wakes_each_user_at_that_time_in_their_zone(app, api, project, workers):
    """`wait until 09:00`: a New York user, a Tokyo user and one without a zone (the project's,
    Europe/Paris, from its quiet-hours settings) each wake at 09:00 on their own clock: three
    instants hours apart. The sweeper's code runs at chosen instants (a second before and
    after each one) instead of the test waiting for the day."""
    r = api.patch(
        "/v1/project",
        json={
            "settings": {
                "quietHours": {"start": "23:00", "end": "06:00", "timezone": "Europe/Paris"}
            }
        },
    )
    assert r.status_code == 200, r.json
    zones = {"ny": "America/New_York", "tokyo": "Asia/Tokyo", "nozone": None}
    users = [{"userId": u, **({"timezone": z} if z else {})} for u, z in zones.items()]
    assert api.post("/v1/users", json=users).status_code == 200
    t = {"name": "morning", "channels": {"inapp": {"en": {"title": "Morning", "body": "hi"}}}}
    assert api.post("/v1/templates", json=t).status_code == 201
    journey_id = _store_journey(
        app,
        project.id,
        {
            "name": "good morning",
            "trigger": {"event": "signup"},
            "steps": [
                {"id": "nine", "type": "wait", "until": {"time": "09:00"}, "next": "hello"},
                {
                    "id": "hello",
                    "type": "send",
                    "channel": "inapp",
                    "template": "morning",
                    "next": "end",
                },
                {"id": "end", "type": "exit"},
            ],
        },
    )
    for user_id in zones:
        _track(api, user_id, "signup")
    wait_for(lambda: len(_runs(app, journey_id)) == 3 and not _pending_events(app), timeout=60)
    runs = {user_id: run for user_id, run in _runs(app, journey_id)}
    expected = {
        user_id: _next_local(_aware(runs[user_id].entered_at), 9, zone or "Europe/Paris")
        for user_id, zone in zones.items()
    }
    for user_id, run in runs.items():
        assert (run.status, run.step) == ("waiting", "nine")
        assert _aware(run.wake_at) == expected[user_id], user_id
    assert len(set(expected.values())) == 3  # three different instants
    woken: list[str] = []
    for user_id, at in sorted(expected.items(), key=lambda item: item[1]):
        assert _sweep_at(app, at - timedelta(seconds=1)) == 0
        assert _sweep_at(app, at + timedelta(seconds=1)) == 1
        woken.append(user_id)
        states = {u: (r.status, r.exit_reason) for u, r in _runs(app, journey_id)}
        for other in zones:
            if other in woken:
                assert states[other] == ("exited", 'exit step "end"'), other
            else:
                assert states[other] == ("waiting", None), other
    with app.app_context():
        sent_to = db.session.scalars(
            select(User.external_id)
            .join(JourneyRun, JourneyRun.user_id == User.id)
            .join(Send, Send.journey_run_id == JourneyRun.id)
            .order_by(Send.id)
        )
        assert list(sent_to) == woken


# --- "not opened in time → SMS" --------------------------------------------------------------

OPEN_TIMEOUT = "5s"


@pytest.fixture
def peers(app, request):
    """A Twilio peer and an SMTP sink, the app's settings pointing at them, then the
    workers (they read the settings when they start)."""
    twilio = TwilioPeer().start()
    request.addfinalizer(twilio.stop)
    smtp = SmtpSink().start()
    request.addfinalizer(smtp.stop)
    app.config.update(
        TWILIO_ACCOUNT_SID=twilio.account_sid,
        TWILIO_AUTH_TOKEN=twilio.auth_token,
        TWILIO_FROM=SENDER,
        TWILIO_BASE_URL=twilio.url,
        SMTP_URL=smtp.url,
        SMTP_FROM="Acme News <news@acme-mail.com>",
        PUBLIC_URL="https://cairn.example.com",
    )
    request.getfixturevalue("workers")
    return twilio, smtp


def test_an_unopened_email_is_followed_by_an_sms(app, api, client, project, peers, sweeper):
    """Send an email, wait for `message.opened`, else an SMS. One person opens the email
    through its tracking pixel (the real path: GET /t/o/<token>.gif, a browser's agent), so
    their run goes on by `next` and gets no SMS; the other's wait times out and the SMS
    reaches the Twilio peer.

    The timeout is 5 s, not the issue's 2 s: Cairn counts an open within 2 s of sending as a
    machine's (engagement.TOO_FAST: prefetchers), which moves nothing, so no person's open
    could ever beat a 2 s timeout. The test opens 2.2 s after the send."""
    twilio, smtp = peers
    people = [
        {"userId": "reader", "email": "reader@acme-mail.com", "phone": "+14155550101"},
        {"userId": "ignorer", "email": "ignorer@acme-mail.com", "phone": "+14155550102"},
    ]
    assert api.post("/v1/users", json=people).status_code == 200
    for template in (
        {"name": "news", "channels": {"email": {"en": {"subject": "News", "html": "<p>Hi</p>"}}}},
        {"name": "nudge", "channels": {"sms": {"en": {"body": "You have news"}}}},
    ):
        r = api.post("/v1/templates", json=template)
        assert r.status_code == 201, r.json
    journey_id = _store_journey(
        app,
        project.id,
        {
            "name": "email then sms",
            "trigger": {"api": True},
            "steps": [
                {
                    "id": "email",
                    "type": "send",
                    "channel": "email",
                    "template": "news",
                    "next": "w",
                },
                {
                    "id": "w",
                    "type": "waitForEvent",
                    "event": "message.opened",
                    "where": {"attr": "channel", "op": "eq", "value": "email"},
                    "timeout": OPEN_TIMEOUT,
                    "next": "read",
                    "onTimeout": "sms",
                },
                {"id": "sms", "type": "send", "channel": "sms", "template": "nudge", "next": "end"},
                {"id": "read", "type": "exit"},
                {"id": "end", "type": "exit"},
            ],
        },
    )
    for user_id in ("reader", "ignorer"):
        r = api.post(f"/v1/journeys/{journey_id}/enter", json={"userId": user_id})
        assert r.status_code < 300, r.json

    def sent_email():
        with app.app_context():
            return db.session.execute(
                select(Message.id, Message.sent_at)
                .join(User, User.id == Message.user_id)
                .where(User.external_id == "reader", Message.status == "sent")
            ).first()

    message_id, sent_at = wait_for(sent_email, timeout=60)
    [mail] = wait_for(lambda: [m for m in smtp.received() if "reader@" in m.rcpt_tos[0]])
    html = mail.message.get_body(("html",)).get_content()
    found = re.search(r"https://cairn\.example\.com(/t/o/[^\"]+\.gif)", html)
    assert found, html
    # A person, not a prefetcher: after engagement.TOO_FAST.
    time.sleep(max(0.0, (_aware(sent_at) + timedelta(seconds=2.2) - utcnow()).total_seconds()))
    assert client.get(found.group(1), headers={"User-Agent": BROWSER}).status_code == 200
    wait_for(lambda: dict((u, r.status) for u, r in _runs(app, journey_id))["reader"] == "exited")

    def nudged():
        sweeper()
        return twilio.messages

    [sms] = wait_for(nudged, timeout=60)
    assert sms.value("To") == "+14155550102" and sms.value("Body") == "You have news"
    runs = {u: r for u, r in _runs(app, journey_id)}
    assert runs["reader"].exit_reason == 'exit step "read"'
    wait_for(lambda: _runs(app, journey_id)[1][1].status == "exited", timeout=60)
    runs = {u: r for u, r in _runs(app, journey_id)}
    assert runs["ignorer"].exit_reason == 'exit step "end"'
    for _ in range(3):  # the reader's run has nothing more to send, now or later
        sweeper()
    assert len(twilio.messages) == 1
    with app.app_context():
        opened = db.session.scalar(select(Message.status).where(Message.id == message_id))
    assert opened == "opened"


# --- an in-app read heard by a journey and a rule ------------------------------------------


def test_an_inapp_read_resumes_a_journey_and_fires_a_rule(app, api, client, project, workers):
    """An in-app message read through the inbox API (`POST /v1/inbox/{id}/read`, the end
    user's userHash) is a `message.opened` like an email's pixel: the journey waiting for it
    goes on by `next`, and a rule on `message.opened` fires. The read comes the moment the
    message is in the inbox, with no 2 s pause: engagement.TOO_FAST is for pixels, not for
    a person's own call."""
    from app.services.projects import user_hash

    assert api.post("/v1/users", json={"userId": "ann"}).status_code in (200, 201)
    news = {"name": "news", "channels": {"inapp": {"en": {"title": "News", "body": "Hi"}}}}
    assert api.post("/v1/templates", json=news).status_code == 201
    assert api.post("/v1/audiences", json={"name": "in-app readers"}).status_code == 201
    rule = {
        "name": "read in app",
        "when": {
            "event": "message.opened",
            "where": {"attr": "channel", "op": "eq", "value": "inapp"},
        },
        "then": [{"addToAudience": "in-app readers"}],
    }
    r = api.post("/v1/rules", json=rule)
    assert r.status_code == 201, r.json
    journey_id = _store_journey(
        app,
        project.id,
        {
            "name": "in-app then wait",
            "trigger": {"api": True},
            "steps": [
                {"id": "send", "type": "send", "channel": "inapp", "template": "news", "next": "w"},
                {
                    "id": "w",
                    "type": "waitForEvent",
                    "event": "message.opened",
                    "where": {"attr": "channel", "op": "eq", "value": "inapp"},
                    "timeout": "1h",
                    "next": "read",
                    "onTimeout": "unread",
                },
                {"id": "read", "type": "exit"},
                {"id": "unread", "type": "exit"},
            ],
        },
    )
    r = api.post(f"/v1/journeys/{journey_id}/enter", json={"userId": "ann"})
    assert r.status_code < 300, r.json
    params = {
        "key": project.publishable,
        "userId": "ann",
        "userHash": user_hash(project.identity_secret, "ann"),
    }
    [item] = wait_for(lambda: client.get("/v1/inbox", query_string=params).json["data"])
    assert client.post(f"/v1/inbox/{item['id']}/read", query_string=params).json == {"updated": 1}
    wait_for(lambda: _runs(app, journey_id)[0][1].status == "exited")
    [(_, run)] = _runs(app, journey_id)
    assert run.exit_reason == 'exit step "read"'
    [fired] = wait_for(lambda: api.get("/v1/rules/read in app/firings").json["data"])
    assert fired["status"] == "fired" and fired["actions"][0]["result"] == "joined"
    assert "in-app readers" in str(api.get("/v1/users/ann").json.get("audiences"))
    with app.app_context():
        [opened] = db.session.scalars(select(Event).where(Event.name == "message.opened"))
        assert opened.properties["messageId"] == item["id"]
        assert opened.properties["channel"] == "inapp"
        assert opened.properties["campaignId"] is None  # a journey's send, not a campaign's


# --- an A/B/n split on 10K users ------------------------------------------------------------

VARIANTS = (("a", 20), ("b", 30), ("c", 50))


def test_a_split_on_10k_users_keeps_its_proportions_and_each_users_arm(app, api, project, workers):
    """10,000 users, created on first sight by their events (POST /v1/events, batches of
    1,000), enter through the event processor; each variant's share is within 4.5 standard
    deviations of its percent (binomial), every run's arm is the one its (journey, user,
    step) bucket names, and entering again lands in the same arm. ~30-50 s here."""
    n = 10_000
    started = time.monotonic()
    journey_id = _store_journey(
        app,
        project.id,
        {
            "name": "ab",
            "trigger": {"event": "join"},
            "entry": {"policy": "always"},
            "steps": [
                {
                    "id": "split",
                    "type": "split",
                    "variants": [{"percent": p, "next": arm} for arm, p in VARIANTS],
                },
                *({"id": arm, "type": "exit"} for arm, _ in VARIANTS),
            ],
        },
    )
    for first in range(0, n, 1000):
        events = [{"name": "join", "userId": f"u{i}"} for i in range(first, first + 1000)]
        r = api.post("/v1/events", json=events)
        assert r.status_code == 202, r.json

    def arms():
        with app.app_context():
            rows = db.session.execute(
                select(JourneyRun.user_id, JourneyRun.entry_key, JourneyRun.exit_reason)
                .where(JourneyRun.journey_id == journey_id)
                .order_by(JourneyRun.id)
            ).all()
        return rows if len(rows) >= n else None

    rows = wait_for(arms, timeout=240)
    elapsed = time.monotonic() - started
    assert len(rows) == n
    names = {f'exit step "{arm}"': arm for arm, _ in VARIANTS}
    got = {arm: 0 for arm, _ in VARIANTS}
    for user_pk, key, reason in rows:
        arm = names[reason]
        got[arm] += 1
        bucket = split_bucket(str(journey_id), f"{user_pk}:{key}", "split")
        assert arm == _arm(bucket), (user_pk, bucket, arm)
    for arm, percent in VARIANTS:
        p = percent / 100
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(got[arm] - n * p) <= 4.5 * sigma, (got, n)
    # Entering again (policy always) lands each user in the arm they had.
    with app.app_context():
        first_arms = {
            external: names[reason]
            for external, reason in db.session.execute(
                select(User.external_id, JourneyRun.exit_reason)
                .join(User, User.id == JourneyRun.user_id)
                .where(User.external_id.in_([f"u{i}" for i in range(50)]))
            )
        }
    for user_id in first_arms:
        r = api.post(f"/v1/journeys/{journey_id}/enter", json={"userId": user_id})
        assert r.status_code < 300, r.json
    again = [(u, names[r.exit_reason]) for u, r in _runs(app, journey_id)[n:] if r.exit_reason]
    assert len(again) == 50 and all(first_arms[u] == arm for u, arm in again)
    print(f"split: {n} users entered and split in {elapsed:.1f} s")


def _arm(bucket: int) -> str:
    bound = 0
    for arm, percent in VARIANTS:
        bound += percent * 100
        if bucket < bound:
            return arm
    return VARIANTS[-1][0]
