"""The project's audit log: who changed what, with before and after."""

from __future__ import annotations

import json
from typing import Any

from flask import render_template, request

from app.db import db
from app.services.console_accounts import audit_entries
from app.ui.access import project_page
from app.ui.blueprint import bp

PAGE = 50


@bp.get("/projects/<int:pid>/audit")
@project_page("viewer")
def audit_log(pid: int) -> Any:
    """Newest first, `?before=<id>` for the next page."""
    before = request.args.get("before", type=int)
    rows = audit_entries(db.session, project_id=pid, before_id=before, limit=PAGE)
    return render_template(
        "ui/audit.html",
        rows=rows,
        older=rows[-1].id if len(rows) == PAGE else None,
        pretty=lambda v: json.dumps(v, indent=2, sort_keys=True, default=str),
    )
