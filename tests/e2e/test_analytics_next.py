"""analytics.js itself (`@segment/analytics-next` from npm), unmodified, in headless Chromium.

The bundle is served from a page on another origin than Cairn, as on a customer's site; the SDK
loads its settings from Cairn, which sends it back to Cairn's short paths (cross-origin, with
CORS preflights). What lands is checked through the API with the secret key.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.conftest import wait_for
from tests.e2e.browser import StaticSite, fetch_profile, launch_browser, unavailable, users_matching

# Pinned: the paths and body fields Cairn takes were read from this version's code.
ANALYTICS_NEXT = "1.84.3"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cairn-tests"


@pytest.fixture(scope="session")
def analytics_dist() -> Path:
    """The package's browser bundles (dist/umd), installed once from npm into a cache dir."""
    target = CACHE / f"analytics-next-{ANALYTICS_NEXT}"
    dist = target / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"
    if (dist / "standalone.js").exists():
        return dist
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        unavailable("node and npm")
    assert npm is not None
    CACHE.mkdir(parents=True, exist_ok=True)
    # Parallel test runs share the cache: one installs, into a temporary dir renamed at the end.
    with FileLock(str(CACHE / f"{target.name}.lock")):
        if not (dist / "standalone.js").exists():
            staging = CACHE / f"{target.name}.tmp{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            done = subprocess.run(
                [
                    npm,
                    "install",
                    "--prefix",
                    str(staging),
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    f"@segment/analytics-next@{ANALYTICS_NEXT}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    return dist


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for this module."""
    yield from launch_browser()


class Site(StaticSite):
    """A customer's site on its own origin: pages plus the analytics-next bundles."""

    def __init__(self, dist: Path) -> None:
        self.pages: dict[str, str] = {}
        self.dist = dist
        super().__init__(self._resolve)

    def _resolve(self, path: str) -> tuple[bytes, str] | None:
        name = path.rsplit("/", 1)[-1]
        if name in self.pages:
            return self.pages[name].encode(), "text/html"
        if name.endswith(".js") and (self.dist / name).is_file():
            return (self.dist / name).read_bytes(), "application/javascript"
        return None


@pytest.fixture
def site(analytics_dist: Path) -> Iterator[Site]:
    """The customer's site, served from 127.0.0.1 on another port than Cairn."""
    served = Site(analytics_dist)
    yield served
    served.close()


@pytest.fixture
def cairn(app, live_server: str) -> str:
    """The live Cairn; PUBLIC_URL is what the settings document sends the SDK back to."""
    app.config["PUBLIC_URL"] = live_server
    return live_server


# Segment's snippet (v5), as sites paste it; only the bundle URL and the CDN are ours.
SNIPPET = """<!doctype html><html><head><title>Pricing</title><link rel="icon" href="data:,">
<script>
!function(){var i="analytics",analytics=window[i]=window[i]||[];if(!analytics.initialize)
if(analytics.invoked)window.console&&console.error&&
console.error("Segment snippet included twice.");else{analytics.invoked=!0;
analytics.methods=["trackSubmit","trackClick","trackLink","trackForm","pageview","identify","reset","group","track","ready","alias","debug","page","screen","once","off",
"on","addSourceMiddleware","addIntegrationMiddleware","setAnonymousId","addDestinationMiddleware",
"register"];analytics.factory=function(e){return function(){
if(window[i].initialized)return window[i][e].apply(window[i],arguments);
var n=Array.prototype.slice.call(arguments);
if(["track","screen","alias","group","page","identify"].indexOf(e)>-1){
var c=document.querySelector("link[rel='canonical']");
n.push({__t:"bpc",c:c&&c.getAttribute("href")||void 0,p:location.pathname,u:location.href,
s:location.search,t:document.title,r:document.referrer})}n.unshift(e);analytics.push(n);
return analytics}};for(var n=0;n<analytics.methods.length;n++){var key=analytics.methods[n];
analytics[key]=analytics.factory(key)}analytics.load=function(key,n){
var t=document.createElement("script");t.type="text/javascript";t.async=!0;
t.setAttribute("data-global-segment-analytics-key",i);t.src=BUNDLE;
var r=document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r);
analytics._loadOptions=n};analytics._writeKey=WRITE_KEY;analytics._cdn=CAIRN;
analytics.SNIPPET_VERSION="5.2.1";
analytics.load(WRITE_KEY);
analytics.page();
}}();
</script></head><body>Pricing</body></html>"""

# The npm way (`AnalyticsBrowser.load`), from the UMD build, with batched delivery (`/b`).
NPM_PAGE = """<!doctype html><html><head><title>App</title><link rel="icon" href="data:,">
<script src="BUNDLE"></script><script>
window.ajs = AnalyticsNext.AnalyticsBrowser.load(
  {writeKey: WRITE_KEY, cdnURL: CAIRN},
  {integrations: {"Segment.io": {deliveryStrategy: {strategy: "batching",
    config: {size: 5, timeout: 300}}}}});
</script></head><body>App</body></html>"""


class Traffic:
    """Every request the page makes, what Cairn answered, and what failed."""

    def __init__(self, page: Any, cairn: str) -> None:
        self.urls: list[str] = []
        self.answers: list[tuple[str, str, int]] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url}: {r.failure}"))
        page.on(
            "response",
            lambda r: (
                self.answers.append((r.request.method, r.url[len(cairn) :], r.status))
                if r.url.startswith(cairn)
                else None
            ),
        )
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def posted(self) -> set[str]:
        return {path for method, path, _ in self.answers if method == "POST"}


