"""pending_writes.owner: whose files a write intent is about.

Image metadata no longer names the owner, so recovery after a crash reads it here (commit 4ae9920).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa

from studio.migrations import add_column_unless_present

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_column_unless_present("pending_writes", sa.Column("owner", sa.Text, nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the studio does not downgrade its database: restore a backup of the data directory")
