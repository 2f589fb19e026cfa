"""`cairn` commands that need no server: user-hash."""

from __future__ import annotations

import json

from app.services.projects import user_hash
from tests.e2e.live import _cairn


def test_user_hash_prints_the_identity_hash_of_the_default_or_given_project(tmp_path):
    assert _cairn(tmp_path, "db", "upgrade").returncode == 0
    empty = _cairn(tmp_path, "user-hash", "ann")
    assert empty.returncode == 1 and "no project yet" in empty.stderr

    def create(name: str) -> dict:
        out = _cairn(tmp_path, "project", "create", name, "--json")
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = create("Default"), create("Shop")
    out = _cairn(tmp_path, "user-hash", "ann")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == user_hash(first["identitySecret"], "ann")
    out = _cairn(tmp_path, "user-hash", "ann", "--project", str(second["id"]))
    assert out.stdout.strip().splitlines()[-1] == user_hash(second["identitySecret"], "ann")
    missing = _cairn(tmp_path, "user-hash", "ann", "--project", "999")
    assert missing.returncode == 1 and "not found" in missing.stderr
