"""segments, audiences

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
EXPIRING = "left_at IS NULL AND expires_at IS NOT NULL"


def _project_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["project_id"],
        ["projects.id"],
        name=op.f(f"fk_{table}_project_id_projects"),
        ondelete="CASCADE",
    )


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("filter", JSON, nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        _project_fk("segments"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_segments_project_id_name")),
    )
    op.create_table(
        "audiences",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        _project_fk("audiences"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audiences")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_audiences_project_id_name")),
    )
    op.create_table(
        "audience_members",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", BIG_ID, nullable=False),
        sa.Column("audience_id", BIG_ID, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("joined_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("left_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        _project_fk("audience_members"),
        _fk("audience_members", "audience_id", "audiences"),
        _fk("audience_members", "user_id", "users"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audience_members")),
        sa.UniqueConstraint(
            "audience_id", "user_id", name=op.f("uq_audience_members_audience_id_user_id")
        ),
    )
    with op.batch_alter_table("audience_members", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audience_members_project_user", ["project_id", "user_id"], unique=False
        )
        batch_op.create_index(
            "ix_audience_members_expiring",
            ["expires_at"],
            unique=False,
            postgresql_where=sa.text(EXPIRING),
            sqlite_where=sa.text(EXPIRING),
        )
    op.create_table(
        "audience_changes",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", BIG_ID, nullable=False),
        sa.Column("audience_id", BIG_ID, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("cause", sa.String(length=10), nullable=False),
        sa.Column("at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "cause IN ('api', 'rule', 'topic', 'ttl')", name=op.f("ck_audience_changes_cause")
        ),
        sa.CheckConstraint("kind IN ('joined', 'left')", name=op.f("ck_audience_changes_kind")),
        _project_fk("audience_changes"),
        _fk("audience_changes", "audience_id", "audiences"),
        _fk("audience_changes", "user_id", "users"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audience_changes")),
    )
    with op.batch_alter_table("audience_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audience_changes_audience_at", ["audience_id", "at"], unique=False
        )
    if op.get_bind().dialect.name == "postgresql":
        # Containment (`attributes @> '{"plan": "pro"}'`) is how segment_sql compiles equality.
        op.execute(
            "CREATE INDEX ix_users_attributes_gin ON users USING gin (attributes jsonb_path_ops)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_users_attributes_gin")
    with op.batch_alter_table("audience_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_audience_changes_audience_at")
    op.drop_table("audience_changes")
    with op.batch_alter_table("audience_members", schema=None) as batch_op:
        batch_op.drop_index("ix_audience_members_expiring")
        batch_op.drop_index("ix_audience_members_project_user")
    op.drop_table("audience_members")
    op.drop_table("audiences")
    op.drop_table("segments")
