"""Log in, log out, the one-time setup / invitation links and the project's members."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from flask import current_app, g, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from app.db import db
from app.errors import DomainError
from app.models.console import ROLES, ConsoleMembership, ConsoleUser
from app.services import console_accounts as accounts
from app.ui import Account
from app.ui.access import audit, project_page
from app.ui.blueprint import bp, limiter


def _email_key() -> str:
    return "login:" + (request.form.get("email") or "").strip().lower()


def _safe_next(target: str | None) -> str:
    """Only a path on this site: `?next=https://evil` must not turn login into a redirector."""
    if target is None:
        return url_for("ui.index")
    local = target.startswith("/") and not target.startswith(("//", "/\\"))
    if local and not urlparse(target).netloc:
        return target
    return url_for("ui.index")


@bp.get("/")
@login_required
def index() -> Any:
    """The first project's home, or a page saying there is none yet."""
    projects = accounts.projects_of(db.session, current_user.row)
    if projects:
        return redirect(url_for("ui.home", pid=projects[0].id))
    return render_template("ui/no_projects.html")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("20 per minute", methods=["POST"])
@limiter.limit("5 per minute", methods=["POST"], key_func=_email_key)
def login() -> Any:
    """The login form; a wrong email or password says which fields, not which one was wrong."""
    error = None
    if request.method == "POST":
        row = accounts.authenticate(
            db.session, email=request.form.get("email"), password=request.form.get("password")
        )
        if row is not None:
            login_user(Account(row))
            return redirect(_safe_next(request.args.get("next")))
        error = "Wrong email or password"
    first_start = not accounts.has_accounts(db.session)
    return render_template(
        "ui/login.html", error=error, email=request.form.get("email", ""), first=first_start
    ), (401 if error else 200)


@bp.post("/logout")
def logout() -> Any:
    """End the session."""
    logout_user()
    return redirect(url_for("ui.login"))


@bp.route("/setup/<token>", methods=["GET", "POST"])
@limiter.limit("20 per minute", methods=["POST"])
def setup(token: str) -> Any:
    """Create an account from a one-time link (the first owner, or an invitation)."""
    invite = accounts.find_invite(db.session, token)
    errors: dict[str, list[str]] = {}
    message = None
    form = request.form
    if request.method == "POST":
        if form.get("password") != form.get("confirm"):
            errors = {"confirm": ["the two passwords differ"]}
            message = "The passwords differ"
        else:
            try:
                row = accounts.accept_invite(
                    db.session,
                    token=token,
                    email=form.get("email"),
                    name=form.get("name"),
                    password=form.get("password"),
                )
            except DomainError as err:
                db.session.rollback()
                invite = accounts.find_invite(db.session, token)
                errors, message = err.errors or {}, err.message
            else:
                logout_user()
                login_user(Account(row))
                return redirect(url_for("ui.index"))
    return render_template(
        "ui/setup.html", invite=invite, errors=errors, message=message, form=form
    ), (422 if errors else 200)


@bp.route("/projects/<int:pid>/members", methods=["GET", "POST"])
@project_page("viewer")
def members(pid: int) -> Any:
    """Who has access to the project; an admin invites people with a role."""
    link = None
    errors: dict[str, list[str]] = {}
    message = None
    if request.method == "POST":
        if g.role != "admin":
            from app.errors import Forbidden

            raise Forbidden("Only an admin of this project can invite people")
        try:
            link = accounts.create_invite(
                db.session,
                project_id=pid,
                role=request.form.get("role"),
                email=request.form.get("email"),
                created_by=current_user.row.id,
                public_url=current_app.config["PUBLIC_URL"],
            )
        except DomainError as err:
            db.session.rollback()
            errors, message = err.errors or {}, err.message
        else:
            audit(
                "member.invited",
                "member",
                request.form.get("email"),
                summary=f"invited {request.form.get('email')} as {request.form.get('role')}",
                after={"email": request.form.get("email"), "role": request.form.get("role")},
            )
    rows = db.session.execute(
        select(ConsoleUser.email, ConsoleUser.name, ConsoleMembership.role)
        .join(ConsoleMembership, ConsoleMembership.console_user_id == ConsoleUser.id)
        .where(ConsoleMembership.project_id == pid)
        .order_by(ConsoleUser.email)
    ).all()
    owners = db.session.scalars(
        select(ConsoleUser.email).where(ConsoleUser.is_owner.is_(True)).order_by(ConsoleUser.email)
    ).all()
    return render_template(
        "ui/members.html",
        rows=rows,
        owners=owners,
        roles=ROLES,
        link=link,
        errors=errors,
        message=message,
    ), (422 if errors else 200)
