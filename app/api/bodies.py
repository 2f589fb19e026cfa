"""Request body parsing shared by the ingestion endpoints (JSON, gzip, object-or-array)."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

from flask import current_app, request

from app.errors import BadRequest, TooLarge


def read_json_body() -> Any:
    """The request's JSON, gunzipped if needed, with the size limit applied after inflating."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    raw = request.get_data(cache=True)
    encoding = request.headers.get("Content-Encoding", "").lower()
    if encoding == "gzip":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = inflater.decompress(raw, limit + 1)
        except (zlib.error, gzip.BadGzipFile):
            raise BadRequest("Body is not valid gzip", {"body": ["bad gzip"]}) from None
        if len(raw) > limit:
            raise TooLarge(f"Body over {limit} bytes once decompressed")
    elif encoding not in ("", "identity"):
        raise BadRequest(f"Unsupported Content-Encoding {encoding!r}")
    if not raw:
        raise BadRequest("A JSON body is required", {"body": ["missing"]})
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"Malformed JSON: {err}", {"body": ["malformed JSON"]}) from None
    # PostgreSQL cannot store NUL in text or JSONB; a cheap byte check guards the slow walk.
    if b"\\u0000" in raw or b"\x00" in raw:
        path = find_nul(body, "")
        if path is not None:
            raise BadRequest(
                f"NUL character in {path or 'body'}", {path or "body": ["contains NUL"]}
            )
    return body


def find_nul(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) holding a NUL character, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return here
            found = find_nul(item, here)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = find_nul(item, f"{path}[{index}]" if path else str(index))
            if found is not None:
                return found
    return None


def as_batch(body: Any, *, limit: int, name: str = "body") -> tuple[list[Any], bool]:
    """An object is one item, an array a batch of at most `limit`: (items, was_array)."""
    if isinstance(body, list):
        if not body:
            raise BadRequest("An empty batch", {name: ["must hold at least one item"]})
        if len(body) > limit:
            raise TooLarge(
                f"Batch of {len(body)} items is over the limit of {limit}",
                {name: [f"at most {limit} items"]},
            )
        return body, True
    if isinstance(body, dict):
        return [body], False
    raise BadRequest("Expected a JSON object or an array of objects", {name: ["wrong type"]})


def index_errors(errors: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Batch errors keyed by item index (as strings, since JSON keys are strings)."""
    return {str(i): e for i, e in sorted(errors.items())}