def _page(browser: Any, site: Site, cairn: str, name: str) -> tuple[Any, Any, Traffic]:
    context = browser.new_context()
    page = context.new_page()
    traffic = Traffic(page, cairn)
    page.goto(f"{site.url}/{name}")
    return context, page, traffic


def _until(page: Any, predicate: Any, timeout: float = 60.0) -> None:
    """Poll `predicate` while letting Playwright deliver page events (sync mode needs calls)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        page.wait_for_timeout(100)


def _check_traffic(traffic: Traffic, site: Site, cairn: str, posts: set[str]) -> None:
    # Every request stayed on the site or on Cairn (no chunk or telemetry from Segment's CDN).
    assert all(u.startswith((site.url, cairn)) for u in traffic.urls), traffic.urls
    assert traffic.failed == [] and traffic.errors == [], (traffic.failed, traffic.errors)
    assert traffic.posted() == posts, traffic.answers
    bad = [a for a in traffic.answers if a[0] != "OPTIONS" and a[2] != 200]
    assert bad == [], traffic.answers


def test_the_snippet_sends_page_track_alias_identify_and_group_to_cairn(
    browser, site, cairn, project
):
    site.pages["pricing.html"] = (
        SNIPPET.replace("BUNDLE", json.dumps(f"{site.url}/standalone.js"))
        .replace("WRITE_KEY", json.dumps(project.publishable))
        .replace("CAIRN", json.dumps(cairn))
    )
    context, page, traffic = _page(browser, site, cairn, "pricing.html")
    try:
        # The snippet's buffered page() goes out once the bundle has loaded its settings.
        page.wait_for_function("() => window.analytics.initialized === true", timeout=60_000)
        anonymous_id = page.evaluate(
            """async () => {
                const a = window.analytics;
                await a.track("Viewed Pricing", {plan: "pro"});
                // Sign-up: alias the visitor to the new account, then identify it (alias
                // first: 1.84.3 replaces an alias's userId with the already identified one).
                await a.alias("ann");
                await a.identify("ann", {plan: "pro", company: "Acme"});
                await a.track("Signed Up", {method: "email"});
                await a.group("acme", {seats: 3});
                return a.user().anonymousId();
            }"""
        )
        _until(page, lambda: len(traffic.posted()) == 5)
    finally:
        context.close()
    _check_traffic(traffic, site, cairn, {"/v1/p", "/v1/t", "/v1/a", "/v1/i", "/v1/g"})
    assert (
        "GET",
        f"/v1/projects/{project.publishable}/settings",
        200,
    ) in traffic.answers

    profile = wait_for(lambda: fetch_profile(cairn, project.secret, "ann"), timeout=60)
    # Without a userHash (the SDK sends none) custom traits and the anonymous merge still land.
    assert profile["anonymousIds"] == [anonymous_id]
    assert profile["attributes"]["plan"] == "pro" and profile["attributes"]["company"] == "Acme"
    # The anonymous page view and track, then the signed-up event, all on ann.
    events = [
        {"event": "$page", "op": "performed", "where": {"path": "/pricing.html"}},
        {"event": "Viewed Pricing", "op": "performed", "where": {"plan": "pro"}},
        {"event": "Signed Up", "op": "performed", "where": {"method": "email"}},
    ]
    assert wait_for(lambda: users_matching(cairn, project.secret, events), timeout=60) == ["ann"]


def test_the_npm_package_with_batched_delivery_posts_to_b(browser, site, cairn, project):
    site.pages["app.html"] = (
        NPM_PAGE.replace("BUNDLE", f"{site.url}/index.js")
        .replace("WRITE_KEY", json.dumps(project.publishable))
        .replace("CAIRN", json.dumps(cairn))
    )
    context, page, traffic = _page(browser, site, cairn, "app.html")
    try:
        anonymous_id = page.evaluate(
            """async () => {
                const [a] = await window.ajs;
                a.page();
                a.track("Opened App", {screen: "home"});
                a.alias("bo");
                a.identify("bo", {tier: "gold"});
                a.track("Bought", {sku: "sku-1"});
                return a.user().anonymousId();
            }"""
        )
        _until(page, lambda: any(a[1] == "/v1/b" and a[2] == 200 for a in traffic.answers))
    finally:
        context.close()
    _check_traffic(traffic, site, cairn, {"/v1/b"})

    profile = wait_for(lambda: fetch_profile(cairn, project.secret, "bo"), timeout=60)
    assert profile["anonymousIds"] == [anonymous_id]
    assert profile["attributes"]["tier"] == "gold"
    events = [
        {"event": "$page", "op": "performed"},
        {"event": "Opened App", "op": "performed", "where": {"screen": "home"}},
        {"event": "Bought", "op": "performed", "where": {"sku": "sku-1"}},
    ]
    assert wait_for(lambda: users_matching(cairn, project.secret, events), timeout=60) == ["bo"]


def test_a_site_vouches_for_its_user_with_context_user_hash(browser, site, cairn, project):
    from app.services.projects import user_hash

    site.pages["account.html"] = (
        SNIPPET.replace("BUNDLE", json.dumps(f"{site.url}/standalone.js"))
        .replace("WRITE_KEY", json.dumps(project.publishable))
        .replace("CAIRN", json.dumps(cairn))
    )
    context, page, traffic = _page(browser, site, cairn, "account.html")
    try:
        page.wait_for_function("() => window.analytics.initialized === true", timeout=60_000)
        page.evaluate(
            """() => window.analytics.identify("cy", {email: "cy@example.com", plan: "pro"})"""
        )
        # Unverified: the custom trait lands, the contact field does not (API.md).
        profile = wait_for(lambda: fetch_profile(cairn, project.secret, "cy"), timeout=60)
        assert profile["attributes"]["plan"] == "pro" and profile["email"] is None
        # The site's backend computed the hash; analytics.js carries it in context.userHash.
        page.evaluate(
            """(hash) => window.analytics.identify(
                "cy", {email: "cy@example.com"}, {context: {userHash: hash}})""",
            user_hash(project.identity_secret, "cy"),
        )
        _until(page, lambda: [a[1] for a in traffic.answers].count("/v1/i") == 2)
    finally:
        context.close()
    _check_traffic(traffic, site, cairn, {"/v1/p", "/v1/i"})
    verified = wait_for(
        lambda: (p := fetch_profile(cairn, project.secret, "cy")) and p["email"] and p, timeout=60
    )
    assert verified["email"] == "cy@example.com"
