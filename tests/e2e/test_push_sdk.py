"""cairn.js and sw.js in headless Chromium, against a live Cairn.

A customer's site on its own origin loads `/sdk/cairn.js` from Cairn and serves the one-line
`/sw.js` that imports Cairn's worker, as the SDK's instructions say. Only the browser's push
manager is stubbed (it cannot reach a real push service here): it hands out a subscription
whose endpoint is a local push receiver and whose keys the test made, so Cairn really
encrypts to it and the test really decrypts what arrives. Everything else is the browser's
own: permissions, user gestures (Playwright's clicks are trusted input events), the service
worker, Cache Storage, notifications, and a push event delivered through DevTools.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from tests.conftest import wait_for
from tests.e2e.browser import StaticSite, fetch_profile, launch_browser, users_matching
from tests.support.push_service import PushService, Subscriber, b64url

WAIT = 60.0  # generous: a busy 2-core machine runs the browser, Cairn and its workers at once


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for this module."""
    yield from launch_browser()


class Site(StaticSite):
    """A customer's site: its pages, its one-line /sw.js, and a landing page for links."""

    def __init__(self, cairn: str) -> None:
        self.pages: dict[str, str] = {
            "sw.js": f"importScripts({json.dumps(cairn + '/sdk/sw.js')});\n",
            "landing.html": "<!doctype html><title>Sale</title><link rel=icon href='data:,'>Sale",
        }
        super().__init__(self._resolve)

    def _resolve(self, path: str) -> tuple[bytes, str] | None:
        name = path.lstrip("/")
        if name not in self.pages:
            return None
        kind = "application/javascript" if name.endswith(".js") else "text/html"
        return self.pages[name].encode(), kind


@pytest.fixture
def cairn(app, live_server: str) -> str:
    """The live Cairn; its signed links point back at it."""
    app.config["PUBLIC_URL"] = live_server
    return live_server


@pytest.fixture
def site(cairn: str) -> Iterator[Site]:
    served = Site(cairn)
    yield served
    served.close()


@pytest.fixture
def push_service() -> Iterator[PushService]:
    """A push service on 127.0.0.1 that checks VAPID and decrypts, as a real one would."""
    with PushService() as service:
        yield service


