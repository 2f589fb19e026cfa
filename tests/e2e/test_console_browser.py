"""The console in headless Chromium against a live `cairn serve` (embedded: SQLite, worker
threads): the first admin from the printed one-time link, a segment built with its live count,
a user's timeline with the reason a capped message was held back, a viewer who cannot change
anything, and a request without the CSRF token refused.

Screenshots of each screen go to `screenshots/console/` at the top of the checkout (ignored by
git) for a reviewer to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import wait_for
from tests.e2e.browser import launch_browser
from tests.e2e.live import Server

SHOTS = Path(__file__).resolve().parents[2] / "screenshots" / "console"
PASSWORD = "a long enough password"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture
def cairn(tmp_path) -> Iterator[Server]:
    server = Server(tmp_path)
    yield server
    server.stop()


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


class Api:
    """The project's API with the secret key `cairn serve` printed on its first start."""

    def __init__(self, server: Server) -> None:
        self.base = server.url
        secret = re.search(r"secret key\s+(sk_\S+)", server.output()).group(1)
        self.headers = {"Authorization": f"Bearer {secret}"}

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        r = requests.request(method, self.base + path, headers=self.headers, timeout=30, **kwargs)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json() if r.content else None


def _capped_message_for_ann(api: Api) -> None:
    """Two marketing campaigns to ann with a cap of one message an hour: the second is skipped."""
    api(
        "PATCH",
        "/v1/project",
        json={"settings": {"frequencyCap": {"count": 1, "windowSeconds": 3600}}},
    )
    for uid, plan in (("ann", "pro"), ("bob", "pro"), ("cy", "free")):
        api(
            "POST",
            "/v1/users",
            json={"userId": uid, "email": f"{uid}@example.com", "attributes": {"plan": plan}},
        )
    template = {
        "name": "promo",
        "defaultLanguage": "en",
        "channels": {"inapp": {"en": {"title": "Sale", "body": "20% off"}}},
    }
    api("POST", "/v1/templates", json=template)
    for name in ("first", "second"):
        body = {
            "name": name,
            "kind": "api",
            "channels": {"inapp": "promo"},
            "category": "marketing",
        }
        api("POST", "/v1/campaigns", json=body)
        api("POST", f"/v1/campaigns/{name}/activate")

    def timeline() -> list[dict]:
        return api("GET", "/v1/users/ann/timeline")["data"]

    api("POST", "/v1/campaigns/first/send", json={"recipients": [{"userId": "ann"}]})
    wait_for(lambda: any(i["kind"] == "message" and i["status"] == "sent" for i in timeline()), 60)
    api("POST", "/v1/campaigns/second/send", json={"recipients": [{"userId": "ann"}]})
    # Planned, then held back at delivery by the cap: the message ends `suppressed`, with why.
    wait_for(lambda: any(i.get("status") == "suppressed" for i in timeline()), 60)


