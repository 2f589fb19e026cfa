"""Validation and normalization of the reserved profile fields."""

from __future__ import annotations

import functools
import zoneinfo

import langcodes
import phonenumbers
from email_validator import EmailNotValidError, validate_email


class FieldError(ValueError):
    """A reserved field's value is invalid; the message says why."""


def normalize_email(raw: str) -> str:
    """A syntactically valid address, lower-cased whole (no DNS lookup).

    The local part is case-sensitive by the RFC but not in practice; lower-casing it makes
    `Ann@x.com` and `ann@x.com` one recipient for deduplication, erasure and suppression.
    """
    try:
        return validate_email(raw, check_deliverability=False).normalized.lower()
    except EmailNotValidError as err:
        raise FieldError(str(err)) from None


def normalize_phone(raw: str, default_region: str | None) -> str:
    """E.164, using the project's default region for numbers without a country code."""
    try:
        number = phonenumbers.parse(raw, default_region if not raw.startswith("+") else None)
    except phonenumbers.NumberParseException as err:
        hint = "" if default_region else " (no project default region: use +<country code>)"
        raise FieldError(f"not a phone number: {err}{hint}") from None
    if not phonenumbers.is_valid_number(number):
        raise FieldError("not a valid phone number for its region")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_language(raw: str) -> str:
    """A valid BCP 47 tag in its standard form (`en-us` becomes `en-US`)."""
    if not raw or not langcodes.tag_is_valid(raw):
        raise FieldError("not a valid BCP 47 language tag")
    return langcodes.standardize_tag(raw)


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def normalize_timezone(raw: str) -> str:
    """A valid IANA time zone name."""
    if raw not in _zones():
        raise FieldError("not an IANA time zone name (e.g. Europe/Paris)")
    return raw
