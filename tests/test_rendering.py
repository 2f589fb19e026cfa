"""app.rendering: sandboxed Jinja2 with caps, fallback languages, escaping and local times."""

from __future__ import annotations

import time

import pytest

from app.rendering import (
    RenderError,
    RenderLimits,
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


def failure(source: str, **kwargs) -> RenderError:
    start = time.monotonic()
    with pytest.raises(RenderError) as info:
        one(source, **kwargs)
    assert time.monotonic() - start < 2, "a capped render must stop quickly"
    return info.value


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("{{ ''.__class__.__mro__ }}", "sandbox violation"),
        ("{{ self.__dict__ }}", "sandbox violation"),
        ("{{ cycler.__init__.__globals__ }}", "sandbox violation"),
        ("{{ {}.update(a=1) }}", "sandbox violation"),
        ("{{ 'x'.center(10**9) }}", "sandbox violation"),
        ("{% for i in range(10**9) %}x{% endfor %}", "range"),
        ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "limit"),
        (
            "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
            "output",
        ),
        ("{{ 'x' * 10**9 }}", "repetition"),
        ("{{ 9 ** 9999999 }}", "power"),
        ("{{ '%999999999s' % 1 }}", "width"),
        ("{{ '{:>999999999}'.format(1) }}", "width"),
        ("{{ 'x'|center(10**9) }}", "width"),
        ("{{ 'x'|indent(10**9) }}", "width"),
        ("{{ ('x' * 100000)|replace('x', 'x' * 1000) }}", "replace"),
        ("{{ (['x' * 100000] * 1000)|join }}", "join"),
        (
            "{% set ns = namespace(s='x' * 1000) %}{% for i in range(40) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "limit",
        ),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "recursion"),
        ("{{ lipsum(10**6) }}", "undefined"),
        ("{{ user.nope + 1 }}", "undefined"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ],
)
def test_sandbox_and_caps_are_render_errors(source, words):
    err = failure(source)
    assert words in str(err), str(err)
    assert err.field == "sms.en.body"


def test_output_cap_per_field():
    assert len(one("{{ 'x' * 1600 }}")) == 1600
    assert "output over 1600" in str(failure("{{ 'x' * 1601 }}"))
    assert len(one("{{ 'x' * 65536 }}", "push")) == 65536
    assert "output over 65536" in str(failure("{{ 'x' * 65537 }}", channel="push"))
    assert len(one("{{ 'x' * 200000 }}", "email", "html")) == 200_000


def test_op_and_time_caps_are_configurable():
    source = "{% for i in range(50) %}{{ user.plan }}{% endfor %}"
    assert one(source) == "pro" * 50
    assert "operations" in str(failure(source, limits=RenderLimits(max_ops=40)))
    slow = "{% for i in range(99999) %}{% for j in range(20) %}{% endfor %}{% endfor %}"
    assert "ms" in str(failure(slow, limits=RenderLimits(max_seconds=0.01, max_ops=10**9)))


def test_runtime_errors_name_the_line():
    err = failure("line one\n{{ user.nope + 1 }}")
    assert err.line == 2 and "line 2" in str(err)


def test_channel_errors():
    with pytest.raises(RenderError, match="no email content"):
        render({"sms": {"en": {"body": "x"}}}, "email", "en", "en", {})
    with pytest.raises(RenderError, match="unknown channel"):
        render({"sms": {"en": {"body": "x"}}}, "fax", "en", "en", {})
    with pytest.raises(RenderError):
        render({"sms": {"en": {"body": 3}}}, "sms", "en", "en", {})
    with pytest.raises(RenderError):
        render({"sms": "garbage"}, "sms", "en", "en", {})  # type: ignore[dict-item]
    with pytest.raises(RenderError, match="syntax error"):
        render({"sms": {"en": {"body": "{{"}}}, "sms", "en", "en", {})


def test_check_syntax_reports_the_line():
    check_syntax("{{ user.plan }}")
    with pytest.raises(RenderError) as info:
        check_syntax("a\nb\n{% if %}")
    assert info.value.line == 3
    with pytest.raises(RenderError, match="nosuchfilter"):
        check_syntax("{{ x|nosuchfilter }}")
