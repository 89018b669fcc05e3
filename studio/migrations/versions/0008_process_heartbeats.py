"""process_heartbeats: how another machine tells whether a process's requests in flight still run.

Rows of ``reservations`` and ``pending_writes`` name the process that made them (``pid``, ``host``).
On the same machine a pid (with its start time) can be checked; on another it means nothing. So a
process with such rows open keeps one row here fresh: ``host`` (its machine's identity, as
``studio.storage.liveness.host_identity`` writes it: host name, boot id, pid namespace), ``pid``,
``process_started`` and ``beat_at`` (Unix seconds). Another machine trusts its rows while ``beat_at``
is newer than ``STUDIO_JOB_STALE_SECONDS``.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "process_heartbeats",
        sa.Column("host", sa.Text, primary_key=True),
        sa.Column("pid", sa.Integer, primary_key=True),
        sa.Column("process_started", sa.Text, nullable=True),
        sa.Column("beat_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the studio does not downgrade its database: restore a backup of the data directory")
