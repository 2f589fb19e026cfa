"""The `cairn` command as a user runs it: serve from nothing, projects, keys, bad config."""

from __future__ import annotations

import json
import os
import re

import pytest
import requests

from tests.e2e.live import (  # noqa: F401
    CAIRN,
    Server,
    _cairn,
    _env,
    _free_port,
    fresh_pg_database,
)


def test_serve_from_nothing_creates_a_project_and_takes_events(tmp_path):
    server = Server(tmp_path)
    try:
        out = server.output()
        secret = re.search(r"secret key\s+(sk_\S+)", out).group(1)
        publishable = re.search(r"publishable key\s+(pk_\S+)", out).group(1)
        assert (tmp_path / "instance" / "cairn.db").exists()
        assert requests.get(server.url + "/readyz", timeout=5).json()["database"] == "ok"
        spec = requests.get(server.url + "/openapi.json", timeout=5).json()
        assert "/v1/events" in spec["paths"] and "/v1/users" in spec["paths"]
        assert requests.get(server.url + "/docs", timeout=5).status_code == 200
        r = requests.post(
            server.url + "/v1/events",
            timeout=5,
            headers={"Authorization": f"Bearer {publishable}"},
            json={"name": "hello", "userId": "first"},
        )
        assert r.status_code == 202
        r = requests.get(
            server.url + "/v1/users/first", timeout=5, headers={"Authorization": f"Bearer {secret}"}
        )
        assert r.status_code == 200
        assert "gunicorn" in out.lower() or "Cairn listening" in out
        # A request gunicorn refuses before the app sees it is answered in the JSON shape too.
        r = requests.get(server.url + "/v1/users?x=" + "a" * 6000, timeout=5)
        assert r.status_code == 414 and r.headers["Content-Type"] == "application/json"
        assert r.json()["code"] == 414 and "Request Line is too large" in r.json()["message"]
    finally:
        server.stop()
    # A second start keeps the data and prints no new keys.
    again = Server(tmp_path)
    try:
        assert "secret key" not in again.output()
        r = requests.get(
            again.url + "/v1/users/first", timeout=5, headers={"Authorization": f"Bearer {secret}"}
        )
        assert r.status_code == 200
    finally:
        again.stop()


def test_project_and_key_commands(tmp_path):
    assert _cairn(tmp_path, "db", "upgrade").returncode == 0
    created = _cairn(tmp_path, "project", "create", "Shop", "--json", "--region", "KR")
    assert created.returncode == 0, created.stderr
    creds = json.loads(created.stdout.strip().splitlines()[-1])
    assert set(creds) == {
        "id",
        "name",
        "secretKey",
        "publishableKey",
        "accessKey",
        "identitySecret",
    }
    assert creds["secretKey"].startswith("sk_") and creds["publishableKey"].startswith("pk_")
    key = _cairn(
        tmp_path, "key", "create", "--project", str(creds["id"]), "--kind", "publishable", "--json"
    )
    assert key.returncode == 0, key.stderr
    new_key = json.loads(key.stdout.strip().splitlines()[-1])
    assert new_key["key"].startswith("pk_")
    revoked = _cairn(tmp_path, "key", "revoke", new_key["prefix"])
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    missing = _cairn(tmp_path, "key", "revoke", "sk_000000000000")
    assert missing.returncode != 0 and "no key" in missing.stderr
    bad = _cairn(tmp_path, "key", "create", "--project", "999", "--kind", "secret")
    assert bad.returncode != 0 and "not found" in bad.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("DATABASE_URL", "mysql://x"),
        ("PUBLIC_URL", "localhost"),
        ("BROKER_URL", "kafka://x"),
        ("SECRET_KEY", "short"),
    ],
)
def test_bad_configuration_is_a_clear_message(tmp_path, name, value):
    result = _cairn(tmp_path, "db", "upgrade", **{name: value})
    assert result.returncode == 2
    assert name in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="TEST_DATABASE_URL unset")
def test_db_upgrade_on_postgresql(tmp_path):
    with fresh_pg_database("cairn_cli") as url:
        result = _cairn(tmp_path, "db", "upgrade", DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
        again = _cairn(tmp_path, "db", "upgrade", DATABASE_URL=url)
        assert again.returncode == 0
        created = _cairn(tmp_path, "project", "create", "PG", "--json", DATABASE_URL=url)
        assert json.loads(created.stdout.strip().splitlines()[-1])["name"] == "PG"


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_standalone_worker_and_scheduler_need_a_shared_broker(tmp_path, command):
    result = _cairn(tmp_path, command)
    assert result.returncode == 2
    assert "BROKER_URL" in result.stderr and "Traceback" not in result.stderr
