"""audience_changes.cause: `journey` (a journey's audience step)

Revision ID: 0008
Revises: 0007
Create Date: 2027-01-12 10:00:00.000000
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

NAME = "ck_audience_changes_cause"
BEFORE = "cause IN ('api', 'rule', 'topic', 'ttl')"
AFTER = "cause IN ('api', 'rule', 'topic', 'ttl', 'journey')"


def _replace(condition: str) -> None:
    # SQLite cannot alter a CHECK constraint: batch mode copies the table (env.py turns it on
    # for SQLite); PostgreSQL drops and adds the constraint in place.
    with op.batch_alter_table("audience_changes", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(NAME), type_="check")
        batch_op.create_check_constraint(op.f(NAME), condition)


def upgrade() -> None:
    _replace(AFTER)


def downgrade() -> None:
    # The journey's changes were the rule engine's before `journey` existed.
    op.execute("UPDATE audience_changes SET cause = 'rule' WHERE cause = 'journey'")
    _replace(BEFORE)
