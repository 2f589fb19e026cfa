"""app.jsontext: the byte scan agrees with the parsed value, whatever strings say."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.jsontext import MAX_DEPTH, JSONTextError, loads, structure_depth, value_problems

# Strings made of what the byte scan has to get right: brackets, quotes and backslashes.
tricky = st.text(st.sampled_from('[]{}"\\/aé\u2028'), max_size=8)
values = st.recursive(
    st.none() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | tricky,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky, inner, max_size=3),
    max_leaves=40,
)


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(value=values, ascii_only=st.booleans(), indent=st.sampled_from([None, 1]))
def test_structure_depth_is_the_nesting_of_the_value(value, ascii_only, indent):
    raw = json.dumps(value, ensure_ascii=ascii_only, indent=indent).encode()
    assert structure_depth(raw) == depth(value)
    assert loads(raw)[0] == value


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100, b"[" * 100 + b'"' + b"]" * 100, b"[}", b'["]"', b'{"a": [1}]'],
)
def test_brackets_that_cannot_balance_are_malformed(raw):
    with pytest.raises(JSONTextError, match="Malformed JSON"):
        loads(raw)


def test_depth_is_bounded_before_parsing():
    with pytest.raises(JSONTextError, match=f"deeper than {MAX_DEPTH}"):
        loads(b"[" * 100_000 + b"]" * 100_000)
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)[0] is not None


def test_other_encodings_are_read_as_json_reads_them():
    text = '{"a": ["x\u00e9\\ud800"]}'
    for encoding in ("utf-16", "utf-16-le", "utf-32", "utf-8-sig"):
        value, suspect = loads(text.encode(encoding))
        assert value == {"a": ["x\u00e9\ud800"]} and suspect
        assert value_problems(value) == {"a[0]": ["contains a lone UTF-16 surrogate"]}


def test_only_suspect_text_needs_the_walk():
    assert loads(b'{"a": [1.5, "\\u00e9", "\xc3\xa9"]}')[1] is False
    for raw in (
        b'{"a": NaN}',
        b'{"a": 1e999}',
        b'{"a": "\\ud83d\\ude00"}',
        b'{"a": "\xed\x9f\xbf"}',
    ):
        assert loads(raw)[1] is True, raw
