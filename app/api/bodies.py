"""Request input shared by the endpoints: JSON bodies (gzip, limits, batches) and path ids.

Every JSON body is parsed under `app.jsontext`'s rules (bounded nesting, finite numbers, no
lone surrogates), the ingestion bodies (`read_json_body`) also without NUL (PostgreSQL text
cannot hold it). In a batch (a top-level array, or the `batch` array of `/v1/batch`) an item
that breaks a value rule is set aside (`None` in its place) and reported by `rejected_items`,
so its valid neighbours are still stored; a bad value anywhere else is a 400 naming the field.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

from flask import Flask, current_app, request

from app import jsontext
from app.errors import BadRequest, TooLarge
from app.services.named import id_problem


def read_json_body() -> Any:
    """The request's JSON, gunzipped if needed, with the size limit applied after inflating."""
    raw, body = _parsed_body()
    # PostgreSQL cannot store NUL in text or JSONB; a cheap byte check guards the slow walk.
    # Here, not in parse_json: the schemas of the other endpoints answer NUL with their 422.
    if b"\\u0000" in raw or b"\x00" in raw:
        path = find_nul(body, "")
        if path is not None:
            raise BadRequest(
                f"NUL character in {path or 'body'}", {path or "body": ["contains NUL"]}
            )
    return body


def _parsed_body() -> tuple[bytes, Any]:
    """The request's (inflated bytes, value) under parse_json, parsed once per request."""
    # Kept on the request (its WSGI environ), not on `g`: a test client or a caller inside an
    # app context reuses that context, and so its `g`, for every request it makes.
    if "cairn.json" in request.environ:
        return request.environ["cairn.json"]
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
    body, rejected = parse_json(raw)
    request.environ["cairn.json"] = raw, body
    request.environ["cairn.rejected_items"] = rejected
    return raw, body


def rejected_items() -> dict[int, dict[str, list[str]]]:
    """Batch items `read_json_body` set aside (now `None`), by index, with their errors."""
    return request.environ.get("cairn.rejected_items") or {}


def parse_json(raw: bytes) -> tuple[Any, dict[int, dict[str, list[str]]]]:
    """Parse a body under `app.jsontext`'s rules: (value, rejected batch items by index)."""
    try:
        body, suspect = jsontext.loads(raw)
    except jsontext.JSONTextError as err:
        raise BadRequest(str(err), {"body": [err.reason]}) from None
    if not suspect:
        return body, {}
    if isinstance(body, dict) and isinstance(body.get("batch"), list):
        outer = {key: value for key, value in body.items() if key != "batch"}
        _refuse(jsontext.value_problems(outer))
        items = body["batch"]
    elif isinstance(body, list):
        items = body
    else:
        _refuse(jsontext.value_problems(body))
        return body, {}
    rejected: dict[int, dict[str, list[str]]] = {}
    for index, item in enumerate(items):
        problems = jsontext.value_problems(item)
        if problems:
            rejected[index] = problems
            items[index] = None
    return body, rejected


def _refuse(problems: dict[str, list[str]]) -> None:
    if problems:
        field, [reason] = next(iter(problems.items()))
        raise BadRequest(f"Invalid value in {field}: {reason}", problems)


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


def init_app(app: Flask) -> None:
    """Hold every JSON body to `parse_json` and every integer in a path to BIGINT."""

    @app.before_request
    def _check_json_body() -> None:
        # flask-smorest (webargs) and request.get_json parse with a bare json.loads: check
        # JSON bodies here first. read_json_body keeps the result, so ingestion parses once.
        # Setting batch items aside only suits views reading through read_json_body: no
        # schema endpoint takes an array or a `batch` body (they would see the raw items).
        if request.routing_exception is None and request.is_json and request.get_data(cache=True):
            _parsed_body()

    @app.url_value_preprocessor
    def _check_path_ints(_endpoint: str | None, values: dict[str, Any] | None) -> None:
        for name, value in (values or {}).items():
            # BIGINT: the databases refuse (a 500) a number that no row can have anyway.
            reason = id_problem(value) if isinstance(value, int) else None
            if reason is not None:
                raise BadRequest(f"{name} {value} is {reason}", {name: [reason]})
