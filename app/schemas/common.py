"""Schemas and fields shared by several endpoints.

The OpenAPI document is generated from these, so each constraint written here is both what the
document promises and what the request is checked against: keep them the one place.
"""

import re
from typing import Any

from marshmallow import Schema, fields, validate

from app.services.named import MAX_NAME_LENGTH

MAX_USER_ID_LENGTH = 255


def whole(pattern: str) -> str:
    """A pattern matching the whole value, the same in Python (marshmallow, jsonschema) and in
    ECMA-262 (OpenAPI readers): `$` would also match before a final newline in Python."""
    return rf"^(?:{pattern})(?![\s\S])"


def name_pattern(forbidden: str = "/", not_first: str = "") -> str:
    """What `app.services.named.name_problem(forbidden=...)` accepts, as a pattern: not blank,
    not only digits (it would read as an id in `/{ref}` paths), none of `forbidden` and no
    control characters, and not starting with one of `not_first`; spaces around are trimmed."""
    bad = re.escape(forbidden) + r"\x00-\x1f"
    first = rf"(?!\s*[{re.escape(not_first)}])" if not_first else ""
    return whole(rf"(?!\s*\d+\s*(?![\s\S])){first}[^{bad}]*[^\s{bad}][^{bad}]*")


class ErrorSchema(Schema):
    """The one error shape of the API."""

    code = fields.Int(required=True)
    status = fields.Str(required=True)
    message = fields.Str(required=True)
    errors = fields.Dict(required=True, metadata={"description": "field path: [reasons]"})


def name_field(*, forbidden: str = "/", not_first: str = "", **kwargs: Any) -> fields.Str:
    """A resource name, as `app.services.named.name_problem` accepts it."""
    listed = ", ".join(f"'{c}'" for c in forbidden)
    return fields.Str(
        validate=[
            validate.Length(min=1, max=MAX_NAME_LENGTH),
            validate.Regexp(
                name_pattern(forbidden, not_first),
                error=f"not blank, not only digits, no {listed} or control characters",
            ),
        ],
        metadata={"description": "unique in the project; trimmed"},
        **kwargs,
    )


class Integer(fields.Int):
    """A JSON integer: `3` and `3.0` (JSON Schema's integers), never `true` or `"3"`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return super()._deserialize(value, attr, data, **kwargs)


def user_id_field(**kwargs: Any) -> fields.Str:
    """A client's user id (1-255 characters)."""
    return fields.Str(validate=validate.Length(min=1, max=MAX_USER_ID_LENGTH), **kwargs)
