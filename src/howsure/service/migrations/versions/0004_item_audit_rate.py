"""Each item keeps the audit rate in force when it was decided.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Recalibration and the audited accuracy weight each audited item by the inverse of the chance
it was drawn. Before this revision that chance was estimated as audited / auto-handled items
over the whole store, which is wrong as soon as the service ran with different audit rates.
Items stored before keep NULL: for them the estimate is still what there is.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("audit_rate", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("audit_rate")