def _vapid_key(cairn: str, project: Any) -> str:
    r = requests.get(f"{cairn}/v1/push/vapid-key", headers=project.auth("publishable"), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["publicKey"]


def _device(push_service: PushService, cairn: str, project: Any) -> Subscriber:
    """A subscription the push service holds for the project's current key (it refuses
    pushes signed with any other, as real ones do)."""
    return push_service.subscriber(server_key=_vapid_key(cairn, project))


def _fake(device: Subscriber) -> dict[str, str]:
    """What the stubbed push manager hands out (`PushSubscription.toJSON()` parts)."""
    return {"endpoint": device.endpoint, "p256dh": device.p256dh, "auth": b64url(device.auth)}


# Replaces only PushManager's subscribe/getSubscription (no push service is reachable here);
# Notification.requestPermission is wrapped to observe, and still asks the browser.
PUSH_MANAGER_STUB = """
(fake) => {
  const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  let current = null;
  window.__subscribeCalls = [];
  PushManager.prototype.getSubscription = async function () { return current; };
  PushManager.prototype.subscribe = async function (options) {
    const key = new Uint8Array(options.applicationServerKey).slice().buffer;
    window.__subscribeCalls.push({userVisibleOnly: options.userVisibleOnly, key: b64(key)});
    current = {
      endpoint: fake.endpoint,
      expirationTime: null,
      options: {userVisibleOnly: true, applicationServerKey: key},
      toJSON() {
        return {endpoint: fake.endpoint, expirationTime: null,
                keys: {p256dh: fake.p256dh, auth: fake.auth}};
      },
      async unsubscribe() { current = null; return true; },
    };
    return current;
  };
  window.__asked = [];
  const ask = Notification.requestPermission.bind(Notification);
  Notification.requestPermission = function () {
    window.__asked.push(navigator.userActivation.isActive);
    return ask();
  };
}
"""

TOPICS = [{"key": "news", "name": "News"}, {"key": "offers", "name": "Offers"}]


def _page_html(cairn: str, key: str, body_script: str = "") -> str:
    return f"""<!doctype html><html><head><title>Shop</title><link rel="icon" href="data:,">
<script src="{cairn}/sdk/cairn.js"></script>
<script>cairn.init({{key: {json.dumps(key)}, topics: {json.dumps(TOPICS)}}});</script>
</head><body><h1>Shop</h1><button id="notify">Notify me</button>
<script>{body_script}</script></body></html>"""


class Console:
    """The page's and its worker's failures (none is expected)."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)


def _open(
    browser: Any, site: Site, device: Subscriber, page: str, *, grant: bool, **context: Any
) -> tuple[Any, Any, Console]:
    ctx = browser.new_context(**context)
    if grant:
        ctx.grant_permissions(["notifications"], origin=site.url)
    ctx.add_init_script(script=f"({PUSH_MANAGER_STUB})({json.dumps(_fake(device))})")
    tab = ctx.new_page()
    console = Console(tab)
    tab.goto(f"{site.url}/{page}")
    return ctx, tab, console


def _until(page: Any, predicate: Any, timeout: float = WAIT) -> Any:
    """Poll `predicate` while letting Playwright deliver page events (sync mode needs calls)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        page.wait_for_timeout(100)
    return value


def _devices(app: Any) -> list[dict[str, Any]]:
    """Every stored push subscription with its owner's userId (None: a visitor)."""
    from app.db import db
    from app.models import User
    from app.models.channels import PushSubscription

    with app.app_context():
        rows = db.session.execute(
            select(PushSubscription, User.external_id)
            .join(User, User.id == PushSubscription.user_id)
            .order_by(PushSubscription.id)
        ).all()
        return [
            {
                "owner": owner,
                **{
                    name: getattr(sub, name)
                    for name in (
                        "endpoint",
                        "p256dh",
                        "auth",
                        "topics",
                        "timezone",
                        "language",
                        "active",
                        "deactivated_reason",
                        "vapid_key_id",
                    )
                },
            }
            for sub, owner in rows
        ]


def test_the_sdk_files_are_served_as_javascript(cairn):
    script = requests.get(f"{cairn}/sdk/cairn.js", timeout=10)
    assert script.status_code == 200
    assert script.headers["Content-Type"].startswith("application/javascript")
    assert "max-age=3600" in script.headers["Cache-Control"]
    worker = requests.get(f"{cairn}/sdk/sw.js", timeout=10)
    assert worker.status_code == 200
    assert worker.headers["Content-Type"].startswith("application/javascript")
    assert worker.headers["Cache-Control"] == "no-cache"
    assert worker.headers["Service-Worker-Allowed"] == "/"
    again = requests.get(
        f"{cairn}/sdk/sw.js", headers={"If-None-Match": worker.headers["ETag"]}, timeout=10
    )
    assert again.status_code == 304


def test_subscribe_outside_a_user_gesture_is_refused_without_asking(
    browser, site, cairn, project, push_service, app
):
    device = _device(push_service, cairn, project)
    # A site that tries to subscribe as the page loads, and again from its button.
    site.pages["eager.html"] = _page_html(
        cairn,
        project.publishable,
        """
        const answer = (p) => p.then(() => "subscribed", (e) => e.name + ": " + e.message);
        answer(cairn.subscribe()).then((r) => { window.onLoad = r; });
        document.getElementById("notify").addEventListener("click", () => {
          answer(cairn.subscribe()).then((r) => { window.onClick = r; });
        });
        """,
    )
    ctx, page, console = _open(browser, site, device, "eager.html", grant=False)
    try:
        # Read before anything else runs in the page: Playwright's own evaluate counts as a
        # user activation, so the page-load attempt must have settled by itself first.
        on_load = _until(page, lambda: page.evaluate("window.onLoad"))
        assert on_load.startswith("NotAllowedError: ") and "user gesture" in on_load
        assert page.evaluate("[window.__asked, Notification.permission]") == [[], "default"]

        # A real click is a gesture: now the browser is asked (headless answers "denied").
        page.click("#notify")
        on_click = _until(page, lambda: page.evaluate("window.onClick"))
        assert page.evaluate("window.__asked") == [True]
        assert on_click == "NotAllowedError: cairn: notification permission denied"
        assert page.evaluate("window.__subscribeCalls") == []
        # Blocked: the SDK no longer offers the prompt.
        assert page.evaluate("cairn.showPrompt().then((r) => r)") is None
    finally:
        ctx.close()
    assert _devices(app) == []
    assert console.errors == [], console.errors


def test_the_prompt_subscribes_and_identify_and_track_reach_cairn(
    browser, site, cairn, project, push_service, app
):
    from app.services.projects import user_hash

    device = _device(push_service, cairn, project)
    site.pages["shop.html"] = _page_html(cairn, project.publishable)
    ctx, page, console = _open(
        browser,
        site,
        device,
        "shop.html",
        grant=True,
        timezone_id="Europe/Paris",
        locale="fr-FR",
    )
    try:
        anonymous_id = page.evaluate(
            """async (hash) => {
                await cairn.track("Viewed Product", {sku: "sku-1"});
                await cairn.identify("ann", {userHash: hash, traits: {plan: "pro"}});
                await cairn.track("Added To Cart", {sku: "sku-1"});
                return cairn.anonymousId();
            }""",
            user_hash(project.identity_secret, "ann"),
        )
        page.evaluate(
            "() => { cairn.showPrompt().then((s) => { window.prompted = s ? s.endpoint : 'none'; },"
            " (e) => { window.prompted = 'error: ' + e.message; }); }"
        )
        dialog = page.get_by_role("dialog")
        dialog.wait_for(timeout=WAIT * 1000)
        assert page.get_by_role("checkbox", name="News").is_checked()
        page.get_by_role("checkbox", name="Offers").uncheck()
        page.get_by_role("button", name="Allow").click()
        prompted = _until(page, lambda: page.evaluate("window.prompted"))
        assert prompted == device.endpoint
        assert dialog.count() == 0  # the prompt is gone
        # Subscribed with the key the push service expects.
        calls = page.evaluate("window.__subscribeCalls")
        assert calls == [{"userVisibleOnly": True, "key": device.server_key}]
    finally:
        ctx.close()
    assert console.errors == [], console.errors

    [sub] = _devices(app)
    assert sub["endpoint"] == device.endpoint and sub["active"]
    assert (sub["p256dh"], sub["auth"]) == (device.p256dh, b64url(device.auth))
    assert sub["owner"] == "ann"  # the userHash vouched for it
    assert sub["topics"] == ["news"]
    assert (sub["timezone"], sub["language"]) == ("Europe/Paris", "fr-FR")

    profile = wait_for(lambda: fetch_profile(cairn, project.secret, "ann"), timeout=WAIT)
    assert profile["anonymousIds"] == [anonymous_id]
    assert profile["attributes"]["plan"] == "pro"
    events = [
        {"event": "Viewed Product", "op": "performed", "where": {"sku": "sku-1"}},
        {"event": "Added To Cart", "op": "performed", "where": {"sku": "sku-1"}},
    ]
    assert wait_for(lambda: users_matching(cairn, project.secret, events), timeout=WAIT) == ["ann"]


def test_unsubscribe_deactivates_the_device(browser, site, cairn, project, push_service, app):
    device = _device(push_service, cairn, project)
    site.pages["shop.html"] = _page_html(cairn, project.publishable)
    ctx, page, console = _open(browser, site, device, "shop.html", grant=True)
    try:
        # Permission is already granted: no gesture is needed to subscribe (nothing is asked).
        endpoint = page.evaluate("cairn.subscribe({topics: ['offers']}).then((s) => s.endpoint)")
        assert endpoint == device.endpoint
        [sub] = _devices(app)
        assert sub["active"] and sub["owner"] is None and sub["topics"] == ["offers"]
        assert page.evaluate("cairn.unsubscribe()") is True
        assert page.evaluate("window.__asked") == []
        ready = "navigator.serviceWorker.ready.then((r) => r.pushManager.getSubscription())"
        assert page.evaluate(ready) is None
    finally:
        ctx.close()
    [sub] = _devices(app)
    assert not sub["active"] and sub["deactivated_reason"] == "unsubscribed"
    assert console.errors == [], console.errors


class Worker:
    """The site's service worker, seen through DevTools: its registration and a handle."""

    def __init__(self, context: Any, page: Any) -> None:
        self.context = context
        self.page = page
        self.cdp = context.new_cdp_session(page)
        self.registrations: dict[str, str] = {}
        self.cdp.on("ServiceWorker.workerRegistrationUpdated", self._updated)
        self.cdp.send("ServiceWorker.enable")

    def _updated(self, event: dict[str, Any]) -> None:
        for registration in event["registrations"]:
            if not registration.get("isDeleted"):
                self.registrations[registration["scopeURL"]] = registration["registrationId"]

    def push(self, scope: str, payload: dict[str, Any]) -> None:
        """A push event with this (already decrypted) payload, as the browser delivers one."""
        origin = scope.rstrip("/")
        registration = _until(self.page, lambda: self.registrations.get(scope))
        self.cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": origin, "registrationId": registration, "data": json.dumps(payload)},
        )

    def evaluate(self, script: str, arg: Any = None) -> Any:
        worker = _until(self.page, lambda: self.context.service_workers)[0]
        return worker.evaluate(script, arg)


