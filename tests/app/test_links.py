"""Signed links: a token says only what it was signed with, and only for its own kind."""

from __future__ import annotations

import pytest

from app.services import links

SETTINGS = {"SECRET_KEY": "s" * 32, "PUBLIC_URL": "https://cairn.acme.io"}


def _token(url: str) -> str:
    return url.rsplit("/", 1)[1].removesuffix(".gif")


def test_a_click_link_carries_its_signed_target():
    url = links.click_url(SETTINGS, 42, "https://shop.acme.io/cart?x=1")
    assert url.startswith("https://cairn.acme.io/t/c/")
    payload = links.verify(SETTINGS["SECRET_KEY"], "click", _token(url))
    assert payload == {"m": 42, "u": "https://shop.acme.io/cart?x=1"}


def test_a_tampered_or_foreign_token_is_refused():
    token = _token(links.click_url(SETTINGS, 42, "https://shop.acme.io/"))
    body, signature = token.rsplit(".", 1)
    forged = links.sign("another secret key!!", "click", {"m": 42, "u": "https://evil.io/"})
    for bad in (body + ".AAAA" + signature[4:], forged, "junk", ""):
        with pytest.raises(links.BadToken, match="not a valid click link"):
            links.verify(SETTINGS["SECRET_KEY"], "click", bad)
    # A token of one kind never passes for another (an open pixel is no unsubscribe).
    opened = _token(links.open_url(SETTINGS, 42))
    with pytest.raises(links.BadToken, match="unsubscribe"):
        links.verify(SETTINGS["SECRET_KEY"], "unsubscribe", opened)
    assert links.verify(SETTINGS["SECRET_KEY"], "open", opened) == {"m": 42}


def test_unsubscribe_and_preference_links_name_their_person():
    url = links.unsubscribe_url(
        SETTINGS, project_id=1, channel="email", address="ann@acme.io", message_id=9
    )
    assert url.startswith("https://cairn.acme.io/u/")
    assert links.verify(SETTINGS["SECRET_KEY"], "unsubscribe", _token(url)) == {
        "p": 1,
        "c": "email",
        "a": "ann@acme.io",
        "m": 9,
    }
    url = links.preferences_url(SETTINGS, project_id=1, user_id=5)
    assert url.startswith("https://cairn.acme.io/p/")
    assert links.verify(SETTINGS["SECRET_KEY"], "preferences", _token(url)) == {"p": 1, "u": 5}
