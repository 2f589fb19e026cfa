"""Alembic migrations (run with `cairn db upgrade`)."""