# A click as the browser dispatches it, on the shown notification. The event is made by
# script (headless has no notification to click), so its waitUntil is taken over, and
# openWindow is recorded instead of refused: outside a real click a worker may not open one.
CLICK = """async (action) => {
  const opened = [];
  self.clients.openWindow = async (url) => { opened.push(url); return null; };
  const [shown] = await self.registration.getNotifications();
  const event = new NotificationEvent("notificationclick", {notification: shown, action});
  const waited = [];
  event.waitUntil = (promise) => waited.push(promise);
  self.dispatchEvent(event);
  await Promise.all(waited);
  return {opened, left: (await self.registration.getNotifications()).length};
}"""

SHOWN = """async () => (await self.registration.getNotifications()).map((n) => ({
  title: n.title, body: n.body, tag: n.tag, icon: n.icon, data: n.data,
  actions: n.actions.map((a) => a.action)}))"""


def test_a_push_shows_one_notification_per_tag_and_its_click_goes_through_the_tracking_link(
    browser, site, cairn, project, push_service, app, api, workers
):
    from app.services.projects import user_hash

    r = api.patch("/v1/project", json={"settings": {"push": {"vapidSubject": VAPID_SUBJECT}}})
    assert r.status_code == 200, r.json
    device = _device(push_service, cairn, project)
    site.pages["shop.html"] = _page_html(cairn, project.publishable)
    ctx, page, console = _open(browser, site, device, "shop.html", grant=True)
    try:
        worker = Worker(ctx, page)
        hash_ = user_hash(project.identity_secret, "cy")
        page.evaluate(
            """async (hash) => {
                await cairn.identify("cy", {userHash: hash});
                await cairn.subscribe({topics: ["news"]});
            }""",
            hash_,
        )
        # The same person's older subscription in this browser (another scope, say).
        older = _device(push_service, cairn, project)
        r = requests.post(
            f"{cairn}/v1/push/subscriptions",
            json={"userId": "cy", "userHash": hash_, "subscription": older.subscription()},
            headers=project.auth("publishable"),
            timeout=10,
        )
        assert r.status_code == 200, r.text

        target = f"{site.url}/landing.html"
        r = api.post(
            "/v1/notify",
            json={
                "userId": "cy",
                "title": "Sale",
                "body": "20% off today",
                "url": target,
                "channels": ["push"],
            },
        )
        assert r.status_code == 202, r.json
        # What Cairn sent each device, decrypted by the push service with its keys.
        received = [
            _until(page, lambda d=d: push_service.for_subscriber(d))[0].payload
            for d in (device, older)
        ]
        assert {p["tag"] for p in received} == {received[0]["tag"]}  # one collapse key
        for payload in received:
            assert payload["url"].startswith(f"{cairn}/t/c/")  # the signed tracking link
            worker.push(f"{site.url}/", payload)

        # Both copies arrived; the browser shows one notification, the later copy.
        def settled() -> list[dict[str, Any]] | None:
            shown = worker.evaluate(SHOWN)
            return shown if len(shown) == 1 and shown[0]["data"]["messageId"] == last else None

        last = received[-1]["messageId"]
        [shown] = _until(page, settled)
        assert (shown["title"], shown["body"], shown["tag"]) == (
            "Sale",
            "20% off today",
            received[0]["tag"],
        )
        assert shown["data"]["url"] == received[-1]["url"]
        # Each copy was reported as shown by the worker.
        ids = [p["messageId"] for p in received]
        _until(page, lambda: all("delivered" in _events(app, m) for m in ids))
        assert [_status(api, m) for m in ids] == ["delivered", "delivered"]

        clicked = worker.evaluate(CLICK, "")
        assert clicked == {"opened": [received[-1]["url"]], "left": 0}  # closed, then opened
        # The opened window follows the tracking link to the site's page.
        tab = ctx.new_page()
        tab.goto(clicked["opened"][0])
        assert tab.url == target
    finally:
        ctx.close()
    assert console.errors == [], console.errors
    # The click is recorded on the message that was shown (a click within 2 s of sending
    # counts as a machine's: app/services/engagement.py).
    kinds = _events(app, last)
    assert "click" in kinds or "machine_click" in kinds, kinds


