"""api_tokens: per-user tokens of the HTTP API (issue 12 §2).

A token is shown once when made; only its SHA-256 is kept (``token_hash``), with the owner it acts
for (the studio's owner key, which never leaves the server), a name its owner chose, and when it was
made, last used and revoked (NULL while usable).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("last_used_at", sa.Text, nullable=True),
        sa.Column("revoked_at", sa.Text, nullable=True),
    )
    op.create_index("api_tokens_owner", "api_tokens", ["owner"])


def downgrade() -> None:
    raise NotImplementedError("the studio does not downgrade its database: restore a backup of the data directory")
