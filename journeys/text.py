"""Blank text, decided the same way by the API and by its JSON Schema.

Python's `str.isspace` and ECMAScript's `\\s` (the dialect of JSON Schema's `pattern`) disagree:
U+001C-U+001F and U+0085 are space only to Python, U+FEFF only to ECMAScript. A text is blank when
it holds no character that both call visible, so a value the published schema accepts is never
refused as blank, and the other way round.
"""

BLANK_CLASS = r"\s\x1c-\x1f\x85\ufeff"
VISIBLE_PATTERN = rf"[^{BLANK_CLASS}]"  # search semantics: somewhere a visible character
LEADING_BLANKS_THEN_VISIBLE = rf"^[{BLANK_CLASS}]*[^{BLANK_CLASS}]"  # the same, match semantics


def is_blank(value: str) -> bool:
    return all(c.isspace() or c == "\ufeff" for c in value)
