"""reservations.expires_at: a budget reservation holds until its request may have ended.

Epoch seconds; NULL for one made before, which keeps the old hour from created_at (commit feaec86).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa

from studio.migrations import add_column_unless_present

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_column_unless_present("reservations", sa.Column("expires_at", sa.REAL, nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the studio does not downgrade its database: restore a backup of the data directory")
