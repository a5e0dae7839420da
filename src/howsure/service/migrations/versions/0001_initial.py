"""Initial schema of the review service: users, tokens, policies, items, reviews, events.

Revision ID: 0001
Revises:
Create Date: 2026-05-10

Written out in full (not imported from howsure.service.db) so that this revision creates the
same tables forever, whatever later code says.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.CheckConstraint("role IN ('admin', 'reviewer', 'client')", name="ck_users_role"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", name="fk_tokens_user_id"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    )
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("policy_id", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("version", name="uq_policies_version"),
    )
    op.create_index("uq_policies_one_active", "policies", ["active"], unique=True,
                    sqlite_where=sa.text("active"), postgresql_where=sa.text("active"))
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("request_id", sa.String(200), nullable=True),
        sa.Column("external_id", sa.String(200), nullable=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("policy_version", sa.Integer,
                  sa.ForeignKey("policies.version", name="fk_items_policy_version"), nullable=False),
        sa.Column("policy_id", sa.String(64), nullable=False),
        sa.Column("prediction", sa.String(200), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("probabilities", sa.Text, nullable=False),
        sa.Column("raw_probabilities", sa.Text, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("queue_reason", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("queued_at", TS, nullable=True),
        sa.Column("claimed_by", sa.String(100), nullable=True),
        sa.Column("claim_expires_at", TS, nullable=True),
        sa.CheckConstraint("decision IN ('auto', 'review')", name="ck_items_decision"),
        sa.CheckConstraint("queue_reason IS NULL OR queue_reason IN ('review', 'audit')",
                           name="ck_items_queue_reason"),
        sa.CheckConstraint("status IN ('done', 'queued', 'claimed', 'reviewed')", name="ck_items_status"),
        sa.UniqueConstraint("request_id", name="uq_items_request_id"),
    )
    op.create_index("ix_items_status_queued_at", "items", ["status", "queued_at"])
    op.create_index("ix_items_policy_version", "items", ["policy_version"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id", name="fk_reviews_item_id"), nullable=False),
        sa.Column("reviewer", sa.String(100), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("policy_version", sa.Integer, nullable=False),
        sa.Column("agreed_with_model", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.CheckConstraint("source IN ('review', 'audit')", name="ck_reviews_source"),
        sa.UniqueConstraint("item_id", name="uq_reviews_item_id"),
    )
    op.create_index("ix_reviews_reviewer", "reviews", ["reviewer"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("item_id", sa.Integer, nullable=True),
        sa.Column("policy_version", sa.Integer, nullable=True),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_events_item_id", "events", ["item_id"])


def downgrade() -> None:
    for table in ("events", "reviews", "items", "policies", "tokens", "users"):
        op.drop_table(table)