def _login(page: Any, base: str, email: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/projects/\d+/$"), timeout=TIMEOUT_MS)


def test_a_marketer_session_in_the_console(browser, cairn):
    from playwright.sync_api import expect

    out = cairn.output()
    link = re.search(r"one-time link \(valid 24 h\): (\S+)", out).group(1)
    path = "/" + link.split("/", 3)[3]
    api = Api(cairn)
    _capped_message_for_ann(api)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)

    # The first admin, from the link the first start printed.
    page.goto(cairn.url + path)
    expect(page.get_by_role("heading", name="Create the first admin")).to_be_visible()
    page.get_by_label("Email").fill("owner@acme.io")
    page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r".*/projects/1/$"))
    expect(page.get_by_role("heading", name="Default")).to_be_visible()
    expect(page.locator("[data-figure=scheduler]")).to_contain_text("running")
    _shot(page, "home")

    # Log out and in again with the new password.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r".*/login$"))
    _login(page, cairn.url, "owner@acme.io")

    # A segment: the count follows the builder as a condition is added.
    page.get_by_role("link", name="Segments").click()
    page.get_by_role("link", name="New segment").click()
    page.get_by_label("Name", exact=True).fill("pros")
    expect(page.locator("#count")).to_have_text("3")  # no condition yet: every user
    page.get_by_role("button", name="+ Condition").click()
    page.get_by_label("Attribute name").fill("plan")
    page.get_by_label("Value").fill("pro")
    expect(page.locator("#count")).to_have_text("2")
    expect(page.locator("#string-form")).to_have_text("plan:pro")
    page.get_by_label("Value").fill("nope")
    expect(page.locator("#count")).to_have_text("0")
    page.get_by_label("Operator").select_option("in")
    page.get_by_label("Value").fill("pro, free")
    expect(page.locator("#count")).to_have_text("3")
    page.get_by_label("Operator").select_option("gt")
    page.get_by_label("Value").fill("x")  # a number is needed: the server's error shows
    expect(page.locator("#filter-error")).to_contain_text("filter.all[0]")
    page.get_by_label("Operator").select_option("is")
    page.get_by_label("Value").fill("pro")
    expect(page.locator("#count")).to_have_text("2")
    _shot(page, "segment-builder")
    page.get_by_role("button", name="Save segment").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    assert api("GET", "/v1/segments/pros")["stringForm"] == "plan:pro"
    expect(page.locator("#count")).to_have_text("2")  # the saved segment loads into the builder

    # An audience filled from a CSV file, sent in chunks under a progress bar.
    page.get_by_role("link", name="Audiences").click()
    page.get_by_label("Name", exact=True).fill("vip")
    page.get_by_role("button", name="Create audience").click()
    expect(page.get_by_role("heading", name=re.compile("^vip"))).to_be_visible()
    csv = "userId,plan\n" + "\n".join(f"csv-{i},pro" for i in range(2500)) + "\n"
    page.get_by_label("CSV file").set_input_files(
        files=[{"name": "vip.csv", "mimeType": "text/csv", "buffer": csv.encode()}]
    )
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#csv-status")).to_have_text(
        re.compile("^Done: 2500 userIds"), timeout=60_000
    )
    expect(page.get_by_role("progressbar", name="Upload progress")).to_have_attribute(
        "aria-valuenow", "100"
    )
    _shot(page, "audience-upload")
    assert api("GET", "/v1/audiences/vip")["memberCount"] == 2500

    # A template with a live preview rendered for a chosen user.
    page.get_by_role("link", name="Templates").click()
    page.get_by_role("link", name="New template").click()
    page.get_by_label("Name", exact=True).fill("welcome")
    page.locator("#f-inapp-title").fill("Hi {{ user.userId }}, on {{ user.attributes.plan }}")
    page.locator("#f-inapp-body").fill("Use {{ params.coupon }}")
    page.get_by_label("Render for userId").fill("ann")
    page.get_by_label("Params").fill("coupon=SPRING")
    rendered = page.locator("[data-rendered=inapp]")
    expect(rendered.locator("[data-field=title]")).to_have_text("title: Hi ann, on pro")
    expect(rendered.locator("[data-field=body]")).to_have_text("body: Use SPRING")
    page.locator("#f-inapp-body").fill("{{ ''.__class__ }}")  # the sandbox says no
    expect(rendered).to_contain_text("sandbox violation")
    page.locator("#f-inapp-body").fill("Use {{ params.coupon }}")
    expect(rendered.locator("[data-field=body]")).to_have_text("body: Use SPRING")
    _shot(page, "template-preview")
    page.get_by_role("button", name="Save template").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    saved = api("GET", "/v1/templates/welcome")["channels"]["inapp"]["en"]
    assert saved == {
        "title": "Hi {{ user.userId }}, on {{ user.attributes.plan }}",
        "body": "Use {{ params.coupon }}",
    }

    # A broadcast from the wizard: dry run first, then activate and watch it finish.
    page.get_by_role("link", name="Campaigns").click()
    page.get_by_role("link", name="New campaign").click()
    page.get_by_label("Name", exact=True).fill("spring")
    page.get_by_role("radio", name="broadcast").check()
    page.get_by_label("inapp", exact=True).select_option("promo")
    page.get_by_label("segment pros").first.check()  # include (the first list)
    page.get_by_label("Message lifetime").fill("2 hours")
    page.get_by_role("button", name="Create as draft").click()
    expect(page.locator(".field-error")).to_contain_text("not a duration")
    page.get_by_label("Message lifetime").fill("2h")
    page.get_by_role("button", name="Create as draft").click()
    expect(page.get_by_role("heading", name="spring")).to_be_visible()
    expect(page.locator("[data-state]")).to_have_text("draft")
    page.get_by_role("button", name="Dry run").click()
    # ann had her one message this hour (the cap), bob gets it; nothing was sent by the dry run.
    expect(page.locator("[data-figure=reached]")).to_have_text("1")
    expect(page.locator("[data-figure=skipped]")).to_contain_text("capped: 1")
    _shot(page, "campaign-dry-run")
    assert api("GET", "/v1/campaigns/spring/stats")["messages"] == 0
    page.get_by_role("button", name="Activate").click()
    expect(page.locator("[data-figure=percent]")).to_have_text(
        re.compile(r"^100(\.0)?$"), timeout=60_000
    )
    page.reload()
    expect(page.locator("[data-stat=sent]")).to_have_text("1")
    expect(page.locator("[data-stat=suppressed]")).to_have_text("1")
    expect(page.locator("figure.chart svg")).to_be_visible()
    _shot(page, "campaign-results")

    # A user's timeline says why the second campaign did not reach ann.
    page.get_by_role("link", name="Users").click()
    page.get_by_label(re.compile("Find by userId")).fill("ann")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="ann", exact=True).click()
    held = page.locator(".tl-message", has_text="campaign second")
    expect(held).to_contain_text("suppressed")
    expect(held).to_contain_text("frequency cap: 1 per 3600 s reached")
    expect(page.locator(".tl-message", has_text="sent")).to_have_count(1)
    _shot(page, "user-timeline")

    # The message log keeps each message's history.
    page.get_by_role("link", name="Messages").click()
    page.get_by_label("userId").fill("ann")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("tr[data-message]")).to_have_count(3)
    expect(page.locator("tr[data-message]", has_text="second")).to_contain_text("frequency cap")
    _shot(page, "message-log")

    # A journey drawn as a flow with its counts, activated from the console.
    from tests.ui.test_console_journeys import CART

    api("POST", "/v1/journeys", json=CART)
    page.get_by_role("link", name="Journeys").click()
    page.get_by_role("link", name="abandoned cart").click()
    expect(page.locator("[data-step=bought]")).to_contain_text(
        "wait for purchase matched on cartId"
    )
    page.get_by_role("button", name="Activate").click()
    api(
        "POST",
        "/v1/events",
        json={
            "name": "cart_updated",
            "userId": "ann",
            "properties": {"cartId": "c1", "plan": "pro"},
        },
    )
    wait_for(lambda: api("GET", "/v1/journeys/abandoned cart/runs")["data"], 60)
    page.reload()
    expect(page.locator("[data-step=pause]")).to_contain_text("1")
    _shot(page, "journey")

    # The journey editor: an error shows on its step; fixed, it saves a new version.
    page.get_by_role("link", name="Edit", exact=True).click()
    first = page.locator("[data-step-form='0']")
    first.get_by_label("Duration").fill("soon")
    page.get_by_role("button", name="Save journey").click()
    expect(page.locator("[data-step-form='0'] .field-error")).to_contain_text("not a duration")
    page.locator("[data-step-form='0']").get_by_label("Duration").fill("2d")
    _shot(page, "journey-editor")
    page.get_by_role("button", name="Save journey").click()
    expect(page.locator("[data-step=pause]")).to_contain_text("wait 2d")
    assert api("GET", "/v1/journeys/abandoned cart")["version"] == 2

    # A rule from plain fields.
    page.get_by_role("link", name="Rules").click()
    page.get_by_role("link", name="New rule").click()
    page.locator("#r-name").fill("vip buyers")
    page.locator("#w-event").fill("purchase")
    page.locator("#a0-kind").select_option("addToAudience")
    page.locator("#a0-audience").select_option(label="vip")
    page.locator("#a0-ttl").fill("7d")
    _shot(page, "rule-editor")
    page.get_by_role("button", name="Create rule").click()
    rule = api("GET", "/v1/rules/vip buyers")
    assert rule["when"]["event"] == "purchase" and rule["then"][0]["ttlSeconds"] == 7 * 86400

    # The audit log has the segment.
    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("table.audit")).to_contain_text("segment.created")
    _shot(page, "audit-log")

    # Invite a viewer; in their own browser session they can look but not change.
    page.get_by_role("link", name="Members").click()
    page.get_by_label("Email").fill("vic@acme.io")
    page.get_by_label("Role").select_option("viewer")
    page.get_by_role("button", name="Create invitation link").click()
    invite = page.locator("[data-invite-link]").text_content()
    viewer = browser.new_context().new_page()
    viewer.set_default_timeout(TIMEOUT_MS)
    viewer.goto(cairn.url + "/" + invite.split("/", 3)[3])
    viewer.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    viewer.get_by_label("Password again").fill(PASSWORD)
    viewer.get_by_role("button", name="Create account").click()
    viewer.wait_for_url(re.compile(r".*/projects/1/$"))
    viewer.goto(cairn.url + "/projects/1/segments")
    expect(viewer.get_by_role("link", name="New segment")).to_have_count(0)
    viewer.get_by_role("link", name="pros").click()
    expect(viewer.locator("#count")).to_have_text("2")
    expect(viewer.get_by_role("button", name="Save segment")).to_have_count(0)
    expect(viewer.get_by_label("Name", exact=True)).to_have_attribute("readonly", "")
    api(
        "POST",
        "/v1/campaigns",
        json={"name": "later", "kind": "broadcast", "channels": {"inapp": "promo"}},
    )
    viewer.goto(cairn.url + "/projects/1/campaigns")
    viewer.get_by_role("link", name="later").click()
    expect(viewer.get_by_role("button", name="Dry run")).to_be_visible()  # reading is fine
    expect(viewer.get_by_role("button", name="Activate")).to_have_count(0)
    activated = viewer.evaluate(
        """async () => {
            const token = document.querySelector('input[name=csrf_token]').value;
            const r = await fetch(location.pathname + '/activate',
                                  {method: 'POST', body: new URLSearchParams({csrf_token: token})});
            return r.status;
        }"""
    )
    assert activated == 403 and api("GET", "/v1/campaigns/later")["status"] == "draft"
    viewer.goto(cairn.url + "/projects/1/segments/1")
    # Posting the form anyway (token included) is refused for the role.
    status = viewer.evaluate(
        """async () => {
            const token = document.querySelector('input[name=csrf_token]').value;
            const body = new URLSearchParams({csrf_token: token, name: 'mine', mode: 'text',
                                              filter_text: 'plan:free'});
            return (await fetch('/projects/1/segments/new', {method: 'POST', body})).status;
        }"""
    )
    assert status == 403

    # A request without the CSRF token is refused, even from a logged-in admin's page.
    status = page.evaluate(
        """async () => {
            const body = new URLSearchParams({name: 'forged', mode: 'text', filter_text: 'plan:x'});
            return (await fetch('/projects/1/segments/new', {method: 'POST', body})).status;
        }"""
    )
    assert status == 400
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, storage_state=context.storage_state()
    )
    small = phone.new_page()
    small.goto(cairn.url + "/projects/1/users/ann")
    expect(small.get_by_role("heading", name="ann")).to_be_visible()
    expect(small.locator(".tl-journey")).to_contain_text("journey abandoned cart at step pause")
    _shot(small, "phone-user")
    phone.close()
    names = [s["name"] for s in api("GET", "/v1/segments")["data"]]
    assert names == ["pros"]
    context.close()
