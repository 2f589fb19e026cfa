"""User services, by seam: profiles (upsert, fields, lookups), identity (verification and
merges) and erasure. This module keeps the names other modules import from here; new code
imports from the module that owns the name."""

from __future__ import annotations

from app.services.erasure import EraseRequest, erase_users
from app.services.identity import USER_OWNED, identify, merge_users
from app.services.profiles import (
    ATTRIBUTE_ALIASES,
    MAX_ID_LENGTH,
    RESERVED,
    ProfileChange,
    UpsertResult,
    anonymous_ids_of,
    apply_change,
    ensure_anonymous_ids,
    ensure_user_ids,
    get_user,
    list_users_query,
    load_users_by_external_id,
    merge_attributes,
    normalize_field,
    parse_profile_change,
    upsert_users,
)

__all__ = [
    "ATTRIBUTE_ALIASES",
    "MAX_ID_LENGTH",
    "RESERVED",
    "USER_OWNED",
    "EraseRequest",
    "ProfileChange",
    "UpsertResult",
    "anonymous_ids_of",
    "apply_change",
    "ensure_anonymous_ids",
    "ensure_user_ids",
    "erase_users",
    "get_user",
    "identify",
    "list_users_query",
    "load_users_by_external_id",
    "merge_attributes",
    "merge_users",
    "normalize_field",
    "parse_profile_change",
    "upsert_users",
]
