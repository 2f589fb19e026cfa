"""/v1/users: upsert, read, list and erase profiles."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.bodies import as_batch, read_json_body, rejected_items
from app.api.guard import SECRET, current_project, current_project_id, require_key
from app.api.pagination import BAD_QUERY, page_of, paginate
from app.db import db
from app.errors import BadRequest, InvalidInput, TooLarge
from app.models import Project
from app.models.base import utcnow
from app.schemas.users import (
    ERASE_BODY,
    UPSERT_BODY,
    EraseResponseSchema,
    UpsertResponseSchema,
    UserDetailSchema,
    UserListArgsSchema,
    UserListSchema,
)
from app.services import erasure, profiles, push_subscriptions
from app.services import segments as segments_service
from app.services.audiences import audiences_of

blp = Blueprint("users", __name__, url_prefix="/v1/users", description="User profiles")


def _project() -> Project:
    project = current_project()
    assert project is not None
    return project


@blp.route("")
class Users(MethodView):
    """The project's profiles."""

    @require_key(SECRET)
    @blp.doc(requestBody=UPSERT_BODY)
    @blp.response(200, UpsertResponseSchema)
    def post(self):
        """Upsert one profile or an array of up to 1000; invalid items do not sink the others.

        A batch in which no item is valid is a 422 with the errors by index.
        """
        items, is_batch = as_batch(read_json_body(), limit=current_app.config["MAX_BATCH"])
        results = profiles.upsert_users(db.session, project=_project(), items=items)
        for index, errors in rejected_items().items():  # set aside while parsing the body
            results[index].errors = errors
        if not is_batch and not results[0].ok:
            raise InvalidInput(
                "Invalid user: " + ", ".join(sorted(results[0].errors or {})), results[0].errors
            )
        if not any(r.ok for r in results):
            # As on /v1/events: a batch with nothing valid in it is refused whole.
            raise InvalidInput(
                "Invalid user at index 0: " + ", ".join(sorted(results[0].errors or {})),
                {str(r.index): r.errors for r in results},
            )
        created = sum(1 for r in results if r.ok and r.created)
        failed = sum(1 for r in results if not r.ok)
        return {
            "created": created,
            "updated": len(results) - created - failed,
            "failed": failed,
            "results": results,
        }

    @require_key(SECRET)
    @blp.arguments(UserListArgsSchema, **BAD_QUERY)
    @blp.response(200, UserListSchema)
    def get(self, args: dict):
        """Profiles in creation order, cursor-paginated.

        `?segment=` keeps the members of a segment: a stored segment's id or name, a string
        form (`plan:pro,role:admin`) or JSON text of the object or tree form. Anonymous
        profiles are never segment members.
        """
        limit, after = page_of(args)
        stmt = profiles.list_users_query(current_project_id(), after_id=after)
        segment = args.get("segment")
        if segment is not None:
            stmt = stmt.where(
                segments_service.segment_clause(db.session, current_project_id(), segment)
            )
        rows, cursor = paginate(db.session, stmt, limit)
        return {"data": rows, "next_cursor": cursor}

    @require_key(SECRET)
    @blp.doc(requestBody=ERASE_BODY)
    @blp.response(200, EraseResponseSchema)
    def delete(self):
        """Erase up to 1000 profiles by userId, email or phone."""
        return _erase_batch()


@blp.route("/delete")
class UsersDelete(MethodView):
    """Batch erasure for clients that cannot send a DELETE body."""

    @require_key(SECRET)
    @blp.doc(requestBody=ERASE_BODY)
    @blp.response(200, EraseResponseSchema)
    def post(self):
        """Erase up to 1000 profiles by userId, email or phone."""
        return _erase_batch()


def _erase_batch() -> dict:
    request_ = parse_erase_request(read_json_body(), limit=current_app.config["MAX_BATCH"])
    deleted = erasure.erase_users(db.session, project=_project(), request=request_)
    return {"deleted": deleted}


def parse_erase_request(body, *, limit: int) -> erasure.EraseRequest:
    """`{userIds, emails, phones}` or `[{userId|email|phone}, ...]`, at most `limit` in all."""
    req = erasure.EraseRequest()
    buckets = {"userId": req.user_ids, "email": req.emails, "phone": req.phones}
    if isinstance(body, list):
        for index, item in enumerate(body):
            if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in buckets:
                raise InvalidInput(
                    f"item {index}: expected exactly one of userId, email, phone",
                    {str(index): {"_schema": ["expected one of userId, email, phone"]}},
                )
            key, value = next(iter(item.items()))
            if not isinstance(value, str) or not value:
                raise InvalidInput(
                    f"item {index}: {key} must be a string",
                    {str(index): {key: ["must be a non-empty string"]}},
                )
            buckets[key].append(value)
    elif isinstance(body, dict):
        names = {"userIds": req.user_ids, "emails": req.emails, "phones": req.phones}
        unknown = set(body) - set(names)
        if unknown:
            raise InvalidInput("unknown fields", {k: ["unknown field"] for k in sorted(unknown)})
        for name, target in names.items():
            values = body.get(name, [])
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                raise InvalidInput(
                    f"{name} must be a list of strings",
                    {name: ["must be a list of non-empty strings"]},
                )
            target.extend(values)
    else:
        raise BadRequest("Expected an object or an array", {"body": ["wrong type"]})
    if len(req) == 0:
        raise InvalidInput("nobody to erase", {"userIds": ["give userIds, emails or phones"]})
    if len(req) > limit:
        raise TooLarge(f"at most {limit} users per erase", {"body": [f"at most {limit} items"]})
    return req


@blp.route("/<user_id>")
class UserItem(MethodView):
    """One profile by userId."""

    @require_key(SECRET)
    @blp.response(200, UserDetailSchema)
    def get(self, user_id: str):
        """The profile and the anonymous ids merged into it."""
        user = profiles.get_user(db.session, project_id=current_project_id(), user_id=user_id)
        # Not columns: extra attributes the response schema reads.
        user.anonymous_ids = profiles.anonymous_ids_of(db.session, user.id)  # type: ignore[attr-defined]
        user.audiences = audiences_of(db.session, user.id, utcnow())  # type: ignore[attr-defined]
        user.push_subscriptions = push_subscriptions.user_subscriptions(  # type: ignore[attr-defined]
            db.session, user_pk=user.id
        )
        return user

    @require_key(SECRET)
    @blp.response(200, EraseResponseSchema)
    def delete(self, user_id: str):
        """Erase the profile, its PII in events, and everything hanging off it."""
        deleted = erasure.erase_users(
            db.session, project=_project(), request=erasure.EraseRequest(user_ids=[user_id])
        )
        return {"deleted": deleted}