def _events(app: Any, message_id: int) -> list[str]:
    """The kinds of a message's recorded events (delivered, click...)."""
    from app.db import db
    from app.models.channels import MessageEvent

    with app.app_context():
        return list(
            db.session.scalars(
                select(MessageEvent.kind).where(MessageEvent.message_id == message_id)
            )
        )


def _status(api: Any, message_id: int) -> str:
    r = api.get(f"/v1/messages/{message_id}")
    assert r.status_code == 200, r.json
    return r.json["status"]


VAPID_SUBJECT = "mailto:push-ops@cairn-project.org"


# The browser replaced the subscription (expiry, a push service's key change): the event as
# Chromium would dispatch it, with the old subscription and no new one. Only the worker's
# push manager is stubbed again: it hands out the new device.
SUBSCRIPTION_CHANGE = """async ({old, fresh}) => {
  const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const unb64 = (text) => Uint8Array.from(
    atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0)).buffer;
  const asked = [];
  PushManager.prototype.subscribe = async function (options) {
    asked.push(b64(options.applicationServerKey));
    return {
      endpoint: fresh.endpoint,
      options: {userVisibleOnly: true, applicationServerKey: options.applicationServerKey},
      toJSON: () => ({endpoint: fresh.endpoint, expirationTime: null,
                      keys: {p256dh: fresh.p256dh, auth: fresh.auth}}),
    };
  };
  const oldSubscription = {
    endpoint: old.endpoint,
    options: {userVisibleOnly: true, applicationServerKey: unb64(old.key)},
  };
  const event = new ExtendableEvent("pushsubscriptionchange");
  Object.defineProperties(event, {
    oldSubscription: {value: oldSubscription}, newSubscription: {value: null},
  });
  const waited = [];
  event.waitUntil = (promise) => waited.push(promise);
  self.dispatchEvent(event);
  await Promise.all(waited);
  return asked;
}"""


