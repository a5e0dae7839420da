"""A request_id is unique per client, not across clients.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

``request_id`` is a client's idempotency key. Unique across all clients, one client's key
refused another client's item that happened to use the same key (and told it the key was
taken). Now the key is unique per ``created_by``: each client has its own key space.

SQLite cannot drop a constraint in place, so Alembic's batch mode copies ``items`` into a new
table (``reviews`` refers to ``items``: `howsure.service.db.upgrade` runs SQLite migrations with
foreign keys off and checks them all before the commit).
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_constraint("uq_items_request_id", type_="unique")
        batch.create_unique_constraint("uq_items_created_by_request_id", ["created_by", "request_id"])


def downgrade() -> None:
    # Fails, naming the constraint, when two clients have used one request_id meanwhile.
    with op.batch_alter_table("items") as batch:
        batch.drop_constraint("uq_items_created_by_request_id", type_="unique")
        batch.create_unique_constraint("uq_items_request_id", ["request_id"])
