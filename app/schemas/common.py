"""Schemas and fields shared by several endpoints.

The OpenAPI document is generated from these, so each constraint written here is both what the
document promises and what the request is checked against: keep them the one place.
"""

import base64
import binascii
import re
from typing import Any

from marshmallow import EXCLUDE, Schema, fields, validate

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


class Boolean(fields.Bool):
    """A JSON boolean: `true` or `false`, never `1` or `"yes"` (marshmallow's Bool takes them)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


# --- Cursor pagination: `?limit=` and an opaque `?cursor=` (app/api/pagination.py) ---

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_ROW_ID = 2**63 - 1


def encode_cursor(last_id: int) -> str:
    """An opaque cursor for the row after `last_id`."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id inside a cursor; ValueError when it is not one `encode_cursor` could make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error) as err:
        raise ValueError("malformed") from err
    kind, _, value = text.partition(":")
    if kind != "id" or not (value.isascii() and value.isdigit()):
        raise ValueError("malformed")
    # BIGINT: the databases refuse (a 500) an id that no row can have anyway.
    if int(value) > MAX_ROW_ID:
        raise ValueError("malformed")
    return int(value)


class Cursor(fields.Str):
    """`nextCursor` of the previous page, loaded as the last row id it stands for.

    A list with other positions (the timeline's) subclasses it with its own `decode`.
    """

    default_error_messages = {"malformed": "malformed"}  # noqa: RUF012

    @staticmethod
    def decode(text: str) -> Any:
        """The position `text` stands for; ValueError when no page could have made it."""
        return decode_cursor(text)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return self.decode(text)
        except ValueError:
            raise self.make_error("malformed") from None


class PageArgsSchema(Schema):
    """`?limit=` and `?cursor=` of every cursor-paginated list."""

    class Meta:
        # Browsers and SDKs add their own parameters (cache busters): ignore them.
        unknown = EXCLUDE

    limit = fields.Int(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(min=1, max=MAX_LIMIT, error=f"1-{MAX_LIMIT}"),
        metadata={"description": f"page size, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT})"},
    )
    cursor = Cursor(
        metadata={
            "format": "page-cursor",
            "description": "`nextCursor` of the previous page (opaque; a malformed one is a 400)",
        }
    )