def test_the_worker_resubscribes_the_same_person_when_the_browser_replaces_the_subscription(
    browser, site, cairn, project, push_service, app
):
    from app.services.projects import user_hash

    device = _device(push_service, cairn, project)
    fresh = _device(push_service, cairn, project)
    site.pages["shop.html"] = _page_html(cairn, project.publishable)
    ctx, page, console = _open(
        browser, site, device, "shop.html", grant=True, timezone_id="Asia/Tokyo", locale="ja-JP"
    )
    try:
        worker = Worker(ctx, page)
        page.evaluate(
            """async (hash) => {
                await cairn.identify("dee", {userHash: hash});
                await cairn.subscribe({topics: ["offers"]});
            }""",
            user_hash(project.identity_secret, "dee"),
        )
        asked = worker.evaluate(
            SUBSCRIPTION_CHANGE,
            {"old": {"endpoint": device.endpoint, "key": device.server_key}, "fresh": _fake(fresh)},
        )
        assert asked == [device.server_key]  # the same application server key
    finally:
        ctx.close()
    assert console.errors == [], console.errors
    # The new device belongs to the same person, with the topics they chose on the page.
    old_row, new_row = _devices(app)
    assert old_row["endpoint"] == device.endpoint
    assert new_row["endpoint"] == fresh.endpoint and new_row["active"]
    assert (new_row["owner"], new_row["topics"]) == ("dee", ["offers"])
    assert (new_row["timezone"], new_row["language"]) == ("Asia/Tokyo", "ja-JP")
    assert new_row["vapid_key_id"] == old_row["vapid_key_id"]
