"""app.rendering: channels, fallback languages, escaping, local times, field caps and errors.

The sandbox and its caps on a template's work are in test_sandbox.py.
"""

from __future__ import annotations

import re
import time

import pytest

from app.rendering import (
    RenderError,
    build_context,
    check_syntax,
    language_chain,
    render,
)

CONTEXT = build_context(
    user={
        "userId": "u1",
        "timezone": "America/Sao_Paulo",
        "plan": "pro",
        "attributes": {"plan": "pro"},
    },
    params={"name": "<b>Ann</b>", "items": ["a", "b"]},
    event={"name": "signup", "properties": {"source": "ads"}},
)


def one(source: str, channel: str = "sms", field: str = "body", **kwargs) -> str:
    content = {field: source}
    if channel == "email":
        content.setdefault("subject", "s")
    rendered = render({channel: {"en": content}}, channel, "en", "en", CONTEXT, **kwargs)
    return rendered.fields[field]


def test_context_variables():
    assert one("{{ user.plan }}/{{ user.attributes.plan }}/{{ user.userId }}") == "pro/pro/u1"
    assert one("{{ params.items|join(',') }} {{ data.items|length }}") == "a,b 2"
    assert one("{{ event.name }} {{ event.properties.source }}") == "signup ads"
    assert one("{{ campaign.name|default('none') }}") == "none"


def test_chainable_undefined_renders_empty():
    assert one("[{{ user.nope.deeper.still }}][{{ nothing }}][{{ params.x['y'] }}]") == "[][][]"
    assert one("{% if user.nope.x %}yes{% else %}no{% endif %}") == "no"


def test_language_fallback_chain():
    channels = {
        "sms": {
            "pt": {"body": "pt"},
            "en": {"body": "en"},
            "de": {"body": "de"},
            "zh-Hant": {"body": "zh-Hant"},
        }
    }
    pick = lambda lang, default="en": render(channels, "sms", lang, default, {}).language_used  # noqa: E731
    assert pick("pt-BR") == "pt"
    assert pick("PT") == "pt"
    assert pick("zh-Hant-TW") == "zh-Hant"
    assert pick("zh-Hans") == "zh-Hant"  # a variant of the same language before the default
    assert pick("fr") == "en"
    assert pick(None) == "en"
    assert pick("fr", default="ja") == "de"  # first available, sorted
    assert render(channels, "sms", "pt-BR", "en", {}).language == "pt"
    assert language_chain(["pt-BR", "en"], "pt-BR", "en") == "pt-BR"
    assert language_chain(["pt-BR", "en"], "pt", "en") == "pt-BR"


def test_autoescape_in_email_html_only():
    assert one("{{ params.name }}", "email", "html") == "&lt;b&gt;Ann&lt;/b&gt;"
    assert one("{{ params.name|safe }}", "email", "html") == "<b>Ann</b>"
    assert one("{{ params.name }}", "email", "text") == "<b>Ann</b>"
    assert one("{{ params.name }}", "email", "subject") == "<b>Ann</b>"
    assert one("{{ params.name }}") == "<b>Ann</b>"


def test_email_subject_is_one_line():
    context = build_context(params={"x": "a\r\nBcc: evil@example.com"})
    rendered = render(
        {"email": {"en": {"subject": "Hi {{ params.x }}", "text": "t"}}},
        "email",
        "en",
        "en",
        context,
    )
    assert rendered.fields["subject"] == "Hi a Bcc: evil@example.com"


def test_inapp_data_string_values_are_templates():
    channels = {
        "inapp": {
            "en": {
                "title": "t",
                "data": {"a": "{{ user.plan }}", "n": 2, "l": ["{{ 1 + 1 }}", True]},
            }
        }
    }
    rendered = render(channels, "inapp", "en", "en", CONTEXT)
    assert rendered.fields["data"] == {"a": "pro", "n": 2, "l": ["2", True]}


def test_localdatetime_in_the_users_zone():
    assert one("{{ '2024-01-15T12:00:00Z'|localdatetime }}") == "2024-01-15 09:00"
    assert one("{{ '2024-01-15T01:00:00+00:00'|localdate }}") == "2024-01-14"
    assert one("{{ '2024-07-01T12:00:00Z'|localdatetime('%H:%M %Z', tz='Europe/Paris') }}") == (
        "14:00 CEST"
    )
    assert one("{{ 0|localdatetime('%Y') }}") == "1969"
    assert one("[{{ user.nope|localdatetime }}][{{ 'not a date'|localdatetime }}]") == (
        "[][not a date]"
    )
    no_zone = render(
        {"sms": {"en": {"body": "{{ '2024-01-15T12:00:00Z'|localdatetime }}"}}},
        "sms",
        "en",
        "en",
        {},
    )
    assert no_zone.fields["body"] == "2024-01-15 12:00"


def failure(source: str, match: str, **kwargs) -> RenderError:
    """The RenderError of rendering `source`, whose message must contain `match` (literally)."""
    start = time.monotonic()
    with pytest.raises(RenderError, match=re.escape(match)) as info:
        one(source, **kwargs)
    assert time.monotonic() - start < 2, "a capped render must stop quickly"
    return info.value


def test_output_cap_per_field():
    assert len(one("{{ 'x' * 1600 }}")) == 1600
    failure("{{ 'x' * 1601 }}", "limit exceeded: output over 1600 characters")
    assert len(one("{{ 'x' * 65536 }}", "push")) == 65536
    failure("{{ 'x' * 65537 }}", "limit exceeded: output over 65536", channel="push")
    assert len(one("{{ 'x' * 200000 }}", "email", "html")) == 200_000


def test_runtime_errors_name_the_line():
    err = failure("line one\n{{ user.nope + 1 }}", "sms.en.body line 2: undefined value")
    assert err.line == 2 and "line 2" in str(err)


def test_channel_errors():
    with pytest.raises(RenderError, match=r"^email: the template has no email content$"):
        render({"sms": {"en": {"body": "x"}}}, "email", "en", "en", {})
    with pytest.raises(RenderError, match=r"^unknown channel 'fax'$"):
        render({"sms": {"en": {"body": "x"}}}, "fax", "en", "en", {})
    with pytest.raises(RenderError, match=r"^sms\.en\.body: not a string$"):
        render({"sms": {"en": {"body": 3}}}, "sms", "en", "en", {})
    with pytest.raises(RenderError, match=r"^sms: the template has no sms content$"):
        render({"sms": "garbage"}, "sms", "en", "en", {})  # type: ignore[dict-item]
    with pytest.raises(RenderError, match=r"^sms\.en\.body line 1: syntax error: "):
        render({"sms": {"en": {"body": "{{"}}}, "sms", "en", "en", {})


def test_check_syntax_reports_the_line():
    check_syntax("{{ user.plan }}")
    with pytest.raises(RenderError, match=r"^line 3: Expected an expression") as info:
        check_syntax("a\nb\n{% if %}")
    assert info.value.line == 3
    with pytest.raises(RenderError, match=r"^line 1: No filter named 'nosuchfilter'"):
        check_syntax("{{ x|nosuchfilter }}")
