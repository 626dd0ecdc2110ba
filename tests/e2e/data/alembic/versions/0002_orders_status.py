"""add orders.status"""

import os

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    if os.environ.get("BREAK_MIGRATION") == "1":
        raise RuntimeError("revision 0002 refuses to run: BREAK_MIGRATION is set")
    op.add_column("orders", sa.Column("status", sa.Text, server_default="new"))


def downgrade() -> None:
    op.drop_column("orders", "status")
