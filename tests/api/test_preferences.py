"""The preference page /p/{token}: GET shows and changes nothing, POST saves, forged → 404."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.db import db
from app.models import Audience, AudienceChange, AudienceMember, User
from app.services import links

TOPICS = [
    {"key": "news", "name": "News <weekly>", "description": "Once a week", "default": True},
    {"key": "offers", "name": "Offers", "default": False},
]


def _setup(app, api) -> tuple[int, str]:
    r = api.patch("/v1/project", json={"settings": {"topics": TOPICS}})
    assert r.status_code == 200, r.json
    r = api.post("/v1/users", json={"userId": "ann", "email": "ann@example.com"})
    assert r.status_code < 300, r.json
    with app.app_context():
        user = db.session.scalar(select(User).where(User.external_id == "ann"))
        url = links.preferences_url(dict(app.config), project_id=user.project_id, user_id=user.id)
        return user.id, url.removeprefix(app.config["PUBLIC_URL"])


def _user(app, pk: int) -> User:
    with app.app_context():
        return db.session.get(User, pk)


def _checked(page: str) -> set[str]:
    return set(re.findall(r'name="(?:topic|channel|no_marketing)" value="([^"]+)" checked', page))


def _members(app, name: str) -> set[int]:
    with app.app_context():
        return set(
            db.session.scalars(
                select(AudienceMember.user_id)
                .join(Audience, Audience.id == AudienceMember.audience_id)
                .where(Audience.name == name, AudienceMember.left_at.is_(None))
            )
        )


def test_get_shows_topics_channels_and_changes_nothing(app, api, client):
    pk, path = _setup(app, api)
    r = client.get(path)
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    # Escaped, never raw markup from settings.
    assert "News &lt;weekly&gt;" in page and "<weekly>" not in page
    assert "Once a week" in page and "Offers" in page
    # Opt-out topic in by default, opt-in out; every channel on; marketing on.
    assert _checked(page) == {"news", "email", "sms", "push", "inapp"}
    assert r.headers["Cache-Control"].startswith("no-cache")
    assert _user(app, pk).preferences is None
    assert _members(app, "topic:news") == set()


def test_post_saves_and_mirrors_topics_to_audiences(app, api, client):
    pk, path = _setup(app, api)
    r = client.post(path, data={"form": "preferences", "topic": ["offers"], "channel": ["email"]})
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert "Your preferences were saved" in page
    assert _checked(page) == {"offers", "email"}
    prefs = _user(app, pk).preferences
    assert prefs == {
        "marketing": True,
        "channels": {"email": True, "sms": False, "push": False, "inapp": False},
        "topics": {"news": False, "offers": True},
    }
    assert _members(app, "topic:offers") == {pk}
    assert _members(app, "topic:news") == set()
    # Topic audiences are ordinary audiences: visible and targetable through the API.
    names = {a["name"] for a in api.get("/v1/audiences").json["data"]}
    assert {"topic:offers", "topic:news"} <= names
    # Leaving logs a `topic` leave; the page reflects it.
    r = client.post(path, data={"form": "preferences", "channel": ["email"], "no_marketing": "1"})
    assert _checked(r.get_data(as_text=True)) == {"email", "1"}
    assert _members(app, "topic:offers") == set()
    assert _user(app, pk).preferences["marketing"] is False
    with app.app_context():
        causes = list(
            db.session.execute(
                select(AudienceChange.kind, AudienceChange.cause).order_by(AudienceChange.id)
            )
        )
    assert causes == [("joined", "topic"), ("left", "topic")]


def test_membership_added_through_the_audience_api_shows_as_subscribed(app, api, client):
    _pk, path = _setup(app, api)
    api.post("/v1/audiences", json={"name": "topic:offers"})
    r = api.post("/v1/audiences/topic:offers/members", json={"userIds": ["ann"]})
    assert r.status_code < 300, r.json
    assert "offers" in _checked(client.get(path).get_data(as_text=True))


def test_forged_or_foreign_tokens_are_a_404_page(app, api, client, project):
    pk, path = _setup(app, api)
    token = path.removeprefix("/p/")
    other = links.sign("another-secret-key-0123456789", "preferences", {"p": project.id, "u": pk})
    unsub = links.sign(app.config["SECRET_KEY"], "unsubscribe", {"p": project.id, "u": pk})
    weird = links.sign(app.config["SECRET_KEY"], "preferences", {"p": "1", "u": [pk]})
    gone = links.sign(app.config["SECRET_KEY"], "preferences", {"p": project.id, "u": 10**12})
    for bad in (token[:-2] + "xx", other, unsub, weird, gone, "x", "%00"):
        for method in (client.get, client.post):
            r = method(f"/p/{bad}", data={"topic": "news"})
            assert r.status_code == 404, (bad, r.status_code)
            assert r.mimetype == "text/html"
            assert "not valid" in r.get_data(as_text=True)
    assert _user(app, pk).preferences is None


def test_the_page_is_not_in_the_api_document(client):
    paths = client.get("/openapi.json").json["paths"]
    assert not any(p.startswith("/p/") for p in paths)
