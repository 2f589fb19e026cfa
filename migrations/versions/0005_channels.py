"""channels: VAPID keys, push subscriptions, message events, provider rates, preferences

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:24:13.918227
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models.base

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_rates",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", BIG_ID, nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("next_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_provider_rates_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_rates")),
        sa.UniqueConstraint(
            "project_id", "provider", name=op.f("uq_provider_rates_project_id_provider")
        ),
    )
    op.create_table(
        "vapid_keys",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", BIG_ID, nullable=False),
        sa.Column("public_key", sa.String(length=100), nullable=False),
        sa.Column("private_key", sa.String(length=100), nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_vapid_keys_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vapid_keys")),
    )
    with op.batch_alter_table("vapid_keys", schema=None) as batch_op:
        batch_op.create_index("ix_vapid_keys_project", ["project_id", "id"], unique=False)

    op.create_table(
        "push_subscriptions",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", BIG_ID, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=True),
        sa.Column("vapid_key_id", BIG_ID, nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("p256dh", sa.String(length=200), nullable=False),
        sa.Column("auth", sa.String(length=100), nullable=False),
        sa.Column("topics", JSON, nullable=False),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("language", sa.String(length=35), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("deactivated_reason", sa.Text(), nullable=True),
        sa.Column("deactivated_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_sent_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_push_subscriptions_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_push_subscriptions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vapid_key_id"],
            ["vapid_keys.id"],
            name=op.f("fk_push_subscriptions_vapid_key_id_vapid_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_subscriptions")),
        sa.UniqueConstraint(
            "project_id", "endpoint", name=op.f("uq_push_subscriptions_project_id_endpoint")
        ),
    )
    with op.batch_alter_table("push_subscriptions", schema=None) as batch_op:
        batch_op.create_index("ix_push_subscriptions_user", ["user_id", "active"], unique=False)

    op.create_table(
        "message_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", BIG_ID, nullable=False),
        sa.Column("message_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("detail", JSON, nullable=True),
        sa.Column("at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_events_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_message_events_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_events")),
        sa.UniqueConstraint("message_id", "kind", name=op.f("uq_message_events_message_id_kind")),
    )
    with op.batch_alter_table("message_events", schema=None) as batch_op:
        batch_op.create_index("ix_message_events_project", ["project_id", "id"], unique=False)

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("segments", sa.Integer(), nullable=True))
        batch_op.create_index("ix_messages_provider_id", ["provider", "provider_id"], unique=False)

    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.add_column(sa.Column("topic", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("urgency", sa.String(length=10), nullable=True))

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("preferences", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("preferences")

    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_column("urgency")
        batch_op.drop_column("topic")

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_provider_id")
        batch_op.drop_column("segments")

    with op.batch_alter_table("message_events", schema=None) as batch_op:
        batch_op.drop_index("ix_message_events_project")

    op.drop_table("message_events")
    with op.batch_alter_table("push_subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_push_subscriptions_user")

    op.drop_table("push_subscriptions")
    with op.batch_alter_table("vapid_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_vapid_keys_project")

    op.drop_table("vapid_keys")
    op.drop_table("provider_rates")
